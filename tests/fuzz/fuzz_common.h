/* fuzz_common.h - helpers the fuzz targets share: an in-memory file whose
 * /proc/self/fd path the parsers that take a path (config files, JSONL
 * corpora) can open, and a check that aborts with a message, so libFuzzer
 * (or replay.c) records the input as a crash. */
#ifndef CTXD_FUZZ_COMMON_H
#define CTXD_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_CHECK(cond, ...)                                         \
  do {                                                                \
    if (!(cond)) {                                                    \
      fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, \
              #cond);                                                 \
      fprintf(stderr, __VA_ARGS__);                                   \
      fputc('\n', stderr);                                            \
      abort();                                                        \
    }                                                                 \
  } while (0)

/* A memfd holding exactly data[0..n); its path goes in path[64]. The fd is
 * created once per name and rewritten on each call. */
static inline int fuzz_memfile(int *fd, const char *name, const uint8_t *data,
                               size_t n, char path[64]) {
  if (*fd < 0 && (*fd = memfd_create(name, MFD_CLOEXEC)) < 0) return -1;
  if (ftruncate(*fd, 0) != 0) return -1;
  size_t off = 0;
  while (off < n) {
    ssize_t w = pwrite(*fd, data + off, n - off, (off_t)off);
    if (w <= 0) return -1;
    off += (size_t)w;
  }
  snprintf(path, 64, "/proc/self/fd/%d", *fd);
  return 0;
}

#endif
