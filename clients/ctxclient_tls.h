/* ctxclient_tls.h - the TLS layer of ctxclient (OpenSSL): a client-side
 * TLS 1.2+ session on a connected non-blocking socket that verifies the
 * server's certificate and name, insists on ALPN "h2", and can present a
 * client certificate (mTLS).
 *
 * Internal to clients/ (ctxclient.c and tests/clients/); the public
 * options are ctxclient_tls in ctxclient.h. */
#ifndef CTXCLIENT_TLS_H
#define CTXCLIENT_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ctxclient.h"

typedef struct cct cct;

/* What cct_read()/cct_write() return besides a byte count (> 0). */
enum {
  CCT_WANT_READ = -1,  /* retry once the socket is readable */
  CCT_WANT_WRITE = -2, /* retry once the socket is writable */
  CCT_CLOSED = -3,     /* the peer closed the connection (close_notify or
                          EOF) */
  CCT_ERROR = -4,      /* the session failed; cct_error() says why */
};

/* Load the CA file (or the system's trust store when tls->ca_file is NULL)
 * and the client certificate and key, if any, into a new context: *out, freed
 * with cct_ctx_free(). Done before connecting, so that a local mistake is
 * reported as such and not as a network failure.
 * Errors: -1 with `msg` filled ("cannot load CA file F: REASON", "client
 * certificate F does not match key K", "a client certificate needs a key
 * file", ...). */
typedef struct cct_ctx cct_ctx;
int cct_ctx_new(const ctxclient_tls *tls, cct_ctx **out, char *msg,
                size_t msglen);
void cct_ctx_free(cct_ctx *x);

/* Run the TLS handshake on connected socket `fd` (non-blocking), waiting
 * with poll() until `deadline_ms` (CLOCK_MONOTONIC ms). `name` is the name
 * the server's certificate must carry (a DNS name, or an IP literal checked
 * against the certificate's IP addresses) and, when it is a DNS name, the
 * SNI sent. `addr` is only for messages. On success *out owns a new session
 * on `fd` (the fd stays the caller's), freed with cct_free().
 * Errors: -1 with *code set to a gRPC status (UNAVAILABLE, or
 * DEADLINE_EXCEEDED when the deadline passed) and `msg` filled: "TLS
 * handshake with ADDR failed: certificate verify failed: REASON ..." (the
 * reason from OpenSSL's verifier; for a name mismatch, the names the
 * certificate holds), "ADDR did not agree to HTTP/2 over TLS (ALPN h2;
 * it chose ...)", "... (is the server using TLS?)" for a peer that
 * answers in cleartext. */
int cct_connect(cct_ctx *x, int fd, const char *name, const char *addr,
                int64_t deadline_ms, cct **out, int *code, char *msg,
                size_t msglen);

/* Read up to `len` decrypted bytes: > 0, or a CCT_* code. Call again until
 * CCT_WANT_READ: OpenSSL may hold more than one record. */
ssize_t cct_read(cct *t, uint8_t *buf, size_t len);

/* Write up to `len` bytes: > 0 (partial writes happen), or a CCT_* code.
 * After CCT_WANT_* the same bytes must be offered again. */
ssize_t cct_write(cct *t, const uint8_t *buf, size_t len);

/* 1 if OpenSSL holds decrypted bytes that cct_read() has not returned yet
 * (poll() cannot see them); a partly received record does not count. */
int cct_pending(const cct *t);

/* Why the last CCT_ERROR (or CCT_CLOSED) happened, for messages; names the
 * likely cause where OpenSSL's reason allows ("the server refused our
 * client certificate ..."). *tls_level (may be NULL) is 1 for a TLS-level
 * failure (an alert from the server, a bad record), 0 for a socket error
 * ("Broken pipe") or a close. Valid until the next call on `t`. */
const char *cct_error(const cct *t, int *tls_level);

/* Send close_notify (best effort, never blocks) and free the session. NULL
 * is a no-op. */
void cct_free(cct *t);

#endif
