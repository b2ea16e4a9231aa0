/* order_pack.c - corpus ordering, last step: packing the texts along the path
 * into windows of L tokens (or Dataset Decomposition pieces) and writing
 * order.jsonl, windows.jsonl and duplicates.jsonl, with the window-level
 * similarity figures. */
#include <stdlib.h>
#include <string.h>

#include "order_impl.h"
#include "utf8.h"

/* ---- cutting text by tokens -------------------------------------------------- */

static size_t char_len_at(const char *t, size_t len, size_t i) {
  size_t j = i + 1;
  while (j < len && ((unsigned char)t[j] & 0xC0) == 0x80) j++;
  return j - i;
}

/* The largest character boundary b in [a, len] with
 * tok_count(t[a..b)) <= budget, given that the whole rest t[a..len) is over
 * budget. Gallops, then bisects: O(bytes of the answer x log). */
static size_t longest_prefix(const tok *tk, const char *t, size_t len,
                             size_t a, uint64_t budget) {
  size_t lo = a, hi = len, step = (size_t)budget * 4 + 16;
  for (;;) {
    if (step >= len - a) break;
    size_t probe = utf8_floor(t, len, a + step);
    if (probe > lo) {
      if (tok_count(tk, t + a, probe - a) > budget) {
        hi = probe;
        break;
      }
      lo = probe;
    }
    step *= 2;
  }
  while (hi > lo) {
    size_t mid = utf8_floor(t, len, lo + (hi - lo) / 2);
    if (mid <= lo) mid = lo + char_len_at(t, len, lo);
    if (mid >= hi) break;
    if (tok_count(tk, t + a, mid - a) <= budget)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

/* ---- window similarity ----------------------------------------------------------- */

/* Mean pairwise cosine of the documents in each window, from the sum of
 * their vectors: sum over pairs i != j of v_i.v_j = |S|^2 - sum |v_i|^2.
 * The open window's sums live in an order_wpart so that a window split
 * between two ranks adds up. */
typedef struct winsim {
  const order_input *in;
  double total;
  uint64_t windows;
} winsim;

static void ws_add(const winsim *w, order_wpart *part, uint32_t doc) {
  if (!part->S) return;
  const float *v = w->in->vectors + (uint64_t)doc * w->in->dim;
  for (uint32_t j = 0; j < w->in->dim; j++) part->S[j] += v[j];
  part->sq += order_dot(v, v, w->in->dim);
  part->m++;
}

double order_wpart_similarity(const order_wpart *w, uint32_t dim) {
  if (!w->S || w->m < 2) return NAN;
  double s2 = 0;
  for (uint32_t j = 0; j < dim; j++) s2 += w->S[j] * w->S[j];
  return (s2 - w->sq) / ((double)w->m * (double)(w->m - 1));
}

static void ws_close(winsim *w, order_wpart *part) {
  if (!part->S) return;
  double s = order_wpart_similarity(part, w->in->dim);
  if (s == s) {
    w->total += s;
    w->windows++;
  }
  memset(part->S, 0, w->in->dim * sizeof *part->S);
  part->sq = 0;
  part->m = 0;
}

static double ws_mean(const winsim *w) {
  return w->windows ? w->total / (double)w->windows : NAN;
}

uint64_t order_separator_tokens(const order_opts *o) {
  const tok *tk = o->tokenizer ? o->tokenizer : tok_estimator();
  const char *sep = o->separator ? o->separator : "";
  return o->separator_tokens ? o->separator_tokens
                             : tok_count(tk, sep, strlen(sep));
}

/* The random baseline: a seeded random order of the same documents, cut
 * into windows by their token counts (doc, separator, doc, ...). */
double order_random_window_similarity(const order_path *p,
                                      const uint64_t *tokens,
                                      const order_input *in,
                                      const order_opts *o) {
  if (!in->vectors || p->n < 2) return NAN;
  const uint64_t L = o->window_tokens, sep_tokens = order_separator_tokens(o);
  uint32_t *perm = malloc(p->n * sizeof *perm);
  double *S = calloc(in->dim, sizeof *S);
  double r = NAN;
  if (!perm || !S) goto out;
  order_permutation(perm, p->n, o->seed ^ 0x57494E444F57ull);
  winsim w = {in, 0, 0};
  order_wpart part = {0};
  part.S = S;
  uint64_t u = 0;
  for (uint64_t i = 0; i < p->n; i++) {
    uint64_t c = tokens[perm[i]];
    int in_window = 0;
    do {
      if (u == L) {
        ws_close(&w, &part);
        u = 0;
        in_window = 0;
      }
      uint64_t take = c < L - u ? c : L - u;
      if (!in_window) ws_add(&w, &part, p->doc[perm[i]]);
      in_window = 1;
      u += take;
      c -= take;
    } while (c > 0);
    if (sep_tokens > L - u) {
      ws_close(&w, &part);
      u = 0;
    }
    u += sep_tokens;
  }
  ws_close(&w, &part);
  r = ws_mean(&w);
out:
  free(perm);
  free(S);
  return r;
}

/* ---- iclm windows ------------------------------------------------------------------ */

static int buf_add(char **b, size_t *len, size_t *cap, const char *s,
                   size_t n) {
  if (n == 0) return 0;
  if (*len + n > *cap) {
    size_t c = *cap ? *cap : 1 << 12;
    while (c < *len + n) c *= 2;
    char *t = realloc(*b, c);
    if (!t) return CTXD_ENOMEM;
    *b = t;
    *cap = c;
  }
  memcpy(*b + *len, s, n);
  *len += n;
  return 0;
}

void order_wpart_free(order_wpart *w) {
  free(w->docs);
  free(w->text);
  free(w->S);
  memset(w, 0, sizeof *w);
}

int order_wpart_append(order_wpart *dst, const order_wpart *src, uint32_t dim,
                       ctxd_error *e) {
  size_t cap = dst->docs_len, tcap = dst->text_len;
  if ((src->docs_len && dst->docs_len &&
       buf_add(&dst->docs, &dst->docs_len, &cap, ",", 1)) ||
      buf_add(&dst->docs, &dst->docs_len, &cap, src->docs, src->docs_len) ||
      buf_add(&dst->text, &dst->text_len, &tcap, src->text, src->text_len))
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for a window");
  dst->tokens += src->tokens;
  if (src->S && dim) {
    if (!dst->S && !(dst->S = calloc(dim, sizeof *dst->S)))
      return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for a window");
    for (uint32_t j = 0; j < dim; j++) dst->S[j] += src->S[j];
  }
  dst->sq += src->sq;
  dst->m += src->m;
  return 0;
}

void order_wpart_write(FILE *f, uint64_t window, const order_wpart *w) {
  fprintf(f, "{\"window\":%llu,\"tokens\":%llu,\"documents\":[",
          (unsigned long long)window, (unsigned long long)w->tokens);
  if (w->docs_len) fwrite(w->docs, 1, w->docs_len, f);
  fputs("],\"text\":", f);
  order_json_str(f, w->text ? w->text : "", w->text_len);
  fputs("}\n", f);
}

/* The open window: its content so far (part) and where it stands. */
typedef struct window {
  order_wpart part;
  size_t docs_cap, text_cap;
  size_t np;         /* pieces */
  uint32_t last_doc; /* of the last piece */
  uint64_t tokens;   /* in the whole window (earlier segments too) */
  uint64_t index;
} window;

static int win_text(window *w, const char *s, size_t n) {
  return buf_add(&w->part.text, &w->part.text_len, &w->text_cap, s, n);
}

static int win_piece(window *w, const order_input *in, uint32_t doc,
                     uint64_t a, uint64_t b, uint64_t tokens) {
  char num[96];
  FILE *f = NULL;
  char *s = NULL;
  size_t n = 0;
  int rc = CTXD_ENOMEM;
  if (!(f = open_memstream(&s, &n))) return rc;
  fputs(w->part.docs_len ? ",{\"id\":" : "{\"id\":", f);
  order_json_str(f, in->ids[doc], strlen(in->ids[doc]));
  snprintf(num, sizeof num, ",\"start\":%llu,\"end\":%llu,\"tokens\":%llu}",
           (unsigned long long)a, (unsigned long long)b,
           (unsigned long long)tokens);
  fputs(num, f);
  if (fclose(f) == 0 &&
      buf_add(&w->part.docs, &w->part.docs_len, &w->docs_cap, s, n) == 0)
    rc = 0;
  free(s);
  w->np++;
  w->last_doc = doc;
  return rc;
}

/* Close the open window: written to f, or (the first window of a segment
 * that began in an earlier one) handed over as r->head, or only counted
 * (a dry run: f NULL). */
static int win_flush(FILE *f, window *w, int *in_head, winsim *ws,
                     order_pack_seg *r) {
  if (*in_head) {
    double *S = w->part.S;
    r->head = w->part;
    r->head.S = NULL;
    if (S) {
      if (!(r->head.S = malloc(ws->in->dim * sizeof *S))) return CTXD_ENOMEM;
      memcpy(r->head.S, S, ws->in->dim * sizeof *S);
      memset(S, 0, ws->in->dim * sizeof *S);
    }
    memset(&w->part, 0, sizeof w->part);
    w->part.S = S;
    w->docs_cap = w->text_cap = 0;
    *in_head = 0;
  } else {
    if (f) {
      order_wpart_write(f, w->index, &w->part);
      r->windows_written++;
    }
    ws_close(ws, &w->part);
  }
  w->index++;
  w->part.text_len = w->part.docs_len = 0;
  w->part.tokens = 0;
  w->np = 0;
  w->tokens = 0;
  return 0;
}

/* A document's text for packing: one without is an error naming it. */
static int pack_text(const order_input *in, uint32_t doc, const order_opts *o,
                     const char **t, size_t *len, ctxd_error *e) {
  int rc = order_text(in, doc, t, len, e);
  if (rc == 0 && !*t)
    rc = ctxd_seterr(e, CTXD_EINVAL,
                     "document \"%.200s\" has no text: mode %s packs texts",
                     in->ids[doc], order_mode_name(o->mode));
  return rc;
}

int order_pack_tokens(const order_input *in, const order_path *p,
                      const order_opts *o, uint64_t *tokens, ctxd_error *e) {
  const tok *tk = o->tokenizer ? o->tokenizer : tok_estimator();
  int rc;
  for (uint64_t pos = 0; pos < p->n; pos++) {
    const char *t;
    size_t len;
    if ((pos & 4095) == 0 &&
        (rc = order_step(o, ORDER_PHASE_PACK, pos, p->n, e)))
      return rc;
    if ((rc = pack_text(in, p->doc[pos], o, &t, &len, e))) return rc;
    tokens[pos] = tok_count(tk, t, len);
  }
  return 0;
}

void order_pack_seg_free(order_pack_seg *r) {
  order_wpart_free(&r->head);
  order_wpart_free(&r->tail);
}

/* Pack along the path from state `start`; first_window[pos] = window of
 * position pos's first token, tokens[pos] = its whole text's token count
 * (given when `known`). */
static int pack_iclm(const order_input *in, const order_path *p,
                     const order_opts *o, const tok *tk, uint64_t sep_tokens,
                     const order_pack_state *start, FILE *f,
                     uint64_t *first_window, uint64_t *tokens, int known,
                     winsim *ws, order_pack_seg *r, ctxd_error *e) {
  const uint64_t L = o->window_tokens;
  const char *sep = o->separator ? o->separator : "";
  size_t sep_len = f ? strlen(sep) : 0;
  window w = {0};
  int rc = 0, in_head = start->open;
  w.index = start->window;
  w.tokens = start->tokens;
  if (f && in->vectors && !(w.part.S = calloc(in->dim, sizeof *w.part.S)))
    goto nomem;
  for (uint64_t pos = 0; pos < p->n; pos++) {
    if ((pos & 4095) == 0 &&
        (rc = order_step(o, ORDER_PHASE_PACK, pos, p->n, e)))
      goto out;
    uint32_t doc = p->doc[pos];
    const char *t;
    size_t len;
    if ((rc = pack_text(in, doc, o, &t, &len, e))) goto out;
    uint64_t total = known ? tokens[pos] : tok_count(tk, t, len), placed = 0;
    tokens[pos] = total;
    size_t a = 0;
    int first = 1;
    for (;;) {
      if (w.tokens == L && win_flush(f, &w, &in_head, ws, r)) goto nomem;
      uint64_t rem = L - w.tokens;
      /* the rest costs at least total - placed (counts are sub-additive) */
      uint64_t rest = a == 0 ? total : total > placed ? total - placed : 0;
      size_t b = len;
      if (a > 0 && rest <= rem) rest = tok_count(tk, t + a, len - a);
      if (rest > rem) {
        b = longest_prefix(tk, t, len, a, rem);
        if (b == a) { /* not even one character fits: next window */
          if (win_flush(f, &w, &in_head, ws, r)) goto nomem;
          continue;
        }
        rest = tok_count(tk, t + a, b - a);
      }
      if (first && first_window) first_window[pos] = w.index;
      if (first || w.np == 0 || w.last_doc != doc) ws_add(ws, &w.part, doc);
      first = 0;
      if (f ? win_text(&w, t + a, b - a) ||
                  win_piece(&w, in, doc, a, b, rest)
            : (w.np++, w.last_doc = doc, 0))
        goto nomem;
      w.tokens += rest;
      w.part.tokens += rest;
      placed += rest;
      r->tokens += rest;
      a = b;
      if (a == len) break;
    }
    if (sep_tokens > L - w.tokens && win_flush(f, &w, &in_head, ws, r))
      goto nomem;
    if (win_text(&w, sep, sep_len)) goto nomem;
    w.tokens += sep_tokens;
    w.part.tokens += sep_tokens;
    r->tokens += sep_tokens;
  }
  r->end = (order_pack_state){w.index, w.tokens, w.np > 0 || w.tokens > 0};
  if (in_head) { /* no window closed here: everything belongs to the
                  * window an earlier segment began */
    r->head = w.part;
    r->head_only = 1;
    memset(&w.part, 0, sizeof w.part);
  } else if (r->end.open) {
    r->tail = w.part;
    memset(&w.part, 0, sizeof w.part);
  }
  r->sim_total = ws->total;
  r->sim_windows = ws->windows;
  order_report(o, ORDER_PHASE_PACK, p->n, p->n);
  goto out;
nomem:
  rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for a window");
out:
  order_wpart_free(&w.part);
  return rc;
}

/* ---- decompose ------------------------------------------------------------------ */

typedef struct dd_piece {
  uint32_t pos;    /* path position of the document */
  uint32_t index;  /* piece number within the document */
  uint32_t bucket; /* log2 */
  uint64_t start, end, tokens;
} dd_piece;

static int floor_log2(uint64_t x) {
  int b = 0;
  while (x >>= 1) b++;
  return b;
}

static int dd_cut(const order_input *in, const order_path *p,
                  const order_opts *o, const tok *tk, dd_piece **out,
                  uint64_t *np, order_summary *s, ctxd_error *e) {
  dd_piece *v = NULL;
  uint64_t n = 0, cap = 0;
  int rc = 0;
  uint32_t bmin = o->decompose_min_log2;
  uint32_t bmax = o->decompose_max_log2 ? o->decompose_max_log2
                                        : (uint32_t)floor_log2(o->window_tokens);
  for (uint64_t pos = 0; pos < p->n; pos++) {
    if ((pos & 4095) == 0 &&
        (rc = order_step(o, ORDER_PHASE_PACK, pos, p->n, e)))
      goto fail;
    uint32_t doc = p->doc[pos];
    const char *t;
    size_t len, a = 0;
    if ((rc = pack_text(in, doc, o, &t, &len, e))) goto fail;
    uint64_t total = tok_count(tk, t, len), placed = 0;
    for (uint32_t index = 0; a < len;) {
      uint64_t rest = a == 0 ? total : total > placed ? total - placed : 0;
      if (a > 0 && rest <= ((uint64_t)1 << bmax))
        rest = tok_count(tk, t + a, len - a);
      if (rest < ((uint64_t)1 << bmin)) {
        s->dropped_tokens += rest;
        break;
      }
      uint32_t b = (uint32_t)floor_log2(rest);
      if (b > bmax) b = bmax;
      size_t end = len;
      uint64_t cnt = rest;
      if (rest > ((uint64_t)1 << b)) {
        end = longest_prefix(tk, t, len, a, (uint64_t)1 << b);
        if (end == a) { /* one character costs more than 2^b: drop it */
          size_t cl = char_len_at(t, len, a);
          s->dropped_tokens += tok_count(tk, t + a, cl);
          placed += tok_count(tk, t + a, cl);
          a += cl;
          continue;
        }
        cnt = tok_count(tk, t + a, end - a);
      }
      if (n == cap) {
        uint64_t nc = cap ? cap * 2 : 1024;
        dd_piece *nv = realloc(v, nc * sizeof *nv);
        if (!nv) {
          rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for pieces");
          goto fail;
        }
        v = nv;
        cap = nc;
      }
      v[n++] = (dd_piece){(uint32_t)pos, index++, b, a, end, cnt};
      s->bucket_pieces[b]++;
      s->tokens += cnt;
      placed += cnt;
      a = end;
    }
  }
  *out = v;
  *np = n;
  return 0;
fail:
  free(v);
  return rc;
}

static int pack_decompose(const order_input *in, const order_path *p,
                          const order_opts *o, const tok *tk, FILE *fo,
                          FILE *fw, order_summary *s, ctxd_error *e) {
  dd_piece *v = NULL, *sorted = NULL;
  uint64_t n = 0;
  int rc;
  if ((rc = dd_cut(in, p, o, tk, &v, &n, s, e))) return rc;
  /* stable counting sort by bucket: path order within a bucket */
  uint64_t start[ORDER_LOG2_MAX + 2] = {0};
  for (uint64_t i = 0; i < n; i++) start[v[i].bucket + 1]++;
  for (int b = 0; b <= ORDER_LOG2_MAX; b++) start[b + 1] += start[b];
  sorted = malloc((n ? n : 1) * sizeof *sorted);
  if (!sorted) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for pieces");
    goto out;
  }
  for (uint64_t i = 0; i < n; i++) sorted[start[v[i].bucket]++] = v[i];
  for (uint64_t i = 0; i < n; i++) {
    const dd_piece *q = &sorted[i];
    uint32_t doc = p->doc[q->pos];
    const char *id = in->ids[doc], *t;
    size_t len;
    if ((i & 4095) == 0 && order_cancelled(o->cancel)) {
      rc = ctxd_seterr(e, CTXD_ECANCELED, "cancelled while writing pieces");
      goto out;
    }
    if ((rc = order_text(in, doc, &t, &len, e))) goto out;
    if (!t || q->end > len) {
      rc = ctxd_seterr(e, CTXD_EIO, "document \"%.200s\" changed while packing",
                       id);
      goto out;
    }
    char fields[160];
    snprintf(fields, sizeof fields,
             ",\"bucket\":%llu,\"piece\":%u,\"start\":%llu,\"end\":%llu,"
             "\"tokens\":%llu",
             (unsigned long long)1 << q->bucket, q->index,
             (unsigned long long)q->start, (unsigned long long)q->end,
             (unsigned long long)q->tokens);
    fputs("{\"id\":", fo);
    order_json_str(fo, id, strlen(id));
    fprintf(fo, ",\"position\":%llu%s}\n", (unsigned long long)i, fields);
    fprintf(fw, "{\"window\":%llu,\"id\":", (unsigned long long)i);
    order_json_str(fw, id, strlen(id));
    fprintf(fw, ",\"position\":%llu%s,\"text\":", (unsigned long long)i,
            fields);
    order_json_str(fw, t + q->start, q->end - q->start);
    fputs("}\n", fw);
  }
  s->windows = n;
  order_report(o, ORDER_PHASE_PACK, p->n, p->n);
out:
  free(v);
  free(sorted);
  return rc;
}

/* ---- outputs ------------------------------------------------------------------- */

static void write_order_line(FILE *f, const order_input *in,
                             const order_path *p, uint64_t pos, uint64_t pos0,
                             const uint64_t *first_window) {
  uint32_t doc = p->doc[pos];
  fputs("{\"id\":", f);
  order_json_str(f, in->ids[doc], strlen(in->ids[doc]));
  fprintf(f, ",\"position\":%llu", (unsigned long long)(pos0 + pos));
  if (first_window)
    fprintf(f, ",\"window\":%llu", (unsigned long long)first_window[pos]);
  fputs(",\"similarity\":", f);
  order_json_num(f, pos0 + pos ? p->sim[pos] : NAN);
  fputs(p->jump[pos] ? ",\"jump\":true}\n" : ",\"jump\":false}\n", f);
}

int order_pack_segment(const order_input *in, const order_path *p,
                       uint64_t pos0, const order_opts *o,
                       const order_pack_state *start, uint64_t *tokens,
                       int known, FILE *windows, FILE *order,
                       order_pack_seg *r, ctxd_error *e) {
  uint64_t *first_window = NULL;
  const tok *tk = o->tokenizer ? o->tokenizer : tok_estimator();
  uint64_t sep_tokens = order_separator_tokens(o);
  int rc;
  memset(r, 0, sizeof *r);
  if (o->mode == ORDER_MODE_DECOMPOSE)
    return ctxd_seterr(e, CTXD_EINVAL, "a segment packs iclm or order only");
  if (o->mode == ORDER_MODE_ICLM && sep_tokens >= o->window_tokens)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "the separator costs %llu tokens, not less than the "
                       "window of %u",
                       (unsigned long long)sep_tokens, o->window_tokens);
  if (o->mode == ORDER_MODE_ICLM) {
    winsim ws = {in, 0, 0};
    if (order &&
        !(first_window = malloc((p->n ? p->n : 1) * sizeof *first_window)))
      return ctxd_seterr(e, CTXD_ENOMEM, "out of memory for packing");
    if ((rc = pack_iclm(in, p, o, tk, sep_tokens, start, windows, first_window,
                        tokens, known, &ws, r, e)))
      goto out;
  }
  for (uint64_t pos = 0; order && pos < p->n; pos++)
    write_order_line(order, in, p, pos, pos0, first_window);
  rc = 0;
out:
  if (rc) order_pack_seg_free(r);
  free(first_window);
  return rc;
}

static void write_duplicates(FILE *f, const order_input *in,
                             const order_dups *d) {
  for (uint64_t j = 0; d && j < d->n; j++) {
    if (d->of[j] == ORDER_NONE) continue;
    fputs("{\"id\":", f);
    order_json_str(f, in->ids[j], strlen(in->ids[j]));
    fputs(",\"duplicate_of\":", f);
    order_json_str(f, in->ids[d->of[j]], strlen(in->ids[d->of[j]]));
    fputs(",\"similarity\":", f);
    order_json_num(f, d->sim[j]);
    fputs(",\"jaccard\":", f);
    order_json_num(f, d->jaccard[j] >= 0 ? d->jaccard[j] : NAN);
    fputs("}\n", f);
  }
}

int order_pack(const order_input *in, const order_path *p,
               const order_dups *d, const order_opts *o, const char *dir,
               order_summary *s, ctxd_error *e) {
  order_afile fo = {0}, fw = {0}, fd = {0};
  order_pack_seg seg = {0};
  uint64_t *tokens = NULL;
  int rc;
  const tok *tk = o->tokenizer ? o->tokenizer : tok_estimator();
  s->window_similarity = s->random_window_similarity = NAN;
  if ((rc = order_afile_open(&fo, dir, ORDER_FILE_ORDER, e))) goto out;
  if (o->mode != ORDER_MODE_ORDER &&
      (rc = order_afile_open(&fw, dir, ORDER_FILE_WINDOWS, e)))
    goto out;
  if (o->mode == ORDER_MODE_DECOMPOSE) {
    if ((rc = pack_decompose(in, p, o, tk, fo.f, fw.f, s, e))) goto out;
  } else {
    order_pack_state start = {0, 0, 0};
    if (!(tokens = malloc((p->n ? p->n : 1) * sizeof *tokens))) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for packing");
      goto out;
    }
    if ((rc = order_pack_segment(in, p, 0, o, &start, tokens, 0, fw.f, fo.f,
                                 &seg, e)))
      goto out;
    if (o->mode == ORDER_MODE_ICLM) {
      /* the last window is still open */
      double w = order_wpart_similarity(&seg.tail, in->dim);
      if (seg.end.open) order_wpart_write(fw.f, seg.end.window, &seg.tail);
      if (w == w) {
        seg.sim_total += w;
        seg.sim_windows++;
      }
      s->windows = seg.end.window + seg.end.open;
      s->tokens = seg.tokens;
      s->window_similarity =
          seg.sim_windows ? seg.sim_total / (double)seg.sim_windows : NAN;
      s->random_window_similarity =
          order_random_window_similarity(p, tokens, in, o);
    }
  }
  if ((rc = order_afile_open(&fd, dir, ORDER_FILE_DUPLICATES, e))) goto out;
  write_duplicates(fd.f, in, d);
  if ((fw.f && (rc = order_afile_commit(&fw, e))) ||
      (rc = order_afile_commit(&fo, e)) || (rc = order_afile_commit(&fd, e)))
    goto out;
out:
  order_afile_abort(&fo);
  order_afile_abort(&fw);
  order_afile_abort(&fd);
  order_pack_seg_free(&seg);
  free(tokens);
  return rc;
}
