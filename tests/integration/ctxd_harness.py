"""ctxd_harness - shared harness for the integration tests.

Each test file starts real daemons with Daemon(...) and counts checks with a
Report:

    from ctxd_harness import Report, Daemon, pb
    r = Report("test_x")
    with Daemon(r) as d:                 # starts $CTXD_BIN, waits for SERVING
        r.case("put works", case_fn, d)  # runs a case, catching exceptions
    r.finish()                           # "test_x: N passed, N failed", exit code

The daemon listens on 127.0.0.1:0; the harness reads the address from the
`listening addr=HOST:PORT` line of its stderr log. Each daemon gets a temp
data dir (kept across restart()); leaving the `with` sends SIGTERM and checks
that it exits 0 with no sanitizer report in its log. Corpus jobs may read
and write anywhere under the temp dir (jobs.input_root and
jobs.output_root; a test's own args override them).

Environment: CTXD_BIN (the daemon), PYTHONPATH with the generated stubs and
clients/python. CTXD_TEST_KEEP=1 keeps temp dirs and logs for inspection.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import grpc

import ctxd_client
from ctxd_client import CtxdClient, CtxdError


class _Pb:
    """The generated modules: pb.documents_pb2, pb.admin_pb2, ..."""

    def __getattr__(self, name):
        return getattr(ctxd_client, name)


pb = _Pb()

CTXD_BIN = os.environ.get("CTXD_BIN", "")
KEEP = os.environ.get("CTXD_TEST_KEEP") == "1"
# Sanitizer builds are slower to start and to serve.
# Sanitizer builds run slower: ASan/UBSan about 3x, TSan (which also runs
# FAISS's OpenMP on one thread) about 5x; every deadline scales with this.
if os.environ.get("TSAN_OPTIONS"):
    SLOW = 5.0
elif os.environ.get("ASAN_OPTIONS") or os.environ.get("UBSAN_OPTIONS"):
    SLOW = 3.0
else:
    SLOW = 1.0

_LISTEN_RE = re.compile(r'msg="?listening"?.*\baddr=([^\s"]+)')
_SANITIZER_RE = re.compile(r"(ERROR: (Address|Leak|Thread|Memory)Sanitizer|runtime error:|"
                           r"SUMMARY: \w+Sanitizer)")


# --------------------------------------------------------------------------
# Report: counted checks, one closing line.

class Report:
    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0
        self.failures = []
        self._lock = threading.Lock()
        self._case = ""

    def check(self, cond, what, detail=""):
        """Count one check; print it; return bool(cond)."""
        with self._lock:
            label = "%s%s" % ("[%s] " % self._case if self._case else "", what)
            if cond:
                self.passed += 1
                print("  ok   %s" % label, flush=True)
            else:
                self.failed += 1
                self.failures.append(label)
                print("  FAIL %s%s" % (label, (": " + str(detail)) if detail != "" else ""),
                      flush=True)
        return bool(cond)

    def eq(self, got, want, what):
        return self.check(got == want, what, "got %r, want %r" % (_short(got), _short(want)))

    def raises(self, code, fn, what, contains=None):
        """fn() must raise a grpc.RpcError with status `code` (and, if given,
        a message containing each string of `contains`). Returns the error."""
        try:
            res = fn()
        except grpc.RpcError as e:
            got = _code(e)
            msg = _details(e)
            ok = got == code
            if ok and contains:
                for s in ([contains] if isinstance(contains, str) else contains):
                    if s.lower() not in msg.lower():
                        self.check(False, what, "%s message %r lacks %r" % (got, msg, s))
                        return e
            self.check(ok, what, "got %s %r, want %s" % (got, msg, code))
            return e
        self.check(False, what, "no error (returned %r), want %s" % (_short(res), code))
        return None

    def case(self, name, fn, *args, **kw):
        """Run one case; an exception counts as one failed check."""
        print("- %s" % name, flush=True)
        prev, self._case = self._case, name
        try:
            return fn(*args, **kw)
        except Exception as e:  # noqa: BLE001 - a test harness reports everything
            self.check(False, "no exception", "%s: %s\n%s" % (
                type(e).__name__, e, traceback.format_exc()))
            return None
        finally:
            self._case = prev

    def finish(self):
        for f in self.failures:
            print("  failed: %s" % f)
        if self.passed + self.failed == 0:
            self.failed += 1
            print("  FAIL no checks ran")
        print("%s: %d passed, %d failed" % (self.name, self.passed, self.failed), flush=True)
        sys.exit(1 if self.failed else 0)


def _code(e):
    c = getattr(e, "code", None)
    if callable(c):
        return c()
    return c


def _details(e):
    d = getattr(e, "details", None)
    if callable(d):
        return d() or ""
    return str(e)


def _short(x, n=200):
    s = repr(x)
    return s if len(s) <= n else s[:n] + "...(%d chars)" % len(s)


# --------------------------------------------------------------------------
# Daemon

class DaemonError(Exception):
    pass


class Daemon:
    """One ctxd process on a temp data dir.

    Daemon(report, args=(), data_dir=None, name="ctxd") - `args` are extra
    command-line flags (e.g. ["--server.max_message_bytes", "1048576"]).
    `creds` (grpc.ssl_channel_credentials) makes every harness channel a
    TLS one, with `target_name` as the name the certificate must carry.
    """

    def __init__(self, report=None, args=(), data_dir=None, name="ctxd",
                 creds=None, target_name=None):
        if not CTXD_BIN or not os.path.exists(CTXD_BIN):
            raise DaemonError("CTXD_BIN not set or missing: %r" % CTXD_BIN)
        self.report = report
        self.args = list(args)
        self.name = name
        self._own_dir = data_dir is None
        self.tmp = tempfile.mkdtemp(prefix="ctxd-it-")
        self.data_dir = data_dir or os.path.join(self.tmp, "data")
        self.proc = None
        self.addr = None
        self.log_lines = []
        self._log_lock = threading.Lock()
        self._listen_evt = threading.Event()
        self._channels = []
        self._client = None
        self.starts = 0
        self.creds = creds
        self.target_name = target_name

    # -- process ---------------------------------------------------------
    def start(self, wait=True):
        assert self.proc is None, "already running"
        self.starts += 1
        self._listen_evt.clear()
        self.addr = None
        # The built-in reference model (model.builtin) is off unless a test's
        # own args turn it on (later flags win): "no model" stays no model.
        # Jobs read and write under the daemon's temp dir (where the tests
        # put their files) rather than in the data dir's exports/imports.
        cmd = [CTXD_BIN, "--listen", "127.0.0.1:0", "--data", self.data_dir,
               "--model.builtin=none", "--jobs.output_root", self.tmp,
               "--jobs.input_root", self.tmp] + self.args
        self.log_path = os.path.join(self.tmp, "%s.%d.log" % (self.name, self.starts))
        self._logf = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self._reader = threading.Thread(target=self._read_log, args=(self.proc,), daemon=True)
        self._reader.start()
        if wait:
            self.wait_listening()
            self.wait_serving()
        return self

    def _read_log(self, proc):
        for raw in proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._log_lock:
                self.log_lines.append(line)
            self._logf.write(line + "\n")
            self._logf.flush()
            m = _LISTEN_RE.search(line)
            if m and not self._listen_evt.is_set():
                self.addr = m.group(1)
                self._listen_evt.set()
        self._logf.close()

    def log_tail(self, n=40):
        with self._log_lock:
            return "\n".join(self.log_lines[-n:])

    def wait_log(self, text, timeout=5.0):
        """True once `text` appears in the daemon's log (within `timeout`
        seconds, scaled for sanitizer builds)."""
        end = time.monotonic() + timeout * SLOW
        while True:
            with self._log_lock:
                if any(text in l for l in self.log_lines):
                    return True
            if time.monotonic() >= end:
                return False
            time.sleep(0.05)

    def wait_listening(self, timeout=15.0):
        end = time.monotonic() + timeout * SLOW
        while time.monotonic() < end:
            if self._listen_evt.wait(0.05):
                return self.addr
            if self.proc.poll() is not None:
                self._reader.join(2)
                raise DaemonError("%s exited with %s before listening; log:\n%s" % (
                    self.name, self.proc.returncode, self.log_tail()))
        raise DaemonError("%s: no 'listening addr=' line in %.0fs; log:\n%s" % (
            self.name, timeout * SLOW, self.log_tail()))

    def _new_channel(self, options=()):
        opts = list(options)
        if self.creds is None:
            return grpc.insecure_channel(self.addr, options=opts)
        if self.target_name:
            opts.append(("grpc.ssl_target_name_override", self.target_name))
        return grpc.secure_channel(self.addr, self.creds, options=opts)

    def wait_serving(self, timeout=15.0):
        ch = self._new_channel()
        stub = pb.health_pb2_grpc.HealthStub(ch)
        end = time.monotonic() + timeout * SLOW
        last = None
        try:
            while time.monotonic() < end:
                if self.proc.poll() is not None:
                    raise DaemonError("%s exited with %s while starting; log:\n%s" % (
                        self.name, self.proc.returncode, self.log_tail()))
                try:
                    r = stub.Check(pb.health_pb2.HealthCheckRequest(), timeout=2.0 * SLOW)
                    if r.status == pb.health_pb2.HealthCheckResponse.SERVING:
                        return
                    last = "status %s" % r.status
                except grpc.RpcError as e:
                    last = "%s %s" % (_code(e), _details(e))
                time.sleep(0.05)
        finally:
            ch.close()
        raise DaemonError("%s not SERVING after %.0fs (%s); log:\n%s" % (
            self.name, timeout * SLOW, last, self.log_tail()))

    def _close_channels(self):
        for ch in self._channels:
            try:
                ch.close()
            except Exception:  # noqa: BLE001
                pass
        self._channels = []
        self._client = None

    def stop(self, timeout=30.0):
        """SIGTERM; wait; return the exit status (negative: killed by a
        signal). Also checks (when a Report is attached) that the status is
        0 and the log has no sanitizer report."""
        self._close_channels()
        if self.proc is None:
            return None
        p = self.proc
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout * SLOW)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
                if self.report:
                    self.report.check(False, "%s stops within %.0fs of SIGTERM" % (
                        self.name, timeout * SLOW), self.log_tail())
        self._reader.join(5)
        self.proc = None
        rc = p.returncode
        if self.report:
            self.report.check(rc == 0, "%s exits 0 on SIGTERM" % self.name,
                              "exit %s; log:\n%s" % (rc, self.log_tail()))
            self.check_log_clean()
        return rc

    def check_log_clean(self):
        with self._log_lock:
            bad = [l for l in self.log_lines if _SANITIZER_RE.search(l)]
        if self.report:
            self.report.check(not bad, "%s log has no sanitizer report" % self.name,
                              "\n".join(bad[:10]) + "\n" + self.log_tail(60))
        return not bad

    def kill9(self):
        """SIGKILL the daemon (no clean shutdown) and reap it."""
        # Kill first, close the channels after: the daemon must die with the
        # client's streams still open, not after seeing them cancelled.
        if self.proc is not None:
            try:
                self.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self._reader.join(5)
            self.proc = None
        self._close_channels()

    def restart(self, clean=True):
        """Stop (SIGTERM, or SIGKILL when clean=False) and start again on
        the same data dir."""
        if clean:
            self.stop()
        else:
            self.kill9()
        return self.start()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    # -- clients ---------------------------------------------------------
    def channel(self, options=None):
        """A new grpcio insecure channel to the daemon (closed on stop)."""
        opts = [("grpc.max_send_message_length", 128 << 20),
                ("grpc.max_receive_message_length", 128 << 20)]
        opts += list(options or [])
        ch = self._new_channel(opts)
        self._channels.append(ch)
        return ch

    def stubs(self, channel=None):
        """Namespace with docs, admin, health, retrieval, corpus stubs on one
        channel."""
        ch = channel or self.channel()
        return _Stubs(ch)

    def client(self, timeout=30.0):
        """A CtxdClient sharing a harness-owned channel."""
        if self._client is None:
            self._client = CtxdClient(self.addr, timeout=timeout * SLOW,
                                      channel=self.channel())
        return self._client

    # -- context manager -------------------------------------------------
    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, et, ev, tb):
        try:
            if self.proc is not None:
                self.stop()
        finally:
            if et is not None:
                print("%s log tail:\n%s" % (self.name, self.log_tail()), file=sys.stderr)
            if KEEP:
                print("kept %s" % self.tmp, file=sys.stderr)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def check_start_refused(r, args, what, want, timeout=60.0):
    """Run the daemon with `args` (on a temp data dir, 127.0.0.1:0 unless
    args say otherwise): Report `r` checks that it refuses to start and that
    its stderr holds every string of `want`."""
    tmp = tempfile.mkdtemp(prefix="ctxd-it-refused-")
    try:
        p = subprocess.run([CTXD_BIN, "--listen", "127.0.0.1:0", "--data",
                            os.path.join(tmp, "data"), "--model.builtin=none"] + list(args),
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=timeout * SLOW)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    err = p.stderr.decode("utf-8", "replace")
    r.check(p.returncode != 0, "%s: start refused" % what, err[-500:])
    for w in want:
        r.check(w in err, "%s: message has %r" % (what, w), err[-800:])


class _Stubs:
    def __init__(self, ch):
        self.channel = ch
        self.docs = pb.documents_pb2_grpc.DocumentsStub(ch)
        self.admin = pb.admin_pb2_grpc.AdminStub(ch)
        self.health = pb.health_pb2_grpc.HealthStub(ch)
        self.retrieval = pb.retrieval_pb2_grpc.RetrievalStub(ch)
        self.corpus = pb.corpus_pb2_grpc.CorpusStub(ch)


# --------------------------------------------------------------------------
# helpers shared by the tests

def put_req(id, text, metadata=None, max_tokens=0, overlap_tokens=0):
    return pb.documents_pb2.PutRequest(
        document=pb.documents_pb2.Document(id=id, text=text, metadata=metadata or {}),
        chunking=pb.documents_pb2.ChunkOptions(max_tokens=max_tokens,
                                               overlap_tokens=overlap_tokens))


def stats(s):
    return s.admin.Stats(pb.admin_pb2.StatsRequest(), timeout=30 * SLOW)


def verify(s):
    return s.admin.Verify(pb.admin_pb2.VerifyRequest(), timeout=120 * SLOW)


def health_ok(s):
    r = s.health.Check(pb.health_pb2.HealthCheckRequest(), timeout=10 * SLOW)
    return r.status == pb.health_pb2.HealthCheckResponse.SERVING


def list_all(s, page_size=1000):
    """Every DocumentInfo, following page tokens."""
    out, token = [], ""
    for _ in range(1000000):
        r = s.docs.List(pb.documents_pb2.ListRequest(page_size=page_size, page_token=token),
                        timeout=60 * SLOW)
        out.extend(r.documents)
        token = r.next_page_token
        if not token:
            return out
    raise AssertionError("List never returned an empty page token")


def chunk_problems(text, chunks, doc_id=None, with_text=False):
    """Why `chunks` (of a stored/returned text) do not cover `text` in order,
    or [] when they do: ordinals 0..n-1, contiguous-or-overlapping ranges
    starting at 0 and ending at len(bytes), on UTF-8 character boundaries,
    positive token counts, and chunk text equal to the byte slice."""
    b = text.encode("utf-8")
    probs = []
    if not b:
        return probs if not chunks else ["empty text has %d chunks" % len(chunks)]
    if not chunks:
        return ["no chunks for %d bytes" % len(b)]
    prev_end = 0
    for i, c in enumerate(chunks):
        if c.ordinal != i:
            probs.append("chunk %d has ordinal %d" % (i, c.ordinal))
        if doc_id is not None and c.doc_id != doc_id:
            probs.append("chunk %d doc_id %r" % (i, c.doc_id))
        if not (c.byte_start < c.byte_end <= len(b)):
            probs.append("chunk %d bad range [%d,%d) of %d" % (i, c.byte_start, c.byte_end, len(b)))
            continue
        if i == 0 and c.byte_start != 0:
            probs.append("first chunk starts at %d" % c.byte_start)
        if i > 0 and c.byte_start > prev_end:
            probs.append("gap before chunk %d: %d > %d" % (i, c.byte_start, prev_end))
        if i > 0 and c.byte_end <= prev_end:
            probs.append("chunk %d does not advance" % i)
        for off in (c.byte_start, c.byte_end):
            if off < len(b) and (b[off] & 0xC0) == 0x80:
                probs.append("chunk %d boundary %d inside a UTF-8 sequence" % (i, off))
        if c.tokens == 0:
            probs.append("chunk %d has 0 tokens" % i)
        if with_text and c.text.encode("utf-8") != b[c.byte_start:c.byte_end]:
            probs.append("chunk %d text differs from bytes [%d,%d)" % (i, c.byte_start, c.byte_end))
        prev_end = c.byte_end
    if chunks[-1].byte_end != len(b):
        probs.append("last chunk ends at %d, text is %d bytes" % (chunks[-1].byte_end, len(b)))
    return probs


_WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi "
          "omicron pi rho sigma tau upsilon phi chi psi omega retrieval context window "
          "document segment budget token question answer long short river mountain "
          "été naïve café 東京 数据 ключ данные").split()


def make_text(rng, words=200, paragraphs=3):
    """Deterministic prose-like text (ASCII plus some multi-byte words)."""
    paras = []
    per = max(1, words // paragraphs)
    for _ in range(paragraphs):
        sents, n = [], 0
        while n < per:
            k = rng.randint(4, 14)
            w = [rng.choice(_WORDS) for _ in range(k)]
            w[0] = w[0].capitalize()
            sents.append(" ".join(w) + rng.choice([".", ".", "?", "!"]))
            n += k
        paras.append(" ".join(sents))
    return "\n\n".join(paras)
