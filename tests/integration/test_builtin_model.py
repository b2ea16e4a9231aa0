"""test_builtin_model - the built-in reference model (model.builtin).

With no model.path the daemon loads index/model/ctxd-mini.gguf (the
repository's trained model) for xl3m and infiniretri: those methods work and
InfiniRetri finds a needle the question names literally, while `auto` stays
bm25, token counts stay what they are without a model and the `model`
embedder does not take it. model.path wins
over it; a missing file is logged and skipped; "none" turns it off (the
harness's default, so that other tests' "no model" stays no model)."""

import os

import grpc

from ctxd_harness import Daemon, Report
from prose import ARTICLES

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MINI = os.path.join(ROOT, "index", "model", "ctxd-mini.gguf")
LLAMA = os.path.join(os.environ.get("CTXD_LM_TEST_DIR", ""), "llama.gguf")

NEEDLE = "The secret code of the old vault is 7431, written in red ink."
QUESTION = "What is the secret code of the old vault?"
BODY = " ".join(ARTICLES[k] for k in sorted(ARTICLES) if k != "lighthouse")


def haystack():
    """About 2,000 GPT-2 tokens of prose with NEEDLE half-way."""
    at = BODY.rfind(". ", 0, len(BODY) // 2) + 2
    return BODY[:at] + NEEDLE + " " + BODY[at:]


# Selections on the CPU model take a few CPU-seconds each; on a shared
# 2-core machine at load 15-20 that became 30-50 s of wall time, so this
# test's calls get a longer deadline than the harness's 30 s.
MODEL_TIMEOUT = 120.0


def case_builtin(r, d):
    c = d.client(timeout=MODEL_TIMEOUT)
    text = haystack()
    tokenizer = c.stats().tokenizer
    res = c.select(QUESTION, text=text, method="infiniretri", budget=128)
    r.eq(res.method, "infiniretri", "infiniretri runs on the built-in model")
    r.eq(res.model, "ctxd-mini", "the answer names ctxd-mini")
    r.check(NEEDLE in res.context, "ctxd-mini's InfiniRetri keeps the needle", res.context[:300])
    short = BODY[:1500] + NEEDLE + " " + BODY[1500:3000]  # XL3M scores every segment
    res = c.select(QUESTION, text=short, method="xl3m", budget=128, segment_tokens=128)
    r.eq(res.method, "xl3m", "xl3m runs on the built-in model")
    res = c.select(QUESTION, text=text, budget=128)
    r.eq(res.method, "bm25", "auto stays bm25 with only the built-in model")
    r.check(not tokenizer.startswith("gguf:"), "token counts are not the built-in model's",
            tokenizer)
    r.eq(c.stats().tokenizer, tokenizer, "the tokenizer in use is unchanged")
    r.raises(grpc.StatusCode.FAILED_PRECONDITION,
             lambda: c.create_collection("m", embedder="model"),
             "the model embedder does not use the built-in model")
    r.check(any("builtin-model-loaded" in l and "ctxd-mini" in l for l in d.log_lines),
            "the start-up log names the built-in model", d.log_tail(5))


def case_off_and_missing(r):
    for args, what in (([], "model.builtin none"),
                       (["--model.builtin=" + MINI + ".missing"], "a missing file")):
        with Daemon(r, args=args, name="nobuiltin") as d:
            r.raises(grpc.StatusCode.FAILED_PRECONDITION,
                     lambda d=d: d.client(timeout=MODEL_TIMEOUT).select(QUESTION, text=haystack(), method="infiniretri"),
                     "no model with " + what)
            if args:
                r.check(any("builtin-model-skipped" in l for l in d.log_lines),
                        "a missing built-in model is logged", d.log_tail(5))


def case_path_wins(r):
    with Daemon(r, args=["--model.builtin=" + MINI, "--model.path", LLAMA,
                         "--model.threads", "1"], name="path") as d:
        res = d.client(timeout=MODEL_TIMEOUT).select(QUESTION, text=haystack(), budget=128, window_tokens=256)
        r.eq(res.method, "infiniretri", "auto is infiniretri with model.path")
        r.eq(res.model, "ctxd-random", "model.path's model answers, not the built-in one")


def main():
    r = Report("test_builtin_model")
    if not r.check(os.path.exists(MINI), "%s exists" % MINI):
        r.finish()
    with Daemon(r, args=["--model.builtin=" + MINI, "--model.threads", "2"], name="builtin") as d:
        r.case("the built-in model serves xl3m and infiniretri", case_builtin, r, d)
    r.case("off, and a missing file", case_off_and_missing, r)
    if os.path.exists(LLAMA):
        r.case("model.path wins", case_path_wins, r)
    r.finish()


if __name__ == "__main__":
    main()
