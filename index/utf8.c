/* utf8.c - strict UTF-8 validation (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF) and character-boundary helpers. Every document
 * passes through utf8_valid() on ingest, so ASCII runs are checked eight
 * bytes at a time. */
#include "utf8.h"

#include <stdint.h>
#include <string.h>

#define UTF8_HIGH_BITS 0x8080808080808080ULL

/* Offset of the first non-ASCII byte in s[i..n), or n. Eight bytes per step:
 * prose is mostly ASCII, and this loop is what makes ingest cheap. */
static size_t skip_ascii(const unsigned char *s, size_t i, size_t n) {
  while (i + 16 <= n) {
    uint64_t a, b;
    memcpy(&a, s + i, 8);
    memcpy(&b, s + i + 8, 8);
    if ((a | b) & UTF8_HIGH_BITS)
      break;
    i += 16;
  }
  while (i + 8 <= n) {
    uint64_t a;
    memcpy(&a, s + i, 8);
    if (a & UTF8_HIGH_BITS)
      break;
    i += 8;
  }
  while (i < n && s[i] < 0x80)
    i++;
  return i;
}

/* Length of the valid sequence starting at s[i] (a non-ASCII byte), or 0
 * when it is invalid or truncated. The second-byte ranges exclude overlongs
 * (E0 80..9F, F0 80..8F), surrogates (ED A0..BF) and values past U+10FFFF
 * (F4 90..BF); C0, C1 and F5..FF never start a sequence. */
static size_t seq_len(const unsigned char *s, size_t i, size_t n) {
  unsigned char b0 = s[i];
  unsigned char lo = 0x80, hi = 0xBF;
  size_t len;

  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0)
      lo = 0xA0;
    else if (b0 == 0xED)
      hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0)
      lo = 0x90;
    else if (b0 == 0xF4)
      hi = 0x8F;
  } else {
    return 0;
  }
  if (n - i < len)
    return 0;
  if (s[i + 1] < lo || s[i + 1] > hi)
    return 0;
  for (size_t k = 2; k < len; k++)
    if ((s[i + k] & 0xC0) != 0x80)
      return 0;
  return len;
}

int utf8_valid(const char *str, size_t n, size_t *bad_offset) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;

  for (;;) {
    i = skip_ascii(s, i, n);
    if (i >= n)
      return 1;
    /* Non-ASCII text (CJK, Cyrillic) stays in this inner loop rather than
     * paying for a failed eight-byte probe after every character. */
    while (i < n && s[i] >= 0x80) {
      size_t len = seq_len(s, i, n);
      if (len == 0) {
        if (bad_offset)
          *bad_offset = i;
        return 0;
      }
      i += len;
    }
  }
}

size_t utf8_floor(const char *str, size_t n, size_t pos) {
  const unsigned char *s = (const unsigned char *)str;

  if (pos >= n)
    return n;
  /* In valid UTF-8 a character has at most three continuation bytes. */
  for (int k = 0; k < 3 && pos > 0 && (s[pos] & 0xC0) == 0x80; k++)
    pos--;
  return pos;
}
