/* lex.c - the lexical analyser and the BM25 formula (the rule is in lex.h).
 *
 * One pass over the bytes: ASCII is classified by table, other characters
 * are decoded and looked up in a short sorted table of non-word ranges. */
#include "lex.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* 0 = separator, 1 = word character, for ASCII. */
static const uint8_t ascii_word[128] = {
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1,
    ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1,
    ['G'] = 1, ['H'] = 1, ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1,
    ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
    ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
    ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1,
    ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
    ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

/* Non-ASCII code points that separate terms (inclusive ranges, sorted). */
static const uint32_t sep_ranges[][2] = {
    {0x0080, 0x00A9}, /* C1 controls, NBSP, Latin-1 punctuation and signs */
    {0x00AB, 0x00B4}, /* (keeps feminine ordinal U+00AA and micro U+00B5) */
    {0x00B6, 0x00B9},
    {0x00BB, 0x00BF},
    {0x00D7, 0x00D7}, /* multiplication sign */
    {0x00F7, 0x00F7}, /* division sign */
    {0x037E, 0x037E}, /* Greek question mark */
    {0x0387, 0x0387},
    {0x055A, 0x055F}, /* Armenian punctuation */
    {0x0589, 0x058A},
    {0x05BE, 0x05BE},
    {0x05C0, 0x05C0},
    {0x05C3, 0x05C3},
    {0x05F3, 0x05F4},
    {0x060C, 0x060D}, /* Arabic comma, date separator */
    {0x061B, 0x061F},
    {0x066A, 0x066D},
    {0x06D4, 0x06D4},
    {0x0964, 0x0965}, /* Devanagari danda */
    {0x0E4F, 0x0E4F},
    {0x0E5A, 0x0E5B},
    {0x1680, 0x1680}, /* Ogham space */
    {0x2000, 0x2BFF}, /* spaces, punctuation, super/subscripts, currency,
                       * letterlike, arrows, math, technical, box drawing,
                       * shapes, dingbats, misc symbols and arrows */
    {0x2E00, 0x2E7F}, /* supplemental punctuation */
    {0x3000, 0x303F}, /* CJK symbols and punctuation */
    {0x30FB, 0x30FB}, /* katakana middle dot */
    {0xD800, 0xDFFF}, /* surrogates (never in valid UTF-8) */
    {0xE000, 0xF8FF}, /* private use */
    {0xFD3E, 0xFD3F},
    {0xFE10, 0xFE1F}, /* vertical forms */
    {0xFE30, 0xFE6F}, /* CJK compatibility forms, small form variants */
    {0xFEFF, 0xFEFF}, /* byte-order mark */
    {0xFF00, 0xFF0F}, /* fullwidth ASCII punctuation */
    {0xFF1A, 0xFF20},
    {0xFF3B, 0xFF40},
    {0xFF5B, 0xFF65},
    {0xFFF0, 0xFFFF}, /* specials */
    {0x1F000, 0x1FAFF}, /* mahjong, cards, emoji, symbols and pictographs */
    {0xE0000, 0xE007F}, /* tags */
};

static int is_sep_cp(uint32_t cp) {
  size_t lo = 0, hi = sizeof sep_ranges / sizeof sep_ranges[0];
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < sep_ranges[mid][0])
      hi = mid;
    else if (cp > sep_ranges[mid][1])
      lo = mid + 1;
    else
      return 1;
  }
  return 0;
}

/* Han ideographs and kana: one term per character. */
static int is_single_cp(uint32_t cp) {
  return (cp >= 0x3040 && cp <= 0x30FF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
         (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0xF900 && cp <= 0xFAFF) ||
         (cp >= 0x20000 && cp <= 0x3FFFF);
}

/* Simple one-to-one lower-casing of the scripts lex.h names. */
static uint32_t fold_cp(uint32_t cp) {
  if (cp < 0x80) return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
  if (cp >= 0xC0 && cp <= 0xDE && cp != 0xD7) return cp + 32;
  if (cp >= 0x100 && cp <= 0x17F) {
    if (cp == 0x130) return 'i'; /* dotted capital I */
    if (cp == 0x178) return 0xFF;
    if ((cp >= 0x100 && cp <= 0x137) || (cp >= 0x14A && cp <= 0x177))
      return cp | 1;
    if ((cp >= 0x139 && cp <= 0x148) || (cp >= 0x179 && cp <= 0x17E))
      return (cp & 1) ? cp + 1 : cp;
    return cp;
  }
  if (cp >= 0x391 && cp <= 0x3A9 && cp != 0x3A2) return cp + 32;
  if (cp >= 0x386 && cp <= 0x38F) {
    if (cp == 0x386) return 0x3AC;
    if (cp >= 0x388 && cp <= 0x38A) return cp + 37;
    if (cp == 0x38C) return 0x3CC;
    if (cp == 0x38E || cp == 0x38F) return cp + 63;
    return cp;
  }
  if (cp >= 0x410 && cp <= 0x42F) return cp + 32;
  if (cp >= 0x400 && cp <= 0x40F) return cp + 80;
  if (cp >= 0xFF21 && cp <= 0xFF3A) return cp + 32;
  return cp;
}

/* Decode one character of valid UTF-8 at s[i]; *len = its byte length. */
static uint32_t decode(const unsigned char *s, size_t n, size_t i,
                       size_t *len) {
  unsigned c = s[i];
  if (c < 0x80) {
    *len = 1;
    return c;
  }
  if (c < 0xE0 && i + 1 < n) {
    *len = 2;
    return ((uint32_t)(c & 0x1F) << 6) | (s[i + 1] & 0x3F);
  }
  if (c < 0xF0 && i + 2 < n) {
    *len = 3;
    return ((uint32_t)(c & 0x0F) << 12) | ((uint32_t)(s[i + 1] & 0x3F) << 6) |
           (s[i + 2] & 0x3F);
  }
  if (i + 3 < n) {
    *len = 4;
    return ((uint32_t)(c & 0x07) << 18) | ((uint32_t)(s[i + 1] & 0x3F) << 12) |
           ((uint32_t)(s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F);
  }
  *len = 1; /* truncated input: treat the byte as a separator */
  return 0x2000;
}

static size_t encode(uint32_t cp, char *out) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

enum { K_SEP = 0, K_WORD = 1, K_SINGLE = 2, K_APOS = 3 };

static int kind_of(uint32_t cp) {
  if (cp < 0x80) return cp == '\'' ? K_APOS : ascii_word[cp];
  if (cp == 0x2019) return K_APOS;
  if (is_single_cp(cp)) return K_SINGLE;
  return is_sep_cp(cp) ? K_SEP : K_WORD;
}

void lex_iter_init(lex_iter *it, const char *s, size_t n) {
  it->s = s;
  it->n = n;
  it->pos = 0;
}

int lex_next(lex_iter *it, char term[LEX_TERM_MAX], size_t *len, size_t *start,
             size_t *end) {
  const unsigned char *s = (const unsigned char *)it->s;
  size_t n = it->n, i = it->pos, cl;
  uint32_t cp = 0;
  int k = K_SEP;
  /* Skip to the first word character. The ASCII fast path avoids decoding. */
  while (i < n) {
    if (s[i] < 0x80) {
      if (ascii_word[s[i]]) {
        cp = s[i];
        cl = 1;
        k = K_WORD;
        break;
      }
      i++;
      continue;
    }
    cp = decode(s, n, i, &cl);
    k = kind_of(cp);
    if (k == K_WORD || k == K_SINGLE) break;
    i += cl;
  }
  if (i >= n) {
    it->pos = n;
    return 0;
  }
  size_t t0 = i, tl = 0;
  int cut = 0; /* the term reached LEX_TERM_MAX: append nothing more */
  if (k == K_SINGLE) {
    tl = encode(fold_cp(cp), term);
    i += cl;
    goto done;
  }
  for (;;) {
    /* cp (length cl) at i is a word character: append it folded. */
    if (cut) {
    } else if (cp < 0x80) {
      if (tl < LEX_TERM_MAX)
        term[tl++] = (char)(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp);
      else
        cut = 1;
    } else {
      char buf[4];
      size_t bl = encode(fold_cp(cp), buf);
      if (tl + bl <= LEX_TERM_MAX) {
        memcpy(term + tl, buf, bl);
        tl += bl;
      } else {
        cut = 1;
      }
    }
    i += cl;
    if (i >= n) break;
    /* Next character. */
    if (s[i] < 0x80) {
      cp = s[i];
      cl = 1;
      k = cp == '\'' ? K_APOS : ascii_word[cp];
    } else {
      cp = decode(s, n, i, &cl);
      k = kind_of(cp);
    }
    if (k == K_WORD) continue;
    if (k != K_APOS) break;
    /* An apostrophe: joins only when a word character follows. */
    size_t j = i + cl, cl2;
    if (j >= n) break;
    uint32_t cp2 = s[j] < 0x80 ? s[j] : decode(s, n, j, &cl2);
    if (s[j] < 0x80) cl2 = 1;
    if (kind_of(cp2) != K_WORD) break;
    /* Possessive 's at the end of the word: drop both. */
    if ((cp2 == 's' || cp2 == 'S')) {
      size_t after = j + 1;
      int ends = after >= n;
      if (!ends) {
        size_t cl3;
        uint32_t cp3 = s[after] < 0x80 ? s[after] : decode(s, n, after, &cl3);
        int k3 = kind_of(cp3);
        ends = k3 != K_WORD && k3 != K_SINGLE;
      }
      if (ends) {
        i = after;
        break;
      }
    }
    i = j;
    cp = cp2;
    cl = cl2;
  }
done: /* the appends above copy whole characters only */
  it->pos = i;
  *len = tl;
  if (start) *start = t0;
  if (end) *end = i;
  return 1;
}

/* lex_terms: count terms in an open-addressing table, then sort. */
typedef struct slot {
  uint32_t idx; /* 1 + index into the lex_tf array; 0 = empty */
  uint32_t hash;
} slot;

static uint32_t term_hash(const char *t, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)t[i]) * 16777619u;
  return h;
}

static int tf_cmp(const void *a, const void *b) {
  const lex_tf *x = a, *y = b;
  size_t m = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->term, y->term, m);
  if (c) return c;
  return (int)x->len - (int)y->len;
}

int lex_terms(const char *s, size_t n, lex_tf **out, size_t *n_out,
              uint32_t *length, ctxd_error *e) {
  size_t cap = 64, used = 0, nslots = 128;
  lex_tf *tfs = malloc(cap * sizeof *tfs);
  slot *slots = calloc(nslots, sizeof *slots);
  uint64_t total = 0;
  *out = NULL;
  *n_out = 0;
  *length = 0;
  if (!tfs || !slots) goto nomem;
  lex_iter it;
  lex_iter_init(&it, s, n);
  char term[LEX_TERM_MAX];
  size_t tl;
  while (lex_next(&it, term, &tl, NULL, NULL)) {
    total++;
    uint32_t h = term_hash(term, tl);
    size_t m = nslots - 1, p = h & m;
    for (;;) {
      if (!slots[p].idx) break;
      if (slots[p].hash == h) {
        lex_tf *t = &tfs[slots[p].idx - 1];
        if (t->len == tl && memcmp(t->term, term, tl) == 0) break;
      }
      p = (p + 1) & m;
    }
    if (slots[p].idx) {
      tfs[slots[p].idx - 1].tf++;
      continue;
    }
    if (used == cap) {
      lex_tf *nt = realloc(tfs, cap * 2 * sizeof *nt);
      if (!nt) goto nomem;
      tfs = nt;
      cap *= 2;
    }
    memcpy(tfs[used].term, term, tl);
    tfs[used].len = (uint8_t)tl;
    tfs[used].tf = 1;
    used++;
    slots[p].idx = (uint32_t)used;
    slots[p].hash = h;
    if (used * 2 > nslots) { /* grow and rehash */
      size_t ns = nslots * 2;
      slot *nsl = calloc(ns, sizeof *nsl);
      if (!nsl) goto nomem;
      for (size_t q = 0; q < nslots; q++) {
        if (!slots[q].idx) continue;
        size_t r = slots[q].hash & (ns - 1);
        while (nsl[r].idx) r = (r + 1) & (ns - 1);
        nsl[r] = slots[q];
      }
      free(slots);
      slots = nsl;
      nslots = ns;
    }
  }
  free(slots);
  if (used == 0) {
    free(tfs);
    return 0;
  }
  qsort(tfs, used, sizeof *tfs, tf_cmp);
  *out = tfs;
  *n_out = used;
  *length = total > UINT32_MAX ? UINT32_MAX : (uint32_t)total;
  return 0;
nomem:
  free(tfs);
  free(slots);
  return ctxd_seterr(e, CTXD_ENOMEM, "out of memory counting terms");
}

double lex_bm25_idf(uint64_t N, uint64_t df) {
  if (df > N) df = N;
  return log(1.0 + ((double)N - (double)df + 0.5) / ((double)df + 0.5));
}

double lex_bm25_tf(const lex_bm25 *p, uint32_t tf, uint32_t dl, double avgdl) {
  double k1 = p ? p->k1 : LEX_BM25_K1, b = p ? p->b : LEX_BM25_B;
  if (avgdl <= 0) avgdl = 1;
  double t = (double)tf;
  return t * (k1 + 1.0) / (t + k1 * (1.0 - b + b * (double)dl / avgdl));
}
