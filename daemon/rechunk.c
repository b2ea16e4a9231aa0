/* rechunk.c - re-chunk the whole store with the tokenizer in use, on a
 * thread of its own, in batches of if_unchanged rewrites (rechunk.h). */
#include "rechunk.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../index/chunk.h"
#include "../index/coll.h"
#include "../index/store.h"
#include "collections.h"
#include "ctx.h"
#include "log.h"
#include "models.h"

/* A batch commits after this many documents or text bytes (one
 * transaction: store_put's cost per document falls with batch size). */
#define BATCH_DOCS 64
#define BATCH_BYTES (16u << 20)

struct rechunk {
  ctxd_ctx *ctx;
  pthread_mutex_t mu; /* guards st, thread, started */
  rechunk_status st;
  pthread_t thread;
  int started;        /* a thread was created and not yet joined */
  atomic_int stop;    /* set by rechunk_close */
};

/* One document read and re-chunked, ready for store_put. */
typedef struct item {
  store_doc *doc;
  chunk_span *chunks;
  size_t n_chunks;
  float *vectors;
} item;

int rechunk_create(ctxd_ctx *ctx, rechunk **out, ctxd_error *e) {
  rechunk *r = calloc(1, sizeof *r);
  if (!r) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  r->ctx = ctx;
  pthread_mutex_init(&r->mu, NULL);
  *out = r;
  return 0;
}

static uint64_t now_s(void) { return (uint64_t)time(NULL); }

static void set_progress(rechunk *r, uint64_t done, uint64_t chunks,
                         uint64_t skipped) {
  pthread_mutex_lock(&r->mu);
  r->st.done = done;
  r->st.chunks = chunks;
  r->st.skipped = skipped;
  pthread_mutex_unlock(&r->mu);
}

/* The stored vectors of a `none` collection's document (they came from the
 * client and cannot be computed again). *out malloc'd, n x dim floats. */
static int stored_vectors(store *st, uint32_t cid, const store_doc *d,
                          uint32_t dim, float **out, ctxd_error *e) {
  store_reader *rd;
  const float *v;
  uint32_t n;
  *out = NULL;
  int rc = store_reader_begin(st, &rd, e);
  if (rc) return rc;
  rc = store_reader_doc_vectors(rd, cid, d->doc_seq, &v, &n, e);
  if (rc == 0 && n != d->n_chunks)
    rc = ctxd_seterr(e, CTXD_ECORRUPT,
                     "document %s has %u chunks but %u vectors", d->id,
                     d->n_chunks, n);
  if (rc == 0 && n) {
    *out = malloc((size_t)n * dim * sizeof **out);
    if (!*out)
      rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    else
      memcpy(*out, v, (size_t)n * dim * sizeof **out);
  }
  store_reader_end(rd);
  return rc;
}

/* Read document `id` and cut it again. CTXD_ENOTFOUND: deleted since it
 * was listed (the caller skips it). */
static int item_make(ctxd_ctx *ctx, uint32_t cid, const coll_config *cc,
                     const tok *tk, const char *id, size_t id_len, item *it,
                     ctxd_error *e) {
  memset(it, 0, sizeof *it);
  int rc = store_get(ctx->st, cid, id, id_len,
                     STORE_GET_TEXT | STORE_GET_CHUNKS, &it->doc, e);
  if (rc) return rc;
  store_doc *d = it->doc;
  if (collections_client_vectors_only(cc)) {
    /* Client chunks and vectors stay; only the counts follow the tokenizer. */
    it->n_chunks = d->n_chunks;
    it->chunks = d->chunks;
    d->chunks = NULL;
    for (size_t i = 0; i < it->n_chunks; i++) {
      chunk_span *c = &it->chunks[i];
      uint64_t n = tok_count(tk, d->text + c->byte_start,
                             (size_t)(c->byte_end - c->byte_start));
      c->tokens = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    }
    return cc->dim ? stored_vectors(ctx->st, cid, d, cc->dim, &it->vectors, e)
                   : 0;
  }
  chunk_opts co = {cc->chunk_max_tokens, cc->chunk_overlap_tokens,
                   STORE_MAX_CHUNKS};
  rc = chunk_text(d->text, d->text_len, &co, tk, &it->chunks, &it->n_chunks,
                  e);
  if (rc || !it->n_chunks || !cc->dim) return rc;
  it->vectors = malloc(it->n_chunks * cc->dim * sizeof *it->vectors);
  if (!it->vectors) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  return coll_embed_chunks(ctx->cs, cid, d->text, it->chunks, it->n_chunks,
                           it->vectors, e);
}

static void item_free(item *it) {
  store_doc_free(it->doc);
  free(it->chunks);
  free(it->vectors);
  memset(it, 0, sizeof *it);
}

/* Write a batch with if_unchanged and make it searchable. */
static int batch_write(ctxd_ctx *ctx, uint32_t cid, uint32_t dim, item *items,
                       size_t n, uint64_t *chunks, uint64_t *skipped,
                       ctxd_error *e) {
  store_put_doc pd[BATCH_DOCS];
  store_put_result res[BATCH_DOCS];
  memset(pd, 0, sizeof pd);
  for (size_t i = 0; i < n; i++) {
    const store_doc *d = items[i].doc;
    pd[i] = (store_put_doc){.cid = cid,
                            .id = d->id,
                            .id_len = d->id_len,
                            .text = d->text,
                            .text_len = d->text_len,
                            .meta = d->meta,
                            .n_meta = d->n_meta,
                            .chunks = items[i].chunks,
                            .n_chunks = items[i].n_chunks,
                            .vectors = items[i].vectors,
                            .dim = items[i].vectors ? dim : 0,
                            .if_unchanged = 1};
  }
  int rc = store_put(ctx->st, pd, n, res, e);
  if (rc) return rc;
  for (size_t i = 0; i < n; i++) {
    if (res[i].skipped)
      (*skipped)++;
    else
      *chunks += items[i].n_chunks;
  }
  return coll_sync(ctx->cs, e);
}

/* Re-chunk one collection. */
static int run_coll(rechunk *r, const store_collection *col, const tok *tk,
                    uint64_t *done, uint64_t *chunks, uint64_t *skipped,
                    ctxd_error *e) {
  ctxd_ctx *ctx = r->ctx;
  coll_config cc;
  uint32_t cid;
  item items[BATCH_DOCS];
  size_t n_items = 0, bytes = 0;
  store_doc *list = NULL;
  size_t n_list = 0;
  uint64_t after = 0, next;
  int rc = coll_resolve(ctx->cs, col->name, 0, &cid, &cc, e);
  if (rc == CTXD_ENOTFOUND) return 0; /* dropped meanwhile */
  if (rc) return rc;
  do {
    rc = store_list(ctx->st, cid, after, BATCH_DOCS, &list, &n_list, &next, e);
    if (rc) break;
    for (size_t i = 0; i < n_list && rc == 0; i++) {
      if (atomic_load(&r->stop)) {
        rc = ctxd_seterr(e, CTXD_ECANCELED, "stopped: the daemon shuts down");
        break;
      }
      rc = item_make(ctx, cid, &cc, tk, list[i].id, list[i].id_len,
                     &items[n_items], e);
      if (rc == CTXD_ENOTFOUND) {
        item_free(&items[n_items]);
        (*skipped)++;
        (*done)++;
        rc = 0;
        continue;
      }
      if (rc) {
        char why[CTXD_ERRMSG_MAX];
        snprintf(why, sizeof why, "%s", e->msg);
        rc = ctxd_seterr(e, rc, "collection %s, document %.64s: %s",
                         col->name, list[i].id, why);
        item_free(&items[n_items]);
        break;
      }
      bytes += items[n_items].doc->text_len;
      n_items++;
      if (n_items == BATCH_DOCS || bytes >= BATCH_BYTES) {
        rc = batch_write(ctx, cid, cc.dim, items, n_items, chunks, skipped, e);
        *done += n_items;
        for (size_t k = 0; k < n_items; k++) item_free(&items[k]);
        n_items = bytes = 0;
        set_progress(r, *done, *chunks, *skipped);
      }
    }
    store_docs_free(list, n_list);
    after = next;
  } while (rc == 0 && next);
  if (rc == 0 && n_items) {
    rc = batch_write(ctx, cid, cc.dim, items, n_items, chunks, skipped, e);
    *done += n_items;
  }
  for (size_t k = 0; k < n_items; k++) item_free(&items[k]);
  set_progress(r, *done, *chunks, *skipped);
  return rc;
}

static void *run(void *arg) {
  rechunk *r = arg;
  ctxd_ctx *ctx = r->ctx;
  ctxd_error e;
  lm_model *ref;
  store_collection *cols = NULL;
  size_t n_cols = 0;
  uint64_t done = 0, chunks = 0, skipped = 0, total = 0;
  const tok *tk = models_tok(ctx->models, &ref);
  ctxd_clearerr(&e);
  int rc = store_coll_list(ctx->st, &cols, &n_cols, &e);
  for (size_t i = 0; rc == 0 && i < n_cols; i++) total += cols[i].documents;
  pthread_mutex_lock(&r->mu);
  r->st.total = total;
  /* The tokenizer this run uses (a LoadModel since rechunk_start's look
   * may have changed it). */
  snprintf(r->st.tokenizer, sizeof r->st.tokenizer, "%s", tk->name);
  pthread_mutex_unlock(&r->mu);
  LOG_INFO("rechunk-started tokenizer=\"%s\" documents=%llu", tk->name,
           (unsigned long long)total);
  for (size_t i = 0; rc == 0 && i < n_cols; i++)
    rc = run_coll(r, &cols[i], tk, &done, &chunks, &skipped, &e);
  if (rc == 0) {
    /* Record the tokenizer only if it is still the one in use: a LoadModel
     * during the run left some documents counted with the old one. */
    lm_model *ref2;
    const tok *now = models_tok(ctx->models, &ref2);
    if (strcmp(now->name, tk->name) != 0)
      rc = ctxd_seterr(&e, CTXD_EBUSY,
                       "the tokenizer changed from %s to %s while "
                       "re-chunking: run it again",
                       tk->name, now->name);
    else
      rc = store_set_tokenizer(ctx->st, tk->name, &e);
    lm_model_free(ref2);
  }
  free(cols);
  pthread_mutex_lock(&r->mu);
  r->st.state = rc ? RECHUNK_FAILED : RECHUNK_DONE;
  if (rc) snprintf(r->st.error, sizeof r->st.error, "%s", e.msg);
  r->st.done = done;
  r->st.chunks = chunks;
  r->st.skipped = skipped;
  r->st.seconds = now_s() - r->st.started_at;
  pthread_mutex_unlock(&r->mu);
  if (rc)
    LOG_WARN("rechunk-failed tokenizer=\"%s\" documents=%llu err=\"%s\"",
             tk->name, (unsigned long long)done, e.msg);
  else
    LOG_INFO("rechunk-done tokenizer=\"%s\" documents=%llu chunks=%llu "
             "skipped=%llu",
             tk->name, (unsigned long long)done, (unsigned long long)chunks,
             (unsigned long long)skipped);
  lm_model_free(ref);
  return NULL;
}

int rechunk_start(rechunk *r, ctxd_error *e) {
  int rc = 0;
  pthread_mutex_lock(&r->mu);
  if (r->st.state == RECHUNK_RUNNING) {
    rc = ctxd_seterr(e, CTXD_EBUSY, "a rechunk is running");
    goto out;
  }
  if (r->started) { /* the last run's thread has ended: reap it */
    pthread_join(r->thread, NULL);
    r->started = 0;
  }
  lm_model *ref;
  const tok *tk = models_tok(r->ctx->models, &ref);
  memset(&r->st, 0, sizeof r->st);
  r->st.state = RECHUNK_RUNNING;
  snprintf(r->st.tokenizer, sizeof r->st.tokenizer, "%s", tk->name);
  lm_model_free(ref);
  r->st.started_at = now_s();
  if (pthread_create(&r->thread, NULL, run, r) != 0) {
    r->st.state = RECHUNK_FAILED;
    snprintf(r->st.error, sizeof r->st.error, "cannot start a thread");
    rc = ctxd_seterr(e, CTXD_EIO, "rechunk: cannot start a thread");
    goto out;
  }
  r->started = 1;
out:
  pthread_mutex_unlock(&r->mu);
  return rc;
}

void rechunk_get(rechunk *r, rechunk_status *out) {
  pthread_mutex_lock(&r->mu);
  *out = r->st;
  if (out->state == RECHUNK_RUNNING) out->seconds = now_s() - out->started_at;
  pthread_mutex_unlock(&r->mu);
}

void rechunk_close(rechunk *r) {
  if (!r) return;
  atomic_store(&r->stop, 1);
  pthread_mutex_lock(&r->mu);
  int started = r->started;
  r->started = 0;
  pthread_mutex_unlock(&r->mu);
  if (started) pthread_join(r->thread, NULL);
  pthread_mutex_destroy(&r->mu);
  free(r);
}
