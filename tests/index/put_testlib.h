/* put_testlib.h - one document into a store for the index tests that put
 * documents through the store API (test_coll, test_backup). */
#ifndef CTXD_PUT_TESTLIB_H
#define CTXD_PUT_TESTLIB_H

#include <stdio.h>
#include <string.h>

#include "store.h"

/* Store `text` under `id` with its n chunks `sp`, metadata and, when
 * `vecs` is given, n x dim floats (one vector per chunk); prints why on
 * failure. Returns store_put's code. */
static inline int test_put_doc(store *st, uint32_t cid, const char *id,
                               const char *text, const chunk_span *sp,
                               size_t n, const store_kv *meta, size_t n_meta,
                               const float *vecs, uint32_t dim) {
  ctxd_error e;
  store_put_doc d = {.cid = cid, .id = id, .id_len = strlen(id),
                     .text = text, .text_len = strlen(text), .meta = meta,
                     .n_meta = n_meta, .chunks = sp, .n_chunks = n,
                     .vectors = vecs, .dim = vecs ? dim : 0};
  int rc = store_put(st, &d, 1, NULL, &e);
  if (rc) fprintf(stderr, "store_put %s: %s\n", id, e.msg);
  return rc;
}

#endif
