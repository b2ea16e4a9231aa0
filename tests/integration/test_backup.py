"""Backup, restore and compaction end to end: Admin.Backup while writers
run (every write acknowledged before the call is in the backup, the
writer's documents form a prefix), `ctxctl restore` into a new data dir and
a second daemon on it with the same documents, chunks, vectors and search
results (Flat and HNSW collections), a damaged backup refused naming the
file, a manifest of another schema version refused, targets outside
backup.root or not empty refused, and Admin.Compact after deleting most
documents: a smaller file, identical content and results, writes during
it all kept, the daemon serving after it."""

import json
import os
import random
import shutil
import subprocess
import tempfile
import threading
import time

import grpc

from ctxd_harness import (Daemon, Report, SLOW, health_ok, list_all, make_text,
                          pb, stats, verify)

D = pb.documents_pb2
A = pb.admin_pb2
R = pb.retrieval_pb2
T = 60 * SLOW
CTXCTL = os.environ.get("CTXCTL_BIN", "")
r = Report("test_backup")
rng = random.Random(7)


def ctl(*args, addr=None):
    cmd = [CTXCTL] + (["--addr", addr] if addr else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, timeout=300 * SLOW)
    err = p.stderr.decode("utf-8", "replace")
    if "Sanitizer" in err or "runtime error:" in err:
        r.check(False, "ctxctl %s: no sanitizer report" % args[0], err[-3000:])
    return p.returncode, p.stdout.decode("utf-8", "replace"), err


def put_many(s, coll, docs):
    reqs = [D.PutRequest(document=D.Document(id=i, text=t, collection=coll))
            for i, t in docs]
    errors = []
    for ack in s.docs.PutStream(iter(reqs), timeout=T):
        errors.extend(ack.errors)
    r.eq(len(errors), 0, "PutStream into %s without errors" % coll)


def snapshot(s, colls):
    """Everything a restore must reproduce: per collection the documents
    with their texts and chunk counts, the collection counters, and the
    hits (ids, ordinals, scores) of a few queries in every mode."""
    out = {}
    for c in colls:
        docs = {}
        token = ""
        while True:
            lr = s.docs.List(D.ListRequest(page_size=1000, page_token=token,
                                           collection=c), timeout=T)
            for d in lr.documents:
                g = s.docs.Get(D.GetRequest(id=d.id, collection=c, with_text=True),
                               timeout=T)
                docs[d.id] = (g.document.text, d.chunks)
            token = lr.next_page_token
            if not token:
                break
        hits = []
        for q in ("river stone", "the quick morning", "data backup restore"):
            for mode in ("vector", "lexical", "hybrid"):
                sr = s.retrieval.Search(R.SearchRequest(text=q, k=10, mode=mode,
                                                        collection=c), timeout=T)
                hits.append([(h.chunk.doc_id, h.chunk.ordinal, round(h.score, 5))
                             for h in sr.hits])
        out[c] = (docs, hits)
    info = {}
    for ci in s.admin.ListCollections(A.ListCollectionsRequest(), timeout=T).collections:
        info[ci.config.name] = (ci.documents, ci.chunks, ci.vectors, ci.indexed)
    return out, info


def texts(n, prefix):
    return [("%s-%04d" % (prefix, i), make_text(rng, words=rng.randint(20, 120)))
            for i in range(n)]


class Writer(threading.Thread):
    """Puts live-0000, live-0001, ... one at a time until stopped; `acked`
    counts the acknowledged ones."""

    def __init__(self, s):
        super().__init__(daemon=True)
        self.s, self.acked, self.stop, self.error = s, 0, False, None

    def run(self):
        i = 0
        while not self.stop:
            try:
                self.s.docs.Put(D.PutRequest(document=D.Document(
                    id="live-%04d" % i, text="live document %d river stone %d" % (i, i * 7),
                    collection="live")), timeout=T)
            except grpc.RpcError as e:
                self.error = e
                return
            i += 1
            self.acked = i


def restore(bdir, ddir):
    return ctl("restore", bdir, ddir)


def case_backup_under_writes(d, s, work):
    w = Writer(s)
    w.start()
    while w.acked < 20 and w.is_alive():
        time.sleep(0.01)
    before = w.acked
    br = s.admin.Backup(A.BackupRequest(target="under-writes"), timeout=T)
    w.stop = True
    w.join(30)
    r.check(w.error is None, "the writer saw no error during the backup", str(w.error))
    root = os.path.join(work, "backups")
    r.eq(br.path, os.path.join(os.path.realpath(root), "under-writes"),
         "a relative target goes under backup.root")
    man = json.load(open(os.path.join(br.path, "manifest.json")))
    r.eq(man["schema_version"], stats(s).schema_version, "manifest records the schema version")
    r.eq(man["store"]["documents"], br.documents, "manifest counters = response")
    r.check(all(len(f["sha256"]) == 64 for f in man["files"]), "every file has a SHA-256")
    r.check(not [n for n in os.listdir(root) if ".partial" in n], "no partial directory left")
    ddir = os.path.join(work, "restored-live")
    rc, out, err = restore(br.path, ddir)
    r.check(rc == 0, "ctxctl restore exits 0", err)
    with Daemon(r, data_dir=ddir, name="restored-live") as d2:
        s2 = d2.stubs()
        ids = sorted(x.id for x in list_all_coll(s2, "live"))
        n = len(ids)
        r.check(n >= before, "every put acknowledged before Backup is in it",
                "%d < %d" % (n, before))
        r.eq(ids, ["live-%04d" % i for i in range(n)], "the writer's documents form a prefix")
        r.eq(stats(s2).documents, br.documents, "restored documents = backup's")
        v = verify(s2)
        r.check(v.ok, "the restored store verifies", str(list(v.problems)[:3]))
        info = {c.config.name: c for c in
                s2.admin.ListCollections(A.ListCollectionsRequest(), timeout=T).collections}
        r.eq(info["live"].vectors, info["live"].chunks, "restored: a vector per chunk")
        r.eq(info["live"].indexed, info["live"].vectors, "restored: every vector indexed")


def list_all_coll(s, coll):
    out, token = [], ""
    while True:
        lr = s.docs.List(D.ListRequest(page_size=1000, page_token=token, collection=coll),
                         timeout=T)
        out.extend(lr.documents)
        token = lr.next_page_token
        if not token:
            return out


def case_restore_identical(d, s, work, colls):
    # Deletes since the last index save: the backup's change log carries them.
    for i in range(0, 40, 4):
        s.docs.Delete(D.DeleteRequest(id="h-%04d" % i, collection="h"), timeout=T)
    want = snapshot(s, colls)
    rc, out, err = ctl("backup", "still", "--json", addr=d.addr)
    r.check(rc == 0, "ctxctl backup exits 0", err)
    br = json.loads(out)
    r.eq(br["documents"], stats(s).documents, "backup counts every document")
    ddir = os.path.join(work, "restored")
    rc, out, err = restore(br["path"], ddir)
    r.check(rc == 0, "restore exits 0", err)
    r.check("restored" in out, "restore reports what it did", out)
    with Daemon(r, data_dir=ddir, name="restored") as d2:
        s2 = d2.stubs()
        got = snapshot(s2, colls)
        for c in colls:
            r.eq(len(got[0][c][0]), len(want[0][c][0]), "collection %s: same document count" % c)
            r.check(got[0][c][0] == want[0][c][0], "collection %s: same documents, texts, chunks" % c)
            r.eq(got[0][c][1], want[0][c][1], "collection %s: same search results" % c)
        r.eq(got[1], want[1], "same documents, chunks, vectors, indexed per collection")
        r.check(verify(s2).ok, "restored store verifies")
    return br["path"]


def case_refusals(d, s, work, good):
    # Damaged copies of a good backup: each refused, naming the file, nothing written.
    for victim in ("data.mdb", "index/2.vindex"):
        bad = os.path.join(work, "bad-" + victim.replace("/", "-"))
        shutil.copytree(good, bad)
        path = os.path.join(bad, victim)
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x5A]))
        target = os.path.join(work, "never")
        rc, out, err = restore(bad, target)
        r.eq(rc, 1, "restore of a damaged %s exits 1" % victim)
        r.check(victim in err, "the refusal names %s" % victim, err)
        r.check(not os.path.exists(target), "nothing restored from a damaged backup")
    # A missing file.
    bad = os.path.join(work, "bad-missing")
    shutil.copytree(good, bad)
    os.unlink(os.path.join(bad, "index", "coll.manifest"))
    rc, out, err = restore(bad, os.path.join(work, "never"))
    r.eq(rc, 1, "restore with a missing file exits 1")
    r.check("index/coll.manifest" in err and "missing" in err, "names the missing file", err)
    # Another schema version.
    bad = os.path.join(work, "bad-schema")
    shutil.copytree(good, bad)
    mp = os.path.join(bad, "manifest.json")
    m = json.load(open(mp))
    m["schema_version"] = 99
    json.dump(m, open(mp, "w"))
    rc, out, err = restore(bad, os.path.join(work, "never"))
    r.eq(rc, 1, "restore of schema 99 exits 1")
    r.check("schema version 99" in err, "names the unsupported schema version", err)
    # A non-empty data dir.
    busy = os.path.join(work, "busy")
    os.makedirs(busy)
    open(os.path.join(busy, "x"), "w").close()
    rc, out, err = restore(good, busy)
    r.eq(rc, 1, "restore into a non-empty dir exits 1")
    r.check("not empty" in err, "says the dir is not empty", err)
    rc, out, err = ctl("restore", "--check", good)
    r.check(rc == 0, "restore --check of a good backup exits 0", err)
    # Targets the daemon refuses.
    root = os.path.realpath(os.path.join(work, "backups"))
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: s.admin.Backup(A.BackupRequest(target=os.path.join(work, "outside")),
                                    timeout=T),
             "a target outside backup.root is refused", contains="backup.root")
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: s.admin.Backup(A.BackupRequest(target=root + "/../escape"), timeout=T),
             "a target with .. is refused")
    os.symlink(work, os.path.join(root, "link-out"))
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: s.admin.Backup(A.BackupRequest(target="link-out/x"), timeout=T),
             "a symbolic link out of backup.root is refused")
    r.check(not os.path.exists(os.path.join(work, "x")), "nothing written through the link")
    r.raises(grpc.StatusCode.ALREADY_EXISTS,
             lambda: s.admin.Backup(A.BackupRequest(target="still"), timeout=T),
             "an existing non-empty target is refused", contains="not empty")
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: s.admin.Backup(A.BackupRequest(target=root), timeout=T),
             "backup.root itself is refused")
    os.makedirs(os.path.join(root, "empty"))
    br = s.admin.Backup(A.BackupRequest(target=os.path.join(root, "empty")), timeout=T)
    r.check(os.path.exists(os.path.join(br.path, "manifest.json")),
            "an existing empty target is used")


def case_compact(d, s, colls):
    N = 1500
    put_many(s, "c", texts(N, "c"))
    for i in range(N):
        if i % 10:
            s.docs.Delete(D.DeleteRequest(id="c-%04d" % i, collection="c"), timeout=T)
    before = stats(s).store_bytes
    want = snapshot(s, colls + ["c"])
    w = Writer(s)
    w.start()
    cr = s.admin.Compact(A.CompactRequest(), timeout=T)
    acked = w.acked
    w.stop = True
    w.join(30)
    r.check(w.error is None, "writes during compaction succeed", str(w.error))
    r.check(cr.bytes_after < cr.bytes_before * 0.8,
            "compaction shrinks the file (%d -> %d)" % (cr.bytes_before, cr.bytes_after))
    r.check(cr.bytes_before >= before, "bytes_before is the file's size before")
    r.check(health_ok(s), "the daemon is serving after compaction")
    live = set(x.id for x in list_all_coll(s, "live"))
    r.check(all("live-%04d" % i in live for i in range(acked)),
            "every write acknowledged during compaction is kept")
    for i in range(w.acked):
        s.docs.Delete(D.DeleteRequest(id="live-%04d" % i, collection="live"), timeout=T)
    # Back to the documents of before (the writer's puts are replaced by
    # the same ids it had put before, or removed), then compare.
    got = snapshot(s, colls + ["c"])
    for c in colls + ["c"]:
        if c == "live":
            continue
        r.check(got[0][c] == want[0][c], "collection %s: same content and results after compaction" % c)
    rc, out, err = ctl("compact", addr=d.addr)
    r.check(rc == 0, "ctxctl compact exits 0", err)
    r.check("->" in out, "ctxctl compact prints before -> after", out)
    s.docs.Put(D.PutRequest(document=D.Document(id="after", text="after compaction",
                                                collection="c")), timeout=T)
    g = s.docs.Get(D.GetRequest(id="after", collection="c", with_text=True), timeout=T)
    r.eq(g.document.text, "after compaction", "writes work after compaction")
    r.check(verify(s).ok, "the store verifies after compaction")


def main():
    work = tempfile.mkdtemp(prefix="ctxd-backup-")
    root = os.path.join(work, "backups")
    try:
        with Daemon(r, args=["--backup.root", root]) as d:
            s = d.stubs()
            s.admin.CreateCollection(A.CreateCollectionRequest(config=A.CollectionConfig(
                name="h", index_spec="HNSW16")), timeout=T)
            put_many(s, "", texts(300, "f"))
            put_many(s, "h", texts(300, "h"))
            colls = ["default", "h"]
            r.case("backup while writes run, restore, second daemon", case_backup_under_writes,
                   d, s, work)
            colls.append("live")
            good = r.case("restore matches the original", case_restore_identical, d, s,
                          work, colls)
            if good:
                r.case("damaged backups and bad targets are refused", case_refusals, d, s,
                       work, good)
            r.case("compact after deleting most documents", case_compact, d, s, colls)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    r.finish()


main()
