/* server.h - the gRPC transport: h2c (HTTP/2 with prior knowledge) on a
 * libevent loop with nghttp2, dispatching calls through the method table
 * (methods_find) to handlers that run on the worker pool.
 *
 * Threading: everything in this module runs on the loop thread except the
 * rpc_* functions of rpc.h, which any thread may call. The server must be
 * created on the thread that runs its event_base. */
#ifndef CTXD_SERVER_H
#define CTXD_SERVER_H

#include <stdint.h>

#include "config.h"
#include "pool.h"
#include "rpc.h"

struct event_base;
struct ctxd_ctx;
typedef struct server server;

/* Counters, read on the loop thread (or after the loop stopped). */
typedef struct server_stats {
  uint64_t connections; /* accepted since start */
  uint64_t calls;       /* calls answered with a status */
  uint64_t calls_ok;    /* ... of which grpc-status 0 */
  uint64_t calls_cancelled; /* streams reset or lost before a status */
} server_stats;

/* Bind and listen on cfg->listen (HOST:PORT, [V6]:PORT or NAME:PORT; port
 * 0 picks a free port) and register with `base`. `workers` runs the
 * non-inline handler callbacks; `ctx` is what rpc_ctx() returns. cfg, ctx
 * and workers must outlive the server. With cfg->tls_cert the port speaks
 * TLS (tls.h); without it, cleartext h2c, which is refused on an address
 * that is not loopback unless cfg->plaintext. With cfg->auth_tokens_file
 * every call but grpc.health.v1.Health needs a bearer token of the
 * method's role (auth.h), checked before the handler sees the call
 * (UNAUTHENTICATED, PERMISSION_DENIED). Returns 0, or -1 with a
 * message in err (address unparsable, port taken, certificate or key
 * unreadable or mismatched, cleartext on the network, token file
 * unreadable, group/other-accessible or malformed, ...). */
int server_create(struct event_base *base, const ctxd_config *cfg,
                  struct ctxd_ctx *ctx, pool *workers, server **out,
                  char *err, size_t errlen);

/* SIGHUP: read the TLS certificate files and the token file again. What
 * fails to load is logged and the previous material stays in use. Returns
 * 0, or -1 when something failed to reload. Loop thread. */
int server_reload(server *s);

/* Replace the method table lookup (default methods_find): tests serve their
 * own methods through the real transport. Call before the first request. */
void server_set_lookup(server *s,
                       const rpc_method *(*lookup)(const char *path));

/* Serve an already connected socket (non-blocking) as if it had been
 * accepted (the fuzz target feeds raw connection bytes through a
 * socketpair this way). The server owns fd from now on and closes it,
 * also on failure. Loop thread. Returns 0, or -1 when out of memory. */
int server_adopt_fd(server *s, int fd);

/* The bound address as "HOST:PORT" (the real port when 0 was asked). */
const char *server_addr(const server *s);
int server_port(const server *s);

/* Graceful stop: close the listener, send GOAWAY on every connection, let
 * in-flight calls finish; after grace_ms cancel what is left. When the
 * last connection is gone, `drained(arg)` runs on the loop thread (typically
 * event_base_loopexit). Idempotent. */
void server_shutdown(server *s, unsigned grace_ms, void (*drained)(void *),
                     void *arg);

/* Close every connection now (their calls are cancelled and get on_close).
 * Call on the loop thread, or after the loop stopped but before the pool is
 * destroyed. */
void server_close_all(server *s);

void server_get_stats(const server *s, server_stats *out);

/* Free the server after the loop stopped and the pool was destroyed (no
 * more rpc_* calls can come). Closes any connection left. NULL is a no-op. */
void server_free(server *s);

#endif
