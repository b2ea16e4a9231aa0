#!/usr/bin/python3
"""Collections over the wire: CreateCollection / ListCollections /
DropCollection and their errors; the same id in two collections; client
vectors ("none" embedders) and a custom hash embedder; a per-collection index
spec (Flat, HNSW32 and IVF with a small min_train, exact until trained);
Stats per collection (documents, chunks, vectors, index type, trained,
masked); RebuildIndex streaming progress while searches keep answering."""

import math
import os
import random
import threading
import time

import grpc

from ctxd_harness import Daemon, Report, SLOW, pb, stats

D = pb.documents_pb2
R = pb.retrieval_pb2
A = pb.admin_pb2
T = 30 * SLOW
IA = grpc.StatusCode.INVALID_ARGUMENT
NF = grpc.StatusCode.NOT_FOUND


def create(s, **kw):
    return s.admin.CreateCollection(A.CreateCollectionRequest(
        config=A.CollectionConfig(**kw)), timeout=T)


def colls(s):
    return {c.config.name: c for c in
            s.admin.ListCollections(A.ListCollectionsRequest(), timeout=T).collections}


def stat(s, name):
    return {c.config.name: c for c in stats(s).collections}[name]


def vec_doc(id, vec, collection, text=None):
    text = text if text is not None else "vector document %s" % id
    doc = D.Document(id=id, text=text, collection=collection)
    doc.chunks.add(byte_start=0, byte_end=len(text.encode()), vector=vec)
    return D.PutRequest(document=doc)


def put_vectors(s, collection, vecs, prefix="v"):
    reqs = [vec_doc("%s%d" % (prefix, i), v, collection) for i, v in enumerate(vecs)]
    acked, errs = 0, []
    for a in s.docs.PutStream(iter(reqs), timeout=300 * SLOW):
        acked += len(a.ids)
        errs += [(e.id, e.reason) for e in a.errors]
    return acked, errs


def search(s, **kw):
    return s.retrieval.Search(R.SearchRequest(**kw), timeout=T)


def case_create_list_drop(r, s):
    c = colls(s)
    r.eq(sorted(c), ["default"], "a new data dir has the default collection")
    dc = c["default"].config
    r.check(dc.embedder.startswith("hash:dim=%d," % dc.dim) and dc.dim >= 16
            and dc.metric == "ip" and dc.index_spec == "Flat" and dc.chunk_max_tokens == 512,
            "default: hash embedder in its full form, ip, Flat, 512-token chunks", dc)
    info = create(s, name="flat8", embedder="none:dim=8", metric="l2", index_spec="Flat")
    cf = info.config
    r.eq((cf.name, cf.dim, cf.metric, cf.index_spec, info.documents),
         ("flat8", 8, "l2", "Flat", 0), "CreateCollection returns its info")
    r.eq(cf.chunk_max_tokens, 512, "unset chunking takes the configured default")
    info = create(s, name="none16", embedder="none", dim=16)
    r.eq((info.config.dim, info.config.index_spec, info.config.metric), (16, "Flat", "ip"),
         "embedder none with dim 16; spec and metric from the config")
    info = create(s, name="hash64", embedder="hash:dim=64", chunk_max_tokens=64,
                  chunk_overlap_tokens=8)
    r.eq((info.config.dim, info.config.chunk_max_tokens, info.config.chunk_overlap_tokens),
         (64, 64, 8), "hash:dim=64 with its own chunking")
    r.raises(grpc.StatusCode.ALREADY_EXISTS, lambda: create(s, name="flat8"),
             "creating an existing name: ALREADY_EXISTS", contains="flat8")
    for what, kw, needle in (
            ("no name", {}, "name"),
            ("bad name", {"name": "a b"}, "a b"),
            ("long name", {"name": "n" * 65}, "collection name"),
            ("unknown spec", {"name": "x1", "index_spec": "Bogus99"}, "Bogus99"),
            ("IDMap spec", {"name": "x2", "index_spec": "IDMap,Flat"}, "IDMap"),
            ("bad metric", {"name": "x3", "metric": "cosine"}, "metric"),
            ("unknown embedder", {"name": "x4", "embedder": "word2vec"}, "word2vec"),
            ("dim against the embedder", {"name": "x5", "embedder": "hash:dim=64", "dim": 32},
             "dim"),
            ("overlap >= max", {"name": "x6", "chunk_max_tokens": 64,
                                "chunk_overlap_tokens": 64}, "overlap"),
    ):
        r.raises(IA, lambda kw=kw: create(s, **kw), "CreateCollection with %s: INVALID_ARGUMENT"
                 % what, contains=needle)
    c = colls(s)
    r.eq(sorted(c), ["default", "flat8", "hash64", "none16"], "ListCollections lists them")
    r.eq(sorted(x.config.name for x in stats(s).collections), sorted(c),
         "Stats lists the same collections")
    # Documents in a custom hash collection get its dimension.
    s.docs.Put(D.PutRequest(document=D.Document(id="h", text="a few words " * 40,
                                                collection="hash64")), timeout=T)
    g = s.docs.Get(D.GetRequest(id="h", collection="hash64", with_chunks=True,
                                with_vectors=True), timeout=T)
    r.check(len(g.chunks) >= 2 and all(len(ch.vector) == 64 for ch in g.chunks),
            "hash64: chunks of at most 64 tokens with 64-dimension vectors",
            [len(ch.vector) for ch in g.chunks])
    d = s.admin.DropCollection(A.DropCollectionRequest(name="hash64"), timeout=T)
    r.eq(d.documents, 1, "DropCollection reports the documents removed")
    r.raises(NF, lambda: s.docs.Get(D.GetRequest(id="h", collection="hash64"), timeout=T),
             "dropped collection: Get NOT_FOUND")
    r.raises(NF, lambda: search(s, text="words", collection="hash64"),
             "dropped collection: Search NOT_FOUND")
    r.raises(NF, lambda: s.admin.DropCollection(A.DropCollectionRequest(name="hash64"),
                                                timeout=T),
             "dropping it again: NOT_FOUND", contains="hash64")
    r.raises(IA, lambda: s.admin.DropCollection(A.DropCollectionRequest(), timeout=T),
             "DropCollection without a name: INVALID_ARGUMENT")
    # A Put to a new name creates it with the defaults.
    s.docs.Put(D.PutRequest(document=D.Document(id="a", text="first use",
                                                collection="made-by-put")), timeout=T)
    c = colls(s)
    r.check("made-by-put" in c and c["made-by-put"].config.dim == dc.dim
            and c["made-by-put"].documents == 1,
            "Put to an unknown name creates the collection with the defaults")
    # Dropping default is allowed; it comes back empty on first use.
    s.docs.Put(D.PutRequest(document=D.Document(id="d", text="in default")), timeout=T)
    r.eq(s.admin.DropCollection(A.DropCollectionRequest(name="default"), timeout=T).documents,
         1, "default can be dropped")
    r.raises(NF, lambda: s.docs.Get(D.GetRequest(id="d"), timeout=T),
             "its documents went with it")
    r.eq(len(search(s, text="default").hits), 0, "default is back, empty, on first use")
    r.check("default" in colls(s), "default is listed again")


def case_same_id(r, s):
    for c in ("left", "right"):
        create(s, name=c, index_spec="Flat")
    s.docs.Put(D.PutRequest(document=D.Document(id="same", text="apricots from the left",
                                                collection="left")), timeout=T)
    p = s.docs.Put(D.PutRequest(document=D.Document(id="same", text="blueberries on the right",
                                                    collection="right")), timeout=T)
    r.eq(p.replaced, False, "the same id in another collection is a new document")
    gl = s.docs.Get(D.GetRequest(id="same", collection="left", with_text=True), timeout=T)
    gr = s.docs.Get(D.GetRequest(id="same", collection="right", with_text=True), timeout=T)
    r.eq((gl.document.text, gr.document.text), ("apricots from the left",
                                                 "blueberries on the right"),
         "each collection keeps its own text for the id")
    r.eq((gl.document.collection, gr.document.collection), ("left", "right"),
         "Get names the document's collection")
    s.docs.Put(D.PutRequest(document=D.Document(id="same", text="in default")), timeout=T)
    r.eq(s.docs.Get(D.GetRequest(id="same"), timeout=T).document.collection, "default",
         "Get without a collection names default")
    s.docs.Delete(D.DeleteRequest(id="same"), timeout=T)
    r.eq([h.chunk.doc_id for h in search(s, text="apricots", mode="lexical",
                                         collection="left").hits], ["same"],
         "search in left finds its document")
    r.eq(len(search(s, text="apricots", mode="lexical", collection="right").hits), 0,
         "search in right does not see left's")
    r.eq([d.id for d in s.docs.List(D.ListRequest(collection="right"), timeout=T).documents],
         ["same"], "List per collection")
    s.docs.Delete(D.DeleteRequest(id="same", collection="left"), timeout=T)
    r.raises(NF, lambda: s.docs.Get(D.GetRequest(id="same", collection="left"), timeout=T),
             "deleted from left")
    r.eq(s.docs.Get(D.GetRequest(id="same", collection="right", with_text=True),
                    timeout=T).document.text, "blueberries on the right",
         "right's document is untouched")


def case_client_vectors(r, s):
    rng = random.Random(5)
    vecs = [[rng.uniform(-1, 1) for _ in range(8)] for _ in range(50)]
    acked, errs = put_vectors(s, "flat8", vecs)
    r.eq((acked, errs), (50, []), "50 client-vector documents stored")
    g = s.docs.Get(D.GetRequest(id="v7", collection="flat8", with_chunks=True,
                                with_vectors=True), timeout=T)
    r.check(all(abs(a - b) < 1e-6 for a, b in zip(g.chunks[0].vector, vecs[7])),
            "an l2 collection keeps client vectors as sent")
    resp = search(s, vector=vecs[7], k=3, collection="flat8")
    r.check(resp.hits[0].chunk.doc_id == "v7" and abs(resp.hits[0].score) < 1e-5,
            "l2: the nearest is the vector itself, score -distance = 0",
            [(h.chunk.doc_id, h.score) for h in resp.hits])
    r.check(all(h.score <= 0 for h in resp.hits) and
            [h.score for h in resp.hits] == sorted([h.score for h in resp.hits], reverse=True),
            "l2 scores are -distances, best first")
    want = math.sqrt(sum((a - b) ** 2 for a, b in
                         zip(vecs[7], vecs[int(resp.hits[1].chunk.doc_id[1:])])))
    r.check(abs(-resp.hits[1].score - want) < 1e-4 * max(1, want),
            "l2 score = -(Euclidean distance)", (resp.hits[1].score, want))
    r.raises(IA, lambda: s.docs.Put(D.PutRequest(document=D.Document(
        id="nov", text="no vector here", collection="flat8")), timeout=T),
        "a none collection refuses a document without vectors", contains="client vectors")
    r.raises(grpc.StatusCode.FAILED_PRECONDITION,
             lambda: search(s, text="vector document", mode="vector", collection="flat8"),
             "vector search by text in a none collection: FAILED_PRECONDITION")
    r.check(len(search(s, text="document", mode="lexical", collection="flat8").hits) > 0,
            "lexical search works in a none collection")
    r.raises(IA, lambda: search(s, vector=[1.0] * 9, collection="flat8"),
             "query vector of 9 dims in an 8-dim collection: INVALID_ARGUMENT",
             contains=["9", "8"])


def wait_for(fn, timeout):
    end = time.monotonic() + timeout * SLOW
    while time.monotonic() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    return fn()


def case_index_specs(r, s):
    rng = random.Random(9)
    n = 400
    vecs = [[rng.gauss(0, 1) for _ in range(8)] for _ in range(n)]
    specs = {"s-flat": "Flat", "s-hnsw": "HNSW32", "s-ivf": "IVF4,Flat"}
    for name, spec in specs.items():
        create(s, name=name, embedder="none:dim=8", metric="l2", index_spec=spec)
    # IVF with 4 lists trains once it holds enough vectors; before that it
    # searches exactly.
    put_vectors(s, "s-ivf", vecs[:20])
    st = stat(s, "s-ivf")
    r.check(not st.trained and st.exact_until_trained and st.min_train > 20,
            "IVF4,Flat with 20 vectors: not trained, exact until trained",
            (st.trained, st.exact_until_trained, st.min_train))
    hit = search(s, vector=vecs[3], k=1, collection="s-ivf").hits[0]
    r.eq(hit.chunk.doc_id, "v3", "untrained IVF answers exactly")
    r.check(st.min_train <= n, "min_train (%d) is small for 4 lists" % st.min_train)
    put_vectors(s, "s-flat", vecs)
    put_vectors(s, "s-hnsw", vecs)
    put_vectors(s, "s-ivf", vecs[20:], prefix="w")  # w0 = vecs[20], ...
    st = wait_for(lambda: stat(s, "s-ivf").trained and stat(s, "s-ivf"), 60)
    r.check(st and st.trained and not st.exact_until_trained,
            "IVF trains in the background once it holds enough vectors",
            st and (st.trained, st.exact_until_trained))
    for name, spec in specs.items():
        st = stat(s, name)
        r.eq((st.config.index_spec, st.documents, st.chunks, st.vectors, st.indexed),
             (spec, n, n, n, n), "%s: index type and counts in Stats" % name)
        r.check(st.trained, "%s: trained" % name)
        found = 0
        for i in range(0, n, 40):
            id = ("v%d" % i) if name != "s-ivf" or i < 20 else ("w%d" % (i - 20))
            hits = search(s, vector=vecs[i], k=1, collection=name, nprobe=4, ef_search=64).hits
            found += bool(hits) and hits[0].chunk.doc_id == id
        r.eq(found, n // 40, "%s: each vector finds itself" % name)
    # Deletes: HNSW masks what it cannot remove.
    for i in range(10):
        s.docs.Delete(D.DeleteRequest(id="v%d" % i, collection="s-hnsw"), timeout=T)
    st = stat(s, "s-hnsw")
    r.eq((st.documents, st.vectors, st.indexed, st.masked), (n - 10, n - 10, n - 10, 10),
         "HNSW after 10 deletes: 10 masked, the rest indexed")
    hits = search(s, vector=vecs[3], k=5, collection="s-hnsw").hits
    r.check(all(h.chunk.doc_id not in ["v%d" % i for i in range(10)] for h in hits),
            "masked vectors are never returned")
    for i in range(10):
        s.docs.Delete(D.DeleteRequest(id="w%d" % i, collection="s-ivf"), timeout=T)
    st = stat(s, "s-ivf")
    r.eq((st.indexed, st.masked), (n - 10, 0), "IVF removes deleted vectors (none masked)")


def case_rebuild(r, s):
    rng = random.Random(3)
    # Enough for a rebuild that lasts a while; fewer under sanitizers, which
    # slow everything several times over.
    n = 8000 if os.environ.get("TSAN_OPTIONS") or SLOW > 1 else 20000
    dim = 32
    create(s, name="big", embedder="none:dim=%d" % dim, metric="l2", index_spec="HNSW32")
    vecs = [[rng.gauss(0, 1) for _ in range(dim)] for _ in range(n)]
    t0 = time.monotonic()
    acked, errs = put_vectors(s, "big", vecs)
    r.eq((acked, errs), (n, []), "%d vectors stored (%.1fs)" % (n, time.monotonic() - t0))
    for i in range(100):
        s.docs.Delete(D.DeleteRequest(id="v%d" % i, collection="big"), timeout=T)
    r.eq(stat(s, "big").masked, 100, "100 masked before the rebuild")
    stop = threading.Event()
    errors, answered, missed = [], [0], [0]

    def searcher():
        s2 = s  # grpcio channels are thread-safe
        i = 100
        while not stop.is_set():
            try:
                # HNSW is approximate: a vector is almost always among its
                # own 5 nearest at a generous ef_search (measured: 3 misses
                # in 4,000 on this data, before and after a rebuild).
                h = search(s2, vector=vecs[i], k=5, ef_search=256, collection="big").hits
                if "v%d" % i not in [x.chunk.doc_id for x in h]:
                    missed[0] += 1
                answered[0] += 1
            except grpc.RpcError as e:
                errors.append((e.code(), e.details()))
            i = 100 + (i + 7) % (n - 100)

    th = threading.Thread(target=searcher)
    th.start()
    try:
        msgs = list(s.admin.RebuildIndex(A.RebuildIndexRequest(collection="big"),
                                         timeout=300 * SLOW))
        during = answered[0]
        # A second call while none runs starts another rebuild; two at once:
        # the second watches the first.
        a = s.admin.RebuildIndex(A.RebuildIndexRequest(collection="big"), timeout=300 * SLOW)
        first = next(a)
        b = list(s.admin.RebuildIndex(A.RebuildIndexRequest(collection="big"),
                                      timeout=300 * SLOW))
        rest = [first] + list(a)
    finally:
        time.sleep(0.2)
        stop.set()
        th.join()
    r.check(len(msgs) >= 1 and msgs[-1].state == "done" and
            all(m.state == "running" for m in msgs[:-1]),
            "RebuildIndex streams running ... done", [m.state for m in msgs])
    r.check(all(m.collection == "big" for m in msgs), "progress names the collection")
    r.check(msgs[-1].done == msgs[-1].total and msgs[-1].total >= n - 100,
            "the last progress counts every vector", (msgs[-1].done, msgs[-1].total))
    dones = [m.done for m in msgs]
    r.eq(dones, sorted(dones), "progress never goes back")
    print("    rebuild: %d progress messages, %d searches answered during it" % (len(msgs), during))
    r.eq(errors, [], "every search during the rebuilds answered")
    r.check(answered[0] > 0, "searches ran during the rebuilds", answered[0])
    r.check(missed[0] <= max(2, answered[0] // 100),
            "searches during the rebuilds find their vector (HNSW recall)",
            "%d of %d missed" % (missed[0], answered[0]))
    r.eq((rest[-1].state, b[-1].state), ("done", "done"), "two overlapping calls both end done")
    st = stat(s, "big")
    r.eq((st.masked, st.indexed, st.rebuilding), (0, n - 100, False),
         "after the rebuild: nothing masked, every live vector indexed")
    r.eq(search(s, vector=vecs[500], k=1, ef_search=256,
                collection="big").hits[0].chunk.doc_id, "v500", "search after the rebuild")
    r.raises(NF, lambda: list(s.admin.RebuildIndex(A.RebuildIndexRequest(collection="nope"),
                                                   timeout=T)),
             "RebuildIndex of an unknown collection: NOT_FOUND")
    msgs = list(s.admin.RebuildIndex(A.RebuildIndexRequest(), timeout=300 * SLOW))
    r.check(msgs and msgs[-1].state == "done" and msgs[-1].collection == "default",
            "RebuildIndex without a name rebuilds default")


def main():
    r = Report("test_collections")
    with Daemon(r) as d:
        s = d.stubs()
        r.case("create, list, drop", case_create_list_drop, r, s)
        r.case("same id in two collections", case_same_id, r, s)
        r.case("client vectors", case_client_vectors, r, s)
        r.case("index specs and stats", case_index_specs, r, s)
        r.case("rebuild", case_rebuild, r, s)
    r.finish()


if __name__ == "__main__":
    main()
