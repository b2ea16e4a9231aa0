/* order_path.c - corpus ordering, middle steps: the undirected kNN graph in
 * CSR form, near-duplicate removal over it, and the greedy maximum-TSP path
 * (bucket queue of residual degrees), with the path's quality figures. */
#include <stdlib.h>
#include <string.h>

#include "order_impl.h"

struct order_graph {
  uint64_t n;
  uint64_t *off; /* n + 1: row i is adj/w[off[i] .. off[i+1]) */
  uint32_t *adj;
  float *w;
};

uint64_t order_graph_nodes(const order_graph *g) { return g->n; }
uint64_t order_graph_edges(const order_graph *g) { return g->off[g->n] / 2; }

void order_graph_free(order_graph *g) {
  if (!g) return;
  free(g->off);
  free(g->adj);
  free(g->w);
  free(g);
}

int order_graph_build(const order_knn *k, order_graph **out, ctxd_error *e) {
  order_graph *g = NULL;
  uint32_t *stamp = NULL, *where = NULL;
  uint64_t *cur = NULL;
  int rc = 0;
  uint64_t n = k->n;
  *out = NULL;
  g = calloc(1, sizeof *g);
  if (!g) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  g->n = n;
  g->off = calloc(n + 1, sizeof *g->off);
  cur = malloc((n + 1) * sizeof *cur);
  if (!g->off || !cur) goto nomem;
  /* degrees with both directions of every kNN entry (mutual ones twice) */
  for (uint64_t i = 0; i < n; i++)
    for (uint32_t c = 0; c < k->k; c++) {
      uint32_t j = k->nbr[i * k->k + c];
      if (j == ORDER_NONE || j == i) continue;
      if (j >= n) {
        rc = ctxd_seterr(e, CTXD_ECORRUPT, "kNN row %llu names document %u of %llu",
                         (unsigned long long)i, j, (unsigned long long)n);
        goto fail;
      }
      g->off[i + 1]++;
      g->off[j + 1]++;
    }
  for (uint64_t i = 0; i < n; i++) g->off[i + 1] += g->off[i];
  uint64_t total = g->off[n];
  g->adj = malloc((total ? total : 1) * sizeof *g->adj);
  g->w = malloc((total ? total : 1) * sizeof *g->w);
  if (!g->adj || !g->w) goto nomem;
  memcpy(cur, g->off, (n + 1) * sizeof *cur);
  for (uint64_t i = 0; i < n; i++)
    for (uint32_t c = 0; c < k->k; c++) {
      uint32_t j = k->nbr[i * k->k + c];
      if (j == ORDER_NONE || j == i) continue;
      float s = k->sim[i * k->k + c];
      g->adj[cur[i]] = j;
      g->w[cur[i]++] = s;
      g->adj[cur[j]] = (uint32_t)i;
      g->w[cur[j]++] = s;
    }
  free(cur);
  cur = NULL;
  /* drop the second copy of mutual edges, compacting rows in place */
  stamp = malloc((n ? n : 1) * sizeof *stamp);
  where = malloc((n ? n : 1) * sizeof *where);
  if (!stamp || !where) goto nomem;
  memset(stamp, 0xff, n * sizeof *stamp);
  uint64_t wp = 0, start = 0;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t end = g->off[i + 1];
    g->off[i] = wp;
    for (uint64_t r = start; r < end; r++) {
      uint32_t j = g->adj[r];
      float s = g->w[r];
      if (stamp[j] == (uint32_t)i) {
        float *keep = &g->w[g->off[i] + where[j]];
        if (s > *keep) *keep = s;
        continue;
      }
      stamp[j] = (uint32_t)i;
      where[j] = (uint32_t)(wp - g->off[i]); /* offset in the row */
      g->adj[wp] = j;
      g->w[wp++] = s;
    }
    start = end;
  }
  g->off[n] = wp;
  free(stamp);
  free(where);
  *out = g;
  return 0;
nomem:
  rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for the graph of %llu documents",
                   (unsigned long long)n);
fail:
  free(cur);
  free(stamp);
  free(where);
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
    if ((j & 65535) == 0) {
      order_report(o, ORDER_PHASE_DEDUP, j, n);
      if (order_cancelled(o->cancel)) {
        rc = ctxd_seterr(e, CTXD_ECANCELED, "cancelled in dedup");
        goto fail;
      }
    }
    size_t nc = 0;
    for (uint64_t r = g->off[j]; r < g->off[j + 1]; r++) {
      if (g->adj[r] >= j || g->w[r] < o->dup_cosine) continue;
      if (nc == ncap) {
        size_t cap = ncap ? ncap * 2 : 16;
        cand *t = realloc(cs, cap * sizeof *cs);
        if (!t) goto nomem;
        cs = t;
        ncap = cap;
      }
      cs[nc++] = (cand){g->adj[r], g->w[r]};
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

/* Buckets of unvisited documents by residual degree: intrusive doubly
 * linked lists, pushed at the head, so the document whose degree changed
 * last comes out first. */
typedef struct bucketq {
  uint32_t *head, *next, *prev;
  uint32_t *deg;
  uint64_t min;
} bucketq;

static void bq_push(bucketq *q, uint32_t v) {
  uint32_t d = q->deg[v], h = q->head[d];
  q->next[v] = h;
  q->prev[v] = ORDER_NONE;
  if (h != ORDER_NONE) q->prev[h] = v;
  q->head[d] = v;
  if (d < q->min) q->min = d;
}

static void bq_remove(bucketq *q, uint32_t v) {
  uint32_t p = q->prev[v], nx = q->next[v];
  if (p != ORDER_NONE)
    q->next[p] = nx;
  else
    q->head[q->deg[v]] = nx;
  if (nx != ORDER_NONE) q->prev[nx] = p;
}

int order_traverse(const order_graph *g, const order_dups *d,
                   const order_input *in, const order_opts *o,
                   order_path **out, ctxd_error *e) {
  order_path *p = NULL;
  uint32_t *rank = NULL, *perm = NULL;
  uint8_t *done = NULL;
  bucketq q = {0};
  int rc = 0;
  uint64_t n = g->n;
  *out = NULL;
  if (d && d->n != n)
    return ctxd_seterr(e, CTXD_EINVAL, "duplicates of %llu documents for a "
                       "graph of %llu",
                       (unsigned long long)d->n, (unsigned long long)n);
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
  /* done[v]: visited, or a duplicate (never visited) */
  done = calloc(n ? n : 1, 1);
  q.deg = calloc(n ? n : 1, sizeof *q.deg);
  q.next = malloc((n ? n : 1) * sizeof *q.next);
  q.prev = malloc((n ? n : 1) * sizeof *q.prev);
  if (!p->doc || !p->sim || !p->jump || !perm || !rank || !done || !q.deg ||
      !q.next || !q.prev)
    goto nomem;
  if (d)
    for (uint64_t v = 0; v < n; v++) done[v] = d->of[v] != ORDER_NONE;
  uint32_t maxdeg = 0;
  for (uint64_t v = 0; v < n; v++) {
    if (done[v]) continue;
    uint32_t c = 0;
    for (uint64_t r = g->off[v]; r < g->off[v + 1]; r++) c += !done[g->adj[r]];
    q.deg[v] = c;
    if (c > maxdeg) maxdeg = c;
  }
  q.head = malloc(((uint64_t)maxdeg + 1) * sizeof *q.head);
  if (!q.head) goto nomem;
  memset(q.head, 0xff, ((uint64_t)maxdeg + 1) * sizeof *q.head);
  q.min = maxdeg;
  order_permutation(perm, n, o->seed);
  for (uint64_t r = 0; r < n; r++) rank[perm[r]] = (uint32_t)r;
  /* push in reverse rank so each bucket starts in permutation order */
  for (uint64_t r = n; r-- > 0;)
    if (!done[perm[r]]) bq_push(&q, perm[r]);
  free(perm);
  perm = NULL;
  uint32_t cur = ORDER_NONE;
  for (uint64_t pos = 0; pos < m; pos++) {
    if ((pos & 65535) == 0) {
      order_report(o, ORDER_PHASE_TRAVERSE, pos, m);
      if (order_cancelled(o->cancel)) {
        rc = ctxd_seterr(e, CTXD_ECANCELED, "cancelled in the traversal");
        goto fail;
      }
    }
    uint32_t best = ORDER_NONE;
    float bw = 0;
    if (cur != ORDER_NONE)
      for (uint64_t r = g->off[cur]; r < g->off[cur + 1]; r++) {
        uint32_t u = g->adj[r];
        if (done[u]) continue;
        float w = g->w[r];
        if (best == ORDER_NONE || w > bw || (w == bw && rank[u] < rank[best])) {
          best = u;
          bw = w;
        }
      }
    if (best == ORDER_NONE) {
      while (q.head[q.min] == ORDER_NONE) q.min++;
      best = q.head[q.min];
      bw = 0;
      if (cur != ORDER_NONE && vec) {
        /* among the first few of equal minimum degree (those whose degree
         * changed last: neighbours of the recent path), the one most
         * similar to where the walk got stuck */
        const float *cv = vec + (uint64_t)cur * dim;
        int seen = 0;
        bw = -2;
        for (uint32_t v = best; v != ORDER_NONE && seen < ORDER_JUMP_LOOK;
             v = q.next[v], seen++) {
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
    bq_remove(&q, best);
    done[best] = 1;
    p->doc[pos] = best;
    p->sim[pos] = pos ? bw : 0;
    for (uint64_t r = g->off[best]; r < g->off[best + 1]; r++) {
      uint32_t u = g->adj[r];
      if (done[u]) continue;
      bq_remove(&q, u);
      q.deg[u]--;
      bq_push(&q, u);
    }
    cur = best;
  }
  p->n = m;
  order_report(o, ORDER_PHASE_TRAVERSE, m, m);
  free(rank);
  free(done);
  free(q.head);
  free(q.next);
  free(q.prev);
  free(q.deg);
  *out = p;
  return 0;
nomem:
  rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for the traversal");
fail:
  free(perm);
  free(rank);
  free(done);
  free(q.head);
  free(q.next);
  free(q.prev);
  free(q.deg);
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
