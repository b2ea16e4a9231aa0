/* test_vindex.c - unit tests of the FAISS binding: exact Flat results against
 * brute force, HNSW and IVF recall and per-call ef/nprobe, removal and
 * filters, concurrent searches during adds, the file format (round trip,
 * truncation, garbage, damage), argument errors, batched kNN, normalisation. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../check.h"
#include "vindex.h"

/* ---- Data -------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd(void) {
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static double unif(void) {
  return ((rnd() >> 11) + 0.5) / 9007199254740992.0;
}

static float gauss(void) {
  return (float)(sqrt(-2 * log(unif())) * cos(6.283185307179586 * unif()));
}

/* n vectors around `nc` Gaussian centres (spread 1, noise sigma). */
static float *clustered(size_t n, uint32_t d, size_t nc, float sigma,
                        uint64_t seed) {
  rng_state = seed;
  float *c = malloc(nc * d * sizeof *c), *x = malloc(n * d * sizeof *x);
  for (size_t i = 0; i < nc * d; i++) c[i] = gauss();
  for (size_t i = 0; i < n; i++) {
    size_t k = rnd() % nc;
    for (uint32_t j = 0; j < d; j++)
      x[i * d + j] = c[k * d + j] + sigma * gauss();
  }
  free(c);
  return x;
}

/* Labels that are not positions, so the label map is exercised. */
static int64_t *make_labels(size_t n, int64_t base) {
  int64_t *l = malloc(n * sizeof *l);
  for (size_t i = 0; i < n; i++) l[i] = base + 3 * (int64_t)i;
  return l;
}

/* ---- Brute force ------------------------------------------------------- */

typedef struct {
  float s;
  int64_t l;
} hit;

static int ip_mode;

static int hit_cmp(const void *a, const void *b) {
  float x = ((const hit *)a)->s, y = ((const hit *)b)->s;
  if (x == y) return 0;
  return ip_mode ? (x < y ? 1 : -1) : (x < y ? -1 : 1);
}

typedef int (*keep_fn)(int64_t label, void *arg);

/* Exact top-k of q among the rows of x whose label `keep` allows. */
static void brute(const float *x, const int64_t *labels, size_t n, uint32_t d,
                  int ip, const float *q, uint32_t k, keep_fn keep, void *arg,
                  float *s_out, int64_t *l_out) {
  hit *h = malloc((n ? n : 1) * sizeof *h);
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    if (keep && !keep(labels[i], arg)) continue;
    double acc = 0;
    for (uint32_t j = 0; j < d; j++) {
      double a = x[i * d + j], b = q[j];
      acc += ip ? a * b : (a - b) * (a - b);
    }
    h[m].s = (float)acc;
    h[m++].l = labels[i];
  }
  ip_mode = ip;
  qsort(h, m, sizeof *h, hit_cmp);
  for (uint32_t i = 0; i < k; i++) {
    s_out[i] = i < m ? h[i].s : (ip ? -INFINITY : INFINITY);
    l_out[i] = i < m ? h[i].l : -1;
  }
  free(h);
}

/* Fraction of the exact top-k labels found in the approximate top-k. */
static double recall(const int64_t *exact, const int64_t *got, size_t nq,
                     uint32_t k) {
  size_t hits = 0, total = 0;
  for (size_t i = 0; i < nq; i++)
    for (uint32_t a = 0; a < k; a++) {
      if (exact[i * k + a] < 0) continue;
      total++;
      for (uint32_t b = 0; b < k; b++)
        if (got[i * k + b] == exact[i * k + a]) {
          hits++;
          break;
        }
    }
  return total ? (double)hits / total : 1.0;
}

/* Results are well formed: scores ordered best first, no duplicate label,
 * -1 only at the end. */
static int well_formed(const float *s, const int64_t *l, uint32_t k, int ip) {
  for (uint32_t i = 0; i < k; i++) {
    if (l[i] < 0) {
      for (uint32_t j = i; j < k; j++)
        if (l[j] != -1) return 0;
      return 1;
    }
    if (i > 0 && (ip ? s[i] > s[i - 1] : s[i] < s[i - 1])) return 0;
    for (uint32_t j = 0; j < i; j++)
      if (l[j] == l[i]) return 0;
  }
  return 1;
}

static vindex *make(const char *spec, uint32_t d, vindex_metric m) {
  vindex *v = NULL;
  ctxd_error e;
  int rc = vindex_create(spec, d, m, &v, &e);
  if (rc) fprintf(stderr, "create %s: %s\n", spec, e.msg);
  CHECK_EQ_INT(rc, 0);
  return v;
}

static void add_ok(vindex *v, const float *x, const int64_t *l, size_t n) {
  ctxd_error e;
  int rc = vindex_add(v, x, l, n, &e);
  if (rc) fprintf(stderr, "add: %s\n", e.msg);
  CHECK_EQ_INT(rc, 0);
}

static void search_ok(const vindex *v, const float *q, size_t nq, uint32_t k,
                      const vindex_params *p, unsigned threads, float *s,
                      int64_t *l) {
  ctxd_error e;
  int rc = vindex_search(v, q, nq, k, p, threads, s, l, &e);
  if (rc) fprintf(stderr, "search: %s\n", e.msg);
  CHECK_EQ_INT(rc, 0);
}

/* Exact answers for nq queries (optionally filtered). */
static void brute_all(const float *x, const int64_t *lab, size_t n, uint32_t d,
                      int ip, const float *q, size_t nq, uint32_t k,
                      keep_fn keep, void *arg, float *s, int64_t *l) {
  for (size_t i = 0; i < nq; i++)
    brute(x, lab, n, d, ip, q + i * d, k, keep, arg, s + i * k, l + i * k);
}

/* ---- Argument errors --------------------------------------------------- */

static void test_errors(void) {
  vindex *v = (vindex *)1;
  ctxd_error e;
  CHECK_EQ_INT(vindex_create("Nope", 8, VINDEX_L2, &v, &e), CTXD_EINVAL);
  CHECK(v == NULL);
  CHECK(strstr(e.msg, "Nope") != NULL);
  CHECK_EQ_INT(vindex_create("IDMap,Flat", 8, VINDEX_L2, &v, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "IDMap") != NULL);
  CHECK_EQ_INT(vindex_create("Flat", 0, VINDEX_L2, &v, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "dim") != NULL);
  CHECK_EQ_INT(vindex_create("Flat", VINDEX_DIM_MAX + 1, VINDEX_L2, &v, &e),
               CTXD_EINVAL);
  CHECK_EQ_INT(vindex_create("Flat", 8, (vindex_metric)7, &v, &e),
               CTXD_EINVAL);
  CHECK_EQ_INT(vindex_create("", 8, VINDEX_L2, &v, &e), CTXD_EINVAL);
  CHECK_EQ_INT(vindex_create("HNSW 32", 8, VINDEX_L2, &v, &e), CTXD_EINVAL);
  CHECK_EQ_INT(vindex_create("IVF99999999,Flat", 8, VINDEX_L2, &v, &e),
               CTXD_EINVAL);
  CHECK_EQ_INT(vindex_create("HNSW100000", 8, VINDEX_L2, &v, &e), CTXD_EINVAL);
  CHECK_EQ_INT(vindex_create("PQ4", 8, VINDEX_L2, &v, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "unsupported") != NULL);
  CHECK_EQ_INT(vindex_create("PCA4,Flat", 8, VINDEX_L2, &v, &e), CTXD_EINVAL);
  CHECK_EQ_INT(vindex_create("IVF16,PQ3", 8, VINDEX_L2, &v, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "divide") != NULL);
  CHECK_EQ_INT(vindex_create("IVF16,PQ4x16", 8, VINDEX_L2, &v, &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "bits") != NULL);
  CHECK_EQ_INT(vindex_create("IVF0,Flat", 8, VINDEX_L2, &v, &e), CTXD_EINVAL);
  CHECK_EQ_INT(vindex_create("HNSW1", 8, VINDEX_L2, &v, &e), CTXD_EINVAL);
  CHECK_EQ_INT(vindex_create("IVF16,RQ2x8", 8, VINDEX_L2, &v, &e),
               CTXD_EINVAL);
  CHECK_EQ_INT(vindex_create("IVF16,PQ4x4fs", 8, VINDEX_L2, &v, &e),
               CTXD_EINVAL);
  CHECK(v == NULL);

  /* Untrained IVF: add and search refused, training needs >= nlist. */
  const uint32_t d = 8;
  float *x = clustered(400, d, 8, 0.3f, 1);
  int64_t *lab = make_labels(400, 0);
  float s[4];
  int64_t l[4];
  v = make("IVF16,Flat", d, VINDEX_L2);
  vindex_info info;
  vindex_get_info(v, &info);
  CHECK_EQ_INT(info.needs_training, 1);
  CHECK_EQ_INT(info.trained, 0);
  CHECK_EQ_INT(info.min_train, 39 * 16);
  CHECK_EQ_INT(info.nlist, 16);
  CHECK_EQ_STR(info.spec, "IVF16,Flat");
  CHECK_EQ_INT(vindex_add(v, x, lab, 10, &e), CTXD_EPRECOND);
  CHECK(strstr(e.msg, "not trained") != NULL);
  CHECK_EQ_INT(vindex_search(v, x, 1, 4, NULL, 1, s, l, &e), CTXD_EPRECOND);
  CHECK_EQ_INT(vindex_search_batched(v, x, 2, NULL, 4, NULL, 1, s, l, NULL,
                                     NULL, &e),
               CTXD_EPRECOND);
  CHECK_EQ_INT(vindex_train(v, x, 15, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "at least 16") != NULL);
  CHECK_EQ_INT(vindex_train(v, x, 400, &e), 0); /* < min_train: works */
  vindex_get_info(v, &info);
  CHECK_EQ_INT(info.trained, 1);
  CHECK_EQ_INT(vindex_train(v, x, 400, &e), 0); /* trained: a no-op */
  CHECK_EQ_INT(vindex_set_ef_construction(v, 80, &e), CTXD_EINVAL);
  vindex_free(v);

  v = make("IVF16,PQ4", d, VINDEX_L2);
  vindex_get_info(v, &info);
  CHECK_EQ_INT(info.min_train, 39 * 256);
  CHECK_EQ_INT(vindex_train(v, x, 200, &e), CTXD_EINVAL); /* PQ: < 256 */
  CHECK(strstr(e.msg, "256") != NULL);
  vindex_free(v);

  v = make("Flat", d, VINDEX_L2);
  vindex_get_info(v, &info);
  CHECK_EQ_INT(info.needs_training, 0);
  CHECK_EQ_INT(info.trained, 1);
  CHECK_EQ_INT(info.min_train, 0);
  CHECK_EQ_INT(vindex_train(v, x, 1, &e), 0);
  int64_t neg[2] = {5, -1};
  CHECK_EQ_INT(vindex_add(v, x, neg, 2, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "row 1") != NULL);
  add_ok(v, x, lab, 10);
  CHECK_EQ_INT(vindex_search(v, x, 1, 0, NULL, 1, s, l, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "k = 0") != NULL);
  CHECK_EQ_INT(vindex_search(v, x, 1, VINDEX_K_MAX + 1, NULL, 1, s, l, &e),
               CTXD_EINVAL);
  vindex_params big = {VINDEX_EF_MAX + 1, 0, NULL, NULL};
  CHECK_EQ_INT(vindex_search(v, x, 1, 4, &big, 1, s, l, &e), CTXD_EINVAL);
  CHECK_EQ_INT(vindex_search(v, NULL, 1, 4, NULL, 1, s, l, &e), CTXD_EINVAL);
  CHECK_EQ_INT(vindex_search(v, x, 0, 4, NULL, 1, s, l, &e), 0);
  CHECK_EQ_INT(vindex_remove_range(v, 10, 5, NULL, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "[10, 5)") != NULL);
  uint64_t removed = 99;
  CHECK_EQ_INT(vindex_remove_range(v, 5, 5, &removed, &e), 0);
  CHECK_EQ_INT(removed, 0);
  CHECK_EQ_INT(vindex_set_ef_construction(v, 80, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "HNSW") != NULL);
  vindex_free(v);
  vindex_free(NULL);

  v = make("HNSW16", d, VINDEX_L2);
  CHECK_EQ_INT(vindex_set_ef_construction(v, 0, &e), CTXD_EINVAL);
  CHECK_EQ_INT(vindex_set_ef_construction(v, 80, &e), 0);
  vindex_get_info(v, &info);
  CHECK_EQ_INT(info.ef_construction, 80);
  CHECK_EQ_INT(info.needs_training, 0);
  vindex_free(v);
  free(x);
  free(lab);
}

/* ---- Flat: exact ------------------------------------------------------- */

static void test_flat_exact(vindex_metric m) {
  const uint32_t d = 24, k = 10;
  const size_t n = 1500, nq = 40; /* nq >= 20: FAISS's BLAS path too */
  int ip = m == VINDEX_IP;
  float *x = clustered(n, d, 20, 0.5f, 2), *q = clustered(nq, d, 20, 0.5f, 3);
  if (ip) {
    vindex_normalize(x, n, d);
    vindex_normalize(q, nq, d);
  }
  int64_t *lab = make_labels(n, 1000);
  vindex *v = make("Flat", d, m);
  add_ok(v, x, lab, 700); /* two adds: positions continue */
  add_ok(v, x + 700 * d, lab + 700, n - 700);
  float s[40 * 10], es[40 * 10];
  int64_t l[40 * 10], el[40 * 10];
  brute_all(x, lab, n, d, ip, q, nq, k, NULL, NULL, es, el);
  int same = 1, close = 1;
  for (int pass = 0; pass < 3; pass++) {
    /* one query at a time, all at once on 1 thread, all on 2 threads */
    if (pass == 0)
      for (size_t i = 0; i < nq; i++)
        search_ok(v, q + i * d, 1, k, NULL, 1, s + i * k, l + i * k);
    else
      search_ok(v, q, nq, k, NULL, pass, s, l);
    for (size_t i = 0; i < nq * k; i++) {
      same &= l[i] == el[i];
      close &= fabsf(s[i] - es[i]) <= 1e-3f * (1 + fabsf(es[i]));
    }
  }
  CHECK(same);
  CHECK(close);

  /* Fewer vectors than k: padded with -1 and the worst score. */
  vindex *small = make("Flat", d, m);
  add_ok(small, x, lab, 3);
  search_ok(small, q, 1, k, NULL, 1, s, l);
  CHECK(l[2] >= 0 && l[3] == -1 && l[9] == -1);
  CHECK(ip ? s[5] == -INFINITY : s[5] == INFINITY);
  CHECK(well_formed(s, l, k, ip));
  vindex_free(small);
  vindex_free(v);
  free(x);
  free(q);
  free(lab);
}

/* The distance kernels' tails: dimensions that are not multiples of 8 or
 * 16, one query at a time (the kernels) and 20 at once (BLAS), L2 and IP,
 * Flat and IVF-Flat (its own list scan), against brute force. */
static void test_dims(void) {
  const uint32_t dims[] = {1, 3, 8, 17, 33, 100};
  const size_t n = 300, nq = 20;
  const uint32_t k = 5;
  int same = 1, close = 1;
  for (size_t di = 0; di < sizeof dims / sizeof *dims; di++) {
    uint32_t d = dims[di];
    float *x = clustered(n, d, 5, 0.5f, 40 + di), *q = clustered(nq, d, 5, 0.5f, 50 + di);
    int64_t *lab = make_labels(n, 0);
    for (int m = 0; m < 2; m++)
      for (int ivf = 0; ivf < 2; ivf++) {
        vindex *v = make(ivf ? "IVF4,Flat" : "Flat", d, (vindex_metric)m);
        ctxd_error e;
        CHECK_EQ_INT(vindex_train(v, x, n, &e), 0);
        add_ok(v, x, lab, n);
        float s[20 * 5], es[20 * 5];
        int64_t l[20 * 5], el[20 * 5];
        brute_all(x, lab, n, d, m == VINDEX_IP, q, nq, k, NULL, NULL, es, el);
        vindex_params all = {0, 4, NULL, NULL};
        for (int batch = 0; batch < 2; batch++) {
          if (batch)
            search_ok(v, q, nq, k, &all, 1, s, l);
          else
            for (size_t i = 0; i < nq; i++)
              search_ok(v, q + i * d, 1, k, &all, 1, s + i * k, l + i * k);
          for (size_t i = 0; i < nq * k; i++) {
            close &= fabsf(s[i] - es[i]) <= 1e-4f * (1 + fabsf(es[i]));
            /* labels may swap only where scores tie */
            same &= l[i] == el[i] || fabsf(s[i] - es[i]) <= 1e-5f;
          }
        }
        vindex_free(v);
      }
    free(x);
    free(q);
    free(lab);
  }
  CHECK(same);
  CHECK(close);
}

/* ---- HNSW and IVF: recall, per-call parameters ------------------------- */

/* Base vectors, queries, and buffers for exact and tested answers. */
typedef struct {
  float *x, *q, *s, *es;
  int64_t *lab, *l, *el;
} data_set;

static data_set data_new(size_t n, size_t nq, uint32_t d, uint32_t k,
                         size_t centres, uint64_t seed) {
  data_set t;
  t.x = clustered(n, d, centres, 0.6f, seed);
  t.q = clustered(nq, d, centres, 0.6f, seed + 1);
  t.lab = malloc(n * sizeof *t.lab);
  t.s = malloc(nq * k * sizeof *t.s);
  t.es = malloc(nq * k * sizeof *t.es);
  t.l = malloc(nq * k * sizeof *t.l);
  t.el = malloc(nq * k * sizeof *t.el);
  return t;
}

static void data_free(data_set *t) {
  free(t->x);
  free(t->q);
  free(t->lab);
  free(t->s);
  free(t->es);
  free(t->l);
  free(t->el);
}

static const size_t RN = 4000, RQ = 100;
static const uint32_t RD = 32, RK = 10;

static void test_hnsw_recall(vindex_metric m) {
  int ip = m == VINDEX_IP;
  data_set t = data_new(RN, RQ, RD, RK, 40, 4);
  float *x = t.x, *q = t.q, *s = t.s, *es = t.es;
  int64_t *lab = t.lab, *l = t.l, *el = t.el;
  if (ip) {
    vindex_normalize(x, RN, RD);
    vindex_normalize(q, RQ, RD);
  }
  for (size_t i = 0; i < RN; i++) lab[i] = 7 + 3 * (int64_t)i;
  brute_all(x, lab, RN, RD, ip, q, RQ, RK, NULL, NULL, es, el);
  vindex *v = make("HNSW32", RD, m);
  ctxd_error e;
  CHECK_EQ_INT(vindex_set_ef_construction(v, 40, &e), 0);
  add_ok(v, x, lab, RN);
  vindex_params lo = {1, 0, NULL, NULL}, hi = {200, 0, NULL, NULL};
  search_ok(v, q, RQ, RK, &lo, 1, s, l);
  double r_lo = recall(el, l, RQ, RK);
  int wf = 1;
  for (size_t i = 0; i < RQ; i++) wf &= well_formed(s + i * RK, l + i * RK, RK, ip);
  search_ok(v, q, RQ, RK, &hi, 2, s, l);
  double r_hi = recall(el, l, RQ, RK);
  for (size_t i = 0; i < RQ; i++) wf &= well_formed(s + i * RK, l + i * RK, RK, ip);
  /* Scores are true distances of the returned labels. */
  int exact_scores = 1;
  for (size_t i = 0; i < RQ * RK; i++) {
    size_t row = (size_t)(l[i] - 7) / 3;
    double acc = 0;
    for (uint32_t j = 0; j < RD; j++) {
      double a = x[row * RD + j], b = q[(i / RK) * RD + j];
      acc += ip ? a * b : (a - b) * (a - b);
    }
    exact_scores &= fabs(acc - s[i]) <= 1e-3 * (1 + fabs(acc));
  }
  printf("HNSW32 %s: recall@10 ef=1(->k) %.3f, ef=200 %.3f\n", ip ? "IP" : "L2",
         r_lo, r_hi);
  CHECK(wf);
  CHECK(exact_scores);
  CHECK(r_hi >= 0.95);
  CHECK(r_hi > r_lo);
  /* Per-call ef really changes the search (FAISS 1.7.3's own per-call
   * efSearch would not: see vindex.h). */
  vindex_params wide = {1000, 0, NULL, NULL};
  search_ok(v, q, RQ, RK, &wide, 1, s, l);
  CHECK(recall(el, l, RQ, RK) >= r_hi - 0.01);
  vindex_free(v);
  data_free(&t);
}

static void test_ivf_recall(const char *spec, double min_recall_all) {
  data_set t = data_new(RN, RQ, RD, RK, 40, 6);
  float *x = t.x, *q = t.q, *s = t.s, *es = t.es;
  int64_t *lab = t.lab, *l = t.l, *el = t.el;
  for (size_t i = 0; i < RN; i++) lab[i] = 100 + 3 * (int64_t)i;
  brute_all(x, lab, RN, RD, 0, q, RQ, RK, NULL, NULL, es, el);
  vindex *v = make(spec, RD, VINDEX_L2);
  ctxd_error e;
  CHECK_EQ_INT(vindex_train(v, x, RN, &e), 0);
  add_ok(v, x, lab, RN);
  double r[3];
  uint32_t probes[3] = {1, 4, 16};
  for (int i = 0; i < 3; i++) {
    vindex_params p = {0, probes[i], NULL, NULL};
    search_ok(v, q, RQ, RK, &p, (unsigned)i + 1, s, l);
    r[i] = recall(el, l, RQ, RK);
  }
  /* nq == 1 on this thread gives the same as the batch. */
  float s1[10];
  int64_t l1[10];
  vindex_params p16 = {0, 16, NULL, NULL};
  search_ok(v, q + 5 * RD, 1, RK, &p16, 1, s1, l1);
  CHECK(memcmp(l1, l + 5 * RK, sizeof l1) == 0);
  printf("%s: recall@10 nprobe=1 %.3f, 4 %.3f, 16 %.3f\n", spec, r[0], r[1],
         r[2]);
  CHECK(r[1] > r[0]);
  CHECK(r[2] >= r[1]);
  CHECK(r[2] >= min_recall_all);
  vindex_free(v);
  data_free(&t);
}

/* ---- Removal and filters ----------------------------------------------- */

static int even_label(int64_t label, void *arg) {
  (void)arg;
  return label % 2 == 0;
}

typedef struct {
  int64_t lo, hi;
  int even_only;
} keep_spec;

static int keep_fn_spec(int64_t label, void *arg) {
  const keep_spec *k = arg;
  if (label >= k->lo && label < k->hi) return 0;
  return !k->even_only || label % 2 == 0;
}

/* Remove [lo, hi), then search with and without an even-labels filter:
 * removed labels never come back; Flat stays exact; the others keep recall. */
static void test_remove_filter(const char *spec) {
  const uint32_t d = 16, k = 10;
  const size_t n = 3000, nq = 60;
  data_set t = data_new(n, nq, d, k, 30, 8);
  float *x = t.x, *q = t.q, *s = t.s, *es = t.es;
  int64_t *lab = t.lab, *l = t.l, *el = t.el;
  for (size_t i = 0; i < n; i++) lab[i] = 5000 + (int64_t)i; /* odd & even */
  vindex *v = make(spec, d, VINDEX_L2);
  ctxd_error e;
  CHECK_EQ_INT(vindex_train(v, x, n, &e), 0);
  add_ok(v, x, lab, n);
  vindex_info info;
  uint64_t removed = 0;
  CHECK_EQ_INT(vindex_remove_range(v, 5100, 5400, &removed, &e), 0);
  CHECK_EQ_INT(removed, 300);
  CHECK_EQ_INT(vindex_remove_range(v, 5100, 5200, &removed, &e), 0);
  CHECK_EQ_INT(removed, 0); /* already gone */
  vindex_get_info(v, &info);
  int is_ivf = strncmp(spec, "IVF", 3) == 0;
  CHECK_EQ_INT(info.size, is_ivf ? n - 300 : n);
  CHECK_EQ_INT(info.masked, is_ivf ? 0 : 300);
  CHECK_EQ_INT(info.live, n - 300);

  vindex_params p = {200, 30, NULL, NULL};
  for (int filt = 0; filt < 2; filt++) {
    keep_spec ks = {5100, 5400, filt};
    p.allow = filt ? even_label : NULL;
    brute_all(x, lab, n, d, 0, q, nq, k, keep_fn_spec, &ks, es, el);
    for (int mode = 0; mode < 3; mode++) {
      /* one by one; a batch of 60 on 1 thread; the same on 2 threads */
      if (mode == 0)
        for (size_t i = 0; i < nq; i++)
          search_ok(v, q + i * d, 1, k, &p, 1, s + i * k, l + i * k);
      else
        search_ok(v, q, nq, k, &p, (unsigned)mode, s, l);
      int clean = 1, wf = 1;
      for (size_t i = 0; i < nq * k; i++)
        clean &= l[i] >= 0 && keep_fn_spec(l[i], &ks);
      for (size_t i = 0; i < nq; i++) wf &= well_formed(s + i * k, l + i * k, k, 0);
      CHECK(clean);
      CHECK(wf);
      double r = recall(el, l, nq, k);
      if (strcmp(spec, "Flat") == 0) {
        CHECK(memcmp(l, el, nq * k * sizeof *l) == 0);
      } else {
        if (r < 0.9) printf("%s filt=%d mode=%d: recall %.3f\n", spec, filt, mode, r);
        CHECK(r >= 0.9);
      }
    }
  }
  vindex_free(v);
  data_free(&t);
}

/* Several ranges at once (unsorted, overlapping, empty), and labels re-added
 * after their removal: masking is per position, so they are found again. */
static void test_ranges_readd(const char *spec) {
  const uint32_t d = 16;
  const size_t n = 1000;
  float *x = clustered(n, d, 10, 0.6f, 31);
  int64_t *lab = malloc(n * sizeof *lab);
  for (size_t i = 0; i < n; i++) lab[i] = (int64_t)i;
  vindex *v = make(spec, d, VINDEX_L2);
  ctxd_error e;
  CHECK_EQ_INT(vindex_train(v, x, n, &e), 0);
  add_ok(v, x, lab, n);
  int64_t lo[] = {500, 0, 505, 900, 3}, hi[] = {510, 5, 520, 900, 8};
  uint64_t removed = 0;
  CHECK_EQ_INT(vindex_remove_ranges(v, lo, hi, 5, &removed, &e), 0);
  CHECK_EQ_INT(removed, 8 + 20); /* 0..7 and 500..519 */
  int64_t bad_lo = 9, bad_hi = 3;
  CHECK_EQ_INT(vindex_remove_ranges(v, &bad_lo, &bad_hi, 1, NULL, &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "reversed") != NULL);
  CHECK_EQ_INT(vindex_remove_ranges(v, NULL, NULL, 0, &removed, &e), 0);
  CHECK_EQ_INT(removed, 0);
  /* Every remaining label is still found, no removed one is. */
  float s[1000];
  int64_t l[1000];
  vindex_params p = {1000, 64, NULL, NULL};
  search_ok(v, x, 1, 1000, &p, 1, s, l);
  int seen_removed = 0, found = 0;
  for (int i = 0; i < 1000; i++) {
    if (l[i] < 0) continue;
    found++;
    seen_removed += (l[i] < 8) || (l[i] >= 500 && l[i] < 520);
  }
  CHECK_EQ_INT(seen_removed, 0);
  CHECK(found >= 950);
  /* Re-add 500..519 with their vectors: found again, each as its own
   * nearest neighbour; the masked count keeps the old positions only. */
  add_ok(v, x + 500 * d, lab + 500, 20);
  vindex_info info;
  vindex_get_info(v, &info);
  int is_ivf = strncmp(spec, "IVF", 3) == 0;
  CHECK_EQ_INT(info.masked, is_ivf ? 0 : 28);
  CHECK_EQ_INT(info.size, is_ivf ? n - 8 : n + 20);
  CHECK_EQ_INT(info.live, n - 8);
  int self = 0;
  for (size_t i = 500; i < 520; i++) {
    search_ok(v, x + i * d, 1, 1, &p, 1, s, l);
    self += l[0] == (int64_t)i;
  }
  CHECK_EQ_INT(self, 20);
  vindex_free(v);
  free(x);
  free(lab);
}

/* A filter that allows almost nothing: HNSW walks on until it finds them. */
static int only_three(int64_t label, void *arg) {
  (void)arg;
  return label == 10 || label == 2000 || label == 3990;
}

static void test_sparse_filter(void) {
  const uint32_t d = 16;
  float *x = clustered(4000, d, 40, 0.6f, 10);
  int64_t *lab = malloc(4000 * sizeof *lab);
  for (size_t i = 0; i < 4000; i++) lab[i] = (int64_t)i;
  const char *specs[] = {"Flat", "HNSW16", "IVF8,Flat"};
  for (int i = 0; i < 3; i++) {
    vindex *v = make(specs[i], d, VINDEX_L2);
    ctxd_error e;
    CHECK_EQ_INT(vindex_train(v, x, 4000, &e), 0);
    add_ok(v, x, lab, 4000);
    vindex_params p = {16, 8, only_three, NULL};
    float s[5];
    int64_t l[5];
    search_ok(v, x + 10 * d, 1, 5, &p, 1, s, l);
    int64_t got[3] = {l[0], l[1], l[2]};
    int ok = l[3] == -1 && l[4] == -1;
    for (int j = 0; j < 3; j++) ok &= only_three(got[j], NULL);
    CHECK(ok);
    CHECK(got[0] == 10); /* row 10 is the query itself */
    vindex_free(v);
  }
  free(x);
  free(lab);
}

/* ---- Concurrency ------------------------------------------------------- */

typedef struct {
  vindex *v;
  const float *q;
  size_t nq;
  uint32_t ef, nprobe;
  int64_t max_label;
  atomic_int *stop;
  int bad, searches;
} searcher;

static void *search_thread(void *arg) {
  searcher *a = arg;
  vindex_params p = {a->ef, a->nprobe, NULL, NULL};
  float s[10];
  int64_t l[10];
  for (size_t i = 0; !atomic_load(a->stop) || i < 50; i++) {
    ctxd_error e;
    if (vindex_search(a->v, a->q + (i % a->nq) * 16, 1, 10, &p, 1, s, l, &e)) {
      a->bad++;
      continue;
    }
    a->searches++;
    if (!well_formed(s, l, 10, 0)) a->bad++;
    for (int j = 0; j < 10; j++)
      if (l[j] < -1 || l[j] > a->max_label) a->bad++;
  }
  return NULL;
}

typedef struct {
  vindex *v;
  const float *x;
  const int64_t *lab;
  size_t from, to;
  int rc;
} adder;

static void *add_thread(void *arg) {
  adder *a = arg;
  vindex_thread_limit(1); /* as a background builder would */
  for (size_t i = a->from; i < a->to && !a->rc; i += 250) {
    ctxd_error e;
    a->rc = vindex_add(a->v, a->x + i * 16, a->lab + i, 250, &e);
    if (!a->rc && (i / 250) % 4 == 0)
      a->rc = vindex_remove_range(a->v, a->lab[i], a->lab[i] + 30, NULL, &e);
  }
  return NULL;
}

static void test_concurrent(const char *spec) {
  const size_t n = 4000;
  float *x = clustered(n, 16, 40, 0.6f, 11), *q = clustered(50, 16, 40, 0.6f, 12);
  int64_t *lab = make_labels(n, 0);
  vindex *v = make(spec, 16, VINDEX_L2);
  ctxd_error e;
  CHECK_EQ_INT(vindex_train(v, x, n, &e), 0);
  add_ok(v, x, lab, 1000);
  atomic_int stop = 0;
  searcher s[4];
  pthread_t th[5];
  for (int i = 0; i < 4; i++) {
    s[i] = (searcher){v, q, 50, 8u << i, 1u << i, lab[n - 1], &stop, 0, 0};
    pthread_create(&th[i], NULL, search_thread, &s[i]);
  }
  adder a = {v, x, lab, 1000, n, 0};
  pthread_create(&th[4], NULL, add_thread, &a);
  pthread_join(th[4], NULL);
  atomic_store(&stop, 1);
  int bad = 0, searches = 0;
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    bad += s[i].bad;
    searches += s[i].searches;
  }
  CHECK_EQ_INT(a.rc, 0);
  CHECK_EQ_INT(bad, 0);
  CHECK(searches >= 200);
  vindex_info info;
  vindex_get_info(v, &info);
  CHECK_EQ_INT(info.live, n - 3 * 10); /* 3 removals of 10 labels */
  vindex_free(v);
  free(x);
  free(q);
  free(lab);
}

/* ---- Files ------------------------------------------------------------- */

/* Write v into memory (after a caller header "HDR!") and return the bytes. */
static char *to_memory(const vindex *v, size_t *len) {
  char *buf = NULL;
  FILE *f = open_memstream(&buf, len);
  fputs("HDR!", f);
  ctxd_error e;
  int rc = vindex_write(v, f, &e);
  if (rc) fprintf(stderr, "write: %s\n", e.msg);
  CHECK_EQ_INT(rc, 0);
  fputc('Z', f);
  fclose(f);
  return buf;
}

/* Read from bytes[4..len) (after the caller's header). */
static int from_memory(const char *bytes, size_t len, vindex **out,
                       ctxd_error *e, int *next) {
  FILE *f = fmemopen((void *)(bytes + 4), len - 4, "rb");
  int rc = vindex_read(f, out, e);
  if (next) *next = fgetc(f);
  fclose(f);
  return rc;
}

static void test_files(const char *spec) {
  const uint32_t d = 16, k = 10;
  const size_t n = 3000, nq = 30;
  float *x = clustered(n, d, 30, 0.6f, 13), *q = clustered(nq, d, 30, 0.6f, 14);
  int64_t *lab = make_labels(n, 9);
  vindex *v = make(spec, d, VINDEX_L2);
  ctxd_error e;
  if (strncmp(spec, "HNSW", 4) == 0)
    CHECK_EQ_INT(vindex_set_ef_construction(v, 64, &e), 0);
  CHECK_EQ_INT(vindex_train(v, x, n, &e), 0);
  add_ok(v, x, lab, n);
  CHECK_EQ_INT(vindex_remove_range(v, lab[100], lab[200], NULL, &e), 0);
  size_t len;
  char *bytes = to_memory(v, &len);
  vindex *w = NULL;
  int next = 0;
  CHECK_EQ_INT(from_memory(bytes, len, &w, &e, &next), 0);
  CHECK_EQ_INT(next, 'Z'); /* the stream is left just after the index */
  if (!w) return;
  vindex_info a, b;
  vindex_get_info(v, &a);
  vindex_get_info(w, &b);
  CHECK_EQ_STR(a.spec, b.spec);
  CHECK_EQ_INT(a.size, b.size);
  CHECK_EQ_INT(a.masked, b.masked);
  CHECK_EQ_INT(a.trained, b.trained);
  CHECK_EQ_INT(a.dim, b.dim);
  CHECK_EQ_INT(a.metric, b.metric);
  CHECK_EQ_INT(a.ef_construction, b.ef_construction);
  float s1[300], s2[300];
  int64_t l1[300], l2[300];
  vindex_params p = {32, 4, NULL, NULL};
  search_ok(v, q, nq, k, &p, 1, s1, l1);
  search_ok(w, q, nq, k, &p, 1, s2, l2);
  CHECK(memcmp(l1, l2, sizeof l1) == 0);
  CHECK(memcmp(s1, s2, sizeof s1) == 0);
  /* The label map came back: searching every stored vector finds itself. */
  if (strncmp(spec, "IVF", 3) != 0) {
    float s3[1];
    int64_t l3[1];
    int self = 1;
    vindex_params wide = {64, 0, NULL, NULL};
    for (size_t i = 300; i < 400; i++) {
      search_ok(w, x + i * d, 1, 1, &wide, 1, s3, l3);
      self &= l3[0] == lab[i];
    }
    CHECK(self);
  }
  /* A written read-back index writes the same bytes. */
  size_t len2;
  char *bytes2 = to_memory(w, &len2);
  CHECK(len2 == len && memcmp(bytes, bytes2, len) == 0);
  free(bytes2);
  vindex_free(w);

  /* Truncated anywhere: CTXD_EIO saying so, never a crash. */
  size_t cuts[] = {4, 5, 12, 30, 60, len / 3, len / 2, len - 40, len - 9,
                   len - 2};
  int all_eio = 1, all_said = 1;
  for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
    w = (vindex *)1;
    memset(&e, 0, sizeof e);
    int rc = from_memory(bytes, cuts[i], &w, &e, NULL);
    all_eio &= rc == CTXD_EIO && w == NULL && e.code == CTXD_EIO;
    all_said &= strstr(e.msg, "truncated") != NULL;
    if (rc != CTXD_EIO || !strstr(e.msg, "truncated"))
      fprintf(stderr, "cut %zu/%zu: rc %d: %s\n", cuts[i], len, rc, e.msg);
  }
  CHECK(all_eio);
  CHECK(all_said);

  /* One damaged byte in FAISS's data, in the label map, in the checksum. */
  size_t spots[] = {len / 2, len - 30, len - 3};
  for (size_t i = 0; i < 3; i++) {
    bytes[spots[i]] ^= 0x40;
    w = (vindex *)1;
    CHECK_EQ_INT(from_memory(bytes, len, &w, &e, NULL), CTXD_EIO);
    CHECK(w == NULL && e.msg[0] != '\0');
    bytes[spots[i]] ^= 0x40;
  }
  free(bytes);
  vindex_free(v);
  free(x);
  free(q);
  free(lab);
}

/* A stream that cannot seek (a pipe): the body is summed while FAISS parses
 * it and checked at the end. */
typedef struct {
  int fd;
  const char *p;
  size_t n;
} pipe_feed;

static void *feed_pipe(void *arg) {
  pipe_feed *a = arg;
  for (size_t off = 0; off < a->n;) {
    ssize_t w = write(a->fd, a->p + off, a->n - off);
    if (w <= 0) break;
    off += (size_t)w;
  }
  close(a->fd);
  return NULL;
}

static int read_via_pipe(const char *bytes, size_t len, vindex **out,
                         ctxd_error *e) {
  int fds[2];
  if (pipe(fds) != 0) return -100;
  pipe_feed a = {fds[1], bytes + 4, len - 4};
  pthread_t th;
  pthread_create(&th, NULL, feed_pipe, &a);
  FILE *f = fdopen(fds[0], "rb");
  int rc = vindex_read(f, out, e);
  while (fgetc(f) != EOF) {
  }
  fclose(f);
  pthread_join(th, NULL);
  return rc;
}

static void test_unseekable(void) {
  const uint32_t d = 8;
  float *x = clustered(500, d, 5, 0.5f, 21);
  int64_t *lab = make_labels(500, 1);
  vindex *v = make("Flat", d, VINDEX_L2);
  add_ok(v, x, lab, 500);
  CHECK_EQ_INT(vindex_remove_range(v, 1, 100, NULL, NULL), 0);
  size_t len;
  char *bytes = to_memory(v, &len);
  vindex *w = NULL;
  ctxd_error e;
  CHECK_EQ_INT(read_via_pipe(bytes, len, &w, &e), 0);
  vindex_info a, b;
  vindex_get_info(v, &a);
  vindex_get_info(w, &b);
  CHECK_EQ_INT(a.size, b.size);
  CHECK_EQ_INT(a.masked, b.masked);
  float s1[5], s2[5];
  int64_t l1[5], l2[5];
  search_ok(v, x + 7 * d, 1, 5, NULL, 1, s1, l1);
  search_ok(w, x + 7 * d, 1, 5, NULL, 1, s2, l2);
  CHECK(memcmp(l1, l2, sizeof l1) == 0);
  vindex_free(w);
  bytes[len / 2] ^= 1; /* in the vectors: only the checksum can tell */
  w = (vindex *)1;
  CHECK_EQ_INT(read_via_pipe(bytes, len, &w, &e), CTXD_EIO);
  CHECK(w == NULL && strstr(e.msg, "checksum") != NULL);
  bytes[len / 2] ^= 1;
  CHECK_EQ_INT(read_via_pipe(bytes, len - 20, &w, &e), CTXD_EIO);
  CHECK(strstr(e.msg, "truncated") != NULL);
  free(bytes);
  vindex_free(v);
  free(x);
  free(lab);
}

static void test_garbage_files(void) {
  char junk[4096];
  rng_state = 77;
  for (size_t i = 0; i < sizeof junk; i++) junk[i] = (char)rnd();
  vindex *w = (vindex *)1;
  ctxd_error e;
  CHECK_EQ_INT(from_memory(junk, sizeof junk, &w, &e, NULL), CTXD_EIO);
  CHECK(w == NULL);
  CHECK(strstr(e.msg, "not a ctxd vector index") != NULL);
  /* Our magic, then garbage. */
  memcpy(junk + 4, "CTXDVIX", 8);
  uint32_t hdr[5] = {1, 2, 1, 16, 6};
  memcpy(junk + 12, hdr, sizeof hdr);
  memcpy(junk + 32, "HNSW32", 6);
  CHECK_EQ_INT(from_memory(junk, sizeof junk, &w, &e, NULL), CTXD_EIO);
  CHECK(w == NULL && e.msg[0] != '\0');
  hdr[0] = 9; /* a future version */
  memcpy(junk + 12, hdr, sizeof hdr);
  CHECK_EQ_INT(from_memory(junk, sizeof junk, &w, &e, NULL), CTXD_EIO);
  CHECK(strstr(e.msg, "version 9") != NULL);
  FILE *f = fmemopen(junk, 0 + 1, "rb");
  fgetc(f); /* at end: empty input */
  CHECK_EQ_INT(vindex_read(f, &w, &e), CTXD_EIO);
  CHECK(strstr(e.msg, "truncated") != NULL);
  fclose(f);
}

/* ---- Batched kNN, normalisation, global init -------------------------- */

static void progress_cb(uint64_t done, void *arg) {
  uint64_t *last = arg;
  if (done <= *last) *last = UINT64_MAX; /* must grow */
  else *last = done;
}

static void test_batched(const char *spec) {
  const uint32_t d = 16, k = 8;
  const size_t n = 2500;
  float *x = clustered(n, d, 25, 0.6f, 15);
  vindex_normalize(x, n, d);
  int64_t *lab = make_labels(n, 40);
  vindex *v = make(spec, d, VINDEX_IP);
  ctxd_error e;
  CHECK_EQ_INT(vindex_train(v, x, n, &e), 0);
  add_ok(v, x, lab, n);
  CHECK_EQ_INT(vindex_remove_range(v, lab[0], lab[10], NULL, &e), 0);
  float *s = malloc(n * k * sizeof *s);
  int64_t *l = malloc(n * k * sizeof *l);
  uint64_t last = 0;
  vindex_params p = {64, 8, NULL, NULL};
  CHECK_EQ_INT(vindex_search_batched(v, x, n, lab, k, &p, 2, s, l, progress_cb,
                                     &last, &e),
               0);
  CHECK_EQ_INT(last, n);
  int no_self = 1, wf = 1, no_removed = 1, same = 1;
  for (size_t i = 0; i < n; i++) {
    wf &= well_formed(s + i * k, l + i * k, k, 1);
    for (uint32_t j = 0; j < k; j++) {
      no_self &= l[i * k + j] != lab[i];
      no_removed &= l[i * k + j] >= lab[10];
    }
  }
  /* Per-query search of k + 1 without self gives the same lists. */
  for (size_t i = 0; i < n; i += 97) {
    float s1[9];
    int64_t l1[9], want[8];
    search_ok(v, x + i * d, 1, k + 1, &p, 1, s1, l1);
    uint32_t o = 0;
    for (uint32_t j = 0; j < k + 1 && o < k; j++)
      if (l1[j] != lab[i]) want[o++] = l1[j];
    same &= memcmp(want, l + i * k, k * sizeof *want) == 0;
  }
  CHECK(no_self);
  CHECK(wf);
  CHECK(no_removed);
  CHECK(same);
  /* Without self labels: each row finds itself first (Flat: exactly). */
  CHECK_EQ_INT(vindex_search_batched(v, x + 20 * d, 200, NULL, k, &p, 2, s, l,
                                     NULL, NULL, &e),
               0);
  int self_first = 0;
  for (size_t i = 0; i < 200; i++) self_first += l[i * k] == lab[20 + i];
  if (strcmp(spec, "Flat") == 0)
    CHECK_EQ_INT(self_first, 200);
  else
    CHECK(self_first >= 190);
  vindex_free(v);
  free(x);
  free(lab);
  free(s);
  free(l);
}

static void test_normalize(void) {
  float x[3 * 4] = {3, 4, 0, 0, 0, 0, 0, 0, -1, 1, -1, 1};
  vindex_normalize(x, 3, 4);
  CHECK(fabsf(x[0] - 0.6f) < 1e-6f && fabsf(x[1] - 0.8f) < 1e-6f);
  CHECK(x[4] == 0 && x[5] == 0 && x[6] == 0 && x[7] == 0);
  double n2 = 0;
  for (int j = 8; j < 12; j++) n2 += (double)x[j] * x[j];
  CHECK(fabs(n2 - 1) < 1e-6);
  CHECK(fabsf(x[8] + 0.5f) < 1e-6f);
}

static void test_global_init(void) {
  const char *p = getenv("OMP_WAIT_POLICY");
  int passive = p && strcasecmp(p, "passive") == 0;
  CHECK_EQ_INT(vindex_global_init(2), passive);
}

int main(int argc, char **argv) {
  (void)argc;
  /* As the daemon does: libgomp reads OMP_WAIT_POLICY only at load time,
   * and with spinning OpenMP threads FAISS's k-means starves OpenBLAS (PQ
   * training here took 24 s instead of 2 on a loaded 2-core machine). */
  if (!getenv("OMP_WAIT_POLICY")) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    execv("/proc/self/exe", argv);
    perror("execv /proc/self/exe");
  }
  test_global_init();
  test_errors();
  test_normalize();
  test_flat_exact(VINDEX_L2);
  test_flat_exact(VINDEX_IP);
  test_dims();
  test_hnsw_recall(VINDEX_L2);
  test_hnsw_recall(VINDEX_IP);
  test_ivf_recall("IVF16,Flat", 0.99);
  test_ivf_recall("IVF16,PQ8", 0.5);
  test_ivf_recall("IVF16_HNSW16,Flat", 0.99);
  test_remove_filter("Flat");
  test_remove_filter("HNSW32");
  test_remove_filter("IVF16,Flat");
  test_sparse_filter();
  test_ranges_readd("Flat");
  test_ranges_readd("HNSW16");
  test_ranges_readd("IVF8,Flat");
  test_concurrent("HNSW16");
  test_concurrent("Flat");
  test_concurrent("IVF8,Flat");
  test_files("Flat");
  test_files("HNSW16");
  test_files("IVF16,PQ4");
  test_files("IVF16_HNSW16,Flat");
  test_garbage_files();
  test_unseekable();
  test_batched("Flat");
  test_batched("HNSW32");
  return check_report("vindex");
}
