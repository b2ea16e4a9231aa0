#!/usr/bin/python3
"""Request compression over the wire: grpcio clients with gzip and deflate
on the channel and per call (Documents.Put of a large compressible text,
then Get returns it), a decompression bomb against a 1 MiB limit
(RESOURCE_EXHAUSTED), and, with hand-made frames sent by nghttp (grpcio
cannot mark a raw message compressed): an unknown grpc-encoding
(UNIMPLEMENTED + grpc-accept-encoding), corrupt compressed data and a
compressed flag without grpc-encoding (INTERNAL). The daemon stays healthy."""

import os
import random
import re
import shutil
import struct
import subprocess
import tempfile
import zlib

import grpc

from ctxd_harness import Daemon, Report, SLOW, health_ok, make_text, pb, put_req

D = pb.documents_pb2
T = 30 * SLOW
ACCEPT = "identity,deflate,gzip"
ENCODINGS = (("gzip", grpc.Compression.Gzip), ("deflate", grpc.Compression.Deflate))


def big_text(rng, size):
    """Prose-like text of at least `size` bytes: compresses well."""
    parts, n = [], 0
    while n < size:
        t = make_text(rng, words=400, paragraphs=4)
        parts.append(t)
        n += len(t.encode("utf-8")) + 2
    return "\n\n".join(parts)


def get(s, id):
    return s.docs.Get(D.GetRequest(id=id, with_text=True, with_chunks=True), timeout=T)


def case_put_get(r, d, rng):
    text = big_text(rng, 3 << 20)
    r.check(len(zlib.compress(text.encode("utf-8"))) < len(text) // 3,
            "the text compresses well")
    for name, comp in ENCODINGS:
        # Compression set on the channel.
        ch = grpc.insecure_channel(d.addr, compression=comp, options=[
            ("grpc.max_send_message_length", 128 << 20),
            ("grpc.max_receive_message_length", 128 << 20)])
        try:
            s = d.stubs(ch)
            p = s.docs.Put(put_req("chan-" + name, text), timeout=T)
            r.eq(p.id, "chan-" + name, "%s channel: Put answers" % name)
            r.check(p.chunks > 1, "%s channel: Put chunked the text" % name, p.chunks)
            g = get(s, "chan-" + name)
            r.check(g.document.text == text, "%s channel: Get returns the same text" % name,
                    "%d vs %d chars" % (len(g.document.text), len(text)))
            r.eq(len(g.chunks), p.chunks, "%s channel: chunk count" % name)
            r.check(health_ok(s), "%s channel: Health.Check (inline) works" % name)
        finally:
            ch.close()
        # Compression per call on a plain channel.
        s = d.stubs()
        id = "call-" + name
        p = s.docs.Put(put_req(id, text[::-1]), timeout=T, compression=comp)
        r.eq(p.id, id, "%s per call: Put answers" % name)
        g = get(s, id)
        r.check(g.document.text == text[::-1], "%s per call: Get returns the same text" % name)
        h = s.health.Check(pb.health_pb2.HealthCheckRequest(), timeout=T,
                           compression=comp)
        r.eq(h.status, pb.health_pb2.HealthCheckResponse.SERVING,
             "%s per call: Health.Check" % name)


def case_bomb(r, rng):
    """4 MiB of one repeated sentence compress to a few KiB: the daemon
    inflates up to its 1 MiB limit and refuses the rest."""
    text = ("all work and no play makes a dull daemon. " * 100000)[: 4 << 20]
    with Daemon(r, args=["--server.max_message_bytes", "1M"], name="ctxd-1mib") as d:
        s = d.stubs()
        for name, comp in ENCODINGS:
            r.raises(grpc.StatusCode.RESOURCE_EXHAUSTED,
                     lambda: s.docs.Put(put_req("bomb", text), timeout=T, compression=comp),
                     "%s bomb: RESOURCE_EXHAUSTED" % name,
                     contains="decompressed message exceeds the limit of 1048576 bytes")
        # The same text uncompressed is refused from its length prefix.
        r.raises(grpc.StatusCode.RESOURCE_EXHAUSTED,
                 lambda: s.docs.Put(put_req("bomb", text), timeout=T),
                 "uncompressed: RESOURCE_EXHAUSTED from the prefix",
                 contains="exceeds the limit of 1048576")
        # Under the limit, compressed, still works on this daemon.
        small = big_text(rng, 200 << 10)
        p = s.docs.Put(put_req("small", small), timeout=T, compression=grpc.Compression.Gzip)
        r.eq(p.id, "small", "a compressed Put under the limit works")
        r.check(get(s, "small").document.text == small, "and reads back")
        r.check(health_ok(s), "still SERVING after the bombs")
        r.raises(grpc.StatusCode.NOT_FOUND, lambda: get(s, "bomb"),
                 "the bomb stored nothing")


# -- hand-made frames through nghttp ------------------------------------------

def grpc_frame(payload, flag):
    return struct.pack(">BI", flag, len(payload)) + payload


def nghttp_call(addr, path, body, headers, tmp):
    """POST one gRPC request with nghttp; return (headers dict of the
    answer, including trailers, and the raw output)."""
    f = os.path.join(tmp, "body")
    with open(f, "wb") as fh:
        fh.write(body)
    cmd = ["nghttp", "-v", "-n", "-t", "%d" % int(20 * SLOW), "-d", f,
           "-H", "content-type: application/grpc", "-H", "te: trailers"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append("http://%s%s" % (addr, path))
    out = subprocess.run(cmd, capture_output=True, timeout=60 * SLOW).stdout.decode(
        "utf-8", "replace")
    got = {}
    for m in re.finditer(r"recv \(stream_id=\d+\) ([a-z:\-]+): (.*)", out):
        got[m.group(1)] = m.group(2).strip()
    return got, out


def case_raw(r, d):
    if not shutil.which("nghttp"):
        r.check(False, "nghttp is installed (nghttp2-client)")
        return
    tmp = tempfile.mkdtemp(prefix="ctxd-comp-")
    try:
        get_req = D.GetRequest(id="chan-gzip", with_text=True).SerializeToString()
        health_path = "/grpc.health.v1.Health/Check"
        get_path = "/ctxd.v1.Documents/Get"
        cases = [
            # (what, path, body, headers, status, message)
            ("unknown encoding (Get)", get_path,
             grpc_frame(get_req, 0), ["grpc-encoding: snappy"],
             "12", "grpc-encoding snappy is not supported"),
            ("unknown encoding (Health)", health_path,
             grpc_frame(b"", 0), ["grpc-encoding: zstd"],
             "12", "grpc-encoding zstd is not supported"),
            ("flag without grpc-encoding", get_path,
             grpc_frame(zlib.compress(get_req), 1), [],
             "13", "compressed flag set but no grpc-encoding"),
            ("flag with grpc-encoding identity", get_path,
             grpc_frame(zlib.compress(get_req), 1), ["grpc-encoding: identity"],
             "13", "compressed flag set but no grpc-encoding"),
            ("corrupt gzip (Get, worker)", get_path,
             grpc_frame(b"\x1f\x8b\x08\x00garbage, not deflate data", 1),
             ["grpc-encoding: gzip"], "13", "could not decompress message"),
            ("zlib data named gzip (Health, loop)", health_path,
             grpc_frame(zlib.compress(b""), 1), ["grpc-encoding: gzip"],
             "13", "could not decompress message"),
            ("truncated deflate", get_path,
             grpc_frame(zlib.compress(get_req * 50)[:-6], 1), ["grpc-encoding: deflate"],
             "13", "could not decompress message"),
        ]
        for what, path, body, hdrs, status, msg in cases:
            got, out = nghttp_call(d.addr, path, body, hdrs, tmp)
            r.eq(got.get("grpc-status"), status, "%s: grpc-status" % what)
            r.eq(got.get("grpc-message", "").replace("%20", " "), msg,
                 "%s: grpc-message" % what)
            r.eq(got.get("grpc-accept-encoding"), ACCEPT,
                 "%s: grpc-accept-encoding" % what)
        # A good raw deflate request, for contrast: the document comes back.
        gz = zlib.compressobj(wbits=31)
        body = gz.compress(get_req) + gz.flush()
        got, out = nghttp_call(d.addr, get_path, grpc_frame(body, 1),
                               ["grpc-encoding: gzip"], tmp)
        r.eq(got.get("grpc-status"), "0", "raw gzip Get: OK")
        r.eq(got.get("grpc-accept-encoding"), ACCEPT, "raw gzip Get: grpc-accept-encoding")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    r.check(health_ok(d.stubs()), "still SERVING after the raw cases")


def main():
    r = Report("test_compression")
    rng = random.Random(8)
    with Daemon(r) as d:
        r.case("Put/Get with gzip and deflate", case_put_get, r, d, rng)
        r.case("corrupt data and unknown encodings (nghttp)", case_raw, r, d)
    r.case("decompression bomb (1 MiB limit)", case_bomb, r, rng)
    r.finish()


if __name__ == "__main__":
    main()
