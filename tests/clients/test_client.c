/* test_client.c - ctxclient against a tiny in-process h2c gRPC server (an
 * nghttp2 server session on a loopback socket, in a thread), so that the
 * client's HTTP/2 handling is tested without the daemon:
 *   /t/Echo     unary echo: response, then trailers
 *   /t/Fail     Trailers-Only error with a percent-encoded grpc-message
 *   /t/Silent   never answers (client deadline)
 *   /t/Big      one 200000-byte message cut into many DATA frames
 *   /t/Many     a unary call answered with 1000 messages (a broken server)
 *   /t/Flood    bidi echo with back-pressure: the server stops granting
 *               flow-control window while it has more than 256 KiB of
 *               replies unsent, so a client that does not read while it
 *               sends would deadlock.
 *   /t/Auth     answers "SCHEME|AUTHORIZATION|noindex": the request's
 *               :scheme and authorization header, and whether that header
 *               came marked never-indexed (a bearer token must be).
 * The ctxd.v1 methods of the typed helpers are answered from the decoded
 * request, so that the helpers' own logic is tested:
 *   Retrieval/Search       hits that echo the request's fields
 *   Retrieval/SearchBatch  one result per query (one short for "short")
 *   Admin/CreateCollection the config back, with a dimension
 *   Admin/RebuildIndex     progress streams chosen by the collection name
 * And against peers that are not gRPC servers: one that never speaks (the
 * handshake bound) and one that breaks the HTTP/2 protocol. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "ctxclient.h"
#include "ctxclient_wire.h"
#include "fixtures.h"

/* ---- the test server ----------------------------------------------------*/

#define BACKLOG_LIMIT (256 * 1024)

typedef struct tstream {
  int32_t id;
  char path[64];
  char scheme[8];
  char auth[256];
  int auth_noindex;
  uint8_t *out;
  size_t out_off, out_len, out_cap;
  int finish; /* send trailers once out is drained */
  int status; /* grpc-status for the trailers */
  const char *message; /* grpc-message for the trailers (percent-encoded) */
  uint8_t *in; /* request bytes of the ctxd.v1 methods */
  size_t in_len, in_cap;
  size_t unconsumed;
  int deferred;
  struct tstream *next;
} tstream;

typedef struct tconn {
  int fd;
  nghttp2_session *sess;
  tstream *streams;
  int blocked;
} tconn;

static int listen_fd = -1;
static int server_port;

static void buf_add(uint8_t **buf, size_t *len, size_t *cap, const uint8_t *p,
                    size_t n) {
  if (*len + n > *cap) {
    size_t c = *cap ? *cap : 65536;
    while (c < *len + n) c *= 2;
    *buf = realloc(*buf, c);
    *cap = c;
  }
  memcpy(*buf + *len, p, n);
  *len += n;
}

static void out_add(tstream *s, const uint8_t *p, size_t n) {
  buf_add(&s->out, &s->out_len, &s->out_cap, p, n);
}

/* Queue one framed protobuf message. */
static void out_msg(tstream *s, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *b = malloc(5 + n);
  ccw_frame_header(b, (uint32_t)n);
  protobuf_c_message_pack(m, b + 5);
  out_add(s, b, 5 + n);
  free(b);
}

static tstream *find(tconn *c, int32_t id) {
  for (tstream *s = c->streams; s; s = s->next)
    if (s->id == id) return s;
  return NULL;
}

static ssize_t t_send(nghttp2_session *sess, const uint8_t *d, size_t n,
                      int flags, void *ud) {
  tconn *c = ud;
  ssize_t w = send(c->fd, d, n, MSG_NOSIGNAL);
  if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
    c->blocked = 1;
    return NGHTTP2_ERR_WOULDBLOCK;
  }
  return w < 0 ? NGHTTP2_ERR_CALLBACK_FAILURE : w;
}

static ssize_t t_read(nghttp2_session *sess, int32_t id, uint8_t *buf,
                      size_t len, uint32_t *flags, nghttp2_data_source *src,
                      void *ud) {
  tstream *s = src->ptr;
  size_t avail = s->out_len - s->out_off;
  if (avail == 0) {
    if (!s->finish) {
      s->deferred = 1;
      return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    char st[8];
    snprintf(st, sizeof st, "%d", s->status);
    const char *msg = s->message ? s->message : "";
    nghttp2_nv tr[] = {
        {(uint8_t *)"grpc-status", (uint8_t *)st, 11, strlen(st), 0},
        {(uint8_t *)"grpc-message", (uint8_t *)msg, 12, strlen(msg), 0}};
    nghttp2_submit_trailer(sess, id, tr, s->message ? 2 : 1);
    return 0;
  }
  size_t n = avail < len ? avail : len;
  memcpy(buf, s->out + s->out_off, n);
  s->out_off += n;
  if (s->out_off == s->out_len) s->out_off = s->out_len = 0;
  return (ssize_t)n;
}

static void respond(tconn *c, tstream *s) {
  nghttp2_nv h[] = {
      {(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0},
      {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0}};
  nghttp2_data_provider dp = {.source.ptr = s, .read_callback = t_read};
  nghttp2_submit_response(c->sess, s->id, h, 2, &dp);
}

static void kick(tconn *c, tstream *s) {
  if (s->deferred) {
    s->deferred = 0;
    nghttp2_session_resume_data(c->sess, s->id);
  }
}

static int t_begin_headers(nghttp2_session *sess, const nghttp2_frame *f,
                           void *ud) {
  tconn *c = ud;
  tstream *s = calloc(1, sizeof *s);
  s->id = f->hd.stream_id;
  s->next = c->streams;
  c->streams = s;
  return 0;
}

static int t_header(nghttp2_session *sess, const nghttp2_frame *f,
                    const uint8_t *name, size_t nl, const uint8_t *value,
                    size_t vl, uint8_t flags, void *ud) {
  tstream *s = find(ud, f->hd.stream_id);
  if (s && nl == 5 && memcmp(name, ":path", 5) == 0 && vl < sizeof s->path)
    memcpy(s->path, value, vl);
  if (s && nl == 7 && memcmp(name, ":scheme", 7) == 0 && vl < sizeof s->scheme)
    memcpy(s->scheme, value, vl);
  if (s && nl == 13 && memcmp(name, "authorization", 13) == 0 &&
      vl < sizeof s->auth) {
    memcpy(s->auth, value, vl);
    s->auth_noindex = (flags & NGHTTP2_NV_FLAG_NO_INDEX) != 0;
  }
  return 0;
}

static int t_data(nghttp2_session *sess, uint8_t flags, int32_t id,
                  const uint8_t *d, size_t n, void *ud) {
  tconn *c = ud;
  tstream *s = find(c, id);
  if (!s) return 0;
  if (strcmp(s->path, "/t/Flood") == 0) {
    out_add(s, d, n); /* echo the framed bytes as they come */
    kick(c, s);
    if (s->out_len - s->out_off > BACKLOG_LIMIT)
      s->unconsumed += n; /* hold the window back */
    else
      nghttp2_session_consume(sess, id, n);
  } else {
    if (strcmp(s->path, "/t/Echo") == 0) out_add(s, d, n);
    if (strncmp(s->path, "/ctxd.v1.", 9) == 0)
      buf_add(&s->in, &s->in_len, &s->in_cap, d, n);
    nghttp2_session_consume(sess, id, n);
  }
  return 0;
}

/* ---- the ctxd.v1 methods --------------------------------------------------*/

static void answer(tconn *c, tstream *s, int status, const char *message) {
  s->status = status;
  s->message = message;
  s->finish = 1;
  respond(c, s);
}

static void answer_search(tconn *c, tstream *s, size_t len) {
  Ctxd__V1__SearchRequest *q =
      ctxd__v1__search_request__unpack(NULL, len, s->in + 5);
  if (!q) {
    answer(c, s, 3, "bad request");
    return;
  }
  if (strcmp(q->collection, "missing") == 0) {
    answer(c, s, 5, "collection%20missing%20not%20found");
    ctxd__v1__search_request__free_unpacked(q, NULL);
    return;
  }
  /* hit i echoes the request: doc ids in turn, ef_search and nprobe as the
   * byte range, the number of filters as tokens, the mode as text */
  Ctxd__V1__SearchResponse r = CTXD__V1__SEARCH_RESPONSE__INIT;
  Ctxd__V1__SearchHit hits[20], *hp[20];
  Ctxd__V1__Chunk ch[20];
  size_t n = q->k > 20 ? 20 : q->k;
  for (size_t i = 0; i < n; i++) {
    Ctxd__V1__SearchHit hi = CTXD__V1__SEARCH_HIT__INIT;
    Ctxd__V1__Chunk ci = CTXD__V1__CHUNK__INIT;
    ch[i] = ci;
    ch[i].doc_id = q->n_doc_ids ? q->doc_ids[i % q->n_doc_ids] : "doc";
    ch[i].ordinal = (uint32_t)i;
    ch[i].byte_start = q->ef_search;
    ch[i].byte_end = q->nprobe;
    ch[i].tokens = (uint32_t)q->n_metadata;
    ch[i].text = q->with_text ? q->mode : "";
    hits[i] = hi;
    hits[i].chunk = &ch[i];
    hits[i].score = q->n_vector ? q->vector[q->n_vector - 1] : 1.0f / (i + 1);
    hp[i] = &hits[i];
  }
  r.hits = hp;
  r.n_hits = n;
  out_msg(s, &r.base);
  ctxd__v1__search_request__free_unpacked(q, NULL);
  answer(c, s, 0, NULL);
}

static void answer_batch(tconn *c, tstream *s, size_t len) {
  Ctxd__V1__SearchBatchRequest *q =
      ctxd__v1__search_batch_request__unpack(NULL, len, s->in + 5);
  Ctxd__V1__SearchBatchResponse r = CTXD__V1__SEARCH_BATCH_RESPONSE__INIT;
  Ctxd__V1__SearchResponse res[8], *rp[8];
  Ctxd__V1__SearchHit hit[8], *hp[8];
  Ctxd__V1__Chunk ch[8];
  size_t n = q && q->n_queries < 8 ? q->n_queries : 0;
  if (n && strcmp(q->queries[0]->text, "short") == 0) n--;
  for (size_t i = 0; i < n; i++) { /* one hit each, named after the query */
    Ctxd__V1__SearchResponse ri = CTXD__V1__SEARCH_RESPONSE__INIT;
    Ctxd__V1__SearchHit hi = CTXD__V1__SEARCH_HIT__INIT;
    Ctxd__V1__Chunk ci = CTXD__V1__CHUNK__INIT;
    ch[i] = ci;
    ch[i].doc_id = q->queries[i]->text;
    hit[i] = hi;
    hit[i].chunk = &ch[i];
    hp[i] = &hit[i];
    res[i] = ri;
    res[i].hits = &hp[i];
    res[i].n_hits = 1;
    rp[i] = &res[i];
  }
  r.results = rp;
  r.n_results = n;
  out_msg(s, &r.base);
  if (q) ctxd__v1__search_batch_request__free_unpacked(q, NULL);
  answer(c, s, 0, NULL);
}

static void answer_create(tconn *c, tstream *s, size_t len) {
  Ctxd__V1__CreateCollectionRequest *q =
      ctxd__v1__create_collection_request__unpack(NULL, len, s->in + 5);
  Ctxd__V1__CollectionInfo r = CTXD__V1__COLLECTION_INFO__INIT;
  if (q && q->config) q->config->dim = 42;
  r.config = q ? q->config : NULL;
  out_msg(s, &r.base);
  if (q) ctxd__v1__create_collection_request__free_unpacked(q, NULL);
  answer(c, s, 0, NULL);
}

static void progress_msg(tstream *s, const char *state, uint64_t done,
                         const char *error) {
  Ctxd__V1__RebuildProgress p = CTXD__V1__REBUILD_PROGRESS__INIT;
  p.collection = "x";
  p.state = (char *)state;
  p.done = done;
  p.total = 3;
  p.error = (char *)error;
  out_msg(s, &p.base);
}

/* A framed message that no protobuf parser accepts (a truncated varint). */
static const uint8_t junk[] = {0, 0, 0, 0, 2, 0xff, 0xff};

/* RebuildIndex: the collection name picks the story. */
static void answer_rebuild(tconn *c, tstream *s, size_t len) {
  Ctxd__V1__RebuildIndexRequest *q =
      ctxd__v1__rebuild_index_request__unpack(NULL, len, s->in + 5);
  char name[32] = "";
  if (q) snprintf(name, sizeof name, "%s", q->collection);
  if (q) ctxd__v1__rebuild_index_request__free_unpacked(q, NULL);
  if (strcmp(name, "") == 0 || strcmp(name, "ok") == 0) {
    for (uint64_t i = 0; i < 3; i++) progress_msg(s, "running", i, "");
    progress_msg(s, "done", 3, "");
    answer(c, s, 0, NULL);
  } else if (strcmp(name, "fail") == 0) {
    progress_msg(s, "running", 1, "");
    progress_msg(s, "failed", 1, "disk full");
    answer(c, s, 0, NULL);
  } else if (strcmp(name, "err") == 0) {
    progress_msg(s, "running", 1, "");
    answer(c, s, 5, "collection%20err%20not%20found");
  } else if (strcmp(name, "none") == 0) {
    progress_msg(s, "running", 1, "");
    answer(c, s, 0, NULL);
  } else if (strcmp(name, "junk") == 0) {
    out_add(s, junk, sizeof junk);
    answer(c, s, 0, NULL);
  } else { /* "hang": progress, then nothing more */
    for (uint64_t i = 0; i < 3; i++) progress_msg(s, "running", i, "");
    respond(c, s);
  }
}

static void ctxd_respond(tconn *c, tstream *s) {
  size_t len = s->in_len >= 5 ? s->in_len - 5 : 0;
  if (strcmp(s->path, "/ctxd.v1.Documents/PutStream") == 0) {
    out_add(s, junk, sizeof junk); /* an ack that does not parse, then OK */
    answer(c, s, 0, NULL);
  } else if (s->in_len < 5) {
    answer(c, s, 3, "no request message");
  } else if (strcmp(s->path, "/ctxd.v1.Retrieval/Search") == 0) {
    answer_search(c, s, len);
  } else if (strcmp(s->path, "/ctxd.v1.Retrieval/SearchBatch") == 0) {
    answer_batch(c, s, len);
  } else if (strcmp(s->path, "/ctxd.v1.Admin/CreateCollection") == 0) {
    answer_create(c, s, len);
  } else if (strcmp(s->path, "/ctxd.v1.Admin/RebuildIndex") == 0) {
    answer_rebuild(c, s, len);
  } else {
    answer(c, s, 12, "not in the test server");
  }
}

static int t_frame_recv(nghttp2_session *sess, const nghttp2_frame *f,
                        void *ud) {
  tconn *c = ud;
  tstream *s = find(c, f->hd.stream_id);
  if (!s) return 0;
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
    if (strcmp(s->path, "/t/Flood") == 0) respond(c, s);
    if (strcmp(s->path, "/t/Fail") == 0) {
      nghttp2_nv h[] = {
          {(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0},
          {(uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, 0},
          {(uint8_t *)"grpc-status", (uint8_t *)"3", 11, 1, 0},
          {(uint8_t *)"grpc-message",
           (uint8_t *)"bad%20thing: 100%25 caf%C3%A9", 12, 29, 0}};
      nghttp2_submit_response(sess, s->id, h, 4, NULL);
    }
  }
  if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
  if (strcmp(s->path, "/t/Echo") == 0) {
    s->finish = 1;
    respond(c, s);
  } else if (strcmp(s->path, "/t/Auth") == 0) {
    char m[300];
    int n = snprintf(m, sizeof m, "%s|%s|%s", s->scheme, s->auth,
                     s->auth_noindex ? "noindex" : "");
    uint8_t hdr[5];
    ccw_frame_header(hdr, (uint32_t)n);
    out_add(s, hdr, 5);
    out_add(s, (const uint8_t *)m, (size_t)n);
    s->finish = 1;
    respond(c, s);
  } else if (strcmp(s->path, "/t/Many") == 0) {
    uint8_t m[5 + 1000] = {0, 0, 0, 0x03, 0xe8};
    for (int i = 0; i < 1000; i++) out_add(s, m, sizeof m);
    s->finish = 1;
    respond(c, s);
  } else if (strcmp(s->path, "/t/Big") == 0) {
    uint8_t hdr[5] = {0, 0, 0x03, 0x0d, 0x40}; /* 200000 */
    out_add(s, hdr, 5);
    uint8_t *big = malloc(200000);
    for (int i = 0; i < 200000; i++) big[i] = (uint8_t)i;
    out_add(s, big, 200000);
    free(big);
    s->finish = 1;
    respond(c, s);
  } else if (strcmp(s->path, "/t/Flood") == 0) {
    s->finish = 1;
    kick(c, s);
  } else if (strncmp(s->path, "/ctxd.v1.", 9) == 0) {
    ctxd_respond(c, s);
  }
  return 0;
}

static int t_close(nghttp2_session *sess, int32_t id, uint32_t err, void *ud) {
  tconn *c = ud;
  for (tstream **pp = &c->streams; *pp; pp = &(*pp)->next)
    if ((*pp)->id == id) {
      tstream *s = *pp;
      *pp = s->next;
      free(s->out);
      free(s->in);
      free(s);
      break;
    }
  return 0;
}

static void serve_conn(int fd) {
  tconn c = {.fd = fd};
  nghttp2_session_callbacks *cb;
  nghttp2_option *opt;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_send_callback(cb, t_send);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, t_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, t_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, t_data);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, t_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, t_close);
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  nghttp2_session_server_new2(&c.sess, cb, &c, opt);
  nghttp2_session_callbacks_del(cb);
  nghttp2_option_del(opt);
  nghttp2_submit_settings(c.sess, 0, NULL, 0);
  uint8_t buf[16384];
  while (nghttp2_session_want_read(c.sess) ||
         nghttp2_session_want_write(c.sess)) {
    /* Give back held window once the reply backlog has drained (sending
     * drains it, so repeat until nothing changes). */
    int more = 1, rv = 0;
    while (more && rv == 0) {
      rv = nghttp2_session_send(c.sess);
      more = 0;
      for (tstream *s = c.streams; s; s = s->next)
        if (s->unconsumed && s->out_len - s->out_off <= BACKLOG_LIMIT) {
          nghttp2_session_consume(c.sess, s->id, s->unconsumed);
          s->unconsumed = 0;
          more = 1;
        }
    }
    if (rv != 0) break;
    struct pollfd p = {fd, POLLIN | (c.blocked ? POLLOUT : 0), 0};
    if (poll(&p, 1, 100) < 0) break;
    if (p.revents & POLLOUT) c.blocked = 0;
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      if (nghttp2_session_mem_recv(c.sess, buf, (size_t)n) < 0) break;
    }
  }
  while (c.streams) t_close(c.sess, c.streams->id, 0, &c);
  nghttp2_session_del(c.sess);
  close(fd);
}

static void *server_main(void *arg) {
  (void)arg;
  for (;;) {
    int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return NULL; /* listen socket shut down: test over */
    }
    int one = 1; /* small WINDOW_UPDATEs must not wait for delayed ACKs */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    serve_conn(fd);
  }
}

static pthread_t start_server(void) {
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bind(listen_fd, (struct sockaddr *)&a, sizeof a);
  listen(listen_fd, 8);
  getsockname(listen_fd, (struct sockaddr *)&a, &al);
  server_port = ntohs(a.sin_port);
  pthread_t t;
  pthread_create(&t, NULL, server_main, NULL);
  return t;
}

/* ---- the tests ----------------------------------------------------------*/

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_unary(ctxclient *c) {
  ctxclient_status st;
  uint8_t *resp;
  size_t len;
  const char *req = "hello";
  CHECK_EQ_INT(ctxclient_unary(c, "/t/Echo", (const uint8_t *)req, 5, 5000,
                               &resp, &len, &st),
               0);
  CHECK_EQ_INT(st.code, 0);
  CHECK_EQ_INT(len, 5);
  CHECK(resp && memcmp(resp, "hello", 5) == 0);
  free(resp);
  /* empty request and response */
  CHECK_EQ_INT(ctxclient_unary(c, "/t/Echo", NULL, 0, 0, &resp, &len, &st), 0);
  CHECK_EQ_INT(len, 0);
  CHECK(resp == NULL);
}

/* The /t/Auth answer of one unary call, as a string. */
static void auth_seen(ctxclient *c, char *out, size_t len) {
  ctxclient_status st;
  uint8_t *resp = NULL;
  size_t n = 0;
  out[0] = '\0';
  CHECK_EQ_INT(ctxclient_unary(c, "/t/Auth", NULL, 0, 5000, &resp, &n, &st),
               0);
  if (resp) snprintf(out, len, "%.*s", (int)n, (const char *)resp);
  free(resp);
}

static void test_token(ctxclient *c) {
  ctxclient_status st;
  char seen[300];
  auth_seen(c, seen, sizeof seen);
  CHECK_EQ_STR(seen, "http||");
  const char *tok = "abc.DEF-1_~+/=";
  CHECK_EQ_INT(ctxclient_set_token(c, tok, &st), 0);
  auth_seen(c, seen, sizeof seen);
  CHECK_EQ_STR(seen, "http|Bearer abc.DEF-1_~+/=|noindex");
  auth_seen(c, seen, sizeof seen); /* every call, not only the first */
  CHECK_EQ_STR(seen, "http|Bearer abc.DEF-1_~+/=|noindex");
  /* A streaming call carries it too. */
  ctxclient_stream *s = NULL;
  CHECK_EQ_INT(ctxclient_stream_open(c, "/t/Auth", 5000, &s, &st), 0);
  uint8_t *msg = NULL;
  size_t len = 0;
  int done = 0;
  CHECK_EQ_INT(ctxclient_stream_close_send(s, &st), 0);
  CHECK_EQ_INT(ctxclient_stream_recv(s, -1, &msg, &len, &done, &st), 0);
  CHECK(msg && len == strlen("http|Bearer abc.DEF-1_~+/=|noindex"));
  free(msg);
  ctxclient_stream_free(s);
  /* Tokens that cannot be sent are refused and the old one stays. */
  static const char *const bad[] = {"", "a b", "a\r\nx-evil: 1", "caf\xc3\xa9",
                                    "tab\there"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CHECK_EQ_INT(ctxclient_set_token(c, bad[i], &st), CTXCLIENT_EINVAL);
    CHECK_EQ_INT(st.code, 3);
  }
  char *huge = malloc(5000);
  memset(huge, 'a', 4999);
  huge[4999] = '\0';
  CHECK_EQ_INT(ctxclient_set_token(c, huge, &st), CTXCLIENT_EINVAL);
  CHECK(strstr(st.message, "4096") != NULL);
  huge[4096] = '\0';
  CHECK_EQ_INT(ctxclient_set_token(c, huge, &st), 0); /* the limit itself */
  free(huge);
  CHECK_EQ_INT(ctxclient_set_token(c, tok, &st), 0);
  auth_seen(c, seen, sizeof seen);
  CHECK_EQ_STR(seen, "http|Bearer abc.DEF-1_~+/=|noindex");
  CHECK_EQ_INT(ctxclient_set_token(c, NULL, &st), 0);
  auth_seen(c, seen, sizeof seen);
  CHECK_EQ_STR(seen, "http||");
}

/* TLS options that cannot work fail before any connection (INVALID_ARGUMENT,
 * naming the file), and a TLS client to this cleartext server fails the
 * handshake saying that the server answered in cleartext. */
static void test_tls_local_errors(const char *addr) {
  ctxclient *c = NULL;
  ctxclient_status st;
  ctxclient_tls t = {.ca_file = "/nonexistent/ca.pem"};
  CHECK_EQ_INT(ctxclient_connect_tls(addr, 2000, &t, &c, &st),
               CTXCLIENT_EINVAL);
  CHECK_EQ_INT(st.code, 3);
  CHECK(strstr(st.message, "cannot read CA file /nonexistent/ca.pem") != NULL);
  CHECK(c == NULL);
  ctxclient_tls k = {.key_file = "/etc/hostname"};
  CHECK_EQ_INT(ctxclient_connect_tls(addr, 2000, &k, &c, &st),
               CTXCLIENT_EINVAL);
  CHECK(strstr(st.message, "needs a client certificate") != NULL);
  ctxclient_tls n = {.ca_file = "/etc/hostname"}; /* not PEM */
  CHECK_EQ_INT(ctxclient_connect_tls(addr, 2000, &n, &c, &st),
               CTXCLIENT_EINVAL);
  CHECK(strstr(st.message, "cannot load CA file /etc/hostname") != NULL);
  ctxclient_tls sys = {0}; /* the system store; the server is cleartext */
  CHECK_EQ_INT(ctxclient_connect_tls(addr, 2000, &sys, &c, &st),
               CTXCLIENT_ESTATUS);
  CHECK_EQ_INT(st.code, 14);
  CHECK(strstr(st.message, "TLS handshake with") != NULL);
  CHECK(strstr(st.message, "cleartext") != NULL);
  CHECK(c == NULL);
}

static void test_trailers_only(ctxclient *c) {
  ctxclient_status st;
  uint8_t *resp = (uint8_t *)1;
  size_t len;
  CHECK_EQ_INT(ctxclient_unary(c, "/t/Fail", (const uint8_t *)"x", 1, 5000,
                               &resp, &len, &st),
               CTXCLIENT_ESTATUS);
  CHECK_EQ_INT(st.code, 3);
  CHECK_EQ_STR(st.message, "bad thing: 100% caf\xc3\xa9");
  CHECK(resp == NULL);
}

static void test_big(ctxclient *c) {
  ctxclient_status st;
  uint8_t *resp;
  size_t len;
  CHECK_EQ_INT(ctxclient_unary(c, "/t/Big", NULL, 0, 5000, &resp, &len, &st),
               0);
  CHECK_EQ_INT(len, 200000);
  int ok = resp != NULL;
  for (size_t i = 0; ok && i < len; i++) ok = resp[i] == (uint8_t)i;
  CHECK(ok);
  free(resp);
  /* over the limit: refused from the prefix, connection still usable */
  ctxclient_set_max_message(c, 100000);
  CHECK_EQ_INT(ctxclient_unary(c, "/t/Big", NULL, 0, 5000, &resp, &len, &st),
               CTXCLIENT_ESTATUS);
  CHECK_EQ_INT(st.code, 8);
  CHECK(strstr(st.message, "100000-byte limit") != NULL);
  ctxclient_set_max_message(c, CTXCLIENT_DEFAULT_MAX_MESSAGE);
  CHECK_EQ_INT(ctxclient_unary(c, "/t/Echo", (const uint8_t *)"ok", 2, 5000,
                               &resp, &len, &st),
               0);
  free(resp);
}

/* A unary call answered with many messages fails INTERNAL, and the client
 * stops at the second one instead of queueing them all. */
static void test_many(ctxclient *c) {
  ctxclient_status st;
  uint8_t *resp = (uint8_t *)1;
  size_t len;
  CHECK_EQ_INT(ctxclient_unary(c, "/t/Many", NULL, 0, 5000, &resp, &len, &st),
               CTXCLIENT_ESTATUS);
  CHECK_EQ_INT(st.code, 13);
  CHECK_EQ_STR(st.message, "expected one response message, got several");
  CHECK(resp == NULL);
}

static void test_deadline(ctxclient *c) {
  ctxclient_status st;
  uint8_t *resp;
  size_t len;
  CHECK_EQ_INT(ctxclient_unary(c, "/t/Silent", NULL, 0, 200, &resp, &len, &st),
               CTXCLIENT_ESTATUS);
  CHECK_EQ_INT(st.code, 4);
  /* a stream: recv with a short wait says EAGAIN, then the deadline ends it */
  ctxclient_stream *s;
  CHECK_EQ_INT(ctxclient_stream_open(c, "/t/Silent", 300, &s, &st), 0);
  uint8_t *m;
  int done;
  CHECK_EQ_INT(ctxclient_stream_recv(s, 10, &m, &len, &done, &st),
               CTXCLIENT_EAGAIN);
  CHECK_EQ_INT(ctxclient_stream_recv(s, -1, &m, &len, &done, &st),
               CTXCLIENT_ESTATUS);
  CHECK_EQ_INT(st.code, 4);
  CHECK_EQ_INT(ctxclient_stream_send(s, (const uint8_t *)"x", 1, &st),
               CTXCLIENT_ESTATUS);
  ctxclient_stream_free(s);
}

static void test_flood(ctxclient *c) {
  /* 32 MiB each way, sent without reading in between; the server holds
   * back window while its replies are not read. */
  enum { N = 512, SZ = 65536 };
  ctxclient_status st;
  ctxclient_stream *s;
  CHECK_EQ_INT(ctxclient_stream_open(c, "/t/Flood", 20000, &s, &st), 0);
  uint8_t *msg = malloc(SZ);
  int sent = 0;
  for (int i = 0; i < N; i++) {
    memset(msg, i & 0xff, SZ);
    if (ctxclient_stream_send(s, msg, SZ, &st) != 0) break;
    sent++;
  }
  free(msg);
  CHECK_EQ_INT(sent, N);
  CHECK_EQ_INT(ctxclient_stream_close_send(s, &st), 0);
  int got = 0, in_order = 1, done = 0, rc;
  for (;;) {
    uint8_t *m;
    size_t len;
    rc = ctxclient_stream_recv(s, -1, &m, &len, &done, &st);
    if (rc != 0 || done) break;
    if (len != SZ || m[0] != (uint8_t)got || m[SZ - 1] != (uint8_t)got)
      in_order = 0;
    got++;
    free(m);
  }
  CHECK_EQ_INT(rc, 0);
  CHECK_EQ_INT(done, 1);
  CHECK_EQ_INT(got, N);
  CHECK(in_order);
  CHECK_EQ_INT(ctxclient_stream_finish(s, &st), 0);
  ctxclient_stream_free(s);
}

static void test_refused(void) {
  ctxclient *c;
  ctxclient_status st;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  bind(fd, (struct sockaddr *)&a, sizeof a); /* a port nobody listens on */
  getsockname(fd, (struct sockaddr *)&a, &al);
  char addr[64], want[128];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", ntohs(a.sin_port));
  CHECK_EQ_INT(ctxclient_connect(addr, 2000, &c, &st), CTXCLIENT_ESTATUS);
  snprintf(want, sizeof want, "connect to %s: Connection refused", addr);
  CHECK_EQ_STR(st.message, want);
  CHECK_EQ_INT(st.code, 14);
  close(fd);
}

/* A client-streaming call with no request messages: the half-close is an
 * empty DATA frame with END_STREAM from a stream that never had an output
 * buffer (this used to memcpy from NULL, which UBSan aborts on). */
static void test_empty_stream(ctxclient *c) {
  ctxclient_status st;
  ctxclient_stream *s;
  CHECK_EQ_INT(ctxclient_stream_open(c, "/t/Echo", 5000, &s, &st), 0);
  CHECK_EQ_INT(ctxclient_stream_close_send(s, &st), 0);
  uint8_t *m = (uint8_t *)1;
  size_t len;
  int done = 0;
  CHECK_EQ_INT(ctxclient_stream_recv(s, -1, &m, &len, &done, &st), 0);
  CHECK_EQ_INT(done, 1);
  CHECK(m == NULL);
  CHECK_EQ_INT(ctxclient_stream_finish(s, &st), 0);
  ctxclient_stream_free(s);
}

/* ---- typed helpers of the ctxd.v1 methods --------------------------------*/

static void test_search(ctxclient *c) {
  ctxclient_status st;
  Ctxd__V1__SearchResponse *r = NULL;
  search_fixture f;
  search_fixture_init(&f);
  CHECK_EQ_INT(ctxclient_search(c, &f.q, 5000, &r, &st), 0);
  CHECK(r != NULL);
  if (r) {
    CHECK_EQ_INT(r->n_hits, 5);
    for (size_t i = 0; i < r->n_hits && i < 5; i++) {
      const Ctxd__V1__Chunk *ch = r->hits[i]->chunk;
      CHECK_EQ_STR(ch->doc_id, f.ids[i % 2]);
      CHECK_EQ_INT(ch->ordinal, i);
      CHECK_EQ_INT(ch->byte_start, 64);
      CHECK_EQ_INT(ch->byte_end, 300);
      CHECK_EQ_INT(ch->tokens, 1);
      CHECK_EQ_STR(ch->text, "hybrid");
      CHECK(r->hits[i]->score == -2.5f);
    }
    ctxd__v1__search_response__free_unpacked(r, NULL);
  }
  /* a server error comes back as the status, *resp NULL */
  f.q.collection = "missing";
  r = (Ctxd__V1__SearchResponse *)1;
  CHECK_EQ_INT(ctxclient_search(c, &f.q, 5000, &r, &st), CTXCLIENT_ESTATUS);
  CHECK(r == NULL);
  CHECK_EQ_INT(st.code, 5);
  CHECK_EQ_STR(st.message, "collection missing not found");
}

static void test_search_batch(ctxclient *c) {
  ctxclient_status st;
  Ctxd__V1__SearchRequest q[3] = {CTXD__V1__SEARCH_REQUEST__INIT,
                                  CTXD__V1__SEARCH_REQUEST__INIT,
                                  CTXD__V1__SEARCH_REQUEST__INIT};
  Ctxd__V1__SearchRequest *qp[3] = {&q[0], &q[1], &q[2]};
  Ctxd__V1__SearchBatchRequest b = CTXD__V1__SEARCH_BATCH_REQUEST__INIT;
  Ctxd__V1__SearchBatchResponse *r = NULL;
  q[0].text = "one";
  q[1].text = "two";
  q[2].text = "three";
  b.queries = qp;
  b.n_queries = 3;
  CHECK_EQ_INT(ctxclient_search_batch(c, &b, 5000, &r, &st), 0);
  if (r) {
    CHECK_EQ_INT(r->n_results, 3);
    for (size_t i = 0; i < 3 && i < r->n_results; i++)
      CHECK_EQ_STR(r->results[i]->hits[0]->chunk->doc_id, q[i].text);
    ctxd__v1__search_batch_response__free_unpacked(r, NULL);
  }
  /* fewer results than queries: INTERNAL, nothing returned */
  q[0].text = "short";
  r = (Ctxd__V1__SearchBatchResponse *)1;
  CHECK_EQ_INT(ctxclient_search_batch(c, &b, 5000, &r, &st), CTXCLIENT_ESTATUS);
  CHECK(r == NULL);
  CHECK_EQ_INT(st.code, 13);
  CHECK_EQ_STR(st.message,
               "/ctxd.v1.Retrieval/SearchBatch: 2 results for 3 queries");
}

static void test_create_collection(ctxclient *c) {
  ctxclient_status st;
  Ctxd__V1__CollectionConfig cfg;
  Ctxd__V1__CollectionInfo *r = NULL;
  config_fixture_init(&cfg);
  CHECK_EQ_INT(ctxclient_create_collection(c, &cfg, 5000, &r, &st), 0);
  if (r && r->config) {
    CHECK_EQ_STR(r->config->name, "n");
    CHECK_EQ_STR(r->config->embedder, "hash");
    CHECK_EQ_STR(r->config->metric, "l2");
    CHECK_EQ_STR(r->config->index_spec, "Flat");
    CHECK_EQ_INT(r->config->chunk_max_tokens, 200);
    CHECK_EQ_INT(r->config->chunk_overlap_tokens, 20);
    CHECK_EQ_INT(r->config->dim, 42);
  } else {
    CHECK(!"CreateCollection answered with a config");
  }
  if (r) ctxd__v1__collection_info__free_unpacked(r, NULL);
  CHECK_EQ_INT(ctxclient_create_collection(c, NULL, 5000, &r, &st),
               CTXCLIENT_EINVAL);
}

typedef struct seen {
  int n;
  uint64_t done[8];
  char state[8][16];
  int stop_after; /* 0: never */
} seen;

static int on_progress(const Ctxd__V1__RebuildProgress *p, void *ud) {
  seen *sn = ud;
  if (sn->n < 8) {
    sn->done[sn->n] = p->done;
    snprintf(sn->state[sn->n], sizeof sn->state[0], "%s", p->state);
  }
  sn->n++;
  return sn->stop_after && sn->n >= sn->stop_after;
}

static void test_rebuild(ctxclient *c) {
  ctxclient_status st;
  Ctxd__V1__RebuildProgress *last = NULL;
  seen sn = {0};
  /* done: every message reaches the callback, the last is kept */
  CHECK_EQ_INT(
      ctxclient_rebuild_index(c, "ok", 5000, on_progress, &sn, &last, &st), 0);
  CHECK_EQ_INT(sn.n, 4);
  CHECK_EQ_INT(sn.done[2], 2);
  CHECK_EQ_STR(sn.state[3], "done");
  CHECK(last && last->done == 3 && last->total == 3);
  if (last) ctxd__v1__rebuild_progress__free_unpacked(last, NULL);
  /* NULL collection, no callback, no last */
  CHECK_EQ_INT(ctxclient_rebuild_index(c, NULL, 5000, NULL, NULL, NULL, &st),
               0);
  /* the server reports "failed": ABORTED with its error */
  memset(&sn, 0, sizeof sn);
  CHECK_EQ_INT(
      ctxclient_rebuild_index(c, "fail", 5000, on_progress, &sn, &last, &st),
      CTXCLIENT_ESTATUS);
  CHECK_EQ_INT(st.code, 10);
  CHECK_EQ_STR(st.message, "rebuild of collection fail failed: disk full");
  CHECK_EQ_INT(sn.n, 2);
  CHECK(last && strcmp(last->state, "failed") == 0);
  if (last) ctxd__v1__rebuild_progress__free_unpacked(last, NULL);
  /* an error status after some progress: that status */
  CHECK_EQ_INT(ctxclient_rebuild_index(c, "err", 5000, NULL, NULL, &last, &st),
               CTXCLIENT_ESTATUS);
  CHECK_EQ_INT(st.code, 5);
  CHECK_EQ_STR(st.message, "collection err not found");
  CHECK(last && last->done == 1);
  if (last) ctxd__v1__rebuild_progress__free_unpacked(last, NULL);
  /* OK without a final state */
  CHECK_EQ_INT(
      ctxclient_rebuild_index(c, "none", 5000, NULL, NULL, NULL, &st),
      CTXCLIENT_ESTATUS);
  CHECK_EQ_INT(st.code, 13);
  CHECK(strstr(st.message, "without a final state; last state running"));
  /* a message that does not parse */
  CHECK_EQ_INT(ctxclient_rebuild_index(c, "junk", 5000, NULL, NULL, &last, &st),
               CTXCLIENT_ESTATUS);
  CHECK_EQ_INT(st.code, 13);
  CHECK(strstr(st.message, "cannot parse a RebuildProgress"));
  CHECK(last == NULL);
  /* the callback stops following: CANCELLED at once, not at the deadline */
  memset(&sn, 0, sizeof sn);
  sn.stop_after = 2;
  int64_t t0 = mono_ms();
  CHECK_EQ_INT(
      ctxclient_rebuild_index(c, "hang", 20000, on_progress, &sn, NULL, &st),
      CTXCLIENT_ESTATUS);
  CHECK_EQ_INT(st.code, 1);
  CHECK(strstr(st.message, "goes on in the server"));
  CHECK_EQ_INT(sn.n, 2);
  CHECK(mono_ms() - t0 < 5000);
  /* a deadline while following */
  memset(&sn, 0, sizeof sn);
  CHECK_EQ_INT(
      ctxclient_rebuild_index(c, "hang", 300, on_progress, &sn, NULL, &st),
      CTXCLIENT_ESTATUS);
  CHECK_EQ_INT(st.code, 4);
  CHECK_EQ_INT(sn.n, 3);
}

/* A PutAck that does not parse, in the same read as an OK end of the
 * call: the OK must not hide it (recv once returned 0 with no ack and the
 * call not done). */
static void test_putstream_bad_ack(ctxclient *c) {
  ctxclient_status st;
  ctxclient_stream *s;
  Ctxd__V1__PutAck *ack = NULL;
  int done = 0;
  CHECK_EQ_INT(ctxclient_putstream_open(c, 5000, &s, &st), 0);
  CHECK_EQ_INT(ctxclient_stream_close_send(s, &st), 0);
  /* let the answer and its trailers arrive before reading */
  CHECK_EQ_INT(ctxclient_stream_finish(s, &st), 0);
  CHECK_EQ_INT(ctxclient_putstream_recv(s, -1, &ack, &done, &st),
               CTXCLIENT_ESTATUS);
  CHECK(ack == NULL);
  CHECK_EQ_INT(st.code, 13);
  CHECK(strstr(st.message, "cannot parse a PutAck") != NULL);
  ctxclient_stream_free(s);
}

/* ---- peers that are not gRPC servers ------------------------------------*/

static int raw_listener(char *addr, size_t len) {
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t al = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bind(fd, (struct sockaddr *)&a, sizeof a);
  listen(fd, 8);
  getsockname(fd, (struct sockaddr *)&a, &al);
  snprintf(addr, len, "127.0.0.1:%d", ntohs(a.sin_port));
  return fd;
}

/* Accepts one connection, writes `bytes`, then reads until the client
 * closes. */
typedef struct raw_peer {
  int lfd;
  const uint8_t *bytes;
  size_t len;
} raw_peer;

static void *raw_peer_main(void *arg) {
  raw_peer *p = arg;
  int fd = accept(p->lfd, NULL, NULL);
  if (fd < 0) return NULL;
  if (p->len) send(fd, p->bytes, p->len, MSG_NOSIGNAL);
  uint8_t buf[4096];
  struct pollfd pf = {fd, POLLIN, 0};
  while (poll(&pf, 1, 5000) > 0 && recv(fd, buf, sizeof buf, 0) > 0) {
  }
  close(fd);
  return NULL;
}

/* A listener that completes the TCP handshake (the kernel does) but never
 * says anything: even a call without a deadline must fail UNAVAILABLE once
 * the connect timeout has passed, not hang. */
static void test_silent_peer(void) {
  char addr[64];
  int lfd = raw_listener(addr, sizeof addr);
  ctxclient *c = NULL;
  ctxclient_status st;
  CHECK_EQ_INT(ctxclient_connect(addr, 300, &c, &st), 0);
  if (!c) return;
  ctxclient_stream *s;
  CHECK_EQ_INT(ctxclient_stream_open(c, "/t/Silent", 3000, &s, &st), 0);
  uint8_t *m;
  size_t len;
  int done;
  int64_t t0 = mono_ms();
  CHECK_EQ_INT(ctxclient_stream_recv(s, -1, &m, &len, &done, &st),
               CTXCLIENT_ESTATUS);
  int64_t took = mono_ms() - t0;
  CHECK_EQ_INT(st.code, 14);
  CHECK(strstr(st.message, "sent no HTTP/2 within 300 ms") != NULL);
  CHECK(took < 2000);
  ctxclient_stream_free(s);
  /* the connection is dead now: calls fail at once, same status */
  uint8_t *resp;
  CHECK_EQ_INT(ctxclient_unary(c, "/t/Echo", NULL, 0, 0, &resp, &len, &st),
               CTXCLIENT_ESTATUS);
  CHECK_EQ_INT(st.code, 14);
  ctxclient_close(c);
  close(lfd);
}

/* A peer that sends valid SETTINGS and then breaks the protocol (DATA on
 * stream 0): the error names the protocol error, not just "closed". */
static void test_protocol_error_peer(void) {
  static const uint8_t bytes[] = {
      0, 0, 0, 4, 0, 0, 0, 0, 0,       /* SETTINGS, empty */
      0, 0, 1, 0, 0, 0, 0, 0, 0, 'x'}; /* DATA on stream 0 */
  char addr[64];
  raw_peer p = {.bytes = bytes, .len = sizeof bytes};
  p.lfd = raw_listener(addr, sizeof addr);
  pthread_t t;
  pthread_create(&t, NULL, raw_peer_main, &p);
  ctxclient *c = NULL;
  ctxclient_status st;
  CHECK_EQ_INT(ctxclient_connect(addr, 2000, &c, &st), 0);
  if (c) {
    uint8_t *resp;
    size_t len;
    CHECK_EQ_INT(ctxclient_unary(c, "/t/Echo", NULL, 0, 2000, &resp, &len, &st),
                 CTXCLIENT_ESTATUS);
    CHECK_EQ_INT(st.code, 14);
    CHECK(strstr(st.message, "HTTP/2 protocol error from") != NULL);

    ctxclient_close(c);
  }
  pthread_join(t, NULL);
  close(p.lfd);
}

int main(void) {
  pthread_t t = start_server();
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", server_port);
  ctxclient *c = NULL;
  ctxclient_status st;
  CHECK_EQ_INT(ctxclient_connect(addr, 2000, &c, &st), 0);
  if (c) {
    test_unary(c);
    test_token(c);
    test_trailers_only(c);
    test_big(c);
    test_many(c);
    test_deadline(c);
    test_flood(c);
    test_empty_stream(c);
    test_search(c);
    test_search_batch(c);
    test_create_collection(c);
    test_rebuild(c);
    test_putstream_bad_ack(c);
    test_unary(c); /* the connection survived all of that */
    ctxclient_close(c);
  }
  test_refused();
  test_tls_local_errors(addr);
  test_silent_peer();
  test_protocol_error_peer();
  shutdown(listen_fd, SHUT_RDWR);
  close(listen_fd);
  pthread_join(t, NULL);
  return check_report("clients_client");
}
