/* lex.h - the lexical analyser shared by BM25 and the hash embedder: splits
 * UTF-8 text into normalised terms, and the BM25 formula.
 *
 * The rule (also in the README, "Lexical analysis"):
 *   - A term is a maximal run of word characters: ASCII letters and digits,
 *     and every non-ASCII character that is not punctuation, a symbol or a
 *     space (the ranges are in lex.c: Latin-1 punctuation, General
 *     Punctuation through Miscellaneous Symbols and Arrows U+2000-U+2BFF, CJK
 *     punctuation, fullwidth ASCII punctuation, emoji U+1F000-U+1FAFF, ...).
 *   - Han ideographs and kana are one term per character (those scripts
 *     write no spaces); Hangul syllables are letters like any other.
 *   - Case folding: ASCII, Latin-1, Latin Extended-A, Greek, Cyrillic and
 *     fullwidth Latin capitals become lower case (simple one-to-one folding;
 *     no accent stripping, no stemming, no stop words).
 *   - An apostrophe (' or U+2019) between two letters joins them and is
 *     dropped ("don't" -> "dont"), except the possessive "'s" at the end of
 *     a term, which is dropped with its s ("Brown's" -> "brown").
 *   - Terms longer than LEX_TERM_MAX bytes are cut there (at a character
 *     boundary).
 * The analyser is pure and thread-safe. */
#ifndef CTXD_LEX_H
#define CTXD_LEX_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define LEX_TERM_MAX 64

/* An iterator over the terms of valid UTF-8 text. Initialise with
 * lex_iter_init, then call lex_next until it returns 0. */
typedef struct lex_iter {
  const char *s;
  size_t n, pos;
} lex_iter;

void lex_iter_init(lex_iter *it, const char *s, size_t n);

/* Next term: its folded bytes in term[0..*len) (not NUL-terminated, *len <=
 * LEX_TERM_MAX) and the byte range [*start, *end) of the original text it
 * came from (start/end may be NULL). Returns 1, or 0 at the end. */
int lex_next(lex_iter *it, char term[LEX_TERM_MAX], size_t *len, size_t *start,
             size_t *end);

/* One distinct term of a text with its frequency. */
typedef struct lex_tf {
  char term[LEX_TERM_MAX];
  uint8_t len;
  uint32_t tf;
} lex_tf;

/* The distinct terms of s[0..n), sorted by bytes (memcmp, then length), with
 * their counts; *length = total number of terms (the BM25 document length).
 * *out is malloc'd (NULL when there are no terms), freed by the caller.
 * Errors: CTXD_ENOMEM. */
int lex_terms(const char *s, size_t n, lex_tf **out, size_t *n_out,
              uint32_t *length, ctxd_error *e);

/* BM25 parameters; the defaults are k1 = 1.2, b = 0.75. */
typedef struct lex_bm25 {
  double k1, b;
} lex_bm25;

#define LEX_BM25_K1 1.2
#define LEX_BM25_B 0.75

/* idf = ln(1 + (N - df + 0.5) / (df + 0.5)): the Lucene form, never negative.
 * N = chunks in the collection, df = chunks holding the term. */
double lex_bm25_idf(uint64_t N, uint64_t df);

/* One term's contribution before idf:
 * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)). */
double lex_bm25_tf(const lex_bm25 *p, uint32_t tf, uint32_t dl, double avgdl);

#endif
