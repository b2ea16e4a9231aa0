#!/usr/bin/python3
"""soak_sample.py - the soak's probe and judge (tests/bench/load/soak.sh).

  soak_sample.py sample PID METRICS_ADDR OUT.tsv STATEFILE
      every second until PID exits or STATEFILE says "done": one TSV row of
      t (s since start), phase (the first word of STATEFILE: idle-before,
      load, idle-after), rss_kib and fds (from /proc/PID), and from the
      metrics endpoint process_resident_memory_bytes (KiB),
      process_open_fds, ctxd_grpc_connections, ctxd_grpc_streams_in_flight.
  soak_sample.py judge OUT.tsv OUT.png [RSS_TOL_PCT] [FD_TOL] [REF_MIN]
      plots RSS and fds against time (matplotlib) and checks that they stay
      flat: the last minute of load's median anonymous RSS (the heap, where
      a leak shows) within RSS_TOL_PCT (10) of the median of minute REF_MIN
      of the load (2: the second minute, once the first has warmed up), and the
      whole RSS within twice that (it also holds the LMDB map's file pages,
      which follow the store file's size); fds the same (within 10 % +
      FD_TOL); and the fds of the last 10 idle seconds after the load back
      to the idle baseline before it (+ FD_TOL, 0). Exit 0 pass, 1 fail.
"""
import os
import statistics
import sys
import time
import urllib.request

WANT = ("process_resident_memory_bytes", "process_open_fds", "ctxd_grpc_connections",
        "ctxd_grpc_streams_in_flight")


def scrape(addr):
    out = {}
    try:
        with urllib.request.urlopen("http://%s/metrics" % addr, timeout=2) as r:
            for line in r.read().decode().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] in WANT:
                    out[parts[0]] = float(parts[1])
    except OSError:
        pass
    return out


def sample(pid, addr, out, statefile):
    t0 = time.monotonic()
    with open(out, "w") as f:
        f.write("t\tphase\trss_kib\tfds\tm_rss_kib\tm_fds\tconns\tstreams\t"
                "anon_kib\tfile_kib\n")
        while True:
            try:
                phase = open(statefile).read().split()[0]
            except (OSError, IndexError):
                phase = "idle-before"
            if phase == "done":
                return
            try:
                with open("/proc/%d/status" % pid) as st:
                    kv = dict(l.split(":", 1) for l in st if ":" in l)
                rss = int(kv["VmRSS"].split()[0])
                anon = int(kv["RssAnon"].split()[0])
                fil = int(kv["RssFile"].split()[0]) + int(kv["RssShmem"].split()[0])
                fds = len(os.listdir("/proc/%d/fd" % pid))
            except (OSError, KeyError, ValueError):
                return
            m = scrape(addr)
            f.write("%.1f\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n" % (
                time.monotonic() - t0, phase, rss, fds,
                m.get(WANT[0], 0) / 1024, m.get(WANT[1], -1), m.get(WANT[2], -1),
                m.get(WANT[3], -1), anon, fil))
            f.flush()
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t0) % 1.0))


def judge(tsv, png, rss_tol=10.0, fd_tol=0, ref_min=2):
    rows = []
    with open(tsv) as f:
        next(f)
        for line in f:
            p = line.rstrip("\n").split("\t")
            rows.append((float(p[0]), p[1], int(p[2]), int(p[3]), int(p[6]), int(p[7]),
                         int(p[8]) if len(p) > 9 else 0, int(p[9]) if len(p) > 9 else 0))
    load = [r for r in rows if r[1] == "load"]
    before = [r for r in rows if r[1] == "idle-before"]
    after = [r for r in rows if r[1] == "idle-after"]
    ok = True
    if not load or not before or not after:
        print("soak: missing phases in %s" % tsv)
        return 1
    l0 = load[0][0]
    minute2 = [r for r in load if 60 * (ref_min - 1) <= r[0] - l0 < 60 * ref_min]
    last = [r for r in load if r[0] >= load[-1][0] - 60]
    if not minute2 or not last:
        print("soak: load shorter than %d minutes" % ref_min)
        return 1
    rss2 = statistics.median(r[2] for r in minute2)
    rssl = statistics.median(r[2] for r in last)
    fd2 = statistics.median(r[3] for r in minute2)
    fdl = statistics.median(r[3] for r in last)
    fd0 = min(r[3] for r in before)
    fd_end = min(r[3] for r in after[-10:])
    growth = 100.0 * (rssl - rss2) / rss2
    anon2 = statistics.median(r[6] for r in minute2)
    anonl = statistics.median(r[6] for r in last)
    agrowth = 100.0 * (anonl - anon2) / anon2 if anon2 else 0.0
    c0 = anon2 > 0 and agrowth <= rss_tol
    c1 = growth <= 2 * rss_tol
    c2 = fdl <= fd2 * 1.10 + fd_tol
    c3 = fd_end <= fd0 + fd_tol
    print("soak: anonymous RSS median, minute %d %.1f MiB, last minute %.1f MiB: %+.1f %% "
          "(limit +%.0f %%): %s" % (ref_min, anon2 / 1024, anonl / 1024, agrowth, rss_tol,
                                   "pass" if c0 else "FAIL"))
    print("soak: RSS median, minute %d %.1f MiB, last minute %.1f MiB: %+.1f %% (limit +%.0f %%): %s"
          % (ref_min, rss2 / 1024, rssl / 1024, growth, 2 * rss_tol, "pass" if c1 else "FAIL"))
    print("soak: fds median, minute %d %d, last minute %d (limit +10 %% + %d): %s"
          % (ref_min, fd2, fdl, fd_tol, "pass" if c2 else "FAIL"))
    print("soak: fds idle before %d, after the clients left %d (limit +%d): %s"
          % (fd0, fd_end, fd_tol, "pass" if c3 else "FAIL"))
    print("soak: RSS idle before %.1f MiB, peak %.1f MiB, idle after %.1f MiB"
          % (before[-1][2] / 1024, max(r[2] for r in rows) / 1024, after[-1][2] / 1024))
    print("soak: file-backed RSS (LMDB map, model, code) median, minute %d %.1f MiB, "
          "last minute %.1f MiB" % (ref_min, statistics.median(r[7] for r in minute2) / 1024,
                                    statistics.median(r[7] for r in last) / 1024))
    ok = c0 and c1 and c2 and c3
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak: matplotlib missing: no plot")
        return 0 if ok else 1
    t = [r[0] / 60 for r in rows]
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
    a1.plot(t, [r[2] / 1024 for r in rows], lw=1, color="tab:blue", label="RSS")
    a1.plot(t, [r[6] / 1024 for r in rows], lw=1, color="tab:orange", label="anonymous")
    a1.plot(t, [r[7] / 1024 for r in rows], lw=1, color="tab:purple",
            label="file-backed (LMDB map, model)")
    a1.legend(loc="lower center", fontsize=8, ncol=3)
    a1.set_ylabel("RSS (MiB)")
    a1.set_ylim(bottom=0)
    a2.plot(t, [r[3] for r in rows], lw=1, color="tab:red", label="open fds")
    a2.plot(t, [r[4] for r in rows], lw=1, color="tab:gray", label="gRPC connections")
    a2.set_ylabel("count")
    a2.set_ylim(bottom=0)
    a2.legend(loc="lower center", fontsize=8)
    a2.set_xlabel("minutes")
    for a in (a1, a2):
        a.axvspan(l0 / 60, load[-1][0] / 60, color="tab:green", alpha=0.08)
        a.grid(alpha=0.3)
    a1.set_title("ctxd soak: %.0f min of mixed load (shaded); minute %d -> last: RSS %+.1f %%, "
                 "anonymous %+.1f %%, fds %d -> %d; %s"
                 % ((load[-1][0] - l0) / 60, ref_min, growth, agrowth, fd2, fdl,
                    "pass" if ok else "FAIL"), fontsize=9)
    fig.tight_layout()
    fig.savefig(png, dpi=80)
    print("soak: plot %s" % png)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) >= 6 and sys.argv[1] == "sample":
        sample(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
    elif len(sys.argv) >= 4 and sys.argv[1] == "judge":
        sys.exit(judge(sys.argv[2], sys.argv[3],
                       float(sys.argv[4]) if len(sys.argv) > 4 else 10.0,
                       int(sys.argv[5]) if len(sys.argv) > 5 else 0,
                       int(sys.argv[6]) if len(sys.argv) > 6 else 2))
    else:
        sys.exit(__doc__)
