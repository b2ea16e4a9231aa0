/* order.h - In-Context Pretraining: corpus ordering and packing.
 *
 * Puts related documents next to each other so that they share a context
 * window: a kNN graph over document vectors (FAISS through vindex.h),
 * near-duplicate removal, an approximate maximum travelling-salesman path over
 * the undirected graph, and packing of the texts along the path into windows
 * of L tokens (or Dataset Decomposition buckets). The daemon's job runner and
 * the MPI batch executable both call these functions: each step has one
 * implementation. The whole pipeline is order_run(); the phases are public so
 * a caller can split them (the MPI executable searches a slice of the kNN
 * rows per rank and gathers them into one order_knn).
 *
 * Typical use (the job runner):
 *
 *   order_jsonl *r;  order_input in;  order_opts o;  order_summary s;
 *   order_read_jsonl(path, &ro, &r, &e);      // or fill order_input itself
 *   order_jsonl_input(r, &in);
 *   order_opts_defaults(&o);  o.seed = ...; o.progress = ...; o.cancel = &flag;
 *   order_run(&in, output_dir, &o, &s, &e);  // resumes from checkpoints
 *   order_jsonl_free(r);
 *
 * Threads: the library starts its own worker threads (embedding) and FAISS
 * its OpenMP threads (o->threads of each); the process must have called
 * vindex_global_init() once before. One order_run at a time per output
 * directory. The callbacks (progress, get_text) are called from the thread
 * that called the order_* function, never concurrently. */
#ifndef CTXD_ORDER_H
#define CTXD_ORDER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "embed.h"
#include "err.h"
#include "tok.h"

/* ---- limits and defaults ------------------------------------------------ */

#define ORDER_DOCS_MAX ((uint64_t)1 << 31) /* documents in one corpus */
#define ORDER_ID_MAX 1024                  /* bytes of an id (as the store) */
#define ORDER_LINE_MAX ((size_t)256 << 20) /* bytes of one JSONL line */
#define ORDER_NONE UINT32_MAX              /* "no document" in index arrays */

#define ORDER_DEFAULT_K 20
#define ORDER_K_MAX 1000
/* Up to this many documents the kNN graph is exact (one FAISS "Flat" inner
 * product index); above it, an inverted file (see order_knn_index_build).
 * Measured on this 2-core VM, 384 dimensions: Flat costs n^2 dim
 * multiply-adds, 4.2 s of CPU for 10,000 documents and 13 s for 20,000,
 * where the inverted file takes 0.8 s and 1.2 s at recall@20 0.95 and 0.97
 * (README, "Corpus ordering"). */
#define ORDER_DEFAULT_EXACT_MAX 10000
#define ORDER_DEFAULT_RECALL 0.9f  /* nprobe target: estimated recall@k */
#define ORDER_DEFAULT_NPROBE_MAX 256
#define ORDER_RECALL_QUERIES 64    /* sample queries that estimate recall */
#define ORDER_DEFAULT_DUP_COSINE 0.95f
#define ORDER_DEFAULT_WINDOW 8192
#define ORDER_WINDOW_MAX (1u << 24)
#define ORDER_DEFAULT_SEPARATOR "<|endoftext|>"
#define ORDER_SEPARATOR_MAX 256
#define ORDER_DEFAULT_DECOMPOSE_MIN 8 /* log2: 256-token pieces */
#define ORDER_LOG2_MAX 24             /* 2^24 tokens */

/* ---- the corpus ---------------------------------------------------------- */

/* Returns document i's text in *text and *len (valid UTF-8; *text NULL = the
 * document has no text). The pointer stays valid until the next call with
 * the same arg. Errors: any ctxd_err with a message (e.g. CTXD_EIO). */
typedef int (*order_text_fn)(void *arg, uint64_t i, const char **text,
                             size_t *len, ctxd_error *e);

/* The input corpus: n documents in input order (index 0..n-1), built by the
 * caller (or by order_jsonl_input). Everything is borrowed: the library
 * never frees it and reads it only during calls that take the input.
 *   ids      n NUL-terminated ids, 1..ORDER_ID_MAX bytes, unique.
 *   vectors  n x dim floats, row-major, any norm, or NULL (every document
 *            is embedded). order_run / order_prepare_vectors L2-normalise
 *            the rows IN PLACE (a zero row stays zero: similarity 0).
 *   has_vector  NULL: every row of `vectors` is given; else has_vector[i]
 *            is 0 for rows that the embedder must fill (their contents are
 *            overwritten).
 *   texts    either arrays (texts[i], text_lens[i]; texts[i] NULL = no
 *            text), or the get_text callback, or neither (no texts: only
 *            mode "order" works and the Jaccard check is off).
 *   input_tag  optional: anything that names this version of the input
 *            (e.g. "path:size:mtime", plus the embedder's configuration);
 *            it is mixed into the checkpoint fingerprints so a checkpoint of
 *            another input is never reused.
 *   read_seconds  optional: time spent building the input, reported in the
 *            summary's timings as "read". */
typedef struct order_input {
  uint64_t n;
  uint32_t dim; /* 0 when vectors == NULL */
  const char *const *ids;
  float *vectors;
  const uint8_t *has_vector;
  const char *const *texts;
  const size_t *text_lens;
  order_text_fn get_text;
  void *text_arg;
  const char *input_tag;
  double read_seconds;
} order_input;

/* ---- options ------------------------------------------------------------- */

typedef enum order_mode {
  ORDER_MODE_ICLM = 0,      /* "iclm": ordered windows of window_tokens */
  ORDER_MODE_DECOMPOSE = 1, /* "decompose": power-of-two pieces per bucket */
  ORDER_MODE_ORDER = 2,     /* "order": the order only, no packing (texts
                             * not needed) */
} order_mode;

/* "iclm", "decompose", "order"; order_mode_parse returns -1 if unknown. */
const char *order_mode_name(order_mode m);
int order_mode_parse(const char *s);

typedef enum order_phase {
  ORDER_PHASE_READ = 0,  /* reading a JSONL file (bytes) */
  ORDER_PHASE_EMBED,     /* computing missing vectors (documents) */
  ORDER_PHASE_TRAIN,     /* IVF training and nprobe choice (0/1, 1/1) */
  ORDER_PHASE_INDEX,     /* adding vectors to the index (vectors) */
  ORDER_PHASE_KNN,       /* kNN searches (query documents) */
  ORDER_PHASE_DEDUP,     /* graph and duplicates (documents) */
  ORDER_PHASE_TRAVERSE,  /* the path (documents placed) */
  ORDER_PHASE_PACK,      /* packing and writing outputs (documents) */
  ORDER_PHASE_COUNT
} order_phase;

/* "read", "embed", "train", "index", "knn", "dedup", "traverse", "pack". */
const char *order_phase_name(order_phase p);

typedef void (*order_progress_fn)(void *arg, order_phase phase, uint64_t done,
                                  uint64_t total);

typedef struct order_opts {
  order_mode mode;
  uint32_t k;           /* neighbours per document, 1..ORDER_K_MAX */
  uint64_t exact_max;   /* Flat up to this many documents, IVF above */
  uint32_t nlist;       /* IVF lists; 0: round(sqrt(n)) (at most n / 8) */
  uint32_t nprobe;      /* IVF lists probed; 0: the smallest number whose
                         * measured recall@k reaches `recall` */
  float recall;         /* target for the automatic nprobe, (0, 1] */
  uint32_t nprobe_max;  /* cap of the automatic nprobe */
  float dup_cosine;     /* near-duplicate threshold; > 1 turns dedup off */
  float dup_jaccard;    /* 0: off; else a near-duplicate pair with both
                         * texts must also have character 3-gram Jaccard
                         * similarity >= this (0.8 is a sound choice) */
  uint64_t seed;        /* ties, samples and the random baseline */
  uint32_t window_tokens;      /* L, 1..ORDER_WINDOW_MAX */
  const char *separator;       /* between documents; 0..ORDER_SEPARATOR_MAX
                                * bytes of UTF-8 */
  uint32_t separator_tokens;   /* its cost; 0: counted with the tokenizer */
  uint32_t decompose_min_log2; /* smallest piece 2^min tokens */
  uint32_t decompose_max_log2; /* largest piece 2^max; 0: floor(log2 L) */
  unsigned threads;            /* 0: every core */
  const tok *tokenizer;        /* NULL: tok_estimator() */
  const embedder *embedder;    /* for documents without vectors; NULL: none */
  order_progress_fn progress;  /* may be NULL */
  void *progress_arg;
  const atomic_int *cancel;    /* non-zero: stop with CTXD_ECANCELED at the
                                * next check (between batches); may be NULL */
  int keep_checkpoints;        /* order_run keeps vectors.ckpt/knn.ckpt */
} order_opts;

/* Fill *o with the defaults: mode iclm, k 20, exact_max 10000, nlist 0,
 * nprobe 0, recall 0.9, nprobe_max 256, dup_cosine 0.95, dup_jaccard 0,
 * seed 0, window 8192, separator "<|endoftext|>" counted with the tokenizer,
 * decompose 2^8..2^floor(log2 L), all cores, the estimator, no embedder. */
void order_opts_defaults(order_opts *o);

/* Check options against the limits above. Errors: CTXD_EINVAL naming the
 * option. */
int order_opts_check(const order_opts *o, ctxd_error *e);

/* ---- JSONL input ----------------------------------------------------------- */

/* Reads a corpus file of one JSON object per line:
 *   {"id": "doc-1", "text": "...", "vector": [0.1, ...]}
 * "id" is a string (1..ORDER_ID_MAX bytes) or an integer (written in
 * decimal); "text" a string; "vector" an optional array of numbers; a line
 * needs a text or a vector (or both). Other keys are ignored, blank lines
 * skipped. All vectors have one dimension: read_opts.dim when non-zero, else
 * that of the first vector. Lines are at most ORDER_LINE_MAX bytes.
 *
 * Memory: the reader keeps ids, vectors and each line's file offset, not the
 * texts: order_input.get_text re-reads and decodes a document's line when a
 * phase needs its text (the file must not change while the reader is open;
 * input_tag records its size and mtime). */
typedef struct order_jsonl order_jsonl;

typedef struct order_read_opts {
  uint32_t dim;      /* expected vector dimension; 0: from the first vector */
  uint64_t max_docs; /* 0: ORDER_DOCS_MAX */
  order_progress_fn progress; /* phase READ: bytes read of the file size */
  void *progress_arg;
  const atomic_int *cancel;
} order_read_opts;

/* Read `path`. Errors (the message names the line, 1-based):
 *   CTXD_ENOTFOUND  the file does not exist;
 *   CTXD_EIO        it cannot be read;
 *   CTXD_EINVAL     "line 12: bad JSON: ... (column 7)", "line 3: no id",
 *                   "line 3: id is not a string or integer",
 *                   "line 4: duplicate id \"a\" (first on line 2)",
 *                   "line 9: vector has 383 numbers, expected 384 (as on
 *                   line 1)", "line 5: neither text nor vector", a non-number
 *                   in a vector, an id too long, a line over ORDER_LINE_MAX;
 *   CTXD_ELIMIT     more than max_docs documents;
 *   CTXD_ECANCELED, CTXD_ENOMEM.
 * On success the caller frees *out with order_jsonl_free(). */
int order_read_jsonl(const char *path, const order_read_opts *o,
                     order_jsonl **out, ctxd_error *e);

/* Fill *in with the reader's corpus (borrowed from r: valid until
 * order_jsonl_free; vectors is r's own array, normalised in place later). */
void order_jsonl_input(order_jsonl *r, order_input *in);

/* 1-based line of document i (for messages). */
uint64_t order_jsonl_line(const order_jsonl *r, uint64_t i);

void order_jsonl_free(order_jsonl *r);

/* ---- phases ---------------------------------------------------------------- */

/* Check the input: n <= ORDER_DOCS_MAX, ids present, 1..ORDER_ID_MAX bytes
 * and unique, dim <= VINDEX_DIM_MAX, vectors or an embedder of the same
 * dimension for rows without one. Errors: CTXD_EINVAL ("duplicate id \"a\"
 * (documents 3 and 17)", ...), CTXD_ENOMEM. */
int order_input_check(const order_input *in, const order_opts *o,
                      ctxd_error *e);

/* Make every row of in->vectors an L2-normalised vector: embed the texts of
 * rows without one (with o->embedder, o->threads threads; progress phase
 * EMBED), then normalise all rows. When in->vectors is NULL it allocates
 * n x embedder->dim floats, points in->vectors at them, sets in->dim and
 * in->has_vector = NULL, and returns the array in *owned for the caller to
 * free() after the last call that uses `in`; otherwise *owned = NULL.
 * Errors: CTXD_EINVAL (a document needs embedding but has no text, or
 * there is no embedder, or its dimension differs), errors of get_text and of
 * the embedder, CTXD_ECANCELED, CTXD_ENOMEM. */
int order_prepare_vectors(order_input *in, const order_opts *o, float **owned,
                          ctxd_error *e);

/* The kNN graph: row i lists up to k neighbours of document i, most similar
 * first. nbr[i*k + j] is a document index, or ORDER_NONE past the end of a
 * short row (fewer than k other documents); sim[i*k + j] its cosine
 * similarity. A document is never its own neighbour. The struct is public
 * so that a caller can fill rows computed elsewhere (MPI ranks); allocate it
 * with order_knn_alloc. `method` says how it was built. */
typedef struct order_knn {
  uint64_t n;
  uint32_t k;
  uint32_t *nbr;     /* n*k */
  float *sim;        /* n*k */
  char method[64];   /* "Flat" or "IVF1000 nprobe=2" */
  uint32_t nprobe;   /* 0 for Flat */
  float recall;      /* measured recall@k on a sample (1 for Flat, NaN
                      * when nprobe was given) */
} order_knn;

/* Allocate a graph of n rows of k, every entry ORDER_NONE / 0.
 * Errors: CTXD_EINVAL (k == 0 or > ORDER_K_MAX, n > ORDER_DOCS_MAX),
 * CTXD_ENOMEM. Free with order_knn_free (NULL is fine). */
int order_knn_alloc(uint64_t n, uint32_t k, order_knn **out, ctxd_error *e);
void order_knn_free(order_knn *g);

/* The index that the kNN searches run against, over every normalised
 * vector of `in` (after order_prepare_vectors), labelled by document index.
 *   n <= o->exact_max: exact, one vindex "Flat" (inner product) index.
 *   above: an inverted file searched list by list. nlist lists (o->nlist,
 *   or round(sqrt(n)), at most n / 8) with spherical k-means centroids,
 *   trained for 10 iterations on a seeded sample of 32 x nlist vectors;
 *   every document is assigned to its nearest lists; each document
 *   searches the members of its nprobe nearest lists exactly. nprobe is
 *   o->nprobe, or the smallest number of lists (up to o->nprobe_max)
 *   whose recall@k, measured on ORDER_RECALL_QUERIES seeded sample queries
 *   against their exact neighbours, reaches o->recall.
 * Why not FAISS's own IVF index: its training runs 25 k-means iterations
 * over 39 x nlist points (12 TFLOP for the suggested 4 sqrt(n) lists at one
 * million 384-dimensional vectors), it keeps a second copy of every vector,
 * and it scans lists per query; here every step is a matrix product in a
 * small Flat index (BLAS), the lists hold document numbers only, and a
 * million documents take minutes (README).
 * Progress phases TRAIN and INDEX. Errors: CTXD_EINVAL (no vectors),
 * vindex errors, CTXD_ECANCELED, CTXD_ENOMEM. */
typedef struct order_knn_index order_knn_index;
int order_knn_index_build(const order_input *in, const order_opts *o,
                          order_knn_index **out, ctxd_error *e);
void order_knn_index_free(order_knn_index *x);

/* Fill rows [lo, hi) of g (g->n == in->n, g->k == min(o->k, n - 1) as
 * order_knn_build allocates it) by searching those documents' vectors in
 * batches with o->threads threads; progress phase KNN (done counts from
 * lo), o->cancel checked between batches. Also sets g's method, nprobe and
 * recall. Errors: CTXD_EINVAL (bad range or sizes), vindex errors,
 * CTXD_ECANCELED. */
int order_knn_search(const order_knn_index *x, const order_input *in,
                     uint64_t lo, uint64_t hi, const order_opts *o,
                     order_knn *g, ctxd_error *e);

/* ---- the kNN steps one shard at a time (the MPI executable) ----------------
 * order_knn_index_build above is these calls on the whole corpus: one
 * machine and N ranks run the same code. Labels are global document
 * indices (< ORDER_DOCS_MAX); a shard is rows label0 .. label0 + n - 1. */

/* The number of neighbours a graph of n documents gets: min(k, n - 1), and
 * 1 (every entry empty) when n < 2. */
static inline uint32_t order_knn_k(uint64_t n, uint32_t k) {
  if (n < 2) return 1;
  return (uint64_t)k < n - 1 ? k : (uint32_t)(n - 1);
}

/* Sample points per list of the k-means training. */
#define ORDER_KMEANS_SAMPLE 32

/* IVF lists for a corpus of n documents: o->nlist or round(sqrt(n)), at
 * most n / 8; 0 when the exact Flat index is used (n <= o->exact_max, or
 * fewer than 2 lists). */
uint32_t order_knn_nlist(uint64_t n, const order_opts *o);

/* Sample points of the training: min(ORDER_KMEANS_SAMPLE x nlist, n). */
uint64_t order_kmeans_sample(uint64_t n, uint32_t nlist);

/* The seeded sample of m of the n documents: (*out)[0..m) (the array holds
 * n entries; the caller frees it). The training sample uses seed o->seed,
 * the recall queries o->seed + 1. Errors: CTXD_ENOMEM. */
int order_sample_rows(uint64_t n, uint64_t m, uint64_t seed, uint32_t **out,
                      ctxd_error *e);

/* Spherical k-means (10 iterations) of s normalised sample rows into nlist
 * centroids, the first nlist sample rows as the start; *centroids is
 * malloc'd (nlist x dim), the caller frees it. Progress phase TRAIN.
 * Errors: CTXD_EINVAL (s < nlist), vindex errors, CTXD_ECANCELED,
 * CTXD_ENOMEM. */
int order_kmeans(const float *sample, uint64_t s, uint32_t dim, uint32_t nlist,
                 const order_opts *o, float **centroids, ctxd_error *e);

/* The index of one shard: n normalised rows of `vectors` (borrowed: they
 * must outlive the index), labelled label0 + row. centroids NULL: exact
 * (Flat); else copied, and every row is assigned to its nearest lists
 * (o->nprobe of them, or 8 capped by o->nprobe_max, until
 * order_knn_index_set_nprobe asks for more). Progress phase INDEX.
 * Errors: CTXD_EINVAL, vindex errors, CTXD_ECANCELED, CTXD_ENOMEM. */
int order_knn_shard(const float *vectors, uint64_t n, uint32_t dim,
                    uint64_t label0, const float *centroids, uint32_t nlist,
                    const order_opts *o, order_knn_index **out,
                    ctxd_error *e);

/* Exact top k of nq query vectors (qid[i]: the query's own label, never
 * returned; -1 for none) over every row of the shard, merged into the rows
 * nbr/sim (nq x k, most similar first, ORDER_NONE past the end: fill them
 * with ORDER_NONE / 0 before the first shard). nbr_list (or NULL) gets each
 * neighbour's nearest list (an IVF shard only). Similarities are
 * recomputed with one dot product per pair, and ties go to the smaller
 * label, so the rows do not depend on how the corpus is sharded. Errors:
 * CTXD_EINVAL, vindex errors, CTXD_ECANCELED, CTXD_ENOMEM. */
int order_knn_exact(const order_knn_index *x, const float *qv, uint64_t nq,
                    const int64_t *qid, uint32_t k, uint32_t *nbr, float *sim,
                    uint32_t *nbr_list, const order_opts *o, ctxd_error *e);

/* Merge row b (bn/bs, and ba: each neighbour's list, or NULL) into row a
 * (rn/rs, ra or NULL), both sorted, k entries, ORDER_NONE past the end:
 * the k best by similarity, ties to the smaller label. */
void order_knn_merge_rows(uint32_t *rn, float *rs, uint32_t *ra,
                          const uint32_t *bn, const float *bs,
                          const uint32_t *ba, uint32_t k);

/* The smallest nprobe (<= o->nprobe_max) whose recall@k on the q sample
 * queries qv reaches o->recall, from the nearest lists of their exact
 * neighbours (nbr_list, q x k, >= nlist = none). Errors: CTXD_ENOMEM. */
int order_nprobe_choose(const float *centroids, uint32_t nlist, uint32_t dim,
                        const float *qv, uint64_t q, const uint32_t *nbr_list,
                        uint32_t k, const order_opts *o, uint32_t *nprobe,
                        float *recall, ctxd_error *e);

/* An index of rows already assigned to lists: row i (labelled i) is a
 * member of list[i] < nlist; each query of order_knn_search_block then
 * names the one list it searches (qt 1). The MPI executable gathers each
 * list's members on one rank and sends every query to the ranks of its
 * nprobe lists. vectors are borrowed. Errors: CTXD_EINVAL, CTXD_ENOMEM. */
int order_knn_lists(const float *vectors, uint64_t n, uint32_t dim,
                    const uint32_t *list, uint32_t nlist, order_knn_index **out,
                    ctxd_error *e);

/* Set the lists each query searches (re-assigning rows when more lists are
 * needed than stored) and the recall to report (NaN: not measured). No-op
 * for a Flat shard. Errors: CTXD_EINVAL (nprobe out of 1..nlist), those of
 * the assignment. */
int order_knn_index_set_nprobe(order_knn_index *x, uint32_t nprobe,
                               float recall, const order_opts *o,
                               ctxd_error *e);

/* The shard rows' nearest lists (n x *t, best first; NULL for Flat). */
const uint32_t *order_knn_index_probes(const order_knn_index *x, uint32_t *t);

/* "Flat" or "IVF1000 nprobe=2", with nprobe and recall (either may be
 * NULL). */
const char *order_knn_index_method(const order_knn_index *x, uint32_t *nprobe,
                                   float *recall);

/* Search nq queries (vectors qv, own labels qid, and for IVF their nearest
 * lists qprobe, qt per query, at least nprobe) against this shard and merge
 * the results into nbr/sim (nq x k), as order_knn_exact does. A query block
 * that visits every shard in turn ends with its global top k. Progress
 * phase KNN (within the block). Errors: CTXD_EINVAL, vindex errors,
 * CTXD_ECANCELED, CTXD_ENOMEM. */
int order_knn_search_block(const order_knn_index *x, const float *qv,
                           uint64_t nq, const int64_t *qid,
                           const uint32_t *qprobe, uint32_t qt, uint32_t k,
                           uint32_t *nbr, float *sim, const order_opts *o,
                           ctxd_error *e);

/* Index + search of every row. k = min(o->k, n - 1) (a graph of 0 columns
 * when n <= 1 is returned with k = 1 and every entry ORDER_NONE). */
int order_knn_build(const order_input *in, const order_opts *o,
                    order_knn **out, ctxd_error *e);

/* Save a graph to `path` atomically (temp file, fsync, rename) with a
 * fingerprint of what it was computed from; load it back, refusing a file
 * for other data. The format (little-endian; also read by the traversal
 * benchmark's Python reference):
 *   "CTXDKNN1" | u32 version (1) | u32 k | u64 n | u64 fingerprint |
 *   u32 nprobe | f32 recall | char method[64] |
 *   u32 nbr[n*k] | f32 sim[n*k] | u64 checksum of everything before it
 * Load errors: CTXD_ENOTFOUND (no file), CTXD_EPRECOND (another n, k or
 * fingerprint: a stale checkpoint), CTXD_ECORRUPT (bad magic, size or
 * checksum, or a neighbour index out of range), CTXD_EIO, CTXD_ENOMEM.
 * Save errors: CTXD_EIO, CTXD_ENOSPC. */
int order_knn_save(const order_knn *g, const char *path, uint64_t fingerprint,
                   ctxd_error *e);
int order_knn_load(const char *path, uint64_t n, uint32_t k,
                   uint64_t fingerprint, order_knn **out, ctxd_error *e);
/* The same for a file holding rows row0 .. row0 + rows - 1 of a graph of n
 * documents (saved with order_knn_save from a graph of `rows` rows whose
 * entries are global indices): *out has n = rows. */
int order_knn_load_rows(const char *path, uint64_t row0, uint64_t rows,
                        uint64_t n, uint32_t k, uint64_t fingerprint,
                        order_knn **out, ctxd_error *e);

/* The undirected graph in CSR form: an edge i-j where either document is
 * in the other's kNN row, weighted by their similarity. Errors:
 * CTXD_ENOMEM, CTXD_ECORRUPT (a neighbour index >= n). */
typedef struct order_graph order_graph;
int order_graph_build(const order_knn *g, order_graph **out, ctxd_error *e);
uint64_t order_graph_nodes(const order_graph *g);
uint64_t order_graph_edges(const order_graph *g); /* undirected edges */
void order_graph_free(order_graph *g);

/* Near-duplicates. Walking documents in input order, document j is a
 * duplicate when an earlier document i is its neighbour in the undirected
 * graph with similarity >= o->dup_cosine and (when o->dup_jaccard > 0 and
 * both have texts) 3-gram Jaccard >= o->dup_jaccard; it is reported as a
 * duplicate of the document kept for i (i itself, or what i duplicates), so
 * the first of each group by input order is kept. Only graph neighbours are
 * compared: a group larger than k may keep a few copies.
 *   of[j]      ORDER_NONE when j is kept, else the kept document;
 *   sim[j]     the similarity to the earlier document that matched;
 *   jaccard[j] its 3-gram Jaccard (-1 when not checked).
 * Jaccard: character (code point) 3-grams as sets; a text of fewer than 3
 * characters is its own single gram. Progress phase DEDUP. Errors: errors of
 * get_text, CTXD_ECANCELED, CTXD_ENOMEM. */
typedef struct order_dups {
  uint64_t n;      /* documents (== graph nodes) */
  uint64_t count;  /* duplicates */
  uint32_t *of;
  float *sim;
  float *jaccard;
} order_dups;
int order_dedup(const order_graph *g, const order_input *in,
                const order_opts *o, order_dups **out, ctxd_error *e);
void order_dups_free(order_dups *d);

/* Character 3-gram Jaccard similarity of two UTF-8 texts (1 when both are
 * empty). Errors: CTXD_ENOMEM. */
int order_jaccard3(const char *a, size_t alen, const char *b, size_t blen,
                   double *out, ctxd_error *e);

/* The path: every document that is not a duplicate, exactly once.
 * Greedy approximate maximum TSP over the undirected graph: start at an
 * unvisited document of minimum residual degree (neighbours not yet
 * visited), repeatedly step to the most similar unvisited neighbour, and
 * when there is none jump to an unvisited document of minimum residual
 * degree. Ties: equal similarities go to the document earlier in a seeded
 * random permutation. Among the documents of minimum degree, a jump takes,
 * of the 32 whose degree changed last (neighbours of the recent path), the
 * one most similar to the document where the walk got stuck (when vectors
 * are given; else the first), the rest ordered by the seeded permutation.
 * A bucket queue keeps the minimum degree in O(1), so the walk is
 * O(n + edges + 32 x dim x jumps).
 *   doc[p]  input index of the document at position p;
 *   sim[p]  its cosine similarity to doc[p-1] (an edge weight, or the dot
 *           product of the vectors after a jump; sim[0] = 0);
 *   jump[p] 1 when position p > 0 was reached by a jump.
 * `vectors` (in->vectors, normalised) give the similarity after jumps; when
 * in->vectors is NULL those are 0. Progress phase TRAVERSE. Errors:
 * CTXD_EINVAL (d for another graph), CTXD_ECANCELED, CTXD_ENOMEM. */
typedef struct order_path {
  uint64_t n;
  uint32_t *doc;
  float *sim;
  uint8_t *jump;
  uint64_t jumps;
} order_path;
int order_traverse(const order_graph *g, const order_dups *d /* or NULL */,
                   const order_input *in, const order_opts *o,
                   order_path **out, ctxd_error *e);
void order_path_free(order_path *p);

/* Mean similarity of adjacent documents along the path (NaN when fewer than
 * 2), and the same for a seeded random permutation of the same documents. */
double order_path_similarity(const order_path *p);
double order_random_similarity(const order_path *p, const order_input *in,
                               uint64_t seed);

/* ---- packing and outputs --------------------------------------------------- */

/* The outputs of one run, in output_dir (each written to a temp file, fsync'd
 * and renamed into place; summary.json last, so its presence means the rest
 * is complete):
 *   order.jsonl       iclm/order: one line per document on the path:
 *                       {"id":"a","position":0,"window":0,"similarity":null,
 *                        "jump":false}
 *                     (similarity to the previous document; window = the
 *                     window holding the document's first token, absent in
 *                     mode "order").
 *                     decompose: one line per piece, by bucket (smallest
 *                     first), then path order, then piece:
 *                       {"id":"a","position":0,"bucket":256,"piece":0,
 *                        "start":0,"end":1187,"tokens":256}
 *   windows.jsonl     iclm: one line per window:
 *                       {"window":0,"tokens":8190,"documents":[{"id":"a",
 *                        "start":0,"end":5120,"tokens":1200}, ...],
 *                        "text":"...<|endoftext|>..."}
 *                     (start/end: byte range of each document's piece);
 *                     decompose: one line per piece in order.jsonl's order
 *                     with its "text" (fields as there, "position" too).
 *                     Not written in mode "order".
 *   duplicates.jsonl  {"id":"b","duplicate_of":"a","similarity":0.991234,
 *                      "jaccard":0.930000} (jaccard null when not checked;
 *                      similarities have 6 decimals in every JSONL file)
 *   summary.json      the order_summary below, as JSON.
 * Token-id output (binary uint32 with an index) needs a model vocabulary and
 * is not written: the tokenizer interface only counts. */
#define ORDER_FILE_ORDER "order.jsonl"
#define ORDER_FILE_WINDOWS "windows.jsonl"
#define ORDER_FILE_DUPLICATES "duplicates.jsonl"
#define ORDER_FILE_SUMMARY "summary.json"
#define ORDER_FILE_KNN_CKPT "knn.ckpt"
#define ORDER_FILE_VEC_CKPT "vectors.ckpt"

typedef struct order_summary {
  order_mode mode;
  uint64_t documents;   /* input */
  uint64_t ordered;     /* on the path (documents - duplicates) */
  uint64_t duplicates;
  uint64_t jumps;
  uint64_t edges;       /* undirected kNN edges */
  uint64_t windows;     /* iclm windows, or decompose pieces */
  uint64_t tokens;      /* tokens packed (with separators in iclm) */
  uint64_t dropped_tokens;  /* decompose: remainders under 2^min */
  uint64_t bucket_pieces[ORDER_LOG2_MAX + 1]; /* decompose: pieces of 2^b */
  /* NaN when omitted (decompose mode, or fewer than 2 documents/windows) */
  double adjacent_similarity;        /* mean over the path's adjacent pairs */
  double random_adjacent_similarity; /* same for a seeded random order */
  double window_similarity;  /* mean over windows of >= 2 documents of the
                              * mean pairwise similarity in the window */
  double random_window_similarity; /* the same for the random order, cut
                                    * into windows by token counts */
  char knn_method[64];
  uint32_t k;
  uint32_t nprobe;
  float knn_recall;
  int resumed_vectors;  /* vectors.ckpt was used */
  int resumed_knn;      /* knn.ckpt was used */
  /* seconds per phase: read (from the input), embed, knn (train, index and
   * search), dedup (graph and duplicates), traverse, pack (packing and every
   * output file), total (of order_run) */
  double t_read, t_embed, t_knn, t_dedup, t_traverse, t_pack, t_total;
} order_summary;

/* Pack along the path and write order.jsonl, windows.jsonl (not in mode
 * "order") and duplicates.jsonl into dir; fills s's windows, tokens,
 * dropped_tokens, bucket_pieces, window_similarity and
 * random_window_similarity (and nothing else).
 *   iclm: the stream is doc SEP doc SEP ... along the path; windows are
 *   consecutive slices of at most L tokens (pieces counted with the
 *   tokenizer, the separator as separator_tokens); a document that does not
 *   fit is cut at the longest prefix (at a character boundary) that fits and
 *   goes on in the next window; a separator is never cut.
 *   decompose: each document is cut, greedily from its start, into pieces
 *   of the largest power of two 2^b <= its remaining tokens (b <= max):
 *   each piece is the longest prefix of at most 2^b tokens (so 2^b, or
 *   2^b - 1 when a 2-token character straddles the edge); a remainder under
 *   2^min tokens is dropped. Pieces go to bucket b.
 * Errors: CTXD_EINVAL (a document to pack has no text, a separator longer
 * than the window), errors of get_text, CTXD_EIO/CTXD_ENOSPC (writing),
 * CTXD_ECANCELED, CTXD_ENOMEM. */
int order_pack(const order_input *in, const order_path *p,
               const order_dups *d, const order_opts *o, const char *dir,
               order_summary *s, ctxd_error *e);

/* ---- packing one segment of the path (the MPI executable) -----------------
 * order_pack's iclm windows are these calls on the whole path. Under MPI
 * each rank packs a contiguous segment of the path: where the packing stands
 * at its start comes from a dry run of the segments before (cheap: token
 * counts are known, only cut documents are tokenized again), and a window
 * that spans segments is written by the rank where it began, from its own
 * open tail plus the heads of the following segments. */

/* Where the packing stands between two documents: the open window's
 * index, its tokens, and whether it holds anything yet. */
typedef struct order_pack_state {
  uint64_t window;
  uint64_t tokens;
  int open;
} order_pack_state;

/* Part of a window: its pieces as JSON objects separated by commas (as in
 * windows.jsonl's "documents"), its text, its tokens, and for the window
 * similarity the sum S of its documents' vectors (dim doubles; NULL
 * without vectors), the sum of their squared norms, and their number. */
typedef struct order_wpart {
  uint64_t tokens;
  char *docs;
  size_t docs_len;
  char *text;
  size_t text_len;
  double *S;
  double sq;
  uint64_t m;
} order_wpart;

/* Free a part's buffers and zero it. */
void order_wpart_free(order_wpart *w);
/* Append src to dst (texts, pieces, tokens and sums). Errors: CTXD_ENOMEM. */
int order_wpart_append(order_wpart *dst, const order_wpart *src, uint32_t dim,
                       ctxd_error *e);
/* Write the part as windows.jsonl's line of window `window`. */
void order_wpart_write(FILE *f, uint64_t window, const order_wpart *w);
/* Mean pairwise similarity of its documents (NaN when fewer than 2). */
double order_wpart_similarity(const order_wpart *w, uint32_t dim);

/* What one segment's packing leaves (free with order_pack_seg_free):
 *   end        the state after its last document;
 *   head       when it started inside an open window: its share of that
 *              window (head_only: the whole segment, no window closed);
 *   tail       the window still open at its end, begun in it;
 *   windows_written, tokens, and the window similarity sum and count of
 *   the windows written. */
typedef struct order_pack_seg {
  order_pack_state end;
  order_wpart head;
  int head_only;
  order_wpart tail;
  uint64_t windows_written;
  uint64_t tokens;
  double sim_total;
  uint64_t sim_windows;
} order_pack_seg;
void order_pack_seg_free(order_pack_seg *r);

/* tokens[pos] = the token count of the text of the document at path
 * position pos (o->tokenizer, or the estimator). Errors: CTXD_EINVAL (no
 * text), errors of get_text, CTXD_ECANCELED. */
int order_pack_tokens(const order_input *in, const order_path *p,
                      const order_opts *o, uint64_t *tokens, ctxd_error *e);

/* Pack the path p (its positions are pos0 + 0 .. pos0 + p->n - 1 of the
 * whole path; doc[] index `in`) from `start`: windows that close here go to
 * `windows` (NULL: a dry run that only finds r->end), and with `order`
 * the order.jsonl lines of the segment. tokens[pos] holds the token counts
 * when `known`, else they are computed into it. Mode iclm or order (order:
 * only the order lines). Errors: CTXD_EINVAL (decompose, a document without
 * text, a separator not shorter than the window), errors of get_text,
 * CTXD_ECANCELED, CTXD_ENOMEM. */
int order_pack_segment(const order_input *in, const order_path *p,
                       uint64_t pos0, const order_opts *o,
                       const order_pack_state *start, uint64_t *tokens,
                       int known, FILE *windows, FILE *order,
                       order_pack_seg *r, ctxd_error *e);

/* Write s[0..n) as a JSON string (quotes included) to f, and a float as a
 * JSON number with 6 decimals (null when not finite): the writers of every
 * output file. */
void order_json_str(FILE *f, const char *s, size_t n);
void order_json_num(FILE *f, double v);

/* The separator's cost in tokens (o->separator_tokens or counted). */
uint64_t order_separator_tokens(const order_opts *o);

/* The random baseline of the window similarity: a seeded random order of
 * the path's documents cut into windows by their token counts (tokens[pos]
 * for path position pos). NaN without vectors or with fewer than 2. */
double order_random_window_similarity(const order_path *p,
                                      const uint64_t *tokens,
                                      const order_input *in,
                                      const order_opts *o);

/* Write s as summary.json into dir, atomically. Errors: CTXD_EIO,
 * CTXD_ENOSPC, CTXD_ENOMEM. */
int order_write_summary(const order_summary *s, const order_opts *o,
                        const char *dir, ctxd_error *e);

/* The whole job: check, vectors (resuming from vectors.ckpt when it matches),
 * kNN graph (resuming from knn.ckpt), dedup, traversal, packing, outputs and
 * summary.json; fills *s. output_dir is created if missing (its parent must
 * exist). Checkpoints are written after the embedding phase (only when
 * something was embedded) and after the kNN phase, and removed at the end
 * unless o->keep_checkpoints; so a restarted job redoes at most the phase
 * that was running. May normalise in->vectors in place and, when in->vectors
 * is NULL, allocates vectors it frees before returning (in is restored).
 * Errors: those of every phase; CTXD_ECANCELED leaves the checkpoints of the
 * finished phases in place; CTXD_EIO when output_dir cannot be created. */
int order_run(order_input *in, const char *output_dir, const order_opts *o,
              order_summary *s, ctxd_error *e);

#endif
