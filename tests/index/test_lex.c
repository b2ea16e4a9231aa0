/* test_lex.c - the lexical analyser: splitting, folding, apostrophes, CJK,
 * term cuts, byte ranges, lex_terms counting, and BM25 against a worked
 * example computed by hand. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "lex.h"

/* All terms of s joined by '|'. */
static void terms_of(const char *s, char *out, size_t cap) {
  lex_iter it;
  char t[LEX_TERM_MAX];
  size_t n, o = 0;
  lex_iter_init(&it, s, strlen(s));
  out[0] = 0;
  while (lex_next(&it, t, &n, NULL, NULL)) {
    if (o && o + 1 < cap) out[o++] = '|';
    if (o + n + 1 >= cap) break;
    memcpy(out + o, t, n);
    o += n;
    out[o] = 0;
  }
}

#define EXPECT_TERMS(in, want)          \
  do {                                  \
    char got_[1024];                    \
    terms_of(in, got_, sizeof got_);    \
    CHECK_EQ_STR(got_, want);           \
  } while (0)

static void test_split_fold(void) {
  EXPECT_TERMS("Hello, World! 42 times.", "hello|world|42|times");
  EXPECT_TERMS("  --  ", "");
  EXPECT_TERMS("", "");
  EXPECT_TERMS("e-mail x_y a.b", "e|mail|x|y|a|b");
  EXPECT_TERMS("Ünïcödé ÀÉÎ", "ünïcödé|àéî");
  EXPECT_TERMS("ΑΘΗΝΑ Москва", "αθηνα|москва");
  EXPECT_TERMS("Łódź ŒUVRE", "łódź|œuvre");
  EXPECT_TERMS("ＡＢＣ", "ａｂｃ");
  EXPECT_TERMS("a\xe2\x80\x94" "b \xe2\x80\x9cq\xe2\x80\x9d", "a|b|q"); /* em dash, quotes */
  EXPECT_TERMS("naïve café", "naïve|café");
  EXPECT_TERMS("x\xc2\xa0y", "x|y"); /* no-break space */
  EXPECT_TERMS("go\xf0\x9f\x98\x80go", "go|go");  /* emoji separates */
}

static void test_apostrophes(void) {
  EXPECT_TERMS("don't", "dont");
  EXPECT_TERMS("Brown's house", "brown|house");
  EXPECT_TERMS("Brown\xe2\x80\x99s", "brown");
  EXPECT_TERMS("'quoted' rock'n'roll", "quoted|rocknroll");
  EXPECT_TERMS("it's", "it");
  EXPECT_TERMS("the boys' toys", "the|boys|toys");
  EXPECT_TERMS("o'", "o");
  EXPECT_TERMS("James's", "james");
}

static void test_cjk(void) {
  EXPECT_TERMS("東京タワー", "東|京|タ|ワ|ー");
  EXPECT_TERMS("abc東x", "abc|東|x");
  EXPECT_TERMS("한국어 문장", "한국어|문장");
}

static void test_ranges_and_cut(void) {
  const char *s = "  Foo's bar";
  lex_iter it;
  char t[LEX_TERM_MAX];
  size_t n, a, b;
  lex_iter_init(&it, s, strlen(s));
  CHECK(lex_next(&it, t, &n, &a, &b));
  CHECK_EQ_INT(n, 3);
  CHECK_EQ_INT(a, 2);
  CHECK_EQ_INT(b, 7);
  CHECK(lex_next(&it, t, &n, &a, &b));
  CHECK_EQ_INT(a, 8);
  CHECK_EQ_INT(b, 11);
  CHECK(!lex_next(&it, t, &n, &a, &b));

  char longw[200];
  memset(longw, 'a', 150);
  longw[150] = 0;
  lex_iter_init(&it, longw, 150);
  CHECK(lex_next(&it, t, &n, &a, &b));
  CHECK_EQ_INT(n, LEX_TERM_MAX);
  CHECK_EQ_INT(b, 150);
  CHECK(!lex_next(&it, t, &n, NULL, NULL));

  /* A 2-byte character straddling the cut is left out whole. */
  char mixed[200];
  memset(mixed, 'a', 63);
  memcpy(mixed + 63, "\xc3\xa9zz", 5);
  lex_iter_init(&it, mixed, strlen(mixed));
  CHECK(lex_next(&it, t, &n, NULL, NULL));
  CHECK_EQ_INT(n, 63);
}

static void test_terms(void) {
  lex_tf *tf;
  size_t n;
  uint32_t len;
  CHECK_EQ_INT(lex_terms("b a B c a a", 11, &tf, &n, &len, NULL), 0);
  CHECK_EQ_INT(n, 3);
  CHECK_EQ_INT(len, 6);
  CHECK(tf[0].len == 1 && tf[0].term[0] == 'a' && tf[0].tf == 3);
  CHECK(tf[1].len == 1 && tf[1].term[0] == 'b' && tf[1].tf == 2);
  CHECK(tf[2].len == 1 && tf[2].term[0] == 'c' && tf[2].tf == 1);
  free(tf);
  CHECK_EQ_INT(lex_terms("...", 3, &tf, &n, &len, NULL), 0);
  CHECK(tf == NULL && n == 0 && len == 0);

  /* Many distinct terms: the table grows. */
  size_t cap = 5000 * 8;
  char *big = malloc(cap);
  size_t o = 0;
  for (int i = 0; i < 5000; i++) o += (size_t)sprintf(big + o, "w%d ", i % 3000);
  CHECK_EQ_INT(lex_terms(big, o, &tf, &n, &len, NULL), 0);
  CHECK_EQ_INT(n, 3000);
  CHECK_EQ_INT(len, 5000);
  uint64_t sum = 0;
  for (size_t i = 0; i < n; i++) sum += tf[i].tf;
  CHECK_EQ_INT(sum, 5000);
  for (size_t i = 1; i < n; i++) {
    size_t m = tf[i - 1].len < tf[i].len ? tf[i - 1].len : tf[i].len;
    int c = memcmp(tf[i - 1].term, tf[i].term, m);
    CHECK(c < 0 || (c == 0 && tf[i - 1].len < tf[i].len));
  }
  free(tf);
  free(big);
}

/* Worked example: 3 chunks, query "cat".
 *   d1 = "cat sat" (dl 2, tf 1), d2 = "cat cat dog" (dl 3, tf 2), d3 = "dog" (dl 1)
 *   N = 3, df = 2, avgdl = 2.
 *   idf = ln(1 + (3 - 2 + 0.5) / (2 + 0.5)) = ln(1.6) = 0.4700036292
 *   d1: 1 * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 2/2)) = 2.2 / 2.2 = 1.0
 *       score 0.4700036292
 *   d2: 2 * 2.2 / (2 + 1.2 * (0.25 + 0.75 * 3/2)) = 4.4 / 3.65 = 1.2054794521
 *       score 0.5665797174 */
static void test_bm25(void) {
  double idf = lex_bm25_idf(3, 2);
  CHECK(fabs(idf - 0.4700036292) < 1e-9);
  lex_bm25 p = {LEX_BM25_K1, LEX_BM25_B};
  CHECK(fabs(lex_bm25_tf(&p, 1, 2, 2.0) - 1.0) < 1e-12);
  CHECK(fabs(idf * lex_bm25_tf(&p, 2, 3, 2.0) - 0.5665797174) < 1e-9);
  CHECK(fabs(lex_bm25_tf(NULL, 2, 3, 2.0) - 1.2054794521) < 1e-9);
  CHECK(lex_bm25_idf(10, 10) > 0);
  CHECK(lex_bm25_idf(10, 1) > lex_bm25_idf(10, 5));
}

int main(void) {
  test_split_fold();
  test_apostrophes();
  test_cjk();
  test_ranges_and_cut();
  test_terms();
  test_bm25();
  return check_report("lex");
}
