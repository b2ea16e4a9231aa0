/* chunk.c - the chunker: cuts a document into segments of at most max_tokens,
 * at the strongest boundary that fits (paragraph > sentence > word > inside
 * a word). The built-in estimator gets a single-pass fast path; any other
 * tokenizer goes through a generic path that calls tok_count() on spans.
 *
 * Boundaries. A boundary is the start of a non-whitespace character that
 * follows ASCII whitespace, or that follows a CJK full stop (U+3002, U+FF01,
 * U+FF1F) directly. Its level is:
 *   - paragraph: the whitespace before it holds two or more '\n';
 *   - sentence: the whitespace follows '.', '!' or '?' (optionally followed
 *     by closing ' " ) ]), or a CJK full stop precedes it - unless the next
 *     word starts with a lowercase ASCII letter ("e.g. this" is one sentence);
 *   - word: otherwise.
 * Whitespace before a boundary ends the chunk it follows, so every chunk but
 * the first starts at a non-whitespace character.
 *
 * Cutting. A chunk starting at cs (after a previous chunk ending at pe) ends
 * at the end of the text if that fits; otherwise at the latest boundary of
 * the highest level among those in (pe, ...] whose span from cs fits and
 * holds some non-whitespace; failing that, at the latest character boundary
 * that fits inside the current word; failing that (overlap left no room),
 * the overlap is dropped and the chunk starts at pe. A single character
 * whose own cost exceeds max_tokens (with the estimator: a 4-byte character
 * when max_tokens == 1) becomes a chunk of its own, with the whitespace after
 * it (and, first in the text, the leading whitespace before it); with a
 * tokenizer that counts whitespace, leading whitespace over max_tokens
 * likewise stays whole with the first character, and a text of only
 * whitespace is one chunk: the only cases where a chunk exceeds max_tokens.
 *
 * Overlap. The next chunk starts at the earliest boundary w in (cs, pe] with
 * tokens(w..pe) <= overlap_tokens, or at pe when there is none. */
#include "chunk.h"

#include <stdlib.h>
#include <string.h>

#include "utf8.h"

enum { LV_WORD = 0, LV_SENT = 1, LV_PARA = 2, LV_END = 3 };

/* Sentence state between characters: nothing pending, an ASCII terminator
 * seen (whitespace must follow), or a sentence end confirmed. */
enum { SENT_NONE = 0, SENT_TERM = 1, SENT_END = 2 };

typedef struct span_vec {
  chunk_span *v;
  size_t n, cap;
  size_t limit; /* 0: none */
} span_vec;

static int span_push(span_vec *sv, uint64_t a, uint64_t b, uint64_t tokens) {
  if (sv->limit && sv->n == sv->limit)
    return CTXD_ELIMIT;
  if (sv->n == sv->cap) {
    size_t cap = sv->cap ? sv->cap * 2 : 16;
    chunk_span *v = realloc(sv->v, cap * sizeof *v);
    if (!v)
      return CTXD_ENOMEM;
    sv->v = v;
    sv->cap = cap;
  }
  sv->v[sv->n].byte_start = a;
  sv->v[sv->n].byte_end = b;
  sv->v[sv->n].tokens = tokens > UINT32_MAX ? UINT32_MAX : (uint32_t)tokens;
  sv->n++;
  return 0;
}

static int is_term(unsigned char b) { return b == '.' || b == '!' || b == '?'; }
static int is_closer(unsigned char b) {
  return b == '"' || b == '\'' || b == ')' || b == ']';
}

/* 1 if the 3-byte character at s[i] is 。！or ？ (caller checked length). */
static int is_cjk_term(const unsigned char *s, size_t i) {
  if (s[i] == 0xE3)
    return s[i + 1] == 0x80 && s[i + 2] == 0x82;
  if (s[i] == 0xEF)
    return s[i + 1] == 0xBC && (s[i + 2] == 0x81 || s[i + 2] == 0x9F);
  return 0;
}

static size_t char_len(unsigned char b) {
  return b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
}

/* Scanner state shared by both paths so they see the same boundaries. */
typedef struct bscan {
  int in_ws;  /* the previous character was whitespace */
  int sent;   /* SENT_* */
  unsigned nl; /* '\n' in the current whitespace run */
} bscan;

/* Level of the boundary at the character s[i] (non-whitespace), or -1. */
static inline int bscan_level(const bscan *b, unsigned char c) {
  if (!b->in_ws && b->sent != SENT_END)
    return -1;
  if (b->in_ws && b->nl >= 2)
    return LV_PARA;
  if (b->sent == SENT_END && !(c >= 'a' && c <= 'z'))
    return LV_SENT;
  return LV_WORD;
}

/* Update the sentence state after the non-whitespace character at s[i]. */
static inline void bscan_after_char(bscan *b, const unsigned char *s, size_t i,
                                    size_t len) {
  unsigned char c = s[i];
  b->in_ws = 0;
  if (len == 1)
    b->sent = is_term(c) ? SENT_TERM
              : (is_closer(c) && b->sent == SENT_TERM) ? SENT_TERM
                                                       : SENT_NONE;
  else
    b->sent = (len == 3 && is_cjk_term(s, i)) ? SENT_END : SENT_NONE;
}

static inline void bscan_space(bscan *b, unsigned char c) {
  if (!b->in_ws) {
    b->in_ws = 1;
    b->nl = 0;
    if (b->sent == SENT_TERM)
      b->sent = SENT_END;
  }
  b->nl += (c == '\n');
}

/* ---- fast path: the built-in estimator, one pass ---------------------- */

typedef struct fast {
  const unsigned char *s;
  size_t n;
  uint64_t max, overlap;
  span_vec out;
  size_t cs, pe;  /* current chunk start; end of the previous chunk */
  uint64_t t_cs;  /* running count at cs */
  size_t lv_pos[3]; /* latest boundary of each level and the count there */
  uint64_t lv_t[3];
  /* With overlap: every boundary after cs (ring buffer), to find where the
   * next chunk may start. At most max_tokens + 3 of them are live, since
   * each boundary is followed by a character costing at least 1. */
  size_t *rpos;
  uint64_t *rt;
  size_t rcap, rhead, rlen;
} fast;

enum { H_CONTINUE = 0, H_ACCEPT = 1, H_RESTART = 2 };

static void ring_push(fast *f, size_t pos, uint64_t t) {
  if (f->rlen == f->rcap) { /* cannot happen (see above); stay safe */
    f->rhead = (f->rhead + 1) & (f->rcap - 1);
    f->rlen--;
  }
  size_t k = (f->rhead + f->rlen) & (f->rcap - 1);
  f->rpos[k] = pos;
  f->rt[k] = t;
  f->rlen++;
}

/* Drop boundaries at or before pos: they can no longer start a chunk. */
static void ring_drop_upto(fast *f, size_t pos) {
  while (f->rlen && f->rpos[f->rhead] <= pos) {
    f->rhead = (f->rhead + 1) & (f->rcap - 1);
    f->rlen--;
  }
}

/* Where the chunk after one ending at b (count tb there) starts. */
static void overlap_start(const fast *f, size_t b, uint64_t tb, size_t *w,
                          uint64_t *tw) {
  *w = b;
  *tw = tb;
  if (!f->overlap)
    return;
  for (size_t k = f->rlen; k-- > 0;) {
    size_t idx = (f->rhead + k) & (f->rcap - 1);
    if (f->rpos[idx] > b)
      continue;
    if (f->rpos[idx] <= f->cs || tb - f->rt[idx] > f->overlap)
      break;
    *w = f->rpos[idx];
    *tw = f->rt[idx];
  }
}

/* Called when the character at o (count t_o before it, cost `cost`) does
 * not fit the current chunk. Cuts chunks until it fits (H_CONTINUE), or
 * restarts the chunk at o with a fresh letter/digit run (H_RESTART: the
 * caller recomputes the cost of o), or accepts it as a lone oversized
 * character (H_ACCEPT). */
static int fast_overflow(fast *f, size_t o, uint64_t t_o, uint64_t cost) {
  int rc;
  for (;;) {
    if (t_o + cost - f->t_cs <= f->max)
      return H_CONTINUE;
    int lv = LV_PARA;
    while (lv >= LV_WORD && !(f->lv_pos[lv] > f->pe && f->lv_t[lv] > f->t_cs))
      lv--;
    if (lv >= LV_WORD) {
      size_t b = f->lv_pos[lv], w;
      uint64_t tb = f->lv_t[lv], tw;
      if ((rc = span_push(&f->out, f->cs, b, tb - f->t_cs)))
        return rc;
      overlap_start(f, b, tb, &w, &tw);
      f->pe = b;
      f->cs = w;
      f->t_cs = tw;
      ring_drop_upto(f, w);
      continue;
    }
    if (o > f->pe && t_o > f->t_cs) { /* inside a word: last resort */
      size_t w;
      uint64_t tw;
      if ((rc = span_push(&f->out, f->cs, o, t_o - f->t_cs)))
        return rc;
      overlap_start(f, o, t_o, &w, &tw);
      f->pe = o;
      if (w == o)
        goto restart;
      /* The overlap holds the start of this word, so the run goes on. */
      f->cs = w;
      f->t_cs = tw;
      ring_drop_upto(f, w);
      continue;
    }
    if (f->cs < f->pe) /* here o == pe: the overlap left no room */
      goto restart;
    return H_ACCEPT;
  restart:
    f->cs = o;
    f->pe = o;
    f->t_cs = t_o;
    f->rlen = 0;
    return H_RESTART;
  }
}

#define SWAR_ONES(b) (0x0101010101010101ULL * (b))

/* End of the ASCII letter run that continues at s[j]. Eight bytes per step
 * (prose words are short, so this is usually one step and no per-byte
 * branches): a byte is a letter iff (b | 0x20) is in 'a'..'z' and b < 0x80,
 * tested with per-byte additions that cannot carry into the next byte. */
static inline size_t letter_run_end(const unsigned char *s, size_t j, size_t n) {
  while (j + 8 <= n) {
    uint64_t v;
    memcpy(&v, s + j, 8);
    uint64_t x = (v | SWAR_ONES(0x20)) & SWAR_ONES(0x7F);
    uint64_t ge_a = x + SWAR_ONES(0x80 - 'a');
    uint64_t gt_z = x + SWAR_ONES(0x80 - 'z' - 1);
    uint64_t letters = ge_a & ~gt_z & ~v & SWAR_ONES(0x80);
    if (letters != SWAR_ONES(0x80))
      return j + (size_t)__builtin_ctzll(~letters & SWAR_ONES(0x80)) / 8;
    j += 8;
  }
  while (j < n && tok_est_class[s[j]] == TOK_EST_LETTER)
    j++;
  return j;
}

/* Tokens of `len` more run characters when `ph` of the current group of k
 * are already consumed: the characters at group offset 0 cost 1 each. */
static inline uint64_t run_cost(unsigned ph, size_t len, unsigned k) {
  return (ph + len - 1 + k) / k - (ph ? 1 : 0);
}

/* ---- fast path, block step: 64 ASCII bytes at a time ------------------- *
 * Each byte of a block is classified at once into bitmasks (bit k = byte
 * k), and the block's tokens and boundaries are computed from the masks
 * with shifts, additions and popcounts instead of a walk over the bytes.
 * The step is taken only when the block is all ASCII and its tokens fit the
 * current chunk whole; then no cut can fall inside it and the result is
 * exactly what the byte-at-a-time loop would have produced: the same count,
 * the same latest boundary of each level, the same boundaries pushed for
 * overlap, the same scanner and run state at the end. Otherwise the block
 * goes through the byte-at-a-time loop. */

#define BLK 64

typedef struct blk_masks {
  uint64_t ws;     /* ASCII whitespace */
  uint64_t letter; /* A-Z a-z */
  uint64_t lower;  /* a-z */
  uint64_t digit;  /* 0-9 */
  uint64_t nl;     /* '\n' */
  uint64_t term;   /* . ! ? */
  uint64_t close;  /* " ' ) ] */
} blk_masks;

#if defined(__SSE2__)
#include <emmintrin.h>

/* Bytes of v in lo..lo+len-1 (v must be ASCII: signed compare after a
 * bias that maps lo to -128). */
static inline __m128i sse_range(__m128i v, int lo, int len) {
  return _mm_cmplt_epi8(_mm_add_epi8(v, _mm_set1_epi8((char)(0x80 - lo))),
                        _mm_set1_epi8((char)(-128 + len)));
}

static inline __m128i sse_eq(__m128i v, int c) {
  return _mm_cmpeq_epi8(v, _mm_set1_epi8((char)c));
}

static inline uint64_t sse_bits(__m128i x, int k) {
  return (uint64_t)(unsigned)_mm_movemask_epi8(x) << (16 * k);
}

/* 0 if p[0..64) holds a byte >= 0x80; else fills *m and returns 1. */
static inline int blk_classify(const unsigned char *p, blk_masks *m) {
  __m128i v[4];
  for (int k = 0; k < 4; k++)
    v[k] = _mm_loadu_si128((const __m128i *)(const void *)(p + 16 * k));
  if (_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(v[0], v[1]),
                                     _mm_or_si128(v[2], v[3]))))
    return 0;
  *m = (blk_masks){0};
  for (int k = 0; k < 4; k++) {
    __m128i x = v[k];
    m->ws |= sse_bits(_mm_or_si128(sse_range(x, 9, 5), sse_eq(x, ' ')), k);
    m->letter |= sse_bits(sse_range(_mm_or_si128(x, _mm_set1_epi8(0x20)), 'a', 26), k);
    m->lower |= sse_bits(sse_range(x, 'a', 26), k);
    m->digit |= sse_bits(sse_range(x, '0', 10), k);
    m->nl |= sse_bits(sse_eq(x, '\n'), k);
    m->term |= sse_bits(_mm_or_si128(_mm_or_si128(sse_eq(x, '.'), sse_eq(x, '!')),
                                     sse_eq(x, '?')), k);
    m->close |= sse_bits(_mm_or_si128(_mm_or_si128(sse_eq(x, '"'), sse_eq(x, '\'')),
                                      _mm_or_si128(sse_eq(x, ')'), sse_eq(x, ']'))), k);
  }
  return 1;
}
#else
/* Portable version: one byte at a time (same masks). */
static inline int blk_classify(const unsigned char *p, blk_masks *m) {
  for (int k = 0; k < BLK; k++)
    if (p[k] >= 0x80)
      return 0;
  *m = (blk_masks){0};
  for (int k = 0; k < BLK; k++) {
    unsigned char b = p[k];
    uint64_t bit = 1ULL << k;
    unsigned c = tok_est_class[b];
    if (c == TOK_EST_SPACE)
      m->ws |= bit;
    else if (c == TOK_EST_LETTER)
      m->letter |= bit;
    else if (c == TOK_EST_DIGIT)
      m->digit |= bit;
    if (b >= 'a' && b <= 'z')
      m->lower |= bit;
    if (b == '\n')
      m->nl |= bit;
    if (is_term(b))
      m->term |= bit;
    if (is_closer(b))
      m->close |= bit;
  }
  return 1;
}
#endif

static inline unsigned popc64(uint64_t x) {
#if defined(__POPCNT__)
  return (unsigned)__builtin_popcountll(x);
#else
  /* Without the popcnt instruction the builtin is a library call. */
  x = x - ((x >> 1) & 0x5555555555555555ULL);
  x = (x & 0x3333333333333333ULL) + ((x >> 2) & 0x3333333333333333ULL);
  x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0FULL;
  return (unsigned)((x * 0x0101010101010101ULL) >> 56);
#endif
}

static inline unsigned top_bit(uint64_t x) { /* x != 0 */
  return 63u - (unsigned)__builtin_clzll(x);
}

/* The positions of `in` at or after the lowest bit of m in each run of
 * consecutive set bits (m must lie inside `in`): adding m carries from its
 * lowest bit in a run through the rest of the run. */
static inline uint64_t fill_runs(uint64_t m, uint64_t in) {
  return (in & ~(in + m)) | m;
}

/* For each run of `in` holding a bit of m, the bit just after the run (m
 * inside `in`, or at bit 0 to stand for a run that began in the block
 * before: then bit 0 itself if it is not in `in`). */
static inline uint64_t after_runs(uint64_t m, uint64_t in) {
  return (in + m) & ~in;
}

/* Group starts (the costing characters) of the letter or digit runs of r,
 * whose k-th character from a group start begins the next group: `mk` has
 * bit p when r holds p-k+1..p. `cont`: the run before the block goes on
 * at bit 0 with `ph` characters of its group already taken. */
static inline uint64_t group_starts(uint64_t r, uint64_t mk, unsigned k, int cont,
                                    unsigned ph) {
  uint64_t g = r & ~(r << 1);
  if (cont && (r & 1)) {
    unsigned q = ph ? k - ph : 0; /* first group start of the run here */
    uint64_t need = (2ULL << q) - 1;
    g &= ~1ULL;
    if ((r & need) == need)
      g |= 1ULL << q;
  }
  for (uint64_t x = g; (x = (x << k) & mk) != 0;)
    g |= x;
  return g;
}

/* One block at s[i..i+64): 1 if taken (all state advanced), 0 if the block
 * must go byte by byte because its tokens do not fit, -1 because it holds
 * non-ASCII bytes. */
static inline int fast_block(fast *f, bscan *bs, unsigned *run, unsigned *ph,
                             uint64_t *t, size_t i) {
  blk_masks m;
  if (!blk_classify(f->s + i, &m))
    return -1;
  const uint64_t W = m.ws, L = m.letter, D = m.digit;

  /* Tokens: a letter run costs at offsets 0, 8, 16...; a digit run at 0, 3,
   * 6...; every other byte (a symbol here) costs 1. */
  uint64_t l2 = L & (L << 1), l4 = l2 & (l2 << 2), l8 = l4 & (l4 << 4);
  uint64_t d3 = D & (D << 1) & (D << 2);
  uint64_t GL = group_starts(L, l8, TOK_EST_LETTER_RUN, *run == TOK_EST_LETTER, *ph);
  uint64_t GD = group_starts(D, d3, TOK_EST_DIGIT_RUN, *run == TOK_EST_DIGIT, *ph);
  uint64_t TOK = GL | GD | ~(W | L | D);
  uint64_t nt = popc64(TOK);
  if (*t + nt - f->t_cs > f->max)
    return 0;

  /* Scanner state carried in from the byte before the block. */
  uint64_t in_ws = (uint64_t)(bs->in_ws != 0);
  uint64_t end_in = (uint64_t)(bs->sent == SENT_END);
  uint64_t term_in = (uint64_t)(!bs->in_ws && bs->sent == SENT_TERM);
  uint64_t nl1_in = (uint64_t)(bs->in_ws && bs->nl >= 1);
  uint64_t nl2_in = (uint64_t)(bs->in_ws && bs->nl >= 2);

  /* Sentence state: a terminator, then any closers directly after it. */
  uint64_t TS = m.term | fill_runs(((m.term << 1) | term_in) & m.close, m.close);
  /* Boundaries: non-whitespace after whitespace (or after a CJK stop, from
   * the block before). */
  uint64_t B = ~W & ((W << 1) | in_ws | end_in);
  uint64_t t0 = *t;
  if (B) {
    /* Sentence ends: after whitespace that follows a TS byte. */
    uint64_t SE = after_runs((W & ((TS << 1) | term_in)) | end_in, W);
    uint64_t PB = 0;
    if (m.nl | nl1_in) {
      /* Paragraphs: after whitespace holding two or more '\n'. */
      uint64_t seen = fill_runs(((m.nl << 1) | nl1_in) & W, W);
      PB = after_runs((m.nl & seen) | nl2_in, W);
    }
    uint64_t SL = (SE & ~m.lower) | PB;
    unsigned p = top_bit(B);
    f->lv_pos[LV_WORD] = i + p;
    f->lv_t[LV_WORD] = t0 + popc64(TOK & ((1ULL << p) - 1));
    if (SL) {
      p = top_bit(SL);
      f->lv_pos[LV_SENT] = i + p;
      f->lv_t[LV_SENT] = t0 + popc64(TOK & ((1ULL << p) - 1));
      if (PB) {
        p = top_bit(PB);
        f->lv_pos[LV_PARA] = i + p;
        f->lv_t[LV_PARA] = t0 + popc64(TOK & ((1ULL << p) - 1));
      }
    }
    if (f->overlap)
      for (uint64_t x = B; x; x &= x - 1) {
        p = (unsigned)__builtin_ctzll(x);
        ring_push(f, i + p, t0 + popc64(TOK & ((1ULL << p) - 1)));
      }
  }
  *t = t0 + nt;

  /* State after the block's last byte. */
  if (L >> 63) {
    *run = TOK_EST_LETTER;
    *ph = (BLK - top_bit(GL)) % TOK_EST_LETTER_RUN;
  } else if (D >> 63) {
    *run = TOK_EST_DIGIT;
    *ph = (BLK - top_bit(GD)) % TOK_EST_DIGIT_RUN;
  } else {
    *run = TOK_EST_SPACE;
  }
  if (W >> 63) {
    uint64_t nw = ~W;
    unsigned r = nw ? top_bit(nw) + 1 : 0; /* the trailing whitespace run */
    unsigned nl = popc64(m.nl & (~0ULL << r));
    int sent;
    if (r) {
      sent = (TS >> (r - 1)) & 1 ? SENT_END : SENT_NONE;
    } else {
      nl += bs->in_ws ? bs->nl : 0;
      sent = bs->sent != SENT_NONE ? SENT_END : SENT_NONE;
    }
    bs->in_ws = 1;
    bs->nl = nl;
    bs->sent = sent;
  } else {
    bs->in_ws = 0;
    bs->sent = (TS >> 63) ? SENT_TERM : SENT_NONE;
  }
  return 1;
}

static int chunk_fast(const char *text, size_t n, const chunk_opts *o,
                      span_vec *out) {
  fast f = {0};
  bscan bs = {0};
  const uint8_t *cls = tok_est_class;
  uint64_t t = 0;
  unsigned run = TOK_EST_SPACE, ph = 0;
  size_t i = 0, skip = 1;
  int rc = 0;

  f.s = (const unsigned char *)text;
  f.n = n;
  f.max = o->max_tokens;
  f.overlap = o->overlap_tokens;
  f.out.limit = o->max_chunks;
  if (f.overlap) {
    f.rcap = 16;
    while (f.rcap < (size_t)o->max_tokens + 8)
      f.rcap *= 2;
    f.rpos = malloc(f.rcap * sizeof *f.rpos);
    f.rt = malloc(f.rcap * sizeof *f.rt);
    if (!f.rpos || !f.rt) {
      rc = CTXD_ENOMEM;
      goto done;
    }
  }
  const unsigned char *s = f.s;

  while (i < n) {
    /* A whole block when it can be taken, else byte by byte up to its end
     * (a run may carry the loop beyond it). In non-ASCII text the byte loop
     * goes on for up to 16 blocks before the next try. */
    size_t stop = n;
    if (n - i >= BLK) {
      int taken = fast_block(&f, &bs, &run, &ph, &t, i);
      if (taken > 0) {
        i += BLK;
        skip = 1;
        continue;
      }
      if (taken < 0) {
        stop = n - i > skip * BLK ? i + skip * BLK : n;
        skip = skip < 16 ? skip * 2 : 16;
      } else {
        stop = i + BLK;
      }
    }
    while (i < stop) {
      unsigned char b = s[i];
      unsigned c = cls[b];
      if (c == TOK_EST_SPACE) {
        bscan_space(&bs, b);
        run = TOK_EST_SPACE;
        i++;
        continue;
      }
      if (c == TOK_EST_CONT) { /* not reached on valid UTF-8 */
        i++;
        continue;
      }
      int lv = bscan_level(&bs, b);
      if (lv >= 0) {
        f.lv_pos[LV_WORD] = i;
        f.lv_t[LV_WORD] = t;
        if (lv >= LV_SENT) {
          f.lv_pos[LV_SENT] = i;
          f.lv_t[LV_SENT] = t;
          if (lv == LV_PARA) {
            f.lv_pos[LV_PARA] = i;
            f.lv_t[LV_PARA] = t;
          }
        }
        if (f.overlap)
          ring_push(&f, i, t);
      }
      if (c == TOK_EST_LETTER || c == TOK_EST_DIGIT) {
        /* A whole run at once: of its letters, those at run offsets 0, K,
         * 2K, ... cost one token each (K letters or digits per token). K is a
         * constant on each branch so the divisions compile to shifts and
         * multiplies. */
        size_t j, len, at;
        uint64_t cost;
        if (run != c) {
          run = c;
          ph = 0;
        }
      letter_run:
        j = i + 1;
        if (c == TOK_EST_LETTER)
          j = letter_run_end(s, j, n);
        else
          while (j < n && cls[s[j]] == c)
            j++;
        len = j - i;
        bs.in_ws = 0;
        bs.sent = SENT_NONE;
        if (c == TOK_EST_LETTER)
          cost = run_cost(ph, len, TOK_EST_LETTER_RUN);
        else
          cost = run_cost(ph, len, TOK_EST_DIGIT_RUN);
        if (t + cost - f.t_cs <= f.max) {
          t += cost;
          ph = c == TOK_EST_LETTER ? (unsigned)((ph + len) % TOK_EST_LETTER_RUN)
                                   : (unsigned)((ph + len) % TOK_EST_DIGIT_RUN);
          i = j;
          /* The common case in prose: one space, then another word. Take it
           * here (a word boundary: no terminator, no newline) and go on with
           * the next run without the general dispatch. */
          if (c == TOK_EST_LETTER && i + 1 < stop && s[i] == ' ' &&
              cls[s[i + 1]] == TOK_EST_LETTER) {
            i++;
            f.lv_pos[LV_WORD] = i;
            f.lv_t[LV_WORD] = t;
            if (f.overlap)
              ring_push(&f, i, t);
            ph = 0;
            goto letter_run;
          }
          continue;
        }
        /* The budget runs out at the (avail+1)-th costing letter of the run. */
        unsigned k = c == TOK_EST_LETTER ? TOK_EST_LETTER_RUN : TOK_EST_DIGIT_RUN;
        uint64_t used = t - f.t_cs;
        uint64_t avail = used < f.max ? f.max - used : 0;
        at = i + (ph ? k - ph : 0) + (size_t)avail * k;
        t += avail;
        ph = 0;
        rc = fast_overflow(&f, at, t, 1);
        if (rc < 0)
          goto done;
        i = at; /* resume inside the run (or restart it) at `at` */
        if (rc == H_RESTART) {
          run = TOK_EST_SPACE;
        } else if (rc == H_ACCEPT) { /* a letter costs 1 <= max: unreachable */
          t += 1;
          ph = 1 % k;
          i = at + 1;
        }
        rc = 0;
        continue;
      }
      /* Any other character: a symbol, or a non-ASCII character. */
      size_t len = char_len(b);
      uint64_t cost = tok_est_cost[c];
      run = TOK_EST_SPACE;
      if (t + cost - f.t_cs > f.max) {
        do {
          rc = fast_overflow(&f, i, t, cost);
        } while (rc == H_RESTART);
        if (rc < 0)
          goto done;
        rc = 0;
      }
      bscan_after_char(&bs, s, i, len);
      t += cost;
      i += len;
    }
  }
  if (n > 0)
    rc = span_push(&f.out, f.cs, n, t - f.t_cs);

done:
  free(f.rpos);
  free(f.rt);
  *out = f.out;
  return rc;
}

/* ---- generic path: any tokenizer, counts spans with tok_count() ------- */

typedef struct gen {
  const char *s;
  size_t n;
  const tok *tk;
  uint64_t max, overlap;
  size_t *bpos; /* boundaries in text order, then n as an end sentinel */
  uint8_t *blv;
  size_t nb;    /* boundaries, not counting the sentinel */
} gen;

static uint64_t gcount(const gen *g, size_t a, size_t b) {
  return tok_count(g->tk, g->s + a, b - a);
}

/* Every boundary of level >= min_level in s[0..n), in order, to fn (the
 * one scanner behind both the generic path and chunk_sentences). fn returns
 * non-zero to stop; that value is returned. */
static int scan_boundaries(const char *text, size_t n, int min_level,
                           int (*fn)(void *arg, size_t pos, int level),
                           void *arg) {
  const unsigned char *s = (const unsigned char *)text;
  bscan bs = {0};
  size_t i = 0;
  int rc;

  while (i < n) {
    unsigned char b = s[i];
    if (tok_est_class[b] == TOK_EST_SPACE) {
      bscan_space(&bs, b);
      i++;
      continue;
    }
    size_t len = char_len(b);
    int l = bscan_level(&bs, b);
    if (l >= min_level && (rc = fn(arg, i, l)))
      return rc;
    bscan_after_char(&bs, s, i, len);
    i += len;
  }
  return 0;
}

typedef struct bvec {
  size_t *pos;
  uint8_t *lv;
  size_t n, cap;
} bvec;

static int bvec_push(void *arg, size_t pos, int level) {
  bvec *v = arg;
  if (v->n + 1 >= v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 64;
    size_t *np = realloc(v->pos, cap * sizeof *np);
    if (np)
      v->pos = np;
    uint8_t *nl = realloc(v->lv, cap);
    if (nl)
      v->lv = nl;
    if (!np || !nl)
      return CTXD_ENOMEM;
    v->cap = cap;
  }
  v->pos[v->n] = pos;
  v->lv[v->n] = (uint8_t)level;
  v->n++;
  return 0;
}

static int gen_scan(gen *g) {
  bvec v = {.cap = 64};
  int rc = CTXD_ENOMEM;
  v.pos = malloc(v.cap * sizeof *v.pos);
  v.lv = malloc(v.cap);
  if (v.pos && v.lv)
    rc = scan_boundaries(g->s, g->n, LV_WORD, bvec_push, &v);
  if (rc) {
    free(v.pos);
    free(v.lv);
    return rc;
  }
  /* bvec_push leaves room for this end sentinel. */
  v.pos[v.n] = g->n;
  v.lv[v.n] = LV_END;
  g->bpos = v.pos;
  g->blv = v.lv;
  g->nb = v.n;
  return 0;
}

typedef struct sent_cb {
  int (*fn)(void *arg, size_t pos);
  void *arg;
} sent_cb;

static int sent_forward(void *arg, size_t pos, int level) {
  (void)level;
  const sent_cb *c = arg;
  return c->fn(c->arg, pos);
}

int chunk_sentences(const char *text, size_t len,
                    int (*fn)(void *arg, size_t pos), void *arg) {
  sent_cb c = {fn, arg};
  return scan_boundaries(text, len, LV_SENT, sent_forward, &c);
}

static int chunk_generic(const char *text, size_t n, const chunk_opts *o,
                         const tok *tk, span_vec *out) {
  gen g = {.s = text, .n = n, .tk = tk, .max = o->max_tokens,
           .overlap = o->overlap_tokens};
  span_vec sv = {.limit = o->max_chunks};
  size_t cs = 0, pe = 0, first = 0;
  int rc;

  if (n == 0) {
    *out = sv;
    return 0;
  }
  if ((rc = gen_scan(&g)))
    goto done;
  while (first < n && tok_est_class[(unsigned char)text[first]] == TOK_EST_SPACE)
    first++;

  for (;;) {
    size_t lo = pe > first ? pe : first; /* cuts must lie after lo */
    size_t k0 = 0, hi, f, cut;
    if (lo >= n) {
      /* Only whitespace (the whole text: a cut always leaves the rest
       * starting at a non-whitespace character), with no place to cut:
       * one chunk, whatever it costs. The fuzzer found the lone-character
       * branch below reading text[n] and cutting past the end here. */
      rc = span_push(&sv, cs, n, gcount(&g, cs, n));
      goto done;
    }
    /* First candidate boundary (binary search: boundaries are sorted). */
    {
      size_t a = 0, b = g.nb;
      while (a < b) {
        size_t m = a + (b - a) / 2;
        if (g.bpos[m] <= lo)
          a = m + 1;
        else
          b = m;
      }
      k0 = a;
    }
    /* Last boundary that fits, galloping then bisecting (counts are
     * assumed to grow with the span, as they do for any tokenizer). */
    if (gcount(&g, cs, g.bpos[k0]) > g.max) {
      f = SIZE_MAX;
    } else {
      size_t good = k0, step = 1;
      hi = g.nb + 1;
      while (good + step <= g.nb) {
        if (gcount(&g, cs, g.bpos[good + step]) > g.max) {
          hi = good + step;
          break;
        }
        good += step;
        step *= 2;
      }
      if (hi > g.nb + 1)
        hi = g.nb + 1;
      while (hi - good > 1) {
        size_t m = good + (hi - good) / 2;
        if (gcount(&g, cs, g.bpos[m]) <= g.max)
          good = m;
        else
          hi = m;
      }
      f = good;
    }
    if (f == g.nb) { /* the rest fits */
      rc = span_push(&sv, cs, n, gcount(&g, cs, n));
      goto done;
    }
    if (f != SIZE_MAX) {
      size_t best = f;
      for (size_t k = f; k-- > k0 && g.blv[best] < LV_PARA;)
        if (g.blv[k] > g.blv[best])
          best = k;
      cut = g.bpos[best];
    } else {
      /* Inside the word: the latest character boundary that fits. */
      size_t good = lo, bad = g.bpos[k0];
      for (;;) {
        size_t m = utf8_floor(text, n, good + (bad - good) / 2);
        if (m <= good)
          m = good + char_len((unsigned char)text[good]);
        if (m >= bad)
          break;
        if (gcount(&g, cs, m) <= g.max)
          good = m;
        else
          bad = m;
      }
      if (good > lo) {
        cut = good;
      } else if (cs < pe) {
        cs = pe; /* the overlap left no room: drop it */
        continue;
      } else {
        /* A lone character over budget: it and its trailing whitespace. */
        cut = lo + char_len((unsigned char)text[lo]);
        while (cut < n && tok_est_class[(unsigned char)text[cut]] == TOK_EST_SPACE)
          cut++;
        if (cut == n) {
          rc = span_push(&sv, cs, n, gcount(&g, cs, n));
          goto done;
        }
      }
    }
    if ((rc = span_push(&sv, cs, cut, gcount(&g, cs, cut))))
      goto done;
    size_t w = cut;
    if (g.overlap) {
      /* Boundaries at or before the cut, latest first. */
      size_t a = 0, b = g.nb;
      while (a < b) {
        size_t m = a + (b - a) / 2;
        if (g.bpos[m] <= cut)
          a = m + 1;
        else
          b = m;
      }
      while (a-- > 0 && g.bpos[a] > cs && gcount(&g, g.bpos[a], cut) <= g.overlap)
        w = g.bpos[a];
    }
    pe = cut;
    cs = w;
  }

done:
  free(g.bpos);
  free(g.blv);
  if (rc) {
    free(sv.v);
    sv = (span_vec){0};
  }
  *out = sv;
  return rc;
}

int chunk_text(const char *text, size_t len, const chunk_opts *o,
               const tok *tk, chunk_span **out, size_t *n, ctxd_error *e) {
  span_vec sv = {0};
  int rc;

  if (!o || !tk || !out || !n || (!text && len))
    return ctxd_seterr(e, CTXD_EINVAL, "chunk: missing argument");
  if (o->max_tokens < 1 || o->max_tokens > CHUNK_MAX_MAX_TOKENS)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "chunk: max_tokens must be 1..%d, got %u",
                       CHUNK_MAX_MAX_TOKENS, o->max_tokens);
  if (o->overlap_tokens >= o->max_tokens)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "chunk: overlap_tokens (%u) must be less than "
                       "max_tokens (%u)",
                       o->overlap_tokens, o->max_tokens);
  *out = NULL;
  *n = 0;
  if (tk == tok_estimator())
    rc = chunk_fast(text, len, o, &sv);
  else
    rc = chunk_generic(text, len, o, tk, &sv);
  if (rc) {
    free(sv.v);
    if (rc == CTXD_ELIMIT)
      return ctxd_seterr(e, rc,
                         "the text makes more than %zu chunks at max_tokens "
                         "%u; use a larger max_tokens",
                         o->max_chunks, o->max_tokens);
    return ctxd_seterr(e, rc, "chunk: out of memory");
  }
  *out = sv.v;
  *n = sv.n;
  return 0;
}
