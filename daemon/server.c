/* server.c - gRPC over h2c: nghttp2 sessions on raw non-blocking sockets
 * driven by one libevent loop, calls dispatched to handlers (rpc.h).
 *
 * Threads. The loop thread owns sockets, nghttp2 sessions and every
 * loop-only field of a call. Handlers run on the pool (one strand per call)
 * or, for run_inline methods, directly on the loop. rpc_send/rpc_finish
 * copy into the call's output queue under the call's mutex and mark the call
 * "dirty"; dirty calls are pumped by the loop (headers submitted, data
 * resumed, receive window consumed), and each touched connection is flushed
 * once: all pending nghttp2 output is gathered into one buffer and written
 * with one write(2). Wake-ups from workers go through an eventfd and are
 * coalesced (only an empty->non-empty transition writes it).
 *
 * Lifetime. A call is reference-counted: one reference for the stream (the
 * loop drops it when nghttp2 closes the stream), one per queued pool task,
 * one while it sits on a dirty list. When the stream closes, the handler's
 * on_close is queued behind every other task of the call, so it is the
 * last one. rpc_* on a call whose stream is gone are harmless no-ops.
 *
 * Compression. Request messages may be compressed (grpc-encoding gzip or
 * deflate). The loop only checks the flag against the header; the message
 * is inflated where on_message runs, on the worker, so the loop never spends
 * CPU on it (run_inline methods excepted, see deliver_message()).
 * Responses are never compressed.
 *
 * Flow control. Automatic WINDOW_UPDATEs are off: received bytes are
 * consumed (nghttp2_session_consume) while the call's messages waiting for
 * the handler stay under RECV_QUEUE_LIMIT, so a slow handler stops the
 * client instead of growing our memory. Sending relies on nghttp2: the data
 * provider reads the call's output queue and defers when it is empty.
 *
 * In-flight budget. Every request message is charged, from the moment its
 * length prefix is read (before its buffer is allocated) until its handler
 * callback returned, against its connection's budget
 * (server.max_conn_inflight_bytes) and the daemon's
 * (server.max_inflight_bytes). A message that does not fit is refused
 * RESOURCE_EXHAUSTED without being allocated: the budgets cap what clients
 * can make the daemon hold, however many connections and streams they
 * open. */
#include "server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../index/err.h"
#include "auth.h"
#include "grpc_wire.h"
#include "handlers.h"
#include "log.h"
#include "metrics.h"
#include "rpc.h"
#include "tls.h"

#define STREAM_WINDOW (1 << 20)       /* SETTINGS_INITIAL_WINDOW_SIZE */
#define CONN_WINDOW (16 << 20)        /* connection receive window */
#define RECV_QUEUE_LIMIT (4u << 20)   /* request bytes queued per call */
#define OUT_HIGH_WATER (256u << 10)   /* stop pulling frames above this */
#define READ_CHUNK (64u << 10)
#define MAX_HEADER_LIST 65536         /* request header list, as HPACK counts */
/* Request messages are handed to the handler only while the call's unsent
 * response bytes stay under OUT_QUEUE_LIMIT and fewer than MAX_INFLIGHT of
 * them wait on its strand: a client that sends small requests with large
 * answers and never reads them cannot grow the output queue without end. */
#define OUT_QUEUE_LIMIT (1u << 20)
#define MAX_INFLIGHT 64
/* Largest decompressed request of a run_inline method: it inflates on the
 * loop thread, which must not spend max_message_bytes of CPU on one bomb. */
#define INLINE_INFLATE_MAX (64u << 10)
#define GRPC_MSG_MAX 512              /* encoded grpc-message, truncated */
#define PATH_MAX_LEN 200
#define ENC_NAME_MAX 40               /* unsupported grpc-encoding, quoted */

typedef struct conn conn;

/* A connection's in-flight request bytes. Shared with its calls (which
 * give bytes back from worker threads, maybe after the connection is
 * gone), hence reference-counted. */
typedef struct conn_budget {
  atomic_size_t used;
  atomic_int refs;
} conn_budget;

struct rpc_call {
  atomic_int refs;
  server *srv;
  pthread_mutex_t mu;

  /* --- loop thread only --- */
  conn *conn;            /* NULL once the stream is closed */
  int32_t stream_id;
  const rpc_method *m;   /* NULL until validated */
  const char *mpath;     /* the table's path of :path, for metrics; or NULL */
  uint64_t t0_ns, bytes_in, bytes_out; /* for metrics */
  rpc_call *cprev, *cnext; /* in conn->calls */
  grpc_deframer df;
  size_t df_resv;        /* budget charged for the message being gathered */
  conn_budget *budget;   /* the connection's, referenced */
  size_t owed;           /* received, not yet given back to the window */
  uint32_t n_msgs;
  uint64_t deadline_ns;
  uint32_t hdr_bytes;    /* request header list so far (name+value+32) */
  struct event *deadline_ev, *timer_ev;
  unsigned is_post : 1, ct_ok : 1, bad_timeout : 1, started : 1,
      headers_sent : 1, deferred : 1, trailers_sent : 1, counted : 1,
      half_held : 1;     /* half-close waits behind held messages */
  uint8_t encoding; /* enum grpc_encoding of grpc-encoding */
  uint8_t auth_seen;  /* authorization headers seen */
  uint8_t auth_res;   /* enum auth_result of the header */
  uint8_t auth_role;  /* enum auth_role of the token, when AUTH_OK */
  char auth_name[AUTH_NAME_MAX + 1]; /* the token's NAME, for logs */
  char path[PATH_MAX_LEN];
  char bad_encoding[ENC_NAME_MAX]; /* for the error, when GRPC_ENC_UNKNOWN */
  struct msg_task *parked; /* unary request held until the half-close */
  struct msg_task *held_head, *held_tail; /* not yet given to the strand */

  /* --- shared, under mu --- */
  uint8_t *out;          /* framed response bytes */
  size_t out_off, out_len, out_cap;
  int finished, status;
  size_t msg_len;        /* encoded grpc-message length */
  unsigned timer_ms;
  int timer_req;
  char msg[GRPC_MSG_MAX];
  uint8_t out_inline[64];

  /* --- atomics --- */
  atomic_int done;
  atomic_int dirty;      /* on a dirty list */
  atomic_size_t queued;  /* request bytes handed to the pool, unprocessed */
  atomic_int inflight;   /* message tasks on the strand, not yet done */
  atomic_int has_held;   /* held_head != NULL, for msg_task_done */
  rpc_call *next_dirty;

  void *state;
  pool_strand strand;
  pool_task t_half, t_close;
};

struct conn {
  server *srv;
  int fd;
  tls_conn *tls;         /* NULL for h2c */
  conn_budget *budget;
  int read_on_write;     /* TLS read waits for the socket to be writable */
  struct event *rev, *wev;
  struct event *hs_ev;   /* handshake deadline; NULL once SETTINGS came */
  nghttp2_session *h2;
  uint8_t *out;
  size_t out_off, out_len, out_cap;
  rpc_call *calls;
  conn *prev, *next;
  conn *next_flush;
  int in_flush_list;
  int dead;
};

struct server {
  struct event_base *base;
  const ctxd_config *cfg;
  struct ctxd_ctx *ctx;
  pool *workers;
  pthread_t loop_thread;
  int lfd;
  struct event *accept_ev;
  int efd;
  struct event *wake_ev;  /* local wake-up (event_active) */
  struct event *efd_ev;   /* wake-ups from other threads */
  conn *conns;
  uint32_t n_conns;
  conn *flush_head;
  int in_io;
  rpc_call *local_dirty;        /* loop thread only */
  pthread_mutex_t mu;           /* remote_dirty */
  rpc_call *remote_dirty;
  nghttp2_session_callbacks *cbs;
  nghttp2_option *opt;
  const rpc_method *(*lookup)(const char *path);
  char addr[300];
  int port;
  int loopback;           /* bound to a loopback address */
  tls_ctx *tls;           /* NULL: cleartext h2c */
  auth *auth;             /* NULL: no authentication */
  atomic_size_t inflight; /* request bytes charged, all connections */
  size_t inflight_max, conn_inflight_max; /* effective limits */
  int stopping;
  struct event *grace_ev;
  void (*drained)(void *);
  void *drained_arg;
  server_stats stats;
};

/* Pre-built header lists; nghttp2 copies nothing marked NO_COPY. */
#define NV(n, v)                                                 \
  {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, \
   NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE}
static const nghttp2_nv resp_headers[] = {
    NV(":status", "200"),
    NV("content-type", "application/grpc"),
    NV("grpc-accept-encoding", GRPC_ACCEPT_ENCODING),
};
static const char *const status_str[] = {"0",  "1",  "2",  "3",  "4",  "5",
                                         "6",  "7",  "8",  "9",  "10", "11",
                                         "12", "13", "14", "15", "16"};

static int conn_flush(conn *cn);
static void conn_free(conn *cn);
static void call_mark_dirty(rpc_call *c);
static void call_finish_internal(rpc_call *c, int status, const char *fmt,
                                 ...) __attribute__((format(printf, 3, 4)));

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ---------------------------------------------------------------- calls */

static void call_ref(rpc_call *c) {
  atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

static void budget_unref(conn_budget *b) {
  if (b && atomic_fetch_sub(&b->refs, 1) == 1) free(b);
}

/* Charge n request bytes to the call's connection and the daemon, if both
 * have room. Loop thread (the only one that charges, so check-then-add
 * cannot overshoot; other threads only give back). 0, or -1 with nothing
 * charged. */
static int inflight_take(rpc_call *c, size_t n) {
  server *s = c->srv;
  if (atomic_load(&c->budget->used) + n > s->conn_inflight_max ||
      atomic_load(&s->inflight) + n > s->inflight_max)
    return -1;
  atomic_fetch_add(&c->budget->used, n);
  atomic_fetch_add(&s->inflight, n);
  return 0;
}

/* Give charged bytes back. Any thread. */
static void inflight_give(rpc_call *c, size_t n) {
  if (!n) return;
  atomic_fetch_sub(&c->budget->used, n);
  atomic_fetch_sub(&c->srv->inflight, n);
}

/* The largest message the budgets can take now (without its prefix). */
static uint64_t inflight_room(rpc_call *c) {
  server *s = c->srv;
  size_t cu = atomic_load(&c->budget->used), su = atomic_load(&s->inflight);
  size_t room = cu < s->conn_inflight_max ? s->conn_inflight_max - cu : 0;
  size_t sroom = su < s->inflight_max ? s->inflight_max - su : 0;
  if (sroom < room) room = sroom;
  return room > GRPC_PREFIX_LEN ? room - GRPC_PREFIX_LEN : 0;
}

static void call_unref(rpc_call *c) {
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return;
  inflight_give(c, c->df_resv); /* a message never completed */
  budget_unref(c->budget);
  grpc_deframer_free(&c->df);
  if (c->out != c->out_inline) free(c->out);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

static rpc_call *call_new(conn *cn, int32_t stream_id) {
  rpc_call *c = malloc(sizeof *c);
  if (!c) return NULL;
  /* Only the small head needs zeroing; msg/out_inline are written before
   * they are read. */
  memset(c, 0, offsetof(rpc_call, msg));
  atomic_init(&c->refs, 1);
  atomic_init(&c->done, 0);
  atomic_init(&c->dirty, 0);
  atomic_init(&c->queued, 0);
  atomic_init(&c->inflight, 0);
  atomic_init(&c->has_held, 0);
  c->next_dirty = NULL;
  c->state = NULL;
  pool_strand_init(&c->strand);
  c->srv = cn->srv;
  pthread_mutex_init(&c->mu, NULL);
  c->conn = cn;
  c->stream_id = stream_id;
  c->t0_ns = now_ns();
  metrics_stream_open();
  c->out = c->out_inline;
  c->out_cap = sizeof c->out_inline;
  c->budget = cn->budget;
  atomic_fetch_add(&c->budget->refs, 1);
  grpc_deframer_init(&c->df, cn->srv->cfg->max_message_bytes);
  c->cnext = cn->calls;
  if (cn->calls) cn->calls->cprev = c;
  cn->calls = c;
  return c;
}

/* Append bytes to the output queue; mu held. */
static int out_append(rpc_call *c, const uint8_t *p, size_t n) {
  if (c->out_len + n > c->out_cap) {
    if (c->out_off > 0) {
      memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
      c->out_len -= c->out_off;
      c->out_off = 0;
    }
    if (c->out_len + n > c->out_cap) {
      size_t cap = c->out_cap * 2;
      while (cap < c->out_len + n) cap *= 2;
      uint8_t *b = c->out == c->out_inline ? malloc(cap)
                                           : realloc(c->out, cap);
      if (!b) return -1;
      if (c->out == c->out_inline) memcpy(b, c->out_inline, c->out_len);
      c->out = b;
      c->out_cap = cap;
    }
  }
  memcpy(c->out + c->out_len, p, n);
  c->out_len += n;
  return 0;
}

/* Record the final status; mu held. Returns 0 if this was the first. */
static int do_finish(rpc_call *c, int status, const char *fmt, va_list ap) {
  if (c->finished) return -1;
  c->finished = 1;
  c->status = status < 0 || status > 16 ? GRPC_UNKNOWN : status;
  c->msg_len = 0;
  if (fmt && *fmt) {
    char raw[GRPC_MSG_MAX];
    int n = vsnprintf(raw, sizeof raw, fmt, ap);
    if (n > 0) {
      size_t rn = (size_t)n < sizeof raw ? (size_t)n : sizeof raw - 1;
      c->msg_len = grpc_percent_encode(raw, rn, c->msg, sizeof c->msg);
    }
  }
  atomic_store(&c->done, 1);
  return 0;
}

static void call_finish_internal(rpc_call *c, int status, const char *fmt,
                                 ...) {
  va_list ap;
  va_start(ap, fmt);
  pthread_mutex_lock(&c->mu);
  int first = do_finish(c, status, fmt, ap) == 0;
  if (first && status != GRPC_OK) c->out_off = c->out_len = 0;
  pthread_mutex_unlock(&c->mu);
  va_end(ap);
  if (first) call_mark_dirty(c);
}

/* ----------------------------------------------------- handler dispatch */

typedef struct msg_task {
  pool_task t;
  rpc_call *c;
  const uint8_t *data;
  size_t len;
  size_t wire;    /* bytes of the request stream this message used */
  uint8_t *owned; /* gathered buffer, or NULL when data is inline */
  int enc;        /* enum grpc_encoding the bytes are in */
  uint8_t inl[];
} msg_task;

/* Hand one request message to on_message, inflating it first when `enc`
 * is not identity. Runs where on_message runs: on the call's strand, or on
 * the loop for run_inline methods, whose callbacks must stay there. On the
 * loop the work is bounded: the output stops at max_message_bytes (a bomb
 * ends with RESOURCE_EXHAUSTED once it got there, and at INLINE_INFLATE_MAX
 * for inline methods, whose requests are tiny), so the loop spends
 * microseconds on a real client's message and well under a millisecond on
 * a bomb.
 * Any thread; the inflated copy is freed when on_message returns. */
static void deliver_message(rpc_call *c, int enc, const uint8_t *p, size_t n) {
  uint8_t *plain;
  size_t plain_len;
  uint64_t limit = c->srv->cfg->max_message_bytes;
  if (c->m->run_inline && limit > INLINE_INFLATE_MAX) limit = INLINE_INFLATE_MAX;
  if (enc == GRPC_ENC_IDENTITY) {
    c->m->on_message(c, p, n);
    return;
  }
  int rc = grpc_inflate(enc, p, n, limit, &plain, &plain_len);
  if (rc == GRPC_INFLATE_TOO_LARGE) {
    call_finish_internal(c, GRPC_RESOURCE_EXHAUSTED,
                         "decompressed message exceeds the limit of %llu "
                         "bytes",
                         (unsigned long long)limit);
  } else if (rc == GRPC_INFLATE_NOMEM) {
    call_finish_internal(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
  } else if (rc != GRPC_INFLATE_OK) {
    call_finish_internal(c, GRPC_INTERNAL, "could not decompress message");
  } else {
    /* Handlers get a valid pointer even for an empty message. */
    c->m->on_message(c, plain ? plain : (const uint8_t *)"", plain_len);
    free(plain);
  }
}

static void msg_task_run(pool_task *t) {
  msg_task *mt = (msg_task *)t;
  rpc_call *c = mt->c;
  if (!atomic_load(&c->done)) deliver_message(c, mt->enc, mt->data, mt->len);
}

static void msg_task_done(pool_task *t) {
  msg_task *mt = (msg_task *)t;
  rpc_call *c = mt->c;
  size_t before = atomic_fetch_sub(&c->queued, mt->wire);
  int left = atomic_fetch_sub(&c->inflight, 1) - 1;
  inflight_give(c, mt->wire);
  /* Crossing back under the limit: let the loop reopen the window. */
  int wake = before >= RECV_QUEUE_LIMIT && before - mt->wire < RECV_QUEUE_LIMIT;
  /* Messages wait in the held list: let the loop hand over more. */
  if (atomic_load(&c->has_held) && (left == 0 || left == MAX_INFLIGHT / 2))
    wake = 1;
  if (wake) call_mark_dirty(c);
  free(mt->owned);
  free(mt);
  call_unref(c);
}

static void half_task_run(pool_task *t) {
  rpc_call *c = (rpc_call *)((char *)t - offsetof(rpc_call, t_half));
  if (!atomic_load(&c->done) && c->m->on_half_close) c->m->on_half_close(c);
}

static void close_task_run(pool_task *t) {
  rpc_call *c = (rpc_call *)((char *)t - offsetof(rpc_call, t_close));
  if (c->m->on_close) c->m->on_close(c);
}

static void embedded_task_done(pool_task *t) {
  rpc_call *c = t->run == half_task_run
                    ? (rpc_call *)((char *)t - offsetof(rpc_call, t_half))
                    : (rpc_call *)((char *)t - offsetof(rpc_call, t_close));
  call_unref(c);
}

typedef struct timer_task {
  pool_task t;
  rpc_call *c;
} timer_task;

static void timer_task_run(pool_task *t) {
  rpc_call *c = ((timer_task *)t)->c;
  if (!atomic_load(&c->done) && c->m->on_timer) c->m->on_timer(c);
}

static void timer_task_done(pool_task *t) {
  rpc_call *c = ((timer_task *)t)->c;
  free(t);
  call_unref(c);
}

/* Run a task now (inline methods, on the loop) or queue it on the call's
 * strand. The task holds a reference either way until done(). */
static void call_dispatch(rpc_call *c, pool_task *t) {
  call_ref(c);
  if (c->m->run_inline) {
    t->run(t);
    if (t->done) t->done(t);
  } else {
    pool_post(c->srv->workers, &c->strand, t);
  }
}

/* Give a message task to the call's strand (or run it, inline). */
static void post_msg(rpc_call *c, msg_task *mt) {
  atomic_fetch_add(&c->inflight, 1);
  call_dispatch(c, &mt->t);
}

static size_t call_out_pending(rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  size_t n = c->out_len - c->out_off;
  pthread_mutex_unlock(&c->mu);
  return n;
}

/* Drop held messages that will never be delivered (the call is over). */
static void drop_held(rpc_call *c) {
  while (c->held_head) {
    msg_task *mt = c->held_head;
    c->held_head = (msg_task *)mt->t.next;
    atomic_fetch_sub(&c->queued, mt->wire);
    inflight_give(c, mt->wire);
    free(mt->owned);
    free(mt);
  }
  c->held_tail = NULL;
  c->half_held = 0;
  atomic_store(&c->has_held, 0);
}

/* Loop thread: move held messages to the strand while the call has room
 * (fewer than MAX_INFLIGHT on the strand, unsent output under
 * OUT_QUEUE_LIMIT), then the half-close that waited behind them. More room
 * comes from msg_task_done() and data_read_cb(), which mark the call dirty. */
static void call_release(rpc_call *c) {
  while (c->held_head) {
    if (atomic_load(&c->done)) {
      drop_held(c);
      return;
    }
    if (atomic_load(&c->inflight) >= MAX_INFLIGHT ||
        call_out_pending(c) >= OUT_QUEUE_LIMIT)
      return;
    msg_task *mt = c->held_head;
    c->held_head = (msg_task *)mt->t.next;
    if (!c->held_head) c->held_tail = NULL;
    post_msg(c, mt);
  }
  atomic_store(&c->has_held, 0);
  if (c->half_held) {
    c->half_held = 0;
    c->t_half.run = half_task_run;
    c->t_half.done = embedded_task_done;
    call_dispatch(c, &c->t_half);
  }
}

/* Queue a message behind the held ones and release what fits. */
static void hold_msg(rpc_call *c, msg_task *mt) {
  mt->t.next = NULL;
  /* Before release() reads inflight: a worker that finishes a task after
   * that read must see the flag (see msg_task_done). */
  atomic_store(&c->has_held, 1);
  if (c->held_tail)
    c->held_tail->t.next = &mt->t;
  else
    c->held_head = mt;
  c->held_tail = mt;
  call_release(c);
}

/* Deliver a request message. A unary request is delivered only once the
 * client half-closed, so a second message can still be refused: when the
 * END_STREAM came with it (`last`), it goes out at once (and, inline,
 * without a copy); otherwise it is parked until the half-close. The
 * message's `wire` bytes are charged to the budgets; the charge goes with
 * the task and is given back when it is done or dropped. */
static void dispatch_message(rpc_call *c, const grpc_msg *gm, int enc,
                             size_t wire, int last) {
  int unary = c->m->kind == RPC_UNARY || c->m->kind == RPC_SERVER_STREAM;
  int park = unary && !last;
  if (c->m->run_inline && !park) {
    /* No copy, no allocation: the bytes stay valid during the call. */
    call_ref(c);
    if (!atomic_load(&c->done)) deliver_message(c, enc, gm->data, gm->len);
    inflight_give(c, wire);
    call_unref(c);
    return;
  }
  uint8_t *owned = grpc_deframer_steal(&c->df);
  msg_task *mt = malloc(sizeof *mt + (owned ? 0 : gm->len));
  if (!mt) {
    inflight_give(c, wire);
    free(owned);
    call_finish_internal(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  mt->t.run = msg_task_run;
  mt->t.done = msg_task_done;
  mt->c = c;
  mt->len = gm->len;
  mt->wire = wire;
  mt->owned = owned;
  mt->enc = enc;
  if (owned) {
    mt->data = owned;
  } else {
    if (gm->len) memcpy(mt->inl, gm->data, gm->len);
    mt->data = mt->inl;
  }
  atomic_fetch_add(&c->queued, wire);
  if (park)
    c->parked = mt;
  else
    hold_msg(c, mt);
}

/* Drop a parked message that will never be delivered. */
static void drop_parked(rpc_call *c) {
  msg_task *mt = c->parked;
  if (!mt) return;
  c->parked = NULL;
  atomic_fetch_sub(&c->queued, mt->wire);
  inflight_give(c, mt->wire);
  free(mt->owned);
  free(mt);
}

/* ------------------------------------------------------ dirty handling */

/* Any thread. The loop gets to the call soon; coalesces repeated marks. */
static void call_mark_dirty(rpc_call *c) {
  server *s = c->srv;
  if (atomic_exchange(&c->dirty, 1)) return;
  call_ref(c);
  if (pthread_equal(pthread_self(), s->loop_thread)) {
    int was_empty = s->local_dirty == NULL;
    c->next_dirty = s->local_dirty;
    s->local_dirty = c;
    if (was_empty && !s->in_io) event_active(s->wake_ev, EV_READ, 0);
  } else {
    pthread_mutex_lock(&s->mu);
    int was_empty = s->remote_dirty == NULL;
    c->next_dirty = s->remote_dirty;
    s->remote_dirty = c;
    pthread_mutex_unlock(&s->mu);
    if (was_empty) {
      uint64_t one = 1;
      ssize_t w = write(s->efd, &one, sizeof one);
      (void)w;
    }
  }
}

static void conn_want_flush(conn *cn) {
  if (cn->in_flush_list || cn->dead) return;
  cn->in_flush_list = 1;
  cn->next_flush = cn->srv->flush_head;
  cn->srv->flush_head = cn;
}

static ssize_t data_read_cb(nghttp2_session *h2, int32_t stream_id,
                            uint8_t *buf, size_t length, uint32_t *flags,
                            nghttp2_data_source *src, void *user) {
  rpc_call *c = src->ptr;
  size_t n, left;
  (void)user;
  pthread_mutex_lock(&c->mu);
  n = c->out_len - c->out_off;
  if (n > length) n = length;
  left = c->out_len - c->out_off - n;
  if (n) memcpy(buf, c->out + c->out_off, n);
  c->out_off += n;
  c->bytes_out += n;
  if (c->out_off == c->out_len) {
    c->out_off = c->out_len = 0;
    if (c->finished) {
      nghttp2_nv tr[2] = {
          NV("grpc-status", "0"),
          NV("grpc-message", ""),
      };
      tr[0].value = (uint8_t *)status_str[c->status];
      tr[0].valuelen = strlen(status_str[c->status]);
      tr[1].value = (uint8_t *)c->msg;
      tr[1].valuelen = c->msg_len;
      /* The message lives in the call, which outlives the frame. */
      *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      nghttp2_submit_trailer(h2, stream_id, tr, c->msg_len ? 2 : 1);
      c->trailers_sent = 1;
      c->srv->stats.calls++;
      if (c->status == GRPC_OK) c->srv->stats.calls_ok++;
      c->counted = 1;
    } else if (n == 0) {
      c->deferred = 1;
      pthread_mutex_unlock(&c->mu);
      if (c->held_head) call_mark_dirty(c);
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  pthread_mutex_unlock(&c->mu);
  /* Output drained below the limit: held requests may go on. */
  if (c->held_head && left < OUT_QUEUE_LIMIT) call_mark_dirty(c);
  return (ssize_t)n;
}

/* Trailers-Only: a single HEADERS carrying the status, ending the stream. */
static void submit_trailers_only(rpc_call *c, const char *http_status) {
  nghttp2_nv nv[5] = {
      NV(":status", "200"),
      NV("content-type", "application/grpc"),
      NV("grpc-accept-encoding", GRPC_ACCEPT_ENCODING),
      NV("grpc-status", "0"),
      NV("grpc-message", ""),
  };
  nv[0].value = (uint8_t *)http_status;
  nv[0].valuelen = strlen(http_status);
  nv[3].value = (uint8_t *)status_str[c->status];
  nv[3].valuelen = strlen(status_str[c->status]);
  nv[4].value = (uint8_t *)c->msg;
  nv[4].valuelen = c->msg_len;
  nghttp2_submit_response(c->conn->h2, c->stream_id, nv, c->msg_len ? 5 : 4,
                          NULL);
  c->headers_sent = c->trailers_sent = 1;
  c->srv->stats.calls++;
  if (c->status == GRPC_OK) c->srv->stats.calls_ok++;
  c->counted = 1;
}

static void timer_fire_cb(evutil_socket_t fd, short what, void *arg);

/* Give received bytes back to the peer's window when the handler keeps
 * up. Loop thread. */
static void call_consume(rpc_call *c) {
  if (c->owed && c->conn &&
      (!c->started || atomic_load(&c->queued) < RECV_QUEUE_LIMIT)) {
    nghttp2_session_consume(c->conn->h2, c->stream_id, c->owed);
    c->owed = 0;
    conn_want_flush(c->conn);
  }
}

/* Loop thread: bring the stream up to date with the call's shared state. */
static void call_pump(rpc_call *c) {
  atomic_store(&c->dirty, 0);
  if (!c->conn) return;
  pthread_mutex_lock(&c->mu);
  int finished = c->finished;
  int have_out = c->out_len > c->out_off;
  int timer_req = c->timer_req;
  unsigned timer_ms = c->timer_ms;
  c->timer_req = 0;
  if (!c->headers_sent && finished && !have_out) {
    submit_trailers_only(c, "200");
  }
  pthread_mutex_unlock(&c->mu);
  if (!c->headers_sent && (finished || have_out)) {
    nghttp2_data_provider dp;
    dp.source.ptr = c;
    dp.read_callback = data_read_cb;
    nghttp2_submit_response(c->conn->h2, c->stream_id, resp_headers,
                            sizeof resp_headers / sizeof resp_headers[0],
                            &dp);
    c->headers_sent = 1;
  } else if (c->deferred && (finished || have_out)) {
    c->deferred = 0;
    nghttp2_session_resume_data(c->conn->h2, c->stream_id);
  }
  if (timer_req && c->started && !finished) {
    if (!c->timer_ev)
      c->timer_ev = event_new(c->srv->base, -1, 0, timer_fire_cb, c);
    if (c->timer_ev) {
      struct timeval tv = {(time_t)(timer_ms / 1000),
                           (suseconds_t)(timer_ms % 1000) * 1000};
      event_add(c->timer_ev, &tv);
    }
  }
  if (c->held_head) call_release(c);
  call_consume(c);
  conn_want_flush(c->conn);
}

static void run_dirty_list(rpc_call *list) {
  /* Lists are LIFO; order between calls does not matter. */
  while (list) {
    rpc_call *c = list;
    list = c->next_dirty;
    c->next_dirty = NULL;
    call_pump(c);
    call_unref(c);
  }
}

static void process_local(server *s) {
  while (s->local_dirty) {
    rpc_call *l = s->local_dirty;
    s->local_dirty = NULL;
    run_dirty_list(l);
  }
}

/* Pump calls marked dirty on the loop (flushing may mark more: output
 * drained below a limit) and flush every connection that has output. */
static void flush_all(server *s) {
  for (;;) {
    process_local(s);
    conn *cn = s->flush_head;
    if (!cn) break;
    s->flush_head = cn->next_flush;
    cn->in_flush_list = 0;
    conn_flush(cn);
  }
}

static void wake_cb(evutil_socket_t fd, short what, void *arg) {
  server *s = arg;
  uint64_t v;
  (void)what;
  if (fd >= 0) {
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
  }
  pthread_mutex_lock(&s->mu);
  rpc_call *l = s->remote_dirty;
  s->remote_dirty = NULL;
  pthread_mutex_unlock(&s->mu);
  s->in_io = 1;
  run_dirty_list(l);
  process_local(s);
  flush_all(s);
  s->in_io = 0;
}

static void local_wake_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  wake_cb(-1, what, arg);
}

/* --------------------------------------------------- timers, deadlines */

static void timer_fire_cb(evutil_socket_t fd, short what, void *arg) {
  rpc_call *c = arg;
  (void)fd;
  (void)what;
  if (!c->conn || !c->m || atomic_load(&c->done)) return;
  timer_task *tt = malloc(sizeof *tt);
  if (!tt) return;
  tt->t.run = timer_task_run;
  tt->t.done = timer_task_done;
  tt->c = c;
  c->srv->in_io = 1;
  call_dispatch(c, &tt->t);
  process_local(c->srv);
  flush_all(c->srv);
  c->srv->in_io = 0;
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg) {
  rpc_call *c = arg;
  server *s = c->srv;
  (void)fd;
  (void)what;
  if (!c->conn) return;
  s->in_io = 1;
  call_finish_internal(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
  process_local(s);
  flush_all(s);
  s->in_io = 0;
}

/* ------------------------------------------------- nghttp2 callbacks */

static int on_begin_headers(nghttp2_session *h2, const nghttp2_frame *f,
                            void *user) {
  conn *cn = user;
  if (f->hd.type != NGHTTP2_HEADERS ||
      f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  rpc_call *c = call_new(cn, f->hd.stream_id);
  if (!c) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* resets stream */
  nghttp2_session_set_stream_user_data(h2, f->hd.stream_id, c);
  return 0;
}

/* Look the bearer token up as the header arrives; only the outcome, the
 * role and the token's NAME are kept. Two authorization headers are
 * malformed. */
static void call_authenticate(rpc_call *c, const char *v, size_t n) {
  auth_role role = AUTH_ROLE_NONE;
  const char *name = "";
  auth_result r = auth_check(c->srv->auth, v, n, &role, &name);
  if (c->auth_seen++) r = AUTH_MALFORMED;
  c->auth_res = (uint8_t)r;
  if (r == AUTH_OK) {
    c->auth_role = (uint8_t)role;
    snprintf(c->auth_name, sizeof c->auth_name, "%s", name);
  }
}

/* Before any handler runs and before any request byte is decoded: the
 * method's role against the token's. Answers the call and returns 0 when
 * it is refused. */
static int call_authorize(rpc_call *c) {
  auth_role need = auth_required_role(c->path);
  int res = c->auth_seen ? c->auth_res : AUTH_MISSING;
  if (need == AUTH_ROLE_NONE) return 1;
  if (res != AUTH_OK) {
    c->m = NULL;
    const char *why = res == AUTH_MISSING     ? "missing"
                      : res == AUTH_MALFORMED ? "malformed"
                                              : "unknown-token";
    LOG_INFO("auth-refused path=%s reason=%s", c->path, why);
    call_finish_internal(
        c, GRPC_UNAUTHENTICATED, "%s",
        res == AUTH_MISSING
            ? "authentication required: send the metadata "
              "'authorization: Bearer TOKEN'"
        : res == AUTH_MALFORMED
            ? "malformed authorization metadata: expected one "
              "'authorization: Bearer TOKEN'"
            : "invalid token");
    return 0;
  }
  if (c->auth_role < need) {
    c->m = NULL;
    LOG_INFO("auth-denied path=%s name=%s role=%s need=%s", c->path,
             c->auth_name, auth_role_name((auth_role)c->auth_role),
             auth_role_name(need));
    call_finish_internal(c, GRPC_PERMISSION_DENIED,
                         "%s needs the %s role; token %s has the %s role",
                         c->path, auth_role_name(need), c->auth_name,
                         auth_role_name((auth_role)c->auth_role));
    return 0;
  }
  LOG_DEBUG("auth-ok path=%s name=%s role=%s", c->path, c->auth_name,
            auth_role_name((auth_role)c->auth_role));
  return 1;
}

#define HDR_IS(name, lit) \
  (namelen == sizeof(lit) - 1 && memcmp((name), (lit), sizeof(lit) - 1) == 0)

static int on_header(nghttp2_session *h2, const nghttp2_frame *f,
                     const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
  (void)flags;
  (void)user;
  if (f->hd.type != NGHTTP2_HEADERS) return 0;
  rpc_call *c = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
  if (!c) return 0;
  /* nghttp2 does not enforce our SETTINGS_MAX_HEADER_LIST_SIZE, and HPACK
   * lets one byte name a 4 KiB table entry: count as RFC 9113 does and
   * reset the stream past the limit (nghttp2 then skips the rest of the
   * block without calling us). Trailers count too. */
  if (namelen + valuelen + 32 > MAX_HEADER_LIST - c->hdr_bytes)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  c->hdr_bytes += (uint32_t)(namelen + valuelen + 32);
  if (f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  if (name[0] == ':') {
    if (HDR_IS(name, ":path")) {
      size_t n = valuelen < PATH_MAX_LEN - 1 ? valuelen : PATH_MAX_LEN - 1;
      memcpy(c->path, value, n);
      c->path[n] = '\0';
      c->m = valuelen < PATH_MAX_LEN - 1 ? c->srv->lookup(c->path) : NULL;
      c->mpath = c->m ? c->m->path : NULL;
    } else if (HDR_IS(name, ":method")) {
      c->is_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
    }
  } else if (HDR_IS(name, "content-type")) {
    c->ct_ok = grpc_content_type_ok((const char *)value, valuelen);
  } else if (HDR_IS(name, "grpc-encoding")) {
    c->encoding = (uint8_t)grpc_encoding_parse((const char *)value, valuelen);
    if (c->encoding == GRPC_ENC_UNKNOWN) {
      size_t n = valuelen < ENC_NAME_MAX - 1 ? valuelen : ENC_NAME_MAX - 1;
      memcpy(c->bad_encoding, value, n);
      c->bad_encoding[n] = '\0';
    }
  } else if (HDR_IS(name, "authorization")) {
    if (c->srv->auth) call_authenticate(c, (const char *)value, valuelen);
  } else if (HDR_IS(name, "grpc-timeout")) {
    uint64_t ns;
    if (grpc_timeout_parse((const char *)value, valuelen, &ns) == 0) {
      uint64_t now = now_ns();
      c->deadline_ns = ns > UINT64_MAX - now ? UINT64_MAX : now + ns;
    } else {
      c->bad_timeout = 1;
    }
  }
  return 0;
}

/* The client half-closed: no more request messages. */
static void call_half_closed(rpc_call *c) {
  if (!c->started || atomic_load(&c->done)) return;
  if (grpc_deframer_partial(&c->df)) {
    call_finish_internal(c, GRPC_INTERNAL,
                         "request stream ended inside a message");
    return;
  }
  if ((c->m->kind == RPC_UNARY || c->m->kind == RPC_SERVER_STREAM) &&
      c->n_msgs == 0) {
    call_finish_internal(c, GRPC_INTERNAL, "request message missing");
    return;
  }
  if (c->parked) {
    msg_task *mt = c->parked;
    c->parked = NULL;
    post_msg(c, mt);
  }
  if (c->m->on_half_close && c->held_head) {
    c->half_held = 1; /* dispatched by call_release() */
  } else if (c->m->on_half_close) {
    c->t_half.run = half_task_run;
    c->t_half.done = embedded_task_done;
    call_dispatch(c, &c->t_half);
  }
}

/* Request headers complete: validate and start the call. */
static void call_start(rpc_call *c) {
  if (!c->is_post) {
    pthread_mutex_lock(&c->mu);
    c->finished = 1;
    c->status = GRPC_UNIMPLEMENTED;
    c->msg_len = grpc_percent_encode("only POST is supported", 22, c->msg,
                                     sizeof c->msg);
    atomic_store(&c->done, 1);
    submit_trailers_only(c, "405");
    pthread_mutex_unlock(&c->mu);
    return;
  }
  if (!c->ct_ok) {
    pthread_mutex_lock(&c->mu);
    c->finished = 1;
    c->status = GRPC_UNKNOWN;
    c->msg_len = grpc_percent_encode(
        "content-type must be application/grpc", 37, c->msg, sizeof c->msg);
    atomic_store(&c->done, 1);
    submit_trailers_only(c, "415");
    pthread_mutex_unlock(&c->mu);
    return;
  }
  if (c->srv->auth && !call_authorize(c)) return;
  if (!c->m) {
    call_finish_internal(c, GRPC_UNIMPLEMENTED, "unknown method %s", c->path);
    return;
  }
  if (c->bad_timeout) {
    c->m = NULL;
    call_finish_internal(c, GRPC_INTERNAL, "malformed grpc-timeout");
    return;
  }
  if (c->encoding == GRPC_ENC_UNKNOWN) {
    /* As stock servers do, before any message: the answer's
     * grpc-accept-encoding tells the client what to use instead. */
    c->m = NULL;
    call_finish_internal(c, GRPC_UNIMPLEMENTED,
                         "grpc-encoding %s is not supported", c->bad_encoding);
    return;
  }
  if (c->srv->stopping) {
    c->m = NULL;
    call_finish_internal(c, GRPC_UNAVAILABLE, "server shutting down");
    return;
  }
  c->started = 1;
  if (c->deadline_ns) {
    uint64_t now = now_ns();
    uint64_t left = c->deadline_ns > now ? c->deadline_ns - now : 0;
    if (left == 0) {
      call_finish_internal(c, GRPC_DEADLINE_EXCEEDED, "deadline exceeded");
      return;
    }
    if (left < 100ULL * 365 * 86400 * 1000000000ULL) {
      c->deadline_ev = event_new(c->srv->base, -1, 0, deadline_cb, c);
      if (c->deadline_ev) {
        struct timeval tv = {(time_t)(left / 1000000000ULL),
                             (suseconds_t)(left % 1000000000ULL / 1000)};
        event_add(c->deadline_ev, &tv);
      }
    }
  }
}

static int on_frame_recv(nghttp2_session *h2, const nghttp2_frame *f,
                         void *user) {
  conn *cn = user;
  if (cn->hs_ev) {
    /* A frame parsed: the preface was right (nghttp2 checks that the first
     * frame is SETTINGS). */
    event_free(cn->hs_ev);
    cn->hs_ev = NULL;
  }
  if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA) return 0;
  rpc_call *c = nghttp2_session_get_stream_user_data(h2, f->hd.stream_id);
  if (!c) return 0;
  if (f->hd.type == NGHTTP2_HEADERS &&
      f->headers.cat == NGHTTP2_HCAT_REQUEST)
    call_start(c);
  if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) call_half_closed(c);
  return 0;
}

/* A message that the in-flight budgets cannot take now. */
static void call_refuse_busy(rpc_call *c, uint64_t len) {
  server *s = c->srv;
  size_t cu = atomic_load(&c->budget->used), su = atomic_load(&s->inflight);
  int conn_full = cu + GRPC_PREFIX_LEN + len > s->conn_inflight_max;
  LOG_INFO("inflight-refused path=%s bytes=%llu conn_inflight=%zu "
           "inflight=%zu",
           c->path, (unsigned long long)len, cu, su);
  call_finish_internal(
      c, GRPC_RESOURCE_EXHAUSTED,
      "server busy: a message of %llu bytes does not fit the request bytes "
      "in flight (%zu of %s %zu); retry later",
      (unsigned long long)len, conn_full ? cu : su,
      conn_full ? "this connection's server.max_conn_inflight_bytes"
                : "the server's server.max_inflight_bytes",
      conn_full ? s->conn_inflight_max : s->inflight_max);
}

static int on_data_chunk(nghttp2_session *h2, uint8_t flags,
                         int32_t stream_id, const uint8_t *data, size_t len,
                         void *user) {
  (void)user;
  rpc_call *c = nghttp2_session_get_stream_user_data(h2, stream_id);
  if (!c) {
    nghttp2_session_consume(h2, stream_id, len);
    return 0;
  }
  c->owed += len;
  c->bytes_in += len;
  while (len > 0 && c->started && !atomic_load(&c->done)) {
    size_t used;
    grpc_msg gm;
    uint64_t max = c->srv->cfg->max_message_bytes;
    /* The next prefix is checked against what the budgets can take, so
     * nothing is allocated past them. */
    if (!c->df_resv) {
      uint64_t room = inflight_room(c);
      c->df.limit = room < max ? room : max;
    }
    int rc = grpc_deframer_feed(&c->df, data, len, &used, &gm);
    data += used;
    len -= used;
    if (rc == GRPC_DEFRAME_NEED_MORE) {
      /* A message being gathered: its buffer exists now, charge it. */
      if (!c->df_resv && c->df.buf &&
          inflight_take(c, GRPC_PREFIX_LEN + c->df.len) == 0)
        c->df_resv = GRPC_PREFIX_LEN + c->df.len;
      break;
    }
    if (rc == GRPC_DEFRAME_TOO_LARGE && c->df.bad_len > max) {
      call_finish_internal(c, GRPC_RESOURCE_EXHAUSTED,
                           "message of %llu bytes exceeds the limit of %llu",
                           (unsigned long long)c->df.bad_len,
                           (unsigned long long)max);
      break;
    }
    if (rc == GRPC_DEFRAME_TOO_LARGE) {
      call_refuse_busy(c, c->df.bad_len);
      break;
    }
    if (rc == GRPC_DEFRAME_BAD_FLAG) {
      call_finish_internal(c, GRPC_INTERNAL, "bad message flag byte");
      break;
    }
    if (rc == GRPC_DEFRAME_NOMEM) {
      call_finish_internal(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
      break;
    }
    if (gm.compressed && c->encoding == GRPC_ENC_IDENTITY) {
      call_finish_internal(c, GRPC_INTERNAL,
                           "compressed flag set but no grpc-encoding");
      break;
    }
    if (++c->n_msgs > 1 &&
        (c->m->kind == RPC_UNARY || c->m->kind == RPC_SERVER_STREAM)) {
      drop_parked(c);
      call_finish_internal(c, GRPC_INTERNAL,
                           "more than one request message for a unary "
                           "request");
      break;
    }
    /* A message that came whole in this chunk is charged now (it fits:
     * the limit was the room). The charge moves to the message. */
    if (!c->df_resv && inflight_take(c, GRPC_PREFIX_LEN + gm.len) != 0) {
      call_refuse_busy(c, gm.len);
      break;
    }
    c->df_resv = 0;
    dispatch_message(c, &gm, gm.compressed ? c->encoding : GRPC_ENC_IDENTITY,
                     GRPC_PREFIX_LEN + gm.len,
                     len == 0 && (flags & NGHTTP2_FLAG_END_STREAM));
  }
  call_consume(c);
  return 0;
}

static int on_frame_send(nghttp2_session *h2, const nghttp2_frame *f,
                         void *user) {
  /* nghttp2 ends a connection that breaks the protocol or floods it (more
   * than 1,000 RST_STREAMs in a burst, then 33 a second: the rapid-reset
   * limit of CVE-2023-44487) with a GOAWAY carrying an error: say so once
   * per connection. */
  if (f->hd.type == NGHTTP2_GOAWAY && f->goaway.error_code != NGHTTP2_NO_ERROR) {
    const conn *cn = user;
    char why[65];
    size_t n = f->goaway.opaque_data_len < 64 ? f->goaway.opaque_data_len : 64;
    for (size_t i = 0; i < n; i++) {
      uint8_t b = f->goaway.opaque_data[i];
      why[i] = b >= 0x20 && b < 0x7f && b != '"' && b != '\\' ? (char)b : '?';
    }
    why[n] = '\0';
    LOG_INFO("goaway-sent fd=%d code=%s last_stream=%d reason=\"%s\"", cn->fd,
             nghttp2_http2_strerror(f->goaway.error_code),
             f->goaway.last_stream_id, why);
  }
  /* Our side ended the stream while the client still sends: tell it to
   * stop (RST_STREAM NO_ERROR, as the gRPC spec allows). */
  if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
      (f->hd.flags & NGHTTP2_FLAG_END_STREAM) &&
      nghttp2_session_get_stream_remote_close(h2, f->hd.stream_id) == 0)
    nghttp2_submit_rst_stream(h2, NGHTTP2_FLAG_NONE, f->hd.stream_id,
                              NGHTTP2_NO_ERROR);
  return 0;
}

/* The stream is gone: detach, and let the handler clean up last. */
static void call_detach(rpc_call *c, conn *cn) {
  if (c->cprev)
    c->cprev->cnext = c->cnext;
  else
    cn->calls = c->cnext;
  if (c->cnext) c->cnext->cprev = c->cprev;
  c->cprev = c->cnext = NULL;
  if (c->owed && !cn->dead)
    nghttp2_session_consume_connection(cn->h2, c->owed);
  c->owed = 0;
  c->conn = NULL;
  drop_parked(c);
  drop_held(c);
  if (c->deadline_ev) event_free(c->deadline_ev);
  if (c->timer_ev) event_free(c->timer_ev);
  c->deadline_ev = c->timer_ev = NULL;
  atomic_store(&c->done, 1);
  if (!c->counted) cn->srv->stats.calls_cancelled++;
  metrics_call mc = {c->mpath,     c->path,      c->counted ? c->status : -1,
                     now_ns() - c->t0_ns, c->bytes_in, c->bytes_out, cn->fd,
                     c->auth_name};
  metrics_call_end(&mc);
  metrics_stream_close();
  if (c->started) {
    c->t_close.run = close_task_run;
    c->t_close.done = embedded_task_done;
    call_dispatch(c, &c->t_close);
  }
  call_unref(c); /* the stream's reference */
}

static int on_stream_close(nghttp2_session *h2, int32_t stream_id,
                           uint32_t error_code, void *user) {
  (void)error_code;
  rpc_call *c = nghttp2_session_get_stream_user_data(h2, stream_id);
  if (!c) return 0;
  nghttp2_session_set_stream_user_data(h2, stream_id, NULL);
  call_detach(c, user);
  return 0;
}

/* ------------------------------------------------------- connections */

static void conn_read_cb(evutil_socket_t fd, short what, void *arg);
static void conn_write_cb(evutil_socket_t fd, short what, void *arg);

static void server_check_drained(server *s) {
  if (s->stopping && s->n_conns == 0 && s->drained) {
    void (*d)(void *) = s->drained;
    s->drained = NULL;
    d(s->drained_arg);
  }
}

static void conn_free(conn *cn) {
  server *s = cn->srv;
  cn->dead = 1;
  /* Streams nghttp2 still has are closed here, as if reset. */
  while (cn->calls) {
    rpc_call *c = cn->calls;
    nghttp2_session_set_stream_user_data(cn->h2, c->stream_id, NULL);
    call_detach(c, cn);
  }
  /* Unlink from the flush list. */
  for (conn **pp = &s->flush_head; *pp; pp = &(*pp)->next_flush)
    if (*pp == cn) {
      *pp = cn->next_flush;
      break;
    }
  nghttp2_session_del(cn->h2);
  if (cn->hs_ev) event_free(cn->hs_ev);
  event_free(cn->rev);
  event_free(cn->wev);
  tls_conn_free(cn->tls);
  budget_unref(cn->budget);
  close(cn->fd);
  free(cn->out);
  if (cn->prev)
    cn->prev->next = cn->next;
  else
    s->conns = cn->next;
  if (cn->next) cn->next->prev = cn->prev;
  s->n_conns--;
  metrics_conn_close();
  free(cn);
  server_check_drained(s);
}

/* Socket I/O, cleartext or through TLS. */
enum { IO_AGAIN = -1, IO_ERROR = -2, IO_WAIT_READ = -3 };

/* > 0 bytes, 0 when the peer closed, IO_AGAIN, IO_ERROR. */
static ssize_t conn_recv(conn *cn, uint8_t *buf, size_t n) {
  if (cn->tls) {
    ssize_t r = tls_conn_read(cn->tls, buf, n);
    if (r != TLS_IO_AGAIN) return r == TLS_IO_ERROR ? IO_ERROR : r;
    if (tls_conn_want_write(cn->tls)) {
      cn->read_on_write = 1;
      event_add(cn->wev, NULL);
    }
    return IO_AGAIN;
  }
  for (;;) {
    ssize_t r = read(cn->fd, buf, n);
    if (r >= 0) return r;
    if (errno != EINTR)
      return errno == EAGAIN || errno == EWOULDBLOCK ? IO_AGAIN : IO_ERROR;
  }
}

/* > 0 bytes written, IO_AGAIN (wait until writable), IO_WAIT_READ (TLS
 * needs the peer's bytes first, e.g. mid-handshake), IO_ERROR. */
static ssize_t conn_send(conn *cn, const uint8_t *p, size_t n) {
  if (cn->tls) {
    ssize_t w = tls_conn_write(cn->tls, p, n);
    if (w == TLS_IO_AGAIN)
      return tls_conn_want_write(cn->tls) ? IO_AGAIN : IO_WAIT_READ;
    return w > 0 ? w : IO_ERROR;
  }
  for (;;) {
    ssize_t w = write(cn->fd, p, n);
    if (w >= 0) return w;
    if (errno != EINTR)
      return errno == EAGAIN || errno == EWOULDBLOCK ? IO_AGAIN : IO_ERROR;
  }
}

/* Pull everything nghttp2 wants to send (up to a high-water mark), write it
 * in one go, and close the connection when both sides are done. Returns -1
 * when the connection was freed. */
static int conn_flush(conn *cn) {
  for (;;) {
    while (cn->out_len - cn->out_off < OUT_HIGH_WATER) {
      const uint8_t *p;
      ssize_t n = nghttp2_session_mem_send(cn->h2, &p);
      if (n < 0) {
        LOG_DEBUG("conn-error err=\"%s\"", nghttp2_strerror((int)n));
        conn_free(cn);
        return -1;
      }
      if (n == 0) break;
      if (cn->out_len + (size_t)n > cn->out_cap) {
        if (cn->out_off) {
          memmove(cn->out, cn->out + cn->out_off, cn->out_len - cn->out_off);
          cn->out_len -= cn->out_off;
          cn->out_off = 0;
        }
        if (cn->out_len + (size_t)n > cn->out_cap) {
          size_t cap = cn->out_cap ? cn->out_cap * 2 : 16384;
          while (cap < cn->out_len + (size_t)n) cap *= 2;
          uint8_t *b = realloc(cn->out, cap);
          if (!b) {
            conn_free(cn);
            return -1;
          }
          cn->out = b;
          cn->out_cap = cap;
        }
      }
      memcpy(cn->out + cn->out_len, p, (size_t)n);
      cn->out_len += (size_t)n;
    }
    if (cn->out_len == cn->out_off) break;
    ssize_t w = conn_send(cn, cn->out + cn->out_off, cn->out_len - cn->out_off);
    if (w == IO_AGAIN) {
      event_add(cn->wev, NULL);
      return 0;
    }
    if (w == IO_WAIT_READ) return 0; /* conn_read_cb flushes again */
    if (w < 0) {
      LOG_DEBUG("conn-closed fd=%d reason=send-error", cn->fd);
      conn_free(cn);
      return -1;
    }
    cn->out_off += (size_t)w;
    if (cn->out_off < cn->out_len) {
      if (cn->tls) continue; /* a partial TLS write is one record */
      event_add(cn->wev, NULL);
      return 0;
    }
    cn->out_off = cn->out_len = 0;
    if (!nghttp2_session_want_write(cn->h2)) break;
  }
  if (!nghttp2_session_want_read(cn->h2) &&
      !nghttp2_session_want_write(cn->h2)) {
    LOG_DEBUG("conn-closed fd=%d reason=session-done", cn->fd);
    conn_free(cn);
    return -1;
  }
  return 0;
}

static void conn_read_cb(evutil_socket_t fd, short what, void *arg) {
  conn *cn = arg;
  server *s = cn->srv;
  uint8_t buf[READ_CHUNK];
  (void)fd;
  (void)what;
  s->in_io = 1;
  /* A TLS read returns one record (16 KiB at most): more rounds for the
   * same fairness budget. */
  int rounds = cn->tls ? 16 : 4, round;
  for (round = 0; round < rounds; round++) {
    ssize_t n = conn_recv(cn, buf, sizeof buf);
    if (n == IO_AGAIN) break;
    if (n <= 0) {
      LOG_DEBUG("conn-closed fd=%d reason=%s", cn->fd,
                n == 0 ? "peer-closed" : "recv-error");
      conn_free(cn);
      goto out;
    }
    ssize_t r = nghttp2_session_mem_recv(cn->h2, buf, (size_t)n);
    if (r < 0) {
      LOG_DEBUG("conn-error err=\"%s\"", nghttp2_strerror((int)r));
      /* nghttp2 may have queued a GOAWAY: try to send it, then close. */
      process_local(s);
      if (conn_flush(cn) == 0) conn_free(cn);
      goto out;
    }
    if (!cn->tls && (size_t)n < sizeof buf) break;
  }
  /* Out of rounds with records TLS already read from the socket: they do
   * not wake the socket event, so come back. (After TLS_IO_AGAIN what is
   * buffered is at most a partial record, which the socket completes.) */
  if (cn->tls && round == rounds && tls_conn_pending(cn->tls))
    event_active(cn->rev, EV_READ, 1);
  process_local(s);
  conn_want_flush(cn);
  flush_all(s);
out:
  s->in_io = 0;
}

static void conn_write_cb(evutil_socket_t fd, short what, void *arg) {
  conn *cn = arg;
  server *s = cn->srv; /* conn_flush() frees cn when the peer is gone */
  if (cn->read_on_write) {
    /* A TLS read waited for writability; it flushes too. */
    cn->read_on_write = 0;
    conn_read_cb(fd, EV_READ, cn);
    return;
  }
  (void)what;
  s->in_io = 1;
  conn_flush(cn);
  process_local(s);
  flush_all(s);
  s->in_io = 0;
}

/* The client did not complete the HTTP/2 preface and SETTINGS in time. */
static void handshake_timeout_cb(evutil_socket_t fd, short what, void *arg) {
  conn *cn = arg;
  server *s = cn->srv;
  (void)fd;
  (void)what;
  LOG_DEBUG("handshake-timeout fd=%d", cn->fd);
  s->in_io = 1;
  conn_free(cn);
  flush_all(s);
  s->in_io = 0;
}

int server_adopt_fd(server *s, int fd) {
  conn *cn = calloc(1, sizeof *cn);
  if (!cn) {
    close(fd);
    return -1;
  }
  cn->srv = s;
  cn->fd = fd;
  cn->budget = calloc(1, sizeof *cn->budget);
  if (!cn->budget || (s->tls && !(cn->tls = tls_conn_new(s->tls, fd))) ||
      nghttp2_session_server_new2(&cn->h2, s->cbs, cn, s->opt) != 0) {
    tls_conn_free(cn->tls);
    free(cn->budget);
    free(cn);
    close(fd);
    return -1;
  }
  atomic_init(&cn->budget->used, 0);
  atomic_init(&cn->budget->refs, 1);
  cn->rev = event_new(s->base, fd, EV_READ | EV_PERSIST, conn_read_cb, cn);
  cn->wev = event_new(s->base, fd, EV_WRITE, conn_write_cb, cn);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
       s->cfg->max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST},
  };
  nghttp2_submit_settings(cn->h2, NGHTTP2_FLAG_NONE, iv, 3);
  nghttp2_session_set_local_window_size(cn->h2, NGHTTP2_FLAG_NONE, 0,
                                        CONN_WINDOW);
  cn->next = s->conns;
  if (s->conns) s->conns->prev = cn;
  s->conns = cn;
  s->n_conns++;
  s->stats.connections++;
  metrics_conn_open();
  event_add(cn->rev, NULL);
  if (s->cfg->handshake_timeout_ms) {
    unsigned ms = s->cfg->handshake_timeout_ms;
    cn->hs_ev = evtimer_new(s->base, handshake_timeout_cb, cn);
    if (cn->hs_ev) {
      struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
      event_add(cn->hs_ev, &tv);
    }
  }
  conn_flush(cn);
  return 0;
}

static void accept_cb(evutil_socket_t lfd, short what, void *arg) {
  server *s = arg;
  (void)what;
  for (int i = 0; i < 64; i++) {
    int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        LOG_WARN("accept-failed err=\"%s\"", strerror(errno));
      return;
    }
    if (s->stopping || s->n_conns >= s->cfg->max_connections) {
      LOG_WARN("connection-refused reason=%s conns=%u",
               s->stopping ? "stopping" : "max_connections", s->n_conns);
      close(fd);
      continue;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    server_adopt_fd(s, fd);
  }
}

/* ------------------------------------------------------------ set-up */

/* Split HOST:PORT / [V6]:PORT. */
static int split_addr(const char *a, char *host, size_t hostlen, char *port,
                      size_t portlen) {
  const char *colon;
  size_t hl;
  if (a[0] == '[') {
    const char *rb = strchr(a, ']');
    if (!rb || rb[1] != ':') return -1;
    hl = (size_t)(rb - a - 1);
    if (hl >= hostlen) return -1;
    memcpy(host, a + 1, hl);
    colon = rb + 1;
  } else {
    colon = strrchr(a, ':');
    if (!colon) return -1;
    hl = (size_t)(colon - a);
    if (hl >= hostlen || memchr(a, ':', hl)) return -1;
    memcpy(host, a, hl);
  }
  host[hl] = '\0';
  if (strlen(colon + 1) == 0 || strlen(colon + 1) >= portlen) return -1;
  for (const char *p = colon + 1; *p; p++)
    if (*p < '0' || *p > '9') return -1;
  if (atol(colon + 1) > 65535) return -1;
  strcpy(port, colon + 1);
  return 0;
}

static int listen_on(server *s, char *err, size_t errlen) {
  char host[256], port[8];
  struct addrinfo hints, *res = NULL;
  int rc, fd = -1, last_errno = 0;
  if (split_addr(s->cfg->listen, host, sizeof host, port, sizeof port) != 0) {
    snprintf(err, errlen,
             "server.listen \"%s\": expected HOST:PORT or [IPV6]:PORT",
             s->cfg->listen);
    return -1;
  }
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  rc = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
  if (rc != 0) {
    snprintf(err, errlen, "server.listen \"%s\": %s", s->cfg->listen,
             gai_strerror(rc));
    return -1;
  }
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                0);
    if (fd < 0) {
      last_errno = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0)
      break;
    last_errno = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) {
    snprintf(err, errlen, "cannot listen on %s: %s", s->cfg->listen,
             strerror(last_errno));
    return -1;
  }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char ip[INET6_ADDRSTRLEN] = "?";
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &a6->sin6_addr, ip, sizeof ip);
    s->port = ntohs(a6->sin6_port);
    snprintf(s->addr, sizeof s->addr, "[%s]:%d", ip, s->port);
    s->loopback = IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr) ||
                  (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr) &&
                   a6->sin6_addr.s6_addr[12] == 127);
  } else {
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &a4->sin_addr, ip, sizeof ip);
    s->port = ntohs(a4->sin_port);
    snprintf(s->addr, sizeof s->addr, "%s:%d", ip, s->port);
    s->loopback = (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
  }
  s->lfd = fd;
  return 0;
}

/* TLS from the configuration, and the rule that cleartext stays on
 * loopback unless server.plaintext says otherwise. */
static int security_setup(server *s, char *err, size_t errlen) {
  const ctxd_config *cfg = s->cfg;
  ctxd_error e;
  ctxd_clearerr(&e);
  if (cfg->tls_cert[0]) {
    if (tls_ctx_create(cfg->tls_cert, cfg->tls_key, cfg->tls_client_ca,
                       &s->tls, &e) != 0) {
      snprintf(err, errlen, "%s", e.msg);
      return -1;
    }
  } else if (!s->loopback && !cfg->plaintext) {
    snprintf(err, errlen,
             "server.listen %s is not a loopback address and no "
             "server.tls_cert is set: refusing to serve cleartext h2c on "
             "the network (set server.tls_cert and server.tls_key, or "
             "server.plaintext = true to allow it)",
             cfg->listen);
    return -1;
  }
  if (cfg->auth_tokens_file[0]) {
    if (auth_open(cfg->auth_tokens_file, &s->auth, &e) != 0) {
      snprintf(err, errlen, "%s", e.msg);
      return -1;
    }
  } else if (!s->loopback) {
    LOG_WARN("auth-off addr=%s reason=\"no auth.tokens_file: every client "
             "that reaches this address may call every method\"",
             s->addr);
  }
  LOG_INFO("transport addr=%s tls=%s mtls=%s auth=%s tokens=%zu", s->addr,
           s->tls ? "on" : "off",
           s->tls && tls_ctx_mtls(s->tls) ? "on" : "off",
           s->auth ? "on" : "off", s->auth ? auth_count(s->auth) : (size_t)0);
  return 0;
}

int server_reload(server *s) {
  int rc = 0;
  if (s->tls) {
    ctxd_error e;
    ctxd_clearerr(&e);
    if (tls_ctx_reload(s->tls, &e) != 0) {
      LOG_ERROR("tls-reload-failed err=\"%s\" action=\"keeping the "
                "certificates loaded before\"",
                e.msg);
      rc = -1;
    } else {
      LOG_INFO("tls-reloaded cert=\"%s\"", s->cfg->tls_cert);
    }
  }
  if (s->auth) {
    ctxd_error e;
    ctxd_clearerr(&e);
    if (auth_reload(s->auth, &e) != 0) {
      LOG_ERROR("auth-reload-failed err=\"%s\" action=\"keeping the %zu "
                "tokens loaded before\"",
                e.msg, auth_count(s->auth));
      rc = -1;
    } else {
      LOG_INFO("auth-reloaded tokens=%zu file=\"%s\"", auth_count(s->auth),
               s->cfg->auth_tokens_file);
    }
  }
  return rc;
}

int server_create(struct event_base *base, const ctxd_config *cfg,
                  struct ctxd_ctx *ctx, pool *workers, server **out,
                  char *err, size_t errlen) {
  server *s = calloc(1, sizeof *s);
  *out = NULL;
  if (!s) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  s->base = base;
  s->cfg = cfg;
  s->ctx = ctx;
  s->workers = workers;
  s->loop_thread = pthread_self();
  s->lookup = methods_find;
  s->lfd = s->efd = -1;
  pthread_mutex_init(&s->mu, NULL);
  if (listen_on(s, err, errlen) != 0) goto fail;
  if (security_setup(s, err, errlen) != 0) goto fail;
  /* The largest message must always fit, or it could never arrive. */
  atomic_init(&s->inflight, 0);
  s->conn_inflight_max = (size_t)cfg->max_conn_inflight_bytes;
  if (s->conn_inflight_max < cfg->max_message_bytes + GRPC_PREFIX_LEN)
    s->conn_inflight_max = (size_t)cfg->max_message_bytes + GRPC_PREFIX_LEN;
  s->inflight_max = (size_t)cfg->max_inflight_bytes;
  if (s->inflight_max < s->conn_inflight_max)
    s->inflight_max = s->conn_inflight_max;
  if (s->conn_inflight_max != cfg->max_conn_inflight_bytes ||
      s->inflight_max != cfg->max_inflight_bytes)
    LOG_WARN("inflight-limits-raised conn=%zu total=%zu reason=\"to fit "
             "server.max_message_bytes\"",
             s->conn_inflight_max, s->inflight_max);
  s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (s->efd < 0) {
    snprintf(err, errlen, "eventfd: %s", strerror(errno));
    goto fail;
  }
  s->accept_ev =
      event_new(base, s->lfd, EV_READ | EV_PERSIST, accept_cb, s);
  s->wake_ev = event_new(base, -1, 0, local_wake_cb, s);
  struct event *efd_ev =
      event_new(base, s->efd, EV_READ | EV_PERSIST, wake_cb, s);
  if (!s->accept_ev || !s->wake_ev || !efd_ev) {
    snprintf(err, errlen, "event_new failed");
    if (efd_ev) event_free(efd_ev);
    goto fail;
  }
  event_add(efd_ev, NULL);
  s->efd_ev = efd_ev;
  event_add(s->accept_ev, NULL);

  nghttp2_session_callbacks_new(&s->cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(s->cbs,
                                                          on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(s->cbs, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(s->cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(s->cbs,
                                                            on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(s->cbs,
                                                         on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(s->cbs, on_frame_send);
  nghttp2_option_new(&s->opt);
  nghttp2_option_set_no_auto_window_update(s->opt, 1);
  /* nghttp2 (1.52) otherwise keeps closed streams for the RFC 7540
   * priority tree, up to max_concurrent_streams per connection: about 1 KiB
   * each that a long-lived busy connection fills and never gives back
   * (the soak's anonymous RSS climb). ctxd ignores priorities. */
  nghttp2_option_set_no_closed_streams(s->opt, 1);
  *out = s;
  return 0;
fail:
  server_free(s);
  return -1;
}

void server_set_lookup(server *s,
                       const rpc_method *(*lookup)(const char *path)) {
  s->lookup = lookup ? lookup : methods_find;
}

const char *server_addr(const server *s) {
  return s->addr;
}

int server_port(const server *s) {
  return s->port;
}

void server_get_stats(const server *s, server_stats *out) {
  *out = s->stats;
}

static void grace_cb(evutil_socket_t fd, short what, void *arg) {
  server *s = arg;
  (void)fd;
  (void)what;
  if (s->n_conns)
    LOG_WARN("shutdown-grace-expired connections=%u", s->n_conns);
  while (s->conns) conn_free(s->conns);
}

void server_shutdown(server *s, unsigned grace_ms, void (*drained)(void *),
                     void *arg) {
  if (s->stopping) return;
  s->stopping = 1;
  s->drained = drained;
  s->drained_arg = arg;
  if (s->accept_ev) {
    event_free(s->accept_ev);
    s->accept_ev = NULL;
  }
  if (s->lfd >= 0) {
    close(s->lfd);
    s->lfd = -1;
  }
  s->in_io = 1;
  process_local(s);
  for (conn *cn = s->conns; cn; cn = cn->next) {
    nghttp2_submit_goaway(cn->h2, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(cn->h2),
                          NGHTTP2_NO_ERROR, NULL, 0);
    conn_want_flush(cn);
  }
  flush_all(s);
  s->in_io = 0;
  if (s->n_conns) {
    s->grace_ev = evtimer_new(s->base, grace_cb, s);
    if (s->grace_ev) {
      struct timeval tv = {(time_t)(grace_ms / 1000),
                           (suseconds_t)(grace_ms % 1000) * 1000};
      event_add(s->grace_ev, &tv);
    }
  } else {
    server_check_drained(s);
  }
}

void server_close_all(server *s) {
  while (s->conns) conn_free(s->conns);
}

void server_free(server *s) {
  if (!s) return;
  while (s->conns) conn_free(s->conns);
  /* Calls marked dirty after the loop stopped still hold references. */
  process_local(s);
  pthread_mutex_lock(&s->mu);
  rpc_call *l = s->remote_dirty;
  s->remote_dirty = NULL;
  pthread_mutex_unlock(&s->mu);
  run_dirty_list(l);
  if (s->accept_ev) event_free(s->accept_ev);
  if (s->wake_ev) event_free(s->wake_ev);
  if (s->grace_ev) event_free(s->grace_ev);
  if (s->efd_ev) event_free(s->efd_ev);
  if (s->lfd >= 0) close(s->lfd);
  if (s->efd >= 0) close(s->efd);
  if (s->cbs) nghttp2_session_callbacks_del(s->cbs);
  if (s->opt) nghttp2_option_del(s->opt);
  tls_ctx_free(s->tls);
  auth_free(s->auth);
  pthread_mutex_destroy(&s->mu);
  free(s);
}

/* ---------------------------------------------------- rpc.h functions */

void rpc_set_state(rpc_call *c, void *state) {
  c->state = state;
}

void *rpc_state(rpc_call *c) {
  return c->state;
}

const char *rpc_path(rpc_call *c) {
  return c->path;
}

const char *rpc_auth_name(rpc_call *c) {
  return c->auth_name;
}

int rpc_send(rpc_call *c, const uint8_t *msg, size_t len) {
  uint8_t pfx[GRPC_PREFIX_LEN];
  if (len > UINT32_MAX) return -1;
  grpc_prefix_put(pfx, (uint32_t)len);
  pthread_mutex_lock(&c->mu);
  if (c->finished || atomic_load(&c->done)) {
    pthread_mutex_unlock(&c->mu);
    return -1;
  }
  int was_empty = c->out_len == c->out_off;
  if (out_append(c, pfx, sizeof pfx) != 0 ||
      (len && out_append(c, msg, len) != 0)) {
    pthread_mutex_unlock(&c->mu);
    return -1;
  }
  pthread_mutex_unlock(&c->mu);
  if (was_empty) call_mark_dirty(c);
  return 0;
}

size_t rpc_pending_bytes(rpc_call *c) {
  pthread_mutex_lock(&c->mu);
  size_t n = c->out_len - c->out_off;
  pthread_mutex_unlock(&c->mu);
  return n;
}

void rpc_finish(rpc_call *c, int grpc_status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  pthread_mutex_lock(&c->mu);
  int first = do_finish(c, grpc_status, fmt, ap) == 0;
  pthread_mutex_unlock(&c->mu);
  va_end(ap);
  if (first) call_mark_dirty(c);
}

int rpc_is_done(rpc_call *c) {
  return atomic_load(&c->done);
}

uint64_t rpc_deadline_ns(rpc_call *c) {
  return c->deadline_ns;
}

void rpc_set_timer(rpc_call *c, unsigned ms) {
  pthread_mutex_lock(&c->mu);
  c->timer_ms = ms;
  c->timer_req = 1;
  pthread_mutex_unlock(&c->mu);
  call_mark_dirty(c);
}

struct ctxd_ctx *rpc_ctx(rpc_call *c) {
  return c->srv->ctx;
}
