#!/usr/bin/env python3
"""test_corpus_mpi.py - ctxd-corpus under mpirun: 1, 2 and 4 ranks give the
same order (exact kNN and the inverted file), windows and figures; bad or
missing shards give clear errors; a run killed after a phase resumes.

Usage: test_corpus_mpi.py CTXD_CORPUS_BIN (mpirun on PATH)."""
import json, os, random, shutil, subprocess, sys, tempfile

BIN = sys.argv[1]
ROOT = ["--allow-run-as-root"] if os.geteuid() == 0 else []
failed = 0


def check(cond, what):
    global failed
    if not cond:
        failed += 1
        print("FAIL:", what)


def mpirun(np, args, env=None):
    cmd = ["mpirun", "-np", str(np), "--oversubscribe", *ROOT,
           "--mca", "btl", "self,vader", BIN, "-q", "--threads", "1", *args]
    e = dict(os.environ, OMPI_MCA_rmaps_base_oversubscribe="1")
    e.update(env or {})
    return subprocess.run(cmd, capture_output=True, text=True, env=e,
                          timeout=300)


def corpus(d, n=1200, dim=24, clusters=8, dups=15, shards=4, seed=7):
    rnd = random.Random(seed)
    centres = [[rnd.gauss(0, 1) for _ in range(dim)] for _ in range(clusters)]
    docs = []
    for i in range(n):
        c = rnd.randrange(clusters)
        v = [x + rnd.gauss(0, 0.8) for x in centres[c]]
        words = " ".join("c%dw%d" % (c, rnd.randrange(30))
                         for _ in range(rnd.randrange(20, 200)))
        docs.append({"id": "d%05d" % i, "text": words, "vector": v, "c": c})
    for k in range(dups):  # near-duplicates of earlier documents
        src = docs[rnd.randrange(n)]
        docs.append({"id": "dup%03d" % k, "text": src["text"] + " x",
                     "vector": [x * 1.0001 for x in src["vector"]],
                     "c": src["c"]})
    rnd.shuffle(docs)
    paths = []
    per = (len(docs) + shards - 1) // shards
    for s in range(shards):
        p = os.path.join(d, "shard-%02d.jsonl" % s)
        with open(p, "w") as f:
            for x in docs[s * per:(s + 1) * per]:
                f.write(json.dumps({"id": x["id"], "text": x["text"],
                                    "vector": x["vector"]}) + "\n")
        paths.append(p)
    return paths, {x["id"]: x["c"] for x in docs}


def outputs(out):
    man = json.load(open(os.path.join(out, "manifest.json")))
    order, windows = [], []
    for s in man["shards"]:
        order += [json.loads(l) for l in open(os.path.join(out, s["order"]))]
        if "windows" in s:
            windows += [json.loads(l)
                        for l in open(os.path.join(out, s["windows"]))]
    summ = json.load(open(os.path.join(out, "summary.json")))
    return man, order, windows, summ


def main():
    tmp = tempfile.mkdtemp(prefix="ctxd-corpus-test.")
    try:
        run_all(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("corpus_mpi: %s" % ("FAILED %d" % failed if failed else "ok"))
    sys.exit(1 if failed else 0)


def run_all(tmp):
    shards, cluster = corpus(tmp)
    exact = {}
    for label, extra in (("exact", []),
                         ("ivf", ["--exact-max", "500"])):
        res = {}
        for np in (1, 2, 4):
            out = os.path.join(tmp, "%s-%d" % (label, np))
            r = mpirun(np, ["--out", out, "--window", "512", "--seed", "3",
                            *extra, *shards])
            check(r.returncode == 0, "%s np %d: exit %d: %s" %
                  (label, np, r.returncode, r.stderr[-2000:]))
            if r.returncode:
                continue
            res[np] = outputs(out)
        if 1 not in res:
            continue
        man1, order1, win1, s1 = res[1]
        exact[label] = s1
        ids1 = [x["id"] for x in order1]
        check(len(ids1) == len(set(ids1)), "%s: an id twice" % label)
        check(len(ids1) + s1["duplicates"] == len(cluster),
              "%s: documents + duplicates = input" % label)
        check(s1["duplicates"] >= 10, "%s: planted duplicates found (%d)" %
              (label, s1["duplicates"]))
        same = sum(cluster[a] == cluster[b] for a, b in zip(ids1, ids1[1:]))
        check(same / (len(ids1) - 1) >= 0.95, "%s: same-cluster pairs %.3f" %
              (label, same / (len(ids1) - 1)))
        check([w["window"] for w in win1] == list(range(len(win1))),
              "%s: windows numbered 0..W-1" % label)
        check(all(w["tokens"] <= 512 for w in win1), "%s: windows <= L" % label)
        check(s1["windows"] == len(win1), "%s: summary windows" % label)
        check([x["position"] for x in order1] == list(range(len(order1))),
              "%s: positions 0..n-1" % label)
        print("%s: %s, adjacent %.4f (random %.4f), %d windows, %d dups" %
              (label, s1["knn"]["method"], s1["adjacent_similarity"],
               s1["random_adjacent_similarity"], s1["windows"],
               s1["duplicates"]))
        for np in (2, 4):
            if np not in res:
                continue
            man, order, win, s = res[np]
            ids = [x["id"] for x in order]
            check(man["ranks"] == np and len(man["shards"]) == np,
                  "%s np %d: manifest" % (label, np))
            check(sorted(ids) == sorted(ids1), "%s np %d: same documents" %
                  (label, np))
            check(s["windows"] == s1["windows"] and len(win) == len(win1),
                  "%s np %d: window count %d vs %d" %
                  (label, np, s["windows"], s1["windows"]))
            a, b = s["adjacent_similarity"], s1["adjacent_similarity"]
            check(abs(a - b) <= 0.01 * abs(b), "%s np %d: adjacent %.5f vs "
                  "%.5f" % (label, np, a, b))
            check(ids == ids1, "%s np %d: the same order as 1 rank" %
                  (label, np))
            check(win == win1, "%s np %d: the same windows as 1 rank" %
                  (label, np))

    # partitioned traversal: groups of coarse clusters, a path per rank,
    # stitched; every document once, windows within L, and its quality
    # cost against the exact path on the same data
    for np in (2, 4):
        out = os.path.join(tmp, "part-%d" % np)
        r = mpirun(np, ["--out", out, "--window", "512", "--seed", "3",
                        "--traverse", "partitioned", *shards])
        check(r.returncode == 0, "partitioned np %d: %s" % (np,
                                                           r.stderr[-2000:]))
        if r.returncode or "exact" not in exact:
            continue
        man, order, win, s = outputs(out)
        ids = [x["id"] for x in order]
        dups = sum(1 for sh in man["shards"]
                   for _ in open(os.path.join(out, sh["duplicates"])))
        check(man["traverse"] == "partitioned", "partitioned: manifest")
        check(len(ids) == len(set(ids)) and len(ids) + dups == len(cluster),
              "partitioned np %d: every document once (%d + %d dups)" %
              (np, len(ids), dups))
        check(dups == s["duplicates"], "partitioned: duplicates counted")
        check([w["window"] for w in win] == list(range(len(win))) and
              all(w["tokens"] <= 512 for w in win) and
              s["windows"] == len(win), "partitioned np %d: windows" % np)
        a, b = s["adjacent_similarity"], exact["exact"]["adjacent_similarity"]
        check(a >= 0.95 * b, "partitioned np %d: adjacent %.4f vs exact %.4f"
              % (np, a, b))
        print("partitioned np %d: adjacent %.4f (exact %.4f, %.2f%%), jumps "
              "%d (exact %d), %d kNN entries dropped" %
              (np, a, b, 100 * (a - b) / b, s["jumps"],
               exact["exact"]["jumps"], man["knn_entries_dropped"]))

    # bad and missing shards
    out = os.path.join(tmp, "bad")
    r = mpirun(2, ["--out", out, shards[0], os.path.join(tmp, "nope.jsonl")])
    check(r.returncode != 0 and "nope.jsonl" in r.stderr,
          "missing shard named: %s" % r.stderr[-500:])
    bad = os.path.join(tmp, "bad.jsonl")
    with open(bad, "w") as f:
        f.write('{"id":"x1","vector":[1,2]}\n{"id": oops}\n')
    r = mpirun(2, ["--out", out, shards[0], bad])
    check(r.returncode != 0 and "bad.jsonl" in r.stderr and "line 2" in
          r.stderr, "bad JSON named with its line: %s" % r.stderr[-500:])
    with open(bad, "w") as f:
        f.write('{"id":"x1","text":"a","vector":[1,2,3]}\n')
    r = mpirun(2, ["--out", out, shards[0], bad])
    check(r.returncode != 0 and "dimensions" in r.stderr,
          "dimension mismatch between shards: %s" % r.stderr[-500:])

    # a rank killed after the kNN phase: the rerun resumes from the
    # checkpoints and gives the same order
    for phase in ("knn", "traverse"):
        out = os.path.join(tmp, "killed-" + phase)
        args = ["--out", out, "--window", "512", "--seed", "3", *shards]
        r = mpirun(2, args, {"CTXD_CORPUS_DIE_AFTER": phase})
        check(r.returncode != 0, "killed after %s: exit %d" %
              (phase, r.returncode))
        check(not os.path.exists(os.path.join(out, "manifest.json")),
              "killed after %s: no manifest" % phase)
        r = mpirun(2, args)
        check(r.returncode == 0, "resume after %s: %s" % (phase,
                                                          r.stderr[-1000:]))
        if r.returncode == 0 and "exact-1" in os.listdir(tmp):
            _, order, _, s = outputs(out)
            check(s["resumed_knn"], "resume after %s: resumed_knn" % phase)
            check([x["id"] for x in order] ==
                  [x["id"] for x in outputs(os.path.join(tmp, "exact-1"))[1]],
                  "resume after %s: the same order" % phase)
            check(not os.path.exists(os.path.join(out, "ckpt")),
                  "checkpoints removed at the end")


main()
