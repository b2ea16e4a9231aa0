/* coll.c - collections: their configs, one vector index per collection kept
 * in step with the store through the change log, index files, the
 * maintenance thread (save, train, rebuild), and search (vector, BM25,
 * hybrid RRF) with document-id and metadata filters.
 *
 * Locks, always taken in this order:
 *   save_mu  serialises coll_save_all (the file writes run without sync_mu).
 *   sync_mu  serialises everything that applies changes to an index or
 *            changes which index a collection uses: coll_sync, create, drop,
 *            the switch at the end of a rebuild. `applied` is under it.
 *   mu       short holds only: the collection table, each entry's `vx`
 *            pointer (written with sync_mu and mu held, read under either),
 *            reference counts, rebuild status, saved seqs, the maintenance
 *            thread's wake-ups.
 * Searches take mu just long enough to reference the entry and its index;
 * vindex's own rwlock orders them against adds and removals. */
#include "coll.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup.h"

/* ---- Config text --------------------------------------------------------- */

const char *coll_metric_name(vindex_metric m) {
  return m == VINDEX_L2 ? "l2" : "ip";
}

int coll_metric_parse(const char *s, vindex_metric *out, ctxd_error *e) {
  if (strcmp(s, "ip") == 0) {
    *out = VINDEX_IP;
    return 0;
  }
  if (strcmp(s, "l2") == 0) {
    *out = VINDEX_L2;
    return 0;
  }
  return ctxd_seterr(e, CTXD_EINVAL, "metric \"%.32s\": expected ip or l2", s);
}

static int name_ok(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > STORE_COLL_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-'))
      return 0;
  }
  return 1;
}

static int parse_u32(const char *s, uint32_t *out) {
  if (*s < '0' || *s > '9') return -1;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v > UINT32_MAX) return -1;
  *out = (uint32_t)v;
  return 0;
}

/* The embedder field: "hash[:opts]", "none:dim=N" or an identified
 * "model:..." (embed.h). is_hash (1 hash, 2 model, 0 none) and ho (hash
 * options) or the dim of a "none" or "model" embedder come back. */
static int embedder_parse(const char *s, int *is_hash, embed_hash_opts *ho,
                          uint32_t *dim, ctxd_error *e) {
  if (embed_is_model(s)) {
    embed_model_opts mo;
    int rc = embed_model_parse(s, &mo, e);
    if (rc) return rc;
    if (!mo.identified)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "embedder \"%.64s\": a collection's model embedder "
                         "records the model's name, dim and hash (the daemon "
                         "fills them from its loaded model)",
                         s);
    memset(ho, 0, sizeof *ho);
    *is_hash = 2;
    *dim = mo.dim;
    return 0;
  }
  if (strcmp(s, "hash") == 0 || strncmp(s, "hash:", 5) == 0) {
    embed_hash_defaults(ho);
    int rc = embed_hash_parse(s, ho, e);
    if (rc) return rc;
    *is_hash = 1;
    *dim = ho->dim;
    return 0;
  }
  if (strncmp(s, "none:dim=", 9) == 0) {
    uint32_t d;
    if (parse_u32(s + 9, &d) || d == 0 || d > VINDEX_DIM_MAX)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "embedder \"%.64s\": dim must be 1..%u", s,
                         (unsigned)VINDEX_DIM_MAX);
    *is_hash = 0;
    *dim = d;
    return 0;
  }
  return ctxd_seterr(e, CTXD_EINVAL,
                     "embedder \"%.64s\": expected \"hash\", \"hash:...\", "
                     "\"model\" or \"none:dim=N\"",
                     s);
}

static int copy_field(char *dst, size_t cap, const char *src, size_t n) {
  if (n >= cap) return -1;
  memcpy(dst, src, n);
  dst[n] = 0;
  return 0;
}

int coll_config_parse(const char *text, coll_config *out, ctxd_error *e) {
  enum { K_NAME, K_EMB, K_METRIC, K_INDEX, K_MAX, K_OVL, K_N };
  static const char *const keys[K_N] = {"name",  "embedder",
                                        "metric", "index",
                                        "chunk_max_tokens",
                                        "chunk_overlap_tokens"};
  int seen[K_N] = {0};
  coll_config c;
  memset(&c, 0, sizeof c);
  unsigned line = 0;
  const char *p = text;
  while (*p) {
    line++;
    const char *eol = strchr(p, '\n');
    size_t len = eol ? (size_t)(eol - p) : strlen(p);
    const char *next = eol ? eol + 1 : p + len;
    if (len && p[len - 1] == '\r') len--;
    if (len == 0 || p[0] == '#') {
      p = next;
      continue;
    }
    const char *eq = memchr(p, '=', len);
    if (!eq)
      return ctxd_seterr(e, CTXD_EINVAL, "collection config line %u: no '='",
                         line);
    size_t klen = (size_t)(eq - p), vlen = len - klen - 1;
    const char *v = eq + 1;
    int k;
    for (k = 0; k < K_N; k++)
      if (strlen(keys[k]) == klen && memcmp(keys[k], p, klen) == 0) break;
    if (k == K_N)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "collection config line %u: unknown key \"%.*s\"",
                         line, (int)(klen > 64 ? 64 : klen), p);
    if (seen[k]++)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "collection config line %u: repeated key %s", line,
                         keys[k]);
    char val[256];
    if (copy_field(val, sizeof val, v, vlen))
      return ctxd_seterr(e, CTXD_EINVAL,
                         "collection config line %u: %s value too long", line,
                         keys[k]);
    int bad = 0;
    switch (k) {
      case K_NAME:
        bad = copy_field(c.name, sizeof c.name, val, vlen) || !name_ok(c.name);
        break;
      case K_EMB:
        bad = copy_field(c.embedder, sizeof c.embedder, val, vlen);
        break;
      case K_METRIC: {
        int rc = coll_metric_parse(val, &c.metric, e);
        if (rc) return rc;
        break;
      }
      case K_INDEX:
        bad = vlen == 0 ||
              copy_field(c.index_spec, sizeof c.index_spec, val, vlen);
        break;
      case K_MAX:
        bad = parse_u32(val, &c.chunk_max_tokens);
        break;
      case K_OVL:
        bad = parse_u32(val, &c.chunk_overlap_tokens);
        break;
    }
    if (bad)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "collection config line %u: bad %s \"%.64s\"", line,
                         keys[k], val);
    p = next;
  }
  for (int k = K_EMB; k <= K_MAX; k++)
    if (!seen[k])
      return ctxd_seterr(e, CTXD_EINVAL, "collection config: no %s", keys[k]);
  int is_hash;
  embed_hash_opts ho;
  int rc = embedder_parse(c.embedder, &is_hash, &ho, &c.dim, e);
  if (rc) return rc;
  *out = c;
  return 0;
}

void coll_config_format(const coll_config *c, char *buf, size_t cap) {
  snprintf(buf, cap,
           "name=%s\nembedder=%s\nmetric=%s\nindex=%s\n"
           "chunk_max_tokens=%u\nchunk_overlap_tokens=%u\n",
           c->name, c->embedder, coll_metric_name(c->metric), c->index_spec,
           c->chunk_max_tokens, c->chunk_overlap_tokens);
}

void coll_config_defaults(coll_config *c, const coll_config *d) {
  if (!c->embedder[0]) memcpy(c->embedder, d->embedder, sizeof c->embedder);
  if (!c->index_spec[0])
    memcpy(c->index_spec, d->index_spec, sizeof c->index_spec);
  if (!c->chunk_max_tokens) {
    c->chunk_max_tokens = d->chunk_max_tokens;
    if (!c->chunk_overlap_tokens)
      c->chunk_overlap_tokens = d->chunk_overlap_tokens;
  }
}

int coll_config_check(coll_config *c, ctxd_error *e) {
  if (!name_ok(c->name))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "collection name \"%.80s\": expected 1..%d characters "
                       "of A-Z a-z 0-9 _ . -",
                       c->name, STORE_COLL_NAME_MAX);
  if (c->metric != VINDEX_IP && c->metric != VINDEX_L2)
    return ctxd_seterr(e, CTXD_EINVAL, "collection %s: bad metric %d", c->name,
                       (int)c->metric);
  int is_hash;
  embed_hash_opts ho;
  int rc = embedder_parse(c->embedder, &is_hash, &ho, &c->dim, e);
  if (rc) return rc;
  if (is_hash == 1) {
    embedder *m = NULL;
    rc = embed_hash_create(&ho, &m, e);
    if (rc) return rc;
    embedder_free(m);
    embed_hash_format(&ho, c->embedder, sizeof c->embedder);
  }
  if (!c->index_spec[0])
    return ctxd_seterr(e, CTXD_EINVAL, "collection %s: empty index spec",
                       c->name);
  vindex *v = NULL;
  rc = vindex_create(c->index_spec, c->dim, c->metric, &v, e);
  if (rc) return rc;
  vindex_free(v);
  if (c->chunk_max_tokens < 1 || c->chunk_max_tokens > CHUNK_MAX_MAX_TOKENS)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "collection %s: chunk_max_tokens %u not in 1..%u",
                       c->name, c->chunk_max_tokens,
                       (unsigned)CHUNK_MAX_MAX_TOKENS);
  if (c->chunk_overlap_tokens >= c->chunk_max_tokens)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "collection %s: chunk_overlap_tokens %u must be below "
                       "chunk_max_tokens %u",
                       c->name, c->chunk_overlap_tokens, c->chunk_max_tokens);
  return 0;
}

/* ---- The set and its entries --------------------------------------------- */

/* One index in use, shared by the searches that run on it; freed with the
 * last reference (a rebuild may replace it while searches still run). */
typedef struct cvx {
  vindex *vi;
  int fallback; /* an exact Flat standing in for an untrained IVF/PQ spec */
  int refs;     /* under mu */
  /* No document above this internal id has vectors here. Ids only grow, so
   * a put of a newer document needs no removal first (removals scan the
   * label map). Raised before the add; read by saves running beside it. */
  _Atomic uint64_t max_doc;
} cvx;

enum { RB_NONE = 0, RB_QUEUED = 1, RB_RUNNING = 2 };

typedef struct centry {
  uint32_t cid;
  coll_config cfg;
  embedder *emb; /* NULL for "none" and "model"; never weighs by idf */
  int is_model;  /* "model": embed through cs->o.model_acquire */
  embed_hash_opts ho; /* a hash embedder's options (idf_mode) */
  int needs_training;
  uint64_t min_train;
  int refs;    /* under mu: 1 for the table, 1 per user */
  int dropped; /* under mu */
  cvx *vx;     /* written under sync_mu + mu, read under either */
  /* under sync_mu */
  uint64_t last_change_seq; /* the sync that last touched this index */
  uint64_t replay_after;    /* coll_open: the seq its loaded file covers */
  int force_save;           /* the index was replaced since the last save */
  /* under mu */
  uint64_t file_seq;  /* seq covered by the index file on disk, 0: none */
  uint64_t clean_seq; /* no change to this collection in (file_seq, clean] */
  int rb_state;
  uint64_t rb_done, rb_total;
  uint64_t rb_base; /* the log must be kept after this while rebuilding */
  char rb_error[256];
} centry;

struct coll_set {
  store *st;
  coll_opts o;
  char *dir;
  void (*log)(int level, const char *msg, void *arg);
  void *log_arg;

  pthread_mutex_t sync_mu, save_mu, mu;
  pthread_cond_t cv; /* maintenance wake-ups, with mu */

  centry **ents; /* under mu (written with sync_mu too) */
  size_t n_ents, cap_ents;
  uint64_t applied; /* under sync_mu */

  /* under mu */
  uint64_t changes_since_save;
  struct timespec last_save, next_save_try;
  int stop, maint_started;
  pthread_t maint;
  uint64_t trimmed; /* under save_mu */
};

static void coll_log(coll_set *cs, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void coll_log(coll_set *cs, int level, const char *fmt, ...) {
  if (!cs->log) return;
  char buf[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  cs->log(level, buf, cs->log_arg);
}

/* Put "<prefix>: " before e's message (e may be NULL); returns rc. */
static int err_wrap(ctxd_error *e, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int err_wrap(ctxd_error *e, int rc, const char *fmt, ...) {
  if (!e) return rc;
  char prev[CTXD_ERRMSG_MAX], head[256];
  memcpy(prev, e->msg, sizeof prev);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(head, sizeof head, fmt, ap);
  va_end(ap);
  return ctxd_seterr(e, rc, "%s: %.400s", head, prev);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void cvx_unref_locked(cvx *v) {
  if (v && --v->refs == 0) {
    vindex_free(v->vi);
    free(v);
  }
}

static void ent_free(centry *ent) {
  cvx_unref_locked(ent->vx);
  embedder_free(ent->emb);
  free(ent);
}

/* Drop a reference taken by ent_ref (mu not held). */
static void ent_unref(coll_set *cs, centry *ent, cvx *vx) {
  pthread_mutex_lock(&cs->mu);
  if (vx) cvx_unref_locked(vx);
  int last = ent && --ent->refs == 0;
  pthread_mutex_unlock(&cs->mu);
  if (last) ent_free(ent);
}

static centry *find_cid_locked(coll_set *cs, uint32_t cid) {
  for (size_t i = 0; i < cs->n_ents; i++)
    if (cs->ents[i]->cid == cid) return cs->ents[i];
  return NULL;
}

static centry *find_name_locked(coll_set *cs, const char *name) {
  for (size_t i = 0; i < cs->n_ents; i++)
    if (strcmp(cs->ents[i]->cfg.name, name) == 0) return cs->ents[i];
  return NULL;
}

/* Reference collection cid and (when vx is not NULL) its current index. */
static centry *ent_ref(coll_set *cs, uint32_t cid, cvx **vx) {
  pthread_mutex_lock(&cs->mu);
  centry *ent = find_cid_locked(cs, cid);
  if (ent) {
    ent->refs++;
    if (vx) {
      *vx = ent->vx;
      (*vx)->refs++;
    }
  }
  pthread_mutex_unlock(&cs->mu);
  return ent;
}

/* A new, empty index for an entry: the spec's, or an exact Flat while an
 * IVF/PQ spec has too few vectors to train (n_vectors). */
static int cvx_new(const centry *ent, uint64_t n_vectors, cvx **out,
                   ctxd_error *e) {
  cvx *v = calloc(1, sizeof *v);
  if (!v) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  v->refs = 1;
  v->fallback = ent->needs_training && n_vectors < ent->min_train;
  int rc = vindex_create(v->fallback ? "Flat" : ent->cfg.index_spec,
                         ent->cfg.dim, ent->cfg.metric, &v->vi, e);
  if (rc) {
    free(v);
    return rc;
  }
  *out = v;
  return 0;
}

/* An entry for a stored collection (its config text parsed). */
static int ent_new(const store_collection *sc, centry **out, ctxd_error *e) {
  centry *ent = calloc(1, sizeof *ent);
  vindex *probe = NULL;
  int rc;
  if (!ent) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  ent->cid = sc->cid;
  ent->refs = 1;
  if ((rc = coll_config_parse(sc->config, &ent->cfg, e))) {
    rc = err_wrap(e, CTXD_ECORRUPT, "collection %s (id %u): stored config",
                  sc->name, sc->cid);
    goto fail;
  }
  snprintf(ent->cfg.name, sizeof ent->cfg.name, "%s", sc->name);
  int is_hash;
  embed_hash_opts ho;
  uint32_t dim;
  if ((rc = embedder_parse(ent->cfg.embedder, &is_hash, &ho, &dim, e)))
    goto fail;
  if (is_hash == 1 && (rc = embed_hash_create(&ho, &ent->emb, e))) goto fail;
  ent->is_model = is_hash == 2;
  ent->ho = ho;
  if ((rc = vindex_create(ent->cfg.index_spec, ent->cfg.dim, ent->cfg.metric,
                          &probe, e)))
    goto fail;
  vindex_info vi;
  vindex_get_info(probe, &vi);
  ent->needs_training = vi.needs_training;
  ent->min_train = vi.needs_training ? vi.min_train : 0;
  vindex_free(probe);
  *out = ent;
  return 0;
fail:
  embedder_free(ent->emb);
  free(ent);
  return rc;
}

/* Insert into the table (sync_mu held). */
static int ent_insert(coll_set *cs, centry *ent, ctxd_error *e) {
  pthread_mutex_lock(&cs->mu);
  if (cs->n_ents == cs->cap_ents) {
    size_t cap = cs->cap_ents ? cs->cap_ents * 2 : 8;
    centry **p = realloc(cs->ents, cap * sizeof *p);
    if (!p) {
      pthread_mutex_unlock(&cs->mu);
      return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    }
    cs->ents = p;
    cs->cap_ents = cap;
  }
  cs->ents[cs->n_ents++] = ent;
  pthread_mutex_unlock(&cs->mu);
  return 0;
}

/* Remove from the table (sync_mu held); the table's reference is dropped. */
static void ent_remove(coll_set *cs, centry *ent) {
  pthread_mutex_lock(&cs->mu);
  for (size_t i = 0; i < cs->n_ents; i++)
    if (cs->ents[i] == ent) {
      cs->ents[i] = cs->ents[--cs->n_ents];
      break;
    }
  ent->dropped = 1;
  int last = --ent->refs == 0;
  pthread_mutex_unlock(&cs->mu);
  if (last) ent_free(ent);
}

/* ---- Building an index from the store ------------------------------------ */

typedef struct vecbuf {
  float *x;
  int64_t *labels;
  uint64_t n, cap;
  uint32_t dim;
  int normalize;
  int err; /* CTXD_ENOMEM from the scan callback */
} vecbuf;

static int vecbuf_reserve(vecbuf *b, uint64_t want) {
  if (want <= b->cap) return 0;
  uint64_t cap = b->cap ? b->cap : 1024;
  while (cap < want) cap *= 2;
  if (cap > SIZE_MAX / sizeof(float) / b->dim) return CTXD_ENOMEM;
  float *x = realloc(b->x, cap * b->dim * sizeof(float));
  if (!x) return CTXD_ENOMEM;
  b->x = x;
  int64_t *l = realloc(b->labels, cap * sizeof(int64_t));
  if (!l) return CTXD_ENOMEM;
  b->labels = l;
  b->cap = cap;
  return 0;
}

static void vecbuf_free(vecbuf *b) {
  free(b->x);
  free(b->labels);
  b->x = NULL;
  b->labels = NULL;
  b->n = b->cap = 0;
}

static int vecbuf_push(vecbuf *b, int64_t label, const float *v) {
  if (vecbuf_reserve(b, b->n + 1)) return CTXD_ENOMEM;
  float *row = b->x + b->n * b->dim;
  memcpy(row, v, b->dim * sizeof(float));
  if (b->normalize) vindex_normalize(row, 1, b->dim);
  b->labels[b->n++] = label;
  return 0;
}

static int scan_cb(int64_t label, const float *v, uint32_t dim, void *arg) {
  vecbuf *b = arg;
  if (dim != b->dim) {
    b->err = CTXD_ECORRUPT;
    return 1;
  }
  if (vecbuf_push(b, label, v)) {
    b->err = CTXD_ENOMEM;
    return 1;
  }
  return 0;
}

/* Copy every vector of the collection in snapshot r into b. */
static int load_vectors(store_reader *r, const centry *ent, vecbuf *b,
                        ctxd_error *e) {
  store_collection sc;
  int rc = store_reader_coll(r, ent->cid, &sc, e);
  if (rc) return rc;
  b->dim = ent->cfg.dim;
  b->normalize = ent->cfg.metric == VINDEX_IP;
  if (vecbuf_reserve(b, sc.vectors ? sc.vectors : 1))
    return ctxd_seterr(e, CTXD_ENOMEM,
                       "collection %s: no memory for %llu vectors",
                       ent->cfg.name, (unsigned long long)sc.vectors);
  rc = store_reader_scan_vectors(r, ent->cid, scan_cb, b, e);
  if (b->err == CTXD_ENOMEM)
    return ctxd_seterr(e, CTXD_ENOMEM, "collection %s: out of memory",
                       ent->cfg.name);
  if (b->err)
    return ctxd_seterr(e, b->err,
                       "collection %s: a stored vector does not have %u "
                       "dimensions",
                       ent->cfg.name, ent->cfg.dim);
  return rc < 0 ? rc : 0;
}

#define BUILD_BATCH 4096

/* Build the entry's index from n vectors (labels in b): train the spec when
 * it needs it and there are enough vectors, else an exact Flat stand-in.
 * progress (may be NULL) gets the vectors added so far and returns nonzero
 * to cancel (CTXD_ECANCELED). */
static int build_index(const centry *ent, const vecbuf *b,
                       int (*progress)(uint64_t done, void *arg), void *arg,
                       cvx **out, ctxd_error *e) {
  cvx *v = NULL;
  float *sample = NULL;
  int rc = cvx_new(ent, b->n, &v, e);
  if (rc) return rc;
  if (!v->fallback && ent->needs_training) {
    /* FAISS's k-means samples 256 points per centroid at most; min_train is
     * 39 per centroid, so ~7 x min_train is all training can use. */
    uint64_t m = ent->min_train * 7;
    if (m == 0 || m > b->n) m = b->n;
    const float *tx = b->x;
    if (m < b->n) {
      sample = malloc(m * b->dim * sizeof(float));
      if (!sample) {
        rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for training");
        goto fail;
      }
      for (uint64_t i = 0; i < m; i++)
        memcpy(sample + i * b->dim, b->x + (i * b->n / m) * b->dim,
               b->dim * sizeof(float));
      tx = sample;
    }
    if ((rc = vindex_train(v->vi, tx, m, e))) goto fail;
    free(sample);
    sample = NULL;
  }
  for (uint64_t i = 0; i < b->n; i++)
    if (STORE_LABEL_DOC(b->labels[i]) > v->max_doc)
      v->max_doc = STORE_LABEL_DOC(b->labels[i]);
  for (uint64_t i = 0; i < b->n; i += BUILD_BATCH) {
    uint64_t n = b->n - i < BUILD_BATCH ? b->n - i : BUILD_BATCH;
    if ((rc = vindex_add(v->vi, b->x + i * b->dim, b->labels + i, n, e)))
      goto fail;
    if (progress && progress(i + n, arg)) {
      rc = ctxd_seterr(e, CTXD_ECANCELED, "rebuild of %s cancelled",
                       ent->cfg.name);
      goto fail;
    }
  }
  *out = v;
  return 0;
fail:
  free(sample);
  vindex_free(v->vi);
  free(v);
  return rc;
}

/* ---- Applying changes ----------------------------------------------------- */

typedef struct touch {
  uint64_t seq; /* the latest change of this (cid, doc) */
  uint32_t cid;
  uint64_t doc;
  int op;
} touch;

static int touch_cmp(const void *a, const void *b) {
  const touch *x = a, *y = b;
  if (x->cid != y->cid) return x->cid < y->cid ? -1 : 1;
  if (x->doc != y->doc) return x->doc < y->doc ? -1 : 1;
  return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Every committed change after `after`, one per (cid, doc) - the latest -
 * sorted by (cid, doc); only_cid (0: all) restricts them to one collection.
 * Drops are kept with doc 0. *last = the last seq read (`after` if none).
 * *out malloc'd. Call it holding no store reader (store.h: a reader's
 * holder must not call other store functions). */
static int collect_changes(store *st, uint64_t after, uint32_t only_cid,
                           touch **out, size_t *n_out, uint64_t *last,
                           ctxd_error *e) {
  enum { CHUNK = 1024 };
  store_change buf[CHUNK];
  touch *t = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  uint64_t cur = after;
  for (;;) {
    size_t got;
    if ((rc = store_changes_read(st, cur, CHUNK, buf, &got, e))) goto fail;
    if (got == 0) break;
    for (size_t i = 0; i < got; i++) {
      if (only_cid && buf[i].cid != only_cid) continue;
      if (n == cap) {
        size_t nc = cap ? cap * 2 : 256;
        touch *p = realloc(t, nc * sizeof *p);
        if (!p) {
          rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory reading changes");
          goto fail;
        }
        t = p;
        cap = nc;
      }
      t[n++] = (touch){buf[i].seq, buf[i].cid,
                       buf[i].op == STORE_OP_DROP ? 0 : buf[i].doc, buf[i].op};
    }
    cur = buf[got - 1].seq;
  }
  if (n) qsort(t, n, sizeof *t, touch_cmp);
  size_t w = 0; /* keep the last of each (cid, doc) run */
  for (size_t i = 0; i < n; i++) {
    if (w && t[w - 1].cid == t[i].cid && t[w - 1].doc == t[i].doc)
      t[w - 1] = t[i];
    else
      t[w++] = t[i];
  }
  *out = t;
  *n_out = w;
  *last = cur;
  return 0;
fail:
  free(t);
  return rc;
}

/* Applies documents to one index: removals at once, additions gathered
 * into batches (a document's removal always precedes its own addition, and
 * the batched rows belong to other documents, whose labels it cannot
 * touch). */
typedef struct applier {
  cvx *vx;
  const centry *ent;
  vecbuf add;
} applier;

static int applier_flush(applier *a, ctxd_error *e) {
  int rc = 0;
  if (a->vx && a->add.n)
    rc = vindex_add(a->vx->vi, a->add.x, a->add.labels, a->add.n, e);
  a->add.n = 0;
  return rc;
}

/* Flush, then direct further documents to index vx of entry ent. */
static int applier_target(applier *a, cvx *vx, const centry *ent,
                          ctxd_error *e) {
  int rc = applier_flush(a, e);
  if (a->add.dim != ent->cfg.dim) vecbuf_free(&a->add);
  a->vx = vx;
  a->ent = ent;
  a->add.dim = ent->cfg.dim;
  a->add.normalize = ent->cfg.metric == VINDEX_IP;
  return rc;
}

/* Make the index hold document doc as snapshot r has it: remove every label
 * of the document, then add its current vectors. */
static int applier_doc(applier *a, store_reader *r, uint64_t doc,
                       ctxd_error *e) {
  cvx *vx = a->vx;
  int rc;
  if (doc <= vx->max_doc) {
    rc = vindex_remove_range(vx->vi, STORE_LABEL(doc, 0),
                             STORE_LABEL(doc + 1, 0), NULL, e);
    if (rc) return rc;
  }
  const float *vecs;
  uint32_t n = 0;
  rc = store_reader_doc_vectors(r, a->ent->cid, doc, &vecs, &n, e);
  if (rc == CTXD_ENOTFOUND || (!rc && n == 0)) return 0;
  if (rc) return rc;
  if (doc > vx->max_doc) vx->max_doc = doc;
  if (vecbuf_reserve(&a->add, a->add.n + n))
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  for (uint32_t i = 0; i < n; i++)
    vecbuf_push(&a->add, STORE_LABEL(doc, i),
                vecs + (size_t)i * a->ent->cfg.dim);
  return a->add.n >= BUILD_BATCH ? applier_flush(a, e) : 0;
}

static int applier_end(applier *a, ctxd_error *e) {
  int rc = applier_flush(a, e);
  vecbuf_free(&a->add);
  return rc;
}

/* ---- Index files ----------------------------------------------------------
 * <dir>/<cid>.vindex: the header below (host byte order), vindex_write's
 * payload, then the index's max_doc (u64, read after the payload was
 * written, so it covers every document in it) and FILE_END. Written to <cid>.vindex.tmp, fsync'd, renamed,
 * directory fsync'd. <dir>/coll.manifest (text) records, per collection, the
 * seq of its file and a later seq up to which the collection had no changes,
 * so an idle collection's file needs no rewrite for the log to be trimmed. */

#define FILE_MAGIC "CTXDVIX1"
#define FILE_END "CTXDEND1"
#define FILE_VERSION 1u
#define MANIFEST "coll.manifest"

typedef struct file_header {
  char magic[8];
  uint32_t version, flags; /* flags bit 0: fallback Flat */
  uint32_t cid, dim, metric, reserved;
  uint64_t covered_seq;
  char spec[VINDEX_SPEC_MAX];
} file_header;

static void file_path(const coll_set *cs, uint32_t cid, const char *suffix,
                      char *buf, size_t cap) {
  snprintf(buf, cap, "%s/%u.vindex%s", cs->dir, cid, suffix);
}

/* Write f's content durably: flush, fsync, close, rename over path, fsync
 * the directory. f is closed in every case. */
static int commit_file(coll_set *cs, FILE *f, const char *tmp,
                       const char *path, ctxd_error *e) {
  int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
  int err = errno;
  if (fclose(f) != 0 && !bad) {
    bad = 1;
    err = errno;
  }
  if (bad || rename(tmp, path) != 0) {
    if (!bad) err = errno;
    unlink(tmp);
    return ctxd_seterr(e, CTXD_EIO, "writing %s: %s", path, strerror(err));
  }
  return backup_fsync_dir(cs->dir, e);
}

static int save_one(coll_set *cs, const centry *ent, cvx *vx, uint64_t covered,
                    ctxd_error *e) {
  char tmp[4200], path[4200];
  file_path(cs, ent->cid, ".tmp", tmp, sizeof tmp);
  file_path(cs, ent->cid, "", path, sizeof path);
  FILE *f = fopen(tmp, "wbe");
  if (!f)
    return ctxd_seterr(e, CTXD_EIO, "creating %s: %s", tmp, strerror(errno));
  file_header h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, FILE_MAGIC, 8);
  h.version = FILE_VERSION;
  h.flags = vx->fallback ? 1u : 0u;
  h.cid = ent->cid;
  h.dim = ent->cfg.dim;
  h.metric = (uint32_t)ent->cfg.metric;
  h.covered_seq = covered;
  snprintf(h.spec, sizeof h.spec, "%s", ent->cfg.index_spec);
  int rc;
  if (fwrite(&h, sizeof h, 1, f) != 1) {
    rc = ctxd_seterr(e, CTXD_EIO, "writing %s: %s", tmp, strerror(errno));
    goto fail;
  }
  if ((rc = vindex_write(vx->vi, f, e))) goto fail;
  uint64_t max_doc = vx->max_doc;
  if (fwrite(&max_doc, sizeof max_doc, 1, f) != 1 ||
      fwrite(FILE_END, 8, 1, f) != 1) {
    rc = ctxd_seterr(e, CTXD_EIO, "writing %s: %s", tmp, strerror(errno));
    goto fail;
  }
  return commit_file(cs, f, tmp, path, e);
fail:
  fclose(f);
  unlink(tmp);
  return rc;
}

int coll_file_read(const char *path, vindex **out, coll_file_info *info,
                   ctxd_error *e) {
  FILE *f = fopen(path, "rbe");
  vindex *vi = NULL;
  int rc;
  if (!f)
    return ctxd_seterr(e, errno == ENOENT ? CTXD_ENOTFOUND : CTXD_EIO,
                       "%s: %s", path, strerror(errno));
  file_header h;
  if (fread(&h, sizeof h, 1, f) != 1 || memcmp(h.magic, FILE_MAGIC, 8) ||
      h.version != FILE_VERSION) {
    rc = ctxd_seterr(e, CTXD_ECORRUPT, "%s: not a ctxd index file (version %u)",
                     path, (unsigned)FILE_VERSION);
    goto fail;
  }
  h.spec[sizeof h.spec - 1] = 0;
  if ((rc = vindex_read(f, &vi, e))) {
    char why[sizeof e->msg];
    snprintf(why, sizeof why, "%s", e->msg);
    rc = ctxd_seterr(e, rc, "%s: %s", path, why);
    goto fail;
  }
  char end[8];
  uint64_t max_doc;
  if (fread(&max_doc, sizeof max_doc, 1, f) != 1 || fread(end, 8, 1, f) != 1 ||
      memcmp(end, FILE_END, 8) || fgetc(f) != EOF) {
    rc = ctxd_seterr(e, CTXD_ECORRUPT, "%s: truncated or trailing data", path);
    goto fail;
  }
  /* The payload must be the index the header announces. */
  vindex_info vinfo;
  vindex_get_info(vi, &vinfo);
  const char *want = (h.flags & 1u) ? "Flat" : h.spec;
  if (vinfo.dim != h.dim || (uint32_t)vinfo.metric != h.metric ||
      strcmp(vinfo.spec, want) != 0 || (vinfo.needs_training && !vinfo.trained)) {
    rc = ctxd_seterr(e, CTXD_ECORRUPT,
                     "%s: holds a %s index of dim %u, its header says %s of dim %u",
                     path, vinfo.spec, vinfo.dim, want, h.dim);
    goto fail;
  }
  fclose(f);
  if (info) {
    info->cid = h.cid;
    info->dim = h.dim;
    info->metric = (vindex_metric)h.metric;
    info->fallback = (h.flags & 1u) != 0;
    snprintf(info->spec, sizeof info->spec, "%s", h.spec);
    info->covered_seq = h.covered_seq;
    info->max_doc = max_doc;
  }
  *out = vi;
  return 0;
fail:
  vindex_free(vi);
  fclose(f);
  return rc;
}

/* Load <cid>.vindex if it matches the entry's config. Returns 0 with *out
 * and *covered, or an error whose message says why the file is unusable. */
static int load_one(coll_set *cs, const centry *ent, cvx **out,
                    uint64_t *covered, ctxd_error *e) {
  char path[4200];
  file_path(cs, ent->cid, "", path, sizeof path);
  coll_file_info fi;
  vindex *vi = NULL;
  int rc = coll_file_read(path, &vi, &fi, e);
  if (rc) return rc;
  if (fi.cid != ent->cid || fi.dim != ent->cfg.dim ||
      fi.metric != ent->cfg.metric || strcmp(fi.spec, ent->cfg.index_spec) != 0) {
    rc = ctxd_seterr(e, CTXD_ECORRUPT,
                     "%s: made for collection %u, spec %s, dim %u, metric %s; "
                     "the collection has %u, %s, %u, %s",
                     path, fi.cid, fi.spec, fi.dim, coll_metric_name(fi.metric),
                     ent->cid, ent->cfg.index_spec, ent->cfg.dim,
                     coll_metric_name(ent->cfg.metric));
    vindex_free(vi);
    return rc;
  }
  cvx *v = calloc(1, sizeof *v);
  if (!v) {
    vindex_free(vi);
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  }
  v->refs = 1;
  v->fallback = fi.fallback;
  v->vi = vi;
  v->max_doc = fi.max_doc;
  *out = v;
  *covered = fi.covered_seq;
  return 0;
}

typedef struct manifest_ent {
  uint32_t cid;
  uint64_t file_seq, clean_seq;
} manifest_ent;

/* Read the manifest (missing: none); unreadable lines are ignored, which is
 * safe: the file seqs alone are always a valid starting point. */
static void manifest_read(coll_set *cs, manifest_ent **out, size_t *n) {
  char path[4200];
  snprintf(path, sizeof path, "%s/" MANIFEST, cs->dir);
  *out = NULL;
  *n = 0;
  FILE *f = fopen(path, "re");
  if (!f) return;
  char line[128];
  size_t cap = 0;
  if (!fgets(line, sizeof line, f) || strcmp(line, "ctxd-coll-manifest 1\n")) {
    fclose(f);
    return;
  }
  while (fgets(line, sizeof line, f)) {
    unsigned cid;
    unsigned long long fs, cl;
    if (sscanf(line, "%u %llu %llu", &cid, &fs, &cl) != 3) continue;
    if (*n == cap) {
      size_t nc = cap ? cap * 2 : 16;
      manifest_ent *p = realloc(*out, nc * sizeof *p);
      if (!p) break;
      *out = p;
      cap = nc;
    }
    (*out)[(*n)++] = (manifest_ent){cid, fs, cl};
  }
  fclose(f);
}

static int manifest_write(coll_set *cs, const manifest_ent *m, size_t n,
                          ctxd_error *e) {
  char tmp[4200], path[4200];
  snprintf(tmp, sizeof tmp, "%s/" MANIFEST ".tmp", cs->dir);
  snprintf(path, sizeof path, "%s/" MANIFEST, cs->dir);
  FILE *f = fopen(tmp, "we");
  if (!f)
    return ctxd_seterr(e, CTXD_EIO, "creating %s: %s", tmp, strerror(errno));
  fprintf(f, "ctxd-coll-manifest 1\n");
  for (size_t i = 0; i < n; i++)
    fprintf(f, "%u %llu %llu\n", m[i].cid, (unsigned long long)m[i].file_seq,
            (unsigned long long)m[i].clean_seq);
  return commit_file(cs, f, tmp, path, e);
}

/* ---- Sync ----------------------------------------------------------------- */

static void request_rebuild_locked(coll_set *cs, centry *ent) {
  if (ent->rb_state != RB_NONE) return;
  ent->rb_state = RB_QUEUED;
  ent->rb_done = ent->rb_total = 0;
  ent->rb_error[0] = 0;
  pthread_cond_signal(&cs->cv);
}

/* After changes: ask for training when a stand-in Flat has enough vectors,
 * for a rebuild when too much of the index is masked (mu held). */
static void check_index_locked(coll_set *cs, centry *ent) {
  vindex_info vi;
  vindex_get_info(ent->vx->vi, &vi);
  if (ent->vx->fallback && vi.live >= ent->min_train)
    request_rebuild_locked(cs, ent);
  else if (vi.masked && vi.size &&
           (double)vi.masked / (double)vi.size > cs->o.rebuild_masked_ratio)
    request_rebuild_locked(cs, ent);
}

/* Build entry ent's index from snapshot r (sync_mu held or at open). */
static int build_from_reader(centry *ent, store_reader *r, cvx **out,
                             ctxd_error *e) {
  vecbuf b = {0};
  int rc = load_vectors(r, ent, &b, e);
  if (!rc) rc = build_index(ent, &b, NULL, NULL, out, e);
  vecbuf_free(&b);
  return rc;
}

/* A change names a collection this set has no entry for (created by another
 * handle on the store): make the entry from snapshot r (sync_mu held). */
static int adopt_collection(coll_set *cs, store_reader *r, uint32_t cid,
                            centry **out, ctxd_error *e) {
  store_collection sc;
  int rc = store_reader_coll(r, cid, &sc, e);
  if (rc) return rc;
  centry *ent;
  if ((rc = ent_new(&sc, &ent, e))) return rc;
  if ((rc = build_from_reader(ent, r, &ent->vx, e)) ||
      (rc = ent_insert(cs, ent, e))) {
    ent_free(ent);
    return rc;
  }
  ent->last_change_seq = store_reader_seq(r);
  coll_log(cs, 2, "collection adopted name=%s cid=%u", ent->cfg.name, cid);
  *out = ent;
  return 0;
}

/* Apply collected changes t[0..n) (the last read has seq `last`; each entry
 * only those after its replay_after) to the current indexes, reading the
 * documents from snapshot r (as new as `last` or newer: a document may then
 * be applied ahead of its change, which the next sync applies again
 * harmlessly). sync_mu held. */
static int apply_touches(coll_set *cs, store_reader *r, const touch *t,
                         size_t n, uint64_t last, ctxd_error *e) {
  applier ap = {0};
  centry *cur = NULL; /* the entry ap works on */
  uint64_t applied_n = 0;
  int rc = 0;
  uint32_t adopted = 0;
  for (size_t i = 0; i < n && !rc; i++) {
    pthread_mutex_lock(&cs->mu);
    centry *ent = find_cid_locked(cs, t[i].cid);
    pthread_mutex_unlock(&cs->mu);
    if (ent != cur && cur) {
      /* done with cur: flush, then see whether it wants training/rebuild */
      if ((rc = applier_target(&ap, NULL, cur, e))) break;
      pthread_mutex_lock(&cs->mu);
      check_index_locked(cs, cur);
      pthread_mutex_unlock(&cs->mu);
      cur = NULL;
    }
    if (t[i].op == STORE_OP_DROP || t[i].doc == 0) {
      if (ent) {
        char path[4200];
        file_path(cs, ent->cid, "", path, sizeof path);
        unlink(path);
        coll_log(cs, 2, "collection index dropped name=%s cid=%u",
                 ent->cfg.name, ent->cid);
        ent_remove(cs, ent);
      }
      continue;
    }
    if (!ent) {
      if (t[i].cid == adopted) continue;
      store_collection sc;
      if (store_reader_coll(r, t[i].cid, &sc, NULL)) continue; /* dropped */
      rc = adopt_collection(cs, r, t[i].cid, &ent, e);
      adopted = t[i].cid; /* built from r: its changes are in already */
      continue;
    }
    if (t[i].seq <= ent->replay_after) continue;
    if (!cur && (rc = applier_target(&ap, ent->vx, ent, e))) break;
    cur = ent;
    if ((rc = applier_doc(&ap, r, t[i].doc, e))) {
      err_wrap(e, rc, "collection %s: applying change %llu", ent->cfg.name,
               (unsigned long long)t[i].seq);
      break;
    }
    ent->last_change_seq = last;
    applied_n++;
  }
  int rc2 = applier_end(&ap, rc ? NULL : e);
  if (!rc) rc = rc2;
  if (cur && !rc) {
    pthread_mutex_lock(&cs->mu);
    check_index_locked(cs, cur);
    pthread_mutex_unlock(&cs->mu);
  }
  pthread_mutex_lock(&cs->mu);
  cs->changes_since_save += applied_n;
  if (cs->changes_since_save >= cs->o.save_every_changes)
    pthread_cond_signal(&cs->cv);
  pthread_mutex_unlock(&cs->mu);
  return rc;
}

/* Apply every change committed after cs->applied (sync_mu held). The log is
 * read first, then one snapshot taken for the documents. */
static int sync_locked(coll_set *cs, ctxd_error *e) {
  touch *t = NULL;
  size_t n = 0;
  uint64_t last;
  store_reader *r = NULL;
  int rc = collect_changes(cs->st, cs->applied, 0, &t, &n, &last, e);
  if (rc || last == cs->applied) goto done;
  if (n && (rc = store_reader_begin(cs->st, &r, e))) goto done;
  if (n && (rc = apply_touches(cs, r, t, n, last, e))) goto done;
  cs->applied = last;
done:
  store_reader_end(r);
  free(t);
  return rc;
}

int coll_sync(coll_set *cs, ctxd_error *e) {
  pthread_mutex_lock(&cs->sync_mu);
  int rc = sync_locked(cs, e);
  pthread_mutex_unlock(&cs->sync_mu);
  return rc;
}

/* ---- Rebuild -------------------------------------------------------------- */

typedef struct rb_progress {
  coll_set *cs;
  centry *ent;
} rb_progress;

static int rb_progress_cb(uint64_t done, void *arg) {
  rb_progress *p = arg;
  pthread_mutex_lock(&p->cs->mu);
  p->ent->rb_done = done;
  int stop = p->cs->stop;
  pthread_mutex_unlock(&p->cs->mu);
  return stop;
}

/* Apply the changes of one collection committed after *after to v; *after
 * advances to the last one. */
static int catch_up(coll_set *cs, centry *ent, cvx *v, uint64_t *after,
                    ctxd_error *e) {
  store_reader *r = NULL;
  touch *t = NULL;
  size_t n = 0;
  uint64_t last;
  applier ap = {0};
  int rc = collect_changes(cs->st, *after, ent->cid, &t, &n, &last, e);
  if (rc) return rc;
  if (n && (rc = store_reader_begin(cs->st, &r, e))) goto done;
  if ((rc = applier_target(&ap, v, ent, e))) goto done;
  for (size_t i = 0; i < n && !rc; i++)
    if (t[i].op != STORE_OP_DROP && t[i].doc)
      rc = applier_doc(&ap, r, t[i].doc, e);
  if (!rc) *after = last;
done:
  if (!rc)
    rc = applier_end(&ap, e);
  else
    applier_end(&ap, NULL);
  free(t);
  store_reader_end(r);
  return rc;
}

/* Rebuild ent's index from the store and switch to it. Runs in the
 * maintenance thread; ent is referenced by the caller and its rb_state is
 * RB_RUNNING. */
static void run_rebuild(coll_set *cs, centry *ent) {
  ctxd_error err;
  ctxd_clearerr(&err);
  store_reader *r = NULL;
  vecbuf b = {0};
  cvx *nv = NULL, *old = NULL;
  rb_progress p = {cs, ent};
  double t0 = now_s();
  int rc = store_reader_begin(cs->st, &r, &err);
  if (rc) goto done;
  uint64_t base = store_reader_seq(r);
  pthread_mutex_lock(&cs->mu);
  ent->rb_base = base;
  pthread_mutex_unlock(&cs->mu);
  rc = load_vectors(r, ent, &b, &err);
  store_reader_end(r);
  r = NULL;
  if (rc) goto done;
  pthread_mutex_lock(&cs->mu);
  ent->rb_total = b.n;
  pthread_mutex_unlock(&cs->mu);
  if ((rc = build_index(ent, &b, rb_progress_cb, &p, &nv, &err))) goto done;
  vecbuf_free(&b);
  /* Catch up without blocking writers, then once more under sync_mu for
   * what committed meanwhile, and switch. */
  if ((rc = catch_up(cs, ent, nv, &base, &err))) goto done;
  pthread_mutex_lock(&cs->mu);
  ent->rb_base = base;
  pthread_mutex_unlock(&cs->mu);
  pthread_mutex_lock(&cs->sync_mu);
  rc = catch_up(cs, ent, nv, &base, &err);
  if (!rc) {
    pthread_mutex_lock(&cs->mu);
    if (!ent->dropped) {
      old = ent->vx;
      ent->vx = nv;
      nv = NULL;
      cs->changes_since_save++;
    }
    pthread_mutex_unlock(&cs->mu);
    ent->force_save = 1;
  }
  pthread_mutex_unlock(&cs->sync_mu);
done:
  store_reader_end(r);
  vecbuf_free(&b);
  pthread_mutex_lock(&cs->mu);
  if (nv) cvx_unref_locked(nv);
  if (old) cvx_unref_locked(old);
  ent->rb_state = RB_NONE;
  if (rc) {
    size_t len = strnlen(err.msg, sizeof ent->rb_error - 1);
    memcpy(ent->rb_error, err.msg, len);
    ent->rb_error[len] = 0;
  }
  cvx *cur = ent->vx;
  cur->refs++;
  pthread_mutex_unlock(&cs->mu);
  vindex_info vi;
  vindex_get_info(cur->vi, &vi);
  ent_unref(cs, NULL, cur);
  if (rc)
    coll_log(cs, 0, "index rebuild failed collection=%s error=\"%s\"",
         ent->cfg.name, err.msg);
  else
    coll_log(cs, 2,
         "index rebuilt collection=%s spec=%s vectors=%llu trained=%d "
         "seconds=%.2f",
         ent->cfg.name, vi.spec, (unsigned long long)vi.live,
         !vi.needs_training || vi.trained, now_s() - t0);
}

int coll_rebuild_start(coll_set *cs, const char *name, ctxd_error *e) {
  if (!name || !*name) name = COLL_DEFAULT_NAME;
  int rc = 0;
  pthread_mutex_lock(&cs->mu);
  centry *ent = find_name_locked(cs, name);
  if (!ent)
    rc = ctxd_seterr(e, CTXD_ENOTFOUND, "no collection %.80s", name);
  else if (ent->rb_state != RB_NONE)
    rc = ctxd_seterr(e, CTXD_EBUSY,
                     "collection %s: a rebuild is already running", name);
  else
    request_rebuild_locked(cs, ent);
  pthread_mutex_unlock(&cs->mu);
  return rc;
}

/* ---- Saving ----------------------------------------------------------------- */

int coll_save_all(coll_set *cs, ctxd_error *e) {
  int rc = 0;
  centry **ents = NULL;
  cvx **vxs = NULL;
  int *dirty = NULL;
  manifest_ent *m = NULL;
  size_t n = 0;
  pthread_mutex_lock(&cs->save_mu);
  pthread_mutex_lock(&cs->sync_mu);
  pthread_mutex_lock(&cs->mu);
  uint64_t a = cs->applied;
  n = cs->n_ents;
  ents = calloc(n ? n : 1, sizeof *ents);
  vxs = calloc(n ? n : 1, sizeof *vxs);
  dirty = calloc(n ? n : 1, sizeof *dirty);
  m = calloc(n ? n : 1, sizeof *m);
  if (!ents || !vxs || !dirty || !m) {
    pthread_mutex_unlock(&cs->mu);
    pthread_mutex_unlock(&cs->sync_mu);
    n = 0;
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto done;
  }
  uint64_t counted = cs->changes_since_save;
  for (size_t i = 0; i < n; i++) {
    centry *ent = cs->ents[i];
    ents[i] = ent;
    ent->refs++;
    vxs[i] = ent->vx;
    ent->vx->refs++;
    dirty[i] = ent->force_save || ent->last_change_seq > ent->file_seq ||
               ent->file_seq == 0;
    ent->force_save = 0;
  }
  pthread_mutex_unlock(&cs->mu);
  pthread_mutex_unlock(&cs->sync_mu);

  /* Files are written without sync_mu: an index written while a sync runs
   * may hold some changes after `a`, which replay applies again harmlessly
   * (a document's replay removes all its labels and re-adds its vectors). */
  int failed = 0;
  for (size_t i = 0; i < n; i++) {
    ctxd_error ee;
    if (dirty[i]) {
      int r1 = save_one(cs, ents[i], vxs[i], a, &ee);
      if (r1) {
        coll_log(cs, 0, "index save failed collection=%s error=\"%s\"",
             ents[i]->cfg.name, ee.msg);
        if (!failed) rc = ctxd_seterr(e, r1, "%s", ee.msg);
        failed = 1;
        pthread_mutex_lock(&cs->sync_mu);
        ents[i]->force_save = 1;
        pthread_mutex_unlock(&cs->sync_mu);
        continue;
      }
    }
    pthread_mutex_lock(&cs->mu);
    if (dirty[i]) ents[i]->file_seq = a;
    ents[i]->clean_seq = a;
    pthread_mutex_unlock(&cs->mu);
  }
  /* Trim the log to what every collection's file (or manifest line) covers,
   * and never past the base of a running rebuild. */
  uint64_t trim = a;
  pthread_mutex_lock(&cs->mu);
  for (size_t i = 0; i < n; i++) {
    m[i] = (manifest_ent){ents[i]->cid, ents[i]->file_seq, ents[i]->clean_seq};
    if (ents[i]->dropped) continue;
    if (ents[i]->clean_seq < trim) trim = ents[i]->clean_seq;
    if (ents[i]->rb_state == RB_RUNNING && ents[i]->rb_base < trim)
      trim = ents[i]->rb_base;
  }
  if (!failed) cs->changes_since_save -= counted;
  pthread_mutex_unlock(&cs->mu);
  ctxd_error ee;
  int r2 = manifest_write(cs, m, n, &ee);
  if (r2) {
    coll_log(cs, 0, "index manifest write failed error=\"%s\"", ee.msg);
    if (!rc) rc = ctxd_seterr(e, r2, "%s", ee.msg);
  } else if (trim > cs->trimmed) {
    if ((r2 = store_changes_trim(cs->st, trim, &ee))) {
      coll_log(cs, 0, "change log trim failed upto=%llu error=\"%s\"",
           (unsigned long long)trim, ee.msg);
      if (!rc) rc = ctxd_seterr(e, r2, "%s", ee.msg);
    } else {
      cs->trimmed = trim;
    }
  }
done:
  for (size_t i = 0; i < n; i++) ent_unref(cs, ents[i], vxs[i]);
  free(ents);
  free(vxs);
  free(dirty);
  free(m);
  pthread_mutex_unlock(&cs->save_mu);
  return rc;
}

/* ---- Backup ------------------------------------------------------------------ */

static int mkdir_p(const char *dir, ctxd_error *e);

int coll_backup(coll_set *cs, const char *dst_dir,
                int (*snap)(void *arg, ctxd_error *e), void *arg,
                ctxd_error *e) {
  int rc = coll_save_all(cs, e);
  if (rc) return rc;
  /* save_mu: no file is written and the log is not trimmed until the
   * store's snapshot has begun (see coll.h). */
  pthread_mutex_lock(&cs->save_mu);
  DIR *d = NULL;
  if ((rc = mkdir_p(dst_dir, e))) goto done;
  if (!(d = opendir(cs->dir))) {
    rc = ctxd_seterr(e, CTXD_EIO, "reading %s: %s", cs->dir, strerror(errno));
    goto done;
  }
  struct dirent *de;
  while ((de = readdir(d))) {
    unsigned cid;
    int pos = 0;
    if (strcmp(de->d_name, MANIFEST) != 0 &&
        (sscanf(de->d_name, "%u.vindex%n", &cid, &pos) != 1 ||
         de->d_name[pos] != 0))
      continue;
    char src[4200], dst[4200];
    int missing;
    snprintf(src, sizeof src, "%s/%s", cs->dir, de->d_name);
    if ((size_t)snprintf(dst, sizeof dst, "%s/%s", dst_dir, de->d_name) >=
        sizeof dst) {
      rc = ctxd_seterr(e, CTXD_EINVAL, "backup directory path too long");
      goto done;
    }
    if ((rc = backup_copy_file(src, dst, &missing, e))) goto done;
  }
  if ((rc = backup_fsync_dir(dst_dir, e))) goto done;
  rc = snap(arg, e);
done:
  if (d) closedir(d);
  pthread_mutex_unlock(&cs->save_mu);
  return rc;
}

/* ---- Maintenance thread ------------------------------------------------------ */

static void ts_add(struct timespec *t, double s) {
  double whole = floor(s);
  t->tv_sec += (time_t)whole;
  t->tv_nsec += (long)((s - whole) * 1e9);
  if (t->tv_nsec >= 1000000000L) {
    t->tv_sec++;
    t->tv_nsec -= 1000000000L;
  }
}

static int ts_before(const struct timespec *a, const struct timespec *b) {
  return a->tv_sec < b->tv_sec ||
         (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void *maint_main(void *arg) {
  coll_set *cs = arg;
  /* Training and adds run with vindex's OpenMP limit (vindex_global_init):
   * vindex has no per-thread limit yet for build_threads to set. */
  pthread_mutex_lock(&cs->mu);
  while (!cs->stop) {
    centry *rb = NULL;
    for (size_t i = 0; i < cs->n_ents && !rb; i++)
      if (cs->ents[i]->rb_state == RB_QUEUED) rb = cs->ents[i];
    if (rb) {
      rb->rb_state = RB_RUNNING;
      rb->refs++;
      pthread_mutex_unlock(&cs->mu);
      run_rebuild(cs, rb);
      ent_unref(cs, rb, NULL);
      pthread_mutex_lock(&cs->mu);
      continue;
    }
    struct timespec now, due = cs->last_save;
    clock_gettime(CLOCK_MONOTONIC, &now);
    ts_add(&due, cs->o.save_interval_s);
    int may = !ts_before(&now, &cs->next_save_try);
    if (cs->changes_since_save &&
        may && (cs->changes_since_save >= cs->o.save_every_changes ||
                !ts_before(&now, &due))) {
      pthread_mutex_unlock(&cs->mu);
      ctxd_error err;
      int rc = coll_save_all(cs, &err);
      pthread_mutex_lock(&cs->mu);
      clock_gettime(CLOCK_MONOTONIC, &cs->last_save);
      cs->next_save_try = cs->last_save;
      if (rc) ts_add(&cs->next_save_try, cs->o.save_interval_s);
      continue;
    }
    if (!cs->changes_since_save || !may) {
      due = now;
      ts_add(&due, cs->o.save_interval_s);
      if (!may && ts_before(&cs->next_save_try, &due)) due = cs->next_save_try;
    }
    pthread_cond_timedwait(&cs->cv, &cs->mu, &due);
  }
  pthread_mutex_unlock(&cs->mu);
  return NULL;
}

/* ---- Open, close, create, drop, resolve -------------------------------------- */

static int mkdir_p(const char *dir, ctxd_error *e) {
  char buf[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof buf)
    return ctxd_seterr(e, CTXD_EINVAL, "index directory path length %zu", n);
  memcpy(buf, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (buf[i] != '/' && buf[i] != 0) continue;
    char c = buf[i];
    buf[i] = 0;
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
      return ctxd_seterr(e, CTXD_EIO, "creating %s: %s", buf, strerror(errno));
    buf[i] = c;
  }
  return 0;
}

/* Remove index files of collections that no longer exist, and temp files. */
static void remove_strays(coll_set *cs) {
  DIR *d = opendir(cs->dir);
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d))) {
    unsigned cid;
    int pos = 0;
    char path[4200];
    int tmp = strstr(de->d_name, ".tmp") != NULL;
    if (!tmp && (sscanf(de->d_name, "%u.vindex%n", &cid, &pos) != 1 ||
                 de->d_name[pos] != 0 || find_cid_locked(cs, cid)))
      continue;
    snprintf(path, sizeof path, "%s/%s", cs->dir, de->d_name);
    if (unlink(path) == 0)
      coll_log(cs, 2, "removed stale index file path=%s", path);
  }
  closedir(d);
}

static void set_free(coll_set *cs) {
  for (size_t i = 0; i < cs->n_ents; i++)
    if (--cs->ents[i]->refs == 0) ent_free(cs->ents[i]);
  free(cs->ents);
  free(cs->dir);
  pthread_mutex_destroy(&cs->sync_mu);
  pthread_mutex_destroy(&cs->save_mu);
  pthread_mutex_destroy(&cs->mu);
  pthread_cond_destroy(&cs->cv);
  free(cs);
}

/* Load or build every entry's index and replay the log (coll_open): files
 * and the log are read first, then one snapshot serves the rebuilds and the
 * replay (store.h: a reader's holder must not call other store functions). */
static int open_indexes(coll_set *cs, ctxd_error *e) {
  store_reader *r = NULL;
  manifest_ent *m = NULL;
  touch *t = NULL;
  size_t nm = 0, n = 0;
  store_stats ss;
  int rc = store_stats_get(cs->st, &ss, e);
  if (rc) return rc;
  uint64_t s = ss.last_seq;
  /* The log holds every change after first_kept - 1 (seqs are contiguous). */
  store_change first;
  size_t got = 0;
  if ((rc = store_changes_read(cs->st, 0, 1, &first, &got, e))) goto done;
  uint64_t kept_from = got ? first.seq - 1 : s;
  manifest_read(cs, &m, &nm);
  uint64_t from = s;
  int any_build = 0;
  for (size_t i = 0; i < cs->n_ents; i++) {
    centry *ent = cs->ents[i];
    ctxd_error le;
    uint64_t covered = 0, eff = 0;
    cvx *v = NULL;
    int lr = load_one(cs, ent, &v, &covered, &le);
    if (!lr) {
      eff = covered;
      for (size_t j = 0; j < nm; j++)
        if (m[j].cid == ent->cid && m[j].file_seq == covered &&
            m[j].clean_seq > eff)
          eff = m[j].clean_seq;
      if (eff > s)
        lr = ctxd_seterr(&le, CTXD_ECORRUPT,
                         "index file covers change %llu but the store ends "
                         "at %llu",
                         (unsigned long long)eff, (unsigned long long)s);
      else if (eff < kept_from)
        lr = ctxd_seterr(&le, CTXD_ECORRUPT,
                         "index file covers change %llu but the change log "
                         "starts after %llu",
                         (unsigned long long)eff,
                         (unsigned long long)kept_from);
      if (lr) cvx_unref_locked(v); /* no other thread yet */
    }
    if (lr) {
      if (lr != CTXD_ENOTFOUND || s > 0)
        coll_log(cs, lr == CTXD_ENOTFOUND ? 2 : 1,
                 "rebuilding index from the store collection=%s "
                 "reason=\"%s\"",
                 ent->cfg.name, le.msg);
      any_build = 1;
      continue;
    }
    ent->vx = v;
    ent->file_seq = covered;
    ent->clean_seq = eff;
    ent->replay_after = eff;
    if (eff < from) from = eff;
  }
  uint64_t last = from;
  if (from < s && (rc = collect_changes(cs->st, from, 0, &t, &n, &last, e)))
    goto done;
  if ((any_build || n) && (rc = store_reader_begin(cs->st, &r, e))) goto done;
  for (size_t i = 0; i < cs->n_ents; i++) {
    centry *ent = cs->ents[i];
    if (ent->vx) continue;
    if ((rc = build_from_reader(ent, r, &ent->vx, e))) goto done;
    ent->replay_after = UINT64_MAX; /* built from r: newer than any change */
    ent->last_change_seq = store_reader_seq(r);
  }
  if (n && (rc = apply_touches(cs, r, t, n, last, e))) goto done;
  pthread_mutex_lock(&cs->mu);
  for (size_t i = 0; i < cs->n_ents; i++) {
    cs->ents[i]->replay_after = 0;
    check_index_locked(cs, cs->ents[i]);
  }
  pthread_mutex_unlock(&cs->mu);
  cs->applied = last;
done:
  free(t);
  free(m);
  store_reader_end(r);
  return rc;
}

int coll_open(store *st, const coll_opts *o,
              void (*log)(int level, const char *msg, void *arg), void *log_arg,
              coll_set **out, ctxd_error *e) {
  coll_set *cs = calloc(1, sizeof *cs);
  store_collection *list = NULL;
  size_t n = 0;
  int rc;
  if (!cs) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  cs->st = st;
  cs->o = *o;
  cs->log = log;
  cs->log_arg = log_arg;
  if (cs->o.rebuild_masked_ratio <= 0) cs->o.rebuild_masked_ratio = 0.25;
  if (!cs->o.save_every_changes) cs->o.save_every_changes = 10000;
  if (!cs->o.save_interval_s) cs->o.save_interval_s = 60;
  if (cs->o.bm25.k1 == 0 && cs->o.bm25.b == 0)
    cs->o.bm25 = (lex_bm25){LEX_BM25_K1, LEX_BM25_B};
  pthread_mutex_init(&cs->sync_mu, NULL);
  pthread_mutex_init(&cs->save_mu, NULL);
  pthread_mutex_init(&cs->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&cs->cv, &ca);
  pthread_condattr_destroy(&ca);
  clock_gettime(CLOCK_MONOTONIC, &cs->last_save);
  cs->next_save_try = cs->last_save;
  if (!o->index_dir || !*o->index_dir) {
    rc = ctxd_seterr(e, CTXD_EINVAL, "no index directory");
    goto fail;
  }
  if (!(cs->dir = strdup(o->index_dir))) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto fail;
  }
  if ((rc = mkdir_p(cs->dir, e))) goto fail;
  snprintf(cs->o.defaults.name, sizeof cs->o.defaults.name, "%s",
           COLL_DEFAULT_NAME);
  if ((rc = coll_config_check(&cs->o.defaults, e))) {
    err_wrap(e, rc, "default collection settings");
    goto fail;
  }
  store_collection sc;
  rc = store_coll_get(st, COLL_DEFAULT_NAME, &sc, e);
  if (rc == CTXD_ENOTFOUND) {
    char text[STORE_COLL_CONFIG_MAX + 1];
    coll_config_format(&cs->o.defaults, text, sizeof text);
    rc = store_coll_create(st, COLL_DEFAULT_NAME, text, cs->o.defaults.dim,
                           NULL, e);
    if (rc == CTXD_EEXIST) rc = 0;
  }
  if (rc) goto fail;
  if ((rc = store_coll_list(st, &list, &n, e))) goto fail;
  for (size_t i = 0; i < n; i++) {
    centry *ent;
    if ((rc = ent_new(&list[i], &ent, e))) goto fail;
    if ((rc = ent_insert(cs, ent, e))) {
      ent_free(ent);
      goto fail;
    }
  }
  remove_strays(cs);
  if ((rc = open_indexes(cs, e))) goto fail;
  if (pthread_create(&cs->maint, NULL, maint_main, cs) != 0) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "cannot start the maintenance thread");
    goto fail;
  }
  cs->maint_started = 1;
  free(list);
  *out = cs;
  return 0;
fail:
  free(list);
  set_free(cs);
  return rc;
}

static void stop_maint(coll_set *cs) {
  if (!cs->maint_started) return;
  pthread_mutex_lock(&cs->mu);
  cs->stop = 1;
  pthread_cond_signal(&cs->cv);
  pthread_mutex_unlock(&cs->mu);
  pthread_join(cs->maint, NULL);
  cs->maint_started = 0;
}

void coll_close(coll_set *cs) {
  if (!cs) return;
  stop_maint(cs);
  ctxd_error e;
  coll_sync(cs, &e);
  coll_save_all(cs, &e);
  set_free(cs);
}

void coll_close_nosave(coll_set *cs) {
  if (!cs) return;
  stop_maint(cs);
  set_free(cs);
}

/* Create a collection (sync_mu held). */
static int create_locked(coll_set *cs, const coll_config *c, uint32_t *cid_out,
                         ctxd_error *e) {
  char text[STORE_COLL_CONFIG_MAX + 1];
  coll_config_format(c, text, sizeof text);
  uint32_t cid;
  int rc = store_coll_create(cs->st, c->name, text, c->dim, &cid, e);
  if (rc) return rc;
  store_collection sc;
  if ((rc = store_coll_get_id(cs->st, cid, &sc, e))) return rc;
  centry *ent;
  if ((rc = ent_new(&sc, &ent, e))) return rc;
  if ((rc = cvx_new(ent, 0, &ent->vx, e)) || (rc = ent_insert(cs, ent, e))) {
    ent_free(ent);
    return rc;
  }
  /* Saved at the next round, so the log can be trimmed past its creation. */
  ent->force_save = 1;
  if (cid_out) *cid_out = cid;
  return 0;
}

int coll_create(coll_set *cs, const coll_config *c, ctxd_error *e) {
  coll_config chk = *c;
  int rc = coll_config_check(&chk, e);
  if (rc) return rc;
  pthread_mutex_lock(&cs->sync_mu);
  rc = create_locked(cs, &chk, NULL, e);
  pthread_mutex_unlock(&cs->sync_mu);
  return rc;
}

int coll_drop(coll_set *cs, const char *name, uint64_t *documents,
              ctxd_error *e) {
  if (!name || !*name) name = COLL_DEFAULT_NAME;
  pthread_mutex_lock(&cs->sync_mu);
  int rc = store_coll_drop(cs->st, name, documents, e);
  if (!rc) {
    pthread_mutex_lock(&cs->mu);
    centry *ent = find_name_locked(cs, name);
    pthread_mutex_unlock(&cs->mu);
    if (ent) {
      char path[4200];
      file_path(cs, ent->cid, "", path, sizeof path);
      unlink(path);
      backup_fsync_dir(cs->dir, NULL);
      ent_remove(cs, ent);
    }
  }
  pthread_mutex_unlock(&cs->sync_mu);
  return rc;
}

int coll_resolve(coll_set *cs, const char *name, int create, uint32_t *cid,
                 coll_config *cfg, ctxd_error *e) {
  if (!name || !*name) name = COLL_DEFAULT_NAME;
  if (!name_ok(name))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "collection name \"%.80s\": expected 1..%d characters "
                       "of A-Z a-z 0-9 _ . -",
                       name, STORE_COLL_NAME_MAX);
  pthread_mutex_lock(&cs->mu);
  centry *ent = find_name_locked(cs, name);
  if (ent) {
    if (cid) *cid = ent->cid;
    if (cfg) *cfg = ent->cfg;
  }
  pthread_mutex_unlock(&cs->mu);
  if (ent) return 0;
  if (!create) return ctxd_seterr(e, CTXD_ENOTFOUND, "no collection %s", name);
  coll_config c = cs->o.defaults;
  snprintf(c.name, sizeof c.name, "%s", name);
  uint32_t id;
  pthread_mutex_lock(&cs->sync_mu);
  pthread_mutex_lock(&cs->mu);
  ent = find_name_locked(cs, name); /* another thread may have made it */
  if (ent) {
    id = ent->cid;
    c = ent->cfg;
  }
  pthread_mutex_unlock(&cs->mu);
  int rc = ent ? 0 : create_locked(cs, &c, &id, e);
  pthread_mutex_unlock(&cs->sync_mu);
  if (rc) return rc;
  if (!ent) coll_log(cs, 2, "collection created on first use name=%s", name);
  if (cid) *cid = id;
  if (cfg) *cfg = c;
  return 0;
}

const embedder *coll_embedder(coll_set *cs, uint32_t cid) {
  pthread_mutex_lock(&cs->mu);
  centry *ent = find_cid_locked(cs, cid);
  const embedder *m = ent ? ent->emb : NULL;
  pthread_mutex_unlock(&cs->mu);
  return m;
}

/* idf of a term from snapshot r: what the collection's BM25 would give. */
typedef struct idf_src {
  store_reader *r;
  uint32_t cid;
  uint64_t chunks;
} idf_src;

static double idf_cb(const char *term, size_t len, void *arg) {
  idf_src *src = arg;
  uint64_t df = 0;
  if (store_reader_postings(src->r, src->cid, term, len, &df, NULL, NULL,
                            NULL))
    df = 0;
  return lex_bm25_idf(src->chunks, df);
}

/* Embed n texts with ent's hash embedder weighing terms by their idf in
 * snapshot r (embed.h: the owner supplies idf according to idf_mode). The
 * options hold the callback, so a short-lived embedder is made per call. */
static int embed_with_idf(const centry *ent, store_reader *r,
                          const char *const *texts, const size_t *lens,
                          size_t n, float *out, ctxd_error *e) {
  store_collection sc;
  int rc = store_reader_coll(r, ent->cid, &sc, e);
  if (rc) return rc;
  idf_src src = {r, ent->cid, sc.chunks};
  embed_hash_opts o = ent->ho;
  o.idf = idf_cb;
  o.idf_arg = &src;
  embedder *m;
  if ((rc = embed_hash_create(&o, &m, e))) return rc;
  rc = embed_texts(m, texts, lens, n, out, e);
  embedder_free(m);
  return rc;
}

/* Embed with ent's own embedder, or for a "model" collection with the one
 * the owner lends for its config text (its errors, e.g. no such model). */
static int ent_embed(coll_set *cs, const centry *ent, const char *const *texts,
                     const size_t *lens, size_t n, float *out, ctxd_error *e) {
  if (!ent->is_model) return embed_texts(ent->emb, texts, lens, n, out, e);
  if (!cs->o.model_acquire)
    return ctxd_seterr(e, CTXD_EPRECOND,
                       "collection %s embeds with a model (%s), and no "
                       "model runtime is attached",
                       ent->cfg.name, ent->cfg.embedder);
  const embedder *m;
  void *hold;
  int rc = cs->o.model_acquire(cs->o.model_arg, ent->cfg.embedder, &m, &hold,
                               e);
  if (rc) {
    char why[CTXD_ERRMSG_MAX];
    snprintf(why, sizeof why, "%s", e->msg);
    return ctxd_seterr(e, rc, "collection %s: %s", ent->cfg.name, why);
  }
  if (m->dim != ent->cfg.dim)
    rc = ctxd_seterr(e, CTXD_EPRECOND,
                     "collection %s: the model embedder gives %u dimensions, "
                     "the collection has %u",
                     ent->cfg.name, m->dim, ent->cfg.dim);
  else
    rc = embed_texts(m, texts, lens, n, out, e);
  cs->o.model_release(cs->o.model_arg, hold);
  return rc;
}

int coll_embed_chunks(coll_set *cs, uint32_t cid, const char *text,
                      const chunk_span *chunks, size_t n_chunks, float *out,
                      ctxd_error *e) {
  centry *ent = ent_ref(cs, cid, NULL);
  const char **texts = NULL;
  size_t *lens = NULL;
  int rc = 0;
  if (!ent) return ctxd_seterr(e, CTXD_ENOTFOUND, "no collection id %u", cid);
  if (!ent->emb && !ent->is_model) {
    rc = ctxd_seterr(e, CTXD_EINVAL, "collection %s takes client vectors",
                     ent->cfg.name);
    goto done;
  }
  if (n_chunks == 0) goto done;
  texts = malloc(n_chunks * sizeof *texts);
  lens = malloc(n_chunks * sizeof *lens);
  if (!texts || !lens) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < n_chunks; i++) {
    texts[i] = text + chunks[i].byte_start;
    lens[i] = (size_t)(chunks[i].byte_end - chunks[i].byte_start);
  }
  if (ent->ho.idf_mode == EMBED_HASH_IDF_ALL) {
    store_reader *r;
    if ((rc = store_reader_begin(cs->st, &r, e))) goto done;
    rc = embed_with_idf(ent, r, texts, lens, n_chunks, out, e);
    store_reader_end(r);
  } else {
    rc = ent_embed(cs, ent, texts, lens, n_chunks, out, e);
  }
done:
  free(texts);
  free(lens);
  ent_unref(cs, ent, NULL);
  return rc;
}

/* ---- Search ------------------------------------------------------------------ */

typedef struct scored {
  int64_t label;
  float score;
} scored;

/* a ranks before b: higher score, then lower label. */
static int scored_before(const scored *a, const scored *b) {
  return a->score > b->score || (a->score == b->score && a->label < b->label);
}

static int scored_cmp(const void *a, const void *b) {
  const scored *x = a, *y = b;
  return scored_before(x, y) ? -1 : scored_before(y, x) ? 1 : 0;
}

/* A bounded heap keeping the best `cap` items; the root is the worst kept. */
typedef struct topk {
  scored *h;
  size_t n, cap;
} topk;

static void topk_sift_down(topk *t, size_t i) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, w = i;
    if (l < t->n && scored_before(&t->h[w], &t->h[l])) w = l;
    if (r < t->n && scored_before(&t->h[w], &t->h[r])) w = r;
    if (w == i) return;
    scored tmp = t->h[i];
    t->h[i] = t->h[w];
    t->h[w] = tmp;
    i = w;
  }
}

/* Would s enter the heap? */
static int topk_wants(const topk *t, const scored *s) {
  return t->n < t->cap || scored_before(s, &t->h[0]);
}

static void topk_push(topk *t, scored s) {
  if (t->n < t->cap) {
    size_t i = t->n++;
    t->h[i] = s;
    while (i) {
      size_t p = (i - 1) / 2;
      if (!scored_before(&t->h[p], &t->h[i])) break;
      scored tmp = t->h[p];
      t->h[p] = t->h[i];
      t->h[i] = tmp;
      i = p;
    }
  } else if (scored_before(&s, &t->h[0])) {
    t->h[0] = s;
    topk_sift_down(t, 0);
  }
}

/* Sort the kept items best first (in place). */
static void topk_sort(topk *t) { qsort(t->h, t->n, sizeof *t->h, scored_cmp); }

/* An open-addressing map u64 -> double (keys never UINT64_MAX). */
typedef struct u64map {
  uint64_t *keys;
  double *vals;
  size_t cap, n; /* cap a power of two */
} u64map;

#define MAP_EMPTY UINT64_MAX

static size_t map_hash(uint64_t k, size_t cap) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  return (size_t)k & (cap - 1);
}

static int map_grow(u64map *m) {
  size_t cap = m->cap ? m->cap * 2 : 64;
  uint64_t *keys = malloc(cap * sizeof *keys);
  double *vals = malloc(cap * sizeof *vals);
  if (!keys || !vals) {
    free(keys);
    free(vals);
    return CTXD_ENOMEM;
  }
  memset(keys, 0xff, cap * sizeof *keys);
  for (size_t i = 0; i < m->cap; i++) {
    if (m->keys[i] == MAP_EMPTY) continue;
    size_t j = map_hash(m->keys[i], cap);
    while (keys[j] != MAP_EMPTY) j = (j + 1) & (cap - 1);
    keys[j] = m->keys[i];
    vals[j] = m->vals[i];
  }
  free(m->keys);
  free(m->vals);
  m->keys = keys;
  m->vals = vals;
  m->cap = cap;
  return 0;
}

/* The slot of key k, inserted with value 0 if new; NULL on ENOMEM. */
static double *map_slot(u64map *m, uint64_t k) {
  if ((m->n + 1) * 2 > m->cap && map_grow(m)) return NULL;
  size_t j = map_hash(k, m->cap);
  while (m->keys[j] != MAP_EMPTY) {
    if (m->keys[j] == k) return &m->vals[j];
    j = (j + 1) & (m->cap - 1);
  }
  m->keys[j] = k;
  m->vals[j] = 0;
  m->n++;
  return &m->vals[j];
}

static const double *map_find(const u64map *m, uint64_t k) {
  if (!m->cap) return NULL;
  size_t j = map_hash(k, m->cap);
  while (m->keys[j] != MAP_EMPTY) {
    if (m->keys[j] == k) return &m->vals[j];
    j = (j + 1) & (m->cap - 1);
  }
  return NULL;
}

static void map_free(u64map *m) {
  free(m->keys);
  free(m->vals);
}

/* One search's state. */
typedef struct qctx {
  coll_set *cs;
  centry *ent;
  cvx *vx;
  const coll_query *q;
  uint32_t cid;
  store_reader *r;
  float *qvec;      /* the query vector (normalised for ip), or NULL */
  int qzero;        /* ip query of norm 0: the vector list is empty */
  int has_docs;     /* doc_ids filter */
  u64map docs;      /* its internal ids */
  u64map meta;      /* doc -> 1 allowed / 0 not, per query */
  int cb_err;       /* a store error inside a filter callback */
  ctxd_error cb_e;
} qctx;

static int q_reader(qctx *c, ctxd_error *e) {
  return c->r ? 0 : store_reader_begin(c->cs->st, &c->r, e);
}

/* Does document doc pass the filters? (1/0; c->cb_err on store errors) */
static int doc_ok(qctx *c, uint64_t doc) {
  if (c->has_docs && !map_find(&c->docs, doc)) return 0;
  if (!c->q->n_meta_eq) return 1;
  const double *hit = map_find(&c->meta, doc);
  if (hit) return *hit != 0;
  int ok = 1;
  for (size_t i = 0; i < c->q->n_meta_eq && ok; i++) {
    const store_kv *kv = &c->q->meta_eq[i];
    uint32_t dcid;
    const char *val;
    size_t vlen;
    int rc = store_reader_doc_meta(c->r, doc, kv->key, kv->key_len, &dcid,
                                   &val, &vlen, &c->cb_e);
    if (rc) {
      if (rc != CTXD_ENOTFOUND && !c->cb_err) c->cb_err = rc;
      ok = 0;
    } else {
      ok = val && vlen == kv->val_len && memcmp(val, kv->val, vlen) == 0;
    }
  }
  double *slot = map_slot(&c->meta, doc);
  if (slot) *slot = ok;
  else if (!c->cb_err) {
    c->cb_err = CTXD_ENOMEM;
    ctxd_seterr(&c->cb_e, CTXD_ENOMEM, "out of memory");
  }
  return ok;
}

static int allow_cb(int64_t label, void *arg) {
  return doc_ok(arg, STORE_LABEL_DOC(label));
}

static float l2_score(float d) { return -sqrtf(d > 0 ? d : 0); }

/* Vector list with filtered documents: an exact scan of their vectors. */
static int vec_scan_docs(qctx *c, topk *t, ctxd_error *e) {
  uint32_t dim = c->ent->cfg.dim;
  int ip = c->ent->cfg.metric == VINDEX_IP;
  for (size_t i = 0; i < c->docs.cap; i++) {
    uint64_t doc = c->docs.keys[i];
    if (doc == MAP_EMPTY || !doc_ok(c, doc)) continue;
    const float *vecs;
    uint32_t n;
    int rc = store_reader_doc_vectors(c->r, c->cid, doc, &vecs, &n, e);
    if (rc == CTXD_ENOTFOUND) continue;
    if (rc) return rc;
    for (uint32_t j = 0; j < n; j++) {
      const float *v = vecs + (size_t)j * dim;
      double s = 0, nv = 0;
      if (ip) {
        for (uint32_t d = 0; d < dim; d++) {
          s += (double)v[d] * c->qvec[d];
          nv += (double)v[d] * v[d];
        }
        s = nv > 0 ? s / sqrt(nv) : 0;
      } else {
        for (uint32_t d = 0; d < dim; d++) {
          double x = (double)v[d] - c->qvec[d];
          s += x * x;
        }
      }
      scored sc = {STORE_LABEL(doc, j), ip ? (float)s : l2_score((float)s)};
      topk_push(t, sc);
    }
  }
  return 0;
}

/* The vector list, best first, at most depth items. *full: the index gave
 * as many as asked (more may exist). */
static int vec_list(qctx *c, uint32_t depth, scored *out, size_t *n, int *full,
                    ctxd_error *e) {
  *n = 0;
  *full = 0;
  if (c->qzero) return 0;
  int rc;
  if (c->has_docs) {
    topk t = {out, 0, depth};
    if ((rc = q_reader(c, e)) || (rc = vec_scan_docs(c, &t, e)))
      return rc;
    topk_sort(&t);
    *n = t.n;
    return c->cb_err ? ctxd_seterr(e, c->cb_err, "%s", c->cb_e.msg) : 0;
  }
  int64_t *labels = malloc(depth * (sizeof(int64_t) + sizeof(float)));
  if (!labels) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  float *scores = (float *)(labels + depth);
  vindex_params p = {c->q->ef_search, c->q->nprobe, NULL, NULL};
  if (c->q->n_meta_eq) {
    if ((rc = q_reader(c, e))) goto done;
    p.allow = allow_cb;
    p.allow_arg = c;
  }
  if ((rc = vindex_search(c->vx->vi, c->qvec, 1, depth, &p, 1, scores, labels,
                          e)))
    goto done;
  if (c->cb_err) {
    rc = ctxd_seterr(e, c->cb_err, "%s", c->cb_e.msg);
    goto done;
  }
  int l2 = c->ent->cfg.metric == VINDEX_L2;
  for (uint32_t i = 0; i < depth && labels[i] >= 0; i++)
    out[(*n)++] = (scored){labels[i], l2 ? l2_score(scores[i]) : scores[i]};
  *full = *n == depth;
  /* Equal scores come back in the index's internal order: order them by
   * label, so results do not depend on how the index was built. */
  for (size_t i = 1; i < *n; i++)
    if (out[i].score == out[i - 1].score) {
      qsort(out, *n, sizeof *out, scored_cmp);
      break;
    }
done:
  free(labels);
  return rc;
}

/* Postings of one term are gathered here, then scaled by the term's idf. */
typedef struct post {
  int64_t label;
  double w; /* BM25 tf part */
} post;

typedef struct post_acc {
  qctx *c;
  const lex_bm25 *bm;
  double avgdl;
  post *buf;
  size_t n, cap;
  int err;
} post_acc;

static int post_cb(int64_t label, uint32_t tf, uint32_t dl, void *arg) {
  post_acc *a = arg;
  if (a->c->has_docs && !map_find(&a->c->docs, STORE_LABEL_DOC(label)))
    return 0;
  if (a->n == a->cap) {
    size_t cap = a->cap ? a->cap * 2 : 1024;
    post *p = realloc(a->buf, cap * sizeof *p);
    if (!p) {
      a->err = CTXD_ENOMEM;
      return 1;
    }
    a->buf = p;
    a->cap = cap;
  }
  a->buf[a->n++] = (post){label, lex_bm25_tf(a->bm, tf, dl, a->avgdl)};
  return 0;
}

/* The lexical (BM25) list, best first, at most depth items. */
static int lex_list(qctx *c, uint32_t depth, scored *out, size_t *n,
                    ctxd_error *e) {
  lex_tf *terms = NULL;
  size_t nt = 0;
  uint32_t qlen;
  u64map acc = {0};
  post_acc pa = {c, &c->cs->o.bm25, 0, NULL, 0, 0, 0};
  *n = 0;
  int rc = lex_terms(c->q->text, c->q->text_len, &terms, &nt, &qlen, e);
  if (rc) return rc;
  if (nt > COLL_QUERY_TERMS_MAX) {
    rc = ctxd_seterr(e, CTXD_ELIMIT, "query has %zu distinct terms, at most %d",
                     nt, COLL_QUERY_TERMS_MAX);
    goto done;
  }
  if (nt == 0) goto done;
  if ((rc = q_reader(c, e))) goto done;
  store_collection sc;
  if ((rc = store_reader_coll(c->r, c->cid, &sc, e))) goto done;
  if (sc.chunks == 0) goto done;
  pa.avgdl = (double)sc.lex_len_sum / (double)sc.chunks;
  if (pa.avgdl <= 0) pa.avgdl = 1;
  for (size_t i = 0; i < nt; i++) {
    uint64_t df = 0;
    pa.n = 0;
    rc = store_reader_postings(c->r, c->cid, terms[i].term, terms[i].len, &df,
                               post_cb, &pa, e);
    if (pa.err) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
      goto done;
    }
    if (rc < 0) goto done;
    rc = 0;
    double idf = lex_bm25_idf(sc.chunks, df);
    for (size_t j = 0; j < pa.n; j++) {
      double *slot = map_slot(&acc, (uint64_t)pa.buf[j].label);
      if (!slot) {
        rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
        goto done;
      }
      *slot += idf * pa.buf[j].w;
    }
  }
  topk t = {out, 0, depth};
  for (size_t i = 0; i < acc.cap; i++) {
    if (acc.keys[i] == MAP_EMPTY) continue;
    scored s = {(int64_t)acc.keys[i], (float)acc.vals[i]};
    if (!topk_wants(&t, &s)) continue;
    if (c->q->n_meta_eq && !doc_ok(c, STORE_LABEL_DOC(s.label))) continue;
    topk_push(&t, s);
  }
  if (c->cb_err) {
    rc = ctxd_seterr(e, c->cb_err, "%s", c->cb_e.msg);
    goto done;
  }
  topk_sort(&t);
  *n = t.n;
done:
  map_free(&acc);
  free(pa.buf);
  free(terms);
  return rc;
}

static int label_cmp(const void *a, const void *b) {
  int64_t x = ((const scored *)a)->label, y = ((const scored *)b)->label;
  return x < y ? -1 : x > y;
}

/* Reciprocal rank fusion of two ranked lists into out (best first). */
static size_t rrf(const scored *a, size_t na, const scored *b, size_t nb,
                  scored *out) {
  size_t n = 0;
  for (size_t i = 0; i < na; i++)
    out[n++] = (scored){a[i].label, (float)(1.0 / (COLL_RRF_K + i + 1))};
  for (size_t i = 0; i < nb; i++)
    out[n++] = (scored){b[i].label, (float)(1.0 / (COLL_RRF_K + i + 1))};
  qsort(out, n, sizeof *out, label_cmp);
  size_t w = 0;
  for (size_t i = 0; i < n; i++) {
    if (w && out[w - 1].label == out[i].label) {
      out[w - 1].score += out[i].score; /* (r1, r2) and (r2, r1) tie exactly */
    } else {
      out[w++] = out[i];
    }
  }
  qsort(out, w, sizeof *out, scored_cmp);
  return w;
}

/* Resolve ranked labels into hits (at most k) in one arena. *vanished =
 * labels whose chunk is gone. */
static int make_result(qctx *c, const scored *cand, size_t n, uint32_t k,
                       coll_result *res, size_t *vanished, ctxd_error *e) {
  store_chunk_ref *refs = NULL;
  float *scores = NULL;
  size_t got = 0;
  int rc = q_reader(c, e);
  *vanished = 0;
  if (rc) return rc;
  size_t cap = n < k ? n : k;
  refs = malloc((cap ? cap : 1) * (sizeof *refs + sizeof *scores));
  if (!refs) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  scores = (float *)(refs + (cap ? cap : 1));
  size_t bytes = 0;
  for (size_t i = 0; i < n && got < k; i++) {
    store_chunk_ref *ref = &refs[got];
    rc = store_reader_chunk(c->r, cand[i].label, c->q->with_text, ref, e);
    if (rc == CTXD_ENOTFOUND || (!rc && ref->cid != c->cid)) {
      (*vanished)++;
      continue;
    }
    if (rc) goto done;
    scores[got++] = cand[i].score;
    bytes += ref->doc_id_len + 1 + (c->q->with_text ? ref->text_len + 1 : 0);
  }
  rc = 0;
  size_t head = got * sizeof(coll_hit);
  char *mem = malloc(head + bytes + 1);
  if (!mem) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto done;
  }
  coll_hit *hits = (coll_hit *)mem;
  char *p = mem + head;
  for (size_t i = 0; i < got; i++) {
    coll_hit *h = &hits[i];
    h->doc_id = p;
    h->doc_id_len = refs[i].doc_id_len;
    memcpy(p, refs[i].doc_id, refs[i].doc_id_len);
    p += refs[i].doc_id_len;
    *p++ = 0;
    h->ordinal = refs[i].ordinal;
    h->span = refs[i].span;
    h->score = scores[i];
    h->text = NULL;
    h->text_len = 0;
    if (c->q->with_text) {
      h->text = p;
      h->text_len = refs[i].text_len;
      if (refs[i].text_len) memcpy(p, refs[i].text, refs[i].text_len);
      p += refs[i].text_len;
      *p++ = 0;
    }
  }
  res->hits = hits;
  res->n = got;
  res->mem = mem;
done:
  free(refs);
  return rc;
}

static int query_check(const centry *ent, const coll_query *q, ctxd_error *e) {
  if (q->k < 1 || q->k > COLL_K_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "k %u: expected 1..%d", q->k,
                       COLL_K_MAX);
  if (q->mode != COLL_MODE_VECTOR && q->mode != COLL_MODE_LEXICAL &&
      q->mode != COLL_MODE_HYBRID)
    return ctxd_seterr(e, CTXD_EINVAL, "search mode %d: expected vector (0), "
                       "lexical (1) or hybrid (2)", q->mode);
  if (q->n_doc_ids > COLL_DOC_IDS_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "%zu document ids in the filter, at "
                       "most %d", q->n_doc_ids, COLL_DOC_IDS_MAX);
  if (q->n_meta_eq > COLL_META_EQ_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "%zu metadata filters, at most %d",
                       q->n_meta_eq, COLL_META_EQ_MAX);
  int has_text = q->text && q->text_len;
  if (q->vector && q->dim != ent->cfg.dim)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "query vector has %u dimensions, collection %s has %u",
                       q->dim, ent->cfg.name, ent->cfg.dim);
  if (q->mode != COLL_MODE_VECTOR && !has_text)
    return ctxd_seterr(e, CTXD_EINVAL, "%s search needs query text",
                       q->mode == COLL_MODE_LEXICAL ? "lexical" : "hybrid");
  if (q->mode == COLL_MODE_VECTOR && !has_text && !q->vector)
    return ctxd_seterr(e, CTXD_EINVAL, "empty query: no text and no vector");
  if (q->mode != COLL_MODE_LEXICAL && !q->vector && !ent->emb &&
      !ent->is_model)
    return ctxd_seterr(e, CTXD_EPRECOND,
                       "collection %s has no embedder (none): give a query "
                       "vector or search in lexical mode",
                       ent->cfg.name);
  return 0;
}

/* Prepare the query vector and the doc-id filter. */
static int query_prepare(qctx *c, ctxd_error *e) {
  const coll_query *q = c->q;
  uint32_t dim = c->ent->cfg.dim;
  int rc;
  if (q->mode != COLL_MODE_LEXICAL) {
    if (!(c->qvec = malloc(dim * sizeof(float))))
      return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    if (q->vector) {
      memcpy(c->qvec, q->vector, dim * sizeof(float));
    } else {
      const char *t = q->text;
      size_t len = q->text_len;
      if (c->ent->ho.idf_mode == EMBED_HASH_IDF_NONE)
        rc = ent_embed(c->cs, c->ent, &t, &len, 1, c->qvec, e);
      else if (!(rc = q_reader(c, e)))
        rc = embed_with_idf(c->ent, c->r, &t, &len, 1, c->qvec, e);
      if (rc) return rc;
    }
    if (c->ent->cfg.metric == VINDEX_IP) {
      double nn = 0;
      for (uint32_t i = 0; i < dim; i++) nn += (double)c->qvec[i] * c->qvec[i];
      c->qzero = nn == 0;
      vindex_normalize(c->qvec, 1, dim);
    }
  }
  if (q->n_doc_ids) {
    c->has_docs = 1;
    if ((rc = q_reader(c, e))) return rc;
    for (size_t i = 0; i < q->n_doc_ids; i++) {
      uint64_t doc;
      rc = store_reader_doc_id(c->r, c->cid, q->doc_ids[i], q->doc_id_lens[i],
                               &doc, e);
      if (rc == CTXD_ENOTFOUND) continue;
      if (rc) return rc;
      if (!map_slot(&c->docs, doc))
        return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    }
  }
  return 0;
}

int coll_search(coll_set *cs, uint32_t cid, const coll_query *q,
                coll_result *out, ctxd_error *e) {
  qctx c;
  memset(&c, 0, sizeof c);
  c.cs = cs;
  c.q = q;
  c.cid = cid;
  scored *buf = NULL;
  memset(out, 0, sizeof *out);
  c.ent = ent_ref(cs, cid, &c.vx);
  if (!c.ent) return ctxd_seterr(e, CTXD_ENOTFOUND, "no collection id %u", cid);
  int rc = query_check(c.ent, q, e);
  if (rc || (rc = query_prepare(&c, e))) goto done;
  uint32_t depth = q->mode == COLL_MODE_HYBRID && q->k < COLL_HYBRID_DEPTH
                       ? COLL_HYBRID_DEPTH
                       : q->k;
  /* A label can outlive its chunk for a moment (a delete committed, not yet
   * synced): such hits are skipped, and the search repeated deeper if that
   * left fewer than k. */
  for (int attempt = 0;; attempt++) {
    size_t nv = 0, nl = 0, nc;
    int full = 0;
    free(buf);
    buf = malloc((size_t)depth * 4 * sizeof *buf);
    if (!buf) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
      goto done;
    }
    scored *vl = buf, *ll = buf + depth, *fused = buf + 2 * (size_t)depth;
    if (q->mode != COLL_MODE_LEXICAL &&
        (rc = vec_list(&c, depth, vl, &nv, &full, e)))
      goto done;
    if (q->mode != COLL_MODE_VECTOR && (rc = lex_list(&c, depth, ll, &nl, e)))
      goto done;
    const scored *cand = vl;
    nc = nv;
    if (q->mode == COLL_MODE_LEXICAL) {
      cand = ll;
      nc = nl;
    } else if (q->mode == COLL_MODE_HYBRID) {
      nc = rrf(vl, nv, ll, nl, fused);
      cand = fused;
    }
    size_t vanished;
    coll_result_free(out);
    if ((rc = make_result(&c, cand, nc, q->k, out, &vanished, e))) goto done;
    if (!vanished || out->n >= q->k || !full || attempt == 2 ||
        depth >= COLL_K_MAX * 4)
      break;
    depth *= 2;
  }
done:
  if (rc) coll_result_free(out);
  free(buf);
  free(c.qvec);
  map_free(&c.docs);
  map_free(&c.meta);
  store_reader_end(c.r);
  ent_unref(cs, c.ent, c.vx);
  return rc;
}

void coll_result_free(coll_result *r) {
  if (!r) return;
  free(r->mem);
  r->mem = NULL;
  r->hits = NULL;
  r->n = 0;
}

/* ---- Status --------------------------------------------------------------- */

static int info_fill(coll_set *cs, centry *ent, cvx *vx, coll_info *out,
                     ctxd_error *e) {
  store_collection sc;
  int rc = store_coll_get_id(cs->st, ent->cid, &sc, e);
  if (rc) return rc;
  memset(out, 0, sizeof *out);
  out->config = ent->cfg;
  out->cid = ent->cid;
  out->documents = sc.documents;
  out->chunks = sc.chunks;
  out->bytes = sc.bytes;
  out->tokens = sc.tokens;
  out->vectors = sc.vectors;
  vindex_info vi;
  vindex_get_info(vx->vi, &vi);
  out->indexed = vi.live;
  out->masked = vi.masked;
  out->trained = !vx->fallback && (!vi.needs_training || vi.trained);
  out->exact_until_trained = vx->fallback;
  out->min_train = ent->min_train;
  pthread_mutex_lock(&cs->mu);
  out->covered_seq = ent->file_seq;
  out->rebuilding = ent->rb_state != RB_NONE;
  out->rebuild_done = ent->rb_done;
  out->rebuild_total = ent->rb_total;
  memcpy(out->rebuild_error, ent->rb_error, sizeof out->rebuild_error);
  pthread_mutex_unlock(&cs->mu);
  return 0;
}

int coll_info_get(coll_set *cs, const char *name, coll_info *out,
                  ctxd_error *e) {
  if (!name || !*name) name = COLL_DEFAULT_NAME;
  pthread_mutex_lock(&cs->mu);
  centry *ent = find_name_locked(cs, name);
  cvx *vx = NULL;
  if (ent) {
    ent->refs++;
    vx = ent->vx;
    vx->refs++;
  }
  pthread_mutex_unlock(&cs->mu);
  if (!ent) return ctxd_seterr(e, CTXD_ENOTFOUND, "no collection %.80s", name);
  int rc = info_fill(cs, ent, vx, out, e);
  ent_unref(cs, ent, vx);
  return rc;
}

int coll_info_list(coll_set *cs, coll_info **out, size_t *n, ctxd_error *e) {
  uint32_t *cids = NULL;
  size_t m = 0;
  coll_info *infos = NULL;
  int rc = 0;
  pthread_mutex_lock(&cs->mu);
  m = cs->n_ents;
  cids = malloc((m ? m : 1) * sizeof *cids);
  if (cids)
    for (size_t i = 0; i < m; i++) cids[i] = cs->ents[i]->cid;
  pthread_mutex_unlock(&cs->mu);
  if (!cids) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  /* cid order, as store_coll_list gives */
  for (size_t i = 1; i < m; i++)
    for (size_t j = i; j > 0 && cids[j - 1] > cids[j]; j--) {
      uint32_t t = cids[j];
      cids[j] = cids[j - 1];
      cids[j - 1] = t;
    }
  infos = calloc(m ? m : 1, sizeof *infos);
  if (!infos) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto done;
  }
  size_t w = 0;
  for (size_t i = 0; i < m; i++) {
    cvx *vx = NULL;
    centry *ent = ent_ref(cs, cids[i], &vx);
    if (!ent) continue; /* dropped meanwhile */
    rc = info_fill(cs, ent, vx, &infos[w], e);
    ent_unref(cs, ent, vx);
    if (rc == CTXD_ENOTFOUND) continue;
    if (rc) goto done;
    w++;
  }
  rc = 0;
  *out = infos;
  *n = w;
  infos = NULL;
done:
  free(infos);
  free(cids);
  return rc;
}
