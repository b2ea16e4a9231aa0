/* bench_coll.c - what the retrieval engine adds to a vector search: queries
 * per second of coll_search (index lookup, then each hit's chunk read from
 * LMDB into one result arena) next to vindex_search alone on an index built
 * from the same vectors with the same spec, in one thread, same run.
 *
 * usage: bench_coll [n_vectors] [dim] [spec] [queries] [k] [ef_search]
 *   defaults: 100000 128 HNSW32 2000 10 0
 * Vectors are random (uniform, L2-normalised, metric ip), 16 chunks per
 * document; queries are other random vectors. The search loops are timed in
 * CPU time of the searching thread (CLOCK_THREAD_CPUTIME_ID), best of 3, so
 * other load on the machine does not blur the comparison. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../benchfile.h"
#include "coll.h"

static uint64_t rng = 88172645463325252ULL;
static float frand(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (float)(rng >> 40) / (float)(1 << 24) - 0.5f;
}

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what, const ctxd_error *e) {
  fprintf(stderr, "%s: %s\n", what, e->msg);
  exit(1);
}

int main(int argc, char **argv) {
  size_t n = argc > 1 ? (size_t)atol(argv[1]) : 100000;
  uint32_t dim = argc > 2 ? (uint32_t)atoi(argv[2]) : 128;
  const char *spec = argc > 3 ? argv[3] : "HNSW32";
  size_t nq = argc > 4 ? (size_t)atol(argv[4]) : 2000;
  uint32_t k = argc > 5 ? (uint32_t)atoi(argv[5]) : 10;
  uint32_t ef = argc > 6 ? (uint32_t)atoi(argv[6]) : 0;
  enum { PER_DOC = 16, BATCH = 64 };
  n = (n + PER_DOC - 1) / PER_DOC * PER_DOC;
  /* One thread, and the reference index added in the batches coll's sync
   * uses (4096 rows), so both HNSW graphs are the same graph. */
  vindex_global_init(1);

  char dir[] = "/tmp/ctxd-bench-coll-XXXXXX", sdir[300], idir[300];
  if (!mkdtemp(dir)) return 1;
  snprintf(sdir, sizeof sdir, "%s/store", dir);
  snprintf(idir, sizeof idir, "%s/index", dir);
  ctxd_error e;
  store *st;
  store_opts so = {0, 0, 0, 1};
  if (store_open(sdir, &so, &st, &e)) die("store_open", &e);
  coll_opts o;
  memset(&o, 0, sizeof o);
  o.index_dir = idir;
  snprintf(o.defaults.embedder, sizeof o.defaults.embedder, "hash:dim=64");
  snprintf(o.defaults.index_spec, sizeof o.defaults.index_spec, "Flat");
  o.defaults.chunk_max_tokens = 512;
  o.save_interval_s = 3600;
  o.save_every_changes = 1u << 30;
  coll_set *cs;
  if (coll_open(st, &o, NULL, NULL, &cs, &e)) die("coll_open", &e);
  coll_config c;
  memset(&c, 0, sizeof c);
  snprintf(c.name, sizeof c.name, "bench");
  snprintf(c.embedder, sizeof c.embedder, "none:dim=%u", dim);
  snprintf(c.index_spec, sizeof c.index_spec, "%s", spec);
  c.chunk_max_tokens = 512;
  if (coll_create(cs, &c, &e)) die("coll_create", &e);
  uint32_t cid;
  if (coll_resolve(cs, "bench", 0, &cid, NULL, &e)) die("resolve", &e);

  float *x = malloc(n * dim * sizeof(float));
  int64_t *labels = malloc(n * sizeof(int64_t));
  for (size_t i = 0; i < n * dim; i++) x[i] = frand();
  vindex_normalize(x, n, dim);
  /* text "c\n" x 16: one two-byte chunk per vector */
  char text[PER_DOC * 2 + 1];
  for (int i = 0; i < PER_DOC; i++) memcpy(text + 2 * i, "c\n", 2);
  chunk_span sp[PER_DOC];
  for (int i = 0; i < PER_DOC; i++) sp[i] = (chunk_span){2u * i, 2u * i + 2, 1};
  double t0 = now();
  size_t ndocs = n / PER_DOC;
  store_put_doc docs[BATCH];
  char ids[BATCH][24];
  store_put_result res[BATCH];
  for (size_t d = 0; d < ndocs; d += BATCH) {
    size_t b = ndocs - d < BATCH ? ndocs - d : BATCH;
    for (size_t j = 0; j < b; j++) {
      snprintf(ids[j], sizeof ids[j], "d%zu", d + j);
      docs[j] = (store_put_doc){cid,  ids[j], strlen(ids[j]), text,
                                sizeof text - 1, NULL, 0, sp, PER_DOC,
                                x + (d + j) * PER_DOC * dim, dim, 0};
    }
    if (store_put(st, docs, b, res, &e)) die("store_put", &e);
    for (size_t j = 0; j < b; j++)
      for (int i = 0; i < PER_DOC; i++)
        labels[(d + j) * PER_DOC + i] = STORE_LABEL(res[j].doc_seq, i);
  }
  double t1 = now();
  if (coll_sync(cs, &e)) die("coll_sync", &e);
  double t2 = now();
  vindex *ref;
  if (vindex_create(spec, dim, VINDEX_IP, &ref, &e)) die("vindex_create", &e);
  for (size_t i = 0; i < n; i += 4096)
    if (vindex_add(ref, x + i * dim, labels + i, n - i < 4096 ? n - i : 4096,
                   &e))
      die("vindex_add", &e);
  double t3 = now();
  printf("%zu vectors, dim %u, %s, k %u, ef_search %u, %zu queries\n", n, dim,
         spec, k, ef, nq);
  printf("store_put %.2fs, coll_sync (index build) %.2fs, same index built "
         "directly %.2fs\n",
         t1 - t0, t2 - t1, t3 - t2);

  float *q = malloc(nq * dim * sizeof(float));
  for (size_t i = 0; i < nq * dim; i++) q[i] = frand();
  vindex_normalize(q, nq, dim);
  float *sc = malloc(k * sizeof(float));
  int64_t *lb = malloc(k * sizeof(int64_t));
  vindex_params p = {ef, 0, NULL, NULL};
  int64_t *top = malloc(nq * sizeof(int64_t));
  size_t agree = 0;
  double best_ref = 1e9, best_coll = 1e9, best_text = 1e9;
  for (int rep = 0; rep < 3; rep++) {
    double a = cpu_now();
    for (size_t i = 0; i < nq; i++) {
      if (vindex_search(ref, q + i * dim, 1, k, &p, 1, sc, lb, &e))
        die("vindex_search", &e);
      top[i] = lb[0];
    }
    double b = cpu_now();
    for (int with_text = 0; with_text < 2; with_text++) {
      double c0 = cpu_now();
      for (size_t i = 0; i < nq; i++) {
        coll_query cq;
        memset(&cq, 0, sizeof cq);
        cq.vector = q + i * dim;
        cq.dim = dim;
        cq.k = k;
        cq.ef_search = ef;
        cq.with_text = with_text;
        coll_result r;
        if (coll_search(cs, cid, &cq, &r, &e)) die("coll_search", &e);
        if (rep == 0 && !with_text && r.n) {
          size_t d = (size_t)atol(r.hits[0].doc_id + 1);
          agree += labels[d * PER_DOC + r.hits[0].ordinal] == top[i];
        }
        coll_result_free(&r);
      }
      double c1 = cpu_now();
      if (with_text)
        best_text = fmin(best_text, c1 - c0);
      else
        best_coll = fmin(best_coll, c1 - c0);
    }
    best_ref = fmin(best_ref, b - a);
  }
  printf("CPU time per query: vindex_search %.1f us, coll_search %.1f us, "
         "with text %.1f us\n",
         1e6 * best_ref / nq, 1e6 * best_coll / nq, 1e6 * best_text / nq);
  printf("vindex_search            %9.0f queries/s\n", nq / best_ref);
  printf("coll_search              %9.0f queries/s (%.1f%%)\n", nq / best_coll,
         100 * best_ref / best_coll);
  printf("coll_search, with text   %9.0f queries/s (%.1f%%)\n", nq / best_text,
         100 * best_ref / best_text);
  printf("top-1 ordinal agreement  %.1f%%\n", 100.0 * agree / nq);
  vindex_free(ref);
  coll_close(cs);
  store_close(st);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) return 1;
  free(x);
  free(labels);
  free(q);
  free(sc);
  free(lb);
  free(top);
  return 0;
}
