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
      if ((rc = order_step(o, ORDER_PHASE_EMBED, done, missing, e))) goto fail;
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

/* Exact for small corpora: one Flat index of every vector. Above
 * o->exact_max, an inverted file searched list by list: spherical k-means
 * centroids (trained on a sample), every document's nearest lists, and for
 * each list one exact search of the documents probing it against the
 * list's members - a matrix product, where a per-query IVF scan is not.
 * Both go through vindex "Flat" indexes (BLAS, OpenMP). */
struct order_knn_index {
  uint64_t n;
  uint32_t dim;
  vindex *flat;       /* exact: every vector */
  uint32_t nlist;     /* IVF: lists */
  uint32_t nprobe;    /* lists each query searches (0: exact) */
  uint32_t t;         /* lists stored per document in probe */
  float *centroids;   /* nlist x dim, normalised */
  uint64_t *list_off; /* nlist + 1 */
  uint32_t *list_doc; /* documents by nearest list */
  uint32_t *probe;    /* n x t: each document's nearest lists, best first */
  float recall;
  char method[64];
};

void order_knn_index_free(order_knn_index *x) {
  if (!x) return;
  vindex_free(x->flat);
  free(x->centroids);
  free(x->list_off);
  free(x->list_doc);
  free(x->probe);
  free(x);
}

#define KNN_BATCH 4096
#define ADD_BATCH 65536
#define KMEANS_ITERS 10
#define KMEANS_SAMPLE 32 /* sample points per list */

/* Seeded sample of m distinct rows of 0..n-1 (the first m of *out). */
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
  *out = perm;
  return 0;
}

static void gather(float *dst, const float *vec, uint32_t dim,
                   const uint32_t *rows, uint64_t n) {
  for (uint64_t i = 0; i < n; i++)
    memcpy(dst + i * dim, vec + (uint64_t)rows[i] * dim, dim * sizeof *dst);
}

/* A Flat index of n rows of x labelled labels[i] (or i when NULL). */
static int flat_of(const float *x, uint64_t n, uint32_t dim,
                   const uint32_t *labels, vindex **out, ctxd_error *e) {
  int64_t *lab = malloc((n ? n : 1) * sizeof *lab);
  int rc;
  if (!lab) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  for (uint64_t i = 0; i < n; i++) lab[i] = labels ? labels[i] : (int64_t)i;
  if ((rc = vindex_create("Flat", dim, VINDEX_IP, out, e)) == 0 &&
      (rc = vindex_add(*out, x, lab, n, e)) != 0) {
    vindex_free(*out);
    *out = NULL;
  }
  free(lab);
  return rc;
}

/* Spherical k-means: x->nlist centroids from a seeded sample. */
static int kmeans(order_knn_index *x, const order_input *in,
                  const order_opts *o, ctxd_error *e) {
  uint32_t c = x->nlist, d = in->dim;
  uint64_t s = (uint64_t)KMEANS_SAMPLE * c;
  if (s > in->n) s = in->n;
  uint32_t *pick = NULL, *assign = NULL, *count = NULL;
  float *sx = NULL, *sc = NULL;
  double *sum = NULL;
  int64_t *lab = NULL;
  vindex *v = NULL;
  int rc;
  unsigned threads = order_threads(o);
  if ((rc = sample_rows(in->n, s, o->seed, &pick, e))) return rc;
  sx = malloc(s * d * sizeof *sx);
  sc = malloc(s * sizeof *sc);
  lab = malloc(s * sizeof *lab);
  assign = malloc(s * sizeof *assign);
  count = malloc(c * sizeof *count);
  sum = malloc((size_t)c * d * sizeof *sum);
  x->centroids = malloc((size_t)c * d * sizeof *x->centroids);
  if (!sx || !sc || !lab || !assign || !count || !sum || !x->centroids) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for k-means");
    goto out;
  }
  gather(sx, in->vectors, d, pick, s);
  /* the first c sample points (a seeded random choice) start as centroids */
  memcpy(x->centroids, sx, (size_t)c * d * sizeof *sx);
  for (int it = 0; it < KMEANS_ITERS; it++) {
    if ((rc = order_step(o, ORDER_PHASE_TRAIN, (uint64_t)it, KMEANS_ITERS + 1,
                         e)))
      goto out;
    if ((rc = flat_of(x->centroids, c, d, NULL, &v, e))) goto out;
    rc = vindex_search_batched(v, sx, s, NULL, 1, NULL, threads, sc, lab, NULL,
                               NULL, e);
    vindex_free(v);
    v = NULL;
    if (rc) goto out;
    memset(count, 0, c * sizeof *count);
    memset(sum, 0, (size_t)c * d * sizeof *sum);
    for (uint64_t i = 0; i < s; i++) {
      uint32_t a = lab[i] >= 0 ? (uint32_t)lab[i] : 0;
      assign[i] = a;
      count[a]++;
      for (uint32_t j = 0; j < d; j++) sum[(size_t)a * d + j] += sx[i * d + j];
    }
    /* an empty list takes the sample point worst served by its centroid */
    for (uint32_t a = 0; a < c; a++) {
      float *cen = x->centroids + (size_t)a * d;
      if (count[a] == 0) {
        uint64_t worst = 0;
        for (uint64_t i = 1; i < s; i++)
          if (sc[i] < sc[worst]) worst = i;
        memcpy(cen, sx + worst * d, d * sizeof *cen);
        sc[worst] = 2; /* not again */
        continue;
      }
      double nn = 0;
      for (uint32_t j = 0; j < d; j++)
        nn += sum[(size_t)a * d + j] * sum[(size_t)a * d + j];
      double r = nn > 0 ? 1 / sqrt(nn) : 0;
      for (uint32_t j = 0; j < d; j++)
        cen[j] = (float)(sum[(size_t)a * d + j] * r);
    }
  }
out:
  vindex_free(v);
  free(pick);
  free(sx);
  free(sc);
  free(lab);
  free(assign);
  free(count);
  free(sum);
  return rc;
}

/* probe[i*t ..] = document i's t nearest lists. */
static int assign_lists(order_knn_index *x, const order_input *in,
                        const order_opts *o, uint32_t t, ctxd_error *e) {
  vindex *v = NULL;
  float *sc = malloc((size_t)ADD_BATCH * t * sizeof *sc);
  int64_t *lab = malloc((size_t)ADD_BATCH * t * sizeof *lab);
  uint32_t *probe = malloc(in->n * t * sizeof *probe);
  int rc = 0;
  unsigned threads = order_threads(o);
  if (!sc || !lab || !probe) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for list assignment");
    goto out;
  }
  if ((rc = flat_of(x->centroids, x->nlist, in->dim, NULL, &v, e))) goto out;
  for (uint64_t a = 0; a < in->n; a += ADD_BATCH) {
    uint64_t cnt = in->n - a < ADD_BATCH ? in->n - a : ADD_BATCH;
    if ((rc = vindex_search_batched(v, in->vectors + a * in->dim, cnt, NULL, t,
                                    NULL, threads, sc, lab, NULL, NULL, e)))
      goto out;
    for (uint64_t i = 0; i < cnt * t; i++)
      probe[a * t + i] = lab[i] >= 0 ? (uint32_t)lab[i] : 0;
    if ((rc = order_step(o, ORDER_PHASE_INDEX, a + cnt, in->n, e))) goto out;
  }
  free(x->probe);
  x->probe = probe;
  probe = NULL;
  x->t = t;
out:
  vindex_free(v);
  free(sc);
  free(lab);
  free(probe);
  return rc;
}

/* Documents by nearest list (CSR). */
static int build_lists(order_knn_index *x, ctxd_error *e) {
  x->list_off = calloc(x->nlist + 1, sizeof *x->list_off);
  x->list_doc = malloc(x->n * sizeof *x->list_doc);
  if (!x->list_off || !x->list_doc)
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for lists");
  for (uint64_t i = 0; i < x->n; i++) x->list_off[x->probe[i * x->t] + 1]++;
  for (uint32_t c = 0; c < x->nlist; c++) x->list_off[c + 1] += x->list_off[c];
  uint64_t *cur = malloc(x->nlist * sizeof *cur);
  if (!cur) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for lists");
  memcpy(cur, x->list_off, x->nlist * sizeof *cur);
  for (uint64_t i = 0; i < x->n; i++)
    x->list_doc[cur[x->probe[i * x->t]]++] = (uint32_t)i;
  free(cur);
  return 0;
}

static int cmp_desc(const void *a, const void *b, void *scores) {
  const float *s = scores;
  float x = s[*(const uint32_t *)a], y = s[*(const uint32_t *)b];
  return x > y ? -1 : x < y;
}

/* Merge k results (sorted, best first; label -1 = none) into row r. */
static void merge_row(uint32_t *rn, float *rs, const float *sc,
                      const int64_t *lab, uint32_t k) {
  uint32_t tn[ORDER_K_MAX];
  float ts[ORDER_K_MAX];
  uint32_t a = 0, b = 0;
  for (uint32_t o = 0; o < k; o++) {
    int ta = a < k && rn[a] != ORDER_NONE;
    int tb = b < k && lab[b] >= 0;
    if (ta && (!tb || rs[a] >= sc[b])) {
      tn[o] = rn[a];
      ts[o] = rs[a++];
    } else if (tb) {
      tn[o] = (uint32_t)lab[b];
      ts[o] = sc[b++];
    } else {
      tn[o] = ORDER_NONE;
      ts[o] = 0;
    }
  }
  memcpy(rn, tn, k * sizeof *rn);
  memcpy(rs, ts, k * sizeof *rs);
}

/* Choose nprobe: the smallest number of lists whose recall@k on a seeded
 * sample of queries reaches o->recall. The exact top k of each sample query
 * comes from one pass over every vector (a Flat index of the sample
 * queries, searched by all documents); a true neighbour is found with p
 * probes exactly when its list is among the query's p nearest, so recall
 * for every p follows from the ranks of those lists. */
static int choose_nprobe(order_knn_index *x, const order_input *in,
                         const order_opts *o, uint32_t k, ctxd_error *e) {
  uint64_t q = in->n < ORDER_RECALL_QUERIES ? in->n : ORDER_RECALL_QUERIES;
  uint32_t d = in->dim, c = x->nlist;
  uint32_t *pick = NULL, *order = NULL, *top = NULL, *rankpos = NULL;
  uint32_t *ids = NULL;
  float *qv = NULL, *sc = NULL, *topsim = NULL, *cs = NULL;
  int64_t *lab = NULL, *self = NULL;
  uint64_t *hits = NULL;
  vindex *v = NULL;
  int rc;
  unsigned threads = order_threads(o);
  if ((rc = sample_rows(in->n, q, o->seed + 1, &pick, e))) return rc;
  qv = malloc(q * d * sizeof *qv);
  sc = malloc(q * k * sizeof *sc);
  lab = malloc(q * k * sizeof *lab);
  self = malloc(q * sizeof *self);
  ids = malloc(ADD_BATCH * sizeof *ids);
  top = malloc(q * k * sizeof *top);
  topsim = malloc(q * k * sizeof *topsim);
  cs = malloc((size_t)c * sizeof *cs);
  order = malloc((size_t)c * sizeof *order);
  rankpos = malloc((size_t)c * sizeof *rankpos);
  hits = calloc((size_t)c + 1, sizeof *hits);
  if (!qv || !sc || !lab || !self || !ids || !top || !topsim || !cs ||
      !order || !rankpos || !hits) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory choosing nprobe");
    goto out;
  }
  gather(qv, in->vectors, d, pick, q);
  for (uint64_t i = 0; i < q; i++) self[i] = pick[i];
  for (uint64_t i = 0; i < q * k; i++) {
    top[i] = ORDER_NONE;
    topsim[i] = 0;
  }
  /* the exact top k of the sample: the corpus a chunk at a time in a Flat
   * index, searched by the sample queries */
  for (uint64_t a = 0; a < in->n; a += ADD_BATCH) {
    uint64_t cnt = in->n - a < ADD_BATCH ? in->n - a : ADD_BATCH;
    if (order_cancelled(o->cancel)) {
      rc = ctxd_seterr(e, CTXD_ECANCELED, "cancelled while choosing nprobe");
      goto out;
    }
    for (uint64_t i = 0; i < cnt; i++) ids[i] = (uint32_t)(a + i);
    if ((rc = flat_of(in->vectors + a * d, cnt, d, ids, &v, e))) goto out;
    rc = vindex_search_batched(v, qv, q, self, k, NULL, threads, sc, lab, NULL,
                               NULL, e);
    vindex_free(v);
    v = NULL;
    if (rc) goto out;
    for (uint64_t i = 0; i < q; i++)
      merge_row(top + i * k, topsim + i * k, sc + i * k, lab + i * k, k);
  }
  /* hits[p] = true neighbours whose list is the query's p-th nearest */
  uint64_t all = 0;
  for (uint64_t i = 0; i < q; i++) {
    const float *qq = qv + i * d;
    for (uint32_t l = 0; l < c; l++) {
      cs[l] = order_dot(qq, x->centroids + (size_t)l * d, d);
      order[l] = l;
    }
    qsort_r(order, c, sizeof *order, cmp_desc, cs);
    for (uint32_t r = 0; r < c; r++) rankpos[order[r]] = r;
    for (uint32_t j = 0; j < k; j++) {
      uint32_t doc = top[i * k + j];
      if (doc == ORDER_NONE) continue;
      hits[rankpos[x->probe[(uint64_t)doc * x->t]]]++;
      all++;
    }
  }
  uint32_t cap = o->nprobe_max < c ? o->nprobe_max : c;
  uint64_t found = 0;
  x->nprobe = cap;
  x->recall = 1;
  for (uint32_t p = 1; p <= cap; p++) {
    found += hits[p - 1];
    float r = all ? (float)found / (float)all : 1.0f;
    if (r >= o->recall || p == cap) {
      x->nprobe = p;
      x->recall = r;
      break;
    }
  }
out:
  vindex_free(v);
  free(pick);
  free(qv);
  free(sc);
  free(lab);
  free(self);
  free(ids);
  free(top);
  free(topsim);
  free(cs);
  free(order);
  free(rankpos);
  free(hits);
  return rc;
}

int order_knn_index_build(const order_input *in, const order_opts *o,
                          order_knn_index **out, ctxd_error *e) {
  order_knn_index *x = NULL;
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
  uint64_t nlist = o->nlist ? o->nlist : (uint64_t)llround(sqrt((double)in->n));
  if (nlist > in->n / 8) nlist = in->n / 8;
  if (in->n <= o->exact_max || nlist < 2) {
    snprintf(x->method, sizeof x->method, "Flat");
    if ((rc = vindex_create("Flat", in->dim, VINDEX_IP, &x->flat, e))) goto fail;
    int64_t *labels = malloc(ADD_BATCH * sizeof *labels);
    if (!labels) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
      goto fail;
    }
    for (uint64_t a = 0; a < in->n && !rc; a += ADD_BATCH) {
      uint64_t cnt = in->n - a < ADD_BATCH ? in->n - a : ADD_BATCH;
      for (uint64_t i = 0; i < cnt; i++) labels[i] = (int64_t)(a + i);
      rc = vindex_add(x->flat, in->vectors + a * in->dim, labels, cnt, e);
      if (!rc) rc = order_step(o, ORDER_PHASE_INDEX, a + cnt, in->n, e);
    }
    free(labels);
    if (rc) goto fail;
    *out = x;
    return 0;
  }
  x->nlist = (uint32_t)nlist;
  if ((rc = kmeans(x, in, o, e))) goto fail;
  /* nearest lists of every document: enough for the probes of a clustered
   * corpus; more are computed once nprobe is known to need them */
  uint32_t t = o->nprobe ? o->nprobe : 8;
  if (t > o->nprobe_max && !o->nprobe) t = o->nprobe_max;
  if (t > x->nlist) t = x->nlist;
  if ((rc = assign_lists(x, in, o, t, e))) goto fail;
  if ((rc = build_lists(x, e))) goto fail;
  if (o->nprobe) {
    x->nprobe = t;
    x->recall = NAN; /* not measured */
  } else {
    if ((rc = choose_nprobe(x, in, o, k, e))) goto fail;
    if (x->nprobe > x->t && (rc = assign_lists(x, in, o, x->nprobe, e)))
      goto fail;
  }
  order_report(o, ORDER_PHASE_TRAIN, KMEANS_ITERS + 1, KMEANS_ITERS + 1);
  snprintf(x->method, sizeof x->method, "IVF%u nprobe=%u", x->nlist,
           x->nprobe);
  *out = x;
  return 0;
fail:
  order_knn_index_free(x);
  return rc;
}

static int search_flat(const order_knn_index *x, const order_input *in,
                       uint64_t lo, uint64_t hi, const order_opts *o,
                       order_knn *g, ctxd_error *e) {
  uint32_t k = g->k;
  float *sc = malloc((size_t)KNN_BATCH * k * sizeof *sc);
  int64_t *lab = malloc((size_t)KNN_BATCH * k * sizeof *lab);
  int64_t *self = malloc(KNN_BATCH * sizeof *self);
  int rc = 0;
  unsigned threads = order_threads(o);
  if (!sc || !lab || !self) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto out;
  }
  for (uint64_t a = lo; a < hi; a += KNN_BATCH) {
    uint64_t cnt = hi - a < KNN_BATCH ? hi - a : KNN_BATCH;
    for (uint64_t i = 0; i < cnt; i++) self[i] = (int64_t)(a + i);
    if ((rc = vindex_search_batched(x->flat, in->vectors + a * in->dim, cnt,
                                    self, k, NULL, threads, sc, lab, NULL,
                                    NULL, e)))
      goto out;
    for (uint64_t i = 0; i < cnt; i++) {
      uint64_t row = (a + i) * k;
      for (uint32_t j = 0; j < k; j++) {
        g->nbr[row + j] = ORDER_NONE;
        g->sim[row + j] = 0;
      }
      merge_row(g->nbr + row, g->sim + row, sc + i * k, lab + i * k, k);
    }
    if ((rc = order_step(o, ORDER_PHASE_KNN, a + cnt - lo, hi - lo, e)))
      goto out;
  }
out:
  free(sc);
  free(lab);
  free(self);
  return rc;
}

static int search_ivf(const order_knn_index *x, const order_input *in,
                      uint64_t lo, uint64_t hi, const order_opts *o,
                      order_knn *g, ctxd_error *e) {
  uint32_t k = g->k, d = in->dim, p = x->nprobe, c = x->nlist;
  uint64_t *qoff = calloc((size_t)c + 1, sizeof *qoff), *cur = NULL;
  uint32_t *qdoc = malloc(((hi - lo) * p + 1) * sizeof *qdoc);
  float *mv = NULL, *qv = malloc((size_t)KNN_BATCH * d * sizeof *qv);
  float *sc = malloc((size_t)KNN_BATCH * k * sizeof *sc);
  int64_t *lab = malloc((size_t)KNN_BATCH * k * sizeof *lab);
  int64_t *self = malloc(KNN_BATCH * sizeof *self);
  vindex *v = NULL;
  int rc = 0;
  unsigned threads = order_threads(o);
  uint64_t biggest = 0;
  for (uint32_t l = 0; l < c; l++)
    if (x->list_off[l + 1] - x->list_off[l] > biggest)
      biggest = x->list_off[l + 1] - x->list_off[l];
  mv = malloc((biggest ? biggest : 1) * d * sizeof *mv);
  cur = malloc(((size_t)c + 1) * sizeof *cur);
  if (!qoff || !qdoc || !mv || !qv || !sc || !lab || !self || !cur) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for the kNN search");
    goto out;
  }
  /* the queries of each list: documents in [lo, hi) probing it */
  for (uint64_t i = lo; i < hi; i++)
    for (uint32_t j = 0; j < p; j++) qoff[x->probe[i * x->t + j] + 1]++;
  for (uint32_t l = 0; l < c; l++) qoff[l + 1] += qoff[l];
  memcpy(cur, qoff, ((size_t)c + 1) * sizeof *cur);
  for (uint64_t i = lo; i < hi; i++)
    for (uint32_t j = 0; j < p; j++)
      qdoc[cur[x->probe[i * x->t + j]]++] = (uint32_t)i;
  for (uint64_t i = lo * k; i < hi * k; i++) {
    g->nbr[i] = ORDER_NONE;
    g->sim[i] = 0;
  }
  uint64_t done = 0, total = (hi - lo) * p;
  for (uint32_t l = 0; l < c; l++) {
    const uint32_t *mem = x->list_doc + x->list_off[l];
    uint64_t nm = x->list_off[l + 1] - x->list_off[l];
    uint64_t nq = qoff[l + 1] - qoff[l];
    if (nq == 0) continue;
    if (nm == 0) {
      done += nq;
      continue;
    }
    gather(mv, in->vectors, d, mem, nm);
    if ((rc = flat_of(mv, nm, d, mem, &v, e))) goto out;
    for (uint64_t a = 0; a < nq; a += KNN_BATCH) {
      uint64_t cnt = nq - a < KNN_BATCH ? nq - a : KNN_BATCH;
      const uint32_t *qd = qdoc + qoff[l] + a;
      gather(qv, in->vectors, d, qd, cnt);
      for (uint64_t i = 0; i < cnt; i++) self[i] = qd[i];
      if ((rc = vindex_search_batched(v, qv, cnt, self, k, NULL, threads, sc,
                                      lab, NULL, NULL, e)))
        goto out;
      for (uint64_t i = 0; i < cnt; i++)
        merge_row(g->nbr + (uint64_t)qd[i] * k, g->sim + (uint64_t)qd[i] * k,
                  sc + i * k, lab + i * k, k);
      done += cnt;
      if ((rc = order_step(o, ORDER_PHASE_KNN, done, total, e))) goto out;
    }
    vindex_free(v);
    v = NULL;
  }
out:
  vindex_free(v);
  free(qoff);
  free(cur);
  free(qdoc);
  free(mv);
  free(qv);
  free(sc);
  free(lab);
  free(self);
  return rc;
}

int order_knn_search(const order_knn_index *x, const order_input *in,
                     uint64_t lo, uint64_t hi, const order_opts *o,
                     order_knn *g, ctxd_error *e) {
  if (lo > hi || hi > in->n || g->n != in->n || x->n != in->n ||
      x->dim != in->dim || g->k > ORDER_K_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "kNN rows [%llu, %llu) do not fit %llu documents",
                       (unsigned long long)lo, (unsigned long long)hi,
                       (unsigned long long)in->n);
  snprintf(g->method, sizeof g->method, "%s", x->method);
  g->nprobe = x->nprobe;
  g->recall = x->recall;
  if (in->n < 2) return 0; /* no neighbours to find */
  return x->flat ? search_flat(x, in, lo, hi, o, g, e)
                 : search_ivf(x, in, lo, hi, o, g, e);
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
