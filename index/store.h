/* store.h - the document store: LMDB, the source of truth.
 *
 * One LMDB environment per data directory (files `data.mdb` and `lock.mdb`
 * inside it), with named databases for collections, documents, texts, the
 * client-id index, chunks, vectors, BM25 postings, jobs, the change log and
 * a meta record (schema version, tokenizer, counters). See
 * ../../shared/DESIGN.md, "Storage", and the layout comment at the top of
 * store.c.
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
 * CTXD_ENOSPC and leaves the store unchanged. Deletes and drops can still
 * free space on a disk filled to the last block: they use the disk reserve,
 * <dir>/reserve.space, 1/64 of the volume (1 to 64 MiB; store.c, "disk
 * reserve"). */
#ifndef CTXD_STORE_H
#define CTXD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "chunk.h"
#include "err.h"

#define STORE_SCHEMA_VERSION 2
#define STORE_ID_MAX 1024

/* Collections: every document belongs to one. Names are 1..64 bytes of
 * [A-Za-z0-9_.-]; internal collection ids (cid) are u32 from 1, never reused.
 * Client ids are unique per collection (the id index is keyed by cid + id). */
#define STORE_COLL_NAME_MAX 64
#define STORE_COLL_CONFIG_MAX 1024

/* A chunk's vector-index label: the document's internal id and the chunk's
 * ordinal in one int64, so a label names its chunk without a lookup and all
 * labels of a document form the range [STORE_LABEL(doc, 0),
 * STORE_LABEL(doc + 1, 0)). Documents have at most STORE_MAX_CHUNKS chunks. */
#define STORE_MAX_CHUNKS (1u << 20)
#define STORE_LABEL(doc, ord) ((int64_t)(((uint64_t)(doc) << 20) | (uint64_t)(ord)))
#define STORE_LABEL_DOC(l) ((uint64_t)(l) >> 20)
#define STORE_LABEL_ORD(l) ((uint32_t)((uint64_t)(l) & (STORE_MAX_CHUNKS - 1)))

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
 * store to generate one (a random UUIDv4 string). The store computes the
 * chunks' BM25 postings (lex.h terms of each chunk's text) in the same
 * transaction. */
typedef struct store_put_doc {
  uint32_t cid; /* the collection (must exist: CTXD_ENOTFOUND otherwise) */
  const char *id;
  size_t id_len;
  const char *text;
  size_t text_len;
  const store_kv *meta;
  size_t n_meta;
  const chunk_span *chunks;
  size_t n_chunks;
  /* n_chunks x dim floats (row i = chunk i's vector), or NULL: no vectors.
   * dim must equal the collection's vector dimension given to
   * store_coll_create (CTXD_EINVAL otherwise). */
  const float *vectors;
  uint32_t dim;
  /* Rewrite only (re-chunking a stored document): replace the document only
   * if it still exists with exactly this text and metadata, else leave it
   * alone and set the result's `skipped` - a write committed since the
   * caller read it wins. */
  int if_unchanged;
} store_put_doc;

typedef struct store_put_result {
  char id[STORE_ID_MAX + 1]; /* the stored id, NUL-terminated */
  uint64_t doc_seq;          /* the internal u64 id */
  int replaced;              /* an older version was replaced */
  uint64_t tokens;           /* sum of chunk tokens */
  int skipped;               /* if_unchanged found it changed or gone:
                              * nothing written (only id is set) */
} store_put_result;

/* Open (creating if needed) the store in directory `dir` (created if
 * missing). `opts` may be NULL. Refuses a store with another schema version
 * (CTXD_EPRECOND, with a message naming both versions: schema 1 stores from
 * ctxd 0.1 have no collections and are not migrated) and a directory it
 * cannot use (CTXD_EIO). The caller closes *out with store_close(). */
int store_open(const char *dir, const store_opts *opts, store **out,
               ctxd_error *e);

/* Close the environment; no call may be in flight. NULL is a no-op. */
void store_close(store *s);

/* Upsert n documents in one transaction: all of them commit, or none.
 * A replaced document's old chunks, vectors and postings are removed (it
 * keeps its internal id). Appends one change-log entry per document. `res`
 * (n entries, may be NULL) receives each result. The chunks' terms are
 * computed before the transaction starts; a batch of several documents
 * costs far less per document than one transaction each, since every
 * commit rewrites the postings pages of every term it touches.
 * Errors: CTXD_EINVAL (id too long, duplicate (cid, id) inside the batch,
 * more than STORE_MAX_CHUNKS chunks, chunks that do not tile the text,
 * vectors whose dim differs from the collection's or that hold a NaN or an
 * infinity - the message names the document), CTXD_ENOTFOUND (no such
 * collection), CTXD_ENOSPC, CTXD_EIO. */
int store_put(store *s, const store_put_doc *docs, size_t n,
              store_put_result *res, ctxd_error *e);

/* A document read back. All strings are NUL-terminated copies owned by the
 * struct, freed with store_doc_free(). */
typedef struct store_doc {
  uint32_t cid;
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
int store_get(store *s, uint32_t cid, const char *id, size_t id_len,
              int flags, store_doc **out, ctxd_error *e);

void store_doc_free(store_doc *d);

/* Delete a document with its chunks, vectors and postings. *deleted = 0
 * when no such document existed (not an error); *n_chunks (may be NULL) =
 * chunks removed. On a full disk it frees the disk reserve and runs again;
 * CTXD_ENOSPC only when that is gone too. */
int store_delete(store *s, uint32_t cid, const char *id, size_t id_len,
                 int *deleted, uint32_t *n_chunks, ctxd_error *e);

/* List the documents of collection cid in internal-id (first insertion)
 * order, starting after internal id `after` (0: from the start), at most
 * `limit` (an unknown cid lists nothing). *out is an array of *n documents
 * (meta, no text or chunks) freed with store_docs_free(). *next = the
 * internal id to pass as `after` for the next page, 0 at the end. */
int store_list(store *s, uint32_t cid, uint64_t after, size_t limit,
               store_doc **out, size_t *n, uint64_t *next, ctxd_error *e);

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

/* Consistency check: every document's collection, id-index entry (under
 * its collection's id) and chunks, chunk ranges inside the text and
 * contiguous in order; every counted vector present with the collection's
 * dimension; postings equal to what the chunk texts give (each chunk's
 * terms have postings with the right tf and dl, no posting names a missing
 * chunk, per-collection posting counts agree, so document frequencies add
 * up); global and per-collection counters equal to what is stored; no
 * orphan chunks, texts, vectors or index entries. It re-tokenizes every
 * chunk: it takes about as long as ingesting the store again. Fills *report
 * (problems as malloc'd strings, at most 1000) freed with
 * store_verify_free(). */
typedef struct store_verify_report {
  int ok;
  uint64_t documents_checked;
  uint64_t chunks_checked;
  char **problems;
  size_t n_problems;
} store_verify_report;

int store_verify(store *s, store_verify_report *report, ctxd_error *e);

void store_verify_free(store_verify_report *report);

/* ---- Collections ------------------------------------------------------ */

typedef struct store_collection {
  uint32_t cid;
  char name[STORE_COLL_NAME_MAX + 1];
  /* Opaque text owned by the layer above (coll.c): embedder, metric, index
   * spec, chunking defaults. The store only keeps it. */
  char config[STORE_COLL_CONFIG_MAX + 1];
  uint32_t dim; /* vector dimension of its documents; 0 = no vectors */
  /* Counters kept in the same transactions as the writes. */
  uint64_t documents, chunks, bytes, tokens;
  uint64_t vectors;     /* chunks that carry a vector */
  uint64_t lex_len_sum; /* sum over chunks of their lex.h term counts */
} store_collection;

/* Create a collection. Errors: CTXD_EINVAL (bad name, config too long, dim
 * above 65536), CTXD_EEXIST, CTXD_ENOSPC, CTXD_EIO. *cid (may be NULL)
 * receives the new id. */
int store_coll_create(store *s, const char *name, const char *config,
                      uint32_t dim, uint32_t *cid, ctxd_error *e);

/* Look a collection up by name or by id. Errors: CTXD_ENOTFOUND
 * ("collection NAME not found"). */
int store_coll_get(store *s, const char *name, store_collection *out,
                   ctxd_error *e);
int store_coll_get_id(store *s, uint32_t cid, store_collection *out,
                      ctxd_error *e);

/* All collections in cid order: *out malloc'd (NULL when none), free(). */
int store_coll_list(store *s, store_collection **out, size_t *n,
                    ctxd_error *e);

/* Drop a collection with all its documents, chunks, vectors and postings,
 * in one transaction; appends one STORE_OP_DROP change. *documents (may be
 * NULL) = documents removed. Errors: CTXD_ENOTFOUND, CTXD_ENOSPC, CTXD_EIO. */
int store_coll_drop(store *s, const char *name, uint64_t *documents,
                    ctxd_error *e);

/* ---- Change log ------------------------------------------------------- */

enum { STORE_OP_PUT = 1, STORE_OP_DELETE = 2, STORE_OP_DROP = 3 };

/* One committed change: a document (doc = internal id) put or deleted in
 * collection cid, or the whole collection dropped (doc = 0). */
typedef struct store_change {
  uint64_t seq;
  int op;
  uint32_t cid;
  uint64_t doc;
} store_change;

/* Up to `max` changes with seq > after, in seq order, into out[]; *n = how
 * many. Errors: CTXD_EIO. */
int store_changes_read(store *s, uint64_t after, size_t max, store_change *out,
                       size_t *n, ctxd_error *e);

/* Forget changes with seq <= upto (derived indexes have saved past them).
 * Sequence numbers keep counting from the last one ever given. */
int store_changes_trim(store *s, uint64_t upto, ctxd_error *e);

/* ---- Readers: many lookups in one consistent snapshot ------------------ */

/* A read transaction. Pointers a reader call returns into stored data stay
 * valid until store_reader_end. One reader is used by one thread at a time.
 * Keep readers short: a reader open for long holds the map size fixed (the
 * map cannot grow: writers that need it to wait for the reader's end) and
 * keeps old pages from reuse. A thread that holds a reader must not call
 * the other (non-reader) store functions meanwhile: one of them may wait
 * for a map growth that waits for this very reader. */
typedef struct store_reader store_reader;

int store_reader_begin(store *s, store_reader **out, ctxd_error *e);
void store_reader_end(store_reader *r);

/* The last change-log seq visible in this snapshot. */
uint64_t store_reader_seq(const store_reader *r);

int store_reader_coll(store_reader *r, uint32_t cid, store_collection *out,
                      ctxd_error *e);

/* A chunk found by label. Strings point into the snapshot (not
 * NUL-terminated). */
typedef struct store_chunk_ref {
  uint32_t cid;
  uint64_t doc;
  const char *doc_id;
  size_t doc_id_len;
  uint32_t ordinal;
  chunk_span span;
  uint32_t lex_len;
  const char *text; /* the chunk's bytes when asked for, else NULL */
  size_t text_len;
} store_chunk_ref;

/* Errors: CTXD_ENOTFOUND (no such document or chunk: deleted since). */
int store_reader_chunk(store_reader *r, int64_t label, int with_text,
                       store_chunk_ref *out, ctxd_error *e);

/* The internal id of client id `id` in collection cid. CTXD_ENOTFOUND. */
int store_reader_doc_id(store_reader *r, uint32_t cid, const char *id,
                        size_t id_len, uint64_t *doc, ctxd_error *e);

/* Document doc's collection, client id and metadata value for key (val NULL
 * when the document has no such key). Errors: CTXD_ENOTFOUND. */
int store_reader_doc_meta(store_reader *r, uint64_t doc, const char *key,
                          size_t key_len, uint32_t *cid, const char **val,
                          size_t *val_len, ctxd_error *e);

/* The whole text of document doc. Errors: CTXD_ENOTFOUND. */
int store_reader_doc_text(store_reader *r, uint64_t doc, const char **text,
                          size_t *len, ctxd_error *e);

/* The vectors of document doc in collection cid: *vecs points at n x dim
 * floats, row i = chunk i (n = 0 when the document has none). The rows are
 * a copy the reader keeps until store_reader_end (LMDB stores one value per
 * chunk). Errors: CTXD_ENOTFOUND (no such document in cid). */
int store_reader_doc_vectors(store_reader *r, uint32_t cid, uint64_t doc,
                             const float **vecs, uint32_t *n, ctxd_error *e);

/* Call fn for every vector of collection cid in label order; fn returns
 * nonzero to stop (that value is returned). v is valid during the call
 * only (usually it points into the snapshot; a value LMDB left unaligned
 * for float is copied). */
int store_reader_scan_vectors(store_reader *r, uint32_t cid,
                              int (*fn)(int64_t label, const float *v,
                                        uint32_t dim, void *arg),
                              void *arg, ctxd_error *e);

/* Call fn for every document of collection cid in internal-id order; fn
 * returns nonzero to stop (that value is returned). */
int store_reader_scan_docs(store_reader *r, uint32_t cid,
                           int (*fn)(uint64_t doc, const char *id,
                                     size_t id_len, void *arg),
                           void *arg, ctxd_error *e);

/* BM25 postings of one term (lex.h-normalised bytes) in collection cid:
 * *df = the number of chunks holding it (0 for an unknown term, an empty
 * one or one longer than LEX_TERM_MAX); fn (may be NULL: df only) is called
 * for each, in label order, with the term frequency and the chunk's term
 * count; it returns nonzero to stop (that value is returned). */
int store_reader_postings(store_reader *r, uint32_t cid, const char *term,
                          size_t len, uint64_t *df,
                          int (*fn)(int64_t label, uint32_t tf, uint32_t dl,
                                    void *arg),
                          void *arg, ctxd_error *e);

/* ---- Jobs (corpus jobs keep their state here) ------------------------- */

/* Opaque job records (up to 1 GiB) keyed by job id (1..128 bytes of a
 * NUL-terminated string). put replaces. Errors: CTXD_EINVAL (id or record
 * size), CTXD_ENOSPC, CTXD_EIO. */
int store_job_put(store *s, const char *id, const void *rec, size_t len,
                  ctxd_error *e);
/* *rec malloc'd, free(). CTXD_ENOTFOUND. */
int store_job_get(store *s, const char *id, void **rec, size_t *len,
                  ctxd_error *e);
/* CTXD_ENOTFOUND when there is no such job. */
int store_job_delete(store *s, const char *id, ctxd_error *e);
/* fn for every job in id order; fn returns nonzero to stop (that value is
 * returned). */
int store_job_list(store *s,
                   int (*fn)(const char *id, size_t id_len, const void *rec,
                             size_t len, void *arg),
                   void *arg, ctxd_error *e);

/* ---- Copy and compact ------------------------------------------------- */

/* What a copied data file holds (from its own meta record and colls). */
typedef struct store_copy_info {
  uint32_t schema_version; /* the rest is 0 unless it is STORE_SCHEMA_VERSION */
  uint64_t last_seq;       /* the change-log seq the snapshot ends at */
  uint64_t documents, chunks, bytes;
  uint64_t file_bytes;     /* size of the file */
  store_collection *colls; /* n_colls, cid order, malloc'd */
  size_t n_colls;
} store_copy_info;

void store_copy_info_free(store_copy_info *info);

/* A hot, compacting copy of the store into the new file `path` (LMDB's
 * MDB_CP_COMPACT: live pages only, so the copy is as small as the data
 * allows): one read snapshot, every write committed before the call began
 * is in it, none committed after it began is half in it. Readers and
 * writers go on meanwhile (a map growth waits for its end). The file is
 * fsync'd (its directory is not: the caller renames it into place). With
 * info, the copy is opened read-only and described (store_file_info).
 * Errors: CTXD_EEXIST (path exists), CTXD_ENOSPC, CTXD_EIO, CTXD_ECORRUPT;
 * on error no file is left at path. */
int store_copy(store *s, const char *path, store_copy_info *info,
               ctxd_error *e);

/* Describe a data file (a copy, or a stopped store's data.mdb) opened
 * read-only without a lock file: nothing is written next to it. A schema
 * other than STORE_SCHEMA_VERSION fills only schema_version and
 * file_bytes. Errors: CTXD_ENOTFOUND, CTXD_ECORRUPT (not an LMDB file, no
 * meta record), CTXD_EIO, CTXD_ENOMEM. */
int store_file_info(const char *path, store_copy_info *info, ctxd_error *e);

/* Where store_compact writes its copy before the swap: <dir>/data.mdb plus
 * this. store_open removes one a crash left behind. */
#define STORE_COMPACT_SUFFIX ".compact"

typedef struct store_compact_result {
  uint64_t bytes_before, bytes_after; /* data.mdb's size around the swap */
  int paused_writers; /* 1: writes came in during the first copy, so a
                       * second ran with writers paused */
} store_compact_result;

/* Give the space of deleted data back to the file system: a compacting
 * copy (as store_copy) to data.mdb.compact beside the data file, then,
 * under the exclusive lock (no transaction open), close the environment,
 * rename the copy over data.mdb, fsync the directory and open it again.
 * Consistency: writes committed during the first copy would be missing
 * from it, so if any committed (LMDB's last txnid moved) the copy is made
 * again with writers paused (write calls wait; readers go on); the swap
 * itself holds readers too, for a close, a rename and an open. A crash
 * before the rename leaves the old file untouched (and the stray copy,
 * removed at the next open); the rename is atomic. Every call of this
 * store waits while the swap runs; a thread holding a store_reader must
 * not call this (it would wait for itself). Errors: CTXD_ENOSPC (no room
 * for the copy: nothing changed), CTXD_EIO (copy, rename or reopen failed;
 * a failed reopen leaves the store unusable until restart, the file whole). */
int store_compact(store *s, store_compact_result *res, ctxd_error *e);

/* Tests only: replace the 64-bit hash that keys ids too long for an LMDB key
 * (NULL restores the built-in one), so that tests can force two long ids
 * onto one key and exercise collision handling. Call it with no store open:
 * it changes how every store finds long ids. */
void store_test_set_id_hash(uint64_t (*fn)(const void *data, size_t n));

#endif
