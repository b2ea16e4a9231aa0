/* test_backup.c - unit tests of the data-safety calls: store_copy and
 * store_file_info, store_compact (space given back, content kept, writers
 * racing it lose nothing), and a whole backup (coll_backup + manifest) that
 * is checked, refused when damaged, restored and opened again with the
 * same documents and search results. */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../check.h"
#include "backup.h"
#include "coll.h"
#include "put_testlib.h"
#include "store.h"

static char base[] = "/tmp/ctxd-test-backup-XXXXXX";

typedef struct env {
  char dir[300], idir[300];
  store *st;
  coll_set *cs;
} env;

static int env_open(env *v, const char *dir) {
  ctxd_error e;
  store_opts so = {0, 0, 0, 1};
  coll_opts o;
  memset(&o, 0, sizeof o);
  snprintf(v->dir, sizeof v->dir, "%s", dir);
  snprintf(v->idir, sizeof v->idir, "%s/index", dir);
  o.index_dir = v->idir;
  snprintf(o.defaults.embedder, sizeof o.defaults.embedder,
           "hash:dim=64,idf=none");
  o.defaults.metric = VINDEX_IP;
  snprintf(o.defaults.index_spec, sizeof o.defaults.index_spec, "HNSW16");
  o.defaults.chunk_max_tokens = 64;
  o.save_interval_s = 3600;
  o.save_every_changes = 1000000;
  o.build_threads = 1;
  int rc = store_open(dir, &so, &v->st, &e);
  if (rc) {
    fprintf(stderr, "store_open %s: %s\n", dir, e.msg);
    return rc;
  }
  if (!(rc = coll_open(v->st, &o, NULL, NULL, &v->cs, &e))) return 0;
  fprintf(stderr, "coll_open %s: %s\n", dir, e.msg);
  store_close(v->st);
  v->st = NULL;
  return rc;
}

static void env_close(env *v) {
  coll_close(v->cs);
  store_close(v->st);
  v->cs = NULL;
  v->st = NULL;
}

/* One document, one chunk, vector from the collection's embedder. */
static int put_one(store *st, coll_set *cs, uint32_t cid, const char *id,
                   const char *text) {
  ctxd_error e;
  chunk_span sp = {0, strlen(text), 1};
  float vec[64];
  if (cs && coll_embed_chunks(cs, cid, text, &sp, 1, vec, &e)) {
    fprintf(stderr, "embed %s: %s\n", id, e.msg);
    return -1;
  }
  int rc = test_put_doc(st, cid, id, text, &sp, 1, NULL, 0, cs ? vec : NULL,
                        64);
  if (!rc && cs && (rc = coll_sync(cs, &e)))
    fprintf(stderr, "sync %s: %s\n", id, e.msg);
  return rc;
}

static const char *words[] = {"river", "stone", "cloud", "lamp",  "orbit",
                              "maple", "delta", "frost", "amber", "quill"};

static void doc_text(int i, char *buf, size_t cap) {
  snprintf(buf, cap, "doc %d %s %s %s and some filler text %d", i,
           words[i % 10], words[(i / 10) % 10], words[(i * 7) % 10], i * 31);
}

static uint64_t fsize(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* A store in <base>/<name> with collection c1 holding documents d0..d{n-1}
 * (doc_text, padded to about `len` bytes); *cid its id. */
static store *store_with_docs(const char *name, int n, size_t len,
                              uint32_t *cid) {
  char dir[300], text[1024], id[32];
  ctxd_error e;
  store *st = NULL;
  store_opts so = {0, 0, 0, 1};
  snprintf(dir, sizeof dir, "%s/%s", base, name);
  CHECK_EQ_INT(store_open(dir, &so, &st, &e), 0);
  CHECK_EQ_INT(store_coll_create(st, "c1", "x", 0, cid, &e), 0);
  if (len > sizeof text) len = sizeof text;
  for (int i = 0; i < n; i++) {
    snprintf(id, sizeof id, "d%d", i);
    doc_text(i, text, 128);
    size_t k = strlen(text);
    while (k + 40 < len)
      k += (size_t)snprintf(text + k, sizeof text - k, " pad%d", i);
    CHECK_EQ_INT(put_one(st, NULL, *cid, id, text), 0);
  }
  return st;
}

/* ---- store_copy / store_file_info ---------------------------------------- */

static void test_copy(void) {
  char copy[300], text[128];
  ctxd_error e;
  uint32_t cid;
  store_opts so = {0, 0, 0, 1};
  snprintf(copy, sizeof copy, "%s/copy.mdb", base);
  store *st = store_with_docs("copy", 50, 0, &cid);
  store_copy_info info;
  CHECK_EQ_INT(store_copy(st, copy, &info, &e), 0);
  CHECK_EQ_INT(info.schema_version, STORE_SCHEMA_VERSION);
  CHECK_EQ_INT(info.documents, 50);
  CHECK_EQ_INT(info.chunks, 50);
  CHECK_EQ_INT(info.last_seq, 50);
  CHECK_EQ_INT(info.n_colls, 1);
  if (info.n_colls == 1) {
    CHECK_EQ_STR(info.colls[0].name, "c1");
    CHECK_EQ_INT(info.colls[0].documents, 50);
  }
  CHECK_EQ_INT(info.file_bytes, fsize(copy));
  store_copy_info_free(&info);
  /* Never over an existing file; nothing is left behind on failure. */
  CHECK_EQ_INT(store_copy(st, copy, NULL, &e), CTXD_EEXIST);
  CHECK(fsize(copy) > 0);
  /* The copy opens as a store of its own with the same content. */
  char dir2[300], path2[340];
  snprintf(dir2, sizeof dir2, "%s/copy2", base);
  snprintf(path2, sizeof path2, "%s/data.mdb", dir2);
  mkdir(dir2, 0755);
  CHECK_EQ_INT(rename(copy, path2), 0);
  store *st2;
  CHECK_EQ_INT(store_open(dir2, &so, &st2, &e), 0);
  store_doc *d = NULL;
  CHECK_EQ_INT(store_get(st2, cid, "d7", 2, STORE_GET_TEXT, &d, &e), 0);
  doc_text(7, text, sizeof text);
  if (d) CHECK_EQ_STR(d->text, text);
  store_doc_free(d);
  store_close(st2);
  /* Not a data file. */
  CHECK_EQ_INT(store_file_info(dir2, &info, &e) != 0, 1);
  snprintf(path2, sizeof path2, "%s/nope.mdb", base);
  CHECK_EQ_INT(store_file_info(path2, &info, &e), CTXD_ENOTFOUND);
  store_close(st);
}

/* ---- store_compact --------------------------------------------------------- */

typedef struct racer {
  store *st;
  uint32_t cid;
  int n_done;
  int stop;
  int failed;
} racer;

/* Puts documents r0, r1, ... until told to stop; n_done = acknowledged. */
static void *race_writer(void *arg) {
  racer *r = arg;
  char id[32], text[128];
  for (int i = 0; !__atomic_load_n(&r->stop, __ATOMIC_ACQUIRE); i++) {
    snprintf(id, sizeof id, "r%d", i);
    doc_text(i, text, sizeof text);
    if (put_one(r->st, NULL, r->cid, id, text)) {
      r->failed = 1;
      break;
    }
    __atomic_store_n(&r->n_done, i + 1, __ATOMIC_RELEASE);
  }
  return NULL;
}

static void test_compact(void) {
  char dir[300], path[340], id[32];
  ctxd_error e;
  uint32_t cid;
  store_opts so = {0, 0, 0, 1};
  snprintf(dir, sizeof dir, "%s/compact", base);
  snprintf(path, sizeof path, "%s/data.mdb", dir);
  store *st = store_with_docs("compact", 2000, 512, &cid);
  for (int i = 0; i < 2000; i++) {
    if (i % 10 == 0) continue;
    snprintf(id, sizeof id, "d%d", i);
    int del = 0;
    CHECK_EQ_INT(store_delete(st, cid, id, strlen(id), &del, NULL, &e), 0);
  }
  store_stats s0;
  CHECK_EQ_INT(store_stats_get(st, &s0, &e), 0);

  /* Writers keep going through the compaction: every put they had
   * acknowledged must be there afterwards. */
  racer r = {st, cid, 0, 0, 0};
  pthread_t th;
  pthread_create(&th, NULL, race_writer, &r);
  while (__atomic_load_n(&r.n_done, __ATOMIC_ACQUIRE) < 5) usleep(1000);
  store_compact_result res;
  int rc = store_compact(st, &res, &e);
  if (rc) fprintf(stderr, "compact: %s\n", e.msg);
  CHECK_EQ_INT(rc, 0);
  int before_stop = __atomic_load_n(&r.n_done, __ATOMIC_ACQUIRE);
  usleep(20000);
  __atomic_store_n(&r.stop, 1, __ATOMIC_RELEASE);
  pthread_join(th, NULL);
  CHECK_EQ_INT(r.failed, 0);
  CHECK(r.n_done >= before_stop);
  fprintf(stderr, "compact: %llu -> %llu bytes, paused_writers=%d, %d racing "
                  "puts\n",
          (unsigned long long)res.bytes_before,
          (unsigned long long)res.bytes_after, res.paused_writers, r.n_done);
  CHECK(res.bytes_after < res.bytes_before / 2);
  CHECK(res.bytes_after > 0 && res.bytes_after <= fsize(path));
  char tmp[400];
  snprintf(tmp, sizeof tmp, "%s" STORE_COMPACT_SUFFIX, path);
  CHECK(access(tmp, F_OK) != 0);

  /* Same content: the kept documents, every racing put, counters. */
  store_stats s1;
  CHECK_EQ_INT(store_stats_get(st, &s1, &e), 0);
  CHECK_EQ_INT(s1.documents, s0.documents + (uint64_t)r.n_done);
  CHECK_EQ_INT(s1.last_seq, s0.last_seq + (uint64_t)r.n_done);
  for (int i = 0; i < 2000; i += 10) {
    store_doc *d = NULL;
    snprintf(id, sizeof id, "d%d", i);
    CHECK_EQ_INT(store_get(st, cid, id, strlen(id), STORE_GET_TEXT, &d, &e),
                 0);
    store_doc_free(d);
  }
  for (int i = 0; i < r.n_done; i++) {
    store_doc *d = NULL;
    snprintf(id, sizeof id, "r%d", i);
    rc = store_get(st, cid, id, strlen(id), 0, &d, &e);
    if (rc) fprintf(stderr, "racing put %s lost: %s\n", id, e.msg);
    CHECK_EQ_INT(rc, 0);
    store_doc_free(d);
  }
  /* Writes go on after the swap, and the store is sound. */
  CHECK_EQ_INT(put_one(st, NULL, cid, "after", "written after compaction"), 0);
  store_verify_report rep;
  CHECK_EQ_INT(store_verify(st, &rep, &e), 0);
  CHECK(rep.ok);
  store_verify_free(&rep);
  /* Compacting an already compact store keeps it about as it is. */
  CHECK_EQ_INT(store_compact(st, &res, &e), 0);
  CHECK(res.bytes_after <= res.bytes_before);
  store_close(st);
  /* A stray copy from an interrupted compaction goes at the next open. */
  int fd = open(tmp, O_WRONLY | O_CREAT, 0644);
  CHECK(fd >= 0);
  if (fd >= 0) close(fd);
  CHECK_EQ_INT(store_open(dir, &so, &st, &e), 0);
  CHECK(access(tmp, F_OK) != 0);
  store_doc *d = NULL;
  CHECK_EQ_INT(store_get(st, cid, "after", 5, 0, &d, &e), 0);
  store_doc_free(d);
  store_close(st);
}

/* ---- backup, check, restore ------------------------------------------------ */

typedef struct snap_arg {
  store *st;
  char path[400];
  store_copy_info info;
} snap_arg;

static int snap_cb(void *arg, ctxd_error *e) {
  snap_arg *a = arg;
  return store_copy(a->st, a->path, &a->info, e);
}

/* The ids of a vector search, in order, as one string. */
static void search_ids(coll_set *cs, uint32_t cid, const char *q, char *out,
                       size_t cap) {
  coll_query query;
  coll_result r;
  ctxd_error e;
  memset(&query, 0, sizeof query);
  query.text = q;
  query.text_len = strlen(q);
  query.k = 10;
  query.mode = COLL_MODE_VECTOR;
  out[0] = 0;
  if (coll_search(cs, cid, &query, &r, &e)) {
    fprintf(stderr, "search: %s\n", e.msg);
    snprintf(out, cap, "error");
    return;
  }
  for (size_t i = 0; i < r.n; i++) {
    size_t n = strlen(out);
    snprintf(out + n, cap - n, "%s:%.5f ", r.hits[i].doc_id, r.hits[i].score);
  }
  coll_result_free(&r);
}

static void corrupt_byte(const char *path, long off) {
  FILE *f = fopen(path, "r+b");
  if (!f) return;
  fseek(f, off, SEEK_SET);
  int c = fgetc(f);
  fseek(f, off, SEEK_SET);
  fputc(c ^ 0x5a, f);
  fclose(f);
}

static void test_backup_restore(void) {
  char dir[300], bdir[300], rdir[300], text[128], id[32];
  ctxd_error e;
  env a, b;
  snprintf(dir, sizeof dir, "%s/orig", base);
  snprintf(bdir, sizeof bdir, "%s/bk", base);
  snprintf(rdir, sizeof rdir, "%s/restored", base);
  if (env_open(&a, dir)) {
    CHECK(0);
    return;
  }
  uint32_t cid = 0;
  CHECK_EQ_INT(coll_resolve(a.cs, "", 1, &cid, NULL, &e), 0);
  for (int i = 0; i < 300; i++) {
    snprintf(id, sizeof id, "d%d", i);
    doc_text(i, text, sizeof text);
    CHECK_EQ_INT(put_one(a.st, a.cs, cid, id, text), 0);
  }
  CHECK_EQ_INT(coll_save_all(a.cs, &e), 0);
  /* Changes after the last save: the backup's log must carry them. Fewer
   * than rebuild_masked_ratio (0.25) of the HNSW index, so that no
   * background rebuild makes the original's graph differ from its file. */
  for (int i = 0; i < 300; i += 5) {
    int del;
    snprintf(id, sizeof id, "d%d", i);
    CHECK_EQ_INT(store_delete(a.st, cid, id, strlen(id), &del, NULL, &e), 0);
  }
  CHECK_EQ_INT(coll_sync(a.cs, &e), 0);

  snap_arg sa;
  memset(&sa, 0, sizeof sa);
  sa.st = a.st;
  snprintf(sa.path, sizeof sa.path, "%s/data.mdb", bdir);
  char bidx[340];
  snprintf(bidx, sizeof bidx, "%s/index", bdir);
  int rc = coll_backup(a.cs, bidx, snap_cb, &sa, &e);
  if (rc) fprintf(stderr, "coll_backup: %s\n", e.msg);
  CHECK_EQ_INT(rc, 0);
  /* A put after the backup is not in it. */
  CHECK_EQ_INT(put_one(a.st, a.cs, cid, "late", "river stone late"), 0);
  size_t nf = 0;
  uint64_t bytes = 0;
  CHECK_EQ_INT(backup_manifest_write(bdir, &sa.info, "test", 0.5, &nf, &bytes,
                                     &e),
               0);
  CHECK_EQ_INT(nf, 3); /* data.mdb, 1.vindex, coll.manifest */
  CHECK(bytes > 0);
  store_copy_info_free(&sa.info);

  backup_manifest *m = NULL;
  rc = backup_check(bdir, &m, &e);
  if (rc) fprintf(stderr, "backup_check: %s\n", e.msg);
  CHECK_EQ_INT(rc, 0);
  if (m) {
    CHECK_EQ_INT(m->documents, 240);
    CHECK_EQ_INT(m->schema_version, STORE_SCHEMA_VERSION);
    CHECK_EQ_INT(m->n_files, 3);
  }
  backup_manifest_free(m);

  /* Restore refuses a non-empty target and a damaged backup. */
  char busy[340], busyf[400];
  snprintf(busy, sizeof busy, "%s/busy", base);
  snprintf(busyf, sizeof busyf, "%s/x", busy);
  mkdir(busy, 0755);
  fclose(fopen(busyf, "w"));
  CHECK_EQ_INT(backup_restore(bdir, busy, NULL, &e), CTXD_EEXIST);

  char vix[400];
  snprintf(vix, sizeof vix, "%s/index/1.vindex", bdir);
  corrupt_byte(vix, 100);
  CHECK_EQ_INT(backup_restore(bdir, rdir, NULL, &e), CTXD_ECORRUPT);
  CHECK(strstr(e.msg, "index/1.vindex") != NULL);
  CHECK(access(rdir, F_OK) != 0);
  corrupt_byte(vix, 100); /* back as it was */
  char mdb[400];
  snprintf(mdb, sizeof mdb, "%s/data.mdb", bdir);
  if (truncate(mdb, (off_t)fsize(mdb) - 4096) == 0) {
    CHECK_EQ_INT(backup_check(bdir, NULL, &e), CTXD_ECORRUPT);
    CHECK(strstr(e.msg, "data.mdb") != NULL);
  }
  /* ... so restore this one from a second backup, made the same way. */
  char bdir2[300];
  snprintf(bdir2, sizeof bdir2, "%s/bk2", base);
  memset(&sa, 0, sizeof sa);
  sa.st = a.st;
  snprintf(sa.path, sizeof sa.path, "%s/data.mdb", bdir2);
  snprintf(bidx, sizeof bidx, "%s/index", bdir2);
  CHECK_EQ_INT(coll_backup(a.cs, bidx, snap_cb, &sa, &e), 0);
  CHECK_EQ_INT(backup_manifest_write(bdir2, &sa.info, "test", 0.5, NULL, NULL,
                                     &e),
               0);
  store_copy_info_free(&sa.info);
  rc = backup_restore(bdir2, rdir, NULL, &e);
  if (rc) fprintf(stderr, "backup_restore: %s\n", e.msg);
  CHECK_EQ_INT(rc, 0);

  char q1[2048], q2[2048];
  search_ids(a.cs, cid, "river stone cloud", q1, sizeof q1);
  if (env_open(&b, rdir) == 0) {
    store_stats s1, s2;
    CHECK_EQ_INT(store_stats_get(a.st, &s1, &e), 0);
    CHECK_EQ_INT(store_stats_get(b.st, &s2, &e), 0);
    CHECK_EQ_INT(s2.documents, s1.documents);
    CHECK_EQ_INT(s2.chunks, s1.chunks);
    coll_info ia, ib;
    CHECK_EQ_INT(coll_info_get(a.cs, "default", &ia, &e), 0);
    CHECK_EQ_INT(coll_info_get(b.cs, "default", &ib, &e), 0);
    CHECK_EQ_INT(ib.vectors, ia.vectors);
    CHECK_EQ_INT(ib.indexed, ia.indexed);
    search_ids(b.cs, cid, "river stone cloud", q2, sizeof q2);
    CHECK_EQ_STR(q2, q1);
    store_doc *d = NULL;
    CHECK_EQ_INT(store_get(b.st, cid, "d0", 2, 0, &d, &e), CTXD_ENOTFOUND);
    CHECK_EQ_INT(store_get(b.st, cid, "d1", 2, 0, &d, &e), 0);
    store_doc_free(d);
    d = NULL;
    CHECK_EQ_INT(store_get(b.st, cid, "late", 4, 0, &d, &e), 0);
    store_doc_free(d);
    store_verify_report rep;
    CHECK_EQ_INT(store_verify(b.st, &rep, &e), 0);
    CHECK(rep.ok);
    store_verify_free(&rep);
    env_close(&b);
  } else {
    CHECK(0);
  }
  env_close(&a);

  /* A manifest of another schema version is refused before any copy. */
  char man[400], rdir2[340];
  snprintf(man, sizeof man, "%s/" BACKUP_MANIFEST, bdir2);
  snprintf(rdir2, sizeof rdir2, "%s/restored2", base);
  FILE *f = fopen(man, "r");
  char *txt = calloc(1, 1 << 20);
  size_t n = f ? fread(txt, 1, (1 << 20) - 1, f) : 0;
  if (f) fclose(f);
  char *p = strstr(txt, "\"schema_version\": 2");
  CHECK(p != NULL);
  if (p) {
    p[18] = '9';
    f = fopen(man, "w");
    fwrite(txt, 1, n, f);
    fclose(f);
    CHECK_EQ_INT(backup_restore(bdir2, rdir2, NULL, &e), CTXD_EPRECOND);
    CHECK(strstr(e.msg, "schema version 9") != NULL);
    CHECK(access(rdir2, F_OK) != 0);
  }
  free(txt);
  /* No manifest: not a (finished) backup. */
  CHECK_EQ_INT(backup_check(dir, NULL, &e), CTXD_ENOTFOUND);
}

int main(void) {
  if (!mkdtemp(base)) {
    perror("mkdtemp");
    return 1;
  }
  test_copy();
  test_compact();
  test_backup_restore();
  char cmd[400];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
  if (check_failed == 0 && system(cmd) != 0) fprintf(stderr, "rm failed\n");
  return check_report("backup");
}
