"""test_model_embedder - collections whose embedder is the loaded language
model ("model"): creation records the model (name, dim = n_embd, hash) and
is refused without one; puts and vector/hybrid searches embed through it
(an exact duplicate of a stored text comes back first, cosine 1); another
model loaded, or none after a restart, refuses them FAILED_PRECONDITION
naming both models while lexical search goes on; the index recovers at
start-up without the model; corpus jobs refuse the model embedder.

The models are the random-weight GGUFs of the lm_models ctest fixture
(CTXD_LM_TEST_DIR) and, when present, the shipped index/model/ctxd-mini.gguf."""

import os
import subprocess

import grpc

from ctxd_harness import Daemon, Report

LM_DIR = os.environ.get("CTXD_LM_TEST_DIR", "")
LLAMA = os.path.join(LM_DIR, "llama.gguf")
LLAMA_Q8 = os.path.join(LM_DIR, "llama-q8.gguf")
QWEN2 = os.path.join(LM_DIR, "qwen2.gguf")
MINI = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                    "index", "model", "ctxd-mini.gguf")
CTXCTL = os.environ.get("CTXCTL_BIN", "")

DOCS = {
    "keeper": "The lighthouse keeper climbed the stairs at dusk and lit the lamp.",
    "baker": "A baker in the village kneads dough before sunrise every morning.",
    "comet": "Astronomers tracked the comet as its tail brightened near the sun.",
    "river": "The river flooded the lower fields after three weeks of rain.",
}


def ctl(d, *args):
    return subprocess.run([CTXCTL, "--addr", d.addr] + list(args),
                          capture_output=True, text=True, timeout=120)


def put_docs(c, coll):
    for k, t in DOCS.items():
        c.put(t, id=k, collection=coll)


def check_exact(r, c, coll, what):
    """Each stored text, as a vector query, finds its own document first."""
    for k, t in DOCS.items():
        res = c.search(text=t, mode="vector", k=3, collection=coll)
        r.check(len(res.hits) > 0 and res.hits[0].chunk.doc_id == k,
                "%s: vector search for %s's text finds it first" % (what, k),
                [h.chunk.doc_id for h in res.hits])
        if res.hits:
            r.check(abs(res.hits[0].score - 1.0) < 1e-3,
                    "%s: %s's own text has cosine 1" % (what, k), res.hits[0].score)


def case_no_model(r):
    with Daemon(r) as d:
        c = d.client()
        r.raises(grpc.StatusCode.FAILED_PRECONDITION,
                 lambda: c.create_collection("m", embedder="model"),
                 "create without a model", "--model.path")
        out = ctl(d, "collection", "create", "m", "--embedder", "model")
        r.check(out.returncode != 0 and "LoadModel" in out.stderr,
                "ctxctl create without a model fails saying how to load one",
                out.stdout + out.stderr)
        r.raises(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: c.create_collection("m", embedder="model:name=x"),
                 "a partial identity", "go together")


def case_model(r):
    with Daemon(r, args=["--model.path", LLAMA]) as d:
        c = d.client()
        width = c.stats().model.embedding_length
        r.eq(width, 64, "the llama fixture is 64 wide")
        info = c.create_collection("m", embedder="model")
        emb = info.config.embedder
        r.check(emb.startswith("model:name=") and ",dim=64," in emb and ",hash=" in emb,
                "the canonical text records the model", emb)
        r.eq(info.config.dim, width, "dim = n_embd")
        r.raises(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: c.create_collection("bad", embedder="model:pooling=max"),
                 "a bad pooling", "pooling")
        r.raises(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: c.create_collection("bad", embedder="model:max_tokens=5000"),
                 "max_tokens over the training context", "max_tokens")
        out = ctl(d, "collection", "create", "m2", "--embedder",
                  "model:max_tokens=64,pooling=mean")
        r.check(out.returncode == 0 and "max_tokens=64" in out.stdout
                and "pooling=mean" in out.stdout, "ctxctl create with options",
                out.stdout + out.stderr)
        put_docs(c, "m")
        put_docs(c, "m2")
        check_exact(r, c, "m", "llama")
        check_exact(r, c, "m2", "llama mean")
        res = c.search(text=DOCS["comet"], mode="hybrid", k=2, collection="m")
        r.check(res.hits and res.hits[0].chunk.doc_id == "comet", "hybrid search",
                [h.chunk.doc_id for h in res.hits])
        long_text = " ".join(DOCS.values()) * 3
        sel = c.select("comet tail", text=long_text, budget=40, method="embedding",
                       collection="m")
        r.check(sel.tokens > 0 and sel.method == "embedding",
                "SelectContext embedding with a model collection", sel)
        # Corpus jobs: the model embedder is refused for texts without
        # vectors; a model collection's stored vectors serve as they are.
        jl = os.path.join(d.tmp, "in.jsonl")
        with open(jl, "w") as f:
            for k, t in DOCS.items():
                f.write('{"id": "%s", "text": "%s"}\n' % (k, t))
        r.raises(grpc.StatusCode.INVALID_ARGUMENT,
                 lambda: list(c.reorder(os.path.join(d.tmp, "o1"), input_jsonl=jl,
                                        embedder="model")),
                 "a Reorder job with embedder model", "hash embedder only")
        r.raises(grpc.StatusCode.FAILED_PRECONDITION,
                 lambda: list(c.reorder(os.path.join(d.tmp, "o2"), input_jsonl=jl,
                                        collection="m")),
                 "a Reorder job embedding with a model collection's embedder",
                 "hash embedder only")
        ev = list(c.reorder(os.path.join(d.tmp, "o3"), collection="m"))
        r.eq(ev[-1].state, "done", "a Reorder job over a model collection's stored vectors")
        # Another model: vectors of "m" would mix; lexical search still works.
        for other in (QWEN2, LLAMA_Q8):
            c.load_model(other)
            r.raises(grpc.StatusCode.FAILED_PRECONDITION,
                     lambda: c.put("new text", id="x", collection="m"),
                     "put under %s" % os.path.basename(other), "the loaded model is")
            r.raises(grpc.StatusCode.FAILED_PRECONDITION,
                     lambda: c.search(text="comet", mode="vector", collection="m"),
                     "vector search under %s" % os.path.basename(other), "ctxd-random")
            r.raises(grpc.StatusCode.FAILED_PRECONDITION,
                     lambda: c.search(text="comet", mode="hybrid", collection="m"),
                     "hybrid search under %s" % os.path.basename(other))
            r.raises(grpc.StatusCode.FAILED_PRECONDITION,
                     lambda: c.select("comet", text=long_text, method="embedding",
                                      collection="m"),
                     "SelectContext embedding under %s" % os.path.basename(other),
                     "the loaded model is")
            res = c.search(text="comet tail", mode="lexical", collection="m")
            r.check(res.hits and res.hits[0].chunk.doc_id == "comet",
                    "lexical search under another model", res)
        c.load_model(LLAMA)
        check_exact(r, c, "m", "llama again")
        c.put("new text about ships", id="x", collection="m")
        r.eq(c.search(text="new text about ships", mode="vector", k=1,
                      collection="m").hits[0].chunk.doc_id, "x", "put after reload")


def case_restart(r):
    d = Daemon(r, args=["--model.path", LLAMA])
    d.start()
    try:
        c = d.client()
        c.create_collection("m", embedder="model", index_spec="HNSW32")
        put_docs(c, "m")
        check_exact(r, c, "m", "before restart")
        # Restart without the model: recovery reads the vectors from LMDB.
        d.args = []
        d.kill9()
        d.start()
        c = d.client()
        infos = {i.config.name: i for i in c.list_collections()}
        r.eq(infos["m"].indexed, len(DOCS), "index recovered without the model")
        r.raises(grpc.StatusCode.FAILED_PRECONDITION,
                 lambda: c.search(text="comet", mode="vector", collection="m"),
                 "vector search with no model", "no model is loaded")
        res = c.search(text="river flooded", mode="lexical", collection="m")
        r.check(res.hits and res.hits[0].chunk.doc_id == "river",
                "lexical search with no model", res)
        c.load_model(LLAMA)
        check_exact(r, c, "m", "after restart and LoadModel")
        d.restart()
        c = d.client()
        r.raises(grpc.StatusCode.FAILED_PRECONDITION,
                 lambda: c.put("t", id="y", collection="m"),
                 "put after a clean restart without the model", "no model is loaded")
    finally:
        d.stop()


def case_mini(r):
    with Daemon(r, args=["--model.path", MINI]) as d:
        c = d.client()
        info = c.create_collection("mini", embedder="model")
        r.eq(info.config.dim, c.stats().model.embedding_length,
             "ctxd-mini: dim = n_embd")
        put_docs(c, "mini")
        check_exact(r, c, "mini", "ctxd-mini")


def main():
    r = Report("test_model_embedder")
    for f in (LLAMA, LLAMA_Q8, QWEN2):
        if not r.check(os.path.exists(f), "fixture %s exists" % f):
            r.finish()
    r.case("model embedder without a model", case_no_model, r)
    r.case("model embedder: create, put, search, swaps", case_model, r)
    r.case("model embedder: restart recovery without the model", case_restart, r)
    if os.path.exists(MINI):
        r.case("model embedder over ctxd-mini", case_mini, r)
    r.finish()


if __name__ == "__main__":
    main()
