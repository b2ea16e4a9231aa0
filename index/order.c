/* order.c - corpus ordering: options, input checks, and order_run(), the
 * whole job with its checkpoints (vectors.ckpt after embedding, knn.ckpt
 * after the kNN graph) so that a restarted job resumes after the last
 * finished expensive phase. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "order_impl.h"
#include "utf8.h"
#include "vindex.h"

/* ---- names and options ------------------------------------------------------ */

static const char *const mode_names[] = {"iclm", "decompose", "order"};
static const char *const phase_names[] = {"read",  "embed",    "train",
                                          "index", "knn",      "dedup",
                                          "traverse", "pack"};

const char *order_mode_name(order_mode m) {
  return (unsigned)m < 3 ? mode_names[m] : "unknown";
}

int order_mode_parse(const char *s) {
  for (int i = 0; i < 3; i++)
    if (s && strcmp(s, mode_names[i]) == 0) return i;
  return -1;
}

const char *order_phase_name(order_phase p) {
  return (unsigned)p < ORDER_PHASE_COUNT ? phase_names[p] : "unknown";
}

void order_opts_defaults(order_opts *o) {
  memset(o, 0, sizeof *o);
  o->mode = ORDER_MODE_ICLM;
  o->k = ORDER_DEFAULT_K;
  o->exact_max = ORDER_DEFAULT_EXACT_MAX;
  o->recall = ORDER_DEFAULT_RECALL;
  o->nprobe_max = ORDER_DEFAULT_NPROBE_MAX;
  o->dup_cosine = ORDER_DEFAULT_DUP_COSINE;
  o->window_tokens = ORDER_DEFAULT_WINDOW;
  o->separator = ORDER_DEFAULT_SEPARATOR;
  o->decompose_min_log2 = ORDER_DEFAULT_DECOMPOSE_MIN;
}

static uint32_t log2_floor32(uint32_t x) {
  uint32_t b = 0;
  while (x >>= 1) b++;
  return b;
}

int order_opts_check(const order_opts *o, ctxd_error *e) {
  if ((unsigned)o->mode > ORDER_MODE_ORDER)
    return ctxd_seterr(e, CTXD_EINVAL, "unknown mode %d", (int)o->mode);
  if (o->k == 0 || o->k > ORDER_K_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "k must be 1..%d (got %u)", ORDER_K_MAX,
                       o->k);
  if (o->window_tokens == 0 || o->window_tokens > ORDER_WINDOW_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "window_tokens must be 1..%u (got %u)",
                       ORDER_WINDOW_MAX, o->window_tokens);
  if (!(o->recall > 0 && o->recall <= 1))
    return ctxd_seterr(e, CTXD_EINVAL, "recall must be in (0, 1]");
  if (o->nprobe_max == 0)
    return ctxd_seterr(e, CTXD_EINVAL, "nprobe_max must be at least 1");
  if (!(o->dup_cosine == o->dup_cosine) || !(o->dup_jaccard >= 0) ||
      o->dup_jaccard > 1)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "dup_cosine must be a number, dup_jaccard in [0, 1]");
  if (o->threads > 1024)
    return ctxd_seterr(e, CTXD_EINVAL, "threads must be 0..1024");
  size_t sl = o->separator ? strlen(o->separator) : 0;
  if (sl > ORDER_SEPARATOR_MAX || !utf8_valid(o->separator ? o->separator : "",
                                              sl, NULL))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "separator must be 0..%d bytes of UTF-8",
                       ORDER_SEPARATOR_MAX);
  uint32_t bmax = o->decompose_max_log2 ? o->decompose_max_log2
                                        : log2_floor32(o->window_tokens);
  if (o->mode == ORDER_MODE_DECOMPOSE &&
      (bmax > ORDER_LOG2_MAX || o->decompose_min_log2 > bmax))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "decompose needs min <= max <= %d (got 2^%u..2^%u)",
                       ORDER_LOG2_MAX, o->decompose_min_log2, bmax);
  return 0;
}

/* ---- shared helpers ---------------------------------------------------------- */

unsigned order_threads(const order_opts *o) {
  if (o->threads) return o->threads;
  long c = sysconf(_SC_NPROCESSORS_ONLN);
  return c > 0 ? (unsigned)c : 1;
}

void order_permutation(uint32_t *perm, uint64_t n, uint64_t seed) {
  uint64_t st = seed;
  for (uint64_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
  for (uint64_t i = n; i > 1; i--) {
    uint64_t j = order_rand_below(&st, i);
    uint32_t t = perm[i - 1];
    perm[i - 1] = perm[j];
    perm[j] = t;
  }
}

static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t order_hash(uint64_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  h ^= (uint64_t)n * 0x9E3779B97F4A7C15ull;
  for (; n >= 8; s += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, s, 8);
    h = (h ^ w) * 0x100000001B3ull;
    h ^= h >> 29;
  }
  uint64_t w = 0;
  memcpy(&w, s, n);
  return mix64(h ^ w ^ ((uint64_t)n << 56));
}

/* ---- input ----------------------------------------------------------------------- */

int order_input_check(const order_input *in, const order_opts *o,
                      ctxd_error *e) {
  order_idset set = {0};
  int rc;
  if (in->n > ORDER_DOCS_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "%llu documents, more than %llu",
                       (unsigned long long)in->n,
                       (unsigned long long)ORDER_DOCS_MAX);
  if (in->n && !in->ids)
    return ctxd_seterr(e, CTXD_EINVAL, "no ids");
  if (in->vectors && (in->dim == 0 || in->dim > VINDEX_DIM_MAX))
    return ctxd_seterr(e, CTXD_EINVAL, "vector dimension %u out of 1..%u",
                       in->dim, VINDEX_DIM_MAX);
  int need_embed = !in->vectors;
  for (uint64_t i = 0; in->has_vector && !need_embed && i < in->n; i++)
    need_embed = !in->has_vector[i];
  if (in->n && need_embed) {
    if (!o->embedder)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "documents without vectors need an embedder");
    if (in->vectors && o->embedder->dim != in->dim)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "given vectors have %u dimensions but the embedder "
                         "(%s) makes %u",
                         in->dim, o->embedder->name, o->embedder->dim);
  }
  if (in->n && o->mode != ORDER_MODE_ORDER && !in->texts && !in->get_text)
    return ctxd_seterr(e, CTXD_EINVAL, "mode %s needs the documents' texts",
                       order_mode_name(o->mode));
  if ((rc = order_idset_init(&set, in->n, e))) return rc;
  for (uint64_t i = 0; i < in->n; i++) {
    size_t len = in->ids[i] ? strlen(in->ids[i]) : 0;
    if (len == 0 || len > ORDER_ID_MAX) {
      rc = ctxd_seterr(e, CTXD_EINVAL, "document %llu: id must be 1..%d bytes",
                       (unsigned long long)i, ORDER_ID_MAX);
      goto out;
    }
    uint32_t dup;
    if ((rc = order_idset_insert(&set, in->ids, (uint32_t)i, &dup, e))) goto out;
    if (dup != ORDER_NONE) {
      rc = ctxd_seterr(e, CTXD_EINVAL,
                       "duplicate id \"%.200s\" (documents %u and %llu)",
                       in->ids[i], dup, (unsigned long long)i);
      goto out;
    }
  }
out:
  order_idset_free(&set);
  return rc;
}

/* ---- the job ------------------------------------------------------------------- */

typedef struct vec_hdr {
  uint32_t version, dim;
  uint64_t n, fingerprint;
} vec_hdr;

static const char VEC_MAGIC[8] = {'C', 'T', 'X', 'D', 'V', 'E', 'C', '1'};

static uint64_t fingerprint_vectors(const order_input *in, const order_opts *o) {
  uint64_t h = order_hash(0, "order-vectors-1", 15);
  h = order_hash(h, &in->n, sizeof in->n);
  for (uint64_t i = 0; i < in->n; i++)
    h = order_hash(h, in->ids[i], strlen(in->ids[i]) + 1);
  if (in->input_tag) h = order_hash(h, in->input_tag, strlen(in->input_tag));
  if (o->embedder) {
    h = order_hash(h, o->embedder->name, strlen(o->embedder->name));
    h = order_hash(h, &o->embedder->dim, sizeof o->embedder->dim);
  }
  if (in->vectors) {
    h = order_hash(h, &in->dim, sizeof in->dim);
    if (in->has_vector) {
      /* only the given rows: the others are filled by the embedder */
      h = order_hash(h, in->has_vector, in->n);
      for (uint64_t i = 0; i < in->n; i++)
        if (in->has_vector[i])
          h = order_hash(h, in->vectors + i * in->dim, in->dim * sizeof(float));
    } else {
      h = order_hash(h, in->vectors, in->n * in->dim * sizeof(float));
    }
  }
  return h;
}

static uint64_t fingerprint_knn(uint64_t fv, const order_opts *o) {
  struct {
    uint64_t fv, exact_max, seed;
    uint32_t k, nlist, nprobe, nprobe_max;
    float recall;
  } f;
  memset(&f, 0, sizeof f);
  f.fv = fv;
  f.exact_max = o->exact_max;
  f.seed = o->seed;
  f.k = o->k;
  f.nlist = o->nlist;
  f.nprobe = o->nprobe;
  f.nprobe_max = o->nprobe_max;
  f.recall = o->recall;
  return order_hash(0x6B6E6E, &f, sizeof f);
}

static int load_vectors(const char *path, order_input *in, uint32_t dim,
                        uint64_t fp, float **owned, ctxd_error *e) {
  order_ckpt_reader r = {0};
  vec_hdr h;
  int rc = order_ckpt_open(&r, path, VEC_MAGIC, &h, sizeof h, e);
  if (rc) return rc;
  if (h.version != 1 || h.n != in->n || h.dim != dim || h.fingerprint != fp) {
    order_ckpt_close(&r);
    return ctxd_seterr(e, CTXD_EPRECOND, "%s is for other data", path);
  }
  float *v = in->vectors;
  if (!v) {
    v = malloc(in->n * dim * sizeof *v);
    if (!v) {
      order_ckpt_close(&r);
      return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for vectors");
    }
  }
  order_ckpt_part part = {v, in->n * dim * sizeof *v};
  rc = order_ckpt_read_parts(&r, &part, 1, e);
  order_ckpt_close(&r);
  if (rc) {
    if (v != in->vectors) free(v);
    return rc;
  }
  if (!in->vectors) {
    *owned = v;
    in->vectors = v;
    in->dim = dim;
    in->has_vector = NULL;
  }
  return 0;
}

int order_run(order_input *in, const char *output_dir, const order_opts *o,
              order_summary *s, ctxd_error *e) {
  const order_input saved = *in;
  float *owned = NULL;
  order_knn *knn = NULL;
  order_graph *g = NULL;
  order_dups *d = NULL;
  order_path *p = NULL;
  char *vec_path = NULL, *knn_path = NULL;
  int rc;
  double t0 = order_now(), t;
  memset(s, 0, sizeof *s);
  s->mode = o->mode;
  s->documents = in->n;
  s->t_read = in->read_seconds;
  s->adjacent_similarity = s->random_adjacent_similarity = NAN;
  s->window_similarity = s->random_window_similarity = NAN;
  if ((rc = order_opts_check(o, e)) || (rc = order_input_check(in, o, e)))
    return rc;
  if (mkdir(output_dir, 0755) != 0 && errno != EEXIST)
    return ctxd_seterr(e, CTXD_EIO, "cannot create %s: %s", output_dir,
                       strerror(errno));
  vec_path = order_path_join(output_dir, ORDER_FILE_VEC_CKPT);
  knn_path = order_path_join(output_dir, ORDER_FILE_KNN_CKPT);
  if (!vec_path || !knn_path) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto out;
  }

  /* vectors: the given ones are normalised before the fingerprint */
  t = order_now();
  if (in->vectors) order_normalize(in->vectors, in->n, in->dim, in->has_vector);
  uint64_t fv = fingerprint_vectors(in, o);
  int embed = !in->vectors;
  for (uint64_t i = 0; in->has_vector && !embed && i < in->n; i++)
    embed = !in->has_vector[i];
  if (embed && in->n &&
      load_vectors(vec_path, in, o->embedder->dim, fv, &owned, NULL) == 0) {
    s->resumed_vectors = 1;
  } else {
    if ((rc = order_prepare_vectors(in, o, &owned, e))) goto out;
    order_ckpt_part part = {in->vectors, in->n * in->dim * sizeof(float)};
    vec_hdr h = {1, in->dim, in->n, fv};
    if (embed && in->n &&
        (rc = order_ckpt_write(vec_path, VEC_MAGIC, &h, sizeof h, &part, 1, e)))
      goto out;
  }
  s->t_embed = order_now() - t;

  /* kNN graph */
  t = order_now();
  uint64_t fk = fingerprint_knn(fv, o);
  uint32_t k = order_knn_k(in->n, o->k);
  if (order_knn_load(knn_path, in->n, k, fk, &knn, NULL) == 0) {
    s->resumed_knn = 1;
  } else {
    if ((rc = order_knn_build(in, o, &knn, e))) goto out;
    if ((rc = order_knn_save(knn, knn_path, fk, e))) goto out;
  }
  snprintf(s->knn_method, sizeof s->knn_method, "%s", knn->method);
  s->k = knn->k;
  s->nprobe = knn->nprobe;
  s->knn_recall = knn->recall;
  s->t_knn = order_now() - t;

  /* graph and duplicates */
  t = order_now();
  if ((rc = order_graph_build(knn, &g, e))) goto out;
  order_knn_free(knn);
  knn = NULL;
  s->edges = order_graph_edges(g);
  if ((rc = order_dedup(g, in, o, &d, e))) goto out;
  s->duplicates = d->count;
  s->t_dedup = order_now() - t;

  /* the path */
  t = order_now();
  if ((rc = order_traverse(g, d, in, o, &p, e))) goto out;
  order_graph_free(g);
  g = NULL;
  s->ordered = p->n;
  s->jumps = p->jumps;
  s->t_traverse = order_now() - t;

  /* packing and outputs */
  t = order_now();
  if (o->mode != ORDER_MODE_DECOMPOSE) {
    s->adjacent_similarity = order_path_similarity(p);
    s->random_adjacent_similarity = order_random_similarity(p, in, o->seed);
  }
  if ((rc = order_pack(in, p, d, o, output_dir, s, e))) goto out;
  if (o->mode == ORDER_MODE_DECOMPOSE)
    s->window_similarity = s->random_window_similarity = NAN;
  s->t_pack = order_now() - t;
  s->t_total = order_now() - t0;
  if ((rc = order_write_summary(s, o, output_dir, e))) goto out;
  if (!o->keep_checkpoints) {
    unlink(vec_path);
    unlink(knn_path);
  }
out:
  order_knn_free(knn);
  order_graph_free(g);
  order_dups_free(d);
  order_path_free(p);
  free(vec_path);
  free(knn_path);
  if (owned) {
    free(owned);
    *in = saved;
  }
  return rc;
}
