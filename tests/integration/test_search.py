#!/usr/bin/python3
"""Retrieval.Search and SearchBatch over the wire with stock grpcio stubs, on
a small corpus of real prose (prose.py): each mode (vector with the built-in
hash embedder, lexical BM25, hybrid) finds the article a query was written
about and the right chunk of a multi-chunk document; BM25 scores equal a
hand computation (default and configured k1/b); filters by document id and
metadata; with_text; SearchBatch; per-call ef_search/nprobe; parameter and
dimension errors (nothing written on a bad document); deletes and replaces
visible to the very next search; unknown and malformed collection names."""

import math
import struct

import grpc

from ctxd_harness import Daemon, Report, SLOW, pb, stats
from prose import ALMANAC_PARTS, ALMANAC_QUERIES, ARTICLES, QUERIES
from test_bad_input import fld, raw_unary, varint

D = pb.documents_pb2
R = pb.retrieval_pb2
A = pb.admin_pb2
T = 30 * SLOW
IA = grpc.StatusCode.INVALID_ARGUMENT
NF = grpc.StatusCode.NOT_FOUND
RE = grpc.StatusCode.RESOURCE_EXHAUSTED

KIND = {"volcano": "nature", "honeybee": "nature", "glacier": "nature",
        "comet": "nature", "tide": "nature", "lighthouse": "history",
        "printing": "history", "railway": "history", "bread": "craft",
        "violin": "craft", "coffee": "craft", "chess": "craft"}


def search(s, **kw):
    return s.retrieval.Search(R.SearchRequest(**kw), timeout=T)


def ids(resp):
    return [h.chunk.doc_id for h in resp.hits]


def put(s, id, text, collection="", metadata=None, chunks=None, max_tokens=0):
    doc = D.Document(id=id, text=text, collection=collection, metadata=metadata or {})
    for c in chunks or []:
        doc.chunks.add(byte_start=c[0], byte_end=c[1], vector=c[2] if len(c) > 2 else [])
    return s.docs.Put(D.PutRequest(document=doc,
                                   chunking=D.ChunkOptions(max_tokens=max_tokens)),
                      timeout=T)


def paragraph_ranges(parts):
    """Byte ranges of the parts in "\\n\\n".join(parts), each chunk taking the
    separator after it, so that the chunks cover the text."""
    text = "\n\n".join(parts)
    out, pos = [], 0
    for i, p in enumerate(parts):
        n = len(p.encode()) + (2 if i + 1 < len(parts) else 0)
        out.append((pos, pos + n))
        pos += n
    return text, out


# The default collection's dimension (the hash embedder's default), read
# from the server by load_corpus.
DIM = 0


def load_corpus(r, s):
    global DIM
    DIM = [c.config.dim for c in stats(s).collections if c.config.name == "default"][0]
    r.check(DIM >= 16, "the default collection has a vector dimension (%d)" % DIM)
    for id, text in ARTICLES.items():
        p = put(s, id, text, metadata={"kind": KIND[id]})
        r.check(p.chunks == 1, "%s: one chunk" % id, p.chunks)
    text, ranges = paragraph_ranges(ALMANAC_PARTS)
    p = put(s, "almanac", text, chunks=ranges)
    r.eq(p.chunks, 4, "almanac with client chunks: 4 chunks")
    # The same almanac chunked by the server, at paragraph boundaries.
    p = put(s, "almanac-auto", text, max_tokens=80)
    r.check(p.chunks >= 2, "almanac chunked by the server into several chunks", p.chunks)


def case_modes(r, s):
    for mode in ("vector", "lexical", "hybrid", ""):
        right = 0
        for q, want in QUERIES:
            resp = search(s, text=q, k=5, mode=mode)
            got = ids(resp)
            if got and got[0] == want:
                right += 1
            else:
                print("    mode %r query %r: got %s" % (mode, q, got[:3]))
            scores = [h.score for h in resp.hits]
            if scores != sorted(scores, reverse=True):
                r.check(False, "mode %r: scores descending" % mode, scores)
        r.eq(right, len(QUERIES), "mode %r: the top hit is the article each query is about"
             % (mode or "default"))
    # Score ranges per mode.
    q = QUERIES[0][0]
    v = search(s, text=q, k=5, mode="vector")
    r.check(all(-1.0001 <= h.score <= 1.0001 for h in v.hits) and v.hits[0].score > 0.1,
            "vector scores are cosines", [h.score for h in v.hits])
    lx = search(s, text=q, k=5, mode="lexical")
    r.check(all(h.score > 0 for h in lx.hits), "lexical scores are positive BM25",
            [h.score for h in lx.hits])
    hy = search(s, text=q, k=5, mode="hybrid")
    r.check(all(0 < h.score <= 2.0 / 61 + 1e-6 for h in hy.hits),
            "hybrid scores are reciprocal rank fusions (<= 2/61)", [h.score for h in hy.hits])
    r.check(abs(hy.hits[0].score - 2.0 / 61) < 1e-6,
            "hybrid: a hit first in both lists scores 2/61", hy.hits[0].score)
    # Default mode: hybrid with text.
    r.eq(ids(search(s, text=q, k=5)), ids(hy), "empty mode with text = hybrid")


def case_right_chunk(r, s):
    text, ranges = paragraph_ranges(ALMANAC_PARTS)
    b = text.encode()
    for q, part in ALMANAC_QUERIES:
        for mode in ("vector", "lexical", "hybrid"):
            resp = search(s, text=q, k=3, mode=mode, doc_ids=["almanac"], with_text=True)
            h = resp.hits[0] if resp.hits else None
            r.check(h is not None and h.chunk.doc_id == "almanac" and h.chunk.ordinal == part,
                    "almanac %s: %r finds chunk %d" % (mode, q[:30], part),
                    h and (h.chunk.doc_id, h.chunk.ordinal))
            if h is not None:
                r.eq((h.chunk.byte_start, h.chunk.byte_end), ranges[part],
                     "almanac %s: chunk %d's byte range" % (mode, part))
                r.eq(h.chunk.text.encode(), b[ranges[part][0]:ranges[part][1]],
                     "almanac %s: with_text gives the chunk's bytes" % mode)
                r.check(h.chunk.tokens > 0, "hit chunk has its token count")
        resp = search(s, text=q, k=1, mode="hybrid", doc_ids=["almanac-auto"], with_text=True)
        r.check(resp.hits and ALMANAC_PARTS[part] in resp.hits[0].chunk.text,
                "server-chunked almanac: the hit's text holds paragraph %d" % part,
                resp.hits and resp.hits[0].chunk.text[:60])


def bm25(tf, dl, df, N, avgdl, k1=1.2, b=0.75):
    idf = math.log(1 + (N - df + 0.5) / (df + 0.5))
    return idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl))


def check_bm25(r, s, coll, k1, b, label):
    for id, text in (("d1", "Apple banana, apple cherry."), ("d2", "banana date"),
                     ("d3", "cherry date elderberry fig grape")):
        put(s, id, text, collection=coll)
    N, avgdl = 3, (4 + 2 + 5) / 3.0
    want = {
        "d1": bm25(2, 4, 1, N, avgdl, k1, b) + bm25(1, 4, 2, N, avgdl, k1, b),
        "d2": bm25(1, 2, 2, N, avgdl, k1, b),
    }
    resp = search(s, text="APPLE banana", k=10, mode="lexical", collection=coll)
    got = {h.chunk.doc_id: h.score for h in resp.hits}
    r.eq(sorted(got), ["d1", "d2"], "%s: BM25 finds the two chunks holding a term" % label)
    for id, w in want.items():
        g = got.get(id, float("nan"))
        r.check(abs(g - w) <= 1e-5 * w, "%s: BM25 score of %s = %.6f (hand-computed)"
                % (label, id, w), "got %r" % g)
    r.eq(ids(resp), ["d1", "d2"], "%s: higher score first" % label)


def case_bm25(r, s, d):
    s.admin.CreateCollection(A.CreateCollectionRequest(
        config=A.CollectionConfig(name="bm25", index_spec="Flat")), timeout=T)
    check_bm25(r, s, "bm25", 1.2, 0.75, "k1=1.2 b=0.75")
    # The configured k1 and b reach the scoring.
    with Daemon(r, args=["--bm25.k1", "2.0", "--bm25.b", "0.5"], name="ctxd-bm25") as d2:
        check_bm25(r, d2.stubs(), "", 2.0, 0.5, "--bm25.k1 2.0 --bm25.b 0.5")


def case_filters_text(r, s):
    resp = search(s, text="kilometres", k=20, mode="lexical")
    r.eq(sorted(ids(resp)), ["almanac", "almanac-auto", "comet", "volcano"],
         "lexical: every chunk with the term, no other")
    resp = search(s, text="kilometres", k=20, mode="lexical",
                  metadata=[R.MetadataFilter(key="kind", value="nature")])
    r.eq(sorted(ids(resp)), ["comet", "volcano"], "metadata filter kind=nature")
    resp = search(s, text="kilometres", k=20, mode="lexical",
                  metadata=[R.MetadataFilter(key="kind", value="nature"),
                            R.MetadataFilter(key="kind", value="craft")])
    r.eq(ids(resp), [], "two filters on one key with different values: AND, nothing")
    resp = search(s, text="kilometres", k=20, mode="lexical", doc_ids=["comet", "bread"])
    r.eq(ids(resp), ["comet"], "doc_ids filter")
    resp = search(s, text="why do comets grow tails", k=20, mode="vector",
                  doc_ids=["bread", "chess"])
    r.check(set(ids(resp)) <= {"bread", "chess"} and len(resp.hits) == 2,
            "vector search with doc_ids returns only those documents", ids(resp))
    resp = search(s, text="why do comets grow tails", k=20, mode="hybrid",
                  metadata=[R.MetadataFilter(key="kind", value="history")])
    r.check(set(ids(resp)) <= {"lighthouse", "printing", "railway"} and resp.hits,
            "hybrid search with a metadata filter", ids(resp))
    resp = search(s, text="comet", k=3, mode="lexical", doc_ids=["no-such-doc"])
    r.eq(ids(resp), [], "doc_ids naming no stored document: no hits")
    # with_text
    resp = search(s, text="sourdough starter", k=1, mode="hybrid", with_text=True)
    h = resp.hits[0]
    r.eq((h.chunk.doc_id, h.chunk.text), ("bread", ARTICLES["bread"]), "with_text: chunk text")
    resp = search(s, text="sourdough starter", k=1, mode="hybrid")
    r.eq(resp.hits[0].chunk.text, "", "without with_text: no chunk text")
    r.eq((resp.hits[0].chunk.byte_start, resp.hits[0].chunk.byte_end),
         (0, len(ARTICLES["bread"].encode())), "hit byte range")
    # k
    r.eq(len(search(s, text="the", k=0, mode="vector").hits), 10, "k=0 means 10")
    r.eq(len(search(s, text="the", k=3, mode="vector").hits), 3, "k=3")
    n = [c.chunks for c in stats(s).collections if c.config.name == "default"][0]
    r.eq(len(search(s, text="the", k=1000, mode="vector").hits), n,
         "k above the corpus: every chunk (%d)" % n)


def case_batch(r, s):
    qs = [R.SearchRequest(text=q, k=3, mode=m) for q, _ in QUERIES[:4]
          for m in ("vector", "lexical", "hybrid")]
    b = s.retrieval.SearchBatch(R.SearchBatchRequest(queries=qs), timeout=T)
    r.eq(len(b.results), len(qs), "SearchBatch: one result per query")
    same = all(ids(res) == ids(s.retrieval.Search(q, timeout=T))
               and [h.score for h in res.hits] == [h.score for h in
                                                    s.retrieval.Search(q, timeout=T).hits]
               for q, res in zip(qs, b.results))
    r.check(same, "SearchBatch results equal single Searches, in order")
    r.eq(len(s.retrieval.SearchBatch(R.SearchBatchRequest(), timeout=T).results), 0,
         "empty SearchBatch: no results")
    big = [R.SearchRequest(text="x")] * 1025
    r.raises(RE, lambda: s.retrieval.SearchBatch(R.SearchBatchRequest(queries=big), timeout=T),
             "1025 queries: RESOURCE_EXHAUSTED", contains="1024")
    ok = [R.SearchRequest(text="x")] * 1024
    r.eq(len(s.retrieval.SearchBatch(R.SearchBatchRequest(queries=ok), timeout=T).results),
         1024, "1024 queries answered")
    bad = [R.SearchRequest(text="x"), R.SearchRequest(text="x", k=5000)]
    r.raises(RE, lambda: s.retrieval.SearchBatch(R.SearchBatchRequest(queries=bad), timeout=T),
             "a query over a limit in a batch: RESOURCE_EXHAUSTED naming it",
             contains="queries[1]")
    bad = [R.SearchRequest(text="x"), R.SearchRequest(text="x", collection="nope")]
    r.raises(NF, lambda: s.retrieval.SearchBatch(R.SearchBatchRequest(queries=bad), timeout=T),
             "an unknown collection in a batch: NOT_FOUND", contains="queries[1]")


def case_params(r, s):
    q = QUERIES[1][0]
    base = ids(search(s, text=q, k=5, mode="vector"))
    r.eq(ids(search(s, text=q, k=5, mode="vector", ef_search=256)), base,
         "ef_search=256 accepted (ignored by Flat)")
    r.eq(ids(search(s, text=q, k=5, mode="vector", nprobe=4)), base,
         "nprobe accepted (ignored by an index without lists)")
    r.raises(RE, lambda: search(s, text=q, ef_search=1 << 20),
             "ef_search 2^20: RESOURCE_EXHAUSTED", contains=["ef_search", "32768"])
    r.raises(RE, lambda: search(s, text=q, nprobe=1 << 20), "nprobe 2^20: RESOURCE_EXHAUSTED",
             contains=["nprobe", "65536"])
    r.raises(RE, lambda: search(s, text=q, k=1001), "k 1001: RESOURCE_EXHAUSTED",
             contains=["k 1001", "1000"])
    r.raises(IA, lambda: search(s, text=q, mode="semantic"), "unknown mode: INVALID_ARGUMENT",
             contains="semantic")
    r.raises(IA, lambda: search(s, k=3), "no text and no vector: INVALID_ARGUMENT")
    r.raises(IA, lambda: search(s, vector=[0.5] * DIM, mode="lexical"),
             "lexical with a vector alone: INVALID_ARGUMENT", contains="text")
    r.raises(IA, lambda: search(s, vector=[0.5] * DIM, mode="hybrid"),
             "hybrid with a vector alone: INVALID_ARGUMENT", contains="text")
    r.raises(IA, lambda: search(s, vector=[0.5] * 7), "query vector of 7 dims: INVALID_ARGUMENT",
             contains=["7", str(DIM)])
    r.raises(IA, lambda: search(s, vector=[float("nan")] * DIM),
             "NaN in the query vector: INVALID_ARGUMENT")
    # A vector query (the default mode for a vector alone) with the
    # embedding of an article finds that article.
    g = s.docs.Get(D.GetRequest(id="comet", with_chunks=True, with_vectors=True), timeout=T)
    v = list(g.chunks[0].vector)
    r.eq(len(v), DIM, "Get with_vectors: a %d-dimension hash vector per chunk" % DIM)
    r.check(abs(sum(x * x for x in v) - 1) < 1e-4, "stored hash vectors are unit length")
    resp = search(s, vector=v, k=1)
    r.check(resp.hits and resp.hits[0].chunk.doc_id == "comet"
            and abs(resp.hits[0].score - 1) < 1e-4,
            "a document's own vector finds it with cosine 1",
            resp.hits and (resp.hits[0].chunk.doc_id, resp.hits[0].score))
    r.raises(IA, lambda: s.docs.Get(D.GetRequest(id="comet", with_vectors=True), timeout=T),
             "with_vectors without with_chunks: INVALID_ARGUMENT")


def case_bad_documents(r, s):
    before = stats(s)
    text = "Four words of text."
    n = len(text.encode())
    r.raises(IA, lambda: put(s, "bad-dim", text, chunks=[(0, n, [0.1] * 5)]),
             "document vector of 5 dims in a %d-dim collection: INVALID_ARGUMENT" % DIM,
             contains=["bad-dim", "chunk 0", "5", str(DIM)])
    r.raises(IA, lambda: put(s, "bad-dim2", text, chunks=[(0, 5), (5, n, [0.1] * (DIM + 1))]),
             "second chunk's vector of DIM + 1 dims: INVALID_ARGUMENT",
             contains=["bad-dim2", "chunk 1", str(DIM + 1), str(DIM)])
    r.raises(IA, lambda: put(s, "bad-range", text, chunks=[(0, 4), (6, n)]),
             "client chunks with a gap: INVALID_ARGUMENT", contains=["chunk 1", "gap"])
    r.raises(IA, lambda: put(s, "bad-range", text, chunks=[(0, 4), (4, n - 1)]),
             "client chunks not reaching the end: INVALID_ARGUMENT", contains="chunk 1")
    r.raises(IA, lambda: put(s, "bad-range", text, chunks=[(1, n)]),
             "first client chunk not at 0: INVALID_ARGUMENT", contains="chunk 0")
    r.raises(IA, lambda: put(s, "bad-range", text, chunks=[(0, n + 1)]),
             "client chunk past the end: INVALID_ARGUMENT")
    u = "naïve café"
    r.raises(IA, lambda: put(s, "bad-utf8", u, chunks=[(0, 3), (3, len(u.encode()))]),
             "client chunk cutting a UTF-8 character: INVALID_ARGUMENT", contains="UTF-8")
    r.raises(IA, lambda: put(s, "bad-both", text, chunks=[(0, n)], max_tokens=64),
             "client chunks and chunking options: INVALID_ARGUMENT")
    r.raises(IA, lambda: put(s, "bad-nan", text, chunks=[(0, n, [float("inf")] * DIM)]),
             "infinite vector component: INVALID_ARGUMENT")
    r.raises(IA, lambda: put(s, "bad-coll", text, collection="no spaces"),
             "bad collection name on Put: INVALID_ARGUMENT", contains="collection")
    r.raises(IA, lambda: put(s, "bad-coll", text, collection="x" * 65),
             "65-byte collection name: INVALID_ARGUMENT", contains="collection")
    # PutStream: the bad document is a PutError, the good one is stored.
    good = D.PutRequest(document=D.Document(id="ps-good", text=text))
    badd = D.Document(id="ps-bad", text=text)
    badd.chunks.add(byte_start=0, byte_end=n, vector=[1.0, 2.0])
    acks = list(s.docs.PutStream(iter([good, D.PutRequest(document=badd)]), timeout=T))
    errs = [(e.id, e.reason) for a in acks for e in a.errors]
    r.check(len(errs) == 1 and errs[0][0] == "ps-bad" and "2 dimensions" in errs[0][1],
            "PutStream: a wrong-dimension vector is a PutError naming it", errs)
    r.eq([i for a in acks for i in a.ids], ["ps-good"], "PutStream: the good document is stored")
    for id in ("bad-dim", "bad-dim2", "bad-range", "bad-utf8", "bad-both", "bad-nan", "ps-bad"):
        r.raises(NF, lambda id=id: s.docs.Get(D.GetRequest(id=id), timeout=T),
                 "%s was not written" % id)
    after = stats(s)
    r.eq(after.documents - before.documents, 1, "only ps-good was written")
    names = [c.config.name for c in after.collections]
    r.check("x" * 65 not in names and "no spaces" not in names, "no collection was created")
    s.docs.Delete(D.DeleteRequest(id="ps-good"), timeout=T)
    # A client vector of the right dimension is taken and normalised.
    v = [0.0] * DIM
    v[3] = 2.0
    put(s, "client-vec", text, chunks=[(0, n, v)])
    g = s.docs.Get(D.GetRequest(id="client-vec", with_chunks=True, with_vectors=True), timeout=T)
    r.eq([round(x, 6) for x in g.chunks[0].vector[:5]], [0, 0, 0, 1.0, 0],
         "a client vector in an ip collection is stored L2-normalised")
    resp = search(s, vector=v, k=1)
    r.eq(ids(resp), ["client-vec"], "the client vector is searchable")
    s.docs.Delete(D.DeleteRequest(id="client-vec"), timeout=T)


def case_visibility(r, s):
    word = "zyzzyva"
    put(s, "vis", "The %s is a weevil found in South America." % word)
    r.eq(ids(search(s, text=word, mode="lexical")), ["vis"], "new document: lexical sees it at once")
    r.eq(ids(search(s, text="weevil %s South America" % word, mode="vector", k=1)), ["vis"],
         "new document: vector search sees it at once")
    p = put(s, "vis", "A quokka is a small wallaby from Rottnest Island.")
    r.eq(p.replaced, True, "replaced")
    r.eq(ids(search(s, text=word, mode="lexical")), [], "replaced: the old text is gone from BM25")
    r.eq(ids(search(s, text="quokka", mode="lexical")), ["vis"], "replaced: the new text is found")
    resp = search(s, text="weevil %s South America" % word, mode="vector", k=20)
    r.check("vis" not in ids(resp) or resp.hits[ids(resp).index("vis")].score < 0.5,
            "replaced: the old vector is gone", ids(resp))
    r.eq(ids(search(s, text="quokka wallaby Rottnest", mode="vector", k=1)), ["vis"],
         "replaced: the new vector is found")
    for i in range(20):  # many replacements in a row, each visible at once
        put(s, "vis", "Version %d of a note about tapirs number%d." % (i, i))
        hit = ids(search(s, text="number%d" % i, mode="lexical"))
        if hit != ["vis"]:
            r.check(False, "replacement %d visible to the next search" % i, hit)
            break
    else:
        r.check(True, "20 replacements, each visible to the next search")
    d = s.docs.Delete(D.DeleteRequest(id="vis"), timeout=T)
    r.eq(d.deleted, True, "deleted")
    r.eq(ids(search(s, text="tapirs", mode="lexical")), [], "deleted: gone from lexical search")
    r.check("vis" not in ids(search(s, text="tapirs note version", mode="vector", k=100)),
            "deleted: gone from vector search")
    r.check("vis" not in ids(search(s, text="tapirs note version", mode="hybrid", k=100)),
            "deleted: gone from hybrid search")


def case_collection_names(r, s):
    r.raises(NF, lambda: search(s, text="x", collection="nope"),
             "Search in an unknown collection: NOT_FOUND", contains="nope")
    r.raises(NF, lambda: s.docs.Get(D.GetRequest(id="bread", collection="nope"), timeout=T),
             "Get in an unknown collection: NOT_FOUND", contains="nope")
    r.raises(NF, lambda: s.docs.Delete(D.DeleteRequest(id="bread", collection="nope"), timeout=T),
             "Delete in an unknown collection: NOT_FOUND")
    r.raises(NF, lambda: s.docs.List(D.ListRequest(collection="nope"), timeout=T),
             "List of an unknown collection: NOT_FOUND")
    for bad in ("a b", "ä", "x/y", "x" * 65):
        r.raises(IA, lambda bad=bad: search(s, text="x", collection=bad),
                 "Search with collection name %r: INVALID_ARGUMENT" % bad[:10])
    r.raises(IA, lambda: s.docs.Get(D.GetRequest(id="bread", collection="a b"), timeout=T),
             "Get with a bad collection name: INVALID_ARGUMENT")
    r.eq(ids(search(s, text="sourdough", mode="lexical", collection="default")), ["bread"],
         "collection \"default\" = empty name")


def case_raw(r, s):
    """Hand-encoded requests: what grpcio would not send."""
    raw = raw_unary(s.channel, "/ctxd.v1.Retrieval/Search", R.SearchResponse)
    r.raises(IA, lambda: raw(fld(1, b"caf\xe9"), timeout=T),
             "query text that is not UTF-8: INVALID_ARGUMENT", contains="UTF-8")
    r.raises(IA, lambda: raw(fld(1, b"bread") + fld(5, b"def\x00ault"), timeout=T),
             "collection name with a NUL: INVALID_ARGUMENT")
    r.raises(IA, lambda: raw(fld(1, b"bread") + fld(2, b"\x00\x00\x80"), timeout=T),
             "packed vector of 3 bytes: INVALID_ARGUMENT")
    r.raises(IA, lambda: raw(varint(1 << 3 | 0) + varint(5), timeout=T),
             "text sent as a varint: INVALID_ARGUMENT")
    r.raises(IA, lambda: raw(fld(1, b"bread") + fld(6, b"\xff"), timeout=T),
             "doc_ids entry that is not UTF-8: INVALID_ARGUMENT")
    r.raises(IA, lambda: raw(b"\x0a\x05ab", timeout=T), "truncated message: INVALID_ARGUMENT")
    # Unpacked repeated floats (fixed32 one by one) are read like packed ones.
    g = s.docs.Get(D.GetRequest(id="tide", with_chunks=True, with_vectors=True), timeout=T)
    v = list(g.chunks[0].vector)
    unpacked = b"".join(varint(2 << 3 | 5) + struct.pack("<f", x) for x in v)
    resp = raw(unpacked + varint(3 << 3) + varint(1), timeout=T)
    r.eq([h.chunk.doc_id for h in resp.hits], ["tide"], "an unpacked query vector works")
    # Unknown fields are skipped, as protobuf does.
    resp = raw(fld(1, b"sourdough") + fld(99, b"future") + varint(4 << 3 | 2) +
               varint(7) + b"lexical", timeout=T)
    r.eq([h.chunk.doc_id for h in resp.hits], ["bread"], "unknown fields are skipped")


def main():
    r = Report("test_search")
    with Daemon(r) as d:
        s = d.stubs()
        r.case("empty collection", lambda: r.eq(ids(search(s, text="anything", k=5)), [],
                                                 "search of an empty collection: no hits"))
        r.case("load corpus", load_corpus, r, s)
        r.case("modes", case_modes, r, s)
        r.case("right chunk", case_right_chunk, r, s)
        r.case("bm25", case_bm25, r, s, d)
        r.case("filters and with_text", case_filters_text, r, s)
        r.case("batch", case_batch, r, s)
        r.case("parameters", case_params, r, s)
        r.case("bad documents", case_bad_documents, r, s)
        r.case("visibility", case_visibility, r, s)
        r.case("collection names", case_collection_names, r, s)
        r.case("hand-encoded requests", case_raw, r, s)
    r.finish()


if __name__ == "__main__":
    main()
