/* grpc_wire.h - pure functions of the gRPC-over-HTTP/2 wire format: the
 * message deframer (5-byte prefix: compressed flag, big-endian length),
 * request decompression (grpc-encoding gzip/deflate), grpc-timeout parsing,
 * grpc-message percent-encoding and the content-type check. No I/O, no
 * globals: server.c and the unit tests use them. */
#ifndef CTXD_GRPC_WIRE_H
#define CTXD_GRPC_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define GRPC_PREFIX_LEN 5

/* Reassembles length-prefixed messages from DATA payloads split anywhere.
 * A message that lies whole inside one fed chunk is returned in place (no
 * copy); otherwise it is gathered into a buffer allocated only after its
 * length passed the limit check. */
typedef struct grpc_deframer {
  uint64_t limit;      /* largest accepted message length */
  uint8_t hdr[GRPC_PREFIX_LEN];
  size_t hdr_have;     /* prefix bytes gathered so far */
  uint8_t *buf;        /* gathering buffer (malloc'd), NULL when none */
  size_t len, have;    /* length of the current message, bytes gathered */
  int compressed;      /* flag of the current message */
  uint64_t bad_len;    /* on GRPC_DEFRAME_TOO_LARGE: the announced length */
} grpc_deframer;

typedef struct grpc_msg {
  const uint8_t *data; /* valid until the next feed/free call */
  size_t len;
  int compressed;      /* the prefix's flag byte was 1 */
} grpc_msg;

enum {
  GRPC_DEFRAME_NEED_MORE = 0,  /* all input used, no message completed */
  GRPC_DEFRAME_MESSAGE = 1,    /* *out holds a message */
  GRPC_DEFRAME_TOO_LARGE = -1, /* prefix announced > limit; bad_len set */
  GRPC_DEFRAME_BAD_FLAG = -2,  /* flag byte neither 0 nor 1 */
  GRPC_DEFRAME_NOMEM = -3,
};

void grpc_deframer_init(grpc_deframer *d, uint64_t limit);
void grpc_deframer_free(grpc_deframer *d);

/* Consume input from data[0..n): stops after the first completed message.
 * *used is set to the bytes consumed; call again with the rest. Returns one
 * of the GRPC_DEFRAME_* codes; after an error the deframer must not be fed
 * again. */
int grpc_deframer_feed(grpc_deframer *d, const uint8_t *data, size_t n,
                       size_t *used, grpc_msg *out);

/* After GRPC_DEFRAME_MESSAGE: hand the gathering buffer holding the message
 * to the caller (who free()s it), or NULL when the message was returned in
 * place (then copy it). */
uint8_t *grpc_deframer_steal(grpc_deframer *d);

/* 1 when a message is partly received (the stream must not end here). */
int grpc_deframer_partial(const grpc_deframer *d);

/* Message encodings (grpc-encoding) the server can decompress. "deflate"
 * is the zlib format (RFC 1950), as gRPC uses it; "gzip" is RFC 1952. */
enum grpc_encoding {
  GRPC_ENC_IDENTITY = 0, /* header absent or "identity" */
  GRPC_ENC_DEFLATE = 1,
  GRPC_ENC_GZIP = 2,
  GRPC_ENC_UNKNOWN = 3, /* anything else: the call is refused */
};

/* What the server advertises in grpc-accept-encoding. */
#define GRPC_ACCEPT_ENCODING "identity,deflate,gzip"

/* Map a grpc-encoding header value (exact, lower-case token) to an enum
 * grpc_encoding. */
int grpc_encoding_parse(const char *s, size_t n);

enum {
  GRPC_INFLATE_OK = 0,
  GRPC_INFLATE_TOO_LARGE = -1, /* output would exceed the limit */
  GRPC_INFLATE_CORRUPT = -2,   /* not a valid, complete stream of `enc` */
  GRPC_INFLATE_NOMEM = -3,
};

/* Decompress one message in[0..n) encoded with `enc` (GRPC_ENC_DEFLATE or
 * GRPC_ENC_GZIP; any other value is GRPC_INFLATE_CORRUPT). The output grows
 * as inflate produces it and never beyond `limit` bytes, so a small
 * "decompression bomb" costs at most `limit` bytes of memory and the CPU to
 * produce them; one byte more is GRPC_INFLATE_TOO_LARGE. The input must be
 * exactly one stream: truncated input, a bad checksum or bytes after the end
 * of the stream are GRPC_INFLATE_CORRUPT. An empty input (n == 0) is an
 * empty message. On GRPC_INFLATE_OK *out is a malloc'd buffer of *out_len
 * bytes that the caller frees (NULL when *out_len is 0); on error *out is
 * NULL and nothing is left allocated. */
int grpc_inflate(int enc, const uint8_t *in, size_t n, uint64_t limit,
                 uint8_t **out, size_t *out_len);

/* Parse a grpc-timeout value ("100m", "5S", "1H", "250u", "10n": 1-8 ASCII
 * digits and a unit H M S m u n) into nanoseconds. -1 if malformed. */
int grpc_timeout_parse(const char *s, size_t n, uint64_t *ns);

/* Percent-encode `in` for grpc-message: bytes outside 0x20..0x7E and '%'
 * become %XX. Writes at most outlen-1 bytes plus NUL (never splitting an
 * escape) and returns the length written. */
size_t grpc_percent_encode(const char *in, size_t n, char *out,
                           size_t outlen);

/* Decode %XX escapes (invalid escapes are kept as they are). Same output
 * rules as encode. */
size_t grpc_percent_decode(const char *in, size_t n, char *out,
                           size_t outlen);

/* 1 if a content-type value is gRPC: "application/grpc" alone or followed
 * by '+' or ';' (application/grpc+proto). */
int grpc_content_type_ok(const char *s, size_t n);

/* Write the 5-byte prefix of an uncompressed message of `len` bytes. */
static inline void grpc_prefix_put(uint8_t *p, uint32_t len) {
  p[0] = 0;
  p[1] = (uint8_t)(len >> 24);
  p[2] = (uint8_t)(len >> 16);
  p[3] = (uint8_t)(len >> 8);
  p[4] = (uint8_t)len;
}

/* A minimal protobuf wire reader for handlers that need only a field or
 * two (Health, reflection) and must not allocate: walks fields in order. */
typedef struct pbw_reader {
  const uint8_t *p, *end;
} pbw_reader;

typedef struct pbw_field {
  uint32_t num;
  int wire_type;       /* 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
  uint64_t varint;     /* wire types 0, 1, 5 */
  const uint8_t *data; /* wire type 2 */
  size_t len;
} pbw_field;

static inline void pbw_init(pbw_reader *r, const uint8_t *p, size_t n) {
  r->p = p;
  r->end = p + n;
}

/* Read the next field: 1, 0 at the end, -1 on malformed input (truncated,
 * bad varint, group wire types). */
int pbw_next(pbw_reader *r, pbw_field *f);

/* 1 when some length-delimited field numbered `field` of message p[0..n)
 * (a string, every occurrence) holds a NUL byte; 0 otherwise, also on
 * malformed input. protobuf-c hands strings over as C strings, so a NUL
 * (valid UTF-8 for U+0000) would silently cut an id or a name short: ctxd
 * refuses such input rather than act on a truncated copy. */
int pbw_field_has_nul(const uint8_t *p, size_t n, uint32_t field);

/* Call fn(arg, field) for every occurrence of the field at path[0..depth)
 * of message p[0..n): path[0] is a top-level field number, each later one
 * a field of the submessage before it (every occurrence of a submessage is
 * visited: protobuf merges them). A packed repeated field counts as one
 * occurrence. Stops when fn returns non-zero. Returns 0, or -1 on malformed
 * input along the path. Allocates nothing: handlers count repeated fields
 * with it before protobuf-c unpacks them (protobuf-c allocates a struct or
 * a string per element, tens of bytes for two bytes on the wire, with no
 * limit of its own). */
int pbw_walk(const uint8_t *p, size_t n, const uint32_t *path, size_t depth,
             int (*fn)(void *arg, const pbw_field *f), void *arg);

/* Occurrences of the field at path (pbw_walk); -1 on malformed input. */
long long pbw_count(const uint8_t *p, size_t n, const uint32_t *path,
                    size_t depth);

/* Append a varint / a length-delimited field to out (room checked by the
 * caller: at most 10 bytes for a varint). Return bytes written. */
size_t pbw_put_varint(uint8_t *out, uint64_t v);

#endif
