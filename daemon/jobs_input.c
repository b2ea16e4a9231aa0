/* jobs_input.c - builds a corpus job's order_input from a JSONL file or
 * from the stored documents of a collection, and picks the embedder for
 * the documents that come without a vector. */
#include "jobs_input.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collections.h"

/* Documents read per page (store_list) and per store reader. */
#define PAGE_DOCS 1000

struct jobin {
  order_input in;
  order_jsonl *jsonl;   /* JSONL input */
  embedder *emb;        /* owned; NULL when none is needed */
  /* collection input (all malloc'd, n entries) */
  store *st;
  uint32_t cid;
  char **ids;
  uint64_t *docs;       /* internal ids, for the texts */
  float *vecs;          /* n x dim, or NULL */
  uint8_t *has;         /* has[i]: document i has a stored vector */
  uint64_t n, cap;
  uint64_t max_docs;    /* the spec's, resolved */
  uint32_t dim;
  uint64_t fp;          /* fingerprint of what was read (input_tag) */
  char *text;           /* get_text's buffer */
  size_t text_cap;
  char tag[512];
};

static const char *const vec_names[] = {"auto", "embed", "given"};

int jobin_vectors_parse(const char *s) {
  if (!s || !*s) return JOBIN_VEC_AUTO;
  for (int i = 0; i < 3; i++)
    if (strcmp(s, vec_names[i]) == 0) return i;
  return -1;
}

const char *jobin_vectors_name(jobin_vectors v) {
  return (unsigned)v < 3 ? vec_names[v] : "unknown";
}

/* 64-bit FNV-1a, continuing from h: fingerprints what a stored input was
 * read from, so a checkpoint of other data is never reused. */
static uint64_t fnv(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001B3ull;
  return h;
}

static int is_none(const char *emb) {
  return strncmp(emb, "none", 4) == 0 && (emb[4] == '\0' || emb[4] == ':');
}

/* The embedder text a spec asks for: its own, or the collection's. */
static int embedder_text(coll_set *cs, const jobin_spec *sp, char *out,
                         size_t cap, ctxd_error *e) {
  if (sp->embedder && *sp->embedder) {
    snprintf(out, cap, "%s", sp->embedder);
    return 0;
  }
  uint32_t cid;
  coll_config cfg;
  const char *name = sp->collection ? sp->collection : "";
  int rc = collections_resolve(cs, name, strlen(name), &cid, &cfg, e);
  if (rc) return rc;
  snprintf(out, cap, "%s", cfg.embedder);
  return 0;
}

int jobin_check(coll_set *cs, const jobin_spec *sp, ctxd_error *e) {
  char text[256];
  embed_hash_opts ho;
  if (sp->embedder && *sp->embedder) {
    if (is_none(sp->embedder))
      return ctxd_seterr(e, CTXD_EINVAL,
                         "embedder \"%s\": a job's embedder must compute "
                         "vectors (\"hash\" or \"hash:dim=...\")",
                         sp->embedder);
    if (embed_is_model(sp->embedder))
      return ctxd_seterr(e, CTXD_EINVAL,
                         "embedder \"%.100s\": corpus jobs embed with the "
                         "hash embedder only (\"hash\" or \"hash:dim=...\"), "
                         "or take the given vectors",
                         sp->embedder);
    if (embed_hash_parse(sp->embedder, &ho, e)) return CTXD_EINVAL;
  }
  /* The collection must exist even when its embedder is not needed: a
   * misspelt name should not pass unnoticed. */
  return embedder_text(cs, sp, text, sizeof text, e);
}

/* Create the embedder named by `text` into in->emb ("none" leaves it NULL:
 * that collection computes no vectors). */
static int make_embedder(jobin *in, const char *text, ctxd_error *e) {
  embed_hash_opts ho;
  int rc;
  if (is_none(text)) return 0;
  /* A model collection's job would hold the model for its whole run, and
   * jobs do not run on the worker of a request: not offered (README). */
  if (embed_is_model(text))
    return ctxd_seterr(e, CTXD_EPRECOND,
                       "the collection's embedder is %.120s: corpus jobs "
                       "embed with the hash embedder only; give the job an "
                       "embedder option (\"hash\" or \"hash:...\") or a "
                       "vector on every line",
                       text);
  if ((rc = embed_hash_parse(text, &ho, e))) return rc;
  return embed_hash_create(&ho, &in->emb, e);
}

/* The message of a job over its document limit. */
static int too_many(uint64_t max, ctxd_error *e) {
  return ctxd_seterr(e, CTXD_ELIMIT,
                     "the input has more than %llu documents: over "
                     "limits.max_job_docs (%llu); split the corpus or "
                     "run it with ctxd-corpus",
                     (unsigned long long)max, (unsigned long long)max);
}

/* ---- JSONL ----------------------------------------------------------------- */

static int open_jsonl(jobin *in, coll_set *cs, const jobin_spec *sp,
                      ctxd_error *e) {
  order_read_opts ro;
  char emb[256];
  int rc;
  memset(&ro, 0, sizeof ro);
  ro.progress = sp->progress;
  ro.progress_arg = sp->progress_arg;
  ro.cancel = sp->cancel;
  ro.max_docs = in->max_docs;
  rc = order_read_jsonl(sp->jsonl_path, &ro, &in->jsonl, e);
  if (rc == CTXD_ELIMIT) return too_many(in->max_docs, e);
  if (rc == CTXD_ENOTFOUND)
    return ctxd_seterr(e, CTXD_EINVAL, "input_jsonl %s: no such file",
                       sp->jsonl_path);
  if (rc) return rc;
  order_jsonl_input(in->jsonl, &in->in);
  if (sp->vectors == JOBIN_VEC_EMBED) {
    in->in.vectors = NULL;
    in->in.dim = 0;
    in->in.has_vector = NULL;
  }
  /* the first document that needs the embedder, if any */
  uint64_t need = UINT64_MAX;
  for (uint64_t i = 0; i < in->in.n && need == UINT64_MAX; i++)
    if (!in->in.vectors || (in->in.has_vector && !in->in.has_vector[i]))
      need = i;
  if (need != UINT64_MAX) {
    unsigned long long line = order_jsonl_line(in->jsonl, need);
    if (sp->vectors == JOBIN_VEC_GIVEN)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "line %llu: no \"vector\" (vectors \"given\" wants "
                         "one on every line)",
                         line);
    if ((rc = embedder_text(cs, sp, emb, sizeof emb, e)) ||
        (rc = make_embedder(in, emb, e)))
      return rc;
    if (!in->emb)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "line %llu: no \"vector\", and the embedder is "
                         "\"%s\" (no computed vectors): give a vector on "
                         "every line or an embedder",
                         line, emb);
    if (in->in.vectors && in->emb->dim != in->in.dim)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "line %llu: no \"vector\", and the embedder (%s) "
                         "makes %u dimensions where the given vectors have "
                         "%u: give a vector on every line, or an embedder "
                         "of %u dimensions",
                         line, emb, in->emb->dim, in->in.dim, in->in.dim);
  } else {
    snprintf(emb, sizeof emb, "-");
  }
  snprintf(in->tag, sizeof in->tag, "%.300s|%.150s|%s",
           in->in.input_tag ? in->in.input_tag : "", emb,
           jobin_vectors_name(sp->vectors));
  in->in.input_tag = in->tag;
  return 0;
}

/* ---- stored documents ----------------------------------------------------- */

static int kv_has(const store_kv *m, size_t n, const store_kv *want) {
  for (size_t i = 0; i < n; i++)
    if (m[i].key_len == want->key_len && m[i].val_len == want->val_len &&
        memcmp(m[i].key, want->key, want->key_len) == 0 &&
        memcmp(m[i].val, want->val, want->val_len) == 0)
      return 1;
  return 0;
}

/* Room for one more document. */
static int grow(jobin *in, ctxd_error *e) {
  if (in->n >= in->max_docs) return too_many(in->max_docs, e);
  if (in->n < in->cap) return 0;
  uint64_t cap = in->cap ? in->cap * 2 : 1024;
  char **ids = realloc(in->ids, cap * sizeof *ids);
  if (ids) in->ids = ids;
  uint64_t *docs = realloc(in->docs, cap * sizeof *docs);
  if (docs) in->docs = docs;
  uint8_t *has = realloc(in->has, cap * sizeof *has);
  if (has) in->has = has;
  float *vecs = in->dim ? realloc(in->vecs, cap * in->dim * sizeof *vecs)
                        : in->vecs;
  if (in->dim && vecs) in->vecs = vecs;
  if (!ids || !docs || !has || (in->dim && !vecs))
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for %llu documents",
                       (unsigned long long)cap);
  in->cap = cap;
  return 0;
}

/* Append document `doc` (client id of id_len bytes, a text of `bytes`)
 * and, unless every vector is to be embedded, the mean of its stored chunk
 * vectors (read through r). The fingerprint takes its id and size: a
 * document replaced since by another text of the same size would pass,
 * which only matters for an embedded vector. */
static int add_doc(jobin *in, store_reader *r, const jobin_spec *sp,
                   uint64_t doc, const char *id, size_t id_len, uint64_t bytes,
                   ctxd_error *e) {
  int rc = grow(in, e);
  if (rc) return rc;
  in->fp = fnv(fnv(fnv(in->fp, id, id_len), "", 1), &bytes, sizeof bytes);
  char *copy = malloc(id_len + 1);
  if (!copy) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  memcpy(copy, id, id_len);
  copy[id_len] = '\0';
  uint64_t i = in->n;
  in->ids[i] = copy;
  in->docs[i] = doc;
  in->has[i] = 0;
  in->n++;
  if (!in->dim || sp->vectors == JOBIN_VEC_EMBED) return 0;
  const float *v;
  uint32_t nv;
  if ((rc = store_reader_doc_vectors(r, in->cid, doc, &v, &nv, e))) return rc;
  if (nv == 0) return 0;
  float *row = in->vecs + i * in->dim;
  memset(row, 0, in->dim * sizeof *row);
  for (uint32_t c = 0; c < nv; c++)
    for (uint32_t d = 0; d < in->dim; d++) row[d] += v[(size_t)c * in->dim + d];
  for (uint32_t d = 0; d < in->dim; d++) row[d] /= (float)nv;
  in->has[i] = 1;
  return 0;
}

/* 1 when document doc (read through r) has every metadata pair of sp. */
static int meta_match(store_reader *r, const jobin_spec *sp, uint64_t doc,
                      ctxd_error *e, int *rc) {
  *rc = 0;
  for (size_t k = 0; k < sp->n_meta; k++) {
    uint32_t cid;
    const char *val;
    size_t vl;
    *rc = store_reader_doc_meta(r, doc, sp->meta[k].key, sp->meta[k].key_len,
                                &cid, &val, &vl, e);
    if (*rc) return 0;
    if (!val || vl != sp->meta[k].val_len ||
        memcmp(val, sp->meta[k].val, vl) != 0)
      return 0;
  }
  return 1;
}

static void report(const jobin_spec *sp, uint64_t done, uint64_t total) {
  if (sp->progress)
    sp->progress(sp->progress_arg, ORDER_PHASE_READ, done,
                 total > done ? total : done);
}

static int cancelled(const jobin_spec *sp, ctxd_error *e) {
  if (sp->cancel && atomic_load(sp->cancel))
    return ctxd_seterr(e, CTXD_ECANCELED, "cancelled while reading documents");
  return 0;
}

/* doc_ids given: look each one up, PAGE_DOCS per reader. */
static int read_listed(jobin *in, const jobin_spec *sp, const char *cname,
                       ctxd_error *e) {
  int rc = 0;
  for (size_t a = 0; a < sp->n_doc_ids && !rc; a += PAGE_DOCS) {
    store_reader *r;
    size_t b = a + PAGE_DOCS < sp->n_doc_ids ? a + PAGE_DOCS : sp->n_doc_ids;
    if ((rc = cancelled(sp, e)) || (rc = store_reader_begin(in->st, &r, e)))
      break;
    for (size_t i = a; i < b && !rc; i++) {
      const char *id = sp->doc_ids[i];
      uint64_t doc;
      rc = store_reader_doc_id(r, in->cid, id, strlen(id), &doc, e);
      if (rc == CTXD_ENOTFOUND) {
        rc = ctxd_seterr(e, CTXD_ENOTFOUND,
                         "doc_ids: document \"%.200s\" is not in collection "
                         "%s",
                         id, cname);
        break;
      }
      const char *t;
      size_t tl = 0;
      if (!rc && meta_match(r, sp, doc, e, &rc) && !rc &&
          !(rc = store_reader_doc_text(r, doc, &t, &tl, e)))
        rc = add_doc(in, r, sp, doc, id, strlen(id), tl, e);
    }
    store_reader_end(r);
    report(sp, b, sp->n_doc_ids);
  }
  return rc;
}

/* Every document of the collection, in pages. */
static int read_all(jobin *in, const jobin_spec *sp, uint64_t total,
                    ctxd_error *e) {
  uint64_t after = 0, seen = 0;
  int rc = 0;
  do {
    store_doc *docs = NULL;
    size_t n = 0;
    uint64_t next = 0;
    store_reader *r = NULL;
    if ((rc = cancelled(sp, e)) ||
        (rc = store_list(in->st, in->cid, after, PAGE_DOCS, &docs, &n, &next,
                         e)))
      break;
    if (n && (rc = store_reader_begin(in->st, &r, e)) == 0) {
      for (size_t i = 0; i < n && !rc; i++) {
        int keep = 1;
        for (size_t k = 0; k < sp->n_meta && keep; k++)
          keep = kv_has(docs[i].meta, docs[i].n_meta, &sp->meta[k]);
        if (keep)
          rc = add_doc(in, r, sp, docs[i].doc_seq, docs[i].id, docs[i].id_len,
                       docs[i].bytes, e);
      }
      store_reader_end(r);
    }
    store_docs_free(docs, n);
    seen += n;
    report(sp, seen, total);
    after = next;
  } while (!rc && after);
  return rc;
}

static int stored_text(void *arg, uint64_t i, const char **text, size_t *len,
                       ctxd_error *e) {
  jobin *in = arg;
  store_reader *r;
  const char *t;
  size_t n;
  int rc = store_reader_begin(in->st, &r, e);
  if (rc) return rc;
  rc = store_reader_doc_text(r, in->docs[i], &t, &n, e);
  if (rc == CTXD_ENOTFOUND) {
    rc = ctxd_seterr(e, CTXD_EPRECOND,
                     "document \"%.200s\" was deleted while the job ran",
                     in->ids[i]);
  } else if (rc == 0 && n + 1 > in->text_cap) {
    char *b = realloc(in->text, n + 1);
    if (!b)
      rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for a text of %zu bytes",
                       n);
    else {
      in->text = b;
      in->text_cap = n + 1;
    }
  }
  if (rc == 0) {
    memcpy(in->text, t, n);
    in->text[n] = '\0';
    *text = in->text;
    *len = n;
  }
  store_reader_end(r);
  return rc;
}

static int open_stored(jobin *in, store *st, coll_set *cs,
                       const jobin_spec *sp, ctxd_error *e) {
  coll_config cfg;
  store_collection sc;
  char emb[256];
  const char *name = sp->collection ? sp->collection : "";
  int rc = collections_resolve(cs, name, strlen(name), &in->cid, &cfg, e);
  if (rc) return rc;
  if ((rc = store_coll_get_id(st, in->cid, &sc, e))) return rc;
  in->st = st;
  in->fp = 0xcbf29ce484222325ull;
  in->dim = sp->vectors == JOBIN_VEC_EMBED ? 0 : sc.dim;
  rc = sp->n_doc_ids ? read_listed(in, sp, cfg.name, e)
                     : read_all(in, sp, sc.documents, e);
  if (rc) return rc;

  uint64_t need = UINT64_MAX, with = 0;
  for (uint64_t i = 0; i < in->n; i++) {
    with += in->has[i];
    if (!in->has[i] && need == UINT64_MAX) need = i;
  }
  if (need != UINT64_MAX) {
    if (sp->vectors == JOBIN_VEC_GIVEN)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "document \"%.200s\" has no stored vector (vectors "
                         "\"given\" wants one for every document)",
                         in->ids[need]);
    if ((rc = embedder_text(cs, sp, emb, sizeof emb, e)) ||
        (rc = make_embedder(in, emb, e)))
      return rc;
    if (!in->emb)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "document \"%.200s\" has no stored vector, and "
                         "collection %s has no embedder (%s): give one "
                         "(embedder)",
                         in->ids[need], cfg.name, emb);
    if (with && in->emb->dim != in->dim)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "document \"%.200s\" has no stored vector, and "
                         "the embedder (%s) makes %u dimensions where the "
                         "stored vectors of collection %s have %u",
                         in->ids[need], emb, in->emb->dim, cfg.name, in->dim);
  } else {
    snprintf(emb, sizeof emb, "-");
  }

  snprintf(in->tag, sizeof in->tag, "collection:%u:%llu:%016llx|%.150s|%s",
           in->cid, (unsigned long long)in->n, (unsigned long long)in->fp, emb,
           jobin_vectors_name(sp->vectors));

  order_input *o = &in->in;
  memset(o, 0, sizeof *o);
  o->n = in->n;
  o->ids = (const char *const *)in->ids;
  if (with) {
    o->dim = in->dim;
    o->vectors = in->vecs;
    o->has_vector = with == in->n ? NULL : in->has;
  }
  o->get_text = stored_text;
  o->text_arg = in;
  o->input_tag = in->tag;
  return 0;
}

/* ---- the handle ------------------------------------------------------------ */

int jobin_open(store *st, coll_set *cs, const jobin_spec *sp, jobin **out,
               ctxd_error *e) {
  jobin *in = calloc(1, sizeof *in);
  int rc;
  *out = NULL;
  if (!in) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  in->max_docs = sp->max_docs && sp->max_docs < ORDER_DOCS_MAX
                     ? sp->max_docs
                     : ORDER_DOCS_MAX;
  rc = sp->jsonl_path && *sp->jsonl_path ? open_jsonl(in, cs, sp, e)
                                         : open_stored(in, st, cs, sp, e);
  if (rc) {
    jobin_free(in);
    return rc;
  }
  *out = in;
  return 0;
}

order_input *jobin_input(jobin *in) { return &in->in; }

const embedder *jobin_embedder(jobin *in) { return in->emb; }

void jobin_free(jobin *in) {
  if (!in) return;
  order_jsonl_free(in->jsonl);
  embedder_free(in->emb);
  for (uint64_t i = 0; i < in->n; i++) free(in->ids[i]);
  free(in->ids);
  free(in->docs);
  free(in->vecs);
  free(in->has);
  free(in->text);
  free(in);
}
