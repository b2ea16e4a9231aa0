/* notify.h - the systemd readiness protocol (sd_notify) without libsystemd:
 * datagrams such as "READY=1" to the AF_UNIX socket named by $NOTIFY_SOCKET
 * (a path, or an abstract name written with a leading '@'), and the
 * watchdog keep-alive ("WATCHDOG=1") when $WATCHDOG_USEC asks for it.
 * Without $NOTIFY_SOCKET every call is a no-op, so the daemon runs the same
 * under systemd (Type=notify), in a container or from a shell. */
#ifndef CTXD_NOTIFY_H
#define CTXD_NOTIFY_H

#include <stdint.h>

#include "../index/err.h"

struct event_base;

typedef struct notifier notifier;

/* Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID, then unsets all
 * three (as sd_notify's unset_environment does), so that no process the
 * daemon starts reports in its name. *out = NULL with 0 returned when
 * NOTIFY_SOCKET is unset or empty: the other calls accept NULL and do
 * nothing. Errors: CTXD_EINVAL for a value that is neither an absolute path
 * nor an '@' abstract name, or too long for sun_path (the variables are then
 * left set); CTXD_EIO when no socket can be made. The caller frees *out with
 * notify_close. */
int notify_open(notifier **out, ctxd_error *e);

/* Sends one datagram: `state` is one or more "KEY=VALUE" lines separated by
 * '\n' ("READY=1\nSTATUS=serving"). Does not block (a full socket buffer is
 * an error, not a wait). Errors: CTXD_EINVAL for a state over 4 KiB, CTXD_EIO
 * when the send fails (the message names the socket and errno). n == NULL:
 * returns 0. */
int notify_send(notifier *n, const char *state, ctxd_error *e);

/* notify_send with printf formatting. */
int notify_sendf(notifier *n, ctxd_error *e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The watchdog interval systemd asked for in microseconds, 0 when there is
 * none (WATCHDOG_USEC unset, not a positive number, or WATCHDOG_PID naming
 * another process). 0 for n == NULL. */
uint64_t notify_watchdog_usec(const notifier *n);

/* With a watchdog interval, adds a persistent timer to `base` that sends
 * "WATCHDOG=1" every half interval (as sd_watchdog_enabled(3) advises), so
 * a stuck event loop misses its keep-alive and systemd restarts the daemon.
 * Send failures are logged (once per failure run), not fatal. Does nothing
 * and returns 0 without an interval. Errors: CTXD_ENOMEM when the timer
 * cannot be made. The timer is freed by notify_close, which must come
 * before event_base_free(base). */
int notify_watchdog_start(notifier *n, struct event_base *base, ctxd_error *e);

/* Frees the socket and the watchdog timer. NULL is fine. */
void notify_close(notifier *n);

#endif
