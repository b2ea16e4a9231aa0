/* test_coll.c - unit tests of the retrieval engine: collection configs and
 * lifecycle, vector/BM25/hybrid search against hand-computed answers, sync
 * of puts, replacements and deletes, index files and change-log replay after
 * a clean close and after a crash, IVF training, HNSW masking and rebuilds,
 * filters, errors, and searches racing writers. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../check.h"
#include "coll.h"
#include "put_testlib.h"

static char base[] = "/tmp/ctxd-test-coll-XXXXXX";
static int dir_seq;

typedef struct env {
  char sdir[300], idir[300];
  store *st;
  coll_set *cs;
  coll_opts o;
} env;

static char logbuf[16384];
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

static void test_log(int level, const char *msg, void *arg) {
  (void)arg;
  pthread_mutex_lock(&log_mu);
  size_t n = strlen(logbuf);
  snprintf(logbuf + n, sizeof logbuf - n, "%d %s\n", level, msg);
  if (getenv("COLL_TEST_VERBOSE")) fprintf(stderr, "log %d %s\n", level, msg);
  pthread_mutex_unlock(&log_mu);
}

static int log_has(const char *s) {
  pthread_mutex_lock(&log_mu);
  int r = strstr(logbuf, s) != NULL;
  pthread_mutex_unlock(&log_mu);
  return r;
}

static void log_clear(void) {
  pthread_mutex_lock(&log_mu);
  logbuf[0] = 0;
  pthread_mutex_unlock(&log_mu);
}

static void default_opts(coll_opts *o, const char *idir) {
  memset(o, 0, sizeof *o);
  o->index_dir = idir;
  /* no idf: an identical text then scores exactly 1 */
  snprintf(o->defaults.embedder, sizeof o->defaults.embedder,
           "hash:dim=64,idf=none");
  o->defaults.metric = VINDEX_IP;
  snprintf(o->defaults.index_spec, sizeof o->defaults.index_spec, "Flat");
  o->defaults.chunk_max_tokens = 64;
  o->save_interval_s = 3600;
  o->save_every_changes = 1000000;
  o->build_threads = 1;
}

static int env_open(env *v) {
  ctxd_error e;
  store_opts so = {0, 0, 0, 1};
  int rc = store_open(v->sdir, &so, &v->st, &e);
  if (rc) {
    fprintf(stderr, "store_open: %s\n", e.msg);
    return rc;
  }
  rc = coll_open(v->st, &v->o, test_log, NULL, &v->cs, &e);
  if (rc) fprintf(stderr, "coll_open: %s\n", e.msg);
  return rc;
}

static int env_new(env *v) {
  memset(v, 0, sizeof *v);
  dir_seq++;
  snprintf(v->sdir, sizeof v->sdir, "%s/s%d", base, dir_seq);
  snprintf(v->idir, sizeof v->idir, "%s/s%d/index", base, dir_seq);
  default_opts(&v->o, v->idir);
  return env_open(v);
}

static void index_file(const env *v, uint32_t cid, char *buf, size_t cap) {
  snprintf(buf, cap, "%s/%u.vindex", v->idir, cid);
}

/* Open v's directories again (after env_close), with a fresh log. */
static int reopen(env *v) {
  log_clear();
  int rc = env_open(v);
  CHECK_EQ_INT(rc, 0);
  return rc == 0;
}

static void env_close(env *v, int save) {
  if (save)
    coll_close(v->cs);
  else
    coll_close_nosave(v->cs);
  store_close(v->st);
  v->cs = NULL;
  v->st = NULL;
}

/* Run a test in a fresh environment, closed (saving) after it unless the
 * test closed it. */
static void run(void (*test)(env *v)) {
  env v;
  if (env_new(&v)) {
    CHECK(0);
    return;
  }
  test(&v);
  if (v.cs) env_close(&v, 1);
}

static uint32_t default_cid(env *v) {
  uint32_t cid = 0;
  ctxd_error e;
  CHECK_EQ_INT(coll_resolve(v->cs, "", 0, &cid, NULL, &e), 0);
  return cid;
}

/* A vector-mode query for vector x of dim floats. */
static coll_query vec_query(const float *x, uint32_t dim, uint32_t k) {
  coll_query q;
  memset(&q, 0, sizeof q);
  q.vector = x;
  q.dim = dim;
  q.k = k;
  return q;
}

/* Search: n hits, the first from document `first`. */
#define expect_top(v, cid, q, n, first) expect_top_at(__LINE__, v, cid, q, n, first)
static void expect_top_at(int line, env *v, uint32_t cid, const coll_query *q,
                          size_t n, const char *first) {
  coll_result r;
  ctxd_error e;
  int rc = coll_search(v->cs, cid, q, &r, &e);
  if (rc || r.n != n || (n && strcmp(r.hits[0].doc_id, first))) {
    fprintf(stderr, "line %d: ", line);
    CHECK_EQ_INT(rc, 0);
    CHECK_EQ_INT(r.n, n);
    if (!rc && n && r.n) CHECK_EQ_STR(r.hits[0].doc_id, first);
  } else {
    CHECK(1);
  }
  if (!rc) coll_result_free(&r);
}

/* Search: exactly n hits, from documents ids[i] with scores[i] (+- tol). */
static void expect_hits(env *v, uint32_t cid, const coll_query *q, size_t n,
                        const char *const *ids, const double *scores,
                        double tol) {
  coll_result r;
  ctxd_error e;
  CHECK_EQ_INT(coll_search(v->cs, cid, q, &r, &e), 0);
  CHECK_EQ_INT(r.n, n);
  for (size_t i = 0; i < n && i < r.n; i++) {
    CHECK_EQ_STR(r.hits[i].doc_id, ids[i]);
    CHECK(fabs(r.hits[i].score - scores[i]) < tol);
  }
  coll_result_free(&r);
}

/* Create collection `name` with an embedder and spec; returns its cid. */
static uint32_t mkcoll(env *v, const char *name, const char *emb,
                       vindex_metric metric, const char *spec) {
  coll_config c;
  memset(&c, 0, sizeof c);
  snprintf(c.name, sizeof c.name, "%s", name);
  snprintf(c.embedder, sizeof c.embedder, "%s", emb);
  c.metric = metric;
  snprintf(c.index_spec, sizeof c.index_spec, "%s", spec);
  c.chunk_max_tokens = 64;
  ctxd_error e;
  int rc = coll_create(v->cs, &c, &e);
  if (rc) fprintf(stderr, "coll_create %s: %s\n", name, e.msg);
  CHECK_EQ_INT(rc, 0);
  uint32_t cid = 0;
  CHECK_EQ_INT(coll_resolve(v->cs, name, 0, &cid, NULL, &e), 0);
  return cid;
}

/* Put a document whose chunks are its lines; vectors from the collection's
 * embedder, or `vecs` (n_lines x dim) when given. */
static int put_doc(env *v, uint32_t cid, const char *id, const char *text,
                   const store_kv *meta, size_t n_meta, const float *vecs,
                   uint32_t dim) {
  chunk_span sp[64];
  size_t n = 0, len = strlen(text), start = 0;
  for (size_t i = 0; i <= len && n < 64; i++) {
    if (i == len || text[i] == '\n') {
      if (i > start || i == len) {
        size_t end = i < len ? i + 1 : i;
        if (end > start) sp[n++] = (chunk_span){start, end, 1};
      }
      start = i + 1;
    }
  }
  ctxd_error e;
  float *own = NULL;
  if (!vecs) {
    const embedder *m = coll_embedder(v->cs, cid);
    dim = m ? m->dim : 1;
    own = calloc(n ? n * dim : 1, sizeof(float));
    int rc = coll_embed_chunks(v->cs, cid, text, sp, n, own, &e);
    if (rc) {
      fprintf(stderr, "embed: %s\n", e.msg);
      free(own);
      return rc;
    }
    vecs = own;
  }
  int rc = test_put_doc(v->st, cid, id, text, sp, n, meta, n_meta, vecs, dim);
  free(own);
  return rc;
}

static int del_doc(env *v, uint32_t cid, const char *id) {
  ctxd_error e;
  int deleted = 0;
  int rc = store_delete(v->st, cid, id, strlen(id), &deleted, NULL, &e);
  return rc ? rc : deleted ? 0 : -100;
}

static int sync_ok(env *v) {
  ctxd_error e;
  int rc = coll_sync(v->cs, &e);
  if (rc) fprintf(stderr, "coll_sync: %s\n", e.msg);
  return rc;
}

static coll_query text_query(const char *text, uint32_t k, int mode) {
  coll_query q;
  memset(&q, 0, sizeof q);
  q.text = text;
  q.text_len = strlen(text);
  q.k = k;
  q.mode = mode;
  return q;
}

/* Search and render hits as "id:ordinal:score\n" lines into buf. */
static int render(env *v, uint32_t cid, const coll_query *q, char *buf,
                  size_t cap) {
  coll_result r;
  ctxd_error e;
  int rc = coll_search(v->cs, cid, q, &r, &e);
  buf[0] = 0;
  if (rc) {
    fprintf(stderr, "search: %s\n", e.msg);
    return rc;
  }
  size_t off = 0;
  for (size_t i = 0; i < r.n && off < cap; i++)
    off += (size_t)snprintf(buf + off, cap - off, "%s:%u:%.5f\n",
                            r.hits[i].doc_id, r.hits[i].ordinal,
                            r.hits[i].score);
  coll_result_free(&r);
  return 0;
}

static int wait_for(env *v, const char *name, int (*pred)(const coll_info *)) {
  for (int i = 0; i < 3000; i++) {
    coll_info info;
    ctxd_error e;
    if (coll_info_get(v->cs, name, &info, &e) == 0 && pred(&info)) return 1;
    usleep(10000);
  }
  return 0;
}

/* ---- config -------------------------------------------------------------- */

static void test_config(void) {
  ctxd_error e;
  coll_config c, d;
  memset(&c, 0, sizeof c);
  snprintf(c.name, sizeof c.name, "papers-2.v1");
  snprintf(c.embedder, sizeof c.embedder, "hash:dim=32");
  c.metric = VINDEX_L2;
  snprintf(c.index_spec, sizeof c.index_spec, "HNSW16");
  c.chunk_max_tokens = 100;
  c.chunk_overlap_tokens = 10;
  CHECK_EQ_INT(coll_config_check(&c, &e), 0);
  CHECK_EQ_INT(c.dim, 32);
  CHECK(strncmp(c.embedder, "hash:dim=32,", 12) == 0); /* canonical form */
  char text[STORE_COLL_CONFIG_MAX + 1];
  coll_config_format(&c, text, sizeof text);
  CHECK_EQ_INT(coll_config_parse(text, &d, &e), 0);
  CHECK_EQ_STR(d.name, c.name);
  CHECK_EQ_STR(d.embedder, c.embedder);
  CHECK_EQ_STR(d.index_spec, "HNSW16");
  CHECK_EQ_INT(d.metric, VINDEX_L2);
  CHECK_EQ_INT(d.dim, 32);
  CHECK_EQ_INT(d.chunk_max_tokens, 100);
  CHECK_EQ_INT(d.chunk_overlap_tokens, 10);

  CHECK_EQ_INT(coll_config_parse("# comment\n\nembedder=none:dim=8\r\n"
                                 "metric=ip\nindex=Flat\nchunk_max_tokens=5\n",
                                 &d, &e),
               0);
  CHECK_EQ_INT(d.dim, 8);
  CHECK_EQ_INT(d.chunk_overlap_tokens, 0);
  CHECK_EQ_INT(coll_config_parse("embedder=none:dim=8\nmetric=ip\nindex=Flat\n"
                                 "chunk_max_tokens=5\ncolour=red\n",
                                 &d, &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "line 5") && strstr(e.msg, "colour"));
  CHECK_EQ_INT(coll_config_parse("embedder=none:dim=8\nmetric=ip\nmetric=l2\n"
                                 "index=Flat\nchunk_max_tokens=5\n",
                                 &d, &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "repeated"));
  CHECK_EQ_INT(coll_config_parse("embedder=none:dim=8\nmetric=ip\n"
                                 "chunk_max_tokens=5\n",
                                 &d, &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "no index"));
  CHECK_EQ_INT(coll_config_parse("embedder=none:dim=0\nmetric=ip\nindex=Flat\n"
                                 "chunk_max_tokens=5\n",
                                 &d, &e),
               CTXD_EINVAL);
  CHECK_EQ_INT(coll_config_parse("embedder=bert\nmetric=ip\nindex=Flat\n"
                                 "chunk_max_tokens=5\n",
                                 &d, &e),
               CTXD_EINVAL);
  CHECK_EQ_INT(coll_config_parse("embedder=none:dim=4\nmetric=cos\nindex=Flat\n"
                                 "chunk_max_tokens=5\n",
                                 &d, &e),
               CTXD_EINVAL);

  /* one bad field at a time: name, index spec, embedder, chunk sizes */
  static const struct {
    char field;
    const char *text;
    uint32_t max, overlap;
  } bad[] = {{'n', "bad name", 100, 10},    {'n', "", 100, 10},
             {'i', "NoSuchIndex12", 100, 10}, {'i', "IDMap,Flat", 100, 10},
             {'e', "hash:dim=3", 100, 10},  {'e', "hash:dims=32", 100, 10},
             {'-', "", 100, 100},           {'-', "", 0, 0}};
  coll_config b;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    b = c;
    char *dst = bad[i].field == 'n'   ? b.name
                : bad[i].field == 'i' ? b.index_spec
                : bad[i].field == 'e' ? b.embedder
                                      : NULL;
    if (dst) snprintf(dst, 64, "%s", bad[i].text);
    b.chunk_max_tokens = bad[i].max;
    b.chunk_overlap_tokens = bad[i].overlap;
    CHECK_EQ_INT(coll_config_check(&b, &e), CTXD_EINVAL);
  }
  b = c;
  snprintf(b.embedder, sizeof b.embedder, "none:dim=12");
  CHECK_EQ_INT(coll_config_check(&b, &e), 0);
  CHECK_EQ_INT(b.dim, 12);
  CHECK_EQ_STR(b.embedder, "none:dim=12");

  coll_config z;
  memset(&z, 0, sizeof z);
  coll_config_defaults(&z, &c);
  CHECK_EQ_STR(z.embedder, c.embedder);
  CHECK_EQ_STR(z.index_spec, "HNSW16");
  CHECK_EQ_INT(z.chunk_max_tokens, 100);
  CHECK_EQ_INT(z.chunk_overlap_tokens, 10);

  vindex_metric m;
  CHECK_EQ_INT(coll_metric_parse("l2", &m, &e), 0);
  CHECK_EQ_INT(m, VINDEX_L2);
  CHECK_EQ_INT(coll_metric_parse("L2", &m, &e), CTXD_EINVAL);
  CHECK_EQ_STR(coll_metric_name(VINDEX_IP), "ip");
}

/* ---- collections --------------------------------------------------------- */

static void test_collections(env *v) {
  ctxd_error e;
  uint32_t cid = 0, c2;
  coll_config cfg;
  CHECK_EQ_INT(coll_resolve(v->cs, "", 0, &cid, &cfg, &e), 0);
  CHECK_EQ_STR(cfg.name, "default");
  CHECK_EQ_INT(cfg.dim, 64);
  CHECK(coll_embedder(v->cs, cid) != NULL);
  uint32_t papers = mkcoll(v, "papers", "none:dim=4", VINDEX_L2, "Flat");
  CHECK(papers != cid);
  CHECK(coll_embedder(v->cs, papers) == NULL);
  coll_config c;
  memset(&c, 0, sizeof c);
  snprintf(c.name, sizeof c.name, "papers");
  snprintf(c.embedder, sizeof c.embedder, "hash");
  snprintf(c.index_spec, sizeof c.index_spec, "Flat");
  c.chunk_max_tokens = 10;
  CHECK_EQ_INT(coll_create(v->cs, &c, &e), CTXD_EEXIST);
  CHECK_EQ_INT(coll_resolve(v->cs, "nope", 0, &c2, NULL, &e), CTXD_ENOTFOUND);
  CHECK_EQ_INT(coll_resolve(v->cs, "bad/name", 1, &c2, NULL, &e), CTXD_EINVAL);
  CHECK_EQ_INT(coll_resolve(v->cs, "auto", 1, &c2, &cfg, &e), 0);
  CHECK_EQ_STR(cfg.name, "auto");
  CHECK_EQ_STR(cfg.index_spec, "Flat");
  uint32_t c3;
  CHECK_EQ_INT(coll_resolve(v->cs, "auto", 1, &c3, NULL, &e), 0);
  CHECK_EQ_INT(c3, c2);

  coll_info *all;
  size_t n;
  CHECK_EQ_INT(coll_info_list(v->cs, &all, &n, &e), 0);
  CHECK_EQ_INT(n, 3);
  if (n == 3) {
    CHECK_EQ_STR(all[0].config.name, "default");
    CHECK_EQ_STR(all[1].config.name, "papers");
    CHECK_EQ_STR(all[2].config.name, "auto");
    CHECK_EQ_INT(all[1].config.dim, 4);
    CHECK_EQ_INT(all[1].config.metric, VINDEX_L2);
    CHECK_EQ_INT(all[1].trained, 1);
    CHECK_EQ_INT(all[1].exact_until_trained, 0);
  }
  free(all);

  float vecs[8] = {1, 0, 0, 0, 0, 1, 0, 0};
  CHECK_EQ_INT(put_doc(v, papers, "p1", "one\ntwo", NULL, 0, vecs, 4), 0);
  CHECK_EQ_INT(sync_ok(v), 0);
  coll_info info;
  CHECK_EQ_INT(coll_info_get(v->cs, "papers", &info, &e), 0);
  CHECK_EQ_INT(info.documents, 1);
  CHECK_EQ_INT(info.chunks, 2);
  CHECK_EQ_INT(info.vectors, 2);
  CHECK_EQ_INT(info.indexed, 2);
  CHECK_EQ_INT(coll_embed_chunks(v->cs, papers, "x", NULL, 0, vecs, &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "takes client vectors"));

  uint64_t docs = 0;
  CHECK_EQ_INT(coll_drop(v->cs, "papers", &docs, &e), 0);
  CHECK_EQ_INT(docs, 1);
  CHECK_EQ_INT(coll_sync(v->cs, &e), 0);
  CHECK_EQ_INT(coll_resolve(v->cs, "papers", 0, &c2, NULL, &e), CTXD_ENOTFOUND);
  CHECK_EQ_INT(coll_drop(v->cs, "papers", &docs, &e), CTXD_ENOTFOUND);
  CHECK_EQ_INT(coll_info_get(v->cs, "papers", &info, &e), CTXD_ENOTFOUND);
  coll_query q = text_query("one", 1, COLL_MODE_LEXICAL);
  coll_result r;
  CHECK_EQ_INT(coll_search(v->cs, papers, &q, &r, &e), CTXD_ENOTFOUND);
  char path[400];
  index_file(v, papers, path, sizeof path);
  CHECK(access(path, F_OK) != 0);

  /* default can be dropped; it comes back on first use */
  CHECK_EQ_INT(coll_drop(v->cs, "default", &docs, &e), 0);
  CHECK_EQ_INT(coll_resolve(v->cs, "", 0, &c2, NULL, &e), CTXD_ENOTFOUND);
  CHECK_EQ_INT(coll_resolve(v->cs, "", 1, &c2, NULL, &e), 0);
  CHECK(c2 != cid);
}

/* ---- vector search ------------------------------------------------------- */

static const char *corpus[][2] = {
    {"astro",
     "The telescope observed a distant galaxy with bright spiral arms.\n"
     "Astronomers measured the redshift of the quasar near the cluster.\n"
     "Dark matter shapes how galaxies rotate at their outer edges.\n"},
    {"cook",
     "Knead the dough until it is smooth and elastic, then let it rise.\n"
     "Roast the vegetables with olive oil, garlic and rosemary.\n"
     "Simmer the tomato sauce slowly for an hour before serving.\n"},
    {"sail",
     "The sailors trimmed the mainsail as the wind shifted to the north.\n"
     "A storm forced the boat to anchor in a sheltered bay overnight.\n"},
    {"code",
     "The compiler reported an error about an undefined symbol.\n"
     "Unit tests caught the off by one bug in the parser loop.\n"},
};

static void put_corpus(env *v, uint32_t cid) {
  for (size_t i = 0; i < sizeof corpus / sizeof *corpus; i++)
    CHECK_EQ_INT(put_doc(v, cid, corpus[i][0], corpus[i][1], NULL, 0, NULL, 0),
                 0);
}

static void test_vector_search(env *v) {
  ctxd_error e;
  uint32_t cid = default_cid(v);
  put_corpus(v, cid);
  CHECK_EQ_INT(sync_ok(v), 0);
  coll_query q = text_query(
      "Roast the vegetables with olive oil, garlic and rosemary.\n", 3,
      COLL_MODE_VECTOR);
  q.with_text = 1;
  coll_result r;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), 0);
  CHECK_EQ_INT(r.n, 3);
  if (r.n == 3) {
    CHECK_EQ_STR(r.hits[0].doc_id, "cook");
    CHECK_EQ_INT(r.hits[0].ordinal, 1);
    CHECK(fabsf(r.hits[0].score - 1.0f) < 1e-4f);
    CHECK(r.hits[1].score <= r.hits[0].score);
    CHECK(r.hits[2].score <= r.hits[1].score);
    CHECK_EQ_STR(r.hits[0].text,
                 "Roast the vegetables with olive oil, garlic and rosemary.\n");
    CHECK_EQ_INT(r.hits[0].span.byte_start,
                 strchr(corpus[1][1], '\n') + 1 - corpus[1][1]);
  }
  coll_result_free(&r);
  /* a query vector given directly */
  float qv[64];
  const char *t = "storm boat anchor bay";
  size_t tl = strlen(t);
  CHECK_EQ_INT(embed_texts(coll_embedder(v->cs, cid), &t, &tl, 1, qv, &e), 0);
  coll_query q2 = vec_query(qv, 64, 1);
  CHECK_EQ_INT(coll_search(v->cs, cid, &q2, &r, &e), 0);
  CHECK_EQ_INT(r.n, 1);
  if (r.n) {
    CHECK_EQ_STR(r.hits[0].doc_id, "sail");
    CHECK_EQ_INT(r.hits[0].ordinal, 1);
    CHECK(r.hits[0].text == NULL);
  }
  coll_result_free(&r);
  /* k beyond the collection gives all chunks */
  q.k = 100;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), 0);
  CHECK_EQ_INT(r.n, 10);
  coll_result_free(&r);

  /* l2: minus the Euclidean distance */
  uint32_t l2 = mkcoll(v, "l2", "none:dim=2", VINDEX_L2, "Flat");
  float pts[] = {0, 0, 3, 4, 1, 1};
  CHECK_EQ_INT(put_doc(v, l2, "pts", "a\nb\nc", NULL, 0, pts, 2), 0);
  CHECK_EQ_INT(sync_ok(v), 0);
  float origin[2] = {0, 0};
  coll_query q3 = vec_query(origin, 2, 3);
  CHECK_EQ_INT(coll_search(v->cs, l2, &q3, &r, &e), 0);
  CHECK_EQ_INT(r.n, 3);
  if (r.n == 3) {
    CHECK_EQ_INT(r.hits[0].ordinal, 0);
    CHECK(fabsf(r.hits[0].score) < 1e-6f);
    CHECK_EQ_INT(r.hits[1].ordinal, 2);
    CHECK(fabsf(r.hits[1].score + sqrtf(2)) < 1e-5f);
    CHECK_EQ_INT(r.hits[2].ordinal, 1);
    CHECK(fabsf(r.hits[2].score + 5) < 1e-5f);
  }
  coll_result_free(&r);
  /* ip on client vectors: normalised, so the score is the cosine */
  uint32_t ipc = mkcoll(v, "ipc", "none:dim=2", VINDEX_IP, "Flat");
  float raw[] = {10, 0, 3, 4};
  CHECK_EQ_INT(put_doc(v, ipc, "raw", "a\nb", NULL, 0, raw, 2), 0);
  CHECK_EQ_INT(sync_ok(v), 0);
  float qx[2] = {2, 0};
  q3.vector = qx;
  q3.k = 2;
  CHECK_EQ_INT(coll_search(v->cs, ipc, &q3, &r, &e), 0);
  CHECK_EQ_INT(r.n, 2);
  if (r.n == 2) {
    CHECK(fabsf(r.hits[0].score - 1.0f) < 1e-5f);
    CHECK(fabsf(r.hits[1].score - 0.6f) < 1e-5f);
  }
  coll_result_free(&r);
  float zero[2] = {0, 0};
  q3.vector = zero;
  CHECK_EQ_INT(coll_search(v->cs, ipc, &q3, &r, &e), 0);
  CHECK_EQ_INT(r.n, 0);
  coll_result_free(&r);
}

/* ---- lexical ------------------------------------------------------------- */

/* BM25 by hand: idf = ln(1 + (N - df + 0.5) / (df + 0.5)),
 * tf part = tf (k1 + 1) / (tf + k1 (1 - b + b dl / avgdl)). */
static double bm25(int N, int df, int tf, int dl, double avgdl) {
  double k1 = 1.2, b = 0.75;
  return log(1 + (N - df + 0.5) / (df + 0.5)) * tf * (k1 + 1) /
         (tf + k1 * (1 - b + b * dl / avgdl));
}

static void test_lexical(env *v) {
  ctxd_error e;
  uint32_t cid = mkcoll(v, "lex", "hash:dim=32", VINDEX_IP, "Flat");
  CHECK_EQ_INT(put_doc(v, cid, "d1", "Apple banana", NULL, 0, NULL, 0), 0);
  CHECK_EQ_INT(put_doc(v, cid, "d2", "apple APPLE cherry", NULL, 0, NULL, 0),
               0);
  CHECK_EQ_INT(
      put_doc(v, cid, "d3", "banana cherry cherry durian", NULL, 0, NULL, 0),
      0);
  CHECK_EQ_INT(put_doc(v, cid, "d4", "elderberry", NULL, 0, NULL, 0), 0);
  CHECK_EQ_INT(sync_ok(v), 0);
  /* N = 4 chunks, lengths 2, 3, 4, 1: avgdl = 2.5; apple df 2, cherry df 2 */
  double s1 = bm25(4, 2, 1, 2, 2.5);
  double s2 = bm25(4, 2, 2, 3, 2.5) + bm25(4, 2, 1, 3, 2.5);
  double s3 = bm25(4, 2, 2, 4, 2.5);
  CHECK(s2 > s3 && s3 > s1); /* 1.543, 0.816, 0.755 */
  coll_query q = text_query("apple cherry apple", 10, COLL_MODE_LEXICAL);
  const char *order[] = {"d2", "d3", "d1"};
  double scores[] = {s2, s3, s1};
  expect_hits(v, cid, &q, 3, order, scores, 1e-4);
  coll_result r;
  q = text_query("zucchini", 10, COLL_MODE_LEXICAL);
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), 0);
  CHECK_EQ_INT(r.n, 0);
  coll_result_free(&r);
  q = text_query("!!! ...", 10, COLL_MODE_LEXICAL); /* no terms */
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), 0);
  CHECK_EQ_INT(r.n, 0);
  coll_result_free(&r);
  /* k cuts the list; equal scores order by label (insertion order here) */
  CHECK_EQ_INT(put_doc(v, cid, "d5", "fig", NULL, 0, NULL, 0), 0);
  CHECK_EQ_INT(put_doc(v, cid, "d6", "fig", NULL, 0, NULL, 0), 0);
  CHECK_EQ_INT(sync_ok(v), 0);
  q = text_query("fig", 1, COLL_MODE_LEXICAL);
  expect_top(v, cid, &q, 1, "d5");
}

/* ---- hybrid -------------------------------------------------------------- */

static void test_hybrid(env *v) {
  ctxd_error e;
  uint32_t cid = mkcoll(v, "hy", "none:dim=2", VINDEX_IP, "Flat");
  /* vector ranks for query (1, 0): A (cos 1), B (0.8), C (0);
   * lexical ranks for "zeta": C (tf 2), B (tf 1); A has no zeta. */
  float va[] = {1, 0}, vb[] = {0.8f, 0.6f}, vc[] = {0, 1};
  CHECK_EQ_INT(put_doc(v, cid, "A", "alpha filler", NULL, 0, va, 2), 0);
  CHECK_EQ_INT(put_doc(v, cid, "B", "zeta filler", NULL, 0, vb, 2), 0);
  CHECK_EQ_INT(put_doc(v, cid, "C", "zeta zeta", NULL, 0, vc, 2), 0);
  CHECK_EQ_INT(sync_ok(v), 0);
  float qv[2] = {1, 0};
  coll_query q = text_query("zeta", 3, COLL_MODE_HYBRID);
  q.vector = qv;
  q.dim = 2;
  /* C: 1/(60+3) + 1/(60+1) = 0.0322665; B: 2/(60+2) = 0.0322581;
   * A: 1/61 = 0.0163934 */
  const char *order[] = {"C", "B", "A"};
  double rrf[] = {1.0 / 63 + 1.0 / 61, 2.0 / 62, 1.0 / 61};
  expect_hits(v, cid, &q, 3, order, rrf, 1e-6);
  coll_result r;
  q.k = 1;
  expect_top(v, cid, &q, 1, "C");
  /* text alone in a collection without an embedder */
  q.vector = NULL;
  q.dim = 0;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), CTXD_EPRECOND);
  q.mode = COLL_MODE_VECTOR;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), CTXD_EPRECOND);
  CHECK(strstr(e.msg, "hy") != NULL);
  q.mode = COLL_MODE_LEXICAL;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), 0);
  CHECK_EQ_INT(r.n, 1);
  coll_result_free(&r);
}

/* ---- idf ------------------------------------------------------------------- */

/* "the" in four documents of five, "cat" in one: the query "the the cat"
 * leans to "the" without idf (A "the dog" first) and to "cat" with it
 * (B "cat" first: idf(the) = ln(1 + 1.5/4.5) = 0.29, idf(cat) = ln 4). */
static void put_idf_docs(env *v, uint32_t cid) {
  static const char *const docs[][2] = {{"A", "the dog"},  {"B", "cat"},
                                        {"C", "the fish"}, {"D", "the bird"},
                                        {"E", "the cow"}};
  for (size_t i = 0; i < 5; i++)
    CHECK_EQ_INT(put_doc(v, cid, docs[i][0], docs[i][1], NULL, 0, NULL, 0), 0);
}

static float max_diff(const float *a, const float *b, size_t n) {
  float d = 0;
  for (size_t i = 0; i < n; i++) d = fmaxf(d, fabsf(a[i] - b[i]));
  return d;
}

static void test_idf(env *v) {
  ctxd_error e;
  uint32_t none = mkcoll(v, "idf-none", "hash:dim=256,idf=none", VINDEX_IP,
                         "Flat");
  uint32_t query = mkcoll(v, "idf-query", "hash:dim=256,idf=query",
                          VINDEX_IP, "Flat");
  uint32_t all = mkcoll(v, "idf-all", "hash:dim=256,idf=all", VINDEX_IP,
                        "Flat");
  coll_config cfg;
  CHECK_EQ_INT(coll_resolve(v->cs, "idf-query", 0, NULL, &cfg, &e), 0);
  CHECK(strstr(cfg.embedder, "idf=query") != NULL);
  put_idf_docs(v, none);
  put_idf_docs(v, query);
  CHECK_EQ_INT(sync_ok(v), 0);
  coll_query q = text_query("the the cat", 1, COLL_MODE_VECTOR);
  expect_top(v, none, &q, 1, "A");
  expect_top(v, query, &q, 1, "B");
  /* idf=query stores plain vectors: equal to idf=none's */
  chunk_span sp = {0, 7, 1};
  float a[256], b[256], c[256];
  CHECK_EQ_INT(coll_embed_chunks(v->cs, none, "the dog", &sp, 1, a, &e), 0);
  CHECK_EQ_INT(coll_embed_chunks(v->cs, query, "the dog", &sp, 1, b, &e), 0);
  CHECK(max_diff(a, b, 256) == 0);
  /* idf=all weighs stored chunks by the statistics at embedding time: with
   * nothing stored yet every term weighs the same, afterwards not */
  CHECK_EQ_INT(coll_embed_chunks(v->cs, all, "the dog", &sp, 1, c, &e), 0);
  CHECK(max_diff(a, c, 256) < 1e-6f);
  put_idf_docs(v, all);
  CHECK_EQ_INT(sync_ok(v), 0);
  CHECK_EQ_INT(coll_embed_chunks(v->cs, all, "the dog", &sp, 1, c, &e), 0);
  CHECK(max_diff(a, c, 256) > 1e-2f);
  expect_top(v, all, &q, 1, "B");
}

/* ---- delete / replace ---------------------------------------------------- */

static int has_doc(env *v, uint32_t cid, const char *text, int mode,
                   const char *id) {
  coll_query q = text_query(text, 10, mode);
  coll_result r;
  ctxd_error e;
  if (coll_search(v->cs, cid, &q, &r, &e)) return -1;
  int found = 0;
  for (size_t i = 0; i < r.n; i++)
    if (strcmp(r.hits[i].doc_id, id) == 0) found = 1;
  coll_result_free(&r);
  return found;
}

static void test_delete_replace(env *v) {
  ctxd_error e;
  uint32_t cid = default_cid(v);
  put_corpus(v, cid);
  CHECK_EQ_INT(put_doc(v, cid, "x", "quick brown fox jumps\nlazy dog sleeps",
                       NULL, 0, NULL, 0),
               0);
  CHECK_EQ_INT(sync_ok(v), 0);
  CHECK_EQ_INT(has_doc(v, cid, "quick brown fox", COLL_MODE_VECTOR, "x"), 1);
  CHECK_EQ_INT(has_doc(v, cid, "quick brown fox", COLL_MODE_LEXICAL, "x"), 1);
  /* replace with fewer chunks and other words */
  CHECK_EQ_INT(put_doc(v, cid, "x", "lorem ipsum dolor", NULL, 0, NULL, 0), 0);
  CHECK_EQ_INT(sync_ok(v), 0);
  CHECK_EQ_INT(has_doc(v, cid, "lazy dog sleeps", COLL_MODE_LEXICAL, "x"), 0);
  CHECK_EQ_INT(has_doc(v, cid, "lorem ipsum", COLL_MODE_LEXICAL, "x"), 1);
  coll_query q = text_query("lazy dog sleeps", 20, COLL_MODE_VECTOR);
  coll_result r;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), 0);
  int x_hits = 0;
  for (size_t i = 0; i < r.n; i++)
    if (!strcmp(r.hits[i].doc_id, "x")) {
      x_hits++;
      CHECK_EQ_INT(r.hits[i].ordinal, 0);
    }
  CHECK_EQ_INT(x_hits, 1);
  CHECK_EQ_INT(r.n, 11); /* 10 corpus chunks + x's one */
  coll_result_free(&r);
  coll_info info;
  CHECK_EQ_INT(coll_info_get(v->cs, "default", &info, &e), 0);
  CHECK_EQ_INT(info.indexed, 11);
  /* delete */
  CHECK_EQ_INT(del_doc(v, cid, "x"), 0);
  CHECK_EQ_INT(sync_ok(v), 0);
  CHECK_EQ_INT(has_doc(v, cid, "lorem ipsum", COLL_MODE_VECTOR, "x"), 0);
  CHECK_EQ_INT(has_doc(v, cid, "lorem ipsum", COLL_MODE_LEXICAL, "x"), 0);
  CHECK_EQ_INT(has_doc(v, cid, "lorem ipsum", COLL_MODE_HYBRID, "x"), 0);
  /* deleted but not yet synced: the vanished label is skipped */
  CHECK_EQ_INT(del_doc(v, cid, "code"), 0);
  q = text_query("compiler error undefined symbol", 10, COLL_MODE_VECTOR);
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), 0);
  CHECK_EQ_INT(r.n, 8);
  for (size_t i = 0; i < r.n; i++) CHECK(strcmp(r.hits[i].doc_id, "code"));
  coll_result_free(&r);
  CHECK_EQ_INT(sync_ok(v), 0);
  CHECK_EQ_INT(coll_info_get(v->cs, "default", &info, &e), 0);
  CHECK_EQ_INT(info.indexed, 8);
}

/* ---- persistence and replay ---------------------------------------------- */

static const char *probe_texts[] = {
    "galaxy redshift quasar", "olive oil garlic", "storm anchor bay",
    "compiler parser bug", "tomato sauce dough", "zz-unknown words"};

/* Render a fixed set of queries in every mode. */
static void render_all(env *v, uint32_t cid, char *buf, size_t cap) {
  size_t off = 0;
  buf[0] = 0;
  for (size_t i = 0; i < sizeof probe_texts / sizeof *probe_texts; i++)
    for (int mode = 0; mode < 3; mode++) {
      /* deep enough for every chunk: equal scores then order by label */
      coll_query q = text_query(probe_texts[i], 50, mode);
      char one[4096];
      CHECK_EQ_INT(render(v, cid, &q, one, sizeof one), 0);
      off += (size_t)snprintf(buf + off, off < cap ? cap - off : 0, "%s|%d\n%s",
                              probe_texts[i], mode, one);
    }
}

static void test_persistence(env *v) {
  ctxd_error e;
  uint32_t cid = default_cid(v);
  uint32_t hn = mkcoll(v, "hnsw", "hash:dim=64", VINDEX_IP, "HNSW16");
  put_corpus(v, cid);
  put_corpus(v, hn);
  CHECK_EQ_INT(sync_ok(v), 0);
  static char a[32768], b[32768], c[32768], d[32768];
  render_all(v, cid, a, sizeof a);
  render_all(v, hn, c, sizeof c);
  CHECK(strstr(a, "cook:1:") != NULL);
  env_close(v, 1);

  if (!reopen(v)) return;
  CHECK(!log_has("rebuilding")); /* both loaded from their files */
  render_all(v, cid, b, sizeof b);
  render_all(v, hn, d, sizeof d);
  CHECK_EQ_STR(b, a);
  CHECK_EQ_STR(d, c);
  coll_info info;
  CHECK_EQ_INT(coll_info_get(v->cs, "default", &info, &e), 0);
  CHECK(info.covered_seq > 0);
  CHECK_EQ_INT(info.indexed, 10);
  env_close(v, 1);

  /* a saved file read on its own (tools): header and index */
  char path[400];
  index_file(v, hn, path, sizeof path);
  vindex *vi = NULL;
  coll_file_info fi;
  CHECK_EQ_INT(coll_file_read(path, &vi, &fi, &e), 0);
  CHECK_EQ_INT(fi.cid, hn);
  CHECK_EQ_INT(fi.dim, 64);
  CHECK_EQ_STR(fi.spec, "HNSW16");
  CHECK_EQ_INT(fi.covered_seq > 0, 1);
  vindex_info vinf;
  if (vi) {
    vindex_get_info(vi, &vinf);
    CHECK_EQ_INT(vinf.live, 10);
    vindex_free(vi);
  }
  CHECK_EQ_INT(coll_file_read("/nonexistent/1.vindex", &vi, NULL, &e),
               CTXD_ENOTFOUND);

  /* a damaged file is rebuilt from the store, with a message */
  index_file(v, cid, path, sizeof path);
  FILE *f = fopen(path, "r+b");
  CHECK(f != NULL);
  if (f) {
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    CHECK(ftruncate(fileno(f), len / 2) == 0);
    fclose(f);
  }
  CHECK_EQ_INT(coll_file_read(path, &vi, NULL, &e), CTXD_EIO);
  CHECK(strncmp(e.msg, path, strlen(path)) == 0);
  if (!reopen(v)) return;
  CHECK(log_has("rebuilding index from the store collection=default"));
  render_all(v, cid, b, sizeof b);
  CHECK_EQ_STR(b, a);
}

static void test_crash_replay(env *v) {
  ctxd_error e;
  uint32_t cid = default_cid(v);
  uint32_t idle = mkcoll(v, "idle", "hash:dim=32", VINDEX_IP, "Flat");
  CHECK_EQ_INT(put_doc(v, idle, "i1", "idle words here", NULL, 0, NULL, 0), 0);
  put_corpus(v, cid);
  CHECK_EQ_INT(sync_ok(v), 0);
  CHECK_EQ_INT(coll_save_all(v->cs, &e), 0);
  /* the log is trimmed past what the files cover */
  store_change ch;
  size_t got;
  CHECK_EQ_INT(store_changes_read(v->st, 0, 1, &ch, &got, &e), 0);
  CHECK_EQ_INT(got, 0);
  /* more changes, only synced, and a second save that leaves `idle`'s file
   * as it was (the manifest records it clean) */
  CHECK_EQ_INT(put_doc(v, cid, "x", "lorem ipsum dolor\nsit amet", NULL, 0,
                       NULL, 0),
               0);
  CHECK_EQ_INT(sync_ok(v), 0);
  CHECK_EQ_INT(coll_save_all(v->cs, &e), 0);
  coll_info iinfo;
  CHECK_EQ_INT(coll_info_get(v->cs, "idle", &iinfo, &e), 0);
  uint64_t idle_seq = iinfo.covered_seq;
  CHECK_EQ_INT(put_doc(v, cid, "astro", "galaxy redshift quasar replaced",
                       NULL, 0, NULL, 0),
               0);
  CHECK_EQ_INT(del_doc(v, cid, "sail"), 0);
  CHECK_EQ_INT(put_doc(v, cid, "new", "olive oil garlic storm anchor", NULL, 0,
                       NULL, 0),
               0);
  CHECK_EQ_INT(del_doc(v, cid, "x"), 0);
  CHECK_EQ_INT(sync_ok(v), 0);
  static char a[32768], b[32768], c[32768];
  render_all(v, cid, a, sizeof a);
  CHECK(strstr(a, "sail:") == NULL);
  CHECK(strstr(a, "new:") != NULL);
  env_close(v, 0); /* crash: nothing saved */

  if (!reopen(v)) return;
  CHECK(!log_has("rebuilding")); /* files + log replay, idle included */
  render_all(v, cid, b, sizeof b);
  CHECK_EQ_STR(b, a);
  coll_info dinfo;
  CHECK_EQ_INT(coll_info_get(v->cs, "default", &dinfo, &e), 0);
  CHECK_EQ_INT(dinfo.indexed, dinfo.vectors); /* no duplicate, no leftover */
  CHECK_EQ_INT(coll_info_get(v->cs, "idle", &iinfo, &e), 0);
  CHECK_EQ_INT(iinfo.covered_seq, idle_seq);
  CHECK_EQ_INT(iinfo.indexed, 1);
  env_close(v, 0);

  /* the same state rebuilt from LMDB alone gives identical results */
  char path[400];
  index_file(v, cid, path, sizeof path);
  CHECK_EQ_INT(unlink(path), 0);
  if (!reopen(v)) return;
  CHECK(log_has("rebuilding index from the store collection=default"));
  render_all(v, cid, c, sizeof c);
  CHECK_EQ_STR(c, a);
}

/* ---- training, masking, rebuilds ----------------------------------------- */

static uint32_t rng_state = 12345;
static float frand(void) {
  rng_state = rng_state * 1103515245u + 12345u;
  return (float)((rng_state >> 8) & 0xffff) / 65536.0f - 0.5f;
}

/* n random vectors of dim 8 around 8 cluster centres. */
static void make_vecs(float *x, size_t n) {
  float centres[8][8];
  uint32_t saved = rng_state;
  rng_state = 777;
  for (int c = 0; c < 8; c++)
    for (int d = 0; d < 8; d++) centres[c][d] = frand() * 10;
  rng_state = saved;
  for (size_t i = 0; i < n; i++)
    for (int d = 0; d < 8; d++) x[i * 8 + d] = centres[i % 8][d] + frand();
}

static int is_trained(const coll_info *i) {
  return i->trained && !i->exact_until_trained && !i->rebuilding;
}
static int not_rebuilding(const coll_info *i) { return !i->rebuilding; }
static int no_masked(const coll_info *i) {
  return !i->rebuilding && i->masked == 0;
}

/* Put n one-chunk documents "<prefix><i>" with the given vectors. */
static void put_vec_docs(env *v, uint32_t cid, const char *prefix,
                         const float *x, size_t from, size_t n) {
  for (size_t i = from; i < from + n; i++) {
    char id[32];
    snprintf(id, sizeof id, "%s%zu", prefix, i);
    CHECK_EQ_INT(put_doc(v, cid, id, "v", NULL, 0, x + i * 8, 8), 0);
  }
}

/* How many of vectors [from, from + n) find their own document first. */
static size_t self_found(env *v, uint32_t cid, const char *prefix,
                         const float *x, size_t from, size_t n,
                         uint32_t nprobe) {
  size_t ok = 0;
  for (size_t i = from; i < from + n; i++) {
    coll_query q = vec_query(x + i * 8, 8, 1);
    q.nprobe = nprobe;
    coll_result r;
    ctxd_error e;
    if (coll_search(v->cs, cid, &q, &r, &e)) continue;
    char id[32];
    snprintf(id, sizeof id, "%s%zu", prefix, i);
    if (r.n == 1 && !strcmp(r.hits[0].doc_id, id)) ok++;
    coll_result_free(&r);
  }
  return ok;
}

static void test_ivf_training(env *v) {
  ctxd_error e;
  uint32_t cid = mkcoll(v, "ivf", "none:dim=8", VINDEX_L2, "IVF4,Flat");
  coll_info info;
  CHECK_EQ_INT(coll_info_get(v->cs, "ivf", &info, &e), 0);
  CHECK_EQ_INT(info.exact_until_trained, 1);
  CHECK_EQ_INT(info.trained, 0);
  CHECK(info.min_train >= 4);
  size_t mt = info.min_train, n = mt + 40;
  float *x = malloc(n * 8 * sizeof(float));
  make_vecs(x, n);
  put_vec_docs(v, cid, "v", x, 0, mt - 1);
  CHECK_EQ_INT(sync_ok(v), 0);
  usleep(50000);
  CHECK_EQ_INT(coll_info_get(v->cs, "ivf", &info, &e), 0);
  CHECK_EQ_INT(info.exact_until_trained, 1); /* one short */
  CHECK_EQ_INT(info.indexed, mt - 1);
  CHECK_EQ_INT(self_found(v, cid, "v", x, 0, mt - 1, 0), mt - 1); /* exact */
  put_vec_docs(v, cid, "v", x, mt - 1, n - (mt - 1));
  CHECK_EQ_INT(sync_ok(v), 0);
  CHECK(wait_for(v, "ivf", is_trained));
  CHECK_EQ_INT(coll_info_get(v->cs, "ivf", &info, &e), 0);
  CHECK_EQ_INT(info.indexed, n);
  CHECK_EQ_INT(info.rebuild_error[0], 0);
  /* every list probed: exact again; one list: still most */
  CHECK_EQ_INT(self_found(v, cid, "v", x, 0, n, 4), n);
  CHECK(self_found(v, cid, "v", x, 0, n, 1) >= n * 9 / 10);
  /* trained IVF removes for real */
  CHECK_EQ_INT(del_doc(v, cid, "v0"), 0);
  CHECK_EQ_INT(sync_ok(v), 0);
  CHECK_EQ_INT(coll_info_get(v->cs, "ivf", &info, &e), 0);
  CHECK_EQ_INT(info.indexed, n - 1);
  CHECK_EQ_INT(self_found(v, cid, "v", x, 0, 1, 4), 0);
  env_close(v, 1);
  if (env_open(v)) {
    CHECK(0);
    free(x);
    return;
  }
  CHECK_EQ_INT(coll_info_get(v->cs, "ivf", &info, &e), 0);
  CHECK_EQ_INT(info.trained, 1);
  CHECK_EQ_INT(info.indexed, n - 1);
  CHECK_EQ_INT(self_found(v, cid, "v", x, 1, n - 1, 4), n - 1);
  CHECK_EQ_INT(self_found(v, cid, "v", x, 0, 1, 4), 0);
  env_close(v, 1);
  free(x);
}

static void test_hnsw_masking(env *v) {
  ctxd_error e;
  uint32_t cid = mkcoll(v, "hn", "none:dim=8", VINDEX_L2, "HNSW16");
  size_t n = 40;
  float x[40 * 8];
  make_vecs(x, n);
  put_vec_docs(v, cid, "h", x, 0, n);
  CHECK_EQ_INT(sync_ok(v), 0);
  /* 8 of 40 masked = 20%: below the 25% threshold */
  for (int i = 0; i < 8; i++) {
    char id[16];
    snprintf(id, sizeof id, "h%d", i);
    CHECK_EQ_INT(del_doc(v, cid, id), 0);
  }
  CHECK_EQ_INT(sync_ok(v), 0);
  coll_info info;
  CHECK_EQ_INT(coll_info_get(v->cs, "hn", &info, &e), 0);
  CHECK_EQ_INT(info.masked, 8);
  CHECK_EQ_INT(info.indexed, 32);
  CHECK_EQ_INT(info.rebuilding, 0);
  CHECK_EQ_INT(self_found(v, cid, "h", x, 0, 8, 0), 0);
  /* 3 more: 11 of 40 > 25%: rebuilt in the background */
  for (int i = 8; i < 11; i++) {
    char id[16];
    snprintf(id, sizeof id, "h%d", i);
    CHECK_EQ_INT(del_doc(v, cid, id), 0);
  }
  CHECK_EQ_INT(sync_ok(v), 0);
  CHECK(wait_for(v, "hn", no_masked));
  CHECK_EQ_INT(coll_info_get(v->cs, "hn", &info, &e), 0);
  CHECK_EQ_INT(info.masked, 0);
  CHECK_EQ_INT(info.indexed, 29);
  CHECK_EQ_INT(self_found(v, cid, "h", x, 0, 11, 0), 0);
  /* the survivors are all found (ids h11.. match rows 11..) */
  size_t ok = 0;
  for (size_t i = 11; i < n; i++) {
    coll_query q = vec_query(x + i * 8, 8, 1);
    q.ef_search = 64;
    coll_result r;
    if (coll_search(v->cs, cid, &q, &r, &e) == 0) {
      char id[16];
      snprintf(id, sizeof id, "h%zu", i);
      ok += r.n == 1 && !strcmp(r.hits[0].doc_id, id);
      coll_result_free(&r);
    }
  }
  CHECK_EQ_INT(ok, n - 11);
}

static void test_rebuild_start(env *v) {
  ctxd_error e;
  uint32_t cid = mkcoll(v, "rb", "none:dim=8", VINDEX_L2, "HNSW16");
  size_t n = 3000;
  float *x = malloc(n * 8 * sizeof(float));
  make_vecs(x, n);
  /* one document with many chunks keeps this quick */
  for (size_t d = 0; d < n / 50; d++) {
    char id[24], text[200];
    snprintf(id, sizeof id, "r%zu", d);
    size_t off = 0;
    for (int c = 0; c < 50; c++) off += (size_t)snprintf(text + off, 4, "w\n");
    text[off - 1] = 0;
    CHECK_EQ_INT(put_doc(v, cid, id, text, NULL, 0, x + d * 50 * 8, 8), 0);
  }
  CHECK_EQ_INT(sync_ok(v), 0);
  CHECK_EQ_INT(coll_rebuild_start(v->cs, "rb", &e), 0);
  CHECK_EQ_INT(coll_rebuild_start(v->cs, "rb", &e), CTXD_EBUSY);
  CHECK(strstr(e.msg, "already running") != NULL);
  CHECK_EQ_INT(coll_rebuild_start(v->cs, "none-such", &e), CTXD_ENOTFOUND);
  /* writes during the rebuild are caught up before the switch */
  /* inside the data: HNSW may not reach an outlier (its reverse links get
   * pruned), which is no test of the catch-up */
  float extra[8];
  for (int d = 0; d < 8; d++) extra[d] = x[1000 * 8 + d] + 0.01f;
  CHECK_EQ_INT(put_doc(v, cid, "extra", "e", NULL, 0, extra, 8), 0);
  CHECK_EQ_INT(del_doc(v, cid, "r0"), 0);
  CHECK_EQ_INT(sync_ok(v), 0);
  CHECK(wait_for(v, "rb", not_rebuilding));
  coll_info info;
  CHECK_EQ_INT(coll_info_get(v->cs, "rb", &info, &e), 0);
  CHECK_EQ_INT(info.rebuild_error[0], 0);
  CHECK(info.rebuild_total >= n - 50);
  CHECK_EQ_INT(info.rebuild_done, info.rebuild_total);
  CHECK_EQ_INT(info.indexed, n - 50 + 1);
  /* r0 was deleted before the rebuild's snapshot, or after and masked */
  CHECK(info.masked == 0 || info.masked == 50);
  coll_query q = vec_query(extra, 8, 1);
  coll_result r;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), 0);
  CHECK(r.n == 1 && !strcmp(r.hits[0].doc_id, "extra"));
  coll_result_free(&r);
  q.vector = x; /* r0's first chunk: deleted */
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), 0);
  CHECK(r.n == 1 && strcmp(r.hits[0].doc_id, "r0") != 0);
  coll_result_free(&r);
  env_close(v, 1);
  free(x);
}

/* ---- filters ------------------------------------------------------------- */

static void test_filters(env *v) {
  ctxd_error e;
  uint32_t cid = default_cid(v);
  store_kv en = {"lang", 4, "en", 2}, fr = {"lang", 4, "fr", 2};
  store_kv topic = {"topic", 5, "food", 4};
  store_kv m1[] = {en}, m2[] = {fr, topic}, m3[] = {en, topic};
  CHECK_EQ_INT(put_doc(v, cid, "a", "bread butter jam\nbread crumbs", m1, 1,
                       NULL, 0),
               0);
  CHECK_EQ_INT(put_doc(v, cid, "b", "bread cheese wine", m2, 2, NULL, 0), 0);
  CHECK_EQ_INT(put_doc(v, cid, "c", "bread soup", m3, 2, NULL, 0), 0);
  CHECK_EQ_INT(put_doc(v, cid, "d", "no meta bread", NULL, 0, NULL, 0), 0);
  CHECK_EQ_INT(sync_ok(v), 0);
  for (int mode = 0; mode < 3; mode++) {
    coll_query q = text_query("bread", 10, mode);
    coll_result r;
    /* doc ids, one unknown */
    const char *ids[] = {"b", "zz", "c"};
    size_t lens[] = {1, 2, 1};
    q.doc_ids = ids;
    q.doc_id_lens = lens;
    q.n_doc_ids = 3;
    CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), 0);
    CHECK_EQ_INT(r.n, 2);
    for (size_t i = 0; i < r.n; i++)
      CHECK(!strcmp(r.hits[i].doc_id, "b") || !strcmp(r.hits[i].doc_id, "c"));
    coll_result_free(&r);
    /* metadata */
    q.n_doc_ids = 0;
    q.meta_eq = m1;
    q.n_meta_eq = 1;
    CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), 0);
    CHECK_EQ_INT(r.n, 3); /* a's two chunks, c */
    for (size_t i = 0; i < r.n; i++)
      CHECK(!strcmp(r.hits[i].doc_id, "a") || !strcmp(r.hits[i].doc_id, "c"));
    coll_result_free(&r);
    q.meta_eq = m3; /* lang=en and topic=food */
    q.n_meta_eq = 2;
    expect_top(v, cid, &q, 1, "c");
    /* both filters */
    q.doc_ids = ids;
    q.n_doc_ids = 3;
    q.meta_eq = &fr;
    q.n_meta_eq = 1;
    expect_top(v, cid, &q, 1, "b");
    /* nothing matches */
    q.n_doc_ids = 1;
    q.doc_ids = ids + 1;
    q.doc_id_lens = lens + 1;
    CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), 0);
    CHECK_EQ_INT(r.n, 0);
    coll_result_free(&r);
  }
  /* the doc-id filter's exact scan scores like the index */
  coll_query q = text_query("bread soup", 1, COLL_MODE_VECTOR);
  const char *ids[] = {"c"};
  size_t lens[] = {1};
  coll_result r1, r2;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r1, &e), 0);
  q.doc_ids = ids;
  q.doc_id_lens = lens;
  q.n_doc_ids = 1;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r2, &e), 0);
  CHECK(r1.n == 1 && r2.n == 1);
  if (r1.n == 1 && r2.n == 1) {
    CHECK_EQ_STR(r1.hits[0].doc_id, "c");
    CHECK(fabsf(r1.hits[0].score - r2.hits[0].score) < 1e-5f);
  }
  coll_result_free(&r1);
  coll_result_free(&r2);
}

/* ---- errors -------------------------------------------------------------- */

static void test_errors(env *v) {
  ctxd_error e;
  uint32_t cid = default_cid(v);
  put_corpus(v, cid);
  CHECK_EQ_INT(sync_ok(v), 0);
  coll_result r;
  float three[3] = {1, 2, 3};
  coll_query q = vec_query(three, 3, 5);
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), CTXD_EINVAL);
  CHECK_EQ_STR(e.msg, "query vector has 3 dimensions, collection default has 64");
  CHECK(r.n == 0 && r.mem == NULL);
  q = text_query("galaxy", 0, COLL_MODE_VECTOR);
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), CTXD_EINVAL);
  q.k = COLL_K_MAX + 1;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), CTXD_EINVAL);
  q.k = COLL_K_MAX;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), 0);
  CHECK_EQ_INT(r.n, 10);
  coll_result_free(&r);
  q.mode = 7;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), CTXD_EINVAL);
  q.mode = -1;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), CTXD_EINVAL);
  q = text_query("", 5, COLL_MODE_VECTOR);
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), CTXD_EINVAL);
  q = text_query("", 5, COLL_MODE_LEXICAL);
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), CTXD_EINVAL);
  q = text_query("galaxy", 5, COLL_MODE_VECTOR);
  CHECK_EQ_INT(coll_search(v->cs, 9999, &q, &r, &e), CTXD_ENOTFOUND);
  q.n_doc_ids = COLL_DOC_IDS_MAX + 1;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), CTXD_EINVAL);
  q.n_doc_ids = 0;
  q.n_meta_eq = COLL_META_EQ_MAX + 1;
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), CTXD_EINVAL);
  /* too many distinct query terms */
  size_t big = (COLL_QUERY_TERMS_MAX + 1) * 8;
  char *text = malloc(big + 1);
  size_t off = 0;
  for (int i = 0; i <= COLL_QUERY_TERMS_MAX; i++)
    off += (size_t)snprintf(text + off, big + 1 - off, "t%05d ", i);
  q = text_query(text, 5, COLL_MODE_LEXICAL);
  CHECK_EQ_INT(coll_search(v->cs, cid, &q, &r, &e), CTXD_ELIMIT);
  free(text);
  CHECK_EQ_INT(coll_info_get(v->cs, "nope", NULL, &e), CTXD_ENOTFOUND);
  env_close(v, 1);

  /* a bad default config refuses to open */
  env w;
  memset(&w, 0, sizeof w);
  snprintf(w.sdir, sizeof w.sdir, "%s/bad", base);
  snprintf(w.idir, sizeof w.idir, "%s/bad/index", base);
  default_opts(&w.o, w.idir);
  snprintf(w.o.defaults.index_spec, sizeof w.o.defaults.index_spec, "Bogus");
  store_opts so = {0, 0, 0, 1};
  CHECK_EQ_INT(store_open(w.sdir, &so, &w.st, &e), 0);
  CHECK_EQ_INT(coll_open(w.st, &w.o, NULL, NULL, &w.cs, &e), CTXD_EINVAL);
  store_close(w.st);
}

/* ---- concurrency --------------------------------------------------------- */

typedef struct racer {
  env *v;
  uint32_t cid;
  int stop;
  pthread_mutex_t mu;
  long searches, failures;
} racer;

static void *search_thread(void *arg) {
  racer *rc = arg;
  long n = 0, bad = 0;
  for (;;) {
    pthread_mutex_lock(&rc->mu);
    int stop = rc->stop;
    pthread_mutex_unlock(&rc->mu);
    if (stop) break;
    for (int mode = 0; mode < 3; mode++) {
      coll_query q = text_query(probe_texts[n % 5], 5, mode);
      q.with_text = 1;
      coll_result r;
      ctxd_error e;
      if (coll_search(rc->v->cs, rc->cid, &q, &r, &e)) {
        bad++;
        continue;
      }
      for (size_t i = 0; i < r.n; i++)
        if (!r.hits[i].doc_id[0] || !r.hits[i].text) bad++;
      coll_result_free(&r);
      n++;
    }
  }
  pthread_mutex_lock(&rc->mu);
  rc->searches += n;
  rc->failures += bad;
  pthread_mutex_unlock(&rc->mu);
  return NULL;
}

static void test_concurrency(env *v) {
  ctxd_error e;
  uint32_t cid = mkcoll(v, "race", "hash:dim=64", VINDEX_IP, "HNSW16");
  put_corpus(v, cid);
  CHECK_EQ_INT(sync_ok(v), 0);
  racer rc;
  memset(&rc, 0, sizeof rc);
  rc.v = v;
  rc.cid = cid;
  pthread_mutex_init(&rc.mu, NULL);
  pthread_t th[4];
  for (int i = 0; i < 4; i++) pthread_create(&th[i], NULL, search_thread, &rc);
  for (int i = 0; i < 60; i++) {
    char id[16];
    snprintf(id, sizeof id, "w%d", i % 10);
    CHECK_EQ_INT(put_doc(v, cid, id, corpus[i % 4][1], NULL, 0, NULL, 0), 0);
    if (i % 3 == 0) del_doc(v, cid, corpus[i % 4][0]);
    if (i % 3 == 1)
      put_doc(v, cid, corpus[i % 4][0], corpus[i % 4][1], NULL, 0, NULL, 0);
    CHECK_EQ_INT(sync_ok(v), 0);
    if (i == 30) {
      /* a masking rebuild may be running already */
      int r = coll_rebuild_start(v->cs, "race", &e);
      CHECK(r == 0 || r == CTXD_EBUSY);
      CHECK_EQ_INT(coll_save_all(v->cs, &e), 0);
    }
  }
  pthread_mutex_lock(&rc.mu);
  rc.stop = 1;
  pthread_mutex_unlock(&rc.mu);
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  CHECK(rc.searches > 0);
  CHECK_EQ_INT(rc.failures, 0);
  CHECK(wait_for(v, "race", not_rebuilding));
  coll_info info;
  CHECK_EQ_INT(coll_info_get(v->cs, "race", &info, &e), 0);
  CHECK_EQ_INT(info.indexed, info.vectors);
  CHECK_EQ_INT(coll_rebuild_start(v->cs, "race", &e), 0);
  CHECK(wait_for(v, "race", not_rebuilding));
  CHECK_EQ_INT(coll_info_get(v->cs, "race", &info, &e), 0);
  CHECK_EQ_INT(info.masked, 0);
  CHECK_EQ_INT(info.indexed, info.vectors);
  CHECK_EQ_INT(info.rebuild_error[0], 0);
  pthread_mutex_destroy(&rc.mu);
}

int main(void) {
  /* One OpenMP thread: the daemon sets its own limit; here it keeps
   * ThreadSanitizer away from libgomp's uninstrumented barriers. */
  vindex_global_init(1);
  if (!mkdtemp(base)) {
    perror("mkdtemp");
    return 1;
  }
  test_config();
  run(test_collections);
  run(test_vector_search);
  run(test_lexical);
  run(test_hybrid);
  run(test_idf);
  run(test_delete_replace);
  run(test_persistence);
  run(test_crash_replay);
  run(test_ivf_training);
  run(test_hnsw_masking);
  run(test_rebuild_start);
  run(test_filters);
  run(test_errors);
  run(test_concurrency);
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf %s", base);
  if (system(cmd) != 0) fprintf(stderr, "cleanup of %s failed\n", base);
  return check_report("coll");
}
