/* test_lm.c - the model runtime (index/model/lm.h) on llama.cpp's
 * vocabulary-only GGUFs and on random-weight models that
 * tests/model/make_random_gguf.py writes together with a numpy forward pass
 * of the same weights (attention of every layer, logits): tokenization
 * against llama.cpp's own test vectors, offsets, exact counts, log-probs and
 * entropy, both attention paths against each other and against numpy, KV
 * reuse, batching of sequences, embeddings, and the error paths. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "model/lm.h"

#define VOCAB(f) CTXD_LM_VOCAB_DIR "/" f
#define MODEL(f) CTXD_LM_TEST_DIR "/" f

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
    free(b);
    b = NULL;
  }
  fclose(f);
  if (b) {
    b[n] = 0;
    *len = (size_t)n;
  }
  return b;
}

static const char prose[] =
    "The committee met on Tuesday to weigh the proposal, which had been revised twice "
    "since spring. Its chairman, a retired engineer, said the numbers didn't add up: "
    "\"We can't fund 3,400 new units with a budget of $12.5 million.\" Others disagreed.\n\n"
    "Caf\xC3\xA9 owners near the station\xE2\x80\x94some of them for 30 years\xE2\x80\x94"
    "asked about parking, noise and the \xE6\x97\xA5\xE6\x9C\xAC garden. \xF0\x9F\x98\x80 "
    "Tabs\tand  double  spaces, URLs like https://example.org/a?b=1, and CamelCaseWords too.";

/* ------------------------------------------------------------ tokenizer */

/* llama.cpp's test vectors: <vocab>.inp holds texts separated by
 * "\n__ggml_vocab_test__\n", <vocab>.out the expected ids, a line each.
 * Checks ids, and that offsets tile the input and detokenize gives it back
 * (exact: the byte-level vocabularies; spm: SPM's added leading space). */
static void check_vectors(const char *gguf, int exact) {
  char inp[512], outp[512];
  snprintf(inp, sizeof inp, "%s.inp", gguf);
  snprintf(outp, sizeof outp, "%s.out", gguf);
  size_t ni = 0, no = 0;
  char *in = read_file(inp, &ni), *out = read_file(outp, &no);
  CHECK(in && out);
  lm_model *m = NULL;
  ctxd_error e;
  lm_model_opts mo;
  lm_model_defaults(&mo);
  mo.vocab_only = 1;
  CHECK_EQ_INT(lm_model_load(gguf, &mo, &m, &e), 0);
  if (!in || !out || !m) goto done;
  const char *sep = "\n__ggml_vocab_test__\n";
  char *p = in, *o = out;
  int cases = 0, id_ok = 0, off_ok = 0, rt_ok = 0, direct_ok = 0;
  lm_tokens t = {0};
  while (*p) {
    char *q = strstr(p, sep);
    size_t len = q ? (size_t)(q - p) : strlen(p);
    char *eol = strchr(o, '\n');
    if (!eol) break;
    *eol = 0;
    int32_t want[512];
    size_t nw = 0;
    for (char *s = o; *s && nw < 512;) {
      char *end;
      long v = strtol(s, &end, 10);
      if (end == s) break;
      want[nw++] = (int32_t)v;
      s = end;
    }
    cases++;
    lm_tokens d = {0};
    if (lm_tokenize(m, p, len, LM_TOK_NO_CACHE, &d, &e) == 0 && d.n == nw &&
        memcmp(d.id, want, nw * sizeof *want) == 0)
      direct_ok++;
    lm_tokens_free(&d);
    int rc = lm_tokenize(m, p, len, 0, &t, &e);
    if (rc == 0 && t.n == nw && memcmp(t.id, want, nw * sizeof *want) == 0) id_ok++;
    else fprintf(stderr, "%s case %d: rc %d, %zu tokens, want %zu\n", gguf, cases, rc, t.n, nw);
    /* Offsets: in order, no overlap, covering the input. */
    size_t cur = 0, skipped = 0;
    int ok = rc == 0;
    for (size_t i = 0; ok && i < t.n; i++) {
      if (t.start[i] != cur) {
        ok = !exact && i == 0 ? 1 : 0;
        skipped += t.start[i] - cur;
      }
      if (t.end[i] < t.start[i]) ok = 0;
      cur = t.end[i];
    }
    if (ok && cur == len && skipped == 0) off_ok++;
    else fprintf(stderr, "%s case %d: offsets end at %zu of %zu\n", gguf, cases, cur, len);
    char *txt = NULL;
    size_t tl = 0;
    if (rc == 0 && lm_detokenize(m, t.id, t.n, &txt, &tl, &e) == 0 && tl == len &&
        memcmp(txt, p, len) == 0)
      rt_ok++;
    else if (exact)
      fprintf(stderr, "%s case %d: detokenize differs\n", gguf, cases);
    free(txt);
    o = eol + 1;
    if (!q) break;
    p = q + strlen(sep);
  }
  CHECK(cases > 20);
  CHECK_EQ_INT(id_ok, cases);
  CHECK_EQ_INT(direct_ok, cases);
  CHECK_EQ_INT(off_ok, cases);
  if (exact) CHECK_EQ_INT(rt_ok, cases);
  lm_tokens_free(&t);
done:
  lm_model_free(m);
  free(in);
  free(out);
}

/* The piece cache (lmtok.h) against llama.cpp on the whole text: random
 * texts built from pieces that stress the cut points (spaces before letters
 * after every kind of character, contractions, Unicode spaces, newlines,
 * digits, CJK, emoji), ids and counts equal. */
static void fuzz_cache(const char *gguf) {
  static const char *const bits[] = {
      "a", "B", "the", " ", "  ", " x", " Y", ".", ",", "'s", "'S", "'ll", "n't", "\n", "\n\n",
      "\t", "1", "23", "456", "-", "(", ")", "\"", "$", "caf\xC3\xA9", "\xC3\x84pfel",
      "\xE6\x97\xA5\xE6\x9C\xAC", "\xF0\x9F\x98\x80", "\xC2\xA0", "\xE2\x80\x83",
      "\xE2\x80\x94", " \xC3\xA9t\xC3\xA9", "<|endoftext|>", "Antidisestablishmentarianism",
      "http://x.org/a?b=1", "\r\n", "...", "!?", " 'quoted'", "\xCE\xA9mega"};
  lm_model *m = NULL;
  ctxd_error e;
  lm_model_opts mo;
  lm_model_defaults(&mo);
  mo.vocab_only = 1;
  CHECK_EQ_INT(lm_model_load(gguf, &mo, &m, &e), 0);
  if (!m) return;
  const tok *tk = lm_model_tok(m);
  lm_tokens a = {0}, b = {0};
  char buf[1024];
  unsigned seed = 12345;
  int same = 0, counts = 0, runs = 1500;
  for (int r = 0; r < runs; r++) {
    size_t n = 0;
    int parts = 1 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 40;
    for (int k = 0; k < parts; k++) {
      const char *p = bits[((seed = seed * 1103515245u + 12345u) >> 16) % (sizeof bits / sizeof *bits)];
      size_t l = strlen(p);
      if (n + l >= sizeof buf) break;
      memcpy(buf + n, p, l);
      n += l;
    }
    if (lm_tokenize(m, buf, n, LM_TOK_NO_OFFSETS, &a, &e) == 0 &&
        lm_tokenize(m, buf, n, LM_TOK_NO_OFFSETS | LM_TOK_NO_CACHE, &b, &e) == 0 && a.n == b.n &&
        memcmp(a.id, b.id, a.n * sizeof *a.id) == 0)
      same++;
    else
      fprintf(stderr, "%s: cache differs on \"%.*s\"\n", gguf, (int)n, buf);
    if (tok_count(tk, buf, n) == b.n) counts++;
  }
  CHECK_EQ_INT(same, runs);
  CHECK_EQ_INT(counts, runs);
  /* The prose, again and again (cache hits), in two halves cut at a word. */
  size_t pn = strlen(prose);
  CHECK_EQ_INT(lm_tokenize(m, prose, pn, LM_TOK_NO_CACHE, &b, &e), 0);
  for (int r = 0; r < 3; r++) {
    CHECK_EQ_INT(lm_tokenize(m, prose, pn, 0, &a, &e), 0);
    CHECK(a.n == b.n && memcmp(a.id, b.id, a.n * sizeof *a.id) == 0);
  }
  lm_tokens_free(&a);
  lm_tokens_free(&b);
  lm_model_free(m);
}

/* Four threads share one model's piece cache: every result stays exact. */
typedef struct tok_job {
  const lm_model *m;
  const int32_t *want;
  size_t n_want;
  int ok;
} tok_job;

static void *tok_thread(void *arg) {
  tok_job *j = arg;
  lm_tokens t = {0};
  ctxd_error e;
  size_t n = strlen(prose);
  j->ok = 1;
  for (int r = 0; r < 200; r++) {
    /* a different cut each round, so the threads insert different pieces */
    size_t from = (size_t)(r * 7) % 40;
    while ((prose[from] & 0xC0) == 0x80) from++;
    if (lm_tokenize(j->m, prose + from, n - from, 0, &t, &e) != 0) j->ok = 0;
    if (from == 0 && (t.n != j->n_want || memcmp(t.id, j->want, t.n * sizeof *t.id) != 0)) j->ok = 0;
    if (tok_count(lm_model_tok(j->m), prose + from, n - from) != t.n) j->ok = 0;
  }
  lm_tokens_free(&t);
  return NULL;
}

static void threads_cache(const char *gguf) {
  lm_model *m = NULL;
  ctxd_error e;
  lm_model_opts mo;
  lm_model_defaults(&mo);
  mo.vocab_only = 1;
  CHECK_EQ_INT(lm_model_load(gguf, &mo, &m, &e), 0);
  if (!m) return;
  lm_tokens want = {0};
  CHECK_EQ_INT(lm_tokenize(m, prose, strlen(prose), LM_TOK_NO_CACHE, &want, &e), 0);
  pthread_t th[4];
  tok_job j[4];
  for (int i = 0; i < 4; i++) {
    j[i] = (tok_job){.m = m, .want = want.id, .n_want = want.n};
    pthread_create(&th[i], NULL, tok_thread, &j[i]);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    CHECK(j[i].ok);
  }
  lm_tokens_free(&want);
  lm_model_free(m);
}

static void test_vocab(void) {
  lm_model *m = NULL;
  ctxd_error e;
  lm_model_opts mo;
  lm_model_defaults(&mo);
  mo.vocab_only = 1;
  CHECK_EQ_INT(lm_model_load(VOCAB("ggml-vocab-gpt-2.gguf"), &mo, &m, &e), 0);
  if (!m) return;
  lm_info in;
  lm_model_info(m, &in);
  CHECK(in.vocab_only);
  CHECK_EQ_INT(in.n_vocab, 50257);
  CHECK_EQ_STR(in.arch, "gpt2");
  CHECK(strncmp(in.tokenizer, "gguf:gpt-2/50257/", 17) == 0 && strlen(in.tokenizer) == 25);

  /* Known ids and byte ranges. */
  lm_tokens t = {0};
  CHECK_EQ_INT(lm_tokenize(m, "Hello world", 11, 0, &t, &e), 0);
  CHECK_EQ_INT(t.n, 2);
  if (t.n == 2) {
    CHECK_EQ_INT(t.id[0], 15496);
    CHECK_EQ_INT(t.id[1], 995);
    CHECK_EQ_INT(t.start[0], 0);
    CHECK_EQ_INT(t.end[0], 5);
    CHECK_EQ_INT(t.start[1], 5);
    CHECK_EQ_INT(t.end[1], 11);
  }
  /* An emoji splits into byte tokens: ranges inside one character. */
  CHECK_EQ_INT(lm_tokenize(m, "\xF0\x9F\x98\x80", 4, 0, &t, &e), 0);
  CHECK(t.n >= 2);
  CHECK_EQ_INT(t.start[0], 0);
  CHECK_EQ_INT(t.end[t.n - 1], 4);
  /* Special-token text is plain text unless asked. */
  const char *eot = "a<|endoftext|>";
  CHECK_EQ_INT(lm_tokenize(m, eot, strlen(eot), 0, &t, &e), 0);
  CHECK(t.n > 2);
  CHECK_EQ_INT(lm_tokenize(m, eot, strlen(eot), LM_TOK_PARSE_SPECIAL, &t, &e), 0);
  CHECK_EQ_INT(t.n, 2);
  if (t.n == 2) {
    CHECK_EQ_INT(t.id[1], 50256);
    CHECK_EQ_INT(t.start[1], 1);
    CHECK_EQ_INT(t.end[1], 14);
  }
  CHECK_EQ_INT(lm_tokenize(m, "", 0, 0, &t, &e), 0);
  CHECK_EQ_INT(t.n, 0);
  /* A long text: more tokens than the first guess of the array size. */
  size_t big = 20000;
  char *digits = malloc(big);
  for (size_t i = 0; i < big; i++) digits[i] = (char)(i % 7 == 0 ? ' ' : '!' + (i * 37) % 90);
  CHECK_EQ_INT(lm_tokenize(m, digits, big, 0, &t, &e), 0);
  CHECK(t.n > big / 2 + 16);
  CHECK_EQ_INT(t.end[t.n - 1], big);
  size_t n_full = t.n;
  CHECK_EQ_INT(lm_tokenize(m, digits, big, LM_TOK_NO_OFFSETS, &t, &e), 0);
  CHECK_EQ_INT(t.n, n_full);
  CHECK_EQ_INT(lm_tokenize(m, digits, big, 0, &t, &e), 0); /* offsets again after NO_OFFSETS */
  CHECK_EQ_INT(t.end[t.n - 1], big);
  free(digits);

  /* The tok: counts equal lm_tokenize's, on every span of the prose. */
  const tok *tk = lm_model_tok(m);
  CHECK(tk == lm_model_tok(m));
  CHECK_EQ_STR(tk->name, in.tokenizer);
  size_t n = strlen(prose);
  int same = 0, spans = 0;
  for (size_t a = 0; a < n; a += 13) {
    for (size_t b = a; b <= n; b += 29) {
      if ((prose[a] & 0xC0) == 0x80 || (b < n && (prose[b] & 0xC0) == 0x80)) continue;
      spans++;
      if (lm_tokenize(m, prose + a, b - a, 0, &t, &e) == 0 && tok_count(tk, prose + a, b - a) == t.n)
        same++;
    }
  }
  CHECK_EQ_INT(same, spans);
  CHECK(spans > 200);
  CHECK_EQ_INT(tok_count(tk, "", 0), 0);
  /* Offsets need valid UTF-8 (a cut inside a character is reported). */
  CHECK_EQ_INT(lm_tokenize(m, "caf\xC3", 4, 0, &t, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "invalid UTF-8 at byte 3") != NULL);
  CHECK_EQ_INT(tok_count(tk, "Hello world", 11), 2);

  /* Bad input. */
  CHECK_EQ_INT(lm_tokenize(m, NULL, 3, 0, &t, &e), CTXD_EINVAL);
  CHECK_EQ_INT(lm_tokenize(m, "x", LM_TEXT_MAX + 1, 0, &t, &e), CTXD_EINVAL);
  int32_t bad = 50257;
  char *txt = NULL;
  size_t tl;
  CHECK_EQ_INT(lm_detokenize(m, &bad, 1, &txt, &tl, &e), CTXD_EINVAL);
  CHECK(txt == NULL);
  /* No context on a vocabulary. */
  lm_ctx *c = NULL;
  CHECK_EQ_INT(lm_ctx_create(m, NULL, &c, &e), CTXD_EPRECOND);
  embedder *em = NULL;
  CHECK_EQ_INT(lm_embedder_create(m, NULL, &em, &e), CTXD_EPRECOND);
  lm_tokens_free(&t);
  lm_model_free(m);

  /* Another vocabulary hashes to another name. */
  CHECK_EQ_INT(lm_model_load(VOCAB("ggml-vocab-llama-bpe.gguf"), &mo, &m, &e), 0);
  if (m) {
    lm_model_info(m, &in);
    CHECK(strncmp(in.tokenizer, "gguf:llama-bpe/", 15) == 0);
    lm_model_free(m);
  }

  check_vectors(VOCAB("ggml-vocab-gpt-2.gguf"), 1);
  check_vectors(VOCAB("ggml-vocab-qwen2.gguf"), 1);
  check_vectors(VOCAB("ggml-vocab-llama-bpe.gguf"), 1);
  check_vectors(VOCAB("ggml-vocab-llama-spm.gguf"), 0);
  fuzz_cache(VOCAB("ggml-vocab-gpt-2.gguf"));
  fuzz_cache(VOCAB("ggml-vocab-qwen2.gguf"));
  fuzz_cache(VOCAB("ggml-vocab-llama-bpe.gguf"));
  threads_cache(VOCAB("ggml-vocab-gpt-2.gguf"));

  /* WordPiece lower-cases: no offsets, but ids. */
  CHECK_EQ_INT(lm_model_load(VOCAB("ggml-vocab-bert-bge.gguf"), &mo, &m, &e), 0);
  if (m) {
    CHECK_EQ_INT(lm_tokenize(m, "Hello World", 11, 0, &t, &e), CTXD_EUNIMPL);
    CHECK(strstr(e.msg, "byte offsets") != NULL);
    CHECK_EQ_INT(lm_tokenize(m, "Hello World", 11, LM_TOK_NO_OFFSETS, &t, &e), 0);
    CHECK_EQ_INT(t.n, 2);
    lm_tokens_free(&t);
    lm_model_free(m);
  }

  /* Load errors. */
  CHECK_EQ_INT(lm_model_load(MODEL("no-such.gguf"), NULL, &m, &e), CTXD_ENOTFOUND);
  CHECK(m == NULL);
  CHECK_EQ_INT(lm_model_load(VOCAB("ggml-vocab-gpt-2.gguf.inp"), NULL, &m, &e), CTXD_EIO);
  CHECK(strstr(e.msg, "cannot load") != NULL);
  CHECK_EQ_INT(lm_model_load("", NULL, &m, &e), CTXD_EINVAL);
}

/* ------------------------------------------------------------ reference */

typedef struct ref {
  uint32_t n_tok, n_layer, n_head, n_vocab;
  int32_t *ids;
  float *attn;   /* [layer][head][i][j] */
  float *logits; /* [i][vocab] */
} ref;

static int ref_load(const char *path, ref *r) {
  size_t len = 0;
  char *b = read_file(path, &len);
  if (!b || len < 24 || memcmp(b, "CTXDREF1", 8) != 0) {
    free(b);
    return -1;
  }
  memcpy(&r->n_tok, b + 8, 4);
  memcpy(&r->n_layer, b + 12, 4);
  memcpy(&r->n_head, b + 16, 4);
  memcpy(&r->n_vocab, b + 20, 4);
  size_t na = (size_t)r->n_layer * r->n_head * r->n_tok * r->n_tok;
  size_t nl = (size_t)r->n_tok * r->n_vocab;
  if (len != 24 + 4 * ((size_t)r->n_tok + na + nl)) {
    free(b);
    return -1;
  }
  r->ids = malloc(4 * (size_t)r->n_tok);
  r->attn = malloc(4 * na);
  r->logits = malloc(4 * nl);
  memcpy(r->ids, b + 24, 4 * (size_t)r->n_tok);
  memcpy(r->attn, b + 24 + 4 * (size_t)r->n_tok, 4 * na);
  memcpy(r->logits, b + 24 + 4 * ((size_t)r->n_tok + na), 4 * nl);
  free(b);
  return 0;
}

static void ref_free(ref *r) {
  free(r->ids);
  free(r->attn);
  free(r->logits);
}

static float ref_attn(const ref *r, uint32_t layer, uint32_t h, uint32_t i, uint32_t j) {
  return r->attn[(((size_t)layer * r->n_head + h) * r->n_tok + i) * r->n_tok + j];
}

static lm_ctx *mkctx(lm_model *m, int fa, int attn, int layer, int path, int kv_f32,
                     uint32_t n_batch, uint32_t n_ubatch, uint32_t n_seq) {
  lm_ctx_opts o;
  lm_ctx_defaults(&o);
  o.n_ctx = 256;
  o.flash_attn = fa;
  o.attn = attn;
  o.attn_layer = layer;
  o.attn_path = path;
  o.kv_f32 = kv_f32;
  o.n_batch = n_batch;
  o.n_ubatch = n_ubatch;
  o.n_seq = n_seq;
  o.n_threads = 1; /* spinning ggml threads crawl on a loaded machine */
  lm_ctx *c = NULL;
  ctxd_error e;
  int rc = lm_ctx_create(m, &o, &c, &e);
  if (rc) fprintf(stderr, "lm_ctx_create: %s\n", e.msg);
  CHECK_EQ_INT(rc, 0);
  return c;
}

/* Capture the attention of ids[k..n) after ids[0..k) (decoded in pieces of
 * `piece` tokens) and return the largest difference from the reference. */
static double attn_vs_ref(lm_ctx *c, const ref *r, uint32_t layer, uint32_t k, uint32_t piece,
                          float **rows_out) {
  ctxd_error e;
  lm_ctx_clear(c);
  for (uint32_t at = 0; at < k; at += piece) {
    uint32_t n = k - at < piece ? k - at : piece;
    lm_append a = {.seq = 0, .ids = r->ids + at, .n = n, .out_from = n};
    CHECK_EQ_INT(lm_eval(c, &a, 1, &e), 0);
  }
  int rc = lm_eval_attn(c, 0, r->ids + k, r->n_tok - k, 0, 0, &e);
  if (rc) fprintf(stderr, "lm_eval_attn: %s\n", e.msg);
  CHECK_EQ_INT(rc, 0);
  if (rc) return 1e9;
  uint32_t rows, heads, cols;
  const float *p = lm_attn_rows(c, &rows, &heads, &cols);
  CHECK_EQ_INT(rows, r->n_tok - k);
  CHECK_EQ_INT(heads, r->n_head);
  CHECK_EQ_INT(cols, r->n_tok);
  double worst = 0;
  for (uint32_t i = 0; i < rows; i++) {
    for (uint32_t h = 0; h < heads; h++) {
      double sum = 0;
      for (uint32_t j = 0; j < cols; j++) {
        float v = p[((size_t)i * heads + h) * cols + j];
        sum += v;
        if (j > k + i) CHECK(v == 0.0f); /* causal */
        double d = fabs(v - ref_attn(r, layer, h, k + i, j));
        if (d > worst) worst = d;
      }
      CHECK(fabs(sum - 1.0) < 1e-4);
    }
  }
  if (rows_out) {
    *rows_out = malloc((size_t)rows * heads * cols * sizeof(float));
    memcpy(*rows_out, p, (size_t)rows * heads * cols * sizeof(float));
  }
  return worst;
}

static double max_diff(const float *a, const float *b, size_t n) {
  double w = 0;
  for (size_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - b[i]);
    if (d > w) w = d;
  }
  return w;
}

static int abort_now(void *arg) { return ++*(int *)arg > 0; }

static void test_model(const char *gguf, const char *reff, const char *arch, uint32_t layers,
                       uint32_t embd) {
  ref r;
  CHECK_EQ_INT(ref_load(reff, &r), 0);
  lm_model *m = NULL;
  ctxd_error e;
  CHECK_EQ_INT(lm_model_load(gguf, NULL, &m, &e), 0);
  if (!m) return;
  lm_info in;
  lm_model_info(m, &in);
  CHECK_EQ_STR(in.arch, arch);
  CHECK_EQ_STR(in.name, "ctxd-random");
  CHECK_EQ_INT(in.n_layer, layers);
  CHECK_EQ_INT(in.n_embd, embd);
  CHECK_EQ_INT(in.n_head, 4);
  CHECK_EQ_INT(in.n_head_kv, 2);
  CHECK_EQ_INT(in.n_vocab, 50257);
  CHECK(in.n_ctx_train == 1024 || in.n_ctx_train == 2048);
  CHECK(in.n_params > 50257ull * embd);
  CHECK(!in.vocab_only);
  CHECK_EQ_INT(r.n_layer, layers);
  uint32_t n = r.n_tok, V = r.n_vocab;

  /* Logits against numpy; log-probs and entropy against the logits. */
  lm_ctx *c = mkctx(m, 0, 0, -1, 0, 1, 0, 0, 1);
  float *lg = malloc((size_t)n * V * sizeof(float));
  float *lp = malloc(n * sizeof(float)), *en = malloc(n * sizeof(float));
  lm_append a = {.seq = 0, .ids = r.ids, .n = n, .out_from = 0, .last_target = 7,
                 .logprob = lp, .entropy = en, .logits = lg};
  CHECK_EQ_INT(lm_eval(c, &a, 1, &e), 0);
  CHECK_EQ_INT(lm_seq_len(c, 0), n);
  double scale = 0;
  for (size_t i = 0; i < (size_t)n * V; i++)
    if (fabs(r.logits[i]) > scale) scale = fabs(r.logits[i]);
  double dl = max_diff(lg, r.logits, (size_t)n * V);
  printf("%s: logits max |diff| %.2e (scale %.2f)\n", arch, dl, scale);
  CHECK(dl < 1e-4 * scale);
  int32_t *all = malloc(V * sizeof(int32_t));
  float *lpa = malloc(V * sizeof(float));
  for (uint32_t v = 0; v < V; v++) all[v] = (int32_t)v;
  for (uint32_t i = 0; i < n; i++) {
    const float *row = lg + (size_t)i * V;
    float ent;
    lm_logprobs(row, V, all, V, lpa, &ent);
    double sum = 0, h = 0, mx = -INFINITY;
    for (uint32_t v = 0; v < V; v++) sum += exp(lpa[v]);
    CHECK(fabs(sum - 1.0) < 1e-4);
    /* Entropy straight from the definition, in double. */
    for (uint32_t v = 0; v < V; v++) mx = row[v] > mx ? row[v] : mx;
    double z = 0;
    for (uint32_t v = 0; v < V; v++) z += exp(row[v] - mx);
    for (uint32_t v = 0; v < V; v++) {
      double pv = exp(row[v] - mx) / z;
      if (pv > 0) h -= pv * log(pv);
    }
    CHECK(fabs(en[i] - h) < 1e-3 * (1 + h));
    CHECK(fabs(ent - en[i]) < 1e-5 * (1 + h));
    int32_t tgt = i + 1 < n ? r.ids[i + 1] : 7;
    CHECK(fabs(lp[i] - lpa[tgt]) < 1e-5);
    CHECK(fabs(lp[i] - (row[tgt] - mx - log(z))) < 1e-3);
  }
  /* Explicit targets, and no target. */
  lm_seq_truncate(c, 0, n - 2, &e);
  CHECK_EQ_INT(lm_seq_len(c, 0), n - 2);
  int32_t tg[2] = {5, 50000};
  float lp2[2];
  lm_append a2 = {.seq = 0, .ids = r.ids + n - 2, .n = 2, .out_from = 0, .target = tg,
                  .logprob = lp2};
  CHECK_EQ_INT(lm_eval(c, &a2, 1, &e), 0);
  lm_logprobs(lg + (size_t)(n - 2) * V, V, &tg[0], 1, lpa, NULL);
  CHECK(fabs(lp2[0] - lpa[0]) < 1e-5);
  lm_logprobs(lg + (size_t)(n - 1) * V, V, &tg[1], 1, lpa, NULL);
  CHECK(fabs(lp2[1] - lpa[0]) < 1e-5);
  lm_seq_truncate(c, 0, n - 1, &e);
  a2 = (lm_append){.seq = 0, .ids = r.ids + n - 1, .n = 1, .out_from = 0, .last_target = -1,
                   .logprob = lp2};
  CHECK_EQ_INT(lm_eval(c, &a2, 1, &e), 0);
  CHECK(isnan(lp2[0]));

  /* KV reuse: cut back and append something else = decoding it afresh. */
  int32_t alt[6] = {11, 22, 33, 44, 55, 66};
  uint32_t keep = n / 2;
  CHECK_EQ_INT(lm_seq_common_prefix(c, 0, r.ids, keep), keep);
  CHECK_EQ_INT(lm_seq_truncate(c, 0, keep, &e), 0);
  float *lga = malloc(6 * (size_t)V * sizeof(float)), *lgb = malloc(6 * (size_t)V * sizeof(float));
  a2 = (lm_append){.seq = 0, .ids = alt, .n = 6, .out_from = 0, .logits = lga};
  CHECK_EQ_INT(lm_eval(c, &a2, 1, &e), 0);
  CHECK_EQ_INT(lm_seq_common_prefix(c, 0, r.ids, n), keep);
  lm_ctx_clear(c);
  CHECK_EQ_INT(lm_seq_len(c, 0), 0);
  lm_append fresh[2] = {{.seq = 0, .ids = r.ids, .n = keep, .out_from = keep},
                        {.seq = 0, .ids = alt, .n = 6, .out_from = 0, .logits = lgb}};
  CHECK_EQ_INT(lm_eval(c, fresh, 2, &e), 0);
  CHECK(max_diff(lga, lgb, 6 * (size_t)V) < 1e-5 * scale);

  /* Errors leave the sequence as it was. */
  uint32_t len0 = lm_seq_len(c, 0);
  int32_t bad[2] = {1, 60000};
  a2 = (lm_append){.seq = 0, .ids = bad, .n = 2, .out_from = 2};
  CHECK_EQ_INT(lm_eval(c, &a2, 1, &e), CTXD_EINVAL);
  a2.seq = 1;
  bad[1] = 2;
  CHECK_EQ_INT(lm_eval(c, &a2, 1, &e), CTXD_EINVAL);
  int32_t *many = calloc(300, sizeof(int32_t));
  a2 = (lm_append){.seq = 0, .ids = many, .n = lm_ctx_n_ctx(c) - len0 + 1, .out_from = 0};
  CHECK_EQ_INT(lm_eval(c, &a2, 1, &e), CTXD_ELIMIT);
  CHECK_EQ_INT(lm_seq_len(c, 0), len0);
  int calls = 0;
  lm_ctx_set_abort(c, abort_now, &calls);
  a2 = (lm_append){.seq = 0, .ids = many, .n = 10, .out_from = 10};
  CHECK_EQ_INT(lm_eval(c, &a2, 1, &e), CTXD_ECANCELED);
  CHECK(calls > 0);
  CHECK_EQ_INT(lm_seq_len(c, 0), len0);
  lm_ctx_set_abort(c, NULL, NULL);
  CHECK_EQ_INT(lm_eval_attn(c, 0, many, 2, 0, 0, &e), CTXD_EPRECOND);
  /* The state after the failures still decodes correctly. */
  lm_seq_truncate(c, 0, keep, &e);
  a2 = (lm_append){.seq = 0, .ids = alt, .n = 6, .out_from = 0, .logits = lgb};
  CHECK_EQ_INT(lm_eval(c, &a2, 1, &e), 0);
  CHECK(max_diff(lga, lgb, 6 * (size_t)V) < 1e-5 * scale);
  lm_ctx_free(c);

  /* Several sequences in one call = each alone (and a batch smaller than
   * the call, so it spans llama_decode calls). */
  c = mkctx(m, 0, 0, -1, 0, 1, 8, 4, 3);
  if (c) {
    float e3[3][8], e1[8];
    lm_append three[3];
    for (int s = 0; s < 3; s++)
      three[s] = (lm_append){.seq = (uint32_t)s, .ids = r.ids + s, .n = 9, .out_from = 1,
                             .entropy = e3[s]};
    CHECK_EQ_INT(lm_eval(c, three, 3, &e), 0);
    for (int s = 0; s < 3; s++) CHECK_EQ_INT(lm_seq_len(c, (uint32_t)s), 9);
    for (int s = 0; s < 3; s++) {
      lm_ctx_clear(c);
      lm_append one = {.seq = 2, .ids = r.ids + s, .n = 9, .out_from = 1, .entropy = e1};
      CHECK_EQ_INT(lm_eval(c, &one, 1, &e), 0);
      CHECK(max_diff(e1, e3[s], 8) < 1e-4);
      /* with the same context, the same entropy as the full run above */
      if (s == 0) CHECK(fabs(e1[0] - en[1]) < 1e-3);
    }
    lm_stats st;
    lm_ctx_stats(c, &st);
    CHECK(st.tokens == 27 + 27 && st.decodes >= 4 + 6);
    lm_ctx_free(c);
  }

  /* Attention: the simple path (kq_soft_max) and the fast path (Q and K,
   * flash attention on) against numpy, for the first and the last layer,
   * with the context decoded in pieces across ubatches. */
  uint32_t k = n - 6;
  for (uint32_t L = 0; L < layers; L += layers - 1) {
    float *soft = NULL, *fast = NULL, *fast16 = NULL, *soft16 = NULL;
    lm_ctx *cs = mkctx(m, 0, 1, (int)L, LM_ATTN_AUTO, 1, 8, 4, 1);
    lm_ctx *cf = mkctx(m, 1, 1, (int)L - (int)layers, LM_ATTN_AUTO, 1, 8, 4, 1);
    if (!cs || !cf) break;
    CHECK_EQ_INT(lm_ctx_attn_path(cs), LM_ATTN_SOFTMAX);
    CHECK_EQ_INT(lm_ctx_attn_path(cf), LM_ATTN_QK);
    double ds = attn_vs_ref(cs, &r, L, k, 5, &soft);
    double df = attn_vs_ref(cf, &r, L, k, 7, &fast);
    size_t cnt = (size_t)(n - k) * r.n_head * n;
    double dsf = max_diff(soft, fast, cnt);
    printf("%s layer %u: |softmax - numpy| %.2e, |qk - numpy| %.2e, |softmax - qk| %.2e\n", arch,
           L, ds, df, dsf);
    /* Flash attention computes in float16 inside (llama.cpp casts K and V),
     * so from the second layer on its inputs differ slightly. */
    double tol_fa = L == 0 ? 2e-4 : 1e-2;
    CHECK(ds < 2e-4);
    CHECK(df < tol_fa);
    CHECK(dsf < tol_fa);
    /* The QK path also works with flash attention off, and after cutting
     * the sequence back (its recorded keys are cut too). */
    lm_ctx *cq = mkctx(m, 0, 1, (int)L, LM_ATTN_QK, 1, 0, 0, 1);
    if (cq) {
      double dq = attn_vs_ref(cq, &r, L, k, 100, NULL);
      printf("%s layer %u: |qk (flash attention off) - numpy| %.2e\n", arch, L, dq);
      CHECK(dq < 2e-4);
      CHECK_EQ_INT(lm_seq_truncate(cq, 0, 3, &e), 0);
      lm_append more = {.seq = 0, .ids = r.ids + 3, .n = k - 3, .out_from = k - 3};
      CHECK_EQ_INT(lm_eval(cq, &more, 1, &e), 0);
      CHECK_EQ_INT(lm_eval_attn(cq, 0, r.ids + k, n - k, 0, 0, &e), 0);
      uint32_t rr, hh, cc;
      const float *p = lm_attn_rows(cq, &rr, &hh, &cc);
      CHECK(max_diff(p, soft, cnt) < 2e-4);
      /* Rows from the middle of the appended tokens, summed over heads. */
      lm_seq_truncate(cq, 0, k, &e);
      CHECK_EQ_INT(lm_eval_attn(cq, 0, r.ids + k, n - k, 2, LM_ATTN_SUM_HEADS, &e), 0);
      p = lm_attn_rows(cq, &rr, &hh, &cc);
      CHECK_EQ_INT(rr, n - k - 2);
      CHECK_EQ_INT(hh, 1);
      double w = 0;
      for (uint32_t i = 0; i < rr; i++)
        for (uint32_t j = 0; j < cc; j++) {
          double s = 0;
          for (uint32_t h = 0; h < r.n_head; h++) s += ref_attn(&r, L, h, k + 2 + i, j);
          double d = fabs(p[(size_t)i * cc + j] - s);
          w = d > w ? d : w;
        }
      CHECK(w < 1e-3);
      lm_ctx_free(cq);
    }
    /* Default float16 cache: both paths still agree closely. */
    lm_ctx *cs16 = mkctx(m, 0, 1, (int)L, 0, 0, 0, 0, 1);
    lm_ctx *cf16 = mkctx(m, 1, 1, (int)L, 0, 0, 0, 0, 1);
    if (cs16 && cf16) {
      double a16 = attn_vs_ref(cs16, &r, L, k, 100, &soft16);
      double b16 = attn_vs_ref(cf16, &r, L, k, 100, &fast16);
      double ab = max_diff(soft16, fast16, cnt);
      printf("%s layer %u f16 cache: |softmax - numpy| %.2e, |qk - numpy| %.2e, |softmax - qk| %.2e\n",
             arch, L, a16, b16, ab);
      CHECK(a16 < 1e-2 && b16 < 1e-2 && ab < 1e-2);
    }
    lm_ctx_free(cs16);
    lm_ctx_free(cf16);
    free(soft16);
    free(fast16);
    free(soft);
    free(fast);
    lm_ctx_free(cs);
    lm_ctx_free(cf);
    if (layers == 1) break;
  }

  /* Option errors. */
  lm_ctx_opts o;
  lm_ctx_defaults(&o);
  o.attn = 1;
  o.attn_layer = (int)layers;
  lm_ctx *bad_c = NULL;
  CHECK_EQ_INT(lm_ctx_create(m, &o, &bad_c, &e), CTXD_EINVAL);
  o.attn_layer = 0;
  o.flash_attn = 1;
  o.attn_path = LM_ATTN_SOFTMAX;
  CHECK_EQ_INT(lm_ctx_create(m, &o, &bad_c, &e), CTXD_EINVAL);
  lm_ctx_defaults(&o);
  o.n_seq = LM_SEQ_MAX + 1;
  CHECK_EQ_INT(lm_ctx_create(m, &o, &bad_c, &e), CTXD_EINVAL);
  CHECK(bad_c == NULL);

  free(many);
  free(lga);
  free(lgb);
  free(all);
  free(lpa);
  free(lg);
  free(lp);
  free(en);
  lm_model_free(m);
  ref_free(&r);
}

/* Q8_0 weights (the same random numbers, quantized): the quantized kernels
 * run, and the logits stay near the float32 model's. */
static void test_quantized(void) {
  ref r;
  CHECK_EQ_INT(ref_load(MODEL("llama.ref"), &r), 0);
  lm_model *m = NULL;
  ctxd_error e;
  CHECK_EQ_INT(lm_model_load(MODEL("llama-q8.gguf"), NULL, &m, &e), 0);
  if (!m) {
    ref_free(&r);
    return;
  }
  size_t nl = (size_t)r.n_tok * r.n_vocab;
  float *lg = malloc(nl * sizeof(float));
  lm_ctx *c = mkctx(m, 0, 1, -1, 0, 0, 0, 0, 1);
  if (c) {
    lm_append a = {.seq = 0, .ids = r.ids, .n = r.n_tok - 4, .out_from = 0, .logits = lg};
    CHECK_EQ_INT(lm_eval(c, &a, 1, &e), 0);
    CHECK_EQ_INT(lm_eval_attn(c, 0, r.ids + r.n_tok - 4, 4, 0, 0, &e), 0);
    double scale = 0;
    for (size_t i = 0; i < (size_t)(r.n_tok - 4) * r.n_vocab; i++)
      if (fabs(r.logits[i]) > scale) scale = fabs(r.logits[i]);
    double d = max_diff(lg, r.logits, (size_t)(r.n_tok - 4) * r.n_vocab);
    printf("q8_0: logits max |diff| from float32 numpy %.3f (scale %.1f)\n", d, scale);
    CHECK(d > 0 && d < 0.05 * scale);
  }
  lm_ctx_free(c);
  c = mkctx(m, 1, 1, -1, 0, 0, 0, 0, 1);
  if (c) {
    lm_append a = {.seq = 0, .ids = r.ids, .n = r.n_tok - 4, .out_from = r.n_tok - 4};
    CHECK_EQ_INT(lm_eval(c, &a, 1, &e), 0);
    CHECK_EQ_INT(lm_eval_attn(c, 0, r.ids + r.n_tok - 4, 4, 0, 0, &e), 0);
  }
  lm_ctx_free(c);
  free(lg);
  lm_model_free(m);
  ref_free(&r);
}

/* Many output rows in one call: their log-softmax is spread over the
 * context's threads (lm.c lp_run_all); every row must equal lm_logprobs on
 * that row's logits, and a one-thread context must agree. */
static void test_threaded_logprobs(void) {
  lm_model *m = NULL;
  ctxd_error e;
  CHECK_EQ_INT(lm_model_load(MODEL("llama.gguf"), NULL, &m, &e), 0);
  if (!m) return;
  enum { N = 200 };
  int32_t ids[N];
  for (int i = 0; i < N; i++) ids[i] = (int32_t)((i * 7919 + 13) % 50000);
  float *lg = malloc((size_t)N * 50257 * sizeof(float));
  float lp[2][N], en[2][N];
  for (int v = 0; v < 2; v++) {
    lm_ctx_opts o;
    lm_ctx_defaults(&o);
    o.n_ctx = 256;
    o.n_batch = 256;
    o.n_threads = v == 0 ? 4 : 1;
    lm_ctx *c = NULL;
    CHECK_EQ_INT(lm_ctx_create(m, &o, &c, &e), 0);
    if (!c) continue;
    lm_append a = {.seq = 0, .ids = ids, .n = N, .out_from = 0, .last_target = 5,
                   .logprob = lp[v], .entropy = en[v], .logits = v == 0 ? lg : NULL};
    CHECK_EQ_INT(lm_eval(c, &a, 1, &e), 0);
    lm_ctx_free(c);
  }
  int bad = 0;
  for (int i = 0; i < N; i++) {
    int32_t t = i + 1 < N ? ids[i + 1] : 5;
    float l1, e1;
    lm_logprobs(lg + (size_t)i * 50257, 50257, &t, 1, &l1, &e1);
    if (l1 != lp[0][i] || e1 != en[0][i]) bad++;
    if (fabsf(lp[0][i] - lp[1][i]) > 1e-4f || fabsf(en[0][i] - en[1][i]) > 1e-4f) bad++;
  }
  CHECK_EQ_INT(bad, 0);
  free(lg);
  lm_model_free(m);
}

static void test_embedder(void) {
  lm_model *m = NULL;
  ctxd_error e;
  CHECK_EQ_INT(lm_model_load(MODEL("llama.gguf"), NULL, &m, &e), 0);
  if (!m) return;
  embedder *em = NULL;
  lm_embedder_opts o;
  lm_embedder_defaults(&o);
  o.n_threads = 1;
  o.max_tokens = 64;
  CHECK_EQ_INT(lm_embedder_create(m, &o, &em, &e), 0);
  lm_model_free(m); /* the embedder keeps its own reference */
  if (!em) return;
  CHECK_EQ_STR(em->name, "model");
  CHECK_EQ_INT(em->dim, 64);
  const char *texts[5] = {"The cat sat on the mat.", "", prose, "The cat sat on the mat.",
                          "Quarterly revenue rose."};
  size_t lens[5];
  for (int i = 0; i < 5; i++) lens[i] = strlen(texts[i]);
  float *v = malloc(5 * 64 * sizeof(float)), *w = malloc(5 * 64 * sizeof(float));
  CHECK_EQ_INT(embed_texts(em, texts, lens, 5, v, &e), 0);
  for (int i = 0; i < 5; i++) {
    double ss = 0;
    for (int d = 0; d < 64; d++) ss += (double)v[i * 64 + d] * v[i * 64 + d];
    if (i == 1) CHECK(ss == 0);
    else CHECK(fabs(ss - 1) < 1e-5);
  }
  CHECK(max_diff(v, v + 3 * 64, 64) < 1e-6);  /* same text, same vector */
  CHECK(max_diff(v, v + 4 * 64, 64) > 1e-3);  /* another text, another */
  /* One at a time gives the same rows (deterministic, batch-independent). */
  for (int i = 0; i < 5; i++) CHECK_EQ_INT(embed_texts(em, texts + i, lens + i, 1, w + i * 64, &e), 0);
  CHECK(max_diff(v, w, 5 * 64) < 1e-4);
  free(v);
  free(w);
  embedder_free(em);
}

int main(void) {
  test_vocab();
  test_model(MODEL("llama.gguf"), MODEL("llama.ref"), "llama", 2, 64);
  test_model(MODEL("qwen2.gguf"), MODEL("qwen2.ref"), "qwen2", 3, 128);
  test_quantized();
  test_threaded_logprobs();
  test_embedder();
  return check_report("lm");
}
