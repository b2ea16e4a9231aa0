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
 * Both go through vindex "Flat" indexes (BLAS, OpenMP). The index covers
 * one shard: rows 0..n-1 of x, labelled label0 + row (the whole corpus on
 * one machine; one rank's documents under MPI). */
struct order_knn_index {
  uint64_t n;
  uint32_t dim;
  uint64_t label0;    /* label of row 0 */
  const float *x;     /* the shard's vectors (borrowed) */
  vindex *flat;       /* exact: every vector */
  uint32_t nlist;     /* IVF: lists */
  uint32_t nprobe;    /* lists each query searches (0: exact) */
  uint32_t t;         /* lists stored per document in probe */
  float *centroids;   /* nlist x dim, normalised */
  uint64_t *list_off; /* nlist + 1 */
  uint32_t *list_doc; /* rows by nearest list */
  uint32_t *probe;    /* n x t: each row's nearest lists, best first */
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

int order_sample_rows(uint64_t n, uint64_t m, uint64_t seed, uint32_t **out,
                      ctxd_error *e) {
  uint32_t *perm = malloc((n ? n : 1) * sizeof *perm);
  if (!perm) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for a sample");
  for (uint64_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
  uint64_t st = seed ^ 0x5A4D504C45ull;
  for (uint64_t i = 0; i < m && i < n; i++) {
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

/* A Flat index of n rows of x labelled base + labels[i] (base + i when
 * labels is NULL). */
static int flat_of(const float *x, uint64_t n, uint32_t dim,
                   const uint32_t *labels, uint64_t base, vindex **out,
                   ctxd_error *e) {
  int64_t *lab = malloc((n ? n : 1) * sizeof *lab);
  int rc;
  if (!lab) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  for (uint64_t i = 0; i < n; i++)
    lab[i] = (int64_t)(base + (labels ? labels[i] : i));
  if ((rc = vindex_create("Flat", dim, VINDEX_IP, out, e)) == 0 &&
      (rc = vindex_add(*out, x, lab, n, e)) != 0) {
    vindex_free(*out);
    *out = NULL;
  }
  free(lab);
  return rc;
}

uint32_t order_knn_nlist(uint64_t n, const order_opts *o) {
  uint64_t nlist = o->nlist ? o->nlist : (uint64_t)llround(sqrt((double)n));
  if (nlist > n / 8) nlist = n / 8;
  if (n <= o->exact_max || nlist < 2) return 0;
  return (uint32_t)nlist;
}

uint64_t order_kmeans_sample(uint64_t n, uint32_t nlist) {
  uint64_t s = (uint64_t)ORDER_KMEANS_SAMPLE * nlist;
  return s < n ? s : n;
}

int order_kmeans(const float *sample, uint64_t s, uint32_t dim, uint32_t nlist,
                 const order_opts *o, float **centroids, ctxd_error *e) {
  uint32_t c = nlist, d = dim;
  uint32_t *assign = NULL, *count = NULL;
  float *sc = NULL, *cen = NULL;
  double *sum = NULL;
  int64_t *lab = NULL;
  vindex *v = NULL;
  int rc = 0;
  unsigned threads = order_threads(o);
  *centroids = NULL;
  if (c == 0 || s < c)
    return ctxd_seterr(e, CTXD_EINVAL, "k-means of %u lists needs at least "
                       "%u sample points (got %llu)", c, c,
                       (unsigned long long)s);
  sc = malloc(s * sizeof *sc);
  lab = malloc(s * sizeof *lab);
  assign = malloc(s * sizeof *assign);
  count = malloc(c * sizeof *count);
  sum = malloc((size_t)c * d * sizeof *sum);
  cen = malloc((size_t)c * d * sizeof *cen);
  if (!sc || !lab || !assign || !count || !sum || !cen) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for k-means");
    goto out;
  }
  /* the first c sample points (a seeded random choice) start as centroids */
  memcpy(cen, sample, (size_t)c * d * sizeof *cen);
  for (int it = 0; it < KMEANS_ITERS; it++) {
    if ((rc = order_step(o, ORDER_PHASE_TRAIN, (uint64_t)it, KMEANS_ITERS + 1,
                         e)))
      goto out;
    if ((rc = flat_of(cen, c, d, NULL, 0, &v, e))) goto out;
    rc = vindex_search_batched(v, sample, s, NULL, 1, NULL, threads, sc, lab,
                               NULL, NULL, e);
    vindex_free(v);
    v = NULL;
    if (rc) goto out;
    memset(count, 0, c * sizeof *count);
    memset(sum, 0, (size_t)c * d * sizeof *sum);
    for (uint64_t i = 0; i < s; i++) {
      uint32_t a = lab[i] >= 0 ? (uint32_t)lab[i] : 0;
      assign[i] = a;
      count[a]++;
      for (uint32_t j = 0; j < d; j++)
        sum[(size_t)a * d + j] += sample[i * d + j];
    }
    /* an empty list takes the sample point worst served by its centroid */
    for (uint32_t a = 0; a < c; a++) {
      float *ca = cen + (size_t)a * d;
      if (count[a] == 0) {
        uint64_t worst = 0;
        for (uint64_t i = 1; i < s; i++)
          if (sc[i] < sc[worst]) worst = i;
        memcpy(ca, sample + worst * d, d * sizeof *ca);
        sc[worst] = 2; /* not again */
        continue;
      }
      double nn = 0;
      for (uint32_t j = 0; j < d; j++)
        nn += sum[(size_t)a * d + j] * sum[(size_t)a * d + j];
      double r = nn > 0 ? 1 / sqrt(nn) : 0;
      for (uint32_t j = 0; j < d; j++)
        ca[j] = (float)(sum[(size_t)a * d + j] * r);
    }
  }
  *centroids = cen;
  cen = NULL;
out:
  vindex_free(v);
  free(cen);
  free(sc);
  free(lab);
  free(assign);
  free(count);
  free(sum);
  return rc;
}

/* probe[i*t ..] = row i's t nearest lists. */
static int assign_lists(order_knn_index *x, const order_opts *o, uint32_t t,
                        ctxd_error *e) {
  vindex *v = NULL;
  float *sc = malloc((size_t)ADD_BATCH * t * sizeof *sc);
  int64_t *lab = malloc((size_t)ADD_BATCH * t * sizeof *lab);
  uint32_t *probe = malloc((x->n ? x->n : 1) * t * sizeof *probe);
  int rc = 0;
  unsigned threads = order_threads(o);
  if (!sc || !lab || !probe) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for list assignment");
    goto out;
  }
  if ((rc = flat_of(x->centroids, x->nlist, x->dim, NULL, 0, &v, e))) goto out;
  for (uint64_t a = 0; a < x->n; a += ADD_BATCH) {
    uint64_t cnt = x->n - a < ADD_BATCH ? x->n - a : ADD_BATCH;
    if ((rc = vindex_search_batched(v, x->x + a * x->dim, cnt, NULL, t, NULL,
                                    threads, sc, lab, NULL, NULL, e)))
      goto out;
    for (uint64_t i = 0; i < cnt * t; i++)
      probe[a * t + i] = lab[i] >= 0 ? (uint32_t)lab[i] : 0;
    if ((rc = order_step(o, ORDER_PHASE_INDEX, a + cnt, x->n, e))) goto out;
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

/* Rows by nearest list (CSR). */
static int build_lists(order_knn_index *x, ctxd_error *e) {
  x->list_off = calloc(x->nlist + 1, sizeof *x->list_off);
  x->list_doc = malloc((x->n ? x->n : 1) * sizeof *x->list_doc);
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

/* (s, l) ranks before (t, m): more similar first, then the smaller label,
 * so that a row is the same whichever shards its candidates came from. */
static inline int before(float s, int64_t l, float t, int64_t m) {
  return s > t || (s == t && l < m);
}

/* The k candidates of one search of x (sc/lab, label -1 = none) for the
 * query q: similarities recomputed with order_dot (the same figure for a
 * pair whatever batch or shard BLAS saw it in), sorted again, then merged
 * into row rn/rs (and ra: each neighbour's nearest list, when given). */
static void merge_cands(const order_knn_index *x, const float *q, uint32_t *rn,
                        float *rs, uint32_t *ra, float *sc, int64_t *lab,
                        uint32_t k) {
  uint32_t m = 0;
  for (uint32_t j = 0; j < k && lab[j] >= 0; j++, m++)
    sc[j] = order_dot(q, x->x + ((uint64_t)lab[j] - x->label0) * x->dim,
                      x->dim);
  for (uint32_t j = 1; j < m; j++) { /* insertion sort: k is small */
    float s = sc[j];
    int64_t l = lab[j];
    uint32_t i = j;
    for (; i > 0 && before(s, l, sc[i - 1], lab[i - 1]); i--) {
      sc[i] = sc[i - 1];
      lab[i] = lab[i - 1];
    }
    sc[i] = s;
    lab[i] = l;
  }
  uint32_t bn[ORDER_K_MAX], ba[ORDER_K_MAX];
  for (uint32_t j = 0; j < k; j++) {
    bn[j] = j < m ? (uint32_t)lab[j] : ORDER_NONE;
    ba[j] = j < m && ra ? x->probe[((uint64_t)lab[j] - x->label0) * x->t]
                        : ORDER_NONE;
    if (j >= m) sc[j] = 0;
  }
  order_knn_merge_rows(rn, rs, ra, bn, sc, ra ? ba : NULL, k);
}

void order_knn_merge_rows(uint32_t *rn, float *rs, uint32_t *ra,
                          const uint32_t *bn, const float *bs,
                          const uint32_t *ba, uint32_t k) {
  uint32_t tn[ORDER_K_MAX], ta[ORDER_K_MAX];
  float ts[ORDER_K_MAX];
  uint32_t a = 0, b = 0;
  for (uint32_t o = 0; o < k; o++) {
    int ha = a < k && rn[a] != ORDER_NONE;
    int hb = b < k && bn[b] != ORDER_NONE;
    if (ha && (!hb || before(rs[a], rn[a], bs[b], bn[b]))) {
      tn[o] = rn[a];
      ta[o] = ra ? ra[a] : 0;
      ts[o] = rs[a++];
    } else if (hb) {
      tn[o] = bn[b];
      ta[o] = ba ? ba[b] : ORDER_NONE;
      ts[o] = bs[b++];
    } else {
      tn[o] = ORDER_NONE;
      ta[o] = ORDER_NONE;
      ts[o] = 0;
    }
  }
  memcpy(rn, tn, k * sizeof *rn);
  memcpy(rs, ts, k * sizeof *rs);
  if (ra) memcpy(ra, ta, k * sizeof *ra);
}

int order_knn_exact(const order_knn_index *x, const float *qv, uint64_t nq,
                    const int64_t *qid, uint32_t k, uint32_t *nbr, float *sim,
                    uint32_t *nbr_list, const order_opts *o, ctxd_error *e) {
  uint32_t d = x->dim;
  float *sc = malloc((nq ? nq : 1) * k * sizeof *sc);
  int64_t *lab = malloc((nq ? nq : 1) * k * sizeof *lab);
  vindex *v = NULL;
  int rc = 0;
  unsigned threads = order_threads(o);
  if (k == 0 || k > ORDER_K_MAX || (nbr_list && !x->probe)) {
    rc = ctxd_seterr(e, CTXD_EINVAL, "exact search: bad k %u or no lists", k);
    goto out;
  }
  if (!sc || !lab) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for an exact search");
    goto out;
  }
  /* the shard a chunk at a time in a Flat index, searched by the queries */
  for (uint64_t a = 0; a < x->n; a += ADD_BATCH) {
    uint64_t cnt = x->n - a < ADD_BATCH ? x->n - a : ADD_BATCH;
    if (order_cancelled(o->cancel)) {
      rc = ctxd_seterr(e, CTXD_ECANCELED, "cancelled in an exact search");
      goto out;
    }
    if ((rc = flat_of(x->x + a * d, cnt, d, NULL, x->label0 + a, &v, e)))
      goto out;
    rc = vindex_search_batched(v, qv, nq, qid, k, NULL, threads, sc, lab, NULL,
                               NULL, e);
    vindex_free(v);
    v = NULL;
    if (rc) goto out;
    for (uint64_t i = 0; i < nq; i++)
      merge_cands(x, qv + i * d, nbr + i * k, sim + i * k,
                  nbr_list ? nbr_list + i * k : NULL, sc + i * k, lab + i * k,
                  k);
  }
out:
  vindex_free(v);
  free(sc);
  free(lab);
  return rc;
}

/* A true neighbour is found with p probes exactly when its list is among
 * the query's p nearest, so recall for every p follows from the ranks of
 * those lists. */
int order_nprobe_choose(const float *centroids, uint32_t nlist, uint32_t dim,
                        const float *qv, uint64_t q, const uint32_t *nbr_list,
                        uint32_t k, const order_opts *o, uint32_t *nprobe,
                        float *recall, ctxd_error *e) {
  uint32_t c = nlist, *order = malloc((size_t)c * sizeof *order);
  uint32_t *rankpos = malloc((size_t)c * sizeof *rankpos);
  float *cs = malloc((size_t)c * sizeof *cs);
  uint64_t *hits = calloc((size_t)c + 1, sizeof *hits);
  int rc = 0;
  if (!order || !rankpos || !cs || !hits) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory choosing nprobe");
    goto out;
  }
  uint64_t all = 0;
  for (uint64_t i = 0; i < q; i++) {
    const float *qq = qv + i * dim;
    for (uint32_t l = 0; l < c; l++) {
      cs[l] = order_dot(qq, centroids + (size_t)l * dim, dim);
      order[l] = l;
    }
    qsort_r(order, c, sizeof *order, cmp_desc, cs);
    for (uint32_t r = 0; r < c; r++) rankpos[order[r]] = r;
    for (uint32_t j = 0; j < k; j++) {
      uint32_t l = nbr_list[i * k + j];
      if (l >= c) continue;
      hits[rankpos[l]]++;
      all++;
    }
  }
  uint32_t cap = o->nprobe_max < c ? o->nprobe_max : c;
  uint64_t found = 0;
  *nprobe = cap;
  *recall = 1;
  for (uint32_t p = 1; p <= cap; p++) {
    found += hits[p - 1];
    float r = all ? (float)found / (float)all : 1.0f;
    if (r >= o->recall || p == cap) {
      *nprobe = p;
      *recall = r;
      break;
    }
  }
out:
  free(order);
  free(rankpos);
  free(cs);
  free(hits);
  return rc;
}

int order_knn_shard(const float *vectors, uint64_t n, uint32_t dim,
                    uint64_t label0, const float *centroids, uint32_t nlist,
                    const order_opts *o, order_knn_index **out,
                    ctxd_error *e) {
  order_knn_index *x = NULL;
  int64_t *labels = NULL;
  int rc = 0;
  *out = NULL;
  if (dim == 0 || (n && !vectors) || label0 + n > ORDER_DOCS_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "no vectors to index");
  x = calloc(1, sizeof *x);
  if (!x) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  x->n = n;
  x->dim = dim;
  x->label0 = label0;
  x->x = vectors;
  x->recall = 1;
  if (!centroids || nlist == 0) {
    snprintf(x->method, sizeof x->method, "Flat");
    if ((rc = vindex_create("Flat", dim, VINDEX_IP, &x->flat, e))) goto fail;
    labels = malloc(ADD_BATCH * sizeof *labels);
    if (!labels) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
      goto fail;
    }
    for (uint64_t a = 0; a < n && !rc; a += ADD_BATCH) {
      uint64_t cnt = n - a < ADD_BATCH ? n - a : ADD_BATCH;
      for (uint64_t i = 0; i < cnt; i++) labels[i] = (int64_t)(label0 + a + i);
      rc = vindex_add(x->flat, vectors + a * dim, labels, cnt, e);
      if (!rc) rc = order_step(o, ORDER_PHASE_INDEX, a + cnt, n, e);
    }
    if (rc) goto fail;
    free(labels);
    *out = x;
    return 0;
  }
  x->nlist = nlist;
  x->centroids = malloc((size_t)nlist * dim * sizeof *x->centroids);
  if (!x->centroids) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto fail;
  }
  memcpy(x->centroids, centroids, (size_t)nlist * dim * sizeof *x->centroids);
  /* nearest lists of every row: enough for the probes of a clustered
   * corpus; more are computed once nprobe is known to need them */
  uint32_t t = o->nprobe ? o->nprobe : 8;
  if (t > o->nprobe_max && !o->nprobe) t = o->nprobe_max;
  if (t > nlist) t = nlist;
  if ((rc = assign_lists(x, o, t, e))) goto fail;
  if ((rc = build_lists(x, e))) goto fail;
  x->nprobe = t;
  x->recall = NAN; /* until order_knn_index_set_nprobe */
  snprintf(x->method, sizeof x->method, "IVF%u nprobe=%u", x->nlist,
           x->nprobe);
  *out = x;
  return 0;
fail:
  free(labels);
  order_knn_index_free(x);
  return rc;
}

int order_knn_lists(const float *vectors, uint64_t n, uint32_t dim,
                    const uint32_t *list, uint32_t nlist, order_knn_index **out,
                    ctxd_error *e) {
  order_knn_index *x = NULL;
  int rc;
  *out = NULL;
  if (dim == 0 || nlist == 0 || (n && (!vectors || !list)) ||
      n > ORDER_DOCS_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "no vectors or lists to index");
  for (uint64_t i = 0; i < n; i++)
    if (list[i] >= nlist)
      return ctxd_seterr(e, CTXD_EINVAL, "row %llu in list %u of %u",
                         (unsigned long long)i, list[i], nlist);
  if (!(x = calloc(1, sizeof *x)) ||
      !(x->probe = malloc((n ? n : 1) * sizeof *x->probe))) {
    order_knn_index_free(x);
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  }
  x->n = n;
  x->dim = dim;
  x->x = vectors;
  x->nlist = nlist;
  x->nprobe = x->t = 1;
  x->recall = NAN;
  memcpy(x->probe, list, n * sizeof *x->probe);
  if ((rc = build_lists(x, e))) {
    order_knn_index_free(x);
    return rc;
  }
  snprintf(x->method, sizeof x->method, "IVF%u lists", nlist);
  *out = x;
  return 0;
}

int order_knn_index_set_nprobe(order_knn_index *x, uint32_t nprobe,
                               float recall, const order_opts *o,
                               ctxd_error *e) {
  int rc;
  if (!x->nlist) return 0;
  if (nprobe == 0 || nprobe > x->nlist)
    return ctxd_seterr(e, CTXD_EINVAL, "nprobe %u out of 1..%u", nprobe,
                       x->nlist);
  if (nprobe > x->t && (rc = assign_lists(x, o, nprobe, e))) return rc;
  x->nprobe = nprobe;
  x->recall = recall;
  snprintf(x->method, sizeof x->method, "IVF%u nprobe=%u", x->nlist,
           x->nprobe);
  return 0;
}

const uint32_t *order_knn_index_probes(const order_knn_index *x, uint32_t *t) {
  *t = x->t;
  return x->probe;
}

const char *order_knn_index_method(const order_knn_index *x, uint32_t *nprobe,
                                   float *recall) {
  if (nprobe) *nprobe = x->nprobe;
  if (recall) *recall = x->recall;
  return x->method;
}

int order_knn_index_build(const order_input *in, const order_opts *o,
                          order_knn_index **out, ctxd_error *e) {
  order_knn_index *x = NULL;
  uint32_t *pick = NULL, *nbr = NULL, *lists = NULL;
  float *sx = NULL, *cen = NULL, *sim = NULL;
  int64_t *qid = NULL;
  int rc;
  *out = NULL;
  if (!in->vectors || in->dim == 0 || in->n == 0)
    return ctxd_seterr(e, CTXD_EINVAL, "no vectors to index");
  uint32_t k = order_knn_k(in->n, o->k), d = in->dim;
  uint32_t nlist = order_knn_nlist(in->n, o);
  if (!nlist)
    return order_knn_shard(in->vectors, in->n, d, 0, NULL, 0, o, out, e);
  uint64_t s = order_kmeans_sample(in->n, nlist);
  if ((rc = order_sample_rows(in->n, s, o->seed, &pick, e))) goto out;
  if (!(sx = malloc(s * d * sizeof *sx))) goto nomem;
  gather(sx, in->vectors, d, pick, s);
  if ((rc = order_kmeans(sx, s, d, nlist, o, &cen, e))) goto out;
  if ((rc = order_knn_shard(in->vectors, in->n, d, 0, cen, nlist, o, &x, e)))
    goto out;
  if (o->nprobe) {
    x->recall = NAN; /* not measured */
  } else {
    /* the smallest nprobe whose recall@k on seeded sample queries against
     * their exact neighbours reaches o->recall */
    uint64_t q = in->n < ORDER_RECALL_QUERIES ? in->n : ORDER_RECALL_QUERIES;
    uint32_t np;
    float rec;
    free(pick);
    free(sx);
    sx = NULL;
    if ((rc = order_sample_rows(in->n, q, o->seed + 1, &pick, e))) goto out;
    sx = malloc(q * d * sizeof *sx);
    qid = malloc(q * sizeof *qid);
    nbr = malloc(q * k * sizeof *nbr);
    sim = calloc(q * k, sizeof *sim);
    lists = malloc(q * k * sizeof *lists);
    if (!sx || !qid || !nbr || !sim || !lists) goto nomem;
    gather(sx, in->vectors, d, pick, q);
    for (uint64_t i = 0; i < q; i++) qid[i] = pick[i];
    memset(nbr, 0xff, q * k * sizeof *nbr);
    if ((rc = order_knn_exact(x, sx, q, qid, k, nbr, sim, lists, o, e)) ||
        (rc = order_nprobe_choose(cen, nlist, d, sx, q, lists, k, o, &np,
                                  &rec, e)) ||
        (rc = order_knn_index_set_nprobe(x, np, rec, o, e)))
      goto out;
  }
  order_report(o, ORDER_PHASE_TRAIN, KMEANS_ITERS + 1, KMEANS_ITERS + 1);
  *out = x;
  x = NULL;
  goto out;
nomem:
  rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for the kNN index");
out:
  order_knn_index_free(x);
  free(pick);
  free(sx);
  free(cen);
  free(qid);
  free(nbr);
  free(sim);
  free(lists);
  return rc;
}

static int search_flat(const order_knn_index *x, const float *qv, uint64_t nq,
                       const int64_t *qid, uint32_t k, uint32_t *nbr,
                       float *sim, const order_opts *o, ctxd_error *e) {
  float *sc = malloc((size_t)KNN_BATCH * k * sizeof *sc);
  int64_t *lab = malloc((size_t)KNN_BATCH * k * sizeof *lab);
  int rc = 0;
  unsigned threads = order_threads(o);
  if (!sc || !lab) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto out;
  }
  for (uint64_t a = 0; a < nq && x->n; a += KNN_BATCH) {
    uint64_t cnt = nq - a < KNN_BATCH ? nq - a : KNN_BATCH;
    if ((rc = vindex_search_batched(x->flat, qv + a * x->dim, cnt, qid + a, k,
                                    NULL, threads, sc, lab, NULL, NULL, e)))
      goto out;
    for (uint64_t i = 0; i < cnt; i++)
      merge_cands(x, qv + (a + i) * x->dim, nbr + (a + i) * k,
                  sim + (a + i) * k, NULL, sc + i * k, lab + i * k, k);
    if ((rc = order_step(o, ORDER_PHASE_KNN, a + cnt, nq, e))) goto out;
  }
out:
  free(sc);
  free(lab);
  return rc;
}

static int search_ivf(const order_knn_index *x, const float *qv, uint64_t nq,
                      const int64_t *qid, const uint32_t *qprobe, uint32_t qt,
                      uint32_t k, uint32_t *nbr, float *sim,
                      const order_opts *o, ctxd_error *e) {
  uint32_t d = x->dim, p = x->nprobe, c = x->nlist;
  uint64_t *qoff = calloc((size_t)c + 1, sizeof *qoff), *cur = NULL;
  uint32_t *qdoc = malloc((nq * p + 1) * sizeof *qdoc);
  float *mv = NULL, *qb = malloc((size_t)KNN_BATCH * d * sizeof *qb);
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
  if (!qoff || !qdoc || !mv || !qb || !sc || !lab || !self || !cur) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for the kNN search");
    goto out;
  }
  if (qt < p) {
    rc = ctxd_seterr(e, CTXD_EINVAL, "queries carry %u lists, nprobe is %u",
                     qt, p);
    goto out;
  }
  /* the queries of each list */
  for (uint64_t i = 0; i < nq; i++)
    for (uint32_t j = 0; j < p; j++) qoff[qprobe[i * qt + j] + 1]++;
  for (uint32_t l = 0; l < c; l++) qoff[l + 1] += qoff[l];
  memcpy(cur, qoff, ((size_t)c + 1) * sizeof *cur);
  for (uint64_t i = 0; i < nq; i++)
    for (uint32_t j = 0; j < p; j++)
      qdoc[cur[qprobe[i * qt + j]]++] = (uint32_t)i;
  uint64_t done = 0, total = nq * p;
  for (uint32_t l = 0; l < c; l++) {
    const uint32_t *mem = x->list_doc + x->list_off[l];
    uint64_t nm = x->list_off[l + 1] - x->list_off[l];
    uint64_t nql = qoff[l + 1] - qoff[l];
    if (nql == 0) continue;
    if (nm == 0) {
      done += nql;
      continue;
    }
    gather(mv, x->x, d, mem, nm);
    if ((rc = flat_of(mv, nm, d, mem, x->label0, &v, e))) goto out;
    for (uint64_t a = 0; a < nql; a += KNN_BATCH) {
      uint64_t cnt = nql - a < KNN_BATCH ? nql - a : KNN_BATCH;
      const uint32_t *qd = qdoc + qoff[l] + a;
      gather(qb, qv, d, qd, cnt);
      for (uint64_t i = 0; i < cnt; i++) self[i] = qid[qd[i]];
      if ((rc = vindex_search_batched(v, qb, cnt, self, k, NULL, threads, sc,
                                      lab, NULL, NULL, e)))
        goto out;
      for (uint64_t i = 0; i < cnt; i++)
        merge_cands(x, qb + i * d, nbr + (uint64_t)qd[i] * k,
                    sim + (uint64_t)qd[i] * k, NULL, sc + i * k, lab + i * k,
                    k);
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
  free(qb);
  free(sc);
  free(lab);
  free(self);
  return rc;
}

int order_knn_search_block(const order_knn_index *x, const float *qv,
                           uint64_t nq, const int64_t *qid,
                           const uint32_t *qprobe, uint32_t qt, uint32_t k,
                           uint32_t *nbr, float *sim, const order_opts *o,
                           ctxd_error *e) {
  if (k == 0 || k > ORDER_K_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "k must be 1..%d (got %u)",
                       ORDER_K_MAX, k);
  if (nq == 0 || x->n == 0) return 0;
  return x->flat ? search_flat(x, qv, nq, qid, k, nbr, sim, o, e)
                 : search_ivf(x, qv, nq, qid, qprobe, qt, k, nbr, sim, o, e);
}

int order_knn_search(const order_knn_index *x, const order_input *in,
                     uint64_t lo, uint64_t hi, const order_opts *o,
                     order_knn *g, ctxd_error *e) {
  int64_t *qid = NULL;
  int rc;
  if (lo > hi || hi > in->n || g->n != in->n || x->n != in->n ||
      x->label0 != 0 || x->dim != in->dim || g->k > ORDER_K_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "kNN rows [%llu, %llu) do not fit %llu documents",
                       (unsigned long long)lo, (unsigned long long)hi,
                       (unsigned long long)in->n);
  snprintf(g->method, sizeof g->method, "%s", x->method);
  g->nprobe = x->nprobe;
  g->recall = x->recall;
  if (in->n < 2) return 0; /* no neighbours to find */
  for (uint64_t i = lo * g->k; i < hi * g->k; i++) {
    g->nbr[i] = ORDER_NONE;
    g->sim[i] = 0;
  }
  if (!(qid = malloc((hi - lo + 1) * sizeof *qid)))
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for the kNN search");
  for (uint64_t i = lo; i < hi; i++) qid[i - lo] = (int64_t)i;
  rc = order_knn_search_block(x, in->vectors + lo * in->dim, hi - lo, qid,
                              x->probe ? x->probe + lo * x->t : NULL, x->t,
                              g->k, g->nbr + lo * g->k, g->sim + lo * g->k, o,
                              e);
  free(qid);
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
  return order_knn_load_rows(path, 0, n, n, k, fingerprint, out, e);
}

int order_knn_load_rows(const char *path, uint64_t row0, uint64_t rows,
                        uint64_t n, uint32_t k, uint64_t fingerprint,
                        order_knn **out, ctxd_error *e) {
  order_ckpt_reader r = {0};
  order_knn *g = NULL;
  knn_hdr h;
  int rc;
  *out = NULL;
  if ((rc = order_ckpt_open(&r, path, KNN_MAGIC, &h, sizeof h, e))) return rc;
  if (h.version != 1 || h.n != rows || h.k != k ||
      h.fingerprint != fingerprint || row0 + rows > n) {
    rc = ctxd_seterr(e, CTXD_EPRECOND,
                     "%s is for other data (n %llu, k %u; wanted n %llu, k %u, "
                     "or another fingerprint)",
                     path, (unsigned long long)h.n, h.k,
                     (unsigned long long)rows, k);
    goto fail;
  }
  if ((rc = order_knn_alloc(rows, k, &g, e))) goto fail;
  size_t cells = (size_t)rows * k;
  order_ckpt_part parts[2] = {{g->nbr, cells * sizeof *g->nbr},
                              {g->sim, cells * sizeof *g->sim}};
  if ((rc = order_ckpt_read_parts(&r, parts, 2, e))) goto fail;
  for (size_t c = 0; c < cells; c++)
    if (g->nbr[c] != ORDER_NONE &&
        (g->nbr[c] >= n || g->nbr[c] == row0 + c / k)) {
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
