/* metrics.h - what an operator watches: Prometheus metrics (text format
 * 0.0.4) and /healthz on an HTTP port of their own (metrics.listen, served
 * by libevent's evhttp on a thread of its own, so a scrape never holds up
 * the gRPC loop), and the optional access log (log.access).
 *
 * The gRPC counters are process-wide and always kept (a few relaxed atomic
 * adds per call): the transport reports through metrics_call_end() and the
 * metrics_*_open/close() pairs from any thread. Everything else - store,
 * collections, jobs, models, process - is read when a scrape comes. */
#ifndef CTXD_METRICS_H
#define CTXD_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "../index/err.h"

struct ctxd_ctx;

/* ---- the transport's hooks (any thread) ---------------------------------- */

/* One call that is over. */
typedef struct metrics_call {
  /* The method table's :path of the call's method ("/ctxd.v1.Admin/Stats",
   * a string that lives as long as the process), or NULL when the path is
   * not a method of the table: such calls share the label "unknown", so
   * clients cannot create series. */
  const char *method;
  const char *path;    /* the :path the client sent (access log only) */
  int status;          /* grpc-status sent, or -1: the stream ended before
                        * one was (client cancel, reset, lost connection),
                        * counted as CANCELLED */
  uint64_t duration_ns; /* request HEADERS to stream close */
  uint64_t bytes_in, bytes_out; /* DATA payload (gRPC framed messages) */
  int peer_fd;         /* the connection's socket, for the access log's peer;
                        * -1 if unknown */
  const char *user;    /* the bearer token's NAME (auth.h); "" or NULL: none */
} metrics_call;

void metrics_call_end(const metrics_call *mc);

/* A request stream opened / closed (the in-flight gauge). */
void metrics_stream_open(void);
void metrics_stream_close(void);

/* A client connection was accepted / closed. */
void metrics_conn_open(void);
void metrics_conn_close(void);

/* log.access: write one `msg=access` line per metrics_call_end(), whatever
 * log.level says. Set before serving. */
void metrics_set_access_log(int on);

/* ---- the HTTP endpoint ---------------------------------------------------- */

typedef struct metrics metrics;

/* Listen on `addr` (HOST:PORT, [IPV6]:PORT; port 0 picks a free one) and
 * serve GET /metrics and GET /healthz on a thread of its own. Until
 * metrics_set_ctx(), /healthz answers 503 "starting" and /metrics has the
 * process and gRPC families only. Errors: CTXD_EINVAL (addr does not
 * parse), CTXD_EIO (cannot listen: the message names the address and the
 * reason), CTXD_ENOMEM. Free with metrics_stop(). */
int metrics_start(const char *addr, metrics **out, ctxd_error *e);

/* The bound address, "HOST:PORT" (the real port when 0 was asked). */
const char *metrics_addr(const metrics *m);

/* The daemon is up: scrapes read its store, collections, jobs and models
 * from now on, and /healthz follows ctx->serving (200 "ok" while 1, 503
 * "stopping" after). ctx and what it holds must stay valid until
 * metrics_stop(). */
void metrics_set_ctx(metrics *m, struct ctxd_ctx *ctx);

/* Stop serving, join the thread (a scrape in progress finishes first),
 * free. Call before the store, collections, jobs or models close. NULL is
 * a no-op. */
void metrics_stop(metrics *m);

/* ---- text exposition (exposed for the unit test) -------------------------- */

/* A growing text buffer; `oom` sticks once an append failed. */
typedef struct metrics_text {
  char *buf;
  size_t len, cap;
  int oom;
} metrics_text;

/* `# HELP name help` and `# TYPE name type` (type: counter, gauge,
 * histogram, ...); the help text is escaped (\\ and \n). */
void metrics_text_family(metrics_text *t, const char *name, const char *type,
                         const char *help);

/* One sample line `name{k="v",...} value`. `labels` is NULL or a
 * NULL-terminated list of name, value pairs; values are escaped (\\, \",
 * \n) and invalid UTF-8 bytes become U+FFFD. Integral values print without
 * a fraction, infinities as +Inf/-Inf, NaN as NaN. */
void metrics_text_sample(metrics_text *t, const char *name,
                         const char *const *labels, double value);

/* The same with an exact integer value. */
void metrics_text_sample_u64(metrics_text *t, const char *name,
                             const char *const *labels, uint64_t value);

/* The whole exposition as a scrape returns it; ctx NULL: the process and
 * gRPC families only. On 0, t->buf holds t->len bytes the caller frees.
 * Errors: CTXD_ENOMEM. */
int metrics_render(struct ctxd_ctx *ctx, metrics_text *t, ctxd_error *e);

#endif
