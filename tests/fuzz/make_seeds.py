#!/usr/bin/python3
"""make_seeds.py - writes the seed corpora of the fuzz targets
(tests/fuzz/corpus/<target>/). Run with the system python (grpcio):

    /usr/bin/python3 tests/fuzz/make_seeds.py

h2: real grpcio client connections, captured by a TCP proxy in front of a
grpcio server that answers /fuzz.Echo/* (and every other path) by echoing:
each file is every byte one client sent on one connection (preface,
SETTINGS, HEADERS with HPACK, DATA, PING/SETTINGS acks, RST_STREAM,
GOAWAY), for unary, streaming, compressed, deadline, cancelled and
reflection/health calls. pb: one packed request of every type fuzz_pb.c
knows (first byte = its index there), fields filled from the descriptors.
chunk, jsonl, config: small hand-written texts."""
import os
import socket
import sys
import tempfile
import threading
import time
from concurrent import futures

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(ROOT))
CORPUS = os.path.join(ROOT, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ------------------------------------------------------------------- pb

# The order of requests[] in fuzz_pb.c.
PB_TYPES = [
    "ctxd.v1.PutRequest", "ctxd.v1.GetRequest", "ctxd.v1.DeleteRequest",
    "ctxd.v1.ListRequest", "ctxd.v1.ChunkRequest", "ctxd.v1.SearchRequest",
    "ctxd.v1.SearchBatchRequest", "ctxd.v1.SelectContextRequest",
    "ctxd.v1.StatsRequest", "ctxd.v1.VerifyRequest",
    "ctxd.v1.CreateCollectionRequest", "ctxd.v1.DropCollectionRequest",
    "ctxd.v1.ListCollectionsRequest", "ctxd.v1.RebuildIndexRequest",
    "ctxd.v1.LoadModelRequest", "ctxd.v1.RechunkRequest",
    "ctxd.v1.ReorderRequest", "ctxd.v1.GetJobRequest",
    "ctxd.v1.CancelJobRequest", "ctxd.v1.ListJobsRequest",
    "ctxd.v1.FetchResultRequest", "grpc.health.v1.HealthCheckRequest",
    "grpc.reflection.v1.ServerReflectionRequest",
    "grpc.reflection.v1alpha.ServerReflectionRequest",
]


def load_protos(tmp):
    from grpc_tools import protoc
    import grpc_tools
    protos = ["ctxd/v1/documents.proto", "ctxd/v1/admin.proto",
              "ctxd/v1/retrieval.proto", "ctxd/v1/corpus.proto",
              "grpc/health/v1/health.proto",
              "grpc/reflection/v1/reflection.proto",
              "grpc/reflection/v1alpha/reflection.proto"]
    inc = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    rc = protoc.main(["protoc", "-I" + os.path.join(REPO, "proto"), "-I" + inc,
                      "--python_out=" + tmp] + protos)
    if rc != 0:
        sys.exit("protoc failed")
    sys.path.insert(0, tmp)
    import importlib
    import importlib.util
    for p in protos:
        if p.startswith("ctxd/"):
            importlib.import_module(p[:-6].replace("/", ".") + "_pb2")
        else:  # grpc/... would clash with the grpc package: load by path
            name = "fuzzseed_" + p[:-6].replace("/", "_")
            spec = importlib.util.spec_from_file_location(name, os.path.join(tmp, p[:-6] + "_pb2.py"))
            spec.loader.exec_module(importlib.util.module_from_spec(spec))
    from google.protobuf import symbol_database
    return symbol_database.Default()


def fill(msg, depth=0):
    """Set every field of msg to a plausible value (one oneof member)."""
    from google.protobuf.descriptor import FieldDescriptor as F
    seen_oneofs = set()
    for f in msg.DESCRIPTOR.fields:
        if f.containing_oneof is not None:
            if f.containing_oneof.name in seen_oneofs:
                continue
            seen_oneofs.add(f.containing_oneof.name)
        rep = f.label == F.LABEL_REPEATED
        if f.type == F.TYPE_MESSAGE:
            if depth >= 2:
                continue
            if f.message_type.GetOptions().map_entry:
                getattr(msg, f.name)["key"] = (
                    "value" if f.message_type.fields_by_name["value"].type == F.TYPE_STRING
                    else 1) if f.message_type.fields_by_name["value"].type != F.TYPE_MESSAGE else None
                continue
            if rep:
                fill(getattr(msg, f.name).add(), depth + 1)
                fill(getattr(msg, f.name).add(), depth + 1)
            else:
                fill(getattr(msg, f.name), depth + 1)
            continue
        if f.type == F.TYPE_STRING:
            v = ["doc-1", "The quick brown fox. Jumps over the lazy dog.\n\nEnd."][depth % 2]
        elif f.type == F.TYPE_BYTES:
            v = b"\x00\x01bytes"
        elif f.type == F.TYPE_BOOL:
            v = True
        elif f.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
            v = 0.5
        elif f.type == F.TYPE_ENUM:
            v = f.enum_type.values[-1].number
        else:
            v = 3
        if rep:
            getattr(msg, f.name).extend([v, v])
        else:
            setattr(msg, f.name, v)


def pb_seeds(db):
    for i, name in enumerate(PB_TYPES):
        cls = db.GetSymbol(name)
        m = cls()
        write("pb", "%02d-%s-empty" % (i, name), bytes([i]))
        fill(m)
        write("pb", "%02d-%s" % (i, name), bytes([i]) + m.SerializeToString())


# ------------------------------------------------------------------- h2

class Recorder:
    """A TCP proxy: client bytes are recorded per connection and forwarded."""

    def __init__(self, upstream_port):
        self.up = upstream_port
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            u = socket.create_connection(("127.0.0.1", self.up))
            rec = bytearray()
            with self.lock:
                self.conns.append(rec)
            threading.Thread(target=self.pipe, args=(c, u, rec), daemon=True).start()
            threading.Thread(target=self.pipe, args=(u, c, None), daemon=True).start()

    @staticmethod
    def pipe(a, b, rec):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                if rec is not None:
                    rec += d
                b.sendall(d)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def take(self):
        time.sleep(0.3)
        with self.lock:
            out = [bytes(c) for c in self.conns]
            self.conns.clear()
        return out


def h2_seeds(db):
    import grpc

    def echo_unary(req, ctx):
        return req

    def echo_stream(it, ctx):
        for r in it:
            yield r

    def server_stream(req, ctx):
        for _ in range(3):
            yield req

    def client_stream(it, ctx):
        return b"".join(it)[:16]

    class Generic(grpc.GenericRpcHandler):
        def service(self, details):
            m = details.method
            ident = lambda b: b
            if m.endswith("/Bidi") or "Reflection" in m:
                return grpc.stream_stream_rpc_method_handler(echo_stream, ident, ident)
            if m.endswith("/ServerStream") or m.endswith("/Watch"):
                return grpc.unary_stream_rpc_method_handler(server_stream, ident, ident)
            if m.endswith("/ClientStream"):
                return grpc.stream_unary_rpc_method_handler(client_stream, ident, ident)
            return grpc.unary_unary_rpc_method_handler(echo_unary, ident, ident)

    srv = grpc.server(futures.ThreadPoolExecutor(4))
    srv.add_generic_rpc_handlers([Generic()])
    up = srv.add_insecure_port("127.0.0.1:0")
    srv.start()
    rec = Recorder(up)
    ident = lambda b: b

    def chan():
        return grpc.insecure_channel("127.0.0.1:%d" % rec.port,
                                     options=[("grpc.use_local_subchannel_pool", 1)])

    def run(name, fn):
        ch = chan()
        try:
            fn(ch)
        except grpc.RpcError:
            pass
        ch.close()
        for i, data in enumerate(d for d in rec.take() if d):
            write("h2", "%s%s" % (name, "-%d" % i if i else ""), data)

    put = db.GetSymbol("ctxd.v1.PutRequest")()
    fill(put)
    putb = put.SerializeToString()
    hc = db.GetSymbol("grpc.health.v1.HealthCheckRequest")(service="ctxd.v1.Documents").SerializeToString()
    r1 = db.GetSymbol("grpc.reflection.v1.ServerReflectionRequest")
    refl = [r1(list_services="").SerializeToString(),
            r1(file_containing_symbol="ctxd.v1.Documents").SerializeToString(),
            r1(file_by_filename="ctxd/v1/documents.proto").SerializeToString()]

    run("unary", lambda ch: ch.unary_unary("/fuzz.Echo/Unary", ident, ident)(putb))
    run("unary-empty", lambda ch: ch.unary_unary("/fuzz.Echo/Unary", ident, ident)(b""))
    run("unary-deadline-metadata", lambda ch: ch.unary_unary("/fuzz.Echo/Unary", ident, ident)(
        putb, timeout=5, metadata=[("authorization", "Bearer t0ken"), ("x-trace-bin", b"\x00\x01")]))
    run("unary-gzip", lambda ch: ch.unary_unary("/fuzz.Echo/Unary", ident, ident)(
        putb * 4, compression=grpc.Compression.Gzip))
    run("unary-deflate", lambda ch: ch.unary_unary("/fuzz.Echo/Unary", ident, ident)(
        putb * 4, compression=grpc.Compression.Deflate))
    run("unary-large", lambda ch: ch.unary_unary("/fuzz.Echo/Unary", ident, ident)(b"x" * 70000))
    run("error", lambda ch: ch.unary_unary("/fuzz.Echo/Error", ident, ident)(putb))
    run("server-stream", lambda ch: list(ch.unary_stream("/fuzz.Echo/ServerStream", ident, ident)(putb)))
    run("client-stream", lambda ch: ch.stream_unary("/fuzz.Echo/ClientStream", ident, ident)(
        iter([putb, b"", putb])))
    run("bidi", lambda ch: list(ch.stream_stream("/fuzz.Echo/Bidi", ident, ident)(iter([putb, b"ab", putb]))))
    run("health-check", lambda ch: ch.unary_unary("/grpc.health.v1.Health/Check", ident, ident)(hc))
    run("health-watch", lambda ch: list(ch.unary_stream("/grpc.health.v1.Health/Watch", ident, ident)(b"")))
    run("reflection-v1", lambda ch: list(ch.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", ident, ident)(iter(refl))))
    run("reflection-v1alpha", lambda ch: list(ch.stream_stream(
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", ident, ident)(iter(refl[:2]))))
    run("unknown-method", lambda ch: ch.unary_unary("/ctxd.v1.Documents/Nope", ident, ident)(putb))

    def cancelled(ch):
        f = ch.unary_stream("/fuzz.Echo/ServerStream", ident, ident)(putb)
        f.cancel()

    run("cancelled", cancelled)

    def many(ch):
        fs = [ch.unary_unary("/fuzz.Echo/Unary", ident, ident).future(putb) for _ in range(8)]
        for f in fs:
            f.result()

    run("eight-streams", many)
    srv.stop(0)


# ------------------------------------------------------- chunk, jsonl, config

PROSE = ("Retrieval works on segments. Each one is cut at a sentence end, e.g. "
         "this one, when it fits! Does it? Yes.\n\nA new paragraph starts here; "
         "it has numbers 12345 and 3.14159, symbols (a+b)*c, and \"quotes\".\n")
CJK = "長い文書を扱う。これは二つ目の文です！本当？はい。\n\n第二段落：漢字とかな。"
MIXED = "Emoji 🙂🚀 cross é, ñ, ü; Ελληνικά και русский текст.\tTabs\r\nCRLF\n  indented    code()\n"


def chunk_seeds():
    for name, text in (("prose", PROSE), ("cjk", CJK), ("mixed", MIXED),
                       ("long-word", "a" * 300 + " " + "9" * 40)):
        write("chunk", "est-%s" % name, bytes([0, 15, 3]) + text.encode())
        write("chunk", "gpt2-%s" % name, bytes([1, 7, 2]) + text.encode())
    write("chunk", "est-max1-4byte", bytes([0, 0, 0]) + "🙂 x 🙂".encode())
    write("chunk", "gpt2-special", bytes([1, 3, 0]) + b"<|endoftext|> text <|endoftext|>")


def jsonl_seeds():
    write("jsonl", "texts", '{"id": "a", "text": "First document."}\n'
          '{"id": 2, "text": "Second, with \\u00e9 and \\ud83d\\ude42."}\n\n'
          '{"id": "c", "text": null, "vector": [1, 0.5, -2e-3]}\n')
    write("jsonl", "vectors", '{"id":"v1","vector":[0.1,0.2,0.3],"text":"x"}\n'
          '{"id":"v2","vector":[1e30,-1e-30,0],"extra":{"k":[1,2]}}\r\n'
          '   \t\n{"id":"v3","text":"no newline at the end"}')
    write("jsonl", "errors-dup", '{"id":"a","text":"x"}\n{"id":"a","text":"y"}\n')
    write("jsonl", "errors-dim", '{"id":"a","vector":[1,2]}\n{"id":"b","vector":[1]}\n')


def config_seeds():
    with open(os.path.join(REPO, "deploy", "ctxd.conf"), "rb") as f:
        write("config", "deploy-ctxd.conf", f.read())
    write("config", "small-ini", "[server]\nlisten = 127.0.0.1:0\nmax_message_bytes = 4M\n"
          "[log]\nlevel = debug\n[chunk]\nmax_tokens = 64\noverlap_tokens = 8\n")
    write("config", "args", b"[store]\ndata = /tmp/x\n\x00\x00--listen\x00[::1]:50051\x00"
          b"--log.level=warn\x00--server.max_message_bytes=1G\x00--dump-config\x00"
          b"--index.spec\x00HNSW32\x00--model.path=none")
    write("config", "args-config", b"\x00\x00--config\x00/etc/passwd\x00--help")


def main():
    import shutil
    for t in ("h2", "pb", "chunk", "jsonl", "config"):
        shutil.rmtree(os.path.join(CORPUS, t), ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        db = load_protos(tmp)
        pb_seeds(db)
        h2_seeds(db)
    chunk_seeds()
    jsonl_seeds()
    config_seeds()
    for t in sorted(os.listdir(CORPUS)):
        d = os.path.join(CORPUS, t)
        n = len(os.listdir(d))
        size = sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d))
        print("%-7s %3d files %7d bytes" % (t, n, size))


if __name__ == "__main__":
    main()
