/* test_grpc_wire.c - the gRPC message deframer, request decompression,
 * grpc-timeout parsing, grpc-message percent-encoding, content-type check,
 * protobuf reader. */
#include "../check.h"
#include "grpc_wire.h"

#include <stdint.h>
#include <stdlib.h>
#include <zlib.h>

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

/* Compress in[0..n) as gRPC's gzip (windowBits 31) or deflate (zlib
 * format, windowBits 15). Returns a malloc'd buffer of *out_len bytes. */
static uint8_t *zpack(int enc, const uint8_t *in, size_t n, size_t *out_len) {
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  if (deflateInit2(&zs, 9, Z_DEFLATED, enc == GRPC_ENC_GZIP ? 31 : 15, 8,
                   Z_DEFAULT_STRATEGY) != Z_OK)
    return NULL;
  size_t cap = deflateBound(&zs, (uLong)n);
  uint8_t *out = malloc(cap);
  zs.next_in = (Bytef *)(uintptr_t)in;
  zs.avail_in = (uInt)n;
  zs.next_out = out;
  zs.avail_out = (uInt)cap;
  int rc = deflate(&zs, Z_FINISH);
  *out_len = cap - zs.avail_out;
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) {
    free(out);
    return NULL;
  }
  return out;
}

/* Inflate and compare with `want`; returns the grpc_inflate code. */
static int unpack_eq(int enc, const uint8_t *z, size_t zn, uint64_t limit,
                     const uint8_t *want, size_t wn) {
  uint8_t *out = (uint8_t *)"sentinel";
  size_t out_len = 12345;
  int rc = grpc_inflate(enc, z, zn, limit, &out, &out_len);
  if (rc == GRPC_INFLATE_OK) {
    CHECK_EQ_INT(out_len, wn);
    CHECK(out_len == wn && (wn == 0 || memcmp(out, want, wn) == 0));
    CHECK(wn > 0 || out == NULL);
    free(out);
  } else {
    CHECK(out == NULL);
    CHECK_EQ_INT(out_len, 0);
  }
  return rc;
}

static void test_encoding_parse(void) {
#define ENC(s) grpc_encoding_parse(s, strlen(s))
  CHECK_EQ_INT(ENC(""), GRPC_ENC_IDENTITY);
  CHECK_EQ_INT(ENC("identity"), GRPC_ENC_IDENTITY);
  CHECK_EQ_INT(ENC("gzip"), GRPC_ENC_GZIP);
  CHECK_EQ_INT(ENC("deflate"), GRPC_ENC_DEFLATE);
  CHECK_EQ_INT(ENC("snappy"), GRPC_ENC_UNKNOWN);
  CHECK_EQ_INT(ENC("GZIP"), GRPC_ENC_UNKNOWN);
  CHECK_EQ_INT(ENC("gzip "), GRPC_ENC_UNKNOWN);
  CHECK_EQ_INT(ENC("identity,gzip"), GRPC_ENC_UNKNOWN);
#undef ENC
}

static void test_inflate(void) {
  /* 300 KiB of compressible text with some variety, both encodings, with
   * a limit above, exactly at and one below the inflated size. */
  size_t n = 300u << 10;
  uint8_t *text = malloc(n);
  for (size_t i = 0; i < n; i++)
    text[i] = (uint8_t)("the quick brown fox "[i % 20] + (i / 4099) % 3);
  static const int encs[] = {GRPC_ENC_GZIP, GRPC_ENC_DEFLATE};
  for (int e = 0; e < 2; e++) {
    size_t zn;
    uint8_t *z = zpack(encs[e], text, n, &zn);
    CHECK(z != NULL && zn < n / 10);
    CHECK_EQ_INT(unpack_eq(encs[e], z, zn, 64u << 20, text, n),
                 GRPC_INFLATE_OK);
    CHECK_EQ_INT(unpack_eq(encs[e], z, zn, n, text, n), GRPC_INFLATE_OK);
    CHECK_EQ_INT(unpack_eq(encs[e], z, zn, n - 1, text, n),
                 GRPC_INFLATE_TOO_LARGE);
    /* The other wrapper is not accepted. */
    CHECK_EQ_INT(unpack_eq(encs[1 - e], z, zn, 64u << 20, text, n),
                 GRPC_INFLATE_CORRUPT);
    /* Identity / unknown are not inflate's business. */
    CHECK_EQ_INT(unpack_eq(GRPC_ENC_IDENTITY, z, zn, 64u << 20, text, n),
                 GRPC_INFLATE_CORRUPT);
    CHECK_EQ_INT(unpack_eq(GRPC_ENC_UNKNOWN, z, zn, 64u << 20, text, n),
                 GRPC_INFLATE_CORRUPT);
    free(z);

    /* A tiny message (smaller than the first buffer). */
    z = zpack(encs[e], (const uint8_t *)"hello", 5, &zn);
    CHECK_EQ_INT(unpack_eq(encs[e], z, zn, 1024, (const uint8_t *)"hello", 5),
                 GRPC_INFLATE_OK);
    free(z);
  }
  free(text);
}

static void test_inflate_empty(void) {
  size_t zn;
  for (int e = GRPC_ENC_DEFLATE; e <= GRPC_ENC_GZIP; e++) {
    /* A compressed empty message, and an empty payload. */
    uint8_t *z = zpack(e, (const uint8_t *)"", 0, &zn);
    CHECK(z != NULL && zn > 0);
    CHECK_EQ_INT(unpack_eq(e, z, zn, 1024, NULL, 0), GRPC_INFLATE_OK);
    CHECK_EQ_INT(unpack_eq(e, z, zn, 0, NULL, 0), GRPC_INFLATE_OK);
    CHECK_EQ_INT(unpack_eq(e, (const uint8_t *)"", 0, 1024, NULL, 0),
                 GRPC_INFLATE_OK);
    free(z);
  }
  /* A limit of 0: one byte is already too many. */
  uint8_t *z = zpack(GRPC_ENC_GZIP, (const uint8_t *)"x", 1, &zn);
  CHECK_EQ_INT(unpack_eq(GRPC_ENC_GZIP, z, zn, 0, NULL, 0),
               GRPC_INFLATE_TOO_LARGE);
  free(z);
}

static void test_inflate_corrupt(void) {
  size_t n = 100000, zn;
  uint8_t *text = malloc(n);
  for (size_t i = 0; i < n; i++) text[i] = (uint8_t)(rand() % 16 + 'a');
  for (int e = GRPC_ENC_DEFLATE; e <= GRPC_ENC_GZIP; e++) {
    uint8_t *z = zpack(e, text, n, &zn);
    CHECK(z != NULL);
    /* Truncated anywhere, including right after the header. */
    static const size_t cuts[] = {1, 2, 10, 50, 1000};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
      CHECK_EQ_INT(unpack_eq(e, z, cuts[i], 1u << 20, text, n),
                   GRPC_INFLATE_CORRUPT);
    CHECK_EQ_INT(unpack_eq(e, z, zn - 1, 1u << 20, text, n),
                 GRPC_INFLATE_CORRUPT);
    /* Checksum flipped (adler32 / crc32+size sit at the end). */
    uint8_t *bad = malloc(zn + 3);
    memcpy(bad, z, zn);
    bad[zn - (e == GRPC_ENC_GZIP ? 6 : 2)] ^= 0x55;
    CHECK_EQ_INT(unpack_eq(e, bad, zn, 1u << 20, text, n),
                 GRPC_INFLATE_CORRUPT);
    /* Trailing bytes after a complete stream. */
    memcpy(bad, z, zn);
    memcpy(bad + zn, "abc", 3);
    CHECK_EQ_INT(unpack_eq(e, bad, zn + 3, 1u << 20, text, n),
                 GRPC_INFLATE_CORRUPT);
    /* Damage in the middle: never a crash, never a wrong OK. */
    int wrong = 0;
    for (int r = 0; r < 200; r++) {
      memcpy(bad, z, zn);
      bad[(size_t)rand() % zn] ^= (uint8_t)(1 + rand() % 255);
      uint8_t *out;
      size_t out_len;
      int rc = grpc_inflate(e, bad, zn, 1u << 20, &out, &out_len);
      if (rc == GRPC_INFLATE_OK && (out_len != n || memcmp(out, text, n) != 0))
        wrong++;
      if (rc != GRPC_INFLATE_OK && rc != GRPC_INFLATE_CORRUPT) wrong++;
      free(out);
    }
    CHECK_EQ_INT(wrong, 0);
    free(bad);
    free(z);
  }
  /* Random garbage and plain text are not streams. */
  CHECK_EQ_INT(unpack_eq(GRPC_ENC_GZIP, text, 1000, 1u << 20, NULL, 0),
               GRPC_INFLATE_CORRUPT);
  CHECK_EQ_INT(unpack_eq(GRPC_ENC_DEFLATE, text, 1000, 1u << 20, NULL, 0),
               GRPC_INFLATE_CORRUPT);
  free(text);
}

/* A bomb: 64 MiB of zeros compress to ~64 KiB; with a 1 MiB limit the
 * inflater stops at the limit (no 64 MiB buffer). */
static void test_inflate_bomb(void) {
  size_t n = 64u << 20, zn;
  uint8_t *zeros = calloc(1, n);
  for (int e = GRPC_ENC_DEFLATE; e <= GRPC_ENC_GZIP; e++) {
    uint8_t *z = zpack(e, zeros, n, &zn);
    CHECK(z != NULL && zn < 128u << 10);
    CHECK_EQ_INT(unpack_eq(e, z, zn, 1u << 20, NULL, 0),
                 GRPC_INFLATE_TOO_LARGE);
    CHECK_EQ_INT(unpack_eq(e, z, zn, n - 1, NULL, 0), GRPC_INFLATE_TOO_LARGE);
    CHECK_EQ_INT(unpack_eq(e, z, zn, n, zeros, n), GRPC_INFLATE_OK);
    free(z);
  }
  free(zeros);
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

static int last_len(void *arg, const pbw_field *f) {
  *(size_t *)arg = f->len;
  return 0;
}

static int stop_at_first(void *arg, const pbw_field *f) {
  (void)f;
  ++*(int *)arg;
  return 1;
}

/* pbw_walk / pbw_count: nested paths, every occurrence of a submessage
 * visited, malformed input along the path refused. */
static void test_pbw_walk(void) {
  /* {1: {5: "", 5: "x", 3: ""}, 2: "zz", 1: {5: ""}, 8: "", 8: ""} */
  const uint8_t m[] = {0x0a, 7,    0x2a, 0, 0x2a, 1,    'x', 0x1a, 0,
                       0x12, 2,    'z',  'z', 0x0a, 2, 0x2a, 0,    0x42,
                       0,    0x42, 0};
  const uint32_t chunks[] = {1, 5}, meta[] = {1, 3}, ids[] = {8},
                 none[] = {4}, deep[] = {2, 1};
  CHECK_EQ_INT(pbw_count(m, sizeof m, chunks, 2), 3);
  CHECK_EQ_INT(pbw_count(m, sizeof m, meta, 2), 1);
  CHECK_EQ_INT(pbw_count(m, sizeof m, ids, 1), 2);
  CHECK_EQ_INT(pbw_count(m, sizeof m, none, 1), 0);
  /* field 2 holds "zz": read as a message it is malformed */
  CHECK_EQ_INT(pbw_count(m, sizeof m, deep, 2), -1);
  size_t len = 99;
  CHECK_EQ_INT(pbw_walk(m, sizeof m, chunks, 2, last_len, &len), 0);
  CHECK_EQ_INT(len, 0); /* the last occurrence: the second submessage's */
  int calls = 0;
  CHECK_EQ_INT(pbw_walk(m, sizeof m, chunks, 2, stop_at_first, &calls), 0);
  CHECK_EQ_INT(calls, 1);
  /* a field that is a varint where a submessage is expected */
  const uint8_t v1[] = {0x08, 1};
  CHECK_EQ_INT(pbw_count(v1, sizeof v1, chunks, 2), -1);
  const uint8_t trunc[] = {0x0a, 4, 0x2a, 0};
  CHECK_EQ_INT(pbw_count(trunc, sizeof trunc, chunks, 2), -1);
  CHECK_EQ_INT(pbw_count(m, 0, ids, 1), 0);
}

int main(void) {
  srand(42);
  test_deframer();
  test_zero_length();
  test_oversize();
  test_flags();
  test_encoding_parse();
  test_inflate();
  test_inflate_empty();
  test_inflate_corrupt();
  test_inflate_bomb();
  test_timeout();
  test_percent();
  test_content_type();
  test_pbw();
  test_pbw_walk();
  return check_report("grpc_wire");
}
