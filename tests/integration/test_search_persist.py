#!/usr/bin/python3
"""Search indexes survive restarts and crashes: the vector index files are
saved on a clean stop; writes after the last save (adds, replaces, deletes)
come back after kill -9 from the change log. The daemon runs with saves
pushed far away (index.save_interval_s, index.save_every_changes), so the
kill lands between the adds and any save. Search results (ids and scores,
every mode, hash and client-vector collections, HNSW and Flat) must equal
those before the kill, and deleted documents must stay gone."""

import random

from ctxd_harness import Daemon, Report, SLOW, pb, stats, verify
from prose import ARTICLES, QUERIES

D = pb.documents_pb2
R = pb.retrieval_pb2
A = pb.admin_pb2
T = 30 * SLOW
NO_SAVE = ["--index.save_interval_s", "86400", "--index.save_every_changes", "1000000000"]


def put(s, id, text, collection=""):
    return s.docs.Put(D.PutRequest(document=D.Document(id=id, text=text,
                                                       collection=collection)), timeout=T)


def put_vec(s, id, vec, collection):
    text = "point %s" % id
    doc = D.Document(id=id, text=text, collection=collection)
    doc.chunks.add(byte_start=0, byte_end=len(text), vector=vec)
    return s.docs.Put(D.PutRequest(document=doc), timeout=T)


def snapshot(s, vecs):
    """Results of a fixed set of searches: {query label: [(doc, ordinal, score)]}."""
    out = {}
    for q, _ in QUERIES:
        for mode in ("vector", "lexical", "hybrid"):
            resp = s.retrieval.Search(R.SearchRequest(text=q, k=8, mode=mode), timeout=T)
            out[(q, mode)] = [(h.chunk.doc_id, h.chunk.ordinal, h.score) for h in resp.hits]
    for coll in ("pts-hnsw", "pts-flat"):
        for i in range(0, len(vecs), 17):
            resp = s.retrieval.Search(R.SearchRequest(vector=vecs[i], k=5, collection=coll,
                                                      ef_search=128), timeout=T)
            out[(coll, i)] = [(h.chunk.doc_id, h.chunk.ordinal, h.score) for h in resp.hits]
    return out


def same(a, b):
    """Equal ids in order and scores within float rounding."""
    bad = []
    for key in a:
        x, y = a[key], b.get(key)
        if y is None or [h[:2] for h in x] != [h[:2] for h in y] or \
                any(abs(p[2] - q[2]) > 1e-5 * max(1, abs(p[2])) for p, q in zip(x, y)):
            bad.append((key, x[:3], y and y[:3]))
    return bad


def absent(r, s, gone, label):
    for id in gone:
        hits = []
        for mode in ("vector", "lexical", "hybrid"):
            hits += s.retrieval.Search(R.SearchRequest(text=ARTICLES.get(id, "point"), k=50,
                                                       mode=mode), timeout=T).hits
        for coll in ("pts-hnsw", "pts-flat"):
            hits += s.retrieval.Search(R.SearchRequest(text="point", mode="lexical", k=1000,
                                                       collection=coll), timeout=T).hits
        r.check(all(h.chunk.doc_id != id for h in hits), "%s: deleted %s stays gone" % (label, id))


def main():
    r = Report("test_search_persist")
    rng = random.Random(11)
    vecs = [[rng.gauss(0, 1) for _ in range(16)] for _ in range(300)]
    names = sorted(ARTICLES)
    with Daemon(r, args=NO_SAVE) as d:
        s = d.stubs()
        for coll, spec in (("pts-hnsw", "HNSW32"), ("pts-flat", "Flat")):
            s.admin.CreateCollection(A.CreateCollectionRequest(config=A.CollectionConfig(
                name=coll, embedder="none:dim=16", metric="l2", index_spec=spec)), timeout=T)
        for id in names[:6]:
            put(s, id, ARTICLES[id])
        for i, v in enumerate(vecs[:150]):
            put_vec(s, "p%d" % i, v, "pts-hnsw")
            put_vec(s, "p%d" % i, v, "pts-flat")

        # A clean stop saves every index file.
        before_restart = snapshot(s, vecs[:150])
        d.restart()
        s = d.stubs()
        r.eq(same(before_restart, snapshot(s, vecs[:150])), [],
             "clean restart: the same results from the saved index files")
        covered = {c.config.name: c.covered_seq for c in stats(s).collections}
        r.check(all(v > 0 for v in covered.values()), "each index file covers a change-log seq",
                covered)

        # Changes after the last save: adds, a replace, deletes.
        for id in names[6:]:
            put(s, id, ARTICLES[id])
        put(s, "bread", ARTICLES["bread"] + " Rye bread is denser than wheat bread.")
        gone = ["chess", "glacier"]
        for id in gone:
            s.docs.Delete(D.DeleteRequest(id=id), timeout=T)
        for i, v in enumerate(vecs[150:], start=150):
            put_vec(s, "p%d" % i, v, "pts-hnsw")
            put_vec(s, "p%d" % i, v, "pts-flat")
        gone_pts = ["p%d" % i for i in range(0, 300, 13)]
        for id in gone_pts:
            for coll in ("pts-hnsw", "pts-flat"):
                s.docs.Delete(D.DeleteRequest(id=id, collection=coll), timeout=T)
        put_vec(s, "p1", [x + 0.5 for x in vecs[1]], "pts-hnsw")  # a replaced vector
        put_vec(s, "p1", [x + 0.5 for x in vecs[1]], "pts-flat")
        now = {c.config.name: c.covered_seq for c in stats(s).collections}
        r.eq(now, covered, "no index was saved since (saves pushed far away)")
        before = snapshot(s, vecs)
        absent(r, s, gone + gone_pts, "before the kill")

        for round in (1, 2):
            d.kill9()
            d.start()
            s = d.stubs()
            got = snapshot(s, vecs)
            r.eq(same(before, got), [], "kill -9 #%d: search results equal those before" % round)
            absent(r, s, gone + gone_pts, "after kill -9 #%d" % round)
            st = {c.config.name: c for c in stats(s).collections}
            r.eq((st["pts-hnsw"].documents, st["pts-hnsw"].indexed),
                 (300 - len(gone_pts), 300 - len(gone_pts)),
                 "kill -9 #%d: HNSW holds every live vector" % round)
            r.eq(st["default"].documents, len(names) - len(gone),
                 "kill -9 #%d: default's documents" % round)
        hit = s.retrieval.Search(R.SearchRequest(text="rye denser", mode="lexical"),
                                 timeout=T).hits
        r.eq([h.chunk.doc_id for h in hit], ["bread"], "the replacement is what was replayed")
        r.check(verify(s).ok, "Verify ok after the crashes")
        # A clean stop now saves; the next start replays nothing and agrees.
        d.restart()
        s = d.stubs()
        r.eq(same(before, snapshot(s, vecs)), [], "clean restart after the replay: same results")
    r.finish()


if __name__ == "__main__":
    main()
