/* notify.c - sd_notify's wire protocol by hand: one SOCK_DGRAM AF_UNIX
 * socket, one sendto() per state change. libsystemd is not linked because
 * the protocol is a few lines and the daemon must run where systemd is not
 * installed (containers). */
#include "notify.h"

#include <errno.h>
#include <event2/event.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"

/* systemd reads notifications into a buffer of a few KiB; ours are short. */
#define NOTIFY_STATE_MAX 4096

struct notifier {
  int fd;
  struct sockaddr_un addr;
  socklen_t addrlen;
  char name[sizeof(((struct sockaddr_un *)0)->sun_path) + 1]; /* for logs */
  uint64_t watchdog_usec;
  struct event *watchdog;
  int watchdog_failing; /* the last keep-alive failed: log only the first */
};

/* WATCHDOG_USEC applies to us when WATCHDOG_PID is unset or our pid. */
static uint64_t watchdog_from_env(void) {
  const char *us = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
  char *end;
  if (!us || !*us) return 0;
  if (pid && *pid) {
    errno = 0;
    long p = strtol(pid, &end, 10);
    if (errno || *end || p != (long)getpid()) return 0;
  }
  if (*us < '0' || *us > '9') return 0;
  errno = 0;
  unsigned long long v = strtoull(us, &end, 10);
  if (errno || *end) return 0;
  return (uint64_t)v;
}

int notify_open(notifier **out, ctxd_error *e) {
  notifier *n = NULL;
  int rc;
  const char *path = getenv("NOTIFY_SOCKET");
  *out = NULL;
  if (!path || !*path) return 0;
  size_t len = strlen(path);
  if (path[0] != '/' && path[0] != '@') {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "NOTIFY_SOCKET=\"%s\": not an absolute path or an "
                     "'@' abstract socket name (only AF_UNIX is supported)",
                     path);
    goto fail;
  }
  /* A path needs its NUL inside sun_path; an abstract name does not. */
  if (len + (path[0] == '/') > sizeof n->addr.sun_path) {
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "NOTIFY_SOCKET: %zu bytes, longer than a socket address "
                     "(%zu)",
                     len, sizeof n->addr.sun_path);
    goto fail;
  }
  n = calloc(1, sizeof *n);
  if (!n) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "notify: out of memory");
    goto fail;
  }
  n->addr.sun_family = AF_UNIX;
  memcpy(n->addr.sun_path, path, len);
  if (path[0] == '@') n->addr.sun_path[0] = '\0';
  n->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                           (path[0] == '/'));
  memcpy(n->name, path, len + 1);
  n->watchdog_usec = watchdog_from_env();
  n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (n->fd < 0) {
    rc = ctxd_seterr(e, CTXD_EIO, "notify: socket(AF_UNIX, SOCK_DGRAM): %s",
                     strerror(errno));
    goto fail;
  }
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");
  unsetenv("WATCHDOG_PID");
  *out = n;
  return 0;

fail:
  free(n);
  return rc;
}

int notify_send(notifier *n, const char *state, ctxd_error *e) {
  if (!n) return 0;
  size_t len = strlen(state);
  if (len > NOTIFY_STATE_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "notify: state of %zu bytes (max %d)",
                       len, NOTIFY_STATE_MAX);
  ssize_t w = sendto(n->fd, state, len, MSG_NOSIGNAL,
                     (const struct sockaddr *)&n->addr, n->addrlen);
  if (w < 0)
    return ctxd_seterr(e, CTXD_EIO, "notify: send to NOTIFY_SOCKET=%s: %s",
                       n->name, strerror(errno));
  return 0;
}

int notify_sendf(notifier *n, ctxd_error *e, const char *fmt, ...) {
  char buf[NOTIFY_STATE_MAX + 2];
  va_list ap;
  if (!n) return 0;
  va_start(ap, fmt);
  int len = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (len < 0 || (size_t)len > NOTIFY_STATE_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "notify: state over %d bytes",
                       NOTIFY_STATE_MAX);
  return notify_send(n, buf, e);
}

uint64_t notify_watchdog_usec(const notifier *n) {
  return n ? n->watchdog_usec : 0;
}

static void watchdog_tick(evutil_socket_t fd, short what, void *arg) {
  notifier *n = arg;
  ctxd_error e;
  (void)fd;
  (void)what;
  if (notify_send(n, "WATCHDOG=1", &e) != 0) {
    if (!n->watchdog_failing) LOG_WARN("watchdog-send-failed err=\"%s\"", e.msg);
    n->watchdog_failing = 1;
  } else {
    n->watchdog_failing = 0;
  }
}

int notify_watchdog_start(notifier *n, struct event_base *base,
                          ctxd_error *e) {
  if (!n || !n->watchdog_usec || n->watchdog) return 0;
  uint64_t half = n->watchdog_usec / 2;
  struct timeval tv = {(time_t)(half / 1000000), (suseconds_t)(half % 1000000)};
  n->watchdog = event_new(base, -1, EV_PERSIST, watchdog_tick, n);
  if (!n->watchdog || event_add(n->watchdog, &tv) != 0) {
    if (n->watchdog) event_free(n->watchdog);
    n->watchdog = NULL;
    return ctxd_seterr(e, CTXD_ENOMEM, "notify: cannot add the watchdog timer");
  }
  return 0;
}

void notify_close(notifier *n) {
  if (!n) return;
  if (n->watchdog) event_free(n->watchdog);
  close(n->fd);
  free(n);
}
