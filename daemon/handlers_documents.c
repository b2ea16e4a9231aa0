/* handlers_documents.c - the ctxd.v1.Documents service: Put, PutStream,
 * Get, Delete, List and Chunk, on top of index/store, index/chunk and
 * index/coll (collections, embedders, vector and lexical indexes).
 *
 * Every request is checked whole before anything is written: a bad document
 * is answered INVALID_ARGUMENT (Put) or a PutError (PutStream) and never
 * reaches the store. The chunks' vectors are computed (or checked, when the
 * client sent them) on the worker that handles the request, before the write
 * is queued; after each commit coll_sync makes it searchable, so a write is
 * visible to Search when its RPC returns. Callbacks run on worker threads,
 * one at a time per call (rpc.h), so the PutStream state needs no lock. */
#include <malloc.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chunk.h"
#include "coll.h"
#include "collections.h"
#include "ctx.h"
#include "ctxd/v1/documents.pb-c.h"
#include "err.h"
#include "grpc_wire.h"
#include "handlers.h"
#include "log.h"
#include "models.h"
#include "rpc.h"
#include "store.h"
#include "utf8.h"
#include "writer.h"

#define LIST_DEFAULT_PAGE 100
#define LIST_MAX_PAGE 10000
/* Chunks one document may make (RESOURCE_EXHAUSTED beyond): bounds the
 * chunk list a tiny max_tokens on a 64 MiB text would otherwise allocate
 * (24 bytes a chunk in memory, a record each in LMDB). 512-token chunks
 * reach it only past ~2 GB of text. It is also the store's limit: a chunk's
 * ordinal takes 20 bits of its vector label (STORE_LABEL). */
#define DOC_MAX_CHUNKS STORE_MAX_CHUNKS
/* Vector bytes one document may carry or make (n_chunks x dim x 4;
 * RESOURCE_EXHAUSTED beyond): 64 MiB of prose in 512-token chunks with the
 * default 1024-dimension hash embedder needs about 130 MiB. */
#define DOC_MAX_VECTOR_BYTES (256ull << 20)
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

/* 1 when a string of the Document of an encoded PutRequest holds a NUL
 * (see pbw_field_has_nul): its id (1), text (2), metadata entries (3: key
 * 1, value 2) or collection (4). Every occurrence of the document field is
 * looked at, since protobuf merges them. *what names the field. */
static int put_has_nul(const uint8_t *msg, size_t len, const char **what) {
  pbw_reader r, dr;
  pbw_field f, g;
  pbw_init(&r, msg, len);
  while (pbw_next(&r, &f) == 1) {
    if (f.num != 1 || f.wire_type != 2) continue;
    pbw_init(&dr, f.data, f.len);
    while (pbw_next(&dr, &g) == 1) {
      if (g.wire_type != 2) continue;
      if ((g.num == 1 || g.num == 2 || g.num == 4) &&
          memchr(g.data, 0, g.len)) {
        *what = g.num == 1 ? "id" : g.num == 2 ? "text" : "collection";
        return 1;
      }
      if (g.num == 3 && (pbw_field_has_nul(g.data, g.len, 1) ||
                         pbw_field_has_nul(g.data, g.len, 2))) {
        *what = "metadata";
        return 1;
      }
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

/* Resolve request chunk options against defaults (a collection's, or for
 * the Chunk RPC the config's). A zero field means "the default"; a
 * defaulted overlap that does not fit under the client's max_tokens is
 * capped at half of it rather than refused, since the client never asked
 * for it. */
static int chunk_opts_resolve(uint32_t def_max, uint32_t def_overlap,
                              const Ctxd__V1__ChunkOptions *o, chunk_opts *out,
                              ctxd_error *e) {
  uint32_t max = o && o->max_tokens ? o->max_tokens : def_max;
  uint32_t ov = o && o->overlap_tokens ? o->overlap_tokens : def_overlap;
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

/* A PutRequest ready for store_put: `doc` points into `req`; `chunks`,
 * `meta` and `vectors` are owned. */
typedef struct prepared {
  Ctxd__V1__PutRequest *req;
  store_put_doc doc;
  chunk_span *chunks;
  store_kv *meta;
  float *vectors;
} prepared;

static void prepared_free(prepared *p) {
  if (p->req) ctxd__v1__put_request__free_unpacked(p->req, NULL);
  free(p->chunks);
  free(p->meta);
  free(p->vectors);
  memset(p, 0, sizeof *p);
}

/* What a prepared document holds in memory, as the batch limits count it:
 * the message (text, id, metadata), its chunk list and its vectors. */
static uint64_t prepared_bytes(const prepared *p, size_t msg_len) {
  return msg_len + p->doc.n_chunks * sizeof(chunk_span) +
         p->doc.n_meta * sizeof(store_kv) +
         (p->vectors ? (uint64_t)p->doc.n_chunks * p->doc.dim * sizeof(float)
                     : 0);
}

/* Prefix e's message with "document <id>: " (the caller's context). */
static int doc_err(ctxd_error *e, int rc, const char *id) {
  char msg_copy[CTXD_ERRMSG_MAX];
  snprintf(msg_copy, sizeof msg_copy, "%s", e->msg);
  return ctxd_seterr(e, rc, "document %s: %s", *id ? id : "(no id)", msg_copy);
}

/* Client chunks (Document.chunks): the rule, also in the README. The ranges
 * are byte offsets into the text, in order: the first starts at 0, the last
 * ends at the end of the text, each is non-empty, starts at or after the
 * previous one's start and at or before its end (no gap: together they
 * cover the text; neighbours may overlap, as the chunker's overlap_tokens
 * makes them), ends after the previous one's end, and both ends fall on
 * UTF-8 character boundaries. At most DOC_MAX_CHUNKS. Token counts come
 * from the server's tokenizer. An empty text takes no chunks. */
static int client_chunks(const tok *tk, const Ctxd__V1__Document *d,
                         size_t text_len, chunk_span **out, ctxd_error *e) {
  *out = NULL;
  if (d->n_chunks > DOC_MAX_CHUNKS)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "%zu chunks, more than the limit of %u", d->n_chunks,
                       (unsigned)DOC_MAX_CHUNKS);
  if (text_len == 0)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "an empty text takes no chunks (%zu given)",
                       d->n_chunks);
  const char *t = d->text;
  for (size_t i = 0; i < d->n_chunks; i++) {
    const Ctxd__V1__ChunkInput *c = d->chunks[i];
    uint64_t bs = c->byte_start, be = c->byte_end;
    const char *why = NULL;
    if (be > text_len)
      why = "ends past the end of the text";
    else if (bs >= be)
      why = "is empty or reversed";
    else if (i == 0 && bs != 0)
      why = "is the first chunk but does not start at 0";
    else if (i > 0 && bs < d->chunks[i - 1]->byte_start)
      why = "starts before the previous chunk";
    else if (i > 0 && bs > d->chunks[i - 1]->byte_end)
      why = "leaves a gap after the previous chunk";
    else if (i > 0 && be <= d->chunks[i - 1]->byte_end)
      why = "does not end after the previous chunk";
    else if (i + 1 == d->n_chunks && be != text_len)
      why = "is the last chunk but does not end at the end of the text";
    else if (((uint8_t)t[bs] & 0xC0) == 0x80 ||
             (be < text_len && ((uint8_t)t[be] & 0xC0) == 0x80))
      why = "cuts a UTF-8 character";
    if (why)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "chunk %zu [%llu, %llu) %s (text of %zu bytes)", i,
                         (unsigned long long)bs, (unsigned long long)be, why,
                         text_len);
  }
  chunk_span *sp = malloc(d->n_chunks * sizeof *sp);
  if (!sp) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for chunks");
  for (size_t i = 0; i < d->n_chunks; i++) {
    sp[i].byte_start = d->chunks[i]->byte_start;
    sp[i].byte_end = d->chunks[i]->byte_end;
    uint64_t n = tok_count(tk, t + sp[i].byte_start,
                           (size_t)(sp[i].byte_end - sp[i].byte_start));
    sp[i].tokens = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
  }
  *out = sp;
  return 0;
}

/* The chunks' vectors, n x cc->dim floats (*out malloc'd; NULL for no
 * chunks). Client vectors must have the collection's dimension and finite
 * values; in an `ip` collection they are L2-normalised here (the index
 * scores by inner product, which is the cosine only for unit vectors).
 * Chunks sent without a vector are marked in *missing (1 each, malloc'd,
 * NULL when none is missing); a "none" collection refuses them. */
static int client_vectors(const Ctxd__V1__Document *d, size_t n,
                          const coll_config *cc, float **out,
                          uint8_t **missing, size_t *n_missing,
                          ctxd_error *e) {
  *out = NULL;
  *missing = NULL;
  *n_missing = 0;
  if (n == 0) return 0;
  uint32_t dim = cc->dim;
  if ((uint64_t)n * dim * sizeof(float) > DOC_MAX_VECTOR_BYTES)
    return ctxd_seterr(e, CTXD_ELIMIT,
                       "%zu chunks of %u-dimension vectors need %llu MiB, "
                       "more than the limit of %llu MiB a document (use "
                       "larger chunks)",
                       n, dim,
                       (unsigned long long)(((uint64_t)n * dim * 4) >> 20),
                       DOC_MAX_VECTOR_BYTES >> 20);
  int only_client = collections_client_vectors_only(cc);
  for (size_t i = 0; i < d->n_chunks; i++) {
    const Ctxd__V1__ChunkInput *c = d->chunks[i];
    if (c->n_vector == 0) {
      if (only_client)
        return ctxd_seterr(e, CTXD_EINVAL,
                           "chunk %zu has no vector, and collection \"%s\" "
                           "(embedder %s) takes client vectors only",
                           i, cc->name, cc->embedder);
      continue;
    }
    if (c->n_vector != dim)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "chunk %zu has a vector of %zu dimensions; "
                         "collection \"%s\" has dimension %u",
                         i, c->n_vector, cc->name, dim);
    for (uint32_t k = 0; k < dim; k++)
      if (!isfinite(c->vector[k]))
        return ctxd_seterr(e, CTXD_EINVAL,
                           "chunk %zu: vector component %u is not a finite "
                           "number",
                           i, k);
  }
  if (d->n_chunks == 0 && only_client)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "collection \"%s\" (embedder %s) takes client vectors "
                       "only: send the chunks with their vectors",
                       cc->name, cc->embedder);
  float *v = malloc(n * dim * sizeof *v);
  uint8_t *miss = calloc(n, 1);
  if (!v || !miss) {
    free(v);
    free(miss);
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for vectors");
  }
  size_t nm = 0;
  for (size_t i = 0; i < n; i++) {
    const Ctxd__V1__ChunkInput *c = i < d->n_chunks ? d->chunks[i] : NULL;
    if (!c || c->n_vector == 0) {
      miss[i] = 1;
      nm++;
      continue;
    }
    memcpy(v + i * dim, c->vector, dim * sizeof *v);
    if (cc->metric == VINDEX_IP) vindex_normalize(v + i * dim, 1, dim);
  }
  *out = v;
  if (nm) {
    *missing = miss;
    *n_missing = nm;
  } else {
    free(miss);
  }
  return 0;
}

/* Embed the chunks marked missing with the collection's embedder, into
 * their rows of v. Runs on the request's worker, outside any lock. */
static int embed_missing(coll_set *cs, uint32_t cid, const coll_config *cc,
                         const char *text, const chunk_span *chunks, size_t n,
                         const uint8_t *missing, size_t n_missing, float *v,
                         ctxd_error *e) {
  if (n_missing == n) /* the usual case: nothing to gather */
    return coll_embed_chunks(cs, cid, text, chunks, n, v, e);
  uint32_t dim = cc->dim;
  chunk_span *sp = malloc(n_missing * sizeof *sp);
  float *tmp = malloc(n_missing * dim * sizeof *tmp);
  int rc;
  if (!sp || !tmp) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for embeddings");
    goto done;
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (missing[i]) sp[k++] = chunks[i];
  rc = coll_embed_chunks(cs, cid, text, sp, n_missing, tmp, e);
  if (rc) goto done;
  k = 0;
  for (size_t i = 0; i < n; i++)
    if (missing[i]) memcpy(v + i * dim, tmp + dim * k++, dim * sizeof *v);
done:
  free(sp);
  free(tmp);
  return rc;
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

static int last_field(void *arg, const pbw_field *f) {
  *(pbw_field *)arg = *f;
  return 0;
}

/* The repeated fields of a PutRequest counted on the wire, before
 * protobuf-c allocates an element for each (grpc_wire.h, pbw_walk): the
 * limits and messages of the checks after unpacking, so that a message of
 * millions of empty chunks or metadata entries is refused before it costs
 * gigabytes. The document's id for the message is read off the wire into
 * id_buf (STORE_ID_MAX + 1 bytes; *bad_id points to it) when it is usable.
 * Malformed input is left to the unpacker. */
static int wire_counts(const uint8_t *msg, size_t len, char *id_buf,
                       char **bad_id, ctxd_error *e) {
  static const uint32_t chunks_at[] = {1, 5}, meta_at[] = {1, 3},
                        id_at[] = {1, 1};
  long long nc = pbw_count(msg, len, chunks_at, 2);
  long long nm = pbw_count(msg, len, meta_at, 2);
  if (nc <= (long long)DOC_MAX_CHUNKS && nm <= META_MAX_ENTRIES) return 0;
  pbw_field f;
  memset(&f, 0, sizeof f);
  const char *name = "(no id)";
  if (pbw_walk(msg, len, id_at, 2, last_field, &f) == 0 && f.len &&
      f.wire_type == 2 && f.len <= STORE_ID_MAX && !memchr(f.data, 0, f.len) &&
      utf8_valid((const char *)f.data, f.len, NULL)) {
    memcpy(id_buf, f.data, f.len);
    id_buf[f.len] = '\0';
    name = *bad_id = id_buf;
  }
  if (nc > (long long)DOC_MAX_CHUNKS)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "%lld chunks, more than the limit of %u", nc,
                       (unsigned)DOC_MAX_CHUNKS);
  return ctxd_seterr(e, CTXD_EINVAL,
                     "document %s: metadata has %lld entries, more than the "
                     "limit of %d",
                     name, nm, META_MAX_ENTRIES);
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
  char wire_id[STORE_ID_MAX + 1];
  int rc;
  if ((rc = wire_counts(msg, len, wire_id, bad_id, e))) goto fail;
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
  /* The collection is looked up without creating it, so that a document
   * refused below leaves nothing behind: a new name is checked against the
   * defaults it will be created with, and created just before embedding,
   * once nothing about the document can be refused any more. */
  char cname[STORE_COLL_NAME_MAX + 1];
  uint32_t cid = 0;
  coll_config cc;
  int exists = 1;
  {
    size_t cl = strlen(d->collection);
    rc = collections_name_copy(cl ? d->collection : COLL_DEFAULT_NAME,
                               cl ? cl : strlen(COLL_DEFAULT_NAME), cname, e);
    if (rc == 0) rc = coll_resolve(ctx->cs, cname, 0, &cid, &cc, e);
    if (rc == CTXD_ENOTFOUND) {
      cc = ctx->coll_defaults;
      snprintf(cc.name, sizeof cc.name, "%s", cname);
      exists = 0;
      rc = 0;
    }
    if (rc) {
      doc_err(e, rc, d->id);
      goto fail;
    }
  }
  size_t n_chunks = 0;
  /* The tokenizer in use, held until the chunks are counted: a LoadModel
   * meanwhile swaps it without freeing it under us. */
  const Ctxd__V1__ChunkOptions *o = p->req->chunking;
  if (d->n_chunks && o && (o->max_tokens || o->overlap_tokens)) {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "document %s: chunking options and client chunks "
                     "both given (send one or the other)",
                     doc_name(d->id));
    goto fail;
  }
  lm_model *tk_ref;
  const tok *tk = models_tok(ctx->models, &tk_ref);
  if (d->n_chunks) {
    rc = client_chunks(tk, d, text_len, &p->chunks, e);
    n_chunks = d->n_chunks;
  } else {
    chunk_opts co;
    rc = chunk_opts_resolve(cc.chunk_max_tokens, cc.chunk_overlap_tokens,
                            p->req->chunking, &co, e);
    if (rc == 0)
      rc = chunk_text(d->text, text_len, &co, tk, &p->chunks, &n_chunks, e);
  }
  lm_model_free(tk_ref);
  if (rc) {
    doc_err(e, rc, d->id);
    goto fail;
  }
  uint8_t *missing = NULL;
  size_t n_missing = 0;
  rc = client_vectors(d, n_chunks, &cc, &p->vectors, &missing, &n_missing, e);
  if (rc == 0 && !exists) {
    coll_config made;
    rc = coll_resolve(ctx->cs, cname, 1, &cid, &made, e);
    if (rc == 0 && (made.dim != cc.dim ||
                    collections_client_vectors_only(&made) !=
                        collections_client_vectors_only(&cc)))
      rc = ctxd_seterr(e, CTXD_EBUSY,
                       "collection \"%s\" was created meanwhile with other "
                       "settings (dimension %u); send the document again",
                       cname, made.dim);
    cc = made;
  }
  if (rc == 0 && n_missing)
    rc = embed_missing(ctx->cs, cid, &cc, d->text, p->chunks, n_chunks,
                       missing, n_missing, p->vectors, e);
  free(missing);
  if (rc) {
    doc_err(e, rc, d->id);
    goto fail;
  }
  p->doc = (store_put_doc){.cid = cid,
                           .id = d->id,
                           .id_len = id_len,
                           .text = d->text,
                           .text_len = text_len,
                           .meta = p->meta,
                           .n_meta = n_meta,
                           .chunks = p->chunks,
                           .n_chunks = n_chunks,
                           .vectors = p->vectors,
                           .dim = cc.dim};
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
  if (rc && res) {
    /* Committed, but coll_sync failed: the write stands (a retried Put
     * replaces it with itself) and search does not see it yet. */
    rpc_finish(c, ctxd_err_grpc_status(rc),
               "document %s is stored but not yet searchable: %s", res->id,
               e->msg);
    return;
  }
  if (rc) {
    rpc_finish_error(c, e);
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
    rpc_finish_error(c, &e);
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
    uint64_t bytes = prepared_bytes(&p, len);
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
  int stored = rc == 0;
  if (stored) rc = coll_sync(ctx->cs, &e);
  put_answer(c, &p, rc, stored ? &res : NULL, &e);
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
  uint64_t n_docs; /* documents received (limits.max_docs_per_stream) */
  int fatal; /* a store error or a limit ended the call */
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
    size_t acked_before = st->n_acked;
    int rc = commit_range(st, 0, st->n_pend, &e);
    pend_clear(st);
    if (rc && !batch_error_is_local(rc)) {
      send_ack(c, st);
      st->fatal = 1;
      rpc_finish(c, ctxd_err_grpc_status(rc), "%s", e.msg);
      return;
    }
    /* What was committed becomes searchable before it is acked. If that
     * fails the ids are still acked (they are durable) and the call ends
     * with the error: the client knows search may not see them. */
    if (st->n_acked > acked_before) {
      ctxd_error se;
      ctxd_clearerr(&se);
      if (coll_sync(st->ctx->cs, &se) != 0) {
        LOG_ERROR("putstream-sync-failed code=%d err=\"%s\"", se.code,
                  se.msg);
        send_ack(c, st);
        st->fatal = 1;
        rpc_finish(c, ctxd_err_grpc_status(se.code),
                   "documents stored but not yet searchable: %s", se.msg);
        return;
      }
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
  /* One stream's share of the daemon: past the limit the documents before
   * are committed and acknowledged as usual, this one and the rest are
   * not; the client opens a new stream for them. */
  uint32_t max_docs = cfg->limits_max_docs_per_stream;
  if (max_docs && st->n_docs >= max_docs) {
    ps_flush(c, st);
    if (st->fatal) return;
    st->fatal = 1;
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED,
               "this PutStream sent more than %u documents: over "
               "limits.max_docs_per_stream (%u); the first %u were "
               "answered in the acks, send the rest on a new stream",
               max_docs, max_docs, max_docs);
    return;
  }
  st->n_docs++;
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
   * id, metadata), the chunk list, which for tiny chunks is larger than the
   * text, and the vectors. So batch_bytes bounds a stream's memory whatever
   * it sends. */
  st->pend_bytes += prepared_bytes(&p, len);
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

/* Attempts at reading a document and its vectors from one snapshot. */
#define GET_VECTOR_TRIES 8

/* The change-log seq of the current committed state (a reader opened and
 * closed at once). */
static int current_seq(store *st, uint64_t *seq, ctxd_error *e) {
  store_reader *r;
  int rc = store_reader_begin(st, &r, e);
  if (rc) return rc;
  *seq = store_reader_seq(r);
  store_reader_end(r);
  return 0;
}

/* 1 when reader r sees the same version of document d as store_get did, as
 * far as the chunks go: same internal id, same text length, same chunk
 * spans. */
static int same_chunks(store_reader *r, uint32_t cid, const store_doc *d) {
  uint64_t doc;
  const char *t;
  size_t tl;
  store_chunk_ref ref;
  if (store_reader_doc_id(r, cid, d->id, d->id_len, &doc, NULL) ||
      doc != d->doc_seq || store_reader_doc_text(r, doc, &t, &tl, NULL) ||
      tl != d->bytes)
    return 0;
  for (uint32_t i = 0; i < d->n_chunks; i++)
    if (store_reader_chunk(r, STORE_LABEL(doc, i), 0, &ref, NULL) ||
        ref.span.byte_start != d->chunks[i].byte_start ||
        ref.span.byte_end != d->chunks[i].byte_end)
      return 0;
  return 1;
}

/* store_get plus the document's vectors (with_vectors, which implies
 * chunks), both of the same committed state. A thread that holds a reader
 * may call no other store function, so the document is read first and the
 * vectors through a reader after: when the change-log seq before store_get
 * equals the reader's, nothing was committed in between. Under a steady
 * stream of commits that may keep failing: the last attempt instead checks
 * that the reader sees the same chunks (same document, text length and
 * spans) as store_get returned. On 0 the caller ends *rd once done with
 * *vecs. Errors: store_get's, CTXD_EBUSY when the document itself kept
 * changing. */
static int get_with_vectors(ctxd_ctx *ctx, uint32_t cid, const char *id,
                            size_t id_len, int flags, store_doc **d,
                            store_reader **rd, const float **vecs,
                            uint32_t *n_vecs, ctxd_error *e) {
  *d = NULL;
  *rd = NULL;
  for (int attempt = 0; attempt < GET_VECTOR_TRIES; attempt++) {
    uint64_t seq;
    store_reader *r = NULL;
    int rc = current_seq(ctx->st, &seq, e);
    if (rc == 0) rc = store_get(ctx->st, cid, id, id_len, flags, d, e);
    if (rc == 0) rc = store_reader_begin(ctx->st, &r, e);
    if (rc) {
      store_doc_free(*d);
      *d = NULL;
      return rc;
    }
    int last = attempt + 1 == GET_VECTOR_TRIES;
    if (store_reader_seq(r) == seq || (last && same_chunks(r, cid, *d))) {
      rc = store_reader_doc_vectors(r, cid, (*d)->doc_seq, vecs, n_vecs, e);
      if (rc == 0 && *n_vecs && *n_vecs != (*d)->n_chunks)
        rc = ctxd_seterr(e, CTXD_ECORRUPT,
                         "document %s has %u chunks but %u vectors", id,
                         (*d)->n_chunks, *n_vecs);
      if (rc == 0) {
        *rd = r;
        return 0;
      }
      store_reader_end(r);
      store_doc_free(*d);
      *d = NULL;
      return rc;
    }
    store_reader_end(r);
    store_doc_free(*d);
    *d = NULL;
  }
  return ctxd_seterr(e, CTXD_EBUSY,
                     "document %s changed while it was being read; try again",
                     id);
}

static void get_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  store_doc *d = NULL;
  store_reader *rd = NULL;
  const float *vecs = NULL;
  uint32_t n_vecs = 0, cid = 0;
  coll_config cc;
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
  if (pbw_field_has_nul(msg, len, 1) || pbw_field_has_nul(msg, len, 4)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "%s contains a NUL byte",
               pbw_field_has_nul(msg, len, 1) ? "id" : "collection");
    goto done;
  }
  if (req->with_vectors && !req->with_chunks) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT,
               "with_vectors needs with_chunks (vectors come with chunks)");
    goto done;
  }
  size_t id_len = strlen(req->id);
  int flags = (req->with_text ? STORE_GET_TEXT : 0) |
              (req->with_chunks ? STORE_GET_CHUNKS : 0);
  if (check_id(req->id, id_len, 0, &e) ||
      collections_resolve(ctx->cs, req->collection, strlen(req->collection),
                          &cid, &cc, &e) ||
      (req->with_vectors
           ? get_with_vectors(ctx, cid, req->id, id_len, flags, &d, &rd, &vecs,
                              &n_vecs, &e)
           : store_get(ctx->st, cid, req->id, id_len, flags, &d, &e))) {
    rpc_finish_error(c, &e);
    goto done;
  }
  doc.id = d->id;
  doc.collection = cc.name;
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
      if (n_vecs) {
        /* Packed straight from the snapshot: protobuf-c copies the floats
         * out with memcpy, so no copy is made here. */
        chunks[i].n_vector = cc.dim;
        chunks[i].vector = (float *)(vecs + (size_t)i * cc.dim);
      }
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
  if (rd) store_reader_end(rd);
  ctxd__v1__get_request__free_unpacked(req, NULL);
}

const rpc_method h_documents_get = {
    "/ctxd.v1.Documents/Get", RPC_UNARY, 0, get_on_message, NULL, NULL, NULL};

/* ---- Delete ----------------------------------------------------------------- */

/* Deleting an id that is not stored is not an error: deleted=false, so a
 * retried Delete is harmless (as in Qdrant and most key-value stores). An
 * unknown collection is NOT_FOUND, so that a mistyped name is noticed. The
 * deletion is applied to the search indexes before the answer. */
static void delete_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  int deleted = 0;
  uint32_t n_chunks = 0, cid = 0;
  coll_config cc;
  ctxd_clearerr(&e);
  Ctxd__V1__DeleteRequest *req =
      ctxd__v1__delete_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed DeleteRequest message");
    return;
  }
  size_t id_len = strlen(req->id);
  if (pbw_field_has_nul(msg, len, 1) || pbw_field_has_nul(msg, len, 2)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "%s contains a NUL byte",
               pbw_field_has_nul(msg, len, 1) ? "id" : "collection");
  } else if (call_expired(c)) {
    rpc_finish(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded before the write");
  } else if (check_id(req->id, id_len, 0, &e) ||
             collections_resolve(ctx->cs, req->collection,
                                 strlen(req->collection), &cid, &cc, &e) ||
             store_delete(ctx->st, cid, req->id, id_len, &deleted, &n_chunks,
                          &e)) {
    rpc_finish_error(c, &e);
  } else if (deleted && coll_sync(ctx->cs, &e) != 0) {
    rpc_finish(c, ctxd_err_grpc_status(e.code),
               "document %s is deleted but search may still return it: %s",
               req->id, e.msg);
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
  uint32_t cid = 0;
  coll_config cc;
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
  if (pbw_field_has_nul(msg, len, 3)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "collection contains a NUL byte");
    goto done;
  }
  if (collections_resolve(ctx->cs, req->collection, strlen(req->collection),
                          &cid, &cc, &e) ||
      store_list(ctx->st, cid, after, page, &docs, &n, &next, &e)) {
    rpc_finish_error(c, &e);
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
  lm_model *tk_ref = NULL;
  const tok *tk;
  ctxd_clearerr(&e);
  Ctxd__V1__ChunkRequest *req =
      ctxd__v1__chunk_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed ChunkRequest message");
    return;
  }
  tk = models_tok(ctx->models, &tk_ref);
  size_t text_len = strlen(req->text);
  if (pbw_field_has_nul(msg, len, 1)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "text contains a NUL byte");
    goto done;
  }
  if (!utf8_valid(req->text, text_len, &bad)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT,
               "text is not valid UTF-8 at byte offset %zu", bad);
    goto done;
  }
  if (chunk_opts_resolve(ctx->cfg->chunk_max_tokens,
                         ctx->cfg->chunk_overlap_tokens, req->chunking, &co,
                         &e) ||
      chunk_text(req->text, text_len, &co, tk, &spans, &n, &e)) {
    rpc_finish_error(c, &e);
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
  r.tokenizer = (char *)tk->name;
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
  lm_model_free(tk_ref);
  ctxd__v1__chunk_request__free_unpacked(req, NULL);
}

const rpc_method h_documents_chunk = {"/ctxd.v1.Documents/Chunk", RPC_UNARY, 0,
                                      chunk_on_message, NULL, NULL, NULL};
