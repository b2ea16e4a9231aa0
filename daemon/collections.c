/* collections.c - the handlers' shared view of collections: defaults from
 * the config, name checks and resolution (rules in collections.h). */
#include "collections.h"

#include <stdio.h>
#include <string.h>

int collections_client_vectors_only(const coll_config *c) {
  return strncmp(c->embedder, "none", 4) == 0 &&
         (c->embedder[4] == '\0' || c->embedder[4] == ':');
}

int collections_defaults(const ctxd_config *cfg, coll_config *out,
                         ctxd_error *e) {
  char msg[CTXD_ERRMSG_MAX];
  memset(out, 0, sizeof *out);
  snprintf(out->name, sizeof out->name, "%s", COLL_DEFAULT_NAME);
  snprintf(out->embedder, sizeof out->embedder, "%s", cfg->embedder);
  snprintf(out->index_spec, sizeof out->index_spec, "%s", cfg->index_spec);
  out->chunk_max_tokens = cfg->chunk_max_tokens;
  out->chunk_overlap_tokens = cfg->chunk_overlap_tokens;
  if (strlen(cfg->index_spec) >= sizeof out->index_spec)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "index.spec \"%.40s...\" is longer than %zu bytes",
                       cfg->index_spec, sizeof out->index_spec - 1);
  int rc = coll_metric_parse(cfg->index_metric, &out->metric, e);
  if (rc == 0) rc = coll_config_check(out, e);
  if (rc) {
    snprintf(msg, sizeof msg, "%s", e->msg);
    return ctxd_seterr(e, rc,
                       "the collection defaults (embed.embedder \"%s\", "
                       "index.spec \"%s\", index.metric %s) are not usable: "
                       "%s",
                       cfg->embedder, cfg->index_spec, cfg->index_metric, msg);
  }
  return 0;
}

/* Render client bytes for a message: printable ASCII kept, anything else
 * '?', at most 64 bytes then "...". */
static void printable(const char *s, size_t len, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < len && o + 4 < cap && i < 64; i++) {
    unsigned char ch = (unsigned char)s[i];
    out[o++] = ch >= 0x20 && ch < 0x7f && ch != '"' ? (char)ch : '?';
  }
  if (len > 64 && o + 4 < cap) {
    memcpy(out + o, "...", 3);
    o += 3;
  }
  out[o] = '\0';
}

int collections_name_copy(const char *name, size_t len,
                          char buf[STORE_COLL_NAME_MAX + 1], ctxd_error *e) {
  int ok = len >= 1 && len <= STORE_COLL_NAME_MAX;
  for (size_t i = 0; ok && i < len; i++) {
    char ch = name[i];
    ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || ch == '_' || ch == '.' || ch == '-';
  }
  if (!ok) {
    char shown[80];
    printable(name, len, shown, sizeof shown);
    buf[0] = '\0';
    return ctxd_seterr(e, CTXD_EINVAL,
                       "collection name \"%s\" is not 1 to %d characters of "
                       "A-Z a-z 0-9 _ . -",
                       shown, STORE_COLL_NAME_MAX);
  }
  memcpy(buf, name, len);
  buf[len] = '\0';
  return 0;
}

int collections_resolve(coll_set *cs, const char *name, size_t len,
                        uint32_t *cid, coll_config *cfg, ctxd_error *e) {
  char buf[STORE_COLL_NAME_MAX + 1];
  if (len == 0) {
    name = COLL_DEFAULT_NAME;
    len = strlen(COLL_DEFAULT_NAME);
  }
  int rc = collections_name_copy(name, len, buf, e);
  if (rc) return rc;
  int is_default = strcmp(buf, COLL_DEFAULT_NAME) == 0;
  rc = coll_resolve(cs, buf, is_default, cid, cfg, e);
  if (rc == CTXD_ENOTFOUND)
    return ctxd_seterr(e, CTXD_ENOTFOUND, "collection \"%s\" does not exist",
                       buf);
  return rc;
}
