/* bench_select.c - key-context selection on a model: the wall time of
 * select_run next to plain llama.cpp decoding exactly the tokens the method
 * fed the model (select_stats.model_tokens) in the same shape of calls, on
 * the same model in the same run; or the peak resident memory of one run.
 *   bench_select MODEL.gguf METHOD TOKENS [threads] [runs]   -> throughput
 *   bench_select MODEL.gguf METHOD TOKENS rss [threads]      -> memory
 * METHOD is xl3m or infiniretri (or bm25); TOKENS the input's length in
 * the model's tokens (generated prose with a needle in the middle).
 * Options from the environment: WINDOW, TOPK, CACHE, SEG, BATCH, BUDGET.
 *
 * Times are the best of the runs, wall clock and process CPU time: with
 * one thread the CPU ratio is what a quiet machine shows, whatever the
 * neighbours of a shared machine do to the wall clock.
 * The baseline replays the method's calls:
 *   xl3m: per lm_eval call, xl3m_batch sequences of the mean segment +
 *     question length in one llama_decode (KV cleared first), logits on the
 *     last question-length positions of each (what XL3M asks for);
 *   infiniretri: per window, the mean number of tokens the method decoded
 *     per step appended after a kept prefix, so that the sequence ends at
 *     the longest length the method held, in batches of 512, no logits.
 * The baseline feeds the input's own tokens (in order, cycling). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <llama.h>

#include "model/lm.h"
#include "select.h"

static double clk(clockid_t id) {
  struct timespec t;
  clock_gettime(id, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static double now(void) { return clk(CLOCK_MONOTONIC); }
static double cpu(void) { return clk(CLOCK_PROCESS_CPUTIME_ID); }

static long rss_peak_kb(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

static uint32_t env_u32(const char *k, uint32_t def) {
  const char *v = getenv(k);
  return v && *v ? (uint32_t)strtoul(v, NULL, 10) : def;
}

static const char *const words[] = {
    "river", "stone", "market", "winter", "garden", "letter", "engine", "window", "silver",
    "forest", "village", "harbor", "morning", "painter", "orchard", "station", "captain",
    "blanket", "journey", "kitchen", "mountain", "lantern", "meadow", "teacher", "bridge",
    "the", "a", "of", "and", "to", "in", "was", "with", "near", "under", "every", "old",
    "quiet", "bright", "slow", "green", "early", "walked", "carried", "opened", "found"};

static const char needle[] = "The secret code of the blue lighthouse is 7421. ";
static const char question[] = "What is the secret code of the blue lighthouse?";

/* Prose of about `bytes` bytes, the needle in the middle. */
static char *prose(size_t bytes, size_t *len) {
  char *s = malloc(bytes + 256);
  size_t n = 0;
  unsigned seed = 1;
  int put_needle = 0;
  while (n < bytes) {
    if (!put_needle && n >= bytes / 2) {
      memcpy(s + n, needle, sizeof needle - 1);
      n += sizeof needle - 1;
      put_needle = 1;
    }
    int nw = 6 + (int)((seed = seed * 1103515245u + 12345u) >> 16) % 10;
    for (int w = 0; w < nw; w++) {
      const char *x = words[((seed = seed * 1103515245u + 12345u) >> 16) %
                            (sizeof words / sizeof *words)];
      size_t l = strlen(x);
      if (w) s[n++] = ' ';
      memcpy(s + n, x, l);
      if (w == 0) s[n] = (char)(s[n] - 32);
      n += l;
    }
    s[n++] = '.';
    s[n++] = ' ';
  }
  *len = n;
  return s;
}

static int baseline(const char *path, int method, const select_opts *o, const select_stats *st,
                    uint32_t nq, const lm_tokens *src, int threads, double *secs,
                    double *cpus) {
  struct llama_model_params mp = llama_model_default_params();
  struct llama_model *m = llama_model_load_from_file(path, mp);
  if (!m) return -1;
  struct llama_context_params cp = llama_context_default_params();
  size_t at = 0; /* the input's own tokens, in order, as the method reads them */
  uint32_t n_seq = 1, seq_len = (uint32_t)st->max_seq_tokens, batch = 512;
  if (method == SELECT_XL3M) {
    n_seq = o->xl3m_batch < st->segments ? o->xl3m_batch : (uint32_t)st->segments;
    batch = n_seq * seq_len;
  }
  cp.n_ctx = (seq_len + 16) * n_seq; /* as the method: the longest sequence and a little room */
  cp.n_seq_max = n_seq;
  cp.kv_unified = false;
  cp.n_batch = cp.n_ubatch = batch;
  cp.n_threads = cp.n_threads_batch = threads;
  cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.no_perf = true;
  struct llama_context *c = llama_init_from_model(m, cp);
  struct llama_batch b = llama_batch_init((int32_t)batch, 0, 1);
  uint64_t fed = 0;
  int rc = 0;
  double t0 = now(), c0 = cpu();
  if (method == SELECT_XL3M) {
    /* the method's sequences: mean length, n_seq per call */
    uint64_t L = st->model_tokens / st->segments;
    for (uint64_t k = 0; k < st->segments; k += n_seq) {
      llama_memory_clear(llama_get_memory(c), true);
      int32_t nb = 0;
      uint64_t ns = st->segments - k < n_seq ? st->segments - k : n_seq;
      for (uint32_t s = 0; s < ns; s++)
        for (uint32_t i = 0; i < L; i++, nb++) {
          b.token[nb] = src->id[at++ % src->n];
          b.pos[nb] = (llama_pos)i;
          b.n_seq_id[nb] = 1;
          b.seq_id[nb][0] = (llama_seq_id)s;
          b.logits[nb] = i + nq >= L;
        }
      b.n_tokens = nb;
      if (llama_decode(c, b) != 0) rc = -1;
      fed += (uint64_t)nb;
    }
  } else {
    uint64_t per = st->model_tokens / st->windows, keep = seq_len > per ? seq_len - per : 0;
    for (uint64_t k = 0; k < st->windows && rc == 0; k++) {
      uint64_t start = k == 0 ? 0 : keep;
      llama_memory_seq_rm(llama_get_memory(c), 0, (llama_pos)start, -1);
      uint64_t end = k == 0 ? per : keep + per;
      for (uint64_t p = start; p < end && rc == 0;) {
        int32_t nb = 0;
        for (; nb < (int32_t)batch && p < end; nb++, p++) {
          b.token[nb] = src->id[at++ % src->n];
          b.pos[nb] = (llama_pos)p;
          b.n_seq_id[nb] = 1;
          b.seq_id[nb][0] = 0;
          b.logits[nb] = 0;
        }
        b.n_tokens = nb;
        if (llama_decode(c, b) != 0) rc = -1;
        fed += (uint64_t)nb;
      }
    }
  }
  *secs = now() - t0;
  *cpus = cpu() - c0;
  llama_batch_free(b);
  llama_free(c);
  llama_model_free(m);
  fprintf(stderr, "baseline: %llu tokens in %.2f s (%.2f s of CPU)\n", (unsigned long long)fed,
          *secs, *cpus);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: bench_select MODEL.gguf METHOD TOKENS [threads [runs] | rss [threads]]\n");
    return 2;
  }
  const char *path = argv[1];
  int method = select_method_parse(argv[2]);
  uint64_t tokens = strtoull(argv[3], NULL, 10);
  int rss = argc > 4 && strcmp(argv[4], "rss") == 0;
  int threads = argc > 4 + rss ? atoi(argv[4 + rss]) : 1;
  int runs = !rss && argc > 5 ? atoi(argv[5]) : 1;
  ctxd_error e;
  lm_model *m = NULL;
  if (method < 0 || lm_model_load(path, NULL, &m, &e)) {
    fprintf(stderr, "bench_select: bad method or model (%s)\n", method < 0 ? argv[2] : e.msg);
    return 2;
  }
  lm_info in;
  lm_model_info(m, &in);
  /* prose of the wanted length in model tokens */
  size_t len = 0, bytes = tokens * 5;
  char *text = NULL;
  for (int k = 0; k < 3; k++) { /* scale the bytes to the tokens wanted */
    free(text);
    text = prose(bytes, &len);
    uint64_t have = tok_count(lm_model_tok(m), text, len);
    bytes = (size_t)((double)bytes * tokens / (have ? have : 1));
  }
  select_env env = {.model = m};
  select_opts o;
  select_defaults(&o);
  o.method = method;
  o.n_threads = threads;
  o.window_tokens = env_u32("WINDOW", o.window_tokens);
  o.top_k = env_u32("TOPK", o.top_k);
  o.cache_max_tokens = env_u32("CACHE", 0);
  o.segment_tokens = env_u32("SEG", o.segment_tokens);
  o.xl3m_batch = env_u32("BATCH", o.xl3m_batch);
  o.token_budget = env_u32("BUDGET", o.token_budget);
  long rss0 = rss_peak_kb();
  double best = 1e30, best_c = 1e30, bt = 1e30, bc = 1e30;
  int model_method = method == SELECT_XL3M || method == SELECT_INFINIRETRI;
  lm_tokens qt = {0}, src = {0};
  lm_tokenize(m, question, strlen(question), LM_TOK_NO_OFFSETS, &qt, &e);
  if (lm_tokenize(m, text, len, LM_TOK_NO_OFFSETS, &src, &e) || src.n == 0) {
    fprintf(stderr, "bench_select: %s\n", e.msg);
    return 1;
  }
  select_result r = {0};
  /* select_run and the baseline take turns, so both see the same load */
  for (int k = 0; k < runs; k++) {
    select_result_free(&r);
    double t0 = now(), c0 = cpu();
    if (select_run(&env, text, len, question, strlen(question), &o, &r, &e)) {
      fprintf(stderr, "bench_select: %s\n", e.msg);
      return 1;
    }
    double t = now() - t0, tc = cpu() - c0;
    if (t < best) best = t;
    if (tc < best_c) best_c = tc;
    fprintf(stderr, "select_run: %.2f s (%.2f s of CPU)\n", t, tc);
    if (rss || !model_method) continue;
    if (baseline(path, r.method, &o, &r.stats, (uint32_t)qt.n, &src, threads, &t, &tc)) {
      fprintf(stderr, "bench_select: the baseline failed\n");
      return 1;
    }
    if (t < bt) bt = t;
    if (tc < bc) bc = tc;
  }
  int found = strstr(r.context, "7421") != NULL;
  printf("model\t%s (%u layers, width %u, %u heads, vocab %u)\n", in.name, in.n_layer, in.n_embd,
         in.n_head, in.n_vocab);
  printf("method\t%s\n", select_method_name(r.method));
  printf("input\t%llu tokens, %zu bytes\n", (unsigned long long)r.stats.input_tokens, len);
  printf("fed to the model\t%llu tokens in %llu decodes, %llu outputs, longest sequence %llu\n",
         (unsigned long long)r.stats.model_tokens, (unsigned long long)r.stats.model_decodes,
         (unsigned long long)r.stats.model_outputs, (unsigned long long)r.stats.max_seq_tokens);
  printf("select_run\t%.3f s wall, %.3f s CPU (best of %d; last run %.3f s in llama_decode)\n",
         best, best_c, runs, r.stats.model_us / 1e6);
  printf("selected\t%u tokens in %zu segments, needle %s\n", r.tokens, r.n_segs,
         found ? "found" : "not found");
  if (rss) {
    printf("peak rss\t%ld KiB (%ld KiB before the call: model, text)\n", rss_peak_kb(), rss0);
  } else if (model_method) {
    printf("plain llama_decode\t%.3f s wall, %.3f s CPU\n", bt, bc);
    printf("ratio\t%.3f wall, %.3f CPU\n", best / bt, best_c / bc);
  }
  lm_tokens_free(&qt);
  lm_tokens_free(&src);
  select_result_free(&r);
  free(text);
  lm_model_free(m);
  return 0;
}
