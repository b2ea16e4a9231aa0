/* test_order.c - corpus ordering: clustered corpora come out with related
 * documents adjacent, every document once minus reported duplicates, windows
 * within L tokens, deterministic per seed, decompose pieces in power-of-two
 * buckets, JSONL errors with line numbers, cancel and resume. */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "order.h"
#include "vindex.h"

static char base[] = "/tmp/test_order.XXXXXX";

static uint64_t rng_state = 1;
static double urand(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* A corpus of C clusters, documents in a shuffled input order. */
typedef struct corpus {
  uint64_t n;
  uint32_t dim;
  char **ids;
  char **texts;
  size_t *lens;
  float *vec;
  int *cluster;
} corpus;

static void corpus_free(corpus *c) {
  for (uint64_t i = 0; i < c->n; i++) {
    free(c->ids[i]);
    free(c->texts[i]);
  }
  free(c->ids);
  free(c->texts);
  free(c->lens);
  free(c->vec);
  free(c->cluster);
  memset(c, 0, sizeof *c);
}

/* Texts draw words from their cluster's own vocabulary ("c3w17"), so the
 * hash embedder separates them as well as the synthetic vectors do. */
static char *cluster_text(int c, int words) {
  size_t cap = (size_t)words * 12 + 1, len = 0;
  char *t = malloc(cap);
  for (int w = 0; w < words; w++)
    len += (size_t)snprintf(t + len, cap - len, "%sc%dw%d", w ? " " : "", c,
                            (int)(urand() * 40));
  return t;
}

static void make_corpus(corpus *c, int clusters, int per, uint32_t dim,
                        double noise, int words, uint64_t seed) {
  rng_state = seed * 2654435761u + 1;
  c->n = (uint64_t)clusters * per;
  c->dim = dim;
  c->ids = calloc(c->n, sizeof *c->ids);
  c->texts = calloc(c->n, sizeof *c->texts);
  c->lens = calloc(c->n, sizeof *c->lens);
  c->vec = malloc(c->n * dim * sizeof *c->vec);
  c->cluster = malloc(c->n * sizeof *c->cluster);
  float *centers = malloc((size_t)clusters * dim * sizeof *centers);
  for (size_t j = 0; j < (size_t)clusters * dim; j++)
    centers[j] = (float)(urand() * 2 - 1);
  /* shuffled assignment of documents to clusters */
  for (uint64_t i = 0; i < c->n; i++) c->cluster[i] = (int)(i % clusters);
  for (uint64_t i = c->n; i > 1; i--) {
    uint64_t j = (uint64_t)(urand() * i);
    int t = c->cluster[i - 1];
    c->cluster[i - 1] = c->cluster[j];
    c->cluster[j] = t;
  }
  for (uint64_t i = 0; i < c->n; i++) {
    char id[32];
    snprintf(id, sizeof id, "doc-%llu", (unsigned long long)i);
    c->ids[i] = strdup(id);
    for (uint32_t j = 0; j < dim; j++)
      c->vec[i * dim + j] = centers[(size_t)c->cluster[i] * dim + j] +
                            (float)((urand() * 2 - 1) * noise);
    if (words) {
      c->texts[i] = cluster_text(c->cluster[i], words / 2 + (int)(urand() * words));
      c->lens[i] = strlen(c->texts[i]);
    }
  }
  free(centers);
}

static void corpus_input(corpus *c, order_input *in, int with_vectors) {
  memset(in, 0, sizeof *in);
  in->n = c->n;
  in->ids = (const char *const *)c->ids;
  if (with_vectors) {
    in->dim = c->dim;
    in->vectors = c->vec;
  }
  if (c->texts[0]) {
    in->texts = (const char *const *)c->texts;
    in->text_lens = c->lens;
  }
}

/* The input over c, and default options with k and the window (0: the
 * defaults). */
static void corpus_setup(corpus *c, order_input *in, int with_vectors,
                         order_opts *o, uint32_t k, uint32_t window) {
  corpus_input(c, in, with_vectors);
  order_opts_defaults(o);
  if (k) o->k = k;
  if (window) o->window_tokens = window;
}

static json_t **read_lines(const char *dir, const char *name, size_t *n) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "r");
  json_t **v = NULL;
  size_t cap = 0;
  *n = 0;
  if (!f) return NULL;
  char *line = NULL;
  size_t lcap = 0;
  ssize_t len;
  while ((len = getline(&line, &lcap, f)) > 0) {
    json_error_t err;
    json_t *j = json_loadb(line, (size_t)len, 0, &err);
    if (!j) {
      fprintf(stderr, "%s: bad line: %s\n", name, err.text);
      continue;
    }
    if (*n == cap) {
      cap = cap ? cap * 2 : 64;
      v = realloc(v, cap * sizeof *v);
    }
    v[(*n)++] = j;
  }
  free(line);
  fclose(f);
  return v;
}

static void free_lines(json_t **v, size_t n) {
  for (size_t i = 0; i < n; i++) json_decref(v[i]);
  free(v);
}

static char *slurp(const char *dir, const char *name) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  if (fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
  b[n] = 0;
  fclose(f);
  return b;
}

static uint64_t doc_index(const corpus *c, const char *id) {
  return strncmp(id, "doc-", 4) == 0 ? strtoull(id + 4, NULL, 10) : c->n;
}

static void subdir(char *out, size_t cap, const char *name) {
  snprintf(out, cap, "%s/%s", base, name);
}

/* Checks shared by the iclm runs: order.jsonl holds each non-duplicate once,
 * and the share of adjacent pairs in the same cluster. */
static double check_order_file(const corpus *c, const char *dir,
                               uint64_t dups) {
  size_t n;
  json_t **lines = read_lines(dir, "order.jsonl", &n);
  CHECK_EQ_INT(n, c->n - dups);
  char *seen = calloc(c->n, 1);
  uint64_t same = 0, pairs = 0, prev = c->n;
  for (size_t p = 0; p < n; p++) {
    uint64_t i = doc_index(c, json_string_value(json_object_get(lines[p], "id")));
    CHECK(i < c->n);
    if (i >= c->n) continue;
    CHECK(!seen[i]);
    seen[i] = 1;
    CHECK_EQ_INT(json_integer_value(json_object_get(lines[p], "position")), p);
    if (p == 0) CHECK(json_is_null(json_object_get(lines[p], "similarity")));
    if (prev < c->n) {
      pairs++;
      same += c->cluster[prev] == c->cluster[i];
    }
    prev = i;
  }
  free(seen);
  free_lines(lines, n);
  return pairs ? (double)same / (double)pairs : 1;
}

/* Windows never exceed L: recounted with the tokenizer, piece by piece and
 * as a whole; the pieces of each document tile its text in order. */
static void check_windows(const corpus *c, const char *dir, uint32_t L,
                          const char *sep) {
  size_t n;
  const tok *tk = tok_estimator();
  uint64_t sep_tok = tok_count(tk, sep, strlen(sep));
  json_t **w = read_lines(dir, "windows.jsonl", &n);
  uint64_t *next = calloc(c->n, sizeof *next); /* next expected byte */
  CHECK(n > 0);
  int over = 0, bad_piece = 0;
  for (size_t k = 0; k < n; k++) {
    const char *text = json_string_value(json_object_get(w[k], "text"));
    size_t tlen = json_string_length(json_object_get(w[k], "text"));
    uint64_t tokens = json_integer_value(json_object_get(w[k], "tokens"));
    CHECK_EQ_INT(json_integer_value(json_object_get(w[k], "window")), k);
    if (tokens > L || tok_count(tk, text, tlen) > L) over++;
    json_t *docs = json_object_get(w[k], "documents");
    uint64_t sum = 0, seps = 0;
    size_t off = 0, sl = strlen(sep);
    for (size_t d = 0; d <= json_array_size(docs); d++) {
      /* a separator may come before any piece and after the last */
      if (off + sl <= tlen && memcmp(text + off, sep, sl) == 0) {
        off += sl;
        seps++;
      }
      if (d == json_array_size(docs)) break;
      json_t *pc = json_array_get(docs, d);
      uint64_t i = doc_index(c, json_string_value(json_object_get(pc, "id")));
      uint64_t a = json_integer_value(json_object_get(pc, "start"));
      uint64_t b = json_integer_value(json_object_get(pc, "end"));
      uint64_t t = json_integer_value(json_object_get(pc, "tokens"));
      if (i >= c->n || a != next[i] || b > c->lens[i] || b < a ||
          t != tok_count(tk, c->texts[i] + a, b - a) ||
          off + (b - a) > tlen || memcmp(text + off, c->texts[i] + a, b - a)) {
        bad_piece++;
        continue;
      }
      next[i] = b;
      sum += t;
      off += b - a;
    }
    CHECK_EQ_INT(off, tlen);
    if (sum + seps * sep_tok > L) over++;
  }
  CHECK_EQ_INT(over, 0);
  CHECK_EQ_INT(bad_piece, 0);
  free(next);
  free_lines(w, n);
}

static json_t *load_summary(const char *dir) {
  char path[512];
  snprintf(path, sizeof path, "%s/summary.json", dir);
  return json_load_file(path, 0, NULL);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_clusters_iclm(void) {
  corpus c;
  make_corpus(&c, 8, 40, 32, 0.5, 10, 7);
  order_input in;
  order_opts o;
  corpus_setup(&c, &in, 1, &o, 10, 200);
  o.seed = 3;
  char dir[256];
  subdir(dir, sizeof dir, "iclm");
  order_summary s;
  ctxd_error e = {0};
  int rc = order_run(&in, dir, &o, &s, &e);
  CHECK_EQ_INT(rc, 0);
  if (rc) fprintf(stderr, "order_run: %s\n", e.msg);
  CHECK_EQ_INT(s.documents, c.n);
  CHECK_EQ_INT(s.duplicates, 0);
  CHECK_EQ_INT(s.ordered, c.n);
  double same = check_order_file(&c, dir, 0);
  printf("iclm: same-cluster adjacent pairs %.3f, jumps %llu, adjacent %.3f "
         "random %.3f window %.3f random window %.3f\n",
         same, (unsigned long long)s.jumps, s.adjacent_similarity,
         s.random_adjacent_similarity, s.window_similarity,
         s.random_window_similarity);
  CHECK(same >= 0.95);
  CHECK(s.adjacent_similarity > s.random_adjacent_similarity + 0.3);
  CHECK(s.window_similarity > s.random_window_similarity);
  CHECK(s.windows > 1);
  check_windows(&c, dir, o.window_tokens, o.separator);
  json_t *j = load_summary(dir);
  CHECK(j != NULL);
  CHECK(json_is_number(json_object_get(j, "adjacent_similarity")));
  CHECK(json_is_number(json_object_get(j, "random_adjacent_similarity")));
  CHECK(json_is_number(json_object_get(j, "window_similarity")));
  CHECK_EQ_INT(json_integer_value(json_object_get(j, "duplicates")), 0);
  CHECK(json_is_object(json_object_get(j, "timings")));
  CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(j, "knn"),
                                                 "method")),
               "Flat");
  json_decref(j);
  /* no checkpoints left behind, no temp files */
  char path[512];
  snprintf(path, sizeof path, "%s/knn.ckpt", dir);
  CHECK(access(path, F_OK) != 0);
  snprintf(path, sizeof path, "%s/order.jsonl.tmp", dir);
  CHECK(access(path, F_OK) != 0);
  corpus_free(&c);
}

static void run_order_only(corpus *c, uint64_t seed, const char *name,
                           char **order_out) {
  order_input in;
  /* fresh copies: order_run normalises vectors in place */
  float *v = malloc(c->n * c->dim * sizeof *v);
  memcpy(v, c->vec, c->n * c->dim * sizeof *v);
  corpus_input(c, &in, 1);
  in.vectors = v;
  order_opts o;
  order_opts_defaults(&o);
  o.window_tokens = 64;
  o.k = 8;
  o.seed = seed;
  char dir[256];
  subdir(dir, sizeof dir, name);
  order_summary s;
  ctxd_error e;
  CHECK_EQ_INT(order_run(&in, dir, &o, &s, &e), 0);
  *order_out = slurp(dir, "order.jsonl");
  free(v);
}

static void test_determinism(void) {
  corpus c;
  /* loose clusters, so ties and jumps matter */
  make_corpus(&c, 6, 30, 16, 0.6, 20, 11);
  char *a, *b, *x = NULL;
  run_order_only(&c, 5, "det-a", &a);
  run_order_only(&c, 5, "det-b", &b);
  CHECK(a && b && strcmp(a, b) == 0);
  int differs = 0;
  for (uint64_t seed = 6; seed < 10 && !differs; seed++) {
    free(x);
    run_order_only(&c, seed, "det-c", &x);
    differs = x && strcmp(a, x) != 0;
  }
  CHECK(differs);
  free(a);
  free(b);
  free(x);
  corpus_free(&c);
}

static void test_duplicates(void) {
  corpus c;
  make_corpus(&c, 4, 30, 24, 0.5, 30, 13);
  /* documents 100..107 become copies of 0..7: exact (100..103) and near
   * (104..107: the vector nudged, one word of the text changed) */
  for (int d = 0; d < 8; d++) {
    uint64_t i = 100 + d, src = d;
    c.cluster[i] = c.cluster[src];
    for (uint32_t j = 0; j < c.dim; j++)
      c.vec[i * c.dim + j] = c.vec[src * c.dim + j] * (d < 4 ? 1.0f : 1.01f) +
                             (d < 4 ? 0 : 0.002f * (float)(j % 3));
    free(c.texts[i]);
    c.texts[i] = strdup(c.texts[src]);
    if (d >= 4) c.texts[i][0] = 'x';
    c.lens[i] = strlen(c.texts[i]);
  }
  /* 108: a vector copy of 8 whose text is unrelated: only Jaccard tells */
  memcpy(c.vec + 108 * c.dim, c.vec + 8 * c.dim, c.dim * sizeof(float));
  free(c.texts[108]);
  c.texts[108] = strdup("an entirely different text about other things");
  c.lens[108] = strlen(c.texts[108]);
  c.cluster[108] = c.cluster[8];

  for (int jac = 0; jac < 2; jac++) {
    order_input in;
    float *v = malloc(c.n * c.dim * sizeof *v);
    memcpy(v, c.vec, c.n * c.dim * sizeof *v);
    order_opts o;
    corpus_setup(&c, &in, 1, &o, 10, 200);
    in.vectors = v;
    o.dup_jaccard = jac ? 0.8f : 0;
    char dir[256];
    subdir(dir, sizeof dir, jac ? "dups-jaccard" : "dups");
    order_summary s;
    ctxd_error e;
    CHECK_EQ_INT(order_run(&in, dir, &o, &s, &e), 0);
    uint64_t want = jac ? 8 : 9;
    CHECK_EQ_INT(s.duplicates, want);
    size_t n;
    json_t **d = read_lines(dir, "duplicates.jsonl", &n);
    CHECK_EQ_INT(n, want);
    int ok = 0;
    for (size_t k = 0; k < n; k++) {
      uint64_t i = doc_index(&c, json_string_value(json_object_get(d[k], "id")));
      uint64_t of = doc_index(
          &c, json_string_value(json_object_get(d[k], "duplicate_of")));
      ok += (i >= 100 && i < 108 && of == i - 100) || (i == 108 && of == 8);
      json_t *jv = json_object_get(d[k], "jaccard");
      CHECK(jac ? json_is_number(jv) : json_is_null(jv));
    }
    CHECK_EQ_INT(ok, n);
    free_lines(d, n);
    check_order_file(&c, dir, want);
    free(v);
  }
  double jv;
  CHECK_EQ_INT(order_jaccard3("abcd", 4, "abcd", 4, &jv, NULL), 0);
  CHECK(jv == 1.0);
  order_jaccard3("abcd", 4, "bcde", 4, &jv, NULL); /* {abc,bcd} vs {bcd,cde} */
  CHECK(fabs(jv - 1.0 / 3) < 1e-9);
  order_jaccard3("\xc3\xa9t\xc3\xa9", 5, "\xc3\xa9t\xc3\xa9", 5, &jv, NULL);
  CHECK(jv == 1.0);
  order_jaccard3("ab", 2, "abc", 3, &jv, NULL);
  CHECK(jv == 0.0);
  order_jaccard3("", 0, "", 0, &jv, NULL);
  CHECK(jv == 1.0);
  corpus_free(&c);
}

static int is_pow2(uint64_t x) { return x && !(x & (x - 1)); }

static void test_decompose(void) {
  corpus c;
  make_corpus(&c, 3, 10, 8, 0.5, 0, 17);
  /* texts of very different lengths, some with emoji (2 tokens each) */
  for (uint64_t i = 0; i < c.n; i++) {
    int words = 5 + (int)(i * 37 % 700);
    size_t cap = (size_t)words * 16 + 1, len = 0;
    c.texts[i] = malloc(cap);
    for (int w = 0; w < words; w++)
      len += (size_t)snprintf(c.texts[i] + len, cap - len, "%s%s%d",
                              w ? " " : "", w % 7 == 3 ? "\xf0\x9f\x98\x80" : "w",
                              w);
    c.lens[i] = len;
  }
  order_input in;
  order_opts o;
  corpus_setup(&c, &in, 1, &o, 0, 512);
  o.mode = ORDER_MODE_DECOMPOSE;
  o.decompose_min_log2 = 4;
  char dir[256];
  subdir(dir, sizeof dir, "decompose");
  order_summary s;
  ctxd_error e;
  int rc = order_run(&in, dir, &o, &s, &e);
  CHECK_EQ_INT(rc, 0);
  if (rc) fprintf(stderr, "decompose: %s\n", e.msg);
  CHECK(isnan(s.adjacent_similarity) && isnan(s.window_similarity));
  size_t n, nw;
  json_t **v = read_lines(dir, "order.jsonl", &n);
  json_t **w = read_lines(dir, "windows.jsonl", &nw);
  CHECK_EQ_INT(n, s.windows);
  CHECK_EQ_INT(nw, n);
  const tok *tk = tok_estimator();
  uint64_t prev_bucket = 0, bad = 0, total = 0;
  uint64_t *covered = calloc(c.n, sizeof *covered);
  for (size_t k = 0; k < n; k++) {
    uint64_t bucket = json_integer_value(json_object_get(v[k], "bucket"));
    uint64_t a = json_integer_value(json_object_get(v[k], "start"));
    uint64_t b = json_integer_value(json_object_get(v[k], "end"));
    uint64_t t = json_integer_value(json_object_get(v[k], "tokens"));
    uint64_t i = doc_index(&c, json_string_value(json_object_get(v[k], "id")));
    const char *text = json_string_value(json_object_get(w[k], "text"));
    if (!is_pow2(bucket) || bucket < 16 || bucket > 512 || bucket < prev_bucket ||
        i >= c.n || b > c.lens[i] || a >= b || t > bucket || t + 1 < bucket ||
        t != tok_count(tk, c.texts[i] + a, b - a) ||
        strlen(text) != b - a || memcmp(text, c.texts[i] + a, b - a) ||
        json_integer_value(json_object_get(v[k], "position")) != (json_int_t)k)
      bad++;
    else
      covered[i] += b - a;
    prev_bucket = bucket;
    total += t;
  }
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(total, s.tokens);
  /* pieces of one document never overlap: they cover at most its bytes */
  for (uint64_t i = 0; i < c.n; i++) CHECK(covered[i] <= c.lens[i]);
  json_t *j = load_summary(dir);
  CHECK(json_is_object(json_object_get(j, "buckets")));
  CHECK(json_is_null(json_object_get(j, "adjacent_similarity")));
  json_decref(j);
  free(covered);
  free_lines(v, n);
  free_lines(w, nw);
  corpus_free(&c);
}

static void write_file(const char *path, const char *s) {
  FILE *f = fopen(path, "w");
  fputs(s, f);
  fclose(f);
}

static int read_err(const char *content, ctxd_error *e) {
  char path[512];
  snprintf(path, sizeof path, "%s/in.jsonl", base);
  write_file(path, content);
  order_jsonl *r = NULL;
  int rc = order_read_jsonl(path, NULL, &r, e);
  order_jsonl_free(r);
  return rc;
}

static void test_jsonl(void) {
  ctxd_error e;
  char path[512];
  snprintf(path, sizeof path, "%s/none.jsonl", base);
  CHECK_EQ_INT(order_read_jsonl(path, NULL, &(order_jsonl *){0}, &e),
               CTXD_ENOTFOUND);
  CHECK_EQ_INT(read_err("{\"id\":\"a\",\"text\":\"x\"}\n{\"id\": \"b\", \"text\": }\n",
                        &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "line 2") && strstr(e.msg, "bad JSON"));
  CHECK_EQ_INT(read_err("\n{\"text\":\"x\"}\n", &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "line 2: no id"));
  CHECK_EQ_INT(read_err("{\"id\":\"a\",\"text\":\"x\"}\n{\"id\":\"b\",\"text\":\"y\"}\n"
                        "{\"id\":\"a\",\"text\":\"z\"}\n",
                        &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "line 3: duplicate id \"a\" (first on line 1)"));
  CHECK_EQ_INT(read_err("{\"id\":1,\"text\":\"x\",\"vector\":[1,2,3]}\n"
                        "{\"id\":2,\"text\":\"y\",\"vector\":[1,2]}\n",
                        &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "line 2: vector has 2 numbers, expected 3 (as on line 1)"));
  CHECK_EQ_INT(read_err("{\"id\":\"a\",\"vector\":[1,\"x\"]}\n", &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "line 1: vector element 1"));
  CHECK_EQ_INT(read_err("{\"id\":\"a\"}\n", &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "line 1: neither text nor vector"));
  CHECK_EQ_INT(read_err("[1,2]\n", &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "line 1: not a JSON object"));
  order_read_opts ro = {0};
  ro.dim = 4;
  snprintf(path, sizeof path, "%s/in.jsonl", base);
  write_file(path, "{\"id\":\"a\",\"text\":\"x\",\"vector\":[1,2,3]}\n");
  CHECK_EQ_INT(order_read_jsonl(path, &ro, &(order_jsonl *){0}, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "line 1: vector has 3 numbers, expected 4"));
  ro.dim = 0;
  ro.max_docs = 1;
  write_file(path, "{\"id\":\"a\",\"text\":\"x\"}\n{\"id\":\"b\",\"text\":\"y\"}\n");
  CHECK_EQ_INT(order_read_jsonl(path, &ro, &(order_jsonl *){0}, &e), CTXD_ELIMIT);

  /* a good file: escapes and non-ASCII come back through get_text; blank
   * lines are skipped but counted; the last line may lack its newline */
  write_file(path,
             "{\"id\":\"a\",\"text\":\"line\\none \\\"q\\\" \\u00e9\","
             "\"vector\":[3,4]}\n\n"
             "{\"id\":7,\"text\":\"plain\",\"extra\":{\"x\":1}}\n"
             "{\"id\":\"c\",\"vector\":[0,1]}");
  order_jsonl *r = NULL;
  CHECK_EQ_INT(order_read_jsonl(path, NULL, &r, &e), 0);
  order_input in;
  order_jsonl_input(r, &in);
  CHECK_EQ_INT(in.n, 3);
  CHECK_EQ_INT(in.dim, 2);
  CHECK_EQ_STR(in.ids[1], "7");
  CHECK_EQ_INT(order_jsonl_line(r, 1), 3);
  CHECK(in.has_vector[0] && !in.has_vector[1] && in.has_vector[2]);
  CHECK(in.vectors[0] == 3 && in.vectors[1] == 4);
  const char *t;
  size_t len;
  CHECK_EQ_INT(in.get_text(in.text_arg, 0, &t, &len, &e), 0);
  CHECK(len == strlen("line\none \"q\" \xc3\xa9") &&
        memcmp(t, "line\none \"q\" \xc3\xa9", len) == 0);
  CHECK_EQ_INT(in.get_text(in.text_arg, 2, &t, &len, &e), 0);
  CHECK(t == NULL);
  CHECK(in.input_tag && strstr(in.input_tag, "in.jsonl"));
  /* document 1 has no vector and there is no embedder */
  order_opts o;
  order_opts_defaults(&o);
  CHECK_EQ_INT(order_input_check(&in, &o, &e), CTXD_EINVAL);
  order_jsonl_free(r);

  /* duplicate ids in caller arrays */
  const char *ids[] = {"x", "y", "x"};
  order_input bad = {0};
  bad.n = 3;
  bad.ids = ids;
  float vec[6] = {1, 0, 0, 1, 1, 1};
  bad.vectors = vec;
  bad.dim = 2;
  o.mode = ORDER_MODE_ORDER;
  CHECK_EQ_INT(order_input_check(&bad, &o, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "duplicate id \"x\" (documents 0 and 2)"));
}

/* Real text through the built-in hash embedder: no vectors given. */
static void test_hash_embedder(void) {
  corpus c;
  make_corpus(&c, 6, 60, 8, 0.5, 40, 31);
  order_input in;
  corpus_input(&c, &in, 0);
  embed_hash_opts ho;
  embed_hash_defaults(&ho);
  ho.dim = 256;
  embedder *m = NULL;
  ctxd_error e;
  CHECK_EQ_INT(embed_hash_create(&ho, &m, &e), 0);
  order_opts o;
  order_opts_defaults(&o);
  o.embedder = m;
  o.k = 10;
  o.window_tokens = 256;
  char dir[256];
  subdir(dir, sizeof dir, "hash");
  order_summary s;
  int rc = order_run(&in, dir, &o, &s, &e);
  CHECK_EQ_INT(rc, 0);
  if (rc) fprintf(stderr, "hash run: %s\n", e.msg);
  CHECK(in.vectors == NULL); /* the computed vectors were freed */
  double same = check_order_file(&c, dir, s.duplicates);
  printf("hash embedder: same-cluster adjacent pairs %.3f, duplicates %llu\n",
         same, (unsigned long long)s.duplicates);
  CHECK(same >= 0.95);
  CHECK_EQ_INT(s.duplicates, 0);
  check_windows(&c, dir, o.window_tokens, o.separator);
  /* a restart after the embedding resumes from vectors.ckpt */
  o.keep_checkpoints = 1;
  CHECK_EQ_INT(order_run(&in, dir, &o, &s, &e), 0);
  CHECK_EQ_INT(s.resumed_vectors, 0);
  char *first = slurp(dir, "order.jsonl");
  CHECK_EQ_INT(order_run(&in, dir, &o, &s, &e), 0);
  CHECK_EQ_INT(s.resumed_vectors, 1);
  CHECK_EQ_INT(s.resumed_knn, 1);
  char *again = slurp(dir, "order.jsonl");
  CHECK(first && again && strcmp(first, again) == 0);
  free(first);
  free(again);
  embedder_free(m);
  corpus_free(&c);
}

/* An embedder for the test: letter counts of the text (a-z, digits). */
static int letters_embed(const embedder *m, const char *const *texts,
                         const size_t *lens, size_t n, float *out,
                         ctxd_error *e) {
  (void)e;
  for (size_t i = 0; i < n; i++) {
    float *v = out + i * m->dim;
    memset(v, 0, m->dim * sizeof *v);
    for (size_t j = 0; j < lens[i]; j++) {
      unsigned char ch = (unsigned char)texts[i][j];
      if (ch >= 'a' && ch <= 'z') v[ch - 'a'] += 1;
      if (ch >= '0' && ch <= '9') v[26 + ch - '0'] += 1;
    }
  }
  return 0;
}

static void letters_free(embedder *m) { (void)m; }

static void test_jsonl_embed_run(void) {
  /* clusters whose texts differ in their letters; half the lines carry no
   * vector and are embedded, the other half give theirs */
  char path[512];
  snprintf(path, sizeof path, "%s/emb.jsonl", base);
  FILE *f = fopen(path, "w");
  const char *alpha[4] = {"abcde", "fghij", "klmno", "pqrst"};
  embedder m = {"letters", 36, letters_embed, letters_free, NULL};
  rng_state = 99;
  int cl[200];
  for (int i = 0; i < 200; i++) {
    int c = (int)(urand() * 4);
    cl[i] = c;
    char text[128];
    size_t len = 0;
    for (int w = 0; w < 12; w++)
      text[len++] = alpha[c][(int)(urand() * 5)];
    text[len] = 0;
    fprintf(f, "{\"id\":\"doc-%d\",\"text\":\"%s\"", i, text);
    if (i % 2) {
      float v[36];
      const char *tt = text;
      size_t l = len;
      letters_embed(&m, &tt, &l, 1, v, NULL);
      fputs(",\"vector\":[", f);
      for (int j = 0; j < 36; j++) fprintf(f, "%s%g", j ? "," : "", v[j]);
      fputs("]", f);
    }
    fputs("}\n", f);
  }
  fclose(f);
  order_jsonl *r;
  ctxd_error e;
  CHECK_EQ_INT(order_read_jsonl(path, NULL, &r, &e), 0);
  order_input in;
  order_jsonl_input(r, &in);
  order_opts o;
  order_opts_defaults(&o);
  o.embedder = &m;
  o.k = 8;
  o.window_tokens = 32;
  o.dup_cosine = 2; /* off: many texts repeat letters */
  char dir[256];
  subdir(dir, sizeof dir, "jsonl-embed");
  order_summary s;
  int rc = order_run(&in, dir, &o, &s, &e);
  CHECK_EQ_INT(rc, 0);
  if (rc) fprintf(stderr, "jsonl run: %s\n", e.msg);
  size_t n;
  json_t **v = read_lines(dir, "order.jsonl", &n);
  CHECK_EQ_INT(n, 200);
  uint64_t same = 0;
  for (size_t p = 1; p < n; p++) {
    int a = atoi(json_string_value(json_object_get(v[p - 1], "id")) + 4);
    int b = atoi(json_string_value(json_object_get(v[p], "id")) + 4);
    same += cl[a] == cl[b];
  }
  printf("jsonl+embedder: same-cluster adjacent pairs %.3f\n",
         (double)same / (double)(n - 1));
  CHECK((double)same / (double)(n - 1) >= 0.95);
  free_lines(v, n);
  order_jsonl_free(r);
}

typedef struct cancel_probe {
  atomic_int *flag;
  order_phase at;
  int reports;
} cancel_probe;

static void cancel_progress(void *arg, order_phase ph, uint64_t done,
                            uint64_t total) {
  cancel_probe *c = arg;
  (void)done;
  (void)total;
  if (ph != c->at) return;
  c->reports++;
  atomic_store(c->flag, 1);
}

static void test_cancel_resume(void) {
  corpus c;
  make_corpus(&c, 5, 1000, 16, 0.3, 10, 23); /* 5000 docs: 2 kNN batches */
  order_input in;
  atomic_int flag = 0;
  cancel_probe probe = {&flag, ORDER_PHASE_KNN, 0};
  order_opts o;
  order_opts_defaults(&o);
  o.window_tokens = 256;
  o.threads = 1;
  o.progress = cancel_progress;
  o.progress_arg = &probe;
  o.cancel = &flag;
  ctxd_error e;
  order_knn *g = NULL;
  /* cancelled after the first batch of queries: stops there */
  corpus_input(&c, &in, 1);
  vindex_normalize(c.vec, c.n, c.dim);
  CHECK_EQ_INT(order_knn_build(&in, &o, &g, &e), CTXD_ECANCELED);
  CHECK_EQ_INT(probe.reports, 1);
  CHECK(g == NULL);
  /* cancelled before it starts */
  probe.reports = 0;
  CHECK_EQ_INT(order_knn_build(&in, &o, &g, &e), CTXD_ECANCELED);
  CHECK_EQ_INT(probe.reports, 0);

  /* a job cancelled in the traversal keeps knn.ckpt and resumes from it */
  atomic_store(&flag, 0);
  probe.at = ORDER_PHASE_TRAVERSE;
  char dir[256];
  subdir(dir, sizeof dir, "resume");
  order_summary s, s2;
  CHECK_EQ_INT(order_run(&in, dir, &o, &s, &e), CTXD_ECANCELED);
  char ck[512];
  snprintf(ck, sizeof ck, "%s/knn.ckpt", dir);
  CHECK(access(ck, F_OK) == 0);
  atomic_store(&flag, 0);
  o.progress = NULL;
  CHECK_EQ_INT(order_run(&in, dir, &o, &s, &e), 0);
  CHECK_EQ_INT(s.resumed_knn, 1);
  CHECK(access(ck, F_OK) != 0);
  char *resumed = slurp(dir, "order.jsonl");
  CHECK_EQ_INT(order_run(&in, dir, &o, &s2, &e), 0);
  CHECK_EQ_INT(s2.resumed_knn, 0);
  char *fresh = slurp(dir, "order.jsonl");
  CHECK(resumed && fresh && strcmp(resumed, fresh) == 0);
  free(resumed);
  free(fresh);
  /* a checkpoint of other data is refused */
  order_knn *k1;
  CHECK_EQ_INT(order_knn_build(&in, &o, &k1, &e), 0);
  CHECK_EQ_INT(order_knn_save(k1, ck, 42, &e), 0);
  CHECK_EQ_INT(order_knn_load(ck, c.n, k1->k, 43, &g, &e), CTXD_EPRECOND);
  CHECK_EQ_INT(order_knn_load(ck, c.n, k1->k, 42, &g, &e), 0);
  CHECK(g && memcmp(g->nbr, k1->nbr, c.n * k1->k * 4) == 0);
  order_knn_free(g);
  /* a truncated one is corrupt */
  CHECK_EQ_INT(truncate(ck, 1000), 0);
  CHECK_EQ_INT(order_knn_load(ck, c.n, k1->k, 42, &g, &e), CTXD_ECORRUPT);
  order_knn_free(k1);
  corpus_free(&c);
}

/* Above exact_max: IVF lists, nprobe from the measured recall, rows that
 * can be searched in slices (as MPI ranks do) with identical results. */
static void test_ivf(void) {
  corpus c;
  make_corpus(&c, 20, 200, 32, 0.5, 8, 29);
  order_input in;
  order_opts o;
  corpus_setup(&c, &in, 1, &o, 10, 128);
  o.threads = 1; /* OpenMP teams crawl on a loaded 2-core machine */
  ctxd_error e;
  float *owned;
  CHECK_EQ_INT(order_prepare_vectors(&in, &o, &owned, &e), 0);
  order_knn *exact = NULL, *ivf = NULL, *split = NULL;
  CHECK_EQ_INT(order_knn_build(&in, &o, &exact, &e), 0);
  CHECK_EQ_STR(exact->method, "Flat");
  o.exact_max = 1000;
  CHECK_EQ_INT(order_knn_build(&in, &o, &ivf, &e), 0);
  CHECK(strncmp(ivf->method, "IVF63 nprobe=", 13) == 0);
  CHECK(ivf->nprobe >= 1 && ivf->recall >= o.recall);
  /* the measured recall against the exact graph */
  uint64_t hit = 0;
  for (uint64_t i = 0; i < c.n; i++)
    for (uint32_t a = 0; a < o.k; a++)
      for (uint32_t b = 0; b < o.k; b++)
        if (ivf->nbr[i * o.k + a] == exact->nbr[i * o.k + b]) {
          hit++;
          break;
        }
  double recall = (double)hit / (double)(c.n * o.k);
  printf("ivf: %s, estimated recall %.3f, measured %.3f\n", ivf->method,
         (double)ivf->recall, recall);
  CHECK(recall >= 0.85);
  /* rows in two slices, as two MPI ranks would */
  order_knn_index *x;
  CHECK_EQ_INT(order_knn_alloc(c.n, ivf->k, &split, &e), 0);
  CHECK_EQ_INT(order_knn_index_build(&in, &o, &x, &e), 0);
  CHECK_EQ_INT(order_knn_search(x, &in, 0, 1500, &o, split, &e), 0);
  CHECK_EQ_INT(order_knn_search(x, &in, 1500, c.n, &o, split, &e), 0);
  CHECK_EQ_INT(order_knn_search(x, &in, 10, c.n + 1, &o, split, &e),
               CTXD_EINVAL);
  CHECK(memcmp(split->nbr, ivf->nbr, c.n * ivf->k * 4) == 0);
  order_knn_index_free(x);
  /* the whole job on the IVF graph still keeps clusters together */
  char dir[256];
  subdir(dir, sizeof dir, "ivf");
  order_summary s;
  CHECK_EQ_INT(order_run(&in, dir, &o, &s, &e), 0);
  double same = check_order_file(&c, dir, s.duplicates);
  printf("ivf: same-cluster adjacent pairs %.3f\n", same);
  CHECK(same >= 0.95);
  order_knn_free(exact);
  order_knn_free(ivf);
  order_knn_free(split);
  corpus_free(&c);
}

/* Tiny corpora, a vectors-only corpus in mode "order", and long documents
 * cut across many small windows (with 2-token characters at the edges). */
static void test_edges(void) {
  ctxd_error e;
  order_opts o;
  order_summary s;
  char dir[256];
  for (uint64_t n = 0; n <= 2; n++) {
    const char *ids[2] = {"a", "b"};
    const char *texts[2] = {"alpha beta", "gamma"};
    size_t lens[2] = {10, 5};
    float vec[4] = {1, 0, 0.6f, 0.8f};
    order_input in = {0};
    in.n = n;
    in.ids = ids;
    in.texts = texts;
    in.text_lens = lens;
    in.dim = 2;
    in.vectors = vec;
    order_opts_defaults(&o);
    snprintf(dir, sizeof dir, "%s/tiny-%llu", base, (unsigned long long)n);
    int rc = order_run(&in, dir, &o, &s, &e);
    CHECK_EQ_INT(rc, 0);
    if (rc) fprintf(stderr, "n=%llu: %s\n", (unsigned long long)n, e.msg);
    CHECK_EQ_INT(s.ordered, n);
    CHECK_EQ_INT(s.windows, n ? 1 : 0);
    if (n == 2) CHECK(fabs(s.adjacent_similarity - 0.6) < 1e-5);
    size_t lines;
    json_t **v = read_lines(dir, "order.jsonl", &lines);
    CHECK_EQ_INT(lines, n);
    free_lines(v, lines);
  }
  /* vectors only: mode order works, iclm says what is missing */
  corpus c;
  make_corpus(&c, 3, 20, 8, 0.5, 0, 41);
  order_input in;
  corpus_setup(&c, &in, 1, &o, 0, 0);
  subdir(dir, sizeof dir, "vectors-only");
  CHECK_EQ_INT(order_run(&in, dir, &o, &s, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "needs the documents' texts") != NULL);
  o.mode = ORDER_MODE_ORDER;
  CHECK_EQ_INT(order_run(&in, dir, &o, &s, &e), 0);
  size_t lines;
  json_t **v = read_lines(dir, "order.jsonl", &lines);
  CHECK_EQ_INT(lines, c.n - s.duplicates);
  CHECK(lines > 0 && json_object_get(v[0], "window") == NULL);
  free_lines(v, lines);
  char path[512];
  snprintf(path, sizeof path, "%s/windows.jsonl", dir);
  CHECK(access(path, F_OK) != 0);
  /* long texts, small windows */
  for (uint64_t i = 0; i < c.n; i++) {
    size_t cap = 4000, len = 0;
    c.texts[i] = malloc(cap);
    while (len + 40 < cap)
      len += (size_t)snprintf(c.texts[i] + len, cap - len, "%s%llu ",
                              (len / 7) % 3 ? "word" : "\xf0\x9f\x98\x80x",
                              (unsigned long long)(len % 1000));
    c.lens[i] = len;
  }
  corpus_setup(&c, &in, 1, &o, 0, 16);
  o.separator = "<s>";
  subdir(dir, sizeof dir, "long");
  CHECK_EQ_INT(order_run(&in, dir, &o, &s, &e), 0);
  CHECK(s.windows > c.n * 10);
  check_windows(&c, dir, o.window_tokens, o.separator);
  /* a separator as long as the window is refused */
  o.window_tokens = 3;
  CHECK_EQ_INT(order_run(&in, dir, &o, &s, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "separator") != NULL);
  corpus_free(&c);
}

/* The traversal on a hand-made graph: two triangles joined by nothing, and
 * a lone document. */
static void test_traverse_small(void) {
  order_knn *k;
  ctxd_error e;
  CHECK_EQ_INT(order_knn_alloc(7, 2, &k, &e), 0);
  /* 0-1-2 triangle (0-1 strongest), 3-4-5 triangle, 6 alone */
  uint32_t nbr[14] = {1, 2, 0, 2, 0, 1, 4, 5, 3, 5, 3, 4,
                      ORDER_NONE, ORDER_NONE};
  float sim[14] = {.9f, .5f, .9f, .4f, .5f, .4f, .8f, .7f, .8f, .6f, .7f, .6f,
                   0, 0};
  memcpy(k->nbr, nbr, sizeof nbr);
  memcpy(k->sim, sim, sizeof sim);
  order_graph *g;
  CHECK_EQ_INT(order_graph_build(k, &g, &e), 0);
  CHECK_EQ_INT(order_graph_edges(g), 6);
  order_input in = {0};
  in.n = 7;
  order_opts o;
  order_opts_defaults(&o);
  order_path *p;
  CHECK_EQ_INT(order_traverse(g, NULL, &in, &o, &p, &e), 0);
  CHECK_EQ_INT(p->n, 7);
  /* the lone document (degree 0) starts; then two jumps, one per triangle */
  CHECK_EQ_INT(p->doc[0], 6);
  CHECK_EQ_INT(p->jumps, 2);
  int seen[7] = {0};
  for (int i = 0; i < 7; i++) seen[p->doc[i]]++;
  for (int i = 0; i < 7; i++) CHECK_EQ_INT(seen[i], 1);
  /* inside a triangle the walk takes the strongest edge from its start */
  for (int i = 1; i + 1 < 7; i++) {
    if (p->jump[i] && p->doc[i] == 2) CHECK(p->doc[i + 1] == 0);
    if (p->jump[i] && p->doc[i] == 3) CHECK(p->doc[i + 1] == 4);
    if (p->jump[i] && p->doc[i] == 0) CHECK(p->doc[i + 1] == 1);
  }
  order_path_free(p);
  order_graph_free(g);
  order_knn_free(k);
}

/* Packing in segments, as ctxd-corpus's ranks do it: start states from dry
 * runs passed along, each window that spans segments completed by the
 * segment where it began from the heads after it. windows.jsonl and
 * order.jsonl come out byte for byte as one order_pack, with its figures. */
static void test_pack_segments(void) {
  corpus c;
  order_input in;
  order_opts o;
  order_summary s;
  ctxd_error e = {0};
  char dir[512];
  make_corpus(&c, 4, 60, 16, 0.2, 160, 11);
  corpus_setup(&c, &in, 1, &o, 10, 300);
  uint64_t n = c.n;
  order_path p = {n, malloc(n * 4), malloc(n * 4), calloc(n, 1), 0};
  for (uint64_t i = 0; i < n; i++) {
    p.doc[i] = (uint32_t)((i * 7) % n); /* any order of every document */
    p.sim[i] = (float)(i % 10) / 10;
  }
  subdir(dir, sizeof dir, "segments");
  mkdir(dir, 0755);
  memset(&s, 0, sizeof s);
  CHECK(order_pack(&in, &p, NULL, &o, dir, &s, &e) == 0);
  /* segments of 70, 0, 130 and 40 documents */
  const uint64_t cut[] = {0, 70, 70, 200, n};
  enum { S = 4 };
  uint64_t *tokens = malloc(n * sizeof *tokens);
  order_pack_state st[S + 1] = {{0, 0, 0}};
  order_pack_seg seg[S];
  FILE *w[S], *od[S];
  char *wb[S], *ob[S];
  size_t wl[S], ol[S];
  order_path ps[S];
  for (int r = 0; r < S; r++) {
    uint64_t a = cut[r];
    ps[r] = (order_path){cut[r + 1] - a, p.doc + a, p.sim + a, p.jump + a, 0};
    CHECK(order_pack_tokens(&in, &ps[r], &o, tokens + a, &e) == 0);
  }
  for (int r = 0; r < S; r++) { /* the dry runs, one after the other */
    order_pack_seg dry;
    CHECK(order_pack_segment(&in, &ps[r], cut[r], &o, &st[r], tokens + cut[r],
                             1, NULL, NULL, &dry, &e) == 0);
    st[r + 1] = dry.end;
    order_pack_seg_free(&dry);
  }
  double total = 0;
  uint64_t count = 0, toks = 0;
  for (int r = 0; r < S; r++) { /* the packing proper, any order */
    w[r] = open_memstream(&wb[r], &wl[r]);
    od[r] = open_memstream(&ob[r], &ol[r]);
    CHECK(order_pack_segment(&in, &ps[r], cut[r], &o, &st[r],
                             tokens + cut[r], 1, w[r], od[r], &seg[r],
                             &e) == 0);
    total += seg[r].sim_total;
    count += seg[r].sim_windows;
    toks += seg[r].tokens;
  }
  order_wpart next = {0};
  for (int r = S - 1; r >= 0; r--) { /* the seams, right to left */
    order_wpart cur = seg[r].head_only ? seg[r].head : seg[r].tail;
    CHECK(order_wpart_append(&cur, &next, in.dim, &e) == 0);
    order_wpart_free(&next);
    if (seg[r].head_only) {
      next = cur;
      seg[r].head = (order_wpart){0};
      continue;
    }
    if (seg[r].end.open || cur.tokens) {
      order_wpart_write(w[r], seg[r].end.window, &cur);
      double ws = order_wpart_similarity(&cur, in.dim);
      if (ws == ws) {
        total += ws;
        count++;
      }
    }
    order_wpart_free(&cur);
    seg[r].tail = (order_wpart){0};
    next = seg[r].head;
    seg[r].head = (order_wpart){0};
  }
  order_wpart_free(&next);
  size_t al = 0, bl = 0;
  char *all = NULL, *allo = NULL;
  FILE *fa = open_memstream(&all, &al), *fb = open_memstream(&allo, &bl);
  for (int r = 0; r < S; r++) {
    fclose(w[r]);
    fclose(od[r]);
    fwrite(wb[r], 1, wl[r], fa);
    fwrite(ob[r], 1, ol[r], fb);
    free(wb[r]);
    free(ob[r]);
    order_pack_seg_free(&seg[r]);
  }
  fclose(fa);
  fclose(fb);
  char *want = slurp(dir, ORDER_FILE_WINDOWS), *wanto = slurp(dir, ORDER_FILE_ORDER);
  CHECK(want && all && strcmp(want, all) == 0);
  CHECK(wanto && allo && strcmp(wanto, allo) == 0);
  CHECK(st[S].window + st[S].open == s.windows);
  CHECK(s.windows > 20); /* documents were cut across windows */
  CHECK(toks == s.tokens);
  CHECK(count && fabs(total / (double)count - s.window_similarity) < 1e-9);
  printf("segments: %llu windows, %llu tokens, the same as one pass\n",
         (unsigned long long)s.windows, (unsigned long long)s.tokens);
  free(want);
  free(wanto);
  free(all);
  free(allo);
  free(tokens);
  free(p.doc);
  free(p.sim);
  free(p.jump);
  corpus_free(&c);
}

int main(void) {
  vindex_global_init(2);
  if (!mkdtemp(base)) {
    perror("mkdtemp");
    return 1;
  }
  test_traverse_small();
  test_jsonl();
  test_edges();
  test_clusters_iclm();
  test_ivf();
  test_determinism();
  test_duplicates();
  test_decompose();
  test_jsonl_embed_run();
  test_hash_embedder();
  test_cancel_resume();
  test_pack_segments();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", base);
  return check_report("order");
}
