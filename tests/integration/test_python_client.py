#!/usr/bin/python3
"""The Python client package ctxd_client (CtxdClient) against a real daemon:
every wrapper method (documents, collections, search, rebuild_index), its
return values, and CtxdError on failures; and the request builders
(make_request, make_search) without a daemon."""

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


def case_builders(r):
    """make_request / make_search: what they build from each kind of input."""
    mk = CtxdClient.make_search
    q = mk("hello", k=3, metadata={"a": "b"}, collection="c", doc_ids=["x"])
    r.eq((q.text, q.k, q.collection, list(q.doc_ids)), ("hello", 3, "c", ["x"]),
         "make_search(str, **kw)")
    r.eq([(m.key, m.value) for m in q.metadata], [("a", "b")], "make_search: metadata dict")
    r.eq(list(mk([1, 2.5], mode="vector").vector), [1.0, 2.5], "make_search(vector)")
    r.eq(mk({"text": "x", "k": 7}, k=3, mode="lexical").k, 7, "make_search(dict): its fields win")
    r.eq(mk({"text": "x"}, k=3).k, 3, "make_search(dict): keywords fill the rest")
    r.eq([(m.key, m.value) for m in mk("q", metadata=[("a", "1"), ("b", "2")]).metadata],
         [("a", "1"), ("b", "2")], "make_search: metadata pairs")
    sr = ctxd_client.retrieval_pb2.SearchRequest(text="as is")
    r.check(mk(sr, k=9) is sr, "make_search(SearchRequest) is returned as is")
    try:
        mk(object())
        r.check(False, "make_search(object()) raises TypeError")
    except TypeError:
        r.check(True, "make_search(object()) raises TypeError")
    pr = CtxdClient.make_request(id="a", text="abc", collection="c",
                                 chunks=[(0, 1), (1, 3, [0.5, 1]), {"byte_start": 3, "byte_end": 3}])
    d = pr.document
    r.eq((d.collection, [(c.byte_start, c.byte_end, list(c.vector)) for c in d.chunks]),
         ("c", [(0, 1, []), (1, 3, [0.5, 1.0]), (3, 3, [])]), "make_request: collection and chunks")
    r.eq(CtxdClient.make_request({"id": "a", "text": "t", "collection": "own"}, collection="dflt")
         .document.collection, "own", "make_request(dict): its collection wins")
    doc = ctxd_client.documents_pb2.Document(id="a", text="t")
    r.eq(CtxdClient.make_request(doc, collection="dflt").document.collection, "dflt",
         "make_request(Document): the default collection fills an empty one")
    r.eq(doc.collection, "", "make_request(Document): the caller's message is not changed")


TEXTS = {
    "fox": "The quick brown fox jumps over the lazy dog near the river bank. " * 6,
    "ships": "Container ships carry steel boxes across the ocean between harbours. " * 6,
    "bake": "Bread rises when yeast ferments the sugars in warm dough before baking. " * 6,
}


def case_collections(r, d):
    with CtxdClient(d.addr, timeout=30 * SLOW) as c:
        info = c.create_collection("papers", index_spec="HNSW32", metric="ip",
                                   chunk_max_tokens=24, chunk_overlap_tokens=4)
        r.eq((info.config.name, info.config.index_spec, info.config.metric,
              info.config.chunk_max_tokens, info.config.chunk_overlap_tokens, info.documents),
             ("papers", "HNSW32", "ip", 24, 4, 0), "create_collection(): CollectionInfo")
        r.check(info.config.dim > 0 and info.config.embedder.startswith("hash"),
                "create_collection(): default embedder and its dimension", info.config)
        r.raises(grpc.StatusCode.ALREADY_EXISTS, lambda: c.create_collection("papers"),
                 "create_collection() of an existing name: ALREADY_EXISTS")
        r.raises(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: c.create_collection("bogus", index_spec="NoSuchIndex"),
                 "create_collection() with a bad index spec: INVALID_ARGUMENT")
        r.raises(grpc.StatusCode.INVALID_ARGUMENT, lambda: c.create_collection("bad/name"),
                 "create_collection() with a bad name: INVALID_ARGUMENT")
        given = c.create_collection("given", embedder="none:dim=4", index_spec="Flat")
        r.eq(given.config.dim, 4, "create_collection(none:dim=4): dimension 4")

        for name, text in TEXTS.items():
            p = c.put(text, id=name, metadata={"kind": name}, collection="papers")
            r.check(p.chunks >= 2, "put(collection=): chunked with the collection's 24 tokens", p.chunks)
        acks = list(c.put_many([("m1", "many one"), {"id": "m2", "text": "many two",
                                                      "collection": "papers"}],
                               collection="given2"))
        r.eq(sorted(i for a in acks for i in a.ids), ["m1", "m2"], "put_many(collection=)")
        r.eq([x.id for x in c.list(collection="given2")], ["m1"],
             "put_many(collection=): the default for items without one")
        r.eq(sorted(x.id for x in c.list(collection="papers")),
             ["bake", "fox", "m2", "ships"], "list(collection=)")
        r.eq(c.list_page(page_size=2, collection="papers").next_page_token != "", True,
             "list_page(collection=)")
        g = c.get("fox", collection="papers", with_vectors=True)
        r.check(g.chunks and all(len(ch.vector) == info.config.dim for ch in g.chunks),
                "get(with_vectors=True): a vector per chunk, the collection's dimension",
                [len(ch.vector) for ch in g.chunks])
        r.eq(g.document.collection, "papers", "get(): the document names its collection")
        r.raises(grpc.StatusCode.NOT_FOUND, lambda: c.get("fox"),
                 "get() without collection= looks in default: NOT_FOUND")
        r.raises(grpc.StatusCode.NOT_FOUND, lambda: c.get("fox", collection="nosuch"),
                 "get() in an unknown collection: NOT_FOUND", contains="nosuch")
        r.raises(grpc.StatusCode.NOT_FOUND, lambda: list(c.list(collection="nosuch")),
                 "list() of an unknown collection: NOT_FOUND")

        # client-supplied chunks and vectors (a "none" collection)
        p = c.put("abcdefgh", id="v1", collection="given",
                  chunks=[(0, 4, [1, 0, 0, 0]), (4, 8, [0, 1, 0, 0])])
        r.eq(p.chunks, 2, "put(chunks=...): the given chunks")
        gv = c.get("v1", collection="given", with_vectors=True)
        r.eq([list(ch.vector) for ch in gv.chunks], [[1, 0, 0, 0], [0, 1, 0, 0]],
             "get(with_vectors=True): the given vectors back")
        r.raises(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: c.put("abcd", id="v2", collection="given", chunks=[(0, 4, [1, 0])]),
                 "put() with a vector of the wrong dimension: INVALID_ARGUMENT")
        h = c.search(vector=[0, 1, 0, 0], k=1, collection="given")
        r.eq([(x.chunk.doc_id, x.chunk.ordinal) for x in h.hits], [("v1", 1)],
             "search(vector=): the nearest given vector")
        r.raises(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: c.search(vector=[1, 0], collection="given"),
                 "search() with a vector of the wrong dimension: INVALID_ARGUMENT")

        cols = {x.config.name: x for x in c.list_collections()}
        r.check({"default", "papers", "given", "given2"} <= set(cols), "list_collections()", sorted(cols))
        pc = cols.get("papers")
        r.check(pc is not None and pc.documents == 4 and pc.vectors == pc.chunks and pc.trained,
                "list_collections(): counts of papers", pc)
        st = c.stats()
        sc = [x for x in st.collections if x.config.name == "papers"]
        r.check(len(sc) == 1 and sc[0].documents == 4, "stats().collections", sc)


def case_search(r, d):
    with CtxdClient(d.addr, timeout=30 * SLOW) as c:
        res = c.search("quick brown fox", collection="papers")
        r.check(res.hits and res.hits[0].chunk.doc_id == "fox", "search(): the fox first",
                [h.chunk.doc_id for h in res.hits])
        r.check(len(res.hits) <= 10, "search(): k 0 is 10", len(res.hits))
        for mode in ("vector", "lexical", "hybrid"):
            res = c.search("ocean ships harbours", k=2, mode=mode, collection="papers")
            r.check(1 <= len(res.hits) <= 2 and res.hits[0].chunk.doc_id == "ships"
                    and all(res.hits[i].score >= res.hits[i + 1].score for i in range(len(res.hits) - 1)),
                    "search(mode=%r, k=2)" % mode, res)
        res = c.search("yeast dough", k=3, collection="papers", with_text=True)
        r.check(res.hits and all(h.chunk.text.encode() == TEXTS[h.chunk.doc_id].encode()
                                 [h.chunk.byte_start:h.chunk.byte_end] for h in res.hits
                                 if h.chunk.doc_id in TEXTS),
                "search(with_text=True): each text is its byte range", res)
        res = c.search("yeast dough", k=3, collection="papers")
        r.check(res.hits and all(h.chunk.text == "" for h in res.hits), "search(): no text unless asked")
        res = c.search("quick brown fox", collection="papers", doc_ids=["bake", "ships"])
        r.check(res.hits and {h.chunk.doc_id for h in res.hits} <= {"bake", "ships"},
                "search(doc_ids=)", res)
        res = c.search("quick brown fox", collection="papers", metadata={"kind": "bake"})
        r.check(res.hits and {h.chunk.doc_id for h in res.hits} == {"bake"}, "search(metadata=)", res)
        res = c.search("fox", collection="papers", mode="vector", ef_search=128)
        r.check(res.hits, "search(ef_search=)")
        res = c.search("fox", collection="papers", mode="vector", nprobe=8)
        r.check(res.hits, "search(nprobe=)")

        out = c.search_batch(["quick brown fox", "ocean ships", {"text": "yeast", "k": 2}],
                             k=1, collection="papers")
        r.eq([len(x.hits) for x in out], [1, 1, 2], "search_batch(): one result per query, k per query")
        r.eq([x.hits[0].chunk.doc_id for x in out], ["fox", "ships", "bake"], "search_batch(): in order")
        r.raises(grpc.StatusCode.NOT_FOUND, lambda: c.search_batch(["a", "b"], collection="nosuch"),
                 "search_batch() in an unknown collection: NOT_FOUND")

        r.raises(grpc.StatusCode.NOT_FOUND, lambda: c.search("fox", collection="nosuch"),
                 "search() in an unknown collection: NOT_FOUND", contains="nosuch")
        r.raises(grpc.StatusCode.INVALID_ARGUMENT, lambda: c.search("fox", mode="fuzzy", collection="papers"),
                 "search(mode='fuzzy'): INVALID_ARGUMENT")
        r.raises(grpc.StatusCode.RESOURCE_EXHAUSTED,
                 lambda: c.search("fox", k=1001, collection="papers"),
                 "search(k=1001): RESOURCE_EXHAUSTED")

        dl = c.delete("fox", collection="papers")
        r.eq(dl.deleted, True, "delete(collection=)")
        res = c.search("quick brown fox", k=50, collection="papers")
        r.check("fox" not in {h.chunk.doc_id for h in res.hits}, "a deleted document is not found")
        r.raises(grpc.StatusCode.NOT_FOUND, lambda: c.delete("x", collection="nosuch"),
                 "delete() in an unknown collection: NOT_FOUND")


def case_rebuild(r, d):
    with CtxdClient(d.addr, timeout=30 * SLOW) as c:
        msgs = list(c.rebuild_index("papers", timeout=60 * SLOW))
        r.check(msgs and msgs[-1].state == "done" and all(m.state == "running" for m in msgs[:-1]),
                "rebuild_index(): running..., done", [m.state for m in msgs])
        r.check(msgs and msgs[-1].collection == "papers" and msgs[-1].done == msgs[-1].total,
                "rebuild_index(): done == total at the end", msgs[-1:])
        msgs = list(c.rebuild_index())
        r.check(msgs and msgs[-1].state == "done", "rebuild_index() of the default collection")
        try:
            list(c.rebuild_index("nosuch"))
            r.check(False, "rebuild_index() of an unknown collection raises")
        except CtxdError as e:
            r.eq((e.code, e.method), (grpc.StatusCode.NOT_FOUND, "RebuildIndex"),
                 "rebuild_index() of an unknown collection: NOT_FOUND")
        res = c.search("ocean ships", k=1, collection="papers")
        r.check(res.hits and res.hits[0].chunk.doc_id == "ships", "search after rebuild_index()")
        info = [x for x in c.list_collections() if x.config.name == "papers"][0]
        r.eq((info.masked, info.rebuilding), (0, False), "after the rebuild: nothing masked, not rebuilding")

        dr = c.drop_collection("papers")
        r.eq(dr.documents, 3, "drop_collection(): the documents removed")
        r.raises(grpc.StatusCode.NOT_FOUND, lambda: c.drop_collection("papers"),
                 "drop_collection() again: NOT_FOUND")
        r.raises(grpc.StatusCode.NOT_FOUND, lambda: c.search("x", collection="papers"),
                 "search() of a dropped collection: NOT_FOUND")
        r.check("papers" not in {x.config.name for x in c.list_collections()},
                "list_collections() no longer has it")


def main():
    r = Report("test_python_client")
    r.case("request builders", case_builders, r)
    with Daemon(r) as d:
        r.case("CtxdClient", case_client, r, d)
        r.case("errors", case_errors, r, d)
    with Daemon(r, name="ctxd-search") as d:
        r.case("collections", case_collections, r, d)
        r.case("search", case_search, r, d)
        r.case("rebuild_index and drop_collection", case_rebuild, r, d)
    r.finish()


if __name__ == "__main__":
    main()
