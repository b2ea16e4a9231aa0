#!/usr/bin/python3
"""crash_campaign - crash consistency under SIGKILL, trial after trial on one
data directory (state accumulates): bulk ingest (PutStream and unary Puts
from several threads), replaces and deletes, searches and a corpus reorder
job run together until the daemon is killed with SIGKILL at a random (seeded,
printed) moment; then it is restarted and checked:

- every acknowledged write is there exactly (text, chunk ranges, vectors),
  every acknowledged delete is absent, and a write still in flight at the
  kill is either wholly there (one of the versions sent) or absent;
- Admin.Verify is clean and List agrees with Get;
- Flat search results equal an exact search done here over the vectors the
  client sent (a rebuild from scratch); HNSW and IVF keep recall@10 against
  that exact search >= RECALL_MIN;
- the reorder job resumes and finishes (output files matching their CRC-32s)
  or fails with a status and a reason, never a silent partial output.

A few trials also kill the daemon again while it recovers. Usage (the
environment of tests/integration: CTXD_BIN, PYTHONPATH; tests/crash/run.sh
sets it up):

    crash_campaign.py [--trials 100] [--seed S] [--max-kill-s 4]

It prints one line per trial and a summary table; exit 1 on any failure.
tests/integration/test_crash_campaign.py runs a short form in ctest.
"""

import argparse
import math
import os
import random
import subprocess
import sys
import threading
import time
import zlib

import grpc

from ctxd_harness import SLOW, Daemon, Report, list_all, pb

D = pb.documents_pb2
A = pb.admin_pb2
R = pb.retrieval_pb2
C = pb.corpus_pb2
T = 30 * SLOW

DIM = 16
# The README's recall figure for the approximate indexes is 0.95 at a tuned
# setting ("Vector search in process"); the campaign allows a 0.05 margin.
RECALL_MIN = 0.90
EF_SEARCH = 128
NPROBE = 3
VEC_COLLS = {  # name -> index spec; client chunks and vectors (embedder none)
    "cc_flat": "Flat",
    "cc_hnsw": "HNSW32",
    "cc_ivf": "IVF4,Flat",  # trained once it holds 4 x 39 vectors
}
TEXT_COLL = "cc_text"      # server chunking, hash embedder
CORPUS_COLL = "cc_corpus"  # the reorder job's input; never changed
ALL_COLLS = list(VEC_COLLS) + [TEXT_COLL]
ABSENT = None
LIVE_CAP = 2500            # above this many live documents the mutator deletes more
TERMINAL = ("done", "failed", "cancelled")
# Every job reorders the same unchanging corpus with the same seed, so every
# job that ends done - resumed after kills or not - must write the same
# files (summary.json aside: it holds timings).
JOB_SEED = 7
SAME_FILES = ("order.jsonl", "windows.jsonl", "duplicates.jsonl")

DAEMON_ARGS = [
    # Save the vector indexes and trim the change log often, and rebuild
    # HNSW early, so kills land in saves, trims and rebuilds too.
    "--index.save_every_changes", "40", "--index.save_interval_s", "1",
    "--index.rebuild_masked_ratio", "0.1",
    "--putstream.batch_docs", "8", "--putstream.batch_ms", "5",
    # The job's progress reports sleep a little, so it lasts about a trial.
    "--jobs.test_delay_ms", "250", "--jobs.keep_finished", "20",
]

_WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu "
          "omicron sigma tau river mountain valley ocean forest window budget token "
          "question answer segment context été naïve café 東京 数据 ключ").split()
_CENTRES = None


def centres():
    global _CENTRES
    if _CENTRES is None:
        g = random.Random(99)
        _CENTRES = [[g.gauss(0, 1) for _ in range(DIM)] for _ in range(24)]
    return _CENTRES


def norm(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v] if n > 0 else list(v)


def rand_vec(g):
    c = g.choice(centres())
    return norm([x + g.gauss(0, 0.35) for x in c])


def rand_text(g, lo=8, hi=120):
    n = g.randint(lo, hi)
    out = []
    for i in range(n):
        w = g.choice(_WORDS)
        out.append(w.capitalize() + "." if i % 11 == 10 else w)
    return " ".join(out)


class Version:
    """One version of a document as the client sent it: text, and for the
    client-chunked collections the chunk ranges and (normalised) vectors."""
    __slots__ = ("text", "chunks")

    def __init__(self, text, chunks):
        self.text = text
        self.chunks = chunks  # [(start, end, vec)] or None (server chunking)


def make_version(g, coll):
    text = rand_text(g)
    if coll == TEXT_COLL:
        return Version(text, None)
    b = text.encode("utf-8")
    spaces = [i for i, c in enumerate(b) if c == 0x20]
    cuts = sorted(g.sample(spaces, min(len(spaces), g.randint(0, 3))))
    bounds = [0] + cuts + [len(b)]
    chunks = [(bounds[i], bounds[i + 1], rand_vec(g)) for i in range(len(bounds) - 1)
              if bounds[i + 1] > bounds[i]]
    return Version(text, chunks)


def put_request(id, coll, v):
    doc = D.Document(id=id, text=v.text, collection=coll)
    if v.chunks is None:
        return D.PutRequest(document=doc, chunking=D.ChunkOptions(max_tokens=24))
    for s, e, vec in v.chunks:
        doc.chunks.append(D.ChunkInput(byte_start=s, byte_end=e, vector=vec))
    return D.PutRequest(document=doc)


# --------------------------------------------------------------------------
# The client's record of what it sent and what was acknowledged.

class Ledger:
    """Per (collection, id): `acked` (the last acknowledged Version, ABSENT
    after an acknowledged delete or before any ack) and `maybe` (versions,
    or ABSENT for a delete, sent but not acknowledged: allowed after a
    kill). Documents touched in the current trial are in `touched`."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}
        self.maybe = {}
        self.touched = set()
        self.settled = []  # keys whose state is settled (mutator's pool)
        self.n_acked_puts = 0
        self.n_acked_deletes = 0

    def sent(self, key, v):
        with self.lock:
            self.acked.setdefault(key, ABSENT)
            self.maybe.setdefault(key, []).append(v)
            self.touched.add(key)

    def ack(self, key, v):
        with self.lock:
            self.acked[key] = v
            m = self.maybe.get(key, [])
            # Versions sent before this one can no longer appear: one owner
            # thread per key sends in order and waits for each answer, and a
            # PutStream acks in order.
            if v in m:
                del m[:m.index(v) + 1]
            if v is ABSENT:
                self.n_acked_deletes += 1
            else:
                self.n_acked_puts += 1

    def live_count(self):
        with self.lock:
            return sum(1 for v in self.acked.values() if v is not ABSENT)

    def allowed(self, key):
        return [self.acked.get(key, ABSENT)] + self.maybe.get(key, [])

    def resolve(self, key, v):
        """After a restart: what the store holds is now the settled state."""
        self.acked[key] = v
        self.maybe.pop(key, None)


# --------------------------------------------------------------------------
# Workload threads; each runs until `stop` and ignores errors once `killed`.

class Workload:
    def __init__(self, d, ledger, g, trial, out_root):
        self.d = d
        self.led = ledger
        self.trial = trial
        self.stop = threading.Event()
        self.killed = threading.Event()
        self.errors = []  # unexpected errors before the kill
        self.lock = threading.Lock()
        self.seeds = [g.random() for _ in range(8)]
        self.n_search = 0
        self.job_id = None
        self.job_phase = "not-submitted"
        self.out_dir = os.path.join(out_root, "t%04d" % trial)
        with ledger.lock:
            pool = [k for k in ledger.settled if ledger.acked.get(k) is not ABSENT]
        self.old = g.sample(pool, min(len(pool), 250))
        self.threads = []

    def err(self, what, e):
        if self.killed.is_set() or self.stop.is_set():
            return
        with self.lock:
            self.errors.append("%s: %s" % (what, e if not isinstance(e, grpc.RpcError)
                                           else "%s %s" % (e.code(), e.details())))

    def run(self, fn, *a):
        t = threading.Thread(target=self._guard, args=(fn,) + a, daemon=True)
        self.threads.append(t)
        t.start()

    def _guard(self, fn, *a):
        try:
            fn(*a)
        except grpc.RpcError as e:
            self.err(fn.__name__, e)
        except Exception as e:  # noqa: BLE001 - reported as a failure
            self.err(fn.__name__, "%s: %s" % (type(e).__name__, e))

    def start(self):
        s = self.d.stubs()
        self.run(self.reorder, self.d.stubs())
        self.run(self.putstream, s, 0)
        self.run(self.unary, self.d.stubs(), 1)
        self.run(self.unary, self.d.stubs(), 2)
        self.run(self.mutate, self.d.stubs(), 3)
        self.run(self.search, self.d.stubs(), 4)

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(60)

    # -- writers --------------------------------------------------------
    def putstream(self, s, n):
        g = random.Random(self.seeds[n])
        by_id = {}  # id -> (key, version)

        def gen():
            i = 0
            while not self.stop.is_set():
                coll = g.choice(ALL_COLLS)
                key = (coll, "t%04d-s%05d" % (self.trial, i))
                v = make_version(g, coll)
                self.led.sent(key, v)
                by_id[key[1]] = (key, v)
                i += 1
                yield put_request(key[1], coll, v)
                time.sleep(0.02)  # about 50 documents a second

        for ack in s.docs.PutStream(gen(), timeout=300 * SLOW):
            for id in ack.ids:
                k, v = by_id[id]
                self.led.ack(k, v)
            if ack.errors:
                self.err("PutStream", "rejected: %s" % ack.errors[0])

    def unary(self, s, n):
        g = random.Random(self.seeds[n])
        i = 0
        while not self.stop.is_set():
            coll = g.choice(ALL_COLLS)
            key = (coll, "t%04d-u%d-%05d" % (self.trial, n, i))
            i += 1
            v = make_version(g, coll)
            self.led.sent(key, v)
            try:
                s.docs.Put(put_request(key[1], coll, v), timeout=T)
            except grpc.RpcError as e:
                self.err("Put", e)
                return
            self.led.ack(key, v)
            time.sleep(0.02)

    def mutate(self, s, n):
        """Deletes and replaces of documents from earlier trials (this
        thread is their only writer)."""
        g = random.Random(self.seeds[n])
        for key in self.old:
            if self.stop.is_set():
                return
            coll, id = key
            if self.led.live_count() > LIVE_CAP or g.random() < 0.6:
                self.led.sent(key, ABSENT)
                try:
                    r = s.docs.Delete(D.DeleteRequest(id=id, collection=coll), timeout=T)
                except grpc.RpcError as e:
                    self.err("Delete", e)
                    return
                if not r.deleted:
                    self.err("Delete", "%s/%s: deleted=false for a live document" % key)
                self.led.ack(key, ABSENT)
            else:
                v = make_version(g, coll)
                self.led.sent(key, v)
                try:
                    r = s.docs.Put(put_request(id, coll, v), timeout=T)
                except grpc.RpcError as e:
                    self.err("Put (replace)", e)
                    return
                if not r.replaced:
                    self.err("Put (replace)", "%s/%s: replaced=false" % key)
                self.led.ack(key, v)
            time.sleep(0.002)

    # -- readers --------------------------------------------------------
    def search(self, s, n):
        g = random.Random(self.seeds[n])
        while not self.stop.is_set():
            coll = g.choice(ALL_COLLS)
            try:
                if coll == TEXT_COLL:
                    s.retrieval.Search(R.SearchRequest(text=rand_text(g, 2, 4), k=10,
                                                       collection=coll), timeout=T)
                else:
                    s.retrieval.Search(R.SearchRequest(vector=rand_vec(g), k=10, mode="vector",
                                                       collection=coll, ef_search=EF_SEARCH,
                                                       nprobe=NPROBE), timeout=T)
            except grpc.RpcError as e:
                self.err("Search", e)
                return
            self.n_search += 1

    def reorder(self, s):
        req = C.ReorderRequest(output_dir=self.out_dir, collection=CORPUS_COLL,
                               window_tokens=256, k=5, seed=JOB_SEED)
        self.job_phase = "submitting"
        for ev in s.corpus.Reorder(req, timeout=300 * SLOW):
            self.job_id = ev.job_id
            self.job_phase = ev.phase or ev.state
            if ev.state in TERMINAL:
                self.job_phase = "job-" + ev.state
                return


# --------------------------------------------------------------------------
# Checks after a restart

def get_doc(s, coll, id):
    try:
        return s.docs.Get(D.GetRequest(id=id, collection=coll, with_text=True,
                                       with_chunks=True, with_vectors=True), timeout=T)
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def matches(g, v, info):
    """Why the stored document `g` is not Version `v`, or None."""
    if g.document.text != v.text:
        return "text differs (%d vs %d chars)" % (len(g.document.text), len(v.text))
    if info is not None and info.chunks != len(g.chunks):
        return "List says %d chunks, Get has %d" % (info.chunks, len(g.chunks))
    if v.chunks is None:
        b = v.text.encode("utf-8")
        end = 0
        for i, c in enumerate(g.chunks):
            if c.ordinal != i or c.byte_start > end or c.byte_end <= c.byte_start:
                return "chunk %d bad (%d,%d) after end %d" % (i, c.byte_start, c.byte_end, end)
            end = c.byte_end
            if len(c.vector) == 0 or not all(math.isfinite(x) for x in c.vector):
                return "chunk %d has no usable vector (%d numbers)" % (i, len(c.vector))
        if not g.chunks or end != len(b):
            return "chunks end at %d, text is %d bytes" % (end, len(b))
        return None
    if len(g.chunks) != len(v.chunks):
        return "%d chunks, sent %d" % (len(g.chunks), len(v.chunks))
    for i, (c, (s, e, vec)) in enumerate(zip(g.chunks, v.chunks)):
        if (c.ordinal, c.byte_start, c.byte_end) != (i, s, e):
            return "chunk %d is (%d,%d,%d), sent (%d,%d)" % (i, c.ordinal, c.byte_start,
                                                             c.byte_end, s, e)
        if len(c.vector) != DIM or max(abs(a - b) for a, b in zip(c.vector, vec)) > 1e-5:
            return "chunk %d vector differs" % i
    return None


def check_store(r, s, led, g, trial, stat):
    """Presence, absence and content of every document the ledger knows."""
    present = {}
    for coll in ALL_COLLS:
        try:
            present[coll] = {x.id: x for x in list_all_coll(s, coll)}
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                raise
            present[coll] = {}
    with led.lock:
        keys = list(led.acked)
    known = set(keys)
    strangers = [(c, i) for c in present for i in present[c] if (c, i) not in known]
    r.eq(strangers[:3], [], "t%d: no document the client never sent" % trial)
    lost, resurrected, bad = [], [], []
    settled = [k for k in keys if k not in led.touched and not led.maybe.get(k)]
    sample = set(g.sample(settled, min(len(settled), 40)))
    for key in keys:
        coll, id = key
        allowed = led.allowed(key)
        info = present[coll].get(id)
        if info is None:
            if ABSENT not in allowed:
                lost.append(key)
            else:
                if led.maybe.get(key) and any(v is not ABSENT for v in led.maybe[key]):
                    stat["inflight_absent"] += 1
                led.resolve(key, ABSENT)
            continue
        if allowed == [ABSENT]:
            resurrected.append(key)
            continue
        if key not in led.touched and key not in sample and not led.maybe.get(key):
            continue
        doc = get_doc(s, coll, id)
        if doc is None:
            bad.append((key, "listed but Get says NOT_FOUND"))
            continue
        why = []
        hit = None
        for v in allowed:
            if v is ABSENT:
                continue
            w = matches(doc, v, info)
            if w is None:
                hit = v
                break
            why.append(w)
        if hit is None:
            bad.append((key, "matches no version sent: %s" % "; ".join(why[:2])))
            continue
        if hit is not led.acked.get(key):
            stat["inflight_present"] += 1
        led.resolve(key, hit)
    r.eq(lost[:3], [], "t%d: every acknowledged document is there (%d known)" % (trial, len(keys)))
    r.eq(resurrected[:3], [], "t%d: no acknowledged delete came back" % trial)
    r.eq(bad[:3], [], "t%d: every present document is whole (text, chunks, vectors)" % trial)
    led.maybe.clear()
    led.touched.clear()
    # Forget deleted documents: one coming back is then a stranger.
    for k in [k for k, v in led.acked.items() if v is ABSENT]:
        del led.acked[k]
    led.settled = [k for k, v in led.acked.items() if v is not ABSENT]
    return present


def list_all_coll(s, coll):
    out, token = [], ""
    while True:
        resp = s.docs.List(D.ListRequest(page_size=5000, page_token=token, collection=coll),
                           timeout=60 * SLOW)
        out.extend(resp.documents)
        token = resp.next_page_token
        if not token:
            return out


def exact_top(vecs, q, k):
    """Exact top-k (score, (doc, ordinal)) by inner product (all normalised)."""
    sc = [(sum(a * b for a, b in zip(v, q)), lab) for lab, v in vecs]
    sc.sort(key=lambda x: -x[0])
    return sc[:k]


def check_search(r, s, led, g, trial, stat):
    """Flat == exact over the client's vectors; HNSW/IVF recall@10."""
    for coll, spec in VEC_COLLS.items():
        with led.lock:
            vecs = [((id, i), vec) for (c, id), v in led.acked.items()
                    if c == coll and v is not ABSENT for i, (_, _, vec) in enumerate(v.chunks)]
        if len(vecs) < 20:
            continue
        recall, n = 0.0, 0
        mism = []
        for qi in range(24):
            q = rand_vec(g)
            ex = exact_top(vecs, q, 10)
            resp = s.retrieval.Search(R.SearchRequest(vector=q, k=10, mode="vector",
                                                      collection=coll, ef_search=EF_SEARCH,
                                                      nprobe=NPROBE), timeout=T)
            got = [(h.score, (h.chunk.doc_id, h.chunk.ordinal)) for h in resp.hits]
            if spec == "Flat":
                if len(got) != len(ex):
                    mism.append("q%d: %d hits, exact has %d" % (qi, len(got), len(ex)))
                    continue
                for rank, ((gs, gl), (es, el)) in enumerate(zip(got, ex)):
                    # Equal scores (within float32 rounding) may swap.
                    if abs(gs - es) > 1e-4 or (gl != el and not any(
                            abs(es2 - gs) <= 1e-4 for es2, l2 in ex if l2 == gl)):
                        mism.append("q%d rank %d: %s %.5f, exact %s %.5f" % (
                            qi, rank, gl, gs, el, es))
                        break
            else:
                want = {lab for _, lab in ex}
                recall += len(want & {lab for _, lab in got}) / float(len(want))
                n += 1
        if spec == "Flat":
            r.eq(mism[:2], [], "t%d: %s search equals exact search over %d vectors" % (
                trial, coll, len(vecs)))
        else:
            info = [c for c in s.admin.ListCollections(A.ListCollectionsRequest(),
                                                       timeout=T).collections
                    if c.config.name == coll][0]
            if info.trained and not info.exact_until_trained:
                stat["trained"].add(coll)
            rec = recall / n
            stat["recall"][coll] = min(stat["recall"].get(coll, 1.0), rec)
            r.check(rec >= RECALL_MIN, "t%d: %s recall@10 %.3f >= %.2f (%d vectors)" % (
                trial, coll, rec, RECALL_MIN, len(vecs)), rec)


def check_jobs(r, s, trial, stat, out_root):
    """Every job ends done with intact files or failed with a reason."""
    end = time.monotonic() + 120 * SLOW
    while True:
        jobs = s.corpus.ListJobs(C.ListJobsRequest(limit=1000), timeout=T).jobs
        live = [j for j in jobs if j.state not in TERMINAL]
        if not live or time.monotonic() > end:
            break
        time.sleep(0.2)
    r.eq([j.job_id for j in live], [], "t%d: every job resumed and ended" % trial)
    for j in jobs:
        if not j.request.output_dir.startswith(out_root):
            continue
        tag = "t%d: job %s (%s)" % (trial, j.job_id, os.path.basename(j.request.output_dir))
        if j.state == "done":
            bad = []
            for f in j.result.files:
                try:
                    with open(f.path, "rb") as fh:
                        data = fh.read()
                except OSError as e:
                    bad.append("%s: %s" % (f.name, e))
                    continue
                if len(data) != f.bytes or (zlib.crc32(data) & 0xFFFFFFFF) != f.crc32:
                    bad.append("%s: %d bytes crc %08x, result says %d %08x" % (
                        f.name, len(data), zlib.crc32(data) & 0xFFFFFFFF, f.bytes, f.crc32))
            names = sorted(f.name for f in j.result.files)
            r.check(not bad and "summary.json" in names and "order.jsonl" in names,
                    "%s done: its files match the result" % tag, (bad, names))
            crcs = {f.name: f.crc32 for f in j.result.files if f.name in SAME_FILES}
            ref = stat.setdefault("job_files", crcs)
            r.eq(crcs, ref, "%s: the same files as every other job (resumed %d times)" % (
                tag, j.resumes))
        elif j.state == "failed":
            r.check(j.error and j.error_status, "%s failed with a status and reason" % tag,
                    (j.error_status, j.error))
            stat["jobs_failed"] += 1
            print("    job %s failed: %s %s" % (j.job_id, j.error_status, j.error))
        else:
            r.check(False, "%s ends done or failed" % tag, j.state)
        if j.job_id not in stat["jobs_seen"]:
            stat["jobs_seen"].add(j.job_id)
            stat["jobs_" + j.state] = stat.get("jobs_" + j.state, 0) + 1
            if j.resumes:
                stat["jobs_resumed"] += 1


# --------------------------------------------------------------------------

def setup(r, d, g):
    s = d.stubs()
    for coll, spec in VEC_COLLS.items():
        s.admin.CreateCollection(A.CreateCollectionRequest(config=A.CollectionConfig(
            name=coll, embedder="none:dim=%d" % DIM, metric="ip", index_spec=spec)), timeout=T)
    for coll in (TEXT_COLL, CORPUS_COLL):
        s.admin.CreateCollection(A.CreateCollectionRequest(config=A.CollectionConfig(
            name=coll, embedder="hash:dim=32", metric="ip", index_spec="Flat")), timeout=T)
    reqs = []
    for i in range(150):
        doc = D.Document(id="corpus-%04d" % i, text=rand_text(g, 40, 160), collection=CORPUS_COLL)
        reqs.append(D.PutRequest(document=doc))
    n = sum(len(a.ids) for a in s.docs.PutStream(iter(reqs), timeout=120 * SLOW))
    r.eq(n, 150, "setup: the reorder job's corpus is stored")


def trial_once(r, d, led, g, trial, stat, args, out_root):
    seed = g.randrange(1 << 30)
    tg = random.Random(seed)
    delay = tg.uniform(0.2, args.max_kill_s)
    double = tg.random() < args.double_kill
    w = Workload(d, led, tg, trial, out_root)
    acked_before = led.n_acked_puts
    t0 = time.monotonic()
    w.start()
    time.sleep(delay)
    phase = w.job_phase
    w.killed.set()
    d.kill9()
    w.join()
    stat["kills"][phase] = stat["kills"].get(phase, 0) + 1
    for e in w.errors:
        r.check(False, "t%d: no error before the kill" % trial, e)
    if double:
        # Kill it again while it recovers (replaying the change log,
        # requeuing the job), at a random point of its start-up.
        d.start(wait=False)
        time.sleep(tg.uniform(0.0, 0.6))
        d.kill9()
        stat["double_kills"] += 1
    d.start()
    restart_s = time.monotonic() - t0 - delay
    s = d.stubs()
    check_store(r, s, led, tg, trial, stat)
    v = s.admin.Verify(A.VerifyRequest(), timeout=300 * SLOW)
    r.eq((v.ok, list(v.problems)[:3]), (True, []), "t%d: Verify clean" % trial)
    check_search(r, s, led, tg, trial, stat)
    check_jobs(r, s, trial, stat, out_root)
    print("t%04d seed=%d kill_at=%.2fs phase=%s%s acked=%d searches=%d restart=%.1fs "
          "total=%.1fs failed=%d" % (trial, seed, delay, phase, " +recovery-kill" if double else "",
                                    led.n_acked_puts - acked_before, w.n_search, restart_s,
                                    time.monotonic() - t0, r.failed), flush=True)


def main(argv=None, report=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--max-kill-s", type=float, default=3.0,
                    help="kill at a uniform time in [0.2, this] seconds of each trial")
    ap.add_argument("--double-kill", type=float, default=0.15,
                    help="fraction of trials that kill the daemon again while it recovers")
    ap.add_argument("--max-seconds", type=float, default=0,
                    help="stop starting trials after this long (0: no limit)")
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    print("crash_campaign: seed=%d trials=%d max_kill_s=%.1f (rerun with --seed %d)" % (
        seed, args.trials, args.max_kill_s, seed), flush=True)
    r = report or Report("crash_campaign")
    g = random.Random(seed)
    led = Ledger()
    stat = {"kills": {}, "double_kills": 0, "inflight_present": 0, "inflight_absent": 0,
            "recall": {}, "trained": set(), "jobs_failed": 0, "jobs_resumed": 0, "jobs_seen": set()}
    t_start = time.monotonic()
    done = 0
    with Daemon(r, args=DAEMON_ARGS) as d:
        out_root = os.path.join(d.tmp, "jobs")
        r.case("setup", setup, r, d, g)
        for trial in range(args.trials):
            if args.max_seconds and time.monotonic() - t_start > args.max_seconds:
                print("stopping: --max-seconds %.0f reached" % args.max_seconds)
                break
            if not d.alive():
                d.start()
            r.case("trial %d" % trial, trial_once, r, d, led, g, trial, stat, args, out_root)
            done += 1
        if not d.alive():
            d.start()
        # A clean stop at the end, and one more look after it.
        d.restart()
        s = d.stubs()
        r.case("after a clean restart", check_store, r, s, led, g, done, stat)
        v = s.admin.Verify(A.VerifyRequest(), timeout=300 * SLOW)
        r.eq((v.ok, list(v.problems)[:3]), (True, []), "final Verify clean")
        ctl = os.environ.get("CTXCTL_BIN")
        if ctl:
            p = subprocess.run([ctl, "--addr", d.addr, "verify"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=300 * SLOW)
            r.eq(p.returncode, 0, "final ctxctl verify exits 0",)
            print("    ctxctl verify: %s" % p.stdout.decode(errors="replace").strip()[:300])
        live = sum(1 for x in led.acked.values() if x is not ABSENT)
        st = s.admin.Stats(A.StatsRequest(), timeout=T)
        r.eq(st.documents, live + 150, "Stats counts the live documents")
    secs = time.monotonic() - t_start
    print()
    print("| figure | value |")
    print("| --- | --- |")
    print("| seed | %d |" % seed)
    print("| trials (SIGKILLs) | %d |" % done)
    print("| of which also killed while recovering | %d |" % stat["double_kills"])
    print("| documents acknowledged (Put/PutStream) | %d |" % led.n_acked_puts)
    print("| deletes acknowledged | %d |" % led.n_acked_deletes)
    print("| live documents at the end | %d |" % live)
    print("| in-flight writes found whole / absent | %d / %d |" % (stat["inflight_present"],
                                                                 stat["inflight_absent"]))
    print("| kills by reorder-job phase | %s |" % ", ".join(
        "%s %d" % kv for kv in sorted(stat["kills"].items(), key=lambda x: -x[1])))
    print("| jobs: done / failed / resumed after a kill | %d / %d / %d |" % (
        stat.get("jobs_done", 0), stat["jobs_failed"], stat["jobs_resumed"]))
    print("| lowest recall@10 (ef %d, nprobe %d) | %s |" % (EF_SEARCH, NPROBE, ", ".join(
        "%s %.3f" % kv for kv in sorted(stat["recall"].items()))))
    print("| approximate indexes trained during the run | %s |" % (
        ", ".join(sorted(stat["trained"])) or "none"))
    print("| checks passed / failed | %d / %d |" % (r.passed, r.failed))
    print("| wall time | %.0f s |" % secs)
    return r


if __name__ == "__main__":
    main().finish()
