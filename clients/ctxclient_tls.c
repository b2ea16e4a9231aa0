/* ctxclient_tls.c - ctxclient's TLS layer on OpenSSL: context set-up (trust
 * store, client certificate), the handshake with name check and ALPN "h2",
 * and record I/O for the nghttp2 session above it, with messages that name
 * the reason for a failure rather than an OpenSSL error number. */
#include "ctxclient_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

struct cct_ctx {
  SSL_CTX *ssl_ctx;
  BIO_METHOD *bio_method;
  char trust[300]; /* what verifies the server, for messages */
};

struct cct {
  SSL *ssl;
  const cct_ctx *x;
  /* The verifier's first complaint, kept by verify_cb for the message. */
  int verify_err;
  int verify_depth;
  char verify_subject[256];
  char verify_issuer[256];
  char verify_names[512]; /* the leaf's subjectAltNames, for a mismatch */
  char err[512];
  int err_tls; /* err is a TLS-level reason (an alert), not a socket error */
};

/* ---- a socket BIO that never raises SIGPIPE --------------------------------
 * OpenSSL's socket BIO writes with write(), which kills a process that has
 * not ignored SIGPIPE when the server has gone; a library must not change
 * the process's signal handling, so writes go through send(MSG_NOSIGNAL). */

static int sock_write(BIO *b, const char *buf, int len) {
  BIO_clear_retry_flags(b);
  ssize_t n;
  do n = send(BIO_get_fd(b, NULL), buf, (size_t)len, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    BIO_set_retry_write(b);
  return (int)n;
}

static int sock_read(BIO *b, char *buf, int len) {
  BIO_clear_retry_flags(b);
  ssize_t n;
  do n = recv(BIO_get_fd(b, NULL), buf, (size_t)len, 0);
  while (n < 0 && errno == EINTR);
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    BIO_set_retry_read(b);
  return (int)n;
}

static long sock_ctrl(BIO *b, int cmd, long num, void *ptr) {
  switch (cmd) {
    case BIO_C_SET_FD:
      BIO_set_init(b, 1);
      BIO_set_data(b, (void *)(intptr_t)*(int *)ptr);
      return 1;
    case BIO_C_GET_FD:
      if (ptr) *(int *)ptr = (int)(intptr_t)BIO_get_data(b);
      return (long)(intptr_t)BIO_get_data(b);
    case BIO_CTRL_FLUSH:
      return 1;
    default:
      (void)num;
      return 0;
  }
}

static int sock_puts(BIO *b, const char *s) {
  return sock_write(b, s, (int)strlen(s));
}

/* ---- context --------------------------------------------------------------*/

/* OpenSSL's reason for the last error on this thread's queue ("no such
 * file", "key values mismatch"), and clear the queue. */
static const char *ssl_reason(void) {
  unsigned long e = ERR_peek_last_error();
  const char *r = e ? ERR_reason_error_string(e) : NULL;
  ERR_clear_error();
  return r ? r : "unknown error";
}

/* A PEM file OpenSSL could not use: say whether it is missing or bad. */
static void file_problem(char *msg, size_t msglen, const char *what,
                         const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(msg, msglen, "cannot read %s %s: %s", what, path,
             strerror(errno));
    ERR_clear_error();
    return;
  }
  fclose(f);
  snprintf(msg, msglen, "cannot load %s %s: %s", what, path, ssl_reason());
}

int cct_ctx_new(const ctxclient_tls *tls, cct_ctx **out, char *msg,
                size_t msglen) {
  cct_ctx *x = NULL;
  *out = NULL;
  ERR_clear_error();
  if (tls->key_file && !tls->cert_file) {
    snprintf(msg, msglen, "a client key (%s) needs a client certificate",
             tls->key_file);
    goto fail;
  }
  x = calloc(1, sizeof *x);
  if (!x) {
    snprintf(msg, msglen, "out of memory");
    goto fail;
  }
  x->ssl_ctx = SSL_CTX_new(TLS_client_method());
  /* No BIO_get_new_index(): its numbers run out, and nothing looks this
   * type up. */
  x->bio_method = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "ctxclient socket");
  if (!x->ssl_ctx || !x->bio_method) {
    snprintf(msg, msglen, "TLS set-up: %s", ssl_reason());
    goto fail;
  }
  BIO_meth_set_write(x->bio_method, sock_write);
  BIO_meth_set_read(x->bio_method, sock_read);
  BIO_meth_set_puts(x->bio_method, sock_puts);
  BIO_meth_set_ctrl(x->bio_method, sock_ctrl);

  SSL_CTX *ctx = x->ssl_ctx;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  /* nghttp2 offers the same bytes again after a blocked write, but from
   * wherever its buffer then is. */
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  static const unsigned char alpn[] = {2, 'h', '2'};
  if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn) != 0) {
    snprintf(msg, msglen, "TLS set-up (ALPN): %s", ssl_reason());
    goto fail;
  }
  if (tls->ca_file) {
    snprintf(x->trust, sizeof x->trust, "CA file %.250s", tls->ca_file);
    if (SSL_CTX_load_verify_locations(ctx, tls->ca_file, NULL) != 1) {
      file_problem(msg, msglen, "CA file", tls->ca_file);
      goto fail;
    }
  } else {
    snprintf(x->trust, sizeof x->trust, "the system's CA certificates");
    if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      snprintf(msg, msglen, "cannot load the system's CA certificates: %s",
               ssl_reason());
      goto fail;
    }
  }
  if (tls->cert_file) {
    const char *key = tls->key_file ? tls->key_file : tls->cert_file;
    if (SSL_CTX_use_certificate_chain_file(ctx, tls->cert_file) != 1) {
      file_problem(msg, msglen, "client certificate", tls->cert_file);
      goto fail;
    }
    int loaded = SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM);
    if (loaded != 1 &&
        ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH) {
      file_problem(msg, msglen, "client key", key);
      goto fail;
    }
    if (loaded != 1 || SSL_CTX_check_private_key(ctx) != 1) {
      snprintf(msg, msglen, "client certificate %s does not match key %s",
               tls->cert_file, key);
      ERR_clear_error();
      goto fail;
    }
  }
  *out = x;
  return 0;
fail:
  cct_ctx_free(x);
  return -1;
}

void cct_ctx_free(cct_ctx *x) {
  if (!x) return;
  SSL_CTX_free(x->ssl_ctx);
  BIO_meth_free(x->bio_method);
  free(x);
}

/* ---- handshake ------------------------------------------------------------*/

/* "DNS:a, IP:10.0.0.1" from a certificate's subjectAltName (empty when it
 * has none). */
static void alt_names(X509 *cert, char *out, size_t len) {
  size_t n = 0;
  out[0] = '\0';
  GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL,
                                          NULL);
  for (int i = 0; names && i < sk_GENERAL_NAME_num(names) && n < len; i++) {
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
    char ip[INET6_ADDRSTRLEN] = "";
    const char *kind = NULL, *val = NULL;
    if (g->type == GEN_DNS) {
      kind = "DNS";
      val = (const char *)ASN1_STRING_get0_data(g->d.dNSName);
    } else if (g->type == GEN_IPADD) {
      int l = ASN1_STRING_length(g->d.iPAddress);
      const unsigned char *p = ASN1_STRING_get0_data(g->d.iPAddress);
      if (l == 4 || l == 16)
        inet_ntop(l == 4 ? AF_INET : AF_INET6, p, ip, sizeof ip);
      kind = "IP";
      val = ip;
    }
    if (!kind) continue;
    int w = snprintf(out + n, len - n, "%s%s:%s", n ? ", " : "", kind, val);
    if (w > 0) n += (size_t)w;
  }
  GENERAL_NAMES_free(names);
}

static int verify_cb(int ok, X509_STORE_CTX *store) {
  SSL *ssl =
      X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
  cct *t = ssl ? SSL_get_app_data(ssl) : NULL;
  if (ok || !t || t->verify_err) return ok;
  t->verify_err = X509_STORE_CTX_get_error(store);
  t->verify_depth = X509_STORE_CTX_get_error_depth(store);
  X509 *cert = X509_STORE_CTX_get_current_cert(store);
  if (cert) {
    X509_NAME_oneline(X509_get_subject_name(cert), t->verify_subject,
                      sizeof t->verify_subject);
    X509_NAME_oneline(X509_get_issuer_name(cert), t->verify_issuer,
                      sizeof t->verify_issuer);
    alt_names(cert, t->verify_names, sizeof t->verify_names);
  }
  return ok;
}

static int is_ip_literal(const char *s) {
  unsigned char b[16];
  return inet_pton(AF_INET, s, b) == 1 || inet_pton(AF_INET6, s, b) == 1;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The handshake failed with SSL_ERROR_SSL (or the peer closed): say why. */
static void handshake_problem(cct *t, const char *name, char *msg,
                              size_t msglen) {
  const char *reason = ssl_reason();
  if (t->verify_err) {
    const char *why = X509_verify_cert_error_string(t->verify_err);
    if (t->verify_err == X509_V_ERR_HOSTNAME_MISMATCH ||
        t->verify_err == X509_V_ERR_IP_ADDRESS_MISMATCH)
      snprintf(msg, msglen,
               "certificate verify failed: %s: the certificate (%.160s) is "
               "for %.240s, not \"%.120s\" (a server name override sets the expected "
               "name)",
               why, t->verify_subject,
               t->verify_names[0] ? t->verify_names : "no subjectAltName",
               name);
    else
      snprintf(msg, msglen,
               "certificate verify failed: %s (depth %d: %.160s, issued by "
               "%.160s; verified against %s)",
               why, t->verify_depth, t->verify_subject, t->verify_issuer,
               t->x->trust);
    return;
  }
  if (strstr(reason, "unexpected eof"))
    snprintf(msg, msglen, "the server closed the connection during the "
             "handshake (does it require a client certificate?)");
  else if (strstr(reason, "wrong version number") ||
      strstr(reason, "packet length too long") ||
      strstr(reason, "record layer failure"))
    snprintf(msg, msglen, "%s (is the server using TLS? it answered in "
             "cleartext)", reason);
  else
    snprintf(msg, msglen, "%s", reason);
}

int cct_connect(cct_ctx *x, int fd, const char *name, const char *addr,
                int64_t deadline_ms, cct **out, int *code, char *msg,
                size_t msglen) {
  char why[1024];
  cct *t = calloc(1, sizeof *t);
  BIO *bio = NULL;
  *out = NULL;
  *code = 14; /* UNAVAILABLE, as gRPC reports failed handshakes */
  ERR_clear_error();
  if (!t || !(t->ssl = SSL_new(x->ssl_ctx)) ||
      !(bio = BIO_new(x->bio_method))) {
    snprintf(msg, msglen, "TLS set-up: %s", ssl_reason());
    *code = 8;
    goto fail;
  }
  t->x = x;
  BIO_set_fd(bio, fd, BIO_NOCLOSE);
  SSL_set_bio(t->ssl, bio, bio); /* the SSL owns it from here */
  SSL_set_app_data(t->ssl, t);
  SSL_set_verify(t->ssl, SSL_VERIFY_PEER, verify_cb);
  X509_VERIFY_PARAM *param = SSL_get0_param(t->ssl);
  X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  int ok = is_ip_literal(name) ? X509_VERIFY_PARAM_set1_ip_asc(param, name)
                               : SSL_set_tlsext_host_name(t->ssl, name) &&
                                     SSL_set1_host(t->ssl, name);
  if (!ok) {
    snprintf(msg, msglen, "bad TLS server name \"%s\": %s", name,
             ssl_reason());
    *code = 3;
    goto fail;
  }
  for (;;) {
    errno = 0;
    int r = SSL_connect(t->ssl);
    if (r == 1) break;
    int e = SSL_get_error(t->ssl, r);
    short events;
    if (e == SSL_ERROR_WANT_READ) {
      events = POLLIN;
    } else if (e == SSL_ERROR_WANT_WRITE) {
      events = POLLOUT;
    } else {
      if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
        snprintf(why, sizeof why, "%s",
                 errno ? strerror(errno)
                       : "connection closed by the server (does it "
                         "require a client certificate?)");
      else
        handshake_problem(t, name, why, sizeof why);
      snprintf(msg, msglen, "TLS handshake with %s failed: %s", addr, why);
      goto fail;
    }
    int64_t left = deadline_ms - mono_ms();
    if (left <= 0) {
      snprintf(msg, msglen, "TLS handshake with %s: no answer in time", addr);
      *code = 4;
      goto fail;
    }
    struct pollfd p = {.fd = fd, .events = events};
    if (poll(&p, 1, (int)left) < 0 && errno != EINTR) {
      snprintf(msg, msglen, "TLS handshake with %s: poll: %s", addr,
               strerror(errno));
      goto fail;
    }
  }
  const unsigned char *proto = NULL;
  unsigned plen = 0;
  SSL_get0_alpn_selected(t->ssl, &proto, &plen);
  if (plen != 2 || memcmp(proto, "h2", 2) != 0) {
    if (plen)
      snprintf(msg, msglen,
               "%s did not agree to HTTP/2 over TLS (ALPN \"h2\"): it chose "
               "\"%.*s\"",
               addr, (int)plen, (const char *)proto);
    else
      snprintf(msg, msglen,
               "%s did not agree to HTTP/2 over TLS: it negotiated no ALPN "
               "protocol (a gRPC server selects \"h2\")",
               addr);
    goto fail;
  }
  *out = t;
  return 0;
fail:
  ERR_clear_error();
  cct_free(t);
  return -1;
}

/* ---- records --------------------------------------------------------------*/

/* The session failed (SSL_ERROR_SSL or _SYSCALL): keep the reason, with a
 * hint for the alerts a server sends when it refuses our certificate (TLS
 * 1.3 sends them after the handshake, at our first read). */
static ssize_t io_fail(cct *t, int e) {
  if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
    if (errno == 0) {
      snprintf(t->err, sizeof t->err, "connection closed");
      return CCT_CLOSED;
    }
    snprintf(t->err, sizeof t->err, "%s", strerror(errno));
    return CCT_ERROR;
  }
  unsigned long code = ERR_peek_last_error();
  const char *reason = ssl_reason();
  t->err_tls = 1;
  if (ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
    snprintf(t->err, sizeof t->err, "connection closed");
    return CCT_CLOSED;
  }
  const char *hint = "";
  if (strstr(reason, "certificate required"))
    hint = " (the server requires a client certificate)";
  else if (strstr(reason, "alert bad certificate") ||
           strstr(reason, "alert unknown ca") ||
           strstr(reason, "alert certificate unknown") ||
           strstr(reason, "alert certificate expired") ||
           strstr(reason, "alert decrypt error"))
    hint = " (the server refused our client certificate)";
  snprintf(t->err, sizeof t->err, "TLS error: %s%s", reason, hint);
  return CCT_ERROR;
}

static ssize_t io_result(cct *t, int r) {
  if (r > 0) return r;
  int e = SSL_get_error(t->ssl, r);
  switch (e) {
    case SSL_ERROR_WANT_READ:
      return CCT_WANT_READ;
    case SSL_ERROR_WANT_WRITE:
      return CCT_WANT_WRITE;
    case SSL_ERROR_ZERO_RETURN:
      snprintf(t->err, sizeof t->err, "connection closed (TLS close_notify)");
      return CCT_CLOSED;
    default:
      return io_fail(t, e);
  }
}

ssize_t cct_read(cct *t, uint8_t *buf, size_t len) {
  ERR_clear_error();
  t->err_tls = 0;
  errno = 0;
  return io_result(t, SSL_read(t->ssl, buf, len > INT32_MAX ? INT32_MAX
                                                            : (int)len));
}

ssize_t cct_write(cct *t, const uint8_t *buf, size_t len) {
  ERR_clear_error();
  t->err_tls = 0;
  errno = 0;
  return io_result(t, SSL_write(t->ssl, buf, len > INT32_MAX ? INT32_MAX
                                                             : (int)len));
}

int cct_pending(const cct *t) {
  return SSL_pending(t->ssl) > 0;
}

const char *cct_error(const cct *t, int *tls_level) {
  if (tls_level) *tls_level = t->err_tls;
  return t->err[0] ? t->err : "TLS error";
}

void cct_free(cct *t) {
  if (!t) return;
  if (t->ssl) {
    if (SSL_is_init_finished(t->ssl)) SSL_shutdown(t->ssl); /* non-blocking */
    SSL_free(t->ssl);
  }
  ERR_clear_error();
  free(t);
}
