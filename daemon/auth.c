/* auth.c - the token file and the bearer-token check (auth.h). A token is
 * kept only as its SHA-256 digest; a check hashes the presented token once
 * and compares it with every entry without stopping early. */
#include "auth.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../index/err.h"

typedef struct auth_entry {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  auth_role role;
  char name[AUTH_NAME_MAX + 1];
} auth_entry;

struct auth {
  char *path; /* NULL when made by auth_parse */
  auth_entry *ents;
  size_t n;
};

static int is_blank(char c) {
  return c == ' ' || c == '\t' || c == '\r';
}

static int role_parse(const char *s, size_t n, auth_role *out) {
  static const struct {
    const char *name;
    auth_role role;
  } roles[] = {{"read", AUTH_ROLE_READ},
               {"write", AUTH_ROLE_WRITE},
               {"admin", AUTH_ROLE_ADMIN}};
  for (size_t i = 0; i < sizeof roles / sizeof roles[0]; i++)
    if (strlen(roles[i].name) == n && memcmp(roles[i].name, s, n) == 0) {
      *out = roles[i].role;
      return 0;
    }
  return -1;
}

static int name_ok(const char *s, size_t n) {
  if (n == 0 || n > AUTH_NAME_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '@' ||
          c == '-'))
      return 0;
  }
  return 1;
}

static int token_ok(const char *s, size_t n) {
  if (n < AUTH_TOKEN_MIN || n > AUTH_TOKEN_MAX) return 0;
  for (size_t i = 0; i < n; i++)
    if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e) return 0;
  return 1;
}

int auth_parse(const char *text, size_t len, const char *origin, auth **out,
               ctxd_error *e) {
  int rc = 0;
  size_t cap = 0, lineno = 0;
  auth *a = calloc(1, sizeof *a);
  *out = NULL;
  if (!a) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  for (size_t pos = 0; pos < len;) {
    const char *line = text + pos;
    const char *nl = memchr(line, '\n', len - pos);
    size_t ll = nl ? (size_t)(nl - line) : len - pos;
    pos += ll + (nl ? 1 : 0);
    lineno++;
    /* Up to four blank-separated fields; a fourth is an error. */
    const char *f[4];
    size_t fl[4], nf = 0, i = 0;
    while (i < ll && nf < 4) {
      while (i < ll && is_blank(line[i])) i++;
      if (i == ll) break;
      f[nf] = line + i;
      while (i < ll && !is_blank(line[i])) i++;
      fl[nf] = (size_t)(line + i - f[nf]);
      nf++;
    }
    if (nf == 0 || f[0][0] == '#') continue;
    if (memchr(line, '\0', ll)) {
      rc = ctxd_seterr(e, CTXD_EINVAL, "%s:%zu: NUL byte", origin, lineno);
      goto fail;
    }
    if (nf < 2 || nf > 3) {
      rc = ctxd_seterr(e, CTXD_EINVAL,
                       "%s:%zu: expected TOKEN ROLE [NAME], got %zu field%s",
                       origin, lineno, nf > 3 ? (size_t)4 : nf,
                       nf > 3 ? "s or more" : nf == 1 ? "" : "s");
      goto fail;
    }
    if (!token_ok(f[0], fl[0])) {
      rc = ctxd_seterr(e, CTXD_EINVAL,
                       "%s:%zu: a token must be %d to %d visible ASCII "
                       "characters (this one has %zu)",
                       origin, lineno, AUTH_TOKEN_MIN, AUTH_TOKEN_MAX, fl[0]);
      goto fail;
    }
    auth_entry ent;
    memset(&ent, 0, sizeof ent);
    if (role_parse(f[1], fl[1], &ent.role) != 0) {
      rc = ctxd_seterr(e, CTXD_EINVAL,
                       "%s:%zu: unknown role \"%.*s\" (read, write, admin)",
                       origin, lineno, (int)(fl[1] > 32 ? 32 : fl[1]), f[1]);
      goto fail;
    }
    if (nf == 3) {
      if (!name_ok(f[2], fl[2])) {
        rc = ctxd_seterr(e, CTXD_EINVAL,
                         "%s:%zu: a NAME is 1 to %d letters, digits or "
                         "._@- characters",
                         origin, lineno, AUTH_NAME_MAX);
        goto fail;
      }
      memcpy(ent.name, f[2], fl[2]);
    } else {
      snprintf(ent.name, sizeof ent.name, "line-%zu", lineno);
    }
    SHA256((const unsigned char *)f[0], fl[0], ent.digest);
    for (size_t k = 0; k < a->n; k++)
      if (memcmp(a->ents[k].digest, ent.digest, sizeof ent.digest) == 0) {
        rc = ctxd_seterr(e, CTXD_EINVAL,
                         "%s:%zu: the same token as %s (each token must "
                         "appear once)",
                         origin, lineno, a->ents[k].name);
        goto fail;
      }
    if (a->n == cap) {
      size_t nc = cap ? cap * 2 : 8;
      auth_entry *ne = realloc(a->ents, nc * sizeof *ne);
      if (!ne) {
        rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
        goto fail;
      }
      a->ents = ne;
      cap = nc;
    }
    a->ents[a->n++] = ent;
  }
  *out = a;
  return 0;
fail:
  auth_free(a);
  return rc;
}

/* Read a token file after checking its type, owner and mode. */
static int load_file(const char *path, auth **out, ctxd_error *e) {
  int rc, fd = open(path, O_RDONLY | O_CLOEXEC);
  char *buf = NULL;
  size_t size = 0, have = 0;
  struct stat st;
  *out = NULL;
  if (fd < 0)
    return ctxd_seterr(e, CTXD_EIO, "auth.tokens_file %s: cannot open: %s",
                       path, strerror(errno));
  if (fstat(fd, &st) != 0) {
    rc = ctxd_seterr(e, CTXD_EIO, "auth.tokens_file %s: %s", path,
                     strerror(errno));
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "auth.tokens_file %s: not a regular file", path);
    goto out;
  }
  if (st.st_uid != geteuid() && st.st_uid != 0) {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "auth.tokens_file %s: owned by uid %u, must be owned "
                     "by the daemon's user (uid %u) or root",
                     path, (unsigned)st.st_uid, (unsigned)geteuid());
    goto out;
  }
  if (st.st_mode & 077) {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "auth.tokens_file %s: mode %04o lets group or others "
                     "access it; chmod 600 (or 400) it",
                     path, (unsigned)(st.st_mode & 07777));
    goto out;
  }
  if (st.st_size > (off_t)AUTH_FILE_MAX) {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "auth.tokens_file %s: %lld bytes, more than the %u "
                     "allowed",
                     path, (long long)st.st_size, AUTH_FILE_MAX);
    goto out;
  }
  size = (size_t)st.st_size;
  buf = malloc(size + 1);
  if (!buf) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto out;
  }
  while (have < size) {
    ssize_t r = read(fd, buf + have, size - have);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      rc = ctxd_seterr(e, CTXD_EIO, "auth.tokens_file %s: read: %s", path,
                       strerror(errno));
      goto out;
    }
    if (r == 0) break; /* shrank since fstat: parse what is there */
    have += (size_t)r;
  }
  rc = auth_parse(buf, have, path, out, e);
out:
  if (buf) {
    OPENSSL_cleanse(buf, size); /* no token text left in freed memory */
    free(buf);
  }
  close(fd);
  return rc;
}

int auth_open(const char *path, auth **out, ctxd_error *e) {
  auth *a;
  *out = NULL;
  int rc = load_file(path, &a, e);
  if (rc != 0) return rc;
  a->path = strdup(path);
  if (!a->path) {
    auth_free(a);
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  }
  *out = a;
  return 0;
}

int auth_reload(auth *a, ctxd_error *e) {
  auth *n;
  if (!a->path)
    return ctxd_seterr(e, CTXD_EINVAL, "no token file to reload");
  int rc = load_file(a->path, &n, e);
  if (rc != 0) return rc;
  free(a->ents);
  a->ents = n->ents;
  a->n = n->n;
  n->ents = NULL;
  auth_free(n);
  return 0;
}

size_t auth_count(const auth *a) {
  return a->n;
}

auth_result auth_check(const auth *a, const char *value, size_t len,
                       auth_role *role, const char **name) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  size_t hit = SIZE_MAX;
  if (!value || len == 0) return AUTH_MISSING;
  if (len < 7 || strncasecmp(value, "bearer", 6) != 0 || value[6] != ' ')
    return AUTH_MALFORMED;
  const char *tok = value + 7;
  size_t tl = len - 7;
  while (tl && *tok == ' ') tok++, tl--;
  while (tl && tok[tl - 1] == ' ') tl--;
  if (tl == 0 || tl > AUTH_TOKEN_MAX) return AUTH_MALFORMED;
  for (size_t i = 0; i < tl; i++)
    if ((unsigned char)tok[i] < 0x21 || (unsigned char)tok[i] > 0x7e)
      return AUTH_MALFORMED;
  SHA256((const unsigned char *)tok, tl, d);
  /* Every entry is compared, whichever matches. */
  for (size_t i = 0; i < a->n; i++)
    if (CRYPTO_memcmp(a->ents[i].digest, d, sizeof d) == 0) hit = i;
  OPENSSL_cleanse(d, sizeof d);
  if (hit == SIZE_MAX) return AUTH_UNKNOWN;
  *role = a->ents[hit].role;
  *name = a->ents[hit].name;
  return AUTH_OK;
}

static int has_prefix(const char *s, const char *p) {
  return strncmp(s, p, strlen(p)) == 0;
}

auth_role auth_required_role(const char *path) {
  static const char *const doc_reads[] = {"/ctxd.v1.Documents/Get",
                                          "/ctxd.v1.Documents/List",
                                          "/ctxd.v1.Documents/Chunk"};
  if (has_prefix(path, "/grpc.health.v1.Health/")) return AUTH_ROLE_NONE;
  if (has_prefix(path, "/ctxd.v1.Admin/")) return AUTH_ROLE_ADMIN;
  if (has_prefix(path, "/ctxd.v1.Corpus/")) return AUTH_ROLE_WRITE;
  if (has_prefix(path, "/ctxd.v1.Documents/")) {
    for (size_t i = 0; i < sizeof doc_reads / sizeof doc_reads[0]; i++)
      if (strcmp(path, doc_reads[i]) == 0) return AUTH_ROLE_READ;
    return AUTH_ROLE_WRITE;
  }
  return AUTH_ROLE_READ; /* Retrieval, reflection, unknown paths */
}

const char *auth_role_name(auth_role r) {
  switch (r) {
    case AUTH_ROLE_NONE:
      return "none";
    case AUTH_ROLE_READ:
      return "read";
    case AUTH_ROLE_WRITE:
      return "write";
    case AUTH_ROLE_ADMIN:
      return "admin";
  }
  return "?";
}

void auth_free(auth *a) {
  if (!a) return;
  if (a->ents) OPENSSL_cleanse(a->ents, a->n * sizeof *a->ents);
  free(a->ents);
  free(a->path);
  free(a);
}
