/* handlers_select.c - Retrieval.SelectContext and SelectContextStream: the
 * key context of a stored document or an inline text for a question, under
 * a token budget (index/select.h does the selecting).
 *
 * A selection runs in the call's on_message, on the worker that took it
 * (never on the event loop); a model selection can take seconds to
 * minutes, so select's progress callback polls the call: a client that
 * cancels, resets or passes its deadline stops the selection at its next
 * report. The stream variant also sends each report as an event. Model
 * methods hold a reference on the model they started with (a LoadModel
 * meanwhile does not free it) and one of model.max_concurrent slots. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coll.h"
#include "collections.h"
#include "ctx.h"
#include "ctxd/v1/retrieval.pb-c.h"
#include "err.h"
#include "grpc_wire.h"
#include "handlers.h"
#include "log.h"
#include "models.h"
#include "rpc.h"
#include "select.h"
#include "store.h"
#include "utf8.h"

/* A stream's progress events are dropped (the selection goes on) while
 * this many response bytes wait for a slow client. */
#define EVENT_PENDING_MAX (64u * 1024)

/* One selection's inputs, resolved from the request. */
typedef struct sel_job {
  rpc_call *call;
  int stream;              /* send progress events */
  select_opts o;
  select_env env;
  const char *text;        /* the request's text or doc->text */
  size_t text_len;
  store_doc *doc;          /* doc_id's document, owned */
  lm_model *model;         /* reference, model methods only */
  lm_model *tk_ref;        /* keeps env.tk alive */
  void *emb_hold;          /* a model collection's embedder (models.h) */
  int run_slot;            /* holds a model.max_concurrent slot */
  char coll[STORE_COLL_NAME_MAX + 1];
} sel_job;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* select's progress callback: stop when the call is over, report on a
 * stream. */
static int on_progress(void *arg, const char *phase, uint64_t done,
                       uint64_t total) {
  sel_job *j = arg;
  if (rpc_is_done(j->call)) return 1;
  if (j->stream && rpc_pending_bytes(j->call) < EVENT_PENDING_MAX) {
    Ctxd__V1__SelectContextEvent ev = CTXD__V1__SELECT_CONTEXT_EVENT__INIT;
    ev.phase = (char *)phase;
    ev.done = done;
    ev.total = total;
    if (rpc_send_pb(j->call, &ev.base) != 0) return 1;
  }
  return 0;
}

static int is_model_method(int m) {
  return m == SELECT_XL3M || m == SELECT_INFINIRETRI;
}

/* The options of the request over select's defaults: a zero field keeps
 * the default. */
static int opts_fill(const Ctxd__V1__SelectContextRequest *req,
                     select_opts *o, ctxd_error *e) {
  const Ctxd__V1__SelectOptions *r = req->options;
  select_defaults(o);
#define SET(dst, v) \
  if (v) (dst) = (v)
  SET(o->token_budget, req->token_budget);
  if (!r) return 0;
  SET(o->segment_tokens, r->segment_tokens);
  SET(o->segment_overlap, r->segment_overlap);
  SET(o->question_tail, r->question_tail);
  SET(o->xl3m_batch, r->xl3m_batch);
  SET(o->window_tokens, r->window_tokens);
  SET(o->top_k, r->top_k);
  SET(o->filter_width, r->filter_width);
  SET(o->cache_max_tokens, r->cache_max_tokens);
#undef SET
  if (r->no_question_weights) o->question_weights = 0;
  /* layer: n > 0 counts from the first (1 = layer 0), n < 0 from the end,
   * 0 the last (the default). */
  if (r->layer) o->attn_layer = r->layer > 0 ? r->layer - 1 : r->layer;
  if (!*r->xl3m_score || strcmp(r->xl3m_score, "entropy") == 0)
    o->xl3m_score = SELECT_XL3M_ENTROPY;
  else if (strcmp(r->xl3m_score, "logprob") == 0)
    o->xl3m_score = SELECT_XL3M_LOGPROB;
  else
    return ctxd_seterr(e, CTXD_EINVAL,
                       "options.xl3m_score \"%.32s\" is not entropy or logprob",
                       r->xl3m_score);
  return 0;
}

/* The model context a selection needs must fit model.n_ctx when the
 * operator set one (select itself holds every selection to the model's
 * training context): a smaller cap bounds the KV cache, hence the memory,
 * of each selection. */
static int check_n_ctx(const ctxd_ctx *ctx, const sel_job *j,
                       const char *question, size_t qlen, ctxd_error *e) {
  uint64_t limit = ctx->cfg->model_n_ctx;
  if (!limit) return 0;
  const select_opts *o = &j->o;
  uint64_t q = qlen ? tok_count(lm_model_tok(j->model), question, qlen)
                    : o->question_tail;
  uint64_t budget = o->token_budget;
  uint64_t need;
  const char *what;
  if (o->method == SELECT_INFINIRETRI) {
    uint64_t top_k = o->top_k;
    uint64_t cache = o->cache_max_tokens ? o->cache_max_tokens
                     : budget > 2 * top_k ? budget : 2 * top_k;
    need = cache + o->window_tokens + q;
    what = "the cache (options.cache_max_tokens, else max(budget, 2 x "
           "top_k)) + options.window_tokens + the question";
  } else {
    need = o->segment_tokens + q;
    what = "options.segment_tokens + the question";
  }
  if (need > limit)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "%s is %llu tokens, more than model.n_ctx (%llu); "
                       "lower them",
                       what, (unsigned long long)need,
                       (unsigned long long)limit);
  return 0;
}

/* Check the request and gather what the selection needs into *j. */
static int job_prepare(ctxd_ctx *ctx, const uint8_t *msg, size_t len,
                       const Ctxd__V1__SelectContextRequest *req, sel_job *j,
                       ctxd_error *e) {
  size_t bad, qlen = strlen(req->question);
  int rc;
  for (uint32_t f = 1; f <= 6; f++)
    if (f != 4 && pbw_field_has_nul(msg, len, f))
      return ctxd_seterr(e, CTXD_EINVAL,
                         "%s contains a NUL byte",
                         f == 1 ? "doc_id" : f == 2 ? "text"
                         : f == 3 ? "question" : f == 5 ? "method"
                                                : "collection");
  if (*req->doc_id && *req->text)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "doc_id and text both given (send one or the other)");
  if (!*req->doc_id && !*req->text)
    return ctxd_seterr(e, CTXD_EINVAL, "doc_id or text is required");
  if (qlen > SELECT_QUESTION_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "question is %zu bytes, more than the limit of %d",
                       qlen, SELECT_QUESTION_MAX);
  if (!utf8_valid(req->question, qlen, &bad))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "question is not valid UTF-8 at byte offset %zu", bad);
  if (req->token_budget > SELECT_BUDGET_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "token_budget %u is more than the limit of %d",
                       req->token_budget, SELECT_BUDGET_MAX);
  int method = select_method_parse(req->method);
  if (method < 0)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "method \"%.32s\" is not auto, xl3m, infiniretri, bm25 "
                       "or embedding",
                       req->method);
  if ((rc = opts_fill(req, &j->o, e))) return rc;
  j->model = models_model(ctx->models);
  /* auto means InfiniRetri only for a model the operator chose */
  if (method == SELECT_AUTO)
    method = j->model && !models_is_builtin(ctx->models, j->model)
                 ? SELECT_INFINIRETRI
                 : SELECT_BM25;
  j->o.method = method;
  if (!is_model_method(method)) {
    lm_model_free(j->model);
    j->model = NULL;
  } else if (!j->model) {
    return ctxd_seterr(e, CTXD_EPRECOND,
                       "method %s needs a language model and none is loaded: "
                       "start ctxd with --model.path FILE.gguf, or load one "
                       "with Admin.LoadModel (ctxctl model load FILE.gguf)",
                       select_method_name(method));
  }
  if (method != SELECT_XL3M && qlen == 0)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "method %s needs a question (only xl3m can take the "
                       "end of the text as its question)",
                       select_method_name(method));
  if (j->model && (rc = check_n_ctx(ctx, j, req->question, qlen, e)))
    return rc;

  /* The collection: of doc_id, and whose embedder `embedding` uses. */
  uint32_t cid;
  coll_config cc;
  rc = collections_resolve(ctx->cs, req->collection, strlen(req->collection),
                           &cid, &cc, e);
  if (rc) return rc;
  snprintf(j->coll, sizeof j->coll, "%s", cc.name);
  if (*req->doc_id) {
    size_t id_len = strlen(req->doc_id);
    if (id_len > STORE_ID_MAX)
      return ctxd_seterr(e, CTXD_EINVAL, "doc_id is %zu bytes (ids are 1 to %d)",
                         id_len, STORE_ID_MAX);
    rc = store_get(ctx->st, cid, req->doc_id, id_len, STORE_GET_TEXT, &j->doc,
                   e);
    if (rc == CTXD_ENOTFOUND)
      return ctxd_seterr(e, CTXD_ENOTFOUND,
                         "document \"%.64s\" not found in collection %s",
                         req->doc_id, cc.name);
    if (rc) return rc;
    j->text = j->doc->text;
    j->text_len = j->doc->text_len;
  } else {
    j->text = req->text;
    j->text_len = strlen(req->text);
  }
  if (method == SELECT_EMBEDDING && embed_is_model(cc.embedder)) {
    /* A model collection's embedder, lent for the selection (models.h). */
    rc = models_embedder_acquire(ctx->models, cc.embedder, &j->env.emb,
                                 &j->emb_hold, e);
    if (rc) {
      char why[CTXD_ERRMSG_MAX];
      snprintf(why, sizeof why, "%s", e->msg);
      return ctxd_seterr(e, rc, "collection %s: %s", cc.name, why);
    }
  } else if (method == SELECT_EMBEDDING) {
    j->env.emb = coll_embedder(ctx->cs, cid);
    if (!j->env.emb)
      return ctxd_seterr(e, CTXD_EPRECOND,
                         "method embedding needs collection %s's embedder, "
                         "and it has none (embedder none: clients send "
                         "vectors); name a collection with one",
                         cc.name);
  }
  j->env.model = j->model;
  j->env.auto_model = j->model != NULL && !models_is_builtin(ctx->models, j->model);
  j->env.tk = models_tok(ctx->models, &j->tk_ref);
  j->env.bm25_k1 = ctx->cfg->bm25_k1;
  j->env.bm25_b = ctx->cfg->bm25_b;
  j->o.max_input_tokens = ctx->cfg->limits_max_select_tokens;
  j->o.max_input_what = "limits.max_select_tokens";
  j->o.n_threads = (int)ctx->cfg->model_threads;
  j->o.progress = on_progress;
  j->o.progress_arg = j;
  if (j->model) {
    if ((rc = models_run_begin(ctx->models, e))) return rc;
    j->run_slot = 1;
  }
  return 0;
}

static void job_free(ctxd_ctx *ctx, sel_job *j) {
  if (j->run_slot) models_run_end(ctx->models);
  if (j->emb_hold) models_embedder_release(ctx->models, j->emb_hold);
  lm_model_free(j->model);
  lm_model_free(j->tk_ref);
  store_doc_free(j->doc);
}

/* The result as a SelectContextResponse and send it (alone, or as the
 * stream's last event). */
static int send_result(sel_job *j, select_result *res,
                       uint64_t elapsed_ms) {
  int rc = -1;
  Ctxd__V1__Segment *segs = calloc(res->n_segs ? res->n_segs : 1, sizeof *segs);
  Ctxd__V1__Segment **segp = calloc(res->n_segs ? res->n_segs : 1, sizeof *segp);
  if (!segs || !segp) {
    rpc_finish(j->call, GRPC_RESOURCE_EXHAUSTED, "out of memory for the response");
    goto done;
  }
  for (size_t i = 0; i < res->n_segs; i++) {
    ctxd__v1__segment__init(&segs[i]);
    segs[i].byte_start = res->segs[i].start;
    segs[i].byte_end = res->segs[i].end;
    segs[i].tokens = res->segs[i].tokens;
    segs[i].score = res->segs[i].score;
    segp[i] = &segs[i];
  }
  Ctxd__V1__SelectStats st = CTXD__V1__SELECT_STATS__INIT;
  st.input_tokens = res->stats.input_tokens;
  st.segments = res->stats.segments;
  st.model_tokens = res->stats.model_tokens;
  st.model_decodes = res->stats.model_decodes;
  st.model_ms = res->stats.model_us / 1000;
  st.windows = res->stats.windows;
  st.elapsed_ms = elapsed_ms;
  st.model_outputs = res->stats.model_outputs;
  st.max_seq_tokens = res->stats.max_seq_tokens;
  Ctxd__V1__SelectContextResponse r = CTXD__V1__SELECT_CONTEXT_RESPONSE__INIT;
  lm_info in;
  r.n_segments = res->n_segs;
  r.segments = segp;
  /* select.h promises a NUL at context_len; one path of select_run leaves
   * it unset, and protobuf-c reads the context as a C string. */
  if (res->context) res->context[res->context_len] = '\0';
  r.context = res->context ? res->context : (char *)"";
  r.tokens = res->tokens;
  r.method = (char *)select_method_name(res->method);
  r.stats = &st;
  if (j->model && is_model_method(res->method)) {
    lm_model_info(j->model, &in);
    r.model = in.name;
  }
  r.tokenizer = (char *)(j->model ? lm_model_tok(j->model) : j->env.tk)->name;
  if (j->stream) {
    Ctxd__V1__SelectContextEvent ev = CTXD__V1__SELECT_CONTEXT_EVENT__INIT;
    ev.phase = (char *)"done";
    ev.done = ev.total = res->stats.input_tokens;
    ev.result = &r;
    rc = rpc_send_pb(j->call, &ev.base);
  } else {
    rc = rpc_send_pb(j->call, &r.base);
  }
done:
  free(segs);
  free(segp);
  return rc;
}

static void select_call(rpc_call *c, const uint8_t *msg, size_t len,
                        int stream) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  sel_job j;
  select_result res;
  memset(&j, 0, sizeof j);
  memset(&res, 0, sizeof res);
  j.call = c;
  j.stream = stream;
  ctxd_clearerr(&e);
  Ctxd__V1__SelectContextRequest *req =
      ctxd__v1__select_context_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT,
               "malformed SelectContextRequest message");
    return;
  }
  uint64_t t0 = now_ms();
  int rc = job_prepare(ctx, msg, len, req, &j, &e);
  if (rc == 0)
    rc = select_run(&j.env, j.text, j.text_len, req->question,
                    strlen(req->question), &j.o, &res, &e);
  /* The slot goes back before the answer does: a client that sends its
   * next selection on receiving this one must find it free. */
  if (j.run_slot) {
    models_run_end(ctx->models);
    j.run_slot = 0;
  }
  uint64_t elapsed = now_ms() - t0;
  if (rc == CTXD_ECANCELED && rpc_is_done(c)) {
    LOG_DEBUG("select-cancelled method=%s ms=%llu",
              select_method_name(j.o.method), (unsigned long long)elapsed);
  } else if (rc) {
    rpc_finish_error(c, &e);
  } else {
    LOG_DEBUG("select method=%s input_tokens=%llu segments=%zu tokens=%u "
              "model_tokens=%llu ms=%llu",
              select_method_name(res.method),
              (unsigned long long)res.stats.input_tokens, res.n_segs,
              res.tokens, (unsigned long long)res.stats.model_tokens,
              (unsigned long long)elapsed);
    if (send_result(&j, &res, elapsed) == 0) rpc_finish(c, GRPC_OK, NULL);
  }
  select_result_free(&res);
  job_free(ctx, &j);
  ctxd__v1__select_context_request__free_unpacked(req, NULL);
}

static void select_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  select_call(c, msg, len, 0);
}

static void select_stream_on_message(rpc_call *c, const uint8_t *msg,
                                     size_t len) {
  select_call(c, msg, len, 1);
}

const rpc_method h_retrieval_select = {"/ctxd.v1.Retrieval/SelectContext",
                                       RPC_UNARY, 0, select_on_message, NULL,
                                       NULL, NULL};

const rpc_method h_retrieval_select_stream = {
    "/ctxd.v1.Retrieval/SelectContextStream", RPC_SERVER_STREAM, 0,
    select_stream_on_message, NULL, NULL, NULL};
