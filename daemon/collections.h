/* collections.h - what the handlers share about collections: the default
 * settings from the config, how a request's collection name is resolved,
 * and metric names.
 *
 * Naming rule of every RPC: an empty collection name means `default`.
 * `default` always exists for reads as well as writes (it is created with
 * the configured defaults whenever it is missing, e.g. after a drop); any
 * other name must exist for reads, deletes and searches (NOT_FOUND) and is
 * created with the defaults by its first Put. */
#ifndef CTXD_COLLECTIONS_H
#define CTXD_COLLECTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "../index/coll.h"
#include "config.h"

/* The config's collection defaults (embed.embedder, index.spec,
 * index.metric, chunk.max_tokens, chunk.overlap_tokens) as a checked
 * coll_config named `default`. Errors: CTXD_EINVAL naming the option. */
int collections_defaults(const ctxd_config *cfg, coll_config *out,
                         ctxd_error *e);

/* Resolve the collection name of a request (`name` of `len` bytes, not
 * necessarily NUL-terminated; empty = `default`) for a call that reads or
 * deletes: `default` is created when missing, any other name must exist.
 * Errors: CTXD_EINVAL (bad name: the message quotes it, shortened and
 * printable), CTXD_ENOTFOUND ("collection \"x\" does not exist"). */
int collections_resolve(coll_set *cs, const char *name, size_t len,
                        uint32_t *cid, coll_config *cfg, ctxd_error *e);

/* 1 when a collection's embedder takes client vectors only ("none:..."). */
int collections_client_vectors_only(const coll_config *c);

/* Copy a client-supplied name into buf (STORE_COLL_NAME_MAX + 1 bytes) for
 * a message or a lookup: a name too long, not UTF-8-clean or holding a NUL
 * is refused with CTXD_EINVAL and a printable rendering of it. */
int collections_name_copy(const char *name, size_t len,
                          char buf[STORE_COLL_NAME_MAX + 1], ctxd_error *e);

#endif
