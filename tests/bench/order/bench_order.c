/* bench_order.c - corpus-ordering benchmarks (run.sh drives them):
 *   e2e N DIM K          N clustered vectors of DIM (1% near-duplicates):
 *                        kNN + dedup + traversal through the library's
 *                        phases, with per-phase times and peak RSS next to
 *                        the targets (10 minutes, 2.5 x the raw vectors).
 *   graph N DIM K FILE   build the kNN graph of N clustered vectors and save
 *                        it (knn.ckpt format) for the traversal benchmark.
 *                        Beside it, FILE.vec: the normalised vectors as raw
 *                        float32 rows.
 *   traverse FILE RUNS   the traversal alone on FILE's graph (undirected CSR
 *                        build + greedy path), best of RUNS in wall-clock
 *                        and in CPU seconds (the machine is shared), with the
 *                        mean
 *                        cosine of adjacent documents (an edge's weight, or
 *                        after a jump the vectors' dot product), as the
 *                        Python reference measures it.
 * The vectors: C = N/500 cluster centres uniform in [-1,1]^DIM, each
 * document its centre plus uniform noise in [-0.8,0.8]^DIM (within-cluster
 * cosine about 0.6); every 100th document is instead a near-copy of an
 * earlier one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "order.h"
#include "vindex.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double peak_gb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_maxrss * 1024.0 / 1e9;
}

static uint64_t rs = 0x9E3779B97F4A7C15ull;
static inline float urand(void) { /* uniform in [-1, 1) */
  rs ^= rs << 13;
  rs ^= rs >> 7;
  rs ^= rs << 17;
  return (float)(int32_t)(rs >> 32) * (1.0f / 2147483648.0f);
}

static float *make_vectors(uint64_t n, uint32_t dim, uint64_t *dups) {
  uint64_t c = n / 500 ? n / 500 : 1;
  float *centers = malloc(c * dim * sizeof *centers);
  float *v = malloc(n * dim * sizeof *v);
  if (!centers || !v) {
    fprintf(stderr, "out of memory for %llu vectors\n", (unsigned long long)n);
    exit(1);
  }
  for (uint64_t j = 0; j < c * dim; j++) centers[j] = urand();
  *dups = 0;
  for (uint64_t i = 0; i < n; i++) {
    float *row = v + i * dim;
    if (i % 100 == 99) {
      const float *src = v + (i - 37) * dim;
      for (uint32_t j = 0; j < dim; j++) row[j] = src[j] + 0.01f * urand();
      (*dups)++;
      continue;
    }
    uint64_t cl = (uint64_t)((urand() + 1) * 0.5f * (float)c) % c;
    for (uint32_t j = 0; j < dim; j++)
      row[j] = centers[cl * dim + j] + 0.8f * urand();
  }
  free(centers);
  return v;
}

static char **make_ids(uint64_t n) {
  char **ids = malloc(n * sizeof *ids);
  char *pool = malloc(n * 16);
  for (uint64_t i = 0; i < n; i++) {
    ids[i] = pool + i * 16;
    snprintf(ids[i], 16, "d%u", (unsigned)i);
  }
  return ids;
}

static double t_start;
static void progress(void *arg, order_phase ph, uint64_t done,
                     uint64_t total) {
  static double last;
  static int last_ph = -1;
  double t = now();
  (void)arg;
  if (t - last < 10 && done != total && (int)ph == last_ph) return;
  last = t;
  last_ph = (int)ph;
  fprintf(stderr, "  %6.1fs %-8s %llu/%llu\n", t - t_start, order_phase_name(ph),
          (unsigned long long)done, (unsigned long long)total);
}

static void die(const char *what, const ctxd_error *e) {
  fprintf(stderr, "%s: %s\n", what, e->msg);
  exit(1);
}

/* The clustered corpus as the library's input, and options with k. */
static void setup(uint64_t n, uint32_t dim, uint32_t k, uint64_t *planted,
                  order_input *in, order_opts *o) {
  memset(in, 0, sizeof *in);
  in->n = n;
  in->dim = dim;
  in->vectors = make_vectors(n, dim, planted);
  in->ids = (const char *const *)make_ids(n);
  order_opts_defaults(o);
  o->k = k;
  o->mode = ORDER_MODE_ORDER;
  o->progress = progress;
  if (getenv("EXACT_MAX")) o->exact_max = strtoull(getenv("EXACT_MAX"), NULL, 10);
}

static void teardown(order_input *in) {
  free(in->vectors);
  free((void *)in->ids[0]);
  free((void *)in->ids);
}

static int e2e(uint64_t n, uint32_t dim, uint32_t k) {
  ctxd_error e;
  uint64_t planted;
  order_input in;
  order_opts o;
  double t0 = now();
  setup(n, dim, k, &planted, &in, &o);
  double tgen = now() - t0;
  double raw_gb = (double)n * dim * 4 / 1e9;
  float *owned;
  order_knn *knn;
  order_graph *g;
  order_dups *d;
  order_path *p;
  double t[6];
  t[0] = t_start = now();
  if (order_input_check(&in, &o, &e)) die("input", &e);
  if (order_prepare_vectors(&in, &o, &owned, &e)) die("vectors", &e);
  t[1] = now();
  if (order_knn_build(&in, &o, &knn, &e)) die("knn", &e);
  t[2] = now();
  if (order_graph_build(knn, &g, &e)) die("graph", &e);
  char method[64];
  snprintf(method, sizeof method, "%s", knn->method);
  float recall = knn->recall;
  order_knn_free(knn);
  if (order_dedup(g, &in, &o, &d, &e)) die("dedup", &e);
  t[3] = now();
  if (order_traverse(g, d, &in, &o, &p, &e)) die("traverse", &e);
  t[4] = now();
  double adj = order_path_similarity(p);
  double rnd = order_random_similarity(p, &in, o.seed);
  double total = t[4] - t[0];
  double peak = peak_gb();
  printf("documents %llu, dim %u, k %u, raw vectors %.2f GB (generated in "
         "%.1f s, not counted)\n",
         (unsigned long long)n, dim, k, raw_gb, tgen);
  printf("kNN: %s, estimated recall@%u %.3f; edges %llu\n", method, k,
         (double)recall, (unsigned long long)order_graph_edges(g));
  printf("phase\tseconds\n");
  printf("normalise\t%.1f\n", t[1] - t[0]);
  printf("knn (train, add, search)\t%.1f\n", t[2] - t[1]);
  printf("graph + dedup\t%.1f\n", t[3] - t[2]);
  printf("traverse\t%.1f\n", t[4] - t[3]);
  printf("\nmeasure\tvalue\ttarget\tmet\n");
  printf("end-to-end time\t%.1f s\t< 600 s\t%s\n", total,
         total < 600 ? "yes" : "NO");
  printf("peak memory (ru_maxrss)\t%.2f GB (%.2fx raw)\t< %.2f GB (2.5x)\t%s\n",
         peak, peak / raw_gb, 2.5 * raw_gb, peak < 2.5 * raw_gb ? "yes" : "NO");
  printf("duplicates dropped\t%llu\t(%llu planted)\t\n",
         (unsigned long long)d->count, (unsigned long long)planted);
  printf("jumps\t%llu\t\t\n", (unsigned long long)p->jumps);
  printf("adjacent similarity\t%.4f\t(random order %.4f)\t\n", adj, rnd);
  order_path_free(p);
  order_dups_free(d);
  order_graph_free(g);
  teardown(&in);
  return 0;
}

static int graph(uint64_t n, uint32_t dim, uint32_t k, const char *file) {
  ctxd_error e;
  uint64_t planted;
  order_input in;
  order_opts o;
  setup(n, dim, k, &planted, &in, &o);
  float *owned;
  order_knn *knn;
  double t0 = now();
  if (order_prepare_vectors(&in, &o, &owned, &e)) die("vectors", &e);
  if (order_knn_build(&in, &o, &knn, &e)) die("knn", &e);
  if (order_knn_save(knn, file, 0, &e)) die("save", &e);
  /* the normalised vectors beside it, raw float32 rows, for the similarity
   * of documents joined by a jump */
  char vpath[4096];
  snprintf(vpath, sizeof vpath, "%s.vec", file);
  FILE *vf = fopen(vpath, "wb");
  if (!vf || fwrite(in.vectors, sizeof(float) * dim, n, vf) != n ||
      fclose(vf) != 0) {
    fprintf(stderr, "cannot write %s\n", vpath);
    return 1;
  }
  fprintf(stderr, "graph: %llu x %u (%s, recall %.3f) in %.1f s -> %s\n",
          (unsigned long long)n, knn->k, knn->method, (double)knn->recall,
          now() - t0, file);
  order_knn_free(knn);
  teardown(&in);
  return 0;
}

static int traverse(const char *file, int runs) {
  ctxd_error e;
  FILE *f = fopen(file, "rb");
  uint64_t hdr[3];
  if (!f || fseek(f, 8, SEEK_SET) || fread(hdr, 8, 3, f) != 3) {
    fprintf(stderr, "cannot read %s\n", file);
    return 1;
  }
  fclose(f);
  uint32_t k = (uint32_t)(hdr[0] >> 32);
  order_knn *knn;
  if (order_knn_load(file, hdr[1], k, hdr[2], &knn, &e)) die("load", &e);
  order_input in = {0};
  in.n = knn->n;
  char vpath[4096];
  snprintf(vpath, sizeof vpath, "%s.vec", file);
  f = fopen(vpath, "rb");
  long vbytes = f && fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
  if (vbytes <= 0 || vbytes % (long)(4 * in.n) != 0) {
    fprintf(stderr, "cannot read %s\n", vpath);
    return 1;
  }
  in.dim = (uint32_t)(vbytes / (long)(4 * in.n));
  in.vectors = malloc((size_t)vbytes);
  fseek(f, 0, SEEK_SET);
  if (fread(in.vectors, 1, (size_t)vbytes, f) != (size_t)vbytes) {
    fprintf(stderr, "short read of %s\n", vpath);
    return 1;
  }
  fclose(f);
  order_opts o;
  order_opts_defaults(&o);
  if (getenv("SEED")) o.seed = strtoull(getenv("SEED"), NULL, 10);
  double best = 1e30, best_cpu = 1e30, sim = 0;
  uint64_t jumps = 0;
  for (int r = 0; r < runs; r++) {
    order_graph *g;
    order_path *p;
    double t0 = now(), c0 = cpu_now();
    if (order_graph_build(knn, &g, &e)) die("graph", &e);
    if (order_traverse(g, NULL, &in, &o, &p, &e)) die("traverse", &e);
    double dt = now() - t0, dc = cpu_now() - c0;
    if (dt < best) best = dt;
    if (dc < best_cpu) best_cpu = dc;
    sim = order_path_similarity(p);
    jumps = p->jumps;
    order_graph_free(g);
    order_path_free(p);
  }
  printf("C\t%.4f\t%.4f\t%.6f\t%llu\n", best, best_cpu, sim,
         (unsigned long long)jumps);
  order_knn_free(knn);
  free(in.vectors);
  return 0;
}

int main(int argc, char **argv) {
  vindex_global_init(0);
  if (argc == 5 && strcmp(argv[1], "e2e") == 0)
    return e2e(strtoull(argv[2], NULL, 10), (uint32_t)atoi(argv[3]),
               (uint32_t)atoi(argv[4]));
  if (argc == 6 && strcmp(argv[1], "graph") == 0)
    return graph(strtoull(argv[2], NULL, 10), (uint32_t)atoi(argv[3]),
                 (uint32_t)atoi(argv[4]), argv[5]);
  if (argc == 4 && strcmp(argv[1], "traverse") == 0)
    return traverse(argv[2], atoi(argv[3]));
  fprintf(stderr,
          "usage: %s e2e N DIM K | graph N DIM K FILE | traverse FILE RUNS\n",
          argv[0]);
  return 2;
}
