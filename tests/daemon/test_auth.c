/* test_auth.c - the token file parser, the bearer check, the method -> role
 * table, the file permission checks and reload keeping the old tokens. */
#include "../check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../index/err.h"
#include "auth.h"

static char tmpdir[] = "/tmp/ctxd-test-auth-XXXXXX";

#define TOK_R "read-token-0123456789"
#define TOK_W "write-token-0123456789"
#define TOK_A "admin-token-0123456789"

static int parse(const char *text, auth **a, ctxd_error *e) {
  ctxd_clearerr(e);
  return auth_parse(text, strlen(text), "tokens", a, e);
}

static auth_result check(const auth *a, const char *hdr, auth_role *role,
                         const char **name) {
  return auth_check(a, hdr, hdr ? strlen(hdr) : 0, role, name);
}

static void test_parse_and_check(void) {
  auth *a;
  ctxd_error e;
  auth_role role;
  const char *name;
  CHECK_EQ_INT(parse("# ctxd tokens\n"
                     "\n"
                     "   # indented comment\n" TOK_R " read reader\n" TOK_W
                     "\twrite\n" TOK_A "  admin ops@example.com  \r\n",
                     &a, &e),
               0);
  CHECK_EQ_INT(auth_count(a), 3);
  CHECK_EQ_INT(check(a, "Bearer " TOK_R, &role, &name), AUTH_OK);
  CHECK_EQ_INT(role, AUTH_ROLE_READ);
  CHECK_EQ_STR(name, "reader");
  CHECK_EQ_INT(check(a, "bearer " TOK_W, &role, &name), AUTH_OK);
  CHECK_EQ_INT(role, AUTH_ROLE_WRITE);
  CHECK_EQ_STR(name, "line-5"); /* no NAME: the line number */
  CHECK_EQ_INT(check(a, "BEARER  " TOK_A " ", &role, &name), AUTH_OK);
  CHECK_EQ_INT(role, AUTH_ROLE_ADMIN);
  CHECK_EQ_STR(name, "ops@example.com");
  CHECK_EQ_INT(check(a, NULL, &role, &name), AUTH_MISSING);
  CHECK_EQ_INT(check(a, "", &role, &name), AUTH_MISSING);
  CHECK_EQ_INT(check(a, TOK_R, &role, &name), AUTH_MALFORMED);
  CHECK_EQ_INT(check(a, "Basic " TOK_R, &role, &name), AUTH_MALFORMED);
  CHECK_EQ_INT(check(a, "Bearer ", &role, &name), AUTH_MALFORMED);
  CHECK_EQ_INT(check(a, "Bearer a\tb", &role, &name), AUTH_MALFORMED);
  CHECK_EQ_INT(check(a, "Bearer " TOK_R "x", &role, &name), AUTH_UNKNOWN);
  CHECK_EQ_INT(check(a, "Bearer read-token-012345678", &role, &name),
               AUTH_UNKNOWN);
  /* A NUL inside the header value does not cut the token short. */
  CHECK_EQ_INT(auth_check(a, "Bearer " TOK_R "\0zz",
                          sizeof("Bearer " TOK_R "\0zz") - 1, &role, &name),
               AUTH_MALFORMED);
  auth_free(a);

  /* An empty file is valid: no token passes. */
  CHECK_EQ_INT(parse("# nobody\n", &a, &e), 0);
  CHECK_EQ_INT(auth_count(a), 0);
  CHECK_EQ_INT(check(a, "Bearer " TOK_R, &role, &name), AUTH_UNKNOWN);
  auth_free(a);
}

static void test_parse_errors(void) {
  auth *a = NULL;
  ctxd_error e;
  CHECK_EQ_INT(parse(TOK_R " reader\n", &a, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "tokens:1") && strstr(e.msg, "unknown role"));
  CHECK(a == NULL);
  CHECK_EQ_INT(parse("# c\n" TOK_R "\n", &a, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "tokens:2") && strstr(e.msg, "TOKEN ROLE [NAME]"));
  CHECK_EQ_INT(parse(TOK_R " read name extra\n", &a, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "TOKEN ROLE [NAME]") != NULL);
  CHECK_EQ_INT(parse("short read\n", &a, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "16") != NULL);
  CHECK_EQ_INT(parse(TOK_R " read a\n" TOK_R " admin b\n", &a, &e),
               CTXD_EINVAL);
  CHECK(strstr(e.msg, "tokens:2") && strstr(e.msg, "same token as a"));
  CHECK_EQ_INT(parse(TOK_R " read bad/name\n", &a, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "NAME") != NULL);
  CHECK_EQ_INT(parse(TOK_R " Read\n", &a, &e), CTXD_EINVAL);
  CHECK(a == NULL);
}

static void test_roles(void) {
  CHECK_EQ_INT(auth_required_role("/grpc.health.v1.Health/Check"),
               AUTH_ROLE_NONE);
  CHECK_EQ_INT(auth_required_role("/grpc.health.v1.Health/Watch"),
               AUTH_ROLE_NONE);
  CHECK_EQ_INT(auth_required_role("/ctxd.v1.Retrieval/Search"),
               AUTH_ROLE_READ);
  CHECK_EQ_INT(auth_required_role("/ctxd.v1.Retrieval/SelectStream"),
               AUTH_ROLE_READ);
  CHECK_EQ_INT(auth_required_role("/ctxd.v1.Documents/Get"), AUTH_ROLE_READ);
  CHECK_EQ_INT(auth_required_role("/ctxd.v1.Documents/List"),
               AUTH_ROLE_READ);
  CHECK_EQ_INT(auth_required_role("/ctxd.v1.Documents/Chunk"),
               AUTH_ROLE_READ);
  CHECK_EQ_INT(auth_required_role("/ctxd.v1.Documents/Put"),
               AUTH_ROLE_WRITE);
  CHECK_EQ_INT(auth_required_role("/ctxd.v1.Documents/PutStream"),
               AUTH_ROLE_WRITE);
  CHECK_EQ_INT(auth_required_role("/ctxd.v1.Documents/Delete"),
               AUTH_ROLE_WRITE);
  CHECK_EQ_INT(auth_required_role("/ctxd.v1.Documents/Getx"),
               AUTH_ROLE_WRITE);
  CHECK_EQ_INT(auth_required_role("/ctxd.v1.Corpus/Reorder"),
               AUTH_ROLE_WRITE);
  CHECK_EQ_INT(auth_required_role("/ctxd.v1.Admin/Stats"), AUTH_ROLE_ADMIN);
  CHECK_EQ_INT(auth_required_role("/ctxd.v1.Admin/LoadModel"),
               AUTH_ROLE_ADMIN);
  CHECK_EQ_INT(auth_required_role(
                   "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
               AUTH_ROLE_READ);
  CHECK_EQ_INT(auth_required_role("/no.Such/Method"), AUTH_ROLE_READ);
  CHECK_EQ_STR(auth_role_name(AUTH_ROLE_WRITE), "write");
}

static const char *write_tokens(const char *name, const char *text,
                                mode_t mode) {
  static char path[256];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  unlink(path);
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
  chmod(path, mode);
  return path;
}

static void test_files(void) {
  auth *a = NULL;
  ctxd_error e;
  auth_role role;
  const char *name;
  char dir[256];
  const char *p = write_tokens("open", TOK_R " read\n", 0644);
  ctxd_clearerr(&e);
  CHECK_EQ_INT(auth_open(p, &a, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, p) && strstr(e.msg, "0644") && strstr(e.msg, "chmod"));
  p = write_tokens("group", TOK_R " read\n", 0640);
  CHECK_EQ_INT(auth_open(p, &a, &e), CTXD_EINVAL);
  snprintf(dir, sizeof dir, "%s/missing", tmpdir);
  CHECK_EQ_INT(auth_open(dir, &a, &e), CTXD_EIO);
  CHECK(strstr(e.msg, "missing") != NULL);
  snprintf(dir, sizeof dir, "%s/adir", tmpdir);
  mkdir(dir, 0700);
  CHECK_EQ_INT(auth_open(dir, &a, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "not a regular file") != NULL);
  rmdir(dir);

  p = write_tokens("tokens", TOK_R " read r\n", 0600);
  CHECK_EQ_INT(auth_open(p, &a, &e), 0);
  CHECK_EQ_INT(check(a, "Bearer " TOK_R, &role, &name), AUTH_OK);
  /* Reload: a new token comes, the removed one goes. */
  write_tokens("tokens", TOK_W " write w\n", 0600);
  CHECK_EQ_INT(auth_reload(a, &e), 0);
  CHECK_EQ_INT(check(a, "Bearer " TOK_R, &role, &name), AUTH_UNKNOWN);
  CHECK_EQ_INT(check(a, "Bearer " TOK_W, &role, &name), AUTH_OK);
  /* A bad file, or one others may read, keeps the old tokens. */
  write_tokens("tokens", TOK_A " superuser\n", 0600);
  CHECK_EQ_INT(auth_reload(a, &e), CTXD_EINVAL);
  CHECK_EQ_INT(check(a, "Bearer " TOK_W, &role, &name), AUTH_OK);
  write_tokens("tokens", TOK_A " admin\n", 0604);
  CHECK_EQ_INT(auth_reload(a, &e), CTXD_EINVAL);
  CHECK_EQ_INT(check(a, "Bearer " TOK_A, &role, &name), AUTH_UNKNOWN);
  CHECK_EQ_INT(check(a, "Bearer " TOK_W, &role, &name), AUTH_OK);
  CHECK_EQ_STR(name, "w");
  auth_free(a);
  unlink(p);
  snprintf(dir, sizeof dir, "%s/open", tmpdir);
  unlink(dir);
  snprintf(dir, sizeof dir, "%s/group", tmpdir);
  unlink(dir);
}

int main(void) {
  if (!mkdtemp(tmpdir)) return 1;
  test_parse_and_check();
  test_parse_errors();
  test_roles();
  test_files();
  rmdir(tmpdir);
  return check_report("auth");
}
