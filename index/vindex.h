/* vindex.h - ctxd's own narrow C binding of FAISS (implemented in vindex.cpp).
 *
 * Why not the FAISS C API: Debian 12's libfaiss-dev ships the C API headers
 * but not their implementation, and FAISS 1.7.3's C API has no per-call
 * search parameters. This binding exposes exactly what ctxd needs: create
 * from a factory string, train, add with ids, remove, search with per-call
 * efSearch/nprobe and an id filter, read/write, size.
 *
 * Labels: every vector carries a caller-chosen int64 label (>= 0). Flat and
 * HNSW number vectors 0..n-1 internally and 1.7.3's IndexIDMap refuses search
 * parameters, so the binding keeps its own position -> label map for them;
 * IVF indexes take the labels directly. HNSW cannot remove vectors: removed
 * labels are masked (never returned again) and counted in vindex_info's
 * `masked`; the caller rebuilds the index past a threshold of its choosing.
 * Flat masks too (positions are never renumbered); IVF really removes.
 *
 * HNSW search is the binding's own (over FAISS's graph and storage): in
 * 1.7.3 a per-call SearchParametersHNSW::efSearch does not widen the
 * candidate queue, which stays at the index's own efSearch, so recall
 * stopped rising above that value (measured: 0.967 for every per-call ef
 * from 16 to 256 where setting the index's efSearch gave 0.998). The
 * binding's search is the usual HNSW walk with a result set of ef allowed
 * vectors; masked and filtered-out vectors are walked through but never
 * returned (the more are filtered out, the further the walk goes: at worst
 * the whole graph). IVF with an HNSW coarse quantizer uses it too.
 *
 * Thread safety: a pthread rwlock inside the handle. Any number of
 * vindex_search / vindex_search_batched / vindex_write / vindex_get_info
 * calls may run at once (shared lock), each search with its own parameters;
 * add, remove, train and vindex_set_ef_construction take the exclusive lock,
 * so calling them while searches run is safe (they wait; waiting writers are
 * preferred, so a stream of searches cannot starve them). Only vindex_free
 * needs the caller to guarantee that no other call is running.
 *
 * Distances: Debian's FAISS is built for the x86-64 baseline, where 1.7.3
 * computes L2 and inner products with scalar loops. The binding computes
 * them itself (kernels built for AVX2/FMA and the baseline, picked at load
 * time) for Flat searches of fewer than 20 queries or with a filter, HNSW
 * with uncompressed storage (building and searching), flat coarse
 * quantizers and IVF-Flat's list scans; larger exact searches use BLAS, and
 * SQ/PQ codes FAISS's own scanners.
 *
 * OpenMP: vindex_search with nq == 1 never starts an OpenMP team (the daemon
 * searches from many worker threads at once); larger searches, training and
 * adds use OpenMP threads up to the limit set by vindex_global_init.
 * FAISS keeps search statistics in unsynchronised globals; the binding
 * avoids them for IVF and HNSW searches (Flat searches keep none).
 *
 * Errors never throw across the C boundary: every FAISS exception becomes
 * CTXD_EINVAL (bad spec, bad parameters), CTXD_EIO (failed operation, bad
 * file) or CTXD_ENOMEM (std::bad_alloc), with FAISS's message. */
#ifndef CTXD_VINDEX_H
#define CTXD_VINDEX_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct vindex vindex;

typedef enum vindex_metric {
  VINDEX_IP = 0, /* inner product: callers give L2-normalised vectors, the
                  * score is the cosine similarity (higher is better) */
  VINDEX_L2 = 1, /* squared L2 distance (lower is better) */
} vindex_metric;

#define VINDEX_SPEC_MAX 128
#define VINDEX_DIM_MAX 65536
#define VINDEX_K_MAX 100000     /* most results a query may ask for */
#define VINDEX_EF_MAX 65536     /* largest efSearch / efConstruction */
#define VINDEX_NLIST_MAX 1048576 /* largest IVF list count in a spec */
#define VINDEX_HNSW_M_MAX 512   /* largest HNSW M in a spec */

/* Create an empty index of dimension dim (1..VINDEX_DIM_MAX) from a FAISS
 * factory string. Accepted kinds: "Flat"; "HNSW<M>" and its variants with
 * compressed storage ("HNSW32_SQ8", "HNSW32_PQ16"); IVF with any coarse
 * quantizer and list encoding ("IVF4096,Flat", "IVF4096,PQ32",
 * "IVF1024,SQ8", "IVF65536_HNSW32,Flat"). "IDMap" prefixes are refused
 * (labels are handled here), and so are pre-transforms (OPQ, PCA), refine
 * stages, fast-scan and other kinds ctxd does not search. FAISS's defaults
 * apply: efSearch 16, efConstruction 40, nprobe 1 (pass per-call values).
 * Errors: CTXD_EINVAL (unknown or unsupported spec, a number in it over the
 * limits above, bad dim or metric; the message quotes FAISS), CTXD_ENOMEM.
 * The caller frees *out with vindex_free(). */
int vindex_create(const char *spec, uint32_t dim, vindex_metric metric,
                  vindex **out, ctxd_error *e);

/* Free the index. NULL is a no-op. No other call on v may be running. */
void vindex_free(vindex *v);

/* Set HNSW's efConstruction (1..VINDEX_EF_MAX; FAISS's default is 40): the
 * breadth of the neighbour search when a vector is inserted. Higher builds
 * slower and gives a better graph (higher recall at the same efSearch). It
 * applies to vectors added afterwards, so set it before the first add; it is
 * saved with the index. For IVF with an HNSW coarse quantizer it sets the
 * quantizer's (used when vindex_train adds the centroids).
 * Errors: CTXD_EINVAL (not an HNSW index or quantizer, ef out of range). */
int vindex_set_ef_construction(vindex *v, uint32_t ef, ctxd_error *e);

typedef struct vindex_info {
  uint32_t dim;
  vindex_metric metric;
  char spec[VINDEX_SPEC_MAX]; /* the factory string it was created from */
  int needs_training;         /* 1 for IVF/PQ kinds, 0 for Flat/HNSW */
  int trained;                /* is_trained */
  uint64_t min_train;         /* vectors needed to train well: the largest of
                               * 39 x nlist (IVF) and 39 x 2^nbits (each PQ's
                               * k-means, e.g. 39 x 256); 0 if no training.
                               * 39 is FAISS's points-per-centroid threshold */
  uint64_t size;              /* vectors stored (including masked ones) */
  uint64_t masked;            /* removed but still stored (HNSW; Flat too) */
  uint64_t live;              /* size - masked */
  uint64_t bytes;             /* approximate memory held */
  uint32_t nlist;             /* IVF lists; 0 for other kinds */
  uint32_t ef_construction;   /* HNSW's (or the HNSW quantizer's); else 0 */
} vindex_info;

void vindex_get_info(const vindex *v, vindex_info *out);

/* Train on n vectors (n x dim floats, row-major). A no-op returning 0 for
 * kinds that need no training, and for one already trained (training again
 * is refused by FAISS: create a new index instead). Fewer than min_train
 * vectors train, but worse; FAISS's own stderr warning about it is silenced
 * (log it yourself). IVF k-means samples at most 256 x nlist of them.
 * Errors: CTXD_EINVAL (fewer vectors than the kind can train on at all: n <
 * nlist, or n < 2^nbits for PQ), CTXD_ENOMEM, CTXD_EIO. */
int vindex_train(vindex *v, const float *x, uint64_t n, ctxd_error *e);

/* Add n vectors with their labels. A label already present is not detected
 * here (the caller removes first when replacing). HNSW holds at most
 * INT32_MAX vectors (masked ones included). If FAISS fails half-way, the
 * positions it added anyway are masked (Flat, HNSW). Errors: CTXD_EPRECOND
 * (not trained), CTXD_EINVAL (negative label, too many vectors),
 * CTXD_ENOMEM, CTXD_EIO. */
int vindex_add(vindex *v, const float *x, const int64_t *labels, uint64_t n,
               ctxd_error *e);

/* Remove every vector whose label is in [lo, hi) (half-open; lo == hi
 * removes nothing). *removed (may be NULL) = how many were removed (IVF) or
 * masked (Flat, HNSW; masking scans every position once). Errors:
 * CTXD_EINVAL (lo > hi), CTXD_EIO. */
int vindex_remove_range(vindex *v, int64_t lo, int64_t hi, uint64_t *removed,
                        ctxd_error *e);

/* The same for n ranges [lo[i], hi[i]) at once (any order, overlaps and
 * empty ones allowed): one pass over the index, so replaying many removals
 * (one range per changed document) costs O(index + ranges log ranges)
 * instead of one full scan each. *removed (may be NULL) = the total. A label
 * re-added after its removal gets a new position and is found again; only
 * the old positions stay masked. Errors: CTXD_EINVAL (a range with lo > hi,
 * NULL arrays with n > 0), CTXD_ENOMEM, CTXD_EIO. */
int vindex_remove_ranges(vindex *v, const int64_t *lo, const int64_t *hi,
                         size_t n, uint64_t *removed, ctxd_error *e);

/* Per-call search parameters; zero fields mean the index's defaults, and a
 * field that does not apply to the index's kind is ignored (nprobe on HNSW
 * or Flat, ef_search on Flat or on an IVF with a flat quantizer), so a
 * caller may pass a client's values whatever the index is. */
typedef struct vindex_params {
  uint32_t ef_search; /* HNSW efSearch (also for an HNSW coarse quantizer);
                       * at most VINDEX_EF_MAX; raised to k when smaller */
  uint32_t nprobe;    /* IVF nprobe (clamped to nlist) */
  /* Optional filter: return 1 to allow a label. Called possibly many times
   * per query, from the searching thread, or, for a search of several
   * queries with threads > 1, from several OpenMP threads at once (so it
   * must be safe to call concurrently). NULL: all labels allowed. */
  int (*allow)(int64_t label, void *arg);
  void *allow_arg;
} vindex_params;

/* Search nq queries (nq x dim floats) for their k nearest neighbours.
 * scores[nq*k] get the similarity (VINDEX_IP) or distance (VINDEX_L2),
 * labels[nq*k] the labels, best first; missing results (fewer than k live
 * vectors, or fewer found) have label -1 and the worst score (+INFINITY for
 * L2, -INFINITY for IP). p may be NULL (defaults, no filter). Searches with
 * nq > 1 use up to `threads` OpenMP threads (0: 1; capped by
 * vindex_global_init's limit); nq == 1 runs on the calling thread alone.
 * nq == 0 does nothing. Errors: CTXD_EINVAL (k == 0, k > VINDEX_K_MAX,
 * ef_search > VINDEX_EF_MAX, NULL buffers), CTXD_EPRECOND (not trained),
 * CTXD_ENOMEM, CTXD_EIO (FAISS failed). */
int vindex_search(const vindex *v, const float *q, uint64_t nq, uint32_t k,
                  const vindex_params *p, unsigned threads, float *scores,
                  int64_t *labels, ctxd_error *e);

/* Write the index to an open stdio stream at its current position (the
 * caller writes its own header before and fsyncs/renames after); read one
 * back from the stream's position (which is left just after the index).
 * The format: a header of the binding's ("CTXDVIX", version, kind, metric,
 * dim, spec), FAISS's own serialisation, the binding's label map and mask,
 * and a 64-bit checksum of all of it. Reading checks every part, so a
 * truncated, corrupted or foreign stream is refused rather than loaded.
 * Errors: CTXD_EIO (I/O, truncated, corrupted or foreign data: the message
 * says which), CTXD_ENOMEM. */
int vindex_write(const vindex *v, void *file /* FILE * */, ctxd_error *e);
int vindex_read(void *file /* FILE * */, vindex **out, ctxd_error *e);

/* Exact k-nearest-neighbour graph helper for corpus jobs and tests: search
 * every row of x (n x dim) against the index, batched, with `threads` OpenMP
 * threads, excluding each query's own label when self_labels is given
 * (self_labels[i] is row i's label: every result with that label is left
 * out, and the list is filled from the k+1 searched). Same output layout and
 * errors as vindex_search; progress (may be NULL) is called on the calling
 * thread after each batch with the rows done so far. Exact when the index is
 * Flat (a Flat index with masked vectors and no filter searches with BLAS
 * and drops the masked results, so it stays exact). */
int vindex_search_batched(const vindex *v, const float *x, uint64_t n,
                          const int64_t *self_labels, uint32_t k,
                          const vindex_params *p, unsigned threads,
                          float *scores, int64_t *labels,
                          void (*progress)(uint64_t done, void *arg),
                          void *progress_arg, ctxd_error *e);

/* L2-normalise n rows of x in place (rows of norm 0 stay 0). */
void vindex_normalize(float *x, uint64_t n, uint32_t dim);

/* Set the binding's OpenMP thread limit (`max_threads` 0 = number of
 * cores): searches, training and adds use at most that many threads. (An
 * omp_set_num_threads() call only sets the calling thread's value in
 * libgomp, so the binding applies the limit itself on every call.) Call
 * once at start before any other vindex call. The wait policy
 * cannot be set from here: libgomp reads OMP_WAIT_POLICY when it is loaded,
 * before main(), so the daemon re-executes itself with OMP_WAIT_POLICY=PASSIVE
 * when the variable is unset (FAISS's spinning OpenMP threads starve
 * OpenBLAS; see the README). Returns 1 if the policy in force is passive. */
int vindex_global_init(unsigned max_threads);

/* Cap the OpenMP threads of the vindex calls made from the calling thread
 * (train, add, remove, and searches of several queries) below the global
 * limit: e.g. a background thread that trains and rebuilds calls it once
 * with its share of the cores. 0 restores the global limit. Thread-local;
 * it changes nothing for other threads. */
void vindex_thread_limit(unsigned max_threads);

#ifdef __cplusplus
}
#endif

#endif
