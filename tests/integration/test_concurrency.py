#!/usr/bin/python3
"""Concurrency: 20 threads of mixed unary calls plus 4 concurrent PutStreams,
first all over one channel, then spread over several channels, while a
server-streaming Health.Watch stays open; every call succeeds, nothing is
lost, and the open Watch blocks nothing."""

import random
import threading
import time

import grpc

from ctxd_harness import Daemon, Report, SLOW, list_all, make_text, pb, put_req, stats, verify

D = pb.documents_pb2
H = pb.health_pb2
A = pb.admin_pb2
T = 60 * SLOW


def unary_worker(stubs, tid, n, errors, done, texts):
    rng = random.Random(tid)
    s = stubs
    for i in range(n):
        id = "u%02d-%04d" % (tid, i)
        text = make_text(rng, words=rng.randint(10, 150), paragraphs=rng.randint(1, 3))
        try:
            p = s.docs.Put(put_req(id, text, {"t": str(tid)}), timeout=T)
            if p.id != id:
                errors.append((id, "Put returned id %r" % p.id))
            g = s.docs.Get(D.GetRequest(id=id, with_text=True, with_chunks=True), timeout=T)
            if g.document.text != text or len(g.chunks) != p.chunks:
                errors.append((id, "Get mismatch"))
            op = i % 5
            if op == 0:
                s.admin.Stats(A.StatsRequest(), timeout=T)
            elif op == 1:
                s.docs.List(D.ListRequest(page_size=50), timeout=T)
            elif op == 2:
                s.docs.Chunk(D.ChunkRequest(text=text), timeout=T)
            elif op == 3:
                if s.health.Check(H.HealthCheckRequest(), timeout=T).status != H.HealthCheckResponse.SERVING:
                    errors.append((id, "health not SERVING"))
            else:
                # Delete every fifth document again.
                dr = s.docs.Delete(D.DeleteRequest(id=id), timeout=T)
                if not dr.deleted:
                    errors.append((id, "Delete said not deleted"))
                continue
            texts[id] = text
        except grpc.RpcError as e:
            errors.append((id, "%s %s" % (e.code(), e.details())))
        except Exception as e:  # noqa: BLE001
            errors.append((id, repr(e)))
    done.append(tid)


def stream_worker(stubs, sid, n, errors, done, texts, prefix):
    rng = random.Random(1000 + sid)
    sent = {}

    def gen():
        for i in range(n):
            id = "%s%d-%05d" % (prefix, sid, i)
            t = make_text(rng, words=rng.randint(5, 60), paragraphs=1)
            sent[id] = t
            yield put_req(id, t)

    acked = []
    try:
        for ack in stubs.docs.PutStream(gen(), timeout=300 * SLOW):
            acked.extend(ack.ids)
            for e in ack.errors:
                errors.append((e.id, "rejected: " + e.reason))
    except grpc.RpcError as e:
        errors.append(("stream %d" % sid, "%s %s" % (e.code(), e.details())))
    if sorted(acked) != sorted(sent):
        errors.append(("stream %d" % sid, "acked %d of %d (dups %d)" % (
            len(set(acked)), len(sent), len(acked) - len(set(acked)))))
    texts.update(sent)
    done.append(sid)


def round_(r, d, label, stub_sets, n_unary=40, n_stream=1500):
    errors, done_u, done_s, texts = [], [], [], {}
    before = stats(stub_sets[0])
    # A Watch held open the whole time, on its own channel.
    wch = d.channel()
    wstub = pb.health_pb2_grpc.HealthStub(wch)
    watch = wstub.Watch(H.HealthCheckRequest(), timeout=600 * SLOW)
    first = next(watch)
    r.eq(first.status, H.HealthCheckResponse.SERVING, "%s: Watch open, SERVING" % label)
    threads = []
    for tid in range(20):
        st = stub_sets[tid % len(stub_sets)]
        threads.append(threading.Thread(target=unary_worker,
                                        args=(st, tid, n_unary, errors, done_u, texts)))
    prefix = "s-%s-" % label.replace(" ", "")
    for sid in range(4):
        st = stub_sets[(sid + 1) % len(stub_sets)]
        threads.append(threading.Thread(target=stream_worker,
                                        args=(st, sid, n_stream, errors, done_s, texts, prefix)))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    # While everything runs, a Check on the Watch's channel must be quick.
    lat = []
    while any(t.is_alive() for t in threads):
        c0 = time.monotonic()
        try:
            wstub.Check(H.HealthCheckRequest(), timeout=T)
            lat.append(time.monotonic() - c0)
        except grpc.RpcError as e:
            errors.append(("check during load", str(e.code())))
        time.sleep(0.05)
    for t in threads:
        t.join()
    el = time.monotonic() - t0
    print("    %s: %.1fs, %d unary threads done, %d streams done, max Check latency %.3fs" % (
        label, el, len(done_u), len(done_s), max(lat) if lat else -1))
    r.eq(errors[:5], [], "%s: every call succeeded" % label)
    r.eq(len(errors), 0, "%s: error count" % label)
    r.eq((len(done_u), len(done_s)), (20, 4), "%s: all 20 unary threads and 4 streams finished" % label)
    r.check(watch.is_active() if hasattr(watch, "is_active") else True,
            "%s: the Watch is still open after the load" % label)
    r.check(lat and max(lat) < 5 * SLOW, "%s: Health.Check answered promptly during the load" % label,
            max(lat) if lat else None)
    watch.cancel()
    st = stats(stub_sets[0])
    r.eq(st.documents - before.documents, len(texts), "%s: Stats counts every surviving document" % label)
    infos = {x.id for x in list_all(stub_sets[0], page_size=5000)}
    r.check(set(texts) <= infos, "%s: every surviving document listed" % label,
            sorted(set(texts) - infos)[:5])
    return texts


def main():
    r = Report("test_concurrency")
    with Daemon(r) as d:
        one = d.stubs()
        r.case("one channel", round_, r, d, "one channel", [one])
        many = [d.stubs() for _ in range(6)]
        # Different ids for the second round: clear the first round's unary docs.
        for x in list_all(one, page_size=5000):
            if x.id.startswith("u"):
                one.docs.Delete(D.DeleteRequest(id=x.id), timeout=T)
        r.case("six channels", round_, r, d, "six channels", many)
        v = verify(one)
        r.eq((v.ok, list(v.problems)[:3]), (True, []), "Verify ok after the load")
    r.finish()


if __name__ == "__main__":
    main()
