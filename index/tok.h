/* tok.h - the tokenizer interface: counts the tokens of a span of text.
 *
 * The chunker and the budgets of later modules only need counts, so a
 * tokenizer is a name plus a count function. `tok_estimator()` is the fast
 * built-in estimator (its rule is documented in tok.c and the README); exact
 * model vocabularies plug in here when the model runtime lands.
 *
 * A tok is immutable after creation and safe to use from many threads. */
#ifndef CTXD_TOK_H
#define CTXD_TOK_H

#include <stddef.h>
#include <stdint.h>

typedef struct tok tok;

struct tok {
  const char *name; /* recorded in the store's meta record, e.g. "estimate-v1" */
  /* Number of tokens in s[0..n) (valid UTF-8). */
  uint64_t (*count)(const tok *t, const char *s, size_t n);
  void *ctx;        /* implementation data */
};

/* The built-in estimator: a static instance, never freed. */
const tok *tok_estimator(void);

static inline uint64_t tok_count(const tok *t, const char *s, size_t n) {
  return t->count(t, s, n);
}

#endif
