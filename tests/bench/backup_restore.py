"""backup_restore.py - Admin.Backup, `ctxctl restore` and Admin.Compact on a
store of N documents, next to a plain file copy of the same data directory
measured in the same run.

usage:
  PYTHONPATH=<build>/python /usr/bin/python3 tests/bench/backup_restore.py \
      [--build BUILD] [--docs 10000] [--words 300] [--runs 3]

Input: synthetic prose (words drawn from a fixed 5,000-word vocabulary,
seeded), --words words per document, stored through one PutStream into the
`default` collection (hash embedder, Flat index) of a fresh daemon.

Figures (median of --runs, min..max):
  * backup: Admin.Backup wall time seen by the client, and the backup's
    size (data.mdb compacted + index files + manifest);
  * baseline: copying data.mdb and index/ file by file (Python shutil,
    read + write, fsync'd), with the daemon idle: what a cold copy of the
    same bytes costs without snapshot, compaction or checksums;
  * restore: `ctxctl restore` (checks every SHA-256, then copies and
    checks again while copying) into a fresh directory;
  * compact: after deleting 90% of the documents, Admin.Compact's time and
    data.mdb before and after.
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib


def make_docs(pb, n, words, seed=1):
    rng = random.Random(seed)
    vocab = ["w%04d%s" % (i, "abcdefgh"[i % 8]) for i in range(5000)]
    reqs = []
    for i in range(n):
        text = " ".join(rng.choice(vocab) for _ in range(words))
        reqs.append(pb.PutRequest(document=pb.Document(id="d%06d" % i, text=text)))
    return reqs


def du(path):
    total = 0
    for dp, _, fs in os.walk(path):
        for f in fs:
            total += os.path.getsize(os.path.join(dp, f))
    return total


def plain_copy(src, dst):
    os.makedirs(os.path.join(dst, "index"))
    for rel in ["data.mdb"] + ["index/" + f for f in os.listdir(os.path.join(src, "index"))]:
        with open(os.path.join(src, rel), "rb") as fi, open(os.path.join(dst, rel), "wb") as fo:
            shutil.copyfileobj(fi, fo, 1 << 20)
            fo.flush()
            os.fsync(fo.fileno())


def fmt(xs):
    return "%.2f s (%.2f..%.2f)" % (statistics.median(xs), min(xs), max(xs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=benchlib.default_build())
    ap.add_argument("--docs", type=int, default=10000)
    ap.add_argument("--words", type=int, default=300)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    s = benchlib.load_stubs(a.build)
    D, A = s["documents_pb2"], s["admin_pb2"]
    ctxctl = os.path.join(a.build, "ctxctl")
    work = tempfile.mkdtemp(prefix="ctxd-bench-backup-")
    root = os.path.join(work, "backups")
    srv = benchlib.Ctxd(a.build, extra=["--backup.root", root])
    try:
        ch = s["grpc"].insecure_channel(srv.addr)
        docs = s["documents_pb2_grpc"].DocumentsStub(ch)
        admin = s["admin_pb2_grpc"].AdminStub(ch)
        reqs = make_docs(D, a.docs, a.words)
        t0 = time.monotonic()
        for _ in docs.PutStream(iter(reqs), timeout=3600):
            pass
        ingest = time.monotonic() - t0
        st = admin.Stats(A.StatsRequest(), timeout=60)
        assert st.documents == a.docs, st.documents
        bk, base, rs = [], [], []
        size = 0
        for i in range(a.runs):
            t0 = time.monotonic()
            br = admin.Backup(A.BackupRequest(target="b%d" % i), timeout=3600)
            bk.append(time.monotonic() - t0)
            size = du(br.path)
            dst = os.path.join(work, "plain%d" % i)
            t0 = time.monotonic()
            plain_copy(srv.data, dst)
            base.append(time.monotonic() - t0)
            rdir = os.path.join(work, "restored%d" % i)
            t0 = time.monotonic()
            p = subprocess.run([ctxctl, "restore", br.path, rdir], capture_output=True)
            rs.append(time.monotonic() - t0)
            assert p.returncode == 0, p.stderr
            shutil.rmtree(dst)
            shutil.rmtree(rdir)
        live = os.path.getsize(os.path.join(srv.data, "data.mdb"))
        for i in range(a.docs):
            if i % 10:
                docs.Delete(D.DeleteRequest(id="d%06d" % i), timeout=60)
        t0 = time.monotonic()
        cr = admin.Compact(A.CompactRequest(), timeout=3600)
        ct = time.monotonic() - t0
        mib = 1 << 20
        print("store: %d documents x %d words, %d chunks, data.mdb %.1f MiB "
              "(ingest %.1f s)" % (a.docs, a.words, st.chunks, live / mib, ingest))
        print("backup (Admin.Backup)       %s  size %.1f MiB" % (fmt(bk), size / mib))
        print("baseline (plain file copy)  %s  size %.1f MiB" %
              (fmt(base), (live + du(os.path.join(srv.data, "index"))) / mib))
        print("restore (ctxctl restore)    %s" % fmt(rs))
        print("compact after deleting 90%%: %.2f s, data.mdb %.1f MiB -> %.1f MiB" %
              (ct, cr.bytes_before / mib, cr.bytes_after / mib))
        ch.close()
    finally:
        rc = srv.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
