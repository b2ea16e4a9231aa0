/* ctxd_load.c - a gRPC-aware load driver for ctxd: many HTTP/2 connections
 * (nghttp2 client sessions on one libevent loop), each keeping a number of
 * unary calls in flight, a weighted mix of Put, Search and SelectContext
 * (bm25 and a model method) over a prose corpus. Unlike h2load it reads
 * grpc-status from the trailers and counts every non-zero status as an
 * error. Optional bad actors (connections that never read, clients that
 * cancel calls mid-stream or drop connections) run inside a time window, so
 * one run gives the measured clients' latencies with and without them.
 * Usage: ctxd_load --help. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "ctxd/v1/documents.pb-c.h"
#include "ctxd/v1/retrieval.pb-c.h"

/* ---- methods, phases, statistics ----------------------------------------- */

enum { M_PUT, M_SEARCH, M_BM25, M_MODEL, N_METHODS };
static const char *const method_name[N_METHODS] = {"put", "search",
                                                   "select_bm25", "select_model"};
static const char *const method_path[N_METHODS] = {
    "/ctxd.v1.Documents/Put", "/ctxd.v1.Retrieval/Search",
    "/ctxd.v1.Retrieval/SelectContext", "/ctxd.v1.Retrieval/SelectContext"};

/* Calls are filed by the phase in which they started. */
enum { P_CLEAN, P_BAD, N_PHASES };
static const char *const phase_name[N_PHASES] = {"clean", "bad"};

/* Status slots: 0..16 are gRPC codes; NO_STATUS: the stream ended with no
 * grpc-status (reset, lost connection, HTTP error). */
#define N_STATUS 18
#define NO_STATUS 17
#define MAX_SAMPLES (16u << 20) /* latencies kept per row; counts go on */

typedef struct row {
  uint32_t *lat_us;
  size_t n, cap;
  uint64_t status[N_STATUS];
  uint64_t calls;
} row;

static row rows[N_METHODS][N_PHASES];
static char first_msg[N_STATUS][192]; /* first grpc-message per status */

/* ---- options -------------------------------------------------------------- */

static struct {
  const char *host, *port;
  int conns, streams;
  double duration, warmup, drain;
  unsigned weight[N_METHODS];
  const char *corpus, *collection, *model_method;
  int prepare, max_docs, put_ids, model_max, timeout_ms;
  int slow, slow_streams, cancel, cancel_streams, cancel_ms;
  double bad_from, bad_to;
  const char *write_search;
  uint64_t seed;
} opt = {.conns = 200, .streams = 20, .duration = 30, .warmup = 2,
         .drain = 30, .weight = {5, 60, 30, 5}, .collection = "load",
         .model_method = "xl3m", .max_docs = 0, .put_ids = 200,
         .model_max = 1, .timeout_ms = 60000, .slow_streams = 20,
         .cancel_streams = 10, .cancel_ms = 50, .bad_from = -1,
         .bad_to = -1, .seed = 1};

/* ---- corpus --------------------------------------------------------------- */

static char **docs;
static size_t *doc_len;
static int n_docs;

static uint64_t rng_state;
static uint64_t rnd(void) { /* xorshift64* */
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 2685821657736338717ull;
}

static void die(const char *fmt, const char *arg) {
  fprintf(stderr, "ctxd_load: ");
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  exit(2);
}

static void load_corpus(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) die("cannot open corpus %s", path);
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  size_t dcap = 0;
  while ((n = getline(&line, &cap, f)) > 0) {
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
    if (n < 40) continue; /* too short to draw questions from */
    if (opt.max_docs && n_docs >= opt.max_docs) break;
    if ((size_t)n_docs == dcap) {
      dcap = dcap ? dcap * 2 : 256;
      docs = realloc(docs, dcap * sizeof *docs);
      doc_len = realloc(doc_len, dcap * sizeof *doc_len);
      if (!docs || !doc_len) die("%s", "out of memory");
    }
    docs[n_docs] = strndup(line, (size_t)n);
    if (!docs[n_docs]) die("%s", "out of memory");
    doc_len[n_docs++] = (size_t)n;
  }
  free(line);
  fclose(f);
  if (n_docs == 0) die("no documents (lines of 40+ bytes) in %s", path);
}

/* `words` whole words from a random place of a random document, into out
 * (NUL-terminated). Words are split at ASCII spaces, so UTF-8 stays whole. */
static void draw_words(int words, char *out, size_t outlen) {
  const char *d = docs[rnd() % (uint64_t)n_docs];
  size_t len = strlen(d), i = rnd() % len, o = 0;
  while (i > 0 && d[i - 1] != ' ') i--;
  for (int w = 0; w < words && i < len; w++) {
    while (i < len && d[i] == ' ') i++;
    if (o && o + 1 < outlen) out[o++] = ' ';
    while (i < len && d[i] != ' ' && o + 1 < outlen) out[o++] = d[i++];
  }
  out[o] = '\0';
  if (o == 0) snprintf(out, outlen, "the");
}

/* ---- request bodies -------------------------------------------------------- */

typedef struct body {
  uint8_t *buf;
  size_t len;
} body;

static void frame(const ProtobufCMessage *m, body *b) {
  size_t n = protobuf_c_message_get_packed_size(m);
  b->buf = malloc(n + 5);
  if (!b->buf) die("%s", "out of memory");
  b->buf[0] = 0;
  b->buf[1] = (uint8_t)(n >> 24);
  b->buf[2] = (uint8_t)(n >> 16);
  b->buf[3] = (uint8_t)(n >> 8);
  b->buf[4] = (uint8_t)n;
  protobuf_c_message_pack(m, b->buf + 5);
  b->len = n + 5;
}

static void make_put(const char *id, const char *text, body *b) {
  Ctxd__V1__Document d = CTXD__V1__DOCUMENT__INIT;
  Ctxd__V1__PutRequest r = CTXD__V1__PUT_REQUEST__INIT;
  d.id = (char *)id;
  d.text = (char *)text;
  d.collection = (char *)opt.collection;
  r.document = &d;
  frame(&r.base, b);
}

static void make_search(int with_text, body *b) {
  char q[256];
  Ctxd__V1__SearchRequest r = CTXD__V1__SEARCH_REQUEST__INIT;
  draw_words(3 + (int)(rnd() % 4), q, sizeof q);
  r.text = q;
  r.k = with_text ? 50 : 10;
  r.with_text = with_text;
  r.collection = (char *)opt.collection;
  frame(&r.base, b);
}

static void make_request(int m, body *b) {
  char id[64], q[256], text[4096];
  Ctxd__V1__SelectContextRequest r = CTXD__V1__SELECT_CONTEXT_REQUEST__INIT;
  switch (m) {
    case M_PUT: {
      /* Replace one of put_ids documents: the store stays the same size
       * however long the run, so RSS can be judged. */
      snprintf(id, sizeof id, "put-%llu",
               (unsigned long long)(rnd() % (uint64_t)opt.put_ids));
      make_put(id, docs[rnd() % (uint64_t)n_docs], b);
      return;
    }
    case M_SEARCH:
      make_search(0, b);
      return;
    case M_BM25:
      snprintf(id, sizeof id, "doc-%llu",
               (unsigned long long)(rnd() % (uint64_t)n_docs));
      draw_words(6, q, sizeof q);
      r.doc_id = id;
      r.question = q;
      r.token_budget = 256;
      r.method = "bm25";
      r.collection = (char *)opt.collection;
      frame(&r.base, b);
      return;
    default:
      /* A model selection over ~150 words of inline text: a small share
       * of the calls, each far more CPU than the others. */
      draw_words(150, text, sizeof text);
      draw_words(8, q, sizeof q);
      r.text = text;
      r.question = q;
      r.token_budget = 64;
      r.method = (char *)opt.model_method;
      frame(&r.base, b);
      return;
  }
}

/* ---- connections and calls -------------------------------------------------- */

enum { K_MEASURED, K_SLOW, K_CANCEL, K_PREPARE };

typedef struct conn conn;
typedef struct call {
  conn *cn;
  int method, phase, recorded;
  int32_t stream_id;
  double t0;
  body req;
  size_t sent, send_limit; /* send_limit < req.len: a partial message */
  int status;
  int http_status;
  char msg[160]; /* grpc-message, percent-encoded as sent */
  struct event *cancel_ev;
  struct call *next; /* the connection's list */
} call;

struct conn {
  int kind, idx;
  struct bufferevent *bev;
  nghttp2_session *h2;
  call *calls;
  int inflight;
  int started; /* calls started on this connection (cancel: reconnect) */
  int dead;
  struct event *retry_ev;
};

static struct event_base *base;
static double t_start;
static int stopping;      /* no new calls */
static int inflight_total, model_inflight;
static uint64_t conn_errors, cancels_sent, drops, prepare_failed;
static uint64_t bad_lost; /* bad actors' connections the server ended */
static int prepare_next, prepare_done;
static conn *conns;
static int n_conns;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double elapsed(void) { return now() - t_start; }

static int bad_active(void) {
  double t = elapsed();
  return opt.bad_from >= 0 && t >= opt.bad_from && t < opt.bad_to;
}

static void conn_open(conn *cn);
static void conn_close(conn *cn);
static void fill(conn *cn);

static void record(call *c) {
  if (!c->recorded) return;
  row *r = &rows[c->method][c->phase];
  double us = (now() - c->t0) * 1e6;
  int s = c->status >= 0 && c->status < 17 ? c->status : NO_STATUS;
  r->calls++;
  r->status[s]++;
  if (r->n == r->cap && r->cap < MAX_SAMPLES) {
    size_t cap = r->cap ? r->cap * 2 : 4096;
    uint32_t *p = realloc(r->lat_us, cap * sizeof *p);
    if (!p) die("%s", "out of memory");
    r->lat_us = p;
    r->cap = cap;
  }
  if (r->n < r->cap) r->lat_us[r->n++] = us > 4e9 ? 4000000000u : (uint32_t)us;
}

static void call_free(call *c) {
  if (c->cancel_ev) event_free(c->cancel_ev);
  free(c->req.buf);
  free(c);
}

static void unlink_call(call *c) {
  conn *cn = c->cn;
  for (call **pp = &cn->calls; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  cn->inflight--;
  inflight_total--;
  if (c->method == M_MODEL) model_inflight--;
}

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len,
                       int flags, void *ud) {
  conn *cn = ud;
  (void)s;
  (void)flags;
  if (evbuffer_add(bufferevent_get_output(cn->bev), data, len) != 0)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  return (ssize_t)len;
}

static ssize_t read_body(nghttp2_session *s, int32_t sid, uint8_t *buf,
                         size_t len, uint32_t *flags, nghttp2_data_source *src,
                         void *ud) {
  call *c = src->ptr;
  (void)s;
  (void)sid;
  (void)ud;
  size_t left = c->send_limit - c->sent;
  if (left == 0) return NGHTTP2_ERR_DEFERRED; /* a partial message: hold */
  size_t n = left < len ? left : len;
  memcpy(buf, c->req.buf + c->sent, n);
  c->sent += n;
  if (c->sent == c->req.len) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *ud) {
  (void)flags;
  (void)ud;
  call *c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (!c) return 0;
  if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    c->status = 0;
    for (size_t i = 0; i < valuelen && i < 4; i++)
      c->status = c->status * 10 + (value[i] - '0');
  } else if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
    c->http_status = atoi((const char *)value);
  } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
    snprintf(c->msg, sizeof c->msg, "%.*s", (int)valuelen, value);
  }
  return 0;
}

static int on_close(nghttp2_session *s, int32_t sid, uint32_t err, void *ud) {
  conn *cn = ud;
  call *c = nghttp2_session_get_stream_user_data(s, sid);
  (void)err;
  if (!c) return 0;
  if (c->status < 0) c->status = NO_STATUS;
  if (c->status > 0 && c->status < 17 && !first_msg[c->status][0] &&
      cn->kind != K_CANCEL)
    snprintf(first_msg[c->status], sizeof first_msg[0], "%s %s",
             method_name[c->method], c->msg);
  if (cn->kind == K_PREPARE) {
    if (c->status != 0 && !prepare_failed)
      fprintf(stderr, "prepare: Put failed with status %d %s\n", c->status,
              c->msg);
    if (c->status != 0) prepare_failed++;
    prepare_done++;
  }
  record(c);
  unlink_call(c);
  call_free(c);
  return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f,
                         void *ud) {
  conn *cn = ud;
  (void)s;
  if (f->hd.type == NGHTTP2_GOAWAY && getenv("CTXD_LOAD_DEBUG"))
    fprintf(stderr, "connection %d: GOAWAY %s: %.*s\n", cn->idx,
            nghttp2_http2_strerror(f->goaway.error_code),
            (int)f->goaway.opaque_data_len, f->goaway.opaque_data);
  return 0;
}

/* CTXD_LOAD_DEBUG: a GOAWAY this side sends (its session found the peer
 * broke the protocol) says why. */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f,
                         void *ud) {
  conn *cn = ud;
  (void)s;
  if (f->hd.type == NGHTTP2_GOAWAY && getenv("CTXD_LOAD_DEBUG"))
    fprintf(stderr, "connection %d (kind %d): sent GOAWAY %s: %.*s\n",
            cn->idx, cn->kind, nghttp2_http2_strerror(f->goaway.error_code),
            (int)f->goaway.opaque_data_len, f->goaway.opaque_data);
  return 0;
}

static void cancel_cb(evutil_socket_t fd, short what, void *arg) {
  call *c = arg;
  conn *cn = c->cn;
  (void)fd;
  (void)what;
  nghttp2_submit_rst_stream(cn->h2, NGHTTP2_FLAG_NONE, c->stream_id,
                            NGHTTP2_CANCEL);
  cancels_sent++;
  nghttp2_session_send(cn->h2);
}

static int pick_method(void) {
  unsigned total = 0, w[N_METHODS];
  for (int i = 0; i < N_METHODS; i++) {
    w[i] = opt.weight[i];
    if (i == M_MODEL && model_inflight >= opt.model_max) w[i] = 0;
    total += w[i];
  }
  if (total == 0) return M_SEARCH;
  unsigned x = (unsigned)(rnd() % total);
  for (int i = 0; i < N_METHODS; i++) {
    if (x < w[i]) return i;
    x -= w[i];
  }
  return M_SEARCH;
}

static int start_call(conn *cn, int method, body *req) {
  call *c = calloc(1, sizeof *c);
  if (!c) die("%s", "out of memory");
  c->cn = cn;
  c->method = method;
  c->status = -1;
  c->req = *req;
  c->send_limit = req->len;
  c->t0 = now();
  double t = c->t0 - t_start;
  c->phase = bad_active() ? P_BAD : P_CLEAN;
  c->recorded = cn->kind == K_MEASURED && t >= opt.warmup &&
                t < opt.duration;
  char tmo[32];
  snprintf(tmo, sizeof tmo, "%dm", opt.timeout_ms);
  const char *path = method_path[method];
  nghttp2_nv hdrs[] = {
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), 0}
      NV(":method", "POST"),
      NV(":scheme", "http"),
      NV(":authority", opt.host),
      NV(":path", path),
      NV("content-type", "application/grpc"),
      NV("te", "trailers"),
      NV("grpc-timeout", tmo),
#undef NV
  };
  size_t nh = sizeof hdrs / sizeof hdrs[0];
  if (cn->kind == K_SLOW) nh--; /* held until the bad window closes */
  if (cn->kind == K_CANCEL && (rnd() & 1))
    c->send_limit = 5 + (req->len - 5) / 2; /* hangs mid-message */
  nghttp2_data_provider dp = {.source.ptr = c, .read_callback = read_body};
  int32_t sid = nghttp2_submit_request(cn->h2, NULL, hdrs, nh, &dp, c);
  if (sid < 0) {
    free(c->req.buf);
    free(c);
    return -1;
  }
  c->stream_id = sid;
  c->next = cn->calls;
  cn->calls = c;
  cn->inflight++;
  cn->started++;
  inflight_total++;
  if (method == M_MODEL) model_inflight++;
  if (cn->kind == K_CANCEL) {
    struct timeval tv;
    uint64_t us = rnd() % ((uint64_t)opt.cancel_ms * 1000 + 1);
    tv.tv_sec = (time_t)(us / 1000000);
    tv.tv_usec = (suseconds_t)(us % 1000000);
    c->cancel_ev = evtimer_new(base, cancel_cb, c);
    evtimer_add(c->cancel_ev, &tv);
  }
  return 0;
}

/* Keep the connection's calls topped up, by its kind. */
static void fill(conn *cn) {
  if (cn->dead || !cn->h2) return;
  body b;
  switch (cn->kind) {
    case K_MEASURED:
      while (!stopping && cn->inflight < opt.streams) {
        int m = pick_method();
        make_request(m, &b);
        if (start_call(cn, m, &b) < 0) break;
      }
      break;
    case K_CANCEL:
      if (!bad_active()) break;
      if (cn->started >= 50 && cn->inflight > 0) {
        /* Drop the connection with calls open, then come back. */
        drops++;
        conn_close(cn);
        conn_open(cn);
        return;
      }
      while (cn->inflight < opt.cancel_streams) {
        int m = (rnd() % 4 == 0) ? M_BM25 : M_SEARCH;
        make_request(m, &b);
        if (start_call(cn, m, &b) < 0) break;
      }
      break;
    case K_SLOW:
      /* One batch of large answers, then never read again. */
      if (cn->started == 0) {
        for (int i = 0; i < opt.slow_streams; i++) {
          make_search(1, &b);
          if (start_call(cn, M_SEARCH, &b) < 0) break;
        }
        nghttp2_session_send(cn->h2);
        bufferevent_disable(cn->bev, EV_READ);
      }
      return;
    case K_PREPARE:
      while (prepare_next < n_docs && cn->inflight < 8) {
        char id[32];
        snprintf(id, sizeof id, "doc-%d", prepare_next);
        make_put(id, docs[prepare_next], &b);
        if (start_call(cn, M_PUT, &b) < 0) break;
        prepare_next++;
      }
      break;
  }
  if (nghttp2_session_send(cn->h2) != 0) conn_close(cn);
}

static void conn_read_cb(struct bufferevent *bev, void *arg) {
  conn *cn = arg;
  struct evbuffer *in = bufferevent_get_input(bev);
  size_t len = evbuffer_get_length(in);
  unsigned char *data = evbuffer_pullup(in, -1);
  ssize_t r = nghttp2_session_mem_recv(cn->h2, data, len);
  if (r < 0) {
    conn_errors++;
    conn_close(cn);
    return;
  }
  evbuffer_drain(in, len);
  fill(cn);
}

static void conn_event_cb(struct bufferevent *bev, short events, void *arg) {
  conn *cn = arg;
  (void)bev;
  if (events & BEV_EVENT_CONNECTED) {
    int one = 1;
    setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one,
               sizeof one);
    fill(cn);
    return;
  }
  if (cn->kind == K_MEASURED || cn->kind == K_PREPARE) {
    if (!stopping) conn_errors++;
  } else {
    bad_lost++;
    if (getenv("CTXD_LOAD_DEBUG"))
      fprintf(stderr, "bad actor connection %d (kind %d) ended: events 0x%x "
              "after %d calls\n", cn->idx, cn->kind, events, cn->started);
  }
  conn_close(cn);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  conn_open(arg);
}

/* Close the socket; the session's open calls end with no status. */
static void conn_close(conn *cn) {
  if (cn->dead) return;
  cn->dead = 1;
  while (cn->calls) {
    call *c = cn->calls;
    if (c->status < 0) c->status = NO_STATUS;
    if (cn->kind == K_PREPARE) {
      prepare_failed++;
      prepare_done++;
    }
    /* A measured call lost to our own drop (never for measured conns) or
     * to the server is recorded as an error. */
    record(c);
    unlink_call(c);
    call_free(c);
  }
  if (cn->h2) nghttp2_session_del(cn->h2);
  cn->h2 = NULL;
  if (cn->bev) bufferevent_free(cn->bev);
  cn->bev = NULL;
  /* Measured and prepare connections come back after a lost connection. */
  if (!stopping && (cn->kind == K_MEASURED || cn->kind == K_PREPARE)) {
    struct timeval tv = {0, 100000};
    if (!cn->retry_ev) cn->retry_ev = evtimer_new(base, retry_cb, cn);
    evtimer_add(cn->retry_ev, &tv);
  }
}

static void conn_open(conn *cn) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM},
                  *ai;
  if (getaddrinfo(opt.host, opt.port, &hints, &ai) != 0)
    die("cannot resolve %s", opt.host);
  cn->dead = 0;
  cn->started = 0;
  cn->inflight = 0;
  cn->calls = NULL;
  cn->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_send_callback(cb, send_cb);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_session_client_new(&cn->h2, cb, cn);
  nghttp2_session_callbacks_del(cb);
  /* SETTINGS go first, before any request a timer may submit. */
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
  nghttp2_submit_settings(cn->h2, NGHTTP2_FLAG_NONE, iv, 2);
  nghttp2_session_set_local_window_size(cn->h2, NGHTTP2_FLAG_NONE, 0, 16 << 20);
  bufferevent_setcb(cn->bev, conn_read_cb, NULL, conn_event_cb, cn);
  bufferevent_enable(cn->bev, EV_READ | EV_WRITE);
  if (bufferevent_socket_connect(cn->bev, ai->ai_addr, (int)ai->ai_addrlen) <
      0) {
    freeaddrinfo(ai);
    conn_errors++;
    conn_close(cn);
    return;
  }
  freeaddrinfo(ai);
}

/* ---- the clock ---------------------------------------------------------- */

static int slow_open, cancel_open, prepare_phase;

static void tick_cb(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  (void)arg;
  if (prepare_phase) {
    if (prepare_done >= n_docs) event_base_loopbreak(base);
    return;
  }
  double t = elapsed();
  int bad = bad_active();
  for (int i = 0; i < n_conns; i++) {
    conn *cn = &conns[i];
    if (cn->kind == K_MEASURED) continue;
    if (bad && cn->dead) conn_open(cn);
    if (!bad && !cn->dead && t >= opt.bad_to) conn_close(cn);
    if (bad && cn->kind == K_CANCEL) fill(cn);
  }
  (void)slow_open;
  (void)cancel_open;
  if (t >= opt.duration && !stopping) stopping = 1;
  if (stopping) {
    int measured_left = 0;
    for (int i = 0; i < n_conns; i++)
      if (conns[i].kind == K_MEASURED) measured_left += conns[i].inflight;
    if (measured_left == 0 || t >= opt.duration + opt.drain)
      event_base_loopbreak(base);
  }
}

/* ---- report ---------------------------------------------------------------- */

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static double pct(const row *r, double p) {
  if (r->n == 0) return 0;
  size_t i = (size_t)(p * (double)(r->n - 1) + 0.5);
  return r->lat_us[i] / 1000.0;
}

static int report(double measured_s[N_PHASES]) {
  uint64_t errors = 0;
  printf("%-13s %-6s %9s %9s %9s %9s %9s %7s  %s\n", "method", "phase",
         "calls", "calls/s", "p50_ms", "p99_ms", "p99.9_ms", "errors",
         "status counts");
  for (int p = 0; p < N_PHASES; p++) {
    for (int m = 0; m <= N_METHODS; m++) {
      row all = {0};
      row *r;
      if (m == N_METHODS) { /* every method of the phase together */
        size_t n = 0;
        for (int i = 0; i < N_METHODS; i++) n += rows[i][p].n;
        all.lat_us = malloc((n ? n : 1) * sizeof *all.lat_us);
        if (!all.lat_us) die("%s", "out of memory");
        for (int i = 0; i < N_METHODS; i++) {
          /* a method with no call in this phase has no array (NULL), and
           * memcpy from NULL is undefined even for 0 bytes */
          if (rows[i][p].n)
            memcpy(all.lat_us + all.n, rows[i][p].lat_us,
                   rows[i][p].n * sizeof *all.lat_us);
          all.n += rows[i][p].n;
          all.calls += rows[i][p].calls;
          for (int s = 0; s < N_STATUS; s++)
            all.status[s] += rows[i][p].status[s];
        }
        r = &all;
      } else {
        r = &rows[m][p];
      }
      if (r->calls == 0) {
        free(all.lat_us);
        continue;
      }
      if (r->n) qsort(r->lat_us, r->n, sizeof *r->lat_us, cmp_u32);
      uint64_t err = r->calls - r->status[0];
      if (m < N_METHODS) errors += err;
      char st[256] = "";
      size_t o = 0;
      for (int s = 0; s < N_STATUS && o < sizeof st - 24; s++) {
        if (!r->status[s]) continue;
        if (s == NO_STATUS)
          o += (size_t)snprintf(st + o, sizeof st - o, "%snone=%llu",
                                o ? "," : "", (unsigned long long)r->status[s]);
        else
          o += (size_t)snprintf(st + o, sizeof st - o, "%s%d=%llu",
                                o ? "," : "", s, (unsigned long long)r->status[s]);
      }
      const char *name = m == N_METHODS ? "all" : method_name[m];
      double rate = measured_s[p] > 0 ? (double)r->calls / measured_s[p] : 0;
      printf("%-13s %-6s %9llu %9.1f %9.2f %9.2f %9.2f %7llu  %s\n", name,
             phase_name[p], (unsigned long long)r->calls, rate, pct(r, 0.5),
             pct(r, 0.99), pct(r, 0.999), (unsigned long long)err, st);
      /* one machine-readable line per row, for scripts and tests */
      fprintf(stderr,
              "row method=%s phase=%s calls=%llu rps=%.1f p50_ms=%.3f "
              "p99_ms=%.3f p999_ms=%.3f errors=%llu status=%s\n",
              name, phase_name[p], (unsigned long long)r->calls, rate,
              pct(r, 0.5), pct(r, 0.99), pct(r, 0.999),
              (unsigned long long)err, st[0] ? st : "-");
      free(all.lat_us);
    }
  }
  for (int s = 1; s < 17; s++)
    if (first_msg[s][0]) printf("first message of status %d: %s\n", s, first_msg[s]);
  return errors ? 1 : 0;
}

/* ---- main ----------------------------------------------------------------- */

static void usage(void) {
  fputs(
      "usage: ctxd_load --addr HOST:PORT --corpus FILE [options]\n"
      "  --conns N           measured connections (200; 0: bad actors only,\n"
      "                      to run them from a process of their own)\n"
      "  --streams N         calls in flight per measured connection (20)\n"
      "  --duration S        seconds of load, warm-up included (30)\n"
      "  --warmup S          first seconds not recorded (2)\n"
      "  --drain S           wait at most S for calls in flight at the end (30)\n"
      "  --mix put=W,search=W,bm25=W,model=W   weights (5,60,30,5)\n"
      "  --model-method M    xl3m or infiniretri (xl3m)\n"
      "  --model-max N       model calls in flight at most (1; the daemon's\n"
      "                      model.max_concurrent)\n"
      "  --corpus FILE       one document per line (lines under 40 bytes skipped)\n"
      "  --max-docs N        use the first N documents (all)\n"
      "  --collection NAME   (load)\n"
      "  --prepare           first Put every document as doc-<i>\n"
      "  --put-ids N         Put replaces one of N ids put-<k> (200)\n"
      "  --timeout-ms N      grpc-timeout of each call (60000)\n"
      "  --slow N            bad actors: N connections that send --slow-streams\n"
      "                      Searches with large answers and never read (0)\n"
      "  --slow-streams N    (20)\n"
      "  --cancel N          bad actors: N connections that keep\n"
      "                      --cancel-streams calls open and reset each\n"
      "                      (RST_STREAM CANCEL) within --cancel-ms, half of\n"
      "                      them mid-message, and drop the connection every\n"
      "                      50 calls (0)\n"
      "  --cancel-streams N  (10)   --cancel-ms N (50)\n"
      "  --bad-window A,B    bad actors run from second A to B (default:\n"
      "                      the second third of the run); the phases follow\n"
      "                      it even with no bad actors in this process\n"
      "  --seed N            (1)\n"
      "  --write-search FILE write one framed Search request (for h2load -d)\n"
      "                      and exit\n"
      "Prints a table per method and phase (clean / bad: calls started while\n"
      "bad actors ran), latency percentiles in ms; on stderr one `row ...`\n"
      "line per row. Exit 1 when a measured call did not end with status 0\n"
      "or was still open after --drain, 2 on usage or set-up errors.\n",
      stderr);
  exit(2);
}

static void parse_mix(const char *s) {
  static const char *const keys[N_METHODS] = {"put", "search", "bm25", "model"};
  char *dup = strdup(s), *save = NULL;
  for (int i = 0; i < N_METHODS; i++) opt.weight[i] = 0;
  for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(t, '=');
    int i;
    if (!eq) die("bad --mix item %s", t);
    *eq = '\0';
    for (i = 0; i < N_METHODS && strcmp(keys[i], t) != 0; i++) {
    }
    if (i == N_METHODS) die("unknown --mix method %s", t);
    opt.weight[i] = (unsigned)atoi(eq + 1);
  }
  free(dup);
}

int main(int argc, char **argv) {
  static char host[256], port[16];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v && ++i)
    if (ARG("--addr")) {
      const char *colon = strrchr(v, ':');
      if (!colon || (size_t)(colon - v) >= sizeof host) die("bad --addr %s", v);
      snprintf(host, sizeof host, "%.*s", (int)(colon - v), v);
      snprintf(port, sizeof port, "%s", colon + 1);
    } else if (ARG("--conns")) opt.conns = atoi(v);
    else if (ARG("--streams")) opt.streams = atoi(v);
    else if (ARG("--duration")) opt.duration = atof(v);
    else if (ARG("--warmup")) opt.warmup = atof(v);
    else if (ARG("--drain")) opt.drain = atof(v);
    else if (ARG("--mix")) parse_mix(v);
    else if (ARG("--model-method")) opt.model_method = v;
    else if (ARG("--model-max")) opt.model_max = atoi(v);
    else if (ARG("--corpus")) opt.corpus = v;
    else if (ARG("--max-docs")) opt.max_docs = atoi(v);
    else if (ARG("--collection")) opt.collection = v;
    else if (strcmp(a, "--prepare") == 0) opt.prepare = 1;
    else if (ARG("--put-ids")) opt.put_ids = atoi(v);
    else if (ARG("--timeout-ms")) opt.timeout_ms = atoi(v);
    else if (ARG("--slow")) opt.slow = atoi(v);
    else if (ARG("--slow-streams")) opt.slow_streams = atoi(v);
    else if (ARG("--cancel")) opt.cancel = atoi(v);
    else if (ARG("--cancel-streams")) opt.cancel_streams = atoi(v);
    else if (ARG("--cancel-ms")) opt.cancel_ms = atoi(v);
    else if (ARG("--bad-window")) {
      if (sscanf(v, "%lf,%lf", &opt.bad_from, &opt.bad_to) != 2)
        die("bad --bad-window %s", v);
    } else if (ARG("--seed")) opt.seed = strtoull(v, NULL, 10);
    else if (ARG("--write-search")) opt.write_search = v;
    else usage();
#undef ARG
  }
  if (!opt.corpus) usage();
  rng_state = opt.seed * 0x9E3779B97F4A7C15ull + 1;
  load_corpus(opt.corpus);
  if (opt.write_search) {
    body b;
    make_search(0, &b);
    FILE *f = fopen(opt.write_search, "wb");
    if (!f || fwrite(b.buf, 1, b.len, f) != b.len || fclose(f) != 0)
      die("cannot write %s", opt.write_search);
    free(b.buf);
    return 0;
  }
  if (!host[0] || opt.conns < 0 || opt.streams < 1 || opt.duration <= 0 ||
      opt.put_ids < 1 || opt.timeout_ms < 1 || opt.model_max < 0 ||
      opt.cancel_ms < 0)
    usage();
  opt.host = host;
  opt.port = port;
  if ((opt.slow || opt.cancel) && opt.bad_from < 0) {
    opt.bad_from = opt.duration / 3;
    opt.bad_to = 2 * opt.duration / 3;
  }
  signal(SIGPIPE, SIG_IGN);
  base = event_base_new();
  struct event *tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
  struct timeval tv = {0, 100000};
  evtimer_add(tick, &tv);

  if (opt.prepare) {
    conn pc[8];
    double t0 = now();
    memset(pc, 0, sizeof pc);
    prepare_phase = 1;
    t_start = now();
    for (int i = 0; i < 8; i++) {
      pc[i].kind = K_PREPARE;
      conn_open(&pc[i]);
    }
    event_base_dispatch(base);
    for (int i = 0; i < 8; i++) {
      int was_dead = pc[i].dead;
      stopping = 1;
      if (!was_dead) conn_close(&pc[i]);
      if (pc[i].retry_ev) event_free(pc[i].retry_ev);
      stopping = 0;
    }
    prepare_phase = 0;
    fprintf(stderr, "prepared %d documents in %.1f s (%llu failed)\n", n_docs,
            now() - t0, (unsigned long long)prepare_failed);
    if (prepare_failed) return 2;
  }

  n_conns = opt.conns + opt.slow + opt.cancel;
  conns = calloc((size_t)n_conns, sizeof *conns);
  if (!conns) die("%s", "out of memory");
  t_start = now();
  for (int i = 0; i < n_conns; i++) {
    conns[i].idx = i;
    conns[i].kind = i < opt.conns ? K_MEASURED
                    : i < opt.conns + opt.slow ? K_SLOW
                                               : K_CANCEL;
    conns[i].dead = 1;
    if (conns[i].kind == K_MEASURED) conn_open(&conns[i]);
  }
  event_base_dispatch(base);
  double end = elapsed();

  /* Measured calls still open after the drain: a stall. */
  uint64_t stuck[N_METHODS] = {0}, stuck_total = 0;
  for (int i = 0; i < n_conns; i++)
    for (call *c = conns[i].calls; c; c = c->next)
      if (conns[i].kind == K_MEASURED) {
        stuck[c->method]++;
        stuck_total++;
      }
  double measured_s[N_PHASES];
  double bad_len = opt.bad_from >= 0 ? opt.bad_to - opt.bad_from : 0;
  double from = opt.bad_from > opt.warmup ? opt.bad_from : opt.warmup;
  double to = opt.bad_to < opt.duration ? opt.bad_to : opt.duration;
  bad_len = opt.bad_from >= 0 && to > from ? to - from : 0;
  measured_s[P_BAD] = bad_len;
  measured_s[P_CLEAN] = opt.duration - opt.warmup - bad_len;
  printf("ctxd_load: %d connections x %d streams, %.0f s (%.0f s warm-up), "
         "mix put=%u search=%u bm25=%u model=%u (%s), %d docs; bad actors: "
         "%d slow readers, %d cancellers",
         opt.conns, opt.streams, opt.duration, opt.warmup, opt.weight[0],
         opt.weight[1], opt.weight[2], opt.weight[3], opt.model_method, n_docs,
         opt.slow, opt.cancel);
  if (opt.bad_from >= 0) printf(" from %.0f s to %.0f s", opt.bad_from, opt.bad_to);
  printf("\n");
  int rc = report(measured_s);
  printf("connection errors %llu, cancels sent %llu, connections dropped %llu, "
         "bad actors' connections ended by the server %llu, "
         "measured calls still open %.1f s after the end: %llu",
         (unsigned long long)conn_errors, (unsigned long long)cancels_sent,
         (unsigned long long)drops, (unsigned long long)bad_lost,
         end - opt.duration,
         (unsigned long long)stuck_total);
  for (int m = 0; m < N_METHODS; m++)
    if (stuck[m]) printf(" %s=%llu", method_name[m], (unsigned long long)stuck[m]);
  printf("\n");
  fprintf(stderr, "summary conn_errors=%llu stuck=%llu cancels=%llu drops=%llu\n",
          (unsigned long long)conn_errors, (unsigned long long)stuck_total,
          (unsigned long long)cancels_sent, (unsigned long long)drops);
  if (stuck_total || conn_errors) rc = 1;
  /* Everything goes with the process. */
  return rc;
}
