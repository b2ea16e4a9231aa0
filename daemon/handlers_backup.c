/* handlers_backup.c - Admin.Backup (a hot, consistent copy of the data
 * directory into a directory under backup.root, with a manifest) and
 * Admin.Compact (give the space of deleted data back, store_compact). Both
 * are unary and run on the worker that took the call; one backup or
 * compaction runs at a time, a second call is refused (UNAVAILABLE). */
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "backup.h"
#include "coll.h"
#include "ctx.h"
#include "ctxd/v1/admin.pb-c.h"
#include "err.h"
#include "grpc_wire.h"
#include "handlers.h"
#include "log.h"
#include "paths.h"
#include "rpc.h"
#include "store.h"

#ifndef CTXD_VERSION
#define CTXD_VERSION "unknown"
#endif

#define PATH_CAP 4096

static atomic_int busy;

static double mono_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int take_busy(const char *what, ctxd_error *e) {
  int expect = 0;
  if (atomic_compare_exchange_strong(&busy, &expect, 1)) return 0;
  return ctxd_seterr(e, CTXD_EBUSY,
                     "%s refused: a backup or compaction is running", what);
}

/* ---- Backup --------------------------------------------------------------- */

typedef struct snap_ctx {
  store *st;
  char path[PATH_CAP + 64];
  store_copy_info info;
} snap_ctx;

static int snap_cb(void *arg, ctxd_error *e) {
  snap_ctx *sc = arg;
  return store_copy(sc->st, sc->path, &sc->info, e);
}

/* Remove a partial backup directory: only the names a backup writes
 * (data.mdb, manifest.json and its temp, index/ and its files). */
static void remove_partial(const char *dir) {
  char p[PATH_CAP + 300];
  snprintf(p, sizeof p, "%s/index", dir);
  DIR *d = opendir(p);
  if (d) {
    struct dirent *de;
    while ((de = readdir(d))) {
      if (de->d_name[0] == '.') continue;
      char f[PATH_CAP + 600];
      snprintf(f, sizeof f, "%s/%s", p, de->d_name);
      unlink(f);
    }
    closedir(d);
    rmdir(p);
  }
  static const char *const names[] = {"data.mdb", BACKUP_MANIFEST,
                                      BACKUP_MANIFEST ".tmp"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(p, sizeof p, "%s/%s", dir, names[i]);
    unlink(p);
  }
  rmdir(dir);
}

/* 0 when path does not exist or is an empty directory. */
static int target_unused(const char *path, ctxd_error *e) {
  DIR *d = opendir(path);
  if (!d) {
    if (errno == ENOENT) return 0;
    return ctxd_seterr(e, CTXD_EEXIST, "target %s exists and is not an "
                       "empty directory (%s)", path, strerror(errno));
  }
  struct dirent *de;
  int used = 0;
  while ((de = readdir(d)))
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) used = 1;
  closedir(d);
  return used ? ctxd_seterr(e, CTXD_EEXIST,
                            "target %s exists and is not empty: a backup "
                            "goes into a new or empty directory",
                            path)
              : 0;
}

/* The whole backup into the confined `target`: a temporary sibling
 * directory (mkdtemp, so never one that exists) filled by coll_backup and
 * store_copy, the manifest written last, then renamed to target. */
static int run_backup(ctxd_ctx *ctx, const char *target,
                      Ctxd__V1__BackupResponse *r, ctxd_error *e) {
  char parent[PATH_CAP], tmp[PATH_CAP + 32], idx[PATH_CAP + 48];
  snap_ctx *sc = calloc(1, sizeof *sc);
  int rc, made = 0;
  double t0 = mono_s();
  if (!sc) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  snprintf(parent, sizeof parent, "%s", target);
  char *slash = strrchr(parent, '/');
  if (slash == parent)
    parent[1] = '\0';
  else if (slash)
    *slash = '\0';
  if ((rc = paths_mkdir("target", parent, 0750, e))) goto done;
  snprintf(tmp, sizeof tmp, "%s.partial-XXXXXX", target);
  if (!mkdtemp(tmp)) {
    rc = ctxd_seterr(e, CTXD_EIO, "creating %s: %s", tmp, strerror(errno));
    goto done;
  }
  made = 1;
  sc->st = ctx->st;
  snprintf(sc->path, sizeof sc->path, "%s/data.mdb", tmp);
  snprintf(idx, sizeof idx, "%s/index", tmp);
  if ((rc = coll_backup(ctx->cs, idx, snap_cb, sc, e))) goto done;
  double copied = mono_s() - t0;
  size_t n_files = 0;
  uint64_t bytes = 0;
  if ((rc = backup_manifest_write(tmp, &sc->info, CTXD_VERSION, copied,
                                  &n_files, &bytes, e)))
    goto done;
  /* Checked again: someone may have filled it meanwhile. rename() replaces
   * an empty directory and nothing else. */
  if ((rc = target_unused(target, e))) goto done;
  if (rename(tmp, target) != 0) {
    rc = ctxd_seterr(e, CTXD_EIO, "renaming %s to %s: %s", tmp, target,
                     strerror(errno));
    goto done;
  }
  made = 0;
  if ((rc = backup_fsync_dir(parent, e))) goto done;
  r->files = (uint32_t)n_files;
  r->bytes = bytes;
  r->documents = sc->info.documents;
  r->chunks = sc->info.chunks;
  for (size_t i = 0; i < sc->info.n_colls; i++)
    r->vectors += sc->info.colls[i].vectors;
  r->last_seq = sc->info.last_seq;
  r->schema_version = sc->info.schema_version;
  r->seconds = mono_s() - t0;
done:
  if (made) remove_partial(tmp);
  store_copy_info_free(&sc->info);
  free(sc);
  return rc;
}

static void backup_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  char root[PATH_CAP], target[PATH_CAP];
  int held = 0;
  ctxd_clearerr(&e);
  Ctxd__V1__BackupRequest *req =
      ctxd__v1__backup_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed BackupRequest message");
    return;
  }
  Ctxd__V1__BackupResponse r = CTXD__V1__BACKUP_RESPONSE__INIT;
  if (pbw_field_has_nul(msg, len, 1)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "target contains a NUL byte");
    goto out;
  }
  if (paths_root("backup.root", ctx->cfg->backup_root, ctx->cfg->data,
                 "backups", root, sizeof root, &e))
    goto fail;
  /* A relative target names a directory under the root. */
  const char *want = req->target;
  char joined[2 * PATH_CAP];
  if (*want && *want != '/') {
    size_t rl = strlen(root), wl = strlen(want);
    if (rl + 1 + wl >= sizeof joined) {
      ctxd_seterr(&e, CTXD_EINVAL, "target is %zu bytes, too long", wl);
      goto fail;
    }
    memcpy(joined, root, rl);
    joined[rl] = '/';
    memcpy(joined + rl + 1, want, wl + 1);
    want = joined;
  }
  if (paths_confine("target", "backup.root", root, want, target,
                    sizeof target, &e))
    goto fail;
  if (strcmp(target, root) == 0) {
    ctxd_seterr(&e, CTXD_EINVAL,
                "target %s is backup.root itself: name a directory under it",
                target);
    goto fail;
  }
  if (target_unused(target, &e) || take_busy("backup", &e)) goto fail;
  held = 1;
  LOG_INFO("backup-started target=\"%s\"", target);
  if (run_backup(ctx, target, &r, &e)) goto fail;
  LOG_INFO("backup-done target=\"%s\" files=%u bytes=%llu documents=%llu "
           "last_seq=%llu seconds=%.3f",
           target, r.files, (unsigned long long)r.bytes,
           (unsigned long long)r.documents, (unsigned long long)r.last_seq,
           r.seconds);
  r.path = target;
  if (rpc_send_pb(c, &r.base) == 0) rpc_finish(c, GRPC_OK, NULL);
  goto out;
fail:
  if (held) LOG_ERROR("backup-failed target=\"%s\" err=\"%s\"", target, e.msg);
  rpc_finish_error(c, &e);
out:
  if (held) atomic_store(&busy, 0);
  ctxd__v1__backup_request__free_unpacked(req, NULL);
}

const rpc_method h_admin_backup = {"/ctxd.v1.Admin/Backup", RPC_UNARY, 0,
                                   backup_on_message, NULL, NULL, NULL};

/* ---- Compact -------------------------------------------------------------- */

static void compact_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_ctx *ctx = rpc_ctx(c);
  ctxd_error e;
  store_compact_result res;
  ctxd_clearerr(&e);
  Ctxd__V1__CompactRequest *req =
      ctxd__v1__compact_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed CompactRequest message");
    return;
  }
  ctxd__v1__compact_request__free_unpacked(req, NULL);
  if (take_busy("compaction", &e)) {
    rpc_finish_error(c, &e);
    return;
  }
  double t0 = mono_s();
  LOG_INFO("compact-started");
  int rc = store_compact(ctx->st, &res, &e);
  atomic_store(&busy, 0);
  if (rc) {
    LOG_ERROR("compact-failed err=\"%s\"", e.msg);
    rpc_finish_error(c, &e);
    return;
  }
  Ctxd__V1__CompactResponse r = CTXD__V1__COMPACT_RESPONSE__INIT;
  r.bytes_before = res.bytes_before;
  r.bytes_after = res.bytes_after;
  r.paused_writers = res.paused_writers != 0;
  r.seconds = mono_s() - t0;
  LOG_INFO("compact-done bytes_before=%llu bytes_after=%llu "
           "paused_writers=%d seconds=%.3f",
           (unsigned long long)r.bytes_before,
           (unsigned long long)r.bytes_after, res.paused_writers, r.seconds);
  if (rpc_send_pb(c, &r.base) == 0) rpc_finish(c, GRPC_OK, NULL);
}

const rpc_method h_admin_compact = {"/ctxd.v1.Admin/Compact", RPC_UNARY, 0,
                                    compact_on_message, NULL, NULL, NULL};
