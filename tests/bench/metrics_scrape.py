"""metrics_scrape.py - how long a Prometheus scrape of ctxd takes, next to
a baseline from the same run: GET /healthz on the same port (evhttp and a
fresh TCP connection, no metrics rendered).

usage:
  CTXD_BIN=<build>/ctxd PYTHONPATH=<build>/python:clients/python:tests/integration \
      /usr/bin/python3 tests/bench/metrics_scrape.py [--docs 10000] [--scrapes 50]

Starts ctxd on an empty temporary data directory with
--metrics.listen 127.0.0.1:0, stores --docs documents (about 1 KB each)
through one PutStream, then times --scrapes GETs of /healthz and of
/metrics, alternating, each on a new connection (as Prometheus does with
keep-alive off). Prints the median and the 90th percentile of each and the
exposition's size.
"""

import argparse
import http.client
import re
import statistics
import time

from ctxd_harness import Daemon, put_req


def get(host, port, path):
    t0 = time.perf_counter()
    c = http.client.HTTPConnection(host, port, timeout=30)
    c.request("GET", path)
    body = c.getresponse().read()
    c.close()
    return time.perf_counter() - t0, len(body)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=10000)
    ap.add_argument("--scrapes", type=int, default=50)
    a = ap.parse_args()
    with Daemon(None, args=["--metrics.listen", "127.0.0.1:0"]) as d:
        addr = next(m.group(1) for m in (re.search(r"metrics-listening addr=(\S+)", l)
                                         for l in d.log_lines) if m)
        host, port = addr.rsplit(":", 1)
        s = d.stubs()
        reqs = (put_req("d%d" % i, ("word%d " % (i % 97)) * 150) for i in range(a.docs))
        for _ in s.docs.PutStream(reqs, timeout=600):
            pass
        t_health, t_metrics, size = [], [], 0
        for _ in range(a.scrapes):
            t_health.append(get(host, int(port), "/healthz")[0])
            t, size = get(host, int(port), "/metrics")
            t_metrics.append(t)

        def p90(xs):
            return sorted(xs)[int(0.9 * (len(xs) - 1))] * 1e3

        print("docs=%d scrapes=%d exposition=%d bytes" % (a.docs, a.scrapes, size))
        print("  /healthz (baseline)  median %.2f ms  p90 %.2f ms" % (
            statistics.median(t_health) * 1e3, p90(t_health)))
        print("  /metrics             median %.2f ms  p90 %.2f ms" % (
            statistics.median(t_metrics) * 1e3, p90(t_metrics)))


if __name__ == "__main__":
    main()
