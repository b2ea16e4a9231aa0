#!/usr/bin/python3
"""export.py - writes ctxd's reference model as a GGUF (llama architecture).

  export.py WEIGHTS.npz CONFIG.json VOCAB.gguf OUT.gguf [--dtype q8_0|f16]
            [--name NAME] [--ref REF.bin --ref-text TEXT]

WEIGHTS.npz holds train.py's float16 state dict (parameter names as in
model.py), CONFIG.json its model.Config. The tokenizer (every tokenizer.* key)
is copied from the GPT-2 vocabulary-only GGUF. 2-D weights are written as
Q8_0 (default) or f16, norms as f32; there is no output.weight: llama.cpp's
llama architecture then uses token_embd as the output matrix (tied).

With --ref, it also runs the model (numpy, float64, on the weights exactly as
the GGUF stores them) on the GPT-2 tokens of --ref-text and writes, for
tests/index/test_lmref.c, every --ref-stride-th logit of each position and
each position's arg max (little-endian):
  "CTXDLOG1", u32 text_len, n_tok, n_vocab, stride, char text[text_len],
  i32 ids[n_tok], i32 argmax[n_tok], f32 logits[n_tok][ceil(n_vocab / stride)]
Numpy only (plus bpe.py's `regex` for --ref).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf  # noqa: E402


def gguf_name(k):
    """model.py parameter name -> GGUF tensor name."""
    if k.startswith("blocks."):
        _, i, rest = k.split(".", 2)
        return "blk.%s.%s" % (i, rest)
    return k


def stored(arr, dtype):
    """The float values a tensor has once written with dtype."""
    if arr.ndim == 2 and dtype == gguf.GGML_Q8_0:
        return gguf.dequantize_q8_0(arr)
    if arr.ndim == 2 and dtype == gguf.GGML_F16:
        return arr.astype(np.float16).astype(np.float32)
    return arr.astype(np.float32)


def rope(x, base):
    """x [T, H, hd], llama.cpp NORM mode: pairs (2i, 2i+1)."""
    T, _, hd = x.shape
    inv = base ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(T, dtype=np.float64)[:, None] * inv[None, :]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def forward(W, c, ids):
    """Logits [T, vocab] in float64 (the same computation as model.py)."""
    def norm(x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + c["eps"]) * w
    T = len(ids)
    nh, nkv = c["n_head"], c["n_kv_head"]
    hd = c["d"] // nh
    x = W["token_embd.weight"][ids]
    mask = np.triu(np.full((T, T), -np.inf), k=1)
    for i in range(c["n_layer"]):
        p = "blk.%d." % i
        h = norm(x, W[p + "attn_norm.weight"])
        q = rope((h @ W[p + "attn_q.weight"].T).reshape(T, nh, hd), c["rope_base"])
        k = rope((h @ W[p + "attn_k.weight"].T).reshape(T, nkv, hd), c["rope_base"])
        v = (h @ W[p + "attn_v.weight"].T).reshape(T, nkv, hd)
        o = np.empty((T, nh, hd))
        for hh in range(nh):
            g = hh // (nh // nkv)
            s = q[:, hh] @ k[:, g].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            o[:, hh] = s @ v[:, g]
        x = x + o.reshape(T, nh * hd) @ W[p + "attn_output.weight"].T
        h = norm(x, W[p + "ffn_norm.weight"])
        gt = h @ W[p + "ffn_gate.weight"].T
        x = x + ((gt / (1 + np.exp(-gt))) * (h @ W[p + "ffn_up.weight"].T)) @ W[p + "ffn_down.weight"].T
    x = norm(x, W["output_norm.weight"])
    return x @ W["token_embd.weight"].T


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("weights")
    ap.add_argument("config")
    ap.add_argument("vocab")
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=["q8_0", "f16"], default="q8_0")
    ap.add_argument("--name", default="ctxd-mini")
    ap.add_argument("--ref")
    ap.add_argument("--ref-text", default="")
    ap.add_argument("--ref-stride", type=int, default=16)
    a = ap.parse_args()
    c = json.load(open(a.config))
    sd = dict(np.load(a.weights))
    dt = gguf.GGML_Q8_0 if a.dtype == "q8_0" else gguf.GGML_F16
    vr = gguf.Reader(a.vocab)
    w = gguf.Writer("llama")
    w.add("general.name", gguf.T_STR, a.name)
    w.add("general.file_type", gguf.T_U32, gguf.FTYPE[dt])
    w.add("llama.vocab_size", gguf.T_U32, c["vocab"])
    w.add("llama.context_length", gguf.T_U32, c["ctx"])
    w.add("llama.embedding_length", gguf.T_U32, c["d"])
    w.add("llama.block_count", gguf.T_U32, c["n_layer"])
    w.add("llama.feed_forward_length", gguf.T_U32, c["ff"])
    w.add("llama.attention.head_count", gguf.T_U32, c["n_head"])
    w.add("llama.attention.head_count_kv", gguf.T_U32, c["n_kv_head"])
    w.add("llama.rope.dimension_count", gguf.T_U32, c["d"] // c["n_head"])
    w.add("llama.rope.freq_base", gguf.T_F32, float(c["rope_base"]))
    w.add("llama.attention.layer_norm_rms_epsilon", gguf.T_F32, float(c["eps"]))
    n_vocab = gguf.copy_tokenizer(vr, w)
    if n_vocab != c["vocab"]:
        sys.exit("export: the vocabulary has %d tokens, the model %d" % (n_vocab, c["vocab"]))
    W = {}
    order = ["token_embd.weight"] + sorted((k for k in sd if k.startswith("blocks.")),
                                           key=lambda k: (int(k.split(".")[1]), k)) + ["output_norm.weight"]
    for k in order:
        arr = sd[k].astype(np.float32)
        name = gguf_name(k)
        t = dt if arr.ndim == 2 else gguf.GGML_F32
        w.add_tensor(name, arr, t)
        W[name] = stored(arr, t).astype(np.float64)
    w.write(a.out)
    print("export: wrote %s (%.1f MB)" % (a.out, os.path.getsize(a.out) / 1e6))
    if a.ref:
        import bpe
        ids = bpe.BPE(a.vocab).encode(a.ref_text)
        logits = forward(W, c, np.asarray(ids))
        text = a.ref_text.encode("utf-8")
        with open(a.ref, "wb") as f:
            f.write(b"CTXDLOG1")
            f.write(struct.pack("<4I", len(text), len(ids), c["vocab"], a.ref_stride))
            f.write(text)
            f.write(np.asarray(ids, dtype="<i4").tobytes())
            f.write(logits.argmax(axis=1).astype("<i4").tobytes())
            f.write(logits[:, ::a.ref_stride].astype("<f4").tobytes())
        print("export: reference logits of %d tokens -> %s" % (len(ids), a.ref))


if __name__ == "__main__":
    main()
