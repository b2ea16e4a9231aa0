/* ctxclient_wire.h - the pure, socket-free pieces of ctxclient's gRPC wire
 * handling: address parsing, grpc-timeout formatting, grpc-message percent
 * decoding, and the 5-byte message framing in both directions.
 *
 * Internal to clients/ (ctxclient.c and the unit tests in tests/clients/);
 * not part of the public client API. */
#ifndef CTXCLIENT_WIRE_H
#define CTXCLIENT_WIRE_H

#include <stddef.h>
#include <stdint.h>

/* Split "HOST:PORT", "[V6ADDR]:PORT", "HOST" or "[V6ADDR]" into a host and a
 * port. A missing port gives `default_port`. A bare IPv6 literal without
 * brackets ("::1") is accepted as a host with the default port, since its
 * last colon cannot be told apart from a port separator otherwise.
 * Returns 0, or -1 when the address is empty, a bracket is unbalanced, the
 * port is not a number in 1..65535, or a part does not fit its buffer. */
int ccw_parse_addr(const char *addr, const char *default_port, char *host,
                   size_t hostlen, char *port, size_t portlen);

/* Format a gRPC deadline of `ms` milliseconds (ms > 0) as a grpc-timeout
 * header value: at most 8 digits and a unit (m, S, M, H), rounding up so
 * the server never sees a shorter deadline than asked. Writes a
 * NUL-terminated string into `out` (at least 10 bytes). Returns 0, or -1 if
 * `ms` <= 0 or `outlen` is too small. */
int ccw_format_timeout(int64_t ms, char *out, size_t outlen);

/* Percent-decode a grpc-message value (the gRPC spec's encoding: "%XX" for
 * bytes outside printable ASCII and for '%'), `len` bytes from `in`, into
 * `out` (size `outlen`), NUL-terminated and truncated to fit. A '%' not
 * followed by two hex digits is copied as is, as the spec asks. Returns the
 * decoded length (before truncation). */
size_t ccw_percent_decode(const char *in, size_t len, char *out, size_t outlen);

/* Write the 5-byte gRPC message prefix (uncompressed, big-endian length). */
void ccw_frame_header(uint8_t hdr[5], uint32_t len);

/* Reassembles gRPC length-prefixed messages from a byte stream cut into
 * arbitrary pieces (HTTP/2 DATA frames). */
typedef struct ccw_deframer {
  uint8_t hdr[5];
  size_t hdr_have;
  uint8_t *msg; /* owned; NULL between messages */
  size_t msg_len;
  size_t msg_have;
  size_t max_len; /* messages longer than this are refused */
} ccw_deframer;

/* Called for each complete message. `msg` is malloc'd (NULL when `len` is 0)
 * and owned by the callee from then on. Return 0 to go on, non-zero to stop
 * (ccw_deframer_feed then returns CCW_ECALLBACK). */
typedef int (*ccw_on_message)(void *ud, uint8_t *msg, size_t len);

enum {
  CCW_ETOOBIG = -1,     /* length prefix above max_len (RESOURCE_EXHAUSTED) */
  CCW_ECOMPRESSED = -2, /* compressed flag set; we offer no encoding */
  CCW_ENOMEM = -3,
  CCW_ECALLBACK = -4,
};

/* Start an empty deframer that refuses messages above `max_len` bytes. */
void ccw_deframer_init(ccw_deframer *d, size_t max_len);

/* Feed `len` bytes. Calls `cb` for every message completed by them. The
 * size limit is checked from the prefix, before anything is allocated.
 * Returns 0 or a negative CCW_E* code; after an error the deframer must
 * only be freed. */
int ccw_deframer_feed(ccw_deframer *d, const uint8_t *data, size_t len,
                      ccw_on_message cb, void *ud);

/* 1 if the deframer holds part of a message (an error at end of stream). */
int ccw_deframer_partial(const ccw_deframer *d);

/* Free a partly received message, if any. */
void ccw_deframer_free(ccw_deframer *d);

#endif
