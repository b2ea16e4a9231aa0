/* tls.c - OpenSSL on the daemon's own sockets. The transport keeps its raw
 * non-blocking I/O (one write per flush, its own buffers) and only swaps
 * read(2)/write(2) for SSL_read/SSL_write here, so h2c and TLS connections
 * share every line of the HTTP/2 code. */
#include "tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../index/err.h"
#include "log.h"

struct tls_ctx {
  SSL_CTX *ctx;
  char *cert, *key, *client_ca; /* client_ca NULL when not set */
};

struct tls_conn {
  SSL *ssl;
  int fd;
  int ready;      /* handshake done and ALPN checked */
  int want_write; /* the last TLS_IO_AGAIN waits for writability */
};

/* "1.2.3.4:5678" of the socket's peer, for log lines. */
static void peer_name(int fd, char *buf, size_t n) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char ip[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  snprintf(buf, n, "?");
  if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) return;
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
    port = ntohs(a->sin6_port);
    snprintf(buf, n, "[%s]:%d", ip, port);
  } else if (ss.ss_family == AF_INET) {
    struct sockaddr_in *a = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
    port = ntohs(a->sin_port);
    snprintf(buf, n, "%s:%d", ip, port);
  }
}

/* The first queued OpenSSL error as text ("" when none), queue cleared. */
static const char *ossl_reason(char *buf, size_t n) {
  unsigned long code = ERR_get_error();
  buf[0] = '\0';
  if (code) {
    const char *r = ERR_reason_error_string(code);
    if (r)
      snprintf(buf, n, "%s", r);
    else
      ERR_error_string_n(code, buf, n);
  }
  ERR_clear_error();
  return buf;
}

/* ALPN: gRPC is HTTP/2 only. A client that offers ALPN without "h2" fails
 * the handshake with no_application_protocol; one that sends no ALPN at
 * all is refused after the handshake (tls_conn_check). */
static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  static const unsigned char h2[] = {2, 'h', '2'};
  unsigned char *sel;
  unsigned char sel_len;
  (void)arg;
  if (SSL_select_next_proto(&sel, &sel_len, h2, sizeof h2, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = sel;
    *outlen = sel_len;
    return SSL_TLSEXT_ERR_OK;
  }
  char offered[256], peer[80];
  size_t o = 0;
  for (unsigned i = 0; i < inlen && o + 2 < sizeof offered;) {
    unsigned l = in[i++];
    if (l > inlen - i) break;
    int w = snprintf(offered + o, sizeof offered - o, "%s%.*s", o ? "," : "",
                     (int)l, (const char *)in + i);
    if (w < 0) break;
    o += (size_t)w < sizeof offered - o ? (size_t)w : sizeof offered - o - 1;
    i += l;
  }
  offered[o] = '\0';
  peer_name(SSL_get_fd(ssl), peer, sizeof peer);
  LOG_WARN("tls-refused peer=%s reason=\"client did not offer ALPN h2 "
           "(gRPC needs HTTP/2)\" offered=\"%s\"",
           peer, offered);
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

/* Can the file be opened at all? Gives errno's reason, which OpenSSL's
 * own messages ("system lib") do not. */
static int check_readable(const char *opt, const char *path, ctxd_error *e) {
  FILE *f = fopen(path, "r");
  if (!f)
    return ctxd_seterr(e, CTXD_EINVAL, "%s %s: cannot read: %s", opt, path,
                       strerror(errno));
  fclose(f);
  return 0;
}

/* A new SSL_CTX from the context's files. */
static int build_ctx(const tls_ctx *t, SSL_CTX **out, ctxd_error *e) {
  char why[256];
  int rc = CTXD_EINVAL;
  SSL_CTX *ctx = NULL;
  STACK_OF(X509_NAME) *names = NULL;
  ERR_clear_error();
  if ((rc = check_readable("server.tls_cert", t->cert, e)) != 0 ||
      (rc = check_readable("server.tls_key", t->key, e)) != 0 ||
      (t->client_ca &&
       (rc = check_readable("server.tls_client_ca", t->client_ca, e)) != 0))
    goto fail;
  rc = CTXD_EINVAL;
  ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "TLS context: %s",
                     ossl_reason(why, sizeof why));
    goto fail;
  }
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  /* TLS 1.2 ciphers HTTP/2 allows (RFC 9113 9.2.2: ephemeral key
   * exchange, AEAD); TLS 1.3 suites are all fine. */
  SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* Partial writes and a buffer that moves between retries: the transport
   * appends to its output buffer while a write is pending. Released
   * buffers keep an idle connection small. */
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  /* Read whole socket buffers, not a record header and then its body
   * (two read(2) calls per record); what is left decrypted waits in the
   * SSL object and tls_conn_pending() says so. */
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
  if (SSL_CTX_use_certificate_chain_file(ctx, t->cert) != 1) {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "server.tls_cert %s: not a PEM certificate chain (%s)",
                     t->cert, ossl_reason(why, sizeof why));
    goto fail;
  }
  /* OpenSSL checks the key against the certificate as it loads it. */
  if (SSL_CTX_use_PrivateKey_file(ctx, t->key, SSL_FILETYPE_PEM) != 1 &&
      ERR_GET_REASON(ERR_peek_error()) != X509_R_KEY_VALUES_MISMATCH) {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "server.tls_key %s: not a PEM private key (%s)", t->key,
                     ossl_reason(why, sizeof why));
    goto fail;
  }
  if (ERR_peek_error() || SSL_CTX_check_private_key(ctx) != 1) {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "server.tls_key %s does not match the certificate of "
                     "server.tls_cert %s (%s)",
                     t->key, t->cert, ossl_reason(why, sizeof why));
    goto fail;
  }
  if (t->client_ca) {
    names = SSL_load_client_CA_file(t->client_ca);
    if (!names || sk_X509_NAME_num(names) == 0 ||
        SSL_CTX_load_verify_locations(ctx, t->client_ca, NULL) != 1) {
      rc = ctxd_seterr(e, CTXD_EINVAL,
                       "server.tls_client_ca %s: no PEM CA certificate (%s)",
                       t->client_ca, ossl_reason(why, sizeof why));
      goto fail;
    }
    SSL_CTX_set_client_CA_list(ctx, names); /* takes the list */
    names = NULL;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                       NULL);
    /* Resumed sessions must belong to this server's verification. */
    static const unsigned char sid[] = "ctxd";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
  }
  *out = ctx;
  return 0;
fail:
  if (names) sk_X509_NAME_pop_free(names, X509_NAME_free);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return rc;
}

int tls_ctx_create(const char *cert, const char *key, const char *client_ca,
                   tls_ctx **out, ctxd_error *e) {
  int rc;
  tls_ctx *t = calloc(1, sizeof *t);
  *out = NULL;
  if (!t) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  t->cert = strdup(cert);
  t->key = strdup(key);
  t->client_ca = client_ca && *client_ca ? strdup(client_ca) : NULL;
  if (!t->cert || !t->key || (client_ca && *client_ca && !t->client_ca)) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto fail;
  }
  if ((rc = build_ctx(t, &t->ctx, e)) != 0) goto fail;
  *out = t;
  return 0;
fail:
  tls_ctx_free(t);
  return rc;
}

int tls_ctx_reload(tls_ctx *t, ctxd_error *e) {
  SSL_CTX *ctx;
  int rc = build_ctx(t, &ctx, e);
  if (rc != 0) return rc;
  SSL_CTX_free(t->ctx); /* connections hold their own reference */
  t->ctx = ctx;
  return 0;
}

int tls_ctx_mtls(const tls_ctx *t) {
  return t->client_ca != NULL;
}

void tls_ctx_free(tls_ctx *t) {
  if (!t) return;
  SSL_CTX_free(t->ctx);
  free(t->cert);
  free(t->key);
  free(t->client_ca);
  free(t);
}

tls_conn *tls_conn_new(tls_ctx *t, int fd) {
  tls_conn *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->fd = fd;
  c->ssl = SSL_new(t->ctx);
  if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1) {
    SSL_free(c->ssl);
    free(c);
    ERR_clear_error();
    return NULL;
  }
  SSL_set_accept_state(c->ssl);
  return c;
}

/* Once the handshake is over: the peer must have negotiated h2 (a client
 * without ALPN never reached alpn_select). */
static int tls_conn_check(tls_conn *c) {
  const unsigned char *p;
  unsigned int n;
  if (c->ready || !SSL_is_init_finished(c->ssl)) return 0;
  SSL_get0_alpn_selected(c->ssl, &p, &n);
  if (n != 2 || memcmp(p, "h2", 2) != 0) {
    char peer[80];
    peer_name(c->fd, peer, sizeof peer);
    LOG_WARN("tls-refused peer=%s reason=\"client sent no ALPN h2 (gRPC "
             "needs HTTP/2)\"",
             peer);
    return -1;
  }
  c->ready = 1;
  if (LOG_LVL_DEBUG <= log_level) {
    char peer[80];
    peer_name(c->fd, peer, sizeof peer);
    X509 *cert = SSL_get1_peer_certificate(c->ssl);
    char subj[256] = "";
    if (cert) X509_NAME_oneline(X509_get_subject_name(cert), subj, sizeof subj);
    X509_free(cert);
    LOG_DEBUG("tls-handshake peer=%s version=%s cipher=%s client=\"%s\"",
              peer, SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl),
              subj);
  }
  return 0;
}

/* Map an SSL_read/SSL_write result. */
static ssize_t io_result(tls_conn *c, int r, const char *op) {
  int err = SSL_get_error(c->ssl, r);
  char why[256], peer[80];
  switch (err) {
    case SSL_ERROR_WANT_READ:
      c->want_write = 0;
      return tls_conn_check(c) ? TLS_IO_ERROR : TLS_IO_AGAIN;
    case SSL_ERROR_WANT_WRITE:
      c->want_write = 1;
      return tls_conn_check(c) ? TLS_IO_ERROR : TLS_IO_AGAIN;
    case SSL_ERROR_ZERO_RETURN:
      if (op[0] == 'r') return 0;
      break;
    case SSL_ERROR_SYSCALL:
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        c->want_write = 0;
        return TLS_IO_AGAIN;
      }
      /* A peer that vanished without close_notify: a plain close for
       * reads once the handshake was done. */
      if (c->ready && op[0] == 'r') return 0;
      break;
    default:
      break;
  }
  ossl_reason(why, sizeof why);
  peer_name(c->fd, peer, sizeof peer);
  if (!c->ready) {
    long v = SSL_get_verify_result(c->ssl);
    /* The verification result says more than "certificate verify
     * failed" (expired, unknown CA...). */
    LOG_INFO("tls-handshake-failed peer=%s err=\"%s\"%s%s%s", peer,
             why[0] ? why : (err == SSL_ERROR_SYSCALL ? "connection closed"
                                                      : "protocol error"),
             v != X509_V_OK ? " verify=\"" : "",
             v != X509_V_OK ? X509_verify_cert_error_string(v) : "",
             v != X509_V_OK ? "\"" : "");
  } else {
    LOG_DEBUG("tls-error peer=%s op=%s err=\"%s\"", peer, op,
              why[0] ? why : strerror(errno));
  }
  return TLS_IO_ERROR;
}

/* Finish the handshake and check ALPN before any application byte goes
 * either way: SSL_write could otherwise complete the handshake and send
 * data to a peer that is refused right after. 0 once ready. */
static ssize_t handshake(tls_conn *c) {
  if (!SSL_is_init_finished(c->ssl)) {
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r != 1) return io_result(c, r, "handshake");
  }
  return tls_conn_check(c) ? TLS_IO_ERROR : 0;
}

ssize_t tls_conn_read(tls_conn *c, void *buf, size_t n) {
  int len = n > INT32_MAX ? INT32_MAX : (int)n;
  ssize_t h = c->ready ? 0 : handshake(c);
  if (h != 0) return h;
  ERR_clear_error();
  int r = SSL_read(c->ssl, buf, len);
  return r > 0 ? r : io_result(c, r, "read");
}

ssize_t tls_conn_write(tls_conn *c, const void *buf, size_t n) {
  int len = n > INT32_MAX ? INT32_MAX : (int)n;
  ssize_t h = c->ready ? 0 : handshake(c);
  if (h != 0) return h;
  ERR_clear_error();
  int r = SSL_write(c->ssl, buf, len);
  return r > 0 ? r : io_result(c, r, "write");
}

int tls_conn_want_write(const tls_conn *c) {
  return c->want_write;
}

int tls_conn_pending(const tls_conn *c) {
  return SSL_has_pending(c->ssl);
}

void tls_conn_free(tls_conn *c) {
  if (!c) return;
  if (c->ready) SSL_shutdown(c->ssl); /* one non-blocking try */
  SSL_free(c->ssl);
  ERR_clear_error();
  free(c);
}
