/* grpc_search_load.c - the gRPC side of the vector search and ingest
 * benchmarks (grpc_search.sh, ingest.sh): loads vectors or prose into ctxd
 * as documents and drives Retrieval.Search, one query at a time per
 * connection, with ctxclient.
 *
 *   grpc_search_load load ADDR COLLECTION BASE.f32 STREAMS
 *       PutStream every row i of BASE as document "v<i>" (text "v<i>", one
 *       chunk carrying the row as its client vector), over STREAMS
 *       connections in parallel. Prints rows, seconds, rows/s.
 *   grpc_search_load search ADDR COLLECTION QUERIES.f32 GT.i64 CONNS
 *       SECONDS EF NPROBE
 *       CONNS threads, each with its own connection, send Search(vector,
 *       k=10, ef_search=EF, nprobe=NPROBE) for the queries in turn (each
 *       thread starting at its own offset), one call in flight per
 *       connection, for SECONDS. Every answer must have grpc-status 0; its
 *       hits' doc ids give recall@10 against GT (the first 10 labels of
 *       each row). Prints calls, calls/s, recall@10, errors, p50/p99.
 *   grpc_search_load ingest ADDR COLLECTION TEXT_FILE DOC_BYTES STREAMS
 *       Cut TEXT_FILE into documents of about DOC_BYTES (at blank lines)
 *       and PutStream them (the server chunks, embeds and indexes them) over
 *       STREAMS connections. Prints documents, MB, seconds, MB/s.
 *
 * Requests are encoded once, before the clock starts, so the client spends
 * its time in the transport; answers are read with a minimal protobuf
 * reader. Vector and ground-truth files are vecfile.h's (gen_vectors,
 * bench_vindex), so the in-process benchmark and this one share data. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctxclient.h"
#include "vecfile.h"

#define K 10

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *fmt, const char *arg) {
  fprintf(stderr, "grpc_search_load: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n");
  exit(2);
}

/* A vecfile.h file read whole: n rows of d values of `size` bytes. */
typedef struct vecs {
  const uint8_t *base;
  size_t n, size;
  uint32_t d;
} vecs;

static void vecs_open(const char *path, const char magic[4], size_t size,
                      vecs *v) {
  uint64_t rows;
  v->base = vecfile_read(path, magic, size, &rows, &v->d);
  if (!v->base) die("cannot read %s (a vecfile.h file)", path);
  v->n = (size_t)rows;
  v->size = size;
}

static const uint8_t *vecs_row(const vecs *v, size_t i) {
  return v->base + i * v->d * v->size;
}

/* ---- protobuf writing ------------------------------------------------- */

typedef struct buf {
  uint8_t *p;
  size_t n, cap;
} buf;

static void b_need(buf *b, size_t more) {
  if (b->n + more <= b->cap) return;
  size_t cap = b->cap ? b->cap * 2 : 256;
  while (cap < b->n + more) cap *= 2;
  b->p = realloc(b->p, cap);
  if (!b->p) die("%s", "out of memory");
  b->cap = cap;
}

static void b_varint(buf *b, uint64_t v) {
  b_need(b, 10);
  while (v >= 0x80) {
    b->p[b->n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  b->p[b->n++] = (uint8_t)v;
}

static void b_bytes(buf *b, uint32_t field, const void *data, size_t len) {
  b_varint(b, field << 3 | 2);
  b_varint(b, len);
  b_need(b, len);
  memcpy(b->p + b->n, data, len);
  b->n += len;
}

static void b_uint(buf *b, uint32_t field, uint64_t v) {
  if (!v) return;
  b_varint(b, field << 3);
  b_varint(b, v);
}

/* ---- load --------------------------------------------------------------- */

typedef struct load_job {
  const char *addr, *coll;
  const vecs *base;    /* load: rows lo..hi of base */
  const char **texts;  /* ingest: documents lo..hi, texts[i] of lens[i] */
  const size_t *lens;
  size_t lo, hi;
  size_t acked, errors;
} load_job;

static void drain(ctxclient_stream *s, load_job *j, int wait_ms) {
  for (;;) {
    uint8_t *msg = NULL;
    size_t len = 0;
    int done = 0;
    ctxclient_status st;
    int rc = ctxclient_stream_recv(s, wait_ms, &msg, &len, &done, &st);
    if (rc == CTXCLIENT_EAGAIN || done) return;
    if (rc) die("PutStream failed: %s", st.message);
    /* PutAck { repeated string ids = 1; repeated PutError errors = 2; } */
    for (size_t off = 0; off < len;) {
      uint8_t key = msg[off++];
      uint64_t l = 0;
      int shift = 0;
      while (off < len) {
        uint8_t c = msg[off++];
        l |= (uint64_t)(c & 0x7f) << shift;
        shift += 7;
        if (!(c & 0x80)) break;
      }
      if (key == (1 << 3 | 2)) j->acked++;
      if (key == (2 << 3 | 2)) j->errors++;
      off += l;
    }
    free(msg);
  }
}

static void *load_main(void *arg) {
  load_job *j = arg;
  ctxclient *c;
  ctxclient_stream *s;
  ctxclient_status st;
  if (ctxclient_connect(j->addr, 10000, &c, &st) ||
      ctxclient_stream_open(c, "/ctxd.v1.Documents/PutStream", 0, &s, &st))
    die("connect: %s", st.message);
  buf doc = {0}, chunk = {0}, req = {0};
  char id[32];
  for (size_t i = j->lo; i < j->hi; i++) {
    int idl = snprintf(id, sizeof id, "%s%zu", j->texts ? "t" : "v", i);
    chunk.n = doc.n = req.n = 0;
    b_bytes(&doc, 1, id, (size_t)idl);
    if (j->texts) {
      b_bytes(&doc, 2, j->texts[i], j->lens[i]);
      b_bytes(&doc, 4, j->coll, strlen(j->coll));
    } else {
      b_uint(&chunk, 2, (uint64_t)idl); /* byte_end; byte_start 0 */
      b_bytes(&chunk, 3, vecs_row(j->base, i), j->base->d * 4);
      b_bytes(&doc, 2, id, (size_t)idl);
      b_bytes(&doc, 4, j->coll, strlen(j->coll));
      b_bytes(&doc, 5, chunk.p, chunk.n);
    }
    b_bytes(&req, 1, doc.p, doc.n);
    if (ctxclient_stream_send(s, req.p, req.n, &st)) die("send: %s", st.message);
    if ((i - j->lo) % 256 == 0) drain(s, j, 0);
  }
  if (ctxclient_stream_close_send(s, &st)) die("close: %s", st.message);
  for (;;) {
    uint8_t *msg = NULL;
    size_t len = 0;
    int done = 0;
    drain(s, j, 1000);
    int rc = ctxclient_stream_recv(s, 0, &msg, &len, &done, &st);
    free(msg);
    if (rc == CTXCLIENT_ESTATUS) die("PutStream: %s", st.message);
    if (done) break;
  }
  ctxclient_stream_free(s);
  ctxclient_close(c);
  free(doc.p);
  free(chunk.p);
  free(req.p);
  return NULL;
}

/* Run `streams` load jobs over rows/documents 0..n; returns seconds, sums
 * acked and errors. */
static double run_load(load_job proto, size_t n, int streams, size_t *acked,
                       size_t *errors) {
  load_job jobs[64];
  pthread_t th[64];
  if (streams < 1 || streams > 64) die("%s", "STREAMS must be 1..64");
  double t0 = now_s();
  for (int i = 0; i < streams; i++) {
    jobs[i] = proto;
    jobs[i].lo = n * (size_t)i / (size_t)streams;
    jobs[i].hi = n * (size_t)(i + 1) / (size_t)streams;
    pthread_create(&th[i], NULL, load_main, &jobs[i]);
  }
  *acked = *errors = 0;
  for (int i = 0; i < streams; i++) {
    pthread_join(th[i], NULL);
    *acked += jobs[i].acked;
    *errors += jobs[i].errors;
  }
  return now_s() - t0;
}

static int cmd_load(int argc, char **argv) {
  if (argc != 6) return 2;
  vecs base;
  vecs_open(argv[4], "F32V", 4, &base);
  load_job proto = {.addr = argv[2], .coll = argv[3], .base = &base};
  size_t acked, errors;
  double dt = run_load(proto, base.n, atoi(argv[5]), &acked, &errors);
  printf("rows=%zu acked=%zu errors=%zu seconds=%.2f rows_per_s=%.0f\n", base.n,
         acked, errors, dt, base.n / dt);
  return acked == base.n && errors == 0 ? 0 : 1;
}

static int cmd_ingest(int argc, char **argv) {
  if (argc != 7) return 2;
  int fd = open(argv[4], O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) die("cannot read %s", argv[4]);
  size_t size = (size_t)st.st_size;
  const char *text = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
  close(fd);
  if (text == MAP_FAILED) die("cannot map %s", argv[4]);
  size_t want = (size_t)atol(argv[5]);
  if (want < 1) die("bad DOC_BYTES %s", argv[5]);
  size_t cap = size / want + 2, n = 0;
  const char **texts = malloc(cap * sizeof *texts);
  size_t *lens = malloc(cap * sizeof *lens);
  /* Cut at the first blank line past `want` bytes (ASCII, so never inside
   * a UTF-8 character). */
  for (size_t pos = 0; pos < size;) {
    size_t end = pos + want < size ? pos + want : size;
    const char *nl = end < size ? memmem(text + end, size - end, "\n\n", 2) : NULL;
    end = nl ? (size_t)(nl - text) + 2 : size;
    if (n == cap) {
      cap *= 2;
      texts = realloc(texts, cap * sizeof *texts);
      lens = realloc(lens, cap * sizeof *lens);
    }
    texts[n] = text + pos;
    lens[n++] = end - pos;
    pos = end;
  }
  load_job proto = {.addr = argv[2], .coll = argv[3], .texts = texts, .lens = lens};
  size_t acked, errors;
  double dt = run_load(proto, n, atoi(argv[6]), &acked, &errors);
  double mb = size / 1e6;
  printf("documents=%zu acked=%zu errors=%zu mb=%.1f seconds=%.2f mb_per_s=%.2f\n",
         n, acked, errors, mb, dt, mb / dt);
  return acked == n && errors == 0 ? 0 : 1;
}

/* ---- search ---------------------------------------------------------- */

typedef struct search_job {
  const char *addr;
  const buf *reqs; /* one encoded SearchRequest per query */
  const vecs *gt;
  size_t nq, start;
  double until;
  uint64_t calls, errors, found;
  double *lat;
  size_t n_lat, cap_lat;
  char err[1100];
} search_job;

/* Read the doc ids of a SearchResponse ("v<i>" -> i) into ids[]; the count
 * (<= K), or -1 if it does not parse. */
static int parse_hits(const uint8_t *p, size_t n, long *ids) {
  int got = 0;
  /* hits (1) > chunk (1) > doc_id (1) */
  for (size_t off = 0; off < n;) {
    if (p[off++] != (1 << 3 | 2)) return -1;
    uint64_t hl = 0;
    for (int sh = 0; off < n; sh += 7) {
      uint8_t c = p[off++];
      hl |= (uint64_t)(c & 0x7f) << sh;
      if (!(c & 0x80)) break;
    }
    size_t end = off + hl;
    if (end > n) return -1;
    if (off < end && p[off] == (1 << 3 | 2) && off + 4 < end &&
        p[off + 2] == (1 << 3 | 2) && p[off + 4] == 'v' && got < K) {
      size_t il = p[off + 3];
      char tmp[24];
      if (il >= 2 && il < sizeof tmp) {
        memcpy(tmp, p + off + 5, il - 1);
        tmp[il - 1] = 0;
        ids[got++] = atol(tmp);
      }
    }
    off = end;
  }
  return got;
}

static void *search_main(void *arg) {
  search_job *j = arg;
  ctxclient *c;
  ctxclient_status st;
  if (ctxclient_connect(j->addr, 10000, &c, &st)) die("connect: %s", st.message);
  size_t q = j->start;
  while (now_s() < j->until) {
    uint8_t *resp = NULL;
    size_t rl = 0;
    double t0 = now_s();
    int rc = ctxclient_unary(c, "/ctxd.v1.Retrieval/Search", j->reqs[q].p,
                             j->reqs[q].n, 10000, &resp, &rl, &st);
    double dt = now_s() - t0;
    if (j->n_lat == j->cap_lat) {
      j->cap_lat = j->cap_lat ? j->cap_lat * 2 : 4096;
      j->lat = realloc(j->lat, j->cap_lat * sizeof *j->lat);
    }
    j->lat[j->n_lat++] = dt;
    j->calls++;
    long ids[K];
    int n = rc == 0 ? parse_hits(resp, rl, ids) : -1;
    if (n < 0) {
      if (!j->errors++)
        snprintf(j->err, sizeof j->err, "%s: %s", ctxclient_status_name(st.code),
                 rc ? st.message : "unparsable response");
    } else {
      const int64_t *g = (const int64_t *)vecs_row(j->gt, q);
      for (int a = 0; a < n; a++)
        for (int b = 0; b < K; b++)
          if (ids[a] == g[b]) {
            j->found++;
            break;
          }
    }
    free(resp);
    q = (q + 1) % j->nq;
  }
  ctxclient_close(c);
  return NULL;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int cmd_search(int argc, char **argv) {
  if (argc != 10) return 2;
  const char *addr = argv[2], *coll = argv[3];
  vecs qv, gt;
  vecs_open(argv[4], "F32V", 4, &qv);
  vecs_open(argv[5], "I64K", 8, &gt);
  int conns = atoi(argv[6]);
  double secs = atof(argv[7]);
  unsigned ef = (unsigned)atoi(argv[8]), nprobe = (unsigned)atoi(argv[9]);
  if (gt.n < qv.n || gt.d < K) die("%s: too few ground-truth rows", argv[5]);
  if (conns < 1 || conns > 256) die("bad CONNS %s", argv[6]);
  buf *reqs = calloc(qv.n, sizeof *reqs);
  for (size_t i = 0; i < qv.n; i++) {
    b_bytes(&reqs[i], 2, vecs_row(&qv, i), qv.d * 4);
    b_uint(&reqs[i], 3, K);
    b_bytes(&reqs[i], 4, "vector", 6);
    b_bytes(&reqs[i], 5, coll, strlen(coll));
    b_uint(&reqs[i], 9, ef);
    b_uint(&reqs[i], 10, nprobe);
  }
  search_job *jobs = calloc((size_t)conns, sizeof *jobs);
  pthread_t *th = calloc((size_t)conns, sizeof *th);
  double t0 = now_s();
  for (int i = 0; i < conns; i++) {
    jobs[i].addr = addr;
    jobs[i].reqs = reqs;
    jobs[i].gt = &gt;
    jobs[i].nq = qv.n;
    jobs[i].start = qv.n * (size_t)i / (size_t)conns;
    jobs[i].until = t0 + secs;
    pthread_create(&th[i], NULL, search_main, &jobs[i]);
  }
  uint64_t calls = 0, errors = 0, found = 0;
  size_t n_lat = 0;
  const char *err = "";
  for (int i = 0; i < conns; i++) {
    pthread_join(th[i], NULL);
    calls += jobs[i].calls;
    errors += jobs[i].errors;
    found += jobs[i].found;
    n_lat += jobs[i].n_lat;
    if (jobs[i].errors && !*err) err = jobs[i].err;
  }
  double dt = now_s() - t0;
  double *lat = malloc((n_lat ? n_lat : 1) * sizeof *lat);
  size_t m = 0;
  for (int i = 0; i < conns; i++) {
    memcpy(lat + m, jobs[i].lat, jobs[i].n_lat * sizeof *lat);
    m += jobs[i].n_lat;
  }
  qsort(lat, n_lat, sizeof *lat, cmp_d);
  printf("calls=%llu seconds=%.2f calls_per_s=%.1f recall_at_10=%.4f errors=%llu "
         "p50_us=%.0f p99_us=%.0f\n",
         (unsigned long long)calls, dt, calls / dt,
         calls ? (double)found / ((double)(calls - errors) * K) : 0.0,
         (unsigned long long)errors, n_lat ? lat[n_lat / 2] * 1e6 : 0.0,
         n_lat ? lat[n_lat * 99 / 100] * 1e6 : 0.0);
  if (errors) fprintf(stderr, "first error: %s\n", err);
  return errors ? 1 : 0;
}

int main(int argc, char **argv) {
  int rc = 2;
  if (argc > 1 && strcmp(argv[1], "load") == 0) rc = cmd_load(argc, argv);
  if (argc > 1 && strcmp(argv[1], "search") == 0) rc = cmd_search(argc, argv);
  if (argc > 1 && strcmp(argv[1], "ingest") == 0) rc = cmd_ingest(argc, argv);
  if (rc == 2)
    fprintf(stderr,
            "usage: grpc_search_load load ADDR COLLECTION BASE.f32 STREAMS\n"
            "       grpc_search_load search ADDR COLLECTION QUERIES.f32 "
            "GT.i64 CONNS SECONDS EF NPROBE\n"
            "       grpc_search_load ingest ADDR COLLECTION TEXT_FILE DOC_BYTES "
            "STREAMS\n");
  return rc;
}
