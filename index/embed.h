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
 *     with `bigrams`, every pair of adjacent terms, as the bytes of the two
 *     terms joined by one space;
 *   - a feature's hash h is the 64-bit FNV-1a of the 8 little-endian bytes
 *     of `seed` followed by the feature's bytes; its bucket is h mod dim and
 *     its sign is + when bit 63 of h is 0, - when it is 1; features with
 *     the same h are one feature;
 *   - a feature's weight is its count c in the text, or 1 + ln(c) with
 *     `sublinear_tf`, times `bigram_weight` for bigrams, times its idf when
 *     an idf callback is given (a unigram's idf is the callback's value,
 *     negative or NaN taken as 0; a bigram's is the mean of its two terms');
 *   - each bucket is the sum of sign * weight of its features, in float;
 *     the vector is L2-normalised; a text with no terms (or whose weights
 *     are all 0) gives a zero row. */
/* Where idf applies. The embedder weighs by the idf callback whenever one is
 * given; this setting, recorded in the text form, tells the embedder's
 * owner (a collection, an ordering job) when to give one:
 *   NONE  - never;
 *   QUERY - only when embedding a search query (from the statistics at
 *           search time): stored vectors stay a function of the text alone,
 *           so they never drift as documents arrive and switching between
 *           NONE and QUERY needs no re-embedding;
 *   ALL   - to stored texts too (each weighed by the statistics of the time
 *           it is embedded; an ordering job uses its input's statistics). */
typedef enum embed_hash_idf {
  EMBED_HASH_IDF_NONE = 0,
  EMBED_HASH_IDF_QUERY = 1,
  EMBED_HASH_IDF_ALL = 2,
} embed_hash_idf;

typedef struct embed_hash_opts {
  uint32_t dim;         /* EMBED_HASH_DIM_MIN..MAX; default EMBED_HASH_DIM */
  int bigrams;          /* 0 or 1; default EMBED_HASH_BIGRAMS */
  float bigram_weight;  /* 0..1000; default EMBED_HASH_BIGRAM_WEIGHT */
  int sublinear_tf;     /* 0 or 1; default EMBED_HASH_SUBLINEAR_TF */
  embed_hash_idf idf_mode; /* default EMBED_HASH_IDF */
  uint64_t seed;        /* default 0 */
  /* Optional idf: returns the weight of a unigram, called once per distinct
   * term of each text with its folded bytes (not NUL-terminated). NULL: no
   * idf. Must be thread-safe. Not part of the text form below: the owner of
   * the embedder supplies it according to idf_mode. */
  double (*idf)(const char *term, size_t len, void *arg);
  void *idf_arg;
} embed_hash_opts;

#define EMBED_HASH_DIM_MIN 16
#define EMBED_HASH_DIM_MAX 65536

/* Defaults chosen by measurement (tests/bench/embed/run.sh; the table and
 * the reasons are in the README, "Embedders"): nearest-neighbour precision
 * on Brown Corpus passages rises with dim, and the gain per KiB of vector
 * falls by 2.5-4x past 1024; bigrams never helped at a dim worth storing
 * (0.25 is the least harmful weight); sublinear tf won from dim 512 up and
 * idf at every dim, and idf on queries alone kept 77-85% of idf's gain
 * without stored vectors depending on the collection's statistics. */
#define EMBED_HASH_DIM 1024
#define EMBED_HASH_BIGRAMS 0
#define EMBED_HASH_BIGRAM_WEIGHT 0.25f
#define EMBED_HASH_SUBLINEAR_TF 1
#define EMBED_HASH_IDF EMBED_HASH_IDF_QUERY

/* Fill *o with the defaults. */
void embed_hash_defaults(embed_hash_opts *o);

/* Create a hash embedder (the options are copied). Errors: CTXD_EINVAL
 * (dim or bigram_weight out of range), CTXD_ENOMEM. Free with
 * embedder_free(). Its embed call allocates a work table per call (sized
 * by the longest text, growing with its distinct features) and fails only
 * with CTXD_ENOMEM. */
int embed_hash_create(const embed_hash_opts *o, embedder **out, ctxd_error *e);

/* The canonical text form of a hash embedder's options, e.g.
 * "hash:dim=1024,bigrams=0,bigram_weight=0.25,sublinear_tf=1,idf=query,seed=0", as
 * recorded in a collection's config (bigram_weight in the shortest decimal
 * that reads back as the same float; cap 160 is always enough).
 * embed_hash_parse reads it back: "hash" alone or "hash:" followed by any
 * subset of the keys, comma-separated, each at most once (the rest take the
 * defaults; the idf callback fields are left NULL). Booleans are 0 or 1,
 * idf is none, query or all, numbers plain decimals. *o is written only on
 * success.
 * Errors: CTXD_EINVAL naming the offending key or value (unknown key,
 * missing or bad value, key given twice, dim or bigram_weight out of
 * range, not a hash embedder). */
void embed_hash_format(const embed_hash_opts *o, char *buf, size_t cap);
int embed_hash_parse(const char *s, embed_hash_opts *o, ctxd_error *e);

/* The `model` embedder's text form (the embedder itself is the model
 * runtime's, lm.h's lm_embedder_create; the daemon creates it over its
 * loaded model). A collection records which model its vectors came from:
 *   model:name=<name>,dim=<n_embd>,hash=<8 hex>,max_tokens=<N>,pooling=<p>
 * name is the model's general.name with every byte outside A-Z a-z 0-9
 * . _ - and space made '_' (at most EMBED_MODEL_NAME_MAX bytes); hash is
 * embed_model_id's identity of the model; max_tokens cuts each text;
 * pooling is model, mean, cls or last (lm.h's enum lm_pooling, same
 * values). A client asks for "model" or "model:" with max_tokens and/or
 * pooling; the owner fills name, dim and hash from the loaded model.
 * embed_model_parse reads either form: keys in any order, each at most
 * once; `identified` tells whether name, dim and hash were all given
 * (a collection's config must be). *o is written only on success.
 * Errors: CTXD_EINVAL naming the key or value (unknown key, missing or bad
 * value, key given twice, some but not all of name/dim/hash, dim over
 * EMBED_MODEL_DIM_MAX, max_tokens over EMBED_MODEL_MAX_TOKENS_MAX, not a
 * model embedder). */
#define EMBED_MODEL_NAME_MAX 64
#define EMBED_MODEL_DIM_MAX 65536
#define EMBED_MODEL_MAX_TOKENS_MAX 32768

typedef struct embed_model_opts {
  char name[EMBED_MODEL_NAME_MAX + 1];
  uint32_t dim;        /* 0 when not identified */
  uint32_t hash;
  int identified;
  uint32_t max_tokens; /* 0: not given (the owner picks) */
  int pooling;         /* 0 model, 1 mean, 2 cls, 3 last */
} embed_model_opts;

int embed_model_parse(const char *s, embed_model_opts *o, ctxd_error *e);
/* The canonical form of an identified o (cap 256 is always enough). */
void embed_model_format(const embed_model_opts *o, char *buf, size_t cap);
/* 1 when s names the model embedder ("model" or "model:..."). */
int embed_is_model(const char *s);
/* The identity hash of a model from what describes it (name, architecture,
 * tokenizer name, and the sizes: width, layers, heads, kv heads, vocabulary,
 * parameters, bytes of weights): the low 32 bits of FNV-1a 64 over those
 * fields. Two files with the same architecture, sizes, tokenizer and name
 * but other weights of the same size get the same hash. */
uint32_t embed_model_id(const char *name, const char *arch,
                        const char *tokenizer, const uint64_t sizes[7]);
/* Copy a model name into o->name the way the text form keeps it. */
void embed_model_set_name(embed_model_opts *o, const char *name);

#endif
