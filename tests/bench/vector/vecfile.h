/* vecfile.h - the tiny files of the vector benchmark: float32 rows (".f32")
 * and int64 ground-truth rows (".i64"), each a 16-byte header then the rows.
 *   header: char magic[4] ("F32V" or "I64K"), uint32 cols, uint64 rows
 * Host byte order (little-endian on every machine ctxd runs on).
 * Header-only: each benchmark program is standalone. */
#ifndef CTXD_VECFILE_H
#define CTXD_VECFILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct vecfile_header {
  char magic[4];
  uint32_t cols;
  uint64_t rows;
} vecfile_header;

/* Write rows x cols elements of `size` bytes under `magic`; 0 or -1. */
static inline int vecfile_write(const char *path, const char magic[4],
                                const void *data, uint64_t rows, uint32_t cols,
                                size_t size) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  vecfile_header h;
  memcpy(h.magic, magic, 4);
  h.cols = cols;
  h.rows = rows;
  int ok = fwrite(&h, sizeof h, 1, f) == 1 &&
           fwrite(data, size * cols, rows, f) == rows;
  ok &= fclose(f) == 0;
  return ok ? 0 : -1;
}

/* Read a whole file written by vecfile_write (malloc'd; NULL on a missing
 * file, another magic, or a short file). */
static inline void *vecfile_read(const char *path, const char magic[4],
                                 size_t size, uint64_t *rows, uint32_t *cols) {
  FILE *f = fopen(path, "rb");
  void *data = NULL;
  vecfile_header h;
  if (!f) return NULL;
  if (fread(&h, sizeof h, 1, f) != 1 || memcmp(h.magic, magic, 4) != 0 ||
      h.cols == 0 || h.rows > (UINT64_C(1) << 34) / h.cols)
    goto out;
  data = malloc(h.rows * h.cols * size + 1);
  if (data && fread(data, size * h.cols, h.rows, f) != h.rows) {
    free(data);
    data = NULL;
  }
  *rows = h.rows;
  *cols = h.cols;
out:
  fclose(f);
  return data;
}

#endif
