/* select_infini.c - InfiniRetri (Ye et al. 2025, "Infinite Retrieval:
 * Attention Enhanced LLMs in Long-Context Processing"): the input is read
 * in windows of whole units; each step runs [BOS] + cache + window +
 * question in one sequence (the cache prefix that did not change stays in
 * the KV cache), scores every context token by the question's attention to
 * it in one layer (sel_infini_scores), and keeps as the next cache every
 * unit that holds one of the top_k tokens, in input order, capped at
 * cache_max_tokens by accumulated score. The last cache, ranked by those
 * scores, is the selection. Memory: the sequence is at most BOS + cache +
 * window + question tokens whatever the input's length. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "select_impl.h"

void sel_infini_scores(const float *rows, uint32_t nq, uint32_t cols, uint32_t c0, uint32_t c1,
                       uint32_t width, int weights, float *score, double *tmp) {
  uint32_t n = c1 - c0, h = width / 2;
  for (uint32_t j = 0; j < n; j++) score[j] = 0;
  for (uint32_t r = 0; r < nq; r++) {
    const float *row = rows + (size_t)r * cols;
    double w = 1;
    if (weights) {
      w = 0;
      for (uint32_t t = c1; t < cols; t++) w += row[t];
    }
    tmp[0] = 0;
    for (uint32_t j = 0; j < n; j++) tmp[j + 1] = tmp[j] + row[c0 + j];
    double k = w / width;
    for (uint32_t j = 0; j < n; j++) {
      uint32_t a = j > h ? j - h : 0;
      uint32_t b = j + width - h < n ? j + width - h : n;
      score[j] += (float)(k * (tmp[b] - tmp[a]));
    }
  }
}

/* The k highest of score[0..n) (ties: the earlier) into idx[0..k), by
 * quickselect over idx (which holds 0..n-1 on entry). */
static int above(const float *s, uint32_t a, uint32_t b) {
  return s[a] > s[b] || (s[a] == s[b] && a < b);
}

static void top_k(const float *s, uint32_t *idx, uint32_t n, uint32_t k) {
  uint32_t lo = 0, hi = n;
  while (hi - lo > 1) {
    uint32_t m = lo + (hi - lo) / 2, p = idx[m], st = lo;
    idx[m] = idx[hi - 1];
    idx[hi - 1] = p;
    for (uint32_t i = lo; i + 1 < hi; i++)
      if (above(s, idx[i], p)) {
        uint32_t x = idx[i];
        idx[i] = idx[st];
        idx[st++] = x;
      }
    idx[hi - 1] = idx[st];
    idx[st] = p;
    if (st == k || st + 1 == k) return;
    if (st > k) hi = st;
    else lo = st + 1;
  }
}

/* A unit of one step: from the cache or from the window. */
typedef struct sunit {
  size_t u;      /* unit index */
  uint32_t off;  /* first column */
  uint32_t n;    /* tokens */
  float acc;     /* accumulated score before this step */
  float step;    /* this step's: the sum of its top tokens' scores */
  int top;       /* holds a top token */
} sunit;

static int by_acc(const void *a, const void *b) {
  const sunit *x = *(const sunit *const *)a, *y = *(const sunit *const *)b;
  float sx = x->acc + x->step, sy = y->acc + y->step;
  if (sx != sy) return sx > sy ? -1 : 1;
  return (x->u > y->u) - (x->u < y->u);
}

int sel_infini(sel_run *r, select_result *out, ctxd_error *e) {
  const select_opts *o = &r->o;
  const int32_t *q = r->qids;
  uint32_t nq = r->nq, cmax = o->cache_max_tokens, win = o->window_tokens;
  uint32_t cap = r->n_prefix + cmax + win + nq + SEL_SLACK;
  lm_ctx *ctx = NULL;
  sel_toks ts = {.r = r};
  int32_t *seq = NULL, *cache = NULL;
  uint32_t *owner = NULL, *idx = NULL;
  float *score = NULL;
  double *tmp = NULL;
  sunit *su = NULL, *cu = NULL, **order = NULL;
  sel_cand *c = NULL;
  size_t n_cache = 0;
  uint32_t cache_len = 0;
  int rc;

  lm_ctx_opts co;
  lm_ctx_defaults(&co);
  co.n_ctx = cap;
  co.attn = 1;
  co.attn_layer = o->attn_layer;
  co.flash_attn = o->flash_attn;
  co.n_threads = o->n_threads;
  if ((rc = lm_ctx_create(r->model, &co, &ctx, e))) goto done;
  lm_ctx_set_abort(ctx, sel_abort_cb, r);
  seq = malloc((size_t)cap * sizeof *seq);
  cache = malloc(((size_t)cmax + 1) * sizeof *cache);
  owner = malloc((size_t)cap * sizeof *owner);
  idx = malloc((size_t)cap * sizeof *idx);
  score = malloc((size_t)cap * sizeof *score);
  tmp = malloc(((size_t)cap + 1) * sizeof *tmp);
  su = malloc(((size_t)cmax + win + 1) * sizeof *su);
  cu = malloc(((size_t)cmax + 1) * sizeof *cu);
  order = malloc(((size_t)cmax + win + 1) * sizeof *order);
  if (!seq || !cache || !owner || !idx || !score || !tmp || !su || !cu || !order) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory for a sequence of %u tokens", cap);
    goto done;
  }

  for (size_t pos = 0; pos < r->n_units;) {
    size_t wend = pos + 1;
    while (wend < r->n_units && sel_tokens(r, pos, wend + 1) <= win) wend++;
    const int32_t *wids;
    uint32_t wn = (uint32_t)sel_tokens(r, pos, wend);
    if ((rc = sel_toks_get(&ts, r->u[pos].tok0, r->u[wend].tok0, &wids, e))) goto done;

    /* The sequence and which unit owns each column. */
    uint32_t L = 0, ns = 0;
    memcpy(seq, r->prefix, r->n_prefix * sizeof *seq);
    L = r->n_prefix;
    memcpy(seq + L, cache, (size_t)cache_len * sizeof *seq);
    for (size_t i = 0; i < n_cache; i++) {
      su[ns] = cu[i];
      su[ns].off = L;
      for (uint32_t j = 0; j < cu[i].n; j++) owner[L++] = ns;
      ns++;
    }
    memcpy(seq + L, wids, (size_t)wn * sizeof *seq);
    for (size_t u = pos; u < wend; u++) {
      uint32_t n = (uint32_t)sel_tokens(r, u, u + 1);
      su[ns] = (sunit){.u = u, .off = L, .n = n};
      for (uint32_t j = 0; j < n; j++) owner[L++] = ns;
      ns++;
    }
    memcpy(seq + L, q, (size_t)nq * sizeof *seq);
    uint32_t total = L + nq;
    if (total > r->st.max_seq_tokens) r->st.max_seq_tokens = total;

    uint32_t keep = lm_seq_common_prefix(ctx, 0, seq, L);
    if ((rc = lm_seq_truncate(ctx, 0, keep, e))) goto done;
    if ((rc = lm_eval_attn(ctx, 0, seq + keep, total - keep, L - keep, LM_ATTN_SUM_HEADS, e)))
      goto done;
    uint32_t rows, heads, cols;
    const float *att = lm_attn_rows(ctx, &rows, &heads, &cols);
    if (rows != nq || heads != 1 || cols != total) {
      rc = ctxd_seterr(e, CTXD_EINTERNAL, "select: attention rows %u x %u x %u, expected %u x 1 x %u",
                       rows, heads, cols, nq, total);
      goto done;
    }

    /* Score, pick the top tokens, credit their units. The first position
     * (BOS, or the attention sink) is never picked. */
    uint32_t c0 = r->n_prefix ? r->n_prefix : 1;
    if (c0 > L) c0 = L;
    uint32_t n = L - c0, k = o->top_k < n ? o->top_k : n;
    sel_infini_scores(att, nq, cols, c0, L, o->filter_width, o->question_weights, score, tmp);
    for (uint32_t j = 0; j < n; j++) idx[j] = j;
    top_k(score, idx, n, k);
    for (uint32_t i = 0; i < k; i++) {
      sunit *x = &su[owner[c0 + idx[i]]];
      x->top = 1;
      x->step += score[idx[i]];
    }

    /* The next cache: units with a top token, within cmax by score. */
    size_t nc = 0;
    uint64_t tokens = 0;
    for (uint32_t i = 0; i < ns; i++)
      if (su[i].top) {
        order[nc++] = &su[i];
        tokens += su[i].n;
      }
    if (tokens > cmax) {
      qsort(order, nc, sizeof *order, by_acc);
      uint64_t left = cmax;
      for (size_t i = 0; i < nc; i++) {
        if (order[i]->n <= left) left -= order[i]->n;
        else order[i]->top = 0;
      }
    }
    n_cache = 0;
    cache_len = 0;
    for (uint32_t i = 0; i < ns; i++) {
      if (!su[i].top) continue;
      memcpy(cache + cache_len, seq + su[i].off, (size_t)su[i].n * sizeof *seq);
      cu[n_cache] = (sunit){.u = su[i].u, .n = su[i].n, .acc = su[i].acc + su[i].step};
      cache_len += su[i].n;
      n_cache++;
    }
    r->st.windows++;
    pos = wend;
    if ((rc = sel_progress(r, "window", r->u[pos].tok0, r->total_tokens, 0, e))) goto done;
  }
  r->st.segments = r->n_units;
  lm_stats ls;
  lm_ctx_stats(ctx, &ls);
  r->st.model_tokens = ls.tokens;
  r->st.model_decodes = ls.decodes;
  r->st.model_us = ls.decode_us;
  if ((rc = sel_progress(r, "window", r->total_tokens, r->total_tokens, 1, e))) goto done;

  c = malloc((n_cache ? n_cache : 1) * sizeof *c);
  if (!c) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory");
    goto done;
  }
  for (size_t i = 0; i < n_cache; i++) c[i] = (sel_cand){cu[i].u, cu[i].u + 1, cu[i].acc};
  rc = sel_pick(r, c, n_cache, out, e);
done:
  sel_toks_free(&ts);
  lm_ctx_free(ctx);
  free(seq);
  free(cache);
  free(owner);
  free(idx);
  free(score);
  free(tmp);
  free(su);
  free(cu);
  free(order);
  free(c);
  return rc;
}
