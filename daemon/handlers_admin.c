/* handlers_admin.c - the ctxd.v1.Admin service (ctxctl's calls): Stats
 * reports the store's counters and sizes, Verify runs the store's
 * consistency check. A Verify that finds problems still answers OK: the
 * report is the answer (ok=false plus the problems). */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "ctx.h"
#include "ctxd/v1/admin.pb-c.h"
#include "err.h"
#include "handlers.h"
#include "rpc.h"
#include "store.h"

#ifndef CTXD_VERSION
#define CTXD_VERSION "unknown"
#endif

static void stats_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  store_stats st;
  Ctxd__V1__StatsRequest *req = ctxd__v1__stats_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed StatsRequest message");
    return;
  }
  ctxd__v1__stats_request__free_unpacked(req, NULL);
  ctxd_clearerr(&e);
  if (store_stats_get(ctx->st, &st, &e)) {
    rpc_finish(c, ctxd_err_grpc_status(e.code), "%s", e.msg);
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
  /* The tokenizer in use; the store records the same name at start-up. */
  r.tokenizer = (char *)(ctx->tk && ctx->tk->name ? ctx->tk->name
                                                  : st.tokenizer);
  r.last_seq = st.last_seq;
  if (rpc_send_pb(c, &r.base) == 0) rpc_finish(c, GRPC_OK, NULL);
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
    rpc_finish(c, ctxd_err_grpc_status(e.code), "%s", e.msg);
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
