/* benchfile.h - what the C benchmarks share: reading a whole input file and
 * a monotonic clock. Header-only: each benchmark is one standalone program. */
#ifndef CTXD_BENCHFILE_H
#define CTXD_BENCHFILE_H

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* The whole file, malloc'd (NUL-terminated), *len bytes; NULL on failure. */
static inline char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long n;
  if (!f || fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 ||
      fseek(f, 0, SEEK_SET))
    goto out;
  buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
    free(buf);
    buf = NULL;
  }
  if (buf) buf[n] = '\0';
  *len = (size_t)n;
out:
  if (f) fclose(f);
  return buf;
}

/* Seconds on CLOCK_MONOTONIC. */
static inline double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#endif
