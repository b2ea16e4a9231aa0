/* coll.h - collections: each one's embedder, vector index and BM25 scoring,
 * kept in step with the store, and search over them.
 *
 * A coll_set is the retrieval engine of one data directory. It owns one
 * vector index (vindex.h) per collection, derived from the vectors LMDB
 * holds (the source of truth):
 *   - each index is saved as <index_dir>/<cid>.vindex with the change-log
 *     seq it covers; coll_open loads it and replays the change log after
 *     that seq (adds and removals), so a crash loses nothing acknowledged
 *     and resurrects nothing deleted; the log is trimmed after saves;
 *   - coll_sync applies committed changes to the in-memory indexes; the
 *     daemon calls it after every commit, so a put or delete is visible to
 *     search when its RPC returns;
 *   - IVF/PQ specs search exactly (a Flat index) until the collection holds
 *     enough vectors to train, then train in the background and switch;
 *   - HNSW cannot remove: removed chunks are masked, and past
 *     `rebuild_masked_ratio` the index is rebuilt in the background;
 *   - coll_rebuild_start rebuilds from LMDB in the background and switches
 *     over atomically (changes committed meanwhile are replayed first).
 * A background maintenance thread does the saving, training and rebuilds.
 *
 * Thread safety: every function may be called from any thread; searches
 * run concurrently with each other and with writes. */
#ifndef CTXD_COLL_H
#define CTXD_COLL_H

#include <stddef.h>
#include <stdint.h>

#include "embed.h"
#include "err.h"
#include "lex.h"
#include "store.h"
#include "vindex.h"

#define COLL_DEFAULT_NAME "default"

/* A collection's settings, fixed at creation. */
typedef struct coll_config {
  char name[STORE_COLL_NAME_MAX + 1];
  /* "hash" or "hash:dim=...,..." (embed.h's canonical form), or
   * "none:dim=N" (clients supply every chunk's vector). Later: "model". */
  char embedder[256];
  uint32_t dim; /* derived from the embedder */
  vindex_metric metric;
  char index_spec[VINDEX_SPEC_MAX]; /* FAISS factory string */
  uint32_t chunk_max_tokens, chunk_overlap_tokens;
} coll_config;

/* Parse/format a config to/from the text the store keeps. */
int coll_config_parse(const char *text, coll_config *out, ctxd_error *e);
void coll_config_format(const coll_config *c, char *buf, size_t cap);

/* Check a config a client asked for (name, embedder, metric, spec: the spec
 * is tried with vindex_create). Fills derived fields (dim). */
int coll_config_check(coll_config *c, ctxd_error *e);

typedef struct coll_opts {
  const char *index_dir;         /* created if missing */
  coll_config defaults;          /* for `default` and collections created on
                                  * first use (name taken from the call) */
  lex_bm25 bm25;                 /* k1, b */
  double rebuild_masked_ratio;   /* 0: 0.25 */
  uint64_t save_every_changes;   /* 0: 10000 */
  unsigned save_interval_s;      /* 0: 60 */
  unsigned build_threads;        /* training/rebuild threads, 0: all cores */
} coll_opts;

typedef struct coll_set coll_set;

/* Open the engine: ensure the `default` collection exists, load every
 * collection's index file (a missing or unreadable file is rebuilt from
 * LMDB, logged through `log` if given), replay the change log, start the
 * maintenance thread. Errors: CTXD_EIO, CTXD_ECORRUPT, CTXD_ENOMEM. */
int coll_open(store *st, const coll_opts *o,
              void (*log)(int level, const char *msg, void *arg), void *log_arg,
              coll_set **out, ctxd_error *e);

/* Stop the maintenance thread, save every index, free. NULL is a no-op. */
void coll_close(coll_set *cs);

/* Create from a checked config. Errors: CTXD_EEXIST, CTXD_EINVAL. */
int coll_create(coll_set *cs, const coll_config *c, ctxd_error *e);

/* Drop with all its documents (store_coll_drop) and its index file.
 * Errors: CTXD_ENOTFOUND. Dropping `default` is allowed; it comes back
 * empty on first use. */
int coll_drop(coll_set *cs, const char *name, uint64_t *documents,
              ctxd_error *e);

/* Resolve a collection name ("" = `default`) to its id and config. With
 * `create`, a missing collection is created with the defaults. Errors:
 * CTXD_ENOTFOUND (without create), CTXD_EINVAL (bad name). */
int coll_resolve(coll_set *cs, const char *name, int create, uint32_t *cid,
                 coll_config *cfg, ctxd_error *e);

/* The embedder of collection cid (NULL for "none"), valid until the
 * collection is dropped or the set closed. */
const embedder *coll_embedder(coll_set *cs, uint32_t cid);

/* Compute the vectors of a document's chunks with the collection's
 * embedder: out[n_chunks * dim] (caller-allocated). For "none" collections
 * CTXD_EINVAL ("collection X takes client vectors"). Runs outside any lock;
 * call it on the worker that handles the request, before store_put. */
int coll_embed_chunks(coll_set *cs, uint32_t cid, const char *text,
                      const chunk_span *chunks, size_t n_chunks, float *out,
                      ctxd_error *e);

/* Apply every committed change not yet applied to the in-memory indexes.
 * Cheap when there is nothing new. */
int coll_sync(coll_set *cs, ctxd_error *e);

/* ---- Search ------------------------------------------------------------ */

enum { COLL_MODE_VECTOR = 0, COLL_MODE_LEXICAL = 1, COLL_MODE_HYBRID = 2 };

#define COLL_K_MAX 1000
/* Reciprocal rank fusion: score = sum over lists of 1 / (COLL_RRF_K + rank),
 * rank from 1; each list is searched to depth max(k, COLL_HYBRID_DEPTH). */
#define COLL_RRF_K 60
#define COLL_HYBRID_DEPTH 100

typedef struct coll_query {
  const char *text; /* query text (lexical; vector when no vector given) */
  size_t text_len;
  const float *vector; /* optional query vector, dim floats */
  uint32_t dim;
  uint32_t k;          /* 1..COLL_K_MAX */
  int mode;            /* COLL_MODE_* */
  uint32_t ef_search, nprobe; /* 0: index defaults */
  /* Filters (AND): chunks of these documents only (client ids), and of
   * documents whose metadata has every key = value. */
  const char *const *doc_ids;
  const size_t *doc_id_lens;
  size_t n_doc_ids;
  const store_kv *meta_eq;
  size_t n_meta_eq;
  int with_text; /* fill hit text */
} coll_query;

typedef struct coll_hit {
  const char *doc_id; /* into the result's memory, NUL-terminated */
  size_t doc_id_len;
  uint32_t ordinal;
  chunk_span span;
  float score;          /* mode's score: cosine/-L2, BM25, or RRF */
  const char *text;     /* with_text only, NUL-terminated */
  size_t text_len;
} coll_hit;

typedef struct coll_result {
  coll_hit *hits;
  size_t n;
  void *mem; /* owns everything the hits point to */
} coll_result;

/* Search collection cid. Errors: CTXD_EINVAL (k, mode, vector dimension
 * against the collection's, empty query, lexical/hybrid with no text),
 * CTXD_EPRECOND (vector mode on text alone in a "none" collection). */
int coll_search(coll_set *cs, uint32_t cid, const coll_query *q,
                coll_result *out, ctxd_error *e);

void coll_result_free(coll_result *r);

/* ---- Status, rebuild --------------------------------------------------- */

typedef struct coll_info {
  coll_config config;
  uint32_t cid;
  uint64_t documents, chunks, bytes, tokens;
  uint64_t vectors;       /* vectors stored in LMDB */
  uint64_t indexed;       /* live vectors in the search index */
  uint64_t masked;        /* removed but still held by the index */
  int trained;            /* 1 when the spec's index is trained and in use */
  int exact_until_trained;/* searches use the exact fallback for now */
  uint64_t min_train;     /* vectors needed before training */
  uint64_t covered_seq;   /* change-log seq of the last saved index file */
  int rebuilding;         /* a rebuild is running */
  uint64_t rebuild_done, rebuild_total;
  char rebuild_error[256]; /* the last rebuild's failure, "" if none */
} coll_info;

/* Status of one collection / all of them (*out malloc'd, free()). */
int coll_info_get(coll_set *cs, const char *name, coll_info *out,
                  ctxd_error *e);
int coll_info_list(coll_set *cs, coll_info **out, size_t *n, ctxd_error *e);

/* Start rebuilding collection `name`'s index from LMDB in the background.
 * Errors: CTXD_ENOTFOUND, CTXD_EBUSY (one is already running: its progress
 * is in coll_info). */
int coll_rebuild_start(coll_set *cs, const char *name, ctxd_error *e);

/* Save every index whose state is newer than its file, then trim the change
 * log. The maintenance thread calls this; tests and shutdown may too. */
int coll_save_all(coll_set *cs, ctxd_error *e);

#endif
