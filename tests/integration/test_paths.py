"""test_paths - paths a client names stay inside the configured roots
(daemon/paths.h): with the defaults a job reads from DATA/imports and writes
under DATA/exports (both created at start); an output_dir or input_jsonl
outside them, one with "..", a relative one, or one that leaves through a
symbolic link (to a directory, to a file, dangling, relative) is refused
INVALID_ARGUMENT naming the field, the path and the root, and nothing is
created; a link that stays inside is followed; jobs.output_root = / allows
anywhere; the daemon serves on afterwards.
"""

import os

import grpc

from corpus_gen import make_corpus, write_jsonl
from ctxd_harness import SLOW, Daemon, Report, health_ok, pb

C = pb.corpus_pb2
T = 60 * SLOW
IA = grpc.StatusCode.INVALID_ARGUMENT
# the daemon's own defaults, not the harness's temp-dir roots
DEFAULT_ROOTS = ["--jobs.output_root=", "--jobs.input_root="]


def run(s, out, path):
    evs = list(s.corpus.Reorder(C.ReorderRequest(output_dir=out, input_jsonl=path,
                                                 window_tokens=512), timeout=T))
    return evs[-1]


def refused(r, s, out, path, what, contains):
    r.raises(IA, lambda: run(s, out, path), what, contains=contains)


def case_defaults(r, d):
    s = d.stubs()
    exports = os.path.join(os.path.realpath(d.data_dir), "exports")
    imports = os.path.join(os.path.realpath(d.data_dir), "imports")
    r.check(os.path.isdir(exports) and os.path.isdir(imports),
            "DATA/exports and DATA/imports are created at start")
    docs, _ = make_corpus(clusters=2, per_cluster=10, dups=0)
    path = os.path.join(imports, "c.jsonl")
    write_jsonl(path, docs)
    last = run(s, os.path.join(exports, "run1"), path)
    r.eq(last.state, "done", "a job inside both roots runs")
    r.eq(last.result.output_dir, os.path.join(exports, "run1"), "result names the directory")

    outside = os.path.join(d.tmp, "outside")
    os.makedirs(outside)
    write_jsonl(os.path.join(outside, "c.jsonl"), docs)
    refused(r, s, os.path.join(outside, "o"), path, "output_dir outside DATA/exports",
            ["output_dir", outside, "jobs.output_root", exports])
    r.check(not os.path.exists(os.path.join(outside, "o")), "nothing created outside")
    refused(r, s, os.path.join(exports, "o"), os.path.join(outside, "c.jsonl"),
            "input_jsonl outside DATA/imports", ["input_jsonl", "jobs.input_root", imports])
    refused(r, s, os.path.join(exports, "o"), "/etc/passwd", "input_jsonl /etc/passwd",
            "jobs.input_root")
    refused(r, s, exports + "x/o", path, "a sibling sharing the root's prefix",
            "jobs.output_root")
    refused(r, s, exports + "/a/../../x", path, "output_dir with ..", "..")
    refused(r, s, os.path.join(exports, "o"), imports + "/../imports/c.jsonl",
            "input_jsonl with ..", "..")
    refused(r, s, "exports/o", path, "relative output_dir", "absolute")
    refused(r, s, os.path.join(exports, "o"), "imports/c.jsonl", "relative input_jsonl",
            "absolute")

    # symbolic links planted inside the roots
    os.symlink(outside, os.path.join(exports, "esc"))
    refused(r, s, os.path.join(exports, "esc"), path, "a link to a directory outside",
            ["resolves to", outside])
    refused(r, s, os.path.join(exports, "esc", "deeper", "o"), path,
            "a path below such a link", "jobs.output_root")
    r.check(not os.path.exists(os.path.join(outside, "deeper")), "nothing created through it")
    os.symlink("../../outside", os.path.join(exports, "up"))
    refused(r, s, os.path.join(exports, "up", "o"), path, "a relative link climbing out",
            "not under")
    os.symlink(os.path.join(outside, "later"), os.path.join(exports, "dangling"))
    refused(r, s, os.path.join(exports, "dangling"), path, "a dangling link",
            "does not resolve")
    r.check(not os.path.exists(os.path.join(outside, "later")), "the dangling target stays absent")
    os.symlink(os.path.join(outside, "c.jsonl"), os.path.join(imports, "leak.jsonl"))
    refused(r, s, os.path.join(exports, "o"), os.path.join(imports, "leak.jsonl"),
            "an input link to a file outside", ["input_jsonl", "resolves to"])
    os.symlink(exports, os.path.join(imports, "to-exports"))
    refused(r, s, os.path.join(exports, "o"),
            os.path.join(imports, "to-exports", "run1", "order.jsonl"),
            "an input link into the other root", "jobs.input_root")

    # links that stay inside are followed
    os.makedirs(os.path.join(exports, "real"))
    os.symlink(os.path.join(exports, "real"), os.path.join(exports, "alias"))
    last = run(s, os.path.join(exports, "alias", "run2"), path)
    r.eq(last.state, "done", "a link inside the root is followed")
    r.eq(last.result.output_dir, os.path.join(exports, "real", "run2"),
         "the result names the resolved directory")
    r.check(os.path.exists(os.path.join(exports, "real", "run2", "order.jsonl")),
            "the files are in the link's target")
    r.check(health_ok(s), "the daemon still serves")


def case_anywhere(r, base):
    outside = os.path.join(base, "anywhere")
    os.makedirs(outside)
    docs, _ = make_corpus(clusters=2, per_cluster=10, dups=0)
    path = os.path.join(outside, "c.jsonl")
    write_jsonl(path, docs)
    with Daemon(r, args=["--jobs.output_root", "/", "--jobs.input_root", "/"],
                name="ctxd-anywhere") as d:
        s = d.stubs()
        r.eq(run(s, os.path.join(outside, "o"), path).state, "done",
             "jobs.output_root = / and jobs.input_root = /: anywhere")
        refused(r, s, outside + "/../x", path, "still no ..", "..")
        os.symlink("/nonexistent-ctxd-target", os.path.join(outside, "dl"))
        refused(r, s, os.path.join(outside, "dl"), path, "still no dangling link",
                "does not resolve")


def case_bad_root(r, base):
    f = os.path.join(base, "a-file")
    open(f, "w").close()
    d = Daemon(None, args=["--jobs.output_root", f], name="ctxd-badroot")
    try:
        d.start(wait=False)
        rc = d.proc.wait(timeout=30 * SLOW)
        d._reader.join(5)
        r.check(rc not in (0, None), "a root that is a file stops the start", rc)
        log = d.log_tail(100)
        r.check("jobs.output_root" in log and "not a directory" in log,
                "with a message naming the option", log[-300:])
    finally:
        if d.proc is not None and d.proc.poll() is not None:
            d.proc = None
        d.__exit__(None, None, None)


def main():
    r = Report("test_paths")
    with Daemon(r, args=DEFAULT_ROOTS) as d:
        r.case("defaults: DATA/exports and DATA/imports; escapes refused",
               case_defaults, r, d)
        r.case("/ allows anywhere", case_anywhere, r, d.tmp)
        r.case("a bad root stops the start", case_bad_root, r, d.tmp)
    r.finish()


if __name__ == "__main__":
    main()
