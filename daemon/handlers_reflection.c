/* handlers_reflection.c - gRPC server reflection, v1 and v1alpha (the two
 * packages share one wire format, so one implementation serves both).
 *
 * The source of truth is the FileDescriptorSet embedded at build time
 * (proto/descriptor_set.h, built with --include_imports). On first use it
 * is walked once with the small protobuf reader of grpc_wire.h into a table
 * of files (raw FileDescriptorProto bytes, name, dependencies) and a table
 * of fully qualified symbols (messages and enums at any depth, services,
 * methods) pointing at their file. Answers carry the raw bytes of the file
 * and of every file it depends on, transitively. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../index/err.h"
#include "descriptor_set.h"
#include "grpc_wire.h"
#include "handlers.h"

typedef struct rfile {
  const uint8_t *raw; /* FileDescriptorProto bytes inside the embedded set */
  size_t raw_len;
  char *name;
  char **deps;
  size_t n_deps;
} rfile;

typedef struct rsym {
  char *name; /* fully qualified, no leading dot */
  size_t file;
} rsym;

static struct {
  rfile *files;
  size_t n_files;
  rsym *syms;
  size_t n_syms, cap_syms;
  char **services;
  size_t n_services, cap_services;
  int ok;
} R;

static pthread_once_t r_once = PTHREAD_ONCE_INIT;

static char *dup_n(const uint8_t *p, size_t n) {
  char *s = malloc(n + 1);
  if (!s) return NULL;
  memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

/* "pkg" + "." + name, or name alone when the scope is empty. */
static char *qualify(const char *scope, const uint8_t *name, size_t n) {
  size_t sl = strlen(scope);
  char *s = malloc(sl + 1 + n + 1);
  if (!s) return NULL;
  if (sl) {
    memcpy(s, scope, sl);
    s[sl++] = '.';
  }
  memcpy(s + sl, name, n);
  s[sl + n] = '\0';
  return s;
}

static int add_sym(char *name, size_t file) {
  if (!name) return -1;
  if (R.n_syms == R.cap_syms) {
    size_t cap = R.cap_syms ? R.cap_syms * 2 : 64;
    rsym *n = realloc(R.syms, cap * sizeof *n);
    if (!n) return -1;
    R.syms = n;
    R.cap_syms = cap;
  }
  R.syms[R.n_syms].name = name;
  R.syms[R.n_syms].file = file;
  R.n_syms++;
  return 0;
}

/* The name (field 1) of a descriptor message. */
static int desc_name(const uint8_t *p, size_t n, const uint8_t **name,
                     size_t *len) {
  pbw_reader r;
  pbw_field f;
  int rc;
  pbw_init(&r, p, n);
  while ((rc = pbw_next(&r, &f)) == 1)
    if (f.num == 1 && f.wire_type == 2) {
      *name = f.data;
      *len = f.len;
      return 0;
    }
  return -1;
}

/* DescriptorProto: register it, its nested types (3) and enums (4). */
static int walk_message(const char *scope, const uint8_t *p, size_t n,
                        size_t file) {
  const uint8_t *nm;
  size_t nl;
  pbw_reader r;
  pbw_field f;
  int rc;
  if (desc_name(p, n, &nm, &nl) != 0) return -1;
  char *full = qualify(scope, nm, nl);
  if (add_sym(full, file) != 0) return -1;
  pbw_init(&r, p, n);
  while ((rc = pbw_next(&r, &f)) == 1) {
    if (f.wire_type != 2) continue;
    if (f.num == 3) {
      if (walk_message(full, f.data, f.len, file) != 0) return -1;
    } else if (f.num == 4) {
      if (desc_name(f.data, f.len, &nm, &nl) != 0 ||
          add_sym(qualify(full, nm, nl), file) != 0)
        return -1;
    }
  }
  return rc;
}

/* ServiceDescriptorProto: the service and "pkg.Svc.Method" for each method. */
static int walk_service(const char *scope, const uint8_t *p, size_t n,
                        size_t file) {
  const uint8_t *nm;
  size_t nl;
  pbw_reader r;
  pbw_field f;
  int rc;
  if (desc_name(p, n, &nm, &nl) != 0) return -1;
  char *full = qualify(scope, nm, nl);
  if (add_sym(full, file) != 0) return -1;
  if (R.n_services == R.cap_services) {
    size_t cap = R.cap_services ? R.cap_services * 2 : 16;
    char **s = realloc(R.services, cap * sizeof *s);
    if (!s) return -1;
    R.services = s;
    R.cap_services = cap;
  }
  R.services[R.n_services++] = full;
  pbw_init(&r, p, n);
  while ((rc = pbw_next(&r, &f)) == 1)
    if (f.num == 2 && f.wire_type == 2) {
      if (desc_name(f.data, f.len, &nm, &nl) != 0 ||
          add_sym(qualify(full, nm, nl), file) != 0)
        return -1;
    }
  return rc;
}

static int walk_file(const uint8_t *p, size_t n, size_t idx) {
  rfile *fl = &R.files[idx];
  pbw_reader r;
  pbw_field f;
  int rc;
  char *pkg = NULL;
  fl->raw = p;
  fl->raw_len = n;
  /* Pass 1: name, package, dependencies. */
  pbw_init(&r, p, n);
  while ((rc = pbw_next(&r, &f)) == 1) {
    if (f.wire_type != 2) continue;
    if (f.num == 1) {
      free(fl->name);
      fl->name = dup_n(f.data, f.len);
    } else if (f.num == 2) {
      free(pkg);
      pkg = dup_n(f.data, f.len);
    } else if (f.num == 3) {
      char **d = realloc(fl->deps, (fl->n_deps + 1) * sizeof *d);
      if (!d) goto fail;
      fl->deps = d;
      if (!(d[fl->n_deps++] = dup_n(f.data, f.len))) goto fail;
    }
  }
  if (rc != 0 || !fl->name) goto fail;
  /* Pass 2: symbols. */
  const char *scope = pkg ? pkg : "";
  pbw_init(&r, p, n);
  while ((rc = pbw_next(&r, &f)) == 1) {
    const uint8_t *nm;
    size_t nl;
    if (f.wire_type != 2) continue;
    if (f.num == 4) {
      if (walk_message(scope, f.data, f.len, idx) != 0) goto fail;
    } else if (f.num == 5) {
      if (desc_name(f.data, f.len, &nm, &nl) != 0 ||
          add_sym(qualify(scope, nm, nl), idx) != 0)
        goto fail;
    } else if (f.num == 6) {
      if (walk_service(scope, f.data, f.len, idx) != 0) goto fail;
    }
  }
  if (rc != 0) goto fail;
  free(pkg);
  return 0;
fail:
  free(pkg);
  return -1;
}

static void reflection_load(void) {
  pbw_reader r;
  pbw_field f;
  size_t n = 0;
  int rc;
  pbw_init(&r, ctxd_descriptor_set, ctxd_descriptor_set_len);
  while ((rc = pbw_next(&r, &f)) == 1)
    if (f.num == 1 && f.wire_type == 2) n++;
  if (rc != 0) return;
  R.files = calloc(n ? n : 1, sizeof *R.files);
  if (!R.files) return;
  pbw_init(&r, ctxd_descriptor_set, ctxd_descriptor_set_len);
  while ((rc = pbw_next(&r, &f)) == 1)
    if (f.num == 1 && f.wire_type == 2) {
      if (walk_file(f.data, f.len, R.n_files) != 0) return;
      R.n_files++;
    }
  R.ok = 1;
}

static long find_file(const char *name, size_t n) {
  for (size_t i = 0; i < R.n_files; i++)
    if (strlen(R.files[i].name) == n && memcmp(R.files[i].name, name, n) == 0)
      return (long)i;
  return -1;
}

static long find_symbol(const char *name, size_t n) {
  if (n && name[0] == '.') {
    name++;
    n--;
  }
  for (size_t i = 0; i < R.n_syms; i++)
    if (strlen(R.syms[i].name) == n && memcmp(R.syms[i].name, name, n) == 0)
      return (long)R.syms[i].file;
  return -1;
}

/* ------------------------------------------------------------ encoding */

typedef struct rbuf {
  uint8_t *p;
  size_t len, cap;
  int oom;
} rbuf;

static void rb_put(rbuf *b, const void *p, size_t n) {
  if (b->oom) return;
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 256;
    while (cap < b->len + n) cap *= 2;
    uint8_t *q = realloc(b->p, cap);
    if (!q) {
      b->oom = 1;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, p, n);
  b->len += n;
}

static void rb_varint(rbuf *b, uint64_t v) {
  uint8_t tmp[10];
  rb_put(b, tmp, pbw_put_varint(tmp, v));
}

/* A length-delimited field. */
static void rb_bytes(rbuf *b, uint32_t field, const void *p, size_t n) {
  rb_varint(b, (uint64_t)field << 3 | 2);
  rb_varint(b, n);
  rb_put(b, p, n);
}

/* Add file `idx` and, depth first, everything it imports (each once). */
static void add_file_closure(rbuf *b, size_t idx, unsigned char *seen) {
  if (seen[idx]) return;
  seen[idx] = 1;
  rb_bytes(b, 1, R.files[idx].raw, R.files[idx].raw_len);
  for (size_t i = 0; i < R.files[idx].n_deps; i++) {
    long d = find_file(R.files[idx].deps[i], strlen(R.files[idx].deps[i]));
    if (d >= 0) add_file_closure(b, (size_t)d, seen);
  }
}

static void error_response(rbuf *inner, int code, const char *what,
                           const uint8_t *name, size_t n) {
  rbuf e = {0};
  char msg[600];
  int ml = snprintf(msg, sizeof msg, "%s not found: %.*s", what,
                    (int)(n > 400 ? 400 : n), (const char *)name);
  rb_varint(&e, 1 << 3 | 0);
  rb_varint(&e, (uint64_t)code);
  rb_bytes(&e, 2, msg, (size_t)ml);
  rb_bytes(inner, 7, e.p, e.len);
  inner->oom |= e.oom;
  free(e.p);
}

static void reflection_on_message(rpc_call *c, const uint8_t *msg,
                                  size_t len) {
  pbw_reader r;
  pbw_field f, req = {0};
  rbuf out = {0}, body = {0};
  int rc;
  pthread_once(&r_once, reflection_load);
  if (!R.ok) {
    rpc_finish(c, GRPC_INTERNAL, "embedded descriptor set is unreadable");
    return;
  }
  pbw_init(&r, msg, len);
  while ((rc = pbw_next(&r, &f)) == 1)
    if (f.num >= 3 && f.num <= 7) req = f;
  if (rc != 0 || (req.num && req.wire_type != 2)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed ServerReflectionRequest");
    return;
  }
  switch (req.num) {
    case 3:   /* file_by_filename */
    case 4: { /* file_containing_symbol */
      long i = req.num == 3 ? find_file((const char *)req.data, req.len)
                            : find_symbol((const char *)req.data, req.len);
      if (i < 0) {
        error_response(&body, GRPC_NOT_FOUND, req.num == 3 ? "file" : "symbol",
                       req.data, req.len);
      } else {
        /* The file and everything it imports, each once. */
        unsigned char *seen = calloc(R.n_files, 1);
        rbuf fdr = {0};
        if (seen) add_file_closure(&fdr, (size_t)i, seen);
        rb_bytes(&body, 4, fdr.p, fdr.len);
        body.oom |= fdr.oom || !seen;
        free(fdr.p);
        free(seen);
      }
      break;
    }
    case 5: /* file_containing_extension: ctxd defines no extensions */
      error_response(&body, GRPC_NOT_FOUND, "extension", (const uint8_t *)"",
                     0);
      break;
    case 6: { /* all_extension_numbers_of_type */
      if (find_symbol((const char *)req.data, req.len) < 0) {
        error_response(&body, GRPC_NOT_FOUND, "type", req.data, req.len);
      } else {
        rbuf en = {0};
        const uint8_t *nm = req.data;
        size_t nl = req.len;
        if (nl && nm[0] == '.') {
          nm++;
          nl--;
        }
        rb_bytes(&en, 1, nm, nl);
        rb_bytes(&body, 5, en.p, en.len);
        body.oom |= en.oom;
        free(en.p);
      }
      break;
    }
    case 7: { /* list_services */
      rbuf ls = {0};
      for (size_t i = 0; i < R.n_services; i++) {
        rbuf sr = {0};
        rb_bytes(&sr, 1, R.services[i], strlen(R.services[i]));
        rb_bytes(&ls, 1, sr.p, sr.len);
        ls.oom |= sr.oom;
        free(sr.p);
      }
      rb_bytes(&body, 6, ls.p, ls.len);
      body.oom |= ls.oom;
      free(ls.p);
      break;
    }
    default:
      error_response(&body, GRPC_INVALID_ARGUMENT, "request kind",
                     (const uint8_t *)"", 0);
      break;
  }
  /* ServerReflectionResponse: original_request (2), then the answer. */
  rb_bytes(&out, 2, msg, len);
  rb_put(&out, body.p, body.len);
  if (out.oom || body.oom)
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
  else
    rpc_send(c, out.p, out.len);
  free(out.p);
  free(body.p);
}

static void reflection_on_half_close(rpc_call *c) {
  rpc_finish(c, GRPC_OK, NULL);
}

const rpc_method h_reflection_v1 = {
    .path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    .kind = RPC_BIDI,
    .on_message = reflection_on_message,
    .on_half_close = reflection_on_half_close,
};

const rpc_method h_reflection_v1alpha = {
    .path = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    .kind = RPC_BIDI,
    .on_message = reflection_on_message,
    .on_half_close = reflection_on_half_close,
};
