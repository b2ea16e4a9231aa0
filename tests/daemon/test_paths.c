/* test_paths.c - confinement of client-named paths (daemon/paths.h):
 * lexical checks, roots created and resolved, and escapes through "..",
 * symbolic links (to a directory, to a file, dangling, in a chain) and
 * prefix look-alikes, all refused; links that stay inside are followed. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "paths.h"

static char base[256];

static void at(char *out, const char *rel) {
  snprintf(out, PATH_MAX, "%.256s/%.256s", base, rel);
}

/* paths_confine of base/rel under root: the code, and the message must
 * hold `want` when refused. */
static int confine(const char *root, const char *in, char *out,
                   const char *want) {
  ctxd_error e;
  e.msg[0] = '\0';
  int rc = paths_confine("output_dir", "jobs.output_root", root, in, out,
                         PATH_MAX, &e);
  if (rc && want && !strstr(e.msg, want)) {
    fprintf(stderr, "message \"%s\" lacks \"%s\"\n", e.msg, want);
    return 99;
  }
  if (rc && !strstr(e.msg, "output_dir")) {
    fprintf(stderr, "message \"%s\" does not name the field\n", e.msg);
    return 98;
  }
  return rc;
}

static void test_normalize(void) {
  char out[PATH_MAX];
  ctxd_error e;
  CHECK_EQ_INT(paths_normalize("f", "/a//b/./c/", out, sizeof out, &e), 0);
  CHECK_EQ_STR(out, "/a/b/c");
  CHECK_EQ_INT(paths_normalize("f", "///", out, sizeof out, &e), 0);
  CHECK_EQ_STR(out, "/");
  CHECK_EQ_INT(paths_normalize("f", "a/b", out, sizeof out, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "absolute") != NULL);
  CHECK_EQ_INT(paths_normalize("f", "", out, sizeof out, &e), CTXD_EINVAL);
  CHECK_EQ_INT(paths_normalize("f", "/a/../b", out, sizeof out, &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "..") != NULL);
  CHECK_EQ_INT(paths_normalize("f", "/a/b..c/..d", out, sizeof out, &e), 0);
  CHECK_EQ_INT(paths_normalize("f", "/a/\xff", out, sizeof out, &e),
               CTXD_EINVAL);
  char *longp = malloc(PATH_MAX + 10);
  memset(longp, 'x', PATH_MAX + 9);
  longp[0] = '/';
  longp[PATH_MAX + 9] = '\0';
  CHECK_EQ_INT(paths_normalize("f", longp, out, sizeof out, &e), CTXD_EINVAL);
  CHECK_EQ_INT(paths_confine("f", "r", "/", longp, out, sizeof out, &e),
               CTXD_EINVAL);
  free(longp);
}

static void test_root(void) {
  char p[PATH_MAX], out[PATH_MAX], want[PATH_MAX];
  ctxd_error e;
  struct stat st;
  /* the default: parent/sub, created */
  at(p, "data");
  CHECK_EQ_INT(paths_root("jobs.output_root", "", p, "exports", out,
                          sizeof out, &e), 0);
  at(want, "data/exports");
  CHECK_EQ_STR(out, want);
  CHECK(stat(want, &st) == 0 && S_ISDIR(st.st_mode));
  /* a configured one wins, through a link it resolves */
  at(p, "real-root");
  CHECK_EQ_INT(mkdir(p, 0755), 0);
  at(out, "link-root");
  CHECK_EQ_INT(symlink(p, out), 0);
  CHECK_EQ_INT(paths_root("jobs.output_root", out, "/nowhere", "x", want,
                          sizeof want, &e), 0);
  CHECK_EQ_STR(want, p);
  CHECK_EQ_INT(paths_root("r", "/", NULL, NULL, out, sizeof out, &e), 0);
  CHECK_EQ_STR(out, "/");
  /* a file where the directory should be */
  at(p, "afile");
  FILE *f = fopen(p, "w");
  if (f) fclose(f);
  CHECK_EQ_INT(paths_root("jobs.input_root", p, NULL, NULL, out, sizeof out,
                          &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "jobs.input_root") && strstr(e.msg, "not a directory"));
  CHECK_EQ_INT(paths_root("r", "", NULL, NULL, out, sizeof out, &e),
               CTXD_EINVAL);
}

static void test_confine(void) {
  char root[PATH_MAX], p[PATH_MAX], out[PATH_MAX], want[PATH_MAX], t[PATH_MAX];
  ctxd_error e;
  at(p, "root");
  CHECK_EQ_INT(paths_root("r", p, NULL, NULL, root, sizeof root, &e), 0);
  at(p, "outside");
  CHECK_EQ_INT(mkdir(p, 0755), 0);
  at(p, "root/in");
  CHECK_EQ_INT(mkdir(p, 0755), 0);

  /* inside, existing or not */
  at(p, "root/in");
  CHECK_EQ_INT(confine(root, p, out, NULL), 0);
  CHECK_EQ_STR(out, p);
  at(p, "root/new/deeper/");
  CHECK_EQ_INT(confine(root, p, out, NULL), 0);
  at(want, "root/new/deeper");
  CHECK_EQ_STR(out, want);
  CHECK_EQ_INT(confine(root, root, out, NULL), 0); /* the root itself */

  /* outside; a look-alike prefix; ".."; relative */
  at(p, "outside/x");
  CHECK_EQ_INT(confine(root, p, out, "jobs.output_root"), CTXD_EINVAL);
  at(p, "root2/x");
  CHECK_EQ_INT(confine(root, p, out, "not under"), CTXD_EINVAL);
  at(p, "root/in/../../outside");
  CHECK_EQ_INT(confine(root, p, out, ".."), CTXD_EINVAL);
  CHECK_EQ_INT(confine(root, "root/in", out, "absolute"), CTXD_EINVAL);

  /* a link inside the root to a directory outside */
  at(t, "outside");
  at(p, "root/esc");
  CHECK_EQ_INT(symlink(t, p), 0);
  CHECK_EQ_INT(confine(root, p, out, "resolves to"), CTXD_EINVAL);
  at(p, "root/esc/sub/dir");
  CHECK_EQ_INT(confine(root, p, out, t), CTXD_EINVAL);
  /* to a file outside (input_jsonl) */
  at(t, "outside/secret.jsonl");
  FILE *f = fopen(t, "w");
  if (f) fclose(f);
  at(p, "root/secret.jsonl");
  CHECK_EQ_INT(symlink(t, p), 0);
  CHECK_EQ_INT(confine(root, p, out, "resolves to"), CTXD_EINVAL);
  /* a chain: inside -> inside -> outside */
  at(t, "root/esc");
  at(p, "root/chain");
  CHECK_EQ_INT(symlink(t, p), 0);
  at(p, "root/chain/x");
  CHECK_EQ_INT(confine(root, p, out, "not under"), CTXD_EINVAL);
  /* a relative link climbing out */
  at(p, "root/in/up");
  CHECK_EQ_INT(symlink("../../outside", p), 0);
  CHECK_EQ_INT(confine(root, p, out, "not under"), CTXD_EINVAL);
  /* dangling: creating through it would land outside */
  at(t, "outside/not-yet");
  at(p, "root/dangling");
  CHECK_EQ_INT(symlink(t, p), 0);
  CHECK_EQ_INT(confine(root, p, out, "does not resolve"), CTXD_EINVAL);
  at(p, "root/dangling/x");
  CHECK_EQ_INT(confine(root, p, out, "does not resolve"), CTXD_EINVAL);
  /* a loop */
  at(p, "root/loop");
  CHECK_EQ_INT(symlink(p, p), 0);
  CHECK_EQ_INT(confine(root, p, out, NULL), CTXD_EINVAL);

  /* a link that stays inside is followed and the target returned */
  at(t, "root/in");
  at(p, "root/alias");
  CHECK_EQ_INT(symlink(t, p), 0);
  at(p, "root/alias/new");
  CHECK_EQ_INT(confine(root, p, out, NULL), 0);
  at(want, "root/in/new");
  CHECK_EQ_STR(out, want);
  /* "/" allows anywhere, links resolved all the same */
  at(p, "root/esc/y");
  CHECK_EQ_INT(confine("/", p, out, NULL), 0);
  at(want, "outside/y");
  CHECK_EQ_STR(out, want);
  CHECK_EQ_INT(confine("/", "/", out, NULL), 0);
  CHECK_EQ_STR(out, "/");

  /* paths_mkdir through a file */
  at(p, "outside/secret.jsonl/sub");
  CHECK_EQ_INT(paths_mkdir("output_dir", p, 0755, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "not a directory") != NULL);
}

int main(void) {
  char tmpl[] = "/tmp/ctxd-paths-XXXXXX";
  char resolved[PATH_MAX];
  char *d = mkdtemp(tmpl);
  if (!d || !realpath(d, resolved) || strlen(resolved) >= sizeof base)
    return 1;
  strcpy(base, resolved);
  test_normalize();
  test_root();
  test_confine();
  char cmd[sizeof base + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", base);
  return check_report("paths");
}
