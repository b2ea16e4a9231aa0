/* order_knn.c - corpus ordering, first steps: document vectors (embedding
 * what is missing, on worker threads) and the kNN graph through vindex
 * (exact Flat for small corpora, IVF with a measured nprobe above), plus the
 * graph's checkpoint file. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "order_impl.h"
#include "vindex.h"

/* ---- vectors ---------------------------------------------------------------- */

#define EMBED_BATCH 1024
#define EMBED_BATCH_BYTES ((size_t)64 << 20)

typedef struct embed_slice {
  const embedder *m;
  const char *const *texts;
  const size_t *lens;
  size_t n;
  float *out;
  int rc;
  ctxd_error e;
} embed_slice;

static void *embed_worker(void *arg) {
  embed_slice *s = arg;
  s->rc = s->n ? embed_texts(s->m, s->texts, s->lens, s->n, s->out, &s->e) : 0;
  return NULL;
}

/* Embed texts[0..n) into out[n*dim], split over `threads` threads. */
static int embed_parallel(const embedder *m, const char *const *texts,
                          const size_t *lens, size_t n, float *out,
                          unsigned threads, ctxd_error *e) {
  embed_slice sl[64];
  pthread_t th[64];
  int started[64] = {0};
  if (threads > 64) threads = 64;
  if (threads > n) threads = (unsigned)n;
  if (threads == 0) threads = 1;
  size_t per = (n + threads - 1) / threads;
  for (unsigned t = 0; t < threads; t++) {
    size_t a = t * per < n ? t * per : n, b = a + per < n ? a + per : n;
    sl[t] = (embed_slice){m, texts + a, lens + a, b - a, out + a * m->dim, 0,
                          {0}};
    if (t > 0 && pthread_create(&th[t], NULL, embed_worker, &sl[t]) == 0)
      started[t] = 1;
    else if (t > 0)
      embed_worker(&sl[t]);
  }
  embed_worker(&sl[0]);
  int rc = 0;
  for (unsigned t = 0; t < threads; t++) {
    if (started[t]) pthread_join(th[t], NULL);
    if (sl[t].rc && !rc) {
      rc = sl[t].rc;
      if (e) *e = sl[t].e;
    }
  }
  return rc;
}

void order_normalize(float *x, uint64_t n, uint32_t dim,
                     const uint8_t *only) {
  for (uint64_t i = 0; i < n; i++) {
    if (only && !only[i]) continue;
    float *v = x + i * dim;
    double s = 0;
    for (uint32_t j = 0; j < dim; j++) s += (double)v[j] * v[j];
    if (s == 0 || fabs(s - 1) <= 1e-6) continue;
    float r = (float)(1 / sqrt(s));
    for (uint32_t j = 0; j < dim; j++) v[j] *= r;
  }
}

int order_prepare_vectors(order_input *in, const order_opts *o, float **owned,
                          ctxd_error *e) {
  const embedder *m = o->embedder;
  char *arena = NULL;
  const char **texts = NULL;
  size_t *lens = NULL;
  uint64_t *rows = NULL;
  float *out = NULL;
  int rc = 0;
  *owned = NULL;
  uint64_t missing = 0;
  if (!in->vectors)
    missing = in->n;
  else if (in->has_vector)
    for (uint64_t i = 0; i < in->n; i++) missing += !in->has_vector[i];
  if (missing) {
    if (!m)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "%llu documents have no vector and no embedder is "
                         "configured",
                         (unsigned long long)missing);
    if (in->vectors && m->dim != in->dim)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "given vectors have %u dimensions but the embedder "
                         "(%s) makes %u",
                         in->dim, m->name, m->dim);
    if (!in->vectors) {
      if (in->n > SIZE_MAX / sizeof(float) / m->dim)
        return ctxd_seterr(e, CTXD_ENOMEM, "too many vectors");
      *owned = malloc(in->n * m->dim * sizeof(float));
      if (!*owned && in->n)
        return ctxd_seterr(e, CTXD_ENOMEM,
                           "out of memory for %llu vectors of %u",
                           (unsigned long long)in->n, m->dim);
      in->vectors = *owned;
      in->dim = m->dim;
      in->has_vector = NULL;
    }
    texts = malloc(EMBED_BATCH * sizeof *texts);
    lens = malloc(EMBED_BATCH * sizeof *lens);
    rows = malloc(EMBED_BATCH * sizeof *rows);
    out = malloc((size_t)EMBED_BATCH * m->dim * sizeof *out);
    arena = malloc(EMBED_BATCH_BYTES);
    if (!texts || !lens || !rows || !out || !arena) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for embedding");
      goto fail;
    }
    unsigned threads = order_threads(o);
    uint64_t done = 0, i = 0;
    const uint8_t *hv = *owned ? NULL : in->has_vector;
    while (i < in->n) {
      size_t cnt = 0, used = 0;
      char *big = NULL; /* a text larger than the arena, batched alone */
      for (; i < in->n && cnt < EMBED_BATCH; i++) {
        if (hv && hv[i]) continue;
        const char *t;
        size_t len;
        if ((rc = order_text(in, i, &t, &len, e))) goto fail;
        if (!t) {
          rc = ctxd_seterr(e, CTXD_EINVAL,
                           "document \"%.200s\" has neither a vector nor a "
                           "text",
                           in->ids[i]);
          goto fail;
        }
        if (len > EMBED_BATCH_BYTES - used) {
          if (cnt > 0) break; /* next batch */
          big = malloc(len ? len : 1);
          if (!big) {
            rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for a text");
            goto fail;
          }
          memcpy(big, t, len);
          texts[cnt] = big;
        } else {
          memcpy(arena + used, t, len);
          texts[cnt] = arena + used;
          used += len;
        }
        lens[cnt] = len;
        rows[cnt++] = i;
        if (big) {
          i++;
          break;
        }
      }
      rc = embed_parallel(m, texts, lens, cnt, out, threads, e);
      free(big);
      if (rc) goto fail;
      for (size_t j = 0; j < cnt; j++)
        memcpy(in->vectors + rows[j] * m->dim, out + j * m->dim,
               m->dim * sizeof(float));
      done += cnt;
      order_report(o, ORDER_PHASE_EMBED, done, missing);
      if (order_cancelled(o->cancel)) {
        rc = ctxd_seterr(e, CTXD_ECANCELED, "cancelled while embedding");
        goto fail;
      }
    }
  }
  if (in->vectors) order_normalize(in->vectors, in->n, in->dim, NULL);
fail:
  free(arena);
  free(texts);
  free(lens);
  free(rows);
  free(out);
  if (rc && *owned) {
    free(*owned);
    *owned = NULL;
    in->vectors = NULL;
    in->dim = 0;
  }
  return rc;
}

/* ---- the graph -------------------------------------------------------------- */

int order_knn_alloc(uint64_t n, uint32_t k, order_knn **out, ctxd_error *e) {
  *out = NULL;
  if (k == 0 || k > ORDER_K_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "k must be 1..%d (got %u)", ORDER_K_MAX,
                       k);
  if (n > ORDER_DOCS_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "more than %llu documents",
                       (unsigned long long)ORDER_DOCS_MAX);
  order_knn *g = calloc(1, sizeof *g);
  if (!g) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  g->n = n;
  g->k = k;
  size_t cells = (size_t)n * k;
  g->nbr = malloc((cells ? cells : 1) * sizeof *g->nbr);
  g->sim = calloc(cells ? cells : 1, sizeof *g->sim);
  if (!g->nbr || !g->sim) {
    order_knn_free(g);
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for a %llu x %u graph",
                       (unsigned long long)n, k);
  }
  memset(g->nbr, 0xff, (cells ? cells : 1) * sizeof *g->nbr);
  snprintf(g->method, sizeof g->method, "none");
  g->recall = 1;
  *out = g;
  return 0;
}

void order_knn_free(order_knn *g) {
  if (!g) return;
  free(g->nbr);
  free(g->sim);
  free(g);
}

struct order_knn_index {
  vindex *v;
  uint64_t n;
  uint32_t dim;
  uint32_t nprobe; /* 0: Flat */
  float recall;
  char method[64];
};

void order_knn_index_free(order_knn_index *x) {
  if (!x) return;
  vindex_free(x->v);
  free(x);
}

#define KNN_BATCH 2048
#define ADD_BATCH 65536

/* Recall@k of got against truth (q rows of k labels; -1 = none). */
static float recall_of(const int64_t *truth, const int64_t *got, uint64_t q,
                       uint32_t k) {
  uint64_t hit = 0, all = 0;
  for (uint64_t i = 0; i < q; i++)
    for (uint32_t a = 0; a < k; a++) {
      int64_t t = truth[i * k + a];
      if (t < 0) continue;
      all++;
      for (uint32_t b = 0; b < k; b++)
        if (got[i * k + b] == t) {
          hit++;
          break;
        }
    }
  return all ? (float)hit / (float)all : 1.0f;
}

/* Seeded sample of m distinct rows of 0..n-1, in increasing order. */
static int sample_rows(uint64_t n, uint64_t m, uint64_t seed, uint32_t **out,
                       ctxd_error *e) {
  uint32_t *perm = malloc((n ? n : 1) * sizeof *perm);
  if (!perm) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for a sample");
  for (uint64_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
  uint64_t st = seed ^ 0x5A4D504C45ull;
  for (uint64_t i = 0; i < m; i++) {
    uint64_t j = i + order_rand_below(&st, n - i);
    uint32_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
  }
  *out = perm; /* the first m entries; callers only read those */
  return 0;
}

/* Choose nprobe: the smallest power of two whose recall@k on a sample of
 * queries, against an exhaustive scan of every list, reaches o->recall. */
static int choose_nprobe(order_knn_index *x, const order_input *in,
                         const order_opts *o, uint32_t nlist, uint32_t k,
                         ctxd_error *e) {
  uint64_t q = in->n < ORDER_RECALL_QUERIES ? in->n : ORDER_RECALL_QUERIES;
  uint32_t *pick = NULL;
  float *qv = NULL, *sc = NULL;
  int64_t *self = NULL, *truth = NULL, *got = NULL;
  int rc;
  unsigned threads = order_threads(o);
  if ((rc = sample_rows(in->n, q, o->seed + 1, &pick, e))) return rc;
  qv = malloc(q * in->dim * sizeof *qv);
  self = malloc(q * sizeof *self);
  sc = malloc(q * k * sizeof *sc);
  truth = malloc(q * k * sizeof *truth);
  got = malloc(q * k * sizeof *got);
  if (!qv || !self || !sc || !truth || !got) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto out;
  }
  for (uint64_t i = 0; i < q; i++) {
    memcpy(qv + i * in->dim, in->vectors + (uint64_t)pick[i] * in->dim,
           in->dim * sizeof *qv);
    self[i] = pick[i];
  }
  vindex_params p = {0};
  p.nprobe = nlist;
  if ((rc = vindex_search_batched(x->v, qv, q, self, k, &p, threads, sc, truth,
                                  NULL, NULL, e)))
    goto out;
  uint32_t cap = o->nprobe_max < nlist ? o->nprobe_max : nlist;
  if (cap == 0) cap = 1;
  for (uint32_t np = 1;; np = np * 2 > cap ? cap : np * 2) {
    if (order_cancelled(o->cancel)) {
      rc = ctxd_seterr(e, CTXD_ECANCELED, "cancelled while choosing nprobe");
      goto out;
    }
    p.nprobe = np;
    if ((rc = vindex_search_batched(x->v, qv, q, self, k, &p, threads, sc, got,
                                    NULL, NULL, e)))
      goto out;
    x->nprobe = np;
    x->recall = recall_of(truth, got, q, k);
    if (x->recall >= o->recall || np >= cap) break;
  }
out:
  free(pick);
  free(qv);
  free(self);
  free(sc);
  free(truth);
  free(got);
  return rc;
}

static int add_all(order_knn_index *x, const order_input *in,
                   const order_opts *o, ctxd_error *e) {
  int64_t *labels = malloc(ADD_BATCH * sizeof *labels);
  int rc = 0;
  if (!labels) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  for (uint64_t a = 0; a < in->n; a += ADD_BATCH) {
    uint64_t cnt = in->n - a < ADD_BATCH ? in->n - a : ADD_BATCH;
    for (uint64_t i = 0; i < cnt; i++) labels[i] = (int64_t)(a + i);
    if ((rc = vindex_add(x->v, in->vectors + a * in->dim, labels, cnt, e)))
      break;
    order_report(o, ORDER_PHASE_INDEX, a + cnt, in->n);
    if (order_cancelled(o->cancel)) {
      rc = ctxd_seterr(e, CTXD_ECANCELED, "cancelled while indexing");
      break;
    }
  }
  free(labels);
  return rc;
}

int order_knn_index_build(const order_input *in, const order_opts *o,
                          order_knn_index **out, ctxd_error *e) {
  order_knn_index *x = NULL;
  uint32_t *pick = NULL;
  float *sample = NULL;
  int rc;
  *out = NULL;
  if (!in->vectors || in->dim == 0 || in->n == 0)
    return ctxd_seterr(e, CTXD_EINVAL, "no vectors to index");
  x = calloc(1, sizeof *x);
  if (!x) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  x->n = in->n;
  x->dim = in->dim;
  x->recall = 1;
  uint32_t k = order_knn_k(in->n, o->k);
  if (in->n <= o->exact_max || in->n < 2 * 39) {
    snprintf(x->method, sizeof x->method, "Flat");
    if ((rc = vindex_create("Flat", in->dim, VINDEX_IP, &x->v, e))) goto fail;
    if ((rc = add_all(x, in, o, e))) goto fail;
    *out = x;
    return 0;
  }
  uint64_t nlist = o->nlist ? o->nlist : (uint64_t)(4.0 * sqrt((double)in->n));
  if (nlist > in->n / 39) nlist = in->n / 39;
  if (nlist < 1) nlist = 1;
  char spec[48];
  snprintf(spec, sizeof spec, "IVF%llu,Flat", (unsigned long long)nlist);
  if ((rc = vindex_create(spec, in->dim, VINDEX_IP, &x->v, e))) goto fail;
  /* Train on a seeded sample: FAISS wants 39 points per centroid; more
   * makes k-means slower without changing the lists much. */
  vindex_info info;
  vindex_get_info(x->v, &info);
  uint64_t ts = 39 * nlist;
  if (info.min_train > ts) ts = info.min_train;
  if (ts > in->n) ts = in->n;
  order_report(o, ORDER_PHASE_TRAIN, 0, 1);
  if ((rc = sample_rows(in->n, ts, o->seed, &pick, e))) goto fail;
  sample = malloc(ts * in->dim * sizeof *sample);
  if (!sample) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for a training sample");
    goto fail;
  }
  for (uint64_t i = 0; i < ts; i++)
    memcpy(sample + i * in->dim, in->vectors + (uint64_t)pick[i] * in->dim,
           in->dim * sizeof *sample);
  free(pick);
  pick = NULL;
  if ((rc = vindex_train(x->v, sample, ts, e))) goto fail;
  free(sample);
  sample = NULL;
  if (order_cancelled(o->cancel)) {
    rc = ctxd_seterr(e, CTXD_ECANCELED, "cancelled after training");
    goto fail;
  }
  if ((rc = add_all(x, in, o, e))) goto fail;
  if (o->nprobe) {
    x->nprobe = o->nprobe < nlist ? o->nprobe : (uint32_t)nlist;
    x->recall = NAN; /* not measured */
  } else if ((rc = choose_nprobe(x, in, o, (uint32_t)nlist, k, e))) {
    goto fail;
  }
  order_report(o, ORDER_PHASE_TRAIN, 1, 1);
  snprintf(x->method, sizeof x->method, "%s nprobe=%u", spec, x->nprobe);
  *out = x;
  return 0;
fail:
  free(pick);
  free(sample);
  order_knn_index_free(x);
  return rc;
}

int order_knn_search(const order_knn_index *x, const order_input *in,
                     uint64_t lo, uint64_t hi, const order_opts *o,
                     order_knn *g, ctxd_error *e) {
  float *sc = NULL;
  int64_t *lab = NULL, *self = NULL;
  int rc = 0;
  if (lo > hi || hi > in->n || g->n != in->n || x->n != in->n ||
      x->dim != in->dim)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "kNN rows [%llu, %llu) do not fit %llu documents",
                       (unsigned long long)lo, (unsigned long long)hi,
                       (unsigned long long)in->n);
  uint32_t k = g->k;
  snprintf(g->method, sizeof g->method, "%s", x->method);
  g->nprobe = x->nprobe;
  g->recall = x->recall;
  if (in->n < 2) return 0; /* no neighbours to find */
  sc = malloc((size_t)KNN_BATCH * k * sizeof *sc);
  lab = malloc((size_t)KNN_BATCH * k * sizeof *lab);
  self = malloc(KNN_BATCH * sizeof *self);
  if (!sc || !lab || !self) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto out;
  }
  vindex_params p = {0};
  p.nprobe = x->nprobe;
  unsigned threads = order_threads(o);
  for (uint64_t a = lo; a < hi; a += KNN_BATCH) {
    if (order_cancelled(o->cancel)) {
      rc = ctxd_seterr(e, CTXD_ECANCELED, "cancelled after %llu of %llu kNN "
                       "queries",
                       (unsigned long long)(a - lo),
                       (unsigned long long)(hi - lo));
      goto out;
    }
    uint64_t cnt = hi - a < KNN_BATCH ? hi - a : KNN_BATCH;
    for (uint64_t i = 0; i < cnt; i++) self[i] = (int64_t)(a + i);
    if ((rc = vindex_search_batched(x->v, in->vectors + a * in->dim, cnt, self,
                                    k, &p, threads, sc, lab, NULL, NULL, e)))
      goto out;
    for (uint64_t c = 0; c < cnt * k; c++) {
      uint64_t cell = a * k + c;
      int64_t l = lab[c];
      if (l < 0 || (uint64_t)l >= in->n || (uint64_t)l == a + c / k) {
        g->nbr[cell] = ORDER_NONE;
        g->sim[cell] = 0;
      } else {
        g->nbr[cell] = (uint32_t)l;
        g->sim[cell] = sc[c];
      }
    }
    order_report(o, ORDER_PHASE_KNN, a + cnt - lo, hi - lo);
  }
out:
  free(sc);
  free(lab);
  free(self);
  return rc;
}

int order_knn_build(const order_input *in, const order_opts *o,
                    order_knn **out, ctxd_error *e) {
  order_knn_index *x = NULL;
  order_knn *g = NULL;
  int rc;
  *out = NULL;
  uint32_t k = order_knn_k(in->n, o->k);
  if ((rc = order_knn_alloc(in->n, k, &g, e))) return rc;
  if (in->n >= 2) {
    if ((rc = order_knn_index_build(in, o, &x, e))) goto fail;
    if ((rc = order_knn_search(x, in, 0, in->n, o, g, e))) goto fail;
    order_knn_index_free(x);
  }
  *out = g;
  return 0;
fail:
  order_knn_index_free(x);
  order_knn_free(g);
  return rc;
}

/* ---- checkpoint ------------------------------------------------------------- */

typedef struct knn_hdr {
  uint32_t version, k;
  uint64_t n, fingerprint;
  uint32_t nprobe;
  float recall;
  char method[64];
} knn_hdr;

static const char KNN_MAGIC[8] = {'C', 'T', 'X', 'D', 'K', 'N', 'N', '1'};

int order_knn_save(const order_knn *g, const char *path, uint64_t fingerprint,
                   ctxd_error *e) {
  knn_hdr h;
  memset(&h, 0, sizeof h);
  h.version = 1;
  h.k = g->k;
  h.n = g->n;
  h.fingerprint = fingerprint;
  h.nprobe = g->nprobe;
  h.recall = g->recall;
  memcpy(h.method, g->method, sizeof h.method);
  size_t cells = (size_t)g->n * g->k;
  order_ckpt_part parts[2] = {{g->nbr, cells * sizeof *g->nbr},
                              {g->sim, cells * sizeof *g->sim}};
  return order_ckpt_write(path, KNN_MAGIC, &h, sizeof h, parts, 2, e);
}

int order_knn_load(const char *path, uint64_t n, uint32_t k,
                   uint64_t fingerprint, order_knn **out, ctxd_error *e) {
  order_ckpt_reader r = {0};
  order_knn *g = NULL;
  knn_hdr h;
  int rc;
  *out = NULL;
  if ((rc = order_ckpt_open(&r, path, KNN_MAGIC, &h, sizeof h, e))) return rc;
  if (h.version != 1 || h.n != n || h.k != k || h.fingerprint != fingerprint) {
    rc = ctxd_seterr(e, CTXD_EPRECOND,
                     "%s is for other data (n %llu, k %u; wanted n %llu, k %u, "
                     "or another fingerprint)",
                     path, (unsigned long long)h.n, h.k, (unsigned long long)n,
                     k);
    goto fail;
  }
  if ((rc = order_knn_alloc(n, k, &g, e))) goto fail;
  size_t cells = (size_t)n * k;
  order_ckpt_part parts[2] = {{g->nbr, cells * sizeof *g->nbr},
                              {g->sim, cells * sizeof *g->sim}};
  if ((rc = order_ckpt_read_parts(&r, parts, 2, e))) goto fail;
  for (size_t c = 0; c < cells; c++)
    if (g->nbr[c] != ORDER_NONE && (g->nbr[c] >= n || g->nbr[c] == c / k)) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT, "%s: bad neighbour %u in row %zu",
                       path, g->nbr[c], c / k);
      goto fail;
    }
  h.method[sizeof h.method - 1] = 0;
  memcpy(g->method, h.method, sizeof g->method);
  g->nprobe = h.nprobe;
  g->recall = h.recall;
  order_ckpt_close(&r);
  *out = g;
  return 0;
fail:
  order_ckpt_close(&r);
  order_knn_free(g);
  return rc;
}
