/* handlers_retrieval.c - the ctxd.v1.Retrieval service: Search and
 * SearchBatch over a collection's chunks (coll_search: vector, lexical
 * BM25, or hybrid reciprocal rank fusion). SelectContext is in
 * handlers_select.c.
 *
 * Search is the daemon's hot path, so it allocates nothing of its own for
 * a usual query: the request is read in place with the pbw reader (strings
 * and filters point into the message, the query vector is copied to the
 * stack), and the response is encoded by hand into a per-thread buffer that
 * rpc_send copies once into the call's output. Callbacks run on worker
 * threads, never on the loop. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coll.h"
#include "collections.h"
#include "ctx.h"
#include "err.h"
#include "grpc_wire.h"
#include "handlers.h"
#include "rpc.h"
#include "store.h"
#include "utf8.h"
#include "vindex.h"

/* Limits of one query (INVALID_ARGUMENT beyond; also in the README). */
#define SEARCH_DEFAULT_K 10
#define SEARCH_META_KEY_MAX 256    /* as for stored metadata keys */
#define SEARCH_META_VAL_MAX 65536
#define SEARCH_EF_MAX 32768        /* ef_search */
#define SEARCH_NPROBE_MAX 65536    /* nprobe */
#define SEARCH_BATCH_MAX 1024      /* queries of one SearchBatch */

/* Filters and vectors up to these sizes live on the stack. */
#define STACK_DOC_IDS 16
#define STACK_META 8
#define STACK_DIM 1024

/* The per-thread response buffer is kept between calls up to this size
 * (larger ones, for with_text answers of many hits, are given back). */
#define OUT_KEEP_BYTES (1u << 20)

/* ---- decoding -------------------------------------------------------------- */

/* A SearchRequest read in place: every pointer is into the message. */
typedef struct search_req {
  const uint8_t *msg;
  size_t len;
  const char *text;
  size_t text_len;
  uint32_t n_vec; /* query vector components (packed and unpacked) */
  uint32_t k;
  const char *mode;
  size_t mode_len;
  const char *coll;
  size_t coll_len;
  uint32_t n_doc_ids, n_meta;
  int with_text;
  uint32_t ef_search, nprobe;
  int mode_id; /* COLL_MODE_*, after checking */
} search_req;

static uint32_t u32_sat(uint64_t v) {
  return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* Read the scalar fields and count the repeated ones. A known field with
 * the wrong wire type is malformed, as protobuf would have it. */
static int req_decode(const uint8_t *msg, size_t len, search_req *q,
                      ctxd_error *e) {
  pbw_reader r;
  pbw_field f;
  int rc;
  memset(q, 0, sizeof *q);
  q->msg = msg;
  q->len = len;
  q->text = "";
  q->mode = "";
  q->coll = "";
  pbw_init(&r, msg, len);
  while ((rc = pbw_next(&r, &f)) == 1) {
    int want = 0; /* the wire type the field must have, -1 for either */
    switch (f.num) {
      case 1: case 4: case 5: case 6: case 7: want = 2; break;
      case 2: want = -1; break;
      case 3: case 8: case 9: case 10: want = 0; break;
      default: continue; /* unknown fields are skipped */
    }
    if (want >= 0 && f.wire_type != want) goto bad;
    switch (f.num) {
      case 1: q->text = (const char *)f.data; q->text_len = f.len; break;
      case 2:
        if (f.wire_type == 2) {
          if (f.len % 4) goto bad;
          q->n_vec = u32_sat((uint64_t)q->n_vec + f.len / 4);
        } else if (f.wire_type == 5) {
          q->n_vec = u32_sat((uint64_t)q->n_vec + 1);
        } else {
          goto bad;
        }
        break;
      case 3: q->k = u32_sat(f.varint); break;
      case 4: q->mode = (const char *)f.data; q->mode_len = f.len; break;
      case 5: q->coll = (const char *)f.data; q->coll_len = f.len; break;
      case 6: q->n_doc_ids = u32_sat((uint64_t)q->n_doc_ids + 1); break;
      case 7: q->n_meta = u32_sat((uint64_t)q->n_meta + 1); break;
      case 8: q->with_text = f.varint != 0; break;
      case 9: q->ef_search = u32_sat(f.varint); break;
      case 10: q->nprobe = u32_sat(f.varint); break;
    }
  }
  if (rc == 0) return 0;
bad:
  return ctxd_seterr(e, CTXD_EINVAL, "malformed SearchRequest message");
}

static int mode_is(const search_req *q, const char *name) {
  size_t n = strlen(name);
  return q->mode_len == n && memcmp(q->mode, name, n) == 0;
}

/* Check everything that does not need the collection. */
static int req_check(search_req *q, ctxd_error *e) {
  size_t bad;
  if (!utf8_valid(q->text, q->text_len, &bad))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "text is not valid UTF-8 at byte offset %zu", bad);
  if (q->k == 0) q->k = SEARCH_DEFAULT_K;
  /* Over a limit on the work of one request: RESOURCE_EXHAUSTED (k,
   * ef_search, nprobe, filter sizes, batch size); a value that means
   * nothing: INVALID_ARGUMENT. */
  if (q->k > COLL_K_MAX)
    return ctxd_seterr(e, CTXD_ELIMIT, "k %u is more than the limit of %d",
                       q->k, COLL_K_MAX);
  if (q->n_vec > VINDEX_DIM_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "vector has %u dimensions, more than the limit of %d",
                       q->n_vec, VINDEX_DIM_MAX);
  if (q->mode_len == 0)
    q->mode_id = q->text_len ? COLL_MODE_HYBRID : COLL_MODE_VECTOR;
  else if (mode_is(q, "vector"))
    q->mode_id = COLL_MODE_VECTOR;
  else if (mode_is(q, "lexical"))
    q->mode_id = COLL_MODE_LEXICAL;
  else if (mode_is(q, "hybrid"))
    q->mode_id = COLL_MODE_HYBRID;
  else
    return ctxd_seterr(e, CTXD_EINVAL,
                       "mode \"%.*s\" is not vector, lexical or hybrid",
                       (int)(q->mode_len > 32 ? 32 : q->mode_len), q->mode);
  if (!q->text_len && !q->n_vec)
    return ctxd_seterr(e, CTXD_EINVAL, "the query has neither text nor vector");
  if (q->mode_id != COLL_MODE_VECTOR && !q->text_len)
    return ctxd_seterr(e, CTXD_EINVAL, "mode %s needs query text",
                       q->mode_id == COLL_MODE_LEXICAL ? "lexical" : "hybrid");
  if (q->ef_search > SEARCH_EF_MAX)
    return ctxd_seterr(e, CTXD_ELIMIT,
                       "ef_search %u is more than the limit of %d",
                       q->ef_search, SEARCH_EF_MAX);
  if (q->nprobe > SEARCH_NPROBE_MAX)
    return ctxd_seterr(e, CTXD_ELIMIT, "nprobe %u is more than the limit of %d",
                       q->nprobe, SEARCH_NPROBE_MAX);
  if (q->n_doc_ids > COLL_DOC_IDS_MAX)
    return ctxd_seterr(e, CTXD_ELIMIT,
                       "doc_ids has %u entries, more than the limit of %d",
                       q->n_doc_ids, COLL_DOC_IDS_MAX);
  if (q->n_meta > COLL_META_EQ_MAX)
    return ctxd_seterr(e, CTXD_ELIMIT,
                       "metadata has %u filters, more than the limit of %d",
                       q->n_meta, COLL_META_EQ_MAX);
  return 0;
}

/* The repeated fields, gathered into caller-provided arrays (sized from
 * req_decode's counts) and checked: the vector (finite components), the
 * doc_ids (1..STORE_ID_MAX bytes of UTF-8) and the metadata filters. */
static int req_gather(const search_req *q, float *vec, const char **ids,
                      size_t *id_lens, store_kv *meta, ctxd_error *e) {
  pbw_reader r, mr;
  pbw_field f, g;
  uint32_t nv = 0, ni = 0, nm = 0;
  size_t bad;
  pbw_init(&r, q->msg, q->len);
  while (pbw_next(&r, &f) == 1) {
    if (f.num == 2 && f.wire_type == 2) {
      memcpy(vec + nv, f.data, f.len); /* little-endian, as on the wire */
      nv += (uint32_t)(f.len / 4);
    } else if (f.num == 2 && f.wire_type == 5) {
      uint32_t u = (uint32_t)f.varint;
      memcpy(vec + nv++, &u, 4);
    } else if (f.num == 6) {
      if (f.len == 0 || f.len > STORE_ID_MAX)
        return ctxd_seterr(e, CTXD_EINVAL,
                           "doc_ids[%u] is %zu bytes (ids are 1 to %d bytes)",
                           ni, f.len, STORE_ID_MAX);
      if (!utf8_valid((const char *)f.data, f.len, &bad))
        return ctxd_seterr(e, CTXD_EINVAL,
                           "doc_ids[%u] is not valid UTF-8 at byte offset %zu",
                           ni, bad);
      ids[ni] = (const char *)f.data;
      id_lens[ni++] = f.len;
    } else if (f.num == 7) {
      store_kv *kv = &meta[nm];
      kv->key = kv->val = "";
      kv->key_len = kv->val_len = 0;
      pbw_init(&mr, f.data, f.len);
      int rc;
      while ((rc = pbw_next(&mr, &g)) == 1) {
        if (g.num != 1 && g.num != 2) continue;
        if (g.wire_type != 2)
          return ctxd_seterr(e, CTXD_EINVAL, "metadata[%u] is malformed", nm);
        if (g.num == 1) {
          kv->key = (const char *)g.data;
          kv->key_len = g.len;
        } else {
          kv->val = (const char *)g.data;
          kv->val_len = g.len;
        }
      }
      if (rc < 0)
        return ctxd_seterr(e, CTXD_EINVAL, "metadata[%u] is malformed", nm);
      if (kv->key_len == 0 || kv->key_len > SEARCH_META_KEY_MAX ||
          kv->val_len > SEARCH_META_VAL_MAX)
        return ctxd_seterr(e, CTXD_EINVAL,
                           "metadata[%u]: the key must be 1 to %d bytes and "
                           "the value at most %d",
                           nm, SEARCH_META_KEY_MAX, SEARCH_META_VAL_MAX);
      if (!utf8_valid(kv->key, kv->key_len, NULL) ||
          !utf8_valid(kv->val, kv->val_len, NULL))
        return ctxd_seterr(e, CTXD_EINVAL, "metadata[%u] is not valid UTF-8",
                           nm);
      nm++;
    }
  }
  for (uint32_t i = 0; i < nv; i++)
    if (!isfinite(vec[i]))
      return ctxd_seterr(e, CTXD_EINVAL,
                         "vector component %u is not a finite number", i);
  return 0;
}

/* ---- encoding ------------------------------------------------------------ */

static size_t vlen(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    n++;
  }
  return n;
}

/* Bytes of a non-zero varint field (tag < 16), 0 for a zero value. */
static size_t vfield(uint64_t v) {
  return v ? 1 + vlen(v) : 0;
}

/* Chunk { doc_id 1, ordinal 2, byte_start 3, byte_end 4, tokens 5, text 6 } */
static size_t chunk_size(const coll_hit *h, int with_text) {
  size_t n = 1 + vlen(h->doc_id_len) + h->doc_id_len + vfield(h->ordinal) +
             vfield(h->span.byte_start) + vfield(h->span.byte_end) +
             vfield(h->span.tokens);
  if (with_text && h->text_len) n += 1 + vlen(h->text_len) + h->text_len;
  return n;
}

/* SearchHit { Chunk chunk 1, float score 2 } */
static size_t hit_size(const coll_hit *h, int with_text) {
  size_t c = chunk_size(h, with_text);
  return 1 + vlen(c) + c + (h->score != 0.0f ? 5 : 0);
}

/* SearchResponse { repeated SearchHit hits 1 } */
static size_t resp_size(const coll_result *res, int with_text) {
  size_t n = 0;
  for (size_t i = 0; i < res->n; i++) {
    size_t h = hit_size(&res->hits[i], with_text);
    n += 1 + vlen(h) + h;
  }
  return n;
}

static uint8_t *put_tag_len(uint8_t *p, uint32_t field, size_t len) {
  *p++ = (uint8_t)(field << 3 | 2);
  return p + pbw_put_varint(p, len);
}

static uint8_t *put_vfield(uint8_t *p, uint32_t field, uint64_t v) {
  if (!v) return p;
  *p++ = (uint8_t)(field << 3);
  return p + pbw_put_varint(p, v);
}

static uint8_t *put_resp(uint8_t *p, const coll_result *res, int with_text) {
  for (size_t i = 0; i < res->n; i++) {
    const coll_hit *h = &res->hits[i];
    p = put_tag_len(p, 1, hit_size(h, with_text));
    p = put_tag_len(p, 1, chunk_size(h, with_text));
    p = put_tag_len(p, 1, h->doc_id_len);
    memcpy(p, h->doc_id, h->doc_id_len);
    p += h->doc_id_len;
    p = put_vfield(p, 2, h->ordinal);
    p = put_vfield(p, 3, h->span.byte_start);
    p = put_vfield(p, 4, h->span.byte_end);
    p = put_vfield(p, 5, h->span.tokens);
    if (with_text && h->text_len) {
      p = put_tag_len(p, 6, h->text_len);
      memcpy(p, h->text, h->text_len);
      p += h->text_len;
    }
    if (h->score != 0.0f) {
      uint32_t u;
      memcpy(&u, &h->score, 4);
      *p++ = 2 << 3 | 5;
      for (int b = 0; b < 4; b++) *p++ = (uint8_t)(u >> (8 * b));
    }
  }
  return p;
}

/* The calling thread's response buffer. A pthread key frees it when the
 * worker thread exits. */
typedef struct out_tls {
  uint8_t *buf;
  size_t cap;
  int registered;
} out_tls;

static __thread out_tls out;
static pthread_key_t out_key;
static pthread_once_t out_once = PTHREAD_ONCE_INIT;

static void out_free(void *p) {
  out_tls *t = p;
  free(t->buf);
  t->buf = NULL;
  t->cap = 0;
}

static void out_key_init(void) {
  pthread_key_create(&out_key, out_free);
}

/* The buffer, grown to at least `need` bytes; NULL when out of memory. */
static uint8_t *out_reserve(size_t need) {
  if (need <= out.cap) return out.buf;
  if (!out.registered) {
    pthread_once(&out_once, out_key_init);
    pthread_setspecific(out_key, &out);
    out.registered = 1;
  }
  size_t cap = out.cap ? out.cap : 16384;
  while (cap < need) cap *= 2;
  uint8_t *nb = realloc(out.buf, cap);
  if (!nb) return NULL;
  out.buf = nb;
  out.cap = cap;
  return nb;
}

/* After a call: give a large buffer back, keep a small one. */
static void out_release(void) {
  if (out.cap > OUT_KEEP_BYTES) out_free(&out);
}

/* ---- searching ------------------------------------------------------------ */

/* Resolve the collection, gather the filters and the vector, and search.
 * The scratch arrays live here, on the stack for usual sizes. */
static int run_query(ctxd_ctx *ctx, const search_req *q, coll_result *res,
                     ctxd_error *e) {
  float vec_stack[STACK_DIM];
  const char *ids_stack[STACK_DOC_IDS];
  size_t id_lens_stack[STACK_DOC_IDS];
  store_kv meta_stack[STACK_META];
  float *vec = vec_stack;
  const char **ids = ids_stack;
  size_t *id_lens = id_lens_stack;
  store_kv *meta = meta_stack;
  uint32_t cid;
  coll_config cfg;
  int rc = collections_resolve(ctx->cs, q->coll, q->coll_len, &cid, &cfg, e);
  if (rc) return rc;
  if (q->n_vec && q->n_vec != cfg.dim)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "vector has %u dimensions; collection \"%s\" has "
                       "dimension %u",
                       q->n_vec, cfg.name, cfg.dim);
  if (q->n_vec > STACK_DIM) vec = malloc(q->n_vec * sizeof *vec);
  if (q->n_doc_ids > STACK_DOC_IDS) {
    ids = malloc(q->n_doc_ids * sizeof *ids);
    id_lens = malloc(q->n_doc_ids * sizeof *id_lens);
  }
  if (q->n_meta > STACK_META) meta = malloc(q->n_meta * sizeof *meta);
  if (!vec || !ids || !id_lens || !meta) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for the query");
    goto done;
  }
  rc = req_gather(q, vec, ids, id_lens, meta, e);
  if (rc) goto done;
  coll_query cq;
  memset(&cq, 0, sizeof cq);
  cq.text = q->text;
  cq.text_len = q->text_len;
  cq.vector = q->n_vec ? vec : NULL;
  cq.dim = q->n_vec;
  cq.k = q->k;
  cq.mode = q->mode_id;
  cq.ef_search = q->ef_search;
  cq.nprobe = q->nprobe;
  cq.doc_ids = ids;
  cq.doc_id_lens = id_lens;
  cq.n_doc_ids = q->n_doc_ids;
  cq.meta_eq = meta;
  cq.n_meta_eq = q->n_meta;
  cq.with_text = q->with_text;
  rc = coll_search(ctx->cs, cid, &cq, res, e);
done:
  if (vec != vec_stack) free(vec);
  if (ids != ids_stack) free(ids);
  if (id_lens != id_lens_stack) free(id_lens);
  if (meta != meta_stack) free(meta);
  return rc;
}

static void search_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  search_req q;
  coll_result res;
  memset(&res, 0, sizeof res);
  ctxd_clearerr(&e);
  if (req_decode(msg, len, &q, &e) || req_check(&q, &e) ||
      run_query(ctx, &q, &res, &e)) {
    rpc_finish_error(c, &e);
    return;
  }
  size_t n = resp_size(&res, q.with_text);
  uint8_t *buf = n ? out_reserve(n) : (uint8_t *)"";
  if (!buf) {
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory for the response");
  } else {
    put_resp(buf, &res, q.with_text);
    if (rpc_send(c, buf, n) == 0) rpc_finish(c, GRPC_OK, NULL);
  }
  coll_result_free(&res);
  out_release();
}

const rpc_method h_retrieval_search = {"/ctxd.v1.Retrieval/Search", RPC_UNARY,
                                       0, search_on_message, NULL, NULL, NULL};

/* ---- SearchBatch ---------------------------------------------------------- */

/* Every query is checked (collection included) before any is searched, so
 * a bad query costs no search; an error names the query's index. The
 * results come back in request order, one SearchResponse each. */
static void batch_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  pbw_reader r;
  pbw_field f;
  search_req *qs = NULL;
  size_t nq = 0, used = 0;
  int rc;
  ctxd_clearerr(&e);
  pbw_init(&r, msg, len);
  while ((rc = pbw_next(&r, &f)) == 1)
    if (f.num == 1) {
      if (f.wire_type != 2) {
        rc = -1;
        break;
      }
      nq++;
    }
  if (rc < 0) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed SearchBatchRequest message");
    return;
  }
  if (nq > SEARCH_BATCH_MAX) {
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED,
               "%zu queries, more than the limit of %d", nq, SEARCH_BATCH_MAX);
    return;
  }
  qs = calloc(nq ? nq : 1, sizeof *qs);
  if (!qs) {
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  size_t i = 0;
  pbw_init(&r, msg, len);
  while (pbw_next(&r, &f) == 1) {
    if (f.num != 1) continue;
    uint32_t cid;
    coll_config cfg;
    if (req_decode(f.data, f.len, &qs[i], &e) || req_check(&qs[i], &e) ||
        collections_resolve(ctx->cs, qs[i].coll, qs[i].coll_len, &cid, &cfg,
                            &e)) {
      rpc_finish(c, ctxd_err_grpc_status(e.code), "queries[%zu]: %s", i,
                 e.msg);
      goto done;
    }
    if (qs[i].n_vec && qs[i].n_vec != cfg.dim) {
      rpc_finish(c, GRPC_INVALID_ARGUMENT,
                 "queries[%zu]: vector has %u dimensions; collection \"%s\" "
                 "has dimension %u",
                 i, qs[i].n_vec, cfg.name, cfg.dim);
      goto done;
    }
    i++;
  }
  for (i = 0; i < nq; i++) {
    coll_result res;
    memset(&res, 0, sizeof res);
    if (rpc_is_done(c)) goto done; /* cancelled or past its deadline */
    if (run_query(ctx, &qs[i], &res, &e)) {
      rpc_finish(c, ctxd_err_grpc_status(e.code), "queries[%zu]: %s", i,
                 e.msg);
      goto done;
    }
    size_t n = resp_size(&res, qs[i].with_text);
    uint8_t *buf = out_reserve(used + 1 + vlen(n) + n);
    if (!buf) {
      coll_result_free(&res);
      rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory for the response");
      goto done;
    }
    uint8_t *p = put_tag_len(buf + used, 1, n);
    p = put_resp(p, &res, qs[i].with_text);
    used = (size_t)(p - buf);
    coll_result_free(&res);
  }
  if (rpc_send(c, out.buf ? out.buf : (const uint8_t *)"", used) == 0)
    rpc_finish(c, GRPC_OK, NULL);
done:
  free(qs);
  out_release();
}

const rpc_method h_retrieval_search_batch = {
    "/ctxd.v1.Retrieval/SearchBatch", RPC_UNARY, 0, batch_on_message, NULL,
    NULL, NULL};
