/* test_tok.c - the estimate-v1 rule, case by case, its additivity at word
 * boundaries (the chunker relies on it), and its tokens-per-word ratio on
 * English prose. */
#include <stdint.h>
#include <string.h>

#include "check.h"
#include "tok.h"

static uint64_t cnt(const char *s) {
  return tok_count(tok_estimator(), s, strlen(s));
}

static void test_rule(void) {
  CHECK_EQ_STR(tok_estimator()->name, "estimate-v1");
  CHECK(tok_estimator() == tok_estimator());
  CHECK_EQ_INT(cnt(""), 0);
  CHECK_EQ_INT(cnt(" \t\r\n\n  "), 0);           /* whitespace is free */
  CHECK_EQ_INT(cnt("a"), 1);
  CHECK_EQ_INT(cnt("the"), 1);
  CHECK_EQ_INT(cnt("abcdefgh"), 1);              /* up to 8 letters: 1 */
  CHECK_EQ_INT(cnt("abcdefghi"), 2);             /* 9..16: 2 */
  CHECK_EQ_INT(cnt("abcdefghijklmnop"), 2);
  CHECK_EQ_INT(cnt("abcdefghijklmnopq"), 3);
  CHECK_EQ_INT(cnt("The quick brown fox"), 4);
  CHECK_EQ_INT(cnt("1"), 1);                     /* digits: groups of 3 */
  CHECK_EQ_INT(cnt("123"), 1);
  CHECK_EQ_INT(cnt("1234"), 2);
  CHECK_EQ_INT(cnt("1234567"), 3);
  CHECK_EQ_INT(cnt("cafe2go"), 3);               /* runs break at class changes */
  CHECK_EQ_INT(cnt("..."), 3);                   /* each symbol 1 */
  CHECK_EQ_INT(cnt("Hello, world!"), 4);
  CHECK_EQ_INT(cnt("don't"), 3);                 /* don ' t */
  CHECK_EQ_INT(cnt("caf\xC3\xA9"), 2);           /* caf + é */
  CHECK_EQ_INT(cnt("\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E"), 3); /* 日本語 */
  CHECK_EQ_INT(cnt("\xF0\x9F\x98\x80"), 2);      /* a 4-byte emoji */
  CHECK_EQ_INT(cnt("\x01\x7F"), 2);              /* controls count as symbols */
}

/* Counts add up across any split at a position not inside a letter/digit
 * run, and a split inside a run never lowers the total. */
static void test_additive(void) {
  const char *s = "Chunking 1234567 documents, carefully: caf\xC3\xA9 \xE6\x97\xA5"
                  "\xE6\x9C\xAC!  Antidisestablishmentarianism rules.\n\nEnd";
  size_t n = strlen(s);
  const tok *t = tok_estimator();
  uint64_t total = tok_count(t, s, n);
  for (size_t k = 0; k <= n; k++) {
    if (k < n && (s[k] & 0xC0) == 0x80)
      continue; /* only character boundaries */
    uint64_t a = tok_count(t, s, k), b = tok_count(t, s + k, n - k);
    int inside_run = k > 0 && k < n &&
                     tok_est_class[(unsigned char)s[k - 1]] == tok_est_class[(unsigned char)s[k]] &&
                     (tok_est_class[(unsigned char)s[k]] == TOK_EST_LETTER ||
                      tok_est_class[(unsigned char)s[k]] == TOK_EST_DIGIT);
    if (inside_run)
      CHECK(a + b >= total);
    else
      CHECK_EQ_INT(a + b, total);
  }
}

/* English prose: BPE vocabularies of the GPT-2/Llama family give about 1.3
 * tokens per word; the estimator should land near that. */
static void test_prose_ratio(void) {
  const char *p =
      "The jury further said in term-end presentments that the City Executive "
      "Committee, which had over-all charge of the election, deserves the "
      "praise and thanks of the City of Atlanta for the manner in which the "
      "election was conducted. Only a relative handful of such reports was "
      "received, the jury said, considering the widespread interest in the "
      "election, the number of voters and the size of this city. It "
      "recommended that Fulton legislators act to have these laws studied and "
      "revised to the end of modernizing and improving them.";
  size_t words = 0;
  for (const char *q = p; *q; q++)
    if (*q != ' ' && (q == p || q[-1] == ' '))
      words++;
  double ratio = (double)cnt(p) / (double)words;
  CHECK(ratio > 1.1 && ratio < 1.5);
}

int main(void) {
  test_rule();
  test_additive();
  test_prose_ratio();
  return check_report("tok");
}
