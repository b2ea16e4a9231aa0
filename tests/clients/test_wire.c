/* test_wire.c - unit tests of ctxclient's socket-free wire helpers:
 * address parsing, grpc-timeout, grpc-message decoding, message framing and
 * reassembly; plus the protobuf-c behaviour ctxctl relies on (invalid UTF-8
 * packs unchanged, so the server is the one to judge it). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ctxclient.h"
#include "ctxclient_wire.h"

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
  test_status_names();
  test_connect_errors();
  return check_report("clients_wire");
}
