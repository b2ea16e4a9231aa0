/* lm.c - the language-model runtime over llama.cpp (see lm.h).
 *
 * llama.cpp does the tokenizing and the decoding; this file keeps a mirror
 * of each sequence's tokens, turns logits into log-probabilities and
 * entropies, and captures attention through llama.cpp's cb_eval hook. */
#include "model/lm.h"

#include "model/lmtok.h"
#include "model/lmvec.h"
#include "utf8.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <ggml-backend.h>
#include <ggml.h>
#include <gguf.h>
#include <llama.h>

/* ------------------------------------------------------------- logging */

/* llama.cpp logs through one process-wide callback. Its last warning or
 * error on this thread becomes the reason in our error messages; the rest is
 * dropped unless CTXD_LM_LOG is set (then everything goes to stderr). */
static _Thread_local char last_log[256];
static int log_all;

static void log_cb(enum ggml_log_level level, const char *text, void *ud) {
  (void)ud;
  if (log_all) fputs(text, stderr);
  if (level != GGML_LOG_LEVEL_ERROR && level != GGML_LOG_LEVEL_WARN) return;
  size_t n = strlen(text);
  while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == ' ')) n--;
  if (n == 0) return;
  if (n >= sizeof last_log) n = sizeof last_log - 1;
  memcpy(last_log, text, n);
  last_log[n] = 0;
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_llama(void) {
  const char *v = getenv("CTXD_LM_LOG");
  log_all = v && *v && strcmp(v, "0") != 0;
  llama_log_set(log_cb, NULL);
  llama_backend_init();
}

static const char *llama_reason(void) {
  return last_log[0] ? last_log : "no reason given";
}

static int n_cpus(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return 1;
}

static uint64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* --------------------------------------------------------------- model */

struct lm_model {
  atomic_int refs;
  struct llama_model *lm;
  const struct llama_vocab *vocab;
  lm_info info;
  uint32_t n_vocab;
  /* Every token's text (specials rendered), for byte offsets. */
  char *piece;
  uint32_t *piece_off; /* n_vocab + 1 */
  uint8_t *control;    /* 1: a control token (BOS, EOS, ...) */
  float attn_scale;    /* <arch>.attention.scale, 0 if absent */
  int pooling;         /* <arch>.pooling_type, -1 if absent */
  int space_prefix;    /* the vocabulary adds a space before the text (SPM) */
  lmtok *fast;         /* the piece cache, NULL for other vocabularies */
  tok tk;
};

void lm_model_defaults(lm_model_opts *o) {
  memset(o, 0, sizeof *o);
  o->use_mmap = 1;
}

static int meta_str(const struct llama_model *lm, const char *key, char *buf, size_t cap) {
  int32_t r = llama_model_meta_val_str(lm, key, buf, cap);
  if (r < 0) {
    buf[0] = 0;
    return -1;
  }
  return 0;
}

static uint32_t fnv1a(uint32_t h, const void *p, size_t n) {
  const unsigned char *s = p;
  for (size_t i = 0; i < n; i++) {
    h ^= s[i];
    h *= 16777619u;
  }
  return h;
}

/* The tok name: pre-tokenizer, size, and a hash of what decides how text
 * tokenizes (token texts and types, merges). */
static void make_tok_name(lm_model *m, const char *path) {
  char pre[48];
  if (meta_str(m->lm, "tokenizer.ggml.pre", pre, sizeof pre) < 0 || !pre[0])
    meta_str(m->lm, "tokenizer.ggml.model", pre, sizeof pre);
  if (!pre[0]) snprintf(pre, sizeof pre, "unknown");
  uint32_t h = 2166136261u;
  for (uint32_t i = 0; i < m->n_vocab; i++) {
    const char *t = llama_vocab_get_text(m->vocab, (llama_token)i);
    h = fnv1a(h, t, strlen(t) + 1);
    int32_t a = llama_vocab_get_attr(m->vocab, (llama_token)i);
    h = fnv1a(h, &a, sizeof a);
  }
  struct gguf_init_params gp = {.no_alloc = true, .ctx = NULL};
  struct gguf_context *g = gguf_init_from_file(path, gp);
  if (g) {
    int64_t k = gguf_find_key(g, "tokenizer.ggml.merges");
    if (k >= 0 && gguf_get_arr_type(g, k) == GGUF_TYPE_STRING) {
      size_t n = gguf_get_arr_n(g, k);
      for (size_t i = 0; i < n; i++) {
        const char *s = gguf_get_arr_str(g, k, i);
        h = fnv1a(h, s, strlen(s) + 1);
      }
    }
    gguf_free(g);
  }
  snprintf(m->info.tokenizer, sizeof m->info.tokenizer, "gguf:%s/%u/%08x", pre,
           m->n_vocab, h);
}

static uint64_t tok_count_cb(const tok *t, const char *s, size_t n);

static void model_destroy(lm_model *m) {
  if (!m) return;
  lmtok_free(m->fast);
  if (m->lm) llama_model_free(m->lm);
  free(m->piece);
  free(m->piece_off);
  free(m->control);
  free(m);
}

int lm_model_load(const char *path, const lm_model_opts *o, lm_model **out,
                  ctxd_error *e) {
  lm_model_opts def;
  lm_model *m = NULL;
  int rc;
  *out = NULL;
  if (!o) {
    lm_model_defaults(&def);
    o = &def;
  }
  if (!path || !*path) return ctxd_seterr(e, CTXD_EINVAL, "lm_model_load: no path given");
  struct stat st;
  if (stat(path, &st) != 0) {
    return ctxd_seterr(e, errno == ENOENT ? CTXD_ENOTFOUND : CTXD_EIO,
                       "lm_model_load: %s: %s", path, strerror(errno));
  }
  if (!S_ISREG(st.st_mode))
    return ctxd_seterr(e, CTXD_EINVAL, "lm_model_load: %s is not a regular file", path);
  pthread_once(&init_once, init_llama);

  m = calloc(1, sizeof *m);
  if (!m) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "lm_model_load: out of memory");
    goto fail;
  }
  atomic_init(&m->refs, 1);
  struct llama_model_params mp = llama_model_default_params();
  mp.vocab_only = o->vocab_only != 0;
  if (!o->use_mmap) mp.load_mode = LLAMA_LOAD_MODE_NONE;
  mp.n_gpu_layers = o->n_gpu_layers;
  last_log[0] = 0;
  m->lm = llama_model_load_from_file(path, mp);
  if (!m->lm) {
    rc = ctxd_seterr(e, CTXD_EIO, "lm_model_load: llama.cpp cannot load %s: %s", path,
                     llama_reason());
    goto fail;
  }
  m->vocab = llama_model_get_vocab(m->lm);
  int32_t nv = llama_vocab_n_tokens(m->vocab);
  if (nv <= 0) {
    rc = ctxd_seterr(e, CTXD_EIO, "lm_model_load: %s has no vocabulary", path);
    goto fail;
  }
  m->n_vocab = (uint32_t)nv;

  /* Token texts, specials included, for the byte offsets of lm_tokenize. */
  m->piece_off = malloc(((size_t)m->n_vocab + 1) * sizeof *m->piece_off);
  m->control = calloc(m->n_vocab, 1);
  size_t cap = (size_t)m->n_vocab * 8 + 64, used = 0;
  m->piece = malloc(cap);
  if (!m->piece_off || !m->control || !m->piece) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "lm_model_load: out of memory for the vocabulary");
    goto fail;
  }
  for (uint32_t i = 0; i < m->n_vocab; i++) {
    for (;;) {
      int32_t r = llama_token_to_piece(m->vocab, (llama_token)i, m->piece + used,
                                       (int32_t)(cap - used), 0, true);
      if (r >= 0) {
        m->piece_off[i] = (uint32_t)used;
        used += (size_t)r;
        break;
      }
      size_t ncap = cap * 2 + (size_t)-r;
      char *np = realloc(m->piece, ncap);
      if (!np || ncap > UINT32_MAX) {
        rc = ctxd_seterr(e, CTXD_ENOMEM, "lm_model_load: out of memory for the vocabulary");
        goto fail;
      }
      m->piece = np;
      cap = ncap;
    }
    enum llama_token_attr a = llama_vocab_get_attr(m->vocab, (llama_token)i);
    m->control[i] = (a & LLAMA_TOKEN_ATTR_CONTROL) != 0;
  }
  m->piece_off[m->n_vocab] = (uint32_t)used;

  lm_info *in = &m->info;
  if (meta_str(m->lm, "general.name", in->name, sizeof in->name) < 0 || !in->name[0]) {
    const char *b = strrchr(path, '/');
    snprintf(in->name, sizeof in->name, "%s", b ? b + 1 : path);
  }
  meta_str(m->lm, "general.architecture", in->arch, sizeof in->arch);
  snprintf(in->path, sizeof in->path, "%s", path);
  in->vocab_only = o->vocab_only != 0;
  in->n_vocab = m->n_vocab;
  if (!in->vocab_only) {
    in->n_ctx_train = (uint32_t)llama_model_n_ctx_train(m->lm);
    in->n_layer = (uint32_t)llama_model_n_layer(m->lm);
    in->n_head = (uint32_t)llama_model_n_head(m->lm);
    in->n_head_kv = (uint32_t)llama_model_n_head_kv(m->lm);
    in->n_embd = (uint32_t)llama_model_n_embd(m->lm);
    in->n_params = llama_model_n_params(m->lm);
    in->size_bytes = llama_model_size(m->lm);
  }
  char key[96], val[64];
  snprintf(key, sizeof key, "%s.attention.scale", in->arch);
  if (meta_str(m->lm, key, val, sizeof val) == 0) m->attn_scale = strtof(val, NULL);
  snprintf(key, sizeof key, "%s.pooling_type", in->arch);
  m->pooling = meta_str(m->lm, key, val, sizeof val) == 0 ? atoi(val) : -1;
  if (meta_str(m->lm, "tokenizer.ggml.add_space_prefix", val, sizeof val) == 0)
    m->space_prefix = strcmp(val, "true") == 0 || strcmp(val, "1") == 0;
  else
    m->space_prefix = llama_vocab_type(m->vocab) == LLAMA_VOCAB_TYPE_SPM;
  make_tok_name(m, path);
  char pre[48];
  if (meta_str(m->lm, "tokenizer.ggml.pre", pre, sizeof pre) == 0) m->fast = lmtok_create(m->vocab, pre, m->piece_off);
  m->tk.name = in->tokenizer;
  m->tk.count = tok_count_cb;
  m->tk.ctx = m;
  *out = m;
  return 0;
fail:
  model_destroy(m);
  return rc;
}

/* Contexts and embedders need the weights. */
static int need_weights(const lm_model *m, const char *who, ctxd_error *e) {
  if (!m->info.vocab_only) return 0;
  return ctxd_seterr(e, CTXD_EPRECOND, "%s: %s was loaded without weights", who, m->info.name);
}

lm_model *lm_model_ref(lm_model *m) {
  if (m) atomic_fetch_add(&m->refs, 1);
  return m;
}

void lm_model_free(lm_model *m) {
  if (m && atomic_fetch_sub(&m->refs, 1) == 1) model_destroy(m);
}

void lm_model_info(const lm_model *m, lm_info *out) { *out = m->info; }

const tok *lm_model_tok(const lm_model *m) { return &m->tk; }

/* -------------------------------------------------------- tokenization */

void lm_tokens_free(lm_tokens *t) {
  if (!t) return;
  free(t->id);
  free(t->start);
  free(t->end);
  memset(t, 0, sizeof *t);
}

static int tokens_reserve(lm_tokens *t, size_t n, int offsets) {
  int need_off = offsets && (!t->start || !t->end);
  if (n <= t->cap && !need_off) return 0;
  size_t cap = n > t->cap ? n : t->cap;
  int32_t *id = realloc(t->id, cap * sizeof *id);
  if (!id) return -1;
  t->id = id;
  /* start/end always keep the capacity of id once they exist. */
  if (offsets || t->start || t->end) {
    uint32_t *s = realloc(t->start, cap * sizeof *s);
    if (!s) return -1;
    t->start = s;
    uint32_t *en = realloc(t->end, cap * sizeof *en);
    if (!en) return -1;
    t->end = en;
  }
  t->cap = cap;
  return 0;
}

/* Place each token's text on the input. A token that is not there is an
 * added special (empty range) or an SPM vocabulary's added leading space
 * ("\xe2\x96\x81Hello" for "Hello"), which llama.cpp adds at the start of
 * the text and after each special token. */
static int place_tokens(const lm_model *m, const char *s, size_t len, lm_tokens *t,
                        ctxd_error *e) {
  size_t cur = 0;
  int may_space = m->space_prefix;
  for (size_t i = 0; i < t->n; i++) {
    int32_t id = t->id[i];
    const char *p = m->piece + m->piece_off[id];
    size_t pl = m->piece_off[id + 1] - m->piece_off[id];
    if (pl <= len - cur && memcmp(s + cur, p, pl) == 0) {
      t->start[i] = (uint32_t)cur;
      cur += pl;
      t->end[i] = (uint32_t)cur;
      /* The added space is not always in the first token (" " then " Hello"
       * for " Hello"): it stays possible until used, and comes back after
       * a special token. */
      if (m->control[id] && m->space_prefix) may_space = 1;
    } else if (may_space && pl > 0 && p[0] == ' ' && pl - 1 <= len - cur &&
               memcmp(s + cur, p + 1, pl - 1) == 0) {
      may_space = 0;
      t->start[i] = (uint32_t)cur;
      cur += pl - 1;
      t->end[i] = (uint32_t)cur;
    } else if (m->control[id] || pl == 0) {
      t->start[i] = t->end[i] = (uint32_t)cur;
      if (m->space_prefix) may_space = 1;
    } else {
      size_t bad;
      if (!utf8_valid(s, len, &bad))
        return ctxd_seterr(e, CTXD_EINVAL, "lm_tokenize: invalid UTF-8 at byte %zu", bad);
      return ctxd_seterr(e, CTXD_EUNIMPL,
                         "lm_tokenize: token %zu (id %d) does not match the input at byte %zu: "
                         "vocabulary %s rewrites text, so byte offsets are unavailable",
                         i, id, cur, m->info.tokenizer);
    }
  }
  return 0;
}

/* After lmtok grew the id array to `cap`, bring start/end along. */
static int tokens_follow(lm_tokens *t, size_t cap, int offsets) {
  if (cap == t->cap && (!offsets || (t->start && t->end))) return 0;
  t->cap = 0;
  return tokens_reserve(t, cap, offsets);
}

int lm_tokenize(const lm_model *m, const char *s, size_t len, unsigned flags,
                lm_tokens *t, ctxd_error *e) {
  int offsets = !(flags & LM_TOK_NO_OFFSETS);
  t->n = 0;
  if (len > LM_TEXT_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "lm_tokenize: %zu bytes is over the limit of %zu", len,
                       (size_t)LM_TEXT_MAX);
  if (!s && len > 0) return ctxd_seterr(e, CTXD_EINVAL, "lm_tokenize: no text");
  if (!s) s = "";
  if (m->fast && !(flags & (LM_TOK_ADD_SPECIAL | LM_TOK_PARSE_SPECIAL | LM_TOK_NO_CACHE))) {
    size_t cap = t->cap, n = 0;
    int r = lmtok_tokenize(m->fast, s, len, &t->id, &n, &cap);
    if (tokens_follow(t, cap, offsets) != 0 || r != 0)
      return ctxd_seterr(e, CTXD_ENOMEM, "lm_tokenize: out of memory for %zu tokens", n);
    t->n = n;
  } else {
    /* English runs 3-5 bytes a token: guess len/2, and retry with the exact
     * count llama.cpp reports when the guess was short. */
    size_t want = len / 2 + 16;
    for (int attempt = 0; attempt < 2; attempt++) {
      if (tokens_reserve(t, want, offsets) != 0)
        return ctxd_seterr(e, CTXD_ENOMEM, "lm_tokenize: out of memory for %zu tokens", want);
      int32_t r = llama_tokenize(m->vocab, s, (int32_t)len, t->id, (int32_t)t->cap,
                                 (flags & LM_TOK_ADD_SPECIAL) != 0,
                                 (flags & LM_TOK_PARSE_SPECIAL) != 0);
      if (r >= 0) {
        t->n = (size_t)r;
        break;
      }
      if (r == INT32_MIN || attempt == 1)
        return ctxd_seterr(e, CTXD_EINTERNAL, "lm_tokenize: llama_tokenize failed (%d)", r);
      want = (size_t)-(int64_t)r;
    }
  }
  if (!offsets) return 0;
  int rc = place_tokens(m, s, len, t, e);
  if (rc) t->n = 0;
  return rc;
}

int lm_detokenize(const lm_model *m, const int32_t *ids, size_t n, char **out,
                  size_t *len, ctxd_error *e) {
  *out = NULL;
  *len = 0;
  if (n > LM_TEXT_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "lm_detokenize: %zu tokens is over the limit", n);
  size_t need = 1;
  for (size_t i = 0; i < n; i++) {
    if (ids[i] < 0 || (uint32_t)ids[i] >= m->n_vocab)
      return ctxd_seterr(e, CTXD_EINVAL, "lm_detokenize: token %zu has id %d, outside [0, %u)",
                         i, ids[i], m->n_vocab);
    need += m->piece_off[ids[i] + 1] - m->piece_off[ids[i]];
    if (need > LM_TEXT_MAX)
      return ctxd_seterr(e, CTXD_EINVAL, "lm_detokenize: the text is over %zu bytes",
                         (size_t)LM_TEXT_MAX);
  }
  /* The token texts end to end (llama_detokenize would also "clean up"
   * spaces before punctuation, which is not the inverse of tokenizing). */
  char *buf = malloc(need), *w = buf;
  if (!buf) return ctxd_seterr(e, CTXD_ENOMEM, "lm_detokenize: out of memory");
  for (size_t i = 0; i < n; i++) {
    const char *p = m->piece + m->piece_off[ids[i]];
    size_t pl = m->piece_off[ids[i] + 1] - m->piece_off[ids[i]];
    if (i == 0 && m->space_prefix && pl > 0 && p[0] == ' ') {
      p++;
      pl--;
    }
    memcpy(w, p, pl);
    w += pl;
  }
  *w = 0;
  *out = buf;
  *len = (size_t)(w - buf);
  return 0;
}

static uint64_t count_piece(const lm_model *m, const char *s, size_t n) {
  if (n == 0) return 0;
  if (m->fast) return lmtok_count(m->fast, s, n);
  int32_t r = llama_tokenize(m->vocab, s, (int32_t)n, NULL, 0, false, false);
  return r < 0 ? (uint64_t)(-(int64_t)r) : (uint64_t)r;
}

static uint64_t tok_count_cb(const tok *t, const char *s, size_t n) {
  const lm_model *m = t->ctx;
  uint64_t total = 0;
  while (n > LM_TEXT_MAX) {
    /* Cut before the last newline of the first LM_TEXT_MAX bytes (see lm.h). */
    size_t cut = LM_TEXT_MAX;
    const char *nl = memrchr(s + 1, '\n', LM_TEXT_MAX - 1);
    if (nl) cut = (size_t)(nl - s);
    total += count_piece(m, s, cut);
    s += cut;
    n -= cut;
  }
  return total + count_piece(m, s, n);
}

/* ------------------------------------------------------------- context */

typedef struct lm_seq {
  int32_t *ids; /* n_ctx */
  uint32_t len;
  float *k;     /* QK path: post-RoPE keys of the attention layer, [n_ctx][kv_dim] */
  uint32_t k_len;
} lm_seq;

/* One output row's log-softmax: lm_eval spreads these over threads, since
 * over a large vocabulary (150k) they cost about what a GPU's decode of the
 * same rows does. */
struct lp_job {
  const float *lg;
  int32_t target;
  float *lp, *en;
};

typedef struct lp_part {
  const struct lp_job *jobs;
  size_t n;
  uint32_t n_vocab;
} lp_part;

static void *lp_run(void *arg) {
  const lp_part *p = arg;
  for (size_t i = 0; i < p->n; i++) {
    const struct lp_job *j = &p->jobs[i];
    float lp, en;
    lm_logprobs(j->lg, p->n_vocab, &j->target, 1, &lp, j->en ? &en : NULL);
    if (j->lp) *j->lp = lp;
    if (j->en) *j->en = en;
  }
  return NULL;
}

/* Run jobs[0..n) on up to `threads` threads (this one included); rows of a
 * small vocabulary or few rows stay on this thread. */
static void lp_run_all(const struct lp_job *jobs, size_t n, uint32_t n_vocab, int threads) {
  enum { MAX_T = 64 };
  size_t work = n * (size_t)n_vocab;
  int t = threads < 1 ? 1 : threads > MAX_T ? MAX_T : threads;
  /* at least about 2M logits a thread: below that a thread costs more than it saves */
  while (t > 1 && work / (size_t)t < ((size_t)1 << 21)) t--;
  if ((size_t)t > n) t = (int)n;
  if (t <= 1) {
    lp_part all = {jobs, n, n_vocab};
    lp_run(&all);
    return;
  }
  lp_part parts[MAX_T];
  pthread_t tid[MAX_T];
  int started[MAX_T] = {0};
  size_t per = n / (size_t)t, extra = n % (size_t)t, at = 0;
  for (int i = 0; i < t; i++) {
    size_t m = per + ((size_t)i < extra ? 1 : 0);
    parts[i] = (lp_part){jobs + at, m, n_vocab};
    at += m;
  }
  for (int i = 1; i < t; i++)
    started[i] = pthread_create(&tid[i], NULL, lp_run, &parts[i]) == 0;
  lp_run(&parts[0]);
  for (int i = 1; i < t; i++) {
    if (started[i])
      pthread_join(tid[i], NULL);
    else
      lp_run(&parts[i]); /* no thread: do its share here */
  }
}

struct lm_ctx {
  lm_model *m;
  struct llama_context *lc;
  struct llama_batch batch;
  uint32_t n_ctx, n_seq, n_batch, n_vocab;
  int embeddings;
  lm_seq *seq;
  struct { uint32_t req, row; } *omap; /* output row of each batch slot */
  struct lp_job *lpj;  /* per batch slot: the log-softmax work of one call */
  int threads;         /* llama.cpp's thread count; also splits that work */

  /* attention */
  int attn, attn_path;
  uint32_t layer, n_head, n_head_kv, head_dim, kv_dim;
  float kq_scale;
  char name_soft[GGML_MAX_NAME], name_q[GGML_MAX_NAME], name_k[GGML_MAX_NAME];
  /* capture state of the running llama_decode call */
  int cb_capture;      /* capture rows in this call */
  uint32_t cb_seq;     /* the call's only sequence (attention contexts) */
  uint32_t cb_pos0;    /* position of the call's first token */
  uint32_t cb_app0;    /* appended index (within lm_eval_attn) of that token */
  uint32_t cb_from;    /* first appended index whose rows are captured */
  uint32_t cb_k_done, cb_q_done, cb_s_done;
  int cb_err;
  char cb_msg[320];
  float *q_rows;       /* QK capture: [rows][n_head][head_dim] */
  size_t q_cap;
  float *attn_out;
  size_t attn_cap;
  uint32_t a_rows, a_heads, a_cols;
  unsigned a_flags;
  float *row_tmp;      /* one row of n_kv floats, for the softmax path */
  size_t row_tmp_cap;

  int (*abort_fn)(void *);
  void *abort_arg;
  lm_stats st;
};

void lm_ctx_defaults(lm_ctx_opts *o) {
  memset(o, 0, sizeof *o);
  o->n_seq = 1;
  o->attn_layer = -1;
}

static bool abort_cb(void *d) {
  lm_ctx *c = d;
  return c->abort_fn && c->abort_fn(c->abort_arg);
}

static bool eval_cb(struct ggml_tensor *t, bool ask, void *ud);

const lm_model *lm_ctx_model(const lm_ctx *c) { return c->m; }
uint32_t lm_ctx_n_ctx(const lm_ctx *c) { return c->n_ctx; }
uint32_t lm_ctx_n_seq(const lm_ctx *c) { return c->n_seq; }
int lm_ctx_attn_path(const lm_ctx *c) { return c->attn ? c->attn_path : 0; }

void lm_ctx_set_abort(lm_ctx *c, int (*fn)(void *arg), void *arg) {
  c->abort_fn = fn;
  c->abort_arg = arg;
}

void lm_ctx_stats(const lm_ctx *c, lm_stats *out) { *out = c->st; }
void lm_ctx_stats_reset(lm_ctx *c) { memset(&c->st, 0, sizeof c->st); }

static int pooling_of(const lm_model *m, int pooling) {
  switch (pooling) {
  case LM_POOL_MEAN: return LLAMA_POOLING_TYPE_MEAN;
  case LM_POOL_CLS: return LLAMA_POOLING_TYPE_CLS;
  case LM_POOL_LAST: return LLAMA_POOLING_TYPE_LAST;
  default:
    if (m->pooling == LLAMA_POOLING_TYPE_MEAN || m->pooling == LLAMA_POOLING_TYPE_CLS ||
        m->pooling == LLAMA_POOLING_TYPE_LAST)
      return m->pooling;
    return LLAMA_POOLING_TYPE_MEAN;
  }
}

void lm_ctx_free(lm_ctx *c) {
  if (!c) return;
  if (c->lc) llama_free(c->lc);
  if (c->batch.token) llama_batch_free(c->batch);
  if (c->seq) {
    for (uint32_t i = 0; i < c->n_seq; i++) {
      free(c->seq[i].ids);
      free(c->seq[i].k);
    }
    free(c->seq);
  }
  free(c->omap);
  free(c->lpj);
  free(c->q_rows);
  free(c->attn_out);
  free(c->row_tmp);
  lm_model_free(c->m);
  free(c);
}

int lm_ctx_create(lm_model *m, const lm_ctx_opts *o, lm_ctx **out, ctxd_error *e) {
  lm_ctx_opts def;
  lm_ctx *c = NULL;
  int rc;
  *out = NULL;
  if (!o) {
    lm_ctx_defaults(&def);
    o = &def;
  }
  rc = need_weights(m, "lm_ctx_create", e);
  if (rc) return rc;
  uint32_t n_seq = o->n_seq ? o->n_seq : 1;
  if (n_seq > LM_SEQ_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "lm_ctx_create: n_seq %u is over %d", n_seq, LM_SEQ_MAX);
  uint32_t n_ctx = o->n_ctx;
  if (n_ctx == 0) {
    n_ctx = m->info.n_ctx_train ? m->info.n_ctx_train : LM_CTX_DEFAULT;
    if (n_ctx > LM_CTX_DEFAULT) n_ctx = LM_CTX_DEFAULT;
  }
  if (n_ctx > LM_CTX_MAX || (uint64_t)n_ctx * n_seq > LM_CTX_MAX * 4ull)
    return ctxd_seterr(e, CTXD_EINVAL, "lm_ctx_create: n_ctx %u x n_seq %u is over the limit", n_ctx,
                       n_seq);
  uint32_t n_batch = o->n_batch ? o->n_batch : (n_ctx < 512 ? n_ctx : 512);
  if (n_batch > LM_BATCH_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "lm_ctx_create: n_batch %u is over %d", n_batch,
                       LM_BATCH_MAX);
  uint32_t n_ubatch = o->n_ubatch ? o->n_ubatch : n_batch;
  if (n_ubatch > n_batch)
    return ctxd_seterr(e, CTXD_EINVAL, "lm_ctx_create: n_ubatch %u is over n_batch %u", n_ubatch,
                       n_batch);
  if (o->n_threads < 0 || o->n_threads > 1024)
    return ctxd_seterr(e, CTXD_EINVAL, "lm_ctx_create: n_threads %d out of range", o->n_threads);
  int path = o->attn_path;
  if (path < LM_ATTN_AUTO || path > LM_ATTN_QK)
    return ctxd_seterr(e, CTXD_EINVAL, "lm_ctx_create: attn_path %d is not a path", path);
  if (path == LM_ATTN_AUTO) path = o->flash_attn ? LM_ATTN_QK : LM_ATTN_SOFTMAX;
  if (o->attn && path == LM_ATTN_SOFTMAX && o->flash_attn)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "lm_ctx_create: the softmax attention path needs flash attention off");
  int layer = o->attn_layer;
  if (o->attn) {
    if (layer < 0) layer += (int)m->info.n_layer;
    if (layer < 0 || layer >= (int)m->info.n_layer)
      return ctxd_seterr(e, CTXD_EINVAL, "lm_ctx_create: attn_layer %d outside the model's %u layers",
                         o->attn_layer, m->info.n_layer);
    if (path == LM_ATTN_QK && llama_model_n_swa(m->lm) > 0)
      return ctxd_seterr(e, CTXD_EUNIMPL,
                         "lm_ctx_create: %s uses sliding-window attention; use flash attention off "
                         "(the softmax path) to capture its attention", m->info.name);
  }
  if (o->embeddings && o->attn)
    return ctxd_seterr(e, CTXD_EINVAL, "lm_ctx_create: an embedding context cannot capture attention");

  c = calloc(1, sizeof *c);
  if (!c) return ctxd_seterr(e, CTXD_ENOMEM, "lm_ctx_create: out of memory");
  c->m = lm_model_ref(m);
  c->n_vocab = m->n_vocab;
  c->embeddings = o->embeddings != 0;
  c->attn = o->attn != 0;
  c->attn_path = path;
  c->layer = (uint32_t)layer;
  c->n_head = m->info.n_head;
  c->n_head_kv = m->info.n_head_kv;
  snprintf(c->name_soft, sizeof c->name_soft, "kq_soft_max-%d", layer);
  snprintf(c->name_q, sizeof c->name_q, "Qcur-%d", layer);
  snprintf(c->name_k, sizeof c->name_k, "Kcur-%d", layer);

  struct llama_context_params cp = llama_context_default_params();
  int threads = o->n_threads ? o->n_threads : n_cpus();
#if defined(__SANITIZE_THREAD__)
  /* ggml's worker threads hand tensors to each other through atomics in
   * code that is never built with the sanitizer (llama.cpp is a dependency),
   * so ThreadSanitizer sees only their memcpy calls and reports races that
   * are not there. Its builds run every context on one thread. */
  threads = 1;
#endif
  cp.n_threads = threads;
  cp.n_threads_batch = threads;
  cp.n_seq_max = n_seq;
  cp.flash_attn_type = o->flash_attn ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
  if (o->kv_f32) {
    cp.type_k = GGML_TYPE_F32;
    cp.type_v = GGML_TYPE_F32;
  }
  cp.abort_callback = abort_cb;
  cp.abort_callback_data = c;
  cp.no_perf = true;
  if (c->embeddings) {
    /* A pooled embedding must come from one compute step: one unified
     * cache, and the whole batch in one ubatch. */
    cp.embeddings = true;
    cp.pooling_type = pooling_of(m, o->pooling);
    cp.kv_unified = true;
    if (n_batch < n_ctx) n_batch = n_ctx;
    if (n_batch > LM_BATCH_MAX) n_batch = LM_BATCH_MAX;
    n_ubatch = n_batch;
    cp.n_ctx = n_batch;
  } else {
    /* Each sequence in its own stream: attention never spans the others. */
    cp.kv_unified = false;
    cp.n_ctx = n_ctx * n_seq;
  }
  cp.n_batch = n_batch;
  cp.n_ubatch = n_ubatch;
  if (c->attn) {
    cp.cb_eval = eval_cb;
    cp.cb_eval_user_data = c;
  }
  last_log[0] = 0;
  c->lc = llama_init_from_model(m->lm, cp);
  if (!c->lc) {
    rc = ctxd_seterr(e, CTXD_EIO, "lm_ctx_create: llama.cpp cannot create a context for %s: %s",
                     m->info.name, llama_reason());
    goto fail;
  }
  c->n_seq = n_seq;
  c->n_ctx = c->embeddings ? n_batch : llama_n_ctx_seq(c->lc);
  c->n_batch = llama_n_batch(c->lc);
  c->batch = llama_batch_init((int32_t)c->n_batch, 0, 1);
  c->seq = calloc(n_seq, sizeof *c->seq);
  c->omap = calloc(c->n_batch, sizeof *c->omap);
  c->lpj = calloc(c->n_batch, sizeof *c->lpj);
  c->threads = threads;
  if (!c->batch.token || !c->seq || !c->omap || !c->lpj) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "lm_ctx_create: out of memory");
    goto fail;
  }
  for (uint32_t i = 0; i < n_seq; i++) {
    c->seq[i].ids = malloc((size_t)c->n_ctx * sizeof(int32_t));
    if (!c->seq[i].ids) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "lm_ctx_create: out of memory for %u tokens", c->n_ctx);
      goto fail;
    }
  }
  *out = c;
  return 0;
fail:
  lm_ctx_free(c);
  return rc;
}

uint32_t lm_seq_len(const lm_ctx *c, uint32_t seq) {
  return seq < c->n_seq ? c->seq[seq].len : 0;
}

const int32_t *lm_seq_tokens(const lm_ctx *c, uint32_t seq) {
  return seq < c->n_seq ? c->seq[seq].ids : NULL;
}

uint32_t lm_seq_common_prefix(const lm_ctx *c, uint32_t seq, const int32_t *ids, size_t n) {
  if (seq >= c->n_seq) return 0;
  const lm_seq *s = &c->seq[seq];
  uint32_t i = 0;
  while (i < s->len && i < n && s->ids[i] == ids[i]) i++;
  return i;
}

static int seq_cut(lm_ctx *c, uint32_t seq, uint32_t n) {
  lm_seq *s = &c->seq[seq];
  if (n >= s->len) return 0;
  if (!llama_memory_seq_rm(llama_get_memory(c->lc), (llama_seq_id)seq, (llama_pos)n, -1))
    return -1;
  s->len = n;
  if (s->k_len > n) s->k_len = n;
  return 0;
}

int lm_seq_truncate(lm_ctx *c, uint32_t seq, uint32_t n, ctxd_error *e) {
  if (seq >= c->n_seq)
    return ctxd_seterr(e, CTXD_EINVAL, "lm_seq_truncate: sequence %u of %u", seq, c->n_seq);
  if (seq_cut(c, seq, n) != 0)
    return ctxd_seterr(e, CTXD_EIO, "lm_seq_truncate: llama.cpp could not cut sequence %u at %u",
                       seq, n);
  return 0;
}

void lm_ctx_clear(lm_ctx *c) {
  llama_memory_clear(llama_get_memory(c->lc), false);
  for (uint32_t i = 0; i < c->n_seq; i++) c->seq[i].len = c->seq[i].k_len = 0;
}

/* -------------------------------------------------------- log-softmax */

void lm_logprobs(const float *logits, uint32_t n_vocab, const int32_t *targets,
                 size_t n_targets, float *logprob, float *entropy) {
  /* H = log Z - sum(p d), with d the logits shifted by their max. */
  float mx = lmvec_max(logits, n_vocab);
  double z, zd;
  lmvec_exp_sums(logits, n_vocab, mx, &z, &zd);
  double logz = log(z);
  for (size_t i = 0; i < n_targets; i++) {
    int32_t t = targets[i];
    logprob[i] = t >= 0 && (uint32_t)t < n_vocab ? (float)((double)(logits[t] - mx) - logz) : NAN;
  }
  if (entropy) *entropy = (float)(logz - zd / z);
}

/* ------------------------------------------------- attention capture */

/* Copy a tensor's float32 contents (any backend) for element offset `off`,
 * `n` floats, along dimension 0 (which is contiguous for the tensors read
 * here: checked by the caller). */
static void tensor_row(const struct ggml_tensor *t, size_t byte_off, float *dst, size_t n) {
  ggml_backend_tensor_get(t, dst, byte_off, n * sizeof(float));
}

static void cb_fail(lm_ctx *c, const char *msg, const struct ggml_tensor *t) {
  if (c->cb_err) return;
  c->cb_err = 1;
  snprintf(c->cb_msg, sizeof c->cb_msg, "%.100s (tensor %.64s: %lld x %lld x %lld x %lld, type %s)",
           msg, t->name, (long long)t->ne[0], (long long)t->ne[1], (long long)t->ne[2],
           (long long)t->ne[3], ggml_type_name(t->type));
}

/* kq_soft_max-<layer>: [n_kv, n_tokens, n_head, 1] float32 for this ubatch.
 * Columns are KV cells; a sequence that is only appended to and cut from the
 * end fills its stream's cells 0, 1, 2, ... in position order, so cell j is
 * position j. That is checked: a row may not weigh any cell after its own
 * position. */
static void capture_softmax(lm_ctx *c, const struct ggml_tensor *t) {
  if (t->type != GGML_TYPE_F32 || t->ne[2] != (int64_t)c->n_head || t->ne[3] != 1 ||
      t->nb[0] != sizeof(float)) {
    cb_fail(c, "unexpected attention tensor", t);
    return;
  }
  uint32_t n_kv = (uint32_t)t->ne[0], n_tok = (uint32_t)t->ne[1];
  if (c->row_tmp_cap < n_kv) {
    float *p = realloc(c->row_tmp, (size_t)n_kv * sizeof *p);
    if (!p) {
      cb_fail(c, "out of memory", t);
      return;
    }
    c->row_tmp = p;
    c->row_tmp_cap = n_kv;
  }
  uint32_t cols = c->a_cols, heads_out = c->a_heads;
  for (uint32_t r = 0; r < n_tok; r++) {
    uint32_t app = c->cb_app0 + c->cb_s_done + r;
    if (app < c->cb_from) continue;
    uint32_t row = app - c->cb_from;
    uint32_t pos = c->cb_pos0 + c->cb_s_done + r;
    if (row >= c->a_rows || pos >= cols) {
      cb_fail(c, "more attention rows than tokens", t);
      return;
    }
    for (uint32_t h = 0; h < c->n_head; h++) {
      tensor_row(t, (size_t)h * t->nb[2] + (size_t)r * t->nb[1], c->row_tmp, n_kv);
      for (uint32_t j = pos + 1; j < n_kv; j++) {
        if (c->row_tmp[j] != 0.0f) {
          cb_fail(c, "attention on a cell after the row's position: KV cells are not in "
                     "position order", t);
          return;
        }
      }
      uint32_t ncopy = n_kv < pos + 1 ? n_kv : pos + 1;
      float *dst = c->attn_out + ((size_t)row * heads_out + (heads_out == 1 ? 0 : h)) * cols;
      if (heads_out == 1)
        for (uint32_t j = 0; j < ncopy; j++) dst[j] += c->row_tmp[j];
      else
        memcpy(dst, c->row_tmp, (size_t)ncopy * sizeof(float));
    }
  }
  c->cb_s_done += n_tok;
}

/* Qcur-<layer> / Kcur-<layer> after RoPE: [head_dim, heads, n_tokens] float32. */
static int qk_shape_ok(lm_ctx *c, const struct ggml_tensor *t, uint32_t heads) {
  if (t->type != GGML_TYPE_F32 || t->ne[1] != (int64_t)heads || t->ne[3] != 1 ||
      t->nb[0] != sizeof(float) || t->nb[1] != t->ne[0] * sizeof(float)) {
    cb_fail(c, "unexpected Q/K tensor", t);
    return 0;
  }
  if (c->head_dim == 0) {
    c->head_dim = (uint32_t)t->ne[0];
    c->kv_dim = c->head_dim * c->n_head_kv;
    c->kq_scale = c->m->attn_scale != 0.0f ? c->m->attn_scale : 1.0f / sqrtf((float)c->head_dim);
  } else if (t->ne[0] != (int64_t)c->head_dim) {
    cb_fail(c, "Q and K head sizes differ", t);
    return 0;
  }
  return 1;
}

static void record_k(lm_ctx *c, const struct ggml_tensor *t) {
  if (!qk_shape_ok(c, t, c->n_head_kv)) return;
  lm_seq *s = &c->seq[c->cb_seq];
  if (!s->k) {
    s->k = malloc((size_t)c->n_ctx * c->kv_dim * sizeof(float));
    if (!s->k) {
      cb_fail(c, "out of memory for the recorded keys", t);
      return;
    }
  }
  uint32_t n_tok = (uint32_t)t->ne[2];
  uint32_t pos = c->cb_pos0 + c->cb_k_done;
  if (pos != s->k_len || pos + n_tok > c->n_ctx) {
    cb_fail(c, "recorded keys out of step with the sequence", t);
    return;
  }
  for (uint32_t r = 0; r < n_tok; r++)
    tensor_row(t, (size_t)r * t->nb[2], s->k + (size_t)(pos + r) * c->kv_dim, c->kv_dim);
  s->k_len = pos + n_tok;
  c->cb_k_done += n_tok;
}

static void record_q(lm_ctx *c, const struct ggml_tensor *t) {
  if (!qk_shape_ok(c, t, c->n_head)) return;
  uint32_t n_tok = (uint32_t)t->ne[2];
  size_t qdim = (size_t)c->n_head * c->head_dim;
  if (c->q_cap < (size_t)c->a_rows * qdim) {
    float *p = realloc(c->q_rows, (size_t)c->a_rows * qdim * sizeof *p);
    if (!p) {
      cb_fail(c, "out of memory for the captured queries", t);
      return;
    }
    c->q_rows = p;
    c->q_cap = (size_t)c->a_rows * qdim;
  }
  for (uint32_t r = 0; r < n_tok; r++) {
    uint32_t app = c->cb_app0 + c->cb_q_done + r;
    if (app < c->cb_from) continue;
    uint32_t row = app - c->cb_from;
    if (row >= c->a_rows) {
      cb_fail(c, "more query rows than tokens", t);
      return;
    }
    tensor_row(t, (size_t)r * t->nb[2], c->q_rows + row * qdim, qdim);
  }
  c->cb_q_done += n_tok;
}

static bool eval_cb(struct ggml_tensor *t, bool ask, void *ud) {
  lm_ctx *c = ud;
  const char *n = t->name;
  int want = 0;
  if (n[0] == 'k' && c->cb_capture && c->attn_path == LM_ATTN_SOFTMAX)
    want = strcmp(n, c->name_soft) == 0 ? 1 : 0;
  else if (c->attn_path == LM_ATTN_QK && t->op == GGML_OP_ROPE) {
    if (strcmp(n, c->name_k) == 0) want = 2;
    else if (c->cb_capture && strcmp(n, c->name_q) == 0) want = 3;
  }
  if (ask) return want != 0;
  if (c->cb_err) return true;
  if (want == 1) capture_softmax(c, t);
  else if (want == 2) record_k(c, t);
  else if (want == 3) record_q(c, t);
  return true;
}

/* The QK path's rows: softmax(q . k * scale) over positions 0..pos. */
static void qk_rows(lm_ctx *c, uint32_t pos_first) {
  const lm_seq *s = &c->seq[c->cb_seq];
  uint32_t group = c->n_head / c->n_head_kv, hd = c->head_dim, cols = c->a_cols;
  size_t qdim = (size_t)c->n_head * hd;
  float *tmp = c->row_tmp;
  for (uint32_t row = 0; row < c->a_rows; row++) {
    uint32_t pos = pos_first + row;
    for (uint32_t h = 0; h < c->n_head; h++) {
      const float *q = c->q_rows + row * qdim + (size_t)h * hd;
      const float *k = s->k + (size_t)(h / group) * hd;
      for (uint32_t j = 0; j <= pos; j++) tmp[j] = lmvec_dot(q, k + (size_t)j * c->kv_dim, hd);
      lmvec_softmax(tmp, (size_t)pos + 1, c->kq_scale);
      float *dst = c->attn_out + ((size_t)row * c->a_heads + (c->a_heads == 1 ? 0 : h)) * cols;
      if (c->a_heads == 1)
        for (uint32_t j = 0; j <= pos; j++) dst[j] += tmp[j];
      else
        memcpy(dst, tmp, ((size_t)pos + 1) * sizeof *tmp);
    }
  }
}

/* ---------------------------------------------------------- evaluation */

/* Decode the filled batch of n tokens; map llama.cpp's return to ours. */
static int decode(lm_ctx *c, int32_t n, const char *who, ctxd_error *e) {
  c->batch.n_tokens = n;
  last_log[0] = 0;
  uint64_t t0 = now_us();
  int32_t r = llama_decode(c->lc, c->batch);
  c->st.decode_us += now_us() - t0;
  c->st.decodes++;
  if (r == 0) {
    c->st.tokens += (uint64_t)n;
    return 0;
  }
  if (r == 2) return ctxd_seterr(e, CTXD_ECANCELED, "%s: cancelled", who);
  if (r == 1)
    return ctxd_seterr(e, CTXD_ELIMIT, "%s: no room in the KV cache for %d tokens", who, n);
  return ctxd_seterr(e, CTXD_EIO, "%s: llama_decode failed (%d): %s", who, r, llama_reason());
}

/* Work of one lm_eval/lm_eval_attn: requests, and for attention the
 * capture parameters. */
static int eval_core(lm_ctx *c, const lm_append *req, size_t n_req, int capture,
                     uint32_t cap_from, const char *who, ctxd_error *e) {
  uint32_t *old = NULL;
  int rc = 0;
  if (c->embeddings)
    return ctxd_seterr(e, CTXD_EPRECOND, "%s: an embedding context only embeds", who);
  old = malloc(c->n_seq * sizeof *old);
  if (!old) return ctxd_seterr(e, CTXD_ENOMEM, "%s: out of memory", who);
  for (uint32_t s = 0; s < c->n_seq; s++) old[s] = c->seq[s].len;

  /* Check everything before decoding anything. */
  uint32_t *grow = calloc(c->n_seq, sizeof *grow);
  if (!grow) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "%s: out of memory", who);
    goto done;
  }
  for (size_t r = 0; r < n_req; r++) {
    const lm_append *a = &req[r];
    if (a->seq >= c->n_seq) {
      rc = ctxd_seterr(e, CTXD_EINVAL, "%s: request %zu names sequence %u of %u", who, r, a->seq,
                       c->n_seq);
      goto done;
    }
    if (a->n && !a->ids) {
      rc = ctxd_seterr(e, CTXD_EINVAL, "%s: request %zu has no ids", who, r);
      goto done;
    }
    for (uint32_t i = 0; i < a->n; i++) {
      if (a->ids[i] < 0 || (uint32_t)a->ids[i] >= c->n_vocab) {
        rc = ctxd_seterr(e, CTXD_EINVAL, "%s: request %zu token %u has id %d, outside [0, %u)", who,
                         r, i, a->ids[i], c->n_vocab);
        goto done;
      }
    }
    if (a->out_from < a->n) {
      uint32_t rows = a->n - a->out_from;
      if (a->target)
        for (uint32_t i = 0; i < rows; i++)
          if (a->target[i] < 0 || (uint32_t)a->target[i] >= c->n_vocab) {
            rc = ctxd_seterr(e, CTXD_EINVAL, "%s: request %zu target %u is %d, outside [0, %u)",
                             who, r, i, a->target[i], c->n_vocab);
            goto done;
          }
      if (a->logits && (uint64_t)rows * c->n_vocab > LM_OUT_MAX) {
        rc = ctxd_seterr(e, CTXD_EINVAL, "%s: request %zu asks %u rows of logits, over %zu floats",
                         who, r, rows, (size_t)LM_OUT_MAX);
        goto done;
      }
    }
    if ((uint64_t)c->seq[a->seq].len + grow[a->seq] + a->n > c->n_ctx) {
      rc = ctxd_seterr(e, CTXD_ELIMIT, "%s: sequence %u would hold %llu tokens, over its %u", who,
                       a->seq, (unsigned long long)c->seq[a->seq].len + grow[a->seq] + a->n,
                       c->n_ctx);
      goto done;
    }
    grow[a->seq] += a->n;
  }

  /* Contexts that record keys decode one sequence per call, so that the
   * ubatches come in batch order (see capture_softmax and record_k). */
  int single = c->attn;
  size_t r = 0;
  uint32_t i = 0;
  uint32_t app = 0; /* appended index within the (single) capture request */
  while (r < n_req) {
    int32_t nb = 0;
    uint32_t seq0 = req[r].seq;
    uint32_t pos0 = c->seq[seq0].len, app0 = app;
    while (r < n_req && nb < (int32_t)c->n_batch) {
      const lm_append *a = &req[r];
      if (single && a->seq != seq0) break;
      if (i >= a->n) {
        r++;
        i = 0;
        continue;
      }
      lm_seq *s = &c->seq[a->seq];
      int out = i >= a->out_from && (a->logprob || a->entropy || a->logits);
      c->batch.token[nb] = a->ids[i];
      c->batch.pos[nb] = (llama_pos)s->len;
      c->batch.n_seq_id[nb] = 1;
      c->batch.seq_id[nb][0] = (llama_seq_id)a->seq;
      c->batch.logits[nb] = out ? 1 : 0;
      c->omap[nb].req = (uint32_t)r;
      c->omap[nb].row = i - a->out_from;
      s->ids[s->len++] = a->ids[i];
      nb++;
      i++;
      app++;
    }
    if (nb == 0) break;
    c->cb_seq = seq0;
    c->cb_pos0 = pos0;
    c->cb_app0 = app0;
    c->cb_capture = capture;
    c->cb_from = cap_from;
    c->cb_k_done = c->cb_q_done = c->cb_s_done = 0;
    c->cb_err = 0;
    rc = decode(c, nb, who, e);
    if (rc) goto done;
    if (c->cb_err) {
      rc = ctxd_seterr(e, CTXD_EINTERNAL, "%s: attention capture of %s: %s", who, c->m->info.arch,
                       c->cb_msg);
      goto done;
    }
    if (c->attn && c->attn_path == LM_ATTN_QK && c->cb_k_done != (uint32_t)nb) {
      rc = ctxd_seterr(e, CTXD_EINTERNAL,
                       "%s: %s has no post-RoPE %s in its graph; capture its attention with "
                       "flash attention off", who, c->m->info.arch, c->name_k);
      goto done;
    }
    if (capture && c->attn_path == LM_ATTN_SOFTMAX && c->cb_s_done != (uint32_t)nb) {
      rc = ctxd_seterr(e, CTXD_EINTERNAL, "%s: %s has no %s in its graph (flash attention on?)",
                       who, c->m->info.arch, c->name_soft);
      goto done;
    }
    if (capture && c->attn_path == LM_ATTN_QK && c->cb_q_done != (uint32_t)nb) {
      rc = ctxd_seterr(e, CTXD_EINTERNAL, "%s: %s has no post-RoPE %s in its graph", who,
                       c->m->info.arch, c->name_q);
      goto done;
    }
    size_t n_jobs = 0;
    for (int32_t b = 0; b < nb; b++) {
      if (!c->batch.logits[b]) continue;
      const lm_append *a = &req[c->omap[b].req];
      uint32_t row = c->omap[b].row, n_rows = a->n - a->out_from;
      const float *lg = llama_get_logits_ith(c->lc, b);
      if (!lg) {
        rc = ctxd_seterr(e, CTXD_EINTERNAL, "%s: no logits for batch slot %d", who, b);
        goto done;
      }
      if (a->logits) memcpy(a->logits + (size_t)row * c->n_vocab, lg, c->n_vocab * sizeof(float));
      if (a->logprob || a->entropy) {
        int32_t t = a->target ? a->target[row]
                    : row + 1 < n_rows ? a->ids[a->out_from + row + 1]
                                       : a->last_target;
        c->lpj[n_jobs++] = (struct lp_job){lg, t, a->logprob ? a->logprob + row : NULL,
                                           a->entropy ? a->entropy + row : NULL};
      }
    }
    lp_run_all(c->lpj, n_jobs, c->n_vocab, c->threads);
  }
done:
  if (rc) {
    for (uint32_t s = 0; s < c->n_seq; s++) {
      if (c->seq[s].len > old[s] && seq_cut(c, s, old[s]) != 0) {
        /* The cache refused the cut: start the sequence over rather than
         * keep a mirror that no longer matches it. */
        llama_memory_seq_rm(llama_get_memory(c->lc), (llama_seq_id)s, -1, -1);
        c->seq[s].len = c->seq[s].k_len = 0;
      }
    }
  }
  free(grow);
  free(old);
  return rc;
}

int lm_eval(lm_ctx *c, const lm_append *req, size_t n_req, ctxd_error *e) {
  return eval_core(c, req, n_req, 0, 0, "lm_eval", e);
}

int lm_eval_attn(lm_ctx *c, uint32_t seq, const int32_t *ids, uint32_t n, uint32_t from,
                 unsigned flags, ctxd_error *e) {
  const char *who = "lm_eval_attn";
  if (!c->attn)
    return ctxd_seterr(e, CTXD_EPRECOND, "%s: the context was created without attn", who);
  if (seq >= c->n_seq)
    return ctxd_seterr(e, CTXD_EINVAL, "%s: sequence %u of %u", who, seq, c->n_seq);
  if (from > n) from = n;
  lm_seq *s = &c->seq[seq];
  uint32_t rows = n - from, heads = (flags & LM_ATTN_SUM_HEADS) ? 1 : c->n_head;
  uint64_t cols = (uint64_t)s->len + n;
  if ((uint64_t)rows * heads * cols > LM_OUT_MAX)
    return ctxd_seterr(e, CTXD_ELIMIT, "%s: %u rows x %u heads x %llu columns is over %zu floats",
                       who, rows, heads, (unsigned long long)cols, (size_t)LM_OUT_MAX);
  if (c->attn_path == LM_ATTN_QK && s->k_len != s->len)
    return ctxd_seterr(e, CTXD_EINTERNAL, "%s: recorded keys cover %u of sequence %u's %u tokens",
                       who, s->k_len, seq, s->len);
  size_t need = (size_t)rows * heads * cols;
  if (need > c->attn_cap) {
    float *p = realloc(c->attn_out, need * sizeof *p);
    if (!p) return ctxd_seterr(e, CTXD_ENOMEM, "%s: out of memory for %zu floats", who, need);
    c->attn_out = p;
    c->attn_cap = need;
  }
  if (cols > c->row_tmp_cap) {
    float *p = realloc(c->row_tmp, cols * sizeof *p);
    if (!p) return ctxd_seterr(e, CTXD_ENOMEM, "%s: out of memory", who);
    c->row_tmp = p;
    c->row_tmp_cap = cols;
  }
  memset(c->attn_out, 0, need * sizeof(float));
  c->a_rows = rows;
  c->a_heads = heads;
  c->a_cols = (uint32_t)cols;
  c->a_flags = flags;
  uint32_t pos_first = s->len + from;
  lm_append a = {.seq = seq, .ids = ids, .n = n, .out_from = n};
  int rc = eval_core(c, &a, 1, 1, from, who, e);
  c->cb_capture = 0;
  if (rc) {
    c->a_rows = 0;
    return rc;
  }
  if (c->attn_path == LM_ATTN_QK && rows) qk_rows(c, pos_first);
  return 0;
}

const float *lm_attn_rows(const lm_ctx *c, uint32_t *rows, uint32_t *heads, uint32_t *cols) {
  *rows = c->a_rows;
  *heads = c->a_heads;
  *cols = c->a_cols;
  return c->attn_out;
}

/* ---------------------------------------------------------- embeddings */

int lm_embed(lm_ctx *c, const int32_t *const *ids, const uint32_t *lens, size_t n, float *out,
             ctxd_error *e) {
  const char *who = "lm_embed";
  if (!c->embeddings)
    return ctxd_seterr(e, CTXD_EPRECOND, "%s: not an embedding context", who);
  uint32_t dim = c->m->info.n_embd;
  for (size_t i = 0; i < n; i++) {
    if (lens[i] > c->n_ctx)
      return ctxd_seterr(e, CTXD_ELIMIT, "%s: text %zu has %u tokens, over the context's %u", who,
                         i, lens[i], c->n_ctx);
    for (uint32_t j = 0; j < lens[i]; j++)
      if (ids[i][j] < 0 || (uint32_t)ids[i][j] >= c->n_vocab)
        return ctxd_seterr(e, CTXD_EINVAL, "%s: text %zu token %u has id %d, outside [0, %u)", who,
                           i, j, ids[i][j], c->n_vocab);
  }
  int rc = 0;
  size_t i = 0;
  while (i < n) {
    /* Pack texts, one sequence each, while they fit one batch. */
    int32_t nb = 0;
    size_t first = i;
    uint32_t ns = 0;
    while (i < n && ns < c->n_seq && nb + (int64_t)lens[i] <= (int64_t)c->n_batch) {
      if (lens[i] == 0) {
        memset(out + i * dim, 0, dim * sizeof(float));
        i++;
        continue;
      }
      for (uint32_t j = 0; j < lens[i]; j++) {
        c->batch.token[nb] = ids[i][j];
        c->batch.pos[nb] = (llama_pos)j;
        c->batch.n_seq_id[nb] = 1;
        c->batch.seq_id[nb][0] = (llama_seq_id)ns;
        c->batch.logits[nb] = 1;
        nb++;
      }
      ns++;
      i++;
    }
    if (nb == 0) continue;
    rc = decode(c, nb, who, e);
    if (rc == 0) {
      uint32_t s = 0;
      for (size_t k = first; k < i; k++) {
        if (lens[k] == 0) continue;
        const float *v = llama_get_embeddings_seq(c->lc, (llama_seq_id)s++);
        if (!v) {
          rc = ctxd_seterr(e, CTXD_EINTERNAL, "%s: no pooled embedding for text %zu", who, k);
          break;
        }
        double ss = 0;
        for (uint32_t d = 0; d < dim; d++) ss += (double)v[d] * v[d];
        float inv = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
        for (uint32_t d = 0; d < dim; d++) out[k * dim + d] = v[d] * inv;
      }
    }
    llama_memory_clear(llama_get_memory(c->lc), false);
    if (rc) return rc;
  }
  return 0;
}

/* The `model` embedder: a pool of embedding contexts. */
typedef struct lm_embedder {
  embedder base;
  lm_model *m;
  lm_embedder_opts o;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  lm_ctx **pool;  /* n_ctx_max slots */
  uint32_t n_made, n_free;
  lm_ctx **free_list;
} lm_embedder;

void lm_embedder_defaults(lm_embedder_opts *o) { memset(o, 0, sizeof *o); }

static int emb_make_ctx(lm_embedder *x, lm_ctx **out, ctxd_error *e) {
  lm_ctx_opts co;
  lm_ctx_defaults(&co);
  co.embeddings = 1;
  co.pooling = x->o.pooling;
  co.n_ctx = x->o.max_tokens;
  co.n_batch = x->o.max_tokens;
  co.n_seq = 8;
  co.n_threads = x->o.n_threads;
  return lm_ctx_create(x->m, &co, out, e);
}

static int emb_acquire(lm_embedder *x, lm_ctx **out, ctxd_error *e) {
  pthread_mutex_lock(&x->mu);
  for (;;) {
    if (x->n_free > 0) {
      *out = x->free_list[--x->n_free];
      pthread_mutex_unlock(&x->mu);
      return 0;
    }
    if (x->n_made < x->o.n_ctx_max) {
      x->n_made++;
      pthread_mutex_unlock(&x->mu);
      int rc = emb_make_ctx(x, out, e);
      if (rc) {
        pthread_mutex_lock(&x->mu);
        x->n_made--;
        pthread_cond_signal(&x->cv);
        pthread_mutex_unlock(&x->mu);
        return rc;
      }
      pthread_mutex_lock(&x->mu);
      x->pool[x->n_made - 1] = *out;
      pthread_mutex_unlock(&x->mu);
      return 0;
    }
    pthread_cond_wait(&x->cv, &x->mu);
  }
}

static void emb_release(lm_embedder *x, lm_ctx *c) {
  pthread_mutex_lock(&x->mu);
  x->free_list[x->n_free++] = c;
  pthread_cond_signal(&x->cv);
  pthread_mutex_unlock(&x->mu);
}

static int emb_embed(const embedder *base, const char *const *texts, const size_t *lens, size_t n,
                     float *out, ctxd_error *e) {
  lm_embedder *x = (lm_embedder *)base->ctx;
  lm_tokens *tk = calloc(n ? n : 1, sizeof *tk);
  const int32_t **ids = calloc(n ? n : 1, sizeof *ids);
  uint32_t *nt = calloc(n ? n : 1, sizeof *nt);
  lm_ctx *c = NULL;
  int rc = 0;
  if (!tk || !ids || !nt) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "embed model: out of memory");
    goto done;
  }
  for (size_t i = 0; i < n; i++) {
    if (lens[i] == 0) continue; /* a zero row, as for every embedder */
    rc = lm_tokenize(x->m, texts[i], lens[i], LM_TOK_ADD_SPECIAL | LM_TOK_NO_OFFSETS, &tk[i], e);
    if (rc) goto done;
    ids[i] = tk[i].id;
    nt[i] = tk[i].n > x->o.max_tokens ? x->o.max_tokens : (uint32_t)tk[i].n;
  }
  rc = emb_acquire(x, &c, e);
  if (rc) goto done;
  rc = lm_embed(c, ids, nt, n, out, e);
  emb_release(x, c);
done:
  if (tk)
    for (size_t i = 0; i < n; i++) lm_tokens_free(&tk[i]);
  free(tk);
  free(ids);
  free(nt);
  return rc;
}

static void emb_free(embedder *base) {
  lm_embedder *x = (lm_embedder *)base->ctx;
  for (uint32_t i = 0; i < x->n_made; i++) lm_ctx_free(x->pool[i]);
  free(x->pool);
  free(x->free_list);
  pthread_mutex_destroy(&x->mu);
  pthread_cond_destroy(&x->cv);
  lm_model_free(x->m);
  free(x);
}

int lm_embedder_create(lm_model *m, const lm_embedder_opts *o, embedder **out, ctxd_error *e) {
  lm_embedder_opts def;
  *out = NULL;
  if (!o) {
    lm_embedder_defaults(&def);
    o = &def;
  }
  int rc = need_weights(m, "lm_embedder_create", e);
  if (rc) return rc;
  if (o->n_ctx_max > 256 || o->max_tokens > LM_BATCH_MAX || o->n_threads < 0 || o->pooling < 0 ||
      o->pooling > LM_POOL_LAST)
    return ctxd_seterr(e, CTXD_EINVAL, "lm_embedder_create: options out of range");
  lm_embedder *x = calloc(1, sizeof *x);
  if (!x) return ctxd_seterr(e, CTXD_ENOMEM, "lm_embedder_create: out of memory");
  x->o = *o;
  if (!x->o.n_ctx_max) x->o.n_ctx_max = 1;
  if (!x->o.max_tokens) {
    x->o.max_tokens = m->info.n_ctx_train && m->info.n_ctx_train < 512 ? m->info.n_ctx_train : 512;
  }
  x->m = lm_model_ref(m);
  x->pool = calloc(x->o.n_ctx_max, sizeof *x->pool);
  x->free_list = calloc(x->o.n_ctx_max, sizeof *x->free_list);
  pthread_mutex_init(&x->mu, NULL);
  pthread_cond_init(&x->cv, NULL);
  x->base.name = "model";
  x->base.dim = m->info.n_embd;
  x->base.embed = emb_embed;
  x->base.free = emb_free;
  x->base.ctx = x;
  if (!x->pool || !x->free_list) {
    emb_free(&x->base);
    return ctxd_seterr(e, CTXD_ENOMEM, "lm_embedder_create: out of memory");
  }
  lm_ctx *c;
  rc = emb_acquire(x, &c, e);
  if (rc) {
    emb_free(&x->base);
    return rc;
  }
  emb_release(x, c);
  *out = &x->base;
  return 0;
}
