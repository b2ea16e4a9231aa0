"""test_reorder - Corpus.Reorder end to end against a real daemon: corpora
with well-separated topic clusters from a JSONL file (texts, and given
vectors) and from stored documents (a collection, filters); the order keeps
clusters together, every document appears once except the duplicates it
reports, windows never exceed L, a seed gives the same order again;
decompose mode; FetchResult returns the files byte for byte; the stream
ends with the result; bad inputs give INVALID_ARGUMENT (or NOT_FOUND) with
a message that says what and where.
"""

import json
import math
import os
import random
import tempfile

import grpc

from corpus_gen import (check_iclm, make_corpus, read_jsonl, same_cluster_ratio,
                        write_jsonl)
from ctxd_harness import SLOW, Daemon, Report, pb
from ctxd_client import CtxdError

C = pb.corpus_pb2
T = 60 * SLOW
WINDOW = 512


def events_of(r, client, out, **kw):
    evs = list(client.reorder(out, timeout=T, **kw))
    r.check(evs and evs[-1].state == "done" and evs[-1].HasField("result"),
            "the stream ends with a done event carrying the result",
            evs[-1] if evs else None)
    return evs


def cluster_map(docs):
    return {d["id"]: d["cluster"] for d in docs}


def case_jsonl(r, d, work, docs, dups):
    c = d.client()
    path = os.path.join(work, "corpus.jsonl")
    write_jsonl(path, docs)
    out = os.path.join(work, "out-jsonl")
    evs = events_of(r, c, out, input_jsonl=path, window_tokens=WINDOW, k=10)
    last = evs[-1]
    res = last.result
    ids = {e.job_id for e in evs}
    r.eq(len(ids), 1, "every event names the same job")
    r.eq(evs[0].state in ("queued", "running"), True, "the first event is queued/running")
    # phases: each one that ended is reported once with phase_done, in order
    done_phases = [e.phase for e in evs if e.phase_done]
    r.eq(done_phases, ["read", "embed", "index", "knn", "dedup", "traverse", "pack"],
         "phases reported as done, in order")
    for e in evs:
        if e.phase_done and e.total:
            r.check(e.done == e.total, "%s done == total when it ends" % e.phase,
                    (e.done, e.total))
    r.eq([e for e in evs if e.phase == "read"][0].unit, "bytes", "read counts bytes")
    r.eq(res.documents, len(docs), "documents = input lines")
    r.eq(res.duplicates, len(dups), "the near-copies are reported as duplicates")
    r.eq(res.ordered, len(docs) - len(dups), "ordered = documents - duplicates")
    got_dups = {x["id"]: x["duplicate_of"] for x in read_jsonl(out + "/duplicates.jsonl")}
    r.eq(got_dups, dups, "duplicates.jsonl names each copy and its original")
    r.eq(check_iclm(out, docs, WINDOW), [], "each document once, windows <= L, in order")
    order = [o["id"] for o in read_jsonl(out + "/order.jsonl")]
    ratio = same_cluster_ratio(order, cluster_map(docs))
    r.check(ratio >= 0.95, "at least 95%% of adjacent pairs in one cluster (%.3f)" % ratio,
            ratio)
    r.check(res.adjacent_similarity > res.random_adjacent_similarity + 0.2,
            "adjacent similarity well above the random order's",
            (res.adjacent_similarity, res.random_adjacent_similarity))
    r.check(res.window_similarity > res.random_window_similarity,
            "window similarity above the random order's",
            (res.window_similarity, res.random_window_similarity))
    r.eq([f.name for f in res.files],
         ["order.jsonl", "windows.jsonl", "duplicates.jsonl", "summary.json"],
         "result lists the four output files")
    for f in res.files:
        r.eq(f.path, os.path.join(out, f.name), "%s path" % f.name)
        r.eq(f.bytes, os.path.getsize(f.path), "%s size" % f.name)
    s = json.load(open(out + "/summary.json"))
    r.eq((s["documents"], s["duplicates"], s["jumps"], s["windows"]),
         (res.documents, res.duplicates, res.jumps, res.windows),
         "summary.json has the result's figures")
    r.check(abs(s["adjacent_similarity"] - res.adjacent_similarity) < 1e-5,
            "summary.json adjacent_similarity", s["adjacent_similarity"])
    r.eq(res.output_dir, out, "result names the output directory")
    j = c.get_job(last.job_id)
    r.eq(j.state, "done", "GetJob: done")
    r.eq(j.request.input_jsonl, path, "GetJob: the request")
    r.eq([p.name for p in j.phases],
         ["read", "embed", "index", "knn", "dedup", "traverse", "pack"],
         "GetJob: phases")
    r.eq(j.result.jumps, res.jumps, "GetJob: the result")
    r.check(j.created_ms <= j.started_ms <= j.finished_ms, "GetJob: timestamps in order",
            (j.created_ms, j.started_ms, j.finished_ms))
    return last.job_id, out, path


def case_seed(r, d, work, docs, path):
    c = d.client()
    outs = []
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        out = os.path.join(work, "seed-" + name)
        events_of(r, c, out, input_jsonl=path, window_tokens=WINDOW, seed=seed)
        outs.append(open(out + "/order.jsonl", "rb").read())
        r.eq(check_iclm(out, docs, WINDOW), [], "seed %d: valid order" % seed)
    r.check(outs[0] == outs[1], "the same seed gives the same order.jsonl, byte for byte")
    wa = open(os.path.join(work, "seed-a/windows.jsonl"), "rb").read()
    wb = open(os.path.join(work, "seed-b/windows.jsonl"), "rb").read()
    r.check(wa == wb, "... and the same windows")


def case_given_vectors(r, d, work, docs):
    rng = random.Random(3)
    vecs = []
    for doc in docs:
        v = [rng.gauss(0, 0.05) for _ in range(8)]
        v[doc["cluster"]] += 1.0
        vecs.append(v)
    path = os.path.join(work, "vectors.jsonl")
    write_jsonl(path, docs, vectors=vecs)
    out = os.path.join(work, "out-vectors")
    evs = events_of(r, d.client(), out, input_jsonl=path, window_tokens=WINDOW,
                    vectors="given", dedup_cosine=2.0)
    phases = {e.phase for e in evs}
    r.check("embed" not in phases, "given vectors: nothing is embedded", sorted(phases))
    res = evs[-1].result
    r.eq(res.duplicates, 0, "dedup_cosine above 1: no duplicate removal")
    r.eq(check_iclm(out, docs, WINDOW), [], "valid order with given vectors")
    order = [o["id"] for o in read_jsonl(out + "/order.jsonl")]
    ratio = same_cluster_ratio(order, cluster_map(docs))
    r.check(ratio >= 0.95, "given vectors: %.3f adjacent pairs in one cluster" % ratio, ratio)


def case_stored(r, d, work, docs, dups):
    c = d.client()
    acks = list(c.put_many(({"id": x["id"], "text": x["text"],
                             "metadata": {"cluster": "c%d" % x["cluster"]}}
                            for x in docs), collection="topics", timeout=T))
    r.eq(sum(len(a.ids) for a in acks), len(docs), "the corpus is stored")
    out = os.path.join(work, "out-stored")
    evs = events_of(r, c, out, collection="topics", window_tokens=WINDOW)
    res = evs[-1].result
    r.eq([e for e in evs if e.phase == "read"][0].unit, "documents",
         "read counts documents for stored input")
    r.eq(res.documents, len(docs), "every stored document is read")
    r.eq(res.duplicates, len(dups), "stored: the near-copies are duplicates")
    r.eq(check_iclm(out, docs, WINDOW), [], "stored: each document once, windows <= L")
    order = [o["id"] for o in read_jsonl(out + "/order.jsonl")]
    ratio = same_cluster_ratio(order, cluster_map(docs))
    r.check(ratio >= 0.95, "stored (mean of chunk vectors): %.3f adjacent pairs in one "
            "cluster" % ratio, ratio)
    # embed every text again instead of the stored vectors
    out = os.path.join(work, "out-stored-embed")
    res = events_of(r, c, out, collection="topics", window_tokens=WINDOW,
                    vectors="embed", embedder="hash:dim=256")[-1].result
    r.eq(check_iclm(out, docs, WINDOW), [], "vectors embed: valid order")
    # filters
    out = os.path.join(work, "out-filter-meta")
    res = events_of(r, c, out, collection="topics", window_tokens=WINDOW,
                    metadata={"cluster": "c1"})[-1].result
    want = [x for x in docs if x["cluster"] == 1]
    r.eq(res.documents, len(want), "metadata filter: only cluster c1")
    got = {o["id"] for o in read_jsonl(out + "/order.jsonl")} | \
        {o["id"] for o in read_jsonl(out + "/duplicates.jsonl")}
    r.eq(got, {x["id"] for x in want}, "metadata filter: exactly its documents")
    pick = [x["id"] for x in docs[:12]]
    out = os.path.join(work, "out-filter-ids")
    last = events_of(r, c, out, collection="topics", window_tokens=WINDOW,
                     doc_ids=pick)[-1]
    got = {o["id"] for o in read_jsonl(out + "/order.jsonl")}
    r.eq(got, set(pick), "doc_ids: exactly those documents")
    r.eq(list(c.get_job(last.job_id).request.doc_ids), pick, "GetJob: the doc_ids")
    listed = [j for j in c.list_jobs() if j.job_id == last.job_id]
    r.check(listed and not listed[0].request.doc_ids and
            listed[0].request.collection == "topics",
            "ListJobs: the request without its doc_ids")
    e = r.raises(grpc.StatusCode.NOT_FOUND,
                 lambda: list(c.reorder(os.path.join(work, "out-x"), collection="topics",
                                        window_tokens=WINDOW,
                                        doc_ids=["c0-doc000", "no-such-doc"], timeout=T)),
                 "doc_ids naming a missing document: NOT_FOUND", contains="no-such-doc")


def case_decompose(r, d, work, docs, path, dups):
    out = os.path.join(work, "out-decompose")
    res = events_of(r, d.client(), out, input_jsonl=path, mode="decompose",
                    window_tokens=128, decompose_min_log2=4)[-1].result
    r.eq(res.mode, "decompose", "mode decompose")
    for f in ("adjacent_similarity", "window_similarity"):
        r.check(math.isnan(getattr(res, f)), "decompose: %s omitted (NaN)" % f,
                getattr(res, f))
    pieces = read_jsonl(out + "/order.jsonl")
    texts = read_jsonl(out + "/windows.jsonl")
    r.eq(len(pieces), res.windows, "one order.jsonl line per piece")
    r.eq(len(texts), len(pieces), "one windows.jsonl line per piece")
    r.eq(sum(b.pieces for b in res.buckets), res.windows, "buckets add up to the pieces")
    bad = [p for p in pieces if p["bucket"] not in (16, 32, 64, 128)
           or not (p["bucket"] - 1 <= p["tokens"] <= p["bucket"])]
    r.eq(bad[:3], [], "pieces are 2^b tokens (or 2^b - 1), 16 <= 2^b <= 128")
    buckets = [p["bucket"] for p in pieces]
    r.eq(buckets, sorted(buckets), "pieces listed by bucket, smallest first")
    by_doc = {}
    for p in pieces:
        by_doc.setdefault(p["id"], []).append(p)
    r.eq(set(by_doc), {x["id"] for x in docs} - set(dups),
         "every document but the duplicates has pieces")
    texts_by = {x["id"]: x["text"].encode() for x in docs}
    ok = all(w["text"].encode() == texts_by[w["id"]][w["start"]:w["end"]] for w in texts)
    r.check(ok, "each piece's text is its document's bytes [start, end)")
    for ps in by_doc.values():
        ps.sort(key=lambda p: p["start"])
        for a, b in zip(ps, ps[1:]):
            if a["end"] > b["start"]:
                r.check(False, "pieces of a document do not overlap", (a, b))
                return


def case_mode_order(r, d, work, path):
    out = os.path.join(work, "out-order")
    res = events_of(r, d.client(), out, input_jsonl=path, mode="order",
                    window_tokens=0)[-1].result
    r.eq([f.name for f in res.files], ["order.jsonl", "duplicates.jsonl", "summary.json"],
         "mode order: no windows.jsonl")
    r.check("window" not in read_jsonl(out + "/order.jsonl")[0], "mode order: no window field")


def case_fetch(r, d, work, job_id, out):
    c = d.client()
    local = os.path.join(work, "fetched")
    got = c.fetch_result(job_id, local)
    r.eq(sorted(got), sorted(["order.jsonl", "windows.jsonl", "duplicates.jsonl",
                              "summary.json"]), "FetchResult: every file")
    for name, p in got.items():
        r.check(open(p, "rb").read() == open(os.path.join(out, name), "rb").read(),
                "FetchResult: %s byte-identical" % name)
    # small pieces, one file, raw stub
    s = d.stubs()
    chunks = list(s.corpus.FetchResult(C.FetchResultRequest(
        job_id=job_id, files=["windows.jsonl"], chunk_bytes=1000), timeout=T))
    want = open(os.path.join(out, "windows.jsonl"), "rb").read()
    r.eq(b"".join(ch.data for ch in chunks), want, "1000-byte pieces reassemble the file")
    r.eq([ch.offset for ch in chunks], list(range(0, len(want), 1000)),
         "pieces come in order, offsets continuous")
    r.check(all(len(ch.data) == 1000 for ch in chunks[:-1]) and chunks[-1].last
            and not any(ch.last for ch in chunks[:-1]), "only the last piece is last")
    r.check(all(ch.size == len(want) and ch.file == "windows.jsonl" for ch in chunks),
            "each piece names the file and its size")
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: list(s.corpus.FetchResult(C.FetchResultRequest(
                 job_id=job_id, files=["nope.txt"]), timeout=T)),
             "FetchResult of an unknown file: INVALID_ARGUMENT", contains="nope.txt")
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: list(s.corpus.FetchResult(C.FetchResultRequest(
                 job_id=job_id, chunk_bytes=64 << 20), timeout=T)),
             "chunk_bytes above the limit: INVALID_ARGUMENT")
    r.raises(grpc.StatusCode.NOT_FOUND,
             lambda: list(s.corpus.FetchResult(C.FetchResultRequest(job_id="job-nope"),
                                               timeout=T)),
             "FetchResult of an unknown job: NOT_FOUND")
    # a file changed on disk since the job ended
    with open(os.path.join(out, "summary.json"), "a") as f:
        f.write(" ")
    r.raises(grpc.StatusCode.FAILED_PRECONDITION,
             lambda: list(s.corpus.FetchResult(C.FetchResultRequest(
                 job_id=job_id, files=["summary.json"]), timeout=T)),
             "a file that changed since the job: FAILED_PRECONDITION", contains="changed")


def case_bad(r, d, work, path):
    c = d.client()
    s = d.stubs()
    out = os.path.join(work, "out-bad")

    def submit(**kw):
        kw.setdefault("output_dir", out)
        kw.setdefault("window_tokens", WINDOW)
        return lambda: list(s.corpus.Reorder(C.ReorderRequest(**kw), timeout=T))

    IA = grpc.StatusCode.INVALID_ARGUMENT
    missing = os.path.join(work, "missing.jsonl")
    r.raises(IA, submit(input_jsonl=missing), "missing input file",
             contains=[missing, "no such file"])
    r.raises(IA, submit(input_jsonl=path, mode="sorted"), "unknown mode",
             contains="sorted")
    r.raises(grpc.StatusCode.RESOURCE_EXHAUSTED, submit(input_jsonl=path, k=1001),
             "k above 1000: RESOURCE_EXHAUSTED", contains="k must be")
    r.raises(IA, submit(input_jsonl=path, window_tokens=0), "window 0",
             contains="window_tokens")
    r.raises(IA, submit(input_jsonl=path, window_tokens=(1 << 24) + 1), "window too large",
             contains="window_tokens")
    r.raises(IA, submit(input_jsonl=path, output_dir="relative/out"),
             "relative output_dir", contains="absolute")
    r.raises(IA, submit(input_jsonl=path, output_dir=""), "no output_dir",
             contains="output_dir")
    r.raises(IA, submit(input_jsonl=path, output_dir=work + "/../x"), "output_dir with ..",
             contains="..")
    r.raises(IA, submit(input_jsonl=path, output_dir=path), "output_dir is a file",
             contains="not a directory")
    r.raises(IA, submit(input_jsonl=path, doc_ids=["a"]), "input_jsonl with doc_ids",
             contains="doc_ids")
    r.raises(IA, submit(input_jsonl=path, vectors="some"), "unknown vectors",
             contains="vectors")
    r.raises(IA, submit(input_jsonl=path, embedder="fancy"), "unknown embedder")
    r.raises(IA, submit(input_jsonl=path, dedup_jaccard=1.5), "jaccard above 1",
             contains="dedup_jaccard")
    r.raises(IA, submit(input_jsonl=path, mode="decompose", decompose_min_log2=30),
             "decompose min above max", contains="decompose")
    r.raises(IA, submit(input_jsonl=path, separator="x" * 300), "separator too long",
             contains="separator")
    r.raises(IA, submit(collection="topics", doc_ids=["a", "a"]), "doc_ids twice",
             contains="twice")
    r.raises(grpc.StatusCode.RESOURCE_EXHAUSTED,
             submit(collection="topics", doc_ids=["d%d" % i for i in range(100001)]),
             "more than 100,000 doc_ids: RESOURCE_EXHAUSTED", contains="at most 100000 doc_ids")
    r.raises(grpc.StatusCode.NOT_FOUND, submit(collection="no_such_coll"),
             "unknown collection: NOT_FOUND", contains="no_such_coll")

    # found while reading: the job fails, GetJob says why
    def failing(name, lines, want):
        p = os.path.join(work, name)
        with open(p, "w") as f:
            f.write("".join(l + "\n" for l in lines))
        e = r.raises(IA, submit(input_jsonl=p, output_dir=os.path.join(work, "o-" + name)),
                     "%s: the stream ends INVALID_ARGUMENT" % name, contains=want)
        return e

    failing("badjson.jsonl", ['{"id": "a", "text": "x"}', '{"id": "b", "text": "y"}',
                              '{"id": "c", "text": '], "line 3")
    failing("dims.jsonl", ['{"id": "a", "vector": [1, 0, 0, 0]}',
                           '{"id": "b", "vector": [0, 1, 0]}'], ["line 2", "expected 4"])
    failing("dupid.jsonl", ['{"id": "a", "text": "x"}', '{"id": "a", "text": "y"}'],
            "duplicate id")
    failing("novec.jsonl", ['{"id": "a", "text": "x", "vector": [1, 0]}',
                            '{"id": "b", "text": "y"}'], ["line 2", "vector"])
    # dims.jsonl again through GetJob
    jobs = c.list_jobs(state="failed")
    mine = [j for j in jobs if j.request.input_jsonl.endswith("dims.jsonl")]
    r.eq(len(mine), 1, "ListJobs(state=failed) shows the failed job")
    if mine:
        j = c.get_job(mine[0].job_id)
        r.eq((j.state, j.error_status), ("failed", "INVALID_ARGUMENT"),
             "GetJob: failed with INVALID_ARGUMENT")
        r.check("line 2" in j.error, "GetJob: the error names the line", j.error)
        r.raises(grpc.StatusCode.FAILED_PRECONDITION,
                 lambda: c.fetch_result(j.job_id, os.path.join(work, "nofetch")),
                 "FetchResult of a failed job: FAILED_PRECONDITION")
        r.raises(grpc.StatusCode.FAILED_PRECONDITION, lambda: c.cancel_job(j.job_id),
                 "CancelJob of an ended job: FAILED_PRECONDITION")
    r.raises(grpc.StatusCode.NOT_FOUND, lambda: c.get_job("job-000000000000"),
             "GetJob of an unknown job: NOT_FOUND")
    r.raises(IA, lambda: c.get_job(""), "GetJob without an id: INVALID_ARGUMENT")
    r.raises(IA, lambda: c.list_jobs(state="sleeping"), "ListJobs of an unknown state")
    r.raises(grpc.StatusCode.NOT_FOUND,
             lambda: list(c.watch_job("job-000000000000", timeout=T)),
             "WatchJob of an unknown job: NOT_FOUND")


def case_list(r, d):
    c = d.client()
    jobs = c.list_jobs()
    r.check(len(jobs) >= 5, "ListJobs lists the jobs", len(jobs))
    r.eq([j.job_id for j in jobs], sorted(j.job_id for j in jobs),
         "ListJobs: oldest first (ids sort by creation)")
    two = c.list_jobs(limit=2)
    r.eq([j.job_id for j in two], [j.job_id for j in jobs[-2:]], "limit keeps the most recent")
    r.check(all(j.state == "done" for j in c.list_jobs(state="done")), "state filter")
    done = c.list_jobs(state="done")[-1]
    last = list(c.watch_job(done.job_id, timeout=T))
    r.check(last and last[-1].state == "done" and last[-1].result.documents ==
            done.result.documents, "WatchJob of a done job: its last event at once",
            last[-1:] if last else None)
    failed = c.list_jobs(state="failed")[-1]
    r.raises(grpc.StatusCode.INVALID_ARGUMENT, lambda: list(c.watch_job(failed.job_id)),
             "WatchJob of a failed job: its failure's status", contains=failed.error)


def main():
    r = Report("test_reorder")
    docs, dups = make_corpus(clusters=5, per_cluster=40, seed=7, dups=3)
    with Daemon(r) as d:
        work = d.tmp
        res = r.case("JSONL corpus: clusters stay together", case_jsonl, r, d, work, docs, dups)
        job_id, out, path = res if res else (None, None, None)
        if path:
            r.case("same seed, same order", case_seed, r, d, work, docs, path)
            r.case("decompose mode", case_decompose, r, d, work, docs, path, dups)
            r.case("mode order", case_mode_order, r, d, work, path)
        r.case("given vectors", case_given_vectors, r, d, work, docs)
        r.case("stored documents, filters", case_stored, r, d, work, docs, dups)
        if job_id:
            r.case("FetchResult", case_fetch, r, d, work, job_id, out)
        if path:
            r.case("bad inputs", case_bad, r, d, work, path)
        r.case("ListJobs", case_list, r, d)
    r.finish()


if __name__ == "__main__":
    main()
