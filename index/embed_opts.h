/* embed_opts.h - the key=value list of an embedder's text form
 * ("kind:key=value,key=value"), read one pair at a time; shared by the
 * hash and model embedders' parsers (embed.h). */
#ifndef CTXD_EMBED_OPTS_H
#define CTXD_EMBED_OPTS_H

#include <stddef.h>

#include "err.h"

typedef struct embed_opts_iter {
  const char *kind;            /* "hash", "model": for messages */
  const char *s;               /* the whole text, for messages */
  const char *p;               /* the next pair */
  const char *const *keys;
  int n_keys;                  /* at most 32 */
  const char *key_list;        /* "dim, bigrams, ...": for messages */
  unsigned seen;
} embed_opts_iter;

/* Start reading the pairs after "kind:" of s ("kind" alone has none). */
void embed_opts_begin(embed_opts_iter *it, const char *kind, const char *s,
                      const char *const *keys, int n_keys,
                      const char *key_list);

/* The next pair: 1 and *key (its index in keys), *v and *vl (the value's
 * bytes), 0 at the end. Errors: CTXD_EINVAL (unknown key, no value, key
 * given twice, trailing comma), the message naming it. */
int embed_opts_next(embed_opts_iter *it, int *key, const char **v, size_t *vl,
                    ctxd_error *e);

#endif
