/* log.c - one line per event on stderr: level, UTC timestamp, msg=, then the
 * caller's key=value fields (logfmt). The event name is one word, so msg= is
 * not quoted: `msg=listening addr=...` is what scripts grep for. Lines are
 * written with one write(2) so that lines from different threads never
 * interleave. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int log_level = LOG_LVL_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int log_level_parse(const char *s) {
  for (int i = 0; i < 4; i++)
    if (strcmp(s, level_names[i]) == 0) return i;
  if (strcmp(s, "warning") == 0) return LOG_LVL_WARN;
  return -1;
}

void log_write(int level, const char *fmt, ...) {
  char line[2048];
  char body[1900];
  struct timespec ts;
  struct tm tm;
  va_list ap;

  if (level < 0) level = 0;
  if (level > 3) level = 3;
  va_start(ap, fmt);
  vsnprintf(body, sizeof body, fmt, ap);
  va_end(ap);
  /* One line per event, whatever a value holds (a library's multi-line
   * error text): control characters become spaces. */
  for (char *c = body; *c; c++)
    if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = ' ';

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);

  /* The first word of the body is the event name; the rest are fields. */
  const char *sp = strchr(body, ' ');
  int name_len = sp ? (int)(sp - body) : (int)strlen(body);
  const char *rest = sp ? sp : "";

  int n = snprintf(line, sizeof line,
                   "level=%s ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ "
                   "msg=%.*s%s\n",
                   level_names[level], tm.tm_year + 1900, tm.tm_mon + 1,
                   tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                   ts.tv_nsec / 1000000, name_len, body, rest);
  if (n < 0) return;
  if ((size_t)n >= sizeof line) {
    n = sizeof line - 1;
    line[n - 1] = '\n';
  }
  ssize_t w = write(STDERR_FILENO, line, (size_t)n);
  (void)w;
}
