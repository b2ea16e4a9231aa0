#!/usr/bin/python3
"""Searches while writing: threads search (every mode, SearchBatch, filters)
while other threads Put, replace, PutStream and Delete in the same
collection. Every search must succeed and always see the documents that are
never touched; when the writers stop, search agrees with what is stored.
Run with a Flat index (exact) and with HNSW32 (where replaced and deleted
vectors stay in the graph, masked, until the background rebuild, so an
approximate search at the default efSearch may miss). The checks: lexical
search always finds the answering article first; with Flat, vector search
has it in the top 5 (a short churn text can collide with the query in the
hash embedder's buckets and score above it) and hybrid first."""

import random
import threading
import time

import grpc

from ctxd_harness import Daemon, Report, SLOW, pb
from prose import ARTICLES, QUERIES

D = pb.documents_pb2
R = pb.retrieval_pb2
T = 30 * SLOW
RUN_S = 4.0


def run(r, spec):
    with Daemon(r, args=["--index.spec", spec], name="ctxd-" + spec) as d:
        s = d.stubs()
        for id, text in ARTICLES.items():
            s.docs.Put(D.PutRequest(document=D.Document(id=id, text=text)), timeout=T)
        stop = threading.Event()
        errors, counts = [], {"search": 0, "write": 0}
        lock = threading.Lock()
        live = {}  # churn id -> its word, as last written (None: deleted)

        def searcher(seed):
            rng = random.Random(seed)
            st = d.stubs()
            while not stop.is_set():
                q, want = rng.choice(QUERIES)
                mode = rng.choice(["vector", "lexical", "hybrid"])
                try:
                    if rng.random() < 0.2:
                        b = st.retrieval.SearchBatch(R.SearchBatchRequest(queries=[
                            R.SearchRequest(text=q, k=5, mode=mode),
                            R.SearchRequest(text=q, k=5, mode=mode,
                                            doc_ids=[want])]), timeout=T)
                        hits = [list(x.hits) for x in b.results]
                    else:
                        hits = [list(st.retrieval.Search(
                            R.SearchRequest(text=q, k=5, mode=mode), timeout=T).hits)]
                    top = [h.chunk.doc_id for h in hits[0]]
                    if mode == "lexical" or (spec == "Flat" and mode == "hybrid"):
                        ok = top[:1] == [want]
                    else:
                        ok = spec != "Flat" or want in top
                    if not ok:
                        with lock:
                            errors.append(("wrong hits", q, mode, top))
                    with lock:
                        counts["search"] += 1
                except grpc.RpcError as e:
                    with lock:
                        errors.append((e.code(), e.details()))

        def writer(seed):
            rng = random.Random(seed)
            st = d.stubs()
            i = 0
            while not stop.is_set():
                id = "churn-%d-%d" % (seed, rng.randint(0, 30))
                word = "churnword%d" % rng.randint(0, 5)
                try:
                    op = rng.random()
                    if op < 0.5:
                        st.docs.Put(D.PutRequest(document=D.Document(
                            id=id, text="A churning note %s number %d." % (word, i))), timeout=T)
                        with lock:
                            live[id] = word
                    elif op < 0.75:
                        st.docs.Delete(D.DeleteRequest(id=id), timeout=T)
                        with lock:
                            live[id] = None
                    else:
                        reqs = [D.PutRequest(document=D.Document(
                            id=id, text="Streamed churn %s item %d." % (word, i)))]
                        for _ in st.docs.PutStream(iter(reqs), timeout=T):
                            pass
                        with lock:
                            live[id] = word
                    with lock:
                        counts["write"] += 1
                    # Visible to this writer's very next search.
                    hits = st.retrieval.Search(R.SearchRequest(
                        text=word, mode="lexical", k=1000), timeout=T).hits
                    present = id in [h.chunk.doc_id for h in hits]
                    if present != (op < 0.5 or op >= 0.75):
                        with lock:
                            errors.append(("not visible at once", id, op))
                except grpc.RpcError as e:
                    with lock:
                        errors.append((e.code(), e.details()))
                i += 1

        threads = [threading.Thread(target=searcher, args=(k,)) for k in range(4)]
        threads += [threading.Thread(target=writer, args=(100 + k,)) for k in range(2)]
        for t in threads:
            t.start()
        time.sleep(RUN_S)
        stop.set()
        for t in threads:
            t.join()
        print("    %s: %d searches and %d writes in %.0fs" % (spec, counts["search"],
                                                         counts["write"], RUN_S))
        r.eq(errors[:5], [], "every search and write succeeded, results as expected")
        r.check(counts["search"] > 20 and counts["write"] > 20, "both ran", counts)
        # Afterwards, search agrees with the store.
        for k in range(6):
            word = "churnword%d" % k
            hits = s.retrieval.Search(R.SearchRequest(text=word, mode="lexical", k=1000),
                                      timeout=T).hits
            want = sorted(id for id, w in live.items() if w == word)
            r.eq(sorted(h.chunk.doc_id for h in hits), want,
                 "%s %s: search finds exactly the stored documents with it" % (spec, word))


def main():
    r = Report("test_search_concurrency")
    for spec in ("Flat", "HNSW32"):
        r.case("index " + spec, run, r, spec)
    r.finish()


if __name__ == "__main__":
    main()
