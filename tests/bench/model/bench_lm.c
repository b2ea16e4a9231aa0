/* bench_lm.c - prompt processing of the model runtime against plain
 * llama.cpp on the same model in the same run. Prints rows of: what,
 * tokens/s (best of runs), ms per run.
 *   bench_lm MODEL.gguf [tokens] [threads] [runs]
 * Rows:
 *   llama.cpp llama_decode, flash attention off/on: the baseline, batches of
 *     512 tokens in one sequence, as llama-bench's pp test does;
 *   lm_eval, the same tokens through ctxd's runtime (no outputs);
 *   lm_eval + entropy of the last 32 positions (what XL3M asks per segment);
 *   lm_eval_attn: the tokens as context, then 32 question tokens whose
 *     last-layer attention rows are captured (InfiniRetri's step), softmax
 *     path (flash attention off) and QK path (flash attention on). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llama.h>

#include "model/lm.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int n_tok = 2048, threads = 2, runs = 3;
static int32_t *ids;

static void row(const char *what, double best, int tokens) {
  printf("%s\t%.1f\t%.1f\n", what, tokens / best, best * 1e3);
  fflush(stdout);
}

/* Plain llama.cpp: a context of its own, batches of 512. */
static void bench_llama(const char *path, int fa) {
  struct llama_model_params mp = llama_model_default_params();
  struct llama_model *m = llama_model_load_from_file(path, mp);
  struct llama_context_params cp = llama_context_default_params();
  cp.n_ctx = (uint32_t)n_tok + 64;
  cp.n_batch = cp.n_ubatch = 512;
  cp.n_threads = cp.n_threads_batch = threads;
  cp.flash_attn_type = fa ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.no_perf = true;
  struct llama_context *c = llama_init_from_model(m, cp);
  struct llama_batch b = llama_batch_init(512, 0, 1);
  double best = 1e30;
  for (int r = 0; r < runs; r++) {
    llama_memory_clear(llama_get_memory(c), true);
    double t0 = now();
    for (int at = 0; at < n_tok; at += 512) {
      int n = n_tok - at < 512 ? n_tok - at : 512;
      for (int i = 0; i < n; i++) {
        b.token[i] = ids[at + i];
        b.pos[i] = at + i;
        b.n_seq_id[i] = 1;
        b.seq_id[i][0] = 0;
        b.logits[i] = 0;
      }
      b.n_tokens = n;
      if (llama_decode(c, b) != 0) {
        fprintf(stderr, "llama_decode failed\n");
        exit(1);
      }
    }
    double s = now() - t0;
    if (s < best) best = s;
  }
  row(fa ? "llama.cpp llama_decode, flash attention on" : "llama.cpp llama_decode, flash attention off",
      best, n_tok);
  llama_batch_free(b);
  llama_free(c);
  llama_model_free(m);
}

static lm_ctx *mk(lm_model *m, int fa, int attn) {
  lm_ctx_opts o;
  lm_ctx_defaults(&o);
  o.n_ctx = (uint32_t)n_tok + 64;
  o.n_batch = 512;
  o.n_threads = threads;
  o.flash_attn = fa;
  o.attn = attn;
  lm_ctx *c;
  ctxd_error e;
  if (lm_ctx_create(m, &o, &c, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    exit(1);
  }
  return c;
}

static void bench_lm(lm_model *m, int fa, int entropy) {
  lm_ctx *c = mk(m, fa, 0);
  float ent[32];
  ctxd_error e;
  double best = 1e30;
  for (int r = 0; r < runs; r++) {
    lm_ctx_clear(c);
    lm_append a = {.seq = 0, .ids = ids, .n = (uint32_t)n_tok,
                   .out_from = entropy ? (uint32_t)n_tok - 32 : (uint32_t)n_tok,
                   .entropy = entropy ? ent : NULL};
    double t0 = now();
    if (lm_eval(c, &a, 1, &e)) {
      fprintf(stderr, "%s\n", e.msg);
      exit(1);
    }
    double s = now() - t0;
    if (s < best) best = s;
  }
  char what[128];
  snprintf(what, sizeof what, "lm_eval%s, flash attention %s",
           entropy ? " + entropy of the last 32" : "", fa ? "on" : "off");
  row(what, best, n_tok);
  lm_ctx_free(c);
}

static void bench_attn(lm_model *m, int fa) {
  lm_ctx *c = mk(m, fa, 1);
  ctxd_error e;
  double best = 1e30;
  int ctxn = n_tok - 32;
  for (int r = 0; r < runs; r++) {
    lm_ctx_clear(c);
    lm_append a = {.seq = 0, .ids = ids, .n = (uint32_t)ctxn, .out_from = (uint32_t)ctxn};
    double t0 = now();
    if (lm_eval(c, &a, 1, &e) || lm_eval_attn(c, 0, ids + ctxn, 32, 0, LM_ATTN_SUM_HEADS, &e)) {
      fprintf(stderr, "%s\n", e.msg);
      exit(1);
    }
    double s = now() - t0;
    if (s < best) best = s;
  }
  row(fa ? "lm_eval + lm_eval_attn (32 rows, QK path, flash attention on)"
         : "lm_eval + lm_eval_attn (32 rows, softmax path, flash attention off)",
      best, n_tok);
  lm_ctx_free(c);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_lm MODEL.gguf [tokens] [threads] [runs]\n");
    return 2;
  }
  if (argc > 2) n_tok = atoi(argv[2]);
  if (argc > 3) threads = atoi(argv[3]);
  if (argc > 4) runs = atoi(argv[4]);
  lm_model *m;
  ctxd_error e;
  if (lm_model_load(argv[1], NULL, &m, &e)) {
    fprintf(stderr, "%s\n", e.msg);
    return 1;
  }
  lm_info in;
  lm_model_info(m, &in);
  ids = malloc((size_t)n_tok * sizeof *ids);
  srand(7);
  for (int i = 0; i < n_tok; i++) ids[i] = rand() % (int)in.n_vocab;
  fprintf(stderr, "model %s (%s): %u layers, width %u, %u heads, %u kv heads, vocab %u, %.0fM params; "
          "%d tokens, %d threads, best of %d\n", in.name, in.arch, in.n_layer, in.n_embd, in.n_head,
          in.n_head_kv, in.n_vocab, in.n_params / 1e6, n_tok, threads, runs);
  printf("what\ttokens/s\tms\n");
  for (int fa = 0; fa <= 1; fa++) {
    bench_llama(argv[1], fa);
    bench_lm(m, fa, 0);
    bench_lm(m, fa, 1);
    bench_attn(m, fa);
  }
  lm_model_free(m);
  free(ids);
  return 0;
}
