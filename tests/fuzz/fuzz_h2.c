/* fuzz_h2.c - the gRPC transport (server.c: nghttp2 on libevent, gRPC
 * framing, headers, deadlines, compression, budgets) fed raw connection
 * bytes: each input is everything a client sends on one connection.
 *
 * One server (port 0 on loopback, never connected to) lives across inputs.
 * Each input goes through a socketpair whose one end the server adopts as
 * an accepted connection (server_adopt_fd); the harness writes the input,
 * half-closes, and runs the loop, reading and dropping the answers, until
 * the server closes its end. A server that does not close within
 * MAX_ROUNDS loop rounds is a failure (a connection the peer left would
 * leak). Methods: echo handlers of every kind under /fuzz.Echo/ plus the
 * daemon's real Health and server reflection handlers, all run on the loop
 * (run_inline), so an input's whole life is deterministic. */
#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>

#include "config.h"
#include "ctx.h"
#include "fuzz_common.h"
#include "handlers.h"
#include "log.h"
#include "pool.h"
#include "rpc.h"
#include "server.h"

#define MAX_ROUNDS 100000

static ctxd_config cfg;
static ctxd_ctx ctx;
static struct event_base *base;
static server *srv;
static pool *workers;
static rpc_method refl_v1, refl_v1alpha;

/* ------------------------------------------------------ echo handlers */

static void echo_message(rpc_call *c, const uint8_t *msg, size_t len) {
  rpc_send(c, msg, len);
}

static void unary_message(rpc_call *c, const uint8_t *msg, size_t len) {
  rpc_send(c, msg, len);
  rpc_finish(c, 0, NULL);
}

static void server_stream_message(rpc_call *c, const uint8_t *msg,
                                  size_t len) {
  for (int i = 0; i < 3; i++) rpc_send(c, msg, len);
  rpc_finish(c, 0, NULL);
}

static void error_message(rpc_call *c, const uint8_t *msg, size_t len) {
  (void)msg;
  rpc_finish(c, 3, "refused %zu bytes: caf\xc3\xa9 100%% \"bad\"\n", len);
}

/* Client stream: the state counts the bytes received. */
static void count_message(rpc_call *c, const uint8_t *msg, size_t len) {
  (void)msg;
  rpc_set_state(c, (void *)((uintptr_t)rpc_state(c) + len));
}

static void count_half_close(rpc_call *c) {
  uint64_t n = (uintptr_t)rpc_state(c);
  rpc_send(c, (const uint8_t *)&n, sizeof n);
  rpc_finish(c, 0, NULL);
}

static void ok_half_close(rpc_call *c) { rpc_finish(c, 0, NULL); }

static const rpc_method echo_methods[] = {
    {"/fuzz.Echo/Unary", RPC_UNARY, 1, unary_message, NULL, NULL, NULL},
    {"/fuzz.Echo/ServerStream", RPC_SERVER_STREAM, 1, server_stream_message,
     NULL, NULL, NULL},
    {"/fuzz.Echo/ClientStream", RPC_CLIENT_STREAM, 1, count_message,
     count_half_close, NULL, NULL},
    {"/fuzz.Echo/Bidi", RPC_BIDI, 1, echo_message, ok_half_close, NULL,
     NULL},
    {"/fuzz.Echo/Error", RPC_UNARY, 1, error_message, NULL, NULL, NULL},
};

static const rpc_method *fuzz_lookup(const char *path) {
  for (size_t i = 0; i < sizeof echo_methods / sizeof *echo_methods; i++)
    if (strcmp(path, echo_methods[i].path) == 0) return &echo_methods[i];
  if (strcmp(path, refl_v1.path) == 0) return &refl_v1;
  if (strcmp(path, refl_v1alpha.path) == 0) return &refl_v1alpha;
  const rpc_method *m = methods_find(path);
  return m && m->run_inline ? m : NULL; /* Health */
}

/* ------------------------------------------------------------- harness */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char err[256];
  (void)argc;
  (void)argv;
  log_level = LOG_LVL_ERROR;
  signal(SIGPIPE, SIG_IGN); /* as the daemon does */
  config_defaults(&cfg);
  snprintf(cfg.listen, sizeof cfg.listen, "127.0.0.1:0");
  ctx.cfg = &cfg;
  atomic_store(&ctx.serving, 1);
  refl_v1 = h_reflection_v1;
  refl_v1.run_inline = 1;
  refl_v1alpha = h_reflection_v1alpha;
  refl_v1alpha.run_inline = 1;
  workers = pool_create(1);
  base = event_base_new();
  if (!workers || !base ||
      server_create(base, &cfg, &ctx, workers, &srv, err, sizeof err) != 0) {
    fprintf(stderr, "fuzz_h2: cannot start the server: %s\n", err);
    exit(1);
  }
  server_set_lookup(srv, fuzz_lookup);
  return 0;
}

/* Read and drop what the server sent. 1 once it closed its end. */
static int drain(int fd) {
  uint8_t buf[65536];
  for (;;) {
    ssize_t r = read(fd, buf, sizeof buf);
    if (r > 0) continue;
    if (r == 0) return 1;
    if (errno == EINTR) continue;
    /* The server closed with our bytes unread: a close too. */
    if (errno == ECONNRESET) return 1;
    FUZZ_CHECK(errno == EAGAIN || errno == EWOULDBLOCK, "read: %s",
               strerror(errno));
    return 0;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  int sv[2];
  FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        0, sv) == 0,
             "socketpair: %s", strerror(errno));
  FUZZ_CHECK(server_adopt_fd(srv, sv[0]) == 0, "adopt failed");
  size_t off = 0;
  int closed = 0, rounds = 0;
  while (!closed && off < size && rounds++ < MAX_ROUNDS) {
    ssize_t w = send(sv[1], data + off, size - off, MSG_NOSIGNAL);
    if (w > 0)
      off += (size_t)w;
    else if (w < 0 && (errno == EPIPE || errno == ECONNRESET))
      break; /* the server already hung up */
    else
      FUZZ_CHECK(w < 0 && (errno == EAGAIN || errno == EINTR), "write: %s",
                 strerror(errno));
    event_base_loop(base, EVLOOP_NONBLOCK);
    closed = drain(sv[1]);
  }
  shutdown(sv[1], SHUT_WR);
  while (!closed && rounds++ < MAX_ROUNDS) {
    event_base_loop(base, EVLOOP_NONBLOCK);
    closed = drain(sv[1]);
  }
  FUZZ_CHECK(closed, "the server kept the connection open after %d rounds "
             "(input fully sent: %s)", rounds, off == size ? "yes" : "no");
  close(sv[1]);
  return 0;
}
