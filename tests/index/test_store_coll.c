/* test_store_coll.c - unit tests of store schema 2: collections, per-collection
 * ids, vectors, BM25 postings (checked by hand on small texts), the change
 * log, snapshot readers, jobs, refusal of a schema-1 store, verify catching
 * damaged postings and vectors, and a full map leaving everything as it was. */
#include <lmdb.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../check.h"
#include "store.h"
#include "store_testlib.h"

/* Put one document of collection cid whose chunks are given as byte
 * offsets (ends[i] = end of chunk i; the last is the text's end). */
static int put_cut(store *s, uint32_t cid, const char *id, const char *text,
                   const size_t *ends, size_t n, const float *vec, uint32_t dim,
                   store_put_result *r, ctxd_error *e) {
  chunk_span c[16];
  for (size_t i = 0; i < n; i++) {
    c[i].byte_start = i ? ends[i - 1] : 0;
    c[i].byte_end = ends[i];
    c[i].tokens = (uint32_t)(ends[i] - c[i].byte_start);
  }
  store_put_doc d = {.cid = cid,
                     .id = id,
                     .id_len = strlen(id),
                     .text = text,
                     .text_len = strlen(text),
                     .chunks = c,
                     .n_chunks = n,
                     .vectors = vec,
                     .dim = dim};
  return store_put(s, &d, 1, r, e);
}

/* One chunk covering the whole text. */
static int put1(store *s, uint32_t cid, const char *id, const char *text) {
  size_t end = strlen(text);
  ctxd_error e;
  int rc = put_cut(s, cid, id, text, &end, end ? 1 : 0, NULL, 0, NULL, &e);
  if (rc) fprintf(stderr, "put1 %s: %s\n", id, e.msg);
  return rc;
}

/* 1 when verify reports a problem containing `what`. */
static int verify_says(store *s, const char *what) {
  store_verify_report rep;
  ctxd_error e;
  int found = 0;
  if (store_verify(s, &rep, &e)) return 0;
  for (size_t i = 0; i < rep.n_problems; i++)
    if (strstr(rep.problems[i], what)) found = 1;
  if (!found)
    for (size_t i = 0; i < rep.n_problems; i++)
      fprintf(stderr, "  (verify said: %s)\n", rep.problems[i]);
  store_verify_free(&rep);
  return found;
}

/* Postings of one term, collected. */
typedef struct plist {
  int64_t label[1024];
  uint32_t tf[1024], dl[1024];
  size_t n;
  int sorted;
} plist;

static int collect(int64_t label, uint32_t tf, uint32_t dl, void *arg) {
  plist *p = arg;
  if (p->n && label <= p->label[p->n - 1]) p->sorted = 0;
  if (p->n < 1024) {
    p->label[p->n] = label;
    p->tf[p->n] = tf;
    p->dl[p->n] = dl;
  }
  p->n++;
  return 0;
}

static uint64_t df_of(store *s, uint32_t cid, const char *term, plist *p) {
  store_reader *r;
  ctxd_error e;
  uint64_t df = UINT64_MAX;
  if (store_reader_begin(s, &r, &e)) return df;
  if (p) {
    memset(p, 0, sizeof *p);
    p->sorted = 1;
  }
  if (store_reader_postings(r, cid, term, strlen(term), &df, p ? collect : NULL,
                            p, &e))
    df = UINT64_MAX;
  store_reader_end(r);
  return df;
}

static void test_collections(void) {
  store *s;
  ctxd_error e;
  uint32_t a = 0, b = 0, c = 0;
  CHECK_EQ_INT(store_open(new_dir(), &fast, &s, &e), 0);
  store_collection *all;
  size_t n;
  CHECK_EQ_INT(store_coll_list(s, &all, &n, &e), 0);
  CHECK_EQ_INT(n, 0); /* a fresh store has none */
  CHECK(all == NULL);
  CHECK_EQ_INT(store_coll_create(s, "alpha", "embedder=hash", 8, &a, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "b-2.x_y", NULL, 0, &b, &e), 0);
  CHECK_EQ_INT(a, 1);
  CHECK_EQ_INT(b, 2);
  CHECK_EQ_INT(store_coll_create(s, "alpha", "", 0, NULL, &e), CTXD_EEXIST);
  CHECK(strstr(e.msg, "alpha") != NULL);
  static const char *bad[] = {"", "a b", "x/y", "caf\xc3\xa9",
                              "0123456789012345678901234567890123456789"
                              "0123456789012345678901234"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_EQ_INT(store_coll_create(s, bad[i], "", 0, NULL, &e), CTXD_EINVAL);
  char big[STORE_COLL_CONFIG_MAX + 2];
  memset(big, 'c', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  CHECK_EQ_INT(store_coll_create(s, "big", big, 0, NULL, &e), CTXD_EINVAL);
  big[STORE_COLL_CONFIG_MAX] = '\0'; /* exactly the limit */
  CHECK_EQ_INT(store_coll_create(s, "big", big, 0, &c, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "wide", "", 65537, NULL, &e), CTXD_EINVAL);

  store_collection col;
  CHECK_EQ_INT(store_coll_get(s, "alpha", &col, &e), 0);
  CHECK_EQ_INT(col.cid, a);
  CHECK_EQ_STR(col.name, "alpha");
  CHECK_EQ_STR(col.config, "embedder=hash");
  CHECK_EQ_INT(col.dim, 8);
  CHECK_EQ_INT(col.documents, 0);
  CHECK_EQ_INT(store_coll_get_id(s, c, &col, &e), 0);
  CHECK_EQ_STR(col.name, "big");
  CHECK_EQ_INT(strlen(col.config), STORE_COLL_CONFIG_MAX);
  CHECK_EQ_INT(store_coll_get(s, "nope", &col, &e), CTXD_ENOTFOUND);
  CHECK_EQ_STR(e.msg, "collection nope not found");
  CHECK_EQ_INT(store_coll_get_id(s, 99, &col, &e), CTXD_ENOTFOUND);

  CHECK_EQ_INT(store_coll_list(s, &all, &n, &e), 0);
  CHECK_EQ_INT(n, 3);
  if (n == 3) {
    CHECK_EQ_STR(all[0].name, "alpha");
    CHECK_EQ_STR(all[1].name, "b-2.x_y");
    CHECK_EQ_STR(all[2].name, "big");
  }
  free(all);

  /* Drop: gone by name and id; the name can come back, with a new cid. */
  uint64_t gone = 7;
  CHECK_EQ_INT(store_coll_drop(s, "b-2.x_y", &gone, &e), 0);
  CHECK_EQ_INT(gone, 0);
  CHECK_EQ_INT(store_coll_drop(s, "b-2.x_y", NULL, &e), CTXD_ENOTFOUND);
  CHECK_EQ_INT(store_coll_get_id(s, b, &col, &e), CTXD_ENOTFOUND);
  uint32_t b2 = 0;
  CHECK_EQ_INT(store_coll_create(s, "b-2.x_y", "", 0, &b2, &e), 0);
  CHECK(b2 != b && b2 > c);
  CHECK(verify_ok(s));
  store_close(s);
}

static void test_ids_per_collection(void) {
  store *s;
  ctxd_error e;
  uint32_t c1, c2;
  CHECK_EQ_INT(store_open(new_dir(), &fast, &s, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "one", "", 0, &c1, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "two", "", 0, &c2, &e), 0);
  CHECK_EQ_INT(put1(s, c1, "x", "text in one"), 0);
  CHECK_EQ_INT(put1(s, c2, "x", "text in two"), 0);
  store_doc *d;
  CHECK_EQ_INT(store_get(s, c1, "x", 1, STORE_GET_TEXT, &d, &e), 0);
  CHECK_EQ_STR(d->text, "text in one");
  CHECK_EQ_INT(d->cid, c1);
  uint64_t d1 = d->doc_seq;
  store_doc_free(d);
  CHECK_EQ_INT(store_get(s, c2, "x", 1, STORE_GET_TEXT, &d, &e), 0);
  CHECK_EQ_STR(d->text, "text in two");
  CHECK_EQ_INT(d->cid, c2);
  CHECK(d->doc_seq != d1);
  store_doc_free(d);

  /* A long id (hashed key) in both collections, too. */
  char longid[STORE_ID_MAX];
  memset(longid, 'L', sizeof longid);
  store_put_doc ld = {.cid = c1, .id = longid, .id_len = sizeof longid};
  CHECK_EQ_INT(store_put(s, &ld, 1, NULL, &e), 0);
  ld.cid = c2;
  CHECK_EQ_INT(store_put(s, &ld, 1, NULL, &e), 0);

  /* The same id twice in one batch is fine across collections only. */
  store_put_doc two[2] = {{.cid = c1, .id = "y", .id_len = 1},
                          {.cid = c2, .id = "y", .id_len = 1}};
  CHECK_EQ_INT(store_put(s, two, 2, NULL, &e), 0);
  two[1].cid = c1;
  CHECK_EQ_INT(store_put(s, two, 2, NULL, &e), CTXD_EINVAL);
  /* A missing collection. */
  two[0].cid = 77;
  CHECK_EQ_INT(store_put(s, two, 1, NULL, &e), CTXD_ENOTFOUND);
  CHECK(strstr(e.msg, "collection 77") != NULL);

  int deleted;
  CHECK_EQ_INT(store_delete(s, c1, "x", 1, &deleted, NULL, &e), 0);
  CHECK_EQ_INT(deleted, 1);
  CHECK_EQ_INT(store_get(s, c1, "x", 1, 0, &d, &e), CTXD_ENOTFOUND);
  CHECK_EQ_INT(store_get(s, c2, "x", 1, 0, &d, &e), 0);
  store_doc_free(d);

  store_doc *docs;
  size_t n;
  uint64_t next;
  CHECK_EQ_INT(store_list(s, c1, 0, 10, &docs, &n, &next, &e), 0);
  CHECK_EQ_INT(n, 2); /* the long id and y */
  store_docs_free(docs, n);
  CHECK_EQ_INT(store_list(s, c2, 0, 10, &docs, &n, &next, &e), 0);
  CHECK_EQ_INT(n, 3);
  if (n == 3) CHECK_EQ_STR(docs[0].id, "x");
  store_docs_free(docs, n);

  store_collection col;
  CHECK_EQ_INT(store_coll_get_id(s, c2, &col, &e), 0);
  CHECK_EQ_INT(col.documents, 3);
  CHECK_EQ_INT(col.bytes, 11);
  store_stats st;
  CHECK_EQ_INT(store_stats_get(s, &st, &e), 0);
  CHECK_EQ_INT(st.documents, 5);
  CHECK(verify_ok(s));
  store_close(s);
}

static int stop_after_two(int64_t label, const float *v, uint32_t dim,
                          void *arg) {
  int *seen = arg;
  (void)label;
  (void)v;
  (void)dim;
  return ++*seen == 2 ? 42 : 0;
}

typedef struct vscan {
  int64_t labels[16];
  float first[16];
  uint32_t dim;
  int n;
} vscan;

static int scan_vec(int64_t label, const float *v, uint32_t dim, void *arg) {
  vscan *s = arg;
  if (s->n < 16) {
    s->labels[s->n] = label;
    s->first[s->n] = v[0];
  }
  s->dim = dim;
  s->n++;
  return 0;
}

static void test_vectors(void) {
  store *s;
  ctxd_error e;
  uint32_t cv, c0;
  CHECK_EQ_INT(store_open(new_dir(), &fast, &s, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "vec", "", 4, &cv, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "plain", "", 0, &c0, &e), 0);
  const char *text = "alpha beta. gamma delta. epsilon";
  size_t ends[3] = {12, 25, 32};
  float v[12];
  for (int i = 0; i < 12; i++) v[i] = (float)i * 0.5f - 1.0f;
  store_put_result r;
  CHECK_EQ_INT(put_cut(s, cv, "v1", text, ends, 3, v, 4, &r, &e), 0);
  uint64_t doc = r.doc_seq;

  /* Wrong dimension, vectors for a collection without, non-finite. */
  CHECK_EQ_INT(put_cut(s, cv, "v2", text, ends, 3, v, 3, NULL, &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "\"v2\"") && strstr(e.msg, "dimension 3") &&
        strstr(e.msg, "takes 4"));
  CHECK_EQ_INT(put_cut(s, c0, "v3", text, ends, 3, v, 4, NULL, &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "\"v3\"") && strstr(e.msg, "takes no vectors"));
  float bad[12];
  memcpy(bad, v, sizeof bad);
  bad[6] = NAN;
  CHECK_EQ_INT(put_cut(s, cv, "v4", text, ends, 3, bad, 4, NULL, &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "\"v4\"") && strstr(e.msg, "chunk 1"));
  /* A document without vectors in a collection with a dimension. */
  CHECK_EQ_INT(put_cut(s, cv, "novec", text, ends, 3, NULL, 0, NULL, &e), 0);

  store_collection col;
  CHECK_EQ_INT(store_coll_get_id(s, cv, &col, &e), 0);
  CHECK_EQ_INT(col.vectors, 3);
  CHECK_EQ_INT(col.chunks, 6);

  store_reader *rd;
  const float *got;
  uint32_t n;
  CHECK_EQ_INT(store_reader_begin(s, &rd, &e), 0);
  CHECK_EQ_INT(store_reader_doc_vectors(rd, cv, doc, &got, &n, &e), 0);
  CHECK_EQ_INT(n, 3);
  CHECK(got && memcmp(got, v, sizeof v) == 0);
  uint64_t nv_doc;
  CHECK_EQ_INT(store_reader_doc_id(rd, cv, "novec", 5, &nv_doc, &e), 0);
  CHECK_EQ_INT(store_reader_doc_vectors(rd, cv, nv_doc, &got, &n, &e), 0);
  CHECK_EQ_INT(n, 0);
  CHECK_EQ_INT(store_reader_doc_vectors(rd, c0, doc, &got, &n, &e),
               CTXD_ENOTFOUND); /* not in that collection */
  CHECK_EQ_INT(store_reader_doc_vectors(rd, cv, 999, &got, &n, &e),
               CTXD_ENOTFOUND);
  vscan vs = {{0}, {0}, 0, 0};
  CHECK_EQ_INT(store_reader_scan_vectors(rd, cv, scan_vec, &vs, &e), 0);
  CHECK_EQ_INT(vs.n, 3);
  CHECK_EQ_INT(vs.dim, 4);
  CHECK_EQ_INT(vs.labels[0], STORE_LABEL(doc, 0));
  CHECK_EQ_INT(vs.labels[2], STORE_LABEL(doc, 2));
  CHECK(vs.first[1] == v[4]);
  int seen = 0;
  CHECK_EQ_INT(store_reader_scan_vectors(rd, cv, stop_after_two, &seen, &e),
               42);
  store_reader_end(rd);

  /* Replace with fewer chunks: old vectors go, the counter follows. */
  size_t end1 = strlen("short one");
  CHECK_EQ_INT(put_cut(s, cv, "v1", "short one", &end1, 1, v + 8, 4, NULL, &e),
               0);
  CHECK_EQ_INT(store_coll_get_id(s, cv, &col, &e), 0);
  CHECK_EQ_INT(col.vectors, 1);
  CHECK_EQ_INT(store_reader_begin(s, &rd, &e), 0);
  CHECK_EQ_INT(store_reader_doc_vectors(rd, cv, doc, &got, &n, &e), 0);
  CHECK_EQ_INT(n, 1);
  CHECK(got && got[0] == v[8] && got[3] == v[11]);
  store_reader_end(rd);
  CHECK(verify_ok(s));
  int deleted;
  CHECK_EQ_INT(store_delete(s, cv, "v1", 2, &deleted, NULL, &e), 0);
  CHECK_EQ_INT(store_coll_get_id(s, cv, &col, &e), 0);
  CHECK_EQ_INT(col.vectors, 0);
  CHECK(verify_ok(s));
  store_close(s);
}

static void test_postings_by_hand(void) {
  store *s;
  ctxd_error e;
  uint32_t c, other;
  plist p;
  CHECK_EQ_INT(store_open(new_dir(), &fast, &s, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "lex", "", 0, &c, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "other", "", 0, &other, &e), 0);
  /* a: chunk 0 "The cat sat." (the, cat, sat), chunk 1 " the cat's hat,
   * the end" (the x2, cat, hat, end: "cat's" loses its 's). */
  const char *ta = "The cat sat. the cat's hat, the end";
  size_t ea[2] = {12, strlen(ta)};
  store_put_result ra, rb;
  CHECK_EQ_INT(put_cut(s, c, "a", ta, ea, 2, NULL, 0, &ra, &e), 0);
  size_t eb = strlen("Cat cat CAT dog");
  CHECK_EQ_INT(put_cut(s, c, "b", "Cat cat CAT dog", &eb, 1, NULL, 0, &rb, &e),
               0);
  CHECK_EQ_INT(put1(s, other, "z", "cat cat"), 0);

  CHECK_EQ_INT(df_of(s, c, "cat", &p), 3);
  CHECK_EQ_INT(p.n, 3);
  CHECK(p.sorted);
  CHECK_EQ_INT(p.label[0], STORE_LABEL(ra.doc_seq, 0));
  CHECK_EQ_INT(p.tf[0], 1);
  CHECK_EQ_INT(p.dl[0], 3);
  CHECK_EQ_INT(p.label[1], STORE_LABEL(ra.doc_seq, 1));
  CHECK_EQ_INT(p.tf[1], 1);
  CHECK_EQ_INT(p.dl[1], 5);
  CHECK_EQ_INT(p.label[2], STORE_LABEL(rb.doc_seq, 0));
  CHECK_EQ_INT(p.tf[2], 3);
  CHECK_EQ_INT(p.dl[2], 4);
  CHECK_EQ_INT(df_of(s, c, "the", &p), 2);
  CHECK_EQ_INT(p.tf[1], 2); /* "the" twice in chunk 1 */
  CHECK_EQ_INT(df_of(s, c, "dog", NULL), 1);
  CHECK_EQ_INT(df_of(s, c, "The", NULL), 0); /* terms are folded bytes */
  CHECK_EQ_INT(df_of(s, c, "zebra", NULL), 0);
  CHECK_EQ_INT(df_of(s, other, "cat", &p), 1);
  CHECK_EQ_INT(p.tf[0], 2);
  store_collection col;
  CHECK_EQ_INT(store_coll_get_id(s, c, &col, &e), 0);
  CHECK_EQ_INT(col.lex_len_sum, 3 + 5 + 4);

  /* Replace a by one chunk "dog days": cat, the, sat, hat, end go from a. */
  CHECK_EQ_INT(put1(s, c, "a", "dog days"), 0);
  CHECK_EQ_INT(df_of(s, c, "cat", &p), 1);
  CHECK_EQ_INT(p.label[0], STORE_LABEL(rb.doc_seq, 0));
  CHECK_EQ_INT(df_of(s, c, "the", NULL), 0);
  CHECK_EQ_INT(df_of(s, c, "dog", &p), 2);
  CHECK_EQ_INT(p.label[0], STORE_LABEL(ra.doc_seq, 0)); /* a kept its id */
  CHECK_EQ_INT(p.dl[0], 2);
  CHECK_EQ_INT(p.label[1], STORE_LABEL(rb.doc_seq, 0));
  CHECK_EQ_INT(store_coll_get_id(s, c, &col, &e), 0);
  CHECK_EQ_INT(col.lex_len_sum, 2 + 4);
  CHECK(verify_ok(s));

  /* Delete b. */
  int deleted;
  CHECK_EQ_INT(store_delete(s, c, "b", 1, &deleted, NULL, &e), 0);
  CHECK_EQ_INT(df_of(s, c, "cat", NULL), 0);
  CHECK_EQ_INT(df_of(s, c, "dog", NULL), 1);
  CHECK_EQ_INT(df_of(s, other, "cat", NULL), 1);
  CHECK_EQ_INT(store_coll_get_id(s, c, &col, &e), 0);
  CHECK_EQ_INT(col.lex_len_sum, 2);

  /* One batch: a replaced document (old id, plain inserts) next to new
   * ones (appended) on the same terms. */
  store_put_doc batch[3];
  chunk_span sp[3] = {{0, 12, 3}, {0, 12, 3}, {0, 12, 3}};
  const char *ids[3] = {"n1", "a", "n2"};
  for (int i = 0; i < 3; i++)
    batch[i] = (store_put_doc){.cid = c,
                               .id = ids[i],
                               .id_len = strlen(ids[i]),
                               .text = "dog ate dogs",
                               .text_len = 12,
                               .chunks = &sp[i],
                               .n_chunks = 1};
  CHECK_EQ_INT(store_put(s, batch, 3, NULL, &e), 0);
  CHECK_EQ_INT(df_of(s, c, "dog", &p), 3);
  CHECK(p.sorted);
  CHECK_EQ_INT(p.label[0], STORE_LABEL(ra.doc_seq, 0));
  CHECK_EQ_INT(df_of(s, c, "days", NULL), 0);
  CHECK(verify_ok(s));

  /* A list long enough to span pages: every document holds "common". */
  char text[64];
  for (int i = 0; i < 700; i++) {
    char id[16];
    snprintf(id, sizeof id, "m%d", i);
    snprintf(text, sizeof text, "common word%d", i % 7);
    CHECK_EQ_INT(put1(s, c, id, text), 0);
  }
  CHECK_EQ_INT(df_of(s, c, "common", &p), 700);
  CHECK_EQ_INT(p.n, 700);
  CHECK(p.sorted);
  CHECK_EQ_INT(df_of(s, c, "word3", &p), 100);
  CHECK_EQ_INT(p.n, 100);
  CHECK(verify_ok(s));

  /* Terms longer than any stored one, or empty, have no postings. */
  char huge[200];
  memset(huge, 'a', sizeof huge);
  store_reader *rd;
  uint64_t df = 9;
  CHECK_EQ_INT(store_reader_begin(s, &rd, &e), 0);
  CHECK_EQ_INT(
      store_reader_postings(rd, c, huge, sizeof huge, &df, NULL, NULL, &e), 0);
  CHECK_EQ_INT(df, 0);
  store_reader_end(rd);
  store_close(s);
}

static int stop_at_first(int64_t label, uint32_t tf, uint32_t dl, void *arg) {
  (void)label;
  (void)tf;
  (void)dl;
  ++*(int *)arg;
  return 7;
}

typedef struct dscan {
  uint64_t docs[8];
  char ids[8][16];
  int n;
} dscan;

static int scan_doc(uint64_t doc, const char *id, size_t id_len, void *arg) {
  dscan *d = arg;
  if (d->n < 8) {
    d->docs[d->n] = doc;
    snprintf(d->ids[d->n], sizeof d->ids[0], "%.*s", (int)id_len, id);
  }
  d->n++;
  return 0;
}

typedef struct del_arg {
  store *s;
  uint32_t cid;
  int rc;
} del_arg;

static void *delete_r1(void *p) {
  del_arg *a = p;
  ctxd_error e;
  int deleted = 0;
  a->rc = store_delete(a->s, a->cid, "r1", 2, &deleted, NULL, &e);
  if (!deleted) a->rc = -100;
  return NULL;
}

static void test_readers(void) {
  store *s;
  ctxd_error e;
  uint32_t c;
  CHECK_EQ_INT(store_open(new_dir(), &fast, &s, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "r", "", 0, &c, &e), 0);
  const char *text = "First part here. Second part there.";
  size_t ends[2] = {16, strlen(text)};
  store_kv meta[] = {{"lang", 4, "en", 2}, {"k", 1, "", 0}};
  chunk_span sp[2] = {{0, 16, 5}, {16, ends[1], 6}};
  store_put_doc d = {.cid = c,
                     .id = "r1",
                     .id_len = 2,
                     .text = text,
                     .text_len = strlen(text),
                     .meta = meta,
                     .n_meta = 2,
                     .chunks = sp,
                     .n_chunks = 2};
  store_put_result r1;
  CHECK_EQ_INT(store_put(s, &d, 1, &r1, &e), 0);
  CHECK_EQ_INT(put1(s, c, "r2", "another document"), 0);

  store_reader *rd;
  store_chunk_ref ch;
  CHECK_EQ_INT(store_reader_begin(s, &rd, &e), 0);
  CHECK_EQ_INT(store_reader_seq(rd), 2);
  store_collection col;
  CHECK_EQ_INT(store_reader_coll(rd, c, &col, &e), 0);
  CHECK_EQ_INT(col.documents, 2);
  CHECK_EQ_INT(store_reader_coll(rd, c + 5, &col, &e), CTXD_ENOTFOUND);
  CHECK_EQ_INT(store_reader_chunk(rd, STORE_LABEL(r1.doc_seq, 1), 1, &ch, &e),
               0);
  CHECK_EQ_INT(ch.cid, c);
  CHECK_EQ_INT(ch.doc, r1.doc_seq);
  CHECK_EQ_INT(ch.ordinal, 1);
  CHECK(ch.doc_id_len == 2 && memcmp(ch.doc_id, "r1", 2) == 0);
  CHECK_EQ_INT(ch.span.byte_start, 16);
  CHECK_EQ_INT(ch.span.tokens, 6);
  CHECK_EQ_INT(ch.lex_len, 3); /* second part there */
  CHECK(ch.text_len == 19 && memcmp(ch.text, " Second part there.", 19) == 0);
  CHECK_EQ_INT(store_reader_chunk(rd, STORE_LABEL(r1.doc_seq, 0), 0, &ch, &e),
               0);
  CHECK(ch.text == NULL);
  CHECK_EQ_INT(store_reader_chunk(rd, STORE_LABEL(r1.doc_seq, 2), 1, &ch, &e),
               CTXD_ENOTFOUND);
  CHECK_EQ_INT(store_reader_chunk(rd, STORE_LABEL(999, 0), 1, &ch, &e),
               CTXD_ENOTFOUND);
  CHECK_EQ_INT(store_reader_chunk(rd, -1, 1, &ch, &e), CTXD_ENOTFOUND);

  uint64_t doc;
  CHECK_EQ_INT(store_reader_doc_id(rd, c, "r1", 2, &doc, &e), 0);
  CHECK_EQ_INT(doc, r1.doc_seq);
  CHECK_EQ_INT(store_reader_doc_id(rd, c, "zz", 2, &doc, &e), CTXD_ENOTFOUND);
  uint32_t mcid = 0;
  const char *val;
  size_t vlen;
  CHECK_EQ_INT(
      store_reader_doc_meta(rd, r1.doc_seq, "lang", 4, &mcid, &val, &vlen, &e),
      0);
  CHECK_EQ_INT(mcid, c);
  CHECK(val && vlen == 2 && memcmp(val, "en", 2) == 0);
  CHECK_EQ_INT(
      store_reader_doc_meta(rd, r1.doc_seq, "k", 1, NULL, &val, &vlen, &e), 0);
  CHECK(val != NULL && vlen == 0);
  CHECK_EQ_INT(store_reader_doc_meta(rd, r1.doc_seq, "missing", 7, NULL, &val,
                                     &vlen, &e),
               0);
  CHECK(val == NULL);
  const char *t;
  size_t tl;
  CHECK_EQ_INT(store_reader_doc_text(rd, r1.doc_seq, &t, &tl, &e), 0);
  CHECK(tl == strlen(text) && memcmp(t, text, tl) == 0);
  dscan ds = {{0}, {{0}}, 0};
  CHECK_EQ_INT(store_reader_scan_docs(rd, c, scan_doc, &ds, &e), 0);
  CHECK_EQ_INT(ds.n, 2);
  CHECK_EQ_STR(ds.ids[0], "r1");
  CHECK_EQ_STR(ds.ids[1], "r2");
  CHECK(ds.docs[0] < ds.docs[1]);
  uint64_t df;
  int calls = 0;
  CHECK_EQ_INT(
      store_reader_postings(rd, c, "part", 4, &df, stop_at_first, &calls, &e),
      7);
  CHECK_EQ_INT(df, 2);
  CHECK_EQ_INT(calls, 1);

  /* The snapshot holds while another thread deletes r1. */
  del_arg da = {s, c, -1};
  pthread_t th;
  pthread_create(&th, NULL, delete_r1, &da);
  pthread_join(th, NULL);
  CHECK_EQ_INT(da.rc, 0);
  CHECK_EQ_INT(store_reader_chunk(rd, STORE_LABEL(r1.doc_seq, 1), 1, &ch, &e),
               0);
  CHECK(ch.text_len == 19 && memcmp(ch.text, " Second part there.", 19) == 0);
  CHECK_EQ_INT(store_reader_seq(rd), 2);
  store_reader_end(rd);
  CHECK_EQ_INT(store_reader_begin(s, &rd, &e), 0);
  CHECK_EQ_INT(store_reader_seq(rd), 3);
  CHECK_EQ_INT(store_reader_chunk(rd, STORE_LABEL(r1.doc_seq, 1), 1, &ch, &e),
               CTXD_ENOTFOUND);
  store_reader_end(rd);
  store_close(s);
}

static void test_change_log(void) {
  store *s;
  ctxd_error e;
  uint32_t c1, c2;
  CHECK_EQ_INT(store_open(new_dir(), &fast, &s, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "c1", "", 0, &c1, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "c2", "", 0, &c2, &e), 0);
  store_put_result r;
  size_t end = 5;
  CHECK_EQ_INT(put_cut(s, c1, "a", "alpha", &end, 1, NULL, 0, &r, &e), 0);
  uint64_t da = r.doc_seq;
  CHECK_EQ_INT(put_cut(s, c2, "b", "bravo", &end, 1, NULL, 0, &r, &e), 0);
  uint64_t db = r.doc_seq;
  int deleted;
  CHECK_EQ_INT(store_delete(s, c1, "a", 1, &deleted, NULL, &e), 0);
  CHECK_EQ_INT(store_coll_drop(s, "c2", NULL, &e), 0);

  store_change ch[8];
  size_t n;
  CHECK_EQ_INT(store_changes_read(s, 0, 8, ch, &n, &e), 0);
  CHECK_EQ_INT(n, 4);
  CHECK(ch[0].seq == 1 && ch[0].op == STORE_OP_PUT && ch[0].cid == c1 &&
        ch[0].doc == da);
  CHECK(ch[1].seq == 2 && ch[1].op == STORE_OP_PUT && ch[1].cid == c2 &&
        ch[1].doc == db);
  CHECK(ch[2].seq == 3 && ch[2].op == STORE_OP_DELETE && ch[2].cid == c1 &&
        ch[2].doc == da);
  CHECK(ch[3].seq == 4 && ch[3].op == STORE_OP_DROP && ch[3].cid == c2 &&
        ch[3].doc == 0);
  CHECK_EQ_INT(store_changes_read(s, 1, 2, ch, &n, &e), 0);
  CHECK_EQ_INT(n, 2);
  CHECK_EQ_INT(ch[0].seq, 2);
  CHECK_EQ_INT(ch[1].seq, 3);
  CHECK_EQ_INT(store_changes_read(s, 4, 8, ch, &n, &e), 0);
  CHECK_EQ_INT(n, 0);

  CHECK_EQ_INT(store_changes_trim(s, 2, &e), 0);
  CHECK_EQ_INT(store_changes_read(s, 0, 8, ch, &n, &e), 0);
  CHECK_EQ_INT(n, 2);
  CHECK_EQ_INT(ch[0].seq, 3);
  /* Trimming does not reset the sequence. */
  CHECK_EQ_INT(store_changes_trim(s, 100, &e), 0);
  CHECK_EQ_INT(store_changes_read(s, 0, 8, ch, &n, &e), 0);
  CHECK_EQ_INT(n, 0);
  CHECK_EQ_INT(put1(s, c1, "c", "charlie"), 0);
  CHECK_EQ_INT(store_changes_read(s, 0, 8, ch, &n, &e), 0);
  CHECK_EQ_INT(n, 1);
  CHECK_EQ_INT(ch[0].seq, 5);
  store_stats st;
  CHECK_EQ_INT(store_stats_get(s, &st, &e), 0);
  CHECK_EQ_INT(st.last_seq, 5);
  store_close(s);
}

static void test_drop_with_data(void) {
  store *s;
  ctxd_error e;
  uint32_t keep, drop;
  CHECK_EQ_INT(store_open(new_dir(), &fast, &s, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "keep", "", 2, &keep, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "drop", "", 2, &drop, &e), 0);
  float v[4] = {1, 2, 3, 4};
  size_t ends[2] = {6, 12};
  for (int i = 0; i < 30; i++) {
    char id[16];
    snprintf(id, sizeof id, "d%d", i);
    CHECK_EQ_INT(put_cut(s, drop, id, "shared words", ends, 2, v, 2, NULL, &e),
                 0);
    if (i < 3)
      CHECK_EQ_INT(
          put_cut(s, keep, id, "shared words", ends, 2, v, 2, NULL, &e), 0);
  }
  uint64_t gone = 0;
  CHECK_EQ_INT(store_coll_drop(s, "drop", &gone, &e), 0);
  CHECK_EQ_INT(gone, 30);
  store_stats st;
  CHECK_EQ_INT(store_stats_get(s, &st, &e), 0);
  CHECK_EQ_INT(st.documents, 3);
  CHECK_EQ_INT(st.chunks, 6);
  CHECK_EQ_INT(st.bytes, 36);
  CHECK_EQ_INT(df_of(s, keep, "shared", NULL), 3);
  CHECK_EQ_INT(df_of(s, drop, "shared", NULL), 0);
  store_doc *d;
  CHECK_EQ_INT(store_get(s, drop, "d1", 2, 0, &d, &e), CTXD_ENOTFOUND);
  CHECK_EQ_INT(store_get(s, keep, "d1", 2, 0, &d, &e), 0);
  store_doc_free(d);
  CHECK(verify_ok(s));
  uint32_t again;
  CHECK_EQ_INT(store_coll_create(s, "drop", "", 2, &again, &e), 0);
  store_doc *docs;
  size_t n;
  uint64_t next;
  CHECK_EQ_INT(store_list(s, again, 0, 10, &docs, &n, &next, &e), 0);
  CHECK_EQ_INT(n, 0);
  store_docs_free(docs, n);
  store_close(s);
}

static int job_count(const char *id, size_t id_len, const void *rec, size_t len,
                     void *arg) {
  char *out = arg;
  size_t o = strlen(out);
  snprintf(out + o, 64 - o, "%.*s=%.*s;", (int)id_len, id, (int)len,
           (const char *)rec);
  return 0;
}

static void test_jobs(void) {
  store *s;
  ctxd_error e;
  CHECK_EQ_INT(store_open(new_dir(), &fast, &s, &e), 0);
  CHECK_EQ_INT(store_job_put(s, "job-b", "running", 7, &e), 0);
  CHECK_EQ_INT(store_job_put(s, "job-a", "queued", 6, &e), 0);
  CHECK_EQ_INT(store_job_put(s, "job-b", "done", 4, &e), 0); /* replaces */
  void *rec;
  size_t len;
  CHECK_EQ_INT(store_job_get(s, "job-b", &rec, &len, &e), 0);
  CHECK(len == 4 && memcmp(rec, "done", 4) == 0);
  free(rec);
  char listed[64] = "";
  CHECK_EQ_INT(store_job_list(s, job_count, listed, &e), 0);
  CHECK_EQ_STR(listed, "job-a=queued;job-b=done;");
  CHECK_EQ_INT(store_job_delete(s, "job-a", &e), 0);
  CHECK_EQ_INT(store_job_delete(s, "job-a", &e), CTXD_ENOTFOUND);
  CHECK_EQ_INT(store_job_get(s, "job-a", &rec, &len, &e), CTXD_ENOTFOUND);
  CHECK_EQ_INT(store_job_put(s, "", "x", 1, &e), CTXD_EINVAL);
  char longid[130];
  memset(longid, 'j', 129);
  longid[129] = '\0';
  CHECK_EQ_INT(store_job_put(s, longid, "x", 1, &e), CTXD_EINVAL);
  longid[128] = '\0';
  CHECK_EQ_INT(store_job_put(s, longid, "", 0, &e), 0);
  CHECK_EQ_INT(store_job_get(s, longid, &rec, &len, &e), 0);
  CHECK_EQ_INT(len, 0);
  free(rec);
  store_close(s);
}

/* A schema-1 store as ctxd 0.1 wrote it: meta with schema_version 1 and
 * its 48-byte counters, docs and friends without collections. */
static void test_schema1_refused(void) {
  char dir[256];
  snprintf(dir, sizeof dir, "%s", new_dir());
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi meta, docs;
  CHECK_EQ_INT(mkdir(dir, 0755), 0);
  CHECK_EQ_INT(raw_open(dir, &env, &txn), 0);
  CHECK_EQ_INT(mdb_dbi_open(txn, "meta", MDB_CREATE, &meta), 0);
  CHECK_EQ_INT(mdb_dbi_open(txn, "docs", MDB_CREATE, &docs), 0);
  uint8_t ver[4] = {1, 0, 0, 0}, counters[48] = {0};
  counters[32] = 1; /* next_doc */
  MDB_val k = {14, "schema_version"}, v = {4, ver};
  CHECK_EQ_INT(mdb_put(txn, meta, &k, &v, 0), 0);
  MDB_val ck = {8, "counters"}, cv = {48, counters};
  CHECK_EQ_INT(mdb_put(txn, meta, &ck, &cv, 0), 0);
  CHECK_EQ_INT(mdb_txn_commit(txn), 0);
  mdb_env_close(env);

  store *s = NULL;
  ctxd_error e;
  CHECK_EQ_INT(store_open(dir, &fast, &s, &e), CTXD_EPRECOND);
  CHECK(s == NULL);
  CHECK(strstr(e.msg, "schema version 1") != NULL);
  CHECK(strstr(e.msg, "schema 2") != NULL);
  CHECK(strstr(e.msg, "not migrated") != NULL);
  CHECK(strstr(e.msg, "re-ingest") != NULL);
  /* Refused before anything was created in it. */
  MDB_dbi colls;
  CHECK_EQ_INT(raw_open(dir, &env, &txn), 0);
  CHECK_EQ_INT(mdb_dbi_open(txn, "colls", 0, &colls), MDB_NOTFOUND);
  mdb_txn_abort(txn);
  mdb_env_close(env);
}

static void test_verify_damage(void) {
  char dir[256];
  snprintf(dir, sizeof dir, "%s", new_dir());
  store *s;
  ctxd_error e;
  uint32_t c;
  store_put_result r;
  CHECK_EQ_INT(store_open(dir, &fast, &s, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "v", "", 2, &c, &e), 0);
  float v[2] = {1, 2};
  size_t end = 19;
  CHECK_EQ_INT(
      put_cut(s, c, "doc", "red fish blue fish!", &end, 1, v, 2, &r, &e), 0);
  CHECK(verify_ok(s));
  store_close(s);

  /* Damage: drop the posting of "blue", shorten the vector, add a posting
   * of "ghost" pointing at a document that does not exist, and a second one
   * of "fish" for a chunk that has one. */
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi post, vecs;
  CHECK_EQ_INT(raw_open(dir, &env, &txn), 0);
  CHECK_EQ_INT(mdb_dbi_open(txn, "postings", MDB_DUPSORT | MDB_DUPFIXED, &post),
               0);
  CHECK_EQ_INT(mdb_dbi_open(txn, "vectors", 0, &vecs), 0);
  uint8_t kb[16] = {0, 0, 0, (uint8_t)c, 'b', 'l', 'u', 'e'};
  MDB_val k = {8, kb};
  CHECK_EQ_INT(mdb_del(txn, post, &k, NULL), 0);
  uint8_t vk[16] = {0, 0, 0, (uint8_t)c};
  for (int i = 0; i < 8; i++) vk[4 + i] = (uint8_t)(r.doc_seq >> (56 - 8 * i));
  MDB_val vkk = {16, vk}, vv = {4, v};
  CHECK_EQ_INT(mdb_put(txn, vecs, &vkk, &vv, 0), 0);
  uint8_t gk[9] = {0, 0, 0, (uint8_t)c, 'g', 'h', 'o', 's', 't'};
  /* label = document 99, chunk 0 */
  uint8_t gv[16] = {0, 0, 0, 0, 0x06, 0x30, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0};
  MDB_val gkk = {9, gk}, gvv = {16, gv};
  CHECK_EQ_INT(mdb_put(txn, post, &gkk, &gvv, 0), 0);
  /* A second "fish" posting for the same chunk: only the counts see it. */
  uint8_t fk[8] = {0, 0, 0, (uint8_t)c, 'f', 'i', 's', 'h'}, fv[16] = {0};
  for (int i = 0; i < 8; i++)
    fv[i] = (uint8_t)((uint64_t)STORE_LABEL(r.doc_seq, 0) >> (56 - 8 * i));
  fv[8] = 9;
  MDB_val fkk = {8, fk}, fvv = {16, fv};
  CHECK_EQ_INT(mdb_put(txn, post, &fkk, &fvv, 0), 0);
  CHECK_EQ_INT(mdb_txn_commit(txn), 0);
  mdb_env_close(env);

  CHECK_EQ_INT(store_open(dir, &fast, &s, &e), 0);
  CHECK(verify_says(s, "no posting for term \"blue\""));
  CHECK(verify_says(s, "vector of chunk 0 is 4 bytes"));
  CHECK(verify_says(s, "term \"ghost\" of collection 1 points at missing"));
  CHECK(verify_says(s, "4 postings stored, its chunk texts give 3"));
  store_close(s);
}

/* Prose-like text of about `len` bytes. */
static char *prose(size_t len, unsigned seed) {
  static const char *words[] = {"river",  "stone", "light",  "quiet",  "market",
                                "winter", "paper", "garden", "signal", "the",
                                "of",     "and",   "north",  "copper", "salt"};
  char *t = malloc(len + 16);
  size_t o = 0;
  while (o < len) {
    seed = seed * 1103515245u + 12345u;
    const char *w = words[(seed >> 16) % 15];
    size_t wl = strlen(w);
    memcpy(t + o, w, wl);
    o += wl;
    t[o++] = (seed >> 8) % 9 ? ' ' : '.';
  }
  t[o] = '\0';
  return t;
}

/* Chunks of ~piece bytes cut at spaces. */
static size_t cut(const char *t, size_t piece, chunk_span *c, size_t max) {
  size_t len = strlen(t), n = 0, at = 0;
  while (at < len && n < max) {
    size_t end = at + piece < len ? at + piece : len;
    while (end < len && t[end] != ' ') end++;
    c[n++] = (chunk_span){at, end, (uint32_t)((end - at) / 5 + 1)};
    at = end;
  }
  c[n - 1].byte_end = len;
  return n;
}

static void test_full_map_unchanged(void) {
  store *s;
  ctxd_error e;
  uint32_t c;
  /* Growth from a 64 KiB map through many resizes, postings included. */
  store_opts grow = {64 << 10, 0, 0, 1};
  CHECK_EQ_INT(store_open(new_dir(), &grow, &s, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "g", "", 0, &c, &e), 0);
  chunk_span *sp = malloc(4096 * sizeof *sp);
  for (int i = 0; i < 20; i++) {
    char id[16];
    snprintf(id, sizeof id, "g%d", i);
    char *t = prose(40000, (unsigned)i);
    size_t n = cut(t, 2000, sp, 4096);
    store_put_doc d = {.cid = c,
                       .id = id,
                       .id_len = strlen(id),
                       .text = t,
                       .text_len = strlen(t),
                       .chunks = sp,
                       .n_chunks = n};
    CHECK_EQ_INT(store_put(s, &d, 1, NULL, &e), 0);
    free(t);
  }
  CHECK(verify_ok(s));
  store_close(s);

  /* Growth stops at max_map_size: ENOSPC, and nothing changed. */
  store_opts o = {64 << 10, 512 << 10, 0, 1};
  CHECK_EQ_INT(store_open(new_dir(), &o, &s, &e), 0);
  CHECK_EQ_INT(store_coll_create(s, "f", "", 0, &c, &e), 0);
  CHECK_EQ_INT(put1(s, c, "small", "quiet river stone"), 0);
  store_stats before, after;
  store_collection cb, ca;
  CHECK_EQ_INT(store_stats_get(s, &before, &e), 0);
  CHECK_EQ_INT(store_coll_get_id(s, c, &cb, &e), 0);
  char *t = prose(600000, 7);
  size_t n = cut(t, 2000, sp, 4096);
  store_put_doc d = {.cid = c,
                     .id = "big",
                     .id_len = 3,
                     .text = t,
                     .text_len = strlen(t),
                     .chunks = sp,
                     .n_chunks = n};
  CHECK_EQ_INT(store_put(s, &d, 1, NULL, &e), CTXD_ENOSPC);
  CHECK(strstr(e.msg, "max_map_size") != NULL);
  /* Replacing "small" with the big text fails the same way. */
  d.id = "small";
  d.id_len = 5;
  CHECK_EQ_INT(store_put(s, &d, 1, NULL, &e), CTXD_ENOSPC);
  free(t);
  CHECK_EQ_INT(store_stats_get(s, &after, &e), 0);
  CHECK_EQ_INT(store_coll_get_id(s, c, &ca, &e), 0);
  CHECK_EQ_INT(after.documents, before.documents);
  CHECK_EQ_INT(after.last_seq, before.last_seq);
  CHECK_EQ_INT(ca.lex_len_sum, cb.lex_len_sum);
  CHECK_EQ_INT(ca.chunks, cb.chunks);
  CHECK_EQ_INT(df_of(s, c, "river", NULL), 1);
  CHECK_EQ_INT(df_of(s, c, "copper", NULL), 0);
  CHECK(verify_ok(s));
  CHECK_EQ_INT(put1(s, c, "small2", "salt and copper"), 0);
  CHECK_EQ_INT(df_of(s, c, "copper", NULL), 1);
  CHECK(verify_ok(s));
  store_close(s);
  free(sp);
}

int main(void) {
  if (test_base_make()) return 1;
  test_collections();
  test_ids_per_collection();
  test_vectors();
  test_postings_by_hand();
  test_readers();
  test_change_log();
  test_drop_with_data();
  test_jobs();
  test_schema1_refused();
  test_verify_damage();
  test_full_map_unchanged();
  test_base_remove();
  return check_report("store_coll");
}
