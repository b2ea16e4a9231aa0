"""test_select - Retrieval.SelectContext and SelectContextStream over the
wire: needles found by BM25 in inline and stored texts at several depths,
the shape of every answer (segments in order, never overlapping, within the
budget, the context their text joined), auto, the error statuses, the model
methods on a random-weight GGUF (a random model finds nothing, so only the
structure is checked), options, model.n_ctx, model.max_concurrent,
cancellation and deadlines (the model slot is given back), selections while
the model is swapped, and ctxctl select.

The model is the lm_models ctest fixture's llama.gguf (CTXD_LM_TEST_DIR)."""

import json
import os
import subprocess
import threading
import time

import grpc

from ctxd_harness import SLOW, Daemon, Report
from prose import ARTICLES

LM_DIR = os.environ.get("CTXD_LM_TEST_DIR", "")
LLAMA = os.path.join(LM_DIR, "llama.gguf")
QWEN2 = os.path.join(LM_DIR, "qwen2.gguf")
CTXCTL = os.environ.get("CTXCTL_BIN", "")

NEEDLE = "The secret code of the old vault is 7431, written in red ink."
QUESTION = "What is the secret code of the old vault?"
BODY = " ".join(ARTICLES[k] for k in sorted(ARTICLES) if k != "lighthouse")


def haystack(depth, repeat=8):
    """Prose with NEEDLE as a sentence at `depth` (0..1) of it."""
    parts = (BODY + " ") * repeat
    cut = int(len(parts) * depth)
    dot = parts.rfind(". ", 0, cut)
    at = dot + 2 if dot >= 0 and cut > 0 else 0
    return parts[:at] + NEEDLE + " " + parts[at:]


def check_shape(r, res, text, budget, what):
    """Segments in order, not touching, inside the text, the tokens within
    the budget, and the context exactly their texts joined by "\\n"."""
    segs = list(res.segments)
    data = text.encode()
    ok = all(0 <= s.byte_start < s.byte_end <= len(data) for s in segs)
    ok = ok and all(a.byte_end < b.byte_start for a, b in zip(segs, segs[1:]))
    r.check(ok, what + ": segments in order, apart, inside the text",
            [(s.byte_start, s.byte_end) for s in segs][:10])
    r.eq(sum(s.tokens for s in segs), res.tokens, what + ": tokens add up")
    r.check(res.tokens <= budget, what + ": within the budget", (res.tokens, budget))
    joined = b"\n".join(data[s.byte_start:s.byte_end] for s in segs).decode()
    r.check(joined == res.context, what + ": context = the segments joined",
            (res.context[:80], joined[:80]))


def ctl(d, *args, stdin=None):
    return subprocess.run([CTXCTL, "--addr", d.addr] + list(args), input=stdin,
                          capture_output=True, text=True, timeout=120 * SLOW)


def case_bm25_needles(r, d):
    c = d.client()
    for depth in (0.0, 0.25, 0.5, 0.75, 1.0):
        text = haystack(depth)
        res = c.select(QUESTION, text=text, budget=64, method="bm25")
        r.check(NEEDLE in res.context, "bm25 finds the needle at depth %.2f" % depth,
                res.context[:200])
        r.eq(res.method, "bm25", "method bm25")
        check_shape(r, res, text, 64, "depth %.2f" % depth)
        r.check(res.stats.input_tokens > 1000 and res.stats.segments > 5,
                "stats: input tokens and segments", res.stats)
    # Stored documents, selected by id, in a collection of their own.
    c.create_collection("books")
    text = haystack(0.6, repeat=20)
    c.put(text, id="long-1", collection="books")
    res = c.select(QUESTION, doc_id="long-1", collection="books", budget=100,
                   method="bm25", segment_tokens=40)
    r.check(NEEDLE in res.context, "bm25 finds the needle in a stored document")
    check_shape(r, res, text, 100, "stored")
    r.check(all(s.tokens <= 40 for s in res.segments) or len(res.segments) < 3,
            "segments of at most segment_tokens")
    # auto with no model is bm25.
    res = c.select(QUESTION, text=haystack(0.3), budget=64)
    r.eq(res.method, "bm25", "auto without a model is bm25")
    r.check(NEEDLE in res.context, "auto finds the needle")
    # A text under the budget comes back whole.
    res = c.select("anything", text="Short text. Two sentences.", budget=500, method="bm25")
    r.eq(res.context, "Short text. Two sentences.", "a text within the budget comes whole")
    # embedding with the collection's hash embedder.
    res = c.select(QUESTION, text=haystack(0.5), budget=64, method="embedding")
    r.eq(res.method, "embedding", "method embedding")
    check_shape(r, res, haystack(0.5), 64, "embedding")
    # The stream: progress events, then the result.
    evs = list(c.select_stream(QUESTION, text=haystack(0.5), budget=64, method="bm25"))
    r.check(len(evs) >= 1 and evs[-1].phase == "done" and evs[-1].HasField("result"),
            "the stream ends with the result", [e.phase for e in evs])
    r.check(NEEDLE in evs[-1].result.context, "the streamed result has the needle")


def case_errors(r, d):
    c = d.client()
    S = grpc.StatusCode
    text = haystack(0.5)
    r.raises(S.INVALID_ARGUMENT, lambda: c.select(QUESTION, text=text, method="nope"),
             "unknown method", "nope")
    for m in ("xl3m", "infiniretri"):
        r.raises(S.FAILED_PRECONDITION, lambda m=m: c.select(QUESTION, text=text, method=m),
                 "%s without a model" % m, ["model.path", "LoadModel"])
    r.raises(S.NOT_FOUND, lambda: c.select(QUESTION, doc_id="missing"), "missing document",
             "missing")
    r.raises(S.NOT_FOUND, lambda: c.select(QUESTION, doc_id="x", collection="nocoll"),
             "missing collection", "nocoll")
    r.raises(S.INVALID_ARGUMENT, lambda: c.select("", text=text, method="bm25"),
             "empty question for bm25", "question")
    r.raises(S.INVALID_ARGUMENT, lambda: c.select(QUESTION, doc_id="a", text=text),
             "doc_id and text", "both")
    r.raises(S.INVALID_ARGUMENT, lambda: c.select(QUESTION), "neither doc_id nor text",
             "doc_id or text")
    r.raises(S.INVALID_ARGUMENT, lambda: c.select(QUESTION, text="a\x00b", method="bm25"),
             "a NUL in the text", "text contains a NUL")
    r.raises(S.INVALID_ARGUMENT, lambda: c.select(QUESTION, doc_id="a\x00b"),
             "a NUL in doc_id", "doc_id contains a NUL")
    r.raises(S.INVALID_ARGUMENT, lambda: c.select(QUESTION, text=text, budget=2000000),
             "budget over the limit", "token_budget")
    r.raises(S.INVALID_ARGUMENT,
             lambda: c.select(QUESTION, text=text, method="bm25", xl3m_score="best"),
             "unknown xl3m_score", "xl3m_score")
    c.create_collection("vecs", embedder="none:dim=4")
    r.raises(S.FAILED_PRECONDITION,
             lambda: c.select(QUESTION, text=text, method="embedding", collection="vecs"),
             "embedding with a client-vector collection", "embedder")


def case_model_methods(r, d):
    c = d.client()
    text = haystack(0.5, repeat=3)
    small = dict(window_tokens=256, top_k=40, budget=128)
    res = c.select(QUESTION, text=text, **small)
    r.eq(res.method, "infiniretri", "auto with a model is infiniretri")
    r.eq(res.model, "ctxd-random", "the answer names the model")
    check_shape(r, res, text, 128, "infiniretri")
    r.check(res.stats.windows > 1 and res.stats.model_tokens > 0 and res.stats.model_decodes > 0,
            "infiniretri stats: windows, model tokens, decodes", res.stats)
    r.check(0 < res.stats.max_seq_tokens <= 1024, "max_seq_tokens within the model context",
            res.stats.max_seq_tokens)
    for opts in (dict(layer=1), dict(layer=-2), dict(filter_width=1),
                 dict(no_question_weights=True), dict(cache_max_tokens=200)):
        kw = dict(small)
        kw.update(opts)
        res = c.select(QUESTION, text=text, method="infiniretri", **kw)
        check_shape(r, res, text, 128, "infiniretri %s" % opts)
    r.raises(grpc.StatusCode.INVALID_ARGUMENT,
             lambda: c.select(QUESTION, text=text, method="infiniretri", layer=3, **small),
             "a layer the model does not have")
    for kw in (dict(question=QUESTION), dict(question=QUESTION, xl3m_score="logprob"),
               dict(question="", question_tail=16)):
        res = c.select(text=text, method="xl3m", budget=100, segment_tokens=64, **kw)
        r.eq(res.method, "xl3m", "xl3m %s" % kw)
        check_shape(r, res, text, 100, "xl3m %s" % kw)
        r.check(res.stats.model_tokens > 0 and res.stats.segments > 1,
                "xl3m stats %s" % kw, res.stats)
    # bm25 still finds needles with a model loaded; its counts are the model's.
    res = c.select(QUESTION, text=text, budget=64, method="bm25")
    r.check(NEEDLE in res.context, "bm25 with a model loaded finds the needle")
    r.eq(res.tokenizer, c.stats().tokenizer, "budget counted with the model's vocabulary")
    # The stream reports progress for a model method.
    evs = list(c.select_stream(QUESTION, text=haystack(0.5, repeat=6), method="infiniretri",
                               **small))
    r.check(evs[-1].phase == "done" and evs[-1].result.method == "infiniretri",
            "stream result", [e.phase for e in evs][-3:])


def long_call(c, **kw):
    """A model selection that runs for a while on this machine."""
    return c.select_stream(QUESTION, text=haystack(0.5, repeat=60), method="infiniretri",
                           window_tokens=128, top_k=20, budget=64, **kw)


def wait_running(c, n, timeout=10.0):
    end = time.monotonic() + timeout * SLOW
    while time.monotonic() < end:
        if c.stats().selections_running == n:
            return True
        time.sleep(0.02)
    return False


def case_limits_and_cancel(r, d):
    c = d.client()
    # One selection runs; a second model selection is refused at once.
    it = long_call(c)
    first = next(it)
    r.check(first.phase != "done", "the long selection reports progress first", first.phase)
    r.check(wait_running(c, 1), "Stats: one selection running")
    r.raises(grpc.StatusCode.RESOURCE_EXHAUSTED,
             lambda: c.select(QUESTION, text=haystack(0.1), method="xl3m", budget=64),
             "model.max_concurrent reached", "model.max_concurrent")
    res = c.select(QUESTION, text=haystack(0.1), method="bm25", budget=64)
    r.check(NEEDLE in res.context, "bm25 is not limited by model.max_concurrent")
    it.close()  # cancels the stream: the selection stops at its next report
    r.check(wait_running(c, 0), "a cancelled selection gives its slot back")
    # A deadline stops it too.
    t0 = time.monotonic()
    r.raises(grpc.StatusCode.DEADLINE_EXCEEDED,
             lambda: c.select(QUESTION, text=haystack(0.5, repeat=60), method="infiniretri",
                              window_tokens=128, top_k=20, budget=64, timeout=0.5 * SLOW),
             "a selection past its deadline")
    r.check(wait_running(c, 0), "a selection past its deadline gives its slot back",
            time.monotonic() - t0)
    res = c.select(QUESTION, text=haystack(0.2), method="xl3m", budget=64, segment_tokens=64)
    r.eq(res.method, "xl3m", "selections run again afterwards")


def case_n_ctx(r):
    with Daemon(r, args=["--model.path", LLAMA, "--model.n_ctx", "300", "--model.threads", "1"],
                name="nctx") as d:
        c = d.client()
        r.raises(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: c.select(QUESTION, text=haystack(0.5), method="infiniretri",
                                  window_tokens=256, top_k=40, budget=128),
                 "over model.n_ctx", "model.n_ctx")
        res = c.select(QUESTION, text=haystack(0.5), method="infiniretri",
                       window_tokens=128, top_k=20, budget=64, cache_max_tokens=100)
        r.eq(res.method, "infiniretri", "within model.n_ctx")


def case_shutdown(r):
    """SIGTERM while a model selection runs: the grace period passes, the
    call is cancelled, the selection stops at its next report and the
    daemon exits 0 (checked by stop())."""
    d = Daemon(r, args=["--model.path", LLAMA, "--model.threads", "1",
                        "--server.shutdown_grace_ms", "300"], name="shutdown").start()
    c = d.client()
    it = long_call(c)
    next(it)
    t0 = time.monotonic()
    d.stop()
    r.check(time.monotonic() - t0 < 10 * SLOW, "the daemon stops promptly",
            time.monotonic() - t0)


def case_swap_during_selections(r, d):
    c = d.client()
    stop = threading.Event()
    errors, done = [], [0]

    def worker():
        cl = d.client()
        while not stop.is_set():
            try:
                cl.select(QUESTION, text=haystack(0.5, repeat=2), method="xl3m",
                          budget=64, segment_tokens=64)
                done[0] += 1
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    errors.append("%s %s" % (e.code(), e.details()))
                    return
                time.sleep(0.01)

    ts = [threading.Thread(target=worker) for _ in range(2)]
    for t in ts:
        t.start()
    try:
        for i in range(6):
            c.load_model(QWEN2 if i % 2 == 0 else LLAMA)
            time.sleep(0.1)
    finally:
        stop.set()
        for t in ts:
            t.join()
    r.eq(errors, [], "no selection failed while the model was swapped")
    r.check(done[0] > 0, "selections ran during the swaps", done[0])
    r.eq(c.stats().model.path, LLAMA, "the last model loaded is in use")


def case_ctxctl(r, d):
    text = haystack(0.4)
    out = ctl(d, "select", "--file", "-", "--question", QUESTION, "--budget", "64",
              "--method", "bm25", "-v", stdin=text)
    r.check(out.returncode == 0 and NEEDLE in out.stdout, "ctxctl select --file - prints the needle",
            out.stdout[:200] + out.stderr)
    r.check("method bm25" in out.stderr and "score" in out.stderr, "-v lists the segments",
            out.stderr[:300])
    d.client().put(text, id="ctl-doc")
    out = ctl(d, "select", "--doc", "ctl-doc", "-q", QUESTION, "--budget", "64", "--json")
    try:
        j = json.loads(out.stdout)
    except ValueError:
        j = {}
    r.check(out.returncode == 0 and NEEDLE in j.get("context", ""), "ctxctl select --doc --json",
            out.stdout[:200] + out.stderr)
    r.check(j.get("segments") and j.get("tokens", 0) <= 64, "--json has segments and tokens")
    out = ctl(d, "select", "--doc", "nope", "-q", QUESTION)
    r.check(out.returncode == 1 and "NOT_FOUND" in out.stderr, "ctxctl select of a missing doc",
            out.stderr)
    out = ctl(d, "select", "-q", QUESTION)
    r.eq(out.returncode, 2, "ctxctl select without a text is a usage error")


def main():
    r = Report("test_select")
    for f in (LLAMA, QWEN2):
        if not r.check(os.path.exists(f), "fixture %s exists" % f):
            r.finish()
    with Daemon(r) as d:
        r.case("bm25 finds needles; answers are well formed", case_bm25_needles, r, d)
        r.case("errors", case_errors, r, d)
        r.case("ctxctl select", case_ctxctl, r, d)
    with Daemon(r, args=["--model.path", LLAMA, "--model.threads", "1"], name="model") as d:
        r.case("model methods on a random model", case_model_methods, r, d)
        r.case("max_concurrent, cancellation, deadlines", case_limits_and_cancel, r, d)
        r.case("selections while the model is swapped", case_swap_during_selections, r, d)
    r.case("model.n_ctx", case_n_ctx, r)
    r.case("SIGTERM during a selection", case_shutdown, r)
    r.finish()


if __name__ == "__main__":
    main()
