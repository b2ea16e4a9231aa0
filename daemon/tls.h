/* tls.h - TLS for the gRPC port: one OpenSSL SSL_CTX (certificate chain,
 * key, optional client CAs for mutual TLS, ALPN "h2" only, TLS 1.2 and up)
 * and, per connection, non-blocking read/write over the connection's own
 * socket, driven by server.c's libevent callbacks.
 *
 * Threading: everything here runs on the event-loop thread. */
#ifndef CTXD_TLS_H
#define CTXD_TLS_H

#include <stddef.h>
#include <sys/types.h>

struct ctxd_error;
typedef struct tls_ctx tls_ctx;
typedef struct tls_conn tls_conn;

/* Load the PEM certificate chain `cert` (server certificate first), its
 * PEM private key `key`, and, when `client_ca` is non-NULL and non-empty,
 * the PEM CA certificates that client certificates must chain to (then a
 * client without a valid certificate fails the handshake). The paths are
 * copied (tls_ctx_reload reads them again). Returns 0, or CTXD_EINVAL with
 * a message naming the option and the file (unreadable, not PEM, key does
 * not match the certificate), CTXD_ENOMEM. The caller frees *out with
 * tls_ctx_free. */
int tls_ctx_create(const char *cert, const char *key, const char *client_ca,
                   tls_ctx **out, struct ctxd_error *e);

/* Read the same files again (SIGHUP). On success new connections use the
 * new certificates, open ones keep theirs; on failure (the errors of
 * tls_ctx_create) the old ones stay in use. */
int tls_ctx_reload(tls_ctx *t, struct ctxd_error *e);

/* 1 when client certificates are required. */
int tls_ctx_mtls(const tls_ctx *t);

/* Free the context; connections still open keep what they use until
 * tls_conn_free. NULL is a no-op. */
void tls_ctx_free(tls_ctx *t);

/* Start the server side of a handshake on the connected non-blocking
 * socket `fd` (which stays the caller's to close). NULL when out of
 * memory. */
tls_conn *tls_conn_new(tls_ctx *t, int fd);

enum {
  TLS_IO_AGAIN = -1, /* nothing now: wait for the socket (tls_conn_want_write
                      * says which direction) */
  TLS_IO_ERROR = -2, /* handshake refused or failed, or a TLS error: close
                      * the connection (already logged with the reason) */
};

/* Decrypted bytes into buf (at most n): > 0 bytes; 0 when the peer closed;
 * TLS_IO_AGAIN; TLS_IO_ERROR. Drives the handshake first; a peer that did
 * not negotiate ALPN h2 gets TLS_IO_ERROR. */
ssize_t tls_conn_read(tls_conn *c, void *buf, size_t n);

/* Encrypt and send up to n bytes: > 0 bytes taken (maybe fewer than n);
 * TLS_IO_AGAIN; TLS_IO_ERROR. A call after TLS_IO_AGAIN must pass at least
 * the bytes of the previous one (the buffer may have moved). */
ssize_t tls_conn_write(tls_conn *c, const void *buf, size_t n);

/* 1 when the last TLS_IO_AGAIN waits for the socket to become writable
 * (else readable). */
int tls_conn_want_write(const tls_conn *c);

/* 1 when bytes wait inside the TLS layer (read ahead from the socket,
 * decrypted or not): after a tls_conn_read that returned data, read again
 * without waiting for the socket. After TLS_IO_AGAIN it may still be 1
 * (a partial record), and then only the socket brings more. */
int tls_conn_pending(const tls_conn *c);

/* Send close_notify if it fits without blocking, and free. NULL is a
 * no-op. */
void tls_conn_free(tls_conn *c);

#endif
