/* order_impl.h - internals shared by the order_*.c files (corpus ordering);
 * not part of the library's API. */
#ifndef CTXD_ORDER_IMPL_H
#define CTXD_ORDER_IMPL_H

#include <math.h>
#include <stdio.h>
#include <time.h>

#include "order.h"

static inline double order_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int order_cancelled(const atomic_int *cancel) {
  return cancel && atomic_load_explicit(cancel, memory_order_relaxed) != 0;
}

static inline void order_report(const order_opts *o, order_phase ph,
                                uint64_t done, uint64_t total) {
  if (o->progress) o->progress(o->progress_arg, ph, done, total);
}

/* Report progress, then check the cancel flag: CTXD_ECANCELED (naming the
 * phase and the point reached) when it is set. */
static inline int order_step(const order_opts *o, order_phase ph,
                             uint64_t done, uint64_t total, ctxd_error *e) {
  order_report(o, ph, done, total);
  if (!order_cancelled(o->cancel)) return 0;
  return ctxd_seterr(e, CTXD_ECANCELED, "cancelled in phase %s at %llu of %llu",
                     order_phase_name(ph), (unsigned long long)done,
                     (unsigned long long)total);
}

/* o->threads, or the number of online cores. */
unsigned order_threads(const order_opts *o);


/* splitmix64: the seeded generator of every random choice here. */
static inline uint64_t order_rand(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* Uniform in [0, n) (n > 0; the modulo bias is below 2^-32 for n < 2^32). */
static inline uint64_t order_rand_below(uint64_t *state, uint64_t n) {
  return order_rand(state) % n;
}

/* perm[0..n) = a seeded random permutation of 0..n-1 (Fisher-Yates). */
void order_permutation(uint32_t *perm, uint64_t n, uint64_t seed);

/* 64-bit hash of bytes, continuing from h (word-wise, fast enough for the
 * vectors of a million documents). */
uint64_t order_hash(uint64_t h, const void *p, size_t n);

static inline float order_dot(const float *a, const float *b, uint32_t dim) {
  /* four accumulators: the compiler vectorises this without -ffast-math */
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  uint32_t j = 0;
  for (; j + 4 <= dim; j += 4) {
    s0 += a[j] * b[j];
    s1 += a[j + 1] * b[j + 1];
    s2 += a[j + 2] * b[j + 2];
    s3 += a[j + 3] * b[j + 3];
  }
  for (; j < dim; j++) s0 += a[j] * b[j];
  return (s0 + s1) + (s2 + s3);
}

/* L2-normalise rows of x (only those with only[i] != 0 when only is
 * given). Rows already of norm 1 (within 1e-6 of its square) are left
 * bit for bit, so normalising twice changes nothing and a checkpoint's
 * fingerprint of normalised vectors survives a rerun. */
void order_normalize(float *x, uint64_t n, uint32_t dim, const uint8_t *only);

/* Document i's text, whichever way the input gives it, checked to be valid
 * UTF-8. *text NULL = no text. Valid until the next call. Errors: those of
 * get_text; CTXD_EINVAL (not UTF-8, naming the document). */
int order_text(const order_input *in, uint64_t i, const char **text,
               size_t *len, ctxd_error *e);

/* Index of ids for uniqueness checks: open addressing over document
 * indices. */
typedef struct order_idset {
  uint32_t *slot; /* ORDER_NONE = empty */
  uint64_t mask;
  uint64_t count;
} order_idset;

/* Sized for n ids (it grows past that). Errors: CTXD_ENOMEM. */
int order_idset_init(order_idset *s, uint64_t n, ctxd_error *e);
void order_idset_free(order_idset *s);
/* Insert document i whose id is ids[i] (ids[0..i] stay valid while the set
 * lives): *dup = the index of an earlier document with the same id (i is
 * then not inserted), or ORDER_NONE. Errors: CTXD_ENOMEM (growing). */
int order_idset_insert(order_idset *s, const char *const *ids, uint32_t i,
                       uint32_t *dup, ctxd_error *e);

/* A file written atomically: tmp name, then fsync + rename + directory
 * fsync at commit. Writes go through stdio with a large buffer. */
typedef struct order_afile {
  FILE *f;
  char *path;
  char *tmp;
  char *dir;
} order_afile;

int order_afile_open(order_afile *a, const char *dir, const char *name,
                     ctxd_error *e);
int order_afile_open_path(order_afile *a, const char *path, ctxd_error *e);
/* Commit: errors CTXD_EIO / CTXD_ENOSPC (the temp file is removed). */
int order_afile_commit(order_afile *a, ctxd_error *e);
/* Drop the temp file (safe on a zeroed or committed struct). */
void order_afile_abort(order_afile *a);

/* Checkpoint files: magic (8 bytes) | header | arrays | u64 checksum of
 * everything before it (order_hash). */
typedef struct order_ckpt_part {
  void *p;
  size_t bytes;
} order_ckpt_part;

/* Write magic, the header and the parts to path atomically. Errors:
 * CTXD_EIO, CTXD_ENOSPC, CTXD_ENOMEM. */
int order_ckpt_write(const char *path, const char magic[8], const void *hdr,
                     size_t hdr_len, const order_ckpt_part *parts,
                     int nparts, ctxd_error *e);
/* Open path and read its header into hdr (after checking the magic);
 * the caller checks the header, then order_ckpt_read_parts reads the parts
 * (their sizes must account for the rest of the file exactly) and checks
 * the checksum. Errors: CTXD_ENOTFOUND, CTXD_EIO, CTXD_ECORRUPT. */
typedef struct order_ckpt_reader {
  FILE *f;
  uint64_t h;
  const char *path;
} order_ckpt_reader;
int order_ckpt_open(order_ckpt_reader *r, const char *path,
                    const char magic[8], void *hdr, size_t hdr_len,
                    ctxd_error *e);
int order_ckpt_read_parts(order_ckpt_reader *r, const order_ckpt_part *parts,
                          int nparts, ctxd_error *e);
void order_ckpt_close(order_ckpt_reader *r);

/* dir + "/" + name, malloc'd (NULL on ENOMEM). */
char *order_path_join(const char *dir, const char *name);


#endif
