/* eval_embed.c - the measurement behind the hash embedder's defaults.
 *
 *   eval_embed grid passages.tsv full|curve [threads [rows.tsv]]
 *     For each option set, embeds every passage and finds each one's
 *     nearest neighbour among all the others (exact cosine); counts how
 *     often it comes from the same Brown sample (precision@1) and from the
 *     same genre. `full`: dims x bigram weight x tf x idf; `curve`: unigrams
 *     with sublinear tf only. Both add "live" idf: the vectors a collection
 *     would have stored while its statistics grew (passages in file order,
 *     i.e. genre by genre, or shuffled), queried with the final statistics.
 *     Prints markdown tables (dims across); one row per run goes to
 *     rows.tsv (default stderr).
 *   eval_embed speed corpus.txt [runs]
 *     Embedding throughput on prose cut into the daemon's default chunks
 *     (512 estimated tokens), batches of 64 chunks, one thread, best of
 *     runs, in MB per second of the thread's CPU time (steadier than wall
 *     time on a shared machine; on an idle one they agree).
 *
 * IDF is what the BM25 index would give: idf = ln(1 + (N - df + 0.5) /
 * (df + 0.5)) with N = passages and df = passages holding the term. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../benchfile.h"
#include "chunk.h"
#include "embed.h"
#include "lex.h"

static void die(const char *what) {
  fprintf(stderr, "eval_embed: %s\n", what);
  exit(1);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) die("out of memory");
  return p;
}

static void *xcalloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz);
  if (!p) die("out of memory");
  return p;
}

static char *slurp_or_die(const char *path, size_t *len) {
  char *buf = slurp(path, len);
  if (!buf) die("cannot read the input file");
  return buf;
}

/* ---- document frequencies and the idf callback ------------------------ */

typedef struct df_table {
  struct dfe {
    uint64_t h;
    uint32_t df, off, len;
  } *slots;
  size_t nslots, used;
  char *bytes;
  size_t nbytes, capbytes;
  uint64_t N; /* texts counted */
} df_table;

static uint64_t term_hash(const char *t, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)t[i]) * 0x100000001b3ull;
  return h | 1; /* 0 marks an empty slot */
}

/* The slot of term t: its own, or the empty one where it would go. */
static struct dfe *df_slot(const df_table *d, const char *t, size_t n) {
  uint64_t h = term_hash(t, n);
  size_t m = d->nslots - 1, p = h & m;
  while (d->slots[p].h && !(d->slots[p].h == h && d->slots[p].len == n &&
                            memcmp(d->bytes + d->slots[p].off, t, n) == 0))
    p = (p + 1) & m;
  return &d->slots[p];
}

/* Sized for the vocabulary of the inputs here (well under a million terms). */
static void df_init(df_table *d) {
  memset(d, 0, sizeof *d);
  d->nslots = 1 << 21;
  d->slots = xcalloc(d->nslots, sizeof *d->slots);
  d->capbytes = 1 << 24;
  d->bytes = xmalloc(d->capbytes);
}

static void df_free(df_table *d) {
  free(d->slots);
  free(d->bytes);
}

/* Count one more text: N + 1, and df + 1 for each distinct term of it. */
static void df_add(df_table *d, const char *text, size_t len) {
  lex_tf *tf;
  size_t nt;
  uint32_t total;
  if (lex_terms(text, len, &tf, &nt, &total, NULL)) die("lex_terms");
  for (size_t k = 0; k < nt; k++) {
    struct dfe *s = df_slot(d, tf[k].term, tf[k].len);
    if (s->df++ == 0) {
      if (d->nbytes + tf[k].len > d->capbytes || ++d->used * 2 > d->nslots)
        die("vocabulary too large");
      memcpy(d->bytes + d->nbytes, tf[k].term, tf[k].len);
      s->h = term_hash(tf[k].term, tf[k].len);
      s->off = (uint32_t)d->nbytes;
      s->len = tf[k].len;
      d->nbytes += tf[k].len;
    }
  }
  free(tf);
  d->N++;
}

/* The BM25 index's idf of a term from the texts counted so far. */
static double df_idf(const char *t, size_t n, void *arg) {
  const df_table *d = arg;
  return lex_bm25_idf(d->N, df_slot(d, t, n)->df);
}

/* ---- the labelled passages --------------------------------------------- */

typedef struct corpus {
  size_t n;
  const char **text;
  size_t *len;
  int *sample, *genre;
} corpus;

/* Labels: consecutive equal names get the same id (the file is in sample
 * order); genres are looked up among those seen. */
static void read_passages(const char *path, corpus *c) {
  size_t len, cap = 1024;
  char *buf = slurp_or_die(path, &len), *p = buf;
  char genres[32][32];
  int ngenres = 0;
  const char *last_sample = "";
  c->n = 0;
  c->text = xmalloc(cap * sizeof *c->text);
  c->len = xmalloc(cap * sizeof *c->len);
  c->sample = xmalloc(cap * sizeof *c->sample);
  c->genre = xmalloc(cap * sizeof *c->genre);
  int sample_id = -1;
  while (p < buf + len) {
    char *eol = strchr(p, '\n'), *t1 = strchr(p, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
    if (!eol || !t1 || !t2 || t2 > eol) die("passages file: bad line");
    *t1 = *t2 = *eol = 0;
    if (c->n == cap) {
      cap *= 2;
      if (!(c->text = realloc(c->text, cap * sizeof *c->text)) ||
          !(c->len = realloc(c->len, cap * sizeof *c->len)) ||
          !(c->sample = realloc(c->sample, cap * sizeof *c->sample)) ||
          !(c->genre = realloc(c->genre, cap * sizeof *c->genre)))
        die("out of memory");
    }
    if (strcmp(p, last_sample)) sample_id++;
    last_sample = p;
    int g = 0;
    while (g < ngenres && strcmp(genres[g], t1 + 1)) g++;
    if (g == ngenres) {
      if (ngenres == 32 || strlen(t1 + 1) >= 32) die("too many genres");
      strcpy(genres[ngenres++], t1 + 1);
    }
    c->text[c->n] = t2 + 1;
    c->len[c->n] = (size_t)(eol - t2 - 1);
    c->sample[c->n] = sample_id;
    c->genre[c->n] = g;
    c->n++;
    p = eol + 1;
  }
  fprintf(stderr, "%s: %zu passages, %d samples, %d genres\n", path, c->n, sample_id + 1,
          ngenres);
}

/* ---- embedded rows, sparse --------------------------------------------- */

/* A hashed row has at most one nonzero per feature of its text, far fewer
 * than dim: rows are kept as CSR, row r in rp[r]..rp[r+1]. */
typedef struct rows {
  size_t n, cap;
  size_t *rp;
  uint32_t *col;
  float *val;
} rows;

static void rows_init(rows *r, size_t n) {
  r->n = n;
  r->cap = n * 64;
  r->rp = xcalloc(n + 1, sizeof *r->rp);
  r->col = xmalloc(r->cap * sizeof *r->col);
  r->val = xmalloc(r->cap * sizeof *r->val);
}

static void rows_free(rows *r) {
  free(r->rp);
  free(r->col);
  free(r->val);
}

/* Append dense row i (rows are set in increasing i). */
static void rows_set(rows *r, size_t i, const float *row, uint32_t dim) {
  size_t nnz = r->rp[i];
  for (uint32_t j = 0; j < dim; j++) {
    if (row[j] == 0) continue;
    if (nnz == r->cap) {
      r->cap *= 2;
      if (!(r->col = realloc(r->col, r->cap * sizeof *r->col)) ||
          !(r->val = realloc(r->val, r->cap * sizeof *r->val)))
        die("out of memory");
    }
    r->col[nnz] = j;
    r->val[nnz++] = row[j];
  }
  r->rp[i + 1] = nnz;
}

static void rows_embed(rows *r, const embedder *m, const corpus *c) {
  const size_t B = 256;
  float *buf = xmalloc(B * m->dim * sizeof *buf);
  ctxd_error e;
  rows_init(r, c->n);
  for (size_t i = 0; i < c->n; i += B) {
    size_t k = c->n - i < B ? c->n - i : B;
    if (embed_texts(m, c->text + i, c->len + i, k, buf, &e)) die(e.msg);
    for (size_t q = 0; q < k; q++) rows_set(r, i + q, buf + q * m->dim, m->dim);
  }
  free(buf);
}

/* The vectors a collection would store with idf from its live BM25 index:
 * passages arrive in `order`, and each is embedded before it is counted
 * (the daemon embeds a document's chunks before it commits them). */
static void rows_embed_live(rows *r, const embed_hash_opts *base, const corpus *c,
                            const size_t *order) {
  embed_hash_opts o = *base;
  df_table df;
  embedder *m;
  ctxd_error e;
  df_init(&df);
  o.idf = df_idf;
  o.idf_arg = &df;
  if (embed_hash_create(&o, &m, &e)) die(e.msg);
  float *dense = xmalloc(c->n * (size_t)o.dim * sizeof *dense);
  for (size_t k = 0; k < c->n; k++) {
    size_t i = order[k];
    if (embed_texts(m, &c->text[i], &c->len[i], 1, dense + i * o.dim, &e)) die(e.msg);
    df_add(&df, c->text[i], c->len[i]);
  }
  rows_init(r, c->n);
  for (size_t i = 0; i < c->n; i++) rows_set(r, i, dense + i * o.dim, o.dim);
  free(dense);
  embedder_free(m);
  df_free(&df);
}

/* ---- exact nearest neighbours ------------------------------------------ */

/* The transpose of the candidate rows, split in two: coordinates held by
 * many rows get a dense column of n floats (scored with a vectorised
 * axpy), the rest a posting list. */
typedef struct nn_index {
  size_t n;
  uint32_t dim;
  int32_t *dense_of; /* coordinate -> dense column, or -1 */
  float *dense;      /* ndense * n */
  size_t *pp;        /* coordinate j: postings pp[j]..pp[j+1] */
  uint32_t *prow;
  float *pval;
} nn_index;

static void nn_build(nn_index *x, const rows *r, uint32_t dim) {
  size_t n = r->n, nnz = r->rp[n];
  size_t *cnt = xcalloc(dim + 1, sizeof *cnt);
  x->n = n;
  x->dim = dim;
  for (size_t q = 0; q < nnz; q++) cnt[r->col[q]]++;
  x->dense_of = xmalloc(dim * sizeof *x->dense_of);
  size_t ndense = 0;
  for (uint32_t j = 0; j < dim; j++) x->dense_of[j] = cnt[j] * 16 > n ? (int32_t)ndense++ : -1;
  x->dense = xcalloc(ndense * n, sizeof *x->dense);
  x->pp = xcalloc(dim + 1, sizeof *x->pp);
  for (uint32_t j = 0; j < dim; j++) x->pp[j + 1] = x->pp[j] + (x->dense_of[j] < 0 ? cnt[j] : 0);
  x->prow = xmalloc(x->pp[dim] * sizeof *x->prow);
  x->pval = xmalloc(x->pp[dim] * sizeof *x->pval);
  memset(cnt, 0, (dim + 1) * sizeof *cnt);
  for (size_t i = 0; i < n; i++)
    for (size_t q = r->rp[i]; q < r->rp[i + 1]; q++) {
      uint32_t j = r->col[q];
      if (x->dense_of[j] >= 0) {
        x->dense[(size_t)x->dense_of[j] * n + i] = r->val[q];
      } else {
        size_t at = x->pp[j] + cnt[j]++;
        x->prow[at] = (uint32_t)i;
        x->pval[at] = r->val[q];
      }
    }
  free(cnt);
}

static void nn_free(nn_index *x) {
  free(x->dense_of);
  free(x->dense);
  free(x->pp);
  free(x->prow);
  free(x->pval);
}

/* Nearest candidate to query row i of q, candidate i excluded: the highest
 * inner product (rows are unit vectors), the lowest index among ties; -1
 * for a zero query. */
static long nn_query(const nn_index *x, const rows *q, size_t i, float *scores) {
  const size_t n = x->n;
  memset(scores, 0, n * sizeof *scores);
  if (q->rp[i] == q->rp[i + 1]) return -1;
  for (size_t k = q->rp[i]; k < q->rp[i + 1]; k++) {
    uint32_t j = q->col[k];
    float v = q->val[k];
    if (x->dense_of[j] >= 0) {
      const float *d = x->dense + (size_t)x->dense_of[j] * n;
      for (size_t t = 0; t < n; t++) scores[t] += v * d[t];
    } else {
      for (size_t t = x->pp[j]; t < x->pp[j + 1]; t++) scores[x->prow[t]] += v * x->pval[t];
    }
  }
  long best = -1;
  float bs = -INFINITY;
  for (size_t t = 0; t < n; t++)
    if (t != i && scores[t] > bs) {
      bs = scores[t];
      best = (long)t;
    }
  return best;
}

typedef struct nn_job {
  const nn_index *x;
  const rows *q;
  const corpus *c;
  size_t next;                    /* shared, atomic */
  size_t same_sample, same_genre; /* atomic */
} nn_job;

static void *nn_worker(void *arg) {
  nn_job *j = arg;
  float *scores = xmalloc(j->x->n * sizeof *scores);
  size_t ss = 0, sg = 0;
  for (;;) {
    size_t i0 = __atomic_fetch_add(&j->next, 64, __ATOMIC_RELAXED);
    if (i0 >= j->x->n) break;
    for (size_t i = i0; i < i0 + 64 && i < j->x->n; i++) {
      long b = nn_query(j->x, j->q, i, scores);
      if (b < 0) continue;
      ss += j->c->sample[b] == j->c->sample[i];
      sg += j->c->genre[b] == j->c->genre[i];
    }
  }
  __atomic_fetch_add(&j->same_sample, ss, __ATOMIC_RELAXED);
  __atomic_fetch_add(&j->same_genre, sg, __ATOMIC_RELAXED);
  free(scores);
  return NULL;
}

/* Precision@1 (same sample, same genre) of queries q against candidates r. */
static void precision(const rows *q, const rows *r, uint32_t dim, const corpus *c, int threads,
                      double *ps, double *pg) {
  nn_index x;
  nn_build(&x, r, dim);
  nn_job job = {&x, q, c, 0, 0, 0};
  pthread_t th[64];
  for (int t = 0; t < threads; t++)
    if (pthread_create(&th[t], NULL, nn_worker, &job)) die("pthread_create");
  for (int t = 0; t < threads; t++) pthread_join(th[t], NULL);
  nn_free(&x);
  *ps = (double)job.same_sample / (double)c->n;
  *pg = (double)job.same_genre / (double)c->n;
}

/* ---- the grid ---------------------------------------------------------- */

enum { IDF_NO, IDF_YES, IDF_LIVE_ORDER, IDF_LIVE_SHUFFLED, IDF_QUERY, IDF_KINDS };
static const char *const idf_name[IDF_KINDS] = {"no", "yes", "live, genre order",
                                                "live, shuffled", "queries only"};
static const uint32_t dims[] = {128, 256, 512, 768, 1024, 2048, 4096, 65536};
#define NDIMS (sizeof dims / sizeof dims[0])
static const float bigram_w[] = {0, 0.25f, 0.5f, 1.0f};
static const char *const bigram_name[] = {"off", "0.25", "0.5", "1"};
#define NBW (sizeof bigram_w / sizeof bigram_w[0])

/* One result per (variant, dim); a variant is bigrams x tf x idf kind. */
typedef struct result {
  int done;
  double ps, pg;
} result;

static void print_pivot(result (*res)[NDIMS], int nvar, int genre) {
  printf("\n%s\n\n| bigrams | tf | idf |", genre ? "p@1, same genre:" : "p@1, same sample:");
  for (size_t d = 0; d < NDIMS; d++) printf(" %u |", dims[d]);
  printf("\n| --- | --- | --- |");
  for (size_t d = 0; d < NDIMS; d++) printf(" ---: |");
  printf("\n");
  for (int v = 0; v < nvar; v++) {
    if (!res[v][0].done) continue;
    int bi = v % NBW, sub = v / NBW % 2, idf = v / NBW / 2;
    printf("| %s | %s | %s |", bigram_name[bi], sub ? "sublinear" : "raw", idf_name[idf]);
    for (size_t d = 0; d < NDIMS; d++) printf(" %.3f |", genre ? res[v][d].pg : res[v][d].ps);
    printf("\n");
  }
}

/* full: every bigram weight x tf x idf (yes/no), plus live idf for
 * unigrams with sublinear tf; curve: unigrams with sublinear tf only. */
static void grid(const char *path, int full, int threads, FILE *tsv) {
  corpus c;
  df_table df;
  read_passages(path, &c);
  df_init(&df);
  for (size_t i = 0; i < c.n; i++) df_add(&df, c.text[i], c.len[i]);
  size_t *in_order = xmalloc(c.n * sizeof *in_order), *shuffled = xmalloc(c.n * sizeof *shuffled);
  uint64_t rng = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < c.n; i++) in_order[i] = shuffled[i] = i;
  for (size_t i = c.n - 1; i > 0; i--) { /* Fisher-Yates, xorshift64 */
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    size_t j = rng % (i + 1), t = shuffled[i];
    shuffled[i] = shuffled[j];
    shuffled[j] = t;
  }
  int nvar = (int)NBW * 2 * IDF_KINDS;
  result(*res)[NDIMS] = xcalloc((size_t)nvar, sizeof *res);
  fprintf(tsv, "dim\tbigram_weight\ttf\tidf\tp@1_sample\tp@1_genre\tnnz_per_row\tseconds\n");
  for (size_t di = 0; di < NDIMS; di++)
    for (int v = 0; v < nvar; v++) {
      int bi = v % NBW, sub = v / NBW % 2, idf = v / NBW / 2;
      int unigram_sub = bi == 0 && sub;
      if (full ? (idf >= IDF_LIVE_ORDER && !unigram_sub) : !unigram_sub) continue;
      double t0 = now();
      embed_hash_opts o;
      embedder *m;
      ctxd_error e;
      rows r, live;
      embed_hash_defaults(&o);
      o.dim = dims[di];
      o.bigrams = bi > 0;
      o.bigram_weight = bi > 0 ? bigram_w[bi] : 1;
      o.sublinear_tf = sub;
      o.idf = idf == IDF_NO ? NULL : df_idf;
      o.idf_arg = &df;
      if (embed_hash_create(&o, &m, &e)) die(e.msg);
      /* Queries are always embedded with the final statistics; with live
       * idf the candidates are what the collection stored over time. */
      rows_embed(&r, m, &c);
      const rows *cand = &r;
      if (idf == IDF_LIVE_ORDER || idf == IDF_LIVE_SHUFFLED) {
        rows_embed_live(&live, &o, &c, idf == IDF_LIVE_ORDER ? in_order : shuffled);
        cand = &live;
      } else if (idf == IDF_QUERY) {
        embedder *plain;
        o.idf = NULL;
        if (embed_hash_create(&o, &plain, &e)) die(e.msg);
        rows_embed(&live, plain, &c);
        embedder_free(plain);
        cand = &live;
      }
      result *x = &res[v][di];
      precision(&r, cand, o.dim, &c, threads, &x->ps, &x->pg);
      x->done = 1;
      fprintf(tsv, "%u\t%s\t%s\t%s\t%.4f\t%.4f\t%.0f\t%.1f\n", o.dim, bigram_name[bi],
              sub ? "sublinear" : "raw", idf_name[idf], x->ps, x->pg,
              (double)r.rp[c.n] / (double)c.n, now() - t0);
      fflush(tsv);
      if (cand != &r) rows_free(&live);
      rows_free(&r);
      embedder_free(m);
    }
  print_pivot(res, nvar, 0);
  print_pivot(res, nvar, 1);
  free(res);
  free(in_order);
  free(shuffled);
  df_free(&df);
}

/* ---- throughput -------------------------------------------------------- */

static double cpu_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double time_embed(const embedder *m, const char *const *t, const size_t *l, size_t n,
                         int runs) {
  float *out = xmalloc(64 * (size_t)m->dim * sizeof *out);
  double best = 1e30;
  for (int r = 0; r < runs; r++) {
    double t0 = cpu_now();
    for (size_t i = 0; i < n; i += 64)
      if (embed_texts(m, t + i, l + i, n - i < 64 ? n - i : 64, out, NULL)) die("embed");
    double dt = cpu_now() - t0;
    if (dt < best) best = dt;
  }
  free(out);
  return best;
}

static void speed(const char *path, int runs) {
  size_t len, n;
  char *text = slurp_or_die(path, &len);
  chunk_span *sp;
  chunk_opts co = {CHUNK_DEFAULT_MAX_TOKENS, 0, 0};
  ctxd_error e;
  if (chunk_text(text, len, &co, tok_estimator(), &sp, &n, &e)) die(e.msg);
  const char **t = xmalloc(n * sizeof *t);
  size_t *l = xmalloc(n * sizeof *l);
  for (size_t i = 0; i < n; i++) {
    t[i] = text + sp[i].byte_start;
    l[i] = (size_t)(sp[i].byte_end - sp[i].byte_start);
  }
  df_table df;
  df_init(&df);
  for (size_t i = 0; i < n; i++) df_add(&df, t[i], l[i]);
  fprintf(stderr, "%zu bytes in %zu chunks of at most %u tokens, batches of 64\n", len, n,
          co.max_tokens);
  printf("embedder\tMB per CPU-second\n");
  /* The floor: the lexical analyser alone. */
  double lbest = 1e30;
  for (int r = 0; r < runs; r++) {
    double t0 = cpu_now();
    size_t terms = 0;
    for (size_t i = 0; i < n; i++) {
      lex_iter it;
      char term[LEX_TERM_MAX];
      size_t tl;
      lex_iter_init(&it, t[i], l[i]);
      while (lex_next(&it, term, &tl, NULL, NULL)) terms++;
    }
    double dt = cpu_now() - t0;
    if (dt < lbest && terms) lbest = dt;
  }
  printf("lex_next alone (the floor)\t%.1f\n", (double)len / lbest / 1e6);
  for (int v = 0; v < 3; v++) {
    embed_hash_opts o;
    embedder *m;
    char name[200];
    embed_hash_defaults(&o);
    if (v == 1) o.bigrams = 1;
    if (v == 2) {
      o.idf = df_idf;
      o.idf_arg = &df;
    }
    if (embed_hash_create(&o, &m, &e)) die(e.msg);
    embed_hash_format(&o, name, sizeof name);
    printf("%s%s\t%.1f\n", name, v == 2 ? " + idf (table lookup)" : "",
           (double)len / time_embed(m, t, l, n, runs) / 1e6);
    embedder_free(m);
  }
  df_free(&df);
  free(sp);
  free(t);
  free(l);
  free(text);
}

int main(int argc, char **argv) {
  if (argc >= 4 && strcmp(argv[1], "grid") == 0) {
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    int threads = argc > 4 && *argv[4] ? atoi(argv[4]) : (int)(nc > 0 ? nc : 1);
    int full = strcmp(argv[3], "full") == 0;
    if (!full && strcmp(argv[3], "curve")) die("grid: full or curve");
    if (threads < 1 || threads > 64) die("threads: 1..64");
    FILE *tsv = argc > 5 ? fopen(argv[5], "w") : stderr;
    if (!tsv) die("cannot write the rows file");
    grid(argv[2], full, threads, tsv);
    if (tsv != stderr) fclose(tsv);
    return 0;
  }
  if (argc >= 3 && strcmp(argv[1], "speed") == 0) {
    speed(argv[2], argc > 3 ? atoi(argv[3]) : 5);
    return 0;
  }
  fprintf(stderr, "usage: %s grid passages.tsv full|curve [threads [rows.tsv]]\n"
                  "       %s speed corpus.txt [runs]\n", argv[0], argv[0]);
  return 2;
}
