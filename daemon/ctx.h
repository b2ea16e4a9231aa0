/* ctx.h - the daemon-wide context that handlers reach through rpc_ctx(). */
#ifndef CTXD_CTX_H
#define CTXD_CTX_H

#include <stdatomic.h>
#include <stdint.h>

#include "../index/coll.h"
#include "../index/store.h"
#include "config.h"

struct writer;
struct jobs;
struct models;
struct rechunk;

typedef struct ctxd_ctx {
  const ctxd_config *cfg;
  store *st;
  coll_set *cs;        /* collections: vector indexes, embedders, search */
  /* The settings of collections created on first use (and of `default`),
   * from the config, checked at start-up (coll_config_check). */
  coll_config coll_defaults;
  /* The language model and the tokenizer in use (models.h): take a
   * reference per request with models_tok() / models_model(). */
  struct models *models;
  struct rechunk *rechunk; /* Admin.Rechunk's background run (rechunk.h) */
  struct writer *wr;   /* group commit for Put; NULL: Puts commit alone */
  struct jobs *jobs;   /* the Corpus job runner (jobs.h) */
  uint64_t start_time; /* CLOCK_REALTIME seconds at start */
  atomic_int serving;  /* 1 while serving; 0 while shutting down (Health) */
} ctxd_ctx;

#endif
