/* paths.c - client-named paths confined to configured roots (paths.h):
 * lexical normalisation, then realpath() of the longest existing prefix, so
 * that neither ".." nor a symbolic link leads out of a root. */
#include "paths.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../index/utf8.h"

int paths_normalize(const char *what, const char *in, char *out, size_t cap,
                    ctxd_error *e) {
  size_t len = strlen(in), o = 0;
  if (len == 0) return ctxd_seterr(e, CTXD_EINVAL, "%s is required", what);
  if (in[0] != '/')
    return ctxd_seterr(e, CTXD_EINVAL,
                       "%s must be an absolute path on the server (got "
                       "\"%.200s\")",
                       what, in);
  if (cap < 128 || len >= cap - 64)
    return ctxd_seterr(e, CTXD_EINVAL, "%s is longer than %zu bytes", what,
                       cap < 128 ? 0 : cap - 64);
  if (!utf8_valid(in, len, NULL))
    return ctxd_seterr(e, CTXD_EINVAL, "%s is not valid UTF-8", what);
  for (const char *p = in; *p;) {
    while (*p == '/') p++;
    const char *s = p;
    while (*p && *p != '/') p++;
    size_t n = (size_t)(p - s);
    if (n == 0 || (n == 1 && s[0] == '.')) continue;
    if (n == 2 && s[0] == '.' && s[1] == '.')
      return ctxd_seterr(e, CTXD_EINVAL,
                         "%s must not contain \"..\" (got \"%.200s\")", what,
                         in);
    out[o++] = '/';
    memcpy(out + o, s, n);
    o += n;
  }
  if (o == 0) out[o++] = '/';
  out[o] = '\0';
  return 0;
}

int paths_mkdir(const char *what, const char *path, unsigned mode,
                ctxd_error *e) {
  char buf[PATH_MAX];
  struct stat st;
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
    return ctxd_seterr(e, CTXD_EINVAL, "%s is longer than %d bytes", what,
                       PATH_MAX - 1);
  for (char *p = buf + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char c = *p;
    *p = '\0';
    if (mkdir(buf, (mode_t)mode) != 0 && errno != EEXIST)
      return ctxd_seterr(e, CTXD_EINVAL, "cannot create %s %s: %s", what, buf,
                         strerror(errno));
    if (stat(buf, &st) != 0 || !S_ISDIR(st.st_mode))
      return ctxd_seterr(e, CTXD_EINVAL,
                         "%s: %s exists and is not a directory", what, buf);
    if (!c) break;
    *p = c;
  }
  return 0;
}

int paths_root(const char *what, const char *configured,
               const char *dflt_parent, const char *dflt_sub, char *out,
               size_t cap, ctxd_error *e) {
  char dir[PATH_MAX], res[PATH_MAX];
  int n;
  if (configured && *configured)
    n = snprintf(dir, sizeof dir, "%s", configured);
  else if (dflt_parent && *dflt_parent && dflt_sub)
    n = snprintf(dir, sizeof dir, "%s/%s", dflt_parent, dflt_sub);
  else
    return ctxd_seterr(e, CTXD_EINVAL, "%s is not set", what);
  if (n < 0 || (size_t)n >= sizeof dir)
    return ctxd_seterr(e, CTXD_EINVAL, "%s is longer than %zu bytes", what,
                       sizeof dir - 1);
  int rc = paths_mkdir(what, dir, 0750, e);
  if (rc) return rc;
  if (!realpath(dir, res))
    return ctxd_seterr(e, CTXD_EINVAL, "%s %s: %s", what, dir,
                       strerror(errno));
  if (strlen(res) >= cap)
    return ctxd_seterr(e, CTXD_EINVAL, "%s resolves to a path longer than "
                       "%zu bytes", what, cap - 1);
  memcpy(out, res, strlen(res) + 1);
  return 0;
}

int paths_confine(const char *what, const char *root_what, const char *root,
                  const char *in, char *out, size_t cap, ctxd_error *e) {
  char norm[PATH_MAX], buf[PATH_MAX], res[PATH_MAX];
  struct stat st;
  int rc = paths_normalize(what, in, norm, sizeof norm, e);
  if (rc) return rc;
  /* The longest prefix that exists, resolved: strip components until
   * realpath() succeeds ("/" always does). An entry that exists but does
   * not resolve (a dangling link: creating through it would write wherever
   * it points) is refused, as is any error other than "missing". */
  size_t cut = strlen(norm);
  for (;;) {
    memcpy(buf, norm, cut);
    buf[cut ? cut : 1] = '\0';
    if (!cut) buf[0] = '/';
    if (realpath(buf, res)) break;
    int err = errno;
    if (err != ENOENT && err != ENOTDIR)
      return ctxd_seterr(e, CTXD_EINVAL, "%s %.200s: cannot resolve %.200s: %s",
                         what, norm, buf, strerror(err));
    if (lstat(buf, &st) == 0)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "%s %.200s: %.200s is %s that does not resolve", what,
                         norm, buf,
                         S_ISLNK(st.st_mode) ? "a symbolic link" : "an entry");
    while (cut > 0 && norm[cut - 1] != '/') cut--;
    if (cut > 0) cut--; /* the slash before the stripped component */
  }
  const char *rest = norm + cut; /* "" or "/name/..." */
  size_t rl = strlen(res), tl = strlen(rest);
  if (rl == 1 && tl) rl = 0; /* "/" + "/x" is "/x" */
  if (cap < 128 || rl + tl + 64 >= cap)
    return ctxd_seterr(e, CTXD_EINVAL, "%s %.200s resolves to a path longer "
                       "than %zu bytes", what, norm, cap < 128 ? 0 : cap - 64);
  memcpy(out, res, rl);
  memcpy(out + rl, rest, tl + 1);

  size_t n = strlen(root);
  if ((n == 1 && root[0] == '/') ||
      (strncmp(out, root, n) == 0 && (out[n] == '/' || out[n] == '\0')))
    return 0;
  if (strcmp(out, norm) == 0)
    return ctxd_seterr(e, CTXD_EINVAL, "%s %.200s is not under the server's "
                       "%s (%s)", what, norm, root_what, root);
  return ctxd_seterr(e, CTXD_EINVAL,
                     "%s %.200s resolves to %.200s, which is not under the "
                     "server's %s (%s)",
                     what, norm, out, root_what, root);
}
