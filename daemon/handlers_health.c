/* handlers_health.c - grpc.health.v1.Health: Check and Watch.
 *
 * The server is SERVING while ctx->serving is set; a service is known when
 * the method table has a method of it ("" means the whole server). Both
 * methods are trivial and run inline on the loop thread. Messages are
 * decoded and encoded by hand: Check is the benchmark path and must not
 * allocate. */
#include <pthread.h>
#include <stdlib.h>

#include "../index/err.h"
#include "ctx.h"
#include "grpc_wire.h"
#include "handlers.h"

enum { HS_UNKNOWN = 0, HS_SERVING = 1, HS_NOT_SERVING = 2,
       HS_SERVICE_UNKNOWN = 3 };

/* HealthCheckRequest.service (field 1). -1 when malformed. */
static int parse_service(const uint8_t *msg, size_t len, const char **name,
                         size_t *name_len) {
  pbw_reader r;
  pbw_field f;
  int rc;
  *name = "";
  *name_len = 0;
  pbw_init(&r, msg, len);
  while ((rc = pbw_next(&r, &f)) == 1) {
    if (f.num == 1) {
      if (f.wire_type != 2) return -1;
      *name = (const char *)f.data;
      *name_len = f.len;
    }
  }
  return rc;
}

static int serving_status(rpc_call *c) {
  ctxd_ctx *ctx = rpc_ctx(c);
  return ctx && atomic_load(&ctx->serving) ? HS_SERVING : HS_NOT_SERVING;
}

static void send_status(rpc_call *c, int status) {
  uint8_t out[2] = {0x08, (uint8_t)status};
  /* proto3 leaves a zero enum out of the encoding. */
  rpc_send(c, out, status ? 2 : 0);
}

static void check_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  const char *svc;
  size_t n;
  if (parse_service(msg, len, &svc, &n) != 0) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed HealthCheckRequest");
    return;
  }
  if (!methods_has_service(svc, n)) {
    rpc_finish(c, GRPC_NOT_FOUND, "unknown service %.*s", (int)n, svc);
    return;
  }
  send_status(c, serving_status(c));
  rpc_finish(c, GRPC_OK, NULL);
}

const rpc_method h_health_check = {
    .path = "/grpc.health.v1.Health/Check",
    .kind = RPC_UNARY,
    .run_inline = 1,
    .on_message = check_on_message,
};

/* Watch: every open stream is on this list until on_close. */
typedef struct watcher {
  rpc_call *c;
  int known;
  int last;
  struct watcher *prev, *next;
} watcher;

static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;
static watcher *watchers;

static void watch_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  const char *svc;
  size_t n;
  if (parse_service(msg, len, &svc, &n) != 0) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed HealthCheckRequest");
    return;
  }
  watcher *w = calloc(1, sizeof *w);
  if (!w) {
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  w->c = c;
  w->known = methods_has_service(svc, n);
  rpc_set_state(c, w);
  pthread_mutex_lock(&watch_mu);
  w->last = w->known ? serving_status(c) : HS_SERVICE_UNKNOWN;
  send_status(c, w->last);
  if (w->known && w->last == HS_NOT_SERVING)
    rpc_finish(c, GRPC_UNAVAILABLE, "server shutting down");
  w->next = watchers;
  if (watchers) watchers->prev = w;
  watchers = w;
  pthread_mutex_unlock(&watch_mu);
}

static void watch_on_close(rpc_call *c) {
  watcher *w = rpc_state(c);
  if (!w) return;
  pthread_mutex_lock(&watch_mu);
  if (w->prev)
    w->prev->next = w->next;
  else
    watchers = w->next;
  if (w->next) w->next->prev = w->prev;
  pthread_mutex_unlock(&watch_mu);
  free(w);
}

void health_notify(void) {
  pthread_mutex_lock(&watch_mu);
  for (watcher *w = watchers; w; w = w->next) {
    if (!w->known) continue;
    int now = serving_status(w->c);
    if (now != w->last) {
      w->last = now;
      send_status(w->c, now);
    }
    if (now == HS_NOT_SERVING)
      rpc_finish(w->c, GRPC_UNAVAILABLE, "server shutting down");
  }
  pthread_mutex_unlock(&watch_mu);
}

const rpc_method h_health_watch = {
    .path = "/grpc.health.v1.Health/Watch",
    .kind = RPC_SERVER_STREAM,
    .run_inline = 1,
    .on_message = watch_on_message,
    .on_close = watch_on_close,
};
