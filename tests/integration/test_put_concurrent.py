#!/usr/bin/python3
"""Group commit of unary Puts (daemon/writer.c): many concurrent Puts with
distinct ids and some on one id, all acked and stored exactly once; Puts
mixed with Gets and Deletes; kill -9 during concurrent Puts (every acked id
survives with its exact text); SIGTERM during concurrent Puts; a deadline
too close is DEADLINE_EXCEEDED and writes nothing; and the same with
store.group_commit_docs = 1 (one transaction per Put)."""

import random
import re
import shutil
import struct
import subprocess
import tempfile
import threading
import time

import grpc

from ctxd_harness import (Daemon, Report, SLOW, chunk_problems, list_all, make_text, pb,
                          put_req, stats, verify)

D = pb.documents_pb2
T = 60 * SLOW
_STOPPED_RE = re.compile(r"writer-stopped transactions=(\d+) docs=(\d+)")


def run_threads(n, fn):
    ths = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    for t in ths:
        t.start()
    for t in ths:
        t.join()


def hammer(r, d, tag, n_threads=32, per_thread=100, hot_threads=4, hot_per_thread=40):
    """n_threads x per_thread Puts of distinct ids, plus hot_threads putting
    one id over and over, over 4 channels; returns {id: (text, PutResponse)}
    of the distinct ids, the hot id's possible final texts, and the count of
    acked Puts."""
    chans = [d.stubs() for _ in range(4)]
    texts = {}
    errors = []
    hot_last = {}
    acked = [0]
    lock = threading.Lock()

    def distinct(tid):
        rng = random.Random("%s-%d" % (tag, tid))
        s = chans[tid % len(chans)]
        for i in range(per_thread):
            id = "%s-%02d-%04d" % (tag, tid, i)
            t = make_text(rng, words=rng.randint(5, 300), paragraphs=rng.randint(1, 3))
            try:
                p = s.docs.Put(put_req(id, t, {"t": str(tid)}), timeout=T)
            except grpc.RpcError as e:
                errors.append((id, e.code(), e.details()))
                continue
            with lock:
                texts[id] = (t, p)
                acked[0] += 1
            if p.id != id or p.replaced:
                errors.append((id, "PutResponse id=%r replaced=%r" % (p.id, p.replaced)))

    def hot(tid):
        rng = random.Random("%s-hot-%d" % (tag, tid))
        s = chans[tid % len(chans)]
        for i in range(hot_per_thread):
            t = "hot %d %d %s" % (tid, i, make_text(rng, words=rng.randint(5, 60), paragraphs=1))
            try:
                s.docs.Put(put_req("%s-hot" % tag, t), timeout=T)
            except grpc.RpcError as e:
                errors.append(("hot", e.code(), e.details()))
                continue
            with lock:
                hot_last[tid] = t
                acked[0] += 1

    def one(i):
        if i < n_threads:
            distinct(i)
        else:
            hot(i - n_threads)

    run_threads(n_threads + hot_threads, one)
    r.eq(errors[:5], [], "%s: every concurrent Put acked" % tag)
    return texts, set(hot_last.values()), acked[0]


def check_stored(r, s, tag, texts):
    bad = []
    for id, (t, p) in sorted(texts.items()):
        try:
            g = s.docs.Get(D.GetRequest(id=id, with_text=True, with_chunks=True), timeout=T)
        except grpc.RpcError as e:
            bad.append((id, e.code()))
            continue
        if g.document.text != t:
            bad.append((id, "text differs"))
        elif len(g.chunks) != p.chunks or g.tokens != p.tokens:
            bad.append((id, "chunks/tokens differ from the PutResponse"))
        elif chunk_problems(t, g.chunks, doc_id=id, with_text=True):
            bad.append((id, "bad chunks"))
    r.eq(bad[:5], [], "%s: %d documents stored with their exact text and chunks" % (tag, len(texts)))


def writer_counts(d):
    """(transactions, docs) from the writer-stopped log line, or None."""
    with d._log_lock:
        lines = list(d.log_lines)
    for l in reversed(lines):
        m = _STOPPED_RE.search(l)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def case_concurrent(r, d, tag="gc"):
    s = d.stubs()
    before = stats(s)
    t0 = time.monotonic()
    texts, hot_finals, n_acked = hammer(r, d, tag)
    dt = time.monotonic() - t0
    print("    %s: %d Puts acked in %.2fs (%.0f/s)" % (tag, n_acked, dt, n_acked / dt))
    check_stored(r, s, tag, texts)
    g = s.docs.Get(D.GetRequest(id="%s-hot" % tag, with_text=True, with_chunks=True), timeout=T)
    r.check(g.document.text in hot_finals,
            "%s: the hot id holds the last Put of one of its writers" % tag,
            g.document.text[:40])
    after = stats(s)
    want_bytes = sum(len(t.encode()) for t, _ in texts.values()) + len(g.document.text.encode())
    r.eq(after.documents - before.documents, len(texts) + 1, "%s: Stats.documents exact" % tag)
    r.eq(after.bytes - before.bytes, want_bytes, "%s: Stats.bytes exact" % tag)
    r.eq(after.chunks - before.chunks, sum(p.chunks for _, p in texts.values()) + len(g.chunks),
         "%s: Stats.chunks exact" % tag)
    # One change-log entry per acked Put: nothing written twice, nothing lost.
    r.eq(after.last_seq - before.last_seq, n_acked,
         "%s: one change-log entry per acked Put" % tag)
    v = verify(s)
    r.eq((v.ok, list(v.problems)[:3]), (True, []), "%s: Verify ok" % tag)


def case_mixed(r, d):
    """Each thread owns its ids and tracks what they should hold; Puts,
    Gets and Deletes interleave across threads."""
    chans = [d.stubs() for _ in range(4)]
    errors = []
    model = {}
    lock = threading.Lock()

    def worker(tid):
        rng = random.Random("mixed-%d" % tid)
        s = chans[tid % len(chans)]
        mine = {}
        ids = ["mx-%02d-%02d" % (tid, k) for k in range(12)]
        for step in range(60):
            id = rng.choice(ids)
            op = rng.random()
            try:
                if op < 0.55:
                    t = make_text(rng, words=rng.randint(3, 120), paragraphs=1)
                    p = s.docs.Put(put_req(id, t), timeout=T)
                    if p.replaced != (id in mine):
                        errors.append((id, step, "replaced=%r" % p.replaced))
                    mine[id] = t
                elif op < 0.8:
                    dr = s.docs.Delete(D.DeleteRequest(id=id), timeout=T)
                    if dr.deleted != (id in mine):
                        errors.append((id, step, "deleted=%r" % dr.deleted))
                    mine.pop(id, None)
                else:
                    try:
                        g = s.docs.Get(D.GetRequest(id=id, with_text=True), timeout=T)
                        if mine.get(id) != g.document.text:
                            errors.append((id, step, "Get text differs"))
                    except grpc.RpcError as e:
                        if e.code() != grpc.StatusCode.NOT_FOUND or id in mine:
                            errors.append((id, step, e.code()))
            except grpc.RpcError as e:
                errors.append((id, step, e.code(), e.details()))
        with lock:
            model.update(mine)

    before = stats(d.stubs())
    run_threads(24, worker)
    r.eq(errors[:5], [], "mixed: every Put/Delete/Get saw its own thread's writes")
    s = d.stubs()
    listed = {x.id for x in list_all(s) if x.id.startswith("mx-")}
    r.eq(sorted(listed ^ set(model))[:5], [], "mixed: List holds exactly the live ids")
    bad = [id for id, t in model.items()
           if s.docs.Get(D.GetRequest(id=id, with_text=True), timeout=T).document.text != t]
    r.eq(bad[:5], [], "mixed: every live id holds its last Put")
    after = stats(s)
    r.eq(after.documents - before.documents, len(model), "mixed: Stats.documents exact")
    v = verify(s)
    r.eq((v.ok, list(v.problems)[:3]), (True, []), "mixed: Verify ok")


def put_until_stopped(d, tag, n_threads, stop, sent, acked, fails, lock):
    chans = [d.stubs() for _ in range(4)]

    def worker(tid):
        rng = random.Random("%s-%d" % (tag, tid))
        s = chans[tid % len(chans)]
        i = 0
        while not stop.is_set():
            id = "%s-%02d-%05d" % (tag, tid, i)
            i += 1
            t = make_text(rng, words=rng.choice([8, 30, 100, 400]), paragraphs=2)
            with lock:
                sent[id] = t
            try:
                s.docs.Put(put_req(id, t), timeout=T)
            except (grpc.RpcError, ValueError) as e:
                # ValueError: the harness closed the channel (stop/kill9).
                with lock:
                    fails.append(e.code() if isinstance(e, grpc.RpcError) else "closed")
                return
            with lock:
                acked[id] = t

    ths = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in ths:
        t.start()
    return ths


def check_after_restart(r, d, tag, sent, acked):
    s = d.stubs()
    infos = {x.id: x for x in list_all(s, page_size=5000) if x.id.startswith(tag + "-")}
    missing = sorted(id for id in acked if id not in infos)
    r.eq(missing[:5], [], "%s: every acked id (%d) present after restart" % (tag, len(acked)))
    r.eq(sorted(id for id in infos if id not in sent)[:5], [], "%s: no id never sent" % tag)
    bad = []
    for id in infos:
        g = s.docs.Get(D.GetRequest(id=id, with_text=True, with_chunks=True), timeout=T)
        if g.document.text != sent[id]:
            bad.append((id, "text differs"))
        elif chunk_problems(sent[id], g.chunks, doc_id=id):
            bad.append((id, "bad chunks"))
    r.eq(bad[:5], [], "%s: %d present documents (%d acked) exact and complete" % (
        tag, len(infos), len(acked)))
    v = verify(s)
    r.eq((v.ok, list(v.problems)[:3]), (True, []), "%s: Verify ok after restart" % tag)


def case_kill9(r, d):
    sent, acked, fails = {}, {}, []
    lock = threading.Lock()
    stop = threading.Event()
    ths = put_until_stopped(d, "k9", 16, stop, sent, acked, fails, lock)
    time.sleep(0.8 * SLOW)
    d.kill9()
    stop.set()
    for t in ths:
        t.join()
    r.check(len(acked) > 100, "k9: Puts were acked before the kill", len(acked))
    print("    k9: %d sent, %d acked before kill -9" % (len(sent), len(acked)))
    d.start()
    check_after_restart(r, d, "k9", sent, acked)


def case_sigterm(r, d):
    """SIGTERM with Puts in flight: the daemon drains, exits 0 (checked by
    stop()), and what it acked is there."""
    sent, acked, fails = {}, {}, []
    lock = threading.Lock()
    stop = threading.Event()
    ths = put_until_stopped(d, "st", 16, stop, sent, acked, fails, lock)
    time.sleep(0.5 * SLOW)
    d.stop()
    stop.set()
    for t in ths:
        t.join()
    c = writer_counts(d)
    r.check(c is not None and c[0] < c[1],
            "st: the writer grouped Puts (fewer transactions than documents)", c)
    print("    st: %d acked, writer %s, failures %s" % (len(acked), c, sorted(set(map(str, fails)))))
    d.start()
    check_after_restart(r, d, "st", sent, acked)


def case_deadline(r, d):
    """Under load, Puts whose deadline is under 2 ms are DEADLINE_EXCEEDED
    and not written; Puts with a few ms are acked or DEADLINE_EXCEEDED, and
    acked ones are stored."""
    sent, acked, fails = {}, {}, []
    lock = threading.Lock()
    stop = threading.Event()
    ths = put_until_stopped(d, "dl", 8, stop, sent, acked, fails, lock)
    s = d.stubs()
    wrong = []
    # grpcio rounds deadlines to whole milliseconds (a 1.5 ms timeout may
    # reach the server as 2.4 ms), so the close ones go through nghttp with
    # an exact grpc-timeout.
    nghttp = shutil.which("nghttp")
    close = ["%du" % us for us in range(100, 2000, 300)] + ["1m", "1999999n"]
    if r.check(nghttp is not None, "deadline: nghttp (nghttp2-client) installed"):
        for i, tmo in enumerate(close):
            id = "dl-close-%02d" % i
            body = put_req(id, "too late %d" % i).SerializeToString()
            with tempfile.NamedTemporaryFile(suffix=".bin") as f:
                f.write(struct.pack(">BI", 0, len(body)) + body)
                f.flush()
                p = subprocess.run([nghttp, "-v", "-t", "20",
                                    "-H", ":method: POST", "-H", "content-type: application/grpc",
                                    "-H", "te: trailers", "-H", "grpc-timeout: " + tmo,
                                    "-d", f.name, "http://%s/ctxd.v1.Documents/Put" % d.addr],
                                   capture_output=True, text=True, timeout=60)
            if "grpc-status: 4" not in p.stdout + p.stderr:
                wrong.append((id, tmo, (p.stdout + p.stderr)[-300:]))
    ok_ids, dl_ids = [], []
    for i in range(40):
        id = "dl-near-%02d" % i
        try:
            s.docs.Put(put_req(id, "near %d" % i), timeout=0.003 + 0.0005 * i)
            ok_ids.append(id)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                dl_ids.append(id)
            else:
                wrong.append((id, e.code()))
    stop.set()
    for t in ths:
        t.join()
    r.eq(wrong[:5], [], "deadline: < 2 ms is DEADLINE_EXCEEDED, a few ms acked or DEADLINE_EXCEEDED")
    r.eq(fails, [], "deadline: the background Puts all acked")
    present = []
    for i in range(len(close)):
        try:
            s.docs.Get(D.GetRequest(id="dl-close-%02d" % i), timeout=T)
            present.append(i)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                present.append((i, e.code()))
    r.eq(present, [], "deadline: no Put refused for its deadline was written")
    missing = []
    for id in ok_ids:
        try:
            s.docs.Get(D.GetRequest(id=id), timeout=T)
        except grpc.RpcError as e:
            missing.append((id, e.code()))
    r.eq(missing, [], "deadline: every acked near-deadline Put is stored")
    print("    deadline: near-deadline Puts %d acked, %d DEADLINE_EXCEEDED" % (
        len(ok_ids), len(dl_ids)))
    v = verify(s)
    r.eq((v.ok, list(v.problems)[:3]), (True, []), "deadline: Verify ok")


def case_one_per_txn(r):
    with Daemon(r, args=["--store.group_commit_docs", "1"], name="ctxd-gc1") as d:
        r.case("group_commit_docs=1: concurrent Puts", case_concurrent, r, d, "one")
        d.stop()
        r.eq(writer_counts(d), None, "group_commit_docs=1: no writer thread")


def main():
    r = Report("test_put_concurrent")
    with Daemon(r) as d:
        r.case("concurrent distinct and same-id Puts", case_concurrent, r, d)
        r.case("Puts mixed with Gets and Deletes", case_mixed, r, d)
        r.case("deadline too close", case_deadline, r, d)
        r.case("kill -9 during concurrent Puts", case_kill9, r, d)
        r.case("SIGTERM during concurrent Puts", case_sigterm, r, d)
    case_one_per_txn(r)
    r.finish()


if __name__ == "__main__":
    main()
