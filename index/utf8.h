/* utf8.h - UTF-8 validation and boundary helpers (strict: no overlongs, no
 * surrogates, nothing above U+10FFFF). */
#ifndef CTXD_UTF8_H
#define CTXD_UTF8_H

#include <stddef.h>

/* Return 1 if s[0..n) is valid UTF-8. Otherwise return 0 and, when
 * `bad_offset` is non-NULL, store the byte offset of the first byte of the
 * first invalid or truncated sequence. */
int utf8_valid(const char *s, size_t n, size_t *bad_offset);

/* Largest offset <= pos that starts a character (or equals n) in valid
 * UTF-8 s[0..n). */
size_t utf8_floor(const char *s, size_t n, size_t pos);

#endif
