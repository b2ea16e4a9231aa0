#!/usr/bin/python3
"""make_random_gguf.py - writes a small random-weight GGUF language model.

The tokenizer is copied from a vocabulary-only GGUF (llama.cpp's
models/ggml-vocab-*.gguf); the weights are seeded random numbers in the
Llama layout (arch `llama`) or the Qwen2 layout (arch `qwen2`: q/k/v biases,
NEOX RoPE). With --ref, it also runs the model itself in numpy (float64) on a
few seeded token ids and writes, for an independent check of ctxd's model
runtime, every layer's attention probabilities and the logits:

  "CTXDREF1", u32 n_tok, n_layer, n_head, n_vocab,
  i32 ids[n_tok],
  f32 attn[n_layer][n_head][n_tok][n_tok]   (row i: query position i)
  f32 logits[n_tok][n_vocab]
  (all little-endian)

It needs numpy (python3-numpy) and gguf-py from the llama.cpp source tree
(PYTHONPATH=<llama.cpp>/gguf-py); nothing from PyPI.
"""
import argparse
import struct
import sys

import numpy as np
import gguf


def read_kv(path):
    """The key/value section of a GGUF, as (key, type, array item type, value).
    gguf-py's GGUFReader does the same but takes seconds on a 50k-token
    vocabulary; this reads only what the writer needs."""
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f",
              7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"GGUF":
        sys.exit("make_random_gguf: %s is not a GGUF file" % path)
    _version, _n_tensors, n_kv = struct.unpack_from("<IQQ", data, 4)
    off = 24

    def string(off):
        (n,) = struct.unpack_from("<Q", data, off)
        return data[off + 8: off + 8 + n].decode("utf-8"), off + 8 + n

    def value(t, off):
        if t == 8:
            return string(off)
        fmt = scalar[t]
        return struct.unpack_from(fmt, data, off)[0], off + struct.calcsize(fmt)

    out = []
    for _ in range(n_kv):
        key, off = string(off)
        (t,) = struct.unpack_from("<I", data, off)
        off += 4
        if t == 9:
            sub, n = struct.unpack_from("<IQ", data, off)
            off += 12
            if sub == 8:
                items = []
                for _ in range(n):
                    v, off = string(off)
                    items.append(v)
            else:
                fmt = scalar[sub]
                size = struct.calcsize(fmt)
                items = list(np.frombuffer(data, dtype=np.dtype(fmt), count=n, offset=off))
                off += size * n
            out.append((key, t, sub, items))
        else:
            v, off = value(t, off)
            out.append((key, t, None, v))
    return out


def copy_tokenizer(kv, writer):
    """Copy every tokenizer.* key of the vocabulary GGUF; returns n_vocab."""
    n_vocab = 0
    for name, t, sub, val in kv:
        if not name.startswith("tokenizer."):
            continue
        if sub is not None:
            writer.add_key_value(name, val, gguf.GGUFValueType(t), sub_type=gguf.GGUFValueType(sub))
            if name == "tokenizer.ggml.tokens":
                n_vocab = len(val)
        else:
            writer.add_key_value(name, val, gguf.GGUFValueType(t))
    if n_vocab == 0:
        sys.exit("make_random_gguf: the vocabulary GGUF has no tokenizer.ggml.tokens")
    return n_vocab


def rope(x, pos, base, neox):
    """x: [n_tok, n_head, d]. llama.cpp's NORM mode rotates adjacent pairs
    (2i, 2i+1); NEOX mode rotates (i, i + d/2). theta = pos * base^(-2i/d)."""
    d = x.shape[-1]
    inv = base ** (-np.arange(0, d, 2, dtype=np.float64) / d)  # [d/2]
    ang = pos[:, None].astype(np.float64) * inv[None, :]       # [n_tok, d/2]
    cos = np.cos(ang)[:, None, :]
    sin = np.sin(ang)[:, None, :]
    if neox:
        x0, x1 = x[..., : d // 2], x[..., d // 2:]
        return np.concatenate([x0 * cos - x1 * sin, x0 * sin + x1 * cos], axis=-1)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * cos - x1 * sin
    out[..., 1::2] = x0 * sin + x1 * cos
    return out


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def forward(W, hp, ids):
    """The reference forward pass (float64): attention of every layer, logits."""
    n = len(ids)
    nh, nkv, hd = hp["heads"], hp["kv_heads"], hp["head_dim"]
    pos = np.arange(n)
    x = W["token_embd.weight"][ids].astype(np.float64)
    attn_all = []
    mask = np.triu(np.full((n, n), -np.inf), k=1)
    for il in range(hp["layers"]):
        p = "blk.%d." % il
        h = rms_norm(x, W[p + "attn_norm.weight"], hp["eps"])
        q = h @ W[p + "attn_q.weight"].T.astype(np.float64)
        k = h @ W[p + "attn_k.weight"].T.astype(np.float64)
        v = h @ W[p + "attn_v.weight"].T.astype(np.float64)
        if hp["arch"] == "qwen2":
            q = q + W[p + "attn_q.bias"]
            k = k + W[p + "attn_k.bias"]
            v = v + W[p + "attn_v.bias"]
        q = rope(q.reshape(n, nh, hd), pos, hp["rope_base"], hp["neox"])
        k = rope(k.reshape(n, nkv, hd), pos, hp["rope_base"], hp["neox"])
        v = v.reshape(n, nkv, hd)
        probs = np.empty((nh, n, n))
        out = np.empty((n, nh, hd))
        for hh in range(nh):
            kv = hh // (nh // nkv)  # ggml broadcasts query heads over kv heads in groups
            s = q[:, hh, :] @ k[:, kv, :].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            s /= s.sum(axis=1, keepdims=True)
            probs[hh] = s
            out[:, hh, :] = s @ v[:, kv, :]
        attn_all.append(probs)
        x = x + out.reshape(n, nh * hd) @ W[p + "attn_output.weight"].T.astype(np.float64)
        h = rms_norm(x, W[p + "ffn_norm.weight"], hp["eps"])
        g = h @ W[p + "ffn_gate.weight"].T.astype(np.float64)
        u = h @ W[p + "ffn_up.weight"].T.astype(np.float64)
        x = x + ((g / (1.0 + np.exp(-g))) * u) @ W[p + "ffn_down.weight"].T.astype(np.float64)
    x = rms_norm(x, W["output_norm.weight"], hp["eps"])
    logits = x @ W["token_embd.weight"].T.astype(np.float64)  # tied output
    return np.stack(attn_all), logits


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vocab", required=True, help="vocabulary-only GGUF to take the tokenizer from")
    ap.add_argument("--out", required=True)
    ap.add_argument("--arch", choices=["llama", "qwen2"], default="llama")
    ap.add_argument("--name", default="ctxd-random")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--embd", type=int, default=64)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--ff", type=int, default=0, help="feed-forward width (default 2*embd)")
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--rope-base", type=float, default=10000.0)
    ap.add_argument("--eps", type=float, default=1e-5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--qk-gain", type=float, default=2.0,
                    help="scale of the q/k weights: higher gives peakier attention")
    ap.add_argument("--dtype", choices=["f32", "f16", "q8_0"], default="f32",
                    help="type of the 2-D weights (norms stay f32)")
    ap.add_argument("--ref", help="also write the reference file (see the module doc)")
    ap.add_argument("--ref-tokens", type=int, default=24)
    a = ap.parse_args()

    if a.embd % a.heads or a.heads % a.kv_heads:
        sys.exit("make_random_gguf: embd must divide by heads, heads by kv-heads")
    hd = a.embd // a.heads
    ff = a.ff or 2 * a.embd
    rng = np.random.default_rng(a.seed)

    kv = read_kv(a.vocab)
    w = gguf.GGUFWriter(a.out, a.arch)
    w.add_name(a.name)
    w.add_context_length(a.ctx)
    w.add_embedding_length(a.embd)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(ff)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_dimension_count(hd)
    w.add_rope_freq_base(a.rope_base)
    w.add_layer_norm_rms_eps(a.eps)
    w.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                     "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[a.dtype])
    n_vocab = copy_tokenizer(kv, w)

    wdt = np.float16 if a.dtype == "f16" else np.float32

    def mat(rows, cols, scale):
        return (rng.standard_normal((rows, cols), dtype=np.float32) * scale).astype(wdt)

    def norm(n):
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    W = {}
    W["token_embd.weight"] = mat(n_vocab, a.embd, 1.0)
    s_in = 1.0 / np.sqrt(a.embd)
    for il in range(a.layers):
        p = "blk.%d." % il
        W[p + "attn_norm.weight"] = norm(a.embd)
        W[p + "attn_q.weight"] = mat(a.heads * hd, a.embd, a.qk_gain * s_in)
        W[p + "attn_k.weight"] = mat(a.kv_heads * hd, a.embd, a.qk_gain * s_in)
        W[p + "attn_v.weight"] = mat(a.kv_heads * hd, a.embd, s_in)
        if a.arch == "qwen2":
            for t, n in (("q", a.heads * hd), ("k", a.kv_heads * hd), ("v", a.kv_heads * hd)):
                W[p + "attn_%s.bias" % t] = (0.1 * rng.standard_normal(n)).astype(np.float32)
        W[p + "attn_output.weight"] = mat(a.embd, a.heads * hd, s_in)
        W[p + "ffn_norm.weight"] = norm(a.embd)
        W[p + "ffn_gate.weight"] = mat(ff, a.embd, s_in)
        W[p + "ffn_up.weight"] = mat(ff, a.embd, s_in)
        W[p + "ffn_down.weight"] = mat(a.embd, ff, 1.0 / np.sqrt(ff))
    W["output_norm.weight"] = norm(a.embd)
    for name, t in W.items():
        if a.dtype == "q8_0" and t.ndim == 2:
            w.add_tensor(name, gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0),
                         raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    if a.ref:
        hp = dict(arch=a.arch, heads=a.heads, kv_heads=a.kv_heads, head_dim=hd,
                  layers=a.layers, eps=a.eps, rope_base=a.rope_base, neox=(a.arch == "qwen2"))
        ids = rng.integers(0, min(n_vocab, 50000), size=a.ref_tokens)
        Wf = {k: v.astype(np.float64) for k, v in W.items()}
        attn, logits = forward(Wf, hp, ids)
        with open(a.ref, "wb") as f:
            f.write(b"CTXDREF1")
            f.write(struct.pack("<4I", len(ids), a.layers, a.heads, n_vocab))
            f.write(np.asarray(ids, dtype="<i4").tobytes())
            f.write(np.asarray(attn, dtype="<f4").tobytes())
            f.write(np.asarray(logits, dtype="<f4").tobytes())


if __name__ == "__main__":
    main()
