#!/usr/bin/python3
"""Bad input over the wire: invalid UTF-8 (hand-encoded protobuf, since
grpcio refuses to send it), oversize messages, unknown methods and services,
malformed protobuf, missing fields, expired deadlines, unimplemented
Retrieval. Each bad call gets the right status; afterwards Health is still
SERVING, a normal Put works, and the bad calls changed nothing (Stats)."""

import os
import shutil
import subprocess
import tempfile
import time

import grpc

from ctxd_harness import Daemon, Report, SLOW, pb, put_req, stats

D = pb.documents_pb2
H = pb.health_pb2
T = 30 * SLOW
IA = grpc.StatusCode.INVALID_ARGUMENT


# -- a minimal protobuf encoder, so invalid UTF-8 reaches the wire ------------

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def fld(num, payload):
    """A length-delimited field."""
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def raw_document(id, text, meta=None):
    b = fld(1, id) + fld(2, text)
    for k, v in (meta or {}).items():
        b += fld(3, fld(1, k) + fld(2, v))
    return b


def raw_put(id, text, meta=None):
    return fld(1, raw_document(id, text, meta))


def raw_unary(ch, path, resp_cls):
    # request_serializer=None: grpcio sends our bytes untouched.
    return ch.unary_unary(path, request_serializer=None,
                          response_deserializer=resp_cls.FromString)


# -- guard: every bad call leaves the daemon healthy and the store unchanged --

def guarded(r, d, s, name, fn, *args):
    def run():
        before = stats(s)
        fn(*args)
        after = stats(s)
        r.eq((after.documents, after.chunks, after.bytes, after.last_seq),
             (before.documents, before.chunks, before.bytes, before.last_seq),
             "store unchanged by the bad calls (Stats)")
        h = s.health.Check(H.HealthCheckRequest(), timeout=T)
        r.eq(h.status, H.HealthCheckResponse.SERVING, "Health still SERVING")
        cid = "control-" + name.replace(" ", "-")
        p = s.docs.Put(put_req(cid, "A normal document after bad input."), timeout=T)
        r.eq(p.id, cid, "a normal Put still works")
        s.docs.Delete(D.DeleteRequest(id=cid), timeout=T)
        r.check(d.alive(), "daemon still running")
    r.case(name, run)


def case_invalid_utf8(r, d, s):
    ch = s.channel
    put = raw_unary(ch, "/ctxd.v1.Documents/Put", D.PutResponse)
    cases = [
        ("0xff byte", b"Hello wor" + b"\xff" + b"ld. More text.", 9),
        ("lone continuation byte", b"abc" + b"\x80" + b"def", 3),
        ("truncated 3-byte sequence at the end", "日本語".encode() + b"\xe6\x9d", 9),
        ("overlong encoding of '/'", b"path " + b"\xc0\xaf" + b" x", 5),
        ("UTF-16 surrogate", b"ok " + b"\xed\xa0\x80" + b" no", 3),
        ("code point above U+10FFFF", b"x" * 100 + b"\xf4\x90\x80\x80", 100),
        ("invalid byte deep in a long text", ("é" * 5000).encode() + b"\xfe" + b"tail", 10000),
    ]
    for what, text, off in cases:
        r.raises(IA, lambda text=text: put(raw_put(b"bad-utf8", text), timeout=T),
                 "Put text with %s: INVALID_ARGUMENT naming byte %d" % (what, off),
                 contains=[str(off)])
    r.raises(grpc.StatusCode.NOT_FOUND,
             lambda: s.docs.Get(D.GetRequest(id="bad-utf8"), timeout=T),
             "the rejected document was not written")
    r.raises(IA, lambda: put(raw_put(b"id-\xff", b"fine text"), timeout=T),
             "invalid UTF-8 in the id: INVALID_ARGUMENT")
    r.raises(IA, lambda: put(raw_put(b"meta-bad", b"fine text", {b"k": b"v\xc3"}), timeout=T),
             "invalid UTF-8 in a metadata value: INVALID_ARGUMENT")
    r.raises(IA, lambda: put(raw_put(b"meta-bad", b"fine text", {b"\xff": b"v"}), timeout=T),
             "invalid UTF-8 in a metadata key: INVALID_ARGUMENT")
    chunk = raw_unary(ch, "/ctxd.v1.Documents/Chunk", D.ChunkResponse)
    r.raises(IA, lambda: chunk(fld(1, b"abcdef\xffgh"), timeout=T),
             "Chunk RPC with invalid UTF-8: INVALID_ARGUMENT naming byte 6", contains=["6"])
    # In a PutStream the bad document is rejected alone.
    stream = ch.stream_stream("/ctxd.v1.Documents/PutStream", request_serializer=None,
                              response_deserializer=D.PutAck.FromString)
    reqs = [raw_put(b"ps-good-1", b"good one."), raw_put(b"ps-bad", b"bad \xff one."),
            raw_put(b"ps-good-2", b"good two.")]
    ids, errs = [], []
    try:
        for ack in stream(iter(reqs), timeout=T):
            ids.extend(ack.ids)
            errs.extend((e.id, e.reason) for e in ack.errors)
    finally:
        for id in ("ps-good-1", "ps-good-2", "ps-bad"):
            s.docs.Delete(D.DeleteRequest(id=id), timeout=T)
    r.eq(sorted(ids), ["ps-good-1", "ps-good-2"], "PutStream: good neighbours of a bad document stored")
    r.check(len(errs) == 1 and errs[0][0] == "ps-bad" and "4" in errs[0][1],
            "PutStream: the invalid-UTF-8 document rejected, reason names byte 4", errs)


def case_putstream_cleanup_guard(r, d, s):
    # PutStream above writes (and then deletes) good documents, so that case
    # is not wrapped in the Stats guard; this one checks what is left.
    for id in ("ps-good-1", "ps-good-2", "ps-bad", "bad-utf8"):
        r.raises(grpc.StatusCode.NOT_FOUND,
                 lambda id=id: s.docs.Get(D.GetRequest(id=id), timeout=T),
                 "%s not present" % id)


def case_oversize_default(r, d, s):
    # Default limit 64 MiB: raise the client's own limits and send more.
    ch = d.channel(options=[("grpc.max_send_message_length", 200 << 20)])
    docs = pb.documents_pb2_grpc.DocumentsStub(ch)
    big = "word " * ((65 << 20) // 5)
    t0 = time.monotonic()
    r.raises(grpc.StatusCode.RESOURCE_EXHAUSTED,
             lambda: docs.Put(put_req("huge", big), timeout=120 * SLOW),
             "65 MiB Put against the 64 MiB default: RESOURCE_EXHAUSTED")
    print("    (took %.1fs)" % (time.monotonic() - t0))
    del big


def case_oversize_small_limit(r):
    with Daemon(r, args=["--server.max_message_bytes", "1048576"], name="ctxd-1mib") as d2:
        s2 = d2.stubs()
        p = s2.docs.Put(put_req("fits", "x " * 400000), timeout=T)
        r.eq(p.id, "fits", "800 KB Put under a 1 MiB limit works")
        r.raises(grpc.StatusCode.RESOURCE_EXHAUSTED,
                 lambda: s2.docs.Put(put_req("too-big", "y " * (1 << 20)), timeout=T),
                 "2 MiB Put over a 1 MiB limit: RESOURCE_EXHAUSTED")
        r.raises(grpc.StatusCode.RESOURCE_EXHAUSTED,
                 lambda: list(s2.docs.PutStream(iter([put_req("a", "ok."),
                                                      put_req("b", "z " * (1 << 20))]),
                                                timeout=T)),
                 "oversize message inside a PutStream: RESOURCE_EXHAUSTED")
        r.raises(grpc.StatusCode.NOT_FOUND,
                 lambda: s2.docs.Get(D.GetRequest(id="too-big"), timeout=T),
                 "the oversize document was not written")
        h = s2.health.Check(H.HealthCheckRequest(), timeout=T)
        r.eq(h.status, H.HealthCheckResponse.SERVING, "1 MiB daemon still SERVING")
        r.eq(s2.docs.Get(D.GetRequest(id="fits", with_text=True), timeout=T).document.text,
             "x " * 400000, "the fitting document is intact")


def case_unknown_methods(r, d, s):
    ch = s.channel
    for path in ("/ctxd.v1.Documents/NoSuchMethod", "/no.such.Service/Call",
                 "/ctxd.v1.Admin/Shutdown", "/grpc.health.v1.Health/List"):
        r.raises(grpc.StatusCode.UNIMPLEMENTED,
                 lambda path=path: raw_unary(ch, path, D.PutResponse)(b"", timeout=T),
                 "%s: UNIMPLEMENTED" % path)
    # SelectContext exists: a request with neither doc_id nor text is bad.
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: s.retrieval.SelectContext(pb.retrieval_pb2.SelectContextRequest(
                 question="q"), timeout=T),
             "Retrieval.SelectContext without a text: INVALID_ARGUMENT", "doc_id or text")
    st = ch.stream_stream("/ctxd.v1.Nope/Stream", request_serializer=None,
                          response_deserializer=D.PutAck.FromString)
    r.raises(grpc.StatusCode.UNIMPLEMENTED, lambda: list(st(iter([b"", b""]), timeout=T)),
             "unknown streaming method: UNIMPLEMENTED")


def case_malformed(r, d, s):
    put = raw_unary(s.channel, "/ctxd.v1.Documents/Put", D.PutResponse)
    get = raw_unary(s.channel, "/ctxd.v1.Documents/Get", D.GetResponse)
    bad = [
        ("truncated length-delimited field", b"\x0a\x05ab"),
        ("length past the end", b"\x0a\xff\xff\xff\xff\x0f" + b"x" * 10),
        ("varint longer than 10 bytes", b"\x10" + b"\xff" * 11 + b"\x01"),
        ("field number 0", b"\x02\x01a"),
        ("end-group without start-group", b"\x0c"),
        ("truncated nested document", fld(1, b"\x0a\x10abc")),
    ]
    for what, b in bad:
        r.raises(IA, lambda b=b: put(b, timeout=T), "Put with %s: INVALID_ARGUMENT" % what)
    r.raises(IA, lambda: get(b"\x0a\x03a", timeout=T), "Get with a truncated id: INVALID_ARGUMENT")
    r.raises(IA, lambda: put(os.urandom(0) + bytes(range(256)) * 4, timeout=T),
             "Put with garbage bytes: INVALID_ARGUMENT")


def case_missing_fields(r, d, s):
    r.raises(IA, lambda: s.docs.Put(D.PutRequest(), timeout=T),
             "Put without a document: INVALID_ARGUMENT", contains=["document"])
    r.raises(IA, lambda: s.docs.Put(D.PutRequest(chunking=D.ChunkOptions(max_tokens=5)), timeout=T),
             "Put with options but no document: INVALID_ARGUMENT")
    r.raises(IA, lambda: s.docs.Get(D.GetRequest(), timeout=T), "Get without an id: INVALID_ARGUMENT")
    r.raises(IA, lambda: s.docs.Delete(D.DeleteRequest(), timeout=T),
             "Delete without an id: INVALID_ARGUMENT")
    r.raises(IA, lambda: s.docs.Get(D.GetRequest(id="a" * 1025), timeout=T),
             "Get with a 1025-byte id: INVALID_ARGUMENT")
    r.raises(IA, lambda: s.docs.Put(put_req("opts", "text", max_tokens=4, overlap_tokens=9), timeout=T),
             "Put with overlap > max_tokens: INVALID_ARGUMENT")


def case_deadlines(r, d, s):
    r.raises(grpc.StatusCode.DEADLINE_EXCEEDED,
             lambda: s.docs.Put(put_req("dl", "deadline"), timeout=0.000001),
             "Put with a 1 us deadline: DEADLINE_EXCEEDED")
    r.raises(grpc.StatusCode.NOT_FOUND,
             lambda: s.docs.Get(D.GetRequest(id="dl"), timeout=T) if time.sleep(0.2) is None else 0,
             "expired Put wrote nothing (or was not even sent)")
    t0 = time.monotonic()
    r.raises(grpc.StatusCode.DEADLINE_EXCEEDED,
             lambda: list(s.health.Watch(H.HealthCheckRequest(), timeout=0.3)),
             "Health.Watch held past a 0.3 s deadline: DEADLINE_EXCEEDED")
    r.check(time.monotonic() - t0 < 5 * SLOW, "...and it ended promptly",
            "%.1fs" % (time.monotonic() - t0))
    # A grpc-timeout the server must enforce itself: nghttp never cancels, so
    # only the server can end this Watch with grpc-status 4.
    nghttp = shutil.which("nghttp")
    if not r.check(nghttp is not None, "nghttp (nghttp2-client) installed"):
        return
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(b"\x00\x00\x00\x00\x00")  # one empty HealthCheckRequest
        f.flush()
        t0 = time.monotonic()
        p = subprocess.run([nghttp, "-v", "-t", "20",
                            "-H", ":method: POST", "-H", "content-type: application/grpc",
                            "-H", "te: trailers", "-H", "grpc-timeout: 300m",
                            "-d", f.name, "http://%s/grpc.health.v1.Health/Watch" % d.addr],
                           capture_output=True, text=True, timeout=60)
        el = time.monotonic() - t0
    out = p.stdout + p.stderr
    r.check("grpc-status: 4" in out, "server ends a Watch with grpc-timeout 300m: grpc-status 4",
            out[-1500:])
    r.check(el < 10 * SLOW, "...after about 0.3 s, not nghttp's own 20 s timeout", "%.1fs" % el)


def main():
    r = Report("test_bad_input")
    with Daemon(r) as d:
        s = d.stubs()
        r.case("invalid UTF-8", case_invalid_utf8, r, d, s)
        guarded(r, d, s, "after invalid UTF-8", case_putstream_cleanup_guard, r, d, s)
        guarded(r, d, s, "oversize (64 MiB default)", case_oversize_default, r, d, s)
        guarded(r, d, s, "unknown methods", case_unknown_methods, r, d, s)
        guarded(r, d, s, "malformed protobuf", case_malformed, r, d, s)
        guarded(r, d, s, "missing fields", case_missing_fields, r, d, s)
        guarded(r, d, s, "deadlines", case_deadlines, r, d, s)
        r.case("oversize (1 MiB limit, second daemon)", case_oversize_small_limit, r)
    r.finish()


if __name__ == "__main__":
    main()
