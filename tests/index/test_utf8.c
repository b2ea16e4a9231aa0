/* test_utf8.c - the strict UTF-8 validator and utf8_floor: every invalid
 * class at many offsets (so both the 8-byte ASCII path and the byte path are
 * hit), and a randomized comparison with a slow reference decoder. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "utf8.h"

/* Reference: decode one code point the slow, obvious way. Returns the
 * sequence length or 0 if invalid. */
static size_t ref_seq(const unsigned char *s, size_t n) {
  size_t len;
  uint32_t cp, min;
  if (s[0] < 0x80)
    return 1;
  if ((s[0] & 0xE0) == 0xC0) {
    len = 2; cp = s[0] & 0x1F; min = 0x80;
  } else if ((s[0] & 0xF0) == 0xE0) {
    len = 3; cp = s[0] & 0x0F; min = 0x800;
  } else if ((s[0] & 0xF8) == 0xF0) {
    len = 4; cp = s[0] & 0x07; min = 0x10000;
  } else {
    return 0;
  }
  if (n < len)
    return 0;
  for (size_t k = 1; k < len; k++) {
    if ((s[k] & 0xC0) != 0x80)
      return 0;
    cp = (cp << 6) | (s[k] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return 0;
  return len;
}

static int ref_valid(const unsigned char *s, size_t n, size_t *bad) {
  size_t i = 0;
  while (i < n) {
    size_t l = ref_seq(s + i, n - i);
    if (!l) {
      *bad = i;
      return 0;
    }
    i += l;
  }
  return 1;
}

struct bad_case {
  const char *name;
  const char *bytes;
  size_t len;
};

#define BC(name, lit) {name, lit, sizeof(lit) - 1}

static const struct bad_case bad_cases[] = {
    BC("lone continuation", "\x80"),
    BC("lone continuation BF", "\xBF"),
    BC("overlong 2-byte C0", "\xC0\x80"),
    BC("overlong 2-byte C1", "\xC1\xBF"),
    BC("overlong 3-byte", "\xE0\x80\x80"),
    BC("overlong 3-byte top", "\xE0\x9F\xBF"),
    BC("surrogate D800", "\xED\xA0\x80"),
    BC("surrogate DFFF", "\xED\xBF\xBF"),
    BC("overlong 4-byte", "\xF0\x80\x80\x80"),
    BC("overlong 4-byte top", "\xF0\x8F\xBF\xBF"),
    BC("above U+10FFFF", "\xF4\x90\x80\x80"),
    BC("F5 lead", "\xF5\x80\x80\x80"),
    BC("FE", "\xFE"),
    BC("FF", "\xFF"),
    BC("truncated 2-byte at end", "\xC3"),
    BC("truncated 3-byte at end", "\xE2\x82"),
    BC("truncated 4-byte at end", "\xF0\x9F\x98"),
    BC("3-byte cut by ASCII", "\xE2\x82" "A"),
    BC("4-byte cut by ASCII", "\xF0\x9F" "AB"),
    BC("2-byte followed by lead", "\xC3\xC3\xA9"),
};

static void test_valid_cases(void) {
  const char *good[] = {
      "",
      "plain ascii text that is longer than sixteen bytes, for the fast path",
      "\x7F",
      "\xC2\x80",             /* U+0080 */
      "\xDF\xBF",             /* U+07FF */
      "\xE0\xA0\x80",         /* U+0800 */
      "\xED\x9F\xBF",         /* U+D7FF, just below the surrogates */
      "\xEE\x80\x80",         /* U+E000, just above */
      "\xEF\xBF\xBF",         /* U+FFFF */
      "\xF0\x90\x80\x80",     /* U+10000 */
      "\xF4\x8F\xBF\xBF",     /* U+10FFFF */
      "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x98\x80 end",
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E", /* only multibyte characters */
  };
  for (size_t k = 0; k < sizeof good / sizeof good[0]; k++) {
    size_t off = 12345;
    CHECK_EQ_INT(utf8_valid(good[k], strlen(good[k]), &off), 1);
    CHECK_EQ_INT(off, 12345); /* untouched on success */
  }
  /* NUL bytes are valid UTF-8 (U+0000); length, not strlen, counts. */
  CHECK_EQ_INT(utf8_valid("a\0b", 3, NULL), 1);
}

/* Each invalid class behind 0..40 bytes of prefix (ASCII or multibyte) and
 * followed by more text: the offset must be exactly the prefix length. */
static void test_invalid_cases(void) {
  char buf[256];
  for (size_t c = 0; c < sizeof bad_cases / sizeof bad_cases[0]; c++) {
    for (size_t pre = 0; pre <= 40; pre++) {
      for (int mb = 0; mb < 2; mb++) {
        size_t n = 0;
        if (mb) { /* prefix of 2-byte characters plus ASCII padding */
          while (n + 2 <= pre) {
            buf[n++] = (char)0xC3;
            buf[n++] = (char)0xA9;
          }
        }
        while (n < pre)
          buf[n++] = 'x';
        memcpy(buf + n, bad_cases[c].bytes, bad_cases[c].len);
        size_t total = n + bad_cases[c].len;
        int truncated_at_end = strstr(bad_cases[c].name, "at end") != NULL;
        if (!truncated_at_end) {
          memcpy(buf + total, " and then some more ascii text", 30);
          total += 30;
        }
        size_t off = 99999;
        int v = utf8_valid(buf, total, &off);
        CHECK_EQ_INT(v, 0);
        if (off != pre)
          fprintf(stderr, "case %s prefix %zu mb %d\n", bad_cases[c].name, pre, mb);
        CHECK_EQ_INT(off, pre);
        CHECK_EQ_INT(utf8_valid(buf, total, NULL), 0);
      }
    }
  }
}

static void test_floor(void) {
  /* "a" "é" "日" "😀" "b": offsets 0 1 3 6 10, length 11 */
  const char *s = "a\xC3\xA9\xE6\x97\xA5\xF0\x9F\x98\x80" "b";
  size_t n = strlen(s);
  size_t want[] = {0, 1, 1, 3, 3, 3, 6, 6, 6, 6, 10, 11, 11};
  for (size_t p = 0; p <= n + 1; p++)
    CHECK_EQ_INT(utf8_floor(s, n, p), want[p]);
}

/* Random bytes biased towards UTF-8-ish sequences, checked against the
 * reference decoder. Fixed seed: failures reproduce. */
static void test_random(void) {
  unsigned char buf[96];
  uint32_t x = 12345;
  static const unsigned char pool[] = {'a', ' ', '\n', 0x80, 0x8F, 0x90, 0x9F, 0xA0,
                                       0xBF, 0xC0, 0xC2, 0xDF, 0xE0, 0xED, 0xEF,
                                       0xF0, 0xF4, 0xF5, 0xFF};
  int mismatches = 0;
  for (int iter = 0; iter < 200000; iter++) {
    x = x * 1103515245u + 12345u;
    size_t n = (x >> 16) % sizeof buf;
    for (size_t k = 0; k < n; k++) {
      x = x * 1103515245u + 12345u;
      unsigned r = x >> 16;
      buf[k] = (r & 3) ? pool[(r >> 2) % sizeof pool] : (unsigned char)(r >> 8);
      if ((r & 0x70) == 0) /* long ASCII stretches too */
        buf[k] = 'q';
    }
    size_t b1 = 0, b2 = 0;
    int v1 = utf8_valid((const char *)buf, n, &b1);
    int v2 = ref_valid(buf, n, &b2);
    if (v1 != v2 || (!v1 && b1 != b2))
      mismatches++;
  }
  CHECK_EQ_INT(mismatches, 0);
}

int main(void) {
  test_valid_cases();
  test_invalid_cases();
  test_floor();
  test_random();
  return check_report("utf8");
}
