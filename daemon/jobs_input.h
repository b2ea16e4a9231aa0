/* jobs_input.h - the input of a corpus job in the form order.h takes: the
 * stored documents of a collection (optionally filtered by ids and
 * metadata) or a JSONL file on the daemon's disk, with their vectors
 * (stored, given or left to the embedder) and their texts, read on demand.
 *
 * A stored document's vector is the mean of its chunk vectors (order_run
 * normalises it). Documents are read in pages, each page in its own short
 * store reader, and a text is read in a reader of its own when a phase asks
 * for it: no reader stays open across the job (store.h: long readers hold
 * the map size fixed). */
#ifndef CTXD_JOBS_INPUT_H
#define CTXD_JOBS_INPUT_H

#include <stdatomic.h>
#include <stddef.h>

#include "../index/coll.h"
#include "../index/order.h"
#include "../index/store.h"

typedef enum jobin_vectors {
  JOBIN_VEC_AUTO = 0, /* stored/given where present, the rest embedded */
  JOBIN_VEC_EMBED,    /* every document embedded from its text */
  JOBIN_VEC_GIVEN,    /* every document must come with a vector */
} jobin_vectors;

/* "auto" (or ""), "embed", "given"; -1 for anything else. */
int jobin_vectors_parse(const char *s);
const char *jobin_vectors_name(jobin_vectors v);

/* What to read. Strings are borrowed for the duration of jobin_open. */
typedef struct jobin_spec {
  const char *jsonl_path;    /* non-empty: read this file; else collection */
  const char *collection;    /* "" = default; with a JSONL file it only
                              * names the embedder of missing vectors */
  const char *const *doc_ids; /* collection input: only these (unique) */
  size_t n_doc_ids;
  const store_kv *meta;      /* ... and only documents with all of these */
  size_t n_meta;
  jobin_vectors vectors;
  const char *embedder;      /* "" = the collection's, else "hash[:...]" */
  uint64_t max_docs;         /* more documents is CTXD_ELIMIT naming
                              * limits.max_job_docs; 0: ORDER_DOCS_MAX */
  order_progress_fn progress; /* phase READ: bytes (JSONL) or documents */
  void *progress_arg;
  const atomic_int *cancel;
} jobin_spec;

typedef struct jobin jobin;

/* Check what can be checked without reading: the embedder text parses as a
 * hash embedder, the collection exists (`default` is created when
 * missing). Errors: CTXD_EINVAL, CTXD_ENOTFOUND. */
int jobin_check(coll_set *cs, const jobin_spec *sp, ctxd_error *e);

/* Read the input. Errors (messages name the line or the document):
 *   CTXD_EINVAL     the JSONL file is missing or bad (order_read_jsonl's
 *                   messages), a document without a vector when vectors is
 *                   "given" or when there is no embedder, a bad embedder;
 *   CTXD_ENOTFOUND  the collection, or a document of doc_ids, is missing;
 *   CTXD_ELIMIT     more than max_docs documents (found while reading:
 *                   the count is not known before);
 *   CTXD_ECANCELED, CTXD_ENOMEM, CTXD_EIO.
 * On success *out is freed with jobin_free(). */
int jobin_open(store *st, coll_set *cs, const jobin_spec *sp, jobin **out,
               ctxd_error *e);

/* The corpus for order_run (owned by `in`; order_run may normalise its
 * vectors in place) and the embedder for the documents without a vector
 * (NULL when none is needed). */
order_input *jobin_input(jobin *in);
const embedder *jobin_embedder(jobin *in);

void jobin_free(jobin *in);

#endif
