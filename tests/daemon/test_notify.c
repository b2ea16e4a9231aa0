/* test_notify.c - the sd_notify datagrams: a receiving socket bound to an
 * abstract name and to a path stands in for systemd; environment handling,
 * bad NOTIFY_SOCKET values and the watchdog timer on a libevent loop. */
#include "../check.h"
#include "notify.h"

#include <errno.h>
#include <event2/event.h>
#include <poll.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* Binds a datagram socket to `name` ('@' = abstract), as systemd does. */
static int listen_on(const char *name) {
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  size_t len = strlen(name);
  memcpy(a.sun_path, name, len);
  if (name[0] == '@') a.sun_path[0] = '\0';
  socklen_t alen =
      (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (name[0] == '/'));
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, alen) != 0) {
    perror("bind");
    exit(1);
  }
  return fd;
}

/* One datagram as a string, or "" after timeout_ms. */
static const char *recv_one(int fd, int timeout_ms) {
  static char buf[8192];
  struct pollfd p = {fd, POLLIN, 0};
  buf[0] = '\0';
  if (poll(&p, 1, timeout_ms) != 1) return buf;
  ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
  buf[n > 0 ? n : 0] = '\0';
  return buf;
}

static void test_unset_is_noop(void) {
  notifier *n = (notifier *)1;
  ctxd_error e;
  unsetenv("NOTIFY_SOCKET");
  CHECK_EQ_INT(notify_open(&n, &e), 0);
  CHECK(n == NULL);
  CHECK_EQ_INT(notify_send(n, "READY=1", &e), 0);
  CHECK_EQ_INT(notify_sendf(n, &e, "STATUS=%d", 1), 0);
  CHECK_EQ_INT(notify_watchdog_usec(n), 0);
  CHECK_EQ_INT(notify_watchdog_start(n, NULL, &e), 0);
  notify_close(n);
  setenv("NOTIFY_SOCKET", "", 1);
  CHECK_EQ_INT(notify_open(&n, &e), 0);
  CHECK(n == NULL);
}

static void test_abstract(void) {
  char name[64];
  snprintf(name, sizeof name, "@ctxd-test-notify-%d", (int)getpid());
  int rfd = listen_on(name);
  setenv("NOTIFY_SOCKET", name, 1);
  setenv("WATCHDOG_USEC", "5000000", 1);
  unsetenv("WATCHDOG_PID");
  notifier *n = NULL;
  ctxd_error e;
  CHECK_EQ_INT(notify_open(&n, &e), 0);
  CHECK(n != NULL);
  /* Unset for children, as sd_notify(unset_environment=1) does. */
  CHECK(getenv("NOTIFY_SOCKET") == NULL);
  CHECK(getenv("WATCHDOG_USEC") == NULL);
  CHECK_EQ_INT(notify_watchdog_usec(n), 5000000);
  CHECK_EQ_INT(notify_send(n, "READY=1\nSTATUS=serving on 127.0.0.1:1", &e), 0);
  CHECK_EQ_STR(recv_one(rfd, 2000), "READY=1\nSTATUS=serving on 127.0.0.1:1");
  CHECK_EQ_INT(notify_sendf(n, &e, "STOPPING=1\nSTATUS=draining %u", 10u), 0);
  CHECK_EQ_STR(recv_one(rfd, 2000), "STOPPING=1\nSTATUS=draining 10");
  /* Too long: refused before sending. */
  char *big = malloc(5000);
  memset(big, 'x', 4999);
  big[4999] = '\0';
  CHECK_EQ_INT(notify_send(n, big, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "4999") != NULL);
  free(big);
  /* The receiver is gone: the send fails with a message naming the socket. */
  close(rfd);
  CHECK_EQ_INT(notify_send(n, "STATUS=x", &e), CTXD_EIO);
  CHECK(strstr(e.msg, name) != NULL);
  notify_close(n);
}

static void test_path(void) {
  char dir[] = "/tmp/ctxd-test-notify-XXXXXX", path[128];
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/notify", dir);
  int rfd = listen_on(path);
  setenv("NOTIFY_SOCKET", path, 1);
  setenv("WATCHDOG_USEC", "5000000", 1);
  setenv("WATCHDOG_PID", "1", 1); /* another process's watchdog: not ours */
  notifier *n = NULL;
  ctxd_error e;
  CHECK_EQ_INT(notify_open(&n, &e), 0);
  CHECK_EQ_INT(notify_watchdog_usec(n), 0);
  CHECK_EQ_INT(notify_send(n, "READY=1", &e), 0);
  CHECK_EQ_STR(recv_one(rfd, 2000), "READY=1");
  notify_close(n);
  close(rfd);
  unlink(path);
  rmdir(dir);
}

static void test_bad_values(void) {
  notifier *n = NULL;
  ctxd_error e;
  const char *bad[] = {"relative/sock", "vsock:2:1234", NULL};
  for (int i = 0; bad[i]; i++) {
    setenv("NOTIFY_SOCKET", bad[i], 1);
    CHECK_EQ_INT(notify_open(&n, &e), CTXD_EINVAL);
    CHECK(n == NULL);
    CHECK(strstr(e.msg, bad[i]) != NULL);
    CHECK(getenv("NOTIFY_SOCKET") != NULL); /* left for the operator to see */
  }
  char longp[200];
  memset(longp, 'a', sizeof longp - 1);
  longp[0] = '/';
  longp[sizeof longp - 1] = '\0';
  setenv("NOTIFY_SOCKET", longp, 1);
  CHECK_EQ_INT(notify_open(&n, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "longer") != NULL);
  /* Watchdog values that are not ours or not numbers mean no watchdog. */
  const char *wd[][2] = {{"abc", ""}, {"-5", ""}, {"100x", ""}, {"100", "1x"}};
  setenv("NOTIFY_SOCKET", "@ctxd-test-notify-unbound", 1);
  for (int i = 0; i < 4; i++) {
    setenv("WATCHDOG_USEC", wd[i][0], 1);
    setenv("WATCHDOG_PID", wd[i][1], 1);
    CHECK_EQ_INT(notify_open(&n, &e), 0);
    CHECK_EQ_INT(notify_watchdog_usec(n), 0);
    notify_close(n);
    setenv("NOTIFY_SOCKET", "@ctxd-test-notify-unbound", 1);
  }
  unsetenv("NOTIFY_SOCKET");
}

static void stop_loop(evutil_socket_t fd, short what, void *arg) {
  (void)fd;
  (void)what;
  event_base_loopbreak(arg);
}

/* The receiving end, on the same loop: counts keep-alives as they come, so
 * the socket's queue never fills. */
static int wd_got, wd_other;
static void wd_recv(evutil_socket_t fd, short what, void *arg) {
  (void)what;
  (void)arg;
  const char *m = recv_one(fd, 0);
  if (strcmp(m, "WATCHDOG=1") == 0)
    wd_got++;
  else if (*m)
    wd_other++;
}

static void test_watchdog(void) {
  char name[64], pid[32];
  snprintf(name, sizeof name, "@ctxd-test-notify-wd-%d", (int)getpid());
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  int rfd = listen_on(name);
  setenv("NOTIFY_SOCKET", name, 1);
  setenv("WATCHDOG_USEC", "40000", 1); /* 40 ms: a keep-alive every 20 */
  setenv("WATCHDOG_PID", pid, 1);
  notifier *n = NULL;
  ctxd_error e;
  CHECK_EQ_INT(notify_open(&n, &e), 0);
  CHECK_EQ_INT(notify_watchdog_usec(n), 40000);
  struct event_base *base = event_base_new();
  CHECK_EQ_INT(notify_watchdog_start(n, base, &e), 0);
  struct timeval run = {1, 0};
  struct event *stop = evtimer_new(base, stop_loop, base);
  struct event *rx = event_new(base, rfd, EV_READ | EV_PERSIST, wd_recv, NULL);
  evtimer_add(stop, &run);
  event_add(rx, NULL);
  event_base_dispatch(base);
  /* Sent in the loop's last turn, after the receiver's callback ran. */
  while (recv_one(rfd, 0)[0]) wd_got++;
  /* 1 s at one per 20 ms: 50, fewer when a loaded machine fires late (a
   * persistent timer does not catch up); more would mean a wrong period. */
  CHECK(wd_got >= 10 && wd_got <= 51);
  CHECK_EQ_INT(wd_other, 0);
  event_free(rx);
  /* Without the loop running, nothing more is sent. */
  CHECK_EQ_STR(recv_one(rfd, 60), "");
  event_free(stop);
  notify_close(n); /* before the base, whose timer it frees */
  event_base_free(base);
  close(rfd);
}

int main(void) {
  test_unset_is_noop();
  test_abstract();
  test_path();
  test_bad_values();
  test_watchdog();
  return check_report("notify");
}
