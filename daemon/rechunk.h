/* rechunk.h - Admin.Rechunk's engine: re-chunk every stored document with
 * the tokenizer in use, in the background, then record that tokenizer in
 * the store's meta record (which clears Stats' tokenizer_mismatch).
 *
 * Each document is cut again with its collection's chunk settings
 * (chunk.max_tokens / overlap as the collection was created: a Put's own
 * ChunkOptions or client chunks are not remembered), its vectors computed
 * again by the collection's embedder, and it is written back in batches
 * through store_put's if_unchanged rewrite: a document that a client
 * changed or deleted meanwhile is left as it is (counted as skipped; its
 * own Put already used the current tokenizer). A collection whose embedder
 * is `none` (client vectors) keeps its chunks and vectors; only their token
 * counts are recounted. Every batch goes through coll_sync, so search sees
 * the new chunks as they land.
 *
 * One run at a time, on a thread of its own (never a request worker). */
#ifndef CTXD_RECHUNK_H
#define CTXD_RECHUNK_H

#include <stdint.h>

#include "../index/err.h"

struct ctxd_ctx;
typedef struct rechunk rechunk;

enum { RECHUNK_NONE = 0, RECHUNK_RUNNING, RECHUNK_DONE, RECHUNK_FAILED };

typedef struct rechunk_status {
  int state;                /* RECHUNK_* */
  char tokenizer[64];       /* the tokenizer it re-chunks with */
  uint64_t done, total;     /* documents */
  uint64_t chunks;          /* chunks written */
  uint64_t skipped;         /* documents changed or deleted meanwhile */
  char error[CTXD_ERRMSG_MAX]; /* RECHUNK_FAILED: why */
  uint64_t started_at;      /* unix seconds */
  uint64_t seconds;         /* running time so far, or in all */
} rechunk_status;

/* A runner over ctx's store, collections and models (all must outlive it).
 * Errors: CTXD_ENOMEM. */
int rechunk_create(struct ctxd_ctx *ctx, rechunk **out, ctxd_error *e);

/* Stop a running rechunk at its next document (what was written stays:
 * running it again finishes the job) and free. NULL is a no-op. */
void rechunk_close(rechunk *r);

/* Start a run. Errors: CTXD_EBUSY (one is running: follow it with
 * rechunk_get), CTXD_EIO (no thread). */
int rechunk_start(rechunk *r, ctxd_error *e);

/* The running or last run's status (state RECHUNK_NONE: none since start). */
void rechunk_get(rechunk *r, rechunk_status *out);

#endif
