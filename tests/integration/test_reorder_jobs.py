"""test_reorder_jobs - the life of Corpus jobs against a real daemon: a job
goes on when its client goes away; CancelJob stops a running or a queued
job; one output directory per job; the queue limit; jobs.output_root; and
restarts: after kill -9 mid-job the job resumes from its checkpoint (and
gives the same order as a run never interrupted), after SIGTERM it resumes
without counting an interruption, a job whose input is gone is failed with
the reason, and a job that keeps dying with the daemon is failed after
JOBS_MAX_INTERRUPTIONS (3) - never lost.

The daemons run with jobs.test_delay_ms (a test-only config row: every
progress report of a job sleeps that long) so that a job of a few hundred
documents lasts seconds and can be caught mid-way.
"""

import os
import threading
import time

import grpc

from corpus_gen import check_iclm, make_corpus, read_jsonl, write_jsonl
from ctxd_harness import SLOW, Daemon, Report, pb

C = pb.corpus_pb2
T = 60 * SLOW
WINDOW = 512
DELAY = ["--jobs.test_delay_ms", "150"]


def wait_for(fn, what, timeout=30.0):
    end = time.monotonic() + timeout * SLOW
    last = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError("timed out waiting for %s (last %r)" % (what, last))


def req(out, path, **kw):
    return C.ReorderRequest(output_dir=out, input_jsonl=path, window_tokens=WINDOW, **kw)


def start(s, out, path, until=("running",), **kw):
    """Submit through Reorder; read events until the job's state is in
    `until` (or an event's phase is, when `until` names phases). Returns
    (job_id, the stream)."""
    it = s.corpus.Reorder(req(out, path, **kw), timeout=T)
    for ev in it:
        if ev.state in until or ev.phase in until:
            return ev.job_id, it
    raise AssertionError("the stream ended before %s" % (until,))


def job(s, jid):
    return s.corpus.GetJob(C.GetJobRequest(job_id=jid), timeout=T)


def ended(s, jid):
    j = job(s, jid)
    return j if j.state in ("done", "failed", "cancelled") else None


def case_disconnect(r, d, work, path):
    s = d.stubs()
    out = os.path.join(work, "out-disconnect")
    jid, it = start(s, out, path)
    it.cancel()  # the client goes away
    j = wait_for(lambda: ended(s, jid), "the job to end")
    r.eq(j.state, "done", "the job went on and is done after its client left")
    r.eq(check_iclm(out, DOCS, WINDOW), [], "its output is complete")


def case_cancel_running(r, d, work, path):
    s = d.stubs()
    out = os.path.join(work, "out-cancel")
    jid, it = start(s, out, path, until=("embed", "index", "knn"))
    j = s.corpus.CancelJob(C.CancelJobRequest(job_id=jid), timeout=T)
    r.eq(j.state, "cancelled", "CancelJob waits for the job to stop: cancelled")
    r.check(j.cancel_requested, "cancel_requested is set")
    r.raises(grpc.StatusCode.CANCELLED, lambda: list(it),
             "the Reorder stream ends CANCELLED", contains=jid)
    j = job(s, jid)
    r.check("CancelJob" in j.error, "GetJob: the error says it was cancelled", j.error)
    r.eq(j.error_status, "CANCELLED", "error_status CANCELLED")
    r.check(not os.path.exists(os.path.join(out, "summary.json")),
            "a cancelled job wrote no summary.json")
    r.raises(grpc.StatusCode.FAILED_PRECONDITION,
             lambda: s.corpus.CancelJob(C.CancelJobRequest(job_id=jid), timeout=T),
             "cancelling it again: FAILED_PRECONDITION")


def case_cancel_queued(r, d, work, path):
    s = d.stubs()
    ja, ita = start(s, os.path.join(work, "out-qa"), path)
    jb, itb = start(s, os.path.join(work, "out-qb"), path, until=("queued",))
    r.eq(job(s, jb).state, "queued", "with one job running, the next one waits")
    j = s.corpus.CancelJob(C.CancelJobRequest(job_id=jb), timeout=T)
    r.eq(j.state, "cancelled", "a queued job is cancelled at once")
    r.check("before it started" in j.error, "... before it started", j.error)
    r.raises(grpc.StatusCode.CANCELLED, lambda: list(itb),
             "its stream ends CANCELLED")
    evs = list(ita)
    r.eq(evs[-1].state, "done", "the running job is not disturbed")


def case_busy_dir(r, d, work, path):
    s = d.stubs()
    out = os.path.join(work, "out-busy")
    jid, it = start(s, out, path)
    r.raises(grpc.StatusCode.FAILED_PRECONDITION,
             lambda: list(s.corpus.Reorder(req(out + "/", path), timeout=T)),
             "a second job on a busy output_dir: FAILED_PRECONDITION", contains=jid)
    r.eq(list(it)[-1].state, "done", "the first job finishes")
    r.eq(list(s.corpus.Reorder(req(out, path), timeout=T))[-1].state, "done",
         "once it ended, the directory can be used again")


def case_limits(r, work, path):
    root = os.path.join(work, "root")
    os.makedirs(root)
    with Daemon(r, args=DELAY + ["--jobs.max_queued", "1", "--jobs.output_root", root,
                                 "--jobs.input_root", work],
                name="ctxd-limits") as d:
        s = d.stubs()
        r.raises(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: list(s.corpus.Reorder(req(os.path.join(work, "outside"), path),
                                               timeout=T)),
                 "output_dir outside jobs.output_root: INVALID_ARGUMENT",
                 contains="jobs.output_root")
        r.raises(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: list(s.corpus.Reorder(req(root + "x/out", path), timeout=T)),
                 "a sibling that shares the root's prefix is outside it")
        ja, ita = start(s, os.path.join(root, "a/b"), path)
        jb, itb = start(s, os.path.join(root, "c"), path, until=("queued",))
        r.raises(grpc.StatusCode.RESOURCE_EXHAUSTED,
                 lambda: list(s.corpus.Reorder(req(os.path.join(root, "d"), path),
                                               timeout=T)),
                 "beyond jobs.max_queued: RESOURCE_EXHAUSTED", contains="max_queued")
        r.eq(list(ita)[-1].state, "done", "under the root (parents created): done")
        r.eq(list(itb)[-1].state, "done", "the queued one runs next")


def case_kill9_resume(r, d, work, path):
    s = d.stubs()
    out = os.path.join(work, "out-kill")
    jid, it = start(s, out, path, until=("dedup", "traverse"))
    r.check(os.path.exists(os.path.join(out, "knn.ckpt")), "knn.ckpt is written after kNN")
    d.kill9()
    d.start()
    s = d.stubs()
    j = job(s, jid)
    r.check(j.state in ("queued", "running"), "after kill -9 the job is queued/running again",
            j.state)
    r.eq((j.resumes, j.interruptions), (1, 1), "resumes 1, interruptions 1")
    evs = list(s.corpus.WatchJob(C.GetJobRequest(job_id=jid), timeout=T))
    res = evs[-1].result
    r.eq(evs[-1].state, "done", "the resumed job is done")
    r.check(res.resumed_knn, "it resumed from knn.ckpt")
    r.eq(check_iclm(out, DOCS, WINDOW), [], "its output is complete")
    r.check(not os.path.exists(os.path.join(out, "knn.ckpt")),
            "checkpoints are removed at the end")
    ref = os.path.join(work, "out-kill-ref")
    list(s.corpus.Reorder(req(ref, path), timeout=T))
    r.check(open(out + "/order.jsonl", "rb").read() == open(ref + "/order.jsonl", "rb").read(),
            "the resumed order equals that of a run never interrupted")
    return jid


def case_sigterm(r, d, work, path):
    out = os.path.join(work, "out-term")
    ch = grpc.insecure_channel(d.addr)  # not the harness's: it outlives stop()
    st = pb.corpus_pb2_grpc.CorpusStub(ch)
    it = st.Reorder(req(out, path), timeout=T)
    jid = None
    for ev in it:
        jid = ev.job_id
        if ev.phase in ("embed", "index", "knn"):
            break
    errs = []

    def drain():
        try:
            list(it)
        except grpc.RpcError as e:
            errs.append(e)

    th = threading.Thread(target=drain)
    th.start()
    t0 = time.monotonic()
    d.stop()  # SIGTERM; the harness checks exit 0
    r.check(time.monotonic() - t0 < 10 * SLOW, "SIGTERM stops a running job promptly")
    th.join(10)
    r.check(errs and errs[0].code() == grpc.StatusCode.UNAVAILABLE,
            "the stream of a job cut by SIGTERM ends UNAVAILABLE",
            errs[0].code() if errs else "no error")
    ch.close()
    d.start()
    s = d.stubs()
    j = job(s, jid)
    r.eq((j.resumes, j.interruptions), (1, 0),
         "after SIGTERM: resumed once, no interruption counted")
    j = wait_for(lambda: ended(s, jid), "the resumed job")
    r.eq(j.state, "done", "the job stopped by SIGTERM is done after the restart")
    r.eq(check_iclm(out, DOCS, WINDOW), [], "its output is complete")


def case_input_gone(r, d, work):
    p = os.path.join(work, "gone.jsonl")
    write_jsonl(p, DOCS)
    s = d.stubs()
    jid, it = start(s, os.path.join(work, "out-gone"), p)
    d.kill9()
    os.unlink(p)
    d.start()
    s = d.stubs()
    j = job(s, jid)
    r.eq(j.state, "failed", "a job whose input vanished is failed at restart, not lost")
    r.check("cannot resume" in j.error and p in j.error, "... with the reason", j.error)
    r.eq(j.error_status, "INVALID_ARGUMENT", "error_status INVALID_ARGUMENT")


def running_recorded(s, jid):
    """The job runs and its record says so (the runner writes the record
    just after it starts the job: a kill before that finds it queued)."""
    j = job(s, jid)
    return j.state == "running" and j.updated_ms >= j.started_ms > 0


def case_crash_loop(r, d, work, path):
    s = d.stubs()
    jid, it = start(s, os.path.join(work, "out-loop"), path)
    for i in range(4):
        wait_for(lambda: running_recorded(s, jid), "the job to run (again)")
        time.sleep(0.05)
        d.kill9()
        d.start()
        s = d.stubs()
    j = job(s, jid)
    r.eq(j.state, "failed", "after 4 unclean stops while running the job is failed")
    r.eq((j.interruptions, j.error_status), (4, "ABORTED"), "interruptions 4, ABORTED")
    r.check("4 times" in j.error, "the error says why", j.error)


def case_history(r, d, done_id):
    s = d.stubs()
    j = job(s, done_id)
    r.eq(j.state, "done", "a done job is still done after restarts")
    chunks = list(s.corpus.FetchResult(C.FetchResultRequest(
        job_id=done_id, files=["order.jsonl"]), timeout=T))
    r.eq(b"".join(c.data for c in chunks),
         open(os.path.join(j.result.output_dir, "order.jsonl"), "rb").read(),
         "FetchResult works after a restart")
    states = [x.state for x in s.corpus.ListJobs(C.ListJobsRequest(), timeout=T).jobs]
    r.check("running" not in states and "queued" not in states,
            "no job is left queued or running", states)


DOCS, _ = make_corpus(clusters=4, per_cluster=50, seed=3, dups=2)


def main():
    r = Report("test_reorder_jobs")
    with Daemon(r, args=DELAY) as d:
        work = d.tmp
        path = os.path.join(work, "corpus.jsonl")
        write_jsonl(path, DOCS)
        r.case("the job goes on after the client goes away", case_disconnect, r, d, work,
               path)
        r.case("CancelJob of a running job", case_cancel_running, r, d, work, path)
        r.case("CancelJob of a queued job", case_cancel_queued, r, d, work, path)
        r.case("one job per output_dir", case_busy_dir, r, d, work, path)
        r.case("output_root and max_queued", case_limits, r, work, path)
        done_id = r.case("kill -9 mid-job: resume from the checkpoint", case_kill9_resume,
                         r, d, work, path)
        r.case("SIGTERM mid-job: resume", case_sigterm, r, d, work, path)
        r.case("input gone at restart: failed with the reason", case_input_gone, r, d, work)
        r.case("a job that keeps dying is failed", case_crash_loop, r, d, work, path)
        if done_id:
            r.case("ended jobs survive restarts", case_history, r, d, done_id)
    r.finish()


if __name__ == "__main__":
    main()
