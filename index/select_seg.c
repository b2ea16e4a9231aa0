/* select_seg.c - the unit table of segment selection: the input cut into
 * sentences by the chunker's rules (chunk_sentences), sentences longer than
 * the unit cap cut again, each with its token count; and the token stream
 * the model methods read back piece by piece.
 *
 * With a model the counts are the model's own tokens: the input is
 * tokenized once, in pieces of about SEL_PIECE_BYTES cut at sentence starts,
 * and every unit boundary is moved onto a token boundary that is also a
 * character boundary (GPT-2's " The" holds the space before the sentence),
 * so units tile the token stream exactly and never split a character. */
#include <stdlib.h>
#include <string.h>

#include "chunk.h"
#include "select_impl.h"
#include "utf8.h"

typedef struct segst {
  sel_run *r;
  uint32_t max;
  sel_unit *u;
  size_t nu, cu;
  sel_piece *pc;
  size_t np, cp;
  uint64_t tok;        /* tokens before the current piece / sentence */
  size_t ps;           /* start of the current piece (model) or sentence */
  size_t *pend;        /* model: sentence starts inside the current piece */
  size_t npend, cpend;
  size_t sentences;
  lm_tokens t;
  ctxd_error *e;
} segst;

/* The tokens counted so far against select_opts.max_input_tokens: checked
 * as they are counted, so an oversized input stops early, before any
 * method runs. */
static int over_input(const segst *s) {
  const select_opts *o = &s->r->o;
  if (!o->max_input_tokens || s->tok <= o->max_input_tokens) return 0;
  return ctxd_seterr(s->e, CTXD_ELIMIT,
                     "the text has more than %llu tokens: over %s (%llu); "
                     "select from a shorter text",
                     (unsigned long long)o->max_input_tokens,
                     o->max_input_what ? o->max_input_what : "max_input_tokens",
                     (unsigned long long)o->max_input_tokens);
}

static int grow(void **p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return 0;
  size_t c = *cap ? *cap * 2 : 256;
  while (c < need) c *= 2;
  void *q = realloc(*p, c * size);
  if (!q) return -1;
  *p = q;
  *cap = c;
  return 0;
}

static int nomem(segst *s) {
  return ctxd_seterr(s->e, CTXD_ENOMEM, "select: out of memory for the sentence table (%zu units)",
                     s->nu);
}

static int push_unit(segst *s, uint64_t start, uint64_t tok0) {
  if (grow((void **)&s->u, &s->cu, s->nu + 2, sizeof *s->u)) return nomem(s);
  s->u[s->nu++] = (sel_unit){start, tok0};
  return 0;
}

static int is_space(unsigned char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

/* ---- model path --------------------------------------------------------- */

/* Token x of the current piece starts a character. */
static int tok_aligned(const segst *s, size_t x) {
  return ((unsigned char)s->r->text[s->ps + s->t.start[x]] & 0xC0) != 0x80;
}

/* ... and a word (whitespace at or just before it). */
static int tok_word(const segst *s, size_t x) {
  size_t b = s->ps + s->t.start[x];
  const unsigned char *p = (const unsigned char *)s->r->text;
  return is_space(p[b]) || (b > 0 && is_space(p[b - 1]));
}

/* Emit tokens [a, b) of the current piece as units of at most s->max
 * tokens, cut at a word start in the cap's second half where there is one,
 * else at the latest character start. */
static int emit_tokens(segst *s, size_t a, size_t b) {
  int rc;
  while (b - a > s->max) {
    size_t lim = a + s->max, half = a + s->max / 2, c = 0;
    for (size_t x = lim; x > half && x > a; x--)
      if (tok_aligned(s, x) && tok_word(s, x)) {
        c = x;
        break;
      }
    for (size_t x = lim; !c && x > a; x--)
      if (tok_aligned(s, x)) c = x;
    /* One character of more than max tokens: it stays whole. */
    for (size_t x = lim + 1; !c && x < b; x++)
      if (tok_aligned(s, x)) c = x;
    if (!c) break;
    if ((rc = push_unit(s, a ? s->ps + s->t.start[a] : s->ps, s->tok + a))) return rc;
    a = c;
  }
  return push_unit(s, a ? s->ps + s->t.start[a] : s->ps, s->tok + a);
}

/* Tokenize the piece [s->ps, pe) and emit its units; starts[0..ns) are the
 * sentence starts inside it. */
static int do_piece(segst *s, size_t pe, const size_t *starts, size_t ns) {
  sel_run *r = s->r;
  int rc = lm_tokenize(r->model, r->text + s->ps, pe - s->ps, 0, &s->t, s->e);
  if (rc) return rc;
  if (grow((void **)&s->pc, &s->cp, s->np + 2, sizeof *s->pc)) return nomem(s);
  s->pc[s->np++] = (sel_piece){s->ps, s->tok};
  size_t n = s->t.n, ta = 0, k = 0;
  for (size_t i = 0; i < ns && n; i++) {
    size_t rb = starts[i] - s->ps;
    while (k < n && s->t.end[k] <= rb) k++;
    size_t c = k;
    while (c < n && !tok_aligned(s, c)) c++;
    if (c >= n) break;
    if (c <= ta) continue;
    if ((rc = emit_tokens(s, ta, c))) return rc;
    ta = c;
  }
  if (n > ta && (rc = emit_tokens(s, ta, n))) return rc;
  s->tok += n;
  s->sentences += ns;
  s->ps = pe;
  s->npend = 0;
  if ((rc = over_input(s))) return rc;
  return sel_progress(r, "segment", pe, r->len, 0, s->e);
}

/* Cut the current piece: at its last sentence start, else before its last
 * newline or space within SEL_PIECE_BYTES, else at a character start. */
static int cut_piece(segst *s) {
  if (s->npend > 0) return do_piece(s, s->pend[s->npend - 1], s->pend, s->npend - 1);
  const char *t = s->r->text;
  size_t lim = s->ps + SEL_PIECE_BYTES, cut = 0;
  const char *nl = memrchr(t + s->ps + 1, '\n', lim - s->ps - 1);
  if (!nl) nl = memrchr(t + s->ps + 1, ' ', lim - s->ps - 1);
  if (nl) cut = (size_t)(nl - t);
  if (!cut) cut = utf8_floor(t, s->r->len, lim);
  if (cut <= s->ps) cut = s->ps + 1; /* not reached: a character is <= 4 bytes */
  return do_piece(s, cut, NULL, 0);
}

static int on_sentence_model(void *arg, size_t pos) {
  segst *s = arg;
  int rc;
  while (pos - s->ps > SEL_PIECE_BYTES)
    if ((rc = cut_piece(s))) return rc;
  if (grow((void **)&s->pend, &s->cpend, s->npend + 1, sizeof *s->pend)) return nomem(s);
  s->pend[s->npend++] = pos;
  return 0;
}

/* ---- tokenizer path ----------------------------------------------------- */

static int emit_sentence(segst *s, size_t a, size_t b) {
  sel_run *r = s->r;
  int rc;
  uint64_t n = tok_count(r->tk, r->text + a, b - a);
  if (n <= s->max) {
    if (n == 0) return 0; /* its bytes join the unit before */
    rc = push_unit(s, a, s->tok);
    s->tok += n;
    return rc;
  }
  /* Too long: the chunker cuts it at words (it holds no sentence start). */
  chunk_opts co = {.max_tokens = s->max};
  chunk_span *sp = NULL;
  size_t ns = 0;
  if ((rc = chunk_text(r->text + a, b - a, &co, r->tk, &sp, &ns, s->e))) return rc;
  for (size_t i = 0; i < ns && !rc; i++) {
    if (sp[i].tokens == 0) continue;
    rc = push_unit(s, a + sp[i].byte_start, s->tok);
    s->tok += sp[i].tokens;
  }
  free(sp);
  return rc;
}

static int on_sentence_tok(void *arg, size_t pos) {
  segst *s = arg;
  int rc = emit_sentence(s, s->ps, pos);
  if (!rc) rc = over_input(s);
  s->ps = pos;
  if (!rc && (++s->sentences & 4095) == 0)
    rc = sel_progress(s->r, "segment", pos, s->r->len, 0, s->e);
  return rc;
}

int sel_segment(sel_run *r, uint32_t unit_max, ctxd_error *e) {
  segst s = {.r = r, .max = unit_max ? unit_max : 1, .e = e};
  int rc;
  if (r->model) {
    rc = chunk_sentences(r->text, r->len, on_sentence_model, &s);
    while (!rc && r->len - s.ps > SEL_PIECE_BYTES) rc = cut_piece(&s);
    if (!rc && r->len > s.ps) rc = do_piece(&s, r->len, s.pend, s.npend);
    if (!rc && grow((void **)&s.pc, &s.cp, s.np + 1, sizeof *s.pc)) rc = nomem(&s);
    if (!rc) s.pc[s.np] = (sel_piece){r->len, s.tok};
  } else {
    rc = chunk_sentences(r->text, r->len, on_sentence_tok, &s);
    if (!rc && r->len > s.ps) rc = emit_sentence(&s, s.ps, r->len);
  }
  if (!rc) rc = over_input(&s);
  if (!rc && grow((void **)&s.u, &s.cu, s.nu + 1, sizeof *s.u)) rc = nomem(&s);
  if (!rc) rc = sel_progress(r, "segment", r->len, r->len, 1, e);
  if (rc) goto fail;
  if (s.nu) s.u[0].start = 0;
  s.u[s.nu] = (sel_unit){r->len, s.tok};
  r->u = s.u;
  r->n_units = s.nu;
  r->pc = s.pc;
  r->n_pieces = s.np;
  r->total_tokens = s.tok;
  r->sel_len = r->len;
  free(s.pend);
  lm_tokens_free(&s.t);
  return 0;
fail:
  free(s.u);
  free(s.pc);
  free(s.pend);
  lm_tokens_free(&s.t);
  return rc;
}

/* ---- the token stream --------------------------------------------------- */

int sel_toks_get(sel_toks *t, uint64_t a, uint64_t b, const int32_t **ids, ctxd_error *e) {
  const sel_run *r = t->r;
  const sel_piece *pc = r->pc;
  int rc;
  *ids = t->ids;
  if (b <= a) return 0;
  if (t->p1 > t->p0 && a >= pc[t->p0].tok0 && a < pc[t->p1].tok0) {
    size_t drop = 0;
    while (t->p0 + 1 < t->p1 && pc[t->p0 + 1].tok0 <= a) t->p0++;
    drop = (size_t)(pc[t->p0].tok0 - (pc[t->p1].tok0 - t->n));
    if (drop) {
      memmove(t->ids, t->ids + drop, (t->n - drop) * sizeof *t->ids);
      t->n -= drop;
    }
  } else {
    size_t lo = 0, hi = r->n_pieces; /* last piece with tok0 <= a */
    while (hi - lo > 1) {
      size_t m = lo + (hi - lo) / 2;
      if (pc[m].tok0 <= a) lo = m;
      else hi = m;
    }
    t->p0 = t->p1 = lo;
    t->n = 0;
  }
  while (t->p1 < r->n_pieces && pc[t->p1].tok0 < b) {
    size_t p = t->p1;
    uint64_t want = pc[p + 1].tok0 - pc[p].tok0;
    rc = lm_tokenize(r->model, r->text + pc[p].start, pc[p + 1].start - pc[p].start,
                     LM_TOK_NO_OFFSETS, &t->tmp, e);
    if (rc) return rc;
    if (t->tmp.n != want)
      return ctxd_seterr(e, CTXD_EINTERNAL,
                         "select: piece at byte %llu gave %zu tokens, %llu the first time",
                         (unsigned long long)pc[p].start, t->tmp.n, (unsigned long long)want);
    if (grow((void **)&t->ids, &t->cap, t->n + t->tmp.n, sizeof *t->ids))
      return ctxd_seterr(e, CTXD_ENOMEM, "select: out of memory for %zu tokens", t->n + t->tmp.n);
    memcpy(t->ids + t->n, t->tmp.id, t->tmp.n * sizeof *t->ids);
    t->n += t->tmp.n;
    t->p1++;
  }
  if (b > pc[t->p1].tok0)
    return ctxd_seterr(e, CTXD_EINTERNAL, "select: tokens up to %llu asked of %llu",
                       (unsigned long long)b, (unsigned long long)pc[t->p1].tok0);
  *ids = t->ids + (a - pc[t->p0].tok0);
  return 0;
}

void sel_toks_free(sel_toks *t) {
  free(t->ids);
  lm_tokens_free(&t->tmp);
  memset(t, 0, sizeof *t);
}

int sel_prefix_ids(const lm_model *m, int32_t ids[8], uint32_t *n, ctxd_error *e) {
  lm_tokens t = {0};
  int rc = lm_tokenize(m, "", 0, LM_TOK_ADD_SPECIAL | LM_TOK_NO_OFFSETS, &t, e);
  *n = 0;
  if (!rc) {
    *n = t.n < 8 ? (uint32_t)t.n : 8;
    memcpy(ids, t.id, *n * sizeof *ids);
  }
  lm_tokens_free(&t);
  return rc;
}
