/* ppl_lm.c - perplexity of a GGUF model through ctxd's runtime (lm_eval) on
 * a file of uint16 token ids (index/model/train/data.py writes heldout.u16).
 * The file is cut into non-overlapping windows; in each window every token
 * after the first is scored given the tokens before it in that window.
 *   ppl_lm MODEL.gguf TOKENS.u16 [window=2048] [max_windows=0 (all)] [threads=0]
 * Prints windows, scored tokens, mean negative log-likelihood (nats) and
 * perplexity. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/lm.h"

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: ppl_lm MODEL.gguf TOKENS.u16 [window] [max_windows] [threads]\n");
    return 2;
  }
  uint32_t win = argc > 3 ? (uint32_t)atoi(argv[3]) : 2048;
  long max_win = argc > 4 ? atol(argv[4]) : 0;
  int threads = argc > 5 ? atoi(argv[5]) : 0;
  FILE *f = fopen(argv[2], "rb");
  if (!f || win < 2 || win > 65536) {
    fprintf(stderr, "ppl_lm: cannot read %s or bad window\n", argv[2]);
    return 1;
  }
  fseek(f, 0, SEEK_END);
  size_t n = (size_t)ftell(f) / 2;
  fseek(f, 0, SEEK_SET);
  uint16_t *toks = malloc(2 * n + 2);
  int32_t *ids = malloc(sizeof(int32_t) * win);
  float *lp = malloc(sizeof(float) * win);
  if (!toks || !ids || !lp || fread(toks, 2, n, f) != n) {
    fprintf(stderr, "ppl_lm: read failed\n");
    return 1;
  }
  fclose(f);
  ctxd_error e;
  lm_model *m = NULL;
  if (lm_model_load(argv[1], NULL, &m, &e)) {
    fprintf(stderr, "ppl_lm: %s\n", e.msg);
    return 1;
  }
  lm_ctx_opts o;
  lm_ctx_defaults(&o);
  o.n_ctx = win;
  o.n_batch = win < 2048 ? win : 2048;
  o.n_threads = threads;
  lm_ctx *c = NULL;
  if (lm_ctx_create(m, &o, &c, &e)) {
    fprintf(stderr, "ppl_lm: %s\n", e.msg);
    return 1;
  }
  double nll = 0;
  size_t scored = 0;
  long w = 0;
  for (size_t at = 0; at + win <= n && (!max_win || w < max_win); at += win, w++) {
    for (uint32_t i = 0; i < win; i++) ids[i] = toks[at + i];
    lm_ctx_clear(c);
    /* row r scores ids[r + 1] given ids[0..r] */
    lm_append req = {.seq = 0, .ids = ids, .n = win, .out_from = 0, .last_target = -1, .logprob = lp};
    if (lm_eval(c, &req, 1, &e)) {
      fprintf(stderr, "ppl_lm: %s\n", e.msg);
      return 1;
    }
    for (uint32_t i = 0; i + 1 < win; i++) nll -= lp[i];
    scored += win - 1;
  }
  printf("windows %ld of %u tokens, scored %zu, nll %.4f nats, perplexity %.2f\n", w, win, scored,
         nll / (double)scored, exp(nll / (double)scored));
  lm_ctx_free(c);
  lm_model_free(m);
  free(toks);
  free(ids);
  free(lp);
  return 0;
}
