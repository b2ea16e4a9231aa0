#!/usr/bin/python3
"""PutStream: 10,000 documents in one stream (acks cover every id exactly
once; List and Stats show them all), a stream with bad documents mixed in
(each rejected alone with a reason naming the problem, the rest stored), and
the data intact after a clean restart (SIGTERM exit 0, restart, Verify ok)."""

import random

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
    r.finish()


if __name__ == "__main__":
    main()
