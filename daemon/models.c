/* models.c - the daemon's model and tokenizer slots (models.h): loading,
 * atomic swaps under a mutex held only to copy a pointer and take a
 * reference, and the bound on concurrent model selections. */
#include "models.h"

#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A lent `model` embedder: one per loaded model and options. */
typedef struct memb {
  struct memb *next;
  lm_model *model; /* its own reference: identity outlives swaps */
  uint32_t max_tokens;
  int pooling;
  embedder *emb;
  int refs; /* under emb_mu: 1 while listed, 1 per call using it */
} memb;

struct models {
  pthread_mutex_t mu;    /* guards the two slots */
  pthread_mutex_t load;  /* one load at a time (loads are slow; swaps not) */
  lm_model *model;       /* weights; NULL = none */
  lm_model *vocab;       /* tokenizer.path vocabulary; NULL = none */
  lm_model *builtin;     /* model.builtin, set once at open; NULL = none */
  uint32_t gpu_layers;
  uint32_t max_concurrent;
  atomic_uint running;
  /* per slot (model, vocab, builtin), under mu: load end and duration */
  double loaded_at[3], load_seconds[3];
  pthread_mutex_t emb_mu; /* guards embs; taken before mu, never inside */
  memb *embs;
};

static void memb_unref(memb *b) {
  if (--b->refs > 0) return;
  embedder_free(b->emb);
  lm_model_free(b->model);
  free(b);
}

/* Unlist the embedders of models other than cur (emb_mu held). */
static void memb_purge(models *m, const lm_model *cur) {
  for (memb **pp = &m->embs; *pp;) {
    memb *b = *pp;
    if (b->model != cur) {
      *pp = b->next;
      memb_unref(b);
    } else {
      pp = &b->next;
    }
  }
}

static double clock_s(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Load one slot's GGUF; errors name the option and the file. */
static int load_file(const models *m, const char *path, int tokenizer_only,
                     lm_model **out, ctxd_error *e) {
  lm_model_opts o;
  lm_info in;
  const char *what = tokenizer_only ? "tokenizer" : "model";
  lm_model_defaults(&o);
  o.vocab_only = tokenizer_only;
  /* llama.cpp offloads every layer for any count at or above the model's. */
  o.n_gpu_layers = (int)(m->gpu_layers > 100000 ? 100000 : m->gpu_layers);
  int rc = lm_model_load(path, &o, out, e);
  if (rc == CTXD_EIO && !tokenizer_only) {
    /* A vocabulary-only GGUF fails a full load; say so rather than pass on
     * llama.cpp's "failed to load model". */
    lm_model *v;
    ctxd_error ve;
    o.vocab_only = 1;
    if (lm_model_load(path, &o, &v, &ve) == 0) {
      lm_model_free(v);
      return ctxd_seterr(e, CTXD_EINVAL,
                         "cannot load the model %s: it holds a vocabulary "
                         "but no weights (use it as tokenizer.path, or "
                         "LoadModel with tokenizer_only)",
                         path);
    }
  }
  if (rc) {
    char why[CTXD_ERRMSG_MAX];
    snprintf(why, sizeof why, "%s", e->msg);
    return ctxd_seterr(e, rc, "cannot load the %s %s: %s", what, path, why);
  }
  lm_model_info(*out, &in);
  if (!tokenizer_only && in.vocab_only) {
    lm_model_free(*out);
    *out = NULL;
    return ctxd_seterr(e, CTXD_EINVAL,
                       "cannot load the model %s: it holds a vocabulary but "
                       "no weights (use it as tokenizer.path, or LoadModel "
                       "with tokenizer_only)",
                       path);
  }
  return 0;
}

/* A slot's load ended: record when and how long since *t0 (mu held or not
 * yet shared), and restart *t0 for the next load. */
static void load_timed(models *m, int slot, double *t0) {
  double t = clock_s(CLOCK_MONOTONIC);
  m->loaded_at[slot] = clock_s(CLOCK_REALTIME);
  m->load_seconds[slot] = t - *t0;
  *t0 = t;
}

int models_open(const models_opts *o, models **out, ctxd_error *e) {
  models *m = calloc(1, sizeof *m);
  int rc = 0;
  *out = NULL;
  if (!m) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  pthread_mutex_init(&m->mu, NULL);
  pthread_mutex_init(&m->load, NULL);
  pthread_mutex_init(&m->emb_mu, NULL);
  m->gpu_layers = o->gpu_layers;
  m->max_concurrent = o->max_concurrent ? o->max_concurrent : 1;
  atomic_init(&m->running, 0);
  double t0 = clock_s(CLOCK_MONOTONIC);
  if (o->model_path && *o->model_path &&
      (rc = load_file(m, o->model_path, 0, &m->model, e)))
    goto fail;
  load_timed(m, 0, &t0);
  if (o->tokenizer_path && *o->tokenizer_path &&
      (rc = load_file(m, o->tokenizer_path, 1, &m->vocab, e)))
    goto fail;
  load_timed(m, 1, &t0);
  if (!m->model && o->builtin_path && *o->builtin_path) {
    /* Optional: a build or install without the file starts all the same. */
    ctxd_error be;
    if (load_file(m, o->builtin_path, 0, &m->builtin, &be))
      LOG_WARN("builtin-model-skipped err=\"%s\"", be.msg);
  }
  load_timed(m, 2, &t0);
  *out = m;
  return 0;
fail:
  models_close(m);
  return rc;
}

void models_close(models *m) {
  if (!m) return;
  memb_purge(m, NULL);
  pthread_mutex_destroy(&m->emb_mu);
  lm_model_free(m->model);
  lm_model_free(m->vocab);
  lm_model_free(m->builtin);
  pthread_mutex_destroy(&m->mu);
  pthread_mutex_destroy(&m->load);
  free(m);
}

lm_model *models_model(models *m) {
  pthread_mutex_lock(&m->mu);
  lm_model *r = lm_model_ref(m->model ? m->model : m->builtin);
  pthread_mutex_unlock(&m->mu);
  return r;
}

/* The loaded model only: the built-in one serves selections, not the
 * `model` embedder (vectors from a fallback would change meaning the moment
 * an operator loads a model). */
static lm_model *loaded_model(models *m) {
  pthread_mutex_lock(&m->mu);
  lm_model *r = lm_model_ref(m->model);
  pthread_mutex_unlock(&m->mu);
  return r;
}

int models_is_builtin(models *m, const lm_model *lm) {
  return lm != NULL && lm == m->builtin; /* set once at open: no lock */
}

const tok *models_tok(models *m, lm_model **ref) {
  pthread_mutex_lock(&m->mu);
  *ref = lm_model_ref(m->model ? m->model : m->vocab);
  pthread_mutex_unlock(&m->mu);
  return *ref ? lm_model_tok(*ref) : tok_estimator();
}

int models_load(models *m, const char *path, int tokenizer_only,
                lm_info *info, ctxd_error *e) {
  lm_model *nm = NULL, *old;
  int rc = 0;
  if (info) memset(info, 0, sizeof *info);
  pthread_mutex_lock(&m->load);
  double t0 = clock_s(CLOCK_MONOTONIC);
  if (path && *path) {
    rc = load_file(m, path, tokenizer_only, &nm, e);
    if (rc) goto done;
    if (info) lm_model_info(nm, info);
  }
  pthread_mutex_lock(&m->mu);
  lm_model **slot = tokenizer_only ? &m->vocab : &m->model;
  old = *slot;
  *slot = nm;
  load_timed(m, tokenizer_only, &t0);
  pthread_mutex_unlock(&m->mu);
  /* Requests still holding the old model keep it alive until they end. */
  if (!tokenizer_only) {
    pthread_mutex_lock(&m->emb_mu);
    memb_purge(m, nm);
    pthread_mutex_unlock(&m->emb_mu);
  }
  lm_model_free(old);
done:
  pthread_mutex_unlock(&m->load);
  return rc;
}

int models_info(models *m, int tokenizer_slot, lm_info *out) {
  pthread_mutex_lock(&m->mu);
  lm_model *s = tokenizer_slot ? m->vocab : m->model;
  if (s) lm_model_info(s, out);
  pthread_mutex_unlock(&m->mu);
  return s != NULL;
}

int models_load_time(models *m, int slot, double *at, double *seconds) {
  if (slot < 0 || slot > 2) return 0;
  pthread_mutex_lock(&m->mu);
  const lm_model *s = slot == 0 ? m->model : slot == 1 ? m->vocab : m->builtin;
  *at = s ? m->loaded_at[slot] : 0;
  *seconds = s ? m->load_seconds[slot] : 0;
  pthread_mutex_unlock(&m->mu);
  return s != NULL;
}

int models_run_begin(models *m, ctxd_error *e) {
  unsigned n = atomic_fetch_add(&m->running, 1);
  if (n < m->max_concurrent) return 0;
  atomic_fetch_sub(&m->running, 1);
  return ctxd_seterr(e, CTXD_ELIMIT,
                     "%u model selections are running, the limit "
                     "(model.max_concurrent); retry later",
                     m->max_concurrent);
}

void models_run_end(models *m) { atomic_fetch_sub(&m->running, 1); }

uint32_t models_running(models *m) { return atomic_load(&m->running); }

void models_log_loaded(models *m) {
  lm_info in;
  if (m->builtin) {
    lm_model_info(m->builtin, &in);
    LOG_INFO("builtin-model-loaded name=\"%s\" layers=%u embd=%u "
             "n_ctx_train=%u path=\"%s\" note=\"xl3m and infiniretri until a "
             "model is loaded; auto stays bm25\"",
             in.name, in.n_layer, in.n_embd, in.n_ctx_train, in.path);
  }
  for (int slot = 0; slot < 2; slot++)
    if (models_info(m, slot, &in))
      LOG_INFO("%s-loaded name=\"%s\" arch=%s tokenizer=\"%s\" "
               "n_ctx_train=%u layers=%u heads=%u kv_heads=%u embd=%u "
               "vocab=%u params=%llu path=\"%s\"",
               slot ? "tokenizer" : "model", in.name, in.arch, in.tokenizer,
               in.n_ctx_train, in.n_layer, in.n_head, in.n_head_kv, in.n_embd,
               in.n_vocab, (unsigned long long)in.n_params, in.path);
}

int models_check_store(models *m, store *st, int record, int *mismatch,
                       char recorded[64], ctxd_error *e) {
  store_stats ss;
  lm_model *ref;
  const tok *tk = models_tok(m, &ref);
  int rc = store_stats_get(st, &ss, e);
  *mismatch = 0;
  if (rc) goto done;
  if (strcmp(ss.tokenizer, tk->name) != 0) {
    if (ss.documents == 0 || !ss.tokenizer[0]) {
      if (!record) goto out;
      rc = store_set_tokenizer(st, tk->name, e);
      if (rc) goto done;
      snprintf(ss.tokenizer, sizeof ss.tokenizer, "%s", tk->name);
    } else {
      *mismatch = 1;
    }
  }
out:
  if (recorded) snprintf(recorded, 64, "%s", ss.tokenizer);
done:
  lm_model_free(ref);
  return rc;
}

/* The identity a collection records of model lm (embed.h). */
static void model_ident(lm_model *lm, embed_model_opts *o, lm_info *in) {
  lm_model_info(lm, in);
  uint64_t sizes[7] = {in->n_embd, in->n_layer,  in->n_head,    in->n_head_kv,
                       in->n_vocab, in->n_params, in->size_bytes};
  memset(o, 0, sizeof *o);
  embed_model_set_name(o, in->name);
  o->dim = in->n_embd;
  o->hash = embed_model_id(in->name, in->arch, in->tokenizer, sizes);
  o->identified = 1;
}

#define LOAD_HINT                                                           \
  "start ctxd with --model.path FILE.gguf, or load one with Admin.LoadModel " \
  "(ctxctl model load FILE.gguf)"

int models_embedder_text(models *m, const char *req, char *out, size_t cap,
                         ctxd_error *e) {
  embed_model_opts ro, mo;
  lm_info in;
  int rc = embed_model_parse(req, &ro, e);
  if (rc) return rc;
  lm_model *lm = loaded_model(m);
  if (!lm)
    return ctxd_seterr(e, CTXD_EPRECOND,
                       "embedder model needs a loaded model with weights, "
                       "and none is loaded: " LOAD_HINT);
  model_ident(lm, &mo, &in);
  lm_model_free(lm);
  if (ro.identified && (ro.hash != mo.hash || ro.dim != mo.dim))
    return ctxd_seterr(e, CTXD_EPRECOND,
                       "embedder \"%.100s\" names another model than the "
                       "loaded %s (dim %u, hash %08x)",
                       req, mo.name, mo.dim, mo.hash);
  uint32_t train = in.n_ctx_train ? in.n_ctx_train : 512;
  mo.max_tokens = ro.max_tokens ? ro.max_tokens : (train < 512 ? train : 512);
  if (mo.max_tokens > train || mo.max_tokens > LM_BATCH_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "embedder model: max_tokens %u is over the model's "
                       "training context (%u) or %u",
                       mo.max_tokens, train, (unsigned)LM_BATCH_MAX);
  mo.pooling = ro.pooling;
  embed_model_format(&mo, out, cap);
  return 0;
}

int models_embedder_acquire(void *arg, const char *text, const embedder **emb,
                            void **hold, ctxd_error *e) {
  models *m = arg;
  embed_model_opts want, have;
  lm_info in;
  memb *b = NULL;
  int rc = embed_model_parse(text, &want, e);
  if (rc) return rc;
  pthread_mutex_lock(&m->emb_mu);
  lm_model *lm = loaded_model(m);
  if (!lm) {
    rc = ctxd_seterr(e, CTXD_EPRECOND,
                     "its vectors come from model %s (dim %u, hash %08x), and "
                     "no model is loaded: load that model (" LOAD_HINT
                     "); lexical search works without it",
                     want.name, want.dim, want.hash);
    goto done;
  }
  model_ident(lm, &have, &in);
  if (have.hash != want.hash || have.dim != want.dim) {
    rc = ctxd_seterr(e, CTXD_EPRECOND,
                     "its vectors come from model %s (dim %u, hash %08x), and "
                     "the loaded model is %s (dim %u, hash %08x): load the "
                     "collection's model again (Admin.LoadModel) to put or "
                     "search by vector; lexical search works without it",
                     want.name, want.dim, want.hash, have.name, have.dim,
                     have.hash);
    goto done;
  }
  memb_purge(m, lm);
  for (b = m->embs; b; b = b->next)
    if (b->max_tokens == want.max_tokens && b->pooling == want.pooling) break;
  if (!b) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1) ncpu = 1;
    uint32_t nctx = ncpu >= 8 ? MODELS_EMBED_CTX : ncpu >= 4 ? 2 : 1;
    lm_embedder_opts o;
    lm_embedder_defaults(&o);
    o.max_tokens = want.max_tokens;
    o.pooling = want.pooling;
    o.n_ctx_max = nctx;
    o.n_threads = (int)(ncpu / nctx);
    if (!(b = calloc(1, sizeof *b))) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
      goto done;
    }
    if ((rc = lm_embedder_create(lm, &o, &b->emb, e))) {
      free(b);
      b = NULL;
      goto done;
    }
    b->model = lm_model_ref(lm);
    b->max_tokens = want.max_tokens;
    b->pooling = want.pooling;
    b->refs = 1;
    b->next = m->embs;
    m->embs = b;
    LOG_INFO("model-embedder-created model=\"%s\" dim=%u max_tokens=%u "
             "contexts=%u threads=%d",
             have.name, have.dim, want.max_tokens, nctx, o.n_threads);
  }
  b->refs++;
  *emb = b->emb;
  *hold = b;
done:
  pthread_mutex_unlock(&m->emb_mu);
  lm_model_free(lm);
  return rc;
}

void models_embedder_release(void *arg, void *hold) {
  models *m = arg;
  pthread_mutex_lock(&m->emb_mu);
  memb_unref(hold);
  pthread_mutex_unlock(&m->emb_mu);
}
