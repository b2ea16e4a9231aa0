/* handlers_documents.c - the ctxd.v1.Documents service: Put, PutStream,
 * Get, Delete, List and Chunk, on top of index/store and index/chunk.
 *
 * Every request is checked whole before anything is written: a bad document
 * is answered INVALID_ARGUMENT (Put) or a PutError (PutStream) and never
 * reaches the store. Callbacks run on worker threads, one at a time per call
 * (rpc.h), so the PutStream state needs no lock. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunk.h"
#include "ctx.h"
#include "ctxd/v1/documents.pb-c.h"
#include "err.h"
#include "handlers.h"
#include "log.h"
#include "rpc.h"
#include "store.h"
#include "utf8.h"
#include "writer.h"

#define LIST_DEFAULT_PAGE 100
#define LIST_MAX_PAGE 10000
/* Chunks one document may make (RESOURCE_EXHAUSTED beyond): bounds the
 * chunk list a tiny max_tokens on a 64 MiB text would otherwise allocate
 * (24 bytes a chunk in memory, a record each in LMDB). 512-token chunks
 * reach it only past ~2 GB of text. */
#define DOC_MAX_CHUNKS (1u << 20)
/* A page also stops once its documents reach this many encoded bytes (at
 * least one document per page), so it fits a stock client's default 4 MiB
 * receive limit even with large metadata; next_page_token goes on from there. */
#define LIST_PAGE_BYTES (3u << 20)

/* Metadata limits, per document. Metadata is copied into every List page and
 * Get response, so unbounded metadata would let one document make those
 * (and a PutStream batch) arbitrarily large. */
#define META_MAX_ENTRIES 1024
#define META_MAX_KEY_BYTES 256
#define META_MAX_BYTES (64 * 1024) /* keys plus values */

/* A PutError echoes the id it is about; an id over this length (so already
 * refused as too long) is echoed as its first STORE_ID_MAX bytes plus "...",
 * so that an ack always fits a client's default 4 MiB message limit. */
#define ERR_ID_ECHO_MAX 4096

/* A PutStream sends its ack early once the errors gathered for it reach
 * this many bytes (ids plus reasons), whatever the batch holds. */
#define PS_ERR_BYTES_MAX (1024 * 1024)

/* ---- small helpers --------------------------------------------------------- */

/* A write is not started with less than WRITER_MIN_LEFT_NS (2 ms) left
 * before the call's deadline: a durable commit costs at least an fsync, so
 * the client would most likely give up first and be left not knowing
 * whether its write landed. Refusing up front makes DEADLINE_EXCEEDED mean
 * "not written". The writer checks again when it starts a group. */

/* The call is over, or its deadline is too close for a write to start. The
 * transport answers DEADLINE_EXCEEDED itself too, but its timer may fire
 * after a worker has picked the request up. */
static int call_expired(rpc_call *c) {
  if (rpc_is_done(c)) return 1;
  uint64_t dl = rpc_deadline_ns(c);
  if (!dl) return 0;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t now = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
  return now + WRITER_MIN_LEFT_NS >= dl;
}

static void finish_err(rpc_call *c, const ctxd_error *e) {
  rpc_finish(c, ctxd_err_grpc_status(e->code), "%s", e->msg);
}

/* Read one protobuf varint; 0 or -1 when truncated/overlong. */
static int wire_varint(const uint8_t *p, size_t n, size_t *off, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*off >= n) return -1;
    uint8_t b = p[(*off)++];
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return 0;
    }
  }
  return -1;
}

/* Step to the next field of message p[0..n) from *off. Returns 1 with
 * *val and *vlen set for a length-delimited field, 0 for any other field, -1 at
 * the end or on bad input. Used only on messages protobuf-c already
 * accepted, to see what its C strings hide (below). */
static int wire_next(const uint8_t *p, size_t n, size_t *off, uint32_t *field,
                     const uint8_t **val, size_t *vlen) {
  uint64_t key, v;
  if (*off >= n || wire_varint(p, n, off, &key)) return -1;
  *field = (uint32_t)(key >> 3);
  switch (key & 7) {
  case 0:
    return wire_varint(p, n, off, &v) ? -1 : 0;
  case 1:
    if (n - *off < 8) return -1;
    *off += 8;
    return 0;
  case 5:
    if (n - *off < 4) return -1;
    *off += 4;
    return 0;
  case 2:
    if (wire_varint(p, n, off, &v) || v > n - *off) return -1;
    *val = p + *off;
    *vlen = (size_t)v;
    *off += (size_t)v;
    return 1;
  default:
    return -1;
  }
}

/* 1 when a string field numbered `field` of p[0..n) holds a NUL byte.
 * protobuf-c hands strings over as C strings, so a NUL (valid UTF-8 for
 * U+0000) would silently cut an id or a text short; ctxd refuses such input
 * rather than store a truncated copy. */
static int wire_field_has_nul(const uint8_t *p, size_t n, uint32_t field) {
  size_t off = 0, vlen = 0;
  uint32_t f;
  const uint8_t *val;
  int k;
  while ((k = wire_next(p, n, &off, &f, &val, &vlen)) >= 0)
    if (k == 1 && f == field && memchr(val, 0, vlen)) return 1;
  return 0;
}

/* The same for the Document of an encoded PutRequest: its id (1), text (2)
 * and metadata entries (3: key 1, value 2). *what names the field. */
static int put_has_nul(const uint8_t *msg, size_t len, const char **what) {
  size_t off = 0, vlen = 0;
  uint32_t f;
  const uint8_t *doc = NULL, *val;
  size_t doc_len = 0;
  int k;
  while ((k = wire_next(msg, len, &off, &f, &val, &vlen)) >= 0)
    if (k == 1 && f == 1) {
      doc = val;
      doc_len = vlen;
    }
  if (!doc) return 0;
  off = 0;
  while ((k = wire_next(doc, doc_len, &off, &f, &val, &vlen)) >= 0) {
    if (k != 1) continue;
    if ((f == 1 || f == 2) && memchr(val, 0, vlen)) {
      *what = f == 1 ? "id" : "text";
      return 1;
    }
    if (f == 3 && (wire_field_has_nul(val, vlen, 1) ||
                   wire_field_has_nul(val, vlen, 2))) {
      *what = "metadata";
      return 1;
    }
  }
  return 0;
}

/* How error messages name a document: its id, or a placeholder for one
 * sent without (the server would have generated its id). */
static const char *doc_name(const char *id) {
  return *id ? id : "(no id)";
}

/* Check a client id taken from a request: 1..STORE_ID_MAX bytes of UTF-8. */
static int check_id(const char *id, size_t len, int allow_empty,
                    ctxd_error *e) {
  size_t bad;
  if (len == 0 && !allow_empty)
    return ctxd_seterr(e, CTXD_EINVAL, "id is required");
  if (len > STORE_ID_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "id is %zu bytes, more than the limit of %d bytes", len,
                       STORE_ID_MAX);
  if (!utf8_valid(id, len, &bad))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "id is not valid UTF-8 at byte offset %zu", bad);
  return 0;
}

/* Resolve request chunk options against the configured defaults. A zero
 * field means "the server's default"; a defaulted overlap that does not fit
 * under the client's max_tokens is capped at half of it rather than
 * refused, since the client never asked for it. */
static int chunk_opts_resolve(const ctxd_config *cfg,
                              const Ctxd__V1__ChunkOptions *o, chunk_opts *out,
                              ctxd_error *e) {
  uint32_t max = o && o->max_tokens ? o->max_tokens : cfg->chunk_max_tokens;
  uint32_t ov = o && o->overlap_tokens ? o->overlap_tokens
                                       : cfg->chunk_overlap_tokens;
  if (max == 0) max = CHUNK_DEFAULT_MAX_TOKENS;
  if (max > CHUNK_MAX_MAX_TOKENS)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "chunking.max_tokens %u is more than the limit of %u",
                       max, CHUNK_MAX_MAX_TOKENS);
  if (!(o && o->overlap_tokens) && ov >= max) ov = max / 2;
  if (ov >= max)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "chunking.overlap_tokens (%u) must be less than "
                       "max_tokens (%u)",
                       ov, max);
  out->max_tokens = max;
  out->overlap_tokens = ov;
  out->max_chunks = DOC_MAX_CHUNKS;
  return 0;
}

/* ---- one document, validated and chunked ------------------------------------ */

/* A PutRequest ready for store_put: `doc` points into `req`, `chunks` and
 * `meta` are owned. */
typedef struct prepared {
  Ctxd__V1__PutRequest *req;
  store_put_doc doc;
  chunk_span *chunks;
  store_kv *meta;
} prepared;

static void prepared_free(prepared *p) {
  if (p->req) ctxd__v1__put_request__free_unpacked(p->req, NULL);
  free(p->chunks);
  free(p->meta);
  memset(p, 0, sizeof *p);
}

typedef struct meta_ref {
  const Ctxd__V1__Document__MetadataEntry *kv;
  size_t idx;
} meta_ref;

static int meta_ref_cmp(const void *a, const void *b) {
  const meta_ref *x = a, *y = b;
  int c = strcmp(x->kv->key, y->kv->key);
  if (c) return c;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Decode, validate and chunk one PutRequest. On success `p` owns the
 * unpacked request. On failure e says why and *bad_id (static or pointing
 * into nothing that outlives the call) names the document for a PutError:
 * the caller copies it before freeing anything. */
static int prepare(const ctxd_ctx *ctx, const uint8_t *msg, size_t len,
                   prepared *p, char **bad_id, ctxd_error *e) {
  memset(p, 0, sizeof *p);
  *bad_id = NULL;
  const char *nul_what;
  meta_ref *refs = NULL;
  int rc;
  p->req = ctxd__v1__put_request__unpack(NULL, len, msg);
  if (!p->req)
    return ctxd_seterr(e, CTXD_EINVAL, "malformed PutRequest message");
  const Ctxd__V1__Document *d = p->req->document;
  if (!d) {
    rc = ctxd_seterr(e, CTXD_EINVAL, "PutRequest.document is missing");
    goto fail;
  }
  size_t id_len = strlen(d->id);
  if (put_has_nul(msg, len, &nul_what)) {
    if (strcmp(nul_what, "id") != 0 && utf8_valid(d->id, id_len, NULL))
      *bad_id = d->id;
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "document %s%s%s contains a NUL byte, which ctxd does not "
                     "store",
                     *bad_id ? d->id : "", *bad_id ? ": " : "", nul_what);
    goto fail;
  }
  if (utf8_valid(d->id, id_len, NULL)) *bad_id = d->id;
  rc = check_id(d->id, id_len, 1, e);
  if (rc) goto fail;
  size_t text_len = strlen(d->text), bad;
  if (!utf8_valid(d->text, text_len, &bad)) {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "document %s: text is not valid UTF-8 at byte offset %zu",
                     doc_name(d->id), bad);
    goto fail;
  }
  /* Metadata: UTF-8 keys and values; a key sent twice keeps its last value
   * (protobuf map semantics); stored sorted by key. */
  size_t n_meta = 0;
  if (d->n_metadata > META_MAX_ENTRIES) {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "document %s: metadata has %zu entries, more than the "
                     "limit of %d",
                     doc_name(d->id), d->n_metadata, META_MAX_ENTRIES);
    goto fail;
  }
  if (d->n_metadata) {
    size_t meta_bytes = 0;
    for (size_t i = 0; i < d->n_metadata; i++) {
      const Ctxd__V1__Document__MetadataEntry *kv = d->metadata[i];
      size_t kl = strlen(kv->key);
      if (kl > META_MAX_KEY_BYTES) {
        rc = ctxd_seterr(e, CTXD_EINVAL,
                         "document %s: metadata key \"%.32s...\" is %zu bytes, "
                         "more than the limit of %d",
                         doc_name(d->id), kv->key, kl, META_MAX_KEY_BYTES);
        goto fail;
      }
      meta_bytes += kl + strlen(kv->value);
    }
    if (meta_bytes > META_MAX_BYTES) {
      rc = ctxd_seterr(e, CTXD_EINVAL,
                       "document %s: metadata is %zu bytes (keys and values), "
                       "more than the limit of %d",
                       doc_name(d->id), meta_bytes, META_MAX_BYTES);
      goto fail;
    }
    refs = malloc(d->n_metadata * sizeof *refs);
    p->meta = malloc(d->n_metadata * sizeof *p->meta);
    if (!refs || !p->meta) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
      goto fail;
    }
    for (size_t i = 0; i < d->n_metadata; i++) {
      const Ctxd__V1__Document__MetadataEntry *kv = d->metadata[i];
      if (!utf8_valid(kv->key, strlen(kv->key), &bad)) {
        rc = ctxd_seterr(e, CTXD_EINVAL,
                         "document %s: metadata key is not valid UTF-8 at byte "
                         "offset %zu",
                         doc_name(d->id), bad);
        goto fail;
      }
      if (!utf8_valid(kv->value, strlen(kv->value), &bad)) {
        rc = ctxd_seterr(e, CTXD_EINVAL,
                         "document %s: metadata value of key \"%s\" is not "
                         "valid UTF-8 at byte offset %zu",
                         doc_name(d->id), kv->key, bad);
        goto fail;
      }
      refs[i].kv = kv;
      refs[i].idx = i;
    }
    qsort(refs, d->n_metadata, sizeof *refs, meta_ref_cmp);
    for (size_t i = 0; i < d->n_metadata; i++) {
      if (i + 1 < d->n_metadata &&
          strcmp(refs[i].kv->key, refs[i + 1].kv->key) == 0)
        continue; /* a later duplicate wins */
      store_kv *kv = &p->meta[n_meta++];
      kv->key = refs[i].kv->key;
      kv->key_len = strlen(kv->key);
      kv->val = refs[i].kv->value;
      kv->val_len = strlen(kv->val);
    }
  }
  chunk_opts co;
  rc = chunk_opts_resolve(ctx->cfg, p->req->chunking, &co, e);
  if (rc) {
    char msg_copy[CTXD_ERRMSG_MAX];
    snprintf(msg_copy, sizeof msg_copy, "%s", e->msg);
    ctxd_seterr(e, rc, "document %s: %s", doc_name(d->id), msg_copy);
    goto fail;
  }
  size_t n_chunks = 0;
  rc = chunk_text(d->text, text_len, &co, ctx->tk, &p->chunks, &n_chunks, e);
  if (rc) {
    char msg_copy[CTXD_ERRMSG_MAX];
    snprintf(msg_copy, sizeof msg_copy, "%s", e->msg);
    ctxd_seterr(e, rc, "document %s: %s", doc_name(d->id), msg_copy);
    goto fail;
  }
  p->doc = (store_put_doc){.cid = ctx->cid,
                           .id = d->id,
                           .id_len = id_len,
                           .text = d->text,
                           .text_len = text_len,
                           .meta = p->meta,
                           .n_meta = n_meta,
                           .chunks = p->chunks,
                           .n_chunks = n_chunks};
  free(refs);
  return 0;
fail:
  free(refs);
  if (*bad_id) {
    /* The id lives in the request we are about to free: keep a copy. */
    *bad_id = strdup(*bad_id);
  }
  prepared_free(p);
  return rc;
}

/* ---- Put --------------------------------------------------------------------- */

/* Unary Put validates and chunks on the worker, then hands the document to
 * the writer (group commit, writer.h) and returns with the call still open:
 * the writer thread commits it with whatever else is queued and answers.
 * The call's state is its writer item, let go in on_close. Without a writer
 * (store.group_commit_docs = 1), or when the writer's queue is full, the
 * worker commits the document itself, one transaction per document. */

/* Answer a Put: the writer's callback (writer_answer_fn), also used for a
 * direct write. `owner` is the prepared document. */
static void put_answer(rpc_call *c, void *owner, int rc,
                       const store_put_result *res, const ctxd_error *e) {
  const prepared *p = owner;
  if (rc) {
    finish_err(c, e);
    return;
  }
  Ctxd__V1__PutResponse r = CTXD__V1__PUT_RESPONSE__INIT;
  r.id = (char *)res->id;
  r.chunks = (uint32_t)p->doc.n_chunks;
  r.replaced = res->replaced;
  r.tokens = res->tokens;
  if (rpc_send_pb(c, &r.base) == 0) rpc_finish(c, GRPC_OK, NULL);
}

static void put_release(void *owner) {
  prepared_free(owner);
  free(owner);
}

static void put_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  prepared p;
  char *bad_id = NULL;
  store_put_result res;
  ctxd_clearerr(&e);
  if (prepare(ctx, msg, len, &p, &bad_id, &e)) {
    free(bad_id);
    finish_err(c, &e);
    return;
  }
  if (call_expired(c)) {
    prepared_free(&p);
    rpc_finish(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded before the write");
    return;
  }
  if (ctx->wr) {
    /* The message, its chunk list and metadata index: what the queued
     * document holds, as PutStream counts it. */
    uint64_t bytes = len + p.doc.n_chunks * sizeof(chunk_span) +
                     p.doc.n_meta * sizeof(store_kv);
    prepared *hp = malloc(sizeof *hp);
    writer_item *item = NULL;
    int rc = CTXD_ENOMEM;
    if (hp) {
      *hp = p; /* doc points into the request and lists, not into p */
      rc = writer_submit(ctx->wr, c, &hp->doc, bytes, put_answer, put_release,
                         hp, &item);
      if (rc == 0) {
        rpc_set_state(c, item);
        return;
      }
      free(hp);
    }
    if (rc == CTXD_EBUSY) {
      prepared_free(&p);
      rpc_finish(c, GRPC_UNAVAILABLE, "the server is shutting down");
      return;
    }
    /* Queue full (or no memory for an item): write it here, which holds
     * this worker and so slows the clients down instead of queueing more. */
  }
  int rc = store_put(ctx->st, &p.doc, 1, &res, &e);
  put_answer(c, &p, rc, rc ? NULL : &res, &e);
  prepared_free(&p);
}

static void put_on_close(rpc_call *c) {
  writer_call_closed(rpc_state(c));
  rpc_set_state(c, NULL);
}

const rpc_method h_documents_put = {"/ctxd.v1.Documents/Put",
                                    RPC_UNARY,
                                    0,
                                    put_on_message,
                                    NULL,
                                    NULL,
                                    put_on_close};

/* ---- PutStream ------------------------------------------------------------- */

/* Batching: documents are validated and chunked as they arrive and committed
 * together (one LMDB transaction, one fsync) when the batch reaches
 * put_batch_docs documents or put_batch_bytes text bytes, put_batch_ms after
 * its first document, or at half-close. Each commit sends one PutAck with
 * the ids now durable and the errors since the last ack.
 *
 * Store failures: out of space or memory (CTXD_ENOSPC, CTXD_ENOMEM,
 * CTXD_ELIMIT, also CTXD_EINVAL and CTXD_EBUSY) fail only that batch - its documents come back as PutErrors
 * carrying the reason and the stream goes on, since space may be freed and
 * the client can resend them. Any other store error (I/O, corruption) means
 * the store cannot be trusted with more writes: the failed documents are
 * acked as PutErrors and the call ends with the mapped status. A batch too
 * large for one transaction (CTXD_ELIMIT) or for the space left
 * (CTXD_ENOSPC) is first retried in halves, so what still fits is stored. */

typedef struct ps_err {
  char *id;
  char *reason;
} ps_err;

typedef struct ps_state {
  ctxd_ctx *ctx;
  prepared *pend; /* the batch */
  size_t n_pend, cap_pend;
  uint64_t pend_bytes; /* memory the batch holds: messages and chunk lists */
  uint64_t first_ns; /* CLOCK_MONOTONIC when the batch got its first entry */
  int timer_armed;
  /* Open-addressing set of the batch's client ids (index + 1; 0 = empty),
   * to spot an id sent twice before its first copy is committed. */
  uint32_t *slots;
  size_t n_slots;
  char **acked; /* ids committed since the last ack (owned) */
  size_t n_acked, cap_acked;
  ps_err *errs;
  size_t n_errs, cap_errs;
  uint64_t err_bytes; /* ids and reasons in errs */
  int fatal; /* a store error ended the call */
} ps_state;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t hash_bytes(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= (uint8_t)s[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

/* Find `id` among the pending documents (1) or not (0); when absent and
 * `insert_idx` >= 0, record it at that batch index. -1 on no memory. */
static int pend_ids_probe(ps_state *st, const char *id, size_t len,
                          long insert_idx) {
  if (st->n_slots < 2 * (st->n_pend + 1)) {
    /* Grow and rehash: keep the load factor under one half. */
    size_t ns = st->n_slots ? st->n_slots * 2 : 64;
    while (ns < 2 * (st->n_pend + 1)) ns *= 2;
    uint32_t *nsl = calloc(ns, sizeof *nsl);
    if (!nsl) return -1;
    for (size_t i = 0; i < st->n_pend; i++) {
      const store_put_doc *d = &st->pend[i].doc;
      if (!d->id_len) continue;
      size_t h = hash_bytes(d->id, d->id_len) & (ns - 1);
      while (nsl[h]) h = (h + 1) & (ns - 1);
      nsl[h] = (uint32_t)(i + 1);
    }
    free(st->slots);
    st->slots = nsl;
    st->n_slots = ns;
  }
  size_t h = hash_bytes(id, len) & (st->n_slots - 1);
  while (st->slots[h]) {
    const store_put_doc *d = &st->pend[st->slots[h] - 1].doc;
    if (d->id_len == len && memcmp(d->id, id, len) == 0) return 1;
    h = (h + 1) & (st->n_slots - 1);
  }
  if (insert_idx >= 0) st->slots[h] = (uint32_t)(insert_idx + 1);
  return 0;
}

/* The id a PutError echoes: the id itself, or for one far over the limit
 * (already refused for that) its first STORE_ID_MAX bytes, cut at a
 * character boundary, plus "..." - never a valid id, so never mistaken for
 * one that was stored. */
static char *err_id_copy(const char *id) {
  size_t len = strlen(id);
  if (len <= ERR_ID_ECHO_MAX) return strdup(id);
  size_t cut = STORE_ID_MAX;
  while (cut > 0 && ((uint8_t)id[cut] & 0xC0) == 0x80) cut--;
  char *out = malloc(cut + 4);
  if (!out) return NULL;
  memcpy(out, id, cut);
  memcpy(out + cut, "...", 4);
  return out;
}

static int add_err(ps_state *st, const char *id, const char *reason) {
  if (st->n_errs == st->cap_errs) {
    size_t nc = st->cap_errs ? st->cap_errs * 2 : 16;
    ps_err *ne = realloc(st->errs, nc * sizeof *ne);
    if (!ne) return -1;
    st->errs = ne;
    st->cap_errs = nc;
  }
  ps_err *pe = &st->errs[st->n_errs];
  pe->id = err_id_copy(id ? id : "");
  pe->reason = strdup(reason);
  if (!pe->id || !pe->reason) {
    free(pe->id);
    free(pe->reason);
    return -1;
  }
  st->n_errs++;
  st->err_bytes += strlen(pe->id) + strlen(pe->reason);
  return 0;
}

static int add_acked(ps_state *st, const char *id) {
  if (st->n_acked == st->cap_acked) {
    size_t nc = st->cap_acked ? st->cap_acked * 2 : 64;
    char **na = realloc(st->acked, nc * sizeof *na);
    if (!na) return -1;
    st->acked = na;
    st->cap_acked = nc;
  }
  if (!(st->acked[st->n_acked] = strdup(id))) return -1;
  st->n_acked++;
  return 0;
}

static void pend_clear(ps_state *st) {
  for (size_t i = 0; i < st->n_pend; i++) prepared_free(&st->pend[i]);
  st->n_pend = 0;
  st->pend_bytes = 0;
  if (st->slots) memset(st->slots, 0, st->n_slots * sizeof *st->slots);
}

/* Errors that fail one batch but leave the store usable (see above). */
static int batch_error_is_local(int rc) {
  return rc == CTXD_ENOSPC || rc == CTXD_ENOMEM || rc == CTXD_ELIMIT ||
         rc == CTXD_EINVAL || rc == CTXD_EBUSY;
}

/* Commit pend[lo, hi): 0 (ids added to acked), or the store's error after
 * turning the documents into PutErrors. Halves a batch that does not fit
 * (one transaction's limits, or the space left). */
static int commit_range(ps_state *st, size_t lo, size_t hi, ctxd_error *e) {
  size_t n = hi - lo;
  store_put_doc *docs = calloc(n ? n : 1, sizeof *docs);
  store_put_result *res = malloc(n * sizeof *res);
  int rc;
  if (!docs || !res) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory committing a batch");
    goto fail;
  }
  for (size_t i = 0; i < n; i++) docs[i] = st->pend[lo + i].doc;
  rc = store_put(st->ctx->st, docs, n, res, e);
  if ((rc == CTXD_ELIMIT || rc == CTXD_ENOSPC) && n > 1) {
    free(docs);
    free(res);
    rc = commit_range(st, lo, lo + n / 2, e);
    if (rc && !batch_error_is_local(rc)) {
      /* Fatal: the second half is not tried; report it failed too. */
      for (size_t i = lo + n / 2; i < hi; i++)
        if (add_err(st, st->pend[i].doc.id, e->msg)) return CTXD_ENOMEM;
      return rc;
    }
    int rc2 = commit_range(st, lo + n / 2, hi, e);
    return rc2 ? rc2 : rc;
  }
  if (rc == 0) {
    for (size_t i = 0; i < n; i++)
      if (add_acked(st, res[i].id)) {
        rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
        break;
      }
    free(docs);
    free(res);
    return rc;
  }
fail:
  LOG_WARN("putstream-batch-failed docs=%zu code=%d err=\"%s\"", n, rc,
           e->msg);
  for (size_t i = lo; i < hi; i++) add_err(st, st->pend[i].doc.id, e->msg);
  free(docs);
  free(res);
  return rc;
}

/* Send one PutAck with everything gathered since the last one. */
static void send_ack(rpc_call *c, ps_state *st) {
  if (st->n_acked == 0 && st->n_errs == 0) return;
  Ctxd__V1__PutAck ack = CTXD__V1__PUT_ACK__INIT;
  Ctxd__V1__PutError *errs = NULL, **errp = NULL;
  if (st->n_errs) {
    errs = calloc(st->n_errs, sizeof *errs);
    errp = calloc(st->n_errs, sizeof *errp);
    if (!errs || !errp) {
      rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory sending an ack");
      goto done;
    }
    for (size_t i = 0; i < st->n_errs; i++) {
      ctxd__v1__put_error__init(&errs[i]);
      errs[i].id = st->errs[i].id;
      errs[i].reason = st->errs[i].reason;
      errp[i] = &errs[i];
    }
  }
  ack.n_ids = st->n_acked;
  ack.ids = st->acked;
  ack.n_errors = st->n_errs;
  ack.errors = errp;
  rpc_send_pb(c, &ack.base); /* a gone call drops it: the writes still stand */
done:
  free(errs);
  free(errp);
  for (size_t i = 0; i < st->n_acked; i++) free(st->acked[i]);
  for (size_t i = 0; i < st->n_errs; i++) {
    free(st->errs[i].id);
    free(st->errs[i].reason);
  }
  st->n_acked = 0;
  st->n_errs = 0;
  st->err_bytes = 0;
}

/* Commit the pending batch (if any) and ack. */
static void ps_flush(rpc_call *c, ps_state *st) {
  if (st->n_pend) {
    ctxd_error e;
    ctxd_clearerr(&e);
    int rc = commit_range(st, 0, st->n_pend, &e);
    pend_clear(st);
    if (rc && !batch_error_is_local(rc)) {
      send_ack(c, st);
      st->fatal = 1;
      rpc_finish(c, ctxd_err_grpc_status(rc), "%s", e.msg);
      return;
    }
  }
  send_ack(c, st);
  st->timer_armed = 0;
}

static void ps_arm_timer(rpc_call *c, ps_state *st) {
  if (st->timer_armed) return;
  st->first_ns = now_ns();
  st->timer_armed = 1;
  rpc_set_timer(c, st->ctx->cfg->put_batch_ms ? st->ctx->cfg->put_batch_ms : 1);
}

static ps_state *ps_get(rpc_call *c) {
  ps_state *st = rpc_state(c);
  if (st) return st;
  st = calloc(1, sizeof *st);
  if (!st) return NULL;
  st->ctx = rpc_ctx(c);
  rpc_set_state(c, st);
  return st;
}

static void ps_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ps_state *st = ps_get(c);
  if (!st) {
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (st->fatal) return;
  const ctxd_config *cfg = st->ctx->cfg;
  ctxd_error e;
  prepared p;
  char *bad_id = NULL;
  ctxd_clearerr(&e);
  if (prepare(st->ctx, msg, len, &p, &bad_id, &e)) {
    int oom = add_err(st, bad_id, e.msg);
    free(bad_id);
    if (oom) {
      rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
      return;
    }
    /* Rejections count against the batch limits too: a stream of bad
     * documents must not pile up errors until the timer fires. */
    if (st->n_pend + st->n_errs >= (cfg->put_batch_docs ? cfg->put_batch_docs : 1) ||
        st->err_bytes >= PS_ERR_BYTES_MAX) {
      ps_flush(c, st);
      return;
    }
    ps_arm_timer(c, st);
    return;
  }
  /* The same id twice in one batch: commit the first copy before taking the
   * second, so the last write wins as with sequential Puts. */
  if (p.doc.id_len) {
    int found = pend_ids_probe(st, p.doc.id, p.doc.id_len, -1);
    if (found < 0) goto oom;
    if (found) {
      ps_flush(c, st);
      if (st->fatal) {
        prepared_free(&p);
        return;
      }
    }
  }
  if (st->n_pend == st->cap_pend) {
    size_t nc = st->cap_pend ? st->cap_pend * 2 : 64;
    prepared *np = realloc(st->pend, nc * sizeof *np);
    if (!np) goto oom;
    st->pend = np;
    st->cap_pend = nc;
  }
  if (p.doc.id_len &&
      pend_ids_probe(st, p.doc.id, p.doc.id_len, (long)st->n_pend) < 0)
    goto oom;
  st->pend[st->n_pend++] = p;
  /* What the batch holds, not just its text: the unpacked message (text,
   * id, metadata) and the chunk list, which for tiny chunks is larger than
   * the text. So batch_bytes bounds a stream's memory whatever it sends. */
  st->pend_bytes += len + p.doc.n_chunks * sizeof(chunk_span) +
                    p.doc.n_meta * sizeof(store_kv);
  if (st->n_pend >= (cfg->put_batch_docs ? cfg->put_batch_docs : 1) ||
      st->pend_bytes >= cfg->put_batch_bytes) {
    ps_flush(c, st);
    return;
  }
  ps_arm_timer(c, st);
  return;
oom:
  prepared_free(&p);
  rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
}

static void ps_on_timer(rpc_call *c) {
  ps_state *st = rpc_state(c);
  if (!st || st->fatal) return;
  if (!st->timer_armed) return; /* a flush already took the batch */
  uint64_t waited_ms = (now_ns() - st->first_ns) / 1000000;
  uint32_t want = st->ctx->cfg->put_batch_ms;
  if (waited_ms < want) {
    /* An older timer fired early for this batch: wait out the rest. */
    rpc_set_timer(c, (unsigned)(want - waited_ms));
    return;
  }
  ps_flush(c, st);
}

static void ps_on_half_close(rpc_call *c) {
  ps_state *st = rpc_state(c);
  if (st) {
    if (st->fatal) return;
    ps_flush(c, st);
    if (st->fatal) return;
  }
  rpc_finish(c, GRPC_OK, NULL);
}

static void ps_on_close(rpc_call *c) {
  ps_state *st = rpc_state(c);
  if (!st) return;
  /* Documents still pending were never acknowledged: drop them. */
  pend_clear(st);
  free(st->pend);
  free(st->slots);
  for (size_t i = 0; i < st->n_acked; i++) free(st->acked[i]);
  free(st->acked);
  for (size_t i = 0; i < st->n_errs; i++) {
    free(st->errs[i].id);
    free(st->errs[i].reason);
  }
  free(st->errs);
  free(st);
  rpc_set_state(c, NULL);
  /* A stream's batches (up to putstream.batch_bytes of small allocations)
   * land in whichever worker's malloc arena ran them, and glibc keeps those
   * pages after free: without this the daemon's resident memory after a
   * burst of streams depends on which workers ran them, not on what is
   * live. Giving the free pages back once per stream costs little next to
   * the stream itself and keeps memory flat across rounds of ingest. */
  malloc_trim(0);
}

const rpc_method h_documents_put_stream = {
    "/ctxd.v1.Documents/PutStream", RPC_BIDI,       0,          ps_on_message,
    ps_on_half_close,               ps_on_timer,    ps_on_close};

/* ---- Get --------------------------------------------------------------------- */

static void get_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  store_doc *d = NULL;
  Ctxd__V1__Document doc = CTXD__V1__DOCUMENT__INIT;
  Ctxd__V1__GetResponse r = CTXD__V1__GET_RESPONSE__INIT;
  Ctxd__V1__Document__MetadataEntry *meta = NULL, **metap = NULL;
  Ctxd__V1__Chunk *chunks = NULL, **chunkp = NULL;
  char **texts = NULL;
  size_t n_texts = 0;
  ctxd_clearerr(&e);
  Ctxd__V1__GetRequest *req = ctxd__v1__get_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed GetRequest message");
    return;
  }
  if (wire_field_has_nul(msg, len, 1)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "id contains a NUL byte");
    goto done;
  }
  size_t id_len = strlen(req->id);
  int flags = (req->with_text ? STORE_GET_TEXT : 0) |
              (req->with_chunks ? STORE_GET_CHUNKS : 0);
  if (check_id(req->id, id_len, 0, &e) ||
      store_get(ctx->st, ctx->cid, req->id, id_len, flags, &d, &e)) {
    finish_err(c, &e);
    goto done;
  }
  doc.id = d->id;
  doc.text = req->with_text && d->text ? d->text : "";
  if (d->n_meta) {
    meta = calloc(d->n_meta, sizeof *meta);
    metap = calloc(d->n_meta, sizeof *metap);
    if (!meta || !metap) goto oom;
    for (size_t i = 0; i < d->n_meta; i++) {
      ctxd__v1__document__metadata_entry__init(&meta[i]);
      meta[i].key = (char *)d->meta[i].key;
      meta[i].value = (char *)d->meta[i].val;
      metap[i] = &meta[i];
    }
  }
  doc.n_metadata = d->n_meta;
  doc.metadata = metap;
  if (req->with_chunks && d->n_chunks) {
    chunks = calloc(d->n_chunks, sizeof *chunks);
    chunkp = calloc(d->n_chunks, sizeof *chunkp);
    if (req->with_text) texts = calloc(d->n_chunks, sizeof *texts);
    if (!chunks || !chunkp || (req->with_text && !texts)) goto oom;
    for (uint32_t i = 0; i < d->n_chunks; i++) {
      const chunk_span *sp = &d->chunks[i];
      ctxd__v1__chunk__init(&chunks[i]);
      chunks[i].doc_id = d->id;
      chunks[i].ordinal = i;
      chunks[i].byte_start = sp->byte_start;
      chunks[i].byte_end = sp->byte_end;
      chunks[i].tokens = sp->tokens;
      if (req->with_text) {
        /* protobuf-c packs C strings: each chunk text needs its own NUL. */
        size_t n = (size_t)(sp->byte_end - sp->byte_start);
        if (!(texts[i] = malloc(n + 1))) goto oom;
        n_texts = i + 1;
        memcpy(texts[i], d->text + sp->byte_start, n);
        texts[i][n] = '\0';
        chunks[i].text = texts[i];
      }
      chunkp[i] = &chunks[i];
    }
    r.n_chunks = d->n_chunks;
    r.chunks = chunkp;
  }
  r.document = &doc;
  r.bytes = d->bytes;
  r.tokens = d->tokens;
  if (rpc_send_pb(c, &r.base) == 0) rpc_finish(c, GRPC_OK, NULL);
  goto done;
oom:
  rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory building GetResponse");
done:
  for (size_t i = 0; i < n_texts; i++) free(texts[i]);
  free(texts);
  free(chunks);
  free(chunkp);
  free(meta);
  free(metap);
  store_doc_free(d);
  ctxd__v1__get_request__free_unpacked(req, NULL);
}

const rpc_method h_documents_get = {
    "/ctxd.v1.Documents/Get", RPC_UNARY, 0, get_on_message, NULL, NULL, NULL};

/* ---- Delete ----------------------------------------------------------------- */

/* Deleting an id that is not stored is not an error: deleted=false, so a
 * retried Delete is harmless (as in Qdrant and most key-value stores). */
static void delete_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  int deleted = 0;
  uint32_t n_chunks = 0;
  ctxd_clearerr(&e);
  Ctxd__V1__DeleteRequest *req =
      ctxd__v1__delete_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed DeleteRequest message");
    return;
  }
  size_t id_len = strlen(req->id);
  if (wire_field_has_nul(msg, len, 1)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "id contains a NUL byte");
  } else if (call_expired(c)) {
    rpc_finish(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded before the write");
  } else if (check_id(req->id, id_len, 0, &e) ||
             store_delete(ctx->st, ctx->cid, req->id, id_len, &deleted,
                          &n_chunks, &e)) {
    finish_err(c, &e);
  } else {
    Ctxd__V1__DeleteResponse r = CTXD__V1__DELETE_RESPONSE__INIT;
    r.deleted = deleted;
    r.chunks = n_chunks;
    if (rpc_send_pb(c, &r.base) == 0) rpc_finish(c, GRPC_OK, NULL);
  }
  ctxd__v1__delete_request__free_unpacked(req, NULL);
}

const rpc_method h_documents_delete = {"/ctxd.v1.Documents/Delete", RPC_UNARY,
                                       0, delete_on_message, NULL, NULL, NULL};

/* ---- List ------------------------------------------------------------------- */

/* Pages run in internal-id order, i.e. the order documents were first
 * stored (a replaced document keeps its place). The page token is the
 * decimal internal id of the last document of the page, so paging is stable
 * under concurrent writes: nothing listed is repeated, a document inserted
 * meanwhile appears on a later page. */
static int parse_token(const char *t, uint64_t *out) {
  uint64_t v = 0;
  if (!*t) {
    *out = 0;
    return 0;
  }
  for (const char *p = t; *p; p++) {
    if (*p < '0' || *p > '9') return -1;
    uint64_t d = (uint64_t)(*p - '0');
    if (v > (UINT64_MAX - d) / 10) return -1;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

static void list_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  store_doc *docs = NULL;
  size_t n = 0;
  uint64_t after = 0, next = 0;
  Ctxd__V1__DocumentInfo *infos = NULL, **infop = NULL;
  Ctxd__V1__DocumentInfo__MetadataEntry *meta = NULL, **metap = NULL;
  ctxd_clearerr(&e);
  Ctxd__V1__ListRequest *req = ctxd__v1__list_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed ListRequest message");
    return;
  }
  uint32_t page = req->page_size ? req->page_size : LIST_DEFAULT_PAGE;
  if (page > LIST_MAX_PAGE) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT,
               "page_size %u is more than the limit of %d", page,
               LIST_MAX_PAGE);
    goto done;
  }
  if (parse_token(req->page_token, &after)) {
    /* Quote it printable and short: it is arbitrary client bytes. */
    char shown[68];
    size_t i = 0;
    for (const char *t = req->page_token; *t && i < 64; t++, i++)
      shown[i] = *t >= 0x20 && *t < 0x7f && *t != '"' ? *t : '?';
    if (req->page_token[i]) {
      memcpy(shown + i, "...", 3);
      i += 3;
    }
    shown[i] = '\0';
    rpc_finish(c, GRPC_INVALID_ARGUMENT,
               "page_token \"%s\" is not one this server issued (the "
               "next_page_token of an earlier page, or empty)",
               shown);
    goto done;
  }
  if (store_list(ctx->st, ctx->cid, after, page, &docs, &n, &next, &e)) {
    finish_err(c, &e);
    goto done;
  }
  size_t total_meta = 0, shown = 0, page_bytes = 0;
  for (; shown < n; shown++) {
    size_t b = docs[shown].id_len + 48;
    for (size_t k = 0; k < docs[shown].n_meta; k++)
      b += docs[shown].meta[k].key_len + docs[shown].meta[k].val_len + 16;
    if (shown > 0 && page_bytes + b > LIST_PAGE_BYTES) {
      next = docs[shown - 1].doc_seq;
      break;
    }
    page_bytes += b;
    total_meta += docs[shown].n_meta;
  }
  infos = calloc(n ? n : 1, sizeof *infos);
  infop = calloc(n ? n : 1, sizeof *infop);
  meta = calloc(total_meta ? total_meta : 1, sizeof *meta);
  metap = calloc(total_meta ? total_meta : 1, sizeof *metap);
  if (!infos || !infop || !meta || !metap) {
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory building a page");
    goto done;
  }
  size_t m = 0;
  for (size_t i = 0; i < shown; i++) {
    Ctxd__V1__DocumentInfo *di = &infos[i];
    ctxd__v1__document_info__init(di);
    di->id = docs[i].id;
    di->bytes = docs[i].bytes;
    di->chunks = docs[i].n_chunks;
    di->tokens = docs[i].tokens;
    di->n_metadata = docs[i].n_meta;
    di->metadata = metap + m;
    for (size_t k = 0; k < docs[i].n_meta; k++, m++) {
      ctxd__v1__document_info__metadata_entry__init(&meta[m]);
      meta[m].key = (char *)docs[i].meta[k].key;
      meta[m].value = (char *)docs[i].meta[k].val;
      metap[m] = &meta[m];
    }
    infop[i] = di;
  }
  char token[24] = "";
  if (next) snprintf(token, sizeof token, "%llu", (unsigned long long)next);
  Ctxd__V1__ListResponse r = CTXD__V1__LIST_RESPONSE__INIT;
  r.n_documents = shown;
  r.documents = infop;
  r.next_page_token = token;
  if (rpc_send_pb(c, &r.base) == 0) rpc_finish(c, GRPC_OK, NULL);
done:
  free(infos);
  free(infop);
  free(meta);
  free(metap);
  store_docs_free(docs, n);
  ctxd__v1__list_request__free_unpacked(req, NULL);
}

const rpc_method h_documents_list = {
    "/ctxd.v1.Documents/List", RPC_UNARY, 0, list_on_message, NULL, NULL, NULL};

/* ---- Chunk ------------------------------------------------------------------ */

/* Chunk inline text with the same chunker and options as Put, writing
 * nothing: lets a client see how a text will be cut before storing it. */
static void chunk_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  chunk_span *spans = NULL;
  size_t n = 0, bad;
  Ctxd__V1__Chunk *chunks = NULL, **chunkp = NULL;
  char **texts = NULL;
  size_t n_texts = 0;
  chunk_opts co;
  ctxd_clearerr(&e);
  Ctxd__V1__ChunkRequest *req =
      ctxd__v1__chunk_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed ChunkRequest message");
    return;
  }
  size_t text_len = strlen(req->text);
  if (wire_field_has_nul(msg, len, 1)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "text contains a NUL byte");
    goto done;
  }
  if (!utf8_valid(req->text, text_len, &bad)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT,
               "text is not valid UTF-8 at byte offset %zu", bad);
    goto done;
  }
  if (chunk_opts_resolve(ctx->cfg, req->chunking, &co, &e) ||
      chunk_text(req->text, text_len, &co, ctx->tk, &spans, &n, &e)) {
    finish_err(c, &e);
    goto done;
  }
  chunks = calloc(n ? n : 1, sizeof *chunks);
  chunkp = calloc(n ? n : 1, sizeof *chunkp);
  if (req->with_text) texts = calloc(n ? n : 1, sizeof *texts);
  if (!chunks || !chunkp || (req->with_text && !texts)) goto oom;
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) {
    ctxd__v1__chunk__init(&chunks[i]);
    chunks[i].ordinal = (uint32_t)i;
    chunks[i].byte_start = spans[i].byte_start;
    chunks[i].byte_end = spans[i].byte_end;
    chunks[i].tokens = spans[i].tokens;
    total += spans[i].tokens;
    if (req->with_text) {
      size_t l = (size_t)(spans[i].byte_end - spans[i].byte_start);
      if (!(texts[i] = malloc(l + 1))) goto oom;
      n_texts = i + 1;
      memcpy(texts[i], req->text + spans[i].byte_start, l);
      texts[i][l] = '\0';
      chunks[i].text = texts[i];
    }
    chunkp[i] = &chunks[i];
  }
  Ctxd__V1__ChunkResponse r = CTXD__V1__CHUNK_RESPONSE__INIT;
  r.n_chunks = n;
  r.chunks = chunkp;
  r.tokens = total;
  r.tokenizer = (char *)ctx->tk->name;
  if (rpc_send_pb(c, &r.base) == 0) rpc_finish(c, GRPC_OK, NULL);
  goto done;
oom:
  rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory building chunks");
done:
  for (size_t i = 0; i < n_texts; i++) free(texts[i]);
  free(texts);
  free(chunks);
  free(chunkp);
  free(spans);
  ctxd__v1__chunk_request__free_unpacked(req, NULL);
}

const rpc_method h_documents_chunk = {"/ctxd.v1.Documents/Chunk", RPC_UNARY, 0,
                                      chunk_on_message, NULL, NULL, NULL};
