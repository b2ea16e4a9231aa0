/* ctx.h - the daemon-wide context that handlers reach through rpc_ctx(). */
#ifndef CTXD_CTX_H
#define CTXD_CTX_H

#include <stdatomic.h>
#include <stdint.h>

#include "../index/store.h"
#include "../index/tok.h"
#include "config.h"

struct writer;

typedef struct ctxd_ctx {
  const ctxd_config *cfg;
  store *st;
  uint32_t cid; /* the `default` collection, where every document goes */
  const tok *tk;
  struct writer *wr;   /* group commit for Put; NULL: Puts commit alone */
  uint64_t start_time; /* CLOCK_REALTIME seconds at start */
  atomic_int serving;  /* 1 while serving; 0 while shutting down (Health) */
} ctxd_ctx;

#endif
