/* auth.h - bearer-token authentication: the token file (one
 * "TOKEN ROLE [NAME]" per line), the check of a request's `authorization`
 * metadata, and the role each method needs.
 *
 * Roles are ordered: read < write < admin; a token of one role may call
 * every method of the roles below it. Only SHA-256 digests of the tokens
 * are kept, and a lookup compares the digest with every entry in constant
 * time, so neither the memory nor the timing of a lookup gives a token away.
 *
 * Threading: an auth handle is used by one thread at a time (the event
 * loop: checks, and reloads on SIGHUP). */
#ifndef CTXD_AUTH_H
#define CTXD_AUTH_H

#include <stddef.h>

struct ctxd_error;
typedef struct auth auth;

typedef enum auth_role {
  AUTH_ROLE_NONE = 0, /* open method (grpc.health.v1.Health) */
  AUTH_ROLE_READ = 1,
  AUTH_ROLE_WRITE = 2,
  AUTH_ROLE_ADMIN = 3,
} auth_role;

/* Outcome of auth_check. */
typedef enum auth_result {
  AUTH_OK = 0,
  AUTH_MISSING,   /* no authorization metadata */
  AUTH_MALFORMED, /* not "Bearer TOKEN" */
  AUTH_UNKNOWN,   /* a token that is not in the file */
} auth_result;

#define AUTH_TOKEN_MIN 16    /* shortest token accepted in the file */
#define AUTH_TOKEN_MAX 4096  /* longest token (file and header) */
#define AUTH_NAME_MAX 64     /* longest NAME, without the NUL */
#define AUTH_FILE_MAX (1u << 20)

/* Parse the text of a token file (`origin` names it in messages). Blank
 * lines and lines whose first non-blank character is '#' are skipped;
 * every other line is TOKEN ROLE [NAME] separated by blanks: TOKEN of
 * AUTH_TOKEN_MIN..AUTH_TOKEN_MAX visible ASCII characters, ROLE one of
 * read, write, admin, NAME (default "line-N") of letters, digits and
 * ._@- up to AUTH_NAME_MAX. Returns 0, or CTXD_EINVAL naming the line
 * (unknown role, short token, duplicate token, extra field...),
 * CTXD_ENOMEM. *out is freed with auth_free. A file with no token is
 * valid (then every protected method is refused). */
int auth_parse(const char *text, size_t len, const char *origin, auth **out,
               struct ctxd_error *e);

/* Open and parse the token file `path`, after checking that it is a
 * regular file (symbolic links are followed, as Kubernetes Secret volumes
 * need), owned by the daemon's effective user or by root, not readable or
 * writable by group or others (mode & 077 == 0), and at most
 * AUTH_FILE_MAX bytes. The path is copied for auth_reload. Errors:
 * CTXD_EINVAL (with the path and what is wrong: permissions, owner, not a
 * regular file, too large, a bad line), CTXD_EIO (cannot open or read),
 * CTXD_ENOMEM. */
int auth_open(const char *path, auth **out, struct ctxd_error *e);

/* Read the file again (auth_open's checks). On success the new tokens
 * replace the old ones; on any error the old ones stay and the error is
 * returned. */
int auth_reload(auth *a, struct ctxd_error *e);

/* Number of tokens loaded. */
size_t auth_count(const auth *a);

/* Check the value of an `authorization` header (`value` of `len` bytes,
 * NULL/0 when absent): "Bearer TOKEN", the scheme case-insensitive. On
 * AUTH_OK sets *role and *name (the token's NAME, valid until the next
 * auth_reload or auth_free). */
auth_result auth_check(const auth *a, const char *value, size_t len,
                       auth_role *role, const char **name);

/* The role a method (":path", e.g. "/ctxd.v1.Documents/Put") needs:
 * Health none; Retrieval, Documents Get/List/Chunk and server reflection
 * read; the rest of Documents and Corpus write; Admin admin; an unknown
 * path read (a caller learns that a method does not exist only with a
 * valid token). */
auth_role auth_required_role(const char *path);

/* "none", "read", "write", "admin". */
const char *auth_role_name(auth_role r);

/* NULL is a no-op. */
void auth_free(auth *a);

#endif
