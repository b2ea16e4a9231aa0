/* select.c - key-context selection (select.h): options, checks, the unit
 * table, the whole-input shortcut, and the final pick under the budget that
 * every method ends with. The methods live in select_lex.c (BM25,
 * embedding), select_xl3m.c and select_infini.c; units in select_seg.c. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "select_impl.h"
#include "utf8.h"

static const char *const method_names[] = {"auto", "xl3m", "infiniretri", "bm25", "embedding"};

const char *select_method_name(int m) {
  if (m < 0 || m >= (int)(sizeof method_names / sizeof *method_names)) return "unknown";
  return method_names[m];
}

int select_method_parse(const char *s) {
  if (!s || !*s) return SELECT_AUTO;
  for (int i = 0; i < (int)(sizeof method_names / sizeof *method_names); i++)
    if (strcmp(s, method_names[i]) == 0) return i;
  return -1;
}

void select_defaults(select_opts *o) {
  memset(o, 0, sizeof *o);
  o->method = SELECT_AUTO;
  o->token_budget = 1024;
  o->segment_tokens = 256;
  o->question_tail = 64;
  o->xl3m_score = SELECT_XL3M_ENTROPY;
  o->xl3m_batch = 8;
  o->window_tokens = 1024;
  o->top_k = 300;
  o->filter_width = 8;
  o->attn_layer = -1;
  o->question_weights = 1;
}

void select_result_free(select_result *r) {
  if (!r) return;
  free(r->segs);
  free(r->context);
  memset(r, 0, sizeof *r);
}

uint64_t sel_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int sel_progress(sel_run *r, const char *phase, uint64_t done, uint64_t total, int force,
                 ctxd_error *e) {
  if (r->cancelled)
    return ctxd_seterr(e, CTXD_ECANCELED, "select: cancelled in phase %s", phase);
  if (!r->o.progress) return 0;
  uint64_t now = sel_now_us();
  if (!force && now - r->last_progress_us < 200000) return 0;
  r->last_progress_us = now;
  if (r->o.progress(r->o.progress_arg, phase, done, total)) {
    r->cancelled = 1;
    return ctxd_seterr(e, CTXD_ECANCELED, "select: cancelled in phase %s at %llu of %llu", phase,
                       (unsigned long long)done, (unsigned long long)total);
  }
  return 0;
}

int sel_abort_cb(void *arg) { return ((const sel_run *)arg)->cancelled; }

/* ---- segments and the final pick --------------------------------------- */

int sel_segments(const sel_run *r, uint32_t seg_tokens, uint32_t overlap, sel_cand **out,
                 size_t *n, ctxd_error *e) {
  size_t cap = 64, k = 0, s = 0;
  sel_cand *c = malloc(cap * sizeof *c);
  *out = NULL;
  *n = 0;
  if (!c) return ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory for segments");
  while (s < r->n_units) {
    size_t t = s + 1;
    while (t < r->n_units && sel_tokens(r, s, t + 1) <= seg_tokens) t++;
    if (k == cap) {
      sel_cand *p = realloc(c, 2 * cap * sizeof *c);
      if (!p) {
        free(c);
        return ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory for %zu segments", 2 * cap);
      }
      c = p;
      cap *= 2;
    }
    c[k++] = (sel_cand){s, t, 0.0f};
    if (t == r->n_units) break;
    /* The next one starts at the earliest unit whose run to t fits the
     * overlap, and always after s. */
    size_t ns = t;
    while (overlap && ns - 1 > s && sel_tokens(r, ns - 1, t) <= overlap) ns--;
    s = ns;
  }
  *out = c;
  *n = k;
  return 0;
}

static int cand_cmp(const void *a, const void *b) {
  const sel_cand *x = a, *y = b;
  float sx = isnan(x->score) ? -INFINITY : x->score, sy = isnan(y->score) ? -INFINITY : y->score;
  if (sx != sy) return sx > sy ? -1 : 1;
  return (x->u0 > y->u0) - (x->u0 < y->u0);
}

/* Runs of marked units -> out->segs and out->context. */
static int fill_result(const sel_run *r, const uint8_t *mark, const float *best,
                       select_result *out, ctxd_error *e) {
  size_t nseg = 0, bytes = 1;
  for (size_t i = 0; i < r->n_units; i++)
    if (mark[i] && (i == 0 || !mark[i - 1])) nseg++;
  out->segs = nseg ? calloc(nseg, sizeof *out->segs) : NULL;
  if (nseg && !out->segs) return ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory");
  size_t k = 0;
  for (size_t i = 0; i < r->n_units;) {
    if (!mark[i]) {
      i++;
      continue;
    }
    size_t j = i;
    float sc = best[i];
    while (j < r->n_units && mark[j]) {
      if (best[j] > sc) sc = best[j];
      j++;
    }
    select_seg *s = &out->segs[k++];
    s->start = r->u[i].start;
    s->end = j < r->n_units ? r->u[j].start : r->sel_len;
    s->tokens = (uint32_t)sel_tokens(r, i, j);
    s->score = sc;
    out->tokens += s->tokens;
    bytes += (size_t)(s->end - s->start) + 1;
    i = j;
  }
  out->n_segs = nseg;
  out->context = malloc(bytes);
  if (!out->context) return ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory for the context");
  char *w = out->context;
  for (size_t i = 0; i < nseg; i++) {
    if (i) *w++ = '\n';
    memcpy(w, r->text + out->segs[i].start, (size_t)(out->segs[i].end - out->segs[i].start));
    w += out->segs[i].end - out->segs[i].start;
  }
  *w = 0;
  out->context_len = (size_t)(w - out->context);
  return 0;
}

int sel_pick(sel_run *r, sel_cand *c, size_t n, select_result *out, ctxd_error *e) {
  uint8_t *mark = calloc(r->n_units + 1, 1);
  float *best = malloc((r->n_units + 1) * sizeof *best);
  int rc;
  if (!mark || !best) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory for %zu units", r->n_units);
    goto done;
  }
  if (n) qsort(c, n, sizeof *c, cand_cmp);
  uint64_t left = r->o.token_budget;
  for (size_t i = 0; i < n && left > 0; i++) {
    uint64_t cost = 0;
    for (size_t u = c[i].u0; u < c[i].u1 && cost <= left; u++)
      if (!mark[u]) cost += sel_tokens(r, u, u + 1);
    if (cost > left) continue;
    for (size_t u = c[i].u0; u < c[i].u1; u++)
      if (!mark[u]) {
        mark[u] = 1;
        best[u] = c[i].score;
      }
    left -= cost;
  }
  rc = fill_result(r, mark, best, out, e);
done:
  free(mark);
  free(best);
  return rc;
}

/* ---- select_run ---------------------------------------------------------- */

static int need_model(const sel_run *r, ctxd_error *e) {
  const char *how = "load one with the config key model.path or `ctxctl model load PATH`";
  if (!r->env->model)
    return ctxd_seterr(e, CTXD_EPRECOND, "select: method %s needs a language model and none is "
                       "loaded; %s", select_method_name(r->method), how);
  lm_info in;
  lm_model_info(r->env->model, &in);
  if (in.vocab_only)
    return ctxd_seterr(e, CTXD_EPRECOND, "select: method %s needs a language model with weights, "
                       "and %s is a vocabulary only; %s", select_method_name(r->method), in.name,
                       how);
  return 0;
}

static int check_opts(const select_opts *o, ctxd_error *e) {
#define BAD(...) return ctxd_seterr(e, CTXD_EINVAL, __VA_ARGS__)
  if (o->method < SELECT_AUTO || o->method > SELECT_EMBEDDING)
    BAD("select: method %d is not a method", o->method);
  if (o->token_budget > SELECT_BUDGET_MAX)
    BAD("select: token_budget %u is over %d", o->token_budget, SELECT_BUDGET_MAX);
  if (o->segment_tokens > SELECT_BUDGET_MAX)
    BAD("select: segment_tokens %u is over %d", o->segment_tokens, SELECT_BUDGET_MAX);
  if (o->segment_overlap >= o->segment_tokens)
    BAD("select: segment_overlap %u must be less than segment_tokens %u", o->segment_overlap,
        o->segment_tokens);
  if (o->question_tail > SELECT_TAIL_MAX)
    BAD("select: question_tail %u is over %d", o->question_tail, SELECT_TAIL_MAX);
  if (o->xl3m_score != SELECT_XL3M_ENTROPY && o->xl3m_score != SELECT_XL3M_LOGPROB)
    BAD("select: xl3m_score %d is not a score", o->xl3m_score);
  if (o->xl3m_batch > LM_SEQ_MAX) BAD("select: xl3m_batch %u is over %d", o->xl3m_batch, LM_SEQ_MAX);
  if (o->window_tokens > SELECT_WINDOW_MAX)
    BAD("select: window_tokens %u is over %d", o->window_tokens, SELECT_WINDOW_MAX);
  if (o->top_k > SELECT_WINDOW_MAX) BAD("select: top_k %u is over %d", o->top_k, SELECT_WINDOW_MAX);
  if (o->filter_width > SELECT_FILTER_MAX)
    BAD("select: filter_width %u is over %d", o->filter_width, SELECT_FILTER_MAX);
  if (o->cache_max_tokens > SELECT_WINDOW_MAX)
    BAD("select: cache_max_tokens %u is over %d", o->cache_max_tokens, SELECT_WINDOW_MAX);
  if (o->n_threads < 0 || o->n_threads > 1024) BAD("select: n_threads %d out of range", o->n_threads);
  return 0;
#undef BAD
}

static void resolve(select_opts *o) {
  if (!o->token_budget) o->token_budget = 1024;
  if (!o->segment_tokens) o->segment_tokens = 256;
  if (!o->question_tail) o->question_tail = 64;
  if (!o->xl3m_batch) o->xl3m_batch = 8;
  if (!o->window_tokens) o->window_tokens = 1024;
  if (!o->top_k) o->top_k = 300;
  if (!o->filter_width) o->filter_width = 8;
  if (!o->cache_max_tokens) {
    uint32_t k2 = 2 * o->top_k;
    o->cache_max_tokens = o->token_budget > k2 ? o->token_budget : k2;
  }
}

static uint32_t min32(uint64_t a, uint64_t b) { return (uint32_t)(a < b ? a : b); }

/* Unit cap of the method, and for the model methods the question ids and
 * the checks against the model's context. */
static int prepare(sel_run *r, uint32_t *unit_max, ctxd_error *e) {
  const select_opts *o = &r->o;
  int rc;
  if (r->method == SELECT_BM25 || r->method == SELECT_EMBEDDING) {
    *unit_max = min32(o->segment_tokens, o->token_budget);
    return 0;
  }
  lm_info in;
  lm_model_info(r->model, &in);
  uint64_t n_ctx = in.n_ctx_train ? in.n_ctx_train : LM_CTX_MAX;
  if ((rc = sel_prefix_ids(r->model, r->prefix, &r->n_prefix, e))) return rc;
  if (r->qlen) {
    lm_tokens t = {0};
    if ((rc = lm_tokenize(r->model, r->q, r->qlen, LM_TOK_NO_OFFSETS, &t, e))) {
      lm_tokens_free(&t);
      return rc;
    }
    r->qids = t.id; /* the ids array is all we keep */
    r->nq = (uint32_t)t.n;
    free(t.start);
    free(t.end);
    if (!r->nq)
      return ctxd_seterr(e, CTXD_EINVAL, "select: the question gives no tokens");
  }
  uint64_t nq = r->qlen ? r->nq : o->question_tail;
  if (r->method == SELECT_XL3M) {
    if (r->n_prefix + nq + 1 > n_ctx)
      return ctxd_seterr(e, CTXD_EINVAL, "select: the question (%llu tokens) leaves no room for a "
                         "segment in the model's context of %llu", (unsigned long long)nq,
                         (unsigned long long)n_ctx);
    *unit_max = min32(min32(o->segment_tokens, o->token_budget), n_ctx - r->n_prefix - nq);
    return 0;
  }
  uint64_t need = r->n_prefix + (uint64_t)o->cache_max_tokens + o->window_tokens + nq;
  if (need > n_ctx)
    return ctxd_seterr(e, CTXD_EINVAL, "select: infiniretri needs cache_max_tokens %u + "
                       "window_tokens %u + the question's %llu tokens = %llu, over the model's "
                       "context of %llu; use a smaller window or cache", o->cache_max_tokens,
                       o->window_tokens, (unsigned long long)nq, (unsigned long long)need,
                       (unsigned long long)n_ctx);
  *unit_max = min32(min32(o->window_tokens, o->cache_max_tokens), o->token_budget);
  return 0;
}

int select_run(const select_env *env, const char *text, size_t len, const char *question,
               size_t qlen, const select_opts *opts, select_result *out, ctxd_error *e) {
  sel_run r = {0};
  uint32_t unit_max = 0;
  size_t bad;
  int rc;

  if (out) memset(out, 0, sizeof *out);
  if (!env || !out || (!text && len) || (!question && qlen))
    return ctxd_seterr(e, CTXD_EINVAL, "select: missing argument");
  if (len > SELECT_TEXT_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "select: the text is %zu bytes, over the limit of %zu", len,
                       (size_t)SELECT_TEXT_MAX);
  if (qlen > SELECT_QUESTION_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "select: the question is %zu bytes, over the limit of %d",
                       qlen, SELECT_QUESTION_MAX);
  if (opts) r.o = *opts;
  else select_defaults(&r.o);
  if ((rc = check_opts(&r.o, e))) return rc;
  resolve(&r.o);
  if (!utf8_valid(text, len, &bad))
    return ctxd_seterr(e, CTXD_EINVAL, "select: invalid UTF-8 in the text at byte %zu", bad);
  if (!utf8_valid(question, qlen, &bad))
    return ctxd_seterr(e, CTXD_EINVAL, "select: invalid UTF-8 in the question at byte %zu", bad);

  if (!(env->bm25_k1 >= 0 && env->bm25_b >= 0 && env->bm25_b <= 1))
    return ctxd_seterr(e, CTXD_EINVAL, "select: bm25 k1 %g must be >= 0 and b %g in [0, 1]",
                       env->bm25_k1, env->bm25_b);
  r.env = env;
  r.text = text ? text : "";
  r.len = r.sel_len = len;
  r.q = question ? question : "";
  r.qlen = qlen;
  r.method = r.o.method;
  if (r.method == SELECT_AUTO)
    r.method = env->model && env->auto_model ? SELECT_INFINIRETRI : SELECT_BM25;
  out->method = r.method;
  if (r.method == SELECT_XL3M || r.method == SELECT_INFINIRETRI) {
    if ((rc = need_model(&r, e))) return rc;
    r.model = env->model;
  } else if (r.method == SELECT_EMBEDDING && !env->emb) {
    return ctxd_seterr(e, CTXD_EPRECOND, "select: method embedding needs an embedder and none is "
                       "configured; load a model (config key model.path or `ctxctl model load "
                       "PATH`) or configure the daemon's embedder");
  }
  if (!qlen && r.method != SELECT_XL3M)
    return ctxd_seterr(e, CTXD_EINVAL, "select: method %s needs a question",
                       select_method_name(r.method));
  r.tk = env->model ? lm_model_tok(env->model) : env->tk ? env->tk : tok_estimator();

  if ((rc = prepare(&r, &unit_max, e))) goto fail;
  if ((rc = sel_segment(&r, unit_max, e))) goto fail;
  r.st.input_tokens = r.total_tokens;
  if (r.total_tokens <= r.o.token_budget) {
    /* All of it fits: the input as it is. */
    if (len) {
      out->segs = calloc(1, sizeof *out->segs);
      out->context = malloc(len + 1);
      if (!out->segs || !out->context) {
        rc = ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory");
        goto fail;
      }
      out->segs[0] = (select_seg){0, len, (uint32_t)r.total_tokens, 0.0f};
      out->n_segs = 1;
      memcpy(out->context, text, len);
      out->context_len = len;
      out->tokens = (uint32_t)r.total_tokens;
    } else if (!(out->context = calloc(1, 1))) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory");
      goto fail;
    }
  } else {
    switch (r.method) {
    case SELECT_BM25: rc = sel_bm25(&r, out, e); break;
    case SELECT_EMBEDDING: rc = sel_embedding(&r, out, e); break;
    case SELECT_XL3M: rc = sel_xl3m(&r, out, e); break;
    default: rc = sel_infini(&r, out, e); break;
    }
    if (rc) goto fail;
  }
  if ((rc = sel_progress(&r, "select", r.total_tokens, r.total_tokens, 1, e))) goto fail;
  out->method = r.method;
  out->stats = r.st;
  free(r.u);
  free(r.pc);
  free(r.qids);
  return 0;
fail:
  select_result_free(out);
  free(r.u);
  free(r.pc);
  free(r.qids);
  return rc;
}
