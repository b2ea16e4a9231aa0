/* embed_model.c - the text form of the `model` embedder (embed.h): what a
 * collection's config records of the model its vectors came from, so that
 * a daemon serving another model refuses to mix vectors. The embedder
 * itself lives in the model runtime (model/lm.h). */
#include "embed.h"
#include "embed_opts.h"

#include <stdio.h>
#include <string.h>

static const char *const pool_names[] = {"model", "mean", "cls", "last"};

int embed_is_model(const char *s) {
  return strncmp(s, "model", 5) == 0 && (s[5] == '\0' || s[5] == ':');
}

static int parse_u32(const char *v, size_t vl, uint32_t max, uint32_t *out) {
  uint64_t u = 0;
  if (vl == 0 || vl > 10) return -1;
  for (size_t i = 0; i < vl; i++) {
    if (v[i] < '0' || v[i] > '9') return -1;
    u = u * 10 + (uint64_t)(v[i] - '0');
  }
  if (u > max) return -1;
  *out = (uint32_t)u;
  return 0;
}

static int name_byte_ok(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-' ||
         ch == ' ';
}

void embed_model_set_name(embed_model_opts *o, const char *name) {
  size_t n = strlen(name);
  if (n > EMBED_MODEL_NAME_MAX) n = EMBED_MODEL_NAME_MAX;
  for (size_t i = 0; i < n; i++)
    o->name[i] = name_byte_ok(name[i]) ? name[i] : '_';
  o->name[n] = '\0';
  if (n == 0) snprintf(o->name, sizeof o->name, "unnamed");
}

int embed_model_parse(const char *s, embed_model_opts *o, ctxd_error *e) {
  static const char *const keys[] = {"name", "dim", "hash", "max_tokens",
                                     "pooling"};
  enum { K_N = 5 };
  embed_model_opts r;
  embed_opts_iter it;
  int k, more;
  const char *v;
  size_t vl;
  memset(&r, 0, sizeof r);
  if (!embed_is_model(s))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "embedder \"%.64s\" is not \"model\" or "
                       "\"model:key=value,...\"",
                       s);
  embed_opts_begin(&it, "model", s, keys, K_N,
                   "max_tokens, pooling; name, dim, hash are filled from "
                   "the loaded model");
  while ((more = embed_opts_next(&it, &k, &v, &vl, e)) == 1) {
    int bad = 0;
    switch (k) {
    case 0:
      bad = vl == 0 || vl > EMBED_MODEL_NAME_MAX;
      for (size_t i = 0; !bad && i < vl; i++) bad = !name_byte_ok(v[i]);
      if (!bad) {
        memcpy(r.name, v, vl);
        r.name[vl] = '\0';
      }
      break;
    case 1:
      bad = parse_u32(v, vl, EMBED_MODEL_DIM_MAX, &r.dim) || r.dim == 0;
      break;
    case 2:
      bad = vl != 8;
      for (size_t i = 0; !bad && i < vl; i++) {
        char ch = v[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0'
                : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                                         : -1;
        if (d < 0) bad = 1;
        else r.hash = r.hash << 4 | (uint32_t)d;
      }
      break;
    case 3:
      bad = parse_u32(v, vl, EMBED_MODEL_MAX_TOKENS_MAX, &r.max_tokens) ||
            r.max_tokens == 0;
      break;
    case 4:
      bad = 1;
      for (int i = 0; i < 4; i++)
        if (strlen(pool_names[i]) == vl && memcmp(pool_names[i], v, vl) == 0) {
          r.pooling = i;
          bad = 0;
        }
      break;
    }
    if (bad)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "model embedder: bad value \"%.*s\" for %s (%s)",
                         (int)(vl > 64 ? 64 : vl), v, keys[k],
                         k == 0   ? "1..64 bytes of A-Z a-z 0-9 . _ - space"
                         : k == 1 ? "1..65536"
                         : k == 2 ? "8 lower-case hex digits"
                         : k == 3 ? "1..32768"
                                  : "model, mean, cls or last");
  }
  if (more < 0) return more;
  unsigned id = it.seen & 7u;
  if (id != 0 && id != 7u)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "model embedder \"%.64s\": name, dim and hash go "
                       "together (a collection records all three)",
                       s);
  r.identified = id == 7u;
  *o = r;
  return 0;
}

void embed_model_format(const embed_model_opts *o, char *buf, size_t cap) {
  snprintf(buf, cap, "model:name=%s,dim=%u,hash=%08x,max_tokens=%u,pooling=%s",
           o->name, o->dim, o->hash, o->max_tokens,
           pool_names[o->pooling >= 0 && o->pooling < 4 ? o->pooling : 0]);
}

uint32_t embed_model_id(const char *name, const char *arch,
                        const char *tokenizer, const uint64_t sizes[7]) {
  uint64_t h = 0xcbf29ce484222325ull;
  const char *strs[3] = {name, arch, tokenizer};
  for (int s = 0; s < 3; s++) {
    /* each string with its NUL, so field boundaries count */
    for (const char *c = strs[s];; c++) {
      h = (h ^ (uint8_t)*c) * 0x100000001b3ull;
      if (!*c) break;
    }
  }
  for (int i = 0; i < 7; i++)
    for (int b = 0; b < 8; b++)
      h = (h ^ (uint8_t)(sizes[i] >> (8 * b))) * 0x100000001b3ull;
  return (uint32_t)h;
}
