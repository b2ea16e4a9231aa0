/* bench_vindex.c - in-process vector search through ctxd's FAISS binding:
 * builds each index from a .f32 file, computes (or loads) exact ground
 * truth, finds the smallest efSearch / nprobe whose recall@k reaches the
 * target, and times single-query searches on ONE thread at that setting.
 * Prints one machine-readable line per step (key=value), for shell scripts:
 *   data base=1000000 dim=128 queries=1000 k=10
 *   gt seconds=8.21 threads=2 omp_passive=1 source=computed
 *   build index=HNSW32 efc=40 train_s=0.00 add_s=301.2 seconds=301.2 bytes=...
 *   sweep index=HNSW32 efc=40 ef=48 recall=0.9412
 *   inproc index=HNSW32 efc=40 ef=64 recall=0.9571 qps=1234 threads=1
 * (for IVF the setting is nprobe=N; `target_missed=1` when no setting of
 * the sweep reached the target).
 *
 * usage: bench_vindex --base B.f32 --queries Q.f32 [--k 10] [--target 0.95]
 *          [--gt GT.i64] [--gt-only] [--threads N] [--seconds S]
 *          [--train N] [--index SPEC[:efc=N]]...
 *   --gt FILE   load ground truth from FILE when it matches, else compute
 *               and write it there
 *   --gt-only   stop after the ground truth (for timing the exact search)
 *   --threads   OpenMP threads for building, ground truth and the recall
 *               sweeps (default: all cores); qps is always one thread
 *   --seconds   how long to time each single-query run (default 2)
 *   --train     training vectors for kinds that train (default: the larger
 *               of vindex_info.min_train and 64 x nlist, at most n)
 *   --index     default: HNSW32:efc=40 HNSW32:efc=80 IVF1024,Flat
 *
 *        bench_vindex --load DIR/CID.vindex --queries Q.f32 [--ef N | --nprobe N]
 *   times single-query searches on an index file a daemon saved (see
 *   bench_file): `inproc-file index=HNSW32 ef=384 qps=... cpu_qps=... threads=1`
 *   (cpu_qps: queries per second of the process's CPU time) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../benchfile.h"
#include "vecfile.h"
#include "coll.h"
#include "vindex.h"

static const char *base_path, *query_path, *gt_path;
static uint32_t K = 10;
static double target = 0.95, min_seconds = 2;
static unsigned threads;
static uint64_t train_n;
static int gt_only;
static const char *load_path;
static uint32_t load_ef, load_nprobe;

static void die(const char *what, const ctxd_error *e) {
  fprintf(stderr, "bench_vindex: %s: %s\n", what, e ? e->msg : "failed");
  exit(1);
}

static double recall_at_k(const int64_t *gt, uint32_t gt_k, const int64_t *got,
                          uint64_t nq) {
  uint64_t hits = 0;
  for (uint64_t i = 0; i < nq; i++)
    for (uint32_t a = 0; a < K; a++)
      for (uint32_t b = 0; b < K; b++)
        if (got[i * K + b] == gt[i * gt_k + a]) {
          hits++;
          break;
        }
  return (double)hits / (double)(nq * K);
}

static void add_progress(uint64_t done, uint64_t n, double t0) {
  fprintf(stderr, "  added %llu/%llu (%.0f s)\n", (unsigned long long)done,
          (unsigned long long)n, now() - t0);
}

/* Exact top-K of every query by a Flat index, batched, `threads` threads. */
static int64_t *ground_truth(const float *base, uint64_t n, uint32_t dim,
                             const float *q, uint64_t nq, int passive,
                             uint32_t *gt_k) {
  uint64_t rows;
  uint32_t cols;
  int64_t *gt = gt_path ? vecfile_read(gt_path, "I64K", sizeof(int64_t), &rows,
                                       &cols)
                        : NULL;
  if (gt && rows == nq && cols >= K) {
    *gt_k = cols;
    printf("gt seconds=0 threads=%u omp_passive=%d source=%s\n", threads,
           passive, gt_path);
    return gt;
  }
  free(gt);
  *gt_k = K;
  ctxd_error e;
  vindex *flat;
  if (vindex_create("Flat", dim, VINDEX_L2, &flat, &e)) die("create Flat", &e);
  int64_t *labels = malloc(n * sizeof *labels);
  for (uint64_t i = 0; i < n; i++) labels[i] = (int64_t)i;
  if (vindex_add(flat, base, labels, n, &e)) die("add Flat", &e);
  free(labels);
  float *s = malloc(nq * K * sizeof *s);
  gt = malloc(nq * K * sizeof *gt);
  double t0 = now();
  if (vindex_search_batched(flat, q, nq, NULL, K, NULL, threads, s, gt, NULL,
                            NULL, &e))
    die("ground truth", &e);
  printf("gt seconds=%.2f threads=%u omp_passive=%d source=computed\n",
         now() - t0, threads, passive);
  fflush(stdout);
  if (gt_path &&
      vecfile_write(gt_path, "I64K", gt, nq, K, sizeof(int64_t)) != 0)
    fprintf(stderr, "bench_vindex: cannot write %s\n", gt_path);
  free(s);
  vindex_free(flat);
  return gt;
}

/* Queries per second of one query at a time on this thread, for at least
 * min_seconds (whole passes over the queries). */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* *cpu_qps (optional): the same per second of this process's CPU time,
 * which a busy machine's other work does not dilute. */
static double time_single(const vindex *v, const float *q, uint64_t nq,
                          uint32_t dim, const vindex_params *p, float *s,
                          int64_t *l, double *cpu_qps) {
  ctxd_error e;
  uint64_t done = 0;
  double t2 = now(), c2 = cpu_now(), el;
  do {
    for (uint64_t i = 0; i < nq; i++)
      if (vindex_search(v, q + i * dim, 1, K, p, 1, s + i * K, l + i * K, &e))
        die("search", &e);
    done += nq;
    el = now() - t2;
  } while (el < min_seconds);
  if (cpu_qps) *cpu_qps = (double)done / (cpu_now() - c2);
  return (double)done / el;
}

/* --load: the index file a daemon saved (coll.h), searched in this process
 * at one fixed setting: the same graph and parameters the daemon's Search
 * calls use, so its rate is what the gRPC path is compared with. The
 * file's labels are chunk ids, not rows, so no recall here: it equals the
 * gRPC path's, computed there from the answers. */
static void bench_file(const char *path, const float *q, uint64_t nq,
                       uint32_t dim, uint32_t ef, uint32_t nprobe) {
  ctxd_error e;
  vindex *v;
  coll_file_info fi;
  double t0 = now();
  if (coll_file_read(path, &v, &fi, &e)) die("load", &e);
  if (fi.dim != dim) {
    fprintf(stderr, "bench_vindex: %s has dim %u, the queries %u\n", path,
            fi.dim, dim);
    exit(1);
  }
  vindex_info info;
  vindex_get_info(v, &info);
  printf("load index=%s vectors=%llu seconds=%.2f\n", info.spec,
         (unsigned long long)info.live, now() - t0);
  fflush(stdout);
  vindex_params p = {ef, nprobe, NULL, NULL};
  float *s = malloc(nq * K * sizeof *s);
  int64_t *l = malloc(nq * K * sizeof *l);
  if (!s || !l) die("out of memory", NULL);
  double cpu_qps;
  double qps = time_single(v, q, nq, dim, &p, s, l, &cpu_qps);
  printf("inproc-file index=%s %s=%u qps=%.0f cpu_qps=%.0f threads=1\n",
         info.spec, nprobe ? "nprobe" : "ef", nprobe ? nprobe : ef, qps, cpu_qps);
  fflush(stdout);
  free(s);
  free(l);
  vindex_free(v);
}

static void bench_index(const char *arg, const float *base, uint64_t n,
                        uint32_t dim, const float *q, uint64_t nq,
                        const int64_t *gt, uint32_t gt_k) {
  char spec[VINDEX_SPEC_MAX];
  unsigned efc = 0;
  snprintf(spec, sizeof spec, "%s", arg);
  char *colon = strchr(spec, ':');
  if (colon) {
    *colon = '\0';
    if (sscanf(colon + 1, "efc=%u", &efc) != 1) {
      fprintf(stderr, "bench_vindex: bad option in %s\n", arg);
      exit(2);
    }
  }
  ctxd_error e;
  vindex *v;
  if (vindex_create(spec, dim, VINDEX_L2, &v, &e)) die(spec, &e);
  if (efc && vindex_set_ef_construction(v, efc, &e)) die(spec, &e);
  vindex_info info;
  vindex_get_info(v, &info);
  char tag[VINDEX_SPEC_MAX + 32];
  if (info.ef_construction)
    snprintf(tag, sizeof tag, "index=%s efc=%u", spec, info.ef_construction);
  else
    snprintf(tag, sizeof tag, "index=%s", spec);

  double t0 = now(), train_s = 0;
  if (info.needs_training) {
    uint64_t tn = train_n;
    if (!tn) {
      tn = info.min_train > 64ull * info.nlist ? info.min_train
                                                : 64ull * info.nlist;
      if (tn < 1) tn = 1;
    }
    if (tn > n) tn = n;
    fprintf(stderr, "%s: training on %llu vectors\n", tag,
            (unsigned long long)tn);
    if (vindex_train(v, base, tn, &e)) die("train", &e);
    train_s = now() - t0;
  }
  double t1 = now();
  const uint64_t step = 100000;
  int64_t *labels = malloc(step * sizeof *labels);
  for (uint64_t i0 = 0; i0 < n; i0 += step) {
    uint64_t m = n - i0 < step ? n - i0 : step;
    for (uint64_t i = 0; i < m; i++) labels[i] = (int64_t)(i0 + i);
    if (vindex_add(v, base + i0 * dim, labels, m, &e)) die("add", &e);
    add_progress(i0 + m, n, t1);
  }
  free(labels);
  double add_s = now() - t1;
  vindex_get_info(v, &info);
  printf("build %s train_s=%.2f add_s=%.2f seconds=%.2f bytes=%llu\n", tag,
         train_s, add_s, train_s + add_s, (unsigned long long)info.bytes);
  fflush(stdout);

  /* Sweep with all threads; the first setting that reaches the target. */
  static const uint32_t efs[] = {10,  16,  24,  32,  48,  64,   96,  128,
                                 192, 256, 384, 512, 768, 1024, 2048};
  static const uint32_t probes[] = {1,  2,  3,   4,   6,   8,   12,   16,  24,
                                    32, 48, 64,  96,  128, 192, 256,  384, 512,
                                    768, 1024, 2048, 4096, 8192, 16384, 65536};
  int ivf = info.nlist > 0;
  const uint32_t *vals = ivf ? probes : efs;
  size_t nvals = ivf ? sizeof probes / sizeof *probes : sizeof efs / sizeof *efs;
  const char *knob = ivf ? "nprobe" : "ef";
  float *s = malloc(nq * K * sizeof *s);
  int64_t *l = malloc(nq * K * sizeof *l);
  vindex_params p = {0, 0, NULL, NULL};
  uint32_t chosen = 0;
  double r = 0;
  for (size_t i = 0; i < nvals; i++) {
    if (ivf && vals[i] > info.nlist) break;
    if (ivf)
      p.nprobe = vals[i];
    else
      p.ef_search = vals[i];
    if (vindex_search(v, q, nq, K, &p, threads, s, l, &e)) die("search", &e);
    r = recall_at_k(gt, gt_k, l, nq);
    printf("sweep %s %s=%u recall=%.4f\n", tag, knob, vals[i], r);
    fflush(stdout);
    chosen = vals[i];
    if (r >= target) break;
  }

  double qps = time_single(v, q, nq, dim, &p, s, l, NULL);
  double r1 = recall_at_k(gt, gt_k, l, nq);
  printf("inproc %s %s=%u recall=%.4f qps=%.0f threads=1%s\n", tag, knob,
         chosen, r1, qps, r >= target ? "" : " target_missed=1");
  fflush(stdout);
  free(s);
  free(l);
  vindex_free(v);
}

int main(int argc, char **argv) {
  const char *specs[64];
  int nspecs = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--gt-only")) {
      gt_only = 1;
      continue;
    }
    if (!val) goto usage;
    i++;
    if (!strcmp(a, "--base"))
      base_path = val;
    else if (!strcmp(a, "--queries"))
      query_path = val;
    else if (!strcmp(a, "--gt"))
      gt_path = val;
    else if (!strcmp(a, "--k"))
      K = (uint32_t)atoi(val);
    else if (!strcmp(a, "--target"))
      target = atof(val);
    else if (!strcmp(a, "--threads"))
      threads = (unsigned)atoi(val);
    else if (!strcmp(a, "--seconds"))
      min_seconds = atof(val);
    else if (!strcmp(a, "--train"))
      train_n = strtoull(val, NULL, 10);
    else if (!strcmp(a, "--load"))
      load_path = val;
    else if (!strcmp(a, "--ef"))
      load_ef = (uint32_t)atoi(val);
    else if (!strcmp(a, "--nprobe"))
      load_nprobe = (uint32_t)atoi(val);
    else if (!strcmp(a, "--index") && nspecs < 64)
      specs[nspecs++] = val;
    else
      goto usage;
  }
  if (load_path) {
    if (!query_path || K == 0 || K > 1000) goto usage;
    vindex_global_init(1);
    uint64_t nq;
    uint32_t qdim;
    float *q = vecfile_read(query_path, "F32V", sizeof(float), &nq, &qdim);
    if (!q) {
      fprintf(stderr, "bench_vindex: cannot read %s\n", query_path);
      return 1;
    }
    bench_file(load_path, q, nq, qdim, load_ef, load_nprobe);
    free(q);
    return 0;
  }
  if (!base_path || !query_path || K == 0 || K > 1000) goto usage;
  if (nspecs == 0) {
    specs[nspecs++] = "HNSW32:efc=40";
    specs[nspecs++] = "HNSW32:efc=80";
    specs[nspecs++] = "IVF1024,Flat";
  }
  int passive = vindex_global_init(threads);
  if (!threads) threads = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);

  uint64_t n, nq;
  uint32_t dim, qdim;
  float *base = vecfile_read(base_path, "F32V", sizeof(float), &n, &dim);
  float *q = vecfile_read(query_path, "F32V", sizeof(float), &nq, &qdim);
  if (!base || !q || dim != qdim) {
    fprintf(stderr, "bench_vindex: cannot read %s and %s (same dim)\n",
            base_path, query_path);
    return 1;
  }
  printf("data base=%llu dim=%u queries=%llu k=%u target=%.3f\n",
         (unsigned long long)n, dim, (unsigned long long)nq, K, target);
  fflush(stdout);
  uint32_t gt_k;
  int64_t *gt = ground_truth(base, n, dim, q, nq, passive, &gt_k);
  if (!gt_only)
    for (int i = 0; i < nspecs; i++)
      bench_index(specs[i], base, n, dim, q, nq, gt, gt_k);
  free(gt);
  free(base);
  free(q);
  return 0;
usage:
  fprintf(stderr,
          "usage: bench_vindex --base B.f32 --queries Q.f32 [--k 10] "
          "[--target 0.95] [--gt GT.i64] [--gt-only] [--threads N] "
          "[--seconds S] [--train N] [--index SPEC[:efc=N]]...\n"
          "       bench_vindex --load DIR/CID.vindex --queries Q.f32 "
          "[--ef N | --nprobe N] [--k 10] [--seconds S]\n");
  return 2;
}
