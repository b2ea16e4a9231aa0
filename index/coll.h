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
   * "none:dim=N" (clients supply every chunk's vector), or
   * "model:name=...,dim=...,hash=...,..." (embed.h: the model the vectors
   * came from; coll embeds through coll_opts.model_acquire, and needs no
   * model to open, replay or rebuild, as vectors are read from LMDB).
   * A hash embedder's idf mode decides where coll weighs terms by the
   * collection's BM25 idf (ln(1 + (N - df + 0.5) / (df + 0.5)), N = chunks,
   * df = chunks holding the term, at the time of embedding): "query" for
   * search queries only, "all" for stored chunks too, "none" never. */
  char embedder[256];
  uint32_t dim; /* derived from the embedder */
  vindex_metric metric;
  char index_spec[VINDEX_SPEC_MAX]; /* FAISS factory string */
  uint32_t chunk_max_tokens, chunk_overlap_tokens;
} coll_config;

/* Parse/format a config to/from the text the store keeps: one `key=value`
 * per line, keys `name` (optional), `embedder`, `metric` ("ip"/"l2"),
 * `index` (the spec), `chunk_max_tokens`, `chunk_overlap_tokens`; blank
 * lines and lines starting with '#' are ignored, an unknown or repeated key
 * is an error. Example:
 *   name=papers
 *   embedder=hash:dim=1024,bigrams=0,bigram_weight=0.25,sublinear_tf=1,idf=query,seed=0
 *   metric=ip
 *   index=HNSW32
 *   chunk_max_tokens=512
 *   chunk_overlap_tokens=0
 * coll_config_parse also derives dim from the embedder. Errors: CTXD_EINVAL
 * naming the line. coll_config_format needs cap >= STORE_COLL_CONFIG_MAX. */
int coll_config_parse(const char *text, coll_config *out, ctxd_error *e);
void coll_config_format(const coll_config *c, char *buf, size_t cap);

/* Check a config a client asked for (name, embedder, metric, spec: the spec
 * is tried with vindex_create; chunk_max_tokens 1..CHUNK_MAX_MAX_TOKENS,
 * overlap below it). Fills derived fields (dim) and rewrites a "hash"
 * embedder in its canonical form. Errors: CTXD_EINVAL. */
int coll_config_check(coll_config *c, ctxd_error *e);

/* Fill the empty/zero fields of c (embedder, index_spec, chunk_max_tokens;
 * chunk_overlap_tokens when chunk_max_tokens was also 0) from d. The metric
 * has no "unset" value: callers map an empty metric string to d->metric. */
void coll_config_defaults(coll_config *c, const coll_config *d);

/* "ip"/"l2" <-> vindex_metric. Parse errors: CTXD_EINVAL. */
const char *coll_metric_name(vindex_metric m);
int coll_metric_parse(const char *s, vindex_metric *out, ctxd_error *e);

typedef struct coll_opts {
  const char *index_dir;         /* created if missing */
  coll_config defaults;          /* for `default` and collections created on
                                  * first use (name taken from the call) */
  lex_bm25 bm25;                 /* k1, b */
  double rebuild_masked_ratio;   /* 0: 0.25 */
  uint64_t save_every_changes;   /* 0: 10000 */
  unsigned save_interval_s;      /* 0: 60 */
  unsigned build_threads;        /* training/rebuild threads, 0: all cores;
                                  * not applied yet: vindex's global limit
                                  * (vindex_global_init) governs train/add */
  /* The embedder of "model:..." collections, lent per call: acquire gives
   * the embedder for that config text and a hold that release returns
   * (both called from any thread, around one embed call). Its errors pass
   * through with the collection's name in front (the owner refuses, e.g.,
   * with CTXD_EPRECOND when no model or another model is loaded). NULL:
   * such collections refuse to embed (CTXD_EPRECOND). */
  int (*model_acquire)(void *arg, const char *embedder_text,
                       const embedder **emb, void **hold, ctxd_error *e);
  void (*model_release)(void *arg, void *hold);
  void *model_arg;
} coll_opts;

typedef struct coll_set coll_set;

/* Open the engine: ensure the `default` collection exists, load every
 * collection's index file (a missing or unreadable file is rebuilt from
 * LMDB, logged through `log` if given), replay the change log, start the
 * maintenance thread. `log` gets levels 0 error, 1 warn, 2 info, 3 debug
 * (log.h's LOG_LVL_*) and may be called from the maintenance thread.
 * Errors: CTXD_EINVAL (bad defaults), CTXD_EIO, CTXD_ECORRUPT (a stored
 * config that does not parse), CTXD_ENOMEM. */
int coll_open(store *st, const coll_opts *o,
              void (*log)(int level, const char *msg, void *arg), void *log_arg,
              coll_set **out, ctxd_error *e);

/* Stop the maintenance thread, save every index, free. NULL is a no-op. */
void coll_close(coll_set *cs);

/* What the header of a saved index file (<index_dir>/<cid>.vindex) says. */
typedef struct coll_file_info {
  uint32_t cid, dim;
  vindex_metric metric;
  int fallback;           /* 1: an exact Flat stand-in for an untrained index */
  char spec[VINDEX_SPEC_MAX];
  uint64_t covered_seq;   /* change-log seq the file covers */
  uint64_t max_doc;
} coll_file_info;

/* Read a saved index file on its own (tools and benchmarks: search the very
 * graph a daemon serves). *out is the index (vindex_free it); info may be
 * NULL. Errors: CTXD_ENOTFOUND, CTXD_EIO (unreadable, or a damaged index
 * payload: vindex_read's reason), CTXD_ECORRUPT (not an index file,
 * trailing data, header and payload disagree), CTXD_ENOMEM; each message
 * starts with the path. */
int coll_file_read(const char *path, vindex **out, coll_file_info *info,
                   ctxd_error *e);

/* The vector-index half of a hot backup. Saves every index that is newer
 * than its file (coll_save_all), then, with saves and change-log trims held
 * off, copies each collection's <cid>.vindex and the manifest into dst_dir
 * (created; the files fsync'd) and calls snap(arg), which must begin the
 * store's copy (store_copy) before it returns; then lets saves go on.
 * Why this order: an index file says which change-log seq it covers, and
 * coll_open replays the log after it. A file copied before the store's
 * snapshot covers at most what that snapshot holds (a saved file holds only
 * committed changes), so replaying the copied log after it brings it
 * exactly to the snapshot; a file newer than the snapshot would keep
 * vectors of documents the copy never saw, and nothing would remove them.
 * Holding off trims keeps in the copied log every change after each copied
 * file's seq. A collection created meanwhile has no file in the backup and
 * is rebuilt from the store at open; a file of one dropped meanwhile is
 * removed at open. Errors: coll_save_all's, CTXD_EIO, CTXD_ENOSPC, and
 * whatever snap returns. */
int coll_backup(coll_set *cs, const char *dst_dir,
                int (*snap)(void *arg, ctxd_error *e), void *arg,
                ctxd_error *e);

/* Tests only: like coll_close but saves nothing, as a crash would. */
void coll_close_nosave(coll_set *cs);

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

/* The embedder of collection cid (NULL for "none" and "model"), valid until the
 * collection is dropped or the set closed. It never weighs by idf: use
 * coll_embed_chunks / coll_search, which apply the idf mode. */
const embedder *coll_embedder(coll_set *cs, uint32_t cid);

/* Compute the vectors of a document's chunks with the collection's
 * embedder: out[n_chunks * dim] (caller-allocated); with idf mode "all"
 * weighed by the collection's idf as it stands (a store reader is taken
 * and released: the caller must hold none). For "none" collections
 * CTXD_EINVAL ("collection X takes client vectors"). Runs outside any lock;
 * call it on the worker that handles the request, before store_put.
 * Errors: CTXD_EINVAL, CTXD_ENOTFOUND (no collection cid), CTXD_ENOMEM,
 * CTXD_EIO, CTXD_EPRECOND (a "model" collection whose model is not the
 * one loaded, or none is: model_acquire's refusal). */
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
/* Filter and query limits (CTXD_EINVAL beyond). */
#define COLL_DOC_IDS_MAX 10000
#define COLL_META_EQ_MAX 64
#define COLL_QUERY_TERMS_MAX 1024

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

/* Search collection cid. Scores, higher is better: vector mode the cosine
 * similarity (ip: vectors and queries are L2-normalised, so the inner
 * product is the cosine) or minus the Euclidean distance (l2); lexical mode
 * BM25; hybrid the RRF sum. Ties are broken by label (document internal id,
 * then ordinal). A query vector of norm 0 in an ip collection matches
 * nothing. Errors: CTXD_EINVAL (k, mode, vector dimension against the
 * collection's, empty query, lexical/hybrid with no text, filter limits),
 * CTXD_ELIMIT (query text of more than COLL_QUERY_TERMS_MAX distinct terms:
 * work beyond one request's share), CTXD_ENOTFOUND (no collection cid), CTXD_EPRECOND (vector or hybrid mode
 * on text alone in a "none" collection), CTXD_ENOMEM, CTXD_EIO. */
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
