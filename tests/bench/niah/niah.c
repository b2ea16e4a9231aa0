/* niah.c - the needle-in-a-haystack driver: builds haystacks of real prose
 * (prose.txt, one sentence a line) of a given token length, inserts a needle
 * sentence at a depth on a sentence boundary, asks select_run for the key
 * context with a literal or a paraphrased question, and prints one TSV row
 * per trial (grid.py turns the rows into accuracy grids). Success = every
 * byte of the needle sentence lies inside the selected segments.
 *
 *   niah --prose prose.txt --needles needles.tsv (--vocab V.gguf | --model M.gguf)
 *        [--methods bm25,embedding] [--lengths 1000,10000] [--depths 0,50,100]
 *        [--seeds N] [--variants literal,paraphrase] [--budget N] ...
 *   niah --needles needles.tsv --check      (only check the pairs)
 * Every option is listed by --help. The pairs are checked before any trial:
 * a paraphrase that shares a content word (or a 5-letter prefix) with its
 * needle, or a literal question that shares fewer than two, stops the run
 * with exit status 3. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <llama.h>

#include "embed.h"
#include "lex.h"
#include "model/lm.h"
#include "select.h"

#define MAX_LIST 64

static void die(const char *what, const char *msg) {
  fprintf(stderr, "niah: %s: %s\n", what, msg);
  exit(1);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) die("malloc", "out of memory");
  return p;
}

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n ? n : 1);
  if (!p) die("realloc", "out of memory");
  return p;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* splitmix64: trials are reproducible from their seed. */
static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) die(path, strerror(errno));
  size_t cap = 1 << 20, n = 0;
  char *s = xmalloc(cap + 1);
  size_t got;
  while ((got = fread(s + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) s = xrealloc(s, (cap *= 2) + 1);
  }
  fclose(f);
  s[n] = 0;
  *len = n;
  return s;
}

/* -------------------------------------------------------------- the pairs */

typedef struct pair {
  char *id, *needle, *q[2]; /* q[0] literal, q[1] paraphrase */
} pair;

static const char *const variant_name[2] = {"literal", "paraphrase"};

static size_t load_pairs(const char *path, pair **out) {
  size_t len, n = 0;
  char *s = read_file(path, &len);
  pair *p = NULL;
  for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
    if (line[0] == '#' || line[0] == 0) continue;
    char *f[4];
    int k = 0;
    for (char *c = line; k < 4; k++) {
      f[k] = c;
      c = strchr(c, '\t');
      if (!c) break;
      *c++ = 0;
    }
    if (k != 3 || strchr(f[3], '\t')) die(path, "a line without exactly 4 tab-separated fields");
    p = xrealloc(p, (n + 1) * sizeof *p);
    p[n++] = (pair){f[0], f[1], {f[2], f[3]}};
  }
  if (n == 0) die(path, "no pairs");
  *out = p; /* the strings point into s, kept for the whole run */
  return n;
}

/* Function words a paraphrase may share with its needle: articles,
 * pronouns, prepositions, auxiliaries, question words. */
static const char *const stopwords[] = {
    "a", "about", "after", "all", "also", "an", "and", "any", "are", "as", "at", "be",
    "been", "before", "between", "but", "by", "can", "could", "did", "do", "does", "each",
    "every", "for", "from", "had", "has", "have", "he", "her", "his", "how", "i", "if",
    "in", "into", "is", "it", "its", "many", "much", "my", "no", "not", "of", "on",
    "only", "or", "our", "she", "so", "some", "than", "that", "the", "their", "them",
    "then", "there", "these", "they", "this", "those", "to", "under", "up", "was", "we",
    "were", "what", "when", "where", "which", "who", "whom", "whose", "why", "will",
    "with", "would", "you", "your", "num",
};

static int is_stopword(const char *t, size_t n) {
  for (size_t i = 0; i < sizeof stopwords / sizeof *stopwords; i++)
    if (strlen(stopwords[i]) == n && memcmp(stopwords[i], t, n) == 0) return 1;
  return 0;
}

/* Content terms of s by lex.h's analyser, minus stop words, into terms[]
 * (NUL-terminated, at most max); returns their count. */
static int content_terms(const char *s, char terms[][LEX_TERM_MAX + 1], int max) {
  lex_iter it;
  char t[LEX_TERM_MAX];
  size_t n;
  int k = 0;
  lex_iter_init(&it, s, strlen(s));
  while (lex_next(&it, t, &n, NULL, NULL)) {
    if (is_stopword(t, n) || k == max) continue;
    memcpy(terms[k], t, n);
    terms[k++][n] = 0;
  }
  return k;
}

/* 0 when every pair keeps the rule; else prints each breach and returns 1. */
static int check_pairs(const pair *p, size_t np) {
  int bad = 0;
  static char a[128][LEX_TERM_MAX + 1], b[128][LEX_TERM_MAX + 1];
  for (size_t i = 0; i < np; i++) {
    int na = content_terms(p[i].needle, a, 128);
    for (int v = 0; v < 2; v++) {
      int nb = content_terms(p[i].q[v], b, 128), shared = 0;
      for (int x = 0; x < na; x++)
        for (int y = 0; y < nb; y++) {
          int same = strcmp(a[x], b[y]) == 0;
          /* inflections and derivations ("north"/"northern") count as
           * shared for the paraphrase: the first 5 letters alike */
          int stem = strlen(a[x]) >= 5 && strlen(b[y]) >= 5 && memcmp(a[x], b[y], 5) == 0;
          if (same) shared++;
          if (v == 1 && (same || stem)) {
            fprintf(stderr, "niah: pair %s: the paraphrase shares \"%s\" with the needle (\"%s\")\n",
                    p[i].id, b[y], a[x]);
            bad = 1;
          }
        }
      if (v == 0 && shared < 2) {
        fprintf(stderr, "niah: pair %s: the literal question shares %d content word(s) with the needle, "
                "fewer than 2\n", p[i].id, shared);
        bad = 1;
      }
    }
  }
  return bad;
}

/* ------------------------------------------------------------- the prose */

typedef struct prose {
  char *text;
  size_t n;
  uint32_t *start, *len; /* sentence i = text[start[i] .. +len[i]) */
  uint8_t *para;         /* 1: sentence i starts a paragraph */
  uint32_t *tokens;      /* its token count */
} prose;

static void load_prose(const char *path, const tok *tk, prose *p) {
  size_t len;
  p->text = read_file(path, &len);
  size_t cap = 1024;
  p->start = xmalloc(cap * sizeof *p->start);
  p->len = xmalloc(cap * sizeof *p->len);
  p->para = xmalloc(cap);
  p->n = 0;
  int new_para = 1;
  for (size_t at = 0; at < len;) {
    char *nl = memchr(p->text + at, '\n', len - at);
    size_t end = nl ? (size_t)(nl - p->text) : len;
    if (end == at) {
      new_para = 1;
    } else {
      if (p->n == cap) {
        cap *= 2;
        p->start = xrealloc(p->start, cap * sizeof *p->start);
        p->len = xrealloc(p->len, cap * sizeof *p->len);
        p->para = xrealloc(p->para, cap);
      }
      p->start[p->n] = (uint32_t)at;
      p->len[p->n] = (uint32_t)(end - at);
      p->para[p->n++] = (uint8_t)new_para;
      new_para = 0;
    }
    at = end + 1;
  }
  if (p->n == 0) die(path, "no sentences");
  p->tokens = xmalloc(p->n * sizeof *p->tokens);
  for (size_t i = 0; i < p->n; i++)
    p->tokens[i] = (uint32_t)tok_count(tk, p->text + p->start[i], p->len[i]);
}

/* A haystack: prose sentences from a seeded start, wrapping around, until
 * `tokens` are reached; cum[k] = tokens before its sentence k. */
typedef struct hay {
  uint32_t *sent;
  uint64_t *cum;
  size_t n;
} hay;

static void make_hay(const prose *p, uint64_t tokens, uint64_t seed, hay *h) {
  size_t cap = 1024, i = (size_t)(mix(seed) % p->n);
  /* start at a paragraph so the haystack opens like a document */
  while (!p->para[i]) i = (i + 1) % p->n;
  h->sent = xmalloc(cap * sizeof *h->sent);
  h->cum = xmalloc((cap + 1) * sizeof *h->cum);
  h->n = 0;
  h->cum[0] = 0;
  while (h->cum[h->n] < tokens) {
    if (h->n == cap) {
      cap *= 2;
      h->sent = xrealloc(h->sent, cap * sizeof *h->sent);
      h->cum = xrealloc(h->cum, (cap + 1) * sizeof *h->cum);
    }
    h->sent[h->n] = (uint32_t)i;
    h->cum[h->n + 1] = h->cum[h->n] + p->tokens[i];
    h->n++;
    i = (i + 1) % p->n;
  }
}

/* The haystack's text with the needle before its sentence k (k = n: at the
 * end); [*ns, *ne) = the needle's bytes. Sentences of one paragraph are
 * joined by a space, paragraphs by a blank line. */
static char *hay_text(const prose *p, const hay *h, size_t k, const char *needle,
                      size_t *len, size_t *ns, size_t *ne) {
  size_t nl = strlen(needle), cap = nl + 2;
  for (size_t i = 0; i < h->n; i++) cap += p->len[h->sent[i]] + 2;
  char *s = xmalloc(cap + 1);
  size_t n = 0;
  for (size_t i = 0; i <= h->n; i++) {
    if (i == k) {
      if (n) {
        const char *sep = i < h->n && p->para[h->sent[i]] ? "\n\n" : " ";
        memcpy(s + n, sep, strlen(sep));
        n += strlen(sep);
      }
      *ns = n;
      memcpy(s + n, needle, nl);
      n += nl;
      *ne = n;
      if (i < h->n) s[n++] = ' ';
    }
    if (i == h->n) break;
    uint32_t j = h->sent[i];
    if (n && i != k) {
      const char *sep = p->para[j] ? "\n\n" : " ";
      memcpy(s + n, sep, strlen(sep));
      n += strlen(sep);
    }
    memcpy(s + n, p->text + p->start[j], p->len[j]);
    n += p->len[j];
  }
  s[n] = 0;
  *len = n;
  return s;
}

/* ----------------------------------------------------------------- memory */

static long status_kb(const char *key) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  size_t kl = strlen(key);
  while (f && fgets(line, sizeof line, f))
    if (strncmp(line, key, kl) == 0 && line[kl] == ':') v = atol(line + kl + 1);
  if (f) fclose(f);
  return v;
}

/* Reset the peak resident size (VmHWM) to the current one (Linux >= 4.0). */
static void reset_peak(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (f) {
    fputs("5", f);
    fclose(f);
  }
}

/* ------------------------------------------------- plain llama.cpp baseline */

/* Plain llama.cpp decoding as many tokens as the method fed the model
 * (st->model_tokens, real prose ids cycled) in the shape of its calls, on a
 * context of its own (created outside the timing): XL3M, calls of
 * xl3m_batch sequences of its mean sequence length, logits on the last nq
 * positions of each; InfiniRetri, one sequence per window appending its mean
 * step after a kept prefix so that the sequence ends at the longest length
 * the method held, in batches of 512, no logits. Returns seconds. */
static double plain_decode(struct llama_model *lm, int method, const select_opts *o,
                           const select_stats *st, uint32_t nq, const int32_t *ids,
                           size_t n_ids, int flash) {
  int xl3m = method == SELECT_XL3M;
  uint64_t units = xl3m ? st->segments : st->windows;
  if (!units || !st->model_tokens) return 0;
  uint32_t n_seq = 1, len = (uint32_t)(st->model_tokens / units), batch = 512;
  uint32_t longest = (uint32_t)st->max_seq_tokens;
  if (xl3m) {
    uint32_t want = o->xl3m_batch ? o->xl3m_batch : 8;
    n_seq = want < units ? want : (uint32_t)units;
    batch = n_seq * len;
    longest = len;
  }
  if (longest < len) longest = len;
  struct llama_context_params cp = llama_context_default_params();
  cp.n_ctx = (longest + 256) * n_seq;
  cp.n_seq_max = n_seq;
  cp.kv_unified = false;
  cp.n_batch = cp.n_ubatch = batch;
  /* as many threads as select's contexts get (lm.h: 0 = the CPUs this
   * process may run on), not llama.cpp's default */
  cpu_set_t cpus;
  int nt = o->n_threads;
  if (nt <= 0) nt = sched_getaffinity(0, sizeof cpus, &cpus) == 0 ? CPU_COUNT(&cpus) : 4;
  cp.n_threads = cp.n_threads_batch = nt;
  cp.flash_attn_type = flash ? LLAMA_FLASH_ATTN_TYPE_ENABLED : LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cp.no_perf = true;
  struct llama_context *c = llama_init_from_model(lm, cp);
  if (!c) die("llama_init_from_model", "failed for the baseline");
  struct llama_batch b = llama_batch_init((int32_t)batch, 0, 1);
  size_t at = 0;
  uint64_t fed = 0;
  uint32_t keep = longest > len ? longest - len : 0;
  double t0 = now();
  for (uint64_t k = 0; fed < st->model_tokens && k < units; k += n_seq) {
    if (xl3m) llama_memory_clear(llama_get_memory(c), true);
    else llama_memory_seq_rm(llama_get_memory(c), 0, k ? (llama_pos)keep : 0, -1);
    uint32_t p0 = xl3m || k == 0 ? 0 : keep;
    for (uint32_t p = 0; p < len;) {
      int32_t nb = 0;
      uint32_t from = p, ns = units - k < n_seq ? (uint32_t)(units - k) : n_seq;
      for (uint32_t s = 0; s < ns; s++)
        for (p = from; p < len && (xl3m || nb < (int32_t)batch); p++, nb++) {
          b.token[nb] = ids[at];
          at = (at + 1) % n_ids;
          b.pos[nb] = (llama_pos)(p0 + p);
          b.n_seq_id[nb] = 1;
          b.seq_id[nb][0] = (llama_seq_id)s;
          b.logits[nb] = xl3m && p + nq >= len;
        }
      b.n_tokens = nb;
      if (llama_decode(c, b) != 0) die("llama_decode", "failed in the baseline");
      fed += (uint64_t)nb;
    }
  }
  llama_synchronize(c);
  double t = now() - t0;
  llama_batch_free(b);
  llama_free(c);
  return t;
}

/* ------------------------------------------------------------------ main */

static int split_list(char *s, char **out) {
  int n = 0;
  for (char *t = strtok(s, ","); t && n < MAX_LIST; t = strtok(NULL, ",")) out[n++] = t;
  return n;
}

static uint64_t parse_count(const char *s) {
  char *end;
  double v = strtod(s, &end);
  if (*end == 'k' || *end == 'K') v *= 1e3;
  else if (*end == 'm' || *end == 'M') v *= 1e6;
  return (uint64_t)v;
}

static void usage(void) {
  fputs(
      "usage: niah --prose prose.txt --needles needles.tsv (--vocab V.gguf | --model M.gguf) [options]\n"
      "       niah --needles needles.tsv --check\n"
      "  --methods LIST     bm25,embedding,xl3m,infiniretri (default bm25)\n"
      "  --variants LIST    literal,paraphrase (default both)\n"
      "  --lengths LIST     haystack tokens, k/M suffixes (default 1k,10k)\n"
      "  --depths LIST      needle depths in percent (default 0,25,50,75,100)\n"
      "  --seeds N          trials per cell, seeds 1..N (default 3)\n"
      "  --seed0 N          first seed (default 1)\n"
      "  --budget N         token budget (default 512)\n"
      "  --segment N        segment tokens (select default 256)\n"
      "  --window N --topk N --layer N --filter N   InfiniRetri options\n"
      "  --batch N          XL3M segments per decode\n"
      "  --threads N        model threads (default: select's)\n"
      "  --ngl N            model layers on the GPU (-1 all; default 0)\n"
      "  --flash 0|1        flash attention in select's contexts (default 0)\n"
      "  --baseline         after each model run, time plain llama.cpp decoding its\n"
      "                     model_tokens in the shape of its calls\n"
      "  --check            only check the pairs\n",
      stderr);
  exit(2);
}

int main(int argc, char **argv) {
  const char *prose_path = NULL, *needles_path = NULL, *vocab = NULL, *model_path = NULL;
  char methods_s[256] = "bm25", variants_s[64] = "literal,paraphrase";
  char lengths_s[512] = "1k,10k", depths_s[256] = "0,25,50,75,100";
  int seeds = 3, seed0 = 1, check_only = 0, ngl = 0, flash = 0;
  int baseline = 0;
  select_opts so;
  select_defaults(&so);
  so.token_budget = 512;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define OPT(name) (strcmp(a, name) == 0 && v && ++i)
    if (strcmp(a, "--check") == 0) check_only = 1;
    else if (OPT("--prose")) prose_path = v;
    else if (OPT("--needles")) needles_path = v;
    else if (OPT("--vocab")) vocab = v;
    else if (OPT("--model")) model_path = v;
    else if (OPT("--methods")) snprintf(methods_s, sizeof methods_s, "%s", v);
    else if (OPT("--variants")) snprintf(variants_s, sizeof variants_s, "%s", v);
    else if (OPT("--lengths")) snprintf(lengths_s, sizeof lengths_s, "%s", v);
    else if (OPT("--depths")) snprintf(depths_s, sizeof depths_s, "%s", v);
    else if (OPT("--seeds")) seeds = atoi(v);
    else if (OPT("--seed0")) seed0 = atoi(v);
    else if (OPT("--budget")) so.token_budget = (uint32_t)atol(v);
    else if (OPT("--segment")) so.segment_tokens = (uint32_t)atol(v);
    else if (OPT("--window")) so.window_tokens = (uint32_t)atol(v);
    else if (OPT("--topk")) so.top_k = (uint32_t)atol(v);
    else if (OPT("--layer")) so.attn_layer = atoi(v);
    else if (OPT("--filter")) so.filter_width = (uint32_t)atol(v);
    else if (OPT("--batch")) so.xl3m_batch = (uint32_t)atol(v);
    else if (OPT("--threads")) so.n_threads = atoi(v);
    else if (OPT("--ngl")) ngl = atoi(v);
    else if (OPT("--flash")) flash = atoi(v);
    else if (strcmp(a, "--baseline") == 0) baseline = 1;
    else usage();
#undef OPT
  }
  so.flash_attn = flash;
  if (!needles_path) usage();
  pair *pairs;
  size_t np = load_pairs(needles_path, &pairs);
  if (check_pairs(pairs, np)) return 3;
  fprintf(stderr, "niah: %zu pairs checked: every paraphrase shares no content word with its needle\n", np);
  if (check_only) return 0;
  if (!prose_path || (!vocab && !model_path)) usage();

  char *ml[MAX_LIST], *vl[MAX_LIST], *ll[MAX_LIST], *dl[MAX_LIST];
  int nm = split_list(methods_s, ml), nv = split_list(variants_s, vl);
  int nlen = split_list(lengths_s, ll), nd = split_list(depths_s, dl);
  int meth[MAX_LIST], var[MAX_LIST], need_model = 0, need_emb = 0;
  for (int i = 0; i < nm; i++) {
    meth[i] = select_method_parse(ml[i]);
    if (meth[i] < 0) die(ml[i], "unknown method");
    need_model |= meth[i] == SELECT_XL3M || meth[i] == SELECT_INFINIRETRI;
    need_emb |= meth[i] == SELECT_EMBEDDING;
  }
  for (int i = 0; i < nv; i++) {
    var[i] = strcmp(vl[i], "literal") == 0 ? 0 : strcmp(vl[i], "paraphrase") == 0 ? 1 : -1;
    if (var[i] < 0) die(vl[i], "unknown variant (literal, paraphrase)");
  }
  if (need_model && !model_path) die("--methods", "xl3m and infiniretri need --model");

  ctxd_error e;
  lm_model *m = NULL;
  lm_model_opts mo;
  lm_model_defaults(&mo);
  mo.vocab_only = model_path == NULL;
  mo.n_gpu_layers = ngl;
  double t0 = now();
  if (lm_model_load(model_path ? model_path : vocab, &mo, &m, &e)) die("lm_model_load", e.msg);
  lm_info info;
  lm_model_info(m, &info);
  const tok *tk = lm_model_tok(m);
  embedder *emb = NULL;
  if (need_emb) {
    embed_hash_opts eo;
    embed_hash_defaults(&eo);
    if (embed_hash_create(&eo, &emb, &e)) die("embed_hash_create", e.msg);
  }
  prose pr;
  load_prose(prose_path, tk, &pr);
  fprintf(stderr, "niah: model %s (%s, %u layers); prose %zu sentences, %.1f s to load\n",
          info.name, info.tokenizer, info.n_layer, pr.n, now() - t0);

  /* the plain llama.cpp baseline: llama.cpp's own load of the same file */
  struct llama_model *lmod = NULL;
  lm_tokens base_tok = {0};
  if (baseline && need_model) {
    struct llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = ngl < 0 ? 999 : ngl;
    lmod = llama_model_load_from_file(model_path, mp);
    if (!lmod) die(model_path, "llama.cpp could not load it for the baseline");
    /* real tokens: the prose's first 2000 sentences */
    size_t span = pr.n > 2000 ? pr.start[2000] : pr.start[pr.n - 1];
    if (lm_tokenize(m, pr.text, span, LM_TOK_NO_OFFSETS, &base_tok, &e)) die("lm_tokenize", e.msg);
  }

  printf("method\tvariant\tlength\tdepth\tseed\tpair\tinput_tokens\tok\twall_ms\tsegs\tctx_tokens"
         "\tmodel_tokens\tmodel_decodes\tmodel_ms\twindows\trss_before_kb\trss_peak_kb"
         "\tbaseline_ms\tratio\n");
  fflush(stdout);
  select_env env = {0};
  env.tk = tk;
  env.emb = emb;
  int failures = 0;
  for (int li = 0; li < nlen; li++) {
    uint64_t L = parse_count(ll[li]);
    for (int s = seed0; s < seed0 + seeds; s++) {
      hay h;
      make_hay(&pr, L, ((uint64_t)s << 32) ^ L, &h);
      for (int di = 0; di < nd; di++) {
        double depth = atof(dl[di]);
        uint64_t target = (uint64_t)(depth / 100.0 * (double)h.cum[h.n] + 0.5);
        size_t k = 0;
        while (k < h.n && h.cum[k] < target) k++;
        /* every pair in turn over seeds and depths */
        uint64_t r = mix(((uint64_t)s << 20) ^ ((uint64_t)di << 8) ^ (uint64_t)li);
        const pair *pa = &pairs[((size_t)s + (size_t)di * 3 + (size_t)li) % np];
        char needle[1024];
        const char *num = strstr(pa->needle, "{num}");
        if (num)
          snprintf(needle, sizeof needle, "%.*s%u%s", (int)(num - pa->needle), pa->needle,
                   (unsigned)(100 + r % 9900), num + 5);
        else
          snprintf(needle, sizeof needle, "%s", pa->needle);
        size_t len, ns = 0, ne = 0;
        char *text = hay_text(&pr, &h, k, needle, &len, &ns, &ne);
        for (int mi = 0; mi < nm; mi++) {
          env.model = meth[mi] == SELECT_XL3M || meth[mi] == SELECT_INFINIRETRI ? m : NULL;
          for (int vi = 0; vi < nv; vi++) {
            const char *q = pa->q[var[vi]];
            so.method = meth[mi];
            select_result res;
            long rss0 = status_kb("VmRSS");
            reset_peak();
            double w0 = now();
            if (select_run(&env, text, len, q, strlen(q), &so, &res, &e)) {
              fprintf(stderr, "niah: select_run %s at %s tokens: %s\n", ml[mi], ll[li], e.msg);
              return 1;
            }
            double wall = now() - w0;
            long peak = status_kb("VmHWM");
            uint64_t covered = 0;
            for (size_t i = 0; i < res.n_segs; i++) {
              uint64_t a = res.segs[i].start > ns ? res.segs[i].start : ns;
              uint64_t b = res.segs[i].end < ne ? res.segs[i].end : ne;
              if (b > a) covered += b - a;
            }
            int ok = covered == ne - ns;
            double base = 0;
            if (lmod && env.model) {
              lm_tokens qt = {0};
              if (lm_tokenize(m, q, strlen(q), LM_TOK_NO_OFFSETS, &qt, &e)) die("lm_tokenize", e.msg);
              base = plain_decode(lmod, res.method, &so, &res.stats, (uint32_t)qt.n, base_tok.id,
                                  base_tok.n, flash);
              lm_tokens_free(&qt);
            }
            printf("%s\t%s\t%s\t%g\t%d\t%s\t%llu\t%d\t%.1f\t%zu\t%u\t%llu\t%llu\t%.1f\t%llu\t%ld\t%ld"
                   "\t%.1f\t%.3f\n",
                   select_method_name(res.method), variant_name[var[vi]], ll[li], depth, s, pa->id,
                   (unsigned long long)res.stats.input_tokens, ok, wall * 1e3, res.n_segs, res.tokens,
                   (unsigned long long)res.stats.model_tokens,
                   (unsigned long long)res.stats.model_decodes, res.stats.model_us / 1e3,
                   (unsigned long long)res.stats.windows, rss0, peak, base * 1e3,
                   base > 0 ? wall / base : 0.0);
            fflush(stdout);
            failures += !ok;
            select_result_free(&res);
          }
        }
        free(text);
      }
      free(h.sent);
      free(h.cum);
    }
  }
  fprintf(stderr, "niah: done, %d trial(s) missed the needle\n", failures);
  if (lmod) llama_model_free(lmod);
  lm_tokens_free(&base_tok);
  embedder_free(emb);
  lm_model_free(m);
  return 0;
}
