#!/usr/bin/python3
"""PutStream: 10,000 documents in one stream (acks cover every id exactly
once; List and Stats show them all), a stream with bad documents mixed in
(each rejected alone with a reason naming the problem, the rest stored), and
the data intact after a clean restart (SIGTERM exit 0, restart, Verify ok)."""

import queue
import random
import threading

import grpc

from ctxd_harness import (Daemon, Report, SLOW, list_all, make_text, pb, put_req, stats,
                          verify)

D = pb.documents_pb2
T = 30 * SLOW


def run_stream(s, reqs, timeout=600):
    """Send `reqs` through one PutStream; return (acked ids list, errors list
    of (id, reason), number of acks)."""
    ids, errors, n = [], [], 0
    for ack in s.docs.PutStream(iter(reqs), timeout=timeout * SLOW):
        n += 1
        ids.extend(ack.ids)
        errors.extend((e.id, e.reason) for e in ack.errors)
    return ids, errors, n


def case_ten_thousand(r, s, rng, sent):
    N = 10000
    reqs = []
    for i in range(N):
        id = "ps-%05d" % i
        t = make_text(rng, words=rng.randint(8, 80), paragraphs=rng.randint(1, 2))
        sent[id] = t
        reqs.append(put_req(id, t, {"n": str(i)}))
    before = stats(s)
    ids, errors, nacks = run_stream(s, reqs)
    r.eq(errors, [], "10,000 good documents: no errors")
    r.eq(len(ids), N, "acks name 10,000 ids")
    r.eq(len(set(ids)), N, "no id acked twice")
    r.eq(set(ids), {"ps-%05d" % i for i in range(N)}, "acks cover every id sent")
    r.check(nacks >= 1, "at least one ack", nacks)
    print("    (%d acks for %d documents)" % (nacks, N))
    st = stats(s)
    r.eq(st.documents - before.documents, N, "Stats.documents +10,000")
    listed = [d.id for d in list_all(s, page_size=997)]
    r.eq(len(listed), len(set(listed)), "List: no duplicates")
    r.check({"ps-%05d" % i for i in range(N)} <= set(listed), "List shows all 10,000")
    r.eq(st.bytes - before.bytes, sum(len(t.encode()) for t in sent.values()),
         "Stats.bytes + all text bytes")
    sample = rng.sample(sorted(sent), 50)
    bad = []
    for id in sample:
        g = s.docs.Get(D.GetRequest(id=id, with_text=True), timeout=T)
        if g.document.text != sent[id]:
            bad.append(id)
    r.eq(bad, [], "50 sampled documents read back equal")
    # Resending the same ids is a replacement, still acked once each.
    again = [put_req("ps-%05d" % i, "replaced %d." % i) for i in range(100)]
    ids2, errs2, _ = run_stream(s, again)
    r.eq((sorted(ids2), errs2), (sorted("ps-%05d" % i for i in range(100)), []),
         "re-sent ids acked once each")
    for i in range(100):
        sent["ps-%05d" % i] = "replaced %d." % i
    r.eq(stats(s).documents - before.documents, N, "replacing via PutStream keeps the count")


def case_mixed_bad(r, s, rng, sent):
    before = stats(s)
    reqs, good, bad = [], [], {}
    for i in range(300):
        id = "mix-%03d" % i
        kind = i % 50
        if kind == 7:
            reqs.append(put_req("x" * 1025, "id too long"))
            bad["x" * 1025] = "1024"
        elif kind == 19:
            reqs.append(D.PutRequest())  # no document at all
            bad[""] = "document"
        elif kind == 33:
            reqs.append(put_req(id, "bad options", max_tokens=8, overlap_tokens=8))
            bad[id] = "overlap"
        else:
            t = make_text(rng, words=rng.randint(5, 50), paragraphs=1)
            reqs.append(put_req(id, t))
            good.append(id)
            sent[id] = t
    ids, errors, _ = run_stream(s, reqs)
    r.eq(sorted(ids), sorted(good), "every good document in the mixed stream acked")
    r.eq(len(errors), 18, "each bad document rejected once (18 of 300)")
    err_ids = {e[0] for e in errors}
    r.check("x" * 1025 in err_ids, "error names the too-long id")
    r.check(any(e[0].startswith("mix-") and e[0][4:].isdigit() and int(e[0][4:]) % 50 == 33
                for e in errors), "error names the document with bad options")
    too_long = [reason for id, reason in errors if id == "x" * 1025]
    r.check(too_long and all("1024" in x or "long" in x.lower() for x in too_long),
            "reason for the long id names the limit", too_long[:1])
    nodoc = [reason for id, reason in errors if id == ""]
    r.check(nodoc and all("document" in x.lower() or "missing" in x.lower() for x in nodoc),
            "reason for the missing document says so", nodoc[:1])
    opt = [reason for id, reason in errors if id.startswith("mix-")]
    r.check(opt and all("overlap" in x.lower() for x in opt),
            "reason for bad chunk options names overlap", opt[:1])
    st = stats(s)
    r.eq(st.documents - before.documents, len(good), "only the good documents were stored")
    for id in ("mix-033", "mix-083"):
        r.raises(grpc.StatusCode.NOT_FOUND,
                 lambda id=id: s.docs.Get(D.GetRequest(id=id), timeout=T),
                 "rejected %s not stored" % id)
    g = s.docs.Get(D.GetRequest(id="mix-034", with_text=True), timeout=T)
    r.eq(g.document.text, sent["mix-034"], "neighbour of a rejected document stored intact")


def case_empty_stream(r, s, rng, sent):
    ids, errors, n = run_stream(s, [])
    r.eq((ids, errors), ([], []), "an empty PutStream acks nothing and ends OK")


class LiveStream:
    """A PutStream driven one request at a time, with acks read by a thread,
    so a test can wait for an ack before it sends more (or half-closes)."""

    def __init__(self, stub, timeout=120):
        self.reqs = queue.Queue()
        self.acks = queue.Queue()
        self.error = None
        it = iter(self.reqs.get, None)
        self.call = stub.PutStream(it, timeout=timeout * SLOW)
        self.th = threading.Thread(target=self._read, daemon=True)
        self.th.start()

    def _read(self):
        try:
            for ack in self.call:
                self.acks.put(ack)
        except grpc.RpcError as e:
            self.error = e
        self.acks.put(None)

    def send(self, req):
        self.reqs.put(req)

    def ack(self, wait=10.0):
        """The next ack, or None if none came within `wait` seconds."""
        try:
            return self.acks.get(timeout=wait * SLOW)
        except queue.Empty:
            return None

    def close(self):
        """Half-close; return the remaining acks."""
        self.reqs.put(None)
        rest = []
        while True:
            a = self.acks.get(timeout=60 * SLOW)
            if a is None:
                return rest
            rest.append(a)


def case_memory_bounded(r, d):
    """putstream.batch_bytes bounds what a batch holds in memory, not just its
    text: metadata and chunk lists count too, and so do rejected documents,
    so a stream can't make the server hold more than about batch_bytes
    (batch_ms is 60 s here, so only the byte limit can cause these acks)."""
    s = d.stubs()
    # Small text, 40 KiB of metadata: each document alone passes 32 KiB.
    ls = LiveStream(s.docs)
    for i in range(3):
        ls.send(put_req("meta-heavy-%d" % i, "tiny", {"m": "x" * 40000}))
        a = ls.ack()
        r.check(a is not None and list(a.ids) == ["meta-heavy-%d" % i],
                "metadata-heavy document %d acked without waiting for the timer" % i,
                a)
        if a is None:
            break
    ls.close()
    # 8 KiB of text cut into 1-token chunks: the chunk list is far larger
    # than the text.
    ls = LiveStream(s.docs)
    t = "a. " * 2700
    for i in range(2):
        ls.send(put_req("chunk-heavy-%d" % i, t, max_tokens=1))
        a = ls.ack()
        r.check(a is not None and list(a.ids) == ["chunk-heavy-%d" % i],
                "chunk-heavy document %d acked at once" % i, a)
        if a is None:
            break
    ls.close()
    # Rejected documents: errors are acked in bounded groups too (here
    # batch_docs = 100), and a huge rejected id is echoed shortened.
    ls = LiveStream(s.docs)
    for i in range(100):
        ls.send(put_req("bad-%03d" % i, "bad options", max_tokens=8, overlap_tokens=8))
    a = ls.ack()
    r.check(a is not None and len(a.errors) == 100 and not a.ids,
            "100 rejected documents acked without waiting for the timer",
            a and (len(a.ids), len(a.errors)))
    huge = "é" * 100000 + "-end"
    ls.send(put_req(huge, "id far too long"))
    ls.send(put_req("after-huge", "stored after the huge id"))
    rest = ls.close()
    errs = [e for a in rest for e in a.errors]
    ids = [i for a in rest for i in a.ids]
    r.eq(ids, ["after-huge"], "the document after a huge bad id is stored")
    r.eq(len(errs), 1, "the huge id rejected once")
    if errs:
        e = errs[0]
        r.check(len(e.id.encode()) <= 1024 + 3 and e.id.endswith("...") and
                huge.startswith(e.id[:-3]),
                "a huge bad id is echoed as its first 1024 bytes + '...'",
                (len(e.id.encode()), e.id[-8:]))
        r.check("200004" in e.reason and "1024" in e.reason,
                "its reason names the length and the limit", e.reason)
    r.check(ls.error is None, "the stream ended OK", ls.error)


def case_huge_id_default_client(r, d):
    """A client with grpcio's default 4 MiB receive limit sends a 5 MB id:
    the PutError must still fit its ack, so the stream survives."""
    ch = grpc.insecure_channel(d.addr, options=[("grpc.max_send_message_length", 64 << 20)])
    try:
        stub = pb.documents_pb2_grpc.DocumentsStub(ch)
        reqs = [put_req("x" * (5 << 20), "t"), put_req("fine-after-5mb", "t")]
        ids, errors, _ = run_stream(type("S", (), {"docs": stub}), reqs)
        r.eq(ids, ["fine-after-5mb"], "the stream goes on after a 5 MB bad id")
        r.eq(len(errors), 1, "the 5 MB id is one PutError")
    except grpc.RpcError as e:
        r.check(False, "a 5 MB bad id does not break a default client's stream",
                "%s %s" % (e.code(), e.details()[:200]))
    finally:
        ch.close()


def check_all(r, s, sent, what):
    infos = {d.id: d for d in list_all(s, page_size=5000)}
    missing = [id for id in sent if id not in infos]
    r.eq(missing[:5], [], "%s: every acked document listed" % what)
    bad = []
    ids = sorted(sent)
    for id in ids[::37] + ids[-5:]:
        g = s.docs.Get(D.GetRequest(id=id, with_text=True, with_chunks=True), timeout=T)
        if g.document.text != sent[id] or len(g.chunks) != infos[id].chunks:
            bad.append(id)
    r.eq(bad, [], "%s: sampled documents equal with all chunks" % what)
    v = verify(s)
    r.eq((v.ok, list(v.problems)[:3]), (True, []), "%s: Verify ok" % what)


def main():
    r = Report("test_putstream")
    rng = random.Random(42)
    sent = {}
    with Daemon(r) as d:
        s = d.stubs()
        r.case("10,000-document stream", case_ten_thousand, r, s, rng, sent)
        r.case("bad documents mixed in", case_mixed_bad, r, s, rng, sent)
        r.case("empty stream", case_empty_stream, r, s, rng, sent)
        before = stats(s)
        r.case("all there before restart", check_all, r, s, sent, "before restart")
        rc = d.stop()
        r.eq(rc, 0, "SIGTERM: exit status 0")
        d.start()
        s = d.stubs()
        after = stats(s)
        r.eq((after.documents, after.chunks, after.bytes, after.tokens),
             (before.documents, before.chunks, before.bytes, before.tokens),
             "Stats identical after a clean restart")
        r.case("all there after restart", check_all, r, s, sent, "after restart")
    with Daemon(r, args=["--putstream.batch_bytes", "32K", "--putstream.batch_ms", "60000",
                         "--putstream.batch_docs", "100"], name="ctxd-small-batch") as d:
        r.case("batch memory bounded", case_memory_bounded, r, d)
        r.case("huge bad id, default client", case_huge_id_default_client, r, d)
        v = verify(d.stubs())
        r.eq((v.ok, list(v.problems)[:3]), (True, []), "small batches: Verify ok")
    r.finish()


if __name__ == "__main__":
    main()
