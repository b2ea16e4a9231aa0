/* grpc_wire.c - gRPC message framing, request decompression, grpc-timeout
 * and grpc-message text. */
#include "grpc_wire.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

void grpc_deframer_init(grpc_deframer *d, uint64_t limit) {
  memset(d, 0, sizeof *d);
  d->limit = limit;
}

void grpc_deframer_free(grpc_deframer *d) {
  free(d->buf);
  d->buf = NULL;
  d->hdr_have = d->have = d->len = 0;
}

uint8_t *grpc_deframer_steal(grpc_deframer *d) {
  uint8_t *b = d->buf;
  d->buf = NULL;
  return b;
}

int grpc_deframer_partial(const grpc_deframer *d) {
  /* A prefix cut short, or a message still gathering; a message handed
   * out (prefix complete, have == len) is not partial. */
  return d->hdr_have > 0 &&
         (d->hdr_have < GRPC_PREFIX_LEN || d->have < d->len);
}

int grpc_deframer_feed(grpc_deframer *d, const uint8_t *data, size_t n,
                       size_t *used, grpc_msg *out) {
  size_t pos = 0;

  /* A message handed out last time is finished: forget it. */
  if (d->hdr_have == GRPC_PREFIX_LEN && d->have == d->len) {
    free(d->buf);
    d->buf = NULL;
    d->hdr_have = 0;
    d->have = d->len = 0;
  }
  while (d->hdr_have < GRPC_PREFIX_LEN && pos < n)
    d->hdr[d->hdr_have++] = data[pos++];
  if (d->hdr_have < GRPC_PREFIX_LEN) {
    *used = pos;
    return GRPC_DEFRAME_NEED_MORE;
  }
  if (d->have == 0 && d->buf == NULL) {
    /* Prefix just completed (or a message is being gathered with 0 bytes
     * so far): validate it before anything is allocated. */
    uint64_t len = ((uint64_t)d->hdr[1] << 24) | ((uint64_t)d->hdr[2] << 16) |
                   ((uint64_t)d->hdr[3] << 8) | d->hdr[4];
    if (d->hdr[0] > 1) {
      *used = pos;
      return GRPC_DEFRAME_BAD_FLAG;
    }
    if (len > d->limit) {
      d->bad_len = len;
      *used = pos;
      return GRPC_DEFRAME_TOO_LARGE;
    }
    d->compressed = d->hdr[0];
    d->len = (size_t)len;
    if (n - pos >= d->len) {
      /* Whole message in this chunk: return it in place. */
      out->data = data + pos;
      out->len = d->len;
      out->compressed = d->compressed;
      d->have = d->len;
      *used = pos + d->len;
      return GRPC_DEFRAME_MESSAGE;
    }
    d->buf = malloc(d->len);
    if (!d->buf) {
      *used = pos;
      return GRPC_DEFRAME_NOMEM;
    }
  }
  size_t take = d->len - d->have;
  if (take > n - pos) take = n - pos;
  memcpy(d->buf + d->have, data + pos, take);
  d->have += take;
  pos += take;
  *used = pos;
  if (d->have < d->len) return GRPC_DEFRAME_NEED_MORE;
  out->data = d->buf;
  out->len = d->len;
  out->compressed = d->compressed;
  return GRPC_DEFRAME_MESSAGE;
}

int grpc_encoding_parse(const char *s, size_t n) {
  if (n == 0 || (n == 8 && memcmp(s, "identity", 8) == 0))
    return GRPC_ENC_IDENTITY;
  if (n == 4 && memcmp(s, "gzip", 4) == 0) return GRPC_ENC_GZIP;
  if (n == 7 && memcmp(s, "deflate", 7) == 0) return GRPC_ENC_DEFLATE;
  return GRPC_ENC_UNKNOWN;
}

#define INFLATE_FIRST_CAP 4096

int grpc_inflate(int enc, const uint8_t *in, size_t n, uint64_t limit,
                 uint8_t **out, size_t *out_len) {
  z_stream zs;
  uint8_t *buf = NULL, spill;
  size_t cap = 0, have = 0;
  int rc, zrc;

  *out = NULL;
  *out_len = 0;
  if (enc != GRPC_ENC_DEFLATE && enc != GRPC_ENC_GZIP)
    return GRPC_INFLATE_CORRUPT;
  if (n == 0) return GRPC_INFLATE_OK;
  /* Messages come from a 32-bit length prefix, so this holds; avail_in is
   * a uInt. */
  if (n > UINT_MAX) return GRPC_INFLATE_CORRUPT;
  if (limit > SIZE_MAX) limit = SIZE_MAX;
  memset(&zs, 0, sizeof zs);
  /* 15: the largest window; +16: gzip wrapper only, not zlib. */
  zrc = inflateInit2(&zs, enc == GRPC_ENC_GZIP ? 15 + 16 : 15);
  if (zrc != Z_OK)
    return zrc == Z_MEM_ERROR ? GRPC_INFLATE_NOMEM : GRPC_INFLATE_CORRUPT;
  zs.next_in = (Bytef *)(uintptr_t)in;
  zs.avail_in = (uInt)n;
  for (;;) {
    int spilling = 0;
    if (have == cap && cap < limit) {
      /* Grow by doubling, starting near the input size, never past the
       * limit: memory follows what inflate really produces. */
      size_t ncap =
          cap ? cap * 2
              : (n < INFLATE_FIRST_CAP / 2 ? INFLATE_FIRST_CAP : n * 2);
      if (ncap < cap || ncap > limit) ncap = (size_t)limit;
      uint8_t *nb = realloc(buf, ncap);
      if (!nb) {
        rc = GRPC_INFLATE_NOMEM;
        goto fail;
      }
      buf = nb;
      cap = ncap;
    }
    if (have < cap) {
      size_t room = cap - have;
      zs.next_out = buf + have;
      zs.avail_out = room > UINT_MAX ? UINT_MAX : (uInt)room;
    } else {
      /* Full at the limit: inflate into one spare byte to learn whether
       * the stream ends here or holds more than the limit allows. */
      spilling = 1;
      zs.next_out = &spill;
      zs.avail_out = 1;
    }
    uInt before = zs.avail_out;
    zrc = inflate(&zs, Z_NO_FLUSH);
    if (spilling) {
      if (zs.avail_out == 0) {
        rc = GRPC_INFLATE_TOO_LARGE;
        goto fail;
      }
    } else {
      have += before - zs.avail_out;
    }
    if (zrc == Z_STREAM_END) break;
    if (zrc == Z_OK) continue;
    /* Z_BUF_ERROR with output room left: the input ran out mid-stream. */
    if (zrc == Z_BUF_ERROR && zs.avail_out == 0) continue;
    rc = zrc == Z_MEM_ERROR ? GRPC_INFLATE_NOMEM : GRPC_INFLATE_CORRUPT;
    goto fail;
  }
  if (zs.avail_in != 0) { /* bytes after the end of the stream */
    rc = GRPC_INFLATE_CORRUPT;
    goto fail;
  }
  inflateEnd(&zs);
  if (have == 0) {
    free(buf);
    buf = NULL;
  }
  *out = buf;
  *out_len = have;
  return GRPC_INFLATE_OK;
fail:
  inflateEnd(&zs);
  free(buf);
  return rc;
}

int grpc_timeout_parse(const char *s, size_t n, uint64_t *ns) {
  uint64_t v = 0, mul;
  if (n < 2 || n > 9) return -1;
  for (size_t i = 0; i + 1 < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  switch (s[n - 1]) {
    case 'H': mul = 3600ULL * 1000000000ULL; break;
    case 'M': mul = 60ULL * 1000000000ULL; break;
    case 'S': mul = 1000000000ULL; break;
    case 'm': mul = 1000000ULL; break;
    case 'u': mul = 1000ULL; break;
    case 'n': mul = 1; break;
    default: return -1;
  }
  /* 99999999 hours overflow 64-bit nanoseconds: saturate. */
  if (v > UINT64_MAX / mul)
    *ns = UINT64_MAX;
  else
    *ns = v * mul;
  return 0;
}

size_t grpc_percent_encode(const char *in, size_t n, char *out,
                           size_t outlen) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  if (outlen == 0) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)in[i];
    if (ch >= 0x20 && ch <= 0x7E && ch != '%') {
      if (o + 1 >= outlen) break;
      out[o++] = (char)ch;
    } else {
      if (o + 3 >= outlen) break;
      out[o++] = '%';
      out[o++] = hex[ch >> 4];
      out[o++] = hex[ch & 15];
    }
  }
  out[o] = '\0';
  return o;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

size_t grpc_percent_decode(const char *in, size_t n, char *out,
                           size_t outlen) {
  size_t o = 0;
  if (outlen == 0) return 0;
  for (size_t i = 0; i < n && o + 1 < outlen; i++) {
    int hi, lo;
    if (in[i] == '%' && i + 2 < n &&
        (hi = hexval(in[i + 1])) >= 0 && (lo = hexval(in[i + 2])) >= 0) {
      out[o++] = (char)(hi << 4 | lo);
      i += 2;
    } else {
      out[o++] = in[i];
    }
  }
  out[o] = '\0';
  return o;
}

int grpc_content_type_ok(const char *s, size_t n) {
  static const char base[] = "application/grpc";
  size_t bl = sizeof base - 1;
  if (n < bl || strncmp(s, base, bl) != 0) return 0;
  return n == bl || s[bl] == '+' || s[bl] == ';';
}

static int read_varint(pbw_reader *r, uint64_t *v) {
  uint64_t x = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (r->p >= r->end) return -1;
    uint8_t b = *r->p++;
    x |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *v = x;
      return 0;
    }
  }
  return -1;
}

int pbw_next(pbw_reader *r, pbw_field *f) {
  uint64_t key;
  if (r->p >= r->end) return 0;
  if (read_varint(r, &key) != 0) return -1;
  f->num = (uint32_t)(key >> 3);
  f->wire_type = (int)(key & 7);
  if (f->num == 0 || key >> 3 > 0x1fffffff) return -1;
  switch (f->wire_type) {
    case 0:
      return read_varint(r, &f->varint) == 0 ? 1 : -1;
    case 1:
    case 5: {
      size_t n = f->wire_type == 1 ? 8 : 4;
      if ((size_t)(r->end - r->p) < n) return -1;
      f->varint = 0;
      for (size_t i = 0; i < n; i++) f->varint |= (uint64_t)r->p[i] << (8 * i);
      r->p += n;
      return 1;
    }
    case 2: {
      uint64_t len;
      if (read_varint(r, &len) != 0) return -1;
      if (len > (uint64_t)(r->end - r->p)) return -1;
      f->data = r->p;
      f->len = (size_t)len;
      r->p += len;
      return 1;
    }
    default:
      return -1;
  }
}

int pbw_field_has_nul(const uint8_t *p, size_t n, uint32_t field) {
  pbw_reader r;
  pbw_field f;
  pbw_init(&r, p, n);
  while (pbw_next(&r, &f) == 1)
    if (f.num == field && f.wire_type == 2 && memchr(f.data, 0, f.len))
      return 1;
  return 0;
}

/* pbw_walk's recursion: 1 when fn asked to stop, 0 at the end, -1. */
static int walk(const uint8_t *p, size_t n, const uint32_t *path,
                size_t depth, int (*fn)(void *arg, const pbw_field *f),
                void *arg) {
  pbw_reader r;
  pbw_field f;
  int rc;
  pbw_init(&r, p, n);
  while ((rc = pbw_next(&r, &f)) == 1) {
    if (f.num != path[0]) continue;
    if (depth == 1) {
      if (fn(arg, &f)) return 1;
      continue;
    }
    if (f.wire_type != 2) return -1;
    int sub = walk(f.data, f.len, path + 1, depth - 1, fn, arg);
    if (sub) return sub;
  }
  return rc;
}

int pbw_walk(const uint8_t *p, size_t n, const uint32_t *path, size_t depth,
             int (*fn)(void *arg, const pbw_field *f), void *arg) {
  if (depth == 0) return 0;
  return walk(p, n, path, depth, fn, arg) < 0 ? -1 : 0;
}

static int count_one(void *arg, const pbw_field *f) {
  (void)f;
  ++*(long long *)arg;
  return 0;
}

long long pbw_count(const uint8_t *p, size_t n, const uint32_t *path,
                    size_t depth) {
  long long c = 0;
  return pbw_walk(p, n, path, depth, count_one, &c) ? -1 : c;
}

size_t pbw_put_varint(uint8_t *out, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  out[n++] = (uint8_t)v;
  return n;
}
