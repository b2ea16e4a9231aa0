/* select_impl.h - internals shared by the select_*.c files (key-context
 * selection); not part of the library's API. The unit tests include it to
 * check the pieces (InfiniRetri's scoring) against their own loops. */
#ifndef CTXD_SELECT_IMPL_H
#define CTXD_SELECT_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "model/lm.h"
#include "select.h"

/* Input bytes per tokenization piece: the model path tokenizes the input in
 * pieces cut at sentence starts, each once to count and again (the same
 * piece, so the same tokens) when its ids are needed. */
#define SEL_PIECE_BYTES ((size_t)64 << 10)

/* A unit may exceed its cap only by one character's byte tokens (a single
 * character costing more tokens than the cap): sequences leave this room. */
#define SEL_SLACK 8

/* A unit: a sentence, or a part of one that was longer than the unit cap.
 * Unit i covers bytes [u[i].start, u[i+1].start) and tokens
 * [u[i].tok0, u[i+1].tok0) of the token stream; u[n] is the sentinel (end
 * of the selectable text, total tokens). */
typedef struct sel_unit {
  uint64_t start;
  uint64_t tok0;
} sel_unit;

/* A tokenization piece of the model path: bytes [start, next start), its
 * first token tok0 (the pieces array has a sentinel too). */
typedef struct sel_piece {
  uint64_t start;
  uint64_t tok0;
} sel_piece;

/* One select_run call. */
typedef struct sel_run {
  const select_env *env;
  select_opts o;          /* defaults resolved */
  int method;             /* resolved */
  const char *text;
  size_t len;             /* the whole input */
  size_t sel_len;         /* selectable end (XL3M's question tail is cut off) */
  const char *q;
  size_t qlen;
  lm_model *model;        /* for the model methods, else NULL */
  const tok *tk;          /* counts when model is NULL */
  int32_t prefix[8];      /* model: the tokens a sequence starts with (BOS) */
  uint32_t n_prefix;
  int32_t *qids;          /* model: the question's tokens (NULL: the tail) */
  uint32_t nq;

  sel_unit *u;            /* n_units + 1 */
  size_t n_units;
  sel_piece *pc;          /* model path: n_pieces + 1 */
  size_t n_pieces;
  uint64_t total_tokens;  /* of the whole input */

  uint64_t last_progress_us;
  int cancelled;
  select_stats st;
} sel_run;

uint64_t sel_now_us(void);

/* Call the progress callback for phase (at most every 200 ms unless force).
 * CTXD_ECANCELED when it asks to stop. */
int sel_progress(sel_run *r, const char *phase, uint64_t done, uint64_t total,
                 int force, ctxd_error *e);

/* For lm_ctx_set_abort: non-zero once the call was cancelled. */
int sel_abort_cb(void *arg);

static inline uint64_t sel_tokens(const sel_run *r, size_t a, size_t b) {
  return r->u[b].tok0 - r->u[a].tok0;
}

/* Build the unit table of text[0..len) with units of at most unit_max
 * tokens: with r->model, from the model's tokens (pieces too); else with
 * r->tk. Errors: CTXD_ENOMEM, CTXD_ECANCELED, the lm_tokenize errors. */
int sel_segment(sel_run *r, uint32_t unit_max, ctxd_error *e);

/* Model path: the ids of stream tokens [a, b), held in pieces. */
typedef struct sel_toks {
  const sel_run *r;
  size_t p0, p1;     /* pieces [p0, p1) held */
  int32_t *ids;      /* tokens of those pieces */
  size_t n, cap;
  lm_tokens tmp;
} sel_toks;

/* *ids points at tokens [a, b) (valid until the next call or free). Moving
 * forward drops pieces before a, so memory stays at the pieces covering
 * [a, b) plus one. Errors: CTXD_ENOMEM, CTXD_EINTERNAL (a piece tokenized
 * differently the second time), the lm_tokenize errors. */
int sel_toks_get(sel_toks *t, uint64_t a, uint64_t b, const int32_t **ids,
                 ctxd_error *e);
void sel_toks_free(sel_toks *t);

/* The tokens a model sequence starts with (BOS where the vocabulary asks
 * for one): *n of them (at most 8) in ids. */
int sel_prefix_ids(const lm_model *m, int32_t ids[8], uint32_t *n, ctxd_error *e);

/* A candidate for the final pick: units [u0, u1) and a score. */
typedef struct sel_cand {
  size_t u0, u1;
  float score;
} sel_cand;

/* Segments of whole units of about seg_tokens, each starting `overlap`
 * tokens of whole units before the previous one's end: *out (malloc'd,
 * score 0) and *n. Errors: CTXD_ENOMEM. */
int sel_segments(const sel_run *r, uint32_t seg_tokens, uint32_t overlap,
                 sel_cand **out, size_t *n, ctxd_error *e);

/* Best candidates first (ties: earlier first), each kept when its units not
 * yet kept fit what is left of the budget; the kept units become the
 * result's segments (runs of consecutive kept units merged, scored by the
 * best candidate among them) and context. Errors: CTXD_ENOMEM. */
int sel_pick(sel_run *r, sel_cand *c, size_t n, select_result *out,
             ctxd_error *e);

/* Methods: fill out (segs, context, tokens) from r's units. */
int sel_bm25(sel_run *r, select_result *out, ctxd_error *e);
int sel_embedding(sel_run *r, select_result *out, ctxd_error *e);
int sel_xl3m(sel_run *r, select_result *out, ctxd_error *e);
int sel_infini(sel_run *r, select_result *out, ctxd_error *e);

/* XL3M, the question tail: with no question, tokens [total - tail, total)
 * become the question (ids into *q, *nq) and the units are cut before them
 * (r->sel_len, r->n_units). */
int sel_xl3m_tail(sel_run *r, uint32_t tail, int32_t **q, uint32_t *nq,
                  ctxd_error *e);

/* InfiniRetri's per-token score of one step, from the head-summed attention
 * rows of the nq question tokens (rows[r * cols + j]) over columns
 * [c0, c1) (the context tokens that may be picked; the question's columns
 * are [c1, cols)):
 *   f_r[j] = (1/w) * sum of rows[r][t] for t in [j - w/2, j - w/2 + w)
 *            and in [c0, c1)                        (box filter, zero padded)
 *   q_r    = sum of rows[r][t] for t in [c1, cols)  (its attention to the
 *            question; 1 when weights are off)
 *   score[j - c0] = sum over r of q_r * f_r[j].
 * tmp holds c1 - c0 + 1 doubles. */
void sel_infini_scores(const float *rows, uint32_t nq, uint32_t cols,
                       uint32_t c0, uint32_t c1, uint32_t width, int weights,
                       float *score, double *tmp);

#endif
