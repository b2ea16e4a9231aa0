"""bpe.py - GPT-2 byte-level BPE read from a GGUF's vocabulary (gguf.py).

The same algorithm as GPT-2's encoder.py and llama.cpp's LLM_VOCAB_PRE_TYPE_GPT2:
split the text with GPT-2's pre-tokenizer pattern, map each piece's bytes to
the byte-level alphabet, merge the lowest-ranked pair until none applies, look
the pieces up. Pieces repeat in prose, so results are cached per piece.
Needs the `regex` module (\\p{L}, \\p{N}); nothing else beyond the stdlib.
"""
import regex

import gguf

PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class BPE:
    def __init__(self, vocab_gguf):
        r = gguf.Reader(vocab_gguf)
        if r.get("tokenizer.ggml.model") != "gpt2" or r.get("tokenizer.ggml.pre") != "gpt-2":
            raise gguf.GGUFError("%s: not a GPT-2 vocabulary" % vocab_gguf)
        self.tokens = list(r.get("tokenizer.ggml.tokens"))
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        self.ranks = {tuple(m.split(" ")): i for i, m in enumerate(r.get("tokenizer.ggml.merges"))}
        self.eot = int(r.get("tokenizer.ggml.eos_token_id"))
        self.b2u = bytes_to_unicode()
        self.u2b = {v: k for k, v in self.b2u.items()}
        self.cache = {}

    def _piece(self, piece):
        word = [self.b2u[b] for b in piece.encode("utf-8")]
        while len(word) > 1:
            best, bi = None, -1
            for i in range(len(word) - 1):
                r = self.ranks.get((word[i], word[i + 1]))
                if r is not None and (best is None or r < best):
                    best, bi = r, i
            if best is None:
                break
            a, b = word[bi], word[bi + 1]
            out, i = [], 0
            while i < len(word):  # merge every occurrence of the pair, left to right
                if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        return [self.ids[w] for w in word]

    def encode(self, text):
        out = []
        cache = self.cache
        for piece in PAT.findall(text):
            ids = cache.get(piece)
            if ids is None:
                ids = self._piece(piece)
                if len(cache) < 2_000_000:
                    cache[piece] = ids
            out.extend(ids)
        return out

    def decode(self, ids):
        bs = bytearray()
        for i in ids:
            bs.extend(self.u2b[c] for c in self.tokens[i])
        return bs.decode("utf-8", errors="replace")
