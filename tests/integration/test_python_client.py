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


def main():
    r = Report("test_python_client")
    with Daemon(r) as d:
        r.case("CtxdClient", case_client, r, d)
    r.finish()


if __name__ == "__main__":
    main()
