/* test_select.c - key-context selection (index/select.h): the unit table
 * (sentences, UTF-8, token counts with the estimator and with a model
 * vocabulary), budgets, order, merging, the whole-input shortcut, every
 * error, BM25 and embeddings finding a needle, progress and cancellation;
 * XL3M and InfiniRetri on the random-weight test models, each checked
 * against an independent computation of its scores. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "check.h"
#include "model/lm.h"
#include "select.h"
#include "select_impl.h"
#include "utf8.h"

#define VOCAB(f) CTXD_LM_VOCAB_DIR "/" f
#define MODEL(f) CTXD_LM_TEST_DIR "/" f

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------ haystacks */

static const char *const words[] = {
    "river", "stone", "market", "winter", "garden", "letter", "engine", "window", "silver",
    "forest", "village", "harbor", "morning", "painter", "orchard", "station", "captain",
    "blanket", "journey", "kitchen", "mountain", "lantern", "meadow", "teacher", "bridge",
    "the", "a", "of", "and", "to", "in", "was", "with", "near", "under", "every", "old",
    "quiet", "bright", "slow", "green", "early", "walked", "carried", "opened", "found"};

typedef struct buf {
  char *s;
  size_t n, cap;
} buf;

static void put(buf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    b->cap = (b->n + n + 1) * 2;
    b->s = realloc(b->s, b->cap);
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = 0;
}

static void puts_(buf *b, const char *s) { put(b, s, strlen(s)); }

static unsigned rnd(unsigned *seed) {
  *seed = *seed * 1103515245u + 12345u;
  return *seed >> 16;
}

/* Prose of about `sentences` sentences; `needle` after sentence `at`
 * (negative: none). Every 7th sentence holds some non-ASCII text, every
 * 11th ends a paragraph. */
static char *haystack(int sentences, int at, const char *needle, unsigned seed, size_t *len) {
  buf b = {0};
  for (int i = 0; i < sentences; i++) {
    if (i == at) {
      puts_(&b, needle);
      puts_(&b, " ");
    }
    int nw = 6 + (int)(rnd(&seed) % 10);
    for (int w = 0; w < nw; w++) {
      const char *x = words[rnd(&seed) % (sizeof words / sizeof *words)];
      if (w == 0) {
        char cap[32];
        snprintf(cap, sizeof cap, "%s", x);
        cap[0] = (char)(cap[0] - 32);
        puts_(&b, cap);
      } else {
        puts_(&b, " ");
        puts_(&b, x);
      }
      if (i % 7 == 3 && w == 2) puts_(&b, " caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80");
    }
    puts_(&b, i % 11 == 10 ? ".\n\n" : ". ");
  }
  *len = b.n;
  return b.s;
}

static const char needle[] = "The secret code of the blue lighthouse is 7421.";
static const char question[] = "What is the secret code of the blue lighthouse?";

static int contains(const char *hay, size_t n, const char *s) {
  size_t m = strlen(s);
  for (size_t i = 0; i + m <= n; i++)
    if (memcmp(hay + i, s, m) == 0) return 1;
  return 0;
}

/* The invariants of every result: segments in order, apart (never touching),
 * on character boundaries, tokens summing to the total, within the budget,
 * and the context their texts joined by "\n". */
static void check_result(const char *text, size_t len, const select_result *r, uint32_t budget) {
  size_t at = 0;
  uint64_t ntok = 0;
  int ok = 1;
  for (size_t i = 0; i < r->n_segs; i++) {
    const select_seg *s = &r->segs[i];
    if (s->end <= s->start || s->end > len) ok = 0;
    if (i > 0 && s->start <= r->segs[i - 1].end) ok = 0;
    if (utf8_floor(text, len, s->start) != s->start || utf8_floor(text, len, s->end) != s->end)
      ok = 0;
    ntok += s->tokens;
    if (ok) {
      if (i) ok = ok && r->context[at++] == '\n';
      ok = ok && at + (s->end - s->start) <= r->context_len &&
           memcmp(r->context + at, text + s->start, s->end - s->start) == 0;
      at += s->end - s->start;
    }
  }
  CHECK(ok);
  CHECK(at == r->context_len);
  CHECK(r->context && r->context[r->context_len] == 0);
  CHECK_EQ_INT(ntok, r->tokens);
  CHECK(r->tokens <= budget);
}

/* ------------------------------------------------------------ the units */

static void check_units(const sel_run *r, uint32_t max, int exact_max) {
  int ok = 1;
  for (size_t i = 0; i < r->n_units; i++) {
    const sel_unit *a = &r->u[i], *b = &r->u[i + 1];
    if (b->start <= a->start && i + 1 < r->n_units) ok = 0;
    if (b->tok0 <= a->tok0) ok = 0;
    if (exact_max && b->tok0 - a->tok0 > max) ok = 0;
    if (utf8_floor(r->text, r->len, a->start) != a->start) ok = 0;
  }
  CHECK(ok);
  CHECK(r->n_units == 0 || r->u[0].start == 0);
  CHECK(r->u[r->n_units].start == r->len);
  CHECK_EQ_INT(r->u[r->n_units].tok0, r->total_tokens);
}

static void test_units(void) {
  ctxd_error e;
  size_t len;
  char *text = haystack(400, 200, needle, 7, &len);
  select_env env = {.tk = tok_estimator()};
  sel_run r = {.env = &env, .text = text, .len = len, .tk = tok_estimator()};
  select_defaults(&r.o);

  /* Estimator: the units are the sentences (each starts after ". " with a
   * capital), their counts sum to the whole's. */
  CHECK_EQ_INT(sel_segment(&r, 1000, &e), 0);
  check_units(&r, 1000, 1);
  CHECK_EQ_INT(r.n_units, 401);
  CHECK_EQ_INT(r.total_tokens, tok_count(tok_estimator(), text, len));
  for (size_t i = 1; i < r.n_units; i++)
    if (!(text[r.u[i].start] >= 'A' && text[r.u[i].start] <= 'Z')) {
      CHECK(0);
      break;
    }
  free(r.u);
  /* A cap of 5 tokens cuts sentences, never a character. */
  CHECK_EQ_INT(sel_segment(&r, 5, &e), 0);
  check_units(&r, 5, 1);
  CHECK(r.n_units > 1000);
  free(r.u);
  /* Empty text: no units. */
  r.len = 0;
  CHECK_EQ_INT(sel_segment(&r, 5, &e), 0);
  CHECK_EQ_INT(r.n_units, 0);
  CHECK_EQ_INT(r.total_tokens, 0);
  free(r.u);
  r.len = len;

  /* With a model vocabulary: tokens of the model, units on token and
   * character boundaries (GPT-2 splits the emoji into byte tokens), and the
   * token stream reads back the same ids. */
  lm_model *m = NULL;
  lm_model_opts mo;
  lm_model_defaults(&mo);
  mo.vocab_only = 1;
  CHECK_EQ_INT(lm_model_load(VOCAB("ggml-vocab-gpt-2.gguf"), &mo, &m, &e), 0);
  if (!m) goto done;
  r.model = m;
  lm_tokens t = {0};
  CHECK_EQ_INT(lm_tokenize(m, text, len, 0, &t, &e), 0);
  CHECK_EQ_INT(sel_segment(&r, 1000, &e), 0);
  check_units(&r, 1000, 1);
  CHECK_EQ_INT(r.n_units, 401);
  CHECK_EQ_INT(r.n_pieces, 1);
  CHECK_EQ_INT(r.total_tokens, t.n);
  /* each unit starts where a token starts */
  int ok = 1;
  for (size_t i = 1, k = 0; i < r.n_units; i++) {
    while (k < t.n && t.start[k] < r.u[i].start) k++;
    if (k >= t.n || t.start[k] != r.u[i].start || k != r.u[i].tok0) ok = 0;
  }
  CHECK(ok);
  free(r.u);
  free(r.pc);
  CHECK_EQ_INT(sel_segment(&r, 3, &e), 0);
  check_units(&r, 3, 0);
  free(r.u);
  free(r.pc);
  lm_tokens_free(&t);

  /* A text of many pieces, one long line with no sentence end in it. */
  buf b = {0};
  for (int i = 0; i < 6; i++) put(&b, text, len);
  for (int i = 0; i < 20000; i++) puts_(&b, i % 5 ? "word " : "caf\xC3\xA9 ");
  for (int i = 0; i < 2; i++) put(&b, text, len);
  r.text = b.s;
  r.len = b.n;
  CHECK_EQ_INT(sel_segment(&r, 200, &e), 0);
  check_units(&r, 200, 1);
  CHECK(r.n_pieces > 3);
  uint64_t want = 0;
  for (size_t p = 0; p < r.n_pieces; p++) {
    CHECK(r.pc[p].start < r.pc[p + 1].start);
    want += tok_count(lm_model_tok(m), b.s + r.pc[p].start, r.pc[p + 1].start - r.pc[p].start);
  }
  CHECK_EQ_INT(want, r.total_tokens);
  /* read back: units' text tokenized alone gives their ids (prose) */
  sel_toks ts = {.r = &r};
  lm_tokens one = {0};
  int same = 0, tried = 0;
  for (size_t i = 0; i < r.n_units; i += 37) {
    const int32_t *ids;
    uint64_t a = r.u[i].tok0, z = r.u[i + 1].tok0;
    CHECK_EQ_INT(sel_toks_get(&ts, a, z, &ids, &e), 0);
    lm_tokenize(m, b.s + r.u[i].start, r.u[i + 1].start - r.u[i].start, 0, &one, &e);
    tried++;
    if (one.n == z - a && memcmp(one.id, ids, one.n * sizeof *ids) == 0) same++;
  }
  CHECK(same >= tried * 9 / 10);
  /* going back restarts at the right piece */
  const int32_t *ids0, *ids1;
  CHECK_EQ_INT(sel_toks_get(&ts, 0, 10, &ids0, &e), 0);
  int32_t first[10];
  memcpy(first, ids0, sizeof first);
  CHECK_EQ_INT(sel_toks_get(&ts, r.total_tokens - 5, r.total_tokens, &ids1, &e), 0);
  CHECK_EQ_INT(sel_toks_get(&ts, 0, 10, &ids0, &e), 0);
  CHECK(memcmp(first, ids0, sizeof first) == 0);
  sel_toks_free(&ts);
  lm_tokens_free(&one);
  free(r.u);
  free(r.pc);
  free(b.s);
  lm_model_free(m);
done:
  free(text);
}

/* ------------------------------------------------------------ lexical */

static void test_names_and_errors(void) {
  CHECK_EQ_STR(select_method_name(SELECT_INFINIRETRI), "infiniretri");
  CHECK_EQ_INT(select_method_parse("xl3m"), SELECT_XL3M);
  CHECK_EQ_INT(select_method_parse(""), SELECT_AUTO);
  CHECK_EQ_INT(select_method_parse("bm25"), SELECT_BM25);
  CHECK_EQ_INT(select_method_parse("embedding"), SELECT_EMBEDDING);
  CHECK_EQ_INT(select_method_parse("nope"), -1);

  ctxd_error e;
  select_env env = {.tk = tok_estimator()};
  select_opts o;
  select_result r;
  const char *t = "One sentence. Another one.";
  size_t n = strlen(t);
  select_defaults(&o);
  o.method = SELECT_BM25;
  /* a question is required */
  CHECK_EQ_INT(select_run(&env, t, n, "", 0, &o, &r, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "question") != NULL);
  /* invalid UTF-8, named by offset */
  CHECK_EQ_INT(select_run(&env, "ab\xC3(", 4, "q", 1, &o, &r, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "byte 2") != NULL);
  CHECK_EQ_INT(select_run(&env, t, n, "\xFFq", 2, &o, &r, &e), CTXD_EINVAL);
  /* limits */
  CHECK_EQ_INT(select_run(&env, t, SELECT_TEXT_MAX + 1, "q", 1, &o, &r, &e), CTXD_EINVAL);
  CHECK_EQ_INT(select_run(&env, t, n, t, SELECT_QUESTION_MAX + 1, &o, &r, &e), CTXD_EINVAL);
  /* bad options */
  select_opts b = o;
  b.method = 9;
  CHECK_EQ_INT(select_run(&env, t, n, "q", 1, &b, &r, &e), CTXD_EINVAL);
  b = o;
  b.token_budget = SELECT_BUDGET_MAX + 1;
  CHECK_EQ_INT(select_run(&env, t, n, "q", 1, &b, &r, &e), CTXD_EINVAL);
  b = o;
  b.segment_overlap = 256;
  CHECK_EQ_INT(select_run(&env, t, n, "q", 1, &b, &r, &e), CTXD_EINVAL);
  b = o;
  b.xl3m_batch = LM_SEQ_MAX + 1;
  CHECK_EQ_INT(select_run(&env, t, n, "q", 1, &b, &r, &e), CTXD_EINVAL);
  b = o;
  b.filter_width = SELECT_FILTER_MAX + 1;
  CHECK_EQ_INT(select_run(&env, t, n, "q", 1, &b, &r, &e), CTXD_EINVAL);
  b = o;
  b.window_tokens = SELECT_WINDOW_MAX + 1;
  CHECK_EQ_INT(select_run(&env, t, n, "q", 1, &b, &r, &e), CTXD_EINVAL);
  select_env be = env;
  be.bm25_b = 2;
  CHECK_EQ_INT(select_run(&be, t, n, "q", 1, &o, &r, &e), CTXD_EINVAL);
  CHECK_EQ_INT(select_run(&env, NULL, 3, "q", 1, &o, &r, &e), CTXD_EINVAL);
  /* model methods without a model, embedding without an embedder */
  b = o;
  b.method = SELECT_XL3M;
  CHECK_EQ_INT(select_run(&env, t, n, "q", 1, &b, &r, &e), CTXD_EPRECOND);
  CHECK(strstr(e.msg, "model.path") && strstr(e.msg, "ctxctl model load"));
  b.method = SELECT_INFINIRETRI;
  CHECK_EQ_INT(select_run(&env, t, n, "q", 1, &b, &r, &e), CTXD_EPRECOND);
  b.method = SELECT_EMBEDDING;
  CHECK_EQ_INT(select_run(&env, t, n, "q", 1, &b, &r, &e), CTXD_EPRECOND);
  /* a vocabulary-only model is no model for XL3M */
  lm_model *m = NULL;
  lm_model_opts mo;
  lm_model_defaults(&mo);
  mo.vocab_only = 1;
  if (lm_model_load(VOCAB("ggml-vocab-gpt-2.gguf"), &mo, &m, &e) == 0) {
    select_env ve = {.model = m, .auto_model = 1};
    b.method = SELECT_XL3M;
    CHECK_EQ_INT(select_run(&ve, t, n, "q", 1, &b, &r, &e), CTXD_EPRECOND);
    lm_model_free(m);
  }
  /* auto without a model is BM25; the whole input fits: returned as is */
  b = o;
  b.method = SELECT_AUTO;
  CHECK_EQ_INT(select_run(&env, t, n, "another", 7, &b, &r, &e), 0);
  CHECK_EQ_INT(r.method, SELECT_BM25);
  CHECK_EQ_INT(r.n_segs, 1);
  CHECK(r.segs && r.segs[0].start == 0 && r.segs[0].end == n);
  CHECK(r.context_len == n && memcmp(r.context, t, n) == 0);
  CHECK_EQ_INT(r.tokens, tok_count(tok_estimator(), t, n));
  select_result_free(&r);
  /* empty text: nothing */
  CHECK_EQ_INT(select_run(&env, "", 0, "q", 1, &b, &r, &e), 0);
  CHECK_EQ_INT(r.n_segs, 0);
  CHECK(r.context && r.context_len == 0);
  select_result_free(&r);
}

static void test_bm25(void) {
  ctxd_error e;
  size_t len;
  select_env env = {.tk = tok_estimator()};
  select_opts o;
  select_defaults(&o);
  o.method = SELECT_BM25;
  o.token_budget = 300;
  o.segment_tokens = 64;
  /* the needle at several depths */
  for (int at = 0; at < 1000; at += at == 750 ? 249 : 250) {
    char *text = haystack(1000, at, needle, 11 + (unsigned)at, &len);
    select_result r;
    CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), 0);
    check_result(text, len, &r, o.token_budget);
    CHECK(contains(r.context, r.context_len, needle));
    CHECK(r.n_segs >= 1);
    CHECK(r.tokens > o.token_budget - 64); /* the budget is filled */
    CHECK_EQ_INT(r.method, SELECT_BM25);
    CHECK(r.stats.segments > 100);
    CHECK(r.stats.input_tokens > 10000);
    /* the best segment scores highest and holds the needle */
    size_t best = 0;
    for (size_t i = 1; i < r.n_segs; i++)
      if (r.segs[i].score > r.segs[best].score) best = i;
    CHECK(contains(text + r.segs[best].start, r.segs[best].end - r.segs[best].start, needle));
    select_result_free(&r);
    free(text);
  }
  /* With overlap: picks that overlap are merged, never repeated. */
  char *text = haystack(600, 300, needle, 5, &len);
  o.segment_overlap = 32;
  o.token_budget = 500;
  select_result r;
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), 0);
  check_result(text, len, &r, o.token_budget);
  CHECK(contains(r.context, r.context_len, needle));
  select_result_free(&r);
  /* A budget smaller than a segment: segments shrink to it. */
  o.segment_overlap = 0;
  o.token_budget = 20;
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), 0);
  check_result(text, len, &r, 20);
  CHECK(r.n_segs >= 1);
  select_result_free(&r);
  /* The input-token limit: at the count it passes, over it refused early
   * with the limit named, nothing returned. */
  uint64_t n_in = r.stats.input_tokens;
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), 0);
  n_in = r.stats.input_tokens;
  select_result_free(&r);
  o.max_input_tokens = n_in;
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), 0);
  select_result_free(&r);
  o.max_input_tokens = n_in - 1;
  o.max_input_what = "limits.max_select_tokens";
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), CTXD_ELIMIT);
  CHECK(strstr(e.msg, "limits.max_select_tokens") != NULL);
  CHECK(r.n_segs == 0 && r.context == NULL);
  o.max_input_tokens = 100;
  o.max_input_what = NULL;
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), CTXD_ELIMIT);
  CHECK(strstr(e.msg, "max_input_tokens (100)") != NULL);
  free(text);
}

static void test_embedding(void) {
  ctxd_error e;
  embedder *em = NULL;
  embed_hash_opts ho;
  embed_hash_defaults(&ho);
  CHECK_EQ_INT(embed_hash_create(&ho, &em, &e), 0);
  if (!em) return;
  size_t len;
  char *text = haystack(800, 444, needle, 3, &len);
  select_env env = {.tk = tok_estimator(), .emb = em};
  select_opts o;
  select_defaults(&o);
  o.method = SELECT_EMBEDDING;
  o.token_budget = 200;
  o.segment_tokens = 40;
  select_result r;
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), 0);
  check_result(text, len, &r, 200);
  CHECK(contains(r.context, r.context_len, needle));
  CHECK_EQ_INT(r.method, SELECT_EMBEDDING);
  select_result_free(&r);
  free(text);
  embedder_free(em);
}

typedef struct prog {
  int calls, stop_after;
  uint64_t last_done;
  char last_phase[16];
} prog;

static int on_progress(void *arg, const char *phase, uint64_t done, uint64_t total) {
  prog *p = arg;
  p->calls++;
  p->last_done = done;
  snprintf(p->last_phase, sizeof p->last_phase, "%s", phase);
  if (done > total) return 1;
  return p->stop_after && p->calls >= p->stop_after;
}

static void test_progress(void) {
  ctxd_error e;
  size_t len;
  char *text = haystack(3000, 10, needle, 9, &len);
  select_env env = {.tk = tok_estimator()};
  select_opts o;
  select_defaults(&o);
  o.method = SELECT_BM25;
  prog p = {0};
  o.progress = on_progress;
  o.progress_arg = &p;
  select_result r;
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), 0);
  CHECK(p.calls >= 3); /* the end of each phase at least */
  CHECK_EQ_STR(p.last_phase, "select");
  CHECK_EQ_INT(p.last_done, r.stats.input_tokens);
  select_result_free(&r);
  p = (prog){.stop_after = 1};
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), CTXD_ECANCELED);
  CHECK(r.segs == NULL && r.context == NULL);
  free(text);
}

/* ------------------------------------------------------------ the models */

static lm_model *load_model(const char *path) {
  lm_model *m = NULL;
  ctxd_error e;
  if (lm_model_load(path, NULL, &m, &e)) {
    fprintf(stderr, "%s: %s\n", path, e.msg);
    CHECK(0);
  }
  return m;
}

/* The mean entropy and mean log-probability of the question after
 * [prefix + seg], from one lm_eval on a context of one sequence. */
static void ref_certainty(lm_ctx *c, const int32_t *pre, uint32_t np, const int32_t *seg,
                          uint32_t ns, const int32_t *q, uint32_t nq, double *ent, double *lp) {
  ctxd_error e;
  uint32_t n = np + ns + nq;
  int32_t *ids = malloc(n * sizeof *ids);
  float *en = malloc((nq + 1) * sizeof *en), *l = malloc((nq + 1) * sizeof *l);
  memcpy(ids, pre, np * sizeof *ids);
  memcpy(ids + np, seg, ns * sizeof *ids);
  memcpy(ids + np + ns, q, nq * sizeof *ids);
  lm_ctx_clear(c);
  lm_append a = {.seq = 0, .ids = ids, .n = n, .out_from = np + ns - 1, .last_target = -1,
                 .entropy = en, .logprob = l};
  CHECK_EQ_INT(lm_eval(c, &a, 1, &e), 0);
  double se = 0, sl = 0;
  for (uint32_t k = 0; k < nq; k++) {
    se += en[k];
    sl += l[k];
  }
  *ent = se / nq;
  *lp = sl / nq;
  free(ids);
  free(en);
  free(l);
}

/* Defaults for a model method, one thread (the machine is shared). */
static select_opts model_opts(int method) {
  select_opts o;
  select_defaults(&o);
  o.method = method;
  o.n_threads = 1;
  return o;
}

static void test_xl3m(lm_model *m) {
  ctxd_error e;
  size_t len;
  char *text = haystack(200, 120, needle, 21, &len);
  select_env env = {.model = m};
  select_opts o = model_opts(SELECT_XL3M);
  o.segment_tokens = 64;
  o.token_budget = 64;
  o.xl3m_batch = 5;
  select_result r;
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), 0);
  check_result(text, len, &r, 64);
  CHECK_EQ_INT(r.method, SELECT_XL3M);
  CHECK(r.n_segs >= 1);
  CHECK(r.stats.segments > 25);
  CHECK(r.stats.model_decodes >= 1 && r.stats.model_tokens > r.stats.input_tokens);
  CHECK(r.stats.model_us > 0);

  /* The same segments scored one by one, independently. */
  sel_run sr = {.env = &env, .text = text, .len = len, .model = m, .o = o};
  lm_tokens qt = {0};
  CHECK_EQ_INT(lm_tokenize(m, question, strlen(question), LM_TOK_NO_OFFSETS, &qt, &e), 0);
  CHECK_EQ_INT(r.stats.model_outputs, r.stats.segments * qt.n);
  CHECK_EQ_INT(sel_prefix_ids(m, sr.prefix, &sr.n_prefix, &e), 0);
  CHECK(r.stats.max_seq_tokens <= sr.n_prefix + 64 + qt.n);
  CHECK_EQ_INT(sel_segment(&sr, 64, &e), 0);
  sel_cand *c = NULL;
  size_t ns = 0;
  CHECK_EQ_INT(sel_segments(&sr, 64, 0, &c, &ns, &e), 0);
  CHECK_EQ_INT(ns, r.stats.segments);
  sel_toks ts = {.r = &sr};
  lm_ctx_opts co;
  lm_ctx_defaults(&co);
  co.n_ctx = 256;
  co.n_threads = 1;
  lm_ctx *rc = NULL; /* the reference context */
  CHECK_EQ_INT(lm_ctx_create(m, &co, &rc, &e), 0);
  double best = -INFINITY, best_lp = -INFINITY;
  size_t bi = 0, bl = 0;
  for (size_t i = 0; i < ns; i++) {
    const int32_t *ids;
    uint64_t a = sr.u[c[i].u0].tok0, z = sr.u[c[i].u1].tok0;
    CHECK_EQ_INT(sel_toks_get(&ts, a, z, &ids, &e), 0);
    double en = NAN, lp = NAN;
    if (rc) ref_certainty(rc, sr.prefix, sr.n_prefix, ids, (uint32_t)(z - a), qt.id, (uint32_t)qt.n, &en,
                  &lp);
    if (-en > best) {
      best = -en;
      bi = i;
    }
    if (lp > best_lp) {
      best_lp = lp;
      bl = i;
    }
  }
  /* the best result segment is the best segment, with its score */
  size_t top = 0;
  for (size_t i = 1; i < r.n_segs; i++)
    if (r.segs[i].score > r.segs[top].score) top = i;
  if (r.n_segs) {
    CHECK(fabs(r.segs[top].score - best) < 1e-3);
    CHECK(r.segs[top].start <= sr.u[c[bi].u0].start && r.segs[top].end >= sr.u[c[bi].u1].start);
  }
  select_result_free(&r);
  /* the log-probability score: the same check */
  o.xl3m_score = SELECT_XL3M_LOGPROB;
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), 0);
  check_result(text, len, &r, 64);
  top = 0;
  for (size_t i = 1; i < r.n_segs; i++)
    if (r.segs[i].score > r.segs[top].score) top = i;
  if (r.n_segs) {
    CHECK(fabs(r.segs[top].score - best_lp) < 1e-3);
    CHECK(r.segs[top].start <= sr.u[c[bl].u0].start && r.segs[top].end >= sr.u[c[bl].u1].start);
    CHECK(r.segs[top].score < 0);
  }
  select_result_free(&r);
  lm_ctx_free(rc);
  sel_toks_free(&ts);
  free(c);
  free(sr.u);
  free(sr.pc);
  lm_tokens_free(&qt);

  /* No question: the last question_tail tokens are the question and are
   * never selected. Overlap and a larger budget: merged, in order. */
  o.xl3m_score = SELECT_XL3M_ENTROPY;
  o.question_tail = 32;
  o.segment_overlap = 16;
  o.token_budget = 300;
  CHECK_EQ_INT(select_run(&env, text, len, "", 0, &o, &r, &e), 0);
  check_result(text, len, &r, 300);
  lm_tokens all = {0};
  CHECK_EQ_INT(lm_tokenize(m, text, len, 0, &all, &e), 0);
  uint64_t tail_at = all.start[all.n - 32];
  CHECK(r.n_segs >= 1 && r.segs[r.n_segs - 1].end <= tail_at);
  CHECK(r.tokens > 200);
  select_result_free(&r);
  lm_tokens_free(&all);

  /* A question too long for the model's context. */
  buf b = {0};
  for (int i = 0; i < 300; i++) puts_(&b, "why is the sky blue ");
  CHECK_EQ_INT(select_run(&env, text, len, b.s, b.n, &o, &r, &e), CTXD_EINVAL);
  free(b.s);
  free(text);
}

/* InfiniRetri's token scores against a plain loop over lm_eval_attn rows. */
static void test_infini_scores(lm_model *m) {
  ctxd_error e;
  lm_ctx_opts co;
  lm_ctx_defaults(&co);
  co.n_ctx = 512;
  co.attn = 1;
  co.n_threads = 1;
  lm_ctx *c = NULL;
  CHECK_EQ_INT(lm_ctx_create(m, &co, &c, &e), 0);
  if (!c) return;
  size_t len;
  char *text = haystack(20, 5, needle, 4, &len);
  lm_tokens t = {0};
  CHECK_EQ_INT(lm_tokenize(m, text, len, LM_TOK_NO_OFFSETS, &t, &e), 0);
  uint32_t n = t.n < 300 ? (uint32_t)t.n : 300, nq = 12, L = n - nq;
  CHECK_EQ_INT(lm_eval_attn(c, 0, t.id, n, L, LM_ATTN_SUM_HEADS, &e), 0);
  uint32_t rows, heads, cols;
  const float *a = lm_attn_rows(c, &rows, &heads, &cols);
  CHECK(rows == nq && heads == 1 && cols == n);
  float *got = malloc(n * sizeof *got);
  double *tmp = malloc((n + 1) * sizeof *tmp);
  const uint32_t widths[3] = {8, 1, 5};
  for (int wi = 0; wi < 3; wi++)
    for (int weights = 0; weights <= 1; weights++) {
      uint32_t w = widths[wi], c0 = 1;
      sel_infini_scores(a, nq, cols, c0, L, w, weights, got, tmp);
      double maxd = 0, maxv = 0;
      for (uint32_t j = c0; j < L; j++) {
        double s = 0;
        for (uint32_t r = 0; r < nq; r++) {
          const float *row = a + (size_t)r * cols;
          double qw = 0, f = 0;
          for (uint32_t x = L; x < cols; x++) qw += row[x];
          for (int d = -(int)(w / 2); d < (int)(w - w / 2); d++) {
            int x = (int)j + d;
            if (x >= (int)c0 && x < (int)L) f += row[x];
          }
          s += (weights ? qw : 1.0) * f / w;
        }
        double d = fabs(s - got[j - c0]);
        if (d > maxd) maxd = d;
        if (fabs(s) > maxv) maxv = fabs(s);
      }
      CHECK(maxv > 0);
      CHECK(maxd <= 1e-5 * maxv);
    }
  free(got);
  free(tmp);
  lm_tokens_free(&t);
  lm_ctx_free(c);
  free(text);
}

/* One window (the input fits it): the selection is the units holding the
 * top_k tokens that a reference computation finds. */
static void test_infini_step(lm_model *m) {
  ctxd_error e;
  size_t len;
  char *text = haystack(14, 6, needle, 8, &len);
  select_env env = {.model = m};
  select_opts o = model_opts(SELECT_INFINIRETRI);
  o.window_tokens = 400;
  o.top_k = 10;
  o.cache_max_tokens = 400;
  sel_run sr = {.env = &env, .text = text, .len = len, .model = m, .o = o};
  CHECK_EQ_INT(sel_prefix_ids(m, sr.prefix, &sr.n_prefix, &e), 0);
  CHECK_EQ_INT(sel_segment(&sr, 400, &e), 0);
  CHECK(sr.total_tokens < 400 && sr.total_tokens > 100);
  lm_tokens qt = {0}, all = {0};
  CHECK_EQ_INT(lm_tokenize(m, question, strlen(question), LM_TOK_NO_OFFSETS, &qt, &e), 0);
  CHECK_EQ_INT(lm_tokenize(m, text, len, LM_TOK_NO_OFFSETS, &all, &e), 0);
  uint32_t L = sr.n_prefix + (uint32_t)all.n, nq = (uint32_t)qt.n, n = L + nq;
  int32_t *ids = malloc(n * sizeof *ids);
  memcpy(ids, sr.prefix, sr.n_prefix * sizeof *ids);
  memcpy(ids + sr.n_prefix, all.id, all.n * sizeof *ids);
  memcpy(ids + L, qt.id, nq * sizeof *ids);
  lm_ctx_opts co;
  lm_ctx_defaults(&co);
  co.n_ctx = n;
  co.attn = 1;
  co.n_threads = 1;
  lm_ctx *c = NULL;
  CHECK_EQ_INT(lm_ctx_create(m, &co, &c, &e), 0);
  if (!c) goto done;
  CHECK_EQ_INT(lm_eval_attn(c, 0, ids, n, L, LM_ATTN_SUM_HEADS, &e), 0);
  uint32_t rows, heads, cols;
  const float *a = lm_attn_rows(c, &rows, &heads, &cols);
  /* scores by a plain loop, width 8, weighted; column 0 is never picked */
  uint32_t c0 = sr.n_prefix ? sr.n_prefix : 1;
  double *s = calloc(L, sizeof *s);
  for (uint32_t j = c0; j < L; j++)
    for (uint32_t r = 0; r < rows; r++) {
      const float *row = a + (size_t)r * cols;
      double qw = 0, f = 0;
      for (uint32_t x = L; x < cols; x++) qw += row[x];
      for (int d = -4; d < 4; d++)
        if ((int)j + d >= (int)c0 && (int)j + d < (int)L) f += row[j + d];
      s[j] += qw * f / 8;
    }
  /* the top 10 tokens, the units that hold them */
  uint8_t *want = calloc(sr.n_units, 1);
  uint64_t want_tokens = 0;
  for (int k = 0; k < 10; k++) {
    uint32_t bj = 0;
    for (uint32_t j = c0; j < L; j++)
      if (s[j] > -1 && (bj == 0 || s[j] > s[bj])) bj = j;
    s[bj] = -2;
    uint64_t tk = bj - sr.n_prefix;
    size_t u = 0;
    while (u + 1 < sr.n_units && sr.u[u + 1].tok0 <= tk) u++;
    if (!want[u]) want_tokens += sr.u[u + 1].tok0 - sr.u[u].tok0;
    want[u] = 1;
  }
  free(s);
  o.token_budget = (uint32_t)want_tokens;
  select_result r;
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), 0);
  check_result(text, len, &r, o.token_budget);
  CHECK_EQ_INT(r.stats.windows, 1);
  CHECK_EQ_INT(r.tokens, want_tokens);
  int same = 1;
  for (size_t u = 0; u < sr.n_units; u++) {
    int in = 0;
    for (size_t i = 0; i < r.n_segs; i++)
      if (sr.u[u].start >= r.segs[i].start && sr.u[u].start < r.segs[i].end) in = 1;
    if (in != want[u]) same = 0;
  }
  CHECK(same);
  CHECK_EQ_INT(r.stats.model_tokens, n);
  select_result_free(&r);
  free(want);
  lm_ctx_free(c);
done:
  free(ids);
  lm_tokens_free(&qt);
  lm_tokens_free(&all);
  free(sr.u);
  free(sr.pc);
  free(text);
}

static long max_rss_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

/* Twenty times the model's context, streamed: memory and the sequence stay
 * bounded by window + cache + question. */
static void test_infini_stream(lm_model *m) {
  ctxd_error e;
  lm_info in;
  lm_model_info(m, &in);
  size_t small_len, len;
  char *small = haystack(300, 100, needle, 12, &small_len);
  char *text = haystack(1600, 1000, needle, 13, &len);
  select_env env = {.model = m, .auto_model = 1};
  select_opts o = model_opts(SELECT_AUTO);
  o.window_tokens = 256;
  o.top_k = 24;
  o.cache_max_tokens = 160;
  o.token_budget = 120;
  select_result r;
  CHECK_EQ_INT(select_run(&env, small, small_len, question, strlen(question), &o, &r, &e), 0);
  check_result(small, small_len, &r, 120);
  select_result_free(&r);
  long rss0 = max_rss_kb();
  prog p = {0};
  o.progress = on_progress;
  o.progress_arg = &p;
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), 0);
  long rss1 = max_rss_kb();
  check_result(text, len, &r, 120);
  CHECK_EQ_INT(r.method, SELECT_INFINIRETRI);
  CHECK(r.n_segs >= 1 && r.tokens > 60);
  CHECK(r.stats.input_tokens >= 20ull * in.n_ctx_train);
  CHECK(r.stats.max_seq_tokens <= 1 + 160 + 256 + 16);
  CHECK(r.stats.windows >= r.stats.input_tokens / 256);
  CHECK(r.stats.model_tokens >= r.stats.input_tokens);
  CHECK(rss1 - rss0 < 16 * 1024);
  CHECK_EQ_STR(p.last_phase, "select");
  fprintf(stderr, "infiniretri: %llu input tokens, %llu windows, %llu model tokens, rss +%ld KiB\n",
          (unsigned long long)r.stats.input_tokens, (unsigned long long)r.stats.windows,
          (unsigned long long)r.stats.model_tokens, rss1 - rss0);
  select_result_free(&r);
  /* cancelled from the progress callback */
  p = (prog){.stop_after = 2};
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), CTXD_ECANCELED);
  /* a window and cache that do not fit the model */
  o.progress = NULL;
  o.window_tokens = 1000;
  CHECK_EQ_INT(select_run(&env, text, len, question, strlen(question), &o, &r, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "window") != NULL);
  /* a question is needed */
  o.window_tokens = 256;
  CHECK_EQ_INT(select_run(&env, text, len, "", 0, &o, &r, &e), CTXD_EINVAL);
  free(text);
  free(small);
}

#define TIMED(call)                                                   \
  do {                                                                \
    double t0_ = now_s();                                             \
    call;                                                             \
    fprintf(stderr, "%-28s %.2f s\n", #call, now_s() - t0_);          \
  } while (0)

int main(void) {
  test_units();
  test_names_and_errors();
  test_bm25();
  test_embedding();
  test_progress();
  lm_model *m = load_model(MODEL("llama.gguf"));
  if (m) {
    TIMED(test_xl3m(m));
    TIMED(test_infini_scores(m));
    TIMED(test_infini_step(m));
    TIMED(test_infini_stream(m));
    lm_model_free(m);
  }
  return check_report("select");
}
