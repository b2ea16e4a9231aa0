/* select_xl3m.c - XL3M: each segment scored by the model's certainty on the
 * question right after it. Every sequence of the context is one
 * [BOS] + segment + question, xl3m_batch of them per lm_eval call (so per
 * llama_decode, up to LM_BATCH_MAX tokens); the scores are the mean entropy
 * (negated) or mean log-probability of the distributions that predict the
 * question's tokens. The question's last token is never fed: nothing is
 * predicted from it. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "select_impl.h"

int sel_xl3m_tail(sel_run *r, uint32_t tail, int32_t **q, uint32_t *nq, ctxd_error *e) {
  sel_toks ts = {.r = r};
  lm_tokens t = {0};
  const int32_t *ids;
  int rc;
  *q = NULL;
  *nq = 0;
  uint64_t total = r->total_tokens, T = total - tail;
  /* The piece holding token T; T moves forward to a character start. */
  size_t p = 0;
  while (p + 1 < r->n_pieces && r->pc[p + 1].tok0 <= T) p++;
  const sel_piece *pc = &r->pc[p];
  if ((rc = lm_tokenize(r->model, r->text + pc->start, pc[1].start - pc->start, 0, &t, e)))
    goto done;
  size_t k = (size_t)(T - pc->tok0);
  while (k < t.n && ((unsigned char)r->text[pc->start + t.start[k]] & 0xC0) == 0x80) k++;
  uint64_t cut = k < t.n ? pc->start + t.start[k] : pc[1].start;
  T = pc->tok0 + k;
  if ((rc = sel_toks_get(&ts, T, total, &ids, e))) goto done;
  *nq = (uint32_t)(total - T);
  *q = malloc((*nq ? *nq : 1) * sizeof **q);
  if (!*q) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory");
    goto done;
  }
  memcpy(*q, ids, *nq * sizeof **q);
  /* The units end before the tail. */
  size_t n = 0;
  while (n < r->n_units && r->u[n].tok0 < T) n++;
  r->n_units = n;
  r->u[n] = (sel_unit){n ? cut : 0, T};
  r->sel_len = n ? cut : 0;
done:
  sel_toks_free(&ts);
  lm_tokens_free(&t);
  return rc;
}

int sel_xl3m(sel_run *r, select_result *out, ctxd_error *e) {
  const select_opts *o = &r->o;
  int32_t *tailq = NULL;
  const int32_t *q = r->qids;
  uint32_t nq = r->nq;
  sel_cand *c = NULL;
  size_t ns = 0;
  lm_ctx *ctx = NULL;
  float *val = NULL;
  lm_append *req = NULL;
  sel_toks ts = {.r = r};
  int rc;

  if (!q) {
    if (r->total_tokens <= o->question_tail) { /* all question: nothing to pick */
      r->n_units = 0;
      r->sel_len = 0;
      return sel_pick(r, NULL, 0, out, e);
    }
    if ((rc = sel_xl3m_tail(r, o->question_tail, &tailq, &nq, e))) goto done;
    q = tailq;
  }
  lm_info in;
  lm_model_info(r->model, &in);
  uint64_t n_ctx_train = in.n_ctx_train ? in.n_ctx_train : LM_CTX_MAX;
  uint64_t seg_max = o->segment_tokens < o->token_budget ? o->segment_tokens : o->token_budget;
  if (seg_max > n_ctx_train - r->n_prefix - nq) seg_max = n_ctx_train - r->n_prefix - nq;
  if ((rc = sel_segments(r, (uint32_t)seg_max, o->segment_overlap, &c, &ns, e))) goto done;
  uint32_t B = o->xl3m_batch < ns ? o->xl3m_batch : (uint32_t)(ns ? ns : 1);

  lm_ctx_opts co;
  lm_ctx_defaults(&co);
  uint64_t per_seq = r->n_prefix + seg_max + nq + SEL_SLACK;
  co.n_ctx = (uint32_t)per_seq;
  co.n_seq = B;
  co.n_batch = (uint32_t)(B * per_seq < LM_BATCH_MAX ? B * per_seq : LM_BATCH_MAX);
  co.n_threads = o->n_threads;
  co.flash_attn = o->flash_attn;
  if ((rc = lm_ctx_create(r->model, &co, &ctx, e))) goto done;
  lm_ctx_set_abort(ctx, sel_abort_cb, r);
  val = malloc((size_t)B * nq * sizeof *val);
  req = malloc((size_t)B * 3 * sizeof *req);
  if (!val || !req) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory for a batch of %u", B);
    goto done;
  }
  int entropy = o->xl3m_score == SELECT_XL3M_ENTROPY;
  for (size_t s0 = 0; s0 < ns; s0 += B) {
    size_t nb = ns - s0 < B ? ns - s0 : B, nr = 0;
    uint64_t a = r->u[c[s0].u0].tok0, z = r->u[c[s0 + nb - 1].u1].tok0;
    const int32_t *ids;
    if ((rc = sel_toks_get(&ts, a, z, &ids, e))) goto done;
    lm_ctx_clear(ctx);
    for (size_t i = 0; i < nb; i++) {
      uint64_t sa = r->u[c[s0 + i].u0].tok0, sz = r->u[c[s0 + i].u1].tok0;
      uint32_t sl = (uint32_t)(sz - sa), seq = (uint32_t)i;
      float *v = val + i * nq;
      if (r->n_prefix)
        req[nr++] = (lm_append){.seq = seq, .ids = r->prefix, .n = r->n_prefix,
                                .out_from = r->n_prefix};
      req[nr++] = (lm_append){.seq = seq, .ids = ids + (sa - a), .n = sl, .out_from = sl - 1,
                              .last_target = q[0], .entropy = entropy ? v : NULL,
                              .logprob = entropy ? NULL : v};
      if (nq > 1)
        req[nr++] = (lm_append){.seq = seq, .ids = q, .n = nq - 1, .out_from = 0,
                                .last_target = q[nq - 1], .entropy = entropy ? v + 1 : NULL,
                                .logprob = entropy ? NULL : v + 1};
      uint64_t len = r->n_prefix + sl + nq - 1;
      if (len > r->st.max_seq_tokens) r->st.max_seq_tokens = len;
    }
    if ((rc = lm_eval(ctx, req, nr, e))) goto done;
    for (size_t i = 0; i < nb; i++) {
      double sum = 0;
      for (uint32_t k = 0; k < nq; k++) sum += val[i * nq + k];
      double mean = sum / nq;
      c[s0 + i].score = (float)(entropy ? -mean : mean);
    }
    r->st.model_outputs += (uint64_t)nb * nq;
    if ((rc = sel_progress(r, "score", s0 + nb, ns, 0, e))) goto done;
  }
  r->st.segments = ns;
  lm_stats ls;
  lm_ctx_stats(ctx, &ls);
  r->st.model_tokens = ls.tokens;
  r->st.model_decodes = ls.decodes;
  r->st.model_us = ls.decode_us;
  if ((rc = sel_progress(r, "score", ns, ns, 1, e))) goto done;
  rc = sel_pick(r, c, ns, out, e);
done:
  sel_toks_free(&ts);
  lm_ctx_free(ctx);
  free(val);
  free(req);
  free(c);
  free(tailq);
  return rc;
}
