/* test_grpc_wire.c - the gRPC message deframer, grpc-timeout parsing,
 * grpc-message percent-encoding, content-type check, protobuf reader. */
#include "../check.h"
#include "grpc_wire.h"

#include <stdint.h>
#include <stdlib.h>

/* Frame `n` messages of lengths lens[] (contents: byte i%251) into out. */
static size_t frame_all(const size_t *lens, size_t n, uint8_t *out) {
  size_t o = 0;
  for (size_t m = 0; m < n; m++) {
    grpc_prefix_put(out + o, (uint32_t)lens[m]);
    o += GRPC_PREFIX_LEN;
    for (size_t i = 0; i < lens[m]; i++) out[o++] = (uint8_t)((i + m) % 251);
  }
  return o;
}

/* Feed `wire` in pieces of `step` bytes (step 0: random 1..37) and check
 * that every message comes out whole and in order. */
static void deframe_split(const uint8_t *wire, size_t wl, const size_t *lens,
                          size_t n, size_t step) {
  grpc_deframer d;
  size_t got = 0, pos = 0;
  int bad = 0;
  grpc_deframer_init(&d, 1 << 20);
  while (pos < wl) {
    size_t piece = step ? step : 1 + (size_t)(rand() % 37);
    if (piece > wl - pos) piece = wl - pos;
    const uint8_t *p = wire + pos;
    size_t left = piece;
    while (left > 0) {
      size_t used;
      grpc_msg m;
      int rc = grpc_deframer_feed(&d, p, left, &used, &m);
      p += used;
      left -= used;
      if (rc == GRPC_DEFRAME_MESSAGE) {
        if (got >= n || m.len != lens[got] || m.compressed) {
          bad = 1;
        } else {
          for (size_t i = 0; i < m.len; i++)
            if (m.data[i] != (uint8_t)((i + got) % 251)) bad = 1;
        }
        got++;
      } else if (rc != GRPC_DEFRAME_NEED_MORE) {
        bad = 1;
        break;
      }
    }
    pos += piece;
  }
  CHECK(!bad);
  CHECK_EQ_INT(got, n);
  CHECK(!grpc_deframer_partial(&d) || d.have == d.len);
  grpc_deframer_free(&d);
}

static void test_deframer(void) {
  static const size_t lens[] = {0, 1, 5, 0, 300, 70000, 4, 0};
  size_t n = sizeof lens / sizeof lens[0];
  size_t total = 0;
  for (size_t i = 0; i < n; i++) total += GRPC_PREFIX_LEN + lens[i];
  uint8_t *wire = malloc(total);
  CHECK_EQ_INT(frame_all(lens, n, wire), total);
  deframe_split(wire, total, lens, n, total); /* one chunk */
  deframe_split(wire, total, lens, n, 1);     /* byte by byte */
  deframe_split(wire, total, lens, n, 3);
  deframe_split(wire, total, lens, n, 5);
  deframe_split(wire, total, lens, n, 4096);
  for (int r = 0; r < 20; r++) deframe_split(wire, total, lens, n, 0);
  free(wire);
}

static void test_zero_length(void) {
  grpc_deframer d;
  uint8_t w[10] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  size_t used;
  grpc_msg m;
  grpc_deframer_init(&d, 100);
  CHECK_EQ_INT(grpc_deframer_feed(&d, w, 10, &used, &m), GRPC_DEFRAME_MESSAGE);
  CHECK_EQ_INT(used, 5);
  CHECK_EQ_INT(m.len, 0);
  CHECK_EQ_INT(grpc_deframer_feed(&d, w + 5, 5, &used, &m),
               GRPC_DEFRAME_MESSAGE);
  CHECK_EQ_INT(m.len, 0);
  CHECK_EQ_INT(grpc_deframer_feed(&d, w, 0, &used, &m),
               GRPC_DEFRAME_NEED_MORE);
  CHECK(!grpc_deframer_partial(&d));
  grpc_deframer_free(&d);
}

static void test_oversize(void) {
  grpc_deframer d;
  /* Announces 4 GiB - 1: must be refused from the prefix alone, with no
   * allocation (d.buf stays NULL). */
  uint8_t w[5] = {0, 0xff, 0xff, 0xff, 0xff};
  size_t used;
  grpc_msg m;
  grpc_deframer_init(&d, 64u << 20);
  CHECK_EQ_INT(grpc_deframer_feed(&d, w, 3, &used, &m),
               GRPC_DEFRAME_NEED_MORE);
  CHECK_EQ_INT(grpc_deframer_feed(&d, w + 3, 2, &used, &m),
               GRPC_DEFRAME_TOO_LARGE);
  CHECK(d.buf == NULL);
  CHECK_EQ_INT(d.bad_len, 0xffffffffULL);
  grpc_deframer_free(&d);

  /* Exactly at the limit is fine; one above is not. */
  uint8_t w2[5 + 16];
  grpc_prefix_put(w2, 16);
  memset(w2 + 5, 7, 16);
  grpc_deframer_init(&d, 16);
  CHECK_EQ_INT(grpc_deframer_feed(&d, w2, 8, &used, &m),
               GRPC_DEFRAME_NEED_MORE);
  CHECK(d.buf != NULL);
  CHECK_EQ_INT(grpc_deframer_feed(&d, w2 + 8, 13, &used, &m),
               GRPC_DEFRAME_MESSAGE);
  CHECK_EQ_INT(m.len, 16);
  uint8_t *stolen = grpc_deframer_steal(&d);
  CHECK(stolen != NULL && stolen[15] == 7);
  free(stolen);
  grpc_deframer_free(&d);
  grpc_prefix_put(w2, 17);
  grpc_deframer_init(&d, 16);
  CHECK_EQ_INT(grpc_deframer_feed(&d, w2, 5, &used, &m),
               GRPC_DEFRAME_TOO_LARGE);
  CHECK_EQ_INT(d.bad_len, 17);
  grpc_deframer_free(&d);
}

static void test_flags(void) {
  grpc_deframer d;
  uint8_t w[7] = {1, 0, 0, 0, 2, 0xaa, 0xbb};
  size_t used;
  grpc_msg m;
  grpc_deframer_init(&d, 100);
  CHECK_EQ_INT(grpc_deframer_feed(&d, w, 7, &used, &m), GRPC_DEFRAME_MESSAGE);
  CHECK_EQ_INT(m.compressed, 1);
  CHECK_EQ_INT(m.len, 2);
  grpc_deframer_free(&d);
  w[0] = 2;
  grpc_deframer_init(&d, 100);
  CHECK_EQ_INT(grpc_deframer_feed(&d, w, 7, &used, &m), GRPC_DEFRAME_BAD_FLAG);
  grpc_deframer_free(&d);
}

static uint64_t tmo(const char *s) {
  uint64_t ns = 12345;
  if (grpc_timeout_parse(s, strlen(s), &ns) != 0) return (uint64_t)-2;
  return ns;
}

static void test_timeout(void) {
  CHECK_EQ_INT(tmo("100m"), 100000000ULL);
  CHECK_EQ_INT(tmo("5S"), 5000000000ULL);
  CHECK_EQ_INT(tmo("1H"), 3600000000000ULL);
  CHECK_EQ_INT(tmo("2M"), 120000000000ULL);
  CHECK_EQ_INT(tmo("250u"), 250000ULL);
  CHECK_EQ_INT(tmo("10n"), 10ULL);
  CHECK_EQ_INT(tmo("0m"), 0ULL);
  CHECK_EQ_INT(tmo("99999999S"), 99999999000000000ULL);
  CHECK(tmo("99999999H") == UINT64_MAX); /* saturates */
  CHECK_EQ_INT(tmo("123456789S"), (uint64_t)-2); /* 9 digits */
  CHECK_EQ_INT(tmo(""), (uint64_t)-2);
  CHECK_EQ_INT(tmo("m"), (uint64_t)-2);
  CHECK_EQ_INT(tmo("10"), (uint64_t)-2);
  CHECK_EQ_INT(tmo("10x"), (uint64_t)-2);
  CHECK_EQ_INT(tmo("-1S"), (uint64_t)-2);
  CHECK_EQ_INT(tmo(" 1S"), (uint64_t)-2);
  CHECK_EQ_INT(tmo("1.5S"), (uint64_t)-2);
  CHECK_EQ_INT(tmo("1s"), (uint64_t)-2);
}

static void test_percent(void) {
  char enc[256], dec[256];
  const char *s = "bad \"x\" at 100%\n\xc3\xa9t\xc3\xa9";
  size_t n = grpc_percent_encode(s, strlen(s), enc, sizeof enc);
  CHECK_EQ_STR(enc, "bad \"x\" at 100%25%0A%C3%A9t%C3%A9");
  CHECK_EQ_INT(n, strlen(enc));
  grpc_percent_decode(enc, n, dec, sizeof dec);
  CHECK_EQ_STR(dec, s);
  /* Every byte value round-trips. */
  char all[256], enc2[800], dec2[260];
  for (int i = 0; i < 255; i++) all[i] = (char)(i + 1);
  size_t e2 = grpc_percent_encode(all, 255, enc2, sizeof enc2);
  for (size_t i = 0; i < e2; i++)
    CHECK(enc2[i] >= 0x20 && enc2[i] <= 0x7e);
  CHECK_EQ_INT(grpc_percent_decode(enc2, e2, dec2, sizeof dec2), 255);
  CHECK(memcmp(all, dec2, 255) == 0);
  /* Truncation never splits an escape. */
  char small[6];
  grpc_percent_encode("ab\ncd", 5, small, sizeof small);
  CHECK_EQ_STR(small, "ab%0A");
  grpc_percent_encode("abc\n", 4, small, sizeof small);
  CHECK_EQ_STR(small, "abc");
  /* Invalid escapes are kept. */
  grpc_percent_decode("%zz%4", 5, dec, sizeof dec);
  CHECK_EQ_STR(dec, "%zz%4");
}

static void test_content_type(void) {
#define CT(s) grpc_content_type_ok(s, strlen(s))
  CHECK(CT("application/grpc"));
  CHECK(CT("application/grpc+proto"));
  CHECK(CT("application/grpc;charset=utf-8"));
  CHECK(!CT("application/grpcx"));
  CHECK(!CT("application/json"));
  CHECK(!CT("application/grp"));
  CHECK(!CT(""));
}

static void test_pbw(void) {
  /* {1: "ab", 2: 300 (varint), 3: fixed32 7} */
  const uint8_t m[] = {0x0a, 2, 'a', 'b', 0x10, 0xac, 0x02, 0x1d, 7, 0, 0, 0};
  pbw_reader r;
  pbw_field f;
  pbw_init(&r, m, sizeof m);
  CHECK_EQ_INT(pbw_next(&r, &f), 1);
  CHECK(f.num == 1 && f.wire_type == 2 && f.len == 2 && f.data[0] == 'a');
  CHECK_EQ_INT(pbw_next(&r, &f), 1);
  CHECK(f.num == 2 && f.varint == 300);
  CHECK_EQ_INT(pbw_next(&r, &f), 1);
  CHECK(f.num == 3 && f.varint == 7);
  CHECK_EQ_INT(pbw_next(&r, &f), 0);
  /* Truncated length-delimited field. */
  const uint8_t bad[] = {0x0a, 5, 'a'};
  pbw_init(&r, bad, sizeof bad);
  CHECK_EQ_INT(pbw_next(&r, &f), -1);
  uint8_t v[10];
  CHECK_EQ_INT(pbw_put_varint(v, 300), 2);
  CHECK(v[0] == 0xac && v[1] == 0x02);
}

int main(void) {
  srand(42);
  test_deframer();
  test_zero_length();
  test_oversize();
  test_flags();
  test_timeout();
  test_percent();
  test_content_type();
  test_pbw();
  return check_report("grpc_wire");
}
