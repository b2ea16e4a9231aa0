/* paths.h - paths a client names on the daemon's disk (a job's output_dir
 * and input_jsonl, a backup's target) and the configured directories they
 * must stay inside.
 *
 * Confinement is decided on the resolved path, not on the text: the name
 * is normalised lexically ("..", relative names refused), then the longest
 * part of it that exists is resolved with realpath() (symbolic links
 * followed) and the rest appended; the result must lie under the root,
 * which is itself a realpath. A symbolic link inside a root that points out
 * of it is therefore refused, and one that points elsewhere inside it is
 * fine. What is checked is the file system at the time of the call: the
 * operator's own tree under a root is trusted not to be rearranged between
 * the check and the use (a client cannot create links through ctxd).
 *
 * Every refusal is CTXD_EINVAL (INVALID_ARGUMENT): the request names a
 * place the server will not use, like any other bad field. Messages name
 * the field, the path and the root.
 *
 * Thread safety: no state; every function may be called from any thread. */
#ifndef CTXD_PATHS_H
#define CTXD_PATHS_H

#include <stddef.h>

#include "../index/err.h"

/* `in` as an absolute path without empty or "." components and without a
 * trailing slash ("/" stays "/"), into out (cap bytes). `what` names the
 * field in messages ("output_dir"). Errors (CTXD_EINVAL): empty, not
 * absolute, a ".." component (refused rather than folded: "a/link/.." is
 * not "a" when link is a symbolic link), not valid UTF-8, longer than
 * cap - 64 bytes (room left for file names appended later). */
int paths_normalize(const char *what, const char *in, char *out, size_t cap,
                    ctxd_error *e);

/* A configured root directory, for the operator's options (not for client
 * input): `configured` when non-empty, else `dflt_parent`/`dflt_sub` (e.g.
 * the data directory and "exports"); a relative name is taken from the
 * working directory. The directory is created with its parents when
 * missing (mode 0750), then resolved with realpath() into out (cap bytes).
 * "/" allows everything. `what` names the option in messages
 * ("jobs.output_root"). Errors: CTXD_EINVAL (cannot be created, is not a
 * directory, does not resolve, too long). */
int paths_root(const char *what, const char *configured,
               const char *dflt_parent, const char *dflt_sub, char *out,
               size_t cap, ctxd_error *e);

/* Confine the client's path `in` (field `what`) to `root` (a path
 * paths_root returned; `root_what` names its option in messages, e.g.
 * "jobs.output_root"): paths_normalize, then resolve as described at the
 * top, into out (cap bytes). The result is the resolved path (the one to
 * use from then on); it may name something that does not exist yet.
 * Errors (CTXD_EINVAL, the message names `what`, the path and the root):
 * what paths_normalize refuses; an existing component that cannot be
 * resolved (a dangling symbolic link, a loop, no permission); a resolved
 * path outside root. */
int paths_confine(const char *what, const char *root_what, const char *root,
                  const char *in, char *out, size_t cap, ctxd_error *e);

/* mkdir -p `path` (absolute) with mode `mode` for what it creates.
 * Errors: CTXD_EINVAL naming `what`, the component and the reason (a
 * component exists and is not a directory, no permission, ...). */
int paths_mkdir(const char *what, const char *path, unsigned mode,
                ctxd_error *e);

#endif
