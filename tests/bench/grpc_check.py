"""grpc_check.py - small grpcio helpers for tests/bench/grpc_health.sh.

h2load only sees HTTP :status, so after every load the shell script calls
this to confirm over a real gRPC client that the server still answers
correctly, and it builds the framed request files that h2load sends.

  grpc_check.py health ADDR
      Health.Check("") must return SERVING (exit 1 otherwise).
  grpc_check.py frame-health OUT
      write the 5-byte-framed empty HealthCheckRequest to OUT.
  grpc_check.py prepare-get ADDR ID OUT_PREFIX
      Put one Brown Corpus sample as document ID, then write two framed
      GetRequest files: OUT_PREFIX.meta.bin (id only) and OUT_PREFIX.text.bin
      (with_text). Prints the document's size in bytes.
  grpc_check.py get ADDR ID BYTES
      Documents.Get(ID, with_text) must return BYTES bytes of text.

Run with /usr/bin/python3 and PYTHONPATH=<build>/python.
"""

import struct
import sys

import benchlib


def framed(msg_bytes):
    return struct.pack(">BI", 0, len(msg_bytes)) + msg_bytes


def main(argv):
    s = benchlib.load_stubs()
    grpc = s["grpc"]
    cmd = argv[1]
    if cmd == "frame-health":
        with open(argv[2], "wb") as f:
            f.write(framed(s["health_pb2"].HealthCheckRequest().SerializeToString()))
        return 0
    addr = argv[2]
    with grpc.insecure_channel(addr) as ch:
        if cmd == "health":
            stub = s["health_pb2_grpc"].HealthStub(ch)
            r = stub.Check(s["health_pb2"].HealthCheckRequest(), timeout=10)
            name = s["health_pb2"].HealthCheckResponse.ServingStatus.Name(r.status)
            print("  grpcio Health.Check -> %s" % name)
            return 0 if name == "SERVING" else 1
        pb = s["documents_pb2"]
        stub = s["documents_pb2_grpc"].DocumentsStub(ch)
        if cmd == "prepare-get":
            doc_id, prefix = argv[3], argv[4]
            name, text = benchlib.brown_documents()[0]
            r = stub.Put(pb.PutRequest(document=pb.Document(
                id=doc_id, text=text, metadata={"source": "brown/" + name})),
                timeout=30)
            with open(prefix + ".meta.bin", "wb") as f:
                f.write(framed(pb.GetRequest(id=doc_id).SerializeToString()))
            with open(prefix + ".text.bin", "wb") as f:
                f.write(framed(pb.GetRequest(id=doc_id, with_text=True)
                               .SerializeToString()))
            print(len(text.encode("utf-8")))
            sys.stderr.write("  stored %s: %d bytes, %d chunks, %d tokens\n" %
                             (doc_id, len(text.encode("utf-8")), r.chunks,
                              r.tokens))
            return 0
        if cmd == "get":
            doc_id, nbytes = argv[3], int(argv[4])
            r = stub.Get(pb.GetRequest(id=doc_id, with_text=True), timeout=10)
            got = len(r.document.text.encode("utf-8"))
            print("  grpcio Documents.Get(%s) -> %d bytes of text" % (doc_id, got))
            return 0 if got == nbytes else 1
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
