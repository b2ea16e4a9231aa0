/* handlers_admin.c - the ctxd.v1.Admin service (ctxctl's calls): Stats
 * reports the store's counters and sizes and each collection's state,
 * Verify runs the store's consistency check, CreateCollection /
 * DropCollection / ListCollections manage collections, and RebuildIndex
 * rebuilds a collection's vector index in the background while streaming
 * its progress. A Verify that finds problems still answers OK: the report is
 * the answer (ok=false plus the problems). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "coll.h"
#include "collections.h"
#include "ctx.h"
#include "ctxd/v1/admin.pb-c.h"
#include "err.h"
#include "grpc_wire.h"
#include "handlers.h"
#include "log.h"
#include "models.h"
#include "rechunk.h"
#include "rpc.h"
#include "store.h"

#ifndef CTXD_VERSION
#define CTXD_VERSION "unknown"
#endif

/* RebuildIndex sends its progress this often. */
#define REBUILD_PROGRESS_MS 200

/* ---- CollectionInfo ----------------------------------------------------- */

/* A coll_info as protobuf-c structs; strings point into `in`, which must
 * outlive the packing. */
typedef struct info_pb {
  Ctxd__V1__CollectionInfo info;
  Ctxd__V1__CollectionConfig config;
} info_pb;

static void info_fill(const coll_info *in, info_pb *out) {
  ctxd__v1__collection_info__init(&out->info);
  ctxd__v1__collection_config__init(&out->config);
  out->config.name = (char *)in->config.name;
  out->config.embedder = (char *)in->config.embedder;
  out->config.dim = in->config.dim;
  out->config.metric = (char *)coll_metric_name(in->config.metric);
  out->config.index_spec = (char *)in->config.index_spec;
  out->config.chunk_max_tokens = in->config.chunk_max_tokens;
  out->config.chunk_overlap_tokens = in->config.chunk_overlap_tokens;
  out->info.config = &out->config;
  out->info.documents = in->documents;
  out->info.chunks = in->chunks;
  out->info.bytes = in->bytes;
  out->info.tokens = in->tokens;
  out->info.vectors = in->vectors;
  out->info.indexed = in->indexed;
  out->info.masked = in->masked;
  out->info.trained = in->trained;
  out->info.exact_until_trained = in->exact_until_trained;
  out->info.min_train = in->min_train;
  out->info.rebuilding = in->rebuilding;
  out->info.rebuild_done = in->rebuild_done;
  out->info.rebuild_total = in->rebuild_total;
  out->info.rebuild_error = (char *)in->rebuild_error;
  out->info.covered_seq = in->covered_seq;
}

/* Every collection's info as a pointer array for a repeated field. On 0 the
 * caller frees *infos, *pbs and *ptrs (free()). */
static int info_list(ctxd_ctx *ctx, coll_info **infos, info_pb **pbs,
                     Ctxd__V1__CollectionInfo ***ptrs, size_t *n,
                     ctxd_error *e) {
  *pbs = NULL;
  *ptrs = NULL;
  int rc = coll_info_list(ctx->cs, infos, n, e);
  if (rc) return rc;
  *pbs = calloc(*n ? *n : 1, sizeof **pbs);
  *ptrs = calloc(*n ? *n : 1, sizeof **ptrs);
  if (!*pbs || !*ptrs) {
    free(*infos);
    free(*pbs);
    free(*ptrs);
    *infos = NULL;
    *pbs = NULL;
    *ptrs = NULL;
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory listing collections");
  }
  for (size_t i = 0; i < *n; i++) {
    info_fill(&(*infos)[i], &(*pbs)[i]);
    (*ptrs)[i] = &(*pbs)[i].info;
  }
  return 0;
}

/* ---- ModelInfo, RechunkProgress ------------------------------------------ */

/* An lm_info as a ModelInfo; strings point into `in`. */
static void model_fill(const lm_info *in, Ctxd__V1__ModelInfo *out) {
  ctxd__v1__model_info__init(out);
  out->name = (char *)in->name;
  out->architecture = (char *)in->arch;
  out->path = (char *)in->path;
  out->tokenizer = (char *)in->tokenizer;
  out->context_length = in->n_ctx_train;
  out->layers = in->n_layer;
  out->heads = in->n_head;
  out->kv_heads = in->n_head_kv;
  out->embedding_length = in->n_embd;
  out->vocab_size = in->n_vocab;
  out->params = in->n_params;
  out->size_bytes = in->size_bytes;
  out->vocab_only = in->vocab_only != 0;
}

static const char *rechunk_state_name(int s) {
  switch (s) {
    case RECHUNK_RUNNING: return "running";
    case RECHUNK_DONE: return "done";
    case RECHUNK_FAILED: return "failed";
    default: return "";
  }
}

/* A rechunk_status as a RechunkProgress; strings point into `in`. */
static void rechunk_fill(const rechunk_status *in,
                         Ctxd__V1__RechunkProgress *out) {
  ctxd__v1__rechunk_progress__init(out);
  out->state = (char *)rechunk_state_name(in->state);
  out->tokenizer = (char *)in->tokenizer;
  out->documents_done = in->done;
  out->documents_total = in->total;
  out->chunks = in->chunks;
  out->skipped = in->skipped;
  out->error = (char *)in->error;
  out->started_at = in->started_at;
  out->seconds = in->seconds;
}

/* ---- Stats, Verify ------------------------------------------------------ */

static void stats_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  store_stats st;
  coll_info *infos = NULL;
  info_pb *pbs = NULL;
  Ctxd__V1__CollectionInfo **ptrs = NULL;
  size_t n_infos = 0;
  Ctxd__V1__StatsRequest *req = ctxd__v1__stats_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed StatsRequest message");
    return;
  }
  ctxd__v1__stats_request__free_unpacked(req, NULL);
  ctxd_clearerr(&e);
  if (store_stats_get(ctx->st, &st, &e) ||
      info_list(ctx, &infos, &pbs, &ptrs, &n_infos, &e)) {
    rpc_finish_error(c, &e);
    return;
  }
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  Ctxd__V1__StatsResponse r = CTXD__V1__STATS_RESPONSE__INIT;
  r.documents = st.documents;
  r.chunks = st.chunks;
  r.bytes = st.bytes;
  r.tokens = st.tokens;
  r.store_bytes = st.file_bytes;
  r.map_bytes = st.map_bytes;
  r.map_used_bytes = st.map_used_bytes;
  r.schema_version = st.schema_version;
  r.version = (char *)CTXD_VERSION;
  r.uptime_seconds = (uint64_t)now.tv_sec > ctx->start_time
                         ? (uint64_t)now.tv_sec - ctx->start_time
                         : 0;
  /* The tokenizer in use, and the one the stored chunks were counted with
   * (the store's meta record; they differ until a rechunk). */
  lm_model *tk_ref;
  const tok *tk = models_tok(ctx->models, &tk_ref);
  r.tokenizer = (char *)tk->name;
  r.store_tokenizer = st.tokenizer;
  r.tokenizer_mismatch = st.documents > 0 && st.tokenizer[0] &&
                         strcmp(st.tokenizer, tk->name) != 0;
  r.last_seq = st.last_seq;
  r.n_collections = n_infos;
  r.collections = ptrs;
  lm_info mi, ti;
  Ctxd__V1__ModelInfo mpb, tpb;
  if (models_info(ctx->models, 0, &mi)) {
    model_fill(&mi, &mpb);
    r.model = &mpb;
  }
  if (models_info(ctx->models, 1, &ti)) {
    model_fill(&ti, &tpb);
    r.tokenizer_model = &tpb;
  }
  rechunk_status rs;
  Ctxd__V1__RechunkProgress rpb;
  rechunk_get(ctx->rechunk, &rs);
  if (rs.state != RECHUNK_NONE) {
    rechunk_fill(&rs, &rpb);
    r.rechunk = &rpb;
  }
  r.selections_running = models_running(ctx->models);
  if (rpc_send_pb(c, &r.base) == 0) rpc_finish(c, GRPC_OK, NULL);
  lm_model_free(tk_ref);
  free(infos);
  free(pbs);
  free(ptrs);
}

const rpc_method h_admin_stats = {"/ctxd.v1.Admin/Stats", RPC_UNARY, 0,
                                  stats_on_message, NULL, NULL, NULL};

static void verify_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  store_verify_report rep;
  Ctxd__V1__VerifyRequest *req =
      ctxd__v1__verify_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed VerifyRequest message");
    return;
  }
  ctxd__v1__verify_request__free_unpacked(req, NULL);
  ctxd_clearerr(&e);
  if (store_verify(ctx->st, &rep, &e)) {
    rpc_finish_error(c, &e);
    return;
  }
  Ctxd__V1__VerifyResponse r = CTXD__V1__VERIFY_RESPONSE__INIT;
  r.ok = rep.ok;
  r.documents_checked = rep.documents_checked;
  r.chunks_checked = rep.chunks_checked;
  r.n_problems = rep.n_problems;
  r.problems = rep.problems;
  if (rpc_send_pb(c, &r.base) == 0) rpc_finish(c, GRPC_OK, NULL);
  store_verify_free(&rep);
}

const rpc_method h_admin_verify = {"/ctxd.v1.Admin/Verify", RPC_UNARY, 0,
                                   verify_on_message, NULL, NULL, NULL};

/* ---- CreateCollection, DropCollection, ListCollections ------------------ */

/* Copy a client string into a fixed field, or refuse it as too long. */
static int copy_field(const char *what, const char *v, char *dst, size_t cap,
                      ctxd_error *e) {
  size_t n = strlen(v);
  if (n >= cap)
    return ctxd_seterr(e, CTXD_EINVAL, "config.%s is %zu bytes, more than %zu",
                       what, n, cap - 1);
  memcpy(dst, v, n + 1);
  return 0;
}

/* The collection a CreateCollection asks for: empty and zero fields take the
 * configured defaults (coll_config_defaults: the overlap only when
 * chunk_max_tokens is defaulted too); `dim` is read-only, but a client may
 * give it with embedder "none" (= "none:dim=N"), and a dim that disagrees
 * with the embedder is refused. */
static int create_config(const ctxd_ctx *ctx, const Ctxd__V1__CollectionConfig *r,
                         coll_config *c, ctxd_error *e) {
  const coll_config *d = &ctx->coll_defaults;
  int rc;
  memset(c, 0, sizeof *c);
  if (!r || !*r->name)
    return ctxd_seterr(e, CTXD_EINVAL, "config.name is required");
  rc = collections_name_copy(r->name, strlen(r->name), c->name, e);
  if (rc) return rc;
  rc = copy_field("embedder", r->embedder, c->embedder, sizeof c->embedder, e);
  if (rc) return rc;
  if (r->dim && strcmp(c->embedder, "none") == 0)
    snprintf(c->embedder, sizeof c->embedder, "none:dim=%u", r->dim);
  /* "model" records the loaded model's identity (models.h). */
  if (embed_is_model(c->embedder)) {
    char req[sizeof c->embedder];
    memcpy(req, c->embedder, sizeof req);
    rc = models_embedder_text(ctx->models, req, c->embedder,
                              sizeof c->embedder, e);
    if (rc) return rc;
  }
  c->metric = d->metric;
  if (*r->metric && (rc = coll_metric_parse(r->metric, &c->metric, e)))
    return rc;
  rc = copy_field("index_spec", r->index_spec, c->index_spec,
                  sizeof c->index_spec, e);
  if (rc) return rc;
  c->chunk_max_tokens = r->chunk_max_tokens;
  c->chunk_overlap_tokens = r->chunk_overlap_tokens;
  coll_config_defaults(c, d);
  rc = coll_config_check(c, e);
  if (rc) return rc;
  if (r->dim && r->dim != c->dim)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "config.dim %u disagrees with embedder \"%s\", whose "
                       "dimension is %u (dim is derived from the embedder)",
                       r->dim, c->embedder, c->dim);
  return 0;
}

/* 1 when a string of the CollectionConfig (field 1 of the request) holds a
 * NUL byte (see pbw_field_has_nul). */
static int create_has_nul(const uint8_t *msg, size_t len) {
  pbw_reader r;
  pbw_field f;
  pbw_init(&r, msg, len);
  while (pbw_next(&r, &f) == 1)
    if (f.num == 1 && f.wire_type == 2)
      for (uint32_t k = 1; k <= 5; k++)
        if (pbw_field_has_nul(f.data, f.len, k)) return 1;
  return 0;
}

static void create_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  coll_config cfg;
  coll_info info;
  info_pb pb;
  ctxd_clearerr(&e);
  Ctxd__V1__CreateCollectionRequest *req =
      ctxd__v1__create_collection_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT,
               "malformed CreateCollectionRequest message");
    return;
  }
  if (create_has_nul(msg, len)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "config contains a NUL byte");
  } else if (create_config(ctx, req->config, &cfg, &e) ||
             coll_create(ctx->cs, &cfg, &e) ||
             coll_info_get(ctx->cs, cfg.name, &info, &e)) {
    rpc_finish_error(c, &e);
  } else {
    LOG_INFO("collection-created name=%s embedder=\"%s\" dim=%u metric=%s "
             "index=\"%s\"",
             cfg.name, cfg.embedder, cfg.dim,
             coll_metric_name(cfg.metric), cfg.index_spec);
    info_fill(&info, &pb);
    if (rpc_send_pb(c, &pb.info.base) == 0) rpc_finish(c, GRPC_OK, NULL);
  }
  ctxd__v1__create_collection_request__free_unpacked(req, NULL);
}

const rpc_method h_admin_create_collection = {
    "/ctxd.v1.Admin/CreateCollection", RPC_UNARY, 0, create_on_message, NULL,
    NULL, NULL};

static void drop_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  char name[STORE_COLL_NAME_MAX + 1];
  uint64_t docs = 0;
  ctxd_clearerr(&e);
  Ctxd__V1__DropCollectionRequest *req =
      ctxd__v1__drop_collection_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT,
               "malformed DropCollectionRequest message");
    return;
  }
  /* No default here: dropping must name what it drops. */
  if (!*req->name) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "name is required");
  } else if (pbw_field_has_nul(msg, len, 1)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "name contains a NUL byte");
  } else if (collections_name_copy(req->name, strlen(req->name), name, &e) ||
             coll_drop(ctx->cs, name, &docs, &e)) {
    if (e.code == CTXD_ENOTFOUND)
      rpc_finish(c, GRPC_NOT_FOUND, "collection \"%s\" does not exist", name);
    else
      rpc_finish_error(c, &e);
  } else {
    LOG_INFO("collection-dropped name=%s documents=%llu", name,
             (unsigned long long)docs);
    Ctxd__V1__DropCollectionResponse r =
        CTXD__V1__DROP_COLLECTION_RESPONSE__INIT;
    r.documents = docs;
    if (rpc_send_pb(c, &r.base) == 0) rpc_finish(c, GRPC_OK, NULL);
  }
  ctxd__v1__drop_collection_request__free_unpacked(req, NULL);
}

const rpc_method h_admin_drop_collection = {
    "/ctxd.v1.Admin/DropCollection", RPC_UNARY, 0, drop_on_message, NULL,
    NULL, NULL};

static void list_colls_on_message(rpc_call *c, const uint8_t *msg,
                                  size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  coll_info *infos = NULL;
  info_pb *pbs = NULL;
  Ctxd__V1__CollectionInfo **ptrs = NULL;
  size_t n = 0;
  ctxd_clearerr(&e);
  Ctxd__V1__ListCollectionsRequest *req =
      ctxd__v1__list_collections_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT,
               "malformed ListCollectionsRequest message");
    return;
  }
  ctxd__v1__list_collections_request__free_unpacked(req, NULL);
  if (info_list(ctx, &infos, &pbs, &ptrs, &n, &e)) {
    rpc_finish_error(c, &e);
    return;
  }
  Ctxd__V1__ListCollectionsResponse r =
      CTXD__V1__LIST_COLLECTIONS_RESPONSE__INIT;
  r.n_collections = n;
  r.collections = ptrs;
  if (rpc_send_pb(c, &r.base) == 0) rpc_finish(c, GRPC_OK, NULL);
  free(infos);
  free(pbs);
  free(ptrs);
}

const rpc_method h_admin_list_collections = {
    "/ctxd.v1.Admin/ListCollections", RPC_UNARY, 0, list_colls_on_message,
    NULL, NULL, NULL};

/* ---- RebuildIndex --------------------------------------------------------- */

/* The call starts the rebuild (or, when one is already running for that
 * collection, watches it) and sends a RebuildProgress at once and then every
 * REBUILD_PROGRESS_MS, from the collection's coll_info, until the rebuild is
 * no longer running: the last message says "done" or "failed" (with the
 * error) and the call ends OK. The rebuild itself belongs to the collections
 * engine: a client that goes away stops only the progress. */
typedef struct rebuild_state {
  char name[STORE_COLL_NAME_MAX + 1];
} rebuild_state;

/* Send one progress message; 1 when the rebuild is over (the call is then
 * finished), 0 while it runs. */
static int rebuild_report(rpc_call *c, rebuild_state *st) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  coll_info info;
  ctxd_clearerr(&e);
  if (coll_info_get(ctx->cs, st->name, &info, &e)) {
    /* Dropped meanwhile, most likely: the rebuild went with it. */
    rpc_finish_error(c, &e);
    return 1;
  }
  Ctxd__V1__RebuildProgress p = CTXD__V1__REBUILD_PROGRESS__INIT;
  p.collection = st->name;
  p.done = info.rebuild_done;
  p.total = info.rebuild_total;
  int over = !info.rebuilding;
  p.state = (char *)(info.rebuilding ? "running"
                     : info.rebuild_error[0] ? "failed"
                                             : "done");
  p.error = info.rebuild_error;
  if (rpc_send_pb(c, &p.base) != 0) return 1; /* the call is gone */
  if (over) {
    rpc_finish(c, GRPC_OK, NULL);
    return 1;
  }
  rpc_set_timer(c, REBUILD_PROGRESS_MS);
  return 0;
}

static void rebuild_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  uint32_t cid;
  coll_config cfg;
  ctxd_clearerr(&e);
  Ctxd__V1__RebuildIndexRequest *req =
      ctxd__v1__rebuild_index_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT,
               "malformed RebuildIndexRequest message");
    return;
  }
  rebuild_state *st = calloc(1, sizeof *st);
  if (!st) {
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    goto done;
  }
  rpc_set_state(c, st);
  if (pbw_field_has_nul(msg, len, 1)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "collection contains a NUL byte");
    goto done;
  }
  if (collections_resolve(ctx->cs, req->collection, strlen(req->collection),
                          &cid, &cfg, &e)) {
    rpc_finish_error(c, &e);
    goto done;
  }
  snprintf(st->name, sizeof st->name, "%s", cfg.name);
  int rc = coll_rebuild_start(ctx->cs, st->name, &e);
  if (rc && rc != CTXD_EBUSY) {
    rpc_finish_error(c, &e);
    goto done;
  }
  LOG_INFO("rebuild-index collection=%s action=%s", st->name,
           rc ? "watch-running" : "started");
  rebuild_report(c, st);
done:
  ctxd__v1__rebuild_index_request__free_unpacked(req, NULL);
}

static void rebuild_on_timer(rpc_call *c) {
  rebuild_state *st = rpc_state(c);
  if (st) rebuild_report(c, st);
}

static void rebuild_on_close(rpc_call *c) {
  free(rpc_state(c));
  rpc_set_state(c, NULL);
}

const rpc_method h_admin_rebuild_index = {
    "/ctxd.v1.Admin/RebuildIndex", RPC_SERVER_STREAM, 0, rebuild_on_message,
    NULL, rebuild_on_timer, rebuild_on_close};

/* ---- LoadModel ------------------------------------------------------------ */

/* Loading runs on the worker that took the call (a GGUF is mapped, not
 * read: seconds at most); the swap itself is a pointer under a mutex, and
 * calls already running finish on the model they started with. */
static void load_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  lm_info in;
  int mismatch = 0;
  char recorded[64] = "";
  ctxd_clearerr(&e);
  Ctxd__V1__LoadModelRequest *req =
      ctxd__v1__load_model_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed LoadModelRequest message");
    return;
  }
  const char *what = req->tokenizer_only ? "tokenizer" : "model";
  if (pbw_field_has_nul(msg, len, 1)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "path contains a NUL byte");
  } else if (req->unload ? *req->path != '\0' : *req->path == '\0') {
    rpc_finish(c, GRPC_INVALID_ARGUMENT,
               req->unload ? "unload takes no path"
                           : "path is required (or unload)");
  } else if (models_load(ctx->models, req->unload ? NULL : req->path,
                         req->tokenizer_only, &in, &e) ||
             models_check_store(ctx->models, ctx->st, 1, &mismatch, recorded,
                                &e)) {
    rpc_finish_error(c, &e);
  } else {
    lm_model *tk_ref;
    const tok *tk = models_tok(ctx->models, &tk_ref);
    if (req->unload)
      LOG_INFO("%s-unloaded tokenizer=\"%s\"", what, tk->name);
    else
      LOG_INFO("%s-loaded name=\"%s\" arch=%s layers=%u params=%llu "
               "path=\"%s\" tokenizer=\"%s\"",
               what, in.name, in.arch, in.n_layer,
               (unsigned long long)in.n_params, in.path, tk->name);
    if (mismatch)
      LOG_WARN("tokenizer-mismatch store=\"%s\" current=\"%s\" "
               "action=\"run ctxctl rechunk\"",
               recorded, tk->name);
    Ctxd__V1__LoadModelResponse r = CTXD__V1__LOAD_MODEL_RESPONSE__INIT;
    Ctxd__V1__ModelInfo mpb;
    if (!req->unload) {
      model_fill(&in, &mpb);
      r.model = &mpb;
    }
    r.tokenizer = (char *)tk->name;
    r.store_tokenizer = recorded;
    r.tokenizer_mismatch = mismatch;
    if (rpc_send_pb(c, &r.base) == 0) rpc_finish(c, GRPC_OK, NULL);
    lm_model_free(tk_ref);
  }
  ctxd__v1__load_model_request__free_unpacked(req, NULL);
}

const rpc_method h_admin_load_model = {"/ctxd.v1.Admin/LoadModel", RPC_UNARY,
                                       0, load_on_message, NULL, NULL, NULL};

/* ---- Rechunk ---------------------------------------------------------------- */

/* As RebuildIndex: the call starts a rechunk (or follows the one running)
 * and sends its progress at once and then every REBUILD_PROGRESS_MS until
 * it ends; the run belongs to the daemon, so a client that goes away stops
 * only the progress. A run that failed ends the call OK with state
 * "failed" and the reason, as a rebuild does. */
static void rechunk_report(rpc_call *c) {
  ctxd_ctx *ctx = rpc_ctx(c);
  rechunk_status rs;
  Ctxd__V1__RechunkProgress p;
  rechunk_get(ctx->rechunk, &rs);
  rechunk_fill(&rs, &p);
  if (rpc_send_pb(c, &p.base) != 0) return; /* the call is gone */
  if (rs.state != RECHUNK_RUNNING)
    rpc_finish(c, GRPC_OK, NULL);
  else
    rpc_set_timer(c, REBUILD_PROGRESS_MS);
}

static void rechunk_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  ctxd_clearerr(&e);
  Ctxd__V1__RechunkRequest *req =
      ctxd__v1__rechunk_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed RechunkRequest message");
    return;
  }
  ctxd__v1__rechunk_request__free_unpacked(req, NULL);
  int rc = rechunk_start(ctx->rechunk, &e);
  if (rc && rc != CTXD_EBUSY) {
    rpc_finish_error(c, &e);
    return;
  }
  LOG_INFO("rechunk action=%s", rc ? "watch-running" : "started");
  rechunk_report(c);
}

const rpc_method h_admin_rechunk = {"/ctxd.v1.Admin/Rechunk",
                                    RPC_SERVER_STREAM, 0, rechunk_on_message,
                                    NULL, rechunk_report, NULL};
