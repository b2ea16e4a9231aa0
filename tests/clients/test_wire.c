/* test_wire.c - unit tests of ctxclient's socket-free wire helpers:
 * address parsing, grpc-timeout, grpc-message decoding, message framing and
 * reassembly; the protobuf-c behaviour ctxctl relies on (invalid UTF-8
 * packs unchanged, so the server is the one to judge it); and the bytes of
 * the retrieval and collection messages, checked against hand-made
 * encodings of the field numbers and types in proto/ctxd/v1 (what grpcio
 * and any other client send and expect). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ctxclient.h"
#include "ctxclient_wire.h"
#include "fixtures.h"

static int addr_ok(const char *a, const char *host, const char *port) {
  char h[64], p[8];
  if (ccw_parse_addr(a, "50051", h, sizeof h, p, sizeof p) != 0) return 0;
  return strcmp(h, host) == 0 && strcmp(p, port) == 0;
}

static int addr_bad(const char *a) {
  char h[64], p[8];
  return ccw_parse_addr(a, "50051", h, sizeof h, p, sizeof p) == -1;
}

static void test_addr(void) {
  CHECK(addr_ok("127.0.0.1:50051", "127.0.0.1", "50051"));
  CHECK(addr_ok("localhost:80", "localhost", "80"));
  CHECK(addr_ok("localhost", "localhost", "50051"));
  CHECK(addr_ok("[::1]:8080", "::1", "8080"));
  CHECK(addr_ok("[::1]", "::1", "50051"));
  CHECK(addr_ok("[fe80::1%eth0]:1", "fe80::1%eth0", "1"));
  CHECK(addr_ok("::1", "::1", "50051"));
  CHECK(addr_ok("2001:db8::5", "2001:db8::5", "50051"));
  CHECK(addr_ok("h:65535", "h", "65535"));
  CHECK(addr_bad(""));
  CHECK(addr_bad(":80"));
  CHECK(addr_bad("host:"));
  CHECK(addr_bad("host:0"));
  CHECK(addr_bad("host:65536"));
  CHECK(addr_bad("host:123456"));
  CHECK(addr_bad("host:8o"));
  CHECK(addr_bad("host:-1"));
  CHECK(addr_bad("[::1"));
  CHECK(addr_bad("[]:80"));
  CHECK(addr_bad("[::1]x"));
  CHECK(addr_bad("[::1]:"));
  CHECK(addr_bad("bad:addr:x:"));
  CHECK(addr_bad(NULL));
  /* host longer than the buffer */
  char longa[200];
  memset(longa, 'a', 150);
  strcpy(longa + 150, ":80");
  CHECK(addr_bad(longa));
}

static void test_timeout(void) {
  char b[16];
  CHECK_EQ_INT(ccw_format_timeout(1, b, sizeof b), 0);
  CHECK_EQ_STR(b, "1m");
  CHECK_EQ_INT(ccw_format_timeout(1500, b, sizeof b), 0);
  CHECK_EQ_STR(b, "1500m");
  CHECK_EQ_INT(ccw_format_timeout(99999999, b, sizeof b), 0);
  CHECK_EQ_STR(b, "99999999m");
  /* Past 8 digits of ms: seconds, rounded up. */
  CHECK_EQ_INT(ccw_format_timeout(100000000, b, sizeof b), 0);
  CHECK_EQ_STR(b, "100000S");
  CHECK_EQ_INT(ccw_format_timeout(100000001, b, sizeof b), 0);
  CHECK_EQ_STR(b, "100001S");
  CHECK_EQ_INT(ccw_format_timeout(99999999LL * 1000 + 1, b, sizeof b), 0);
  CHECK_EQ_STR(b, "1666667M");
  CHECK_EQ_INT(ccw_format_timeout(INT64_MAX / 2, b, sizeof b), 0);
  CHECK(strlen(b) <= 9);
  CHECK_EQ_INT(ccw_format_timeout(0, b, sizeof b), -1);
  CHECK_EQ_INT(ccw_format_timeout(-5, b, sizeof b), -1);
  CHECK_EQ_INT(ccw_format_timeout(5, b, 4), -1);
}

static void test_percent(void) {
  char b[64];
  const char *in;
  in = "a%20b";
  CHECK_EQ_INT(ccw_percent_decode(in, strlen(in), b, sizeof b), 3);
  CHECK_EQ_STR(b, "a b");
  in = "caf%C3%A9 100%25";
  ccw_percent_decode(in, strlen(in), b, sizeof b);
  CHECK_EQ_STR(b, "caf\xc3\xa9 100%");
  in = "100%"; /* trailing '%' stays */
  ccw_percent_decode(in, strlen(in), b, sizeof b);
  CHECK_EQ_STR(b, "100%");
  in = "%zz%4"; /* not hex, too short: copied as is */
  ccw_percent_decode(in, strlen(in), b, sizeof b);
  CHECK_EQ_STR(b, "%zz%4");
  in = "%0a%0A";
  ccw_percent_decode(in, strlen(in), b, sizeof b);
  CHECK_EQ_STR(b, "\n\n");
  in = "abcdef"; /* truncation, still terminated, full length returned */
  CHECK_EQ_INT(ccw_percent_decode(in, strlen(in), b, 4), 6);
  CHECK_EQ_STR(b, "abc");
  /* only `len` bytes are read */
  in = "ab%41";
  ccw_percent_decode(in, 4, b, sizeof b);
  CHECK_EQ_STR(b, "ab%4");
}

typedef struct got {
  int n;
  size_t lens[16];
  char first[16];
  int stop_after;
} got;

static int on_msg(void *ud, uint8_t *msg, size_t len) {
  got *g = ud;
  if (g->n < 16) {
    g->lens[g->n] = len;
    g->first[g->n] = len ? (char)msg[0] : 0;
  }
  g->n++;
  free(msg);
  return g->stop_after && g->n >= g->stop_after;
}

/* Build a stream of framed messages "A"*3, "" , "B"*300. */
static size_t build_stream(uint8_t *out) {
  size_t n = 0;
  ccw_frame_header(out + n, 3);
  n += 5;
  memset(out + n, 'A', 3);
  n += 3;
  ccw_frame_header(out + n, 0);
  n += 5;
  ccw_frame_header(out + n, 300);
  n += 5;
  memset(out + n, 'B', 300);
  n += 300;
  return n;
}

static void test_deframer(void) {
  uint8_t hdr[5];
  ccw_frame_header(hdr, 0x01020304);
  CHECK(hdr[0] == 0 && hdr[1] == 1 && hdr[2] == 2 && hdr[3] == 3 &&
        hdr[4] == 4);

  uint8_t buf[400];
  size_t n = build_stream(buf);
  ccw_deframer d;

  /* all at once */
  got g = {0};
  ccw_deframer_init(&d, 1000);
  CHECK_EQ_INT(ccw_deframer_feed(&d, buf, n, on_msg, &g), 0);
  CHECK_EQ_INT(g.n, 3);
  CHECK_EQ_INT(g.lens[0], 3);
  CHECK_EQ_INT(g.lens[1], 0);
  CHECK_EQ_INT(g.lens[2], 300);
  CHECK(g.first[0] == 'A' && g.first[2] == 'B');
  CHECK_EQ_INT(ccw_deframer_partial(&d), 0);
  ccw_deframer_free(&d);

  /* one byte at a time (DATA frames cut anywhere) */
  memset(&g, 0, sizeof g);
  ccw_deframer_init(&d, 1000);
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    rc = ccw_deframer_feed(&d, buf + i, 1, on_msg, &g);
    if (i == 2) CHECK_EQ_INT(ccw_deframer_partial(&d), 1);
  }
  CHECK_EQ_INT(rc, 0);
  CHECK_EQ_INT(g.n, 3);
  CHECK_EQ_INT(g.lens[2], 300);
  CHECK_EQ_INT(ccw_deframer_partial(&d), 0);
  ccw_deframer_free(&d);

  /* odd split sizes; stream ends inside the last message */
  memset(&g, 0, sizeof g);
  ccw_deframer_init(&d, 1000);
  CHECK_EQ_INT(ccw_deframer_feed(&d, buf, 7, on_msg, &g), 0);
  CHECK_EQ_INT(g.n, 0);
  CHECK_EQ_INT(ccw_deframer_feed(&d, buf + 7, 100, on_msg, &g), 0);
  CHECK_EQ_INT(g.n, 2);
  CHECK_EQ_INT(ccw_deframer_partial(&d), 1);
  ccw_deframer_free(&d); /* frees the partial message (ASan would tell) */

  /* the size limit is checked from the prefix, before allocating */
  memset(&g, 0, sizeof g);
  ccw_deframer_init(&d, 299);
  CHECK_EQ_INT(ccw_deframer_feed(&d, buf, n, on_msg, &g), CCW_ETOOBIG);
  CHECK_EQ_INT(g.n, 2);
  CHECK(d.msg == NULL);
  ccw_deframer_free(&d);
  uint8_t huge[5];
  ccw_frame_header(huge, 0xFFFFFFFFu);
  ccw_deframer_init(&d, 64u << 20);
  CHECK_EQ_INT(ccw_deframer_feed(&d, huge, 5, on_msg, &g), CCW_ETOOBIG);
  ccw_deframer_free(&d);

  /* compressed flag: we never offer an encoding */
  uint8_t comp[6] = {1, 0, 0, 0, 1, 'x'};
  ccw_deframer_init(&d, 100);
  CHECK_EQ_INT(ccw_deframer_feed(&d, comp, 6, on_msg, &g), CCW_ECOMPRESSED);
  ccw_deframer_free(&d);

  /* a callback can stop the feed */
  memset(&g, 0, sizeof g);
  g.stop_after = 1;
  ccw_deframer_init(&d, 1000);
  CHECK_EQ_INT(ccw_deframer_feed(&d, buf, n, on_msg, &g), CCW_ECALLBACK);
  CHECK_EQ_INT(g.n, 1);
  ccw_deframer_free(&d);
}

/* protobuf-c does not check UTF-8 when packing (nor unpacking): ctxctl
 * sends a file's bytes as they are and shows the server's verdict. */
static void test_pack_invalid_utf8(void) {
  Ctxd__V1__Document doc = CTXD__V1__DOCUMENT__INIT;
  Ctxd__V1__PutRequest req = CTXD__V1__PUT_REQUEST__INIT;
  char text[] = "ok \xff\xfe bad \xc3";
  doc.id = "x";
  doc.text = text;
  req.document = &doc;
  size_t n = ctxd__v1__put_request__get_packed_size(&req);
  uint8_t *buf = malloc(n);
  CHECK_EQ_INT(ctxd__v1__put_request__pack(&req, buf), n);
  int found = 0;
  for (size_t i = 0; i + sizeof text - 1 <= n; i++)
    if (memcmp(buf + i, text, sizeof text - 1) == 0) found = 1;
  CHECK(found);
  Ctxd__V1__PutRequest *back = ctxd__v1__put_request__unpack(NULL, n, buf);
  CHECK(back != NULL);
  if (back) {
    CHECK_EQ_STR(back->document->text, text);
    ctxd__v1__put_request__free_unpacked(back, NULL);
  }
  free(buf);
}

/* ---- retrieval and collection messages -----------------------------------*/

/* Pack `m` and compare with `want` (printing both on a mismatch). */
static int packs_as(const ProtobufCMessage *m, const uint8_t *want,
                    size_t want_len) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *b = malloc(n ? n : 1);
  protobuf_c_message_pack(m, b);
  int ok = n == want_len && memcmp(b, want, n) == 0;
  if (!ok) {
    fprintf(stderr, "packed %zu bytes:", n);
    for (size_t i = 0; i < n; i++) fprintf(stderr, " %02x", b[i]);
    fprintf(stderr, "\nwanted %zu bytes:", want_len);
    for (size_t i = 0; i < want_len; i++) fprintf(stderr, " %02x", want[i]);
    fprintf(stderr, "\n");
  }
  free(b);
  return ok;
}

#define PACKS_AS(m, ...)                                          \
  do {                                                            \
    static const uint8_t want_[] = {__VA_ARGS__};                 \
    CHECK(packs_as(&(m).base, want_, sizeof want_));              \
  } while (0)

/* Every SearchRequest field, the query vector packed (proto3's default
 * for repeated scalars: one length-delimited run of little-endian
 * floats). */
static void test_search_request_bytes(void) {
  search_fixture f;
  search_fixture_init(&f);
  PACKS_AS(f.q, 0x0a, 1, 'q',                                /* 1 text */
           0x12, 8, 0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0,    /* 2 vector */
           0x18, 5,                                        /* 3 k */
           0x22, 6, 'h', 'y', 'b', 'r', 'i', 'd',          /* 4 mode */
           0x2a, 1, 'c',                                   /* 5 collection */
           0x32, 1, 'a', 0x32, 1, 'b',                     /* 6 doc_ids */
           0x3a, 6, 0x0a, 1, 'k', 0x12, 1, 'v',            /* 7 metadata */
           0x40, 1,                                        /* 8 with_text */
           0x48, 64,                                       /* 9 ef_search */
           0x50, 0xac, 0x02);                              /* 10 nprobe */
  /* defaults are left out: an empty request is empty */
  Ctxd__V1__SearchRequest e = CTXD__V1__SEARCH_REQUEST__INIT;
  CHECK_EQ_INT(ctxd__v1__search_request__get_packed_size(&e), 0);
  Ctxd__V1__SearchRequest *qp[] = {&e, &e};
  Ctxd__V1__SearchBatchRequest b = CTXD__V1__SEARCH_BATCH_REQUEST__INIT;
  b.queries = qp;
  b.n_queries = 2;
  PACKS_AS(b, 0x0a, 0, 0x0a, 0); /* 1 queries, twice */
}

/* The collection fields of the Documents requests, and chunk vectors. */
static void test_document_request_bytes(void) {
  Ctxd__V1__ChunkInput ci = CTXD__V1__CHUNK_INPUT__INIT;
  Ctxd__V1__ChunkInput *cp[] = {&ci};
  Ctxd__V1__Document d = CTXD__V1__DOCUMENT__INIT;
  float v[] = {0.5f};
  ci.byte_start = 0;
  ci.byte_end = 2;
  ci.vector = v;
  ci.n_vector = 1;
  d.id = "x";
  d.text = "hi";
  d.collection = "c";
  d.chunks = cp;
  d.n_chunks = 1;
  PACKS_AS(d, 0x0a, 1, 'x',                 /* 1 id */
           0x12, 2, 'h', 'i',               /* 2 text */
           0x22, 1, 'c',                    /* 4 collection */
           0x2a, 8, 0x10, 2,                /* 5 chunks: 2 byte_end */
           0x1a, 4, 0, 0, 0, 0x3f);         /*   3 vector */
  Ctxd__V1__GetRequest g = CTXD__V1__GET_REQUEST__INIT;
  g.id = "x";
  g.with_chunks = 1;
  g.collection = "c";
  g.with_vectors = 1;
  PACKS_AS(g, 0x0a, 1, 'x', 0x18, 1, 0x22, 1, 'c', 0x28, 1);
  Ctxd__V1__DeleteRequest del = CTXD__V1__DELETE_REQUEST__INIT;
  del.id = "x";
  del.collection = "c";
  PACKS_AS(del, 0x0a, 1, 'x', 0x12, 1, 'c');
  Ctxd__V1__ListRequest l = CTXD__V1__LIST_REQUEST__INIT;
  l.page_size = 3;
  l.collection = "c";
  PACKS_AS(l, 0x08, 3, 0x1a, 1, 'c');
}

static void test_admin_request_bytes(void) {
  Ctxd__V1__CollectionConfig c;
  Ctxd__V1__CreateCollectionRequest cr =
      CTXD__V1__CREATE_COLLECTION_REQUEST__INIT;
  config_fixture_init(&c);
  cr.config = &c;
  PACKS_AS(cr, 0x0a, 24,                          /* 1 config */
           0x0a, 1, 'n',                          /*   1 name */
           0x12, 4, 'h', 'a', 's', 'h',           /*   2 embedder */
           0x22, 2, 'l', '2',                     /*   4 metric */
           0x2a, 4, 'F', 'l', 'a', 't',           /*   5 index_spec */
           0x30, 0xc8, 0x01,                      /*   6 chunk_max_tokens */
           0x38, 20);                             /*   7 overlap */
  Ctxd__V1__DropCollectionRequest dr = CTXD__V1__DROP_COLLECTION_REQUEST__INIT;
  dr.name = "n";
  PACKS_AS(dr, 0x0a, 1, 'n');
  Ctxd__V1__RebuildIndexRequest rr = CTXD__V1__REBUILD_INDEX_REQUEST__INIT;
  rr.collection = "n";
  PACKS_AS(rr, 0x0a, 1, 'n');
}

/* Responses as a server sends them, decoded; a repeated float the sender
 * did not pack (each value its own fixed32 field) is read too, as proto3
 * parsers must. */
static void test_response_bytes(void) {
  static const uint8_t hit[] = {
      0x0a, 22,                                /* 1 hits */
      0x0a, 15,                                /*   1 chunk */
      0x0a, 1, 'd',                            /*     1 doc_id */
      0x10, 2,                                 /*     2 ordinal */
      0x18, 10,                                /*     3 byte_start */
      0x20, 20,                                /*     4 byte_end */
      0x28, 3,                                 /*     5 tokens */
      0x32, 2, 'h', 'i',                       /*     6 text */
      0x15, 0, 0, 0x40, 0x3f,                  /*   2 score, fixed32 */
      0x0a, 0};                                /* 1 hits: an empty hit */
  Ctxd__V1__SearchResponse *r =
      ctxd__v1__search_response__unpack(NULL, sizeof hit, hit);
  CHECK(r != NULL && r->n_hits == 2);
  if (r && r->n_hits == 2) {
    const Ctxd__V1__Chunk *c = r->hits[0]->chunk;
    CHECK(c && strcmp(c->doc_id, "d") == 0 && c->ordinal == 2 &&
          c->byte_start == 10 && c->byte_end == 20 && c->tokens == 3 &&
          strcmp(c->text, "hi") == 0);
    CHECK(r->hits[0]->score == 0.75f);
    CHECK(r->hits[1]->chunk == NULL && r->hits[1]->score == 0.0f);
  }
  if (r) ctxd__v1__search_response__free_unpacked(r, NULL);
  static const uint8_t chunk[] = {0x3d, 0, 0, 0x80, 0x3f,  /* 7 vector 1.0 */
                                  0x3d, 0, 0, 0, 0xc0};    /* 7 vector -2 */
  Ctxd__V1__Chunk *c = ctxd__v1__chunk__unpack(NULL, sizeof chunk, chunk);
  CHECK(c && c->n_vector == 2 && c->vector[0] == 1.0f && c->vector[1] == -2.0f);
  if (c) ctxd__v1__chunk__free_unpacked(c, NULL);

  static const uint8_t prog[] = {0x0a, 1, 'c',                      /* 1 */
                                 0x12, 6, 'f', 'a', 'i', 'l', 'e', 'd',
                                 0x18, 7, 0x20, 9,                  /* 3, 4 */
                                 0x2a, 2, 'n', 'o'};                /* 5 */
  Ctxd__V1__RebuildProgress *p =
      ctxd__v1__rebuild_progress__unpack(NULL, sizeof prog, prog);
  CHECK(p && strcmp(p->collection, "c") == 0 &&
        strcmp(p->state, "failed") == 0 && p->done == 7 && p->total == 9 &&
        strcmp(p->error, "no") == 0);
  if (p) ctxd__v1__rebuild_progress__free_unpacked(p, NULL);

  static const uint8_t stats[] = {
      0x08, 4,                                 /* 1 documents */
      0x6a, 19,                                /* 13 collections */
      0x0a, 3, 0x0a, 1, 'n',                   /*   1 config: 1 name */
      0x10, 4, 0x30, 9, 0x40, 2, 0x48, 1,      /*   2, 6, 8 masked, 9 */
      0x50, 1, 0x80, 0x01, 0x96, 0x01};        /*   10, 16 covered_seq */
  Ctxd__V1__StatsResponse *st =
      ctxd__v1__stats_response__unpack(NULL, sizeof stats, stats);
  CHECK(st && st->documents == 4 && st->n_collections == 1);
  if (st && st->n_collections == 1) {
    const Ctxd__V1__CollectionInfo *ci = st->collections[0];
    CHECK(ci->config && strcmp(ci->config->name, "n") == 0);
    CHECK(ci->documents == 4 && ci->vectors == 9 && ci->masked == 2 &&
          ci->trained && ci->exact_until_trained && ci->covered_seq == 150);
  }
  if (st) ctxd__v1__stats_response__free_unpacked(st, NULL);
}

static void test_status_names(void) {
  CHECK_EQ_STR(ctxclient_status_name(0), "OK");
  CHECK_EQ_STR(ctxclient_status_name(3), "INVALID_ARGUMENT");
  CHECK_EQ_STR(ctxclient_status_name(14), "UNAVAILABLE");
  CHECK_EQ_STR(ctxclient_status_name(16), "UNAUTHENTICATED");
  CHECK_EQ_STR(ctxclient_status_name(42), "CODE_42");
}

/* Connecting to a port nobody listens on gives UNAVAILABLE with the
 * address and the system's reason; a bad address is INVALID_ARGUMENT. */
static void test_connect_errors(void) {
  ctxclient *c = (ctxclient *)1;
  ctxclient_status st;
  /* Port 1 on loopback: refused on any sane test machine. */
  CHECK_EQ_INT(ctxclient_connect("127.0.0.1:1", 2000, &c, &st),
               CTXCLIENT_ESTATUS);
  CHECK(c == NULL);
  CHECK_EQ_INT(st.code, 14);
  CHECK_EQ_STR(st.message, "connect to 127.0.0.1:1: Connection refused");
  CHECK_EQ_INT(ctxclient_connect("127.0.0.1:http", 2000, &c, &st),
               CTXCLIENT_EINVAL);
  CHECK_EQ_INT(st.code, 3);
}

int main(void) {
  test_addr();
  test_timeout();
  test_percent();
  test_deframer();
  test_pack_invalid_utf8();
  test_search_request_bytes();
  test_document_request_bytes();
  test_admin_request_bytes();
  test_response_bytes();
  test_status_names();
  test_connect_errors();
  return check_report("clients_wire");
}
