/* bench_lm.c - prompt processing of the model runtime against plain
 * llama.cpp on the same model in the same run. Prints rows of: what,
 * tokens per second of wall time and per second of process CPU time (best
 * of runs each; with one thread the CPU figure is what a quiet machine would
 * show, whatever the neighbours do), ms of wall time per run.
 *   bench_lm MODEL.gguf [tokens] [threads] [runs]
 * Rows:
 *   llama.cpp llama_decode, flash attention off/on: the baseline, batches of
 *     512 tokens in one sequence, as llama-bench's pp test does;
 *   lm_eval, the same tokens through ctxd's runtime (no outputs);
 *   lm_eval + entropy of the last 32 positions (what XL3M asks per segment);
 *   lm_eval_attn: the tokens as context, then 32 question tokens whose
 *     last-layer attention rows are captured (InfiniRetri's step), softmax
 *     path (flash attention off) and QK path (flash attention on).
 *   bench_lm MODEL tokens threads runs forward
 * instead times one forward pass over the tokens as llama-bench's pp test
 * does (one llama_decode of them all, n_batch 2048, n_ubatch 512, a warm-up
 * pass first), with logits for the last token only (llama-bench) and for
 * every token (what perplexity scoring needs), flash attention off and on:
 * the median of runs, wall and process CPU time, and every run's wall time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llama.h>

#include "model/lm.h"

static double clk(clockid_t id) {
  struct timespec t;
  clock_gettime(id, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Wall and CPU clocks of one timed section; best of each over runs. */
typedef struct timer { double w0, c0, best_w, best_c; } timer;

static void t_init(timer *t) { t->best_w = t->best_c = 1e30; }
static void t_start(timer *t) {
  t->w0 = clk(CLOCK_MONOTONIC);
  t->c0 = clk(CLOCK_PROCESS_CPUTIME_ID);
}
static void t_stop(timer *t) {
  double w = clk(CLOCK_MONOTONIC) - t->w0, c = clk(CLOCK_PROCESS_CPUTIME_ID) - t->c0;
  if (w < t->best_w) t->best_w = w;
  if (c < t->best_c) t->best_c = c;
}

static int n_tok = 2048, threads = 2, runs = 3;
static int32_t *ids;

static void row(const char *what, const timer *t, int tokens) {
  printf("%s\t%.1f\t%.1f\t%.1f\n", what, tokens / t->best_w, tokens / t->best_c, t->best_w * 1e3);
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
  timer tm;
  t_init(&tm);
  for (int r = 0; r < runs; r++) {
    llama_memory_clear(llama_get_memory(c), true);
    t_start(&tm);
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
    t_stop(&tm);
  }
  row(fa ? "llama.cpp llama_decode, flash attention on" : "llama.cpp llama_decode, flash attention off",
      &tm, n_tok);
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
  timer tm;
  t_init(&tm);
  for (int r = 0; r < runs; r++) {
    lm_ctx_clear(c);
    lm_append a = {.seq = 0, .ids = ids, .n = (uint32_t)n_tok,
                   .out_from = entropy ? (uint32_t)n_tok - 32 : (uint32_t)n_tok,
                   .entropy = entropy ? ent : NULL};
    t_start(&tm);
    if (lm_eval(c, &a, 1, &e)) {
      fprintf(stderr, "%s\n", e.msg);
      exit(1);
    }
    t_stop(&tm);
  }
  char what[128];
  snprintf(what, sizeof what, "lm_eval%s, flash attention %s",
           entropy ? " + entropy of the last 32" : "", fa ? "on" : "off");
  row(what, &tm, n_tok);
  lm_ctx_free(c);
}

static void bench_attn(lm_model *m, int fa) {
  lm_ctx *c = mk(m, fa, 1);
  ctxd_error e;
  timer tm;
  t_init(&tm);
  int ctxn = n_tok - 32;
  for (int r = 0; r < runs; r++) {
    lm_ctx_clear(c);
    lm_append a = {.seq = 0, .ids = ids, .n = (uint32_t)ctxn, .out_from = (uint32_t)ctxn};
    t_start(&tm);
    if (lm_eval(c, &a, 1, &e) || lm_eval_attn(c, 0, ids + ctxn, 32, 0, LM_ATTN_SUM_HEADS, &e)) {
      fprintf(stderr, "%s\n", e.msg);
      exit(1);
    }
    t_stop(&tm);
  }
  row(fa ? "lm_eval + lm_eval_attn (32 rows, QK path, flash attention on)"
         : "lm_eval + lm_eval_attn (32 rows, softmax path, flash attention off)",
      &tm, n_tok);
  lm_ctx_free(c);
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One forward pass over n_tok tokens per run in a fresh cache; all_logits
 * asks for every position's logits, else the last token's only. */
static void bench_forward(struct llama_model *m, int fa, int all_logits) {
  struct llama_context_params cp = llama_context_default_params();
  cp.n_ctx = (uint32_t)n_tok + 64;
  cp.n_batch = (uint32_t)(n_tok > 2048 ? n_tok : 2048);
  cp.n_ubatch = 512;
  cp.n_threads = cp.n_threads_batch = threads;
  cp.flash_attn_type = fa ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.no_perf = true;
  struct llama_context *c = llama_init_from_model(m, cp);
  struct llama_batch b = llama_batch_init(n_tok, 0, 1);
  double *w = calloc((size_t)runs, sizeof *w), *cpu = calloc((size_t)runs, sizeof *cpu);
  char list[512] = "";
  size_t at = 0;
  if (!c || !w || !cpu) {
    fprintf(stderr, "bench_lm: no context or memory\n");
    exit(1);
  }
  for (int r = -1; r < runs; r++) { /* r = -1: the warm-up pass */
    llama_memory_clear(llama_get_memory(c), true);
    for (int i = 0; i < n_tok; i++) {
      b.token[i] = ids[i];
      b.pos[i] = i;
      b.n_seq_id[i] = 1;
      b.seq_id[i][0] = 0;
      b.logits[i] = all_logits || i == n_tok - 1;
    }
    b.n_tokens = n_tok;
    double w0 = clk(CLOCK_MONOTONIC), c0 = clk(CLOCK_PROCESS_CPUTIME_ID);
    if (llama_decode(c, b) != 0) {
      fprintf(stderr, "llama_decode failed\n");
      exit(1);
    }
    llama_synchronize(c);
    if (r < 0) continue;
    w[r] = clk(CLOCK_MONOTONIC) - w0;
    cpu[r] = clk(CLOCK_PROCESS_CPUTIME_ID) - c0;
    if (at < sizeof list - 16) at += (size_t)snprintf(list + at, sizeof list - at, "%s%.0f", r ? "," : "", w[r] * 1e3);
  }
  double mw = median(w, runs), mc = median(cpu, runs);
  printf("llama_decode, logits for %s, flash attention %s\t%d\t%.0f\t%.0f\t%.0f\t%.0f\t%s\n",
         all_logits ? "every token" : "the last token", fa ? "on" : "off", threads, mw * 1e3, mc * 1e3,
         n_tok / mw, n_tok / mc, list);
  fflush(stdout);
  free(w);
  free(cpu);
  llama_batch_free(b);
  llama_free(c);
}

static void quiet(enum ggml_log_level level, const char *text, void *ud) {
  (void)ud;
  if (level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static int forward_main(const char *path) {
  llama_log_set(quiet, NULL);
  llama_backend_init();
  struct llama_model_params mp = llama_model_default_params();
  struct llama_model *m = llama_model_load_from_file(path, mp);
  if (!m) {
    fprintf(stderr, "bench_lm: cannot load %s\n", path);
    return 1;
  }
  int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(m));
  ids = malloc((size_t)n_tok * sizeof *ids);
  srand(7);
  for (int i = 0; i < n_tok; i++) ids[i] = rand() % n_vocab;
  fprintf(stderr, "forward pass over %d tokens, %d threads, median of %d runs after a warm-up\n", n_tok,
          threads, runs);
  printf("what\tthreads\twall ms\tcpu ms\ttokens/s\ttokens/cpu-s\twall ms of each run\n");
  for (int fa = 0; fa <= 1; fa++)
    for (int all = 0; all <= 1; all++) bench_forward(m, fa, all);
  llama_model_free(m);
  free(ids);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_lm MODEL.gguf [tokens] [threads] [runs] [forward]\n");
    return 2;
  }
  if (argc > 2) n_tok = atoi(argv[2]);
  if (argc > 3) threads = atoi(argv[3]);
  if (argc > 4) runs = atoi(argv[4]);
  if (runs < 1) runs = 1;
  if (argc > 5 && strcmp(argv[5], "forward") == 0) return forward_main(argv[1]);
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
  printf("what\ttokens/s\ttokens/cpu-s\tms\n");
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
