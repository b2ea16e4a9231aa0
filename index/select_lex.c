/* select_lex.c - the selection methods that need no model: BM25 over the
 * document's own segments (idf from those segments), and the cosine between
 * the embedder's vectors of each segment and of the question. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lex.h"
#include "select_impl.h"

#define EMB_BATCH 32

/* Index of term t in the sorted question terms, or -1. */
static long find_term(const lex_tf *qt, size_t n, const char *t, size_t len) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t m = lo + (hi - lo) / 2;
    size_t ml = qt[m].len < len ? qt[m].len : len;
    int c = memcmp(qt[m].term, t, ml);
    if (c == 0) c = (qt[m].len > len) - (qt[m].len < len);
    if (c == 0) return (long)m;
    if (c < 0) lo = m + 1;
    else hi = m;
  }
  return -1;
}

typedef struct hit {
  uint32_t term, tf;
} hit;

int sel_bm25(sel_run *r, select_result *out, ctxd_error *e) {
  lex_tf *qt = NULL;
  size_t nqt = 0, nh = 0, ch = 0, ns = 0;
  uint32_t qlen = 0;
  uint32_t *dl = NULL, *tf = NULL, *touched = NULL;
  size_t *off = NULL;
  hit *h = NULL;
  uint64_t *df = NULL;
  sel_cand *c = NULL;
  int rc;

  if ((rc = lex_terms(r->q, r->qlen, &qt, &nqt, &qlen, e))) goto done;
  dl = calloc(r->n_units + 1, sizeof *dl);
  off = calloc(r->n_units + 1, sizeof *off);
  tf = calloc(nqt + 1, sizeof *tf);
  touched = calloc(nqt + 1, sizeof *touched);
  df = calloc(nqt + 1, sizeof *df);
  if (!dl || !off || !tf || !touched || !df) goto nomem;

  /* Each unit once: its length in terms and its question terms. */
  for (size_t u = 0; u < r->n_units; u++) {
    lex_iter it;
    char term[LEX_TERM_MAX];
    size_t len, nt = 0;
    size_t a = r->u[u].start, b = r->u[u + 1].start;
    lex_iter_init(&it, r->text + a, b - a);
    off[u] = nh;
    while (lex_next(&it, term, &len, NULL, NULL)) {
      dl[u]++;
      long k = nqt ? find_term(qt, nqt, term, len) : -1;
      if (k < 0) continue;
      if (tf[k]++ == 0) touched[nt++] = (uint32_t)k;
    }
    if (nh + nt > ch) {
      size_t cap = ch ? ch * 2 : 256;
      while (cap < nh + nt) cap *= 2;
      hit *p = realloc(h, cap * sizeof *h);
      if (!p) goto nomem;
      h = p;
      ch = cap;
    }
    for (size_t i = 0; i < nt; i++) {
      h[nh++] = (hit){touched[i], tf[touched[i]]};
      tf[touched[i]] = 0;
    }
    if ((u & 1023) == 0 && (rc = sel_progress(r, "score", u, 2 * r->n_units, 0, e))) goto done;
  }
  off[r->n_units] = nh;

  if ((rc = sel_segments(r, r->o.segment_tokens < r->o.token_budget ? r->o.segment_tokens
                                                                   : r->o.token_budget,
                         r->o.segment_overlap, &c, &ns, e)))
    goto done;
  /* Document frequencies and the mean length over the segments, then the
   * scores: a segment's term counts are its units' sums. */
  double dl_sum = 0;
  for (int pass = 0; pass < 2; pass++) {
    double avgdl = ns ? dl_sum / (double)ns : 1;
    if (avgdl <= 0) avgdl = 1;
    int def = r->env->bm25_k1 == 0 && r->env->bm25_b == 0;
    lex_bm25 p = {def ? LEX_BM25_K1 : r->env->bm25_k1, def ? LEX_BM25_B : r->env->bm25_b};
    for (size_t s = 0; s < ns; s++) {
      uint32_t len = 0;
      size_t nt = 0;
      for (size_t u = c[s].u0; u < c[s].u1; u++) {
        len += dl[u];
        for (size_t i = off[u]; i < off[u + 1]; i++)
          if ((tf[h[i].term] += h[i].tf) == h[i].tf) touched[nt++] = h[i].term;
      }
      double score = 0;
      for (size_t i = 0; i < nt; i++) {
        uint32_t k = touched[i];
        if (pass == 0) df[k]++;
        else score += lex_bm25_idf(ns, df[k]) * lex_bm25_tf(&p, tf[k], len, avgdl);
        tf[k] = 0;
      }
      if (pass == 0) dl_sum += len;
      else c[s].score = (float)score;
    }
  }
  r->st.segments = ns;
  if ((rc = sel_progress(r, "score", ns, ns, 1, e))) goto done;
  rc = sel_pick(r, c, ns, out, e);
  goto done;
nomem:
  rc = ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory for bm25 over %zu units", r->n_units);
done:
  free(qt);
  free(dl);
  free(off);
  free(tf);
  free(touched);
  free(df);
  free(h);
  free(c);
  return rc;
}

int sel_embedding(sel_run *r, select_result *out, ctxd_error *e) {
  const embedder *m = r->env->emb;
  sel_cand *c = NULL;
  size_t ns = 0;
  float *qv = NULL, *v = NULL;
  int rc;

  if ((rc = sel_segments(r, r->o.segment_tokens < r->o.token_budget ? r->o.segment_tokens
                                                                   : r->o.token_budget,
                         r->o.segment_overlap, &c, &ns, e)))
    goto done;
  qv = malloc((size_t)m->dim * sizeof *qv);
  v = malloc((size_t)EMB_BATCH * m->dim * sizeof *v);
  if (!qv || !v) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory for embeddings of dimension %u",
                     m->dim);
    goto done;
  }
  const char *qt[1] = {r->q};
  size_t ql[1] = {r->qlen};
  if ((rc = embed_texts(m, qt, ql, 1, qv, e))) goto done;
  for (size_t s0 = 0; s0 < ns; s0 += EMB_BATCH) {
    const char *texts[EMB_BATCH];
    size_t lens[EMB_BATCH], nb = ns - s0 < EMB_BATCH ? ns - s0 : EMB_BATCH;
    for (size_t i = 0; i < nb; i++) {
      const sel_cand *x = &c[s0 + i];
      texts[i] = r->text + r->u[x->u0].start;
      lens[i] = (size_t)(r->u[x->u1].start - r->u[x->u0].start);
    }
    if ((rc = embed_texts(m, texts, lens, nb, v, e))) goto done;
    for (size_t i = 0; i < nb; i++) {
      double d = 0;
      for (uint32_t k = 0; k < m->dim; k++) d += (double)qv[k] * v[i * m->dim + k];
      c[s0 + i].score = (float)d;
    }
    if ((rc = sel_progress(r, "score", s0 + nb, ns, 0, e))) goto done;
  }
  r->st.segments = ns;
  if ((rc = sel_progress(r, "score", ns, ns, 1, e))) goto done;
  rc = sel_pick(r, c, ns, out, e);
done:
  free(c);
  free(qv);
  free(v);
  return rc;
}
