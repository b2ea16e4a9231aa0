"""ctxctl_tls.py - what TLS and a bearer token cost ctxctl, next to cleartext
h2c to the same daemon build in the same run.

usage:
  PYTHONPATH=<build>/python /usr/bin/python3 tests/bench/ctxctl_tls.py \
      [--build BUILD] [--runs 40] [--mib 16] [--docs 2000]

Two ctxd processes on loopback: one cleartext, one with server.tls_cert and
auth.tokens_file (certificates made with the openssl CLI, P-256). Measured,
runs alternating between the two:
  * `ctxctl status`: a whole process (connect, handshake, one Health call),
    median wall time of --runs runs;
  * `ctxctl get ID --text` of one --mib MiB document: MiB/s of the answer;
  * `ctxctl put DIR` of --docs files of 4 KiB through PutStream: documents/s.
The TLS daemon is called with a write/read token (--token-file), so the TLS
figures include the server's token check.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib

sys.path.insert(0, os.path.join(benchlib.REPO, "tests", "integration"))
from tls_certs import CertDir  # noqa: E402


def timed(cmd):
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True)
    dt = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(cmd), p.returncode,
                                               p.stderr.decode()[-500:]))
    return dt, p.stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=benchlib.default_build())
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--mib", type=int, default=16)
    ap.add_argument("--docs", type=int, default=2000)
    a = ap.parse_args()
    ctxctl = os.path.join(a.build, "ctxctl")
    certs = CertDir("ctxd-bench-tls-")
    certs.ca("ca")
    certs.cert("srv", "ca", "bench", "subjectAltName=IP:127.0.0.1")
    with open(certs.path("tokens"), "w") as f:
        f.write("bench-token-0123456789 write bench\n")
    os.chmod(certs.path("tokens"), 0o600)
    with open(certs.path("token"), "w") as f:
        f.write("bench-token-0123456789\n")
    work = tempfile.mkdtemp(prefix="ctxd-bench-tls-work-")
    big = os.path.join(work, "big.txt")
    with open(big, "w") as f:
        f.write(("lorem ipsum dolor sit amet " * 40 + "\n") * (a.mib * 1024 * 1024 // 1081 + 1))
    docs = os.path.join(work, "docs")
    os.makedirs(docs)
    for i in range(a.docs):
        with open(os.path.join(docs, "d%05d.txt" % i), "w") as f:
            f.write(("word%d " % i) * (4096 // (6 + len(str(i)))))

    plain = benchlib.Ctxd(a.build, extra=["--model.builtin=none"])
    tls = benchlib.Ctxd(a.build, extra=[
        "--model.builtin=none", "--server.tls_cert", certs.path("srv.pem"),
        "--server.tls_key", certs.path("srv.key"),
        "--auth.tokens_file", certs.path("tokens")])
    try:
        modes = {
            "h2c": [ctxctl, "--addr", plain.addr],
            "TLS + token": [ctxctl, "--addr", tls.addr, "--ca", certs.path("ca.pem"),
                            "--token-file", certs.path("token")],
        }
        for base in modes.values():
            timed(base + ["put", "--id", "big", "-q", big])
        status = {m: [] for m in modes}
        get = {m: [] for m in modes}
        put = {m: [] for m in modes}
        for _ in range(a.runs):
            for m, base in modes.items():
                status[m].append(timed(base + ["status"])[0])
        for _ in range(5):
            for m, base in modes.items():
                dt, out = timed(base + ["get", "big", "--text"])
                get[m].append(len(out) / dt / (1 << 20))
        for r in range(3):
            for m, base in modes.items():
                dt, _ = timed(base + ["put", "-q", "--prefix", "r%d/" % r, docs])
                put[m].append(a.docs / dt)
        size = os.path.getsize(big) / (1 << 20)
        print("ctxctl over h2c and over TLS 1.3 (P-256, token checked), loopback, "
              "same daemon build, runs alternating")
        print("%-14s %18s %22s %26s" % ("", "status (ms, median)",
                                       "get %.1f MiB (MiB/s)" % size,
                                       "put %d x 4 KiB (docs/s)" % a.docs))
        for m in modes:
            print("%-14s %18.1f %22.0f %26.0f" % (
                m, statistics.median(status[m]) * 1000,
                statistics.median(get[m]), statistics.median(put[m])))
        print("TLS/h2c: status %.2fx the time, get %.2fx the rate, put %.2fx the rate" % (
            statistics.median(status["TLS + token"]) / statistics.median(status["h2c"]),
            statistics.median(get["TLS + token"]) / statistics.median(get["h2c"]),
            statistics.median(put["TLS + token"]) / statistics.median(put["h2c"])))
    finally:
        plain.stop()
        tls.stop()
        subprocess.run(["rm", "-rf", work, certs.dir])


if __name__ == "__main__":
    main()
