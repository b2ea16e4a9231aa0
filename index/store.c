/* store.c - the document store on LMDB (see store.h for the contract).
 *
 * Layout. One environment per data directory: `data.mdb` and `lock.mdb` in
 * it. Named databases; integers in keys are big-endian (so keys sort
 * numerically), integers in values are little-endian, fixed width:
 *
 *   meta     "schema_version" -> u32
 *            "tokenizer"      -> name bytes
 *            "counters"       -> u64 documents, chunks, bytes, tokens,
 *                                next_doc (next internal id, from 1),
 *                                last_seq (last change-log seq, 0 = none)
 *   docs     u64 doc -> u32 id_len, u64 bytes, u64 tokens, u32 n_chunks,
 *                       u32 n_meta, id[id_len],
 *                       n_meta x (u32 key_len, key, u32 val_len, val)
 *   texts    u64 doc -> the text bytes (may be empty); kept apart so that
 *                       List and Get without text never touch large values
 *   ids      id key  -> u64 doc, MDB_DUPSORT|MDB_DUPFIXED (big-endian values)
 *            The id key is the client id itself when it is shorter than the
 *            LMDB key limit K (511 on Debian); a longer id is keyed by its
 *            first K-8 bytes plus a 64-bit hash of the whole id, exactly K
 *            bytes, so hashed keys never equal a plain one. Several ids may
 *            share a key: lookups compare the full id in the docs record.
 *   chunks   u64 doc, u32 ordinal -> u64 byte_start, u64 byte_end, u32 tokens
 *   changes  u64 seq -> u8 op (1 put, 2 delete), u64 doc
 *
 * Concurrency: MDB_NOTLS, so a read transaction is not tied to a thread.
 * Growing the map (mdb_env_set_mapsize) needs no transaction open in this
 * process, so every transaction holds `s->lock` shared and growth takes it
 * exclusive. Never MDB_WRITEMAP: with it a full disk is a SIGBUS, without it
 * the commit fails with ENOSPC and nothing changes. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define MAP_SIZE_DEFAULT (1ULL << 30)
#define MAX_MAP_SIZE_DEFAULT (1ULL << 40)
#define MAX_READERS_DEFAULT 1024
#define VERIFY_MAX_PROBLEMS 1000
/* Free space under which a failed write is taken for a full disk. */
#define DISK_MARGIN (16ULL << 20)

/* Returned by internal write steps when the map is full: the caller aborts,
 * grows the map and reruns the whole transaction. Never leaves this file. */
#define ST_MAPFULL 1

enum { OP_PUT = 1, OP_DELETE = 2 };

/* Sizes of fixed parts of the value encodings above. */
#define DOC_HDR 28   /* id_len 4 + bytes 8 + tokens 8 + n_chunks 4 + n_meta 4 */
#define CHUNK_VAL 20 /* start 8 + end 8 + tokens 4 */
#define CHUNK_KEY 12 /* doc 8 + ordinal 4 */
#define COUNTERS_VAL 48

struct store {
  MDB_env *env;
  MDB_dbi meta, docs, texts, ids, chunks, changes;
  pthread_rwlock_t lock;
  uint64_t max_map_size;
  size_t max_key; /* mdb_env_get_maxkeysize */
  /* Set (under the exclusive lock) when LMDB could not map the file again
   * after a resize: it then has no map at all, and any transaction would
   * crash, so every call fails with `broken_msg` until a restart. */
  int broken;
  char broken_msg[256];
  char path[4096];
};

typedef struct counters {
  uint64_t documents, chunks, bytes, tokens, next_doc, last_seq;
} counters;

/* A decoded docs record; pointers point into the LMDB value. */
typedef struct doc_rec {
  const char *id;
  uint32_t id_len;
  uint64_t bytes, tokens;
  uint32_t n_chunks, n_meta;
  const uint8_t *meta; /* encoded entries */
  size_t meta_len;
} doc_rec;

/* ---- encoding helpers ---------------------------------------------------- */

static void put_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static void put_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_le32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static uint64_t get_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static void put_be32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}
static void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}
static uint32_t get_be32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v = (v << 8) | p[i];
  return v;
}
static uint64_t get_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

static void counters_encode(const counters *c, uint8_t *p) {
  put_le64(p, c->documents);
  put_le64(p + 8, c->chunks);
  put_le64(p + 16, c->bytes);
  put_le64(p + 24, c->tokens);
  put_le64(p + 32, c->next_doc);
  put_le64(p + 40, c->last_seq);
}

static void counters_decode(const uint8_t *p, counters *c) {
  c->documents = get_le64(p);
  c->chunks = get_le64(p + 8);
  c->bytes = get_le64(p + 16);
  c->tokens = get_le64(p + 24);
  c->next_doc = get_le64(p + 32);
  c->last_seq = get_le64(p + 40);
}

/* Decode a docs value, checking every length against the value's size so
 * that a damaged record is reported rather than read past. 0 or -1. */
static int doc_decode(const MDB_val *v, doc_rec *r) {
  const uint8_t *p = v->mv_data;
  size_t n = v->mv_size;
  if (n < DOC_HDR) return -1;
  r->id_len = get_le32(p);
  r->bytes = get_le64(p + 4);
  r->tokens = get_le64(p + 12);
  r->n_chunks = get_le32(p + 20);
  r->n_meta = get_le32(p + 24);
  if (r->id_len > n - DOC_HDR) return -1;
  r->id = (const char *)p + DOC_HDR;
  r->meta = p + DOC_HDR + r->id_len;
  r->meta_len = n - DOC_HDR - r->id_len;
  /* Walk the entries once so later readers can trust the lengths. */
  size_t off = 0;
  for (uint32_t i = 0; i < r->n_meta; i++) {
    for (int half = 0; half < 2; half++) {
      if (r->meta_len - off < 4) return -1;
      uint32_t l = get_le32(r->meta + off);
      off += 4;
      if (l > r->meta_len - off) return -1;
      off += l;
    }
  }
  if (off != r->meta_len) return -1;
  return 0;
}

/* ---- id keys --------------------------------------------------------------- */

/* 64-bit FNV-1a: collisions only cost a second record read, never a wrong
 * answer, so a fast simple hash is enough. */
static uint64_t id_hash_fnv(const void *data, size_t n) {
  const uint8_t *p = data;
  uint64_t h = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

static uint64_t (*id_hash)(const void *, size_t) = id_hash_fnv;

void store_test_set_id_hash(uint64_t (*fn)(const void *data, size_t n)) {
  id_hash = fn ? fn : id_hash_fnv;
}

/* The ids key of a client id; `buf` holds at least s->max_key bytes. */
static void id_key(const store *s, const char *id, size_t len, uint8_t *buf,
                   MDB_val *key) {
  if (len < s->max_key) {
    key->mv_data = (void *)id;
    key->mv_size = len;
    return;
  }
  memcpy(buf, id, s->max_key - 8);
  put_be64(buf + s->max_key - 8, id_hash(id, len));
  key->mv_data = buf;
  key->mv_size = s->max_key;
}

/* ---- errors and locking ------------------------------------------------- */

/* Map an LMDB/errno result to a ctxd code with a message naming `what`. */
static int mdb_fail(ctxd_error *e, int rc, const char *what) {
  switch (rc) {
  case MDB_MAP_FULL:
    return ST_MAPFULL;
  case ENOSPC:
  case EDQUOT:
    return ctxd_seterr(e, CTXD_ENOSPC, "store: %s: disk full (%s)", what,
                       mdb_strerror(rc));
  case ENOMEM:
    return ctxd_seterr(e, CTXD_ENOMEM, "store: %s: out of memory", what);
  case MDB_TXN_FULL:
    return ctxd_seterr(e, CTXD_ELIMIT,
                       "store: %s: too many changes for one transaction", what);
  case MDB_READERS_FULL:
    return ctxd_seterr(e, CTXD_EBUSY,
                       "store: %s: all reader slots are in use", what);
  case MDB_CORRUPTED:
  case MDB_PAGE_NOTFOUND:
  case MDB_INVALID:
  case MDB_VERSION_MISMATCH:
    return ctxd_seterr(e, CTXD_ECORRUPT, "store: %s: %s", what,
                       mdb_strerror(rc));
  default:
    return ctxd_seterr(e, CTXD_EIO, "store: %s: %s", what, mdb_strerror(rc));
  }
}

/* The current map size; stable while the caller holds s->lock. */
static uint64_t map_size_now(store *s) {
  MDB_envinfo info;
  mdb_env_info(s->env, &info);
  return info.me_mapsize;
}

/* mdb_env_set_mapsize failed (mmap refused the new size: address space or
 * RLIMIT_AS). LMDB unmapped the old map first and does not restore it, so
 * the environment is unusable; mark the store broken rather than let the
 * next transaction dereference a missing map. Under the exclusive lock. */
static int map_lost(store *s, int mrc, uint64_t size, ctxd_error *e) {
  s->broken = 1;
  snprintf(s->broken_msg, sizeof s->broken_msg,
           "store: cannot map the data file at %llu bytes (%s); the store is "
           "unusable until ctxd restarts",
           (unsigned long long)size, mdb_strerror(mrc));
  return ctxd_seterr(e, CTXD_EIO, "%s", s->broken_msg);
}

/* Under the exclusive lock: double the map (MDB_MAP_FULL) or adopt the size
 * another process set (MDB_MAP_RESIZED, grow 0). `seen` is the map size the
 * failed transaction ran with (0: grow regardless). Writers that fail on the
 * same full map queue here one after another: only the first grows it, the
 * others find it already larger and simply rerun. Growing once per failed
 * writer instead would overshoot, and hit max_map_size (a false "full")
 * while the map just doubled had room for all of them. */
static int map_resize(store *s, int grow, uint64_t seen, ctxd_error *e) {
  int rc = 0;
  pthread_rwlock_wrlock(&s->lock);
  if (s->broken) {
    rc = ctxd_seterr(e, CTXD_EIO, "%s", s->broken_msg);
    goto done;
  }
  if (grow) {
    uint64_t cur = map_size_now(s);
    if (seen && cur > seen) goto done; /* grown meanwhile: rerun */
    if (cur >= s->max_map_size) {
      rc = ctxd_seterr(e, CTXD_ENOSPC,
                       "store: map is full at %llu bytes (store.max_map_size)",
                       (unsigned long long)cur);
      goto done;
    }
    uint64_t next = cur * 2 > s->max_map_size ? s->max_map_size : cur * 2;
    int mrc = mdb_env_set_mapsize(s->env, (size_t)next);
    if (mrc) rc = map_lost(s, mrc, next, e);
  } else {
    int mrc = mdb_env_set_mapsize(s->env, 0);
    if (mrc) rc = map_lost(s, mrc, 0, e);
  }
done:
  pthread_rwlock_unlock(&s->lock);
  return rc;
}

/* Take the shared lock and begin a transaction; on failure the lock is not
 * held. The caller ends the transaction and then calls txn_unlock(). */
static int txn_begin(store *s, int write, MDB_txn **txn, ctxd_error *e) {
  for (;;) {
    pthread_rwlock_rdlock(&s->lock);
    if (s->broken) {
      pthread_rwlock_unlock(&s->lock);
      return ctxd_seterr(e, CTXD_EIO, "%s", s->broken_msg);
    }
    int rc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, txn);
    if (rc == 0) return 0;
    pthread_rwlock_unlock(&s->lock);
    if (rc == MDB_MAP_RESIZED) {
      int r = map_resize(s, 0, 0, e);
      if (r) return r;
      continue;
    }
    rc = mdb_fail(e, rc, "beginning a transaction");
    return rc == ST_MAPFULL ? ctxd_seterr(e, CTXD_EIO, "store: map full") : rc;
  }
}

static void txn_unlock(store *s) { pthread_rwlock_unlock(&s->lock); }

/* Commit a write transaction and release the lock. ST_MAPFULL means grow and
 * retry; any failure leaves the store as it was. `need` estimates the bytes
 * the commit writes: LMDB reports a full disk as EIO when pwrite comes back
 * short (which is how a full disk usually shows), so an EIO with less free
 * space than that (plus a margin) is reported as the full disk it is. */
static int txn_commit(store *s, MDB_txn *txn, uint64_t need, ctxd_error *e) {
  int rc = mdb_txn_commit(txn);
  txn_unlock(s);
  if (rc == EIO) {
    struct statvfs vfs;
    if (statvfs(s->path, &vfs) == 0) {
      uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
      if (avail < need + DISK_MARGIN)
        return ctxd_seterr(e, CTXD_ENOSPC,
                           "store: commit: disk full (%llu bytes free on the "
                           "data volume); nothing was written",
                           (unsigned long long)avail);
    }
  }
  if (rc) return mdb_fail(e, rc, "commit");
  return 0;
}

static void txn_abort(store *s, MDB_txn *txn) {
  mdb_txn_abort(txn);
  txn_unlock(s);
}

/* ---- meta ---------------------------------------------------------------- */

static int counters_read(store *s, MDB_txn *txn, counters *c, ctxd_error *e) {
  MDB_val k = {8, "counters"}, v;
  int rc = mdb_get(txn, s->meta, &k, &v);
  if (rc == MDB_NOTFOUND || (rc == 0 && v.mv_size != COUNTERS_VAL))
    return ctxd_seterr(e, CTXD_ECORRUPT, "store: meta counters are missing");
  if (rc) return mdb_fail(e, rc, "reading counters");
  counters_decode(v.mv_data, c);
  return 0;
}

static int counters_write(store *s, MDB_txn *txn, const counters *c,
                          ctxd_error *e) {
  uint8_t buf[COUNTERS_VAL];
  counters_encode(c, buf);
  MDB_val k = {8, "counters"}, v = {sizeof buf, buf};
  int rc = mdb_put(txn, s->meta, &k, &v, 0);
  return rc ? mdb_fail(e, rc, "writing counters") : 0;
}

/* ---- lookups --------------------------------------------------------------- */

/* Find the internal id of client id `id`. 0 and *doc set, CTXD_ENOTFOUND, or
 * another error. `rec` (may be NULL) receives the decoded docs record. */
static int lookup(store *s, MDB_txn *txn, const char *id, size_t len,
                  uint64_t *doc, doc_rec *rec, ctxd_error *e) {
  uint8_t kbuf[1024];
  MDB_val key, val;
  MDB_cursor *cur = NULL;
  int rc = mdb_cursor_open(txn, s->ids, &cur);
  if (rc) return mdb_fail(e, rc, "opening ids cursor");
  id_key(s, id, len, kbuf, &key);
  rc = mdb_cursor_get(cur, &key, &val, MDB_SET_KEY);
  while (rc == 0) {
    if (val.mv_size != 8) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT, "store: bad ids entry");
      goto done;
    }
    uint64_t d = get_be64(val.mv_data);
    uint8_t dk[8];
    put_be64(dk, d);
    MDB_val k2 = {8, dk}, v2;
    int grc = mdb_get(txn, s->docs, &k2, &v2);
    if (grc == 0) {
      doc_rec r;
      if (doc_decode(&v2, &r)) {
        rc = ctxd_seterr(e, CTXD_ECORRUPT,
                         "store: document record %llu is damaged",
                         (unsigned long long)d);
        goto done;
      }
      if (r.id_len == len && memcmp(r.id, id, len) == 0) {
        *doc = d;
        if (rec) *rec = r;
        rc = 0;
        goto done;
      }
    } else if (grc != MDB_NOTFOUND) {
      rc = mdb_fail(e, grc, "reading a document");
      goto done;
    }
    rc = mdb_cursor_get(cur, &key, &val, MDB_NEXT_DUP);
  }
  if (rc == MDB_NOTFOUND)
    rc = CTXD_ENOTFOUND; /* the caller words the message */
  else
    rc = mdb_fail(e, rc, "reading ids");
done:
  mdb_cursor_close(cur);
  return rc;
}

/* Delete every chunk of `doc`; *n receives how many. */
static int chunks_delete(store *s, MDB_txn *txn, uint64_t doc, uint32_t *n,
                         ctxd_error *e) {
  uint8_t kb[CHUNK_KEY];
  put_be64(kb, doc);
  put_be32(kb + 8, 0);
  MDB_val k = {CHUNK_KEY, kb}, v;
  MDB_cursor *cur = NULL;
  uint32_t count = 0;
  int rc = mdb_cursor_open(txn, s->chunks, &cur);
  if (rc) return mdb_fail(e, rc, "opening chunks cursor");
  for (;;) {
    /* Re-seek after each delete rather than trusting the cursor position
     * LMDB leaves behind a deletion at the end of a page. */
    k.mv_size = CHUNK_KEY;
    k.mv_data = kb;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc || k.mv_size != CHUNK_KEY || get_be64(k.mv_data) != doc) break;
    rc = mdb_cursor_del(cur, 0);
    if (rc) break;
    count++;
  }
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND) return mdb_fail(e, rc, "deleting chunks");
  if (n) *n = count;
  return 0;
}

static int change_append(store *s, MDB_txn *txn, counters *c, int op,
                         uint64_t doc, ctxd_error *e) {
  uint8_t kb[8], vb[9];
  put_be64(kb, ++c->last_seq);
  vb[0] = (uint8_t)op;
  put_le64(vb + 1, doc);
  MDB_val k = {8, kb}, v = {9, vb};
  int rc = mdb_put(txn, s->changes, &k, &v, MDB_APPEND);
  return rc ? mdb_fail(e, rc, "appending to the change log") : 0;
}

/* ---- open / close ---------------------------------------------------------- */

static int fsync_path(const char *path) {
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  close(fd);
  return rc;
}

/* fsync a directory and, because a fresh one may itself be new, its
 * parent. */
static int sync_dir(const char *dir) {
  char parent[4096];
  if (fsync_path(dir) != 0) return -1;
  size_t n = strlen(dir);
  if (n >= sizeof parent) return 0;
  memcpy(parent, dir, n + 1);
  while (n > 1 && parent[n - 1] == '/') parent[--n] = '\0';
  char *slash = strrchr(parent, '/');
  if (!slash) return fsync_path(".");
  if (slash == parent)
    slash[1] = '\0';
  else
    *slash = '\0';
  return fsync_path(parent);
}

/* mkdir -p */
static int make_dirs(const char *dir) {
  char p[4096];
  size_t n = strlen(dir);
  if (n == 0 || n >= sizeof p) return -1;
  memcpy(p, dir, n + 1);
  for (size_t i = 1; i <= n; i++) {
    if (p[i] == '/' || p[i] == '\0') {
      char c = p[i];
      p[i] = '\0';
      if (mkdir(p, 0755) != 0 && errno != EEXIST) return -1;
      p[i] = c;
    }
  }
  struct stat st;
  return stat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? 0 : -1;
}

/* Open the named databases and check or create the schema record. */
static int open_dbs(store *s, ctxd_error *e) {
  MDB_txn *txn = NULL;
  int rc = txn_begin(s, 1, &txn, e);
  if (rc) return rc;
  static const struct {
    const char *name;
    unsigned flags;
    size_t off;
  } dbs[] = {
      {"meta", 0, offsetof(store, meta)},
      {"docs", 0, offsetof(store, docs)},
      {"texts", 0, offsetof(store, texts)},
      {"ids", MDB_DUPSORT | MDB_DUPFIXED, offsetof(store, ids)},
      {"chunks", 0, offsetof(store, chunks)},
      {"changes", 0, offsetof(store, changes)},
  };
  for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
    int mrc = mdb_dbi_open(txn, dbs[i].name, dbs[i].flags | MDB_CREATE,
                           (MDB_dbi *)((char *)s + dbs[i].off));
    if (mrc) {
      rc = mdb_fail(e, mrc, "opening a database");
      goto fail;
    }
  }
  MDB_val k = {14, "schema_version"}, v;
  int mrc = mdb_get(txn, s->meta, &k, &v);
  if (mrc == MDB_NOTFOUND) {
    uint8_t vb[4];
    put_le32(vb, STORE_SCHEMA_VERSION);
    v.mv_size = 4;
    v.mv_data = vb;
    mrc = mdb_put(txn, s->meta, &k, &v, 0);
    if (mrc) {
      rc = mdb_fail(e, mrc, "writing the schema version");
      goto fail;
    }
    counters c = {0, 0, 0, 0, 1, 0};
    rc = counters_write(s, txn, &c, e);
    if (rc) goto fail;
  } else if (mrc) {
    rc = mdb_fail(e, mrc, "reading the schema version");
    goto fail;
  } else {
    uint32_t ver = v.mv_size == 4 ? get_le32(v.mv_data) : 0;
    if (ver > STORE_SCHEMA_VERSION) {
      rc = ctxd_seterr(e, CTXD_EPRECOND,
                       "store schema version %u is newer than this ctxd (%u)",
                       ver, STORE_SCHEMA_VERSION);
      goto fail;
    }
    if (ver < 1) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT, "store: bad schema version record");
      goto fail;
    }
  }
  rc = txn_commit(s, txn, 0, e);
  if (rc == ST_MAPFULL)
    rc = ctxd_seterr(e, CTXD_ENOSPC, "store: map too small to initialise");
  return rc;
fail:
  txn_abort(s, txn);
  if (rc == ST_MAPFULL)
    rc = ctxd_seterr(e, CTXD_ENOSPC, "store: map too small to initialise");
  return rc;
}

int store_open(const char *dir, const store_opts *opts, store **out,
               ctxd_error *e) {
  store_opts o = {0};
  if (opts) o = *opts;
  if (!o.map_size) o.map_size = MAP_SIZE_DEFAULT;
  if (!o.max_map_size) o.max_map_size = MAX_MAP_SIZE_DEFAULT;
  if (o.max_map_size < o.map_size) o.max_map_size = o.map_size;
  if (!o.max_readers) o.max_readers = MAX_READERS_DEFAULT;
  *out = NULL;

  int rc = 0, mrc;
  store *s = calloc(1, sizeof *s);
  if (!s) return ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
  pthread_rwlockattr_t ra;
  pthread_rwlockattr_init(&ra);
  /* Readers must not starve a pending map growth. */
  pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init(&s->lock, &ra);
  pthread_rwlockattr_destroy(&ra);
  s->max_map_size = o.max_map_size;
  if (snprintf(s->path, sizeof s->path, "%s/data.mdb", dir) >=
      (int)sizeof s->path) {
    rc = ctxd_seterr(e, CTXD_EINVAL, "store: data directory path too long");
    goto fail;
  }
  if (make_dirs(dir)) {
    rc = ctxd_seterr(e, CTXD_EIO, "store: cannot create data directory %s: %s",
                     dir, strerror(errno));
    goto fail;
  }
  if ((mrc = mdb_env_create(&s->env)) || (mrc = mdb_env_set_maxdbs(s->env, 8)) ||
      (mrc = mdb_env_set_maxreaders(s->env, o.max_readers)) ||
      (mrc = mdb_env_set_mapsize(s->env, (size_t)o.map_size))) {
    rc = mdb_fail(e, mrc, "creating the environment");
    goto fail;
  }
  mrc = mdb_env_open(s->env, dir, MDB_NOTLS | (o.no_sync ? MDB_NOSYNC : 0),
                     0644);
  if (mrc) {
    rc = ctxd_seterr(e, mrc == MDB_INVALID || mrc == MDB_VERSION_MISMATCH
                            ? CTXD_ECORRUPT
                            : CTXD_EIO,
                     "store: cannot open %s: %s", dir, mdb_strerror(mrc));
    goto fail;
  }
  s->max_key = (size_t)mdb_env_get_maxkeysize(s->env);
  if (s->max_key > 1024) s->max_key = 1024; /* key buffers are 1024 bytes */
  for (;;) {
    rc = open_dbs(s, e);
    if (rc != CTXD_ENOSPC || o.map_size >= o.max_map_size) break;
    /* A tiny initial map can be too small even for the empty databases. */
    int grc = map_resize(s, 1, 0, e);
    if (grc) break;
  }
  if (rc) goto fail;
  /* LMDB syncs its files, not the directory that names them: make the
   * entries of data.mdb and lock.mdb (and the directory itself, if we just
   * made it) durable before the first write is acknowledged. */
  if (!o.no_sync && sync_dir(dir) != 0) {
    rc = ctxd_seterr(e, CTXD_EIO, "store: cannot sync directory %s: %s", dir,
                     strerror(errno));
    goto fail;
  }
  ctxd_clearerr(e);
  *out = s;
  return 0;
fail:
  if (s->env) mdb_env_close(s->env);
  pthread_rwlock_destroy(&s->lock);
  free(s);
  return rc;
}

void store_close(store *s) {
  if (!s) return;
  mdb_env_close(s->env);
  pthread_rwlock_destroy(&s->lock);
  free(s);
}

/* ---- put ------------------------------------------------------------------- */

/* Encode the docs record of `d` (with its final id) into a malloc'd buffer. */
static int doc_encode(const store_put_doc *d, const char *id, size_t id_len,
                      uint64_t tokens, MDB_val *out, ctxd_error *e) {
  size_t n = DOC_HDR + id_len;
  for (size_t i = 0; i < d->n_meta; i++)
    n += 8 + d->meta[i].key_len + d->meta[i].val_len;
  uint8_t *p = malloc(n);
  if (!p) return ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
  put_le32(p, (uint32_t)id_len);
  put_le64(p + 4, d->text_len);
  put_le64(p + 12, tokens);
  put_le32(p + 20, (uint32_t)d->n_chunks);
  put_le32(p + 24, (uint32_t)d->n_meta);
  memcpy(p + DOC_HDR, id, id_len);
  size_t off = DOC_HDR + id_len;
  for (size_t i = 0; i < d->n_meta; i++) {
    const store_kv *kv = &d->meta[i];
    put_le32(p + off, (uint32_t)kv->key_len);
    if (kv->key_len) memcpy(p + off + 4, kv->key, kv->key_len);
    off += 4 + kv->key_len;
    put_le32(p + off, (uint32_t)kv->val_len);
    if (kv->val_len) memcpy(p + off + 4, kv->val, kv->val_len);
    off += 4 + kv->val_len;
  }
  out->mv_data = p;
  out->mv_size = n;
  return 0;
}

/* The chunk spans must tile the text as the chunker makes them: the first
 * starts at 0, the last ends at the text's end, starts never go back, every
 * span is non-empty and inside the text. A store that accepted anything else
 * would fail its own verify. */
static int check_chunks(size_t idx, const store_put_doc *d, ctxd_error *e) {
  if (d->text_len == 0) {
    if (d->n_chunks)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "document %zu: an empty text has no chunks", idx);
    return 0;
  }
  if (d->n_chunks == 0 || d->n_chunks > UINT32_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "document %zu: bad chunk count %zu",
                       idx, d->n_chunks);
  for (size_t i = 0; i < d->n_chunks; i++) {
    const chunk_span *c = &d->chunks[i];
    if (c->byte_start >= c->byte_end || c->byte_end > d->text_len ||
        (i == 0 && c->byte_start != 0) ||
        (i > 0 && c->byte_start < d->chunks[i - 1].byte_start) ||
        (i == d->n_chunks - 1 && c->byte_end != d->text_len))
      return ctxd_seterr(e, CTXD_EINVAL,
                         "document %zu: chunk %zu [%llu, %llu) does not fit "
                         "a text of %zu bytes",
                         idx, i, (unsigned long long)c->byte_start,
                         (unsigned long long)c->byte_end, d->text_len);
  }
  return 0;
}

typedef struct id_ref {
  const char *id;
  size_t len;
  size_t idx;
} id_ref;

static int id_ref_cmp(const void *a, const void *b) {
  const id_ref *x = a, *y = b;
  if (x->len != y->len) return x->len < y->len ? -1 : 1;
  int c = memcmp(x->id, y->id, x->len);
  if (c) return c;
  return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* Random UUIDv4 in canonical text form (36 chars + NUL). */
static int uuid4(char out[37], ctxd_error *e) {
  uint8_t b[16];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t r = getrandom(b + got, sizeof b - got, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      return ctxd_seterr(e, CTXD_EIO, "store: getrandom: %s", strerror(errno));
    }
    got += (size_t)r;
  }
  b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
  b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
    out[o++] = hex[b[i] >> 4];
    out[o++] = hex[b[i] & 15];
  }
  out[o] = '\0';
  return 0;
}

/* Write one document inside `txn`. */
static int put_one(store *s, MDB_txn *txn, counters *c,
                   const store_put_doc *d, const char *id, size_t id_len,
                   store_put_result *r, ctxd_error *e) {
  uint64_t doc = 0, tokens = 0;
  doc_rec old = {0};
  MDB_val rec = {0, NULL};
  int rc = lookup(s, txn, id, id_len, &doc, &old, e), mrc;
  for (size_t i = 0; i < d->n_chunks; i++) tokens += d->chunks[i].tokens;
  if (rc == 0) {
    /* Replace: keep the internal id, drop the old chunks and counts. */
    c->documents--;
    c->bytes -= old.bytes;
    c->tokens -= old.tokens;
    uint32_t gone = 0;
    rc = chunks_delete(s, txn, doc, &gone, e);
    if (rc) return rc;
    c->chunks -= gone;
    r->replaced = 1;
  } else if (rc == CTXD_ENOTFOUND) {
    doc = c->next_doc++;
    uint8_t kbuf[1024], vb[8];
    MDB_val key, v = {8, vb};
    id_key(s, id, id_len, kbuf, &key);
    put_be64(vb, doc);
    mrc = mdb_put(txn, s->ids, &key, &v, 0);
    if (mrc) return mdb_fail(e, mrc, "writing the id index");
    r->replaced = 0;
  } else {
    return rc;
  }

  uint8_t dk[8];
  put_be64(dk, doc);
  MDB_val k = {8, dk};
  rc = doc_encode(d, id, id_len, tokens, &rec, e);
  if (rc) return rc;
  mrc = mdb_put(txn, s->docs, &k, &rec, 0);
  free(rec.mv_data);
  if (mrc) return mdb_fail(e, mrc, "writing a document");
  MDB_val tv = {d->text_len, (void *)(d->text_len ? d->text : "")};
  mrc = mdb_put(txn, s->texts, &k, &tv, 0);
  if (mrc) return mdb_fail(e, mrc, "writing a text");
  for (size_t i = 0; i < d->n_chunks; i++) {
    uint8_t kb[CHUNK_KEY], vb[CHUNK_VAL];
    put_be64(kb, doc);
    put_be32(kb + 8, (uint32_t)i);
    put_le64(vb, d->chunks[i].byte_start);
    put_le64(vb + 8, d->chunks[i].byte_end);
    put_le32(vb + 16, d->chunks[i].tokens);
    MDB_val ck = {CHUNK_KEY, kb}, cv = {CHUNK_VAL, vb};
    mrc = mdb_put(txn, s->chunks, &ck, &cv, 0);
    if (mrc) return mdb_fail(e, mrc, "writing a chunk");
  }
  c->documents++;
  c->chunks += d->n_chunks;
  c->bytes += d->text_len;
  c->tokens += tokens;
  rc = change_append(s, txn, c, OP_PUT, doc, e);
  if (rc) return rc;
  r->doc_seq = doc;
  r->tokens = tokens;
  memcpy(r->id, id, id_len);
  r->id[id_len] = '\0';
  return 0;
}

int store_put(store *s, const store_put_doc *docs, size_t n,
              store_put_result *res, ctxd_error *e) {
  int rc = 0;
  char (*gen)[37] = NULL;
  id_ref *refs = NULL;
  store_put_result *tmp = NULL;
  if (n == 0) return 0;

  /* Everything that can be refused is refused before the transaction. */
  gen = calloc(n, sizeof *gen);
  refs = calloc(n, sizeof *refs);
  tmp = calloc(n, sizeof *tmp);
  if (!gen || !refs || !tmp) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
    goto fail;
  }
  for (size_t i = 0; i < n; i++) {
    const store_put_doc *d = &docs[i];
    if (d->id_len > STORE_ID_MAX) {
      rc = ctxd_seterr(e, CTXD_EINVAL,
                       "document %zu: id is %zu bytes, more than %d", i,
                       d->id_len, STORE_ID_MAX);
      goto fail;
    }
    if (d->n_meta > UINT32_MAX) {
      rc = ctxd_seterr(e, CTXD_EINVAL, "document %zu: too many metadata", i);
      goto fail;
    }
    for (size_t m = 0; m < d->n_meta; m++)
      if (d->meta[m].key_len > UINT32_MAX || d->meta[m].val_len > UINT32_MAX) {
        rc = ctxd_seterr(e, CTXD_EINVAL, "document %zu: metadata too long", i);
        goto fail;
      }
    rc = check_chunks(i, d, e);
    if (rc) goto fail;
    if (d->id_len == 0) {
      rc = uuid4(gen[i], e);
      if (rc) goto fail;
      refs[i].id = gen[i];
      refs[i].len = 36;
    } else {
      refs[i].id = d->id;
      refs[i].len = d->id_len;
    }
    refs[i].idx = i;
  }
  /* What the commit will write, roughly: texts, records, chunks. */
  uint64_t need = 0;
  for (size_t i = 0; i < n; i++) {
    need += docs[i].text_len + DOC_HDR + 2 * (uint64_t)refs[i].len +
            (uint64_t)docs[i].n_chunks * (CHUNK_KEY + CHUNK_VAL + 16);
    for (size_t m = 0; m < docs[i].n_meta; m++)
      need += 8 + docs[i].meta[m].key_len + docs[i].meta[m].val_len;
  }
  qsort(refs, n, sizeof *refs, id_ref_cmp);
  for (size_t i = 1; i < n; i++)
    if (refs[i].len == refs[i - 1].len &&
        memcmp(refs[i].id, refs[i - 1].id, refs[i].len) == 0) {
      rc = ctxd_seterr(e, CTXD_EINVAL,
                       "documents %zu and %zu have the same id \"%.*s\"",
                       refs[i - 1].idx, refs[i].idx,
                       (int)(refs[i].len > 64 ? 64 : refs[i].len), refs[i].id);
      goto fail;
    }

  for (;;) {
    MDB_txn *txn = NULL;
    counters c;
    rc = txn_begin(s, 1, &txn, e);
    if (rc) goto fail;
    uint64_t seen = map_size_now(s);
    rc = counters_read(s, txn, &c, e);
    for (size_t i = 0; rc == 0 && i < n; i++) {
      const store_put_doc *d = &docs[i];
      const char *id = d->id_len ? d->id : gen[i];
      size_t id_len = d->id_len ? d->id_len : 36;
      rc = put_one(s, txn, &c, d, id, id_len, &tmp[i], e);
    }
    if (rc == 0) rc = counters_write(s, txn, &c, e);
    if (rc == 0) {
      rc = txn_commit(s, txn, need, e);
    } else {
      txn_abort(s, txn);
    }
    if (rc != ST_MAPFULL) break;
    rc = map_resize(s, 1, seen, e);
    if (rc) goto fail;
  }
  if (rc) goto fail;
  if (res) memcpy(res, tmp, n * sizeof *res);
fail:
  free(gen);
  free(refs);
  free(tmp);
  return rc;
}

/* ---- get / list -------------------------------------------------------------- */

/* Copy a decoded record into `d` (id and metadata; no text, no chunks). */
static int doc_fill(const doc_rec *r, uint64_t doc, store_doc *d,
                    ctxd_error *e) {
  memset(d, 0, sizeof *d);
  d->doc_seq = doc;
  d->bytes = r->bytes;
  d->tokens = r->tokens;
  d->n_chunks = r->n_chunks;
  d->id = malloc((size_t)r->id_len + 1);
  /* One block: the kv array, then every key and value NUL-terminated. */
  size_t need = (size_t)r->n_meta * sizeof(store_kv) + r->meta_len +
                2 * (size_t)r->n_meta + 1;
  d->meta = malloc(need);
  if (!d->id || !d->meta) {
    free(d->id);
    free(d->meta);
    memset(d, 0, sizeof *d);
    return ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
  }
  memcpy(d->id, r->id, r->id_len);
  d->id[r->id_len] = '\0';
  d->id_len = r->id_len;
  char *str = (char *)(d->meta + r->n_meta);
  size_t off = 0;
  for (uint32_t i = 0; i < r->n_meta; i++) {
    store_kv *kv = &d->meta[i];
    uint32_t kl = get_le32(r->meta + off);
    memcpy(str, r->meta + off + 4, kl);
    str[kl] = '\0';
    kv->key = str;
    kv->key_len = kl;
    str += kl + 1;
    off += 4 + kl;
    uint32_t vl = get_le32(r->meta + off);
    memcpy(str, r->meta + off + 4, vl);
    str[vl] = '\0';
    kv->val = str;
    kv->val_len = vl;
    str += vl + 1;
    off += 4 + vl;
  }
  d->n_meta = r->n_meta;
  return 0;
}

static void doc_clear(store_doc *d) {
  free(d->id);
  free(d->text);
  free(d->chunks);
  free(d->meta);
}

void store_doc_free(store_doc *d) {
  if (!d) return;
  doc_clear(d);
  free(d);
}

void store_docs_free(store_doc *docs, size_t n) {
  if (!docs) return;
  for (size_t i = 0; i < n; i++) doc_clear(&docs[i]);
  free(docs);
}

static int read_chunks(store *s, MDB_txn *txn, uint64_t doc, uint32_t n,
                       chunk_span **out, ctxd_error *e) {
  chunk_span *ch = calloc(n ? n : 1, sizeof *ch);
  if (!ch) return ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
  MDB_cursor *cur = NULL;
  uint8_t kb[CHUNK_KEY];
  put_be64(kb, doc);
  put_be32(kb + 8, 0);
  MDB_val k = {CHUNK_KEY, kb}, v;
  uint32_t got = 0;
  int rc = mdb_cursor_open(txn, s->chunks, &cur);
  if (rc) {
    free(ch);
    return mdb_fail(e, rc, "opening chunks cursor");
  }
  rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
  while (rc == 0 && k.mv_size == CHUNK_KEY && get_be64(k.mv_data) == doc) {
    if (got >= n || v.mv_size != CHUNK_VAL ||
        get_be32((uint8_t *)k.mv_data + 8) != got)
      break;
    const uint8_t *p = v.mv_data;
    ch[got].byte_start = get_le64(p);
    ch[got].byte_end = get_le64(p + 8);
    ch[got].tokens = get_le32(p + 16);
    got++;
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND) {
    free(ch);
    return mdb_fail(e, rc, "reading chunks");
  }
  if (got != n) {
    free(ch);
    return ctxd_seterr(e, CTXD_ECORRUPT,
                       "store: chunks of document %llu are damaged",
                       (unsigned long long)doc);
  }
  *out = ch;
  return 0;
}

int store_get(store *s, const char *id, size_t id_len, int flags,
              store_doc **out, ctxd_error *e) {
  *out = NULL;
  if (id_len == 0 || id_len > STORE_ID_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "id must be 1..%d bytes, not %zu",
                       STORE_ID_MAX, id_len);
  MDB_txn *txn = NULL;
  store_doc *d = NULL;
  doc_rec r;
  uint64_t doc;
  int rc = txn_begin(s, 0, &txn, e);
  if (rc) return rc;
  rc = lookup(s, txn, id, id_len, &doc, &r, e);
  if (rc == CTXD_ENOTFOUND) {
    rc = ctxd_seterr(e, CTXD_ENOTFOUND, "document %.*s not found",
                     (int)id_len, id);
    goto fail;
  }
  if (rc) goto fail;
  d = calloc(1, sizeof *d);
  if (!d) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
    goto fail;
  }
  rc = doc_fill(&r, doc, d, e);
  if (rc) goto fail;
  if (flags & STORE_GET_TEXT) {
    uint8_t dk[8];
    put_be64(dk, doc);
    MDB_val k = {8, dk}, v;
    int mrc = mdb_get(txn, s->texts, &k, &v);
    if (mrc == MDB_NOTFOUND || (mrc == 0 && v.mv_size != r.bytes)) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT, "store: text of %.*s is damaged",
                       (int)id_len, id);
      goto fail;
    }
    if (mrc) {
      rc = mdb_fail(e, mrc, "reading a text");
      goto fail;
    }
    d->text = malloc(v.mv_size + 1);
    if (!d->text) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
      goto fail;
    }
    if (v.mv_size) memcpy(d->text, v.mv_data, v.mv_size);
    d->text[v.mv_size] = '\0';
    d->text_len = v.mv_size;
  }
  if (flags & STORE_GET_CHUNKS) {
    rc = read_chunks(s, txn, doc, r.n_chunks, &d->chunks, e);
    if (rc) goto fail;
  }
  txn_abort(s, txn);
  *out = d;
  return 0;
fail:
  txn_abort(s, txn);
  store_doc_free(d);
  return rc;
}

int store_list(store *s, uint64_t after, size_t limit, store_doc **out,
               size_t *n, uint64_t *next, ctxd_error *e) {
  *out = NULL;
  *n = 0;
  *next = 0;
  if (limit == 0) return 0;
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  store_doc *docs = NULL;
  size_t got = 0, cap = limit < 64 ? limit : 64;
  int rc = txn_begin(s, 0, &txn, e), mrc;
  if (rc) return rc;
  docs = calloc(cap, sizeof *docs);
  if (!docs) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
    goto fail;
  }
  mrc = mdb_cursor_open(txn, s->docs, &cur);
  if (mrc) {
    rc = mdb_fail(e, mrc, "opening docs cursor");
    goto fail;
  }
  if (after == UINT64_MAX) goto done;
  uint8_t kb[8];
  put_be64(kb, after + 1);
  MDB_val k = {8, kb}, v;
  mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
  while (mrc == 0) {
    if (k.mv_size != 8) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT, "store: bad docs key");
      goto fail;
    }
    uint64_t doc = get_be64(k.mv_data);
    if (got == limit) {
      *next = docs[got - 1].doc_seq; /* one more exists */
      break;
    }
    doc_rec r;
    if (doc_decode(&v, &r)) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT,
                       "store: document record %llu is damaged",
                       (unsigned long long)doc);
      goto fail;
    }
    if (got == cap) {
      size_t ncap = cap * 2 > limit ? limit : cap * 2;
      store_doc *nd = realloc(docs, ncap * sizeof *nd);
      if (!nd) {
        rc = ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
        goto fail;
      }
      docs = nd;
      cap = ncap;
    }
    rc = doc_fill(&r, doc, &docs[got], e);
    if (rc) goto fail;
    got++;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  if (mrc && mrc != MDB_NOTFOUND) {
    rc = mdb_fail(e, mrc, "listing documents");
    goto fail;
  }
done:
  mdb_cursor_close(cur);
  txn_abort(s, txn);
  *out = docs;
  *n = got;
  return 0;
fail:
  if (cur) mdb_cursor_close(cur);
  txn_abort(s, txn);
  store_docs_free(docs, got);
  *next = 0;
  return rc;
}

/* ---- delete ------------------------------------------------------------------ */

int store_delete(store *s, const char *id, size_t id_len, int *deleted,
                 uint32_t *n_chunks, ctxd_error *e) {
  *deleted = 0;
  if (n_chunks) *n_chunks = 0;
  if (id_len == 0 || id_len > STORE_ID_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "id must be 1..%d bytes, not %zu",
                       STORE_ID_MAX, id_len);
  for (;;) {
    MDB_txn *txn = NULL;
    counters c;
    doc_rec r;
    uint64_t doc = 0;
    uint32_t gone = 0;
    int rc = txn_begin(s, 1, &txn, e), mrc;
    if (rc) return rc;
    uint64_t seen = map_size_now(s);
    rc = lookup(s, txn, id, id_len, &doc, &r, e);
    if (rc == CTXD_ENOTFOUND) {
      txn_abort(s, txn);
      return 0;
    }
    if (rc == 0) rc = counters_read(s, txn, &c, e);
    if (rc == 0) {
      uint64_t bytes = r.bytes, tokens = r.tokens; /* r dies with the del */
      uint8_t kbuf[1024], dk[8];
      MDB_val key, dv = {8, dk};
      put_be64(dk, doc);
      id_key(s, id, id_len, kbuf, &key);
      if ((mrc = mdb_del(txn, s->ids, &key, &dv)) ||
          (mrc = mdb_del(txn, s->docs, &dv, NULL)) ||
          ((mrc = mdb_del(txn, s->texts, &dv, NULL)) && mrc != MDB_NOTFOUND))
        rc = mdb_fail(e, mrc, "deleting a document");
      if (rc == 0) rc = chunks_delete(s, txn, doc, &gone, e);
      if (rc == 0) {
        c.documents--;
        c.chunks -= gone;
        c.bytes -= bytes;
        c.tokens -= tokens;
        rc = change_append(s, txn, &c, OP_DELETE, doc, e);
      }
      if (rc == 0) rc = counters_write(s, txn, &c, e);
    }
    if (rc == 0) {
      rc = txn_commit(s, txn, 0, e);
    } else {
      txn_abort(s, txn);
    }
    if (rc == ST_MAPFULL) {
      rc = map_resize(s, 1, seen, e);
      if (rc) return rc;
      continue;
    }
    if (rc) return rc;
    *deleted = 1;
    if (n_chunks) *n_chunks = gone;
    return 0;
  }
}

/* ---- stats / meta -------------------------------------------------------------- */

int store_stats_get(store *s, store_stats *out, ctxd_error *e) {
  memset(out, 0, sizeof *out);
  MDB_txn *txn = NULL;
  counters c;
  int rc = txn_begin(s, 0, &txn, e), mrc;
  if (rc) return rc;
  rc = counters_read(s, txn, &c, e);
  if (rc) goto done;
  out->documents = c.documents;
  out->chunks = c.chunks;
  out->bytes = c.bytes;
  out->tokens = c.tokens;
  out->last_seq = c.last_seq;
  MDB_val k = {14, "schema_version"}, v;
  if (mdb_get(txn, s->meta, &k, &v) == 0 && v.mv_size == 4)
    out->schema_version = get_le32(v.mv_data);
  MDB_val tk = {9, "tokenizer"};
  mrc = mdb_get(txn, s->meta, &tk, &v);
  if (mrc == 0) {
    size_t l = v.mv_size < sizeof out->tokenizer - 1 ? v.mv_size
                                                     : sizeof out->tokenizer - 1;
    memcpy(out->tokenizer, v.mv_data, l);
    out->tokenizer[l] = '\0';
  }
  MDB_envinfo info;
  MDB_stat st;
  mdb_env_info(s->env, &info);
  mdb_env_stat(s->env, &st);
  out->map_bytes = info.me_mapsize;
  out->map_used_bytes = ((uint64_t)info.me_last_pgno + 1) * st.ms_psize;
  struct stat fs;
  if (stat(s->path, &fs) == 0) out->file_bytes = (uint64_t)fs.st_size;
done:
  txn_abort(s, txn);
  return rc;
}

int store_set_tokenizer(store *s, const char *name, ctxd_error *e) {
  size_t len = strlen(name);
  if (len >= sizeof((store_stats *)0)->tokenizer)
    return ctxd_seterr(e, CTXD_EINVAL, "tokenizer name too long");
  for (;;) {
    MDB_txn *txn = NULL;
    int rc = txn_begin(s, 1, &txn, e);
    if (rc) return rc;
    uint64_t seen = map_size_now(s);
    MDB_val k = {9, "tokenizer"}, v = {len, (void *)name};
    int mrc = mdb_put(txn, s->meta, &k, &v, 0);
    if (mrc) {
      txn_abort(s, txn);
      rc = mdb_fail(e, mrc, "writing the tokenizer");
    } else {
      rc = txn_commit(s, txn, 0, e);
    }
    if (rc != ST_MAPFULL) return rc;
    rc = map_resize(s, 1, seen, e);
    if (rc) return rc;
  }
}

/* ---- verify ------------------------------------------------------------------- */

typedef struct vctx {
  store_verify_report *rep;
  int oom;
} vctx;

static void problem(vctx *v, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void problem(vctx *v, const char *fmt, ...) {
  store_verify_report *r = v->rep;
  r->ok = 0;
  if (r->n_problems >= VERIFY_MAX_PROBLEMS) return;
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  char **np = realloc(r->problems, (r->n_problems + 1) * sizeof *np);
  char *str = strdup(buf);
  if (!np || !str) {
    free(str);
    if (np) r->problems = np;
    v->oom = 1;
    return;
  }
  r->problems = np;
  r->problems[r->n_problems++] = str;
}

/* Check the chunks of one document; returns how many there were. */
static int verify_doc_chunks(store *s, MDB_txn *txn, vctx *v, uint64_t doc,
                             const doc_rec *r, const char *name,
                             uint64_t *n_out, uint64_t *tok_out) {
  MDB_cursor *cur = NULL;
  uint8_t kb[CHUNK_KEY];
  put_be64(kb, doc);
  put_be32(kb + 8, 0);
  MDB_val k = {CHUNK_KEY, kb}, val;
  uint64_t n = 0, expect = 0, tokens = 0, prev_start = 0;
  uint64_t last_end = 0;
  int mrc = mdb_cursor_open(txn, s->chunks, &cur);
  if (mrc) return mrc;
  mrc = mdb_cursor_get(cur, &k, &val, MDB_SET_RANGE);
  while (mrc == 0 && k.mv_size == CHUNK_KEY && get_be64(k.mv_data) == doc) {
    uint32_t ord = get_be32((uint8_t *)k.mv_data + 8);
    if (ord != expect) {
      problem(v, "document %s: chunk ordinal %u where %llu was expected", name,
              ord, (unsigned long long)expect);
      expect = ord; /* resynchronise so one gap is one problem */
    }
    if (val.mv_size != CHUNK_VAL) {
      problem(v, "document %s: chunk %u has a damaged record", name, ord);
    } else {
      const uint8_t *p = val.mv_data;
      uint64_t bs = get_le64(p), be = get_le64(p + 8);
      tokens += get_le32(p + 16);
      if (bs >= be || be > r->bytes)
        problem(v, "document %s: chunk %u [%llu, %llu) is outside the text "
                   "of %llu bytes",
                name, ord, (unsigned long long)bs, (unsigned long long)be,
                (unsigned long long)r->bytes);
      if (n == 0 && bs != 0)
        problem(v, "document %s: first chunk starts at %llu, not 0", name,
                (unsigned long long)bs);
      if (n > 0 && bs < prev_start)
        problem(v, "document %s: chunk %u starts before chunk %u", name, ord,
                ord - 1);
      prev_start = bs;
      last_end = be;
    }
    n++;
    expect++;
    mrc = mdb_cursor_get(cur, &k, &val, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  if (mrc && mrc != MDB_NOTFOUND) return mrc;
  if (n > 0 && last_end != r->bytes)
    problem(v, "document %s: last chunk ends at %llu, text ends at %llu", name,
            (unsigned long long)last_end, (unsigned long long)r->bytes);
  if (n == 0 && r->bytes > 0)
    problem(v, "document %s: %llu bytes of text but no chunks", name,
            (unsigned long long)r->bytes);
  if (n != r->n_chunks)
    problem(v, "document %s: record says %u chunks, %llu stored", name,
            r->n_chunks, (unsigned long long)n);
  if (tokens != r->tokens)
    problem(v, "document %s: record says %llu tokens, chunks sum to %llu",
            name, (unsigned long long)r->tokens, (unsigned long long)tokens);
  *n_out = n;
  *tok_out = tokens;
  return 0;
}

/* A printable, bounded rendering of a client id for problem messages. */
static void id_name(const char *id, size_t len, char *buf, size_t cap) {
  size_t n = len < cap - 4 ? len : cap - 4;
  for (size_t i = 0; i < n; i++)
    buf[i] = (id[i] >= 0x20 && id[i] < 0x7f) ? id[i] : '?';
  if (n < len) {
    memcpy(buf + n, "...", 4);
  } else {
    buf[n] = '\0';
  }
}

int store_verify(store *s, store_verify_report *report, ctxd_error *e) {
  memset(report, 0, sizeof *report);
  report->ok = 1;
  vctx v = {report, 0};
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  counters c, sum = {0, 0, 0, 0, 0, 0};
  uint64_t max_doc = 0;
  int rc = txn_begin(s, 0, &txn, e), mrc = 0;
  if (rc) return rc;
  rc = counters_read(s, txn, &c, e);
  if (rc) goto fail;

  /* 1. Every document: record, id index entry, text, chunks. */
  MDB_val k, val;
  if ((mrc = mdb_cursor_open(txn, s->docs, &cur))) goto mdb_fail_;
  for (mrc = mdb_cursor_get(cur, &k, &val, MDB_FIRST); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &val, MDB_NEXT)) {
    if (k.mv_size != 8) {
      problem(&v, "docs: key of %zu bytes", k.mv_size);
      continue;
    }
    uint64_t doc = get_be64(k.mv_data);
    char name[96];
    doc_rec r;
    report->documents_checked++;
    if (doc > max_doc) max_doc = doc;
    if (doc_decode(&val, &r)) {
      problem(&v, "document #%llu: damaged record", (unsigned long long)doc);
      continue;
    }
    id_name(r.id, r.id_len, name, sizeof name);
    sum.documents++;
    sum.bytes += r.bytes;
    if (r.id_len == 0 || r.id_len > STORE_ID_MAX)
      problem(&v, "document #%llu: id of %u bytes", (unsigned long long)doc,
              r.id_len);

    uint8_t kbuf[1024];
    MDB_val ik, iv = {8, k.mv_data};
    MDB_cursor *ic = NULL;
    id_key(s, r.id, r.id_len, kbuf, &ik);
    if ((mrc = mdb_cursor_open(txn, s->ids, &ic))) goto mdb_fail_;
    mrc = mdb_cursor_get(ic, &ik, &iv, MDB_GET_BOTH);
    mdb_cursor_close(ic);
    if (mrc == MDB_NOTFOUND)
      problem(&v, "document %s: no id index entry", name);
    else if (mrc)
      goto mdb_fail_;

    MDB_val tv;
    mrc = mdb_get(txn, s->texts, &k, &tv);
    if (mrc == MDB_NOTFOUND)
      problem(&v, "document %s: text is missing", name);
    else if (mrc)
      goto mdb_fail_;
    else if (tv.mv_size != r.bytes)
      problem(&v, "document %s: text is %zu bytes, record says %llu", name,
              tv.mv_size, (unsigned long long)r.bytes);

    uint64_t nch = 0, ntok = 0;
    if ((mrc = verify_doc_chunks(s, txn, &v, doc, &r, name, &nch, &ntok)))
      goto mdb_fail_;
    report->chunks_checked += nch;
    sum.chunks += nch;
    sum.tokens += r.tokens;
  }
  if (mrc != MDB_NOTFOUND) goto mdb_fail_;
  mdb_cursor_close(cur);
  cur = NULL;

  /* 2. Every id index entry points at a document with that id. */
  if ((mrc = mdb_cursor_open(txn, s->ids, &cur))) goto mdb_fail_;
  for (mrc = mdb_cursor_get(cur, &k, &val, MDB_FIRST); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &val, MDB_NEXT)) {
    if (val.mv_size != 8) {
      problem(&v, "ids: damaged entry");
      continue;
    }
    MDB_val dv;
    uint64_t doc = get_be64(val.mv_data);
    mrc = mdb_get(txn, s->docs, &val, &dv);
    doc_rec r;
    if (mrc == MDB_NOTFOUND) {
      problem(&v, "ids: entry points to missing document #%llu",
              (unsigned long long)doc);
      continue;
    }
    if (mrc) goto mdb_fail_;
    if (doc_decode(&dv, &r)) continue; /* already reported */
    uint8_t kbuf[1024];
    MDB_val want;
    id_key(s, r.id, r.id_len, kbuf, &want);
    if (want.mv_size != k.mv_size || memcmp(want.mv_data, k.mv_data, k.mv_size))
      problem(&v, "ids: entry for document #%llu is under the wrong key",
              (unsigned long long)doc);
  }
  if (mrc != MDB_NOTFOUND) goto mdb_fail_;
  mdb_cursor_close(cur);
  cur = NULL;

  /* 3. No chunk or text without its document. */
  MDB_dbi orphan_dbs[2] = {s->chunks, s->texts};
  const char *orphan_names[2] = {"chunk", "text"};
  for (int i = 0; i < 2; i++) {
    uint64_t last_missing = UINT64_MAX;
    if ((mrc = mdb_cursor_open(txn, orphan_dbs[i], &cur))) goto mdb_fail_;
    for (mrc = mdb_cursor_get(cur, &k, &val, MDB_FIRST); mrc == 0;
         mrc = mdb_cursor_get(cur, &k, &val, MDB_NEXT)) {
      if (k.mv_size < 8) {
        problem(&v, "%ss: short key", orphan_names[i]);
        continue;
      }
      uint64_t doc = get_be64(k.mv_data);
      if (doc == last_missing) continue;
      MDB_val dk = {8, k.mv_data}, dv;
      mrc = mdb_get(txn, s->docs, &dk, &dv);
      if (mrc == MDB_NOTFOUND) {
        problem(&v, "orphan %s of missing document #%llu", orphan_names[i],
                (unsigned long long)doc);
        last_missing = doc;
      } else if (mrc) {
        goto mdb_fail_;
      }
    }
    if (mrc != MDB_NOTFOUND) goto mdb_fail_;
    mdb_cursor_close(cur);
    cur = NULL;
  }

  /* 4. Counters. */
  static const char *cn[] = {"documents", "chunks", "bytes", "tokens"};
  uint64_t have[] = {c.documents, c.chunks, c.bytes, c.tokens};
  uint64_t want[] = {sum.documents, sum.chunks, sum.bytes, sum.tokens};
  for (int i = 0; i < 4; i++)
    if (have[i] != want[i])
      problem(&v, "counter %s is %llu, stored data sums to %llu", cn[i],
              (unsigned long long)have[i], (unsigned long long)want[i]);
  if (max_doc >= c.next_doc)
    problem(&v, "next document id %llu is not above the largest (%llu)",
            (unsigned long long)c.next_doc, (unsigned long long)max_doc);

  txn_abort(s, txn);
  if (v.oom) {
    store_verify_free(report);
    return ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory in verify");
  }
  return 0;
mdb_fail_:
  rc = mdb_fail(e, mrc, "verify");
fail:
  if (cur) mdb_cursor_close(cur);
  txn_abort(s, txn);
  store_verify_free(report);
  return rc;
}

void store_verify_free(store_verify_report *report) {
  if (!report) return;
  for (size_t i = 0; i < report->n_problems; i++) free(report->problems[i]);
  free(report->problems);
  report->problems = NULL;
  report->n_problems = 0;
}
