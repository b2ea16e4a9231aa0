/* rpc.h - the contract between the gRPC transport (server.c) and the method
 * handlers (handlers_*.c).
 *
 * The transport owns HTTP/2 and gRPC framing on the libevent loop thread. For
 * each request stream it finds the method in the table, then runs the
 * handler's callbacks as tasks on the worker pool - never on the loop. Tasks
 * of one call run one at a time and in order (a call is never entered by two
 * workers at once), so per-call state needs no lock.
 *
 * A handler sends with rpc_send() and ends the call with rpc_finish(); both
 * may be called from any thread (typically the worker running the callback,
 * or a job thread), are non-blocking, and hand the bytes to the loop. After
 * rpc_finish() the handler must not use the call again except from inside a
 * callback that is already running. */
#ifndef CTXD_RPC_H
#define CTXD_RPC_H

#include <stddef.h>
#include <stdint.h>

typedef struct rpc_call rpc_call;

typedef enum rpc_kind {
  RPC_UNARY,         /* one request, one response */
  RPC_CLIENT_STREAM, /* many requests, one response */
  RPC_SERVER_STREAM, /* one request, many responses */
  RPC_BIDI,          /* many requests, many responses */
} rpc_kind;

typedef struct rpc_method {
  const char *path; /* "/ctxd.v1.Documents/Put" */
  rpc_kind kind;
  /* Non-zero only for trivial handlers (no I/O, no locks held for long,
   * microseconds of CPU, e.g. Health.Check): their callbacks run directly on
   * the loop thread instead of a worker, which saves two thread hand-offs. */
  int run_inline;
  /* Called for each complete request message (already de-framed, length
   * checked against the limit, decompressed if needed). For RPC_UNARY and
   * RPC_SERVER_STREAM it is called exactly once; the transport answers a
   * call that ends with no message, or sends a second one, by itself. `msg`
   * is valid only during the callback. */
  void (*on_message)(rpc_call *c, const uint8_t *msg, size_t len);
  /* The client half-closed (no more messages). May be NULL: then for
   * streaming-request kinds nothing happens and the handler must finish the
   * call itself. Not called if the call already finished. */
  void (*on_half_close)(rpc_call *c);
  /* A timer set with rpc_set_timer() fired. May be NULL. */
  void (*on_timer)(rpc_call *c);
  /* The call is over (finished, cancelled by the client, reset, deadline
   * passed or connection lost): free the handler state. Always called
   * exactly once, as the call's last task, after any other callback. */
  void (*on_close)(rpc_call *c);
} rpc_method;

/* Per-call handler state. */
void rpc_set_state(rpc_call *c, void *state);
void *rpc_state(rpc_call *c);

/* The method path and a header value of the request ("" if absent). */
const char *rpc_path(rpc_call *c);

/* The NAME of the bearer token that authenticated the call (auth.h), ""
 * when authentication is off or the method is open. Valid for the call's
 * life. */
const char *rpc_auth_name(rpc_call *c);

/* Queue one response message (protobuf bytes; the transport adds the gRPC
 * 5-byte prefix). Returns 0, or -1 when the call is already finished or gone
 * (the message is dropped). Bytes are copied. */
int rpc_send(rpc_call *c, const uint8_t *msg, size_t len);

/* Pack a protobuf-c message and queue it as with rpc_send(). Returns 0, or
 * -1 when the call is gone or memory ran out (the call is then finished with
 * RESOURCE_EXHAUSTED). */
struct ProtobufCMessage;
int rpc_send_pb(rpc_call *c, const struct ProtobufCMessage *m);

/* Bytes queued by rpc_send() not yet written to the socket: a producer that
 * can run ahead (a job streaming events) keeps this bounded. */
size_t rpc_pending_bytes(rpc_call *c);

/* End the call with a gRPC status and message (printf-style, may be NULL).
 * The message is percent-encoded by the transport. Idempotent: only the
 * first finish counts. */
void rpc_finish(rpc_call *c, int grpc_status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* rpc_finish() with the status ctxd_err_grpc_status(e->code) and e->msg:
 * how a handler passes an index/ error on. */
struct ctxd_error;
void rpc_finish_error(rpc_call *c, const struct ctxd_error *e);

/* 1 once the call is over for any reason (client cancel, reset, deadline,
 * lost connection, finished); long handlers poll it to stop early. */
int rpc_is_done(rpc_call *c);

/* Absolute deadline in CLOCK_MONOTONIC nanoseconds, 0 if none. The
 * transport itself answers DEADLINE_EXCEEDED when it passes. */
uint64_t rpc_deadline_ns(rpc_call *c);

/* Arrange for on_timer to run once after `ms` milliseconds (replacing an
 * earlier timer of this call). Any thread. */
void rpc_set_timer(rpc_call *c, unsigned ms);

/* Shared daemon context handed to handlers (store, config, start time...). */
struct ctxd_ctx;
struct ctxd_ctx *rpc_ctx(rpc_call *c);

#endif
