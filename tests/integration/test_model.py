"""test_model - the daemon's language model and tokenizer over the wire:
model.path / tokenizer.path at start-up (and a file that does not load
stopping it), exact chunk counts, ModelInfo in Stats, Admin.LoadModel
(errors, swaps while Puts, Chunks and Stats run), the tokenizer mismatch
after a tokenizer change and its fix by ctxctl rechunk (client vectors
kept, documents rewritten meanwhile left as their writers left them).

The models are the random-weight GGUFs of the lm_models ctest fixture
(CTXD_LM_TEST_DIR) and llama.cpp's vocabulary-only GGUFs
(CTXD_LM_VOCAB_DIR)."""

import os
import subprocess
import threading

import grpc

from ctxd_harness import Daemon, Report, pb

LM_DIR = os.environ.get("CTXD_LM_TEST_DIR", "")
VOCAB_DIR = os.environ.get("CTXD_LM_VOCAB_DIR", "")
LLAMA = os.path.join(LM_DIR, "llama.gguf")
QWEN2 = os.path.join(LM_DIR, "qwen2.gguf")
GPT2_VOCAB = os.path.join(VOCAB_DIR, "ggml-vocab-gpt-2.gguf")
QWEN2_VOCAB = os.path.join(VOCAB_DIR, "ggml-vocab-qwen2.gguf")
CTXCTL = os.environ.get("CTXCTL_BIN", "")

PROSE = ("The lighthouse keeper climbed the stairs at dusk. "
         "Far below, the waves broke against the rocks; the lamp turned. "
         "Nobody had written to him in years, yet he kept a logbook. ")


def ctl(d, *args):
    return subprocess.run([CTXCTL, "--addr", d.addr] + list(args),
                          capture_output=True, text=True, timeout=120)


def start_fails(r, args, what, contains):
    d = Daemon(r, args=args, name="bad")
    try:
        d.start()
        r.check(False, what, "the daemon started")
        d.stop()
    except Exception as e:  # noqa: BLE001 - DaemonError with the log
        msg = str(e)
        r.check("exited with 1" in msg, what + ": exit 1", msg[-400:])
        for c in contains:
            r.check(c in msg, what + ": the log says %r" % c, msg[-600:])


def case_bad_files(r):
    start_fails(r, ["--model.path", "/nonexistent/m.gguf"], "missing model",
                ["/nonexistent/m.gguf", "cannot load the model"])
    start_fails(r, ["--model.path", GPT2_VOCAB], "vocabulary as the model",
                ["no weights", "tokenizer.path"])
    start_fails(r, ["--tokenizer.path", "/etc/hostname"], "not a GGUF",
                ["cannot load the tokenizer /etc/hostname"])


def case_tokenizer_path(r):
    with Daemon(r, args=["--tokenizer.path", GPT2_VOCAB]) as d:
        c = d.client()
        s = c.stats()
        r.check(s.tokenizer.startswith("gguf:gpt-2/50257/"), "tokenizer is the GPT-2 vocabulary",
                s.tokenizer)
        r.eq(s.store_tokenizer, s.tokenizer, "a new store records it")
        r.check(not s.HasField("model"), "no model")
        r.eq(s.tokenizer_model.vocab_size, 50257, "tokenizer_model.vocab_size")
        r.check(s.tokenizer_model.vocab_only, "tokenizer_model.vocab_only")
        # GPT-2 encodes "Hello world" as [15496, 995]; a run of spaces costs
        # it tokens where the estimator counts none.
        ch = c.chunk("Hello world")
        r.eq(ch.tokenizer, s.tokenizer, "Chunk names the tokenizer")
        r.eq(ch.tokens, 2, "'Hello world' is 2 GPT-2 tokens")
        r.check(c.chunk("x" + " " * 40 + "y").tokens > 2,
                "spaces count as GPT-2 counts them (the estimator says 2)")
        p = c.put(PROSE * 20, id="a")
        g = c.get("a", with_chunks=True)
        r.eq(sum(x.tokens for x in g.chunks), p.tokens, "chunk tokens add up")
        r.eq(c.chunk(PROSE * 20).tokens, p.tokens, "Put counts as Chunk does")


def case_model_info(r):
    with Daemon(r, args=["--model.path", LLAMA]) as d:
        s = d.client().stats()
        m = s.model
        r.eq(m.name, "ctxd-random", "model.name")
        r.eq(m.architecture, "llama", "model.architecture")
        r.eq((m.layers, m.heads, m.kv_heads, m.context_length, m.embedding_length),
             (2, 4, 2, 1024, 64), "layers, heads, kv heads, context, width")
        r.check(m.params > 1000000 and m.size_bytes > 0, "params and size", (m.params, m.size_bytes))
        r.eq(m.path, LLAMA, "model.path")
        r.check(not m.vocab_only, "has weights")
        r.eq(s.tokenizer, m.tokenizer, "the model's vocabulary counts")
        out = ctl(d, "stats")
        r.check(out.returncode == 0 and "ctxd-random (llama, 2 layers, 4/2 heads" in out.stdout,
                "ctxctl stats shows the model", out.stdout + out.stderr)
        out = ctl(d, "model", "info", "--json")
        r.check(out.returncode == 0 and '"layers": 2' in out.stdout, "ctxctl model info --json",
                out.stdout + out.stderr)


def case_load_model(r):
    with Daemon(r) as d:
        c = d.client()
        r.raises(grpc.StatusCode.NOT_FOUND, lambda: c.load_model("/nonexistent.gguf"),
                 "missing file", "/nonexistent.gguf")
        r.raises(grpc.StatusCode.INVALID_ARGUMENT, lambda: c.load_model(GPT2_VOCAB),
                 "a vocabulary as the model", "no weights")
        r.raises(grpc.StatusCode.INVALID_ARGUMENT, lambda: c.load_model(""),
                 "no path", "path is required")
        r.raises(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: c.load_model(LLAMA, unload=True), "path and unload", "unload")
        r.eq(c.stats().tokenizer, "estimate-v1", "failed loads changed nothing")
        # An empty store takes the new tokenizer without a mismatch.
        lr = c.load_model(QWEN2)
        r.eq(lr.model.architecture, "qwen2", "loaded qwen2")
        r.check(not lr.tokenizer_mismatch, "empty store: no mismatch")
        s = c.stats()
        r.eq(s.store_tokenizer, s.tokenizer, "empty store records the new tokenizer")
        r.eq(s.model.layers, 3, "Stats shows the new model")
        out = ctl(d, "model", "load", LLAMA)
        r.check(out.returncode == 0 and "ctxd-random" in out.stdout, "ctxctl model load",
                out.stdout + out.stderr)
        r.eq(c.stats().model.layers, 2, "swapped to llama")
        out = ctl(d, "model", "unload")
        r.check(out.returncode == 0, "ctxctl model unload", out.stderr)
        s = c.stats()
        r.check(not s.HasField("model"), "unloaded")
        r.eq(s.tokenizer, "estimate-v1", "back to the estimator")


def case_swap_under_load(r):
    """Puts, Chunks and Stats keep working while the model and the
    tokenizer are swapped again and again: each request counts with the
    tokenizer it started with, and no model is freed under it (ASan)."""
    with Daemon(r, args=["--tokenizer.path", GPT2_VOCAB]) as d:
        c = d.client()
        stop = threading.Event()
        errors = []
        done = [0]

        def worker(k):
            cl = d.client()
            i = 0
            while not stop.is_set():
                try:
                    cl.put(PROSE * (1 + i % 7), id="w%d-%d" % (k, i % 20))
                    cl.chunk(PROSE * 3)
                    cl.stats()
                    done[0] += 1
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))
                    return
                i += 1

        ts = [threading.Thread(target=worker, args=(k,)) for k in range(3)]
        for t in ts:
            t.start()
        try:
            for i in range(6):
                c.load_model(QWEN2 if i % 2 else LLAMA)
                c.load_model(QWEN2_VOCAB if i % 2 else GPT2_VOCAB, tokenizer_only=True)
                c.load_model(unload=True)
        finally:
            stop.set()
            for t in ts:
                t.join()
        r.eq(errors, [], "no call failed during the swaps")
        r.check(done[0] > 0, "calls ran during the swaps", done[0])
        r.check(c.verify().ok, "the store verifies")


def case_mismatch_and_rechunk(r):
    with Daemon(r) as d:
        c = d.client()
        for i in range(150):
            c.put(PROSE * (5 + i % 30), id="doc-%d" % i, metadata={"i": str(i)})
        c.create_collection("vec", embedder="none:dim=4")
        c.put("one two three. four five six.", id="cv", collection="vec",
              chunks=[(0, 15, [1, 0, 0, 0]), (15, 29, [0, 1, 0, 0])])
        s = c.stats()
        r.eq(s.tokenizer, "estimate-v1", "estimator before")
        d.args = ["--tokenizer.path", GPT2_VOCAB]
        d.restart()
        c = d.client()
        s = c.stats()
        r.check(s.tokenizer.startswith("gguf:gpt-2/"), "restarted with the GPT-2 vocabulary")
        r.eq(s.store_tokenizer, "estimate-v1", "the store still records the estimator")
        r.check(s.tokenizer_mismatch, "Stats reports the mismatch")
        r.check(any("tokenizer-mismatch" in l and "rechunk" in l for l in d.log_lines),
                "the start-up log reports it")
        out = ctl(d, "stats")
        r.check("MISMATCH" in out.stdout and "ctxctl rechunk" in out.stdout,
                "ctxctl stats says to rechunk", out.stdout)

        # Documents rewritten while the rechunk runs keep their writers' text.
        stop = threading.Event()
        last = {}

        def rewriter():
            cl = d.client()
            i = 0
            while not stop.is_set():
                k = i % 150
                text = "rewritten %d. " % i + PROSE * 3
                cl.put(text, id="doc-%d" % k, metadata={"i": str(k)})
                last["doc-%d" % k] = text
                i += 1

        t = threading.Thread(target=rewriter)
        t.start()
        try:
            events = list(c.rechunk())
        finally:
            stop.set()
            t.join()
        r.eq(events[-1].state, "done", "rechunk done")
        r.eq(events[-1].documents_done, 151, "every document seen")
        r.eq(events[-1].documents_total, 151, "documents_total")
        s = c.stats()
        r.check(not s.tokenizer_mismatch, "no mismatch after the rechunk")
        r.eq(s.store_tokenizer, s.tokenizer, "the store records the new tokenizer")
        r.eq(s.rechunk.state, "done", "Stats shows the last rechunk")
        for k, text in sorted(last.items()):
            got = c.get(k).document.text
            if got != text:
                r.check(False, "rewritten %s kept its latest text" % k, got[:40])
                break
        else:
            r.check(True, "every rewritten document kept its latest text (%d)" % len(last))
        # Every chunk is counted with the new tokenizer, as Chunk counts.
        g = c.get("doc-149", with_chunks=True)
        r.eq(sum(x.tokens for x in g.chunks), c.chunk(g.document.text).tokens,
             "a re-chunked document counts as Chunk does")
        r.eq(s.tokens, sum(ci.tokens for ci in s.collections), "token totals agree")
        cv = c.get("cv", collection="vec", with_chunks=True, with_vectors=True)
        r.eq([(x.byte_start, x.byte_end) for x in cv.chunks], [(0, 15), (15, 29)],
             "client chunks kept")
        r.eq([list(x.vector) for x in cv.chunks], [[1, 0, 0, 0], [0, 1, 0, 0]],
             "client vectors kept")
        r.eq([x.tokens for x in cv.chunks],
             [c.chunk(cv.document.text[:15]).tokens, c.chunk(cv.document.text[15:]).tokens],
             "client chunks recounted")
        r.check(c.verify().ok, "the store verifies")
        hits = c.search("lighthouse keeper logbook", mode="lexical", k=3).hits
        r.check(len(hits) == 3, "search finds the re-chunked documents", len(hits))
        out = ctl(d, "rechunk")
        r.check(out.returncode == 0 and "re-chunked 151 documents" in out.stdout,
                "ctxctl rechunk", out.stdout + out.stderr)


def main():
    r = Report("test_model")
    for f in (LLAMA, QWEN2, GPT2_VOCAB, QWEN2_VOCAB):
        if not r.check(os.path.exists(f), "fixture %s exists" % f):
            r.finish()
    r.case("a file that does not load stops the start", case_bad_files, r)
    r.case("tokenizer.path: exact counts with no model", case_tokenizer_path, r)
    r.case("model.path: ModelInfo in Stats", case_model_info, r)
    r.case("LoadModel: errors, swaps, unload", case_load_model, r)
    r.case("LoadModel swaps under load", case_swap_under_load, r)
    r.case("tokenizer mismatch and rechunk", case_mismatch_and_rechunk, r)
    r.finish()


if __name__ == "__main__":
    main()
