#!/usr/bin/python3
"""Crash safety: kill -9 the daemon in the middle of a PutStream, restart on
the same data dir, and check that every acknowledged document is there with
its chunks and its exact text, that no half-written document is visible
(every present document is complete), and that Verify is ok. Three rounds
with different kill points (fixed seed), each on top of the previous ones."""

import random
import threading
import time

import grpc

from ctxd_harness import (Daemon, Report, SLOW, chunk_problems, list_all, make_text, pb,
                          put_req, verify)

D = pb.documents_pb2
T = 30 * SLOW


def one_round(r, d, rng, rnd, sent, acked):
    s = d.stubs()
    kill_after_acks = rng.randint(2, 6)
    kill_delay = rng.uniform(0.0, 0.08)
    prefix = "crash%d-" % rnd
    stop = threading.Event()
    local_sent = {}
    grng = random.Random(rng.random())  # the sender thread's own generator

    def gen():
        i = 0
        while not stop.is_set() and i < 500000:
            id = "%s%06d" % (prefix, i)
            # Mostly small documents, some long multi-chunk ones.
            words = grng.choice([20, 40, 80, 2500]) if i % 10 == 0 else grng.randint(10, 120)
            t = make_text(grng, words=words, paragraphs=grng.randint(1, 4))
            local_sent[id] = t
            sent[id] = t
            i += 1
            yield put_req(id, t, {"round": str(rnd), "i": str(i)})

    got = []
    nacks = 0
    killer = None

    def kill_later():
        time.sleep(kill_delay)
        stop.set()
        d.kill9()

    try:
        for ack in s.docs.PutStream(gen(), timeout=300 * SLOW):
            nacks += 1
            for id in ack.ids:
                got.append(id)
            r_err = list(ack.errors)
            if r_err:
                r.check(False, "round %d: no document rejected" % rnd, r_err[:3])
            if nacks == kill_after_acks and killer is None:
                killer = threading.Thread(target=kill_later)
                killer.start()
    except grpc.RpcError as e:
        # Expected: the stream breaks when the daemon dies.
        print("    round %d: stream ended with %s after %d acks" % (rnd, e.code(), nacks))
    finally:
        stop.set()
    if killer is None:
        r.check(False, "round %d: stream lasted until the kill point" % rnd,
                "ended after %d acks (< %d)" % (nacks, kill_after_acks))
        d.kill9()
    else:
        killer.join()
    r.check(nacks >= kill_after_acks, "round %d: killed mid-stream after %d acks" % (rnd, nacks))
    r.eq(len(got), len(set(got)), "round %d: no id acked twice" % rnd)
    r.check(all(id in local_sent for id in got), "round %d: acks name only ids sent" % rnd)
    acked.update(got)
    print("    round %d: %d sent, %d acked, kill after ack %d + %.3fs" % (
        rnd, len(local_sent), len(got), kill_after_acks, kill_delay))

    d.start()
    s = d.stubs()
    infos = {x.id: x for x in list_all(s, page_size=5000)}
    missing = sorted(id for id in acked if id not in infos)
    r.eq(missing[:5], [], "round %d: every acked id (all rounds, %d) is listed" % (rnd, len(acked)))
    strangers = sorted(id for id in infos if id not in sent)
    r.eq(strangers[:5], [], "round %d: no id that was never sent" % rnd)
    unacked_present = [id for id in infos if id not in acked]
    print("    round %d: %d present but not acked (allowed, must be complete)" % (
        rnd, len(unacked_present)))
    # Every present document of this round and every acked one of earlier
    # rounds is complete: exact text, chunks covering it.
    check_ids = [id for id in infos if id.startswith(prefix)]
    check_ids += rng.sample(sorted(acked - set(check_ids)), min(200, len(acked - set(check_ids))))
    bad = []
    for id in check_ids:
        try:
            g = s.docs.Get(D.GetRequest(id=id, with_text=True, with_chunks=True), timeout=T)
        except grpc.RpcError as e:
            bad.append((id, "Get: %s %s" % (e.code(), e.details())))
            continue
        if g.document.text != sent[id]:
            bad.append((id, "text differs (%d vs %d bytes)" % (len(g.document.text), len(sent[id]))))
            continue
        p = chunk_problems(sent[id], g.chunks, doc_id=id, with_text=True)
        if p:
            bad.append((id, p[:2]))
        elif len(g.chunks) != infos[id].chunks:
            bad.append((id, "List says %d chunks, Get has %d" % (infos[id].chunks, len(g.chunks))))
    r.eq(bad[:5], [], "round %d: %d present documents complete (text + chunks)" % (rnd, len(check_ids)))
    v = verify(s)
    r.eq((v.ok, list(v.problems)[:3]), (True, []), "round %d: Verify ok after kill -9" % rnd)
    r.eq(v.documents_checked, len(infos), "round %d: Verify checked every document" % rnd)
    # The store still takes writes after recovery.
    p = s.docs.Put(put_req("after-crash-%d" % rnd, "still writable."), timeout=T)
    sent[p.id] = "still writable."
    acked.add(p.id)


def main():
    r = Report("test_crash")
    rng = random.Random(20240607)
    sent, acked = {}, set()
    with Daemon(r) as d:
        for rnd in range(3):
            r.case("kill -9 round %d" % rnd, one_round, r, d, rng, rnd, sent, acked)
            if not d.alive():
                d.start()
    r.finish()


if __name__ == "__main__":
    main()
