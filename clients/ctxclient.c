/* ctxclient.c - blocking gRPC client over h2c or TLS: an nghttp2 client
 * session on a non-blocking TCP socket (through ctxclient_tls when TLS is
 * on), driven by a poll loop inside each call.
 *
 * Every stream keeps its own outgoing byte queue (fed to nghttp2 through a
 * data provider that defers when the queue is empty) and its own queue of
 * received messages. pump() runs the connection until a condition on one
 * stream holds; since it serves every stream, a caller blocked on sending
 * still receives, which is what keeps a bidi stream from deadlocking when
 * both directions' flow-control windows fill. */
#include "ctxclient.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ctxclient_tls.h"
#include "ctxclient_wire.h"

/* A stream_send() blocks while more than this many bytes wait. */
#define SEND_HIGH_WATER (1u << 20)
/* The longest bearer token accepted (the header must fit the server's
 * header limits). */
#define MAX_TOKEN 4096
/* Our receive windows: large, so big responses are not throttled. */
#define RECV_STREAM_WINDOW (8 << 20)
#define RECV_CONN_WINDOW (32 << 20)

typedef struct msgq {
  struct msgq *next;
  uint8_t *data;
  size_t len;
} msgq;

struct ctxclient_stream {
  ctxclient *c;
  ctxclient_stream *prev, *next; /* c->streams list */
  int32_t id;                    /* -1 once nghttp2 has forgotten it */
  int64_t deadline;              /* CLOCK_MONOTONIC ms, 0 = none */
  /* sending */
  uint8_t *out;
  size_t out_off, out_len, out_cap;
  int half_close; /* no more messages will be queued */
  int unary;      /* a second response message ends the call (INTERNAL) */
  int eof_sent;   /* END_STREAM handed to nghttp2 */
  int deferred;   /* data provider is parked */
  /* receiving */
  ccw_deframer df;
  msgq *qhead, *qtail;
  int http_status;
  int have_grpc_status;
  int grpc_status;
  char grpc_message[sizeof(((ctxclient_status *)0)->message)];
  /* the end */
  int ended; /* final status known */
  ctxclient_status status;
};

struct ctxclient {
  int fd;
  cct_ctx *tls_ctx; /* TLS context (owns the BIO method); NULL for h2c */
  cct *tls;         /* the TLS session on fd; NULL for h2c */
  char *auth;       /* "Bearer TOKEN" for the authorization header, or NULL */
  int client_cert;  /* we presented a client certificate (for messages) */
  nghttp2_session *sess;
  char addr[300];      /* as given by the caller, for messages */
  char authority[300]; /* HOST:PORT for :authority */
  size_t max_message;
  int write_blocked; /* the last send() hit EAGAIN */
  int io_errno;      /* errno of a failed send() */
  int dead;          /* connection unusable; dead_status says why */
  int got_settings;  /* the server has spoken HTTP/2 */
  /* Until got_settings, calls fail (UNAVAILABLE) once this passes: a peer
   * that accepts TCP but never speaks HTTP/2 must not hang a call that has
   * no deadline of its own. CLOCK_MONOTONIC ms. */
  int64_t handshake_deadline;
  int64_t handshake_ms;  /* for the message */
  char proto_error[160]; /* why we sent GOAWAY with an error (peer's fault) */
  int got_goaway;
  uint32_t goaway_error;
  ctxclient_status dead_status;
  ctxclient_stream *streams;
};

/* ---- small helpers ------------------------------------------------------*/

static const char *const status_names[] = {"OK",
                                           "CANCELLED",
                                           "UNKNOWN",
                                           "INVALID_ARGUMENT",
                                           "DEADLINE_EXCEEDED",
                                           "NOT_FOUND",
                                           "ALREADY_EXISTS",
                                           "PERMISSION_DENIED",
                                           "RESOURCE_EXHAUSTED",
                                           "FAILED_PRECONDITION",
                                           "ABORTED",
                                           "OUT_OF_RANGE",
                                           "UNIMPLEMENTED",
                                           "INTERNAL",
                                           "UNAVAILABLE",
                                           "DATA_LOSS",
                                           "UNAUTHENTICATED"};

const char *ctxclient_status_name(int code) {
  static char buf[32];
  if (code >= 0 && code < (int)(sizeof status_names / sizeof status_names[0]))
    return status_names[code];
  snprintf(buf, sizeof buf, "CODE_%d", code);
  return buf;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_status_v(ctxclient_status *st, int code, const char *fmt,
                         va_list ap) {
  if (!st) return;
  st->code = code;
  vsnprintf(st->message, sizeof st->message, fmt, ap);
}

__attribute__((format(printf, 3, 4))) static int fail(ctxclient_status *st,
                                                      int code, const char *fmt,
                                                      ...) {
  va_list ap;
  va_start(ap, fmt);
  set_status_v(st, code, fmt, ap);
  va_end(ap);
  return CTXCLIENT_ESTATUS;
}

static void clear_status(ctxclient_status *st) {
  if (st) {
    st->code = 0;
    st->message[0] = '\0';
  }
}

/* End a stream with a locally made status (first end wins). */
__attribute__((format(printf, 3, 4))) static void stream_end_local(
    ctxclient_stream *s, int code, const char *fmt, ...) {
  if (s->ended) return;
  va_list ap;
  va_start(ap, fmt);
  set_status_v(&s->status, code, fmt, ap);
  va_end(ap);
  s->ended = 1;
}

/* Cancel the HTTP/2 stream behind `s` (if nghttp2 still has it). */
static void stream_reset(ctxclient_stream *s, uint32_t error_code) {
  if (s->id < 0 || s->c->dead) return;
  nghttp2_session_set_stream_user_data(s->c->sess, s->id, NULL);
  nghttp2_submit_rst_stream(s->c->sess, NGHTTP2_FLAG_NONE, s->id, error_code);
  s->id = -1;
}

/* The connection failed: every stream not yet ended ends with `st`. */
static void conn_fail(ctxclient *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_fail(ctxclient *c, int code, const char *fmt, ...) {
  if (c->dead) return;
  va_list ap;
  va_start(ap, fmt);
  set_status_v(&c->dead_status, code, fmt, ap);
  va_end(ap);
  c->dead = 1;
  for (ctxclient_stream *s = c->streams; s; s = s->next) {
    if (!s->ended) {
      s->status = c->dead_status;
      s->ended = 1;
    }
    s->id = -1;
  }
}

/* gRPC's mapping of HTTP statuses for responses without grpc-status. */
static int http_to_grpc(int http) {
  switch (http) {
    case 400:
      return 13; /* INTERNAL */
    case 401:
      return 16; /* UNAUTHENTICATED */
    case 403:
      return 7; /* PERMISSION_DENIED */
    case 404:
      return 12; /* UNIMPLEMENTED */
    case 429:
    case 502:
    case 503:
    case 504:
      return 14; /* UNAVAILABLE */
    default:
      return 2; /* UNKNOWN */
  }
}

/* The peer ended the stream (END_STREAM seen): settle the final status. */
static void stream_end_remote(ctxclient_stream *s) {
  if (s->ended) return;
  if (s->have_grpc_status) {
    s->status.code = s->grpc_status;
    memcpy(s->status.message, s->grpc_message, sizeof s->status.message);
    if (s->status.code == 0 && ccw_deframer_partial(&s->df))
      stream_end_local(s, 13, "response ended inside a message");
  } else if (s->http_status != 200 && s->http_status != 0) {
    stream_end_local(s, http_to_grpc(s->http_status),
                     "server answered HTTP status %d without grpc-status",
                     s->http_status);
  } else {
    stream_end_local(s, 13, "response ended without grpc-status");
  }
  s->ended = 1;
  /* A unary or streaming call whose response is over needs no more of our
   * data: if we had not half-closed, cancel our side as gRPC clients do. */
  if (!s->eof_sent) stream_reset(s, NGHTTP2_CANCEL);
}

/* ---- nghttp2 callbacks --------------------------------------------------*/

static ssize_t on_send(nghttp2_session *sess, const uint8_t *data, size_t len,
                       int flags, void *ud) {
  ctxclient *c = ud;
  (void)sess;
  (void)flags;
  if (c->tls) {
    ssize_t n = cct_write(c->tls, data, len);
    if (n > 0) return n;
    /* WANT_READ (a TLS key update): poll() always waits for input, and
     * every round flushes again. */
    if (n == CCT_WANT_WRITE) c->write_blocked = 1;
    if (n == CCT_WANT_READ || n == CCT_WANT_WRITE)
      return NGHTTP2_ERR_WOULDBLOCK;
    c->io_errno = -1; /* the reason is cct_error() */
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  for (;;) {
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n >= 0) return n;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      c->write_blocked = 1;
      return NGHTTP2_ERR_WOULDBLOCK;
    }
    c->io_errno = errno;
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
}

static ssize_t on_read_data(nghttp2_session *sess, int32_t id, uint8_t *buf,
                            size_t length, uint32_t *flags,
                            nghttp2_data_source *src, void *ud) {
  (void)src;
  (void)ud;
  ctxclient_stream *s = nghttp2_session_get_stream_user_data(sess, id);
  if (!s) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  size_t avail = s->out_len - s->out_off;
  if (avail == 0 && !s->half_close) {
    s->deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n = avail < length ? avail : length;
  if (n) memcpy(buf, s->out + s->out_off, n); /* s->out may be NULL */
  s->out_off += n;
  if (s->out_off == s->out_len) {
    s->out_off = s->out_len = 0;
    if (s->half_close) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      s->eof_sent = 1;
    }
  }
  return (ssize_t)n;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *frame,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *ud) {
  (void)flags;
  (void)ud;
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  ctxclient_stream *s =
      nghttp2_session_get_stream_user_data(sess, frame->hd.stream_id);
  if (!s) return 0;
  if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
    s->http_status = 0;
    for (size_t i = 0; i < valuelen && i < 3; i++)
      s->http_status = s->http_status * 10 + (value[i] - '0');
  } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
    int v = 0;
    size_t i = 0;
    for (; i < valuelen && i < 4 && value[i] >= '0' && value[i] <= '9'; i++)
      v = v * 10 + (value[i] - '0');
    s->have_grpc_status = 1;
    s->grpc_status = (i == valuelen && i > 0) ? v : 2; /* junk: UNKNOWN */
  } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
    ccw_percent_decode((const char *)value, valuelen, s->grpc_message,
                       sizeof s->grpc_message);
  }
  return 0;
}

static int queue_message(void *ud, uint8_t *msg, size_t len) {
  ctxclient_stream *s = ud;
  if (s->unary && s->qhead) {
    /* Refuse at once rather than queue whatever a broken server keeps
     * sending until the deadline. */
    free(msg);
    stream_end_local(s, 13, "expected one response message, got several");
    return -1;
  }
  msgq *m = malloc(sizeof *m);
  if (!m) {
    free(msg);
    return -1;
  }
  m->next = NULL;
  m->data = msg;
  m->len = len;
  if (s->qtail)
    s->qtail->next = m;
  else
    s->qhead = m;
  s->qtail = m;
  return 0;
}

static int on_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t id,
                         const uint8_t *data, size_t len, void *ud) {
  (void)flags;
  (void)ud;
  ctxclient_stream *s = nghttp2_session_get_stream_user_data(sess, id);
  if (!s || s->ended) return 0;
  int rc = ccw_deframer_feed(&s->df, data, len, queue_message, s);
  if (rc == 0) return 0;
  if (rc == CCW_ETOOBIG)
    stream_end_local(s, 8, "response message larger than the %zu-byte limit",
                     s->df.max_len);
  else if (rc == CCW_ECOMPRESSED)
    stream_end_local(s, 13,
                     "compressed response message, but no "
                     "grpc-encoding was offered");
  else
    stream_end_local(s, 8, "out of memory receiving a response message");
  stream_reset(s, NGHTTP2_CANCEL);
  return 0;
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *frame,
                         void *ud) {
  ctxclient *c = ud;
  if (frame->hd.type == NGHTTP2_SETTINGS) c->got_settings = 1;
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    c->got_goaway = 1;
    c->goaway_error = frame->goaway.error_code;
  }
  if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    ctxclient_stream *s =
        nghttp2_session_get_stream_user_data(sess, frame->hd.stream_id);
    if (s) stream_end_remote(s);
  }
  return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t id,
                           uint32_t error_code, void *ud) {
  (void)ud;
  ctxclient_stream *s = nghttp2_session_get_stream_user_data(sess, id);
  if (!s) return 0;
  s->id = -1;
  if (s->ended) return 0;
  if (error_code == NGHTTP2_REFUSED_STREAM)
    stream_end_local(s, 14, "stream refused by server");
  else if (error_code == NGHTTP2_CANCEL)
    stream_end_local(s, 1, "stream cancelled by server");
  else if (error_code != NGHTTP2_NO_ERROR)
    stream_end_local(s, 13, "stream reset by server: %s",
                     nghttp2_http2_strerror(error_code));
  else
    stream_end_remote(s);
  return 0;
}

/* We are closing the connection because of the peer (nghttp2 queues a
 * GOAWAY with an error code and its reason as debug data): keep that. */
static int on_frame_send(nghttp2_session *sess, const nghttp2_frame *frame,
                         void *ud) {
  ctxclient *c = ud;
  (void)sess;
  if (frame->hd.type != NGHTTP2_GOAWAY ||
      frame->goaway.error_code == NGHTTP2_NO_ERROR || c->proto_error[0])
    return 0;
  size_t n = frame->goaway.opaque_data_len;
  snprintf(c->proto_error, sizeof c->proto_error, "%s%s%.*s",
           nghttp2_http2_strerror(frame->goaway.error_code), n ? ", " : "",
           n > 120 ? 120 : (int)n, (const char *)frame->goaway.opaque_data);
  return 0;
}

/* ---- the poll loop ------------------------------------------------------*/

/* Hint for failures before the peer has sent any HTTP/2. */
static const char *no_h2_hint(const ctxclient *c) {
  if (c->got_settings) return "";
  if (!c->tls) return " (before the server spoke HTTP/2; is it a TLS port?)";
  /* TLS 1.3 servers judge our certificate after the handshake, and some
   * (grpc-core) then close without an alert. */
  return c->client_cert
             ? " right after the TLS handshake (did it refuse our client "
               "certificate?)"
             : " right after the TLS handshake (does it require a client "
               "certificate?)";
}

/* err -1: a failure under TLS, whose reason cct_error() has (a TLS-level
 * one with its own hint). */
static void conn_io_fail(ctxclient *c, const char *what, int err) {
  int tls_level = 0;
  const char *why = err == -1 && c->tls ? cct_error(c->tls, &tls_level)
                                        : strerror(err);
  conn_fail(c, 14, "%s %s: %s%s", what, c->addr, why,
            tls_level ? "" : no_h2_hint(c));
}

/* Let nghttp2 write what it can. */
static void flush(ctxclient *c) {
  if (c->dead) return;
  int rv = nghttp2_session_send(c->sess);
  if (rv == NGHTTP2_ERR_CALLBACK_FAILURE)
    conn_io_fail(c, "write to", c->io_errno);
  else if (rv != 0)
    conn_fail(c, 14, "HTTP/2 error on %s: %s", c->addr, nghttp2_strerror(rv));
}

/* Read what the TLS session has: until it wants more from the socket, as
 * OpenSSL may already hold records that poll() cannot see. 0 to go on
 * feeding buf[0..*n) to nghttp2, 1 when there is nothing more now, -1 when
 * the connection failed. */
static int tls_read(ctxclient *c, uint8_t *buf, size_t len, ssize_t *n) {
  *n = cct_read(c->tls, buf, len);
  if (*n > 0) return 0;
  if (*n == CCT_WANT_READ) return 1;
  if (*n == CCT_WANT_WRITE) {
    c->write_blocked = 1;
    return 1;
  }
  if (*n == CCT_CLOSED)
    conn_fail(c, 14, "connection to %s closed by server%s", c->addr,
              no_h2_hint(c));
  else
    conn_io_fail(c, "read from", -1);
  return -1;
}

/* A cleartext client that hears a TLS record (an alert: a TLS server's
 * answer to our preface) is talking to a TLS port. */
static int looks_like_tls(const ctxclient *c, const uint8_t *buf, ssize_t n) {
  return !c->tls && !c->got_settings && n >= 3 &&
         (buf[0] == 0x15 || buf[0] == 0x16) && buf[1] == 3 && buf[2] <= 4;
}

/* Read everything the socket has and feed it to nghttp2. */
static void read_some(ctxclient *c) {
  uint8_t buf[65536];
  while (!c->dead) {
    ssize_t n;
    if (c->tls) {
      if (tls_read(c, buf, sizeof buf, &n) != 0) return;
    } else {
      n = recv(c->fd, buf, sizeof buf, 0);
    }
    if (looks_like_tls(c, buf, n)) {
      conn_fail(c, 14,
                "%s answered with TLS: it is a TLS port (connect with TLS)",
                c->addr);
      return;
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      conn_io_fail(c, "read from", errno);
      return;
    }
    if (n == 0) {
      conn_fail(c, 14, "connection to %s closed by server%s", c->addr,
                no_h2_hint(c));
      return;
    }
    ssize_t rv = nghttp2_session_mem_recv(c->sess, buf, (size_t)n);
    if (rv < 0) {
      conn_fail(c, 14,
                "HTTP/2 protocol error from %s: %s (is it a gRPC "
                "server?)",
                c->addr, nghttp2_strerror((int)rv));
      return;
    }
    if (!c->tls && (size_t)n < sizeof buf) return;
  }
}

typedef int (*pump_cond)(ctxclient_stream *s);

/* Run the connection until cond(s) holds (returns 0), `deadline` (absolute
 * ms, 0 = none) passes (returns 1; a deadline already passed still gets one
 * non-blocking round of I/O), or the connection dies (returns -1), which
 * includes the server not sending its SETTINGS by c->handshake_deadline. */
static int pump(ctxclient *c, ctxclient_stream *s, pump_cond cond,
                int64_t call_deadline) {
  int polled = 0;
  for (;;) {
    int64_t deadline = call_deadline;
    int handshake = !c->got_settings && c->handshake_deadline &&
                    (!deadline || c->handshake_deadline <= deadline);
    if (handshake) deadline = c->handshake_deadline;
    flush(c);
    if (cond(s)) return 0;
    if (c->dead) return -1;
    if (!nghttp2_session_want_read(c->sess) &&
        !nghttp2_session_want_write(c->sess)) {
      if (!c->got_settings)
        conn_fail(c, 14, "%s does not speak HTTP/2 (is it a gRPC server?)",
                  c->addr);
      else if (c->proto_error[0])
        conn_fail(c, 14, "HTTP/2 protocol error from %s: %s", c->addr,
                  c->proto_error);
      else if (c->got_goaway && c->goaway_error != NGHTTP2_NO_ERROR)
        conn_fail(c, 14, "connection to %s closed by server: %s", c->addr,
                  nghttp2_http2_strerror(c->goaway_error));
      else
        conn_fail(c, 14, "connection to %s closed", c->addr);
      return -1;
    }
    int timeout = -1;
    if (deadline) {
      int64_t left = deadline - now_ms();
      if (left <= 0) {
        if (polled && handshake) {
          conn_fail(c, 14,
                    "%s accepted the connection but sent no HTTP/2 within "
                    "%lld ms (is it a gRPC server?)",
                    c->addr, (long long)c->handshake_ms);
          return -1;
        }
        if (polled) return 1;
        left = 0;
      }
      timeout = left > 60000 ? 60000 : (int)left;
    }
    /* Bytes OpenSSL decrypted but has not handed out are invisible to
     * poll(). */
    if (c->tls && cct_pending(c->tls)) {
      read_some(c);
      continue;
    }
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (c->write_blocked) p.events |= POLLOUT;
    int r = poll(&p, 1, timeout);
    polled = 1;
    if (r < 0) {
      if (errno == EINTR) continue;
      conn_io_fail(c, "poll on", errno);
      return -1;
    }
    if (r == 0) continue;
    if (p.revents & POLLOUT) c->write_blocked = 0;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) read_some(c);
  }
}

/* ---- connection ---------------------------------------------------------*/

static int connect_one(const struct addrinfo *ai, int64_t deadline, int *err) {
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  ai->ai_protocol);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
  if (errno != EINPROGRESS) goto fail;
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0) {
      errno = ETIMEDOUT;
      goto fail;
    }
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r = poll(&p, 1, (int)left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) goto fail;
    if (r == 0) continue;
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0) goto fail;
    if (soerr) {
      errno = soerr;
      goto fail;
    }
    return fd;
  }
fail:
  *err = errno;
  close(fd);
  return -1;
}

static int cond_settings(ctxclient_stream *s) {
  return s->c->got_settings;
}

/* TLS on the connected socket, then (once the HTTP/2 session has queued its
 * preface) the server's SETTINGS: a TLS 1.3 server that refuses our client
 * certificate says so only after the handshake, and that must fail the
 * connect, not the first call. */
static int tls_start(ctxclient *c, const char *host, const ctxclient_tls *tls,
                     int64_t deadline, ctxclient_status *st) {
  char msg[sizeof st->message];
  int code;
  const char *name = tls->server_name ? tls->server_name : host;
  if (cct_connect(c->tls_ctx, c->fd, name, c->addr, deadline, &c->tls, &code,
                  msg, sizeof msg) != 0)
    return fail(st, code, "%s", msg);
  return 0;
}

static int tls_wait_settings(ctxclient *c, int64_t deadline,
                             ctxclient_status *st) {
  ctxclient_stream probe = {.c = c}; /* cond_settings reads only ->c */
  int r = pump(c, &probe, cond_settings, deadline);
  if (r == 0) return 0;
  if (r == 1)
    conn_fail(c, 14,
              "%s completed the TLS handshake but sent no HTTP/2 within %lld "
              "ms",
              c->addr, (long long)c->handshake_ms);
  if (st) *st = c->dead_status;
  return CTXCLIENT_ESTATUS;
}

int ctxclient_connect(const char *addr, int timeout_ms, ctxclient **out,
                      ctxclient_status *st) {
  return ctxclient_connect_tls(addr, timeout_ms, NULL, out, st);
}

int ctxclient_connect_tls(const char *addr, int timeout_ms,
                          const ctxclient_tls *tls, ctxclient **out,
                          ctxclient_status *st) {
  char host[256], port[8];
  ctxclient *c = NULL;
  nghttp2_session_callbacks *cbs = NULL;
  int rc;
  clear_status(st);
  if (!out) return CTXCLIENT_EINVAL;
  *out = NULL;
  if (!addr || ccw_parse_addr(addr, CTXCLIENT_DEFAULT_PORT, host, sizeof host,
                              port, sizeof port) < 0) {
    fail(st, 3, "bad address \"%s\" (want HOST:PORT or [IPV6]:PORT)",
         addr ? addr : "");
    return CTXCLIENT_EINVAL;
  }
  c = calloc(1, sizeof *c);
  if (!c) return fail(st, 8, "out of memory");
  c->fd = -1;
  if (tls && cct_ctx_new(tls, &c->tls_ctx, st ? st->message : NULL,
                         st ? sizeof st->message : 0) != 0) {
    if (st) st->code = 3;
    ctxclient_close(c);
    return CTXCLIENT_EINVAL;
  }
  c->max_message = CTXCLIENT_DEFAULT_MAX_MESSAGE;
  snprintf(c->addr, sizeof c->addr, "%s", addr);
  if (strchr(host, ':'))
    snprintf(c->authority, sizeof c->authority, "[%s]:%s", host, port);
  else
    snprintf(c->authority, sizeof c->authority, "%s:%s", host, port);

  c->handshake_ms = timeout_ms > 0 ? timeout_ms : 10000;
  int64_t deadline = now_ms() + c->handshake_ms;
  c->handshake_deadline = deadline;
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
  struct addrinfo *res = NULL;
  int gai = getaddrinfo(host, port, &hints, &res);
  if (gai != 0) {
    rc = fail(st, 14, "resolve %s: %s", host, gai_strerror(gai));
    goto fail;
  }
  int err = ECONNREFUSED;
  for (struct addrinfo *ai = res; ai && c->fd < 0; ai = ai->ai_next)
    c->fd = connect_one(ai, deadline, &err);
  freeaddrinfo(res);
  if (c->fd < 0) {
    rc = fail(st, err == ETIMEDOUT ? 4 : 14, "connect to %s: %s", addr,
              strerror(err));
    goto fail;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (tls && (rc = tls_start(c, host, tls, deadline, st)) != 0) goto fail;
  c->client_cert = tls && tls->cert_file;

  if (nghttp2_session_callbacks_new(&cbs) != 0) {
    rc = fail(st, 8, "out of memory");
    goto fail;
  }
  nghttp2_session_callbacks_set_send_callback(cbs, on_send);
  nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
  rc = nghttp2_session_client_new(&c->sess, cbs, c);
  nghttp2_session_callbacks_del(cbs);
  if (rc != 0) {
    c->sess = NULL;
    rc = fail(st, 8, "nghttp2: %s", nghttp2_strerror(rc));
    goto fail;
  }
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, RECV_STREAM_WINDOW},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  };
  nghttp2_submit_settings(c->sess, NGHTTP2_FLAG_NONE, iv,
                          sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(c->sess, NGHTTP2_FLAG_NONE, 0,
                                        RECV_CONN_WINDOW);
  flush(c);
  if (c->dead) {
    if (st) *st = c->dead_status;
    rc = CTXCLIENT_ESTATUS;
    goto fail;
  }
  if (tls && (rc = tls_wait_settings(c, deadline, st)) != 0) goto fail;
  *out = c;
  return 0;
fail:
  ctxclient_close(c);
  return rc;
}

void ctxclient_set_max_message(ctxclient *c, size_t max) {
  if (c) c->max_message = max;
}

static void stream_destroy(ctxclient_stream *s) {
  ctxclient *c = s->c;
  if (s->prev)
    s->prev->next = s->next;
  else
    c->streams = s->next;
  if (s->next) s->next->prev = s->prev;
  for (msgq *m = s->qhead, *n; m; m = n) {
    n = m->next;
    free(m->data);
    free(m);
  }
  ccw_deframer_free(&s->df);
  free(s->out);
  free(s);
}

void ctxclient_close(ctxclient *c) {
  if (!c) return;
  while (c->streams) {
    stream_reset(c->streams, NGHTTP2_CANCEL);
    stream_destroy(c->streams);
  }
  if (c->sess) {
    if (!c->dead) {
      nghttp2_session_terminate_session(c->sess, NGHTTP2_NO_ERROR);
      nghttp2_session_send(c->sess); /* best effort, never blocks */
    }
    nghttp2_session_del(c->sess);
  }
  cct_free(c->tls);
  cct_ctx_free(c->tls_ctx);
  if (c->fd >= 0) close(c->fd);
  free(c->auth);
  free(c);
}

int ctxclient_set_token(ctxclient *c, const char *token,
                        ctxclient_status *st) {
  clear_status(st);
  if (!c) return CTXCLIENT_EINVAL;
  char *auth = NULL;
  if (token) {
    size_t n = strlen(token);
    if (n == 0 || n > MAX_TOKEN) {
      fail(st, 3, "a token must have 1 to %d characters, not %zu", MAX_TOKEN,
           n);
      return CTXCLIENT_EINVAL;
    }
    /* Visible ASCII only: anything else could not be sent as a header
     * value, or would split it. */
    for (size_t i = 0; i < n; i++) {
      if (token[i] < 0x21 || token[i] > 0x7e) {
        fail(st, 3,
             "the token has a character that cannot be sent (byte %zu: "
             "0x%02x); tokens are printable ASCII without spaces",
             i, (unsigned char)token[i]);
        return CTXCLIENT_EINVAL;
      }
    }
    auth = malloc(n + 8);
    if (!auth) return fail(st, 8, "out of memory");
    memcpy(auth, "Bearer ", 7);
    memcpy(auth + 7, token, n + 1);
  }
  free(c->auth);
  c->auth = auth;
  return 0;
}

/* ---- streams ------------------------------------------------------------*/

static int out_append(ctxclient_stream *s, const uint8_t *msg, size_t len) {
  if (s->out_off > 0 && s->out_off == s->out_len) s->out_off = s->out_len = 0;
  size_t need = s->out_len + 5 + len;
  if (need > s->out_cap) {
    /* Reclaim the part already sent before growing. */
    if (s->out_off > 0) {
      memmove(s->out, s->out + s->out_off, s->out_len - s->out_off);
      s->out_len -= s->out_off;
      s->out_off = 0;
      need = s->out_len + 5 + len;
    }
    if (need > s->out_cap) {
      size_t cap = s->out_cap ? s->out_cap : 16384;
      while (cap < need) cap *= 2;
      uint8_t *p = realloc(s->out, cap);
      if (!p) return -1;
      s->out = p;
      s->out_cap = cap;
    }
  }
  ccw_frame_header(s->out + s->out_len, (uint32_t)len);
  if (len) memcpy(s->out + s->out_len + 5, msg, len);
  s->out_len += 5 + len;
  return 0;
}

/* Wake the parked data provider after queueing data or a half-close. */
static void out_kick(ctxclient_stream *s) {
  if (s->deferred && s->id >= 0 && !s->c->dead) {
    s->deferred = 0;
    nghttp2_session_resume_data(s->c->sess, s->id);
  }
}

static int stream_start(ctxclient *c, const char *path, int64_t timeout_ms,
                        const uint8_t *msg, size_t len, int half_close,
                        ctxclient_stream **out, ctxclient_status *st) {
  clear_status(st);
  *out = NULL;
  if (c->dead) {
    if (st) *st = c->dead_status;
    return CTXCLIENT_ESTATUS;
  }
  if (len > UINT32_MAX) return fail(st, 8, "request message too large");
  ctxclient_stream *s = calloc(1, sizeof *s);
  if (!s) return fail(st, 8, "out of memory");
  s->c = c;
  s->id = -1;
  ccw_deframer_init(&s->df, c->max_message);
  if (msg && out_append(s, msg, len) < 0) {
    free(s);
    return fail(st, 8, "out of memory");
  }
  s->half_close = half_close;

  char tmo[16] = "";
  if (timeout_ms > 0) {
    s->deadline = now_ms() + timeout_ms;
    ccw_format_timeout(timeout_ms, tmo, sizeof tmo);
  }
#define NV(n, v)                                             \
  {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), \
   NGHTTP2_NV_FLAG_NONE}
  nghttp2_nv hdrs[9] = {
      NV(":method", "POST"),
      NV(":scheme", c->tls ? "https" : "http"),
      NV(":path", path),
      NV(":authority", c->authority),
      NV("content-type", "application/grpc"),
      NV("te", "trailers"),
      NV("user-agent", "ctxclient/" CTXD_VERSION),
  };
  size_t nh = 7;
  if (tmo[0]) hdrs[nh++] = (nghttp2_nv)NV("grpc-timeout", tmo);
  if (c->auth) {
    /* Never into the HPACK tables: a secret must not be indexed. */
    hdrs[nh] = (nghttp2_nv)NV("authorization", c->auth);
    hdrs[nh++].flags = NGHTTP2_NV_FLAG_NO_INDEX;
  }
#undef NV
  nghttp2_data_provider dp = {.source.ptr = s, .read_callback = on_read_data};
  int32_t id = nghttp2_submit_request(c->sess, NULL, hdrs, nh, &dp, s);
  if (id < 0) {
    ccw_deframer_free(&s->df);
    free(s->out);
    free(s);
    if (id == NGHTTP2_ERR_START_STREAM_NOT_ALLOWED ||
        id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE)
      return fail(st, 14, "connection to %s is closing", c->addr);
    return fail(st, 13, "nghttp2: %s", nghttp2_strerror(id));
  }
  s->id = id;
  s->next = c->streams;
  if (c->streams) c->streams->prev = s;
  c->streams = s;
  *out = s;
  return 0;
}

/* The stream's deadline passed: end it locally and cancel it. */
static void stream_expire(ctxclient_stream *s) {
  stream_end_local(s, 4, "deadline exceeded");
  stream_reset(s, NGHTTP2_CANCEL);
  flush(s->c);
}

static int cond_ended(ctxclient_stream *s) {
  return s->ended;
}
static int cond_sendable(ctxclient_stream *s) {
  return s->ended || s->out_len - s->out_off <= SEND_HIGH_WATER;
}
static int cond_eof_sent(ctxclient_stream *s) {
  return s->ended || s->eof_sent;
}
static int cond_message(ctxclient_stream *s) {
  return s->ended || s->qhead != NULL;
}

/* Pump until cond holds or the stream's deadline passes (which ends it). */
static void pump_stream(ctxclient_stream *s, pump_cond cond) {
  if (pump(s->c, s, cond, s->deadline) == 1) stream_expire(s);
}

/* Copy the final status of an ended stream; 0 for OK. */
static int stream_result(ctxclient_stream *s, ctxclient_status *st) {
  if (st) *st = s->status;
  return s->status.code == 0 ? 0 : CTXCLIENT_ESTATUS;
}

int ctxclient_stream_open(ctxclient *c, const char *path, int64_t timeout_ms,
                          ctxclient_stream **out, ctxclient_status *st) {
  if (!c || !path || !out) return CTXCLIENT_EINVAL;
  int rc = stream_start(c, path, timeout_ms, NULL, 0, 0, out, st);
  if (rc == 0) flush(c);
  return rc;
}

/* Status for sending on a stream that has already ended. */
static int ended_send_status(ctxclient_stream *s, ctxclient_status *st) {
  if (s->status.code != 0) return stream_result(s, st);
  return fail(st, 9, "the call already finished");
}

int ctxclient_stream_send(ctxclient_stream *s, const uint8_t *msg, size_t len,
                          ctxclient_status *st) {
  clear_status(st);
  if (!s || (!msg && len)) return CTXCLIENT_EINVAL;
  if (s->half_close) {
    fail(st, 9, "send after close_send");
    return CTXCLIENT_EINVAL;
  }
  if (s->ended) return ended_send_status(s, st);
  if (len > UINT32_MAX) return fail(st, 8, "request message too large");
  if (out_append(s, msg, len) < 0) return fail(st, 8, "out of memory");
  out_kick(s);
  pump_stream(s, cond_sendable);
  if (s->ended) return ended_send_status(s, st);
  return 0;
}

int ctxclient_stream_close_send(ctxclient_stream *s, ctxclient_status *st) {
  clear_status(st);
  if (!s) return CTXCLIENT_EINVAL;
  if (!s->half_close) {
    s->half_close = 1;
    out_kick(s);
  }
  pump_stream(s, cond_eof_sent);
  if (s->ended && s->status.code != 0) return stream_result(s, st);
  return 0;
}

int ctxclient_stream_recv(ctxclient_stream *s, int wait_ms, uint8_t **msg,
                          size_t *len, int *done, ctxclient_status *st) {
  clear_status(st);
  if (!s || !msg || !len || !done) return CTXCLIENT_EINVAL;
  *msg = NULL;
  *len = 0;
  *done = 0;
  if (!s->qhead && !s->ended) {
    int64_t deadline = s->deadline;
    if (wait_ms >= 0) {
      int64_t w = now_ms() + wait_ms;
      if (!deadline || w < deadline) deadline = w;
    }
    int r = pump(s->c, s, cond_message, deadline);
    if (r == 1) {
      if (s->deadline && now_ms() >= s->deadline)
        stream_expire(s);
      else
        return CTXCLIENT_EAGAIN;
    }
  }
  if (s->qhead) {
    msgq *m = s->qhead;
    s->qhead = m->next;
    if (!s->qhead) s->qtail = NULL;
    *msg = m->data;
    *len = m->len;
    free(m);
    return 0;
  }
  if (s->status.code == 0) *done = 1;
  return stream_result(s, st);
}

int ctxclient_stream_finish(ctxclient_stream *s, ctxclient_status *st) {
  clear_status(st);
  if (!s) return CTXCLIENT_EINVAL;
  if (!s->ended && !s->half_close) {
    s->half_close = 1;
    out_kick(s);
  }
  pump_stream(s, cond_ended);
  return stream_result(s, st);
}

void ctxclient_stream_free(ctxclient_stream *s) {
  if (!s) return;
  ctxclient *c = s->c;
  if (s->id >= 0) {
    stream_reset(s, NGHTTP2_CANCEL);
    flush(c);
  }
  stream_destroy(s);
}

/* ---- unary --------------------------------------------------------------*/

int ctxclient_unary(ctxclient *c, const char *path, const uint8_t *req,
                    size_t req_len, int64_t timeout_ms, uint8_t **resp,
                    size_t *resp_len, ctxclient_status *st) {
  ctxclient_stream *s = NULL;
  if (!c || !path || !resp || !resp_len || (!req && req_len))
    return CTXCLIENT_EINVAL;
  *resp = NULL;
  *resp_len = 0;
  static const uint8_t empty[1];
  int rc =
      stream_start(c, path, timeout_ms, req ? req : empty, req_len, 1, &s, st);
  if (rc != 0) return rc;
  s->unary = 1;
  pump_stream(s, cond_ended);
  rc = stream_result(s, st);
  if (rc == 0) {
    msgq *m = s->qhead;
    if (!m || m->next) {
      rc = fail(st, 13, "%s: expected one response message, got %s", path,
                m ? "several" : "none");
    } else {
      *resp = m->data;
      *resp_len = m->len;
      m->data = NULL;
    }
  }
  ctxclient_stream_free(s);
  return rc;
}

/* ---- typed helpers ------------------------------------------------------*/

static int pack(const ProtobufCMessage *m, uint8_t **buf, size_t *len,
                ctxclient_status *st) {
  *len = protobuf_c_message_get_packed_size(m);
  *buf = malloc(*len ? *len : 1);
  if (!*buf) return fail(st, 8, "out of memory");
  protobuf_c_message_pack(m, *buf);
  return 0;
}

static int typed_unary(ctxclient *c, const char *path,
                       const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *rdesc,
                       int64_t timeout_ms, ProtobufCMessage **out,
                       ctxclient_status *st) {
  uint8_t *buf = NULL, *resp = NULL;
  size_t len, rlen;
  static const uint8_t empty[1];
  if (!c || !req || !out) return CTXCLIENT_EINVAL;
  *out = NULL;
  int rc = pack(req, &buf, &len, st);
  if (rc != 0) return rc;
  rc = ctxclient_unary(c, path, buf, len, timeout_ms, &resp, &rlen, st);
  free(buf);
  if (rc != 0) return rc;
  *out = protobuf_c_message_unpack(rdesc, NULL, rlen, resp ? resp : empty);
  free(resp);
  if (!*out) return fail(st, 13, "%s: cannot parse the response", path);
  return 0;
}

#define TYPED(fn, path, Req, Resp, resp_desc)                           \
  int fn(ctxclient *c, const Req *req, int64_t timeout_ms, Resp **resp, \
         ctxclient_status *st) {                                        \
    return typed_unary(c, path, &req->base, &resp_desc, timeout_ms,     \
                       (ProtobufCMessage **)resp, st);                  \
  }

TYPED(ctxclient_put, "/ctxd.v1.Documents/Put", Ctxd__V1__PutRequest,
      Ctxd__V1__PutResponse, ctxd__v1__put_response__descriptor)
TYPED(ctxclient_get, "/ctxd.v1.Documents/Get", Ctxd__V1__GetRequest,
      Ctxd__V1__GetResponse, ctxd__v1__get_response__descriptor)
TYPED(ctxclient_delete, "/ctxd.v1.Documents/Delete", Ctxd__V1__DeleteRequest,
      Ctxd__V1__DeleteResponse, ctxd__v1__delete_response__descriptor)
TYPED(ctxclient_list, "/ctxd.v1.Documents/List", Ctxd__V1__ListRequest,
      Ctxd__V1__ListResponse, ctxd__v1__list_response__descriptor)
TYPED(ctxclient_chunk, "/ctxd.v1.Documents/Chunk", Ctxd__V1__ChunkRequest,
      Ctxd__V1__ChunkResponse, ctxd__v1__chunk_response__descriptor)
TYPED(ctxclient_search, "/ctxd.v1.Retrieval/Search", Ctxd__V1__SearchRequest,
      Ctxd__V1__SearchResponse, ctxd__v1__search_response__descriptor)
TYPED(ctxclient_select, "/ctxd.v1.Retrieval/SelectContext",
      Ctxd__V1__SelectContextRequest, Ctxd__V1__SelectContextResponse,
      ctxd__v1__select_context_response__descriptor)
TYPED(ctxclient_load_model, "/ctxd.v1.Admin/LoadModel",
      Ctxd__V1__LoadModelRequest, Ctxd__V1__LoadModelResponse,
      ctxd__v1__load_model_response__descriptor)
#undef TYPED

int ctxclient_search_batch(ctxclient *c,
                           const Ctxd__V1__SearchBatchRequest *req,
                           int64_t timeout_ms,
                           Ctxd__V1__SearchBatchResponse **resp,
                           ctxclient_status *st) {
  static const char path[] = "/ctxd.v1.Retrieval/SearchBatch";
  if (!req || !resp) return CTXCLIENT_EINVAL;
  int rc = typed_unary(c, path, &req->base,
                       &ctxd__v1__search_batch_response__descriptor,
                       timeout_ms, (ProtobufCMessage **)resp, st);
  if (rc != 0) return rc;
  /* Callers index results by query: a short answer must not read past it. */
  if ((*resp)->n_results != req->n_queries) {
    rc = fail(st, 13, "%s: %zu results for %zu queries", path,
              (*resp)->n_results, req->n_queries);
    ctxd__v1__search_batch_response__free_unpacked(*resp, NULL);
    *resp = NULL;
  }
  return rc;
}

int ctxclient_create_collection(ctxclient *c,
                                const Ctxd__V1__CollectionConfig *config,
                                int64_t timeout_ms,
                                Ctxd__V1__CollectionInfo **resp,
                                ctxclient_status *st) {
  Ctxd__V1__CreateCollectionRequest req =
      CTXD__V1__CREATE_COLLECTION_REQUEST__INIT;
  if (!config) return CTXCLIENT_EINVAL;
  req.config = (Ctxd__V1__CollectionConfig *)config;
  return typed_unary(c, "/ctxd.v1.Admin/CreateCollection", &req.base,
                     &ctxd__v1__collection_info__descriptor, timeout_ms,
                     (ProtobufCMessage **)resp, st);
}

int ctxclient_drop_collection(ctxclient *c, const char *name,
                              int64_t timeout_ms,
                              Ctxd__V1__DropCollectionResponse **resp,
                              ctxclient_status *st) {
  Ctxd__V1__DropCollectionRequest req = CTXD__V1__DROP_COLLECTION_REQUEST__INIT;
  if (!name) return CTXCLIENT_EINVAL;
  req.name = (char *)name;
  return typed_unary(c, "/ctxd.v1.Admin/DropCollection", &req.base,
                     &ctxd__v1__drop_collection_response__descriptor,
                     timeout_ms, (ProtobufCMessage **)resp, st);
}

int ctxclient_list_collections(ctxclient *c, int64_t timeout_ms,
                               Ctxd__V1__ListCollectionsResponse **resp,
                               ctxclient_status *st) {
  Ctxd__V1__ListCollectionsRequest req =
      CTXD__V1__LIST_COLLECTIONS_REQUEST__INIT;
  return typed_unary(c, "/ctxd.v1.Admin/ListCollections", &req.base,
                     &ctxd__v1__list_collections_response__descriptor,
                     timeout_ms, (ProtobufCMessage **)resp, st);
}

int ctxclient_stats(ctxclient *c, int64_t timeout_ms,
                    Ctxd__V1__StatsResponse **resp, ctxclient_status *st) {
  Ctxd__V1__StatsRequest req = CTXD__V1__STATS_REQUEST__INIT;
  return typed_unary(c, "/ctxd.v1.Admin/Stats", &req.base,
                     &ctxd__v1__stats_response__descriptor, timeout_ms,
                     (ProtobufCMessage **)resp, st);
}

int ctxclient_verify(ctxclient *c, int64_t timeout_ms,
                     Ctxd__V1__VerifyResponse **resp, ctxclient_status *st) {
  Ctxd__V1__VerifyRequest req = CTXD__V1__VERIFY_REQUEST__INIT;
  return typed_unary(c, "/ctxd.v1.Admin/Verify", &req.base,
                     &ctxd__v1__verify_response__descriptor, timeout_ms,
                     (ProtobufCMessage **)resp, st);
}

int ctxclient_backup(ctxclient *c, const char *target, int64_t timeout_ms,
                     Ctxd__V1__BackupResponse **resp, ctxclient_status *st) {
  Ctxd__V1__BackupRequest req = CTXD__V1__BACKUP_REQUEST__INIT;
  req.target = (char *)target;
  return typed_unary(c, "/ctxd.v1.Admin/Backup", &req.base,
                     &ctxd__v1__backup_response__descriptor, timeout_ms,
                     (ProtobufCMessage **)resp, st);
}

int ctxclient_compact(ctxclient *c, int64_t timeout_ms,
                      Ctxd__V1__CompactResponse **resp, ctxclient_status *st) {
  Ctxd__V1__CompactRequest req = CTXD__V1__COMPACT_REQUEST__INIT;
  return typed_unary(c, "/ctxd.v1.Admin/Compact", &req.base,
                     &ctxd__v1__compact_response__descriptor, timeout_ms,
                     (ProtobufCMessage **)resp, st);
}

int ctxclient_health_check(ctxclient *c, const char *service,
                           int64_t timeout_ms, int *serving,
                           ctxclient_status *st) {
  Grpc__Health__V1__HealthCheckRequest req =
      GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  Grpc__Health__V1__HealthCheckResponse *resp = NULL;
  if (!serving) return CTXCLIENT_EINVAL;
  *serving = 0;
  req.service = (char *)(service ? service : "");
  int rc = typed_unary(c, "/grpc.health.v1.Health/Check", &req.base,
                       &grpc__health__v1__health_check_response__descriptor,
                       timeout_ms, (ProtobufCMessage **)&resp, st);
  if (rc != 0) return rc;
  *serving = resp->status;
  grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
  return 0;
}

/* End a stream because of a response message that does not parse. The
 * call may have ended OK already (its trailers came with the message):
 * that OK must not hide the bad message. */
static int stream_bad_message(ctxclient_stream *s, const char *call,
                              const char *type, ctxclient_status *st) {
  if (s->ended && s->status.code == 0) s->ended = 0;
  stream_end_local(s, 13, "%s: cannot parse a %s", call, type);
  stream_reset(s, NGHTTP2_CANCEL);
  flush(s->c);
  return stream_result(s, st);
}

/* A server-streaming call: send `req` to `path` and hand each response,
 * unpacked as `desc` (`type` names it in messages), to on_msg, which owns
 * it from then on. on_msg returns 0 to go on, or a CTXCLIENT_E* code with
 * `st` filled (fail()) to stop: the stream is then cancelled. Returns 0
 * when the call ended OK. */
typedef int (*stream_msg_fn)(ProtobufCMessage *m, void *arg,
                             ctxclient_status *st);

static int stream_follow(ctxclient *c, const char *path,
                         const ProtobufCMessage *req, int64_t timeout_ms,
                         const ProtobufCMessageDescriptor *desc,
                         const char *type, stream_msg_fn on_msg, void *arg,
                         ctxclient_status *st) {
  static const uint8_t empty[1];
  ctxclient_stream *s = NULL;
  uint8_t *buf = NULL;
  size_t len;
  int rc, done = 0;
  if ((rc = pack(req, &buf, &len, st)) != 0) goto out;
  if ((rc = stream_start(c, path, timeout_ms, buf, len, 1, &s, st)) != 0)
    goto out;
  for (;;) {
    uint8_t *msg;
    rc = ctxclient_stream_recv(s, -1, &msg, &len, &done, st);
    if (rc != 0 || done) break;
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, NULL, len, msg ? msg : empty);
    free(msg);
    if (!m) {
      rc = stream_bad_message(s, path, type, st);
      break;
    }
    if ((rc = on_msg(m, arg, st)) != 0) break;
  }
out:
  free(buf);
  ctxclient_stream_free(s);
  return rc;
}

/* Keep the last message of a stream (freeing the one before) and pass it
 * to the caller's callback. */
typedef struct follow_state {
  ProtobufCMessage *last;
  ctxclient_progress_fn on_progress; /* RebuildProgress; may be NULL */
  ctxclient_event_fn on_event;       /* ReorderEvent; may be NULL */
  ctxclient_rechunk_fn on_rechunk;   /* RechunkProgress; may be NULL */
  void *ud;
  char what[160]; /* "the rebuild of collection x", "job ID" */
} follow_state;

static int follow_msg(ProtobufCMessage *m, void *arg, ctxclient_status *st) {
  follow_state *f = arg;
  int stop = 0;
  if (f->last) protobuf_c_message_free_unpacked(f->last, NULL);
  f->last = m;
  if (m->descriptor == &ctxd__v1__reorder_event__descriptor) {
    const Ctxd__V1__ReorderEvent *ev = (const Ctxd__V1__ReorderEvent *)m;
    snprintf(f->what, sizeof f->what, "job %s", ev->job_id);
    stop = f->on_event && f->on_event(ev, f->ud) != 0;
  } else if (m->descriptor == &ctxd__v1__rechunk_progress__descriptor) {
    stop = f->on_rechunk &&
           f->on_rechunk((const Ctxd__V1__RechunkProgress *)m, f->ud) != 0;
  } else {
    stop = f->on_progress &&
           f->on_progress((const Ctxd__V1__RebuildProgress *)m, f->ud) != 0;
  }
  if (stop)
    return fail(st, 1, "stopped following %s (it goes on in the server)",
                f->what);
  return 0;
}

/* The stream ended OK: its last message must report the final state. */
static int follow_final(const char *path, const char *state,
                        ctxclient_status *st) {
  if (strcmp(state, "done") == 0) return 0;
  return fail(st, 13, "%s: the stream ended without a final state%s%s", path,
              *state ? "; last state " : "", state);
}

/* RebuildIndex and Rechunk: follow a stream of progress messages whose
 * last one reports state "done" or "failed" (with its error: ABORTED
 * "<failed_what> failed: ERROR"). *last as the public calls say. */
static int follow_progress(ctxclient *c, const char *path,
                           const ProtobufCMessage *req, int64_t timeout_ms,
                           const ProtobufCMessageDescriptor *desc,
                           const char *type, follow_state *f,
                           const char *failed_what, ProtobufCMessage **last,
                           ctxclient_status *st) {
  if (last) *last = NULL;
  if (!c) return CTXCLIENT_EINVAL;
  int rc = stream_follow(c, path, req, timeout_ms, desc, type, follow_msg, f,
                         st);
  if (rc == 0) {
    /* The stream ended OK: the last message says how the run went. Both
     * message types have string fields `state` and `error`, found through
     * the descriptor. */
    const ProtobufCFieldDescriptor *fs =
        protobuf_c_message_descriptor_get_field_by_name(desc, "state");
    const ProtobufCFieldDescriptor *fe =
        protobuf_c_message_descriptor_get_field_by_name(desc, "error");
    const char *state = "", *err = "";
    if (f->last && fs && fe) {
      state = *(char **)((char *)f->last + fs->offset);
      err = *(char **)((char *)f->last + fe->offset);
    }
    if (strcmp(state, "failed") == 0)
      rc = fail(st, 10, "%s failed: %s", failed_what,
                err && *err ? err : "no reason given");
    else
      rc = follow_final(path, state, st);
  }
  if (last)
    *last = f->last;
  else if (f->last)
    protobuf_c_message_free_unpacked(f->last, NULL);
  return rc;
}

int ctxclient_rebuild_index(ctxclient *c, const char *collection,
                            int64_t timeout_ms,
                            ctxclient_progress_fn on_progress, void *ud,
                            Ctxd__V1__RebuildProgress **last,
                            ctxclient_status *st) {
  Ctxd__V1__RebuildIndexRequest req = CTXD__V1__REBUILD_INDEX_REQUEST__INIT;
  follow_state f = {NULL, on_progress, NULL, NULL, ud, ""};
  char what[160];
  const char *name = collection && *collection ? collection : "default";
  snprintf(f.what, sizeof f.what, "the rebuild of collection %s", name);
  snprintf(what, sizeof what, "rebuild of collection %s", name);
  req.collection = (char *)(collection ? collection : "");
  return follow_progress(c, "/ctxd.v1.Admin/RebuildIndex", &req.base,
                         timeout_ms, &ctxd__v1__rebuild_progress__descriptor,
                         "RebuildProgress", &f, what, (ProtobufCMessage **)last,
                         st);
}

int ctxclient_rechunk(ctxclient *c, int64_t timeout_ms,
                      ctxclient_rechunk_fn on_progress, void *ud,
                      Ctxd__V1__RechunkProgress **last, ctxclient_status *st) {
  Ctxd__V1__RechunkRequest req = CTXD__V1__RECHUNK_REQUEST__INIT;
  follow_state f = {NULL, NULL, NULL, on_progress, ud, "the rechunk"};
  return follow_progress(c, "/ctxd.v1.Admin/Rechunk", &req.base, timeout_ms,
                         &ctxd__v1__rechunk_progress__descriptor,
                         "RechunkProgress", &f, "rechunk",
                         (ProtobufCMessage **)last, st);
}

/* SelectContextStream: progress events to the caller, the last event's
 * result kept. */
typedef struct select_follow {
  ctxclient_select_fn on_event;
  void *ud;
  Ctxd__V1__SelectContextEvent *last;
} select_follow;

static int select_msg(ProtobufCMessage *m, void *arg, ctxclient_status *st) {
  select_follow *f = arg;
  Ctxd__V1__SelectContextEvent *ev = (Ctxd__V1__SelectContextEvent *)m;
  if (f->last) ctxd__v1__select_context_event__free_unpacked(f->last, NULL);
  f->last = ev;
  if (!ev->result && f->on_event && f->on_event(ev, f->ud) != 0)
    return fail(st, 1, "selection cancelled by the caller");
  return 0;
}

int ctxclient_select_stream(ctxclient *c,
                            const Ctxd__V1__SelectContextRequest *req,
                            int64_t timeout_ms, ctxclient_select_fn on_event,
                            void *ud, Ctxd__V1__SelectContextEvent **result,
                            ctxclient_status *st) {
  static const char path[] = "/ctxd.v1.Retrieval/SelectContextStream";
  select_follow f = {on_event, ud, NULL};
  *result = NULL;
  if (!c || !req) return CTXCLIENT_EINVAL;
  int rc = stream_follow(c, path, &req->base, timeout_ms,
                         &ctxd__v1__select_context_event__descriptor,
                         "SelectContextEvent", select_msg, &f, st);
  if (rc == 0 && !(f.last && f.last->result))
    rc = fail(st, 13, "%s: the stream ended without a result", path);
  if (rc == 0)
    *result = f.last;
  else if (f.last)
    ctxd__v1__select_context_event__free_unpacked(f.last, NULL);
  return rc;
}

/* Reorder and WatchJob: follow the stream of ReorderEvents that `req`
 * starts on `path`. */
static int follow_job(ctxclient *c, const char *path,
                      const ProtobufCMessage *req, int64_t timeout_ms,
                      ctxclient_event_fn on_event, void *ud,
                      Ctxd__V1__ReorderEvent **last, ctxclient_status *st) {
  follow_state f = {NULL, NULL, on_event, NULL, ud, "the job"};
  if (last) *last = NULL;
  if (!c) return CTXCLIENT_EINVAL;
  int rc = stream_follow(c, path, req, timeout_ms,
                         &ctxd__v1__reorder_event__descriptor, "ReorderEvent",
                         follow_msg, &f, st);
  Ctxd__V1__ReorderEvent *ev = (Ctxd__V1__ReorderEvent *)f.last;
  if (rc == 0) rc = follow_final(path, ev && ev->state ? ev->state : "", st);
  if (last)
    *last = ev;
  else if (ev)
    ctxd__v1__reorder_event__free_unpacked(ev, NULL);
  return rc;
}

int ctxclient_reorder(ctxclient *c, const Ctxd__V1__ReorderRequest *req,
                      int64_t timeout_ms, ctxclient_event_fn on_event,
                      void *ud, Ctxd__V1__ReorderEvent **last,
                      ctxclient_status *st) {
  if (last) *last = NULL;
  if (!req) return CTXCLIENT_EINVAL;
  return follow_job(c, "/ctxd.v1.Corpus/Reorder", &req->base, timeout_ms,
                    on_event, ud, last, st);
}

int ctxclient_watch_job(ctxclient *c, const char *job_id, int64_t timeout_ms,
                        ctxclient_event_fn on_event, void *ud,
                        Ctxd__V1__ReorderEvent **last, ctxclient_status *st) {
  Ctxd__V1__GetJobRequest req = CTXD__V1__GET_JOB_REQUEST__INIT;
  if (last) *last = NULL;
  if (!job_id) return CTXCLIENT_EINVAL;
  req.job_id = (char *)job_id;
  return follow_job(c, "/ctxd.v1.Corpus/WatchJob", &req.base, timeout_ms,
                    on_event, ud, last, st);
}

int ctxclient_get_job(ctxclient *c, const char *job_id, int64_t timeout_ms,
                      Ctxd__V1__Job **resp, ctxclient_status *st) {
  Ctxd__V1__GetJobRequest req = CTXD__V1__GET_JOB_REQUEST__INIT;
  if (!job_id) return CTXCLIENT_EINVAL;
  req.job_id = (char *)job_id;
  return typed_unary(c, "/ctxd.v1.Corpus/GetJob", &req.base,
                     &ctxd__v1__job__descriptor, timeout_ms,
                     (ProtobufCMessage **)resp, st);
}

int ctxclient_cancel_job(ctxclient *c, const char *job_id, int64_t timeout_ms,
                         Ctxd__V1__Job **resp, ctxclient_status *st) {
  Ctxd__V1__CancelJobRequest req = CTXD__V1__CANCEL_JOB_REQUEST__INIT;
  if (!job_id) return CTXCLIENT_EINVAL;
  req.job_id = (char *)job_id;
  return typed_unary(c, "/ctxd.v1.Corpus/CancelJob", &req.base,
                     &ctxd__v1__job__descriptor, timeout_ms,
                     (ProtobufCMessage **)resp, st);
}

int ctxclient_list_jobs(ctxclient *c, const Ctxd__V1__ListJobsRequest *req,
                        int64_t timeout_ms, Ctxd__V1__ListJobsResponse **resp,
                        ctxclient_status *st) {
  if (!req) return CTXCLIENT_EINVAL;
  return typed_unary(c, "/ctxd.v1.Corpus/ListJobs", &req->base,
                     &ctxd__v1__list_jobs_response__descriptor, timeout_ms,
                     (ProtobufCMessage **)resp, st);
}

typedef struct fetch_state {
  const char *job_id;
  ctxclient_chunk_fn on_chunk;
  void *ud;
} fetch_state;

static int fetch_msg(ProtobufCMessage *m, void *arg, ctxclient_status *st) {
  fetch_state *f = arg;
  int stop = f->on_chunk && f->on_chunk((Ctxd__V1__ResultChunk *)m, f->ud);
  protobuf_c_message_free_unpacked(m, NULL);
  return stop ? fail(st, 1, "stopped fetching the results of job %s",
                     f->job_id)
              : 0;
}

int ctxclient_fetch_result(ctxclient *c,
                           const Ctxd__V1__FetchResultRequest *req,
                           int64_t timeout_ms, ctxclient_chunk_fn on_chunk,
                           void *ud, ctxclient_status *st) {
  if (!c || !req) return CTXCLIENT_EINVAL;
  fetch_state f = {req->job_id, on_chunk, ud};
  return stream_follow(c, "/ctxd.v1.Corpus/FetchResult", &req->base,
                       timeout_ms, &ctxd__v1__result_chunk__descriptor,
                       "ResultChunk", fetch_msg, &f, st);
}

int ctxclient_putstream_open(ctxclient *c, int64_t timeout_ms,
                             ctxclient_stream **out, ctxclient_status *st) {
  return ctxclient_stream_open(c, "/ctxd.v1.Documents/PutStream", timeout_ms,
                               out, st);
}

int ctxclient_putstream_send(ctxclient_stream *s,
                             const Ctxd__V1__PutRequest *req,
                             ctxclient_status *st) {
  uint8_t *buf;
  size_t len;
  if (!s || !req) return CTXCLIENT_EINVAL;
  int rc = pack(&req->base, &buf, &len, st);
  if (rc != 0) return rc;
  rc = ctxclient_stream_send(s, buf, len, st);
  free(buf);
  return rc;
}

int ctxclient_putstream_recv(ctxclient_stream *s, int wait_ms,
                             Ctxd__V1__PutAck **ack, int *done,
                             ctxclient_status *st) {
  uint8_t *msg;
  size_t len;
  static const uint8_t empty[1];
  if (!ack) return CTXCLIENT_EINVAL;
  *ack = NULL;
  int rc = ctxclient_stream_recv(s, wait_ms, &msg, &len, done, st);
  if (rc != 0 || *done) return rc;
  *ack = ctxd__v1__put_ack__unpack(NULL, len, msg ? msg : empty);
  free(msg);
  if (!*ack) return stream_bad_message(s, "PutStream", "PutAck", st);
  return 0;
}
