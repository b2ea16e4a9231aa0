/* backup.c - backup manifests (JSON through jansson, SHA-256 through
 * OpenSSL's libcrypto), their check, and the offline restore (see
 * backup.h). Built into libctxd and, on its own with err.c, into ctxctl. */
#include "backup.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DATA_FILE "data.mdb"
#define INDEX_DIR "index"
#define RESTORING_SUFFIX ".restoring"

void backup_manifest_free(backup_manifest *m) {
  if (!m) return;
  free(m->files);
  free(m);
}

static int io_code(int err) {
  return err == ENOSPC || err == EDQUOT ? CTXD_ENOSPC : CTXD_EIO;
}

/* Read fd to its end, hashing it (unless hex is NULL) and, when out >= 0,
 * writing it there. *size and hex receive the length and the SHA-256.
 * `src`/`dst` name the files in messages. */
static int hash_copy(int fd, const char *src, int out, const char *dst,
                     uint64_t *size, char hex[65], ctxd_error *e) {
  char *b = malloc(1 << 16);
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int rc = 0;
  *size = 0;
  if (!b || (hex && (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)))) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory hashing %s", src);
    goto done;
  }
  for (;;) {
    ssize_t n = read(fd, b, 1 << 16);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      rc = ctxd_seterr(e, CTXD_EIO, "reading %s: %s", src, strerror(errno));
      goto done;
    }
    if (n == 0) break;
    if (hex) EVP_DigestUpdate(md, b, (size_t)n);
    *size += (uint64_t)n;
    for (ssize_t off = 0; out >= 0 && off < n;) {
      ssize_t w = write(out, b + off, (size_t)(n - off));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) {
        rc = ctxd_seterr(e, io_code(errno), "writing %s: %s", dst,
                         strerror(errno));
        goto done;
      }
      off += w;
    }
  }
  if (hex) {
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned dl = 0;
    EVP_DigestFinal_ex(md, d, &dl);
    for (unsigned i = 0; i < dl && i < 32; i++)
      snprintf(hex + 2 * i, 3, "%02x", d[i]);
    hex[64] = '\0';
  }
done:
  EVP_MD_CTX_free(md);
  free(b);
  return rc;
}

static int hash_file(const char *path, uint64_t *size, char hex[65],
                     ctxd_error *e) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return ctxd_seterr(e, errno == ENOENT ? CTXD_ENOTFOUND : CTXD_EIO,
                       "%s: %s", path, strerror(errno));
  int rc = hash_copy(fd, path, -1, NULL, size, hex, e);
  close(fd);
  return rc;
}

int backup_fsync_dir(const char *dir, ctxd_error *e) {
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || fsync(fd) != 0) {
    int err = errno;
    if (fd >= 0) close(fd);
    return ctxd_seterr(e, CTXD_EIO, "fsync %s: %s", dir, strerror(err));
  }
  close(fd);
  return 0;
}

/* Copy src into the new file dst, fsync'd, hashing it when hex is given;
 * on error dst is removed. A src that cannot be opened: *missing = 1 (if
 * missing is given and it does not exist), else CTXD_ENOTFOUND/EIO. */
static int copy_hashed(const char *src, const char *dst, int *missing,
                       uint64_t *size, char *hex, ctxd_error *e) {
  int in = open(src, O_RDONLY | O_CLOEXEC), out = -1, rc;
  if (missing) *missing = 0;
  if (in < 0) {
    if (errno == ENOENT && missing) {
      *missing = 1;
      return 0;
    }
    return ctxd_seterr(e, errno == ENOENT ? CTXD_ENOTFOUND : CTXD_EIO,
                       "reading %s: %s", src, strerror(errno));
  }
  out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (out < 0) {
    rc = ctxd_seterr(e, errno == EEXIST ? CTXD_EEXIST : io_code(errno),
                     "creating %s: %s", dst, strerror(errno));
    goto done;
  }
  if ((rc = hash_copy(in, src, out, dst, size, hex, e))) goto done;
  if (fsync(out) != 0)
    rc = ctxd_seterr(e, io_code(errno), "writing %s: %s", dst,
                     strerror(errno));
done:
  close(in);
  if (out >= 0 && close(out) != 0 && !rc)
    rc = ctxd_seterr(e, CTXD_EIO, "writing %s: %s", dst, strerror(errno));
  if (rc && out >= 0) unlink(dst);
  return rc;
}

int backup_copy_file(const char *src, const char *dst, int *missing,
                     ctxd_error *e) {
  uint64_t size;
  return copy_hashed(src, dst, missing, &size, NULL, e);
}

/* A relative path a manifest may list: data.mdb or index/NAME, NAME of
 * [A-Za-z0-9._-] and not starting with '.', so a manifest can never make
 * restore read or write outside the two directories. */
static int path_ok(const char *p) {
  if (strcmp(p, DATA_FILE) == 0) return 1;
  if (strncmp(p, INDEX_DIR "/", sizeof INDEX_DIR) != 0) return 0;
  const char *n = p + sizeof INDEX_DIR;
  size_t len = strlen(n);
  if (len == 0 || len > BACKUP_PATH_MAX - sizeof INDEX_DIR || n[0] == '.')
    return 0;
  for (size_t i = 0; i < len; i++) {
    char c = n[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return 0;
  }
  return 1;
}

/* ---- write ---------------------------------------------------------------- */

static int add_file(json_t *files, const char *dir, const char *rel,
                    size_t *n, uint64_t *bytes, ctxd_error *e) {
  char path[4400], hex[65];
  uint64_t size;
  if (!path_ok(rel))
    return ctxd_seterr(e, CTXD_EINVAL, "backup: cannot list file %s", rel);
  snprintf(path, sizeof path, "%s/%s", dir, rel);
  int rc = hash_file(path, &size, hex, e);
  if (rc) return rc;
  json_t *f = json_pack("{s:s, s:I, s:s}", "path", rel, "size",
                        (json_int_t)size, "sha256", hex);
  if (!f || json_array_append_new(files, f))
    return ctxd_seterr(e, CTXD_ENOMEM, "backup: out of memory");
  (*n)++;
  *bytes += size;
  return 0;
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* data.mdb, then dir/index's regular files in name order. */
static int list_files(json_t *files, const char *dir, size_t *n,
                      uint64_t *bytes, ctxd_error *e) {
  char idx[4200];
  char **names = NULL;
  size_t nn = 0, cap = 0;
  DIR *d = NULL;
  int rc = add_file(files, dir, DATA_FILE, n, bytes, e);
  if (rc) return rc;
  snprintf(idx, sizeof idx, "%s/" INDEX_DIR, dir);
  if (!(d = opendir(idx))) {
    if (errno == ENOENT) return 0;
    return ctxd_seterr(e, CTXD_EIO, "reading %s: %s", idx, strerror(errno));
  }
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    if (nn == cap) {
      size_t nc = cap ? cap * 2 : 16;
      char **p = realloc(names, nc * sizeof *p);
      if (!p) {
        rc = ctxd_seterr(e, CTXD_ENOMEM, "backup: out of memory");
        goto done;
      }
      names = p;
      cap = nc;
    }
    if (!(names[nn] = strdup(de->d_name))) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "backup: out of memory");
      goto done;
    }
    nn++;
  }
  if (nn) qsort(names, nn, sizeof *names, name_cmp);
  for (size_t i = 0; i < nn && !rc; i++) {
    char rel[4200];
    snprintf(rel, sizeof rel, INDEX_DIR "/%s", names[i]);
    rc = add_file(files, dir, rel, n, bytes, e);
  }
done:
  for (size_t i = 0; i < nn; i++) free(names[i]);
  free(names);
  closedir(d);
  return rc;
}

int backup_manifest_write(const char *dir, const store_copy_info *info,
                          const char *ctxd_version, double seconds,
                          size_t *n_files, uint64_t *bytes, ctxd_error *e) {
  char tmp[4200], path[4200], when[32];
  size_t n = 0;
  uint64_t total = 0;
  int rc = 0;
  time_t now = time(NULL);
  struct tm tm;
  gmtime_r(&now, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  json_t *files = json_array(), *colls = json_array(), *root = NULL;
  if (!files || !colls) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "backup: out of memory");
    goto done;
  }
  if ((rc = list_files(files, dir, &n, &total, e))) goto done;
  for (size_t i = 0; i < info->n_colls; i++) {
    const store_collection *c = &info->colls[i];
    json_t *o = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "name", c->name,
                          "cid", (json_int_t)c->cid, "dim", (json_int_t)c->dim,
                          "documents", (json_int_t)c->documents, "chunks",
                          (json_int_t)c->chunks, "vectors",
                          (json_int_t)c->vectors);
    if (!o || json_array_append_new(colls, o)) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "backup: out of memory");
      goto done;
    }
  }
  root = json_pack(
      "{s:s, s:i, s:s, s:I, s:s, s:f, s:{s:I, s:I, s:I, s:I}, s:O, s:O}",
      "format", BACKUP_FORMAT, "format_version", BACKUP_FORMAT_VERSION,
      "ctxd_version", ctxd_version, "schema_version",
      (json_int_t)info->schema_version, "created", when, "seconds", seconds,
      "store", "last_seq", (json_int_t)info->last_seq, "documents",
      (json_int_t)info->documents, "chunks", (json_int_t)info->chunks, "bytes",
      (json_int_t)info->bytes, "collections", colls, "files", files);
  if (!root) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "backup: out of memory");
    goto done;
  }
  snprintf(tmp, sizeof tmp, "%s/" BACKUP_MANIFEST ".tmp", dir);
  snprintf(path, sizeof path, "%s/" BACKUP_MANIFEST, dir);
  char *text = json_dumps(root, JSON_INDENT(2));
  if (!text) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "backup: out of memory");
    goto done;
  }
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  size_t len = strlen(text);
  if (fd < 0 || write(fd, text, len) != (ssize_t)len ||
      write(fd, "\n", 1) != 1 || fsync(fd) != 0) {
    int err = errno;
    rc = ctxd_seterr(e, io_code(err), "writing %s: %s", tmp, strerror(err));
  }
  free(text);
  if (fd >= 0 && close(fd) != 0 && !rc)
    rc = ctxd_seterr(e, CTXD_EIO, "writing %s: %s", tmp, strerror(errno));
  if (!rc && rename(tmp, path) != 0)
    rc = ctxd_seterr(e, CTXD_EIO, "renaming %s: %s", tmp, strerror(errno));
  if (rc) {
    unlink(tmp);
    goto done;
  }
  if ((rc = backup_fsync_dir(dir, e))) goto done;
  if (n_files) *n_files = n;
  if (bytes) *bytes = total;
done:
  json_decref(files);
  json_decref(colls);
  json_decref(root);
  return rc;
}

/* ---- check ----------------------------------------------------------------- */

static int get_u64(json_t *o, const char *key, uint64_t *out) {
  json_t *v = json_object_get(o, key);
  if (!json_is_integer(v) || json_integer_value(v) < 0) return -1;
  *out = (uint64_t)json_integer_value(v);
  return 0;
}

static int is_hex64(const char *s) {
  if (strlen(s) != 64) return 0;
  for (int i = 0; i < 64; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
      return 0;
  return 1;
}

/* Parse the manifest of dir into *out (no file checked yet). */
static int manifest_read(const char *dir, backup_manifest **out,
                         ctxd_error *e) {
  char path[4200];
  struct stat st;
  json_error_t je;
  json_t *root = NULL;
  backup_manifest *m = NULL;
  int rc = 0;
  snprintf(path, sizeof path, "%s/" BACKUP_MANIFEST, dir);
  if (stat(path, &st) != 0)
    return ctxd_seterr(e, errno == ENOENT ? CTXD_ENOTFOUND : CTXD_EIO,
                       "%s: %s%s", path, strerror(errno),
                       errno == ENOENT ? " (not a ctxd backup, or one that "
                                         "did not finish)"
                                       : "");
  if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > BACKUP_MANIFEST_MAX)
    return ctxd_seterr(e, CTXD_ECORRUPT,
                       "%s: not a regular file of at most %u bytes", path,
                       BACKUP_MANIFEST_MAX);
  if (!(root = json_load_file(path, JSON_REJECT_DUPLICATES, &je)))
    return ctxd_seterr(e, CTXD_ECORRUPT, "%s: line %d: %s", path, je.line,
                       je.text);
  json_t *files = json_object_get(root, "files");
  json_t *counts = json_object_get(root, "store");
  const char *fmt = json_string_value(json_object_get(root, "format"));
  json_t *fv = json_object_get(root, "format_version");
  if (!fmt || strcmp(fmt, BACKUP_FORMAT) != 0 || !json_is_integer(fv)) {
    rc = ctxd_seterr(e, CTXD_ECORRUPT, "%s: not a %s manifest", path,
                     BACKUP_FORMAT);
    goto done;
  }
  if (json_integer_value(fv) != BACKUP_FORMAT_VERSION) {
    rc = ctxd_seterr(e, CTXD_EPRECOND,
                     "%s: backup format version %lld is not supported by "
                     "this ctxd (%d)",
                     path, (long long)json_integer_value(fv),
                     BACKUP_FORMAT_VERSION);
    goto done;
  }
  if (!json_is_array(files) || json_array_size(files) > BACKUP_FILES_MAX ||
      !json_is_object(counts)) {
    rc = ctxd_seterr(e, CTXD_ECORRUPT,
                     "%s: \"files\" (at most %d) or \"store\" missing", path,
                     BACKUP_FILES_MAX);
    goto done;
  }
  size_t nf = json_array_size(files);
  m = calloc(1, sizeof *m);
  if (!m || !(m->files = calloc(nf ? nf : 1, sizeof *m->files))) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "backup: out of memory");
    goto done;
  }
  uint64_t schema;
  const char *ver = json_string_value(json_object_get(root, "ctxd_version"));
  const char *created = json_string_value(json_object_get(root, "created"));
  if (get_u64(root, "schema_version", &schema) || schema > UINT32_MAX ||
      get_u64(counts, "last_seq", &m->last_seq) ||
      get_u64(counts, "documents", &m->documents) ||
      get_u64(counts, "chunks", &m->chunks)) {
    rc = ctxd_seterr(e, CTXD_ECORRUPT,
                     "%s: schema_version or store counters missing", path);
    goto done;
  }
  m->schema_version = (uint32_t)schema;
  snprintf(m->ctxd_version, sizeof m->ctxd_version, "%s", ver ? ver : "");
  snprintf(m->created, sizeof m->created, "%s", created ? created : "");
  int have_data = 0;
  for (size_t i = 0; i < nf; i++) {
    json_t *f = json_array_get(files, i);
    const char *p = json_string_value(json_object_get(f, "path"));
    const char *h = json_string_value(json_object_get(f, "sha256"));
    backup_file *bf = &m->files[i];
    if (!p || !path_ok(p) || !h || !is_hex64(h) ||
        get_u64(f, "size", &bf->size)) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT,
                       "%s: files[%zu] needs a path (data.mdb or index/NAME), "
                       "a size and a SHA-256",
                       path, i);
      goto done;
    }
    for (size_t j = 0; j < i; j++)
      if (strcmp(m->files[j].path, p) == 0) {
        rc = ctxd_seterr(e, CTXD_ECORRUPT, "%s: file %s listed twice", path,
                         p);
        goto done;
      }
    snprintf(bf->path, sizeof bf->path, "%s", p);
    memcpy(bf->sha256, h, 65);
    have_data |= strcmp(p, DATA_FILE) == 0;
    m->total_bytes += bf->size;
    m->n_files++;
  }
  if (!have_data)
    rc = ctxd_seterr(e, CTXD_ECORRUPT, "%s: lists no " DATA_FILE, path);
done:
  json_decref(root);
  if (rc) {
    backup_manifest_free(m);
    return rc;
  }
  *out = m;
  return 0;
}

static int schema_check(const char *dir, const backup_manifest *m,
                        ctxd_error *e) {
  if (m->schema_version == STORE_SCHEMA_VERSION) return 0;
  return ctxd_seterr(e, CTXD_EPRECOND,
                     "backup %s has store schema version %u; this ctxd "
                     "supports schema %u only",
                     dir, m->schema_version, (unsigned)STORE_SCHEMA_VERSION);
}

/* The file's size and checksum against its manifest entry. */
static int file_verify(const backup_file *f, uint64_t size, const char *hex,
                       ctxd_error *e) {
  if (size != f->size)
    return ctxd_seterr(e, CTXD_ECORRUPT,
                       "backup file %s: %llu bytes, the manifest says %llu",
                       f->path, (unsigned long long)size,
                       (unsigned long long)f->size);
  if (strcmp(hex, f->sha256) != 0)
    return ctxd_seterr(e, CTXD_ECORRUPT,
                       "backup file %s: SHA-256 %.16s... differs from the "
                       "manifest's %.16s...",
                       f->path, hex, f->sha256);
  return 0;
}

int backup_check(const char *dir, backup_manifest **out, ctxd_error *e) {
  backup_manifest *m = NULL;
  if (out) *out = NULL;
  int rc = manifest_read(dir, &m, e);
  if (rc) return rc;
  if ((rc = schema_check(dir, m, e))) goto done;
  for (size_t i = 0; i < m->n_files; i++) {
    const backup_file *f = &m->files[i];
    char path[4400], hex[65];
    uint64_t size;
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, f->path);
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT, "backup file %s is missing (%s)",
                       f->path, path);
      goto done;
    }
    if ((uint64_t)st.st_size != f->size) {
      rc = file_verify(f, (uint64_t)st.st_size, f->sha256, e);
      goto done;
    }
    if ((rc = hash_file(path, &size, hex, e)) ||
        (rc = file_verify(f, size, hex, e)))
      goto done;
  }
done:
  if (rc || !out)
    backup_manifest_free(m);
  else
    *out = m;
  return rc;
}

/* ---- restore ---------------------------------------------------------------- */

/* 0 when dir does not exist or is an empty directory, else the error. */
static int target_free(const char *dir, ctxd_error *e) {
  DIR *d = opendir(dir);
  if (!d) {
    if (errno == ENOENT) return 0;
    return ctxd_seterr(e, errno == ENOTDIR ? CTXD_EEXIST : CTXD_EIO, "%s: %s",
                       dir, strerror(errno));
  }
  struct dirent *de;
  int empty = 1;
  while ((de = readdir(d)))
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
      empty = 0;
      break;
    }
  closedir(d);
  if (empty) return 0;
  return ctxd_seterr(e, CTXD_EEXIST,
                     "data directory %s is not empty: restore only into a "
                     "new or empty directory",
                     dir);
}

static int copy_one(const char *dir, const char *tmpdir,
                    const backup_file *f, ctxd_error *e) {
  char src[4608], dst[4608], hex[65];
  uint64_t size;
  int missing, rc;
  snprintf(src, sizeof src, "%s/%s", dir, f->path);
  snprintf(dst, sizeof dst, "%s/%s", tmpdir, f->path);
  if ((rc = copy_hashed(src, dst, &missing, &size, hex, e))) return rc;
  if (missing)
    return ctxd_seterr(e, CTXD_ECORRUPT, "backup file %s is missing",
                       f->path);
  if ((rc = file_verify(f, size, hex, e))) unlink(dst);
  return rc;
}

/* Remove what copy left in tmpdir (only the listed files, then the two
 * directories): a failed restore leaves nothing behind. */
static void remove_partial(const char *tmpdir, const backup_manifest *m) {
  char p[4608];
  for (size_t i = 0; i < m->n_files; i++) {
    snprintf(p, sizeof p, "%s/%s", tmpdir, m->files[i].path);
    unlink(p);
  }
  snprintf(p, sizeof p, "%s/" INDEX_DIR, tmpdir);
  rmdir(p);
  rmdir(tmpdir);
}

int backup_restore(const char *dir, const char *data_dir,
                   backup_manifest **out, ctxd_error *e) {
  backup_manifest *m = NULL;
  char tmpdir[4200], idx[4300], parent[4200];
  int rc, made = 0;
  if (out) *out = NULL;
  size_t dl = strlen(data_dir);
  while (dl > 1 && data_dir[dl - 1] == '/') dl--;
  if (dl == 0 || dl + sizeof RESTORING_SUFFIX + 8 > sizeof tmpdir)
    return ctxd_seterr(e, CTXD_EINVAL, "data directory path length %zu", dl);
  snprintf(tmpdir, sizeof tmpdir, "%.*s" RESTORING_SUFFIX, (int)dl, data_dir);
  /* Refuse a used target before reading gigabytes of backup. */
  if ((rc = target_free(data_dir, e))) return rc;
  if (access(tmpdir, F_OK) == 0)
    return ctxd_seterr(e, CTXD_EEXIST,
                       "%s exists (left by an interrupted restore?): remove "
                       "it first",
                       tmpdir);
  if ((rc = backup_check(dir, &m, e))) return rc;
  if (mkdir(tmpdir, 0750) != 0) {
    rc = ctxd_seterr(e, io_code(errno), "creating %s: %s", tmpdir,
                     strerror(errno));
    goto done;
  }
  made = 1;
  snprintf(idx, sizeof idx, "%s/" INDEX_DIR, tmpdir);
  if (mkdir(idx, 0750) != 0) {
    rc = ctxd_seterr(e, io_code(errno), "creating %s: %s", idx,
                     strerror(errno));
    goto done;
  }
  for (size_t i = 0; i < m->n_files; i++)
    if ((rc = copy_one(dir, tmpdir, &m->files[i], e))) goto done;
  if ((rc = backup_fsync_dir(idx, e)) || (rc = backup_fsync_dir(tmpdir, e))) goto done;
  /* Checked again just before: rename() would also replace an empty
   * directory, which is what is allowed. */
  if ((rc = target_free(data_dir, e))) goto done;
  if (rename(tmpdir, data_dir) != 0) {
    rc = ctxd_seterr(e, CTXD_EIO, "renaming %s to %s: %s", tmpdir, data_dir,
                     strerror(errno));
    goto done;
  }
  made = 0;
  snprintf(parent, sizeof parent, "%.*s", (int)dl, data_dir);
  char *slash = strrchr(parent, '/');
  if (slash == parent)
    parent[1] = '\0';
  else if (slash)
    *slash = '\0';
  else
    snprintf(parent, sizeof parent, ".");
  rc = backup_fsync_dir(parent, e);
done:
  if (made) remove_partial(tmpdir, m);
  if (rc || !out)
    backup_manifest_free(m);
  else
    *out = m;
  return rc;
}
