/* ctxd_corpus.c - ctxd-corpus: the corpus reordering job of Corpus.Reorder
 * (kNN graph, dedup, greedy path, packing) as an MPI batch program over
 * sharded inputs, calling the same index/order.h steps as the daemon. */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <mpi.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "embed.h"
#include "order.h"
#include "vindex.h"

#define SHARDS_MAX 100000
#define BLOCK_DEFAULT 262144
#define CHUNK ((size_t)1 << 30) /* bytes per MPI message */

enum { P_READ, P_KNN, P_TRAVERSE, P_PACK, P_COUNT };
enum { TR_AUTO, TR_EXACT, TR_PARTITIONED };
#define GROUPS_MAX 4096
static const char *const pnames[P_COUNT] = {"read", "knn", "traverse", "pack"};

typedef struct job {
  int rank, nranks, quiet;
  order_opts o;
  const char *out;
  char **shards;
  int nshards;
  uint32_t dim;
  const char *embedder_spec;
  embedder *emb;
  uint64_t block;
  /* this rank's documents: global rows off .. off + n_local - 1 */
  uint64_t n, n_local, off, *offs; /* offs: nranks + 1 */
  order_jsonl **readers;
  uint64_t *reader_off; /* nreaders + 1: local first row of each reader */
  int nreaders;
  char **ids;     /* local ids (borrowed from readers or idbuf) */
  char *idbuf;
  float *vec;     /* n_local x dim, normalised */
  float *owned_vec;
  uint8_t *has_vec;
  order_input in; /* the local corpus */
  uint64_t fp;    /* checkpoint fingerprint */
  double t[P_COUNT];
  uint64_t sent[P_COUNT];
  int phase;
  int traverse;       /* TR_AUTO, TR_EXACT, TR_PARTITIONED */
  double gather_max;  /* bytes rank 0 may hold in auto mode */
  int partitioned;    /* chosen */
  uint64_t *seg_off;  /* partitioned: nranks + 1 path positions per rank */
  uint32_t groups;
  uint64_t dropped_edges; /* kNN entries between ranks' groups */
  double search_cpu;      /* CPU seconds of this rank's kNN searches */
  double last_progress;
} job;

static void die(job *j, const char *fmt, ...) {
  va_list ap;
  char msg[1024];
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  fprintf(stderr, "ctxd-corpus: rank %d of %d: error: %s; stopping the job\n",
          j->rank, j->nranks, msg);
  MPI_Abort(MPI_COMM_WORLD, 2);
  exit(2);
}

/* Every rank calls this with its result: when any failed, each returns the
 * message of the lowest failing rank (rank 0 prints it). */
static int agree(job *j, int rc, ctxd_error *e) {
  int me = rc ? j->rank : j->nranks, first;
  MPI_Allreduce(&me, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (first == j->nranks) return 0;
  char msg[sizeof e->msg + 64];
  if (j->rank == first) snprintf(msg, sizeof msg, "%s", e->msg);
  MPI_Bcast(msg, sizeof msg, MPI_CHAR, first, MPI_COMM_WORLD);
  ctxd_seterr(e, rc ? rc : CTXD_EINVAL, "rank %d: %s", first, msg);
  return rc ? rc : CTXD_EINVAL;
}

static double now(void) { return MPI_Wtime(); }

/* CPU time of the calling thread: the kNN search's own cost, whatever else
 * the machine runs (the searches run on this thread when --threads 1). */
static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void progress(void *arg, order_phase ph, uint64_t done,
                     uint64_t total) {
  job *j = arg;
  double t = now();
  if (j->quiet || j->rank != 0 || (t - j->last_progress < 1 && done < total))
    return;
  j->last_progress = t;
  fprintf(stderr, "ctxd-corpus: %s %llu/%llu\n", order_phase_name(ph),
          (unsigned long long)done, (unsigned long long)total);
}

static void say(job *j, const char *fmt, ...) {
  if (j->quiet || j->rank != 0) return;
  va_list ap;
  va_start(ap, fmt);
  fputs("ctxd-corpus: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
}

/* ---- messages of any size ---------------------------------------------------- */

static void send_big(job *j, const void *p, size_t n, int to, int tag) {
  const char *c = p;
  MPI_Send(&n, sizeof n, MPI_BYTE, to, tag, MPI_COMM_WORLD);
  for (size_t a = 0; a < n; a += CHUNK)
    MPI_Send(c + a, (int)(n - a < CHUNK ? n - a : CHUNK), MPI_BYTE, to, tag,
             MPI_COMM_WORLD);
  j->sent[j->phase] += n + sizeof n;
}

/* Receive into *p (malloc'd when *p is NULL, else it must hold cap). */
static size_t recv_big(job *j, void **p, size_t cap, int from, int tag) {
  size_t n;
  MPI_Recv(&n, sizeof n, MPI_BYTE, from, tag, MPI_COMM_WORLD,
           MPI_STATUS_IGNORE);
  if (!*p) {
    if (!(*p = malloc(n ? n : 1))) die(j, "out of memory for %zu bytes", n);
  } else if (n > cap) {
    die(j, "message of %zu bytes from rank %d, room for %zu", n, from, cap);
  }
  for (size_t a = 0; a < n; a += CHUNK)
    MPI_Recv((char *)*p + a, (int)(n - a < CHUNK ? n - a : CHUNK), MPI_BYTE,
             from, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  return n;
}

/* Rank 0 gets every rank's bytes in rank order into *all (malloc'd). */
static void gather_big(job *j, const void *p, size_t n, void **all,
                       size_t *total) {
  if (j->rank != 0) {
    send_big(j, p, n, 0, 11);
    return;
  }
  size_t *sz = malloc(j->nranks * sizeof *sz);
  void **parts = calloc(j->nranks, sizeof *parts);
  if (!sz || !parts) die(j, "out of memory");
  size_t sum = n;
  for (int r = 1; r < j->nranks; r++) {
    sz[r] = recv_big(j, &parts[r], 0, r, 11);
    sum += sz[r];
  }
  char *b = malloc(sum ? sum : 1);
  if (!b) die(j, "out of memory gathering %zu bytes", sum);
  if (n) memcpy(b, p, n);
  for (int r = 1; r < j->nranks; r++) {
    memcpy(b + n, parts[r], sz[r]);
    n += sz[r];
    free(parts[r]);
  }
  free(sz);
  free(parts);
  *all = b;
  *total = sum;
}

/* Every rank sends out[r] (len[r] bytes) to rank r and gets in[r]. */
static void exchange(job *j, char **out, size_t *len, char **in,
                     size_t *inlen) {
  for (int s = 0; s < j->nranks; s++) {
    int to = (j->rank + s) % j->nranks,
        from = (j->rank - s + j->nranks) % j->nranks;
    if (s == 0) {
      in[to] = out[to];
      inlen[to] = len[to];
      out[to] = NULL;
      continue;
    }
    size_t n = len[to], m;
    MPI_Sendrecv(&n, sizeof n, MPI_BYTE, to, 21, &m, sizeof m, MPI_BYTE, from,
                 21, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (!(in[from] = malloc(m ? m : 1))) die(j, "out of memory");
    inlen[from] = m;
    for (size_t a = 0; a < n || a < m; a += CHUNK) {
      int sn = a < n ? (int)(n - a < CHUNK ? n - a : CHUNK) : 0;
      int rn = a < m ? (int)(m - a < CHUNK ? m - a : CHUNK) : 0;
      MPI_Sendrecv(out[to] + (a < n ? a : 0), sn, MPI_BYTE, to, 22,
                   in[from] + (a < m ? a : 0), rn, MPI_BYTE, from, 22,
                   MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    }
    j->sent[j->phase] += n + sizeof n;
  }
}

/* The buffers of one exchange: out[r]/len[r]/cap[r] to rank r, in[r] and
 * inlen[r] from it. */
typedef struct xbufs {
  char **out, **in;
  size_t *len, *cap, *inlen;
} xbufs;

static void xb_init(job *j, xbufs *b) {
  int N = j->nranks;
  b->out = calloc(N, sizeof *b->out);
  b->in = calloc(N, sizeof *b->in);
  b->len = calloc(N, sizeof *b->len);
  b->cap = calloc(N, sizeof *b->cap);
  b->inlen = calloc(N, sizeof *b->inlen);
  if (!b->out || !b->in || !b->len || !b->cap || !b->inlen)
    die(j, "out of memory");
}

static void xb_free(job *j, xbufs *b) {
  for (int r = 0; r < j->nranks; r++) {
    if (b->out) free(b->out[r]);
    if (b->in) free(b->in[r]);
  }
  free(b->out);
  free(b->in);
  free(b->len);
  free(b->cap);
  free(b->inlen);
  memset(b, 0, sizeof *b);
}

/* ---- input -------------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static int ends_with(const char *s, const char *x) {
  size_t a = strlen(s), b = strlen(x);
  return a >= b && strcmp(s + a - b, x) == 0;
}

static int text_of(void *arg, uint64_t i, const char **text, size_t *len,
                   ctxd_error *e) {
  job *j = arg;
  int r = 0;
  while (r + 1 < j->nreaders && j->reader_off[r + 1] <= i) r++;
  if (!j->readers[r]) { /* a raw vector shard: no texts */
    *text = NULL;
    *len = 0;
    return 0;
  }
  order_input in;
  order_jsonl_input(j->readers[r], &in);
  return in.get_text(in.text_arg, i - j->reader_off[r], text, len, e);
}

/* A raw shard: NAME.f32 (rows of dim float32) and NAME.ids (one id a line,
 * as many as rows). */
static int read_raw(job *j, const char *path, float **vec, uint64_t *n,
                    char **idbuf, size_t *idlen, ctxd_error *e) {
  char *idp = NULL;
  FILE *f = NULL;
  int rc = 0;
  struct stat st;
  *vec = NULL;
  if (!j->dim)
    return ctxd_seterr(e, CTXD_EINVAL, "shard %s: raw vectors need --dim",
                       path);
  if (stat(path, &st) != 0)
    return ctxd_seterr(e, CTXD_ENOTFOUND, "shard %s: %s", path,
                       strerror(errno));
  uint64_t row = (uint64_t)j->dim * sizeof(float);
  if ((uint64_t)st.st_size % row)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "shard %s: %lld bytes is not a whole number of "
                       "%u-dimension float32 vectors",
                       path, (long long)st.st_size, j->dim);
  *n = (uint64_t)st.st_size / row;
  if (!(*vec = malloc(*n * row + 1))) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "shard %s: out of memory", path);
    goto out;
  }
  if (!(f = fopen(path, "rb")) || fread(*vec, row, *n, f) != *n) {
    rc = ctxd_seterr(e, CTXD_EIO, "shard %s: cannot read: %s", path,
                     strerror(errno));
    goto out;
  }
  fclose(f);
  f = NULL;
  size_t pl = strlen(path);
  if (!(idp = malloc(pl + 1))) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto out;
  }
  memcpy(idp, path, pl - 4);
  strcpy(idp + pl - 4, ".ids");
  if (!(f = fopen(idp, "rb"))) {
    rc = ctxd_seterr(e, CTXD_ENOTFOUND, "shard %s: its ids %s: %s", path, idp,
                     strerror(errno));
    goto out;
  }
  char *line = NULL;
  size_t cap = 0, len = *idlen;
  ssize_t got;
  uint64_t lines = 0;
  while ((got = getline(&line, &cap, f)) >= 0) {
    if (got && line[got - 1] == '\n') line[--got] = 0;
    lines++;
    if (got == 0 || got > ORDER_ID_MAX) {
      rc = ctxd_seterr(e, CTXD_EINVAL, "%s: line %llu: id must be 1..%d bytes",
                       idp, (unsigned long long)lines, ORDER_ID_MAX);
      break;
    }
    char *nb = realloc(*idbuf, len + (size_t)got + 1);
    if (!nb) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for ids");
      break;
    }
    *idbuf = nb;
    memcpy(nb + len, line, (size_t)got + 1);
    len += (size_t)got + 1;
  }
  free(line);
  if (!rc && lines != *n)
    rc = ctxd_seterr(e, CTXD_EINVAL, "shard %s: %llu vectors but %s has %llu ids",
                     path, (unsigned long long)*n, idp,
                     (unsigned long long)lines);
  *idlen = len;
out:
  if (f) fclose(f);
  free(idp);
  if (rc) {
    free(*vec);
    *vec = NULL;
  }
  return rc;
}

/* Read this rank's shards (a contiguous run of the list, so that global
 * document numbers follow the list's order whatever the rank count). */
static int read_local(job *j, ctxd_error *e) {
  int s0 = (int)((int64_t)j->rank * j->nshards / j->nranks);
  int s1 = (int)((int64_t)(j->rank + 1) * j->nshards / j->nranks);
  int rc = 0;
  size_t idlen = 0;
  float **raw = NULL;
  uint64_t *rawn = NULL;
  j->nreaders = s1 - s0;
  j->readers = calloc(j->nreaders + 1, sizeof *j->readers);
  j->reader_off = calloc(j->nreaders + 2, sizeof *j->reader_off);
  raw = calloc(j->nreaders + 1, sizeof *raw);
  rawn = calloc(j->nreaders + 1, sizeof *rawn);
  if (!j->readers || !j->reader_off || !raw || !rawn)
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  for (int s = s0; s < s1; s++) {
    int r = s - s0;
    const char *p = j->shards[s];
    if (ends_with(p, ".f32")) {
      if ((rc = read_raw(j, p, &raw[r], &rawn[r], &j->idbuf, &idlen, e)))
        goto out;
      j->reader_off[r + 1] = j->reader_off[r] + rawn[r];
      continue;
    }
    if (!ends_with(p, ".jsonl")) {
      rc = ctxd_seterr(e, CTXD_EINVAL,
                       "shard %s: not .jsonl (ids, texts, vectors) or .f32 "
                       "(raw vectors with a .ids file)",
                       p);
      goto out;
    }
    order_read_opts ro = {0};
    ro.dim = j->dim;
    ro.cancel = NULL;
    if ((rc = order_read_jsonl(p, &ro, &j->readers[r], e))) {
      ctxd_error e2 = *e;
      ctxd_seterr(e, rc, "shard %s: %s", p, e2.msg);
      goto out;
    }
    order_input in;
    order_jsonl_input(j->readers[r], &in);
    if (in.n && in.vectors && !j->dim) j->dim = in.dim;
    if (in.n && in.vectors && in.dim != j->dim) {
      rc = ctxd_seterr(e, CTXD_EINVAL, "shard %s: vectors of %u, expected %u",
                       p, in.dim, j->dim);
      goto out;
    }
    j->reader_off[r + 1] = j->reader_off[r] + in.n;
  }
  j->n_local = j->reader_off[j->nreaders];
  if (j->n_local > ORDER_DOCS_MAX) {
    rc = ctxd_seterr(e, CTXD_ELIMIT, "too many documents on one rank");
    goto out;
  }
  j->ids = malloc((j->n_local ? j->n_local : 1) * sizeof *j->ids);
  j->has_vec = calloc(j->n_local ? j->n_local : 1, 1);
  if (!j->ids || !j->has_vec) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto out;
  }
  if (j->dim && !(j->vec = calloc(j->n_local * j->dim + 1, sizeof *j->vec))) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for vectors");
    goto out;
  }
  size_t ip = 0;
  for (int r = 0; r < j->nreaders; r++) {
    uint64_t a = j->reader_off[r];
    if (!j->readers[r]) {
      memcpy(j->vec + a * j->dim, raw[r], rawn[r] * j->dim * sizeof(float));
      for (uint64_t i = 0; i < rawn[r]; i++) {
        j->ids[a + i] = j->idbuf + ip;
        ip += strlen(j->idbuf + ip) + 1;
        j->has_vec[a + i] = 1;
      }
      continue;
    }
    order_input in;
    order_jsonl_input(j->readers[r], &in);
    for (uint64_t i = 0; i < in.n; i++) {
      j->ids[a + i] = (char *)in.ids[i];
      int hv = in.vectors && (!in.has_vector || in.has_vector[i]);
      j->has_vec[a + i] = (uint8_t)hv;
      if (hv)
        memcpy(j->vec + (a + i) * j->dim, in.vectors + i * in.dim,
               j->dim * sizeof(float));
    }
  }
out:
  for (int r = 0; r < j->nreaders; r++) free(raw[r]);
  free(raw);
  free(rawn);
  return rc;
}

/* ---- checkpoints ----------------------------------------------------------------- */

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *c = p;
  for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 0x100000001B3ull;
  return h;
}

static char *ckpt_path(job *j, const char *name) {
  char *p = malloc(strlen(j->out) + strlen(name) + 16);
  if (!p) die(j, "out of memory");
  sprintf(p, "%s/ckpt/%s", j->out, name);
  return p;
}

static uint64_t fingerprint(job *j) {
  uint64_t h = 0xcbf29ce484222325ull;
  const order_opts *o = &j->o;
  uint64_t v[] = {o->k,         o->exact_max, o->nlist, o->nprobe,
                  o->nprobe_max, o->seed,    (uint64_t)j->nranks, j->dim};
  h = fnv(h, v, sizeof v);
  h = fnv(h, &o->recall, sizeof o->recall);
  h = fnv(h, &o->dup_cosine, sizeof o->dup_cosine);
  for (int s = 0; s < j->nshards; s++) {
    struct stat st;
    memset(&st, 0, sizeof st);
    stat(j->shards[s], &st);
    uint64_t f[2] = {(uint64_t)st.st_size, (uint64_t)st.st_mtime};
    h = fnv(h, j->shards[s], strlen(j->shards[s]) + 1);
    h = fnv(h, f, sizeof f);
  }
  if (j->embedder_spec) h = fnv(h, j->embedder_spec, strlen(j->embedder_spec));
  return h;
}

/* path.ckpt (rank 0): the path and the duplicates, with the figures the
 * summary needs from the phases before. */
typedef struct path_hdr {
  char magic[8];
  uint64_t fp, n, m, jumps, edges, dups;
  uint32_t k, nprobe;
  float recall;
  char method[64];
  double t_knn, t_dedup, t_traverse;
} path_hdr;

static int path_save(job *j, const path_hdr *h, const order_path *p,
                     const order_dups *d, ctxd_error *e) {
  char *path = ckpt_path(j, "path.ckpt"), *tmp = ckpt_path(j, "path.ckpt.tmp");
  FILE *f = fopen(tmp, "wb");
  int ok = f != NULL;
  uint64_t sum = 0xcbf29ce484222325ull;
#define W(ptr, bytes)                                          \
  do {                                                         \
    ok = ok && fwrite((ptr), 1, (bytes), f) == (size_t)(bytes); \
    sum = fnv(sum, (ptr), (bytes));                            \
  } while (0)
  if (ok) {
    W(h, sizeof *h);
    W(p->doc, h->m * sizeof *p->doc);
    W(p->sim, h->m * sizeof *p->sim);
    W(p->jump, h->m);
    W(d->of, h->n * sizeof *d->of);
    W(d->sim, h->n * sizeof *d->sim);
    ok = ok && fwrite(&sum, sizeof sum, 1, f) == 1;
  }
#undef W
  ok = f && fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
  if (f) fclose(f);
  ok = ok && rename(tmp, path) == 0;
  int rc = ok ? 0 : ctxd_seterr(e, CTXD_EIO, "cannot write %s", path);
  if (!ok) unlink(tmp);
  free(path);
  free(tmp);
  return rc;
}

/* Load path.ckpt when it is there and for this job: 1 loaded, 0 not. */
static int path_load(job *j, path_hdr *h, order_path **pp, order_dups **dp) {
  char *path = ckpt_path(j, "path.ckpt");
  FILE *f = fopen(path, "rb");
  free(path);
  order_path *p = calloc(1, sizeof *p);
  order_dups *d = calloc(1, sizeof *d);
  int ok = f && p && d && fread(h, sizeof *h, 1, f) == 1 &&
           memcmp(h->magic, "CTXDPTH1", 8) == 0 && h->fp == j->fp &&
           h->n == j->n && h->m <= h->n;
  uint64_t sum = fnv(0xcbf29ce484222325ull, h, sizeof *h), want;
  if (ok) {
    p->n = h->m;
    p->jumps = h->jumps;
    d->n = h->n;
    d->count = h->dups;
    p->doc = malloc(h->m * 4 + 1);
    p->sim = malloc(h->m * 4 + 1);
    p->jump = malloc(h->m + 1);
    d->of = malloc(h->n * 4 + 1);
    d->sim = malloc(h->n * 4 + 1);
    d->jaccard = malloc(h->n * 4 + 1);
    ok = p->doc && p->sim && p->jump && d->of && d->sim && d->jaccard;
  }
#define R(ptr, bytes)                                              \
  do {                                                             \
    ok = ok && fread((ptr), 1, (bytes), f) == (size_t)(bytes);     \
    if (ok) sum = fnv(sum, (ptr), (bytes));                        \
  } while (0)
  R(p->doc, h->m * 4);
  R(p->sim, h->m * 4);
  R(p->jump, h->m);
  R(d->of, h->n * 4);
  R(d->sim, h->n * 4);
#undef R
  ok = ok && fread(&want, sizeof want, 1, f) == 1 && want == sum;
  for (uint64_t i = 0; ok && i < h->m; i++) ok = p->doc[i] < h->n;
  for (uint64_t i = 0; ok && i < h->n; i++) {
    d->jaccard[i] = -1;
    ok = d->of[i] == ORDER_NONE || d->of[i] < h->n;
  }
  if (f) fclose(f);
  if (!ok) {
    order_path_free(p);
    order_dups_free(d);
    return 0;
  }
  *pp = p;
  *dp = d;
  return 1;
}

/* ---- kNN across ranks ------------------------------------------------------------- */

/* Rows `rows` (global, sorted) of the corpus, assembled on every rank
 * (each row comes from its owner; a sum over ranks adds zeros elsewhere). */
static int rows_everywhere(job *j, const uint32_t *rows, uint64_t m,
                           float **out, ctxd_error *e) {
  float *mine = calloc(m * j->dim + 1, sizeof *mine);
  float *all = malloc((m * j->dim + 1) * sizeof *all);
  if (!mine || !all) {
    free(mine);
    free(all);
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for a sample");
  }
  for (uint64_t i = 0; i < m; i++)
    if (rows[i] >= j->off && rows[i] < j->off + j->n_local)
      memcpy(mine + i * j->dim, j->vec + (rows[i] - j->off) * j->dim,
             j->dim * sizeof *mine);
  for (uint64_t a = 0; a < m * j->dim; a += CHUNK / 4) {
    uint64_t c = m * j->dim - a < CHUNK / 4 ? m * j->dim - a : CHUNK / 4;
    MPI_Allreduce(mine + a, all + a, (int)c, MPI_FLOAT, MPI_SUM,
                  MPI_COMM_WORLD);
  }
  j->sent[j->phase] += m * j->dim * sizeof(float);
  free(mine);
  *out = all;
  return 0;
}

/* The coarse quantizer (trained on rank 0 over a seeded sample of the whole
 * corpus, broadcast) and nprobe (from exact neighbours of sample queries
 * over every shard, merged on rank 0): the same figures for any rank
 * count. */
static int knn_index(job *j, uint32_t k, order_knn_index **xp,
                     ctxd_error *e) {
  uint32_t nlist = order_knn_nlist(j->n, &j->o), *pick = NULL, np = 0;
  float *sx = NULL, *cen = NULL, *sim = NULL, rec = NAN;
  uint32_t *nbr = NULL, *lists = NULL;
  int64_t *qid = NULL;
  int rc = 0;
  if (!nlist) return order_knn_shard(j->vec, j->n_local, j->dim, j->off, NULL,
                                     0, &j->o, xp, e);
  uint64_t s = order_kmeans_sample(j->n, nlist);
  if ((rc = order_sample_rows(j->n, s, j->o.seed, &pick, e)) ||
      (rc = rows_everywhere(j, pick, s, &sx, e)))
    goto out;
  if (j->rank == 0) rc = order_kmeans(sx, s, j->dim, nlist, &j->o, &cen, e);
  if ((rc = agree(j, rc, e))) goto out;
  if (j->rank != 0 && !(cen = malloc((size_t)nlist * j->dim * sizeof *cen)))
    die(j, "out of memory");
  MPI_Bcast(cen, (int)(nlist * j->dim), MPI_FLOAT, 0, MPI_COMM_WORLD);
  j->sent[j->phase] += (uint64_t)nlist * j->dim * 4 * (j->nranks - 1);
  rc = order_knn_shard(j->vec, j->n_local, j->dim, j->off, cen, nlist, &j->o,
                       xp, e);
  if ((rc = agree(j, rc, e))) goto out;
  if (j->o.nprobe) {
    rc = order_knn_index_set_nprobe(*xp, j->o.nprobe, NAN, &j->o, e);
    goto out;
  }
  uint64_t q = j->n < ORDER_RECALL_QUERIES ? j->n : ORDER_RECALL_QUERIES;
  free(pick);
  free(sx);
  sx = NULL;
  if ((rc = order_sample_rows(j->n, q, j->o.seed + 1, &pick, e)) ||
      (rc = rows_everywhere(j, pick, q, &sx, e)))
    goto out;
  qid = malloc(q * sizeof *qid);
  nbr = malloc(q * k * sizeof *nbr);
  sim = calloc(q * k, sizeof *sim);
  lists = malloc(q * k * sizeof *lists);
  if (!qid || !nbr || !sim || !lists) die(j, "out of memory");
  for (uint64_t i = 0; i < q; i++) qid[i] = pick[i];
  memset(nbr, 0xff, q * k * sizeof *nbr);
  rc = order_knn_exact(*xp, sx, q, qid, k, nbr, sim, lists, &j->o, e);
  if ((rc = agree(j, rc, e))) goto out;
  size_t rb = q * k * 12, tot;
  char *mine = malloc(rb), *all = NULL;
  if (!mine) die(j, "out of memory");
  memcpy(mine, nbr, q * k * 4);
  memcpy(mine + q * k * 4, sim, q * k * 4);
  memcpy(mine + q * k * 8, lists, q * k * 4);
  gather_big(j, mine, rb, (void **)&all, &tot);
  free(mine);
  if (j->rank == 0) {
    for (int r = 1; r < j->nranks; r++) {
      const char *b = all + (size_t)r * rb;
      for (uint64_t i = 0; i < q; i++)
        order_knn_merge_rows(nbr + i * k, sim + i * k, lists + i * k,
                             (const uint32_t *)b + i * k,
                             (const float *)(b + q * k * 4) + i * k,
                             (const uint32_t *)(b + q * k * 8) + i * k, k);
    }
    free(all);
    rc = order_nprobe_choose(cen, nlist, j->dim, sx, q, lists, k, &j->o, &np,
                             &rec, e);
  }
  if ((rc = agree(j, rc, e))) goto out;
  MPI_Bcast(&np, 1, MPI_UINT32_T, 0, MPI_COMM_WORLD);
  MPI_Bcast(&rec, 1, MPI_FLOAT, 0, MPI_COMM_WORLD);
  rc = order_knn_index_set_nprobe(*xp, np, rec, &j->o, e);
out:
  free(pick);
  free(sx);
  free(cen);
  free(qid);
  free(nbr);
  free(sim);
  free(lists);
  return agree(j, rc, e);
}

/* Every rank's query blocks travel the ring: searched against each shard in
 * turn (results merged on the way), then home. */
static int knn_ring(job *j, order_knn_index *x, order_knn *g, ctxd_error *e) {
  uint32_t k = g->k, qt = 0, d = j->dim;
  const uint32_t *probes = order_knn_index_probes(x, &qt);
  uint32_t np = 0;
  order_knn_index_method(x, &np, NULL);
  if (!probes) np = 0;
  uint64_t B = j->block, rounds = (j->n_local + B - 1) / B, R;
  MPI_Allreduce(&rounds, &R, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  size_t per = 8 + (size_t)d * 4 + (size_t)np * 4 + (size_t)k * 8;
  size_t cap = 8 + B * per;
  char *hold = malloc(cap), *next = malloc(cap);
  if (!hold || !next) die(j, "out of memory for a query block");
  int to = (j->rank + 1) % j->nranks,
      from = (j->rank - 1 + j->nranks) % j->nranks;
  for (uint64_t t = 0; t < R; t++) {
    uint64_t a = t * B < j->n_local ? t * B : j->n_local;
    uint64_t nq = j->n_local - a < B ? j->n_local - a : B;
    /* block layout: nq | qid[nq] | qv[nq*d] | probes[nq*np] | nbr | sim */
    memcpy(hold, &nq, 8);
    int64_t *qid = (int64_t *)(hold + 8);
    for (uint64_t i = 0; i < nq; i++) qid[i] = (int64_t)(j->off + a + i);
    float *qv = (float *)(qid + nq);
    memcpy(qv, j->vec + a * d, nq * d * sizeof *qv);
    uint32_t *qp = (uint32_t *)(qv + nq * d);
    for (uint64_t i = 0; np && i < nq; i++)
      memcpy(qp + i * np, probes + (a + i) * qt, np * sizeof *qp);
    uint32_t *nb = qp + nq * np;
    float *sm = (float *)(nb + nq * k);
    memset(nb, 0xff, nq * k * sizeof *nb);
    memset(sm, 0, nq * k * sizeof *sm);
    for (int s = 0; s < j->nranks; s++) {
      uint64_t hq;
      memcpy(&hq, hold, 8);
      int64_t *hid = (int64_t *)(hold + 8);
      float *hv = (float *)(hid + hq);
      uint32_t *hp = (uint32_t *)(hv + hq * d);
      uint32_t *hn = hp + hq * np;
      float *hs = (float *)(hn + hq * k);
      double c0 = cpu_now();
      int rc = order_knn_search_block(x, hv, hq, hid, hp, np, k, hn, hs,
                                      &j->o, e);
      j->search_cpu += cpu_now() - c0;
      if (rc) die(j, "kNN search: %s", e->msg);
      if (j->nranks == 1) break;
      size_t bytes = 8 + hq * per;
      MPI_Status st;
      MPI_Sendrecv(hold, (int)bytes, MPI_BYTE, to, 31, next, (int)cap,
                   MPI_BYTE, from, 31, MPI_COMM_WORLD, &st);
      j->sent[j->phase] += bytes;
      char *sw = hold;
      hold = next;
      next = sw;
    }
    /* nranks searches and sends later the block is home again */
    uint64_t hq;
    memcpy(&hq, hold, 8);
    if (hq != nq) die(j, "query block of %llu came home as %llu",
                      (unsigned long long)nq, (unsigned long long)hq);
    int64_t *hid = (int64_t *)(hold + 8);
    uint32_t *hn = (uint32_t *)((float *)(hid + hq) + hq * d) + hq * np;
    float *hs = (float *)(hn + hq * k);
    memcpy(g->nbr + a * k, hn, nq * k * sizeof *hn);
    memcpy(g->sim + a * k, hs, nq * k * sizeof *hs);
    progress(j, ORDER_PHASE_KNN, t + 1, R);
  }
  free(hold);
  free(next);
  return 0;
}

/* Unpack the (gid | list | vector) records every rank sent, in rank order
 * (so ascending gids when each sender's are), freeing the buffers. */
static uint64_t take_records(job *j, char **in, size_t *inlen, size_t *len,
                             size_t rs, uint32_t **g, uint32_t **l,
                             float **v) {
  uint32_t d = j->dim;
  uint64_t n = 0, m = 0;
  for (int r = 0; r < j->nranks; r++) n += inlen[r] / rs;
  *g = malloc((n + 1) * 4);
  *l = malloc((n + 1) * 4);
  *v = malloc((n * d + 1) * sizeof **v);
  if (!*g || !*l || !*v)
    die(j, "out of memory for %llu records", (unsigned long long)n);
  for (int r = 0; r < j->nranks; r++) {
    for (size_t a = 0; a < inlen[r]; a += rs, m++) {
      memcpy(*g + m, in[r] + a, 4);
      memcpy(*l + m, in[r] + a + 4, 4);
      memcpy(*v + m * d, in[r] + a + 8, (size_t)d * 4);
    }
    free(in[r]);
    in[r] = NULL;
    len[r] = 0;
  }
  return n;
}

/* Inverted file across ranks: list l lives on rank l % N. Every document
 * goes, as a member, to the rank of its nearest list and, as a query, to
 * the ranks of its nprobe nearest lists; each rank searches its lists
 * once (as one machine does), and the results go back to the queries'
 * owners, merged there. Work per list is done once whatever the rank
 * count (the ring would meet every list N times per block). */
static int knn_route(job *j, order_knn_index *x, order_knn *g,
                     ctxd_error *e) {
  int N = j->nranks, rc = 0;
  uint32_t k = g->k, d = j->dim, t, np = 0;
  uint32_t nlist = order_knn_nlist(j->n, &j->o);
  const uint32_t *probes = order_knn_index_probes(x, &t);
  order_knn_index_method(x, &np, NULL);
  xbufs xb;
  xb_init(j, &xb);
  char **out = xb.out, **in = xb.in;
  size_t *len = xb.len, *cap = xb.cap, *inlen = xb.inlen;
  uint32_t *mg = NULL, *ml = NULL, *qg = NULL, *ql = NULL, *nbr = NULL;
  float *mv = NULL, *qv = NULL, *sim = NULL;
  int64_t *qid = NULL;
  order_knn_index *mx = NULL;
  size_t rs = 8 + (size_t)d * 4; /* gid | list | vector */
#define PUT(r, gid, l, vec)                                          \
  do {                                                               \
    if (len[r] + rs > cap[r]) {                                      \
      cap[r] = cap[r] ? cap[r] * 2 : 1 << 16;                        \
      if (!(out[r] = realloc(out[r], cap[r]))) die(j, "out of memory"); \
    }                                                                \
    uint32_t h_[2] = {(gid), (l)};                                   \
    memcpy(out[r] + len[r], h_, 8);                                  \
    memcpy(out[r] + len[r] + 8, (vec), (size_t)d * 4);               \
    len[r] += rs;                                                    \
  } while (0)
  /* the members */
  for (uint64_t i = 0; i < j->n_local; i++) {
    uint32_t l = probes[i * t];
    PUT((int)(l % (uint32_t)N), (uint32_t)(j->off + i), l, j->vec + i * d);
  }
  exchange(j, out, len, in, inlen);
  cap[j->rank] = 0; /* exchange moved this rank's own buffer to in[] */
  uint64_t M = take_records(j, in, inlen, len, rs, &mg, &ml, &mv);
  /* the queries: one record per probed list */
  for (uint64_t i = 0; i < j->n_local; i++)
    for (uint32_t p = 0; p < np; p++) {
      uint32_t l = probes[i * t + p];
      PUT((int)(l % (uint32_t)N), (uint32_t)(j->off + i), l, j->vec + i * d);
    }
#undef PUT
  exchange(j, out, len, in, inlen);
  cap[j->rank] = 0; /* exchange moved this rank's own buffer to in[] */
  uint64_t Q = take_records(j, in, inlen, len, rs, &qg, &ql, &qv);
  qid = malloc((Q + 1) * sizeof *qid);
  nbr = malloc((Q * k + 1) * sizeof *nbr);
  sim = calloc(Q * k + 1, sizeof *sim);
  if (!qid || !nbr || !sim)
    die(j, "out of memory for %llu queries", (unsigned long long)Q);
  for (uint64_t q = 0; q < Q; q++) { /* the query's own row, if a member */
    uint32_t *hit = bsearch(&qg[q], mg, M, 4, cmp_u32);
    qid[q] = hit ? hit - mg : -1;
  }
  memset(nbr, 0xff, Q * k * sizeof *nbr);
  double c0 = cpu_now();
  if ((rc = order_knn_lists(mv, M, d, ml, nlist, &mx, e)) == 0)
    rc = order_knn_search_block(mx, qv, Q, qid, ql, 1, k, nbr, sim, &j->o, e);
  j->search_cpu += cpu_now() - c0;
  if (rc) die(j, "kNN search: %s", e->msg);
  free(qv);
  qv = NULL;
  /* the results home: gid | k neighbours | k similarities */
  size_t res = 4 + (size_t)k * 8;
  for (uint64_t q = 0; q < Q; q++) {
    int r = 0;
    while (r + 1 < N && j->offs[r + 1] <= qg[q]) r++;
    if (len[r] + res > cap[r]) {
      while (len[r] + res > cap[r]) cap[r] = cap[r] ? cap[r] * 2 : 1 << 16;
      if (!(out[r] = realloc(out[r], cap[r]))) die(j, "out of memory");
    }
    char *w = out[r] + len[r];
    for (uint32_t a = 0; a < k; a++)
      if (nbr[q * k + a] != ORDER_NONE) nbr[q * k + a] = mg[nbr[q * k + a]];
    memcpy(w, &qg[q], 4);
    memcpy(w + 4, nbr + q * k, (size_t)k * 4);
    memcpy(w + 4 + (size_t)k * 4, sim + q * k, (size_t)k * 4);
    len[r] += res;
  }
  exchange(j, out, len, in, inlen);
  cap[j->rank] = 0; /* exchange moved this rank's own buffer to in[] */
  for (uint64_t i = 0; i < j->n_local * k; i++) {
    g->nbr[i] = ORDER_NONE;
    g->sim[i] = 0;
  }
  for (int r = 0; r < N; r++)
    for (size_t a = 0; a < inlen[r]; a += res) {
      uint32_t gid, bn[ORDER_K_MAX];
      float bs[ORDER_K_MAX];
      memcpy(&gid, in[r] + a, 4);
      memcpy(bn, in[r] + a + 4, (size_t)k * 4);
      memcpy(bs, in[r] + a + 4 + (size_t)k * 4, (size_t)k * 4);
      if (gid < j->off || gid >= j->off + j->n_local)
        die(j, "a result for document %u reached the wrong rank", gid);
      uint64_t row = gid - j->off;
      order_knn_merge_rows(g->nbr + row * k, g->sim + row * k, NULL, bn, bs,
                           NULL, k);
    }
  progress(j, ORDER_PHASE_KNN, 1, 1);
  xb_free(j, &xb);
  free(mg);
  free(ml);
  free(mv);
  free(qg);
  free(ql);
  free(qv);
  free(qid);
  free(nbr);
  free(sim);
  order_knn_index_free(mx);
  return rc;
}

static int knn_phase(job *j, uint32_t k, order_knn **gp, char *method,
                     uint32_t *nprobe, float *recall, int *resumed,
                     ctxd_error *e) {
  order_knn_index *x = NULL;
  order_knn *g = NULL;
  char name[64];
  snprintf(name, sizeof name, "knn-%05d.ckpt", j->rank);
  char *path = ckpt_path(j, name);
  uint64_t fp = j->fp ^ ((uint64_t)j->rank * 0x9E3779B97F4A7C15ull);
  int have = order_knn_load_rows(path, j->off, j->n_local, j->n, k, fp, &g,
                                 NULL) == 0,
      all;
  MPI_Allreduce(&have, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  int rc = 0;
  if (all) {
    *resumed = 1;
    say(j, "knn: resumed from the checkpoints of every rank");
  } else {
    order_knn_free(g);
    g = NULL;
    *resumed = 0;
    rc = agree(j, order_knn_alloc(j->n_local, k, &g, e), e);
    if (!rc && j->n >= 2 && (rc = knn_index(j, k, &x, e)) == 0) {
      const char *m = order_knn_index_method(x, &g->nprobe, &g->recall);
      snprintf(g->method, sizeof g->method, "%s", m);
      say(j, "knn: %s over %d ranks", m, j->nranks);
      uint32_t t_;
      rc = order_knn_index_probes(x, &t_) ? knn_route(j, x, g, e)
                                          : knn_ring(j, x, g, e);
    }
    if (!rc && j->n < 2) snprintf(g->method, sizeof g->method, "Flat");
    if (!rc) rc = order_knn_save(g, path, fp, e);
  }
  order_knn_index_free(x);
  free(path);
  if ((rc = agree(j, rc, e))) {
    order_knn_free(g);
    return rc;
  }
  snprintf(method, 64, "%s", g->method);
  *nprobe = g->nprobe;
  *recall = g->recall;
  *gp = g;
  return 0;
}

/* ---- packing ---------------------------------------------------------------------- */

static uint64_t seg_start(uint64_t m, int nranks, int r) {
  return (uint64_t)((unsigned __int128)m * (unsigned)r / (unsigned)nranks);
}

typedef struct seg {
  uint64_t pos0, n;
  order_input in;
  order_path p;
  char **ids, **texts;
  size_t *lens;
  float *vec;
  char **bufs;
} seg;

static void seg_free(job *j, seg *s) {
  for (int r = 0; s->bufs && r < j->nranks; r++) free(s->bufs[r]);
  for (uint64_t q = 0; s->ids && q < s->n; q++) free(s->ids[q]);
  free(s->bufs);
  free(s->ids);
  free(s->texts);
  free(s->lens);
  free(s->vec);
  free(s->p.doc);
  free(s->p.sim);
  free(s->p.jump);
}

/* Move each document on the path (id, vector, text) from its owner to the
 * rank that packs its segment; pos_of: this rank's rows' path positions
 * (ORDER_NONE: a duplicate). */
static int redistribute(job *j, const uint32_t *pos_of, uint64_t m, seg *s,
                        ctxd_error *e) {
  int N = j->nranks, rc = 0;
  xbufs xb;
  xb_init(j, &xb);
  char **out = xb.out, **in = xb.in;
  size_t *len = xb.len, *cap = xb.cap, *inlen = xb.inlen;
  for (uint64_t i = 0; i < j->n_local; i++) {
    if (pos_of[i] == ORDER_NONE) continue;
    uint64_t pos = pos_of[i];
    int r = (int)((unsigned __int128)pos * (unsigned)N / (m ? m : 1));
    while (r > 0 && seg_start(m, N, r) > pos) r--;
    while (r + 1 < N && seg_start(m, N, r + 1) <= pos) r++;
    const char *t = NULL;
    size_t tl = 0;
    if (j->o.mode == ORDER_MODE_ICLM &&
        (rc = text_of(j, i, &t, &tl, e)) != 0)
      break;
    uint32_t il = (uint32_t)strlen(j->ids[i]), tl32 = t ? (uint32_t)tl
                                                        : UINT32_MAX;
    size_t need = 16 + (size_t)j->dim * 4 + il + (t ? tl : 0);
    if (len[r] + need > cap[r]) {
      size_t c = cap[r] ? cap[r] : 1 << 16;
      while (c < len[r] + need) c *= 2;
      char *nb = realloc(out[r], c);
      if (!nb) die(j, "out of memory");
      out[r] = nb;
      cap[r] = c;
    }
    char *w = out[r] + len[r];
    memcpy(w, &pos, 8);
    memcpy(w + 8, &il, 4);
    memcpy(w + 12, &tl32, 4);
    memcpy(w + 16, j->vec + i * j->dim, (size_t)j->dim * 4);
    memcpy(w + 16 + (size_t)j->dim * 4, j->ids[i], il);
    if (t) memcpy(w + 16 + (size_t)j->dim * 4 + il, t, tl);
    len[r] += need;
  }
  if ((rc = agree(j, rc, e))) goto out;
  exchange(j, out, len, in, inlen);
  s->pos0 = seg_start(m, N, j->rank);
  s->n = seg_start(m, N, j->rank + 1) - s->pos0;
  uint64_t n = s->n;
  s->ids = calloc(n + 1, sizeof *s->ids);
  s->texts = calloc(n + 1, sizeof *s->texts);
  s->lens = calloc(n + 1, sizeof *s->lens);
  s->vec = malloc((n * j->dim + 1) * sizeof *s->vec);
  s->p.doc = malloc((n + 1) * sizeof *s->p.doc);
  if (!s->ids || !s->texts || !s->lens || !s->vec || !s->p.doc)
    die(j, "out of memory");
  uint64_t got = 0;
  for (int r = 0; r < N; r++) {
    for (size_t a = 0; a < inlen[r];) {
      uint64_t pos;
      uint32_t il, tl;
      char *w = in[r] + a;
      memcpy(&pos, w, 8);
      memcpy(&il, w + 8, 4);
      memcpy(&tl, w + 12, 4);
      if (pos < s->pos0 || pos >= s->pos0 + n)
        die(j, "a document for position %llu reached the wrong rank",
            (unsigned long long)pos);
      uint64_t q = pos - s->pos0;
      memcpy(s->vec + q * j->dim, w + 16, (size_t)j->dim * 4);
      char *idp = w + 16 + (size_t)j->dim * 4;
      /* ids become NUL-terminated in place: the record's first byte after
       * the id is overwritten only after the text was pointed at */
      s->texts[q] = tl == UINT32_MAX ? NULL : idp + il;
      s->lens[q] = tl == UINT32_MAX ? 0 : tl;
      s->ids[q] = malloc(il + 1);
      if (!s->ids[q]) die(j, "out of memory");
      memcpy(s->ids[q], idp, il);
      s->ids[q][il] = 0;
      a += 16 + (size_t)j->dim * 4 + il + (tl == UINT32_MAX ? 0 : tl);
      got++;
    }
  }
  if (got != n) die(j, "segment of %llu documents got %llu",
                    (unsigned long long)n, (unsigned long long)got);
  s->bufs = in;
  xb.in = NULL;
  for (uint64_t q = 0; q < n; q++) s->p.doc[q] = (uint32_t)q;
  s->p.n = n;
  s->in.n = n;
  s->in.dim = j->dim;
  s->in.ids = (const char *const *)s->ids;
  s->in.vectors = s->vec;
  s->in.texts = (const char *const *)s->texts;
  s->in.text_lens = s->lens;
out:
  xb_free(j, &xb);
  return rc;
}

/* A file of this rank, written to NAME.tmp and renamed at commit. */
static FILE *open_tmp(job *j, const char *name, char *tmp, size_t cap) {
  snprintf(tmp, cap, "%s/%s.tmp", j->out, name);
  FILE *f = fopen(tmp, "wb");
  if (!f) die(j, "cannot create %s: %s", tmp, strerror(errno));
  return f;
}

static void commit_tmp(job *j, FILE *f, const char *tmp) {
  char dst[4096];
  snprintf(dst, sizeof dst, "%.*s", (int)(strlen(tmp) - 4), tmp);
  if (fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0 ||
      rename(tmp, dst) != 0)
    die(j, "cannot write %s: %s", dst, strerror(errno));
}

static void send_part(job *j, const order_wpart *w, int to) {
  size_t n = 40 + w->docs_len + w->text_len + (size_t)j->dim * 8;
  char *b = malloc(n);
  if (!b) die(j, "out of memory");
  uint64_t h[4] = {w->tokens, w->docs_len, w->text_len, w->m};
  memcpy(b, h, 32);
  memcpy(b + 32, &w->sq, 8);
  if (w->docs_len) memcpy(b + 40, w->docs, w->docs_len);
  if (w->text_len) memcpy(b + 40 + w->docs_len, w->text, w->text_len);
  char *S = b + 40 + w->docs_len + w->text_len; /* unaligned: memcpy */
  for (uint32_t d = 0; d < j->dim; d++) {
    double v = w->S ? w->S[d] : 0;
    memcpy(S + (size_t)d * 8, &v, 8);
  }
  send_big(j, b, n, to, 41);
  free(b);
}

static void recv_part(job *j, order_wpart *w, int from) {
  char *b = NULL;
  recv_big(j, (void **)&b, 0, from, 41);
  uint64_t h[4];
  memcpy(h, b, 32);
  memset(w, 0, sizeof *w);
  w->tokens = h[0];
  w->docs_len = h[1];
  w->text_len = h[2];
  w->m = h[3];
  memcpy(&w->sq, b + 32, 8);
  w->docs = malloc(w->docs_len + 1);
  w->text = malloc(w->text_len + 1);
  w->S = malloc(((size_t)j->dim + 1) * sizeof *w->S);
  if (!w->docs || !w->text || !w->S) die(j, "out of memory");
  memcpy(w->docs, b + 40, w->docs_len);
  memcpy(w->text, b + 40 + w->docs_len, w->text_len);
  memcpy(w->S, b + 40 + w->docs_len + w->text_len, (size_t)j->dim * 8);
  free(b);
}

/* Pack this rank's segment: token counts in parallel, the start state from
 * a dry run passed down the ranks, the windows in parallel, and each window
 * that spans segments completed by the rank where it began. */
static void pack_phase(job *j, seg *s, order_summary *sum, uint64_t **tok_all) {
  char name[64], tmpw[4096], tmpo[4096];
  order_pack_seg r = {0};
  ctxd_error e = {0};
  order_pack_state st = {0, 0, 0};
  int rank = j->rank, N = j->nranks;
  uint64_t *tokens = malloc((s->n + 1) * sizeof *tokens);
  if (!tokens) die(j, "out of memory");
  snprintf(name, sizeof name, "order-%05d.jsonl", rank);
  FILE *fo = open_tmp(j, name, tmpo, sizeof tmpo), *fw = NULL;
  int iclm = j->o.mode == ORDER_MODE_ICLM;
  if (iclm) {
    snprintf(name, sizeof name, "windows-%05d.jsonl", rank);
    fw = open_tmp(j, name, tmpw, sizeof tmpw);
    if (order_pack_tokens(&s->in, &s->p, &j->o, tokens, &e))
      die(j, "packing: %s", e.msg);
    if (rank > 0)
      MPI_Recv(&st, sizeof st, MPI_BYTE, rank - 1, 51, MPI_COMM_WORLD,
               MPI_STATUS_IGNORE);
    order_pack_seg dry;
    if (order_pack_segment(&s->in, &s->p, s->pos0, &j->o, &st, tokens, 1,
                           NULL, NULL, &dry, &e))
      die(j, "packing: %s", e.msg);
    if (rank + 1 < N) {
      MPI_Send(&dry.end, sizeof dry.end, MPI_BYTE, rank + 1, 51,
               MPI_COMM_WORLD);
      j->sent[j->phase] += sizeof dry.end;
    }
    order_pack_seg_free(&dry);
  }
  if (order_pack_segment(&s->in, &s->p, s->pos0, &j->o, &st, tokens, iclm, fw,
                         fo, &r, &e))
    die(j, "packing: %s", e.msg);
  if (iclm) {
    /* right to left: C = my head, plus the next rank's C when no window
     * closed here; my tail + the next rank's C is the window I began */
    order_wpart c = {0};
    if (rank + 1 < N) recv_part(j, &c, rank + 1);
    if (!r.head_only) {
      order_wpart fin = r.tail;
      memset(&r.tail, 0, sizeof r.tail);
      if (order_wpart_append(&fin, &c, j->dim, &e)) die(j, "%s", e.msg);
      if (r.end.open || fin.docs_len || fin.tokens) {
        order_wpart_write(fw, r.end.window, &fin);
        double w = order_wpart_similarity(&fin, j->dim);
        if (w == w) {
          r.sim_total += w;
          r.sim_windows++;
        }
      }
      order_wpart_free(&fin);
      order_wpart_free(&c);
      c = r.head;
      memset(&r.head, 0, sizeof r.head);
    } else {
      order_wpart h = r.head;
      memset(&r.head, 0, sizeof r.head);
      if (order_wpart_append(&h, &c, j->dim, &e)) die(j, "%s", e.msg);
      order_wpart_free(&c);
      c = h;
    }
    if (rank > 0) send_part(j, &c, rank - 1);
    order_wpart_free(&c);
    commit_tmp(j, fw, tmpw);
  }
  commit_tmp(j, fo, tmpo);
  /* totals */
  uint64_t win = r.end.window + r.end.open, wmax, toks;
  double simv[2] = {r.sim_total, (double)r.sim_windows}, simt[2];
  MPI_Allreduce(&win, &wmax, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
  MPI_Allreduce(&r.tokens, &toks, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  MPI_Allreduce(simv, simt, 2, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  if (iclm) {
    sum->windows = wmax;
    sum->tokens = toks;
    sum->window_similarity = simt[1] > 0 ? simt[0] / simt[1] : NAN;
    size_t tot;
    if (tok_all)
      gather_big(j, tokens, s->n * sizeof *tokens, (void **)tok_all, &tot);
  }
  order_pack_seg_free(&r);
  free(tokens);
}

/* ---- the job ------------------------------------------------------------------------ */

static void maybe_die_after(job *j, const char *phase) {
  const char *d = getenv("CTXD_CORPUS_DIE_AFTER");
  if (d && strcmp(d, phase) == 0 && j->rank == j->nranks - 1) {
    fprintf(stderr, "ctxd-corpus: rank %d: CTXD_CORPUS_DIE_AFTER=%s: killing "
            "myself\n", j->rank, phase);
    raise(SIGKILL);
  }
}

static void write_manifest(job *j, const order_summary *s, double *secs,
                           uint64_t *bytes, const double *cpu) {
  char tmp[4096];
  FILE *f = open_tmp(j, "manifest.json", tmp, sizeof tmp);
  fprintf(f, "{\"ranks\":%d,\"documents\":%llu,\"ordered\":%llu,"
          "\"windows\":%llu,\"mode\":\"%s\",\"shards\":[",
          j->nranks, (unsigned long long)s->documents,
          (unsigned long long)s->ordered, (unsigned long long)s->windows,
          order_mode_name(j->o.mode));
  for (int r = 0; r < j->nranks; r++) {
    uint64_t a = j->seg_off ? j->seg_off[r] : seg_start(s->ordered, j->nranks, r),
             b = j->seg_off ? j->seg_off[r + 1]
                            : seg_start(s->ordered, j->nranks, r + 1);
    fprintf(f, "%s{\"order\":\"order-%05d.jsonl\",", r ? "," : "", r);
    if (j->partitioned)
      fprintf(f, "\"duplicates\":\"duplicates-%05d.jsonl\",", r);
    if (j->o.mode == ORDER_MODE_ICLM)
      fprintf(f, "\"windows\":\"windows-%05d.jsonl\",", r);
    fprintf(f, "\"first_position\":%llu,\"positions\":%llu}",
            (unsigned long long)a, (unsigned long long)(b - a));
  }
  fputs("],", f);
  if (j->partitioned)
    fprintf(f, "\"traverse\":\"partitioned\",\"groups\":%u,"
            "\"knn_entries_dropped\":%llu,", j->groups,
            (unsigned long long)j->dropped_edges);
  else
    fprintf(f, "\"traverse\":\"exact\",\"duplicates\":\"%s\",",
            ORDER_FILE_DUPLICATES);
  fprintf(f, "\"summary\":\"%s\",\"mpi\":{", ORDER_FILE_SUMMARY);
  for (int p = 0; p < P_COUNT; p++)
    fprintf(f, "%s\"%s\":{\"seconds\":%.3f,\"bytes_sent\":%llu}", p ? "," : "",
            pnames[p], secs[p], (unsigned long long)bytes[p]);
  fprintf(f, ",\"knn_search_cpu_seconds\":{\"max\":%.3f,\"min\":%.3f,"
          "\"sum\":%.3f}", cpu[0], cpu[1], cpu[2]);
  fputs("}}\n", f);
  commit_tmp(j, f, tmp);
}

static void write_dups(job *j, const char *name, const order_dups *d,
                       char **ids) {
  char tmp[4096];
  FILE *f = open_tmp(j, name, tmp, sizeof tmp);
  for (uint64_t i = 0; i < d->n; i++) {
    if (d->of[i] == ORDER_NONE) continue;
    /* the format of order_pack's duplicates.jsonl (no Jaccard here) */
    fputs("{\"id\":", f);
    order_json_str(f, ids[i], strlen(ids[i]));
    fputs(",\"duplicate_of\":", f);
    order_json_str(f, ids[d->of[i]], strlen(ids[d->of[i]]));
    fputs(",\"similarity\":", f);
    order_json_num(f, d->sim[i]);
    fputs(",\"jaccard\":null}\n", f);
  }
  commit_tmp(j, f, tmp);
}

static const char usage[] =
    "usage: mpirun -np N ctxd-corpus --out DIR [OPTIONS] SHARD...\n"
    "\n"
    "The corpus reordering job of Corpus.Reorder (ctxctl reorder) over N MPI\n"
    "ranks: kNN graph, near-duplicate removal, greedy maximum-TSP path and\n"
    "packing into windows, with the same options and output lines.\n"
    "Shards (in the order of the corpus; rank r reads a contiguous run):\n"
    "  NAME.jsonl          {\"id\", \"text\", \"vector\"} lines (vector optional)\n"
    "  NAME.f32            raw float32 vectors (--dim), ids in NAME.ids, one\n"
    "                      a line (mode order only: no texts)\n"
    "  --input-list FILE   shard paths, one a line (before the others)\n"
    "Options:\n"
    "  --out DIR           output directory (created; shared by the ranks)\n"
    "  --mode M            iclm (default) or order\n"
    "  -k N                neighbours per document (default 20)\n"
    "  --window N          window length L in tokens (default 8192)\n"
    "  --seed N            seed of ties, samples and baselines (default 0)\n"
    "  --embedder E        hash or hash:dim=...: embeds documents without a\n"
    "                      vector\n"
    "  --dim D             vector dimension (required for .f32 shards)\n"
    "  --dedup X           near-duplicate cosine threshold (default 0.95;\n"
    "                      above 1: none)\n"
    "  --separator S       between documents (default <|endoftext|>)\n"
    "  --no-separator      nothing between documents\n"
    "  --exact-max N       exact kNN up to N documents (default 10000)\n"
    "  --nlist N, --nprobe N, --recall X   the inverted file (as order.h)\n"
    "  --block N           queries per ring block, exact kNN (default 262144)\n"
    "  --traverse T        exact: the graph on rank 0, one greedy path;\n"
    "                      partitioned: documents grouped by coarse cluster,\n"
    "                      a path per rank over its groups, stitched; auto\n"
    "                      (default): exact while rank 0 would hold less than\n"
    "                      --gather-max-gb (default half its memory)\n"
    "  --threads N         threads per rank (default: cores / ranks here)\n"
    "  --keep-checkpoints  keep DIR/ckpt after the job\n"
    "  -q, --quiet         no progress on stderr\n"
    "A failed run resumes from DIR/ckpt when started again with the same\n"
    "shards, options and rank count.\n";

static int parse(job *j, int argc, char **argv, ctxd_error *e) {
  static struct option lo[] = {
      {"out", 1, 0, 'o'},         {"mode", 1, 0, 'm'},
      {"window", 1, 0, 'w'},      {"seed", 1, 0, 's'},
      {"embedder", 1, 0, 'E'},    {"dim", 1, 0, 'd'},
      {"dedup", 1, 0, 'D'},       {"jaccard", 1, 0, 'J'},
      {"separator", 1, 0, 'S'},   {"no-separator", 0, 0, 'N'},
      {"exact-max", 1, 0, 'x'},   {"nlist", 1, 0, 'l'},
      {"nprobe", 1, 0, 'p'},      {"recall", 1, 0, 'r'},
      {"block", 1, 0, 'b'},       {"threads", 1, 0, 't'},
      {"keep-checkpoints", 0, 0, 'K'}, {"input-list", 1, 0, 'I'},
      {"quiet", 0, 0, 'q'},       {"help", 0, 0, 'h'},
      {"traverse", 1, 0, 'T'},    {"gather-max-gb", 1, 0, 'G'},
      {0, 0, 0, 0}};
  int c, m;
  order_opts_defaults(&j->o);
  j->block = BLOCK_DEFAULT;
  /* auto: exact while rank 0 would hold under half its memory */
  j->gather_max = (double)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGESIZE) / 2;
  j->shards = calloc(SHARDS_MAX, sizeof *j->shards);
  if (!j->shards) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  while ((c = getopt_long(argc, argv, "k:qh", lo, NULL)) != -1) {
    switch (c) {
      case 'o': j->out = optarg; break;
      case 'm':
        if ((m = order_mode_parse(optarg)) < 0 || m == ORDER_MODE_DECOMPOSE)
          return ctxd_seterr(e, CTXD_EINVAL,
                             "--mode %s: ctxd-corpus runs iclm or order "
                             "(decompose: use the daemon)",
                             optarg);
        j->o.mode = (order_mode)m;
        break;
      case 'k': j->o.k = (uint32_t)strtoul(optarg, NULL, 10); break;
      case 'w': j->o.window_tokens = (uint32_t)strtoul(optarg, NULL, 10); break;
      case 's': j->o.seed = strtoull(optarg, NULL, 10); break;
      case 'E': j->embedder_spec = optarg; break;
      case 'd': j->dim = (uint32_t)strtoul(optarg, NULL, 10); break;
      case 'D': j->o.dup_cosine = strtof(optarg, NULL); break;
      case 'J':
        return ctxd_seterr(e, CTXD_EINVAL,
                           "--jaccard: ctxd-corpus does not check 3-gram "
                           "Jaccard (rank 0 holds no texts); use the daemon");
      case 'S': j->o.separator = optarg; break;
      case 'N': j->o.separator = ""; break;
      case 'x': j->o.exact_max = strtoull(optarg, NULL, 10); break;
      case 'l': j->o.nlist = (uint32_t)strtoul(optarg, NULL, 10); break;
      case 'p': j->o.nprobe = (uint32_t)strtoul(optarg, NULL, 10); break;
      case 'r': j->o.recall = strtof(optarg, NULL); break;
      case 'b': j->block = strtoull(optarg, NULL, 10); break;
      case 't': j->o.threads = (unsigned)strtoul(optarg, NULL, 10); break;
      case 'K': j->o.keep_checkpoints = 1; break;
      case 'q': j->quiet = 1; break;
      case 'T':
        if (strcmp(optarg, "auto") == 0) j->traverse = TR_AUTO;
        else if (strcmp(optarg, "exact") == 0) j->traverse = TR_EXACT;
        else if (strcmp(optarg, "partitioned") == 0) j->traverse = TR_PARTITIONED;
        else
          return ctxd_seterr(e, CTXD_EINVAL,
                             "--traverse %s: auto, exact or partitioned", optarg);
        break;
      case 'G': j->gather_max = strtod(optarg, NULL) * 1e9; break;
      case 'I': {
        FILE *f = fopen(optarg, "r");
        char line[4096];
        if (!f)
          return ctxd_seterr(e, CTXD_ENOTFOUND, "--input-list %s: %s", optarg,
                             strerror(errno));
        while (fgets(line, sizeof line, f)) {
          line[strcspn(line, "\r\n")] = 0;
          if (!*line) continue;
          if (j->nshards == SHARDS_MAX) break;
          j->shards[j->nshards++] = strdup(line);
        }
        fclose(f);
        break;
      }
      case 'h': return 1;
      default: return ctxd_seterr(e, CTXD_EINVAL, "bad option (see --help)");
    }
  }
  for (; optind < argc && j->nshards < SHARDS_MAX; optind++)
    j->shards[j->nshards++] = strdup(argv[optind]);
  if (!j->out) return ctxd_seterr(e, CTXD_EINVAL, "--out DIR is required");
  if (j->nshards == 0) return ctxd_seterr(e, CTXD_EINVAL, "no input shards");
  if (j->block == 0 || j->block > ((uint64_t)1 << 24))
    return ctxd_seterr(e, CTXD_EINVAL, "--block must be 1..16777216");
  return order_opts_check(&j->o, e);
}

/* ---- partitioned traversal ------------------------------------------------------------
 * When the graph does not fit rank 0: documents are grouped by their nearest
 * coarse centroid (k-means of a sample, as the kNN's quantizer), the groups
 * chained on rank 0 by centroid similarity and cut into one run per rank
 * (balanced by documents), each document moves to its group's rank with its
 * kNN row, vector, id and text, and every rank runs dedup and the greedy
 * path over its groups (kNN entries into other ranks' groups are dropped).
 * The paths are stitched in rank order, so the packing segments are the
 * ranks' own paths. */

static int partition(job *j, const order_knn *g, seg *sg, order_summary *sum,
                     ctxd_error *e) {
  int N = j->nranks, rc = 0;
  uint32_t k = g->k, d = j->dim, *pick = NULL, *owner_of = NULL;
  float *sx = NULL, *cen = NULL;
  order_knn_index *x = NULL;
  order_knn *lk = NULL;
  order_graph *gr = NULL;
  order_dups *dups = NULL;
  order_path *p = NULL;
  xbufs xb = {0};
  char **out = NULL, **in = NULL;
  size_t *len = NULL, *cap = NULL, *inlen = NULL;
  uint64_t G = (uint64_t)llround(sqrt((double)j->n));
  if (G > GROUPS_MAX) G = GROUPS_MAX;
  if (G < (uint64_t)N) G = (uint64_t)N;
  if (G > j->n) G = j->n ? j->n : 1;
  j->groups = (uint32_t)G;
  /* the groups: a k-means of a sample (rank 0), every document's nearest */
  uint64_t s = order_kmeans_sample(j->n, (uint32_t)G);
  order_opts og = j->o;
  og.nprobe = 1;
  og.seed = j->o.seed ^ 0x47524F5550ull;
  if ((rc = order_sample_rows(j->n, s, og.seed, &pick, e)) ||
      (rc = rows_everywhere(j, pick, s, &sx, e)))
    return rc;
  if (j->rank == 0) rc = order_kmeans(sx, s, d, (uint32_t)G, &og, &cen, e);
  free(pick);
  free(sx);
  if ((rc = agree(j, rc, e))) return rc;
  if (j->rank != 0 && !(cen = malloc(G * d * sizeof *cen))) die(j, "out of memory");
  MPI_Bcast(cen, (int)(G * d), MPI_FLOAT, 0, MPI_COMM_WORLD);
  rc = order_knn_shard(j->vec, j->n_local, d, j->off, cen, (uint32_t)G, &og,
                       &x, e);
  if ((rc = agree(j, rc, e))) goto out;
  uint32_t t;
  const uint32_t *grp = order_knn_index_probes(x, &t);
  /* the chain of groups and each group's rank */
  uint64_t *cnt = calloc(G, sizeof *cnt), *all = calloc(G, sizeof *all);
  owner_of = malloc(G * sizeof *owner_of);
  if (!cnt || !all || !owner_of) die(j, "out of memory");
  for (uint64_t i = 0; i < j->n_local; i++) cnt[grp[i * t]]++;
  MPI_Allreduce(cnt, all, (int)G, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  if (j->rank == 0) {
    uint8_t *used = calloc(G, 1);
    if (!used) die(j, "out of memory");
    uint64_t cur = 0, acc = 0;
    int r = 0;
    for (uint64_t step = 0; step < G; step++) {
      used[cur] = 1;
      acc += all[cur];
      owner_of[cur] = (uint32_t)r;
      if (r + 1 < N && acc * (uint64_t)N >= (uint64_t)(r + 1) * j->n) r++;
      uint64_t best = G;
      float bw = -3;
      for (uint64_t c = 0; c < G; c++) {
        if (used[c]) continue;
        float w = 0;
        for (uint32_t q = 0; q < d; q++) w += cen[cur * d + q] * cen[c * d + q];
        if (w > bw) {
          bw = w;
          best = c;
        }
      }
      cur = best;
      if (best == G) break;
    }
    free(used);
  }
  MPI_Bcast(owner_of, (int)G, MPI_UINT32_T, 0, MPI_COMM_WORLD);
  free(cnt);
  free(all);
  /* every document to its group's rank: gid | row | sims | vector | id | text */
  xb_init(j, &xb);
  out = xb.out;
  in = xb.in;
  len = xb.len;
  cap = xb.cap;
  inlen = xb.inlen;
  size_t fixed = 16 + (size_t)k * 8 + (size_t)d * 4;
  for (uint64_t i = 0; i < j->n_local && !rc; i++) {
    int r = (int)owner_of[grp[i * t]];
    const char *tx = NULL;
    size_t tl = 0;
    if (j->o.mode == ORDER_MODE_ICLM && (rc = text_of(j, i, &tx, &tl, e)))
      break;
    uint32_t il = (uint32_t)strlen(j->ids[i]), gid = (uint32_t)(j->off + i),
             tl32 = tx ? (uint32_t)tl : UINT32_MAX;
    size_t need = fixed + il + (tx ? tl : 0);
    if (len[r] + need > cap[r]) {
      size_t c = cap[r] ? cap[r] : 1 << 16;
      while (c < len[r] + need) c *= 2;
      if (!(out[r] = realloc(out[r], c))) die(j, "out of memory");
      cap[r] = c;
    }
    char *w = out[r] + len[r];
    memcpy(w, &gid, 4);
    memcpy(w + 4, &il, 4);
    memcpy(w + 8, &tl32, 4);
    memcpy(w + 16, g->nbr + i * k, (size_t)k * 4);
    memcpy(w + 16 + (size_t)k * 4, g->sim + i * k, (size_t)k * 4);
    memcpy(w + 16 + (size_t)k * 8, j->vec + i * d, (size_t)d * 4);
    memcpy(w + fixed, j->ids[i], il);
    if (tx) memcpy(w + fixed + il, tx, tl);
    len[r] += need;
  }
  order_knn_index_free(x);
  x = NULL;
  if ((rc = agree(j, rc, e))) goto out;
  exchange(j, out, len, in, inlen);
  /* this rank's documents, in input order */
  uint64_t n = 0;
  for (int r = 0; r < N; r++)
    for (size_t a = 0; a < inlen[r];) {
      uint32_t il, tl;
      memcpy(&il, in[r] + a + 4, 4);
      memcpy(&tl, in[r] + a + 8, 4);
      a += fixed + il + (tl == UINT32_MAX ? 0 : tl);
      n++;
    }
  char **rec = malloc((n + 1) * sizeof *rec);
  uint32_t *gids = malloc((n + 1) * sizeof *gids);
  if (!rec || !gids) die(j, "out of memory");
  uint64_t q = 0;
  for (int r = 0; r < N; r++) /* senders hold ascending gids: merge by rank */
    for (size_t a = 0; a < inlen[r];) {
      uint32_t il, tl;
      memcpy(&il, in[r] + a + 4, 4);
      memcpy(&tl, in[r] + a + 8, 4);
      rec[q++] = in[r] + a;
      a += fixed + il + (tl == UINT32_MAX ? 0 : tl);
    }
  /* ranks own ascending global ranges, so rank order is gid order */
  for (q = 0; q < n; q++) memcpy(&gids[q], rec[q], 4);
  float *lvec = malloc((n * d + 1) * sizeof *lvec);
  char **lids = calloc(n + 1, sizeof *lids), **ltx = calloc(n + 1, sizeof *ltx);
  size_t *llen = calloc(n + 1, sizeof *llen);
  if (!lvec || !lids || !ltx || !llen) die(j, "out of memory");
  if ((rc = order_knn_alloc(n, k, &lk, e)) == 0) {
    for (q = 0; q < n; q++) {
      const char *w = rec[q];
      uint32_t il, tl, c = 0;
      memcpy(&il, w + 4, 4);
      memcpy(&tl, w + 8, 4);
      /* records are packed back to back: copy the row out (alignment) */
      uint32_t nb[ORDER_K_MAX];
      float sm[ORDER_K_MAX];
      memcpy(nb, w + 16, (size_t)k * 4);
      memcpy(sm, w + 16 + (size_t)k * 4, (size_t)k * 4);
      for (uint32_t a = 0; a < k; a++) {
        if (nb[a] == ORDER_NONE) continue;
        uint32_t *hit = bsearch(&nb[a], gids, n, 4, cmp_u32);
        if (!hit) {
          j->dropped_edges++;
          continue;
        }
        lk->nbr[q * k + c] = (uint32_t)(hit - gids);
        lk->sim[q * k + c++] = sm[a];
      }
      memcpy(lvec + q * d, w + 16 + (size_t)k * 8, (size_t)d * 4);
      lids[q] = malloc(il + 1);
      if (!lids[q]) die(j, "out of memory");
      memcpy(lids[q], w + fixed, il);
      lids[q][il] = 0;
      ltx[q] = tl == UINT32_MAX ? NULL : (char *)w + fixed + il;
      llen[q] = tl == UINT32_MAX ? 0 : tl;
    }
  }
  free(rec);
  free(gids);
  order_input lin;
  memset(&lin, 0, sizeof lin);
  lin.n = n;
  lin.dim = d;
  lin.ids = (const char *const *)lids;
  lin.vectors = lvec;
  lin.texts = (const char *const *)ltx;
  lin.text_lens = llen;
  order_opts ol = j->o;
  ol.progress = NULL;
  if (!rc && (rc = order_graph_build(lk, &gr, e)) == 0 &&
      (rc = order_dedup(gr, &lin, &ol, &dups, e)) == 0)
    rc = order_traverse(gr, dups, &lin, &ol, &p, e);
  if ((rc = agree(j, rc, e))) goto done;
  {
    char name[64];
    snprintf(name, sizeof name, "duplicates-%05d.jsonl", j->rank);
    write_dups(j, name, dups, lids);
  }
  /* stitch: positions by rank, the seams' similarities from the vectors at
   * either end of each rank's path */
  j->seg_off = calloc(N + 1, sizeof *j->seg_off);
  float *ends = calloc((size_t)2 * d + 1, sizeof *ends),
        *alle = malloc(((size_t)2 * d * N + 1) * sizeof *alle);
  if (!j->seg_off || !ends || !alle) die(j, "out of memory");
  if (p->n) {
    memcpy(ends, lvec + (uint64_t)p->doc[0] * d, (size_t)d * 4);
    memcpy(ends + d, lvec + (uint64_t)p->doc[p->n - 1] * d, (size_t)d * 4);
  }
  MPI_Allgather(&p->n, 1, MPI_UINT64_T, j->seg_off + 1, 1, MPI_UINT64_T,
                MPI_COMM_WORLD);
  MPI_Allgather(ends, (int)(2 * d), MPI_FLOAT, alle, (int)(2 * d), MPI_FLOAT,
                MPI_COMM_WORLD);
  int prev = -1;
  for (int r = 0; r < j->rank; r++)
    if (j->seg_off[r + 1]) prev = r;
  for (int r = 0; r < N; r++) j->seg_off[r + 1] += j->seg_off[r];
  double simsum = 0;
  uint64_t jumps = p->jumps, edges = order_graph_edges(gr), dc = dups->count;
  if (p->n && prev >= 0) {
    float w = 0;
    for (uint32_t a = 0; a < d; a++) w += alle[(size_t)prev * 2 * d + d + a] * ends[a];
    p->sim[0] = w;
    p->jump[0] = 1;
    jumps++;
  }
  for (uint64_t a = (prev >= 0 ? 0 : 1); a < p->n; a++) simsum += p->sim[a];
  free(ends);
  free(alle);
  uint64_t v[4] = {jumps, edges, dc, j->dropped_edges}, tv[4];
  double ts;
  MPI_Allreduce(v, tv, 4, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
  MPI_Allreduce(&simsum, &ts, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  j->dropped_edges = tv[3];
  sum->jumps = tv[0];
  sum->edges = tv[1];
  sum->duplicates = tv[2];
  sum->ordered = j->seg_off[N];
  sum->adjacent_similarity = sum->ordered >= 2 ? ts / (double)(sum->ordered - 1) : NAN;
  /* the segment this rank packs: its own path */
  sg->pos0 = j->seg_off[j->rank];
  sg->n = p->n;
  sg->ids = malloc((p->n + 1) * sizeof *sg->ids);
  sg->texts = malloc((p->n + 1) * sizeof *sg->texts);
  sg->lens = malloc((p->n + 1) * sizeof *sg->lens);
  sg->vec = malloc((p->n * d + 1) * sizeof *sg->vec);
  sg->p.doc = malloc((p->n + 1) * sizeof *sg->p.doc);
  if (!sg->ids || !sg->texts || !sg->lens || !sg->vec || !sg->p.doc)
    die(j, "out of memory");
  for (uint64_t a = 0; a < p->n; a++) {
    uint32_t doc = p->doc[a];
    sg->ids[a] = lids[doc];
    lids[doc] = NULL;
    sg->texts[a] = ltx[doc];
    sg->lens[a] = llen[doc];
    memcpy(sg->vec + a * d, lvec + (uint64_t)doc * d, (size_t)d * 4);
    sg->p.doc[a] = (uint32_t)a;
  }
  sg->p.n = p->n;
  sg->p.sim = p->sim;
  sg->p.jump = p->jump;
  p->sim = NULL;
  p->jump = NULL;
  sg->bufs = in;
  xb.in = NULL;
  sg->in.n = p->n;
  sg->in.dim = d;
  sg->in.ids = (const char *const *)sg->ids;
  sg->in.vectors = sg->vec;
  sg->in.texts = (const char *const *)sg->texts;
  sg->in.text_lens = sg->lens;
done:
  for (q = 0; q < n; q++) free(lids[q]);
  free(lids);
  free(ltx);
  free(llen);
  free(lvec);
out:
  xb_free(j, &xb);
  free(owner_of);
  free(cen);
  order_knn_index_free(x);
  order_knn_free(lk);
  order_graph_free(gr);
  order_dups_free(dups);
  order_path_free(p);
  return rc;
}

/* Rank 0 writes duplicates.jsonl (exact mode: d and ids given), summary.json
 * and manifest.json; the checkpoints go unless kept. */
static int finish(job *j, order_summary *sum_, double t0, const order_dups *d,
                  char **idp, ctxd_error *e) {
  order_summary sum = *sum_;
  int rc = 0;
  /* summary, manifest; checkpoints go */
  uint64_t bytes[P_COUNT];
  MPI_Reduce(j->sent, bytes, P_COUNT, MPI_UINT64_T, MPI_SUM, 0,
             MPI_COMM_WORLD);
  double cpu[3];
  MPI_Reduce(&j->search_cpu, &cpu[0], 1, MPI_DOUBLE, MPI_MAX, 0,
             MPI_COMM_WORLD);
  MPI_Reduce(&j->search_cpu, &cpu[1], 1, MPI_DOUBLE, MPI_MIN, 0,
             MPI_COMM_WORLD);
  MPI_Reduce(&j->search_cpu, &cpu[2], 1, MPI_DOUBLE, MPI_SUM, 0,
             MPI_COMM_WORLD);
  MPI_Barrier(MPI_COMM_WORLD);
  if (j->rank == 0) {
    if (d) write_dups(j, ORDER_FILE_DUPLICATES, d, idp);
    if ((rc = order_write_summary(&sum, &j->o, j->out, e)) == 0)
      write_manifest(j, &sum, j->t, bytes, cpu);
    say(j, "done: %llu documents, %llu ordered, %llu duplicates, %llu "
        "windows, adjacent similarity %.4f (random %.4f); pack %.1f s, "
        "total %.1f s", (unsigned long long)sum.documents,
        (unsigned long long)sum.ordered, (unsigned long long)sum.duplicates,
        (unsigned long long)sum.windows, sum.adjacent_similarity,
        sum.random_adjacent_similarity, sum.t_pack, now() - t0);
    if (!j->quiet)
      for (int q = 0; q < P_COUNT; q++)
        fprintf(stderr, "ctxd-corpus: phase %s: %.2f s, %llu bytes sent\n",
                pnames[q], j->t[q], (unsigned long long)bytes[q]);
  }
  if ((rc = agree(j, rc, e))) return rc;
  if (!j->o.keep_checkpoints) {
    char name[64];
    snprintf(name, sizeof name, "knn-%05d.ckpt", j->rank);
    char *c = ckpt_path(j, name);
    unlink(c);
    free(c);
    MPI_Barrier(MPI_COMM_WORLD);
    if (j->rank == 0) {
      c = ckpt_path(j, "path.ckpt");
      unlink(c);
      free(c);
      c = ckpt_path(j, "");
      rmdir(c);
      free(c);
    }
  }
  return rc;
}

static int run_partitioned(job *j, order_summary *sum, double t0, seg *sg,
                           ctxd_error *e) {
  order_knn *g = NULL;
  char method[64];
  int rc;
  double t = now();
  j->phase = P_KNN;
  uint32_t k = order_knn_k(j->n, j->o.k);
  if ((rc = knn_phase(j, k, &g, method, &sum->nprobe, &sum->knn_recall,
                      &sum->resumed_knn, e)))
    return rc;
  snprintf(sum->knn_method, sizeof sum->knn_method, "%s", method);
  sum->k = k;
  j->t[P_KNN] = sum->t_knn = now() - t;
  say(j, "knn: %.1f s", sum->t_knn);
  maybe_die_after(j, "knn");
  j->phase = P_TRAVERSE;
  t = now();
  rc = partition(j, g, sg, sum, e);
  order_knn_free(g);
  if (rc) return rc;
  j->t[P_TRAVERSE] = sum->t_traverse = now() - t;
  say(j, "partitioned dedup and traverse: %.1f s (%u groups, %llu kNN "
      "entries across ranks dropped)", sum->t_traverse, j->groups,
      (unsigned long long)j->dropped_edges);
  j->phase = P_PACK;
  t = now();
  pack_phase(j, sg, sum, NULL);
  j->t[P_PACK] = sum->t_pack = now() - t;
  sum->t_total = now() - t0 - sum->t_read;
  return finish(j, sum, t0, NULL, NULL, e);
}

static int run(job *j, ctxd_error *e) {
  order_summary sum;
  order_knn *g = NULL, *full = NULL;
  order_graph *gr = NULL;
  order_dups *d = NULL;
  order_path *p = NULL;
  float *allvec = NULL, *owned = NULL;
  char *allids = NULL, **idp = NULL;
  uint64_t *tok_all = NULL;
  uint32_t *pos_all = NULL, *pos_mine = NULL;
  seg sg;
  int rc = 0;
  double t0 = now(), t;
  memset(&sum, 0, sizeof sum);
  memset(&sg, 0, sizeof sg);
  sum.mode = j->o.mode;
  sum.adjacent_similarity = sum.random_adjacent_similarity = NAN;
  sum.window_similarity = sum.random_window_similarity = NAN;

  /* read */
  j->phase = P_READ;
  t = now();
  if (j->rank == 0) {
    char ck[4096];
    snprintf(ck, sizeof ck, "%s/ckpt", j->out);
    if ((mkdir(j->out, 0755) != 0 && errno != EEXIST) ||
        (mkdir(ck, 0755) != 0 && errno != EEXIST))
      rc = ctxd_seterr(e, CTXD_EIO, "cannot create %s: %s", ck,
                       strerror(errno));
    for (int s = 0; !rc && s < j->nshards; s++)
      if (access(j->shards[s], R_OK) != 0)
        rc = ctxd_seterr(e, CTXD_ENOTFOUND, "shard %d (%s): %s", s,
                         j->shards[s], strerror(errno));
  }
  if ((rc = agree(j, rc, e))) goto out;
  if (j->embedder_spec) {
    embed_hash_opts ho;
    if ((rc = embed_hash_parse(j->embedder_spec, &ho, e)) == 0)
      rc = embed_hash_create(&ho, &j->emb, e);
    j->o.embedder = j->emb;
    if (!rc && j->dim && j->emb->dim != j->dim)
      rc = ctxd_seterr(e, CTXD_EINVAL, "--dim %u but the embedder makes %u",
                       j->dim, j->emb->dim);
    if (!rc && !j->dim) j->dim = j->emb->dim;
  }
  if (!rc) rc = read_local(j, e);
  if ((rc = agree(j, rc, e))) goto out;
  /* one dimension everywhere (shards learn it from their first vector) */
  uint32_t dmax, dmin, dme = j->dim ? j->dim : UINT32_MAX;
  MPI_Allreduce(&j->dim, &dmax, 1, MPI_UINT32_T, MPI_MAX, MPI_COMM_WORLD);
  MPI_Allreduce(&dme, &dmin, 1, MPI_UINT32_T, MPI_MIN, MPI_COMM_WORLD);
  if (dmax == 0)
    rc = ctxd_seterr(e, CTXD_EINVAL, "no vectors and no --embedder");
  else if (j->dim && j->dim != dmax)
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "vectors of %u dimensions here, %u on another rank",
                     j->dim, dmax);
  if ((rc = agree(j, rc, e))) goto out;
  if (!j->dim) j->dim = dmax;
  (void)dmin;
  j->in.n = j->n_local;
  j->in.dim = j->dim;
  j->in.ids = (const char *const *)j->ids;
  j->in.vectors = j->vec;
  j->in.has_vector = j->has_vec;
  j->in.get_text = text_of;
  j->in.text_arg = j;
  if (!j->vec && j->n_local == 0 &&
      !(j->vec = j->in.vectors = calloc(1, sizeof(float))))
    die(j, "out of memory");
  sum.t_read = now() - t;
  t = now();
  if (j->n_local) rc = order_prepare_vectors(&j->in, &j->o, &owned, e);
  if (owned) j->vec = owned;
  if ((rc = agree(j, rc, e))) goto out;
  sum.t_embed = now() - t;
  j->t[P_READ] = now() - t0;

  /* global numbering: rows in shard order */
  j->offs = calloc(j->nranks + 1, sizeof *j->offs);
  if (!j->offs) die(j, "out of memory");
  MPI_Allgather(&j->n_local, 1, MPI_UINT64_T, j->offs + 1, 1, MPI_UINT64_T,
                MPI_COMM_WORLD);
  for (int r = 0; r < j->nranks; r++) j->offs[r + 1] += j->offs[r];
  j->off = j->offs[j->rank];
  j->n = j->offs[j->nranks];
  sum.documents = j->n;
  if (j->n > ORDER_DOCS_MAX || j->n >= ORDER_NONE) {
    rc = ctxd_seterr(e, CTXD_ELIMIT, "%llu documents, more than %llu",
                     (unsigned long long)j->n,
                     (unsigned long long)ORDER_DOCS_MAX);
    goto out;
  }
  j->fp = fingerprint(j);
  say(j, "read %llu documents of %u dimensions from %d shards on %d ranks "
      "in %.1f s", (unsigned long long)j->n, j->dim, j->nshards, j->nranks,
      j->t[P_READ]);

  /* exact: the graph, ids and vectors on rank 0, when they fit */
  {
    uint32_t kk = order_knn_k(j->n, j->o.k);
    double need = (double)j->n * (24.0 * kk + 4.0 * j->dim + 64);
    j->partitioned = j->traverse == TR_PARTITIONED ||
                     (j->traverse == TR_AUTO && need > j->gather_max);
    if (j->partitioned) {
      say(j, "partitioned traversal (rank 0 would need %.1f GB, --gather-max "
          "%.1f GB)", need / 1e9, j->gather_max / 1e9);
      rc = run_partitioned(j, &sum, t0, &sg, e);
      goto out;
    }
  }
  /* rank 0 holds the ids and vectors: for the duplicates, the jumps and
   * the random baselines */
  size_t ib = 0, tot;
  for (uint64_t i = 0; i < j->n_local; i++) ib += strlen(j->ids[i]) + 1;
  char *mine = malloc(ib + 1);
  if (!mine) die(j, "out of memory");
  for (uint64_t i = 0, at = 0; i < j->n_local; i++) {
    size_t l = strlen(j->ids[i]) + 1;
    memcpy(mine + at, j->ids[i], l);
    at += l;
  }
  j->phase = P_TRAVERSE;
  gather_big(j, mine, ib, (void **)&allids, &tot);
  free(mine);
  gather_big(j, j->vec, j->n_local * j->dim * sizeof(float), (void **)&allvec,
             &tot);
  order_input rin;
  memset(&rin, 0, sizeof rin);
  if (j->rank == 0) {
    idp = malloc((j->n + 1) * sizeof *idp);
    if (!idp) die(j, "out of memory");
    for (uint64_t i = 0, at = 0; i < j->n; i++) {
      idp[i] = allids + at;
      at += strlen(allids + at) + 1;
    }
    rin.n = j->n;
    rin.dim = j->dim;
    rin.ids = (const char *const *)idp;
    rin.vectors = allvec;
    order_opts oc = j->o;
    oc.mode = ORDER_MODE_ORDER; /* texts stay with their ranks */
    rc = order_input_check(&rin, &oc, e);
  }
  if ((rc = agree(j, rc, e))) goto out;

  /* path.ckpt: everything up to the path is done */
  path_hdr ph;
  memset(&ph, 0, sizeof ph);
  int have = j->rank == 0 ? path_load(j, &ph, &p, &d) : 0;
  MPI_Bcast(&have, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (have) {
    say(j, "resumed after the traversal (path.ckpt)");
    sum.resumed_knn = 1;
  } else {
    /* kNN */
    j->phase = P_KNN;
    t = now();
    uint32_t k = order_knn_k(j->n, j->o.k);
    if ((rc = knn_phase(j, k, &g, ph.method, &ph.nprobe, &ph.recall,
                        &sum.resumed_knn, e)))
      goto out;
    ph.k = k;
    j->t[P_KNN] = ph.t_knn = now() - t;
    say(j, "knn: %.1f s", ph.t_knn);
    maybe_die_after(j, "knn");
    /* the graph on rank 0: dedup and the exact greedy path */
    j->phase = P_TRAVERSE;
    t = now();
    char *rows = malloc(j->n_local * k * 8 + 1), *all = NULL;
    if (!rows) die(j, "out of memory");
    memcpy(rows, g->nbr, j->n_local * k * 4);
    memcpy(rows + j->n_local * k * 4, g->sim, j->n_local * k * 4);
    order_knn_free(g);
    g = NULL;
    gather_big(j, rows, j->n_local * k * 8, (void **)&all, &tot);
    free(rows);
    if (j->rank == 0) {
      if ((rc = order_knn_alloc(j->n, k, &full, e)) == 0) {
        for (int r = 0; r < j->nranks; r++) {
          uint64_t a = j->offs[r], nr = j->offs[r + 1] - a;
          const char *b = all + a * k * 8;
          memcpy(full->nbr + a * k, b, nr * k * 4);
          memcpy(full->sim + a * k, b + nr * k * 4, nr * k * 4);
        }
      }
      free(all);
      double td = now();
      if (!rc && (rc = order_graph_build(full, &gr, e)) == 0) {
        order_knn_free(full);
        full = NULL;
        ph.edges = order_graph_edges(gr);
        rc = order_dedup(gr, &rin, &j->o, &d, e);
      }
      ph.t_dedup = now() - td;
      double tt = now();
      if (!rc) rc = order_traverse(gr, d, &rin, &j->o, &p, e);
      ph.t_traverse = now() - tt;
      if (!rc) {
        memcpy(ph.magic, "CTXDPTH1", 8);
        ph.fp = j->fp;
        ph.n = j->n;
        ph.m = p->n;
        ph.jumps = p->jumps;
        ph.dups = d->count;
        rc = path_save(j, &ph, p, d, e);
      }
    }
    if ((rc = agree(j, rc, e))) goto out;
    j->t[P_TRAVERSE] = now() - t;
    say(j, "dedup %.1f s, traverse %.1f s (on rank 0)", ph.t_dedup,
        ph.t_traverse);
    maybe_die_after(j, "traverse");
  }
  MPI_Bcast(&ph, sizeof ph, MPI_BYTE, 0, MPI_COMM_WORLD);
  snprintf(sum.knn_method, sizeof sum.knn_method, "%s", ph.method);
  sum.k = ph.k;
  sum.nprobe = ph.nprobe;
  sum.knn_recall = ph.recall;
  sum.edges = ph.edges;
  sum.duplicates = ph.dups;
  sum.ordered = ph.m;
  sum.jumps = ph.jumps;
  sum.t_knn = ph.t_knn;
  sum.t_dedup = ph.t_dedup;
  sum.t_traverse = ph.t_traverse;

  /* packing: each rank a contiguous segment of the path */
  j->phase = P_PACK;
  t = now();
  uint64_t m = ph.m;
  if (j->rank == 0) {
    sum.adjacent_similarity = order_path_similarity(p);
    sum.random_adjacent_similarity =
        order_random_similarity(p, &rin, j->o.seed);
    pos_all = malloc((j->n + 1) * sizeof *pos_all);
    if (!pos_all) die(j, "out of memory");
    memset(pos_all, 0xff, j->n * sizeof *pos_all);
    for (uint64_t q = 0; q < m; q++) pos_all[p->doc[q]] = (uint32_t)q;
    for (int r = 1; r < j->nranks; r++) {
      send_big(j, pos_all + j->offs[r],
               (j->offs[r + 1] - j->offs[r]) * sizeof *pos_all, r, 61);
      uint64_t a = seg_start(m, j->nranks, r),
               b = seg_start(m, j->nranks, r + 1);
      send_big(j, p->sim + a, (b - a) * sizeof *p->sim, r, 62);
      send_big(j, p->jump + a, b - a, r, 63);
    }
    pos_mine = pos_all;
  } else {
    /* all three before the exchange: rank 0 sends them first */
    recv_big(j, (void **)&pos_mine, 0, 0, 61);
    recv_big(j, (void **)&sg.p.sim, 0, 0, 62);
    recv_big(j, (void **)&sg.p.jump, 0, 0, 63);
  }
  if (j->rank == 0) {
    uint64_t n0 = seg_start(m, j->nranks, 1);
    sg.p.sim = malloc((n0 + 1) * sizeof *sg.p.sim);
    sg.p.jump = malloc(n0 + 1);
    if (!sg.p.sim || !sg.p.jump) die(j, "out of memory");
    memcpy(sg.p.sim, p->sim, n0 * sizeof *sg.p.sim);
    memcpy(sg.p.jump, p->jump, n0);
  }
  if ((rc = redistribute(j, pos_mine, m, &sg, e))) goto out;
  pack_phase(j, &sg, &sum, &tok_all);
  if (j->rank == 0 && j->o.mode == ORDER_MODE_ICLM)
    sum.random_window_similarity =
        order_random_window_similarity(p, tok_all, &rin, &j->o);
  j->t[P_PACK] = now() - t;
  sum.t_pack = j->t[P_PACK];
  sum.t_total = now() - t0 - sum.t_read;

  rc = finish(j, &sum, t0, d, idp, e);
out:
  order_knn_free(g);
  order_knn_free(full);
  order_graph_free(gr);
  order_dups_free(d);
  order_path_free(p);
  free(allvec);
  free(allids);
  free(idp);
  free(tok_all);
  if (pos_mine != pos_all) free(pos_mine);
  free(pos_all);
  seg_free(j, &sg);
  return rc;
}

int main(int argc, char **argv) {
  job j;
  ctxd_error e = {0};
  int rc, provided;
  memset(&j, 0, sizeof j);
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  MPI_Comm_rank(MPI_COMM_WORLD, &j.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &j.nranks);
  rc = parse(&j, argc, argv, &e);
  if (rc == 1) {
    if (j.rank == 0) fputs(usage, stdout);
    MPI_Finalize();
    return 0;
  }
  if (!rc && !j.o.threads) {
    /* the cores of this node shared by the ranks on it */
    MPI_Comm node;
    int local = 1;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0,
                        MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &local);
    MPI_Comm_free(&node);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    j.o.threads = cores > local ? (unsigned)(cores / local) : 1;
  }
  if (!rc) {
    /* Debian's OpenBLAS (pthreads) starts a thread per core in every rank
     * unless told: 16 ranks on 16 cores then ran 256 spinning BLAS threads
     * (measured: 4 ranks 4x slower than 1). Its own call, when it is the
     * BLAS loaded, so OPENBLAS_NUM_THREADS need not be exported. */
    void (*set_blas)(int) =
        (void (*)(int))(uintptr_t)dlsym(RTLD_DEFAULT, "openblas_set_num_threads");
    if (set_blas && !getenv("OPENBLAS_NUM_THREADS")) set_blas((int)j.o.threads);
    j.o.progress = progress;
    j.o.progress_arg = &j;
    vindex_global_init(j.o.threads);
    rc = run(&j, &e);
  }
  if (rc && j.rank == 0)
    fprintf(stderr, "ctxd-corpus: error: %s\n", e.msg);
  for (int r = 0; r < j.nreaders; r++)
    if (j.readers[r]) order_jsonl_free(j.readers[r]);
  free(j.readers);
  free(j.reader_off);
  free(j.ids);
  free(j.idbuf);
  free(j.vec);
  free(j.has_vec);
  free(j.offs);
  free(j.seg_off);
  for (int s = 0; s < j.nshards; s++) free(j.shards[s]);
  free(j.shards);
  embedder_free(j.emb);
  MPI_Finalize();
  return rc ? 1 : 0;
}
