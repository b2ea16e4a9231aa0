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
 *
 * Thread safety: any number of vindex_search calls may run at once, each
 * with its own parameters, and concurrently with nothing else; add, remove,
 * train and write take the handle's write lock inside the binding, so calling
 * them while searches run is safe (they wait). Errors never throw across the
 * C boundary: every FAISS exception becomes CTXD_EINVAL (bad spec, bad
 * parameters) or CTXD_EIO/CTXD_ENOMEM with FAISS's message. */
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

/* Create an empty index of dimension dim (1..VINDEX_DIM_MAX) from a FAISS
 * factory string ("Flat", "HNSW32", "IVF4096,Flat", "IVF4096,PQ32", ...).
 * "IDMap" prefixes are refused (labels are handled here).
 * Errors: CTXD_EINVAL (unknown or unsupported spec, bad dim; the message
 * quotes FAISS), CTXD_ENOMEM. The caller frees *out with vindex_free(). */
int vindex_create(const char *spec, uint32_t dim, vindex_metric metric,
                  vindex **out, ctxd_error *e);

void vindex_free(vindex *v);

typedef struct vindex_info {
  uint32_t dim;
  vindex_metric metric;
  char spec[VINDEX_SPEC_MAX]; /* the factory string it was created from */
  int needs_training;         /* 1 for IVF/PQ kinds, 0 for Flat/HNSW */
  int trained;                /* is_trained */
  uint64_t min_train;         /* vectors needed to train well (e.g. 39 x nlist
                               * for IVF, 256 x 39 for PQ); 0 if no training */
  uint64_t size;              /* vectors stored (including masked ones) */
  uint64_t masked;            /* removed but still stored (HNSW; Flat too) */
  uint64_t live;              /* size - masked */
  uint64_t bytes;             /* approximate memory held */
} vindex_info;

void vindex_get_info(const vindex *v, vindex_info *out);

/* Train on n vectors (n x dim floats, row-major). A no-op returning 0 for
 * kinds that need no training. Errors: CTXD_EINVAL (fewer vectors than the
 * kind can train on at all, e.g. n < nlist), CTXD_EIO. */
int vindex_train(vindex *v, const float *x, uint64_t n, ctxd_error *e);

/* Add n vectors with their labels. A label already present is not detected
 * here (the caller removes first when replacing). Errors: CTXD_EPRECOND (not
 * trained), CTXD_EINVAL (negative label), CTXD_ENOMEM, CTXD_EIO. */
int vindex_add(vindex *v, const float *x, const int64_t *labels, uint64_t n,
               ctxd_error *e);

/* Remove every vector whose label is in [lo, hi) (half-open). *removed (may
 * be NULL) = how many were removed or masked. */
int vindex_remove_range(vindex *v, int64_t lo, int64_t hi, uint64_t *removed,
                        ctxd_error *e);

/* Per-call search parameters; zero fields mean the index's defaults. */
typedef struct vindex_params {
  uint32_t ef_search; /* HNSW efSearch (also for an HNSW coarse quantizer) */
  uint32_t nprobe;    /* IVF nprobe */
  /* Optional filter: return 1 to allow a label. Called from the searching
   * thread only, possibly many times per query. NULL: all labels allowed. */
  int (*allow)(int64_t label, void *arg);
  void *allow_arg;
} vindex_params;

/* Search nq queries (nq x dim floats) for their k nearest neighbours.
 * scores[nq*k] get the similarity (VINDEX_IP) or distance (VINDEX_L2),
 * labels[nq*k] the labels, best first; missing results (fewer than k live
 * vectors) have label -1. Searches with nq > 1 use up to `threads` OpenMP
 * threads (0: 1). Errors: CTXD_EINVAL (k == 0, k > 100000), CTXD_EPRECOND
 * (not trained), CTXD_ENOMEM. */
int vindex_search(const vindex *v, const float *q, uint64_t nq, uint32_t k,
                  const vindex_params *p, unsigned threads, float *scores,
                  int64_t *labels, ctxd_error *e);

/* Write the index to an open stdio stream at its current position (the
 * caller writes its own header before and fsyncs/renames after); read one
 * back. The format is FAISS's plus the binding's label map and mask.
 * Errors: CTXD_EIO (I/O, truncated or foreign data: the message says which). */
int vindex_write(const vindex *v, void *file /* FILE * */, ctxd_error *e);
int vindex_read(void *file /* FILE * */, vindex **out, ctxd_error *e);

/* Exact k-nearest-neighbour graph helper for corpus jobs and tests: search
 * every row of x (n x dim) against the index, batched, with `threads` OpenMP
 * threads, excluding each query's own label when self_labels is given
 * (self_labels[i] is row i's label). Same output layout as vindex_search. */
int vindex_search_batched(const vindex *v, const float *x, uint64_t n,
                          const int64_t *self_labels, uint32_t k,
                          const vindex_params *p, unsigned threads,
                          float *scores, int64_t *labels,
                          void (*progress)(uint64_t done, void *arg),
                          void *progress_arg, ctxd_error *e);

/* L2-normalise n rows of x in place (rows of norm 0 stay 0). */
void vindex_normalize(float *x, uint64_t n, uint32_t dim);

/* Set the process-wide OpenMP thread limit (`max_threads` 0 = number of
 * cores). Call once at start before any other vindex call. The wait policy
 * cannot be set from here: libgomp reads OMP_WAIT_POLICY when it is loaded,
 * before main(), so the daemon re-executes itself with OMP_WAIT_POLICY=PASSIVE
 * when the variable is unset (FAISS's spinning OpenMP threads starve
 * OpenBLAS; see the README). Returns 1 if the policy in force is passive. */
int vindex_global_init(unsigned max_threads);

#ifdef __cplusplus
}
#endif

#endif
