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

/* The estimator's byte classes and run lengths (the rule is in tok.c). They
 * are public so the chunker can count inline in its single pass instead of
 * calling count() per word; tok_count() on any span gives the same total. */
enum tok_est_class {
  TOK_EST_SPACE = 0,  /* ASCII whitespace: free */
  TOK_EST_LETTER = 1, /* ASCII letter: a run of L costs 1 + (L-1)/TOK_EST_LETTER_RUN */
  TOK_EST_DIGIT = 2,  /* ASCII digit: a run of L costs 1 + (L-1)/TOK_EST_DIGIT_RUN */
  TOK_EST_SYMBOL = 3, /* other ASCII (punctuation, symbols, controls): 1 each */
  TOK_EST_LEAD = 4,   /* first byte of a 2- or 3-byte character: 1 */
  TOK_EST_LEAD4 = 5,  /* first byte of a 4-byte character: 2 */
  TOK_EST_CONT = 6,   /* continuation byte: free */
};
#define TOK_EST_LETTER_RUN 8
#define TOK_EST_DIGIT_RUN 3

extern const uint8_t tok_est_class[256];
/* Cost of one byte of each class outside letter/digit runs (runs: see above). */
extern const uint8_t tok_est_cost[7];

/* The built-in estimator: a static instance, never freed. */
const tok *tok_estimator(void);

static inline uint64_t tok_count(const tok *t, const char *s, size_t n) {
  return t->count(t, s, n);
}

#endif
