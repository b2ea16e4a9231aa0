#!/usr/bin/python3
"""search_latency.py ADDR TEXT_FILE LABEL - mean latency of Search (k=10,
one client, one call at a time) in each mode over a collection loaded from
TEXT_FILE: 50 query texts are sentences of that file (40 to 200 bytes).
Prints one line per mode. Used by ingest.sh."""

import re
import sys
import time

from ctxd_client import CtxdClient

addr, path, label = sys.argv[1:4]
with open(path, encoding="utf-8") as f:
    text = f.read(2000000)
qs = [s.strip() for s in re.split(r"[.?!]\s", text) if 40 < len(s.strip()) < 200][:50]
with CtxdClient(addr) as c:
    for mode in ("vector", "lexical", "hybrid"):
        c.search(qs[0], k=10, mode=mode)  # warm up
        t0 = time.monotonic()
        for q in qs:
            c.search(q, k=10, mode=mode)
        ms = (time.monotonic() - t0) * 1000 / len(qs)
        print("   search %s (%s): %.1f ms a call" % (mode, label, ms))
