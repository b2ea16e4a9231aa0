/* store_testlib.h - helpers shared by the store's unit tests: a temporary
 * base directory with a fresh store directory per test, raw LMDB access
 * for injecting damage, and a verify that prints what it finds. */
#ifndef CTXD_STORE_TESTLIB_H
#define CTXD_STORE_TESTLIB_H

#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>

#include "store.h"

/* Unsynced commits: the tests never crash the machine. */
static const store_opts fast = {0, 0, 0, 1};

static char test_base[] = "/tmp/ctxd-test-store-XXXXXX";
static int test_dir_seq;

/* Create the base directory; 0 or -1. */
static inline int test_base_make(void) {
  if (mkdtemp(test_base)) return 0;
  perror("mkdtemp");
  return -1;
}

/* Remove the base directory and all below it. */
static inline void test_base_remove(void) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_base);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", test_base);
}

/* A fresh directory name under the base (static buffer: copy it to keep). */
static inline const char *new_dir(void) {
  static char buf[256];
  snprintf(buf, sizeof buf, "%s/s%d", test_base, ++test_dir_seq);
  return buf;
}

/* Open a store's environment with raw LMDB for edits the store would not
 * make (the store itself must be closed). */
static inline int raw_open(const char *dir, MDB_env **env, MDB_txn **txn) {
  int rc = mdb_env_create(env);
  if (!rc) rc = mdb_env_set_maxdbs(*env, 16);
  if (!rc) rc = mdb_env_open(*env, dir, MDB_NOSYNC, 0644);
  if (!rc) rc = mdb_txn_begin(*env, NULL, 0, txn);
  return rc;
}

/* 1 when verify finds nothing wrong; prints every problem it finds. */
static inline int verify_ok(store *s) {
  store_verify_report rep;
  ctxd_error e;
  if (store_verify(s, &rep, &e)) {
    fprintf(stderr, "verify: %s\n", e.msg);
    return 0;
  }
  for (size_t i = 0; i < rep.n_problems; i++)
    fprintf(stderr, "verify: %s\n", rep.problems[i]);
  int ok = rep.ok && rep.n_problems == 0;
  store_verify_free(&rep);
  return ok;
}

#endif
