/* embed.h - the embedder interface, and the built-in `hash` embedder.
 *
 * An embedder turns texts into float32 vectors of a fixed dimension,
 * L2-normalised (so inner product = cosine). Collections name their
 * embedder; `hash` is built in and needs no model; the model runtime adds a
 * `model` embedder (a GGUF through llama.cpp) behind the same vtable.
 *
 * An embedder is immutable after creation and safe to use from many threads
 * at once. */
#ifndef CTXD_EMBED_H
#define CTXD_EMBED_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct embedder embedder;

struct embedder {
  const char *name; /* "hash", "model" */
  uint32_t dim;
  /* Embed n texts (texts[i] of lens[i] bytes, valid UTF-8) into out[n*dim],
   * each row L2-normalised (a text with no terms gives a zero row).
   * Errors: CTXD_ENOMEM, CTXD_EIO (model failures). */
  int (*embed)(const embedder *m, const char *const *texts, const size_t *lens,
               size_t n, float *out, ctxd_error *e);
  void (*free)(embedder *m);
  void *ctx;
};

static inline int embed_texts(const embedder *m, const char *const *texts,
                              const size_t *lens, size_t n, float *out,
                              ctxd_error *e) {
  return m->embed(m, texts, lens, n, out, e);
}

static inline void embedder_free(embedder *m) {
  if (m) m->free(m);
}

/* Options of the hash embedder. The rule (also in the README):
 *   - terms are lex.h's normalised terms; features are every unigram and,
 *     with `bigrams`, every pair of adjacent terms;
 *   - each feature hashes (64-bit FNV-1a of its bytes, with `seed`) to a
 *     bucket (hash mod dim) and a sign (one bit of the hash);
 *   - a feature's weight is its count c in the text, or 1 + ln(c) with
 *     `sublinear_tf`, times `bigram_weight` for bigrams, times its idf when
 *     an idf table is given;
 *   - the vector is L2-normalised. */
typedef struct embed_hash_opts {
  uint32_t dim;         /* 16..65536; default EMBED_HASH_DIM */
  int bigrams;          /* default 1 */
  float bigram_weight;  /* default EMBED_HASH_BIGRAM_WEIGHT */
  int sublinear_tf;     /* default 1 */
  uint64_t seed;        /* default 0 */
  /* Optional idf: returns the weight of a unigram (bigrams use the mean of
   * their two terms' weights). NULL: no idf. Must be thread-safe. */
  double (*idf)(const char *term, size_t len, void *arg);
  void *idf_arg;
} embed_hash_opts;

/* Defaults chosen by measurement (tests/bench/embed, README "Embedders"). */
#define EMBED_HASH_DIM 768
#define EMBED_HASH_BIGRAM_WEIGHT 0.5f

/* Fill *o with the defaults. */
void embed_hash_defaults(embed_hash_opts *o);

/* Create a hash embedder. Errors: CTXD_EINVAL (dim out of range, negative
 * weight), CTXD_ENOMEM. Free with embedder_free(). */
int embed_hash_create(const embed_hash_opts *o, embedder **out, ctxd_error *e);

/* The canonical text form of a hash embedder's options, e.g.
 * "hash:dim=768,bigrams=1,bigram_weight=0.5,sublinear_tf=1,seed=0", as
 * recorded in a collection's config; embed_hash_parse reads it back (and
 * accepts any subset of the keys, the rest taking the defaults).
 * Errors: CTXD_EINVAL with the offending key. */
void embed_hash_format(const embed_hash_opts *o, char *buf, size_t cap);
int embed_hash_parse(const char *s, embed_hash_opts *o, ctxd_error *e);

#endif
