/* bench_tokenize.c - ctxd's exact tokenizer (lm_tokenize over a vocabulary
 * GGUF, and the tok count the chunker uses; also llama.cpp alone, without
 * the piece cache) on the benchmark prose. Each run loads the vocabulary
 * afresh, so the piece cache starts empty. Prints
 * rows of: tokenizer, tokens per CPU second, MB per CPU second (best of
 * runs, one thread), tokens.
 * The input is cut into pieces of PIECE bytes at newlines, as bench_js.mjs
 * does, so both sides encode the same strings.
 *   bench_tokenize VOCAB.gguf corpus.txt [runs] [piece] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model/lm.h"

/* CPU time of this thread: the work is single-threaded, and on a shared
 * machine wall time mostly measures the neighbours. */
static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: bench_tokenize VOCAB.gguf corpus.txt [runs] [piece]\n");
    return 2;
  }
  int runs = argc > 3 ? atoi(argv[3]) : 5;
  size_t piece = argc > 4 ? (size_t)atol(argv[4]) : 65536;
  FILE *f = fopen(argv[2], "rb");
  if (!f) {
    perror(argv[2]);
    return 1;
  }
  fseek(f, 0, SEEK_END);
  size_t n = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  char *text = malloc(n);
  if (!text || fread(text, 1, n, f) != n) return 1;
  fclose(f);
  /* piece boundaries: at most `piece` bytes, ending after a newline */
  size_t *cut = malloc((n / 16 + 2) * sizeof *cut), np = 0;
  for (size_t at = 0; at < n;) {
    size_t end = at + piece < n ? at + piece : n;
    if (end < n) {
      const char *nl = memrchr(text + at, '\n', end - at);
      if (nl && (size_t)(nl - text) > at) end = (size_t)(nl - text) + 1;
    }
    cut[np++] = end;
    at = end;
  }
  lm_model *m;
  lm_model_opts mo;
  ctxd_error e;
  lm_model_defaults(&mo);
  mo.vocab_only = 1;
  lm_info in;
  lm_tokens t = {0};
  static const struct { const char *what; unsigned flags; int count; } modes[] = {
      {"lm_tokenize (ids + byte offsets)", 0, 0},
      {"lm_tokenize (ids only)", LM_TOK_NO_OFFSETS, 0},
      {"tok count (chunker)", 0, 1},
      {"lm_tokenize (ids only, llama.cpp without the piece cache)", LM_TOK_NO_OFFSETS | LM_TOK_NO_CACHE, 0},
  };
  for (size_t k = 0; k < sizeof modes / sizeof *modes; k++) {
    double best = 1e30;
    size_t tokens = 0;
    for (int r = 0; r < runs; r++) {
      if (lm_model_load(argv[1], &mo, &m, &e)) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
      }
      lm_model_info(m, &in);
      const tok *tk = lm_model_tok(m);
      double t0 = now();
      size_t total = 0, at = 0;
      for (size_t i = 0; i < np; i++) {
        if (modes[k].count) {
          total += tok_count(tk, text + at, cut[i] - at);
        } else {
          if (lm_tokenize(m, text + at, cut[i] - at, modes[k].flags, &t, &e)) {
            fprintf(stderr, "%s\n", e.msg);
            return 1;
          }
          total += t.n;
        }
        at = cut[i];
      }
      double s = now() - t0;
      if (s < best) best = s;
      tokens = total;
      lm_model_free(m);
    }
    printf("ctxd %s, %s\t%.0f\t%.2f\t%zu\n", in.tokenizer, modes[k].what, (double)tokens / best,
           (double)n / best / 1e6, tokens);
  }
  lm_tokens_free(&t);
  free(cut);
  free(text);
  return 0;
}
