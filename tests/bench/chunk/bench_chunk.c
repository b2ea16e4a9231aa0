/* bench_chunk.c - throughput of chunk_text() with the built-in estimator on
 * a prose file (best of several runs, one thread), plus a check that every
 * chunk boundary of that file and of a non-ASCII file is a UTF-8 character
 * boundary. Prints one tab-separated row for run.sh's table. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "../benchfile.h"
#include "chunk.h"
#include "utf8.h"

/* 1 if every boundary is a character boundary and the chunks tile the text. */
static int boundaries_ok(const char *s, size_t len, const chunk_span *c, size_t n) {
  if (len && (n == 0 || c[0].byte_start != 0 || c[n - 1].byte_end != len))
    return 0;
  for (size_t k = 0; k < n; k++) {
    if (utf8_floor(s, len, c[k].byte_start) != c[k].byte_start ||
        utf8_floor(s, len, c[k].byte_end) != c[k].byte_end)
      return 0;
    if (k + 1 < n && c[k + 1].byte_start != c[k].byte_end)
      return 0;
  }
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s corpus.txt corpus-mixed.txt [max_tokens] [runs]\n", argv[0]);
    return 2;
  }
  chunk_opts o = {argc > 3 ? (uint32_t)atoi(argv[3]) : 512, 0, 0};
  int runs = argc > 4 ? atoi(argv[4]) : 7;
  size_t len, mlen;
  char *text = slurp(argv[1], &len), *mixed = slurp(argv[2], &mlen);
  if (!text || !mixed) {
    fprintf(stderr, "cannot read the corpus files (run build_corpus.mjs)\n");
    return 1;
  }
  if (!utf8_valid(text, len, NULL) || !utf8_valid(mixed, mlen, NULL)) {
    fprintf(stderr, "corpus is not valid UTF-8\n");
    return 1;
  }
  double best = 1e30;
  size_t nchunks = 0;
  int ok = 1;
  for (int r = 0; r < runs; r++) {
    chunk_span *c = NULL;
    size_t n = 0;
    ctxd_error e;
    double t0 = now();
    if (chunk_text(text, len, &o, tok_estimator(), &c, &n, &e)) {
      fprintf(stderr, "chunk_text: %s\n", e.msg);
      return 1;
    }
    double dt = now() - t0;
    if (dt < best)
      best = dt;
    nchunks = n;
    ok &= boundaries_ok(text, len, c, n);
    free(c);
  }
  {
    chunk_span *c = NULL;
    size_t n = 0;
    if (chunk_text(mixed, mlen, &o, tok_estimator(), &c, &n, NULL))
      return 1;
    ok &= boundaries_ok(mixed, mlen, c, n);
    free(c);
  }
  /* Also time utf8_valid: every ingested document goes through it. */
  double vbest = 1e30;
  for (int r = 0; r < runs; r++) {
    double t0 = now();
    volatile int v = utf8_valid(text, len, NULL);
    (void)v;
    double dt = now() - t0;
    if (dt < vbest)
      vbest = dt;
  }
  printf("ctxd chunk_text (C, estimate-v1, %u tokens)\t%.1f\t%zu\t%s\n", o.max_tokens,
         (double)len / best / 1e6, nchunks, ok ? "yes" : "NO");
  printf("ctxd utf8_valid (C, for reference)\t%.1f\t-\t-\n", (double)len / vbest / 1e6);
  free(text);
  free(mixed);
  return ok ? 0 : 1;
}
