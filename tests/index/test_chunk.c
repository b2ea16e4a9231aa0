/* test_chunk.c - the chunker: boundary preference, budgets, coverage,
 * overlap, UTF-8 safety, token counts against tok_count(), option checks,
 * and randomized property tests that also run the generic (any tokenizer)
 * path and require it to cut exactly where the fast path does - including
 * where the fast path takes 64-byte blocks at once (test_block_*). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "chunk.h"
#include "utf8.h"

/* The estimator's count behind a different tok pointer: forces the generic
 * path, which must agree with the fast path cut for cut. */
static uint64_t wrapped_count(const tok *t, const char *s, size_t n) {
  (void)t;
  return tok_count(tok_estimator(), s, n);
}
static const tok wrapped = {"estimate-v1-wrapped", wrapped_count, NULL};

static int is_space(unsigned char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Number of non-whitespace characters in s[a..b). */
static size_t content_chars(const char *s, size_t a, size_t b) {
  size_t k = 0;
  for (size_t i = a; i < b; i++)
    if (!is_space((unsigned char)s[i]) && ((unsigned char)s[i] & 0xC0) != 0x80)
      k++;
  return k;
}

/* Every invariant the header promises; returns the number of violations
 * (each is also a failed CHECK, with the chunk index printed). */
static int check_invariants(const char *s, size_t len, const chunk_opts *o,
                            const tok *tk, const chunk_span *c, size_t n) {
  int bad = 0;
#define INV(cond)                                                          \
  do {                                                                     \
    CHECK(cond);                                                           \
    if (!(cond)) {                                                         \
      fprintf(stderr, "  chunk %zu of %zu (len %zu max %u ov %u)\n", k, n, \
              len, o->max_tokens, o->overlap_tokens);                      \
      bad++;                                                               \
    }                                                                      \
  } while (0)
  size_t k = 0;
  if (len == 0) {
    INV(n == 0 && c == NULL);
    return bad;
  }
  INV(n >= 1);
  if (n == 0)
    return bad;
  INV(c[0].byte_start == 0);
  INV(c[n - 1].byte_end == len);
  for (k = 0; k < n; k++) {
    size_t a = c[k].byte_start, b = c[k].byte_end;
    INV(a < b && b <= len);
    INV(utf8_floor(s, len, a) == a && utf8_floor(s, len, b) == b);
    INV(c[k].tokens == tok_count(tk, s + a, b - a));
    /* Over budget only as a lone oversized character. */
    if (c[k].tokens > o->max_tokens)
      INV(content_chars(s, a, b) == 1);
    if (k + 1 < n) {
      size_t a2 = c[k + 1].byte_start, b2 = c[k + 1].byte_end;
      if (o->overlap_tokens == 0) {
        INV(a2 == b);
      } else {
        INV(a2 > a && a2 <= b && b2 > b);
        INV(tok_count(tk, s + a2, b - a2) <= o->overlap_tokens);
      }
      /* Every chunk after the first starts at a non-space character. */
      INV(!is_space((unsigned char)s[a2]));
    }
  }
#undef INV
  return bad;
}

static int run(const char *s, size_t len, uint32_t max, uint32_t ov,
               const tok *tk, chunk_span **out, size_t *n) {
  chunk_opts o = {max, ov, 0};
  ctxd_error e;
  int rc = chunk_text(s, len, &o, tk, out, n, &e);
  CHECK_EQ_INT(rc, 0);
  if (rc == 0)
    check_invariants(s, len, &o, tk, *out, *n);
  return rc;
}

static void expect(const char *s, uint32_t max, uint32_t ov, const size_t *want,
                   size_t nwant) {
  const tok *tks[2] = {tok_estimator(), &wrapped};
  for (int p = 0; p < 2; p++) {
    chunk_span *c = NULL;
    size_t n = 0;
    if (run(s, strlen(s), max, ov, tks[p], &c, &n))
      continue;
    CHECK_EQ_INT(n, nwant);
    for (size_t k = 0; k < n && k < nwant; k++) {
      CHECK_EQ_INT(c[k].byte_start, want[2 * k]);
      CHECK_EQ_INT(c[k].byte_end, want[2 * k + 1]);
    }
    free(c);
  }
}

#define EXPECT(s, max, ov, ...)                                            \
  do {                                                                     \
    static const size_t w_[] = {__VA_ARGS__};                              \
    expect(s, max, ov, w_, sizeof w_ / sizeof w_[0] / 2);                  \
  } while (0)

static void test_preference(void) {
  /* Paragraph 1 is 4 tokens; 2 is 8. The first chunk ends at the paragraph
   * break even though a sentence boundary fits later; the second paragraph
   * does not fit alone, so it is cut at its sentence boundary. */
  EXPECT("Aa bb cc.\n\nDd ee ff. Gg hh ii.", 5, 0, 0, 11, 11, 21, 21, 30);
  /* No paragraph break: sentences, packed greedily. */
  EXPECT("Aa. Bb. Cc dd. Ee", 4, 0, 0, 8, 8, 17);
  EXPECT("Aa bb. Cc dd ee. Ff", 4, 0, 0, 7, 7, 17, 17, 19);
  /* "e.g. bb" is not a sentence end (lowercase follows): the cut falls at
   * the latest word instead; with "Bb" it is a sentence end. */
  EXPECT("Aa e.g. bb cc dd", 6, 0, 0, 11, 11, 16);
  EXPECT("Aa e.g. Bb cc dd", 6, 0, 0, 8, 8, 16);
  /* A closing quote after the full stop still ends the sentence. */
  EXPECT("aa bb.\" Cc dd ee", 4, 0, 0, 8, 8, 16);
  /* Without whitespace after it a full stop ends nothing ("3.14"). */
  EXPECT("Aa bb.Cc dd", 4, 0, 0, 9, 9, 11);
  /* Words only. */
  EXPECT("aa bb cc dd ee", 2, 0, 0, 6, 6, 12, 12, 14);
  /* CJK full stops end sentences without any space: 4 chars, 。, 3 chars. */
  EXPECT("\xE4\xB8\x80\xE4\xBA\x8C\xE4\xB8\x89\xE5\x9B\x9B\xE3\x80\x82"
         "\xE4\xBA\x94\xE5\x85\xAD\xE4\xB8\x83",
         6, 0, 0, 15, 15, 24);
}

static void test_long_words(void) {
  /* 26 letters = 4 tokens; at 2 tokens a chunk holds 16 letters. */
  EXPECT("abcdefghijklmnopqrstuvwxyz", 2, 0, 0, 16, 16, 26);
  /* A word of 2-byte characters (1 token each): cut every 4 characters,
   * always between characters. */
  EXPECT("\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9\xC3\xA9",
         4, 0, 0, 8, 8, 16, 16, 18);
  /* 3-byte and 4-byte characters mixed in one word. */
  EXPECT("\xE6\x97\xA5\xF0\x9F\x98\x80\xE6\x97\xA5\xF0\x9F\x98\x80", 3, 0,
         0, 7, 7, 14);
  /* A long word after short ones: the short ones go first, whole. */
  EXPECT("aa bb abcdefghijklmnopqrstuvwxyz", 3, 0, 0, 6, 6, 30, 30, 32);
}

static void test_oversize_char(void) {
  /* With max 1 a 4-byte emoji (2 tokens) cannot fit: it forms a chunk of
   * its own with the whitespace after it. */
  EXPECT("\xF0\x9F\x98\x80\xF0\x9F\x98\x80 a", 1, 0, 0, 4, 4, 9, 9, 10);
  EXPECT("a \xF0\x9F\x98\x80", 1, 0, 0, 2, 2, 6);
}

static void test_edges(void) {
  chunk_span *c = (chunk_span *)1;
  size_t n = 7;
  chunk_opts o = {8, 0, 0};
  CHECK_EQ_INT(chunk_text("", 0, &o, tok_estimator(), &c, &n, NULL), 0);
  CHECK(c == NULL);
  CHECK_EQ_INT(n, 0);
  CHECK_EQ_INT(chunk_text(NULL, 0, &o, tok_estimator(), &c, &n, NULL), 0);
  /* Whitespace only: one chunk with no tokens. */
  EXPECT("  \n\n \t", 3, 0, 0, 6);
  /* Leading whitespace joins the first chunk, never a chunk of its own. */
  EXPECT("   aa bb", 1, 0, 0, 6, 6, 8);
  /* Trailing whitespace stays with the last chunk. */
  EXPECT("aa bb \n\n", 1, 0, 0, 3, 3, 8);
  /* Everything fits: one chunk. */
  EXPECT("Short text.\n\nTwo paragraphs.", 512, 0, 0, 28);
}

static void test_overlap(void) {
  /* Each chunk after the first starts two tokens back, at a word. */
  EXPECT("aa bb cc dd ee ff gg", 4, 2, 0, 12, 6, 18, 12, 20);
  /* Overlap 1 with a long word: the cut inside the word has no word
   * boundary within one token before it, so no overlap there. */
  EXPECT("aa abcdefghijklmnopqrstuvwxyz", 2, 1, 0, 3, 3, 19, 19, 29);
  /* Overlap 2 across a long word: after the cut inside the word, the next
   * chunk starts back at the word's start (16 letters = 2 tokens before
   * the cut), and the word is counted from there. */
  EXPECT("aa bb abcdefghijklmnopqrstuvwxyz", 3, 2, 0, 6, 3, 22, 6, 30, 30, 32);
}

static void test_bad_options(void) {
  chunk_span *c = NULL;
  size_t n = 0;
  ctxd_error e;
  chunk_opts zero = {0, 0, 0}, huge = {CHUNK_MAX_MAX_TOKENS + 1, 0, 0},
             ov_eq = {10, 10, 0}, ov_gt = {10, 11, 0}, ok_max = {CHUNK_MAX_MAX_TOKENS, 5, 0};
  CHECK_EQ_INT(chunk_text("a", 1, &zero, tok_estimator(), &c, &n, &e), CTXD_EINVAL);
  CHECK_EQ_INT(e.code, CTXD_EINVAL);
  CHECK(strstr(e.msg, "max_tokens") != NULL);
  CHECK_EQ_INT(chunk_text("a", 1, &huge, tok_estimator(), &c, &n, &e), CTXD_EINVAL);
  CHECK_EQ_INT(chunk_text("a", 1, &ov_eq, tok_estimator(), &c, &n, &e), CTXD_EINVAL);
  CHECK(strstr(e.msg, "overlap") != NULL);
  CHECK_EQ_INT(chunk_text("a", 1, &ov_gt, tok_estimator(), &c, &n, NULL), CTXD_EINVAL);
  CHECK_EQ_INT(chunk_text("a", 1, NULL, tok_estimator(), &c, &n, &e), CTXD_EINVAL);
  CHECK_EQ_INT(chunk_text("a", 1, &ok_max, NULL, &c, &n, &e), CTXD_EINVAL);
  CHECK_EQ_INT(chunk_text(NULL, 3, &ok_max, tok_estimator(), &c, &n, &e), CTXD_EINVAL);
  CHECK_EQ_INT(chunk_text("a b", 3, &ok_max, tok_estimator(), &c, &n, &e), 0);
  CHECK_EQ_INT(n, 1);
  free(c);
}

static uint32_t rng = 20240601u;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 17;
  rng ^= rng << 5;
  return rng;
}

/* Random mixes of ASCII words, long words, digits, multibyte characters
 * (2, 3, 4 bytes), CJK full stops, spaces, newlines and punctuation. */
static size_t random_text(char *buf, size_t cap) {
  static const char *pieces[] = {
      "a", "bc", "def", "word", "longer", "abcdefghijklm", "12", "34567",
      ".", ",", "!", "?", "\"", ")", "'", "-",
      " ", " ", " ", " ", "  ", "\n", "\n\n", "\t",
      "\xC3\xA9", "\xD0\xB6", "\xE6\x97\xA5", "\xE3\x80\x82", "\xEF\xBC\x81",
      "\xF0\x9F\x98\x80", "\xF0\x9F\x8C\x8D\xF0\x9F\x8C\x8D", ". The", "? a",
  };
  size_t np = sizeof pieces / sizeof pieces[0];
  size_t target = rnd() % cap, n = 0;
  int mode = rnd() % 3; /* 0: mixed, 1: mostly multibyte, 2: long runs */
  while (n < target) {
    const char *p;
    if (mode == 1 && rnd() % 4)
      p = pieces[24 + rnd() % 7];
    else if (mode == 2 && rnd() % 2)
      p = pieces[5];
    else
      p = pieces[rnd() % np];
    size_t l = strlen(p);
    if (n + l > cap)
      break;
    memcpy(buf + n, p, l);
    n += l;
  }
  return n;
}

static void test_random(void) {
  static char buf[4096];
  int mismatch = 0, iters = 3000;
  for (int it = 0; it < iters; it++) {
    size_t len = random_text(buf, it < 2000 ? 300 : sizeof buf);
    CHECK_EQ_INT(utf8_valid(buf, len, NULL), 1);
    /* One rnd() per statement: the order of calls within one expression
     * is unspecified, and the sequence must not depend on the compiler. */
    uint32_t small = rnd() % 4 == 0;
    uint32_t max = 1 + rnd() % (small ? 3 : 40);
    uint32_t with_ov = rnd() % 2;
    uint32_t ov = with_ov ? rnd() % max : 0;
    chunk_span *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    run(buf, len, max, ov, tok_estimator(), &a, &na);
    run(buf, len, max, ov, &wrapped, &b, &nb);
    int same = na == nb;
    for (size_t k = 0; same && k < na; k++)
      same = a[k].byte_start == b[k].byte_start && a[k].byte_end == b[k].byte_end &&
             a[k].tokens == b[k].tokens;
    if (!same && mismatch++ < 3) {
      fprintf(stderr, "fast/generic differ: max %u ov %u len %zu text: \"%.*s\"\n",
              max, ov, len, (int)len, buf);
      for (size_t k = 0; k < na || k < nb; k++)
        fprintf(stderr, "  %zu: fast %lld-%lld/%lld generic %lld-%lld/%lld\n", k,
                k < na ? (long long)a[k].byte_start : -1, k < na ? (long long)a[k].byte_end : -1,
                k < na ? (long long)a[k].tokens : -1, k < nb ? (long long)b[k].byte_start : -1,
                k < nb ? (long long)b[k].byte_end : -1, k < nb ? (long long)b[k].tokens : -1);
    }
    free(a);
    free(b);
  }
  CHECK_EQ_INT(mismatch, 0);
}

/* Greedy packing on longer prose: no chunk could have taken its successor's
 * first word (when it ended at a word-level cut or better) and stay within
 * budget at the same boundary level. Checked loosely: chunks are full. */
static void test_fill(void) {
  static char buf[200000];
  size_t n = 0;
  const char *sent[] = {"The committee met on Friday and reviewed the plan. ",
                        "It was approved after a long debate! ",
                        "Members asked whether the budget could be reduced? ",
                        "Nobody objected.\n\n"};
  while (n + 64 < sizeof buf) {
    const char *p = sent[n % 3 == 0 ? 3 : rnd() % 3];
    memcpy(buf + n, p, strlen(p));
    n += strlen(p);
  }
  chunk_span *c = NULL;
  size_t nc = 0;
  if (run(buf, n, 128, 0, tok_estimator(), &c, &nc))
    return;
  uint64_t total = 0;
  for (size_t k = 0; k < nc; k++)
    total += c[k].tokens;
  CHECK_EQ_INT(total, tok_count(tok_estimator(), buf, n));
  /* Paragraphs here are short (< 64 tokens), so every cut is at a
   * paragraph break and chunks are at least half full. */
  for (size_t k = 0; k + 1 < nc; k++) {
    CHECK(c[k].tokens > 64);
    CHECK(c[k].byte_end >= 2 && buf[c[k].byte_end - 1] == '\n' &&
          buf[c[k].byte_end - 2] == '\n');
  }
  free(c);
}

/* Runs both paths on s[0..len) and returns 1 if they cut identically (the
 * fast path takes 64-byte blocks of ASCII at once, the generic path never
 * does, so this checks the block step against the plain rule). */
static int same_as_generic(const char *s, size_t len, uint32_t max, uint32_t ov) {
  chunk_span *a = NULL, *b = NULL;
  size_t na = 0, nb = 0;
  run(s, len, max, ov, tok_estimator(), &a, &na);
  run(s, len, max, ov, &wrapped, &b, &nb);
  int same = na == nb;
  for (size_t k = 0; same && k < na; k++)
    same = a[k].byte_start == b[k].byte_start && a[k].byte_end == b[k].byte_end &&
           a[k].tokens == b[k].tokens;
  if (!same) {
    fprintf(stderr, "fast/generic differ: max %u ov %u len %zu text: \"%.*s\"\n", max, ov,
            len, (int)len, s);
    for (size_t k = 0; k < na || k < nb; k++)
      fprintf(stderr, "  %zu: fast %lld-%lld/%lld generic %lld-%lld/%lld\n", k,
              k < na ? (long long)a[k].byte_start : -1, k < na ? (long long)a[k].byte_end : -1,
              k < na ? (long long)a[k].tokens : -1, k < nb ? (long long)b[k].byte_start : -1,
              k < nb ? (long long)b[k].byte_end : -1, k < nb ? (long long)b[k].tokens : -1);
  }
  free(a);
  free(b);
  return same;
}

/* The block step at its edges: each piece below (a sentence end, closers, a
 * paragraph break, whitespace runs longer than a block, long letter and
 * digit runs, multibyte and CJK characters) is placed at every offset
 * across the first blocks, between prose before and a long tail of words
 * without sentence ends after (so that the piece's boundary is the latest
 * of its level when a later cut is made), and the cuts compared with the
 * generic path under budgets that take every block whole, some, or none. */
static void test_block_edges(void) {
  static const char *pieces[] = {
      ". Next",         ".\" Next",      "?)] next",        "!\n\nNew",
      "x\n \n y",       "a\r\n\r\nB",    "a \n b \n c",     ".\n\n\n\nZ",
      "   \t  ",        "abcdefghijklmnopqrstuvwxyzabcdefghij", "1234567890123",
      "e.g. this",      "end.'  Then",   "caf\xC3\xA9 ok",  "\xE6\x97\xA5\xE6\x9C\xAC",
      "\xF0\x9F\x98\x80 \xF0\x9F\x98\x80", "\xE4\xB8\x80\xE3\x80\x82" "Abc",
      "\xE3\x80\x82  abc", "x\x01y\x7Fz",  "Tail.",
      /* whitespace runs spanning a whole block: */
      "x\n                                                                      \nY",
      "x                                                                      \n\nY",
      "x.                                                                       Y",
      "x\n                                                                       Y",
  };
  static const uint32_t maxes[] = {1, 3, 7, 16, 24, 32, 40, 48, 64, 1000};
  const char *prose = "The jury said it did find that many of the laws are outmoded "
                      "or inadequate and often ambiguous. It recommended that the "
                      "legislators act to have these laws studied and revised. ";
  const char *words = " and so on with words, more words and yet more words without "
                      "any end at all for a while, so that the budget runs out here "
                      "and there in the middle of it, then the text ends";
  size_t prose_len = strlen(prose), words_len = strlen(words);
  char buf[600];
  int mismatch = 0;
  for (size_t p = 0; p < sizeof pieces / sizeof pieces[0]; p++) {
    size_t pl = strlen(pieces[p]);
    for (size_t off = 0; off <= 200; off++) {
      /* prose[0..off), the piece, then words; any cut at off keeps the
       * text valid UTF-8 since prose is ASCII. */
      size_t len = 0;
      for (size_t k = 0; k < off; k++)
        buf[len++] = prose[k % prose_len];
      memcpy(buf + len, pieces[p], pl);
      len += pl;
      memcpy(buf + len, words, words_len);
      len += words_len;
      for (size_t m = 0; m < sizeof maxes / sizeof maxes[0]; m++) {
        mismatch += !same_as_generic(buf, len, maxes[m], 0);
        if (maxes[m] > 1)
          mismatch += !same_as_generic(buf, len, maxes[m], maxes[m] / 2);
        if (mismatch > 3)
          goto out;
      }
    }
  }
out:
  CHECK_EQ_INT(mismatch, 0);
}

/* Texts whose lengths straddle block sizes, and a run of each kind ending
 * exactly at a block edge. */
static void test_block_lengths(void) {
  char buf[400];
  int mismatch = 0;
  for (size_t len = 1; len <= 260; len++) {
    for (size_t k = 0; k < len; k++)
      buf[k] = (k % 7 == 6) ? ' ' : (char)('a' + k % 26);
    mismatch += !same_as_generic(buf, len, 1000, 0);
    mismatch += !same_as_generic(buf, len, 5, 2);
    for (size_t k = 0; k < len; k++) /* one long word, then digits */
      buf[k] = k < len / 2 ? (char)('A' + k % 26) : (char)('0' + k % 10);
    mismatch += !same_as_generic(buf, len, 1000, 0);
    mismatch += !same_as_generic(buf, len, 3, 1);
    for (size_t k = 0; k < len; k++) /* whitespace and newlines only */
      buf[k] = k % 3 ? ' ' : '\n';
    mismatch += !same_as_generic(buf, len, 2, 0);
  }
  /* A word boundary, a sentence end and a paragraph break exactly at 64
   * and 128; letters and digits ending at 63 or continuing across. */
  static const char *at_edge[] = {" W", ". S", "\n\nP", ".\"\n\nQ", "aaaaaaaaaaaaaaaaa",
                                  "12345", "\xC3\xA9\xC3\xA9"};
  for (size_t e = 0; e < sizeof at_edge / sizeof at_edge[0]; e++)
    for (size_t edge = 64; edge <= 128; edge += 64)
      for (size_t back = 0; back <= 3; back++) {
        size_t pl = strlen(at_edge[e]), start = edge - back, len = 0;
        while (len < start) {
          buf[len] = (len % 5 == 4) ? ' ' : 'w';
          len++;
        }
        memcpy(buf + len, at_edge[e], pl);
        len += pl;
        for (size_t k = 0; k < 100; k++) /* two more blocks of words */
          buf[len++] = (k % 6 == 5) ? ' ' : 'z';
        for (uint32_t max = 1; max <= 60; max += 3)
          mismatch += !same_as_generic(buf, len, max, max / 3);
        mismatch += !same_as_generic(buf, len, 1000, 0);
      }
  /* Non-ASCII text makes the fast path try blocks less often (up to every
   * 16 blocks); ASCII after it of any length must still cut the same. */
  static char mixed[3000];
  for (size_t cjk = 1; cjk <= 700; cjk += 37) {
    size_t len = 0;
    for (size_t k = 0; k < cjk; k++) {
      memcpy(mixed + len, k % 9 == 8 ? "\xE3\x80\x82" : "\xE6\x97\xA5", 3);
      len += 3;
    }
    for (size_t k = 0; k < 600 && len < sizeof mixed; k++)
      mixed[len++] = (k % 7 == 6) ? ' ' : (k % 50 == 48) ? '.' : (char)('a' + k % 26);
    mismatch += !same_as_generic(mixed, len, 1000, 0);
    mismatch += !same_as_generic(mixed, len, 3000, 0);
    mismatch += !same_as_generic(mixed, len, 37, 11);
  }
  CHECK_EQ_INT(mismatch, 0);
}

/* Longer ASCII-only texts (every block eligible for the block step) with
 * budgets from tiny to larger than the text, fast against generic. */
static void test_random_ascii(void) {
  static const char *pieces[] = {
      "a", "bc", "def", "word", "Longer", "abcdefghijklm", "abcdefghijklmnopqrstu",
      "12", "34567", "1234567890", ".", ",", "!", "?", "\"", ")", "]", "'", "-",
      " ", " ", " ", " ", " ", "  ", "\n", "\n\n", "\t", "\r\n", " \n \n",
      ". The", "? a", ".\" B", "e.g. so", "\x01",
  };
  static char buf[6000];
  uint32_t r = 77u;
#define RND() (r ^= r << 13, r ^= r >> 17, r ^= r << 5, r)
  int mismatch = 0;
  for (int it = 0; it < 600 && mismatch < 3; it++) {
    size_t target = RND() % sizeof buf, n = 0;
    size_t np = sizeof pieces / sizeof pieces[0];
    while (n < target) {
      const char *p = pieces[RND() % np];
      size_t l = strlen(p);
      if (n + l > sizeof buf)
        break;
      memcpy(buf + n, p, l);
      n += l;
    }
    uint32_t kind = RND() % 3;
    uint32_t max = 1 + RND() % (kind == 0 ? 8 : kind == 1 ? 100 : 2000);
    uint32_t with_ov = RND() % 2;
    uint32_t ov = with_ov ? RND() % max : 0;
    mismatch += !same_as_generic(buf, n, max, ov);
  }
#undef RND
  CHECK_EQ_INT(mismatch, 0);
}

/* max_chunks bounds the chunk list on both paths: exactly the limit is
 * fine, one more chunk is CTXD_ELIMIT with nothing returned. */
static void test_max_chunks(void) {
  const char *text = "one two three four five six";
  chunk_opts o = {1, 0, 6};
  chunk_span *sp = NULL;
  size_t n = 0;
  ctxd_error e;
  CHECK_EQ_INT(chunk_text(text, strlen(text), &o, tok_estimator(), &sp, &n, &e), 0);
  CHECK_EQ_INT(n, 6);
  free(sp);
  o.max_chunks = 5;
  sp = NULL;
  n = 0;
  CHECK_EQ_INT(chunk_text(text, strlen(text), &o, tok_estimator(), &sp, &n, &e),
               CTXD_ELIMIT);
  CHECK(sp == NULL && n == 0);
  CHECK(strstr(e.msg, "more than 5 chunks") != NULL);
  /* The generic path, through a tokenizer that is not the estimator. */
  tok other = *tok_estimator();
  CHECK_EQ_INT(chunk_text(text, strlen(text), &o, &other, &sp, &n, &e), CTXD_ELIMIT);
  o.max_chunks = 6;
  CHECK_EQ_INT(chunk_text(text, strlen(text), &o, &other, &sp, &n, &e), 0);
  CHECK_EQ_INT(n, 6);
  free(sp);
}

/* A tokenizer that counts whitespace (as GPT-2 does: "\n\n" is a token): a
 * text of only whitespace over max_tokens is one chunk. The generic path
 * used to read past the end and cut beyond it (found by fuzz_chunk). */
static uint64_t bytes_count(const tok *t, const char *s, size_t n) {
  (void)t;
  (void)s;
  return n;
}

static void test_whitespace_only(void) {
  static const tok bytes = {"bytes", bytes_count, NULL};
  const char *texts[] = {"\n\n\n\n\n\n\n", " \t \r\n  ", "  "};
  for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
    chunk_opts o = {.max_tokens = 1};
    chunk_span *sp = NULL;
    size_t n = 0;
    ctxd_error e = {0};
    size_t len = strlen(texts[i]);
    CHECK_EQ_INT(chunk_text(texts[i], len, &o, &bytes, &sp, &n, &e), 0);
    CHECK_EQ_INT(n, 1);
    CHECK(sp[0].byte_start == 0 && sp[0].byte_end == len && sp[0].tokens == len);
    free(sp);
  }
}

int main(void) {
  test_whitespace_only();
  test_max_chunks();
  test_preference();
  test_long_words();
  test_oversize_char();
  test_edges();
  test_overlap();
  test_bad_options();
  test_random();
  test_fill();
  test_block_edges();
  test_block_lengths();
  test_random_ascii();
  return check_report("chunk");
}
