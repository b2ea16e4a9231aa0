/* test_embed.c - the hash embedder: determinism, norms, zero rows, word
 * order, bucket and sign against an independent FNV-1a, tf and idf weights,
 * the text form, batches against single calls, and concurrent use. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "embed.h"

/* Plain 64-bit FNV-1a, written out here so the test does not trust the
 * embedder's own. */
static uint64_t ref_fnv(const unsigned char *p, size_t n) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

/* The rule's hash: FNV-1a of the 8 little-endian seed bytes, then the
 * feature. */
static uint64_t ref_feature_hash(uint64_t seed, const char *feat) {
  unsigned char buf[256];
  size_t n = strlen(feat);
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(seed >> (8 * i));
  memcpy(buf + 8, feat, n);
  return ref_fnv(buf, 8 + n);
}

static embedder *make(uint32_t dim, int bigrams, float bw, int sublinear) {
  embed_hash_opts o;
  embedder *m = NULL;
  ctxd_error e;
  embed_hash_defaults(&o);
  o.dim = dim;
  o.bigrams = bigrams;
  o.bigram_weight = bw;
  o.sublinear_tf = sublinear;
  if (embed_hash_create(&o, &m, &e)) {
    fprintf(stderr, "embed_hash_create: %s\n", e.msg);
    exit(1);
  }
  return m;
}

static float *embed1(const embedder *m, const char *s) {
  float *row = malloc(m->dim * sizeof *row);
  size_t len = strlen(s);
  ctxd_error e;
  for (uint32_t j = 0; j < m->dim; j++) row[j] = 7.0f; /* must be overwritten */
  if (embed_texts(m, &s, &len, 1, row, &e)) {
    fprintf(stderr, "embed: %s\n", e.msg);
    exit(1);
  }
  return row;
}

static double dot(const float *a, const float *b, uint32_t dim) {
  double s = 0;
  for (uint32_t j = 0; j < dim; j++) s += (double)a[j] * b[j];
  return s;
}

static int is_zero(const float *a, uint32_t dim) {
  for (uint32_t j = 0; j < dim; j++)
    if (a[j] != 0.0f) return 0;
  return 1;
}

static const char *prose =
    "The jury further said in term-end presentments that the City Executive "
    "Committee, which had over-all charge of the election, deserves the "
    "praise and thanks of the City of Atlanta for the manner in which the "
    "election was conducted.";

static void test_reference_hash(void) {
  /* Published FNV-1a 64 test vectors anchor the reference function. */
  CHECK(ref_fnv((const unsigned char *)"", 0) == 0xcbf29ce484222325ull);
  CHECK(ref_fnv((const unsigned char *)"a", 1) == 0xaf63dc4c8601ec8cull);
  CHECK(ref_fnv((const unsigned char *)"foobar", 6) == 0x85944171f73967e8ull);
}

static void test_determinism_norm(void) {
  embedder *m = make(EMBED_HASH_DIM, 1, 0.5f, 1), *m2 = make(EMBED_HASH_DIM, 1, 0.5f, 1);
  float *a = embed1(m, prose), *b = embed1(m, prose), *c = embed1(m2, prose);
  CHECK(memcmp(a, b, m->dim * sizeof *a) == 0);
  CHECK(memcmp(a, c, m->dim * sizeof *a) == 0);
  CHECK(fabs(dot(a, a, m->dim) - 1.0) < 1e-5);
  CHECK(fabs(dot(a, b, m->dim) - 1.0) < 1e-5); /* same text: cosine 1 */
  CHECK_EQ_STR(m->name, "hash");
  CHECK_EQ_INT(m->dim, EMBED_HASH_DIM);
  free(a);
  free(b);
  free(c);
  /* A different text is a different direction. */
  a = embed1(m, prose);
  b = embed1(m, "Completely unrelated words about quantum chromodynamics.");
  CHECK(fabs(dot(a, b, m->dim)) < 0.3);
  free(a);
  free(b);
  embedder_free(m);
  embedder_free(m2);
}

static void test_zero_rows(void) {
  embedder *m = make(64, 1, 0.5f, 1);
  const char *empty[] = {"", "   \n\t ", "...!!! -- ?? \xe2\x80\x94 \xe2\x80\x9c\xe2\x80\x9d",
                         "\xf0\x9f\x98\x80\xf0\x9f\x9a\x80"};
  for (size_t i = 0; i < sizeof empty / sizeof empty[0]; i++) {
    float *r = embed1(m, empty[i]);
    CHECK(is_zero(r, m->dim));
    free(r);
  }
  /* len 0 with a NULL pointer is an empty text too. */
  float row[64];
  const char *np = NULL;
  size_t zl = 0;
  row[0] = 1;
  CHECK_EQ_INT(embed_texts(m, &np, &zl, 1, row, NULL), 0);
  CHECK(is_zero(row, 64));
  embedder_free(m);
}

static void test_word_order(void) {
  const char *x = "the cat sat on the mat", *y = "on the mat the cat sat";
  embedder *uni = make(1024, 0, 0.5f, 1), *bi = make(1024, 1, 0.5f, 1);
  float *a = embed1(uni, x), *b = embed1(uni, y);
  CHECK(fabs(dot(a, b, 1024) - 1.0) < 1e-6);
  free(a);
  free(b);
  a = embed1(bi, x);
  b = embed1(bi, y);
  double c = dot(a, b, 1024);
  CHECK(c < 0.99 && c > 0.5); /* shares unigrams and 3 of 5 bigrams */
  free(a);
  free(b);
  /* Case and punctuation are the analyser's business: same terms, same row. */
  a = embed1(bi, "The CAT, sat... on the MAT!");
  b = embed1(bi, x);
  CHECK(memcmp(a, b, 1024 * sizeof *a) == 0);
  free(a);
  free(b);
  embedder_free(uni);
  embedder_free(bi);
}

/* The bucket and sign of one feature under the rule. */
static void where(uint64_t seed, const char *feat, uint32_t dim, uint32_t *bucket,
                  float *sign) {
  uint64_t h = ref_feature_hash(seed, feat);
  *bucket = (uint32_t)(h % dim);
  *sign = (h >> 63) ? -1.0f : 1.0f;
}

/* m (dim 65536, seed 0) embeds `text` into x, y and "x y" with weights
 * wx, wy, wxy before normalisation; at that dim the three land in
 * different buckets (checked). */
static void expect_pair(const embedder *m, const char *text, const char *x,
                        const char *y, double wx, double wy, double wxy) {
  float *r = embed1(m, text);
  char xy[128];
  uint32_t b[3];
  float s[3];
  const double w[3] = {wx, wy, wxy};
  snprintf(xy, sizeof xy, "%s %s", x, y);
  where(0, x, 65536, &b[0], &s[0]);
  where(0, y, 65536, &b[1], &s[1]);
  where(0, xy, 65536, &b[2], &s[2]);
  CHECK(b[0] != b[1] && b[0] != b[2] && b[1] != b[2]);
  double n = sqrt(wx * wx + wy * wy + wxy * wxy);
  for (int i = 0; i < 3; i++) CHECK(fabs(r[b[i]] - s[i] * w[i] / n) < 1e-6);
  free(r);
}

static void test_bucket_sign(void) {
  /* One term: a single +-1 in its bucket, everything else 0. */
  uint32_t bk;
  float sg;
  embedder *m = make(16, 1, 0.5f, 1);
  float *r = embed1(m, "Hello");
  where(0, "hello", 16, &bk, &sg);
  CHECK(r[bk] == sg);
  r[bk] = 0;
  CHECK(is_zero(r, 16));
  free(r);
  embedder_free(m);

  /* Both signs occur: find one term of each among a few candidates and
   * check them with a seed. */
  embed_hash_opts o;
  embed_hash_defaults(&o);
  o.dim = 16;
  o.seed = 0x0123456789abcdefull;
  CHECK_EQ_INT(embed_hash_create(&o, &m, NULL), 0);
  int seen_pos = 0, seen_neg = 0;
  const char *cands[] = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta",
                         "eta", "theta", "iota", "kappa"};
  for (size_t i = 0; i < 10; i++) {
    r = embed1(m, cands[i]);
    where(o.seed, cands[i], 16, &bk, &sg);
    CHECK(r[bk] == sg);
    seen_pos |= sg > 0;
    seen_neg |= sg < 0;
    free(r);
  }
  CHECK(seen_pos && seen_neg);
  embedder_free(m);

  /* Dims that are not powers of two take the bucket by true remainder. */
  const uint32_t dims[] = {17, 768, 1000, 3 * 1024, 65535};
  for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
    m = make(dims[d], 1, 0.5f, 1);
    int ok = 1;
    for (unsigned i = 0; i < 200; i++) {
      char w[32];
      snprintf(w, sizeof w, "term%uxyz%u", i * 2654435761u, i);
      r = embed1(m, w);
      where(0, w, dims[d], &bk, &sg);
      ok &= r[bk] == sg;
      r[bk] = 0;
      ok &= is_zero(r, dims[d]);
      free(r);
    }
    CHECK(ok);
    embedder_free(m);
  }

  /* A bigram is the two terms joined by one space: "x y" with counts
   * x=1, y=1, "x y"=1 and weight 0.25 for the bigram. */
  m = make(65536, 1, 0.25f, 0);
  expect_pair(m, "Kappa, THETA", "kappa", "theta", 1, 1, 0.25);
  embedder_free(m);
}

static void test_tf(void) {
  uint32_t ba, bb;
  float sa, sb;
  where(0, "aa", 65536, &ba, &sa);
  where(0, "bb", 65536, &bb, &sb);
  CHECK(ba != bb);
  embedder *raw = make(65536, 0, 0.5f, 0), *sub = make(65536, 0, 0.5f, 1);
  float *r = embed1(raw, "aa aa aa bb");
  CHECK(fabs(r[ba] / r[bb] - 3.0 * sa / sb) < 1e-5);
  free(r);
  r = embed1(sub, "aa aa aa bb");
  CHECK(fabs(r[ba] / r[bb] - (1.0 + log(3.0)) * sa / sb) < 1e-5);
  free(r);
  embedder_free(raw);
  embedder_free(sub);
}

/* idf: "rare" weighs 3, "zero" 0, every other term 1; counts the calls. */
typedef struct idf_arg {
  int calls;
  int saw_folded;
} idf_arg;

static double test_idf(const char *t, size_t n, void *arg) {
  idf_arg *a = arg;
  __atomic_fetch_add(&a->calls, 1, __ATOMIC_RELAXED);
  if (n == 4 && memcmp(t, "rare", 4) == 0) {
    a->saw_folded = 1;
    return 3.0;
  }
  if (n == 4 && memcmp(t, "zero", 4) == 0) return 0.0;
  if (n == 3 && memcmp(t, "neg", 3) == 0) return -5.0;
  return 1.0;
}

static void test_idf_weights(void) {
  idf_arg arg = {0, 0};
  embed_hash_opts o;
  embedder *m;
  embed_hash_defaults(&o);
  o.dim = 65536;
  o.bigrams = 1;
  o.bigram_weight = 0.5f;
  o.sublinear_tf = 0;
  o.idf = test_idf;
  o.idf_arg = &arg;
  CHECK_EQ_INT(embed_hash_create(&o, &m, NULL), 0);
  /* rare: 3, common: 1, bigram: 0.5 * (3 + 1) / 2 = 1. */
  expect_pair(m, "RARE common", "rare", "common", 3, 1, 1);
  CHECK(arg.saw_folded);
  CHECK_EQ_INT(arg.calls, 2); /* once per distinct term */
  arg.calls = 0;
  float *r = embed1(m, "rare rare rare common");
  CHECK_EQ_INT(arg.calls, 2);
  free(r);
  /* Weights of 0 (and negative idf, taken as 0) leave a zero row. */
  r = embed1(m, "zero neg zero");
  CHECK(is_zero(r, 65536));
  free(r);
  embedder_free(m);
  /* Without the callback the same text weighs rare and common alike. */
  m = make(65536, 1, 0.5f, 0);
  expect_pair(m, "RARE common", "rare", "common", 1, 1, 0.5);
  embedder_free(m);
}

static void test_format_parse(void) {
  embed_hash_opts d, o, p;
  char buf[160], buf2[160];
  ctxd_error e;
  embed_hash_defaults(&d);
  embed_hash_format(&d, buf, sizeof buf);
  char want[160];
  snprintf(want, sizeof want,
           "hash:dim=%d,bigrams=%d,bigram_weight=%g,sublinear_tf=%d,idf=%s,seed=0",
           EMBED_HASH_DIM, EMBED_HASH_BIGRAMS, (double)EMBED_HASH_BIGRAM_WEIGHT,
           EMBED_HASH_SUBLINEAR_TF,
           EMBED_HASH_IDF == EMBED_HASH_IDF_NONE    ? "none"
           : EMBED_HASH_IDF == EMBED_HASH_IDF_QUERY ? "query"
                                                    : "all");
  CHECK_EQ_STR(buf, want);
  CHECK_EQ_INT(embed_hash_parse("hash", &p, &e), 0);
  CHECK(p.dim == d.dim && p.bigrams == d.bigrams && p.bigram_weight == d.bigram_weight &&
        p.sublinear_tf == d.sublinear_tf && p.idf_mode == d.idf_mode && p.seed == 0 &&
        p.idf == NULL);
  CHECK_EQ_INT(embed_hash_parse("hash:", &p, &e), 0);
  CHECK(p.dim == d.dim);

  o = d;
  o.dim = 1024;
  o.bigrams = 0;
  o.bigram_weight = 0.1f;
  o.sublinear_tf = 0;
  o.idf_mode = EMBED_HASH_IDF_ALL;
  o.seed = UINT64_MAX;
  embed_hash_format(&o, buf, sizeof buf);
  CHECK_EQ_STR(buf, "hash:dim=1024,bigrams=0,bigram_weight=0.1,sublinear_tf=0,idf=all,"
                    "seed=18446744073709551615");
  CHECK_EQ_INT(embed_hash_parse(buf, &p, &e), 0);
  CHECK(p.dim == 1024 && p.bigrams == 0 && p.bigram_weight == 0.1f && p.sublinear_tf == 0 &&
        p.idf_mode == EMBED_HASH_IDF_ALL && p.seed == UINT64_MAX);
  embed_hash_format(&p, buf2, sizeof buf2);
  CHECK_EQ_STR(buf2, buf);
  /* An awkward float round-trips exactly. */
  o.bigram_weight = 1.0f / 3.0f;
  embed_hash_format(&o, buf, sizeof buf);
  CHECK_EQ_INT(embed_hash_parse(buf, &p, &e), 0);
  CHECK(p.bigram_weight == o.bigram_weight);

  /* A subset of keys, in any order. */
  CHECK_EQ_INT(embed_hash_parse("hash:seed=7,dim=256", &p, &e), 0);
  CHECK(p.dim == 256 && p.seed == 7 && p.bigrams == d.bigrams);
  const embed_hash_idf modes[] = {EMBED_HASH_IDF_NONE, EMBED_HASH_IDF_QUERY, EMBED_HASH_IDF_ALL};
  const char *mode_text[] = {"hash:idf=none", "hash:idf=query", "hash:idf=all"};
  for (int i = 0; i < 3; i++) {
    CHECK_EQ_INT(embed_hash_parse(mode_text[i], &p, &e), 0);
    CHECK_EQ_INT(p.idf_mode, modes[i]);
  }

  struct {
    const char *in, *mention;
  } bad[] = {
      {"hash:foo=1", "foo"},
      {"hash:dim=abc", "dim"},
      {"hash:dim=", "dim"},
      {"hash:dim", "dim"},
      {"hash:dim=-5", "dim"},
      {"hash:dim= 64", "dim"},
      {"hash:dim=15", "dim 15"},
      {"hash:dim=65537", "dim 65537"},
      {"hash:dim=99999999999999999999999", "dim"},
      {"hash:bigrams=2", "bigrams"},
      {"hash:sublinear_tf=yes", "sublinear_tf"},
      {"hash:bigram_weight=-1", "bigram_weight"},
      {"hash:bigram_weight=inf", "bigram_weight"},
      {"hash:bigram_weight=nan", "bigram_weight"},
      {"hash:bigram_weight=0x1p3", "bigram_weight"},
      {"hash:bigram_weight=1e9", "bigram_weight"},
      {"hash:seed=18446744073709551616", "seed"},
      {"hash:idf=yes", "none, query or all"},
      {"hash:idf=", "idf"},
      {"hash:idf=queryx", "idf"},
      {"hash:dim=64,dim=64", "twice"},
      {"hash:dim=64,", "trailing"},
      {"hashx", "hashx"},
      {"model:dim=3", "model"},
      {"", "hash"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    p.dim = 12345;
    e.msg[0] = 0;
    int rc = embed_hash_parse(bad[i].in, &p, &e);
    CHECK_EQ_INT(rc, CTXD_EINVAL);
    CHECK_EQ_INT(e.code, CTXD_EINVAL);
    CHECK_EQ_INT(p.dim, 12345); /* untouched on error */
    if (!strstr(e.msg, bad[i].mention))
      fprintf(stderr, "parse \"%s\": message \"%s\" lacks \"%s\"\n", bad[i].in, e.msg,
              bad[i].mention);
    CHECK(strstr(e.msg, bad[i].mention) != NULL);
  }
}

static void test_create_errors(void) {
  embed_hash_opts o;
  embedder *m = (embedder *)&o;
  ctxd_error e;
  embed_hash_defaults(&o);
  o.dim = 8;
  CHECK_EQ_INT(embed_hash_create(&o, &m, &e), CTXD_EINVAL);
  CHECK(m == NULL);
  CHECK(strstr(e.msg, "dim 8") != NULL);
  embed_hash_defaults(&o);
  o.bigram_weight = -0.5f;
  CHECK_EQ_INT(embed_hash_create(&o, &m, &e), CTXD_EINVAL);
  o.bigram_weight = NAN;
  CHECK_EQ_INT(embed_hash_create(&o, &m, &e), CTXD_EINVAL);
  o.bigram_weight = 1;
  o.idf_mode = (embed_hash_idf)3;
  CHECK_EQ_INT(embed_hash_create(&o, &m, &e), CTXD_EINVAL);
  o.idf_mode = EMBED_HASH_IDF_ALL;
  o.bigram_weight = 0; /* bigrams that count for nothing are allowed */
  CHECK_EQ_INT(embed_hash_create(&o, &m, &e), 0);
  embedder_free(m);
  embedder_free(NULL);
}

/* A batch: short, empty, long with many distinct features (the work table
 * grows past its first size), then short again. */
#define NB 6
static char *batch_texts[NB];
static size_t batch_lens[NB];

static void make_batch(void) {
  size_t cap = 1 << 20, o = 0;
  char *big = malloc(cap);
  for (unsigned i = 0; i < 60000; i++) o += (size_t)snprintf(big + o, cap - o, "w%u ", i * 7919u % 60013u);
  batch_texts[0] = strdup(prose);
  batch_texts[1] = strdup("");
  batch_texts[2] = big;
  batch_texts[3] = strdup("the cat sat on the mat");
  batch_texts[4] = strdup("!!!");
  batch_texts[5] = strdup(prose);
  for (int i = 0; i < NB; i++) batch_lens[i] = strlen(batch_texts[i]);
}

static void test_batch(void) {
  embedder *m = make(512, 1, 0.5f, 1);
  float *all = malloc(NB * 512 * sizeof *all);
  CHECK_EQ_INT(embed_texts(m, (const char *const *)batch_texts, batch_lens, NB, all, NULL), 0);
  for (int i = 0; i < NB; i++) {
    float *one = embed1(m, batch_texts[i]);
    CHECK(memcmp(one, all + i * 512, 512 * sizeof *one) == 0);
    free(one);
  }
  CHECK(fabs(dot(all + 2 * 512, all + 2 * 512, 512) - 1.0) < 1e-4);
  CHECK(is_zero(all + 512, 512) && is_zero(all + 4 * 512, 512));
  CHECK(memcmp(all, all + 5 * 512, 512 * sizeof *all) == 0);
  free(all);
  embedder_free(m);
}

typedef struct thr {
  const embedder *m;
  const float *want;
  int mismatches;
} thr;

static void *thr_main(void *p) {
  thr *t = p;
  float *got = malloc(NB * t->m->dim * sizeof *got);
  for (int r = 0; r < 10; r++) {
    if (embed_texts(t->m, (const char *const *)batch_texts, batch_lens, NB, got, NULL) ||
        memcmp(got, t->want, NB * t->m->dim * sizeof *got) != 0)
      t->mismatches++;
  }
  free(got);
  return NULL;
}

static void test_threads(void) {
  idf_arg arg = {0, 0};
  embed_hash_opts o;
  embedder *m;
  embed_hash_defaults(&o);
  o.dim = 384;
  o.bigrams = 1;
  o.idf = test_idf;
  o.idf_arg = &arg;
  CHECK_EQ_INT(embed_hash_create(&o, &m, NULL), 0);
  float *want = malloc(NB * 384 * sizeof *want);
  CHECK_EQ_INT(embed_texts(m, (const char *const *)batch_texts, batch_lens, NB, want, NULL), 0);
  pthread_t th[4];
  thr t[4];
  for (int i = 0; i < 4; i++) {
    t[i] = (thr){m, want, 0};
    CHECK_EQ_INT(pthread_create(&th[i], NULL, thr_main, &t[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    CHECK_EQ_INT(t[i].mismatches, 0);
  }
  free(want);
  embedder_free(m);
}

int main(void) {
  test_reference_hash();
  test_determinism_norm();
  test_zero_rows();
  test_word_order();
  test_bucket_sign();
  test_tf();
  test_idf_weights();
  test_format_parse();
  test_create_errors();
  make_batch();
  test_batch();
  test_threads();
  for (int i = 0; i < NB; i++) free(batch_texts[i]);
  return check_report("embed");
}
