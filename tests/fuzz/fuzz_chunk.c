/* fuzz_chunk.c - the chunker and the tokenizers on arbitrary bytes.
 *
 * Input: byte 0 picks the tokenizer (bit 0: the exact GPT-2 BPE of the
 * shipped vocabulary GGUF, loaded once; else the built-in estimator),
 * byte 1 max_tokens (1..256), byte 2 overlap_tokens (< max_tokens); the
 * rest is the text, cut at its first invalid UTF-8 byte (the chunker takes
 * valid UTF-8, as the handlers check before calling it).
 *
 * Checked (chunk.h, chunk.c's header, lm.h): chunks cover the text in
 * order, each starts after the previous one's start and ends after its end,
 * with no overlap asked they tile it exactly; no cut splits a UTF-8
 * character; each chunk's token count is tok_count() of its span, and at
 * most max_tokens unless the chunk is one character (and its whitespace,
 * before it too for the first chunk, which holds the text's leading
 * whitespace);
 * sentence starts are increasing character boundaries inside the text. For
 * GPT-2 also: the piece cache gives llama.cpp's own tokens
 * (LM_TOK_NO_CACHE), the token ranges tile the input, detokenizing gives
 * the input back, and the tok count equals the number of tokens.
 * The vocabulary is $CTXD_FUZZ_VOCAB, else the path built in. With GPT-2
 * the text is cut to GPT2_TEXT_MAX bytes: the chunker's generic path counts
 * every candidate span through llama.cpp, and longer inputs cost far more
 * time than new coverage. */
#include <string.h>

#include "chunk.h"
#include "fuzz_common.h"
#include "model/lm.h"
#include "tok.h"
#include "utf8.h"

#define GPT2_TEXT_MAX 512

static lm_model *gpt2;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *path = getenv("CTXD_FUZZ_VOCAB");
  if (!path || !*path) path = CTXD_FUZZ_VOCAB;
  lm_model_opts o;
  lm_model_defaults(&o);
  o.vocab_only = 1;
  ctxd_error e = {0};
  if (lm_model_load(path, &o, &gpt2, &e) != 0) {
    fprintf(stderr, "fuzz_chunk: cannot load the GPT-2 vocabulary %s: %s "
            "(set CTXD_FUZZ_VOCAB)\n", path, e.msg);
    exit(1);
  }
  return 0;
}

static int is_ws(uint8_t c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' ||
         c == '\v';
}

static int is_cont(const char *s, size_t len, size_t pos) {
  return pos < len && ((uint8_t)s[pos] & 0xC0) == 0x80;
}

typedef struct sent_state {
  const char *s;
  size_t len, last;
} sent_state;

static int on_sentence(void *arg, size_t pos) {
  sent_state *st = arg;
  FUZZ_CHECK(pos > st->last && pos < st->len, "sentence start %zu after %zu "
             "(len %zu)", pos, st->last, st->len);
  FUZZ_CHECK(!is_cont(st->s, st->len, pos), "sentence start %zu splits a "
             "character", pos);
  st->last = pos;
  return 0;
}

static void check_chunks(const char *s, size_t len, const tok *tk,
                         uint32_t max_tokens, uint32_t overlap) {
  chunk_opts o = {.max_tokens = max_tokens, .overlap_tokens = overlap};
  chunk_span *v = NULL;
  size_t n = 0;
  ctxd_error e = {0};
  int rc = chunk_text(s, len, &o, tk, &v, &n, &e);
  FUZZ_CHECK(rc == 0, "chunk_text failed: %d %s", rc, e.msg);
  FUZZ_CHECK(len > 0 || (n == 0 && v == NULL), "empty text gave %zu chunks",
             n);
  for (size_t i = 0; i < n; i++) {
    uint64_t a = v[i].byte_start, b = v[i].byte_end;
    FUZZ_CHECK(a < b && b <= len, "chunk %zu [%llu, %llu) of %zu bytes", i,
               (unsigned long long)a, (unsigned long long)b, len);
    FUZZ_CHECK(!is_cont(s, len, a) && !is_cont(s, len, b),
               "chunk %zu [%llu, %llu) splits a character", i,
               (unsigned long long)a, (unsigned long long)b);
    if (i == 0) {
      FUZZ_CHECK(a == 0, "first chunk starts at %llu", (unsigned long long)a);
    } else {
      uint64_t pa = v[i - 1].byte_start, pb = v[i - 1].byte_end;
      FUZZ_CHECK(a > pa && a <= pb && b > pb,
                 "chunk %zu [%llu, %llu) after [%llu, %llu)", i,
                 (unsigned long long)a, (unsigned long long)b,
                 (unsigned long long)pa, (unsigned long long)pb);
      FUZZ_CHECK(overlap > 0 || a == pb, "chunk %zu starts at %llu, the "
                 "previous ended at %llu, no overlap asked", i,
                 (unsigned long long)a, (unsigned long long)pb);
    }
    uint64_t t = tok_count(tk, s + a, (size_t)(b - a));
    FUZZ_CHECK(t == v[i].tokens, "chunk %zu: %u tokens recorded, %llu "
               "counted", i, v[i].tokens, (unsigned long long)t);
    if (t > max_tokens) {
      /* Only one character (and the whitespace after it; the first chunk
       * also holds the text's leading whitespace) may exceed. */
      uint64_t c = a;
      while (i == 0 && c < b && is_ws((uint8_t)s[c])) c++;
      if (c < b) c++;
      while (c < b && is_cont(s, len, (size_t)c)) c++;
      while (c < b && is_ws((uint8_t)s[c])) c++;
      FUZZ_CHECK(c == b, "chunk %zu [%llu, %llu): %llu tokens > max %u and "
                 "more than one character", i, (unsigned long long)a,
                 (unsigned long long)b, (unsigned long long)t, max_tokens);
    }
  }
  FUZZ_CHECK(n == 0 || v[n - 1].byte_end == len, "last chunk ends at %llu "
             "of %zu", (unsigned long long)v[n - 1].byte_end, len);
  free(v);
}

static void check_gpt2(const char *s, size_t len) {
  lm_tokens t = {0}, u = {0};
  ctxd_error e = {0};
  FUZZ_CHECK(lm_tokenize(gpt2, s, len, 0, &t, &e) == 0, "tokenize: %s",
             e.msg);
  FUZZ_CHECK(lm_tokenize(gpt2, s, len, LM_TOK_NO_CACHE, &u, &e) == 0,
             "tokenize (no cache): %s", e.msg);
  FUZZ_CHECK(t.n == u.n && (t.n == 0 || memcmp(t.id, u.id, t.n * sizeof *t.id) == 0),
             "the piece cache gives %zu tokens, llama.cpp %zu (or other ids)",
             t.n, u.n);
  for (size_t i = 0; i < t.n; i++) {
    FUZZ_CHECK(t.start[i] == (i ? t.end[i - 1] : 0) && t.start[i] < t.end[i],
               "token %zu covers [%u, %u)", i, t.start[i], t.end[i]);
  }
  FUZZ_CHECK(t.n == 0 ? len == 0 : t.end[t.n - 1] == len,
             "tokens end at %u of %zu", t.n ? t.end[t.n - 1] : 0, len);
  FUZZ_CHECK(tok_count(lm_model_tok(gpt2), s, len) == t.n,
             "tok count differs from %zu tokens", t.n);
  char *back = NULL;
  size_t blen = 0;
  FUZZ_CHECK(lm_detokenize(gpt2, t.id, t.n, &back, &blen, &e) == 0,
             "detokenize: %s", e.msg);
  FUZZ_CHECK(blen == len && memcmp(back, s, len) == 0,
             "detokenize gives %zu bytes back for %zu", blen, len);
  free(back);
  lm_tokens_free(&t);
  lm_tokens_free(&u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  int use_gpt2 = data[0] & 1;
  uint32_t max_tokens = 1u + data[1];
  uint32_t overlap = data[2] % max_tokens;
  const char *s = (const char *)data + 3;
  size_t len = size - 3, bad;
  if (use_gpt2 && len > GPT2_TEXT_MAX) len = GPT2_TEXT_MAX;
  if (!utf8_valid(s, len, &bad)) len = bad;
  const tok *tk = use_gpt2 ? lm_model_tok(gpt2) : tok_estimator();
  check_chunks(s, len, tk, max_tokens, overlap);
  sent_state st = {s, len, 0};
  FUZZ_CHECK(chunk_sentences(s, len, on_sentence, &st) == 0, "stopped");
  if (use_gpt2) check_gpt2(s, len);
  return 0;
}
