/* store.c - the document store on LMDB (see store.h for the contract).
 *
 * Layout (schema 2). One environment per data directory: `data.mdb` and
 * `lock.mdb` in it. Named databases; integers in keys are big-endian (so
 * keys sort numerically), integers in values are little-endian, fixed width:
 *
 *   meta     "schema_version" -> u32 (2)
 *            "tokenizer"      -> name bytes
 *            "counters"       -> u64 documents, chunks, bytes, tokens,
 *                                next_doc (next internal id, from 1),
 *                                last_seq (last change-log seq, 0 = none),
 *                                next_cid (next collection id, from 1)
 *   colls    u32 cid -> u32 dim, u64 documents, chunks, bytes, tokens,
 *                       vectors, lex_len_sum, u32 name_len, name,
 *                       config (the rest of the value)
 *   cnames   name    -> u32 cid (the by-name index of colls)
 *   docs     u64 doc -> u32 cid, u32 id_len, u64 bytes, u64 tokens,
 *                       u32 n_chunks, u32 n_meta, u32 n_vectors (0 or
 *                       n_chunks), id[id_len],
 *                       n_meta x (u32 key_len, key, u32 val_len, val)
 *   cdocs    u32 cid, u64 doc -> (empty): a collection's documents in
 *                       internal-id order, for List, scans and drops
 *   texts    u64 doc -> the text bytes (may be empty); kept apart so that
 *                       List and Get without text never touch large values
 *   ids      u32 cid + id key -> u64 doc, MDB_DUPSORT|MDB_DUPFIXED
 *            (big-endian values). The id key is the client id itself when
 *            4 + its length is below the LMDB key limit K (511 on Debian);
 *            a longer id is keyed by its first K-12 bytes plus a 64-bit hash
 *            of the whole id, exactly K bytes with the prefix, so hashed keys
 *            never equal a plain one. Several ids may share a key: lookups
 *            compare the full id in the docs record.
 *   chunks   u64 doc, u32 ordinal -> u64 byte_start, u64 byte_end,
 *                       u32 tokens, u32 lex_len (the chunk's lex.h term count)
 *   vectors  u32 cid, u64 doc, u32 ordinal -> dim x f32 (little-endian,
 *                       the native order of the machines ctxd builds for)
 *   postings u32 cid + term bytes -> 16 bytes: u64 label (big-endian, so
 *                       a term's postings sort by label), u32 tf, u32 dl;
 *                       MDB_DUPSORT|MDB_DUPFIXED, label = STORE_LABEL(doc,
 *                       ordinal), one entry per chunk holding the term
 *   jobs     job id  -> opaque record
 *   changes  u64 seq -> u8 op (1 put, 2 delete, 3 drop), u32 cid, u64 doc
 *
 * Postings are derived from the chunk texts inside the transaction that
 * writes the chunks, so BM25 never sees a half-written document. Removing a
 * document re-tokenizes its stored chunk texts to find its terms.
 *
 * Concurrency: MDB_NOTLS, so a read transaction is not tied to a thread.
 * Growing the map (mdb_env_set_mapsize) needs no transaction open in this
 * process, so every transaction holds `s->lock` shared and growth takes it
 * exclusive. Write transactions also hold `s->wgate` shared (taken before
 * `s->lock`): store_compact takes it exclusive to pause writers while
 * readers go on, and `s->lock` exclusive only for the swap itself. Never
 * MDB_WRITEMAP: with it a full disk is a SIGBUS, without it
 * the commit fails with ENOSPC and nothing changes. */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "lex.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "store.c keeps vectors as native float32: little-endian hosts only"
#endif

#define MAP_SIZE_DEFAULT (1ULL << 30)
#define MAX_MAP_SIZE_DEFAULT (1ULL << 40)
#define MAX_READERS_DEFAULT 1024
#define VERIFY_MAX_PROBLEMS 1000
/* Free space under which a failed write is taken for a full disk. */
#define DISK_MARGIN (16ULL << 20)
#define DIM_MAX 65536
#define JOB_ID_MAX 128
#define JOB_REC_MAX (1ULL << 30)

/* Returned by internal write steps when the map is full: the caller aborts,
 * grows the map and reruns the whole transaction. Never leaves this file. */
#define ST_MAPFULL 1
/* Returned by a write_txn body that found nothing to write. */
#define ST_NOOP 2

/* Sizes of fixed parts of the encodings above. */
#define DOC_HDR 36 /* cid 4 + id_len 4 + bytes 8 + tokens 8 + n_chunks 4 +
                      n_meta 4 + n_vectors 4 */
#define CHUNK_VAL 24 /* start 8 + end 8 + tokens 4 + lex_len 4 */
#define CHUNK_KEY 12 /* doc 8 + ordinal 4 */
#define VEC_KEY 16   /* cid 4 + doc 8 + ordinal 4 */
#define CDOC_KEY 12  /* cid 4 + doc 8 */
#define POST_VAL 16  /* label 8 + tf 4 + dl 4 */
#define POST_KEY_MAX (4 + LEX_TERM_MAX)
#define COUNTERS_VAL 56
#define COLL_HDR 56 /* dim 4 + 6 x 8 counters + name_len 4 */
#define CHANGE_VAL 13

struct store {
  MDB_env *env;
  MDB_dbi meta, colls, cnames, docs, cdocs, texts, ids, chunks, vectors,
      postings, jobs, changes;
  pthread_rwlock_t lock;
  pthread_rwlock_t wgate; /* write transactions: shared; compaction: exclusive */
  uint64_t max_map_size;
  unsigned env_flags, max_readers; /* to reopen the environment (compact) */
  size_t max_key; /* mdb_env_get_maxkeysize */
  /* Set (under the exclusive lock) when LMDB could not map the file again
   * after a resize: it then has no map at all, and any transaction would
   * crash, so every call fails with `broken_msg` until a restart. */
  int broken;
  char broken_msg[256];
  char path[4096];
  char dir[4096];
  /* The disk reserve (reserve_*): a file whose blocks a delete may take
   * back when the disk is full. reserve_mu guards the file and the flag. */
  pthread_mutex_t reserve_mu;
  int reserve_held;
  uint64_t reserve_size; /* 0: no reserve */
  char reserve_path[4200];
};

typedef struct counters {
  uint64_t documents, chunks, bytes, tokens, next_doc, last_seq, next_cid;
} counters;

/* A decoded docs record; pointers point into the LMDB value. */
typedef struct doc_rec {
  uint32_t cid;
  const char *id;
  uint32_t id_len;
  uint64_t bytes, tokens;
  uint32_t n_chunks, n_meta, n_vectors;
  const uint8_t *meta; /* encoded entries */
  size_t meta_len;
} doc_rec;

/* A chunk record. */
typedef struct chunk_rec {
  uint64_t start, end;
  uint32_t tokens, lex_len;
} chunk_rec;

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
  put_le64(p + 48, c->next_cid);
}

static void counters_decode(const uint8_t *p, counters *c) {
  c->documents = get_le64(p);
  c->chunks = get_le64(p + 8);
  c->bytes = get_le64(p + 16);
  c->tokens = get_le64(p + 24);
  c->next_doc = get_le64(p + 32);
  c->last_seq = get_le64(p + 40);
  c->next_cid = get_le64(p + 48);
}

/* Decode a docs value, checking every length against the value's size so
 * that a damaged record is reported rather than read past. 0 or -1. */
static int doc_decode(const MDB_val *v, doc_rec *r) {
  const uint8_t *p = v->mv_data;
  size_t n = v->mv_size;
  if (n < DOC_HDR) return -1;
  r->cid = get_le32(p);
  r->id_len = get_le32(p + 4);
  r->bytes = get_le64(p + 8);
  r->tokens = get_le64(p + 16);
  r->n_chunks = get_le32(p + 24);
  r->n_meta = get_le32(p + 28);
  r->n_vectors = get_le32(p + 32);
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

static void chunk_key(uint8_t kb[CHUNK_KEY], uint64_t doc, uint32_t ord) {
  put_be64(kb, doc);
  put_be32(kb + 8, ord);
}

static void chunk_decode(const uint8_t *p, chunk_rec *c) {
  c->start = get_le64(p);
  c->end = get_le64(p + 8);
  c->tokens = get_le32(p + 16);
  c->lex_len = get_le32(p + 20);
}

static void vec_key(uint8_t kb[VEC_KEY], uint32_t cid, uint64_t doc,
                    uint32_t ord) {
  put_be32(kb, cid);
  put_be64(kb + 4, doc);
  put_be32(kb + 12, ord);
}

static void post_val(uint8_t vb[POST_VAL], int64_t label, uint32_t tf,
                     uint32_t dl) {
  put_be64(vb, (uint64_t)label);
  put_le32(vb + 8, tf);
  put_le32(vb + 12, dl);
}

/* The postings key of a term: u32 cid + the term bytes. */
static void post_key(uint8_t kb[POST_KEY_MAX], uint32_t cid, const char *term,
                     size_t len, MDB_val *k) {
  put_be32(kb, cid);
  memcpy(kb + 4, term, len);
  k->mv_data = kb;
  k->mv_size = 4 + len;
}

/* ---- id keys ------------------------------------------------------------- */

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

/* The ids key of client id `id` in collection cid; `buf` holds at least
 * s->max_key bytes. */
static void id_key(const store *s, uint32_t cid, const char *id, size_t len,
                   uint8_t *buf, MDB_val *key) {
  put_be32(buf, cid);
  key->mv_data = buf;
  if (4 + len < s->max_key) {
    memcpy(buf + 4, id, len);
    key->mv_size = 4 + len;
    return;
  }
  memcpy(buf + 4, id, s->max_key - 12);
  put_be64(buf + s->max_key - 8, id_hash(id, len));
  key->mv_size = s->max_key;
}

/* ---- errors and locking -------------------------------------------------- */

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

/* Run `body` in a write transaction and commit it. When the map fills up,
 * in a step or at the commit, the transaction is aborted, the map grown and
 * the body run again from the start: a body computes everything afresh on
 * each run and keeps its results for the caller only as the last run left
 * them. A body returns 0 (commit), ST_NOOP (nothing to write: abort, and
 * return 0) or an error (abort, return it). `need` estimates the bytes the
 * commit writes (see txn_commit). */
static int write_txn(store *s, uint64_t need,
                     int (*body)(store *s, MDB_txn *txn, void *arg,
                                 ctxd_error *e),
                     void *arg, ctxd_error *e) {
  int rc;
  pthread_rwlock_rdlock(&s->wgate);
  for (;;) {
    MDB_txn *txn = NULL;
    rc = txn_begin(s, 1, &txn, e);
    if (rc) break;
    uint64_t seen = map_size_now(s);
    rc = body(s, txn, arg, e);
    if (rc == 0) {
      rc = txn_commit(s, txn, need, e);
    } else {
      txn_abort(s, txn);
    }
    if (rc == ST_NOOP) {
      rc = 0;
      break;
    }
    if (rc != ST_MAPFULL) break;
    rc = map_resize(s, 1, seen, e);
    if (rc) break;
  }
  pthread_rwlock_unlock(&s->wgate);
  return rc;
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

/* ---- collections --------------------------------------------------------- */

/* Decode a colls value. 0 or -1 (damaged). */
static int coll_decode(uint32_t cid, const MDB_val *v, store_collection *c) {
  const uint8_t *p = v->mv_data;
  if (v->mv_size < COLL_HDR) return -1;
  uint32_t nl = get_le32(p + 52);
  if (nl == 0 || nl > STORE_COLL_NAME_MAX || nl > v->mv_size - COLL_HDR)
    return -1;
  size_t cl = v->mv_size - COLL_HDR - nl;
  if (cl > STORE_COLL_CONFIG_MAX) return -1;
  c->cid = cid;
  c->dim = get_le32(p);
  c->documents = get_le64(p + 4);
  c->chunks = get_le64(p + 12);
  c->bytes = get_le64(p + 20);
  c->tokens = get_le64(p + 28);
  c->vectors = get_le64(p + 36);
  c->lex_len_sum = get_le64(p + 44);
  memcpy(c->name, p + COLL_HDR, nl);
  c->name[nl] = '\0';
  memcpy(c->config, p + COLL_HDR + nl, cl);
  c->config[cl] = '\0';
  return 0;
}

static int coll_write(store *s, MDB_txn *txn, const store_collection *c,
                      ctxd_error *e) {
  uint8_t buf[COLL_HDR + STORE_COLL_NAME_MAX + STORE_COLL_CONFIG_MAX];
  size_t nl = strlen(c->name), cl = strlen(c->config);
  put_le32(buf, c->dim);
  put_le64(buf + 4, c->documents);
  put_le64(buf + 12, c->chunks);
  put_le64(buf + 20, c->bytes);
  put_le64(buf + 28, c->tokens);
  put_le64(buf + 36, c->vectors);
  put_le64(buf + 44, c->lex_len_sum);
  put_le32(buf + 52, (uint32_t)nl);
  memcpy(buf + COLL_HDR, c->name, nl);
  memcpy(buf + COLL_HDR + nl, c->config, cl);
  uint8_t kb[4];
  put_be32(kb, c->cid);
  MDB_val k = {4, kb}, v = {COLL_HDR + nl + cl, buf};
  int rc = mdb_put(txn, s->colls, &k, &v, 0);
  return rc ? mdb_fail(e, rc, "writing a collection") : 0;
}

/* Read collection cid. CTXD_ENOTFOUND (no message: the caller words it). */
static int coll_read(store *s, MDB_txn *txn, uint32_t cid,
                     store_collection *c, ctxd_error *e) {
  uint8_t kb[4];
  put_be32(kb, cid);
  MDB_val k = {4, kb}, v;
  int rc = mdb_get(txn, s->colls, &k, &v);
  if (rc == MDB_NOTFOUND) return CTXD_ENOTFOUND;
  if (rc) return mdb_fail(e, rc, "reading a collection");
  if (coll_decode(cid, &v, c))
    return ctxd_seterr(e, CTXD_ECORRUPT, "store: collection %u is damaged",
                       cid);
  return 0;
}

/* The cid of collection `name`. CTXD_ENOTFOUND (no message). */
static int coll_find(store *s, MDB_txn *txn, const char *name, uint32_t *cid,
                     ctxd_error *e) {
  MDB_val k = {strlen(name), (void *)name}, v;
  int rc = mdb_get(txn, s->cnames, &k, &v);
  if (rc == MDB_NOTFOUND) return CTXD_ENOTFOUND;
  if (rc) return mdb_fail(e, rc, "reading collection names");
  if (v.mv_size != 4)
    return ctxd_seterr(e, CTXD_ECORRUPT, "store: name entry of %s is damaged",
                       name);
  *cid = get_le32(v.mv_data);
  return 0;
}

/* 1..STORE_COLL_NAME_MAX bytes of [A-Za-z0-9_.-]: safe in file names,
 * URLs and log lines without quoting. */
static int coll_name_check(const char *name, ctxd_error *e) {
  size_t n = strlen(name);
  if (n == 0 || n > STORE_COLL_NAME_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "collection name must be 1..%d bytes, not %zu",
                       STORE_COLL_NAME_MAX, n);
  for (size_t i = 0; i < n; i++) {
    char ch = name[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
          (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-'))
      return ctxd_seterr(e, CTXD_EINVAL,
                         "collection name \"%.64s\": byte %zu is not one of "
                         "A-Z a-z 0-9 _ . -",
                         name, i);
  }
  return 0;
}

/* ---- lookups ------------------------------------------------------------- */

/* Find the internal id of client id `id` in collection cid. 0 and *doc set,
 * CTXD_ENOTFOUND, or another error. `rec` (may be NULL) receives the decoded
 * docs record. */
static int lookup(store *s, MDB_txn *txn, uint32_t cid, const char *id,
                  size_t len, uint64_t *doc, doc_rec *rec, ctxd_error *e) {
  uint8_t kbuf[1024];
  MDB_val key, val;
  MDB_cursor *cur = NULL;
  int rc = mdb_cursor_open(txn, s->ids, &cur);
  if (rc) return mdb_fail(e, rc, "opening ids cursor");
  id_key(s, cid, id, len, kbuf, &key);
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
      if (r.cid == cid && r.id_len == len && memcmp(r.id, id, len) == 0) {
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

/* The docs record of internal id doc. CTXD_ENOTFOUND (no message). */
static int doc_read(store *s, MDB_txn *txn, uint64_t doc, doc_rec *r,
                    ctxd_error *e) {
  uint8_t dk[8];
  put_be64(dk, doc);
  MDB_val k = {8, dk}, v;
  int rc = mdb_get(txn, s->docs, &k, &v);
  if (rc == MDB_NOTFOUND) return CTXD_ENOTFOUND;
  if (rc) return mdb_fail(e, rc, "reading a document");
  if (doc_decode(&v, r))
    return ctxd_seterr(e, CTXD_ECORRUPT,
                       "store: document record %llu is damaged",
                       (unsigned long long)doc);
  return 0;
}

/* Delete every key that starts with prefix[0..plen) (with all its
 * duplicates); *n (may be NULL) receives how many entries went. */
static int prefix_delete(MDB_txn *txn, MDB_dbi dbi, const uint8_t *prefix,
                         size_t plen, uint64_t *n, ctxd_error *e) {
  MDB_cursor *cur = NULL;
  MDB_val k, v;
  uint64_t count = 0;
  int dup = 0;
  unsigned int flags;
  int rc = mdb_cursor_open(txn, dbi, &cur);
  if (rc) return mdb_fail(e, rc, "opening a cursor");
  if (mdb_dbi_flags(txn, dbi, &flags) == 0 && (flags & MDB_DUPSORT)) dup = 1;
  for (;;) {
    /* Re-seek after each delete rather than trusting the cursor position
     * LMDB leaves behind a deletion at the end of a page. */
    k.mv_size = plen;
    k.mv_data = (void *)prefix;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc || k.mv_size < plen || memcmp(k.mv_data, prefix, plen)) break;
    if (dup) {
      size_t dups = 0;
      if ((rc = mdb_cursor_count(cur, &dups))) break;
      count += dups;
      rc = mdb_cursor_del(cur, MDB_NODUPDATA);
    } else {
      count++;
      rc = mdb_cursor_del(cur, 0);
    }
    if (rc) break;
  }
  mdb_cursor_close(cur);
  if (rc && rc != MDB_NOTFOUND) return mdb_fail(e, rc, "deleting a range");
  if (n) *n = count;
  return 0;
}

/* Read the chunk records of doc (n of them) into a malloc'd array. */
static int chunks_read(store *s, MDB_txn *txn, uint64_t doc, uint32_t n,
                       chunk_rec **out, ctxd_error *e) {
  chunk_rec *ch = calloc(n ? n : 1, sizeof *ch);
  if (!ch) return ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
  MDB_cursor *cur = NULL;
  uint8_t kb[CHUNK_KEY];
  chunk_key(kb, doc, 0);
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
    chunk_decode(v.mv_data, &ch[got]);
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

/* What removing a document's derived parts took away, for the counters. */
typedef struct gone_t {
  uint64_t chunks, vectors, lex_len;
} gone_t;

/* Remove document doc's postings (found by re-tokenizing its stored chunk
 * texts: the terms are not kept anywhere else), chunks and vectors; its
 * docs, texts, ids and cdocs entries stay (the caller replaces or deletes
 * them). Adds what went to *g. */
static int doc_parts_delete(store *s, MDB_txn *txn, uint64_t doc,
                            const doc_rec *r, gone_t *g, ctxd_error *e) {
  uint32_t cid = r->cid, n = r->n_chunks;
  chunk_rec *ch = NULL;
  char *text = NULL;
  lex_tf *tfs = NULL;
  MDB_cursor *cur = NULL;
  int rc = chunks_read(s, txn, doc, n, &ch, e), mrc;
  if (rc) return rc;
  uint8_t dk[8];
  put_be64(dk, doc);
  MDB_val tk = {8, dk}, tv;
  mrc = mdb_get(txn, s->texts, &tk, &tv);
  if (mrc == MDB_NOTFOUND || (mrc == 0 && tv.mv_size != r->bytes)) {
    rc = ctxd_seterr(e, CTXD_ECORRUPT,
                     "store: text of document %llu is damaged",
                     (unsigned long long)doc);
    goto done;
  }
  if (mrc) {
    rc = mdb_fail(e, mrc, "reading a text");
    goto done;
  }
  /* A copy: the deletes below may spill dirty pages, and the text may sit
   * on one that an earlier document of this transaction touched. */
  text = malloc(tv.mv_size ? tv.mv_size : 1);
  if (!text) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
    goto done;
  }
  if (tv.mv_size) memcpy(text, tv.mv_data, tv.mv_size);
  if ((mrc = mdb_cursor_open(txn, s->postings, &cur))) {
    rc = mdb_fail(e, mrc, "opening postings cursor");
    goto done;
  }
  for (uint32_t i = 0; i < n; i++) {
    size_t nt = 0;
    uint32_t len = 0;
    if (ch[i].start > ch[i].end || ch[i].end > r->bytes) continue;
    rc = lex_terms(text + ch[i].start, (size_t)(ch[i].end - ch[i].start),
                   &tfs, &nt, &len, e);
    if (rc) goto done;
    int64_t label = STORE_LABEL(doc, i);
    for (size_t t = 0; t < nt; t++) {
      uint8_t kb[POST_KEY_MAX], vb[POST_VAL];
      MDB_val k, v = {POST_VAL, vb};
      post_key(kb, cid, tfs[t].term, tfs[t].len, &k);
      post_val(vb, label, 0, 0); /* the first dup at or after the label */
      mrc = mdb_cursor_get(cur, &k, &v, MDB_GET_BOTH_RANGE);
      if (mrc == MDB_NOTFOUND) continue; /* already missing: verify says so */
      if (mrc == 0 && v.mv_size == POST_VAL &&
          get_be64(v.mv_data) == (uint64_t)label)
        mrc = mdb_cursor_del(cur, 0);
      if (mrc) {
        rc = mdb_fail(e, mrc, "deleting postings");
        goto done;
      }
    }
    free(tfs);
    tfs = NULL;
    g->lex_len += ch[i].lex_len;
  }
  uint8_t pk[CHUNK_KEY];
  put_be64(pk, doc);
  uint64_t nch = 0, nvec = 0;
  rc = prefix_delete(txn, s->chunks, pk, 8, &nch, e);
  if (rc) goto done;
  uint8_t vk[VEC_KEY];
  vec_key(vk, cid, doc, 0);
  rc = prefix_delete(txn, s->vectors, vk, 12, &nvec, e);
  if (rc) goto done;
  g->chunks += nch;
  g->vectors += nvec;
done:
  if (cur) mdb_cursor_close(cur);
  free(tfs);
  free(text);
  free(ch);
  return rc;
}

static int change_append(store *s, MDB_txn *txn, counters *c, int op,
                         uint32_t cid, uint64_t doc, ctxd_error *e) {
  uint8_t kb[8], vb[CHANGE_VAL];
  put_be64(kb, ++c->last_seq);
  vb[0] = (uint8_t)op;
  put_le32(vb + 1, cid);
  put_le64(vb + 5, doc);
  MDB_val k = {8, kb}, v = {CHANGE_VAL, vb};
  int rc = mdb_put(txn, s->changes, &k, &v, MDB_APPEND);
  return rc ? mdb_fail(e, rc, "appending to the change log") : 0;
}

/* ---- open / close -------------------------------------------------------- */

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

/* ---- disk reserve ----------------------------------------------------------
 * LMDB never writes in place: even a delete writes new pages, and the pages
 * it frees are only reused by later commits. On a disk filled to the last
 * block, deleting documents to make room would therefore fail like any
 * write. So the store keeps RESERVE_FILE (fallocate'd, 1/64 of the volume,
 * RESERVE_MIN to RESERVE_MAX) in the data directory: a delete or a drop
 * that finds the disk full removes it and runs again, and the pages the
 * delete frees then take new documents. The file is made again (at open,
 * and after a successful put or delete) once the volume has RESERVE_ROOM
 * times its size free, never taking the last free space. */
#define RESERVE_FILE "reserve.space"
#define RESERVE_MIN (1ULL << 20)
#define RESERVE_MAX (64ULL << 20)
#define RESERVE_ROOM 4

/* Make the reserve file if it is missing and there is room; under
 * reserve_mu. Failures just leave it missing (tried again later). */
static void reserve_make_locked(store *s) {
  if (!s->reserve_size || s->reserve_held) return;
  struct statvfs vfs;
  struct stat st;
  if (stat(s->reserve_path, &st) == 0 && (uint64_t)st.st_size >= s->reserve_size) {
    s->reserve_held = 1; /* made by an earlier run */
    return;
  }
  if (statvfs(s->path, &vfs) != 0 ||
      (uint64_t)vfs.f_bavail * vfs.f_frsize < RESERVE_ROOM * s->reserve_size)
    return;
  int fd = open(s->reserve_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return;
  int rc = posix_fallocate(fd, 0, (off_t)s->reserve_size);
  close(fd);
  if (rc == 0)
    s->reserve_held = 1;
  else
    unlink(s->reserve_path);
}

static void reserve_make(store *s) {
  if (!s->reserve_size) return;
  pthread_mutex_lock(&s->reserve_mu);
  reserve_make_locked(s);
  pthread_mutex_unlock(&s->reserve_mu);
}

/* Give the reserve's space back to the volume; 1 if there was one. */
static int reserve_release(store *s) {
  pthread_mutex_lock(&s->reserve_mu);
  int had = s->reserve_held;
  if (had) {
    unlink(s->reserve_path);
    s->reserve_held = 0;
  }
  pthread_mutex_unlock(&s->reserve_mu);
  return had;
}

/* Size the reserve for the volume of `dir` and make it. */
static void reserve_init(store *s, const char *dir) {
  pthread_mutex_init(&s->reserve_mu, NULL);
  struct statvfs vfs;
  if (snprintf(s->reserve_path, sizeof s->reserve_path, "%s/" RESERVE_FILE,
               dir) >= (int)sizeof s->reserve_path ||
      statvfs(dir, &vfs) != 0)
    return;
  uint64_t want = (uint64_t)vfs.f_blocks * vfs.f_frsize / 64;
  if (want < RESERVE_MIN) want = RESERVE_MIN;
  if (want > RESERVE_MAX) want = RESERVE_MAX;
  s->reserve_size = want;
  reserve_make(s);
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

/* Open the named databases and check or create the schema record. The
 * schema is checked before any database is created, so that refusing an
 * older store leaves it exactly as it was. */
static int open_dbs_in(store *s, MDB_txn *txn, ctxd_error *e) {
  int rc = 0, mrc;
  static const struct {
    const char *name;
    unsigned flags;
    size_t off;
  } dbs[] = {
      {"meta", 0, offsetof(store, meta)},
      {"colls", 0, offsetof(store, colls)},
      {"cnames", 0, offsetof(store, cnames)},
      {"docs", 0, offsetof(store, docs)},
      {"cdocs", 0, offsetof(store, cdocs)},
      {"texts", 0, offsetof(store, texts)},
      {"ids", MDB_DUPSORT | MDB_DUPFIXED, offsetof(store, ids)},
      {"chunks", 0, offsetof(store, chunks)},
      {"vectors", 0, offsetof(store, vectors)},
      {"postings", MDB_DUPSORT | MDB_DUPFIXED, offsetof(store, postings)},
      {"jobs", 0, offsetof(store, jobs)},
      {"changes", 0, offsetof(store, changes)},
  };
  if ((mrc = mdb_dbi_open(txn, "meta", MDB_CREATE, &s->meta))) {
    rc = mdb_fail(e, mrc, "opening a database");
    goto fail;
  }
  MDB_val k = {14, "schema_version"}, v;
  mrc = mdb_get(txn, s->meta, &k, &v);
  int fresh = mrc == MDB_NOTFOUND;
  if (mrc && !fresh) {
    rc = mdb_fail(e, mrc, "reading the schema version");
    goto fail;
  }
  if (!fresh) {
    uint32_t ver = v.mv_size == 4 ? get_le32(v.mv_data) : 0;
    if (ver > STORE_SCHEMA_VERSION) {
      rc = ctxd_seterr(e, CTXD_EPRECOND,
                       "store schema version %u is newer than this ctxd (%u)",
                       ver, STORE_SCHEMA_VERSION);
      goto fail;
    }
    if (ver == 1) {
      rc = ctxd_seterr(e, CTXD_EPRECOND,
                       "store schema version 1 (ctxd 0.1, no collections) is "
                       "not supported by this ctxd (schema %u) and is not "
                       "migrated: re-ingest the documents into a new data "
                       "directory",
                       STORE_SCHEMA_VERSION);
      goto fail;
    }
    if (ver != STORE_SCHEMA_VERSION) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT, "store: bad schema version record");
      goto fail;
    }
  }
  for (size_t i = 1; i < sizeof dbs / sizeof dbs[0]; i++) {
    mrc = mdb_dbi_open(txn, dbs[i].name, dbs[i].flags | MDB_CREATE,
                       (MDB_dbi *)((char *)s + dbs[i].off));
    if (mrc) {
      rc = mdb_fail(e, mrc, "opening a database");
      goto fail;
    }
  }
  if (fresh) {
    uint8_t vb[4];
    put_le32(vb, STORE_SCHEMA_VERSION);
    v.mv_size = 4;
    v.mv_data = vb;
    mrc = mdb_put(txn, s->meta, &k, &v, 0);
    if (mrc) {
      rc = mdb_fail(e, mrc, "writing the schema version");
      goto fail;
    }
    counters c = {0, 0, 0, 0, 1, 0, 1};
    rc = counters_write(s, txn, &c, e);
    if (rc) goto fail;
  }
fail:
  return rc;
}

static int open_dbs(store *s, ctxd_error *e) {
  MDB_txn *txn = NULL;
  int rc = txn_begin(s, 1, &txn, e);
  if (rc) return rc;
  rc = open_dbs_in(s, txn, e);
  if (rc == 0)
    rc = txn_commit(s, txn, 0, e);
  else
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
  pthread_rwlock_init(&s->wgate, &ra);
  pthread_rwlockattr_destroy(&ra);
  s->max_map_size = o.max_map_size;
  s->max_readers = o.max_readers;
  s->env_flags = MDB_NOTLS | (o.no_sync ? MDB_NOSYNC : 0);
  if (snprintf(s->path, sizeof s->path, "%s/data.mdb", dir) >=
      (int)sizeof s->path) {
    rc = ctxd_seterr(e, CTXD_EINVAL, "store: data directory path too long");
    goto fail;
  }
  snprintf(s->dir, sizeof s->dir, "%s", dir);
  if (make_dirs(dir)) {
    rc = ctxd_seterr(e, CTXD_EIO, "store: cannot create data directory %s: %s",
                     dir, strerror(errno));
    goto fail;
  }
  { /* the copy of a compaction that a crash interrupted */
    char tmp[sizeof s->path + 16];
    snprintf(tmp, sizeof tmp, "%s" STORE_COMPACT_SUFFIX, s->path);
    unlink(tmp);
  }
  if ((mrc = mdb_env_create(&s->env)) ||
      (mrc = mdb_env_set_maxdbs(s->env, 16)) ||
      (mrc = mdb_env_set_maxreaders(s->env, o.max_readers)) ||
      (mrc = mdb_env_set_mapsize(s->env, (size_t)o.map_size))) {
    rc = mdb_fail(e, mrc, "creating the environment");
    goto fail;
  }
  mrc = mdb_env_open(s->env, dir, s->env_flags, 0644);
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
  reserve_init(s, dir);
  ctxd_clearerr(e);
  *out = s;
  return 0;
fail:
  if (s->env) mdb_env_close(s->env);
  pthread_rwlock_destroy(&s->lock);
  pthread_rwlock_destroy(&s->wgate);
  free(s);
  return rc;
}

void store_close(store *s) {
  if (!s) return;
  mdb_env_close(s->env);
  pthread_rwlock_destroy(&s->lock);
  pthread_rwlock_destroy(&s->wgate);
  pthread_mutex_destroy(&s->reserve_mu);
  free(s);
}

/* ---- put ----------------------------------------------------------------- */

/* Encode the docs record of `d` (with its final id) into a malloc'd buffer. */
static int doc_encode(const store_put_doc *d, const char *id, size_t id_len,
                      uint64_t tokens, MDB_val *out, ctxd_error *e) {
  size_t n = DOC_HDR + id_len;
  for (size_t i = 0; i < d->n_meta; i++)
    n += 8 + d->meta[i].key_len + d->meta[i].val_len;
  uint8_t *p = malloc(n);
  if (!p) return ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
  put_le32(p, d->cid);
  put_le32(p + 4, (uint32_t)id_len);
  put_le64(p + 8, d->text_len);
  put_le64(p + 16, tokens);
  put_le32(p + 24, (uint32_t)d->n_chunks);
  put_le32(p + 28, (uint32_t)d->n_meta);
  put_le32(p + 32, d->vectors ? (uint32_t)d->n_chunks : 0);
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
  if (d->n_chunks == 0 || d->n_chunks > STORE_MAX_CHUNKS)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "document %zu: %zu chunks (1..%u allowed)", idx,
                       d->n_chunks, STORE_MAX_CHUNKS);
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

/* Vectors come with a dimension in range and finite values (a NaN would
 * poison every index built from them). The collection's dimension is
 * checked inside the transaction. */
static int check_vectors(size_t idx, const store_put_doc *d, const char *id,
                         size_t id_len, ctxd_error *e) {
  if (!d->vectors) return 0;
  if (d->dim == 0 || d->dim > DIM_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "document %zu (\"%.*s\"): vector dimension %u is not "
                       "in 1..%d",
                       idx, (int)(id_len > 64 ? 64 : id_len), id, d->dim,
                       DIM_MAX);
  size_t n = d->n_chunks * (size_t)d->dim;
  for (size_t i = 0; i < n; i++)
    if (!isfinite(d->vectors[i]))
      return ctxd_seterr(e, CTXD_EINVAL,
                         "document %zu (\"%.*s\"): chunk %zu's vector has a "
                         "non-finite value at %zu",
                         idx, (int)(id_len > 64 ? 64 : id_len), id,
                         i / d->dim, i % d->dim);
  return 0;
}

typedef struct id_ref {
  uint32_t cid;
  const char *id;
  size_t len;
  size_t idx;
} id_ref;

static int id_ref_cmp(const void *a, const void *b) {
  const id_ref *x = a, *y = b;
  if (x->cid != y->cid) return x->cid < y->cid ? -1 : 1;
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

/* The postings of a batch, computed before the write transaction: every
 * distinct (collection, term) of the batch once, and each chunk's postings
 * grouped by term in key order, so the transaction only does LMDB writes,
 * one term's postings after another. */
typedef struct plan_term {
  uint32_t cid;
  uint32_t hash;
  uint32_t n;     /* postings of the term in the batch */
  uint32_t first; /* its first posting in plan.post once grouped */
  uint32_t last_chunk; /* 1 + the batch chunk of its latest posting */
  uint32_t last_post;  /* that posting, while tokenizing */
  uint8_t len;
  char term[LEX_TERM_MAX];
} plan_term;

typedef struct plan_post {
  uint32_t term, doc, ord, tf;
} plan_post;

typedef struct put_plan {
  plan_term *terms;
  size_t n_terms, cap_terms;
  uint32_t *slots; /* open addressing: 1 + term index, 0 = empty */
  size_t n_slots;
  plan_post *post; /* in (document, chunk) order, then regrouped */
  size_t n_post, cap_post;
  uint32_t *order; /* term indexes in key order */
  uint32_t *dl;    /* every chunk's term count, documents one after another */
  size_t *dl_off;  /* per document: its first chunk in dl */
  uint64_t *lex_sum; /* per document: the sum of its chunks' dl */
} put_plan;

static void plan_free(put_plan *p) {
  free(p->terms);
  free(p->slots);
  free(p->post);
  free(p->order);
  free(p->dl);
  free(p->dl_off);
  free(p->lex_sum);
}

static uint32_t term_hash(uint32_t cid, const char *t, size_t n) {
  uint32_t h = 2166136261u ^ cid;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)t[i]) * 16777619u;
  return h;
}

/* The index of (cid, term) in p->terms, added if new; -1 on no memory. */
static long plan_intern(put_plan *p, uint32_t cid, const char *t, size_t n) {
  if (2 * (p->n_terms + 1) > p->n_slots) {
    size_t ns = p->n_slots ? p->n_slots * 2 : 1024;
    uint32_t *sl = calloc(ns, sizeof *sl);
    if (!sl) return -1;
    for (size_t i = 0; i < p->n_terms; i++) {
      size_t q = p->terms[i].hash & (ns - 1);
      while (sl[q]) q = (q + 1) & (ns - 1);
      sl[q] = (uint32_t)(i + 1);
    }
    free(p->slots);
    p->slots = sl;
    p->n_slots = ns;
  }
  uint32_t h = term_hash(cid, t, n);
  size_t q = h & (p->n_slots - 1);
  while (p->slots[q]) {
    plan_term *pt = &p->terms[p->slots[q] - 1];
    if (pt->hash == h && pt->cid == cid && pt->len == n &&
        memcmp(pt->term, t, n) == 0)
      return (long)(p->slots[q] - 1);
    q = (q + 1) & (p->n_slots - 1);
  }
  if (p->n_terms == p->cap_terms) {
    size_t nc = p->cap_terms ? p->cap_terms * 2 : 1024;
    plan_term *nt = realloc(p->terms, nc * sizeof *nt);
    if (!nt) return -1;
    p->terms = nt;
    p->cap_terms = nc;
  }
  plan_term *pt = &p->terms[p->n_terms];
  pt->cid = cid;
  pt->hash = h;
  pt->n = 0;
  pt->first = 0;
  pt->last_chunk = 0;
  pt->last_post = 0;
  pt->len = (uint8_t)n;
  memcpy(pt->term, t, n);
  p->slots[q] = (uint32_t)(++p->n_terms);
  return (long)(p->n_terms - 1);
}

/* Key order of plan terms: the order of their LMDB keys (u32 cid, then the
 * term bytes, a prefix before its extensions). */
static int plan_term_cmp(const void *a, const void *b, void *arg) {
  const plan_term *t = arg, *x = &t[*(const uint32_t *)a],
                  *y = &t[*(const uint32_t *)b];
  if (x->cid != y->cid) return x->cid < y->cid ? -1 : 1;
  int c = memcmp(x->term, y->term, x->len < y->len ? x->len : y->len);
  if (c) return c;
  return (int)x->len - (int)y->len;
}

/* Tokenize every chunk of the batch and group the postings by term. Runs
 * before the transaction, holding no lock. The terms are lex_terms()'s
 * (the same lex_next() analysis), counted straight into the batch's term
 * table: lex_terms would also sort each chunk's terms, which the batch
 * does not need and which cost a quarter of ingest time. */
static int plan_build(const store_put_doc *docs, size_t n, put_plan *p,
                      ctxd_error *e) {
  size_t total = 0;
  memset(p, 0, sizeof *p);
  for (size_t i = 0; i < n; i++) total += docs[i].n_chunks;
  if (total >= UINT32_MAX)
    return ctxd_seterr(e, CTXD_ELIMIT, "store: too many chunks in one batch");
  p->dl = malloc((total ? total : 1) * sizeof *p->dl);
  p->dl_off = malloc(n * sizeof *p->dl_off);
  p->lex_sum = calloc(n, sizeof *p->lex_sum);
  if (!p->dl || !p->dl_off || !p->lex_sum) goto nomem;
  size_t at = 0;
  for (size_t i = 0; i < n; i++) {
    const store_put_doc *d = &docs[i];
    p->dl_off[i] = at;
    for (size_t j = 0; j < d->n_chunks; j++, at++) {
      const chunk_span *c = &d->chunks[j];
      uint64_t len = 0;
      lex_iter it;
      char term[LEX_TERM_MAX];
      size_t tl;
      lex_iter_init(&it, d->text + c->byte_start,
                    (size_t)(c->byte_end - c->byte_start));
      while (lex_next(&it, term, &tl, NULL, NULL)) {
        len++;
        long ti = plan_intern(p, d->cid, term, tl);
        if (ti < 0) goto nomem;
        plan_term *pt = &p->terms[ti];
        if (pt->last_chunk == at + 1) {
          p->post[pt->last_post].tf++;
          continue;
        }
        if (p->n_post == p->cap_post) {
          size_t nc = p->cap_post ? p->cap_post * 2 : 4096;
          plan_post *np = realloc(p->post, nc * sizeof *np);
          if (!np) goto nomem;
          p->post = np;
          p->cap_post = nc;
        }
        pt->last_chunk = (uint32_t)(at + 1);
        pt->last_post = (uint32_t)p->n_post;
        pt->n++;
        p->post[p->n_post++] =
            (plan_post){(uint32_t)ti, (uint32_t)i, (uint32_t)j, 1};
      }
      p->dl[at] = len > UINT32_MAX ? UINT32_MAX : (uint32_t)len;
      p->lex_sum[i] += p->dl[at];
    }
  }
  /* Regroup by term in key order; stable, so each term's postings stay in
   * (document, chunk) order. */
  p->order = malloc((p->n_terms ? p->n_terms : 1) * sizeof *p->order);
  plan_post *grouped = malloc((p->n_post ? p->n_post : 1) * sizeof *grouped);
  if (!p->order || !grouped) {
    free(grouped);
    goto nomem;
  }
  for (size_t t = 0; t < p->n_terms; t++) p->order[t] = (uint32_t)t;
  qsort_r(p->order, p->n_terms, sizeof *p->order, plan_term_cmp, p->terms);
  uint32_t off = 0;
  for (size_t t = 0; t < p->n_terms; t++) {
    plan_term *pt = &p->terms[p->order[t]];
    pt->first = off;
    off += pt->n;
    pt->n = 0;
  }
  for (size_t k = 0; k < p->n_post; k++) {
    plan_term *pt = &p->terms[p->post[k].term];
    grouped[pt->first + pt->n++] = p->post[k];
  }
  free(p->post);
  p->post = grouped;
  return 0;
nomem:
  return ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory tokenizing");
}

/* Write the batch's postings, term by term in key order. A new document's
 * internal id is above every stored one, so its labels come last in each
 * term's list and MDB_APPENDDUP applies (no search inside the list, full
 * pages); a replaced document keeps its id, and its postings (the old ones
 * already deleted) go in by plain puts. */
static int postings_write(store *s, MDB_txn *txn, const put_plan *p,
                          const store_put_result *res, ctxd_error *e) {
  MDB_cursor *cur = NULL;
  int mrc = mdb_cursor_open(txn, s->postings, &cur);
  if (mrc) return mdb_fail(e, mrc, "opening postings cursor");
  for (size_t t = 0; t < p->n_terms && !mrc; t++) {
    const plan_term *pt = &p->terms[p->order[t]];
    uint8_t kb[POST_KEY_MAX], vb[POST_VAL];
    MDB_val k;
    post_key(kb, pt->cid, pt->term, pt->len, &k);
    for (uint32_t j = 0; j < pt->n && !mrc; j++) {
      const plan_post *pp = &p->post[pt->first + j];
      if (res[pp->doc].skipped) continue;
      MDB_val v = {POST_VAL, vb};
      post_val(vb, STORE_LABEL(res[pp->doc].doc_seq, pp->ord), pp->tf,
               p->dl[p->dl_off[pp->doc] + pp->ord]);
      mrc = mdb_cursor_put(cur, &k, &v,
                           res[pp->doc].replaced ? 0 : MDB_APPENDDUP);
    }
  }
  mdb_cursor_close(cur);
  return mrc ? mdb_fail(e, mrc, "writing postings") : 0;
}

/* The collections a batch touches, read once per transaction and written
 * back with their new counters before the commit. */
typedef struct coll_cache {
  store_collection *c;
  size_t n, cap;
} coll_cache;

static int cache_get(store *s, MDB_txn *txn, coll_cache *cc, uint32_t cid,
                     store_collection **out, ctxd_error *e) {
  for (size_t i = 0; i < cc->n; i++)
    if (cc->c[i].cid == cid) {
      *out = &cc->c[i];
      return 0;
    }
  if (cc->n == cc->cap) {
    size_t nc = cc->cap ? cc->cap * 2 : 4;
    store_collection *nv = realloc(cc->c, nc * sizeof *nv);
    if (!nv) return ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
    cc->c = nv;
    cc->cap = nc;
  }
  int rc = coll_read(s, txn, cid, &cc->c[cc->n], e);
  if (rc) return rc;
  *out = &cc->c[cc->n++];
  return 0;
}

static int cache_write(store *s, MDB_txn *txn, const coll_cache *cc,
                       ctxd_error *e) {
  for (size_t i = 0; i < cc->n; i++) {
    int rc = coll_write(s, txn, &cc->c[i], e);
    if (rc) return rc;
  }
  return 0;
}

/* 1 when stored document `doc` (its record `old`) has exactly the text and
 * metadata of d: the condition of an if_unchanged put. */
static int doc_same(store *s, MDB_txn *txn, uint64_t doc, const doc_rec *old,
                    const store_put_doc *d, int *same, ctxd_error *e) {
  uint8_t dk[8];
  MDB_val k = {8, dk}, tv;
  *same = 0;
  if (old->n_meta != d->n_meta || old->bytes != d->text_len) return 0;
  size_t off = 0;
  for (size_t i = 0; i < d->n_meta; i++) {
    const store_kv *kv = &d->meta[i];
    const size_t lens[2] = {kv->key_len, kv->val_len};
    const char *bytes[2] = {kv->key, kv->val};
    for (int half = 0; half < 2; half++) {
      uint32_t l = get_le32(old->meta + off); /* doc_decode checked lengths */
      if (l != lens[half] || (l && memcmp(old->meta + off + 4, bytes[half], l)))
        return 0;
      off += 4 + l;
    }
  }
  put_be64(dk, doc);
  int mrc = mdb_get(txn, s->texts, &k, &tv);
  if (mrc) return mdb_fail(e, mrc, "reading a text");
  *same = tv.mv_size == d->text_len &&
          (d->text_len == 0 || memcmp(tv.mv_data, d->text, d->text_len) == 0);
  return 0;
}

/* Write one document (all but its postings) inside `txn`. `idx` is its
 * place in the batch (for messages), dl its chunks' term counts. */
static int put_one(store *s, MDB_txn *txn, counters *c, store_collection *col,
                   size_t idx, const store_put_doc *d, const char *id,
                   size_t id_len, const uint32_t *dl, uint64_t lex_sum,
                   store_put_result *r, ctxd_error *e) {
  uint64_t doc = 0, tokens = 0;
  doc_rec old = {0};
  MDB_val rec = {0, NULL};
  int rc, mrc;
  if (d->vectors && d->dim != col->dim) {
    if (col->dim == 0)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "document %zu (\"%.*s\"): collection %s takes no "
                         "vectors, got dimension %u",
                         idx, (int)(id_len > 64 ? 64 : id_len), id, col->name,
                         d->dim);
    return ctxd_seterr(e, CTXD_EINVAL,
                       "document %zu (\"%.*s\"): vectors have dimension %u, "
                       "collection %s takes %u",
                       idx, (int)(id_len > 64 ? 64 : id_len), id, d->dim,
                       col->name, col->dim);
  }
  rc = lookup(s, txn, d->cid, id, id_len, &doc, &old, e);
  if (d->if_unchanged && (rc == 0 || rc == CTXD_ENOTFOUND)) {
    int same = 0;
    if (rc == 0 && (rc = doc_same(s, txn, doc, &old, d, &same, e))) return rc;
    if (!same) {
      r->skipped = 1;
      memcpy(r->id, id, id_len);
      r->id[id_len] = '\0';
      return 0;
    }
  }
  for (size_t i = 0; i < d->n_chunks; i++) tokens += d->chunks[i].tokens;
  if (rc == 0) {
    /* Replace: keep the internal id, drop the old parts and counts. */
    gone_t g = {0, 0, 0};
    uint64_t old_bytes = old.bytes, old_tokens = old.tokens;
    rc = doc_parts_delete(s, txn, doc, &old, &g, e);
    if (rc) return rc;
    c->documents--;
    c->bytes -= old_bytes;
    c->tokens -= old_tokens;
    c->chunks -= g.chunks;
    col->documents--;
    col->bytes -= old_bytes;
    col->tokens -= old_tokens;
    col->chunks -= g.chunks;
    col->vectors -= g.vectors;
    col->lex_len_sum -= g.lex_len;
    r->replaced = 1;
  } else if (rc == CTXD_ENOTFOUND) {
    doc = c->next_doc++;
    uint8_t kbuf[1024], vb[8], cb[CDOC_KEY];
    MDB_val key, v = {8, vb}, ck = {CDOC_KEY, cb}, empty = {0, NULL};
    id_key(s, d->cid, id, id_len, kbuf, &key);
    put_be64(vb, doc);
    mrc = mdb_put(txn, s->ids, &key, &v, 0);
    if (mrc) return mdb_fail(e, mrc, "writing the id index");
    put_be32(cb, d->cid);
    put_be64(cb + 4, doc);
    mrc = mdb_put(txn, s->cdocs, &ck, &empty, 0);
    if (mrc) return mdb_fail(e, mrc, "writing the collection index");
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
    chunk_key(kb, doc, (uint32_t)i);
    put_le64(vb, d->chunks[i].byte_start);
    put_le64(vb + 8, d->chunks[i].byte_end);
    put_le32(vb + 16, d->chunks[i].tokens);
    put_le32(vb + 20, dl[i]);
    MDB_val ck = {CHUNK_KEY, kb}, cv = {CHUNK_VAL, vb};
    mrc = mdb_put(txn, s->chunks, &ck, &cv, 0);
    if (mrc) return mdb_fail(e, mrc, "writing a chunk");
  }
  if (d->vectors) {
    for (size_t i = 0; i < d->n_chunks; i++) {
      uint8_t kb[VEC_KEY];
      vec_key(kb, d->cid, doc, (uint32_t)i);
      MDB_val vk = {VEC_KEY, kb},
              vv = {(size_t)d->dim * sizeof(float),
                    (void *)(d->vectors + i * (size_t)d->dim)};
      mrc = mdb_put(txn, s->vectors, &vk, &vv, 0);
      if (mrc) return mdb_fail(e, mrc, "writing a vector");
    }
    col->vectors += d->n_chunks;
  }
  c->documents++;
  c->chunks += d->n_chunks;
  c->bytes += d->text_len;
  c->tokens += tokens;
  col->documents++;
  col->chunks += d->n_chunks;
  col->bytes += d->text_len;
  col->tokens += tokens;
  col->lex_len_sum += lex_sum;
  rc = change_append(s, txn, c, STORE_OP_PUT, d->cid, doc, e);
  if (rc) return rc;
  r->doc_seq = doc;
  r->tokens = tokens;
  memcpy(r->id, id, id_len);
  r->id[id_len] = '\0';
  return 0;
}

/* A store_put batch, prepared, for write_txn. */
typedef struct put_batch {
  const store_put_doc *docs;
  size_t n;
  char (*gen)[37];
  const put_plan *plan;
  coll_cache *cc;
  store_put_result *tmp;
} put_batch;

static int put_body(store *s, MDB_txn *txn, void *arg, ctxd_error *e) {
  put_batch *b = arg;
  counters c;
  b->cc->n = 0;
  memset(b->tmp, 0, b->n * sizeof *b->tmp); /* a rerun after map growth */
  int rc = counters_read(s, txn, &c, e);
  for (size_t i = 0; rc == 0 && i < b->n; i++) {
    const store_put_doc *d = &b->docs[i];
    const char *id = d->id_len ? d->id : b->gen[i];
    size_t id_len = d->id_len ? d->id_len : 36;
    store_collection *col = NULL;
    rc = cache_get(s, txn, b->cc, d->cid, &col, e);
    if (rc == CTXD_ENOTFOUND)
      rc = ctxd_seterr(e, CTXD_ENOTFOUND,
                       "document %zu: collection %u does not exist", i,
                       d->cid);
    if (rc == 0)
      rc = put_one(s, txn, &c, col, i, d, id, id_len,
                   b->plan->dl + b->plan->dl_off[i], b->plan->lex_sum[i],
                   &b->tmp[i], e);
  }
  if (rc == 0) rc = postings_write(s, txn, b->plan, b->tmp, e);
  if (rc == 0) rc = cache_write(s, txn, b->cc, e);
  if (rc == 0) rc = counters_write(s, txn, &c, e);
  return rc;
}

int store_put(store *s, const store_put_doc *docs, size_t n,
              store_put_result *res, ctxd_error *e) {
  int rc = 0;
  char (*gen)[37] = NULL;
  id_ref *refs = NULL;
  store_put_result *tmp = NULL;
  put_plan plan;
  coll_cache cc = {NULL, 0, 0};
  memset(&plan, 0, sizeof plan);
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
    refs[i].cid = d->cid;
    refs[i].idx = i;
    rc = check_vectors(i, d, refs[i].id, refs[i].len, e);
    if (rc) goto fail;
  }
  qsort(refs, n, sizeof *refs, id_ref_cmp);
  for (size_t i = 1; i < n; i++)
    if (refs[i].cid == refs[i - 1].cid && refs[i].len == refs[i - 1].len &&
        memcmp(refs[i].id, refs[i - 1].id, refs[i].len) == 0) {
      rc = ctxd_seterr(e, CTXD_EINVAL,
                       "documents %zu and %zu have the same id \"%.*s\"",
                       refs[i - 1].idx, refs[i].idx,
                       (int)(refs[i].len > 64 ? 64 : refs[i].len), refs[i].id);
      goto fail;
    }
  rc = plan_build(docs, n, &plan, e);
  if (rc) goto fail;
  /* What the commit will write, roughly: texts, records, chunks, vectors,
   * postings. */
  uint64_t need = (uint64_t)plan.n_post * (POST_VAL + 8);
  for (size_t i = 0; i < n; i++) {
    need += docs[i].text_len + DOC_HDR + 2 * (uint64_t)docs[i].id_len + 80 +
            (uint64_t)docs[i].n_chunks * (CHUNK_KEY + CHUNK_VAL + 16);
    if (docs[i].vectors)
      need += (uint64_t)docs[i].n_chunks *
              (VEC_KEY + 16 + (uint64_t)docs[i].dim * sizeof(float));
    for (size_t m = 0; m < docs[i].n_meta; m++)
      need += 8 + docs[i].meta[m].key_len + docs[i].meta[m].val_len;
  }

  put_batch b = {docs, n, gen, &plan, &cc, tmp};
  rc = write_txn(s, need, put_body, &b, e);
  if (rc) goto fail;
  reserve_make(s);
  if (res) memcpy(res, tmp, n * sizeof *res);
fail:
  free(cc.c);
  plan_free(&plan);
  free(gen);
  free(refs);
  free(tmp);
  return rc;
}

/* ---- get / list ---------------------------------------------------------- */

/* Copy a decoded record into `d` (id and metadata; no text, no chunks). */
static int doc_fill(const doc_rec *r, uint64_t doc, store_doc *d,
                    ctxd_error *e) {
  memset(d, 0, sizeof *d);
  d->cid = r->cid;
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

/* The chunk spans of doc for a store_doc. */
static int read_spans(store *s, MDB_txn *txn, uint64_t doc, uint32_t n,
                      chunk_span **out, ctxd_error *e) {
  chunk_rec *cr = NULL;
  int rc = chunks_read(s, txn, doc, n, &cr, e);
  if (rc) return rc;
  chunk_span *ch = calloc(n ? n : 1, sizeof *ch);
  if (!ch) {
    free(cr);
    return ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
  }
  for (uint32_t i = 0; i < n; i++)
    ch[i] = (chunk_span){cr[i].start, cr[i].end, cr[i].tokens};
  free(cr);
  *out = ch;
  return 0;
}

int store_get(store *s, uint32_t cid, const char *id, size_t id_len,
              int flags, store_doc **out, ctxd_error *e) {
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
  rc = lookup(s, txn, cid, id, id_len, &doc, &r, e);
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
    rc = read_spans(s, txn, doc, r.n_chunks, &d->chunks, e);
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

int store_list(store *s, uint32_t cid, uint64_t after, size_t limit,
               store_doc **out, size_t *n, uint64_t *next, ctxd_error *e) {
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
  mrc = mdb_cursor_open(txn, s->cdocs, &cur);
  if (mrc) {
    rc = mdb_fail(e, mrc, "opening cdocs cursor");
    goto fail;
  }
  if (after == UINT64_MAX) goto done;
  uint8_t kb[CDOC_KEY];
  put_be32(kb, cid);
  put_be64(kb + 4, after + 1);
  MDB_val k = {CDOC_KEY, kb}, v;
  mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
  while (mrc == 0) {
    if (k.mv_size != CDOC_KEY) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT, "store: bad cdocs key");
      goto fail;
    }
    if (get_be32(k.mv_data) != cid) break;
    uint64_t doc = get_be64((uint8_t *)k.mv_data + 4);
    if (got == limit) {
      *next = docs[got - 1].doc_seq; /* one more exists */
      break;
    }
    doc_rec r;
    rc = doc_read(s, txn, doc, &r, e);
    if (rc == CTXD_ENOTFOUND)
      rc = ctxd_seterr(e, CTXD_ECORRUPT,
                       "store: collection %u lists missing document %llu",
                       cid, (unsigned long long)doc);
    if (rc) goto fail;
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

/* ---- delete -------------------------------------------------------------- */

/* Remove document doc (record r) entirely and take it off the counters. */
static int doc_remove(store *s, MDB_txn *txn, counters *c,
                      store_collection *col, uint64_t doc, const doc_rec *r,
                      uint32_t *n_chunks, ctxd_error *e) {
  uint64_t bytes = r->bytes, tokens = r->tokens; /* r dies with the del */
  uint32_t cid = r->cid;
  uint8_t kbuf[1024], dk[8], cb[CDOC_KEY];
  MDB_val key, dv = {8, dk}, ck = {CDOC_KEY, cb};
  gone_t g = {0, 0, 0};
  /* The id key first: r->id points into LMDB and the deletes below dirty
   * pages. */
  id_key(s, cid, r->id, r->id_len, kbuf, &key);
  put_be64(dk, doc);
  put_be32(cb, cid);
  put_be64(cb + 4, doc);
  int rc = doc_parts_delete(s, txn, doc, r, &g, e), mrc;
  if (rc) return rc;
  if ((mrc = mdb_del(txn, s->ids, &key, &dv)) ||
      (mrc = mdb_del(txn, s->docs, &dv, NULL)) ||
      ((mrc = mdb_del(txn, s->texts, &dv, NULL)) && mrc != MDB_NOTFOUND) ||
      ((mrc = mdb_del(txn, s->cdocs, &ck, NULL)) && mrc != MDB_NOTFOUND))
    return mdb_fail(e, mrc, "deleting a document");
  c->documents--;
  c->chunks -= g.chunks;
  c->bytes -= bytes;
  c->tokens -= tokens;
  col->documents--;
  col->chunks -= g.chunks;
  col->bytes -= bytes;
  col->tokens -= tokens;
  col->vectors -= g.vectors;
  col->lex_len_sum -= g.lex_len;
  if (n_chunks) *n_chunks = (uint32_t)g.chunks;
  return 0;
}

typedef struct del_args {
  uint32_t cid;
  const char *id;
  size_t id_len;
  uint32_t gone;
} del_args;

static int delete_body(store *s, MDB_txn *txn, void *arg, ctxd_error *e) {
  del_args *a = arg;
  counters c;
  doc_rec r;
  store_collection col;
  uint64_t doc = 0;
  a->gone = UINT32_MAX; /* "no such document" unless this run finds it */
  int rc = lookup(s, txn, a->cid, a->id, a->id_len, &doc, &r, e);
  if (rc == CTXD_ENOTFOUND) return ST_NOOP;
  if (rc == 0) rc = counters_read(s, txn, &c, e);
  if (rc == 0) {
    rc = coll_read(s, txn, a->cid, &col, e);
    if (rc == CTXD_ENOTFOUND)
      rc = ctxd_seterr(e, CTXD_ECORRUPT,
                       "store: document %.*s is in missing collection %u",
                       (int)(a->id_len > 64 ? 64 : a->id_len), a->id, a->cid);
  }
  if (rc == 0) rc = doc_remove(s, txn, &c, &col, doc, &r, &a->gone, e);
  if (rc == 0)
    rc = change_append(s, txn, &c, STORE_OP_DELETE, a->cid, doc, e);
  if (rc == 0) rc = coll_write(s, txn, &col, e);
  if (rc == 0) rc = counters_write(s, txn, &c, e);
  return rc;
}

int store_delete(store *s, uint32_t cid, const char *id, size_t id_len,
                 int *deleted, uint32_t *n_chunks, ctxd_error *e) {
  *deleted = 0;
  if (n_chunks) *n_chunks = 0;
  if (id_len == 0 || id_len > STORE_ID_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "id must be 1..%d bytes, not %zu",
                       STORE_ID_MAX, id_len);
  del_args a = {cid, id, id_len, UINT32_MAX};
  int rc = write_txn(s, 0, delete_body, &a, e);
  /* A full disk: free the reserve and delete with its space. */
  if (rc == CTXD_ENOSPC && reserve_release(s)) {
    a.gone = UINT32_MAX;
    rc = write_txn(s, 0, delete_body, &a, e);
  }
  if (rc || a.gone == UINT32_MAX) return rc; /* error, or no such document */
  reserve_make(s);
  *deleted = 1;
  if (n_chunks) *n_chunks = a.gone;
  return 0;
}

/* ---- collections API ----------------------------------------------------- */

typedef struct create_args {
  const char *name, *config;
  uint32_t dim, cid;
} create_args;

static int create_body(store *s, MDB_txn *txn, void *arg, ctxd_error *e) {
  create_args *a = arg;
  counters c;
  uint32_t id = 0;
  int rc = counters_read(s, txn, &c, e);
  if (rc) return rc;
  rc = coll_find(s, txn, a->name, &id, e);
  if (rc == 0)
    return ctxd_seterr(e, CTXD_EEXIST, "collection %s already exists",
                       a->name);
  if (rc != CTXD_ENOTFOUND) return rc;
  if (c.next_cid > UINT32_MAX)
    return ctxd_seterr(e, CTXD_ELIMIT, "store: collection ids are exhausted");
  store_collection col;
  memset(&col, 0, sizeof col);
  a->cid = col.cid = (uint32_t)c.next_cid++;
  col.dim = a->dim;
  snprintf(col.name, sizeof col.name, "%s", a->name);
  snprintf(col.config, sizeof col.config, "%s", a->config);
  uint8_t vb[4];
  put_le32(vb, col.cid);
  MDB_val k = {strlen(a->name), (void *)a->name}, v = {4, vb};
  int mrc = mdb_put(txn, s->cnames, &k, &v, 0);
  if (mrc) return mdb_fail(e, mrc, "writing a collection name");
  rc = coll_write(s, txn, &col, e);
  if (rc == 0) rc = counters_write(s, txn, &c, e);
  return rc;
}

int store_coll_create(store *s, const char *name, const char *config,
                      uint32_t dim, uint32_t *cid, ctxd_error *e) {
  if (!config) config = "";
  int rc = coll_name_check(name, e);
  if (rc) return rc;
  if (strlen(config) > STORE_COLL_CONFIG_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "collection %s: config is %zu bytes, more than %d",
                       name, strlen(config), STORE_COLL_CONFIG_MAX);
  if (dim > DIM_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "collection %s: vector dimension %u is above %d", name,
                       dim, DIM_MAX);
  create_args a = {name, config, dim, 0};
  rc = write_txn(s, 0, create_body, &a, e);
  if (rc == 0 && cid) *cid = a.cid;
  return rc;
}

int store_coll_get(store *s, const char *name, store_collection *out,
                   ctxd_error *e) {
  MDB_txn *txn = NULL;
  uint32_t cid = 0;
  int rc = txn_begin(s, 0, &txn, e);
  if (rc) return rc;
  rc = coll_find(s, txn, name, &cid, e);
  if (rc == 0) rc = coll_read(s, txn, cid, out, e);
  if (rc == CTXD_ENOTFOUND)
    rc = ctxd_seterr(e, CTXD_ENOTFOUND, "collection %.64s not found", name);
  txn_abort(s, txn);
  return rc;
}

int store_coll_get_id(store *s, uint32_t cid, store_collection *out,
                      ctxd_error *e) {
  MDB_txn *txn = NULL;
  int rc = txn_begin(s, 0, &txn, e);
  if (rc) return rc;
  rc = coll_read(s, txn, cid, out, e);
  if (rc == CTXD_ENOTFOUND)
    rc = ctxd_seterr(e, CTXD_ENOTFOUND, "collection %u not found", cid);
  txn_abort(s, txn);
  return rc;
}

/* Every collection of the colls database `dbi` in cid order: *out malloc'd
 * (NULL when none). */
static int colls_read(MDB_txn *txn, MDB_dbi dbi, store_collection **out,
                      size_t *n, ctxd_error *e) {
  MDB_cursor *cur = NULL;
  store_collection *v = NULL;
  size_t got = 0, cap = 0;
  int rc = 0, mrc;
  *out = NULL;
  *n = 0;
  if ((mrc = mdb_cursor_open(txn, dbi, &cur)))
    return mdb_fail(e, mrc, "opening colls cursor");
  MDB_val k, val;
  for (mrc = mdb_cursor_get(cur, &k, &val, MDB_FIRST); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &val, MDB_NEXT)) {
    if (got == cap) {
      size_t nc = cap ? cap * 2 : 8;
      store_collection *nv = realloc(v, nc * sizeof *nv);
      if (!nv) {
        rc = ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
        goto done;
      }
      v = nv;
      cap = nc;
    }
    if (k.mv_size != 4 || coll_decode(get_be32(k.mv_data), &val, &v[got])) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT, "store: a collection is damaged");
      goto done;
    }
    got++;
  }
  if (mrc != MDB_NOTFOUND) rc = mdb_fail(e, mrc, "listing collections");
done:
  mdb_cursor_close(cur);
  if (rc) {
    free(v);
    return rc;
  }
  *out = v;
  *n = got;
  return 0;
}

int store_coll_list(store *s, store_collection **out, size_t *n,
                    ctxd_error *e) {
  MDB_txn *txn = NULL;
  *out = NULL;
  *n = 0;
  int rc = txn_begin(s, 0, &txn, e);
  if (rc) return rc;
  rc = colls_read(txn, s->colls, out, n, e);
  txn_abort(s, txn);
  return rc;
}

/* Inside a drop: remove every document of collection col and its postings
 * and vectors; *docs = documents removed. */
static int coll_empty(store *s, MDB_txn *txn, counters *c,
                      store_collection *col, uint64_t *docs, ctxd_error *e) {
  uint8_t pre[4];
  put_be32(pre, col->cid);
  uint64_t count = 0;
  int rc = 0, mrc;
  MDB_cursor *cur = NULL;
  if ((mrc = mdb_cursor_open(txn, s->cdocs, &cur)))
    return mdb_fail(e, mrc, "opening cdocs cursor");
  for (;;) {
    MDB_val k = {4, pre}, v;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (mrc == MDB_NOTFOUND || k.mv_size != CDOC_KEY ||
        get_be32(k.mv_data) != col->cid)
      break;
    if (mrc) {
      rc = mdb_fail(e, mrc, "reading cdocs");
      goto done;
    }
    uint64_t doc = get_be64((uint8_t *)k.mv_data + 4);
    doc_rec r;
    /* The postings and vectors go by prefix below, all at once: the
     * per-document removal only has chunks, ids, texts and records left. */
    rc = doc_read(s, txn, doc, &r, e);
    if (rc == CTXD_ENOTFOUND) {
      rc = 0;
      if ((mrc = mdb_cursor_del(cur, 0))) {
        rc = mdb_fail(e, mrc, "deleting cdocs");
        goto done;
      }
      continue;
    }
    if (rc) goto done;
    uint8_t kbuf[1024], dk[8], pk[8];
    MDB_val key, dv = {8, dk};
    uint64_t nch = 0, bytes = r.bytes, tokens = r.tokens;
    put_be64(dk, doc);
    put_be64(pk, doc);
    id_key(s, r.cid, r.id, r.id_len, kbuf, &key);
    if (((mrc = mdb_del(txn, s->ids, &key, &dv)) && mrc != MDB_NOTFOUND) ||
        (mrc = mdb_del(txn, s->docs, &dv, NULL)) ||
        ((mrc = mdb_del(txn, s->texts, &dv, NULL)) && mrc != MDB_NOTFOUND)) {
      rc = mdb_fail(e, mrc, "deleting a document");
      goto done;
    }
    rc = prefix_delete(txn, s->chunks, pk, 8, &nch, e);
    if (rc) goto done;
    uint8_t cb[CDOC_KEY];
    put_be32(cb, col->cid);
    put_be64(cb + 4, doc);
    MDB_val ck = {CDOC_KEY, cb};
    if ((mrc = mdb_del(txn, s->cdocs, &ck, NULL))) {
      rc = mdb_fail(e, mrc, "deleting cdocs");
      goto done;
    }
    c->documents--;
    c->chunks -= nch;
    c->bytes -= bytes;
    c->tokens -= tokens;
    count++;
  }
  rc = prefix_delete(txn, s->postings, pre, 4, NULL, e);
  if (rc == 0) rc = prefix_delete(txn, s->vectors, pre, 4, NULL, e);
done:
  mdb_cursor_close(cur);
  *docs = count;
  return rc;
}

typedef struct drop_args {
  const char *name;
  uint64_t gone;
} drop_args;

static int drop_body(store *s, MDB_txn *txn, void *arg, ctxd_error *e) {
  drop_args *a = arg;
  counters c;
  store_collection col;
  uint32_t cid = 0;
  int rc = counters_read(s, txn, &c, e);
  if (rc == 0) rc = coll_find(s, txn, a->name, &cid, e);
  if (rc == 0) rc = coll_read(s, txn, cid, &col, e);
  if (rc == CTXD_ENOTFOUND)
    return ctxd_seterr(e, CTXD_ENOTFOUND, "collection %s not found", a->name);
  if (rc == 0) rc = coll_empty(s, txn, &c, &col, &a->gone, e);
  if (rc) return rc;
  uint8_t kb[4];
  put_be32(kb, cid);
  MDB_val k = {4, kb}, nk = {strlen(a->name), (void *)a->name};
  int mrc;
  if ((mrc = mdb_del(txn, s->colls, &k, NULL)) ||
      (mrc = mdb_del(txn, s->cnames, &nk, NULL)))
    return mdb_fail(e, mrc, "deleting a collection");
  rc = change_append(s, txn, &c, STORE_OP_DROP, cid, 0, e);
  if (rc == 0) rc = counters_write(s, txn, &c, e);
  return rc;
}

int store_coll_drop(store *s, const char *name, uint64_t *documents,
                    ctxd_error *e) {
  if (documents) *documents = 0;
  int rc = coll_name_check(name, e);
  if (rc) return rc;
  drop_args a = {name, 0};
  rc = write_txn(s, 0, drop_body, &a, e);
  if (rc == CTXD_ENOSPC && reserve_release(s)) { /* as store_delete */
    a.gone = 0;
    rc = write_txn(s, 0, drop_body, &a, e);
  }
  if (rc == 0 && documents) *documents = a.gone;
  return rc;
}

/* ---- change log ---------------------------------------------------------- */

int store_changes_read(store *s, uint64_t after, size_t max, store_change *out,
                       size_t *n, ctxd_error *e) {
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  size_t got = 0;
  *n = 0;
  if (max == 0 || after == UINT64_MAX) return 0;
  int rc = txn_begin(s, 0, &txn, e), mrc;
  if (rc) return rc;
  if ((mrc = mdb_cursor_open(txn, s->changes, &cur))) {
    rc = mdb_fail(e, mrc, "opening changes cursor");
    goto done;
  }
  uint8_t kb[8];
  put_be64(kb, after + 1);
  MDB_val k = {8, kb}, v;
  for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0 && got < max;
       mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8 || v.mv_size != CHANGE_VAL) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT,
                       "store: a change-log entry is damaged");
      goto done;
    }
    const uint8_t *p = v.mv_data;
    out[got].seq = get_be64(k.mv_data);
    out[got].op = p[0];
    out[got].cid = get_le32(p + 1);
    out[got].doc = get_le64(p + 5);
    got++;
  }
  if (mrc && mrc != MDB_NOTFOUND) rc = mdb_fail(e, mrc, "reading changes");
done:
  if (cur) mdb_cursor_close(cur);
  txn_abort(s, txn);
  if (rc == 0) *n = got;
  return rc;
}

static int trim_body(store *s, MDB_txn *txn, void *arg, ctxd_error *e) {
  uint64_t upto = *(const uint64_t *)arg;
  MDB_cursor *cur = NULL;
  MDB_val k, v;
  int mrc = mdb_cursor_open(txn, s->changes, &cur);
  if (mrc) return mdb_fail(e, mrc, "opening changes cursor");
  while ((mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0 &&
         k.mv_size == 8 && get_be64(k.mv_data) <= upto)
    if ((mrc = mdb_cursor_del(cur, 0))) break;
  mdb_cursor_close(cur);
  if (mrc && mrc != MDB_NOTFOUND)
    return mdb_fail(e, mrc, "trimming the change log");
  return 0;
}

int store_changes_trim(store *s, uint64_t upto, ctxd_error *e) {
  return write_txn(s, 0, trim_body, &upto, e);
}

/* ---- readers ------------------------------------------------------------- */

struct store_reader {
  store *s;
  MDB_txn *txn;
  uint64_t seq;
  /* Copies handed out by store_reader_doc_vectors, freed at the end. */
  void **copies;
  size_t n_copies, cap_copies;
  /* A vector LMDB left unaligned for float is copied here for the call. */
  float *scratch;
  size_t scratch_cap;
};

int store_reader_begin(store *s, store_reader **out, ctxd_error *e) {
  *out = NULL;
  store_reader *r = calloc(1, sizeof *r);
  if (!r) return ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
  counters c;
  int rc = txn_begin(s, 0, &r->txn, e);
  if (rc) {
    free(r);
    return rc;
  }
  r->s = s;
  rc = counters_read(s, r->txn, &c, e);
  if (rc) {
    store_reader_end(r);
    return rc;
  }
  r->seq = c.last_seq;
  *out = r;
  return 0;
}

void store_reader_end(store_reader *r) {
  if (!r) return;
  txn_abort(r->s, r->txn);
  for (size_t i = 0; i < r->n_copies; i++) free(r->copies[i]);
  free(r->copies);
  free(r->scratch);
  free(r);
}

uint64_t store_reader_seq(const store_reader *r) { return r->seq; }

int store_reader_coll(store_reader *r, uint32_t cid, store_collection *out,
                      ctxd_error *e) {
  int rc = coll_read(r->s, r->txn, cid, out, e);
  if (rc == CTXD_ENOTFOUND)
    rc = ctxd_seterr(e, CTXD_ENOTFOUND, "collection %u not found", cid);
  return rc;
}

/* A document of the snapshot, NOT_FOUND worded. */
static int reader_doc(store_reader *r, uint64_t doc, doc_rec *rec,
                      ctxd_error *e) {
  int rc = doc_read(r->s, r->txn, doc, rec, e);
  if (rc == CTXD_ENOTFOUND)
    rc = ctxd_seterr(e, CTXD_ENOTFOUND, "document %llu not found",
                     (unsigned long long)doc);
  return rc;
}

/* The text of doc (record rec) in the snapshot. */
static int reader_text(store_reader *r, uint64_t doc, const doc_rec *rec,
                       MDB_val *v, ctxd_error *e) {
  uint8_t dk[8];
  put_be64(dk, doc);
  MDB_val k = {8, dk};
  int mrc = mdb_get(r->txn, r->s->texts, &k, v);
  if (mrc == MDB_NOTFOUND || (mrc == 0 && v->mv_size != rec->bytes))
    return ctxd_seterr(e, CTXD_ECORRUPT,
                       "store: text of document %llu is damaged",
                       (unsigned long long)doc);
  return mrc ? mdb_fail(e, mrc, "reading a text") : 0;
}

int store_reader_chunk(store_reader *r, int64_t label, int with_text,
                       store_chunk_ref *out, ctxd_error *e) {
  memset(out, 0, sizeof *out);
  if (label < 0)
    return ctxd_seterr(e, CTXD_ENOTFOUND, "chunk label %lld not found",
                       (long long)label);
  uint64_t doc = STORE_LABEL_DOC(label);
  uint32_t ord = STORE_LABEL_ORD(label);
  doc_rec rec;
  int rc = reader_doc(r, doc, &rec, e), mrc;
  if (rc) return rc;
  if (ord >= rec.n_chunks)
    return ctxd_seterr(e, CTXD_ENOTFOUND,
                       "chunk %u of document %llu not found (it has %u)", ord,
                       (unsigned long long)doc, rec.n_chunks);
  uint8_t kb[CHUNK_KEY];
  chunk_key(kb, doc, ord);
  MDB_val k = {CHUNK_KEY, kb}, v;
  mrc = mdb_get(r->txn, r->s->chunks, &k, &v);
  if (mrc == MDB_NOTFOUND || (mrc == 0 && v.mv_size != CHUNK_VAL))
    return ctxd_seterr(e, CTXD_ECORRUPT,
                       "store: chunk %u of document %llu is damaged", ord,
                       (unsigned long long)doc);
  if (mrc) return mdb_fail(e, mrc, "reading a chunk");
  chunk_rec c;
  chunk_decode(v.mv_data, &c);
  if (c.start > c.end || c.end > rec.bytes)
    return ctxd_seterr(e, CTXD_ECORRUPT,
                       "store: chunk %u of document %llu is damaged", ord,
                       (unsigned long long)doc);
  if (with_text) {
    MDB_val tv;
    rc = reader_text(r, doc, &rec, &tv, e);
    if (rc) return rc;
    out->text = (const char *)tv.mv_data + c.start;
    out->text_len = (size_t)(c.end - c.start);
  }
  out->cid = rec.cid;
  out->doc = doc;
  out->doc_id = rec.id;
  out->doc_id_len = rec.id_len;
  out->ordinal = ord;
  out->span = (chunk_span){c.start, c.end, c.tokens};
  out->lex_len = c.lex_len;
  return 0;
}

int store_reader_doc_id(store_reader *r, uint32_t cid, const char *id,
                        size_t id_len, uint64_t *doc, ctxd_error *e) {
  if (id_len == 0 || id_len > STORE_ID_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "id must be 1..%d bytes, not %zu",
                       STORE_ID_MAX, id_len);
  int rc = lookup(r->s, r->txn, cid, id, id_len, doc, NULL, e);
  if (rc == CTXD_ENOTFOUND)
    rc = ctxd_seterr(e, CTXD_ENOTFOUND, "document %.*s not found",
                     (int)(id_len > 64 ? 64 : id_len), id);
  return rc;
}

int store_reader_doc_meta(store_reader *r, uint64_t doc, const char *key,
                          size_t key_len, uint32_t *cid, const char **val,
                          size_t *val_len, ctxd_error *e) {
  doc_rec rec;
  *val = NULL;
  *val_len = 0;
  int rc = reader_doc(r, doc, &rec, e);
  if (rc) return rc;
  if (cid) *cid = rec.cid;
  size_t off = 0;
  for (uint32_t i = 0; i < rec.n_meta; i++) {
    uint32_t kl = get_le32(rec.meta + off);
    const char *k = (const char *)rec.meta + off + 4;
    off += 4 + kl;
    uint32_t vl = get_le32(rec.meta + off);
    if (key && kl == key_len && memcmp(k, key, kl) == 0) {
      *val = (const char *)rec.meta + off + 4;
      *val_len = vl;
      break;
    }
    off += 4 + vl;
  }
  return 0;
}

int store_reader_doc_text(store_reader *r, uint64_t doc, const char **text,
                          size_t *len, ctxd_error *e) {
  doc_rec rec;
  MDB_val tv;
  int rc = reader_doc(r, doc, &rec, e);
  if (rc == 0) rc = reader_text(r, doc, &rec, &tv, e);
  if (rc) return rc;
  *text = tv.mv_size ? tv.mv_data : "";
  *len = tv.mv_size;
  return 0;
}

int store_reader_doc_vectors(store_reader *r, uint32_t cid, uint64_t doc,
                             const float **vecs, uint32_t *n, ctxd_error *e) {
  doc_rec rec;
  store_collection col;
  MDB_cursor *cur = NULL;
  *vecs = NULL;
  *n = 0;
  int rc = reader_doc(r, doc, &rec, e), mrc;
  if (rc) return rc;
  if (rec.cid != cid)
    return ctxd_seterr(e, CTXD_ENOTFOUND,
                       "document %llu is not in collection %u",
                       (unsigned long long)doc, cid);
  if (rec.n_vectors == 0) return 0;
  rc = coll_read(r->s, r->txn, cid, &col, e);
  if (rc == CTXD_ENOTFOUND)
    rc = ctxd_seterr(e, CTXD_ECORRUPT, "store: collection %u is missing", cid);
  if (rc) return rc;
  size_t vsz = (size_t)col.dim * sizeof(float);
  if (r->n_copies == r->cap_copies) {
    size_t nc = r->cap_copies ? r->cap_copies * 2 : 16;
    void **np = realloc(r->copies, nc * sizeof *np);
    if (!np) return ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
    r->copies = np;
    r->cap_copies = nc;
  }
  float *out = malloc(rec.n_vectors * vsz + 1);
  if (!out) return ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
  r->copies[r->n_copies++] = out;
  if ((mrc = mdb_cursor_open(r->txn, r->s->vectors, &cur)))
    return mdb_fail(e, mrc, "opening vectors cursor");
  uint8_t kb[VEC_KEY];
  vec_key(kb, cid, doc, 0);
  MDB_val k = {VEC_KEY, kb}, v;
  uint32_t got = 0;
  int bad = 0;
  for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != VEC_KEY || memcmp(k.mv_data, kb, 12)) break;
    if (got >= rec.n_vectors || v.mv_size != vsz ||
        get_be32((uint8_t *)k.mv_data + 12) != got) {
      bad = 1;
      break;
    }
    memcpy(out + (size_t)got * col.dim, v.mv_data, vsz);
    got++;
  }
  mdb_cursor_close(cur);
  if (mrc && mrc != MDB_NOTFOUND) return mdb_fail(e, mrc, "reading vectors");
  if (bad || got != rec.n_vectors)
    return ctxd_seterr(e, CTXD_ECORRUPT,
                       "store: vectors of document %llu are damaged",
                       (unsigned long long)doc);
  *vecs = out;
  *n = got;
  return 0;
}

int store_reader_scan_vectors(store_reader *r, uint32_t cid,
                              int (*fn)(int64_t label, const float *v,
                                        uint32_t dim, void *arg),
                              void *arg, ctxd_error *e) {
  MDB_cursor *cur = NULL;
  uint8_t pre[4];
  put_be32(pre, cid);
  int rc = 0, mrc = mdb_cursor_open(r->txn, r->s->vectors, &cur);
  if (mrc) return mdb_fail(e, mrc, "opening vectors cursor");
  MDB_val k = {4, pre}, v;
  for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != VEC_KEY || memcmp(k.mv_data, pre, 4)) break;
    if (v.mv_size == 0 || v.mv_size % sizeof(float)) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT, "store: a vector is damaged");
      break;
    }
    const float *f = v.mv_data;
    if ((uintptr_t)v.mv_data % _Alignof(float)) {
      /* LMDB aligns values to 2 bytes only; a float needs 4. */
      if (r->scratch_cap < v.mv_size) {
        float *ns = realloc(r->scratch, v.mv_size);
        if (!ns) {
          rc = ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
          break;
        }
        r->scratch = ns;
        r->scratch_cap = v.mv_size;
      }
      memcpy(r->scratch, v.mv_data, v.mv_size);
      f = r->scratch;
    }
    const uint8_t *kp = k.mv_data;
    rc = fn(STORE_LABEL(get_be64(kp + 4), get_be32(kp + 12)), f,
            (uint32_t)(v.mv_size / sizeof(float)), arg);
    if (rc) break;
  }
  mdb_cursor_close(cur);
  if (rc) return rc;
  return mrc && mrc != MDB_NOTFOUND ? mdb_fail(e, mrc, "scanning vectors") : 0;
}

int store_reader_scan_docs(store_reader *r, uint32_t cid,
                           int (*fn)(uint64_t doc, const char *id,
                                     size_t id_len, void *arg),
                           void *arg, ctxd_error *e) {
  MDB_cursor *cur = NULL;
  uint8_t pre[4];
  put_be32(pre, cid);
  int rc = 0, mrc = mdb_cursor_open(r->txn, r->s->cdocs, &cur);
  if (mrc) return mdb_fail(e, mrc, "opening cdocs cursor");
  MDB_val k = {4, pre}, v;
  for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != CDOC_KEY || memcmp(k.mv_data, pre, 4)) break;
    uint64_t doc = get_be64((uint8_t *)k.mv_data + 4);
    doc_rec rec;
    rc = doc_read(r->s, r->txn, doc, &rec, e);
    if (rc == CTXD_ENOTFOUND)
      rc = ctxd_seterr(e, CTXD_ECORRUPT,
                       "store: collection %u lists missing document %llu",
                       cid, (unsigned long long)doc);
    if (rc) break;
    rc = fn(doc, rec.id, rec.id_len, arg);
    if (rc) break;
  }
  mdb_cursor_close(cur);
  if (rc) return rc;
  return mrc && mrc != MDB_NOTFOUND ? mdb_fail(e, mrc, "scanning documents")
                                    : 0;
}

int store_reader_postings(store_reader *r, uint32_t cid, const char *term,
                          size_t len, uint64_t *df,
                          int (*fn)(int64_t label, uint32_t tf, uint32_t dl,
                                    void *arg),
                          void *arg, ctxd_error *e) {
  *df = 0;
  if (len == 0 || len > LEX_TERM_MAX) return 0; /* no such term is kept */
  MDB_cursor *cur = NULL;
  uint8_t kb[POST_KEY_MAX];
  MDB_val k, v;
  size_t count = 0;
  int rc = 0, mrc = mdb_cursor_open(r->txn, r->s->postings, &cur);
  if (mrc) return mdb_fail(e, mrc, "opening postings cursor");
  post_key(kb, cid, term, len, &k);
  mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
  if (mrc == 0) mrc = mdb_cursor_count(cur, &count);
  if (mrc) goto done;
  *df = count;
  if (!fn) goto done;
  /* A page of postings per call: DUPFIXED keeps them packed. A lone value
   * is not kept as a duplicate list, and MDB_SET_KEY has returned it. */
  if (count > 1) mrc = mdb_cursor_get(cur, &k, &v, MDB_GET_MULTIPLE);
  while (mrc == 0) {
    if (v.mv_size % POST_VAL) {
      rc = ctxd_seterr(e, CTXD_ECORRUPT, "store: postings are damaged");
      break;
    }
    const uint8_t *p = v.mv_data;
    for (size_t i = 0; i < v.mv_size / POST_VAL && !rc; i++, p += POST_VAL)
      rc = fn((int64_t)get_be64(p), get_le32(p + 8), get_le32(p + 12), arg);
    if (rc || count == 1) break;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_MULTIPLE);
  }
done:
  mdb_cursor_close(cur);
  if (rc) return rc;
  return mrc && mrc != MDB_NOTFOUND ? mdb_fail(e, mrc, "reading postings") : 0;
}

/* ---- jobs ---------------------------------------------------------------- */

static int job_id_check(const char *id, ctxd_error *e) {
  size_t n = strlen(id);
  if (n == 0 || n > JOB_ID_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "job id must be 1..%d bytes, not %zu",
                       JOB_ID_MAX, n);
  return 0;
}

typedef struct job_args {
  const char *id;
  const void *rec;
  size_t len;
} job_args;

static int job_put_body(store *s, MDB_txn *txn, void *arg, ctxd_error *e) {
  job_args *a = arg;
  MDB_val k = {strlen(a->id), (void *)a->id},
          v = {a->len, (void *)(a->len ? a->rec : "")};
  int mrc = mdb_put(txn, s->jobs, &k, &v, 0);
  return mrc ? mdb_fail(e, mrc, "writing a job") : 0;
}

int store_job_put(store *s, const char *id, const void *rec, size_t len,
                  ctxd_error *e) {
  int rc = job_id_check(id, e);
  if (rc) return rc;
  if (len > JOB_REC_MAX)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "job %s: record of %zu bytes is too large", id, len);
  job_args a = {id, rec, len};
  return write_txn(s, len, job_put_body, &a, e);
}

int store_job_get(store *s, const char *id, void **rec, size_t *len,
                  ctxd_error *e) {
  *rec = NULL;
  *len = 0;
  int rc = job_id_check(id, e);
  if (rc) return rc;
  MDB_txn *txn = NULL;
  rc = txn_begin(s, 0, &txn, e);
  if (rc) return rc;
  MDB_val k = {strlen(id), (void *)id}, v;
  int mrc = mdb_get(txn, s->jobs, &k, &v);
  if (mrc == MDB_NOTFOUND) {
    rc = ctxd_seterr(e, CTXD_ENOTFOUND, "job %s not found", id);
  } else if (mrc) {
    rc = mdb_fail(e, mrc, "reading a job");
  } else if (!(*rec = malloc(v.mv_size ? v.mv_size : 1))) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "store: out of memory");
  } else {
    if (v.mv_size) memcpy(*rec, v.mv_data, v.mv_size);
    *len = v.mv_size;
  }
  txn_abort(s, txn);
  return rc;
}

static int job_delete_body(store *s, MDB_txn *txn, void *arg,
                           ctxd_error *e) {
  const char *id = arg;
  MDB_val k = {strlen(id), (void *)id};
  int mrc = mdb_del(txn, s->jobs, &k, NULL);
  if (mrc == MDB_NOTFOUND)
    return ctxd_seterr(e, CTXD_ENOTFOUND, "job %s not found", id);
  return mrc ? mdb_fail(e, mrc, "deleting a job") : 0;
}

int store_job_delete(store *s, const char *id, ctxd_error *e) {
  int rc = job_id_check(id, e);
  if (rc) return rc;
  return write_txn(s, 0, job_delete_body, (void *)id, e);
}

int store_job_list(store *s,
                   int (*fn)(const char *id, size_t id_len, const void *rec,
                             size_t len, void *arg),
                   void *arg, ctxd_error *e) {
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  int rc = txn_begin(s, 0, &txn, e), mrc;
  if (rc) return rc;
  if ((mrc = mdb_cursor_open(txn, s->jobs, &cur)) == 0) {
    MDB_val k, v;
    for (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); mrc == 0 && rc == 0;
         mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
      rc = fn(k.mv_data, k.mv_size, v.mv_data, v.mv_size, arg);
    mdb_cursor_close(cur);
  }
  if (rc == 0 && mrc && mrc != MDB_NOTFOUND)
    rc = mdb_fail(e, mrc, "listing jobs");
  txn_abort(s, txn);
  return rc;
}

/* ---- stats / meta -------------------------------------------------------- */

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

static int tokenizer_body(store *s, MDB_txn *txn, void *arg,
                          ctxd_error *e) {
  const char *name = arg;
  MDB_val k = {9, "tokenizer"}, v = {strlen(name), (void *)name};
  int mrc = mdb_put(txn, s->meta, &k, &v, 0);
  return mrc ? mdb_fail(e, mrc, "writing the tokenizer") : 0;
}

int store_set_tokenizer(store *s, const char *name, ctxd_error *e) {
  if (strlen(name) >= sizeof((store_stats *)0)->tokenizer)
    return ctxd_seterr(e, CTXD_EINVAL, "tokenizer name too long");
  return write_txn(s, 0, tokenizer_body, (void *)name, e);
}

/* ---- verify -------------------------------------------------------------- */

typedef struct vctx {
  store_verify_report *rep;
  int oom;
} vctx;

/* What verify finds stored for one collection, against its record. */
typedef struct vcoll {
  store_collection c;
  uint64_t documents, chunks, bytes, tokens, vectors, lex_len_sum;
  uint64_t postings_want, postings_have, vectors_have;
} vcoll;

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

/* A printable, bounded rendering of a client id or term for messages. */
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

static vcoll *vcoll_find(vcoll *vc, size_t n, uint32_t cid) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (vc[mid].c.cid == cid) return &vc[mid];
    if (vc[mid].c.cid < cid) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

/* Check the chunks of one document; their records go to *ch (n_chunks of
 * them at most; *n_out = how many were read). */
static int verify_doc_chunks(store *s, MDB_txn *txn, vctx *v, uint64_t doc,
                             const doc_rec *r, const char *name,
                             chunk_rec **ch, size_t *ch_cap, uint64_t *n_out,
                             uint64_t *tok_out) {
  MDB_cursor *cur = NULL;
  uint8_t kb[CHUNK_KEY];
  chunk_key(kb, doc, 0);
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
    chunk_rec c = {0, 0, 0, 0};
    if (val.mv_size != CHUNK_VAL) {
      problem(v, "document %s: chunk %u has a damaged record", name, ord);
      c.start = c.end = UINT64_MAX; /* skipped by the postings check */
    } else {
      chunk_decode(val.mv_data, &c);
      tokens += c.tokens;
      if (c.start >= c.end || c.end > r->bytes)
        problem(v, "document %s: chunk %u [%llu, %llu) is outside the text "
                   "of %llu bytes",
                name, ord, (unsigned long long)c.start,
                (unsigned long long)c.end, (unsigned long long)r->bytes);
      if (n == 0 && c.start != 0)
        problem(v, "document %s: first chunk starts at %llu, not 0", name,
                (unsigned long long)c.start);
      if (n > 0 && c.start < prev_start)
        problem(v, "document %s: chunk %u starts before chunk %u", name, ord,
                ord - 1);
      prev_start = c.start;
      last_end = c.end;
    }
    if (n == *ch_cap) {
      size_t nc = *ch_cap ? *ch_cap * 2 : 64;
      chunk_rec *nv = realloc(*ch, nc * sizeof *nv);
      if (!nv) {
        mdb_cursor_close(cur);
        return ENOMEM;
      }
      *ch = nv;
      *ch_cap = nc;
    }
    (*ch)[n] = c;
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

/* Every term of every chunk (re-tokenized from the text) has its posting
 * with the right tf and dl; counts the postings the texts call for. */
static int verify_doc_postings(store *s, MDB_txn *txn, vctx *v, uint64_t doc,
                               const doc_rec *r, const char *name,
                               const char *text, const chunk_rec *ch,
                               uint64_t n, vcoll *vc, ctxd_error *e) {
  MDB_cursor *cur = NULL;
  int mrc = mdb_cursor_open(txn, s->postings, &cur);
  if (mrc) return mdb_fail(e, mrc, "opening postings cursor");
  for (uint64_t i = 0; i < n; i++) {
    if (ch[i].start >= ch[i].end || ch[i].end > r->bytes) continue;
    lex_tf *tfs = NULL;
    size_t nt = 0;
    uint32_t len = 0;
    int rc = lex_terms(text + ch[i].start, (size_t)(ch[i].end - ch[i].start),
                       &tfs, &nt, &len, e);
    if (rc) {
      mdb_cursor_close(cur);
      return rc;
    }
    if (len != ch[i].lex_len)
      problem(v, "document %s: chunk %llu has %u terms, its record says %u",
              name, (unsigned long long)i, len, ch[i].lex_len);
    if (vc) vc->postings_want += nt;
    int64_t label = STORE_LABEL(doc, i);
    for (size_t t = 0; t < nt; t++) {
      uint8_t kb[POST_KEY_MAX], vb[POST_VAL];
      MDB_val k, pv = {POST_VAL, vb};
      char tn[80];
      post_key(kb, r->cid, tfs[t].term, tfs[t].len, &k);
      post_val(vb, label, 0, 0);
      mrc = mdb_cursor_get(cur, &k, &pv, MDB_GET_BOTH_RANGE);
      if (mrc && mrc != MDB_NOTFOUND) {
        free(tfs);
        mdb_cursor_close(cur);
        return mdb_fail(e, mrc, "verify");
      }
      id_name(tfs[t].term, tfs[t].len, tn, sizeof tn);
      if (mrc || pv.mv_size != POST_VAL ||
          get_be64(pv.mv_data) != (uint64_t)label) {
        problem(v, "document %s: chunk %llu: no posting for term \"%s\"",
                name, (unsigned long long)i, tn);
        continue;
      }
      uint32_t tf = get_le32((uint8_t *)pv.mv_data + 8),
               dl = get_le32((uint8_t *)pv.mv_data + 12);
      if (tf != tfs[t].tf || dl != len)
        problem(v, "document %s: chunk %llu: posting of \"%s\" says tf %u dl "
                   "%u, the text gives tf %u dl %u",
                name, (unsigned long long)i, tn, tf, dl, tfs[t].tf, len);
    }
    free(tfs);
  }
  mdb_cursor_close(cur);
  return 0;
}

/* A document's vectors: one of dim floats per chunk when its record says
 * it has them. */
static int verify_doc_vectors(store *s, MDB_txn *txn, vctx *v, uint64_t doc,
                              const doc_rec *r, const char *name, vcoll *vc) {
  if (r->n_vectors == 0) return 0;
  if (r->n_vectors != r->n_chunks)
    problem(v, "document %s: record says %u vectors for %u chunks", name,
            r->n_vectors, r->n_chunks);
  if (!vc) return 0;
  if (vc->c.dim == 0)
    problem(v, "document %s: has vectors, collection %s takes none", name,
            vc->c.name);
  vc->vectors += r->n_vectors;
  for (uint32_t i = 0; i < r->n_vectors; i++) {
    uint8_t kb[VEC_KEY];
    vec_key(kb, r->cid, doc, i);
    MDB_val k = {VEC_KEY, kb}, val;
    int mrc = mdb_get(txn, s->vectors, &k, &val);
    if (mrc == MDB_NOTFOUND)
      problem(v, "document %s: vector of chunk %u is missing", name, i);
    else if (mrc)
      return mrc;
    else if (val.mv_size != (size_t)vc->c.dim * sizeof(float))
      problem(v, "document %s: vector of chunk %u is %zu bytes, not %u "
                 "floats",
              name, i, val.mv_size, vc->c.dim);
  }
  return 0;
}

/* Load every collection record, in cid order. */
static int verify_load_colls(store *s, MDB_txn *txn, vctx *v, vcoll **out,
                             size_t *n) {
  MDB_cursor *cur = NULL;
  MDB_val k, val;
  size_t got = 0, cap = 0;
  vcoll *vc = NULL;
  int mrc = mdb_cursor_open(txn, s->colls, &cur);
  if (mrc) return mrc;
  for (mrc = mdb_cursor_get(cur, &k, &val, MDB_FIRST); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &val, MDB_NEXT)) {
    if (got == cap) {
      size_t nc = cap ? cap * 2 : 8;
      vcoll *nv = realloc(vc, nc * sizeof *nv);
      if (!nv) {
        mrc = ENOMEM;
        break;
      }
      vc = nv;
      cap = nc;
    }
    memset(&vc[got], 0, sizeof vc[got]);
    if (k.mv_size != 4 || coll_decode(get_be32(k.mv_data), &val, &vc[got].c)) {
      problem(v, "colls: a damaged collection record");
      continue;
    }
    got++;
  }
  mdb_cursor_close(cur);
  *out = vc;
  *n = got;
  return mrc == MDB_NOTFOUND ? 0 : mrc;
}

/* The docs record of doc as an orphan scan sees it: 1 found, 0 missing or
 * damaged (reported elsewhere), -1 with *mrc set on an LMDB error. */
static int verify_owner(store *s, MDB_txn *txn, uint64_t doc, doc_rec *r,
                        int *mrc) {
  uint8_t dk[8];
  put_be64(dk, doc);
  MDB_val k = {8, dk}, val;
  *mrc = mdb_get(txn, s->docs, &k, &val);
  if (*mrc == MDB_NOTFOUND) return 0;
  if (*mrc) return -1;
  return doc_decode(&val, r) ? 0 : 1;
}

int store_verify(store *s, store_verify_report *report, ctxd_error *e) {
  memset(report, 0, sizeof *report);
  report->ok = 1;
  vctx v = {report, 0};
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  counters c, sum = {0, 0, 0, 0, 0, 0, 0};
  uint64_t max_doc = 0;
  vcoll *vcs = NULL;
  size_t n_vcs = 0, ch_cap = 0;
  chunk_rec *ch = NULL;
  int rc = txn_begin(s, 0, &txn, e), mrc = 0;
  if (rc) return rc;
  rc = counters_read(s, txn, &c, e);
  if (rc) goto fail;
  if ((mrc = verify_load_colls(s, txn, &v, &vcs, &n_vcs))) goto mdb_fail_;

  /* 1. Every document: record, collection, id index entry, collection
   * index entry, text, chunks, postings, vectors. */
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
    sum.tokens += r.tokens;
    if (r.id_len == 0 || r.id_len > STORE_ID_MAX)
      problem(&v, "document #%llu: id of %u bytes", (unsigned long long)doc,
              r.id_len);
    vcoll *vc = vcoll_find(vcs, n_vcs, r.cid);
    if (!vc) {
      problem(&v, "document %s: its collection %u does not exist", name,
              r.cid);
    } else {
      vc->documents++;
      vc->bytes += r.bytes;
      vc->tokens += r.tokens;
    }

    uint8_t kbuf[1024], cb[CDOC_KEY];
    MDB_val ik, iv = {8, k.mv_data}, ck = {CDOC_KEY, cb}, cv;
    MDB_cursor *ic = NULL;
    id_key(s, r.cid, r.id, r.id_len, kbuf, &ik);
    if ((mrc = mdb_cursor_open(txn, s->ids, &ic))) goto mdb_fail_;
    mrc = mdb_cursor_get(ic, &ik, &iv, MDB_GET_BOTH);
    mdb_cursor_close(ic);
    if (mrc == MDB_NOTFOUND)
      problem(&v, "document %s: no id index entry", name);
    else if (mrc)
      goto mdb_fail_;
    put_be32(cb, r.cid);
    put_be64(cb + 4, doc);
    mrc = mdb_get(txn, s->cdocs, &ck, &cv);
    if (mrc == MDB_NOTFOUND)
      problem(&v, "document %s: missing from its collection's index", name);
    else if (mrc)
      goto mdb_fail_;

    MDB_val tv = {0, NULL};
    int text_ok = 0;
    mrc = mdb_get(txn, s->texts, &k, &tv);
    if (mrc == MDB_NOTFOUND)
      problem(&v, "document %s: text is missing", name);
    else if (mrc)
      goto mdb_fail_;
    else if (tv.mv_size != r.bytes)
      problem(&v, "document %s: text is %zu bytes, record says %llu", name,
              tv.mv_size, (unsigned long long)r.bytes);
    else
      text_ok = 1;

    uint64_t nch = 0, ntok = 0;
    if ((mrc = verify_doc_chunks(s, txn, &v, doc, &r, name, &ch, &ch_cap,
                                 &nch, &ntok)))
      goto mdb_fail_;
    report->chunks_checked += nch;
    sum.chunks += nch;
    if (vc) {
      vc->chunks += nch;
      for (uint64_t i = 0; i < nch; i++) vc->lex_len_sum += ch[i].lex_len;
    }
    if (text_ok) {
      rc = verify_doc_postings(s, txn, &v, doc, &r, name, tv.mv_data, ch, nch,
                               vc, e);
      if (rc) goto fail;
    }
    if ((mrc = verify_doc_vectors(s, txn, &v, doc, &r, name, vc)))
      goto mdb_fail_;
  }
  if (mrc != MDB_NOTFOUND) goto mdb_fail_;
  mdb_cursor_close(cur);
  cur = NULL;

  /* 2. Every id index entry points at a document with that id, under the
   * key of the document's collection. */
  if ((mrc = mdb_cursor_open(txn, s->ids, &cur))) goto mdb_fail_;
  for (mrc = mdb_cursor_get(cur, &k, &val, MDB_FIRST); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &val, MDB_NEXT)) {
    if (val.mv_size != 8 || k.mv_size < 5) {
      problem(&v, "ids: damaged entry");
      continue;
    }
    uint64_t doc = get_be64(val.mv_data);
    doc_rec r;
    int got = verify_owner(s, txn, doc, &r, &mrc);
    if (got < 0) goto mdb_fail_;
    if (got == 0) {
      problem(&v, "ids: entry points to missing document #%llu",
              (unsigned long long)doc);
      continue;
    }
    uint8_t kbuf[1024];
    MDB_val want;
    id_key(s, r.cid, r.id, r.id_len, kbuf, &want);
    if (get_be32(k.mv_data) != r.cid)
      problem(&v, "ids: entry for document #%llu carries collection %u, the "
                  "document is in %u",
              (unsigned long long)doc, get_be32(k.mv_data), r.cid);
    else if (want.mv_size != k.mv_size ||
             memcmp(want.mv_data, k.mv_data, k.mv_size))
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

  /* 4. Collection index entries and vectors belong to a document of that
   * collection (vectors: one that has them, at an ordinal it has). */
  if ((mrc = mdb_cursor_open(txn, s->cdocs, &cur))) goto mdb_fail_;
  for (mrc = mdb_cursor_get(cur, &k, &val, MDB_FIRST); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &val, MDB_NEXT)) {
    if (k.mv_size != CDOC_KEY) {
      problem(&v, "cdocs: damaged key");
      continue;
    }
    uint32_t cid = get_be32(k.mv_data);
    uint64_t doc = get_be64((uint8_t *)k.mv_data + 4);
    doc_rec r;
    int got = verify_owner(s, txn, doc, &r, &mrc);
    if (got < 0) goto mdb_fail_;
    if (got == 0 || r.cid != cid)
      problem(&v, "cdocs: collection %u lists document #%llu, which is not "
                  "in it",
              cid, (unsigned long long)doc);
  }
  if (mrc != MDB_NOTFOUND) goto mdb_fail_;
  mdb_cursor_close(cur);
  cur = NULL;
  if ((mrc = mdb_cursor_open(txn, s->vectors, &cur))) goto mdb_fail_;
  for (mrc = mdb_cursor_get(cur, &k, &val, MDB_FIRST); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &val, MDB_NEXT)) {
    if (k.mv_size != VEC_KEY) {
      problem(&v, "vectors: damaged key");
      continue;
    }
    const uint8_t *kp = k.mv_data;
    uint32_t cid = get_be32(kp), ord = get_be32(kp + 12);
    uint64_t doc = get_be64(kp + 4);
    vcoll *vc = vcoll_find(vcs, n_vcs, cid);
    if (vc) vc->vectors_have++;
    doc_rec r;
    int got = verify_owner(s, txn, doc, &r, &mrc);
    if (got < 0) goto mdb_fail_;
    if (got == 0 || r.cid != cid || ord >= r.n_vectors)
      problem(&v, "vectors: orphan vector of collection %u, document #%llu, "
                  "chunk %u",
              cid, (unsigned long long)doc, ord);
  }
  if (mrc != MDB_NOTFOUND) goto mdb_fail_;
  mdb_cursor_close(cur);
  cur = NULL;

  /* 5. Every posting names a chunk of its collection; with the per-chunk
   * check above and equal counts, the document frequencies add up. */
  if ((mrc = mdb_cursor_open(txn, s->postings, &cur))) goto mdb_fail_;
  for (mrc = mdb_cursor_get(cur, &k, &val, MDB_FIRST); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &val, MDB_NEXT)) {
    if (k.mv_size < 5 || k.mv_size > POST_KEY_MAX || val.mv_size != POST_VAL) {
      problem(&v, "postings: damaged entry");
      continue;
    }
    uint32_t cid = get_be32(k.mv_data);
    vcoll *vc = vcoll_find(vcs, n_vcs, cid);
    if (vc) vc->postings_have++;
    int64_t label = (int64_t)get_be64(val.mv_data);
    uint64_t doc = STORE_LABEL_DOC(label);
    uint32_t ord = STORE_LABEL_ORD(label);
    doc_rec r;
    int got = verify_owner(s, txn, doc, &r, &mrc);
    if (got < 0) goto mdb_fail_;
    if (got == 0 || r.cid != cid || ord >= r.n_chunks) {
      char tn[80];
      id_name((const char *)k.mv_data + 4, k.mv_size - 4, tn, sizeof tn);
      problem(&v, "postings: term \"%s\" of collection %u points at missing "
                  "chunk %u of document #%llu",
              tn, cid, ord, (unsigned long long)doc);
    }
  }
  if (mrc != MDB_NOTFOUND) goto mdb_fail_;
  mdb_cursor_close(cur);
  cur = NULL;

  /* 6. Collection names both ways. */
  if ((mrc = mdb_cursor_open(txn, s->cnames, &cur))) goto mdb_fail_;
  for (mrc = mdb_cursor_get(cur, &k, &val, MDB_FIRST); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &val, MDB_NEXT)) {
    char nm[80];
    id_name(k.mv_data, k.mv_size, nm, sizeof nm);
    vcoll *vc = val.mv_size == 4 ? vcoll_find(vcs, n_vcs, get_le32(val.mv_data))
                                 : NULL;
    if (!vc || strlen(vc->c.name) != k.mv_size ||
        memcmp(vc->c.name, k.mv_data, k.mv_size))
      problem(&v, "cnames: name %s does not lead to its collection", nm);
  }
  if (mrc != MDB_NOTFOUND) goto mdb_fail_;
  mdb_cursor_close(cur);
  cur = NULL;

  /* 7. Counters, global and per collection. */
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
  for (size_t i = 0; i < n_vcs; i++) {
    vcoll *vc = &vcs[i];
    uint32_t cid;
    static const char *ccn[] = {"documents", "chunks",  "bytes",
                                "tokens",    "vectors", "lex_len_sum"};
    uint64_t ch_have[] = {vc->c.documents, vc->c.chunks,  vc->c.bytes,
                          vc->c.tokens,    vc->c.vectors, vc->c.lex_len_sum};
    uint64_t ch_want[] = {vc->documents, vc->chunks,  vc->bytes,
                          vc->tokens,    vc->vectors, vc->lex_len_sum};
    for (int j = 0; j < 6; j++)
      if (ch_have[j] != ch_want[j])
        problem(&v, "collection %s: counter %s is %llu, stored data sums to "
                    "%llu",
                vc->c.name, ccn[j], (unsigned long long)ch_have[j],
                (unsigned long long)ch_want[j]);
    if (vc->vectors_have != vc->vectors)
      problem(&v, "collection %s: %llu vectors stored, its documents have "
                  "%llu",
              vc->c.name, (unsigned long long)vc->vectors_have,
              (unsigned long long)vc->vectors);
    if (vc->postings_have != vc->postings_want)
      problem(&v, "collection %s: %llu postings stored, its chunk texts give "
                  "%llu",
              vc->c.name, (unsigned long long)vc->postings_have,
              (unsigned long long)vc->postings_want);
    rc = coll_find(s, txn, vc->c.name, &cid, e);
    if (rc == CTXD_ENOTFOUND || (rc == 0 && cid != vc->c.cid))
      problem(&v, "collection %s: missing from the name index", vc->c.name);
    else if (rc)
      goto fail;
    rc = 0;
    if (vc->c.cid >= c.next_cid)
      problem(&v, "next collection id %llu is not above %u",
              (unsigned long long)c.next_cid, vc->c.cid);
  }

  txn_abort(s, txn);
  free(vcs);
  free(ch);
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
  free(vcs);
  free(ch);
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

/* ---- copy, compact --------------------------------------------------------
 * Both copy with MDB_CP_COMPACT: one read snapshot, live pages only, free
 * pages left out, so the copy is as small as the data allows. The copy's
 * read transaction is begun by LMDB itself, outside txn_begin, so s->lock
 * is held shared around it: the map must not move under it. */

static int copy_to_fd(store *s, int fd, const char *path, ctxd_error *e) {
  pthread_rwlock_rdlock(&s->lock);
  if (s->broken) {
    pthread_rwlock_unlock(&s->lock);
    return ctxd_seterr(e, CTXD_EIO, "%s", s->broken_msg);
  }
  int mrc = mdb_env_copyfd2(s->env, fd, MDB_CP_COMPACT);
  pthread_rwlock_unlock(&s->lock);
  if (mrc == 0 && fsync(fd) != 0) mrc = errno;
  if (mrc == ENOSPC || mrc == EDQUOT)
    return ctxd_seterr(e, CTXD_ENOSPC, "store: copying to %s: disk full",
                       path);
  if (mrc)
    return ctxd_seterr(e, CTXD_EIO, "store: copying to %s: %s", path,
                       mdb_strerror(mrc));
  return 0;
}

void store_copy_info_free(store_copy_info *info) {
  if (!info) return;
  free(info->colls);
  info->colls = NULL;
  info->n_colls = 0;
}

int store_file_info(const char *path, store_copy_info *info, ctxd_error *e) {
  MDB_env *env = NULL;
  MDB_txn *txn = NULL;
  MDB_dbi meta, colls;
  int rc = 0, mrc;
  struct stat st;
  memset(info, 0, sizeof *info);
  if (stat(path, &st) != 0)
    return ctxd_seterr(e, errno == ENOENT ? CTXD_ENOTFOUND : CTXD_EIO,
                       "store: %s: %s", path, strerror(errno));
  info->file_bytes = (uint64_t)st.st_size;
  /* Read-only and without a lock file: the file may sit in a backup
   * directory, which must stay exactly as written. */
  if ((mrc = mdb_env_create(&env)) || (mrc = mdb_env_set_maxdbs(env, 16)) ||
      (mrc = mdb_env_open(env, path, MDB_RDONLY | MDB_NOSUBDIR | MDB_NOLOCK,
                          0644)) ||
      (mrc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn))) {
    rc = ctxd_seterr(e, mrc == MDB_INVALID ? CTXD_ECORRUPT : CTXD_EIO,
                     "store: cannot open %s: %s", path, mdb_strerror(mrc));
    goto done;
  }
  MDB_val k = {14, "schema_version"}, v;
  if (mdb_dbi_open(txn, "meta", 0, &meta) || mdb_get(txn, meta, &k, &v) ||
      v.mv_size != 4) {
    rc = ctxd_seterr(e, CTXD_ECORRUPT, "store: %s has no schema version",
                     path);
    goto done;
  }
  info->schema_version = get_le32(v.mv_data);
  if (info->schema_version != STORE_SCHEMA_VERSION) goto done;
  MDB_val ck = {8, "counters"};
  if (mdb_get(txn, meta, &ck, &v) || v.mv_size != COUNTERS_VAL) {
    rc = ctxd_seterr(e, CTXD_ECORRUPT, "store: %s has no counters", path);
    goto done;
  }
  counters c;
  counters_decode(v.mv_data, &c);
  info->documents = c.documents;
  info->chunks = c.chunks;
  info->bytes = c.bytes;
  info->last_seq = c.last_seq;
  if ((mrc = mdb_dbi_open(txn, "colls", 0, &colls))) {
    rc = ctxd_seterr(e, CTXD_ECORRUPT, "store: %s has no collections: %s",
                     path, mdb_strerror(mrc));
    goto done;
  }
  rc = colls_read(txn, colls, &info->colls, &info->n_colls, e);
done:
  if (txn) mdb_txn_abort(txn);
  if (env) mdb_env_close(env);
  return rc;
}

int store_copy(store *s, const char *path, store_copy_info *info,
               ctxd_error *e) {
  if (info) memset(info, 0, sizeof *info);
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0)
    return ctxd_seterr(e, errno == EEXIST ? CTXD_EEXIST : CTXD_EIO,
                       "store: creating %s: %s", path, strerror(errno));
  int rc = copy_to_fd(s, fd, path, e);
  if (close(fd) != 0 && !rc)
    rc = ctxd_seterr(e, CTXD_EIO, "store: writing %s: %s", path,
                     strerror(errno));
  if (!rc && info) rc = store_file_info(path, info, e);
  if (rc) unlink(path);
  return rc;
}

static uint64_t last_txnid(store *s) {
  MDB_envinfo info;
  pthread_rwlock_rdlock(&s->lock);
  memset(&info, 0, sizeof info);
  if (!s->broken) mdb_env_info(s->env, &info);
  pthread_rwlock_unlock(&s->lock);
  return (uint64_t)info.me_last_txnid;
}

/* Open the environment again after the swap (under both locks, nothing
 * open). A failure leaves the store broken: the file on disk is whole, a
 * restart opens it. */
static int env_reopen(store *s, size_t map_size, ctxd_error *e) {
  MDB_env *env = NULL;
  MDB_txn *txn = NULL;
  int rc = 0, mrc;
  if ((mrc = mdb_env_create(&env)) || (mrc = mdb_env_set_maxdbs(env, 16)) ||
      (mrc = mdb_env_set_maxreaders(env, s->max_readers)) ||
      (mrc = mdb_env_set_mapsize(env, map_size)) ||
      (mrc = mdb_env_open(env, s->dir, s->env_flags, 0644)) ||
      (mrc = mdb_txn_begin(env, NULL, 0, &txn))) {
    rc = ctxd_seterr(e, CTXD_EIO, "reopening: %s", mdb_strerror(mrc));
    goto fail;
  }
  s->env = env;
  if ((rc = open_dbs_in(s, txn, e))) goto fail;
  mrc = mdb_txn_commit(txn);
  txn = NULL;
  if (mrc) {
    rc = ctxd_seterr(e, CTXD_EIO, "reopening: %s", mdb_strerror(mrc));
    goto fail;
  }
  return 0;
fail:
  if (txn) mdb_txn_abort(txn);
  if (env) mdb_env_close(env);
  s->env = NULL;
  s->broken = 1;
  snprintf(s->broken_msg, sizeof s->broken_msg,
           "store: cannot reopen %.80s after compaction (%.60s); the store "
           "is unusable until ctxd restarts",
           s->dir, e ? e->msg : "error");
  return ctxd_seterr(e, CTXD_EIO, "%s", s->broken_msg);
}

static uint64_t file_size(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

int store_compact(store *s, store_compact_result *res, ctxd_error *e) {
  char tmp[sizeof s->path + 16];
  int fd = -1, rc = 0, gated = 0;
  memset(res, 0, sizeof *res);
  snprintf(tmp, sizeof tmp, "%s" STORE_COMPACT_SUFFIX, s->path);
  /* Pass 1 runs beside writers; if none committed meanwhile its copy is the
   * store as it stands, else pass 2 copies again with writers paused. */
  uint64_t t0 = last_txnid(s);
  unlink(tmp);
  fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    rc = ctxd_seterr(e, CTXD_EIO, "store: creating %s: %s", tmp,
                     strerror(errno));
    goto fail;
  }
  if ((rc = copy_to_fd(s, fd, tmp, e))) goto fail;
  pthread_rwlock_wrlock(&s->wgate);
  gated = 1;
  if (last_txnid(s) != t0) {
    res->paused_writers = 1;
    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) {
      rc = ctxd_seterr(e, CTXD_EIO, "store: truncating %s: %s", tmp,
                       strerror(errno));
      goto fail;
    }
    if ((rc = copy_to_fd(s, fd, tmp, e))) goto fail;
  }
  close(fd);
  fd = -1;
  /* The swap: no transaction may be open while the environment is
   * closed, so readers wait too, for as long as a close, a rename and an
   * open take. */
  pthread_rwlock_wrlock(&s->lock);
  if (s->broken) {
    rc = ctxd_seterr(e, CTXD_EIO, "%s", s->broken_msg);
    pthread_rwlock_unlock(&s->lock);
    goto fail;
  }
  res->bytes_before = file_size(s->path);
  size_t map_size = (size_t)map_size_now(s);
  mdb_env_close(s->env);
  s->env = NULL;
  int ren = rename(tmp, s->path), ren_err = errno;
  int dsync = ren == 0 ? fsync_path(s->dir) : 0, dsync_err = errno;
  ctxd_error re;
  int rrc = env_reopen(s, map_size, &re);
  res->bytes_after = file_size(s->path);
  pthread_rwlock_unlock(&s->lock);
  if (ren != 0) {
    rc = ctxd_seterr(e, CTXD_EIO, "store: renaming %s over %s: %s", tmp,
                     s->path, strerror(ren_err));
    goto fail;
  }
  if (rrc) {
    rc = ctxd_seterr(e, rrc, "%s", re.msg);
    goto fail;
  }
  if (dsync != 0) {
    rc = ctxd_seterr(e, CTXD_EIO,
                     "store: compacted, but syncing directory %s failed: %s",
                     s->dir, strerror(dsync_err));
    goto fail;
  }
  pthread_rwlock_unlock(&s->wgate);
  return 0;
fail:
  if (fd >= 0) close(fd);
  unlink(tmp);
  if (gated) pthread_rwlock_unlock(&s->wgate);
  return rc;
}
