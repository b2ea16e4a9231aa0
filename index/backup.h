/* backup.h - backup directories: the manifest that describes one, its
 * check, and the offline restore of one into a new data directory.
 *
 * A backup directory holds what a data directory holds, plus the manifest:
 *   data.mdb            the store (a compacting copy, store_copy)
 *   index/<cid>.vindex  each collection's saved vector index (coll_backup)
 *   index/coll.manifest the index files' seqs (coll.c)
 *   manifest.json       written last (see backup_manifest_write)
 * The hot copy itself is made by the daemon (store_copy inside
 * coll_backup); this module only reads and writes files, so the CLI can
 * restore without the engine.
 *
 * Thread safety: no shared state. */
#ifndef CTXD_BACKUP_H
#define CTXD_BACKUP_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "store.h"

#define BACKUP_MANIFEST "manifest.json"
#define BACKUP_FORMAT "ctxd-backup"
#define BACKUP_FORMAT_VERSION 1
/* Limits on what a manifest may list (a damaged or hostile one is refused
 * before anything is allocated for it). */
#define BACKUP_FILES_MAX 65536
#define BACKUP_PATH_MAX 200
#define BACKUP_MANIFEST_MAX (64u << 20)

typedef struct backup_file {
  char path[BACKUP_PATH_MAX + 1]; /* relative: "data.mdb", "index/1.vindex" */
  uint64_t size;
  char sha256[65]; /* lowercase hex */
} backup_file;

/* A manifest read back (backup_check). */
typedef struct backup_manifest {
  char ctxd_version[64];
  uint32_t schema_version;
  char created[32]; /* UTC, ISO 8601 */
  uint64_t last_seq, documents, chunks;
  backup_file *files;
  size_t n_files;
  uint64_t total_bytes; /* sum of the files' sizes */
} backup_manifest;

void backup_manifest_free(backup_manifest *m);

/* Write <dir>/manifest.json for the files a backup put into dir: data.mdb
 * and every regular file of dir/index, each with its size and SHA-256,
 * plus the ctxd version, the schema version, the time, `seconds` (how long
 * the copy took) and the counters of `info` (the copied store: documents,
 * chunks, last seq; per collection documents, chunks, vectors). Written
 * to a temporary name, fsync'd and renamed. *n_files and *bytes (may be
 * NULL) receive the count and total size of the files listed. Errors:
 * CTXD_EIO, CTXD_ENOSPC, CTXD_ENOMEM, CTXD_EINVAL (a file name in dir/index
 * a manifest cannot list). */
int backup_manifest_write(const char *dir, const store_copy_info *info,
                          const char *ctxd_version, double seconds,
                          size_t *n_files, uint64_t *bytes, ctxd_error *e);

/* Read dir's manifest and check the backup before anything is restored:
 * known format, a schema version this build supports, every listed file
 * present, of its size and its SHA-256 (the whole file is read), and
 * data.mdb listed. *out (may be NULL) receives the manifest, freed with
 * backup_manifest_free. Errors: CTXD_ENOTFOUND (no manifest: not a backup,
 * or one that never finished), CTXD_ECORRUPT (the message names the file
 * that is missing, of another size or another checksum, or what in the
 * manifest is wrong), CTXD_EPRECOND (schema version not supported: the
 * message names both), CTXD_EIO, CTXD_ENOMEM. */
int backup_check(const char *dir, backup_manifest **out, ctxd_error *e);

/* Restore backup `dir` into `data_dir`, offline (no daemon may use
 * data_dir): data_dir must not exist or be an empty directory
 * (CTXD_EEXIST otherwise). backup_check first, then each listed file is
 * copied into <data_dir>.restoring (its checksum computed again while
 * copying), fsync'd, and that directory renamed to data_dir, so a failed
 * restore never leaves a data_dir that looks whole. A leftover
 * <data_dir>.restoring from an interrupted restore is refused
 * (CTXD_EEXIST, naming it). *out as in backup_check. Errors: those of
 * backup_check, CTXD_EEXIST, CTXD_ENOSPC, CTXD_EIO. */
int backup_restore(const char *dir, const char *data_dir,
                   backup_manifest **out, ctxd_error *e);

/* Copy src to the new file dst (O_EXCL) and fsync it; on error dst is
 * removed. A src that does not exist sets *missing (when missing is not
 * NULL) and is no error. Errors: CTXD_ENOTFOUND (src missing and missing
 * NULL), CTXD_EEXIST (dst exists), CTXD_ENOSPC, CTXD_EIO. */
int backup_copy_file(const char *src, const char *dst, int *missing,
                     ctxd_error *e);

/* fsync a directory (after creating or renaming entries in it). Errors:
 * CTXD_EIO naming it. */
int backup_fsync_dir(const char *dir, ctxd_error *e);

#endif
