/* store.h - the document store: LMDB, the source of truth.
 *
 * One LMDB environment per data directory (files `data.mdb` and `lock.mdb`
 * inside it), with named databases for documents, texts, the client-id index,
 * chunks, the change log and a meta record (schema version, tokenizer,
 * counters). See ../../shared/DESIGN.md,
 * "Storage", and the layout comment at the top of store.c.
 *
 * Thread safety: a store handle is shared by all threads. Any number of
 * reads run at once; writes are serialised by LMDB. Every call opens and
 * finishes its own transaction: when a write call returns 0, its commit is
 * durable (fsync'd) - that is what "acknowledged" means in ctxd.
 *
 * Ids: client ids are 1..STORE_ID_MAX bytes. Internally each document has a
 * u64 id assigned at first insert and kept across replacements; ids longer
 * than what fits an LMDB key are indexed by a hash, the full id stored in the
 * value to resolve collisions.
 *
 * Map size: the map is reserved large and sparse up front and grows by
 * itself when full; a full disk or an exhausted max_map_size comes back as
 * CTXD_ENOSPC and leaves the store unchanged. */
#ifndef CTXD_STORE_H
#define CTXD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "chunk.h"
#include "err.h"

#define STORE_SCHEMA_VERSION 1
#define STORE_ID_MAX 1024

typedef struct store store;

typedef struct store_opts {
  uint64_t map_size;     /* initial map size in bytes; 0: 1 GiB */
  uint64_t max_map_size; /* growth limit in bytes; 0: 1 TiB */
  unsigned max_readers;  /* 0: 1024 */
  int no_sync;           /* tests/benchmarks only: commits are not fsync'd */
} store_opts;

/* One metadata entry; strings are not NUL-terminated. */
typedef struct store_kv {
  const char *key;
  size_t key_len;
  const char *val;
  size_t val_len;
} store_kv;

/* One document to write. The caller validated it (UTF-8, id length) and
 * chunked it; `chunks` covers `text`. An empty id (id_len == 0) asks the
 * store to generate one (a random UUIDv4 string). */
typedef struct store_put_doc {
  const char *id;
  size_t id_len;
  const char *text;
  size_t text_len;
  const store_kv *meta;
  size_t n_meta;
  const chunk_span *chunks;
  size_t n_chunks;
} store_put_doc;

typedef struct store_put_result {
  char id[STORE_ID_MAX + 1]; /* the stored id, NUL-terminated */
  uint64_t doc_seq;          /* the internal u64 id */
  int replaced;              /* an older version was replaced */
  uint64_t tokens;           /* sum of chunk tokens */
} store_put_result;

/* Open (creating if needed) the store in directory `dir` (created if
 * missing). `opts` may be NULL. Refuses a store with a newer schema version
 * (CTXD_EPRECOND) and a directory it cannot use (CTXD_EIO).
 * The caller closes *out with store_close(). */
int store_open(const char *dir, const store_opts *opts, store **out,
               ctxd_error *e);

/* Close the environment; no call may be in flight. NULL is a no-op. */
void store_close(store *s);

/* Upsert n documents in one transaction: all of them commit, or none.
 * A replaced document's old chunks are removed. Appends one change-log entry
 * per document. `res` (n entries, may be NULL) receives each result.
 * Errors: CTXD_EINVAL (id too long, duplicate id inside the batch),
 * CTXD_ENOSPC, CTXD_EIO. */
int store_put(store *s, const store_put_doc *docs, size_t n,
              store_put_result *res, ctxd_error *e);

/* A document read back. All strings are NUL-terminated copies owned by the
 * struct, freed with store_doc_free(). */
typedef struct store_doc {
  char *id;
  size_t id_len;
  uint64_t doc_seq;
  char *text; /* NULL unless STORE_GET_TEXT */
  size_t text_len;
  uint64_t bytes; /* text length, always set */
  uint64_t tokens;
  uint32_t n_chunks;    /* always set */
  chunk_span *chunks;   /* NULL unless STORE_GET_CHUNKS */
  store_kv *meta;       /* always set: n_meta entries */
  size_t n_meta;
} store_doc;

enum { STORE_GET_TEXT = 1, STORE_GET_CHUNKS = 2 };

/* Fetch a document by client id. Errors: CTXD_ENOTFOUND, CTXD_EINVAL (id
 * length), CTXD_ENOMEM, CTXD_EIO. */
int store_get(store *s, const char *id, size_t id_len, int flags,
              store_doc **out, ctxd_error *e);

void store_doc_free(store_doc *d);

/* Delete a document and its chunks. *deleted = 0 when no such document
 * existed (not an error); *n_chunks (may be NULL) = chunks removed. */
int store_delete(store *s, const char *id, size_t id_len, int *deleted,
                 uint32_t *n_chunks, ctxd_error *e);

/* List documents in internal-id (first insertion) order, starting after
 * internal id `after` (0: from the start), at most `limit`. *out is an array
 * of *n documents (meta, no text or chunks) freed with store_docs_free().
 * *next = the internal id to pass as `after` for the next page, 0 at the end. */
int store_list(store *s, uint64_t after, size_t limit, store_doc **out,
               size_t *n, uint64_t *next, ctxd_error *e);

void store_docs_free(store_doc *docs, size_t n);

typedef struct store_stats {
  uint64_t documents, chunks, bytes, tokens;
  uint64_t file_bytes;     /* size of the data file */
  uint64_t map_bytes;      /* current map size */
  uint64_t map_used_bytes; /* last used page * page size */
  uint64_t last_seq;       /* last change-log sequence number */
  uint32_t schema_version;
  char tokenizer[64];      /* from the meta record, "" when unset */
} store_stats;

int store_stats_get(store *s, store_stats *out, ctxd_error *e);

/* Record the tokenizer name in the meta record (done at start-up). */
int store_set_tokenizer(store *s, const char *name, ctxd_error *e);

/* Consistency check: every document's id-index entry and chunks, chunk
 * ranges inside the text and contiguous in order, counters equal to what is
 * stored, no orphan chunks or index entries. Fills *report (problems as
 * malloc'd strings, at most 1000) freed with store_verify_free(). */
typedef struct store_verify_report {
  int ok;
  uint64_t documents_checked;
  uint64_t chunks_checked;
  char **problems;
  size_t n_problems;
} store_verify_report;

int store_verify(store *s, store_verify_report *report, ctxd_error *e);

void store_verify_free(store_verify_report *report);

/* Tests only: replace the 64-bit hash that keys ids too long for an LMDB key
 * (NULL restores the built-in one), so that tests can force two long ids
 * onto one key and exercise collision handling. Call it with no store open:
 * it changes how every store finds long ids. */
void store_test_set_id_hash(uint64_t (*fn)(const void *data, size_t n));

#endif
