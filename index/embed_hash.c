/* embed_hash.c - the built-in `hash` embedder: signed feature hashing of
 * lex.h's unigrams and bigrams (the rule is in embed.h), and its text form.
 *
 * It runs on every ingested byte, so one text costs one pass of the lexical
 * analyser, one FNV-1a pass per feature, and one probe of a small
 * open-addressing table; the table and the feature array belong to one
 * embed call and grow geometrically (no allocation per feature). */
#include "embed.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "embed_opts.h"
#include "lex.h"

#define FNV_BASIS 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

/* Bounds on what a client may configure; weights past these only risk
 * float overflow without changing any ranking. */
#define BIGRAM_WEIGHT_MAX 1000.0
#define IDF_MAX 1e6

typedef struct hash_ctx {
  embed_hash_opts o;
  uint64_t basis; /* FNV-1a state after the 8 seed bytes */
  __uint128_t mod_m; /* h mod dim without a division (fastmod below) */
  double tf_log[16]; /* 1 + ln(c) for small counts */
} hash_ctx;

/* h mod d for d >= 2 from m = 2^128 / d rounded up (Lemire, Kaser and
 * Kurz, "Faster remainder by direct computation", 2019): two or three
 * multiplications instead of a 64-bit division, which cost a third of the
 * embedder's time. */
static uint32_t fastmod(uint64_t h, __uint128_t m, uint32_t d) {
  __uint128_t low = m * h;
  __uint128_t bottom = ((low & UINT64_MAX) * d) >> 64;
  __uint128_t top = (low >> 64) * d;
  return (uint32_t)((bottom + top) >> 64);
}

/* The seed enters as 8 little-endian bytes hashed before the feature, so
 * every bit of it moves every bucket. */
static uint64_t seeded_basis(uint64_t seed) {
  uint64_t h = FNV_BASIS;
  for (int i = 0; i < 8; i++) h = (h ^ ((seed >> (8 * i)) & 0xff)) * FNV_PRIME;
  return h;
}

/* One distinct feature of a text, in first-seen order (accumulating in that
 * order keeps a row bit-identical whatever else the call embedded). */
typedef struct feat {
  uint64_t h;
  uint32_t count;
  uint32_t a, b;    /* bigram: indexes of its two unigrams; unigram: a = NONE */
  uint32_t toff;    /* unigram with idf: its bytes in the term arena */
  uint32_t tlen;
} feat;

#define NONE UINT32_MAX

/* Slot of the open-addressing table: live iff gen equals the table's. */
typedef struct slot {
  uint64_t h;
  uint32_t idx, gen;
} slot;

typedef struct work {
  slot *slots;
  size_t nslots; /* power of two */
  uint32_t gen;
  feat *f;
  size_t nf, capf;
  char *terms; /* idf only: the bytes of each distinct unigram */
  size_t nterms, capterms;
  double *idf; /* idf only: per feature (unigrams) */
  size_t capidf;
} work;

static int grow_slots(work *w) {
  size_t ns = w->nslots * 2;
  slot *s = calloc(ns, sizeof *s);
  if (!s) return -1;
  /* Re-insert the live features only; they carry their hashes. */
  for (size_t i = 0; i < w->nf; i++) {
    size_t p = (size_t)w->f[i].h & (ns - 1);
    while (s[p].gen) p = (p + 1) & (ns - 1);
    s[p].h = w->f[i].h;
    s[p].idx = (uint32_t)i;
    s[p].gen = 1;
  }
  free(w->slots);
  w->slots = s;
  w->nslots = ns;
  w->gen = 1;
  return 0;
}

/* Add feature h at free slot p; NONE when out of memory. */
static __attribute__((noinline)) uint32_t feat_add(work *w, size_t p,
                                                   uint64_t h, uint32_t a,
                                                   uint32_t b) {
  if (w->nf == w->capf) {
    if (w->capf >= NONE / 2) return NONE;
    size_t nc = w->capf * 2;
    feat *nf = realloc(w->f, nc * sizeof *nf);
    if (!nf) return NONE;
    w->f = nf;
    w->capf = nc;
  }
  uint32_t i = (uint32_t)w->nf++;
  w->f[i] = (feat){h, 0, a, b, 0, 0};
  w->slots[p] = (slot){h, i, w->gen};
  if (w->nf * 2 > w->nslots && grow_slots(w)) return NONE;
  return i;
}

/* The index of feature h in w->f, added with count 0 if new; NONE when out
 * of memory. Probing starts from the low bits: the table is far smaller
 * than 2^32 and FNV-1a's low bits spread well over a table that size. */
static inline uint32_t feat_find(work *w, uint64_t h, uint32_t a, uint32_t b) {
  size_t m = w->nslots - 1, p = (size_t)h & m;
  while (w->slots[p].gen == w->gen) {
    if (w->slots[p].h == h) return w->slots[p].idx;
    p = (p + 1) & m;
  }
  return feat_add(w, p, h, a, b);
}

static int keep_term(work *w, feat *f, const char *t, size_t n) {
  if (w->nterms + n > w->capterms) {
    size_t nc = w->capterms * 2 + n;
    if (nc > UINT32_MAX) return -1;
    char *nt = realloc(w->terms, nc);
    if (!nt) return -1;
    w->terms = nt;
    w->capterms = nc;
  }
  memcpy(w->terms + w->nterms, t, n);
  f->toff = (uint32_t)w->nterms;
  f->tlen = (uint32_t)n;
  w->nterms += n;
  return 0;
}

static double tf_weight(const hash_ctx *c, uint32_t n) {
  if (!c->o.sublinear_tf) return (double)n;
  return n < 16 ? c->tf_log[n] : 1.0 + log((double)n);
}

static double clamp_idf(double v) {
  if (!(v > 0)) return 0; /* negative or NaN: the feature drops out */
  return v > IDF_MAX ? IDF_MAX : v;
}

/* Embed one text into row[dim]. Returns 0 or -1 (out of memory). */
static int embed_one(const hash_ctx *c, work *w, const char *s, size_t n,
                     float *row) {
  const embed_hash_opts *o = &c->o;
  const uint32_t dim = o->dim;
  memset(row, 0, (size_t)dim * sizeof *row);
  w->nf = 0;
  w->nterms = 0;
  if (++w->gen == 0) { /* wrapped: old generations would look live */
    memset(w->slots, 0, w->nslots * sizeof *w->slots);
    w->gen = 1;
  }
  lex_iter it;
  char term[LEX_TERM_MAX];
  size_t tl;
  uint64_t prev_h = 0;
  uint32_t prev = NONE;
  lex_iter_init(&it, s, n);
  while (lex_next(&it, term, &tl, NULL, NULL)) {
    /* The bigram "a b" continues a's state with the space and b's bytes;
     * both chains advance in one loop (FNV-1a is latency-bound). */
    uint64_t hu = c->basis, hb = (prev_h ^ ' ') * FNV_PRIME;
    if (o->bigrams) {
      for (size_t i = 0; i < tl; i++) {
        hu = (hu ^ (unsigned char)term[i]) * FNV_PRIME;
        hb = (hb ^ (unsigned char)term[i]) * FNV_PRIME;
      }
    } else {
      for (size_t i = 0; i < tl; i++) hu = (hu ^ (unsigned char)term[i]) * FNV_PRIME;
    }
    uint32_t u = feat_find(w, hu, NONE, NONE);
    if (u == NONE) return -1;
    if (w->f[u].count++ == 0 && o->idf && keep_term(w, &w->f[u], term, tl))
      return -1;
    if (o->bigrams && prev != NONE) {
      uint32_t bi = feat_find(w, hb, prev, u);
      if (bi == NONE) return -1;
      w->f[bi].count++;
    }
    prev_h = hu;
    prev = u;
  }
  if (w->nf == 0) return 0;
  if (o->idf) {
    if (w->nf > w->capidf) {
      double *ni = realloc(w->idf, w->capf * sizeof *ni);
      if (!ni) return -1;
      w->idf = ni;
      w->capidf = w->capf;
    }
    /* Unigrams always precede the bigrams that name them. */
    for (size_t i = 0; i < w->nf; i++) {
      const feat *f = &w->f[i];
      w->idf[i] = f->a == NONE
                      ? clamp_idf(o->idf(w->terms + f->toff, f->tlen, o->idf_arg))
                      : 0.5 * (w->idf[f->a] + w->idf[f->b]);
    }
  }
  for (size_t i = 0; i < w->nf; i++) {
    const feat *f = &w->f[i];
    double wt = tf_weight(c, f->count);
    if (f->a != NONE) wt *= o->bigram_weight;
    if (o->idf) wt *= w->idf[i];
    /* The sign from the top bit: for power-of-two dims the bucket uses only
     * low bits, so sign and bucket are independent. */
    uint32_t bucket = (dim & (dim - 1)) ? fastmod(f->h, c->mod_m, dim)
                                        : (uint32_t)f->h & (dim - 1);
    row[bucket] += (f->h >> 63) ? -(float)wt : (float)wt;
  }
  double ss = 0;
  for (uint32_t j = 0; j < dim; j++) ss += (double)row[j] * row[j];
  if (ss > 0) {
    float inv = (float)(1.0 / sqrt(ss));
    for (uint32_t j = 0; j < dim; j++) row[j] *= inv;
  }
  return 0;
}

static int hash_embed(const embedder *m, const char *const *texts,
                      const size_t *lens, size_t n, float *out,
                      ctxd_error *e) {
  const hash_ctx *c = m->ctx;
  int rc = 0;
  work w = {0};
  /* Size the table for the longest text: about one feature per 3 bytes of
   * prose (a term and a bigram per ~6-byte word), capped so a huge text
   * starts small and grows only if it really has that many features. */
  size_t longest = 0;
  for (size_t i = 0; i < n; i++)
    if (lens[i] > longest) longest = lens[i];
  size_t want = longest / 3 * 2, ns = 256;
  while (ns < want && ns < ((size_t)1 << 16)) ns *= 2;
  w.nslots = ns;
  w.capf = ns / 2;
  w.slots = calloc(ns, sizeof *w.slots);
  w.f = malloc(w.capf * sizeof *w.f);
  if (!w.slots || !w.f) goto nomem;
  if (c->o.idf) {
    w.capterms = 4096;
    if (!(w.terms = malloc(w.capterms))) goto nomem;
  }
  for (size_t i = 0; i < n; i++)
    if (embed_one(c, &w, lens[i] ? texts[i] : "", lens[i],
                  out + i * (size_t)c->o.dim))
      goto nomem;
  goto done;
nomem:
  rc = ctxd_seterr(e, CTXD_ENOMEM, "hash embedder: out of memory");
done:
  free(w.slots);
  free(w.f);
  free(w.terms);
  free(w.idf);
  return rc;
}

static void hash_free(embedder *m) {
  free(m->ctx);
  free(m);
}

void embed_hash_defaults(embed_hash_opts *o) {
  *o = (embed_hash_opts){
      .dim = EMBED_HASH_DIM,
      .bigrams = EMBED_HASH_BIGRAMS,
      .bigram_weight = EMBED_HASH_BIGRAM_WEIGHT,
      .sublinear_tf = EMBED_HASH_SUBLINEAR_TF,
      .idf_mode = EMBED_HASH_IDF,
      .seed = 0,
  };
}

static int check_opts(const embed_hash_opts *o, ctxd_error *e) {
  if (o->dim < EMBED_HASH_DIM_MIN || o->dim > EMBED_HASH_DIM_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "hash embedder: dim %" PRIu32 " is out of range %d..%d",
                       o->dim, EMBED_HASH_DIM_MIN, EMBED_HASH_DIM_MAX);
  if ((unsigned)o->idf_mode > EMBED_HASH_IDF_ALL)
    return ctxd_seterr(e, CTXD_EINVAL, "hash embedder: idf mode %d is not none, query or all",
                       (int)o->idf_mode);
  if (!(o->bigram_weight >= 0 && o->bigram_weight <= BIGRAM_WEIGHT_MAX))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "hash embedder: bigram_weight %g is out of range 0..%g",
                       (double)o->bigram_weight, BIGRAM_WEIGHT_MAX);
  return 0;
}

int embed_hash_create(const embed_hash_opts *o, embedder **out,
                      ctxd_error *e) {
  *out = NULL;
  int rc = check_opts(o, e);
  if (rc) return rc;
  embedder *m = calloc(1, sizeof *m);
  hash_ctx *c = calloc(1, sizeof *c);
  if (!m || !c) {
    free(m);
    free(c);
    return ctxd_seterr(e, CTXD_ENOMEM, "hash embedder: out of memory");
  }
  c->o = *o;
  c->o.bigrams = o->bigrams != 0;
  c->o.sublinear_tf = o->sublinear_tf != 0;
  c->basis = seeded_basis(o->seed);
  c->mod_m = ~(__uint128_t)0 / o->dim + 1;
  for (int i = 1; i < 16; i++) c->tf_log[i] = 1.0 + log((double)i);
  m->name = "hash";
  m->dim = o->dim;
  m->embed = hash_embed;
  m->free = hash_free;
  m->ctx = c;
  *out = m;
  return 0;
}

/* The shortest decimal that reads back as the same float. */
static void format_float(float v, char *buf, size_t cap) {
  for (int prec = 1; prec <= 9; prec++) {
    snprintf(buf, cap, "%.*g", prec, (double)v);
    if (strtof(buf, NULL) == v) return;
  }
}

static const char *const idf_names[] = {"none", "query", "all"};

void embed_hash_format(const embed_hash_opts *o, char *buf, size_t cap) {
  char bw[32];
  format_float(o->bigram_weight, bw, sizeof bw);
  snprintf(buf, cap,
           "hash:dim=%" PRIu32 ",bigrams=%d,bigram_weight=%s,sublinear_tf=%d,"
           "idf=%s,seed=%" PRIu64,
           o->dim, o->bigrams != 0, bw, o->sublinear_tf != 0,
           (unsigned)o->idf_mode <= EMBED_HASH_IDF_ALL ? idf_names[o->idf_mode] : "?",
           o->seed);
}

/* Unsigned decimal in v[0..n) (digits only, no sign or spaces). */
static int parse_u64(const char *v, size_t n, uint64_t max, uint64_t *out) {
  uint64_t x = 0;
  if (n == 0) return -1;
  for (size_t i = 0; i < n; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    unsigned d = (unsigned)(v[i] - '0');
    if (x > (UINT64_MAX - d) / 10) return -1;
    x = x * 10 + d;
  }
  if (x > max) return -1;
  *out = x;
  return 0;
}

static int parse_float(const char *v, size_t n, float *out) {
  char buf[64], *end;
  if (n == 0 || n >= sizeof buf) return -1;
  memcpy(buf, v, n);
  buf[n] = 0;
  /* strtof takes leading spaces, hex and "inf"; allow plain decimals only. */
  for (size_t i = 0; i < n; i++)
    if (!strchr("0123456789.eE+-", buf[i])) return -1;
  errno = 0;
  float x = strtof(buf, &end);
  if (*end || errno || !isfinite(x)) return -1;
  *out = x;
  return 0;
}

int embed_hash_parse(const char *s, embed_hash_opts *o, ctxd_error *e) {
  embed_hash_opts r;
  embed_hash_defaults(&r);
  static const char *const keys[] = {"dim",          "bigrams", "bigram_weight",
                                     "sublinear_tf", "idf",     "seed"};
  embed_opts_iter it;
  int k;
  const char *v;
  size_t vl;
  if (strncmp(s, "hash", 4) != 0 || (s[4] && s[4] != ':'))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "embedder \"%.64s\" is not \"hash\" or \"hash:key=value,...\"",
                       s);
  embed_opts_begin(&it, "hash", s, keys, (int)(sizeof keys / sizeof keys[0]),
                   "dim, bigrams, bigram_weight, sublinear_tf, idf, seed");
  int more;
  while ((more = embed_opts_next(&it, &k, &v, &vl, e)) == 1) {
    uint64_t u = 0;
    int bad = 0;
    switch (k) {
    case 0:
      bad = parse_u64(v, vl, UINT32_MAX, &u);
      r.dim = (uint32_t)u;
      break;
    case 1:
    case 3:
      bad = parse_u64(v, vl, 1, &u);
      *(k == 1 ? &r.bigrams : &r.sublinear_tf) = (int)u;
      break;
    case 2:
      bad = parse_float(v, vl, &r.bigram_weight);
      break;
    case 4:
      bad = 1;
      for (int i = 0; i <= EMBED_HASH_IDF_ALL; i++)
        if (strlen(idf_names[i]) == vl && memcmp(idf_names[i], v, vl) == 0) {
          r.idf_mode = (embed_hash_idf)i;
          bad = 0;
        }
      break;
    case 5:
      bad = parse_u64(v, vl, UINT64_MAX, &r.seed);
      break;
    }
    if (bad)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "hash embedder: bad value \"%.*s\" for %s (%s)",
                         (int)(vl > 64 ? 64 : vl), v, keys[k],
                         k == 2   ? "a decimal number"
                         : k == 0 ? "an unsigned integer"
                         : k == 4 ? "none, query or all"
                         : k == 5 ? "an unsigned 64-bit integer"
                                  : "0 or 1");
  }
  if (more < 0) return more;
  int rc = check_opts(&r, e);
  if (rc) return rc;
  *o = r;
  return 0;
}
