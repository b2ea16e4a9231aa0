/* order_io.c - corpus ordering I/O: the JSONL corpus reader (ids, vectors and
 * line offsets in memory, texts re-read on demand), atomically written output
 * files, JSON writing helpers, the id index and summary.json. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "order_impl.h"
#include "utf8.h"

/* ---- small shared helpers ------------------------------------------------- */

char *order_path_join(const char *dir, const char *name) {
  size_t a = strlen(dir), b = strlen(name);
  char *p = malloc(a + b + 2);
  if (!p) return NULL;
  memcpy(p, dir, a);
  p[a] = '/';
  memcpy(p + a + 1, name, b + 1);
  return p;
}

void order_json_str(FILE *f, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  size_t run = 0;
  putc_unlocked('"', f);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    if (i > run) fwrite(s + run, 1, i - run, f);
    run = i + 1;
    putc_unlocked('\\', f);
    switch (c) {
      case '"': putc_unlocked('"', f); break;
      case '\\': putc_unlocked('\\', f); break;
      case '\n': putc_unlocked('n', f); break;
      case '\t': putc_unlocked('t', f); break;
      case '\r': putc_unlocked('r', f); break;
      default:
        fputs("u00", f);
        putc_unlocked(hex[c >> 4], f);
        putc_unlocked(hex[c & 15], f);
    }
  }
  if (n > run) fwrite(s + run, 1, n - run, f);
  putc_unlocked('"', f);
}

void order_json_num(FILE *f, double v) {
  if (isfinite(v))
    fprintf(f, "%.6f", v);
  else
    fputs("null", f);
}

int order_text(const order_input *in, uint64_t i, const char **text,
               size_t *len, ctxd_error *e) {
  *text = NULL;
  *len = 0;
  if (in->texts) {
    *text = in->texts[i];
    if (*text) *len = in->text_lens ? in->text_lens[i] : strlen(*text);
  } else if (in->get_text) {
    int rc = in->get_text(in->text_arg, i, text, len, e);
    if (rc) return rc;
  }
  size_t bad;
  if (*text && !utf8_valid(*text, *len, &bad))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "document \"%.200s\": text is not valid UTF-8 at byte "
                       "%zu",
                       in->ids[i], bad);
  return 0;
}

/* ---- the id index ----------------------------------------------------------- */

static int idset_alloc(order_idset *s, uint64_t slots, ctxd_error *e) {
  s->slot = malloc(slots * sizeof *s->slot);
  if (!s->slot)
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for an id index of %llu",
                       (unsigned long long)slots);
  memset(s->slot, 0xff, slots * sizeof *s->slot);
  s->mask = slots - 1;
  return 0;
}

int order_idset_init(order_idset *s, uint64_t n, ctxd_error *e) {
  uint64_t slots = 1024;
  while (slots < 2 * n) slots *= 2;
  s->count = 0;
  return idset_alloc(s, slots, e);
}

void order_idset_free(order_idset *s) {
  free(s->slot);
  s->slot = NULL;
}

static uint64_t id_hash(const char *id) {
  return order_hash(0x2545F4914F6CDD1Dull, id, strlen(id));
}

static uint32_t idset_put(order_idset *s, const char *const *ids, uint32_t i) {
  uint64_t h = id_hash(ids[i]) & s->mask;
  for (;;) {
    uint32_t j = s->slot[h];
    if (j == ORDER_NONE) {
      s->slot[h] = i;
      s->count++;
      return ORDER_NONE;
    }
    if (strcmp(ids[j], ids[i]) == 0) return j;
    h = (h + 1) & s->mask;
  }
}

int order_idset_insert(order_idset *s, const char *const *ids, uint32_t i,
                       uint32_t *dup, ctxd_error *e) {
  if (2 * (s->count + 1) > s->mask + 1) {
    order_idset old = *s;
    int rc = idset_alloc(s, (old.mask + 1) * 2, e);
    if (rc) {
      *s = old;
      return rc;
    }
    s->count = 0;
    for (uint64_t h = 0; h <= old.mask; h++)
      if (old.slot[h] != ORDER_NONE) idset_put(s, ids, old.slot[h]);
    free(old.slot);
  }
  *dup = idset_put(s, ids, i);
  return 0;
}

/* ---- atomic files ------------------------------------------------------------ */

static int fsync_dir(const char *dir) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

int order_afile_open_path(order_afile *a, const char *path, ctxd_error *e) {
  memset(a, 0, sizeof *a);
  const char *slash = strrchr(path, '/');
  a->path = strdup(path);
  a->tmp = malloc(strlen(path) + 5);
  a->dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path))
                 : strdup(".");
  if (!a->path || !a->tmp || !a->dir) {
    order_afile_abort(a);
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  }
  sprintf(a->tmp, "%s.tmp", path);
  a->f = fopen(a->tmp, "wb");
  if (!a->f) {
    int err = errno;
    int rc = ctxd_seterr(e, err == ENOSPC ? CTXD_ENOSPC : CTXD_EIO,
                         "cannot create %s: %s", a->tmp, strerror(err));
    order_afile_abort(a);
    return rc;
  }
  setvbuf(a->f, NULL, _IOFBF, 1 << 20);
  return 0;
}

int order_afile_open(order_afile *a, const char *dir, const char *name,
                     ctxd_error *e) {
  char *path = order_path_join(dir, name);
  if (!path) {
    memset(a, 0, sizeof *a);
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  }
  int rc = order_afile_open_path(a, path, e);
  free(path);
  return rc;
}

int order_afile_commit(order_afile *a, ctxd_error *e) {
  int err = 0;
  if (fflush(a->f) != 0 || ferror(a->f))
    err = errno ? errno : EIO;
  else if (fsync(fileno(a->f)) != 0)
    err = errno;
  if (fclose(a->f) != 0 && !err) err = errno;
  a->f = NULL;
  if (!err && rename(a->tmp, a->path) != 0) err = errno;
  if (!err && fsync_dir(a->dir) != 0) err = errno;
  if (err) {
    int rc = ctxd_seterr(e, err == ENOSPC ? CTXD_ENOSPC : CTXD_EIO,
                         "cannot write %s: %s", a->path, strerror(err));
    order_afile_abort(a);
    return rc;
  }
  free(a->tmp);
  a->tmp = NULL;
  order_afile_abort(a);
  return 0;
}

void order_afile_abort(order_afile *a) {
  if (a->f) fclose(a->f);
  if (a->tmp) unlink(a->tmp);
  free(a->tmp);
  free(a->path);
  free(a->dir);
  memset(a, 0, sizeof *a);
}

/* ---- checkpoints ------------------------------------------------------------- */

int order_ckpt_write(const char *path, const char magic[8], const void *hdr,
                     size_t hdr_len, const order_ckpt_part *parts,
                     int nparts, ctxd_error *e) {
  order_afile a;
  int rc = order_afile_open_path(&a, path, e);
  if (rc) return rc;
  uint64_t h = order_hash(0, magic, 8);
  h = order_hash(h, hdr, hdr_len);
  fwrite(magic, 1, 8, a.f);
  fwrite(hdr, 1, hdr_len, a.f);
  for (int i = 0; i < nparts; i++) {
    h = order_hash(h, parts[i].p, parts[i].bytes);
    fwrite(parts[i].p, 1, parts[i].bytes, a.f);
  }
  fwrite(&h, sizeof h, 1, a.f);
  rc = order_afile_commit(&a, e);
  order_afile_abort(&a);
  return rc;
}

int order_ckpt_open(order_ckpt_reader *r, const char *path,
                    const char magic[8], void *hdr, size_t hdr_len,
                    ctxd_error *e) {
  char m[8];
  r->path = path;
  r->f = fopen(path, "rb");
  if (!r->f)
    return ctxd_seterr(e, errno == ENOENT ? CTXD_ENOTFOUND : CTXD_EIO,
                       "cannot open %s: %s", path, strerror(errno));
  if (fread(m, 1, 8, r->f) != 8 || memcmp(m, magic, 8) != 0 ||
      fread(hdr, 1, hdr_len, r->f) != hdr_len) {
    order_ckpt_close(r);
    return ctxd_seterr(e, CTXD_ECORRUPT, "%s: not a %.8s checkpoint", path,
                       magic);
  }
  r->h = order_hash(order_hash(0, magic, 8), hdr, hdr_len);
  return 0;
}

int order_ckpt_read_parts(order_ckpt_reader *r, const order_ckpt_part *parts,
                          int nparts, ctxd_error *e) {
  uint64_t want = 0, got;
  long pos = ftell(r->f);
  struct stat st;
  for (int i = 0; i < nparts; i++) want += parts[i].bytes;
  if (pos < 0 || fstat(fileno(r->f), &st) != 0 ||
      (uint64_t)st.st_size != (uint64_t)pos + want + sizeof got)
    return ctxd_seterr(e, CTXD_ECORRUPT, "%s: size %lld, expected %llu", r->path,
                       (long long)st.st_size,
                       (unsigned long long)((uint64_t)pos + want + sizeof got));
  for (int i = 0; i < nparts; i++) {
    if (fread(parts[i].p, 1, parts[i].bytes, r->f) != parts[i].bytes)
      return ctxd_seterr(e, CTXD_EIO, "%s: short read", r->path);
    r->h = order_hash(r->h, parts[i].p, parts[i].bytes);
  }
  if (fread(&got, sizeof got, 1, r->f) != 1 || got != r->h)
    return ctxd_seterr(e, CTXD_ECORRUPT, "%s: checksum mismatch", r->path);
  return 0;
}

void order_ckpt_close(order_ckpt_reader *r) {
  if (r->f) fclose(r->f);
  r->f = NULL;
}

/* ---- the JSONL reader -------------------------------------------------------- */

#define ARENA_BLOCK (1u << 20)

typedef struct arena_block {
  struct arena_block *next;
  size_t used, cap;
  char data[];
} arena_block;

struct order_jsonl {
  int fd;
  char *path;
  uint64_t n, cap;
  uint32_t dim;
  char **ids;
  uint64_t *off;   /* byte offset of each document's line */
  uint32_t *len;   /* its length (without the newline) */
  uint64_t *line;  /* its 1-based line number */
  uint8_t *has_vector;
  float *vectors;  /* cap x dim once a dimension is known */
  uint64_t dim_line; /* the line that fixed dim (0: read_opts) */
  arena_block *arena;
  order_idset ids_index;
  char tag[PATH_MAX + 64];
  double seconds;
  /* get_text's buffers */
  char *lbuf, *tbuf;
  size_t lcap, tcap;
};

static char *arena_copy(order_jsonl *r, const char *s, size_t n) {
  arena_block *b = r->arena;
  if (!b || b->cap - b->used < n + 1) {
    size_t cap = n + 1 > ARENA_BLOCK ? n + 1 : ARENA_BLOCK;
    b = malloc(sizeof *b + cap);
    if (!b) return NULL;
    b->next = r->arena;
    b->used = 0;
    b->cap = cap;
    r->arena = b;
  }
  char *p = b->data + b->used;
  memcpy(p, s, n);
  p[n] = 0;
  b->used += n + 1;
  return p;
}

static int grow(void **p, size_t elem, uint64_t cap) {
  void *q = realloc(*p, elem * cap);
  if (!q) return -1;
  *p = q;
  return 0;
}

static int jsonl_reserve(order_jsonl *r, ctxd_error *e) {
  if (r->n < r->cap) return 0;
  uint64_t cap = r->cap ? r->cap * 2 : 4096;
  if (grow((void **)&r->ids, sizeof *r->ids, cap) ||
      grow((void **)&r->off, sizeof *r->off, cap) ||
      grow((void **)&r->len, sizeof *r->len, cap) ||
      grow((void **)&r->line, sizeof *r->line, cap) ||
      grow((void **)&r->has_vector, 1, cap) ||
      (r->vectors &&
       grow((void **)&r->vectors, sizeof(float) * r->dim, cap)))
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory after %llu documents",
                       (unsigned long long)r->n);
  r->cap = cap;
  return 0;
}

/* Parse one line (document r->n) into the reader's arrays. */
static int jsonl_line(order_jsonl *r, const char *s, size_t n, uint64_t lineno,
                      uint64_t off, ctxd_error *e) {
  json_error_t jerr;
  json_t *doc = NULL;
  int rc = 0;
  char num[32];
  const char *id;
  size_t id_len;
  doc = json_loadb(s, n, 0, &jerr);
  if (!doc) {
    rc = ctxd_seterr(e, CTXD_EINVAL, "line %llu: bad JSON: %s (column %d)",
                     (unsigned long long)lineno, jerr.text, jerr.column);
    goto out;
  }
  if (!json_is_object(doc)) {
    rc = ctxd_seterr(e, CTXD_EINVAL, "line %llu: not a JSON object",
                     (unsigned long long)lineno);
    goto out;
  }
  json_t *jid = json_object_get(doc, "id");
  json_t *jtext = json_object_get(doc, "text");
  json_t *jvec = json_object_get(doc, "vector");
  if (!jid) {
    rc = ctxd_seterr(e, CTXD_EINVAL, "line %llu: no id",
                     (unsigned long long)lineno);
    goto out;
  }
  if (json_is_string(jid)) {
    id = json_string_value(jid);
    id_len = json_string_length(jid);
  } else if (json_is_integer(jid)) {
    snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(jid));
    id = num;
    id_len = strlen(num);
  } else {
    rc = ctxd_seterr(e, CTXD_EINVAL, "line %llu: id is not a string or integer",
                     (unsigned long long)lineno);
    goto out;
  }
  if (id_len == 0 || id_len > ORDER_ID_MAX || memchr(id, 0, id_len)) {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "line %llu: id must be 1..%d bytes without NUL (got %zu)",
                     (unsigned long long)lineno, ORDER_ID_MAX, id_len);
    goto out;
  }
  if (jtext && !json_is_string(jtext) && !json_is_null(jtext)) {
    rc = ctxd_seterr(e, CTXD_EINVAL, "line %llu: text is not a string",
                     (unsigned long long)lineno);
    goto out;
  }
  int has_text = json_is_string(jtext);
  if (jvec && json_is_null(jvec)) jvec = NULL;
  if (jvec && !json_is_array(jvec)) {
    rc = ctxd_seterr(e, CTXD_EINVAL, "line %llu: vector is not an array",
                     (unsigned long long)lineno);
    goto out;
  }
  if (!has_text && !jvec) {
    rc = ctxd_seterr(e, CTXD_EINVAL, "line %llu: neither text nor vector",
                     (unsigned long long)lineno);
    goto out;
  }
  if ((rc = jsonl_reserve(r, e))) goto out;
  uint64_t i = r->n;
  if (jvec) {
    size_t d = json_array_size(jvec);
    if (r->dim == 0) {
      if (d == 0 || d > 65536) {
        rc = ctxd_seterr(e, CTXD_EINVAL,
                         "line %llu: vector has %zu numbers (1..65536 allowed)",
                         (unsigned long long)lineno, d);
        goto out;
      }
      r->dim = (uint32_t)d;
      r->dim_line = lineno;
    }
    if (d != r->dim) {
      if (r->dim_line)
        rc = ctxd_seterr(e, CTXD_EINVAL,
                         "line %llu: vector has %zu numbers, expected %u (as "
                         "on line %llu)",
                         (unsigned long long)lineno, d, r->dim,
                         (unsigned long long)r->dim_line);
      else
        rc = ctxd_seterr(e, CTXD_EINVAL,
                         "line %llu: vector has %zu numbers, expected %u",
                         (unsigned long long)lineno, d, r->dim);
      goto out;
    }
    if (!r->vectors) {
      r->vectors = calloc(r->cap, sizeof(float) * r->dim);
      if (!r->vectors) {
        rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for vectors");
        goto out;
      }
    }
    float *row = r->vectors + i * r->dim;
    for (size_t j = 0; j < d; j++) {
      json_t *x = json_array_get(jvec, j);
      double v = json_number_value(x);
      if (!json_is_number(x) || !isfinite(v) || fabs(v) > 3.4e38) {
        rc = ctxd_seterr(e, CTXD_EINVAL,
                         "line %llu: vector element %zu is not a finite number",
                         (unsigned long long)lineno, j);
        goto out;
      }
      row[j] = (float)v;
    }
  } else if (r->vectors) {
    memset(r->vectors + i * r->dim, 0, sizeof(float) * r->dim);
  }
  r->ids[i] = arena_copy(r, id, id_len);
  if (!r->ids[i]) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for ids");
    goto out;
  }
  uint32_t first;
  if ((rc = order_idset_insert(&r->ids_index, (const char *const *)r->ids,
                               (uint32_t)i, &first, e)))
    goto out;
  if (first != ORDER_NONE) {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "line %llu: duplicate id \"%.200s\" (first on line %llu)",
                     (unsigned long long)lineno, r->ids[i],
                     (unsigned long long)r->line[first]);
    goto out;
  }
  r->off[i] = off;
  r->len[i] = (uint32_t)n;
  r->line[i] = lineno;
  r->has_vector[i] = jvec != NULL;
  r->n++;
out:
  json_decref(doc);
  return rc;
}

static int is_blank(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return 0;
  return 1;
}

static int jsonl_get_text(void *arg, uint64_t i, const char **text,
                          size_t *len, ctxd_error *e) {
  order_jsonl *r = arg;
  json_t *doc = NULL;
  json_error_t jerr;
  int rc = 0;
  size_t n = r->len[i];
  if (n > r->lcap) {
    char *b = realloc(r->lbuf, n);
    if (!b) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    r->lbuf = b;
    r->lcap = n;
  }
  for (size_t got = 0; got < n;) {
    ssize_t k = pread(r->fd, r->lbuf + got, n - got, (off_t)(r->off[i] + got));
    if (k <= 0) {
      return ctxd_seterr(e, CTXD_EIO, "%s: cannot re-read line %llu: %s",
                         r->path, (unsigned long long)r->line[i],
                         k == 0 ? "file shrank" : strerror(errno));
    }
    got += (size_t)k;
  }
  doc = json_loadb(r->lbuf, n, 0, &jerr);
  json_t *t = doc ? json_object_get(doc, "text") : NULL;
  if (!doc) {
    rc = ctxd_seterr(e, CTXD_EIO, "%s: line %llu changed since it was read",
                     r->path, (unsigned long long)r->line[i]);
    goto out;
  }
  *text = NULL;
  *len = 0;
  if (json_is_string(t)) {
    size_t tl = json_string_length(t);
    if (tl + 1 > r->tcap) {
      char *b = realloc(r->tbuf, tl + 1);
      if (!b) {
        rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
        goto out;
      }
      r->tbuf = b;
      r->tcap = tl + 1;
    }
    memcpy(r->tbuf, json_string_value(t), tl + 1);
    *text = r->tbuf;
    *len = tl;
  }
out:
  json_decref(doc);
  return rc;
}

int order_read_jsonl(const char *path, const order_read_opts *o,
                     order_jsonl **out, ctxd_error *e) {
  order_read_opts dflt = {0};
  order_jsonl *r = NULL;
  char *buf = NULL;
  int rc = 0;
  double t0 = order_now();
  if (!o) o = &dflt;
  uint64_t max_docs = o->max_docs && o->max_docs < ORDER_DOCS_MAX
                          ? o->max_docs
                          : ORDER_DOCS_MAX;
  *out = NULL;
  r = calloc(1, sizeof *r);
  if (!r) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  r->fd = open(path, O_RDONLY | O_CLOEXEC);
  if (r->fd < 0) {
    int err = errno;
    free(r);
    return ctxd_seterr(e, err == ENOENT ? CTXD_ENOTFOUND : CTXD_EIO,
                       "cannot open %s: %s", path, strerror(err));
  }
  r->dim = o->dim;
  struct stat st;
  if (fstat(r->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    rc = ctxd_seterr(e, CTXD_EIO, "%s is not a regular file", path);
    goto fail;
  }
  snprintf(r->tag, sizeof r->tag, "%s:%lld:%lld.%09ld", path,
           (long long)st.st_size, (long long)st.st_mtim.tv_sec,
           st.st_mtim.tv_nsec);
  r->path = strdup(path);
  if (!r->path || (rc = order_idset_init(&r->ids_index, 0, e))) {
    rc = rc ? rc : ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto fail;
  }
  /* A window over the file: [start, fill) holds unparsed bytes at file
   * offset `base`. */
  size_t cap = 4 << 20, start = 0, fill = 0;
  /* a small file gets a buffer its size (plus one byte to see EOF), not
   * 4 MiB; a line longer than the buffer still grows it below */
  if ((uint64_t)st.st_size < cap - 1) cap = (size_t)st.st_size + 1;
  uint64_t base = 0, lineno = 0, last_report = 0;
  buf = malloc(cap);
  if (!buf) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto fail;
  }
  int eof = 0;
  while (!eof || start < fill) {
    char *nl = memchr(buf + start, '\n', fill - start);
    if (!nl && !eof) {
      /* need more bytes: compact, grow when one line fills the buffer */
      if (fill - start > ORDER_LINE_MAX) {
        rc = ctxd_seterr(e, CTXD_EINVAL,
                         "line %llu: longer than %zu bytes",
                         (unsigned long long)lineno + 1, ORDER_LINE_MAX);
        goto fail;
      }
      if (start > 0) {
        memmove(buf, buf + start, fill - start);
        base += start;
        fill -= start;
        start = 0;
      }
      if (fill == cap) {
        size_t ncap = cap * 2;
        char *nb = realloc(buf, ncap);
        if (!nb) {
          rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for a long line");
          goto fail;
        }
        buf = nb;
        cap = ncap;
      }
      ssize_t k = read(r->fd, buf + fill, cap - fill);
      if (k < 0) {
        if (errno == EINTR) continue;
        rc = ctxd_seterr(e, CTXD_EIO, "cannot read %s: %s", path,
                         strerror(errno));
        goto fail;
      }
      if (k == 0) eof = 1;
      fill += (size_t)k;
      continue;
    }
    size_t len = nl ? (size_t)(nl - (buf + start)) : fill - start;
    lineno++;
    if (len > ORDER_LINE_MAX) {
      rc = ctxd_seterr(e, CTXD_EINVAL, "line %llu: longer than %zu bytes",
                       (unsigned long long)lineno, ORDER_LINE_MAX);
      goto fail;
    }
    if (!is_blank(buf + start, len)) {
      if (r->n >= max_docs) {
        rc = ctxd_seterr(e, CTXD_ELIMIT,
                         "line %llu: more than %llu documents",
                         (unsigned long long)lineno,
                         (unsigned long long)max_docs);
        goto fail;
      }
      if ((rc = jsonl_line(r, buf + start, len, lineno, base + start, e)))
        goto fail;
    }
    start += len + (nl ? 1 : 0);
    if ((lineno & 4095) == 0) {
      if (order_cancelled(o->cancel)) {
        rc = ctxd_seterr(e, CTXD_ECANCELED, "cancelled at line %llu",
                         (unsigned long long)lineno);
        goto fail;
      }
      if (o->progress && base + start - last_report >= (16u << 20)) {
        last_report = base + start;
        o->progress(o->progress_arg, ORDER_PHASE_READ, base + start,
                    (uint64_t)st.st_size);
      }
    }
  }
  if (o->progress)
    o->progress(o->progress_arg, ORDER_PHASE_READ, (uint64_t)st.st_size,
                (uint64_t)st.st_size);
  free(buf);
  r->seconds = order_now() - t0;
  *out = r;
  return 0;
fail:
  free(buf);
  order_jsonl_free(r);
  return rc;
}

void order_jsonl_input(order_jsonl *r, order_input *in) {
  memset(in, 0, sizeof *in);
  in->n = r->n;
  in->ids = (const char *const *)r->ids;
  if (r->vectors) {
    in->dim = r->dim;
    in->vectors = r->vectors;
    in->has_vector = r->has_vector;
  }
  in->get_text = jsonl_get_text;
  in->text_arg = r;
  in->input_tag = r->tag;
  in->read_seconds = r->seconds;
}

uint64_t order_jsonl_line(const order_jsonl *r, uint64_t i) {
  return i < r->n ? r->line[i] : 0;
}

void order_jsonl_free(order_jsonl *r) {
  if (!r) return;
  if (r->fd >= 0) close(r->fd);
  while (r->arena) {
    arena_block *b = r->arena;
    r->arena = b->next;
    free(b);
  }
  order_idset_free(&r->ids_index);
  free(r->path);
  free(r->ids);
  free(r->off);
  free(r->len);
  free(r->line);
  free(r->has_vector);
  free(r->vectors);
  free(r->lbuf);
  free(r->tbuf);
  free(r);
}

/* ---- summary.json ------------------------------------------------------------ */

static json_t *num_or_null(double v) {
  return isfinite(v) ? json_real(v) : json_null();
}

static void set_num(json_t *o, const char *k, double v) {
  json_object_set_new(o, k, num_or_null(v));
}

static void set_int(json_t *o, const char *k, uint64_t v) {
  json_object_set_new(o, k, json_integer((json_int_t)v));
}

int order_write_summary(const order_summary *s, const order_opts *o,
                        const char *dir, ctxd_error *e) {
  order_afile a = {0};
  int rc;
  json_t *j = json_object(), *knn = json_object(), *t = json_object(),
         *files = json_object();
  if (!j || !knn || !t || !files) {
    json_decref(knn);
    json_decref(t);
    json_decref(files);
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for summary.json");
    goto fail;
  }
  json_object_set_new(j, "mode", json_string(order_mode_name(s->mode)));
  set_int(j, "documents", s->documents);
  set_int(j, "ordered", s->ordered);
  set_int(j, "duplicates", s->duplicates);
  set_int(j, "jumps", s->jumps);
  set_int(j, "edges", s->edges);
  set_int(j, "windows", s->windows);
  set_int(j, "tokens", s->tokens);
  if (s->mode == ORDER_MODE_DECOMPOSE) {
    json_t *b = json_object();
    for (int i = 0; i <= ORDER_LOG2_MAX && b; i++) {
      char key[16];
      if (!s->bucket_pieces[i]) continue;
      snprintf(key, sizeof key, "%u", 1u << i);
      set_int(b, key, s->bucket_pieces[i]);
    }
    json_object_set_new(j, "buckets", b ? b : json_null());
    set_int(j, "dropped_tokens", s->dropped_tokens);
  }
  set_num(j, "adjacent_similarity", s->adjacent_similarity);
  set_num(j, "random_adjacent_similarity", s->random_adjacent_similarity);
  set_num(j, "window_similarity", s->window_similarity);
  set_num(j, "random_window_similarity", s->random_window_similarity);
  json_object_set_new(knn, "method", json_string(s->knn_method));
  set_int(knn, "k", s->k);
  set_int(knn, "nprobe", s->nprobe);
  set_num(knn, "recall", s->knn_recall);
  json_object_set_new(j, "knn", knn);
  set_int(j, "seed", o->seed);
  set_num(j, "dup_cosine", o->dup_cosine);
  set_num(j, "dup_jaccard", o->dup_jaccard > 0 ? o->dup_jaccard : NAN);
  set_int(j, "window_tokens", o->window_tokens);
  json_object_set_new(j, "separator",
                      json_string(o->separator ? o->separator : ""));
  json_object_set_new(
      j, "tokenizer",
      json_string((o->tokenizer ? o->tokenizer : tok_estimator())->name));
  set_num(t, "read", s->t_read);
  set_num(t, "embed", s->t_embed);
  set_num(t, "knn", s->t_knn);
  set_num(t, "dedup", s->t_dedup);
  set_num(t, "traverse", s->t_traverse);
  set_num(t, "pack", s->t_pack);
  set_num(t, "total", s->t_read + s->t_total);
  json_object_set_new(j, "timings", t);
  json_object_set_new(j, "resumed_vectors", json_boolean(s->resumed_vectors));
  json_object_set_new(j, "resumed_knn", json_boolean(s->resumed_knn));
  json_object_set_new(files, "order", json_string(ORDER_FILE_ORDER));
  if (s->mode != ORDER_MODE_ORDER)
    json_object_set_new(files, "windows", json_string(ORDER_FILE_WINDOWS));
  json_object_set_new(files, "duplicates", json_string(ORDER_FILE_DUPLICATES));
  json_object_set_new(j, "files", files);
  if ((rc = order_afile_open(&a, dir, ORDER_FILE_SUMMARY, e))) goto fail;
  if (json_dumpf(j, a.f, JSON_INDENT(2) | JSON_REAL_PRECISION(6)) != 0) {
    rc = ctxd_seterr(e, CTXD_EIO, "cannot write %s", ORDER_FILE_SUMMARY);
    goto fail;
  }
  fputc('\n', a.f);
  rc = order_afile_commit(&a, e);
fail:
  order_afile_abort(&a);
  json_decref(j);
  return rc;
}
