/* order_path.c - corpus ordering, middle steps: the undirected kNN graph in
 * CSR form, near-duplicate removal over it, and the greedy maximum-TSP path
 * (bucket queue of residual degrees), with the path's quality figures. */
#include <stdlib.h>
#include <string.h>

#include "order_impl.h"

/* One adjacency entry: neighbour and weight side by side, so a row is one
 * sequential read. */
typedef struct order_edge {
  uint32_t v;
  float w;
} order_edge;

struct order_graph {
  uint64_t n;
  uint64_t *off; /* n + 1: row i is e[off[i] .. off[i+1]) */
  order_edge *e;
};

uint64_t order_graph_nodes(const order_graph *g) { return g->n; }
uint64_t order_graph_edges(const order_graph *g) { return g->off[g->n] / 2; }

void order_graph_free(order_graph *g) {
  if (!g) return;
  free(g->off);
  free(g->e);
  free(g);
}

/* Row i = its own kNN row, then every j that lists i, less those i lists
 * too (a mutual pair). Two passes over the kNN rows place the entries (a
 * counting sort); a third, sequential pass drops the mutual repeats with a
 * stamp per document and closes the gaps. */
int order_graph_build(const order_knn *k, order_graph **out, ctxd_error *e) {
  order_graph *g = NULL;
  uint32_t *fill = NULL, *stamp = NULL;
  uint16_t *own = NULL; /* valid entries of each kNN row (k <= 1000) */
  int rc = 0;
  uint64_t n = k->n;
  uint32_t kk = k->k;
  *out = NULL;
  g = calloc(1, sizeof *g);
  if (!g) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  g->n = n;
  g->off = calloc(n + 1, sizeof *g->off);
  fill = calloc(n ? n : 1, sizeof *fill);
  own = malloc((n ? n : 1) * sizeof *own);
  if (!g->off || !fill || !own) goto nomem;
  for (uint64_t i = 0; i < n; i++) {
    const uint32_t *row = k->nbr + i * kk;
    uint16_t c_own = 0;
    for (uint32_t c = 0; c < kk; c++) {
      uint32_t j = row[c];
      if (j == ORDER_NONE || j == i) continue;
      if (j >= n) {
        rc = ctxd_seterr(e, CTXD_ECORRUPT,
                         "kNN row %llu names document %u of %llu",
                         (unsigned long long)i, j, (unsigned long long)n);
        goto fail;
      }
      c_own++;
      g->off[j + 1]++;
    }
    own[i] = c_own;
    g->off[i + 1] += c_own;
  }
  for (uint64_t i = 0; i < n; i++) g->off[i + 1] += g->off[i];
  uint64_t total = g->off[n];
  g->e = malloc((total ? total : 1) * sizeof *g->e);
  if (!g->e) goto nomem;
  for (uint64_t i = 0; i < n; i++) {
    const uint32_t *row = k->nbr + i * kk;
    const float *sim = k->sim + i * kk;
    order_edge *mine = g->e + g->off[i];
    uint32_t c_own = 0;
    for (uint32_t c = 0; c < kk; c++) {
      uint32_t j = row[c];
      if (j == ORDER_NONE || j == i) continue;
      mine[c_own++] = (order_edge){j, sim[c]};
      g->e[g->off[j] + own[j] + fill[j]++] = (order_edge){(uint32_t)i, sim[c]};
    }
  }
  free(fill);
  fill = NULL;
  stamp = malloc((n ? n : 1) * sizeof *stamp);
  if (!stamp) goto nomem;
  memset(stamp, 0xff, n * sizeof *stamp);
  uint64_t wp = 0, start = 0;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t end = g->off[i + 1], mid = start + own[i];
    g->off[i] = wp;
    for (uint64_t r = start; r < mid; r++) {
      stamp[g->e[r].v] = (uint32_t)i;
      g->e[wp++] = g->e[r];
    }
    for (uint64_t r = mid; r < end; r++)
      if (stamp[g->e[r].v] != (uint32_t)i) g->e[wp++] = g->e[r];
    start = end;
  }
  g->off[n] = wp;
  free(stamp);
  free(own);
  *out = g;
  return 0;
nomem:
  rc = ctxd_seterr(e, CTXD_ENOMEM,
                   "out of memory for the graph of %llu documents",
                   (unsigned long long)n);
fail:
  free(fill);
  free(stamp);
  free(own);
  order_graph_free(g);
  return rc;
}

/* ---- near-duplicates ------------------------------------------------------- */

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The sorted distinct hashes of s's character 3-grams in *out (*n). */
static int grams3(const char *s, size_t len, uint64_t **out, size_t *n) {
  size_t chars = 0;
  for (size_t i = 0; i < len; i++) chars += ((unsigned char)s[i] & 0xC0) != 0x80;
  *n = 0;
  *out = malloc((chars ? chars : 1) * sizeof **out);
  if (!*out) return CTXD_ENOMEM;
  if (chars == 0) return 0;
  if (chars < 3) {
    (*out)[(*n)++] = order_hash(3, s, len);
    return 0;
  }
  /* a sliding window of the starts of the last three characters */
  size_t st[3] = {0, 0, 0}, seen = 0;
  for (size_t i = 0; i <= len; i++) {
    if (i < len && ((unsigned char)s[i] & 0xC0) == 0x80) continue;
    if (seen >= 3) {
      size_t a = st[seen % 3]; /* start of the character three back */
      (*out)[(*n)++] = order_hash(3, s + a, i - a);
    }
    if (i < len) st[seen++ % 3] = i;
  }
  qsort(*out, *n, sizeof **out, cmp_u64);
  size_t u = 0;
  for (size_t i = 0; i < *n; i++)
    if (u == 0 || (*out)[u - 1] != (*out)[i]) (*out)[u++] = (*out)[i];
  *n = u;
  return 0;
}

static double jaccard_sets(const uint64_t *a, size_t na, const uint64_t *b,
                           size_t nb) {
  if (na == 0 && nb == 0) return 1;
  size_t i = 0, j = 0, both = 0;
  while (i < na && j < nb) {
    if (a[i] == b[j]) {
      both++;
      i++;
      j++;
    } else if (a[i] < b[j]) {
      i++;
    } else {
      j++;
    }
  }
  return (double)both / (double)(na + nb - both);
}

int order_jaccard3(const char *a, size_t alen, const char *b, size_t blen,
                   double *out, ctxd_error *e) {
  uint64_t *ga = NULL, *gb = NULL;
  size_t na, nb;
  if (grams3(a, alen, &ga, &na) || grams3(b, blen, &gb, &nb)) {
    free(ga);
    free(gb);
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for 3-grams");
  }
  *out = jaccard_sets(ga, na, gb, nb);
  free(ga);
  free(gb);
  return 0;
}

void order_dups_free(order_dups *d) {
  if (!d) return;
  free(d->of);
  free(d->sim);
  free(d->jaccard);
  free(d);
}

typedef struct cand {
  uint32_t i;
  float s;
} cand;

static int cmp_cand(const void *a, const void *b) {
  uint32_t x = ((const cand *)a)->i, y = ((const cand *)b)->i;
  return x < y ? -1 : x > y;
}

int order_dedup(const order_graph *g, const order_input *in,
                const order_opts *o, order_dups **out, ctxd_error *e) {
  order_dups *d = NULL;
  cand *cs = NULL;
  uint64_t *gj = NULL, *gi = NULL;
  size_t ncap = 0;
  int rc = 0;
  uint64_t n = g->n;
  *out = NULL;
  d = calloc(1, sizeof *d);
  if (!d) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  d->n = n;
  d->of = malloc((n ? n : 1) * sizeof *d->of);
  d->sim = calloc(n ? n : 1, sizeof *d->sim);
  d->jaccard = malloc((n ? n : 1) * sizeof *d->jaccard);
  if (!d->of || !d->sim || !d->jaccard) goto nomem;
  memset(d->of, 0xff, n * sizeof *d->of);
  for (uint64_t i = 0; i < n; i++) d->jaccard[i] = -1;
  int texts = o->dup_jaccard > 0 && (in->texts || in->get_text);
  for (uint64_t j = 0; j < n && o->dup_cosine <= 1; j++) {
    if ((j & 65535) == 0 && (rc = order_step(o, ORDER_PHASE_DEDUP, j, n, e)))
      goto fail;
    size_t nc = 0;
    for (uint64_t r = g->off[j]; r < g->off[j + 1]; r++) {
      if (g->e[r].v >= j || g->e[r].w < o->dup_cosine) continue;
      if (nc == ncap) {
        size_t cap = ncap ? ncap * 2 : 16;
        cand *t = realloc(cs, cap * sizeof *cs);
        if (!t) goto nomem;
        cs = t;
        ncap = cap;
      }
      cs[nc++] = (cand){g->e[r].v, g->e[r].w};
    }
    if (nc == 0) continue;
    qsort(cs, nc, sizeof *cs, cmp_cand);
    size_t pick = 0;
    double jac = -1;
    if (texts) {
      const char *t;
      size_t len, ngj = 0, ngi;
      if ((rc = order_text(in, j, &t, &len, e))) goto fail;
      int jt = t != NULL;
      free(gj);
      gj = NULL;
      if (jt && grams3(t, len, &gj, &ngj)) goto nomem;
      for (pick = 0; jt && pick < nc; pick++) {
        if ((rc = order_text(in, cs[pick].i, &t, &len, e))) goto fail;
        if (!t) break; /* nothing to compare: the cosine decides */
        free(gi);
        gi = NULL;
        if (grams3(t, len, &gi, &ngi)) goto nomem;
        jac = jaccard_sets(gj, ngj, gi, ngi);
        if (jac >= o->dup_jaccard) break;
      }
      if (pick == nc) continue;
      if (jt && !t) jac = -1;
    }
    uint32_t i = cs[pick].i;
    d->of[j] = d->of[i] == ORDER_NONE ? i : d->of[i];
    d->sim[j] = cs[pick].s;
    d->jaccard[j] = (float)jac;
    d->count++;
  }
  order_report(o, ORDER_PHASE_DEDUP, n, n);
  free(cs);
  free(gj);
  free(gi);
  *out = d;
  return 0;
nomem:
  rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory in dedup");
fail:
  free(cs);
  free(gj);
  free(gi);
  order_dups_free(d);
  return rc;
}

/* ---- the path --------------------------------------------------------------- */

void order_path_free(order_path *p) {
  if (!p) return;
  free(p->doc);
  free(p->sim);
  free(p->jump);
  free(p);
}

/* Documents of minimum degree a jump compares with the current one. */
#define ORDER_JUMP_LOOK 32
#define VISITED UINT32_MAX

/* Buckets of unvisited documents by residual degree, lazily: a document
 * whose degree drops is pushed onto its new bucket's stack and its old
 * entry goes stale (skipped when met: the document's degree no longer
 * matches the bucket, or it was visited). Each push is one write, and the
 * most recently changed document of a bucket comes out first. The pool
 * holds n + (entries of the graph) pushes at most: a degree drops once per
 * visited neighbour. */
typedef struct bucketq {
  uint32_t *head;   /* per degree: the newest pool entry, or ORDER_NONE */
  uint32_t *state;  /* residual degree, or VISITED */
  struct {
    uint32_t v, next;
  } * pool;
  uint64_t top;
  uint64_t min;
} bucketq;

static inline void bq_push(bucketq *q, uint32_t v) {
  uint32_t d = q->state[v];
  q->pool[q->top].v = v;
  q->pool[q->top].next = q->head[d];
  q->head[d] = (uint32_t)q->top++;
  if (d < q->min) q->min = d;
}

/* Drop stale entries from the front of the lowest non-empty bucket; return
 * its first live document. */
static uint32_t bq_front(bucketq *q) {
  for (;;) {
    uint32_t h = q->head[q->min];
    if (h == ORDER_NONE) {
      q->min++;
      continue;
    }
    uint32_t v = q->pool[h].v;
    if (q->state[v] == q->min) return v;
    q->head[q->min] = q->pool[h].next;
  }
}

int order_traverse(const order_graph *g, const order_dups *d,
                   const order_input *in, const order_opts *o,
                   order_path **out, ctxd_error *e) {
  order_path *p = NULL;
  uint32_t *rank = NULL, *perm = NULL;
  bucketq q = {0};
  int rc = 0;
  uint64_t n = g->n;
  *out = NULL;
  if (d && d->n != n)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "duplicates of %llu documents for a graph of %llu",
                       (unsigned long long)d->n, (unsigned long long)n);
  if (n >= ORDER_NONE || g->off[n] + n >= ORDER_NONE)
    return ctxd_seterr(e, CTXD_EINVAL, "graph too large for the traversal");
  const float *vec = in->vectors && in->n == n ? in->vectors : NULL;
  uint32_t dim = in->dim;
  uint64_t m = n - (d ? d->count : 0);
  p = calloc(1, sizeof *p);
  if (!p) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  p->doc = malloc((m ? m : 1) * sizeof *p->doc);
  p->sim = malloc((m ? m : 1) * sizeof *p->sim);
  p->jump = calloc(m ? m : 1, 1);
  perm = malloc((n ? n : 1) * sizeof *perm);
  rank = malloc((n ? n : 1) * sizeof *rank);
  q.state = malloc((n ? n : 1) * sizeof *q.state);
  q.pool = malloc((n + g->off[n] + 1) * sizeof *q.pool);
  if (!p->doc || !p->sim || !p->jump || !perm || !rank || !q.state || !q.pool)
    goto nomem;
  for (uint64_t v = 0; v < n; v++)
    q.state[v] = d && d->of[v] != ORDER_NONE ? VISITED : 0;
  uint32_t maxdeg = 0;
  for (uint64_t v = 0; v < n; v++) {
    if (q.state[v] == VISITED) continue;
    uint32_t c = 0;
    for (uint64_t r = g->off[v]; r < g->off[v + 1]; r++)
      c += q.state[g->e[r].v] != VISITED;
    q.state[v] = c;
    if (c > maxdeg) maxdeg = c;
  }
  q.head = malloc(((uint64_t)maxdeg + 1) * sizeof *q.head);
  if (!q.head) goto nomem;
  memset(q.head, 0xff, ((uint64_t)maxdeg + 1) * sizeof *q.head);
  q.min = maxdeg;
  order_permutation(perm, n, o->seed);
  for (uint64_t r = 0; r < n; r++) rank[perm[r]] = (uint32_t)r;
  /* pushed in reverse so that each bucket starts in permutation order */
  for (uint64_t r = n; r-- > 0;)
    if (q.state[perm[r]] != VISITED) bq_push(&q, perm[r]);
  free(perm);
  perm = NULL;
  uint32_t cur = ORDER_NONE, next = ORDER_NONE;
  float next_w = 0;
  for (uint64_t pos = 0; pos < m; pos++) {
    if ((pos & 65535) == 0 &&
        (rc = order_step(o, ORDER_PHASE_TRAVERSE, pos, m, e)))
      goto fail;
    uint32_t best = next;
    float bw = next_w;
    if (best == ORDER_NONE) { /* the start, or stuck: jump */
      best = bq_front(&q);
      bw = 0;
      if (cur != ORDER_NONE && vec) {
        /* of the first live documents of minimum degree (those whose
         * degree changed last: neighbours of the recent path), the one
         * most similar to where the walk got stuck */
        const float *cv = vec + (uint64_t)cur * dim;
        int seen = 0;
        bw = -2;
        for (uint32_t h = q.head[q.min]; h != ORDER_NONE && seen < ORDER_JUMP_LOOK;
             h = q.pool[h].next) {
          uint32_t v = q.pool[h].v;
          if (q.state[v] != q.min) continue;
          seen++;
          float w = order_dot(cv, vec + (uint64_t)v * dim, dim);
          if (w > bw) {
            bw = w;
            best = v;
          }
        }
      }
      p->jump[pos] = pos > 0;
      p->jumps += pos > 0;
    }
    q.state[best] = VISITED;
    p->doc[pos] = best;
    p->sim[pos] = pos ? bw : 0;
    /* one pass over the row: lower the neighbours' degrees and find the
     * most similar unvisited one, the next step */
    next = ORDER_NONE;
    next_w = 0;
    for (uint64_t r = g->off[best]; r < g->off[best + 1]; r++) {
      uint32_t u = g->e[r].v;
      if (q.state[u] == VISITED) continue;
      q.state[u]--;
      bq_push(&q, u);
      float w = g->e[r].w;
      if (next == ORDER_NONE || w > next_w ||
          (w == next_w && rank[u] < rank[next])) {
        next = u;
        next_w = w;
      }
    }
    cur = best;
  }
  p->n = m;
  order_report(o, ORDER_PHASE_TRAVERSE, m, m);
  free(rank);
  free(q.head);
  free(q.state);
  free(q.pool);
  *out = p;
  return 0;
nomem:
  rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for the traversal");
fail:
  free(perm);
  free(rank);
  free(q.head);
  free(q.state);
  free(q.pool);
  order_path_free(p);
  return rc;
}

double order_path_similarity(const order_path *p) {
  if (p->n < 2) return NAN;
  double s = 0;
  for (uint64_t i = 1; i < p->n; i++) s += p->sim[i];
  return s / (double)(p->n - 1);
}

double order_random_similarity(const order_path *p, const order_input *in,
                               uint64_t seed) {
  if (p->n < 2 || !in->vectors) return NAN;
  uint32_t *perm = malloc(p->n * sizeof *perm);
  if (!perm) return NAN;
  order_permutation(perm, p->n, seed ^ 0x52414E444F4Dull);
  double s = 0;
  for (uint64_t i = 1; i < p->n; i++)
    s += order_dot(in->vectors + (uint64_t)p->doc[perm[i - 1]] * in->dim,
                   in->vectors + (uint64_t)p->doc[perm[i]] * in->dim, in->dim);
  free(perm);
  return s / (double)(p->n - 1);
}
