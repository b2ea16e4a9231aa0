/* lmtok.h - fast exact tokenization for byte-level BPE vocabularies: the
 * text is cut at points where every supported pre-tokenizer cuts anyway, and
 * each piece's tokens (from llama.cpp, so exactly what it would give) are
 * kept in a cache. English prose repeats its words, so most pieces are
 * found there; llama.cpp's BPE runs only for new ones, a run of them in one
 * call.
 *
 * The cut points: a space that follows an ASCII letter, digit or
 * punctuation mark and precedes an ASCII letter. The pre-tokenizers of
 * GPT-2, Llama 3 and Qwen2 always start a new pre-token at such a space
 * (their word rules take at most one leading space or symbol and never
 * reach back across a letter, digit or symbol run), and BPE never merges
 * across pre-tokens, so the tokens of the whole are the tokens of the
 * pieces end to end. Other vocabularies get no lmtok (NULL): lm.c then calls
 * llama.cpp on the whole text.
 *
 * Thread-safe: the cache is split in shards, each behind a mutex. */
#ifndef CTXD_LMTOK_H
#define CTXD_LMTOK_H

#include <stddef.h>
#include <stdint.h>

struct llama_vocab;
typedef struct lmtok lmtok;

/* An lmtok for the vocabulary, or NULL when its pre-tokenizer (`pre`, the
 * GGUF's tokenizer.ggml.pre) is not one of those above, when a user-defined
 * token could span a cut point, or when out of memory. text_off[i] ..
 * text_off[i+1] delimits token i's text in some array (lm.c's token texts):
 * its length in bytes is all lmtok reads; it must outlive the lmtok. */
lmtok *lmtok_create(const struct llama_vocab *v, const char *pre, const uint32_t *text_off);

void lmtok_free(lmtok *t);

/* Append the tokens of s[0..n) (no specials added or parsed) to the growable
 * array *ids (*n_ids used, *cap allocated; realloc'ed as needed).
 * Returns 0, or -1 when out of memory (the array then holds a prefix). */
int lmtok_tokenize(lmtok *t, const char *s, size_t n, int32_t **ids, size_t *n_ids,
                   size_t *cap);

/* The number of tokens of s[0..n), as lmtok_tokenize would give. */
uint64_t lmtok_count(lmtok *t, const char *s, size_t n);

#endif
