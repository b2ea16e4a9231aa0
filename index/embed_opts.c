/* embed_opts.c - reading an embedder's key=value options (embed_opts.h):
 * one pair per call, with the checks every embedder's text form shares. */
#include "embed_opts.h"

#include <string.h>

void embed_opts_begin(embed_opts_iter *it, const char *kind, const char *s,
                      const char *const *keys, int n_keys,
                      const char *key_list) {
  size_t kl = strlen(kind);
  it->kind = kind;
  it->s = s;
  it->p = s[kl] ? s + kl + 1 : s + kl;
  it->keys = keys;
  it->n_keys = n_keys;
  it->key_list = key_list;
  it->seen = 0;
}

int embed_opts_next(embed_opts_iter *it, int *key, const char **v, size_t *vl,
                    ctxd_error *e) {
  const char *p = it->p;
  if (!*p) return 0;
  const char *comma = strchr(p, ','), *end = comma ? comma : p + strlen(p);
  const char *eq = memchr(p, '=', (size_t)(end - p));
  size_t kl = eq ? (size_t)(eq - p) : (size_t)(end - p);
  int k = -1;
  for (int i = 0; i < it->n_keys; i++)
    if (strlen(it->keys[i]) == kl && memcmp(it->keys[i], p, kl) == 0) k = i;
  if (k < 0)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "%s embedder: unknown key \"%.*s\" (keys: %s)",
                       it->kind, (int)(kl > 64 ? 64 : kl), p, it->key_list);
  if (!eq)
    return ctxd_seterr(e, CTXD_EINVAL, "%s embedder: key %s has no value",
                       it->kind, it->keys[k]);
  if (it->seen & (1u << k))
    return ctxd_seterr(e, CTXD_EINVAL, "%s embedder: key %s given twice",
                       it->kind, it->keys[k]);
  it->seen |= 1u << k;
  *key = k;
  *v = eq + 1;
  *vl = (size_t)(end - *v);
  it->p = comma ? comma + 1 : end;
  if (comma && !*it->p)
    return ctxd_seterr(e, CTXD_EINVAL, "%s embedder: trailing comma in \"%.64s\"",
                       it->kind, it->s);
  return 1;
}
