#!/usr/bin/python3
"""The Python client package ctxd_client (CtxdClient) against a real daemon:
every wrapper method, its return values, and CtxdError on failures."""

import random

import grpc

import ctxd_client
from ctxd_client import CtxdClient, CtxdError
from ctxd_harness import Daemon, Report, SLOW, make_text


def case_client(r, d):
    rng = random.Random(7)
    with CtxdClient(d.addr, timeout=30 * SLOW) as c:
        c.wait_ready(timeout=10 * SLOW)
        r.eq(c.health(), "SERVING", "health() == 'SERVING'")
        text = make_text(rng, words=400, paragraphs=3)
        p = c.put(text, id="py-1", metadata={"k": "v"}, max_tokens=64)
        r.eq((p.id, p.replaced), ("py-1", False), "put(): id and replaced")
        r.check(p.chunks >= 2, "put(): several chunks with max_tokens=64", p.chunks)
        g = c.get("py-1", with_chunks=True)
        r.eq(g.document.text, text, "get(): text")
        r.eq(dict(g.document.metadata), {"k": "v"}, "get(): metadata")
        r.eq(len(g.chunks), p.chunks, "get(with_chunks=True): chunks")
        g2 = c.get("py-1", with_text=False)
        r.eq((g2.document.text, len(g2.chunks)), ("", 0), "get(with_text=False): no text, no chunks")
        p2 = c.put("Replaced.", id="py-1")
        r.eq(p2.replaced, True, "put() again: replaced")
        gen = c.put("Generated id.")
        r.check(gen.id != "", "put() without id: server generates one", gen.id)

        docs = [("py-m-%03d" % i, make_text(rng, words=30, paragraphs=1)) for i in range(250)]
        docs.append({"id": "py-m-dict", "text": "from a dict", "metadata": {"a": "b"}})
        docs.append(ctxd_client.documents_pb2.Document(id="py-m-doc", text="from a Document"))
        docs.append(("x" * 1025, "too long id"))
        acked, errs = [], []
        for ack in c.put_many(iter(docs)):
            acked.extend(ack.ids)
            errs.extend((e.id, e.reason) for e in ack.errors)
        r.eq(len(acked), 252, "put_many(): 252 acked")
        r.eq(len(set(acked)), 252, "put_many(): each once")
        r.eq([e[0] for e in errs], ["x" * 1025], "put_many(): the bad one rejected")
        r.eq(c.get("py-m-dict").document.metadata["a"], "b", "put_many(): dict input with metadata")

        ids = [x.id for x in c.list(page_size=17)]
        r.eq(len(ids), len(set(ids)), "list(): no duplicates across pages")
        st = c.stats()
        r.eq(len(ids), st.documents, "list(): iterates all pages (= stats().documents)")
        r.check({"py-1", gen.id, "py-m-doc"} <= set(ids), "list(): includes the stored ids")
        page = c.list_page(page_size=10)
        r.check(len(page.documents) == 10 and page.next_page_token,
                "list_page(): one page with a token")

        ch = c.chunk(text, max_tokens=64, with_text=True)
        r.check(len(ch.chunks) >= 2 and ch.chunks[0].text != "", "chunk(): chunks with text")
        r.eq(c.stats().documents, st.documents, "chunk(): stores nothing")

        dl = c.delete("py-1")
        r.eq(dl.deleted, True, "delete(): deleted")
        r.eq(c.delete("py-1").deleted, False, "delete() of a missing id: deleted=False, no error")

        try:
            c.get("py-1")
            r.check(False, "get() of a missing id raises CtxdError")
        except CtxdError as e:
            r.eq(e.code, grpc.StatusCode.NOT_FOUND, "CtxdError.code is NOT_FOUND")
            r.check(isinstance(e, grpc.RpcError), "CtxdError is a grpc.RpcError")
            r.eq(e.method, "Get", "CtxdError.method names the call")
            r.check(e.details() == e.message, "CtxdError.details() == message")
        try:
            c.put("x", id="y" * 1025)
            r.check(False, "put() with a 1025-byte id raises CtxdError")
        except CtxdError as e:
            r.eq(e.code, grpc.StatusCode.INVALID_ARGUMENT, "put(1025-byte id): INVALID_ARGUMENT")
            r.check(e.message != "", "CtxdError carries the server's message", e.message)

        v = c.verify()
        r.eq(v.ok, True, "verify(): ok")
        r.eq(v.documents_checked, c.stats().documents, "verify(): checked every document")

    # A client to a port nobody listens on: UNAVAILABLE, as a CtxdError.
    with CtxdClient("127.0.0.1:1", timeout=2) as bad:
        try:
            bad.stats()
            r.check(False, "stats() on a dead address raises")
        except CtxdError as e:
            r.eq(e.code, grpc.StatusCode.UNAVAILABLE, "dead address: UNAVAILABLE")
    try:
        CtxdClient("127.0.0.1:1", timeout=1).wait_ready(timeout=1)
        r.check(False, "wait_ready() on a dead address raises")
    except CtxdError as e:
        r.eq(e.code, grpc.StatusCode.UNAVAILABLE, "wait_ready(): UNAVAILABLE after its timeout")


def case_errors(r, d):
    """CtxdError as a grpc.RpcError, put_many with a failing generator, a
    stream deadline, and a closed client."""
    import time
    with CtxdClient(d.addr, timeout=30 * SLOW) as c:
        try:
            c.get("no-such-id")
            r.check(False, "get() of a missing id raises")
        except grpc.RpcError as e:  # code written for any grpc error
            r.check(isinstance(e, CtxdError), "it is a CtxdError")
            try:
                r.eq(e.code(), grpc.StatusCode.NOT_FOUND, "e.code() works as for grpc.RpcError")
            except TypeError as te:
                r.check(False, "e.code() is callable", te)
            r.eq(e.code, grpc.StatusCode.NOT_FOUND, "e.code == StatusCode still works")
            r.check(e.code in {grpc.StatusCode.NOT_FOUND}, "e.code hashes as its StatusCode")
            r.eq(e.code.name, "NOT_FOUND", "e.code.name")
            r.eq(e.status_code(), grpc.StatusCode.NOT_FOUND, "e.status_code()")
            r.check(e.details() == e.message and "no-such-id" in e.message,
                    "e.details() is the server's message", e.message)

        def failing():
            yield ("gen-ok-1", "first document")
            yield ("gen-ok-2", "second document")
            raise ValueError("the source broke")

        t0 = time.monotonic()
        try:
            for _ in c.put_many(failing()):
                pass
            r.check(False, "put_many() with a raising generator raises")
        except ValueError as e:
            r.eq(str(e), "the source broke", "put_many(): the generator's own exception comes out")
        except CtxdError as e:
            r.check(False, "put_many(): the generator's own exception, not a CtxdError", e)
        r.check(time.monotonic() - t0 < 10 * SLOW, "put_many(): a raising generator ends the call promptly")
        try:
            for _ in c.put_many(["a bare string is not a document"]):
                pass
            r.check(False, "put_many() of a bad item raises")
        except TypeError as e:
            r.check("cannot make a document" in str(e), "put_many(): a bad item raises TypeError", e)
        except CtxdError as e:
            r.check(False, "put_many(): a bad item raises TypeError, not a CtxdError", e)
        r.eq(c.health(), "SERVING", "daemon still serving after cancelled streams")

        def slow():
            yield ("slow-1", "one")
            time.sleep(1.5)
            yield ("slow-2", "two")

        t0 = time.monotonic()
        try:
            for _ in c.put_many(slow(), timeout=0.3):
                pass
            r.check(False, "put_many(timeout=0.3) with a slow source raises")
        except CtxdError as e:
            r.eq(e.code, grpc.StatusCode.DEADLINE_EXCEEDED, "put_many(timeout): DEADLINE_EXCEEDED")
            r.eq(e.method, "PutStream", "put_many(timeout): method")
        r.check(time.monotonic() - t0 < 1.4, "put_many(timeout): raised at the deadline")

    c = CtxdClient(d.addr, timeout=5)
    c.close()
    c.close()  # twice is fine
    try:
        c.stats()
        r.check(False, "a call on a closed client raises")
    except ValueError as e:
        r.check("closed" in str(e), "a call on a closed client raises ValueError", e)


def main():
    r = Report("test_python_client")
    with Daemon(r) as d:
        r.case("CtxdClient", case_client, r, d)
        r.case("errors", case_errors, r, d)
    r.finish()


if __name__ == "__main__":
    main()
