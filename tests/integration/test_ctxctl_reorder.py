"""test_ctxctl_reorder - `ctxctl reorder` and `ctxctl jobs` against a real
daemon: a JSONL corpus and a stored collection reordered with the summary
printed, --fetch downloading the output files byte for byte, --json,
--detach followed by `jobs watch`, `jobs`, `jobs show`, `jobs fetch`,
`jobs cancel` of a slow job, and the exit codes (0 done, 1 refused or
failed or cancelled, 2 usage, 3 unreachable).
"""

import json
import os
import re
import socket
import subprocess
import tempfile

from corpus_gen import check_iclm, make_corpus, write_jsonl
from ctxd_harness import SLOW, Daemon, Report

CTXCTL = os.environ.get("CTXCTL_BIN", "")
WORK = tempfile.mkdtemp(prefix="ctxctl-reorder-it-")
# the daemon's jobs read and write in WORK
ROOTS = ["--jobs.output_root", WORK, "--jobs.input_root", WORK]
DOCS, DUPS = make_corpus(clusters=4, per_cluster=30, seed=5, dups=2)
r = Report("test_ctxctl_reorder")


def ctl(addr, *args, timeout=120):
    """Run ctxctl in WORK; returns (exit code, stdout, stderr)."""
    env = dict(os.environ)
    env.pop("CTXD_ADDR", None)
    p = subprocess.run([CTXCTL, "--addr", addr] + list(args), capture_output=True,
                       timeout=timeout * SLOW, env=env, cwd=WORK)
    err = p.stderr.decode("utf-8", "replace")
    if "Sanitizer" in err or "runtime error:" in err:
        r.check(False, "ctxctl %s: no sanitizer report" % " ".join(args[:3]), err[-3000:])
    return p.returncode, p.stdout.decode("utf-8", "replace"), err


def same_files(a, b, names):
    return all(open(os.path.join(a, n), "rb").read() == open(os.path.join(b, n), "rb").read()
               for n in names)


FILES = ["order.jsonl", "windows.jsonl", "duplicates.jsonl", "summary.json"]


def case_jsonl_fetch(addr):
    write_jsonl(os.path.join(WORK, "corpus.jsonl"), DOCS)
    rc, out, err = ctl(addr, "reorder", "--input", "corpus.jsonl", "--out", "out1",
                       "--window", "512", "--fetch", "local1")
    r.eq(rc, 0, "reorder --input (relative paths) exits 0")
    r.check(re.search(r"job job-[0-9a-f]+ done in", out), "prints that the job is done", out)
    r.check("%d: %d ordered, %d duplicates" % (len(DOCS), len(DOCS) - len(DUPS), len(DUPS))
            in out, "prints documents, ordered and duplicates", out)
    r.check("similarity  adjacent" in out, "prints the similarity figures", out)
    r.check("fetched 4 files" in out, "--fetch downloads the four files", out)
    r.eq(check_iclm(os.path.join(WORK, "out1"), DOCS, 512), [], "the job's output is valid")
    r.check(same_files(os.path.join(WORK, "out1"), os.path.join(WORK, "local1"), FILES),
            "--fetch: the local files equal the server's, byte for byte")
    r.check(not any(f.endswith(".part") for f in os.listdir(os.path.join(WORK, "local1"))),
            "no .part file is left")


def case_collection_json(addr):
    path = os.path.join(WORK, "stored.jsonl")
    with open(path, "w") as f:
        for d in DOCS:
            f.write(json.dumps({"id": d["id"], "text": d["text"],
                                "metadata": {"cluster": str(d["cluster"])}}) + "\n")
    rc, out, err = ctl(addr, "put", "--jsonl", path, "-c", "topics")
    r.check(rc == 0, "put the corpus into collection topics", err)
    rc, out, err = ctl(addr, "reorder", "-c", "topics", "--out", "out2", "--window", "512",
                       "--json")
    r.check(rc == 0, "reorder -c topics --json exits 0", err)
    try:
        o = json.loads(out)
    except ValueError:
        r.check(False, "--json prints one JSON object", out)
        return
    r.eq((o["state"], o["result"]["documents"], o["result"]["duplicates"]),
         ("done", len(DOCS), len(DUPS)), "--json: state and figures")
    r.eq([f["name"] for f in o["result"]["files"]], FILES, "--json: the files")
    rc, out, err = ctl(addr, "reorder", "-c", "topics", "--meta", "cluster=2", "--out",
                       "out3", "--window", "512", "-q")
    r.eq((rc, out), (0, ""), "--meta filter with -q: exit 0, nothing printed")
    n = sum(1 for d in DOCS if d["cluster"] == 2)
    s = json.load(open(os.path.join(WORK, "out3", "summary.json")))
    r.eq(s["documents"], n, "--meta cluster=2: only that cluster")
    rc, out, err = ctl(addr, "reorder", "-c", "topics", "--out", "out4", "--window", "128",
                       "--mode", "decompose", "--decompose-min", "4")
    r.check(rc == 0, "--mode decompose exits 0", err)
    r.check("pieces" in out and ("bucket 16" in out or "bucket 32" in out),
            "decompose: prints pieces and buckets", out)


def case_detach_jobs(addr):
    rc, out, err = ctl(addr, "reorder", "--input", "corpus.jsonl", "--out", "out5",
                       "--window", "512", "--seed", "3", "--detach")
    r.check(rc == 0, "--detach exits 0", err)
    jid = out.strip()
    r.check(re.fullmatch(r"job-[0-9a-f]{12}", jid), "--detach prints the job id alone", out)
    rc, out, err = ctl(addr, "jobs", "watch", jid)
    r.check(rc == 0, "jobs watch ID exits 0 once it is done", err)
    r.check("job %s done" % jid in out, "jobs watch prints the summary", out)
    rc, out, err = ctl(addr, "jobs")
    r.eq(rc, 0, "jobs exits 0")
    r.check(jid in out and "done" in out and out.startswith("JOB"), "jobs lists it", out)
    rc, out, err = ctl(addr, "jobs", "show", jid)
    r.eq(rc, 0, "jobs show exits 0")
    for want in ("state       done", "input       " + os.path.join(WORK, "corpus.jsonl"),
                 "knn", "pack", "similarity"):
        r.check(want in out, "jobs show: %r" % want, out)
    rc, out, err = ctl(addr, "jobs", "show", jid, "--json")
    o = json.loads(out) if rc == 0 else {}
    r.eq((o.get("job_id"), o.get("state"), o.get("request", {}).get("seed")),
         (jid, "done", 3), "jobs show --json: id, state, request")
    rc, out, err = ctl(addr, "jobs", "ls", "--state", "done", "--json")
    lines = [json.loads(l) for l in out.splitlines()]
    r.check(rc == 0 and lines and all(l["state"] == "done" for l in lines),
            "jobs ls --state done --json: one done Job per line", out[:300])
    rc, out, err = ctl(addr, "jobs", "fetch", jid, "local5", "--file", "order.jsonl")
    r.check(rc == 0, "jobs fetch --file exits 0", err)
    r.eq(os.listdir(os.path.join(WORK, "local5")), ["order.jsonl"], "only that file")
    r.check(same_files(os.path.join(WORK, "out5"), os.path.join(WORK, "local5"),
                       ["order.jsonl"]), "jobs fetch: byte for byte")


def case_cancel(r_):
    with Daemon(r, args=["--jobs.test_delay_ms", "300"] + ROOTS, name="ctxd-slow") as d:
        rc, out, err = ctl(d.addr, "reorder", "--input", "corpus.jsonl", "--out", "out6",
                           "--detach")
        jid = out.strip()
        r.eq(rc, 0, "a slow job, detached")
        rc, out, err = ctl(d.addr, "jobs", "cancel", jid)
        r.check(rc == 0, "jobs cancel exits 0", err)
        r.check("job %s cancelled" % jid in out, "jobs cancel says it is cancelled", out)
        rc, out, err = ctl(d.addr, "jobs", "watch", jid)
        r.eq(rc, 1, "jobs watch of a cancelled job exits 1")
        r.check("cancelled" in err and jid in err, "... and says it was cancelled", err)
        rc, out, err = ctl(d.addr, "jobs", "cancel", jid)
        r.eq(rc, 1, "cancelling it again exits 1")
        r.check("FAILED_PRECONDITION" in err, "... FAILED_PRECONDITION", err)


def case_errors(addr):
    with open(os.path.join(WORK, "bad.jsonl"), "w") as f:
        f.write('{"id": "a", "text": "x"}\n{"id": "b", "text": \n')
    rc, out, err = ctl(addr, "reorder", "--input", "bad.jsonl", "--out", "outb")
    r.eq(rc, 1, "a bad JSON line: exit 1")
    r.check("line 2" in err and "failed" in err and "INVALID_ARGUMENT" in err,
            "... the message names the line and the status", err)
    rc, out, err = ctl(addr, "reorder", "--input", "nope.jsonl", "--out", "outb")
    r.eq(rc, 1, "a missing input file: exit 1")
    r.check("no such file" in err, "... says so", err)
    for args, what in ((["--input", "corpus.jsonl", "--out", "o", "--mode", "wat"], "--mode"),
                       (["--input", "corpus.jsonl", "--out", "o", "-k", "x"], "-k"),
                       (["--input", "corpus.jsonl"], "missing --out"),
                       (["--input", "corpus.jsonl", "-c", "topics", "--out", "o"],
                        "--input with -c"),
                       (["--input", "corpus.jsonl", "--out", "o", "--detach", "--fetch",
                         "x"], "--detach with --fetch")):
        rc, out, err = ctl(addr, "reorder", *args)
        r.eq(rc, 2, "usage error (%s): exit 2" % what)
    rc, out, err = ctl(addr, "reorder", "--input", "corpus.jsonl", "--out", "o", "-k", "5000")
    r.eq(rc, 1, "k above the server's limit: exit 1")
    r.check("k must be" in err, "... with the server's message", err)
    rc, out, err = ctl(addr, "jobs", "show", "job-000000000000")
    r.eq(rc, 1, "jobs show of an unknown job: exit 1")
    r.check("NOT_FOUND" in err, "... NOT_FOUND", err)
    rc, out, err = ctl(addr, "jobs", "frob")
    r.eq(rc, 2, "an unknown jobs subcommand: exit 2")
    rc, out, err = ctl(addr, "jobs", "show")
    r.eq(rc, 2, "jobs show without an id: exit 2")
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    rc, out, err = ctl("127.0.0.1:%d" % port, "jobs")
    r.eq(rc, 3, "unreachable server: exit 3")
    for cmd in ("reorder", "jobs"):
        rc, out, err = ctl(addr, "help", cmd)
        r.check(rc == 0 and ("usage: ctxctl " + cmd) in out, "help %s" % cmd, out[:200])
    rc, out, err = ctl(addr, "reorder", "--help")
    r.check(rc == 0 and "--fetch LOCALDIR" in out and "--detach" in out,
            "reorder --help lists the options")


def main():
    with Daemon(r, args=ROOTS) as d:
        r.case("reorder a JSONL corpus, --fetch", case_jsonl_fetch, d.addr)
        r.case("reorder a collection, --json, --meta, decompose", case_collection_json,
               d.addr)
        r.case("--detach, jobs, jobs watch/show/fetch", case_detach_jobs, d.addr)
        r.case("errors and exit codes", case_errors, d.addr)
    r.case("jobs cancel", case_cancel, r)
    r.finish()


if __name__ == "__main__":
    main()
