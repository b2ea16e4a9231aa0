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
 * their vectors: sum over pairs i != j of v_i.v_j = |S|^2 - sum |v_i|^2. */
typedef struct winsim {
  const order_input *in;
  double *S;
  double sq;
  uint64_t m;
  double total;
  uint64_t windows;
} winsim;

static void ws_add(winsim *w, uint32_t doc) {
  if (!w->S) return;
  const float *v = w->in->vectors + (uint64_t)doc * w->in->dim;
  for (uint32_t j = 0; j < w->in->dim; j++) w->S[j] += v[j];
  w->sq += order_dot(v, v, w->in->dim);
  w->m++;
}

static void ws_close(winsim *w) {
  if (!w->S) return;
  if (w->m >= 2) {
    double s2 = 0;
    for (uint32_t j = 0; j < w->in->dim; j++) s2 += w->S[j] * w->S[j];
    w->total += (s2 - w->sq) / ((double)w->m * (double)(w->m - 1));
    w->windows++;
  }
  memset(w->S, 0, w->in->dim * sizeof *w->S);
  w->sq = 0;
  w->m = 0;
}

static double ws_mean(const winsim *w) {
  return w->windows ? w->total / (double)w->windows : NAN;
}

/* The random baseline: a seeded random order of the same documents, cut
 * into windows by their token counts (doc, separator, doc, ...). */
static double random_windows(const order_path *p, const uint64_t *tokens,
                             const order_input *in, uint64_t L,
                             uint64_t sep_tokens, uint64_t seed, double *S) {
  if (!S || p->n < 2) return NAN;
  uint32_t *perm = malloc(p->n * sizeof *perm);
  if (!perm) return NAN;
  order_permutation(perm, p->n, seed ^ 0x57494E444F57ull);
  winsim w = {in, S, 0, 0, 0, 0};
  memset(S, 0, in->dim * sizeof *S);
  uint64_t u = 0;
  for (uint64_t i = 0; i < p->n; i++) {
    uint64_t c = tokens[perm[i]];
    int in_window = 0;
    do {
      if (u == L) {
        ws_close(&w);
        u = 0;
        in_window = 0;
      }
      uint64_t take = c < L - u ? c : L - u;
      if (!in_window) ws_add(&w, p->doc[perm[i]]);
      in_window = 1;
      u += take;
      c -= take;
    } while (c > 0);
    if (sep_tokens > L - u) {
      ws_close(&w);
      u = 0;
    }
    u += sep_tokens;
  }
  ws_close(&w);
  free(perm);
  return ws_mean(&w);
}

/* ---- iclm windows ------------------------------------------------------------------ */

typedef struct piece_ref {
  uint32_t doc;
  uint64_t start, end, tokens;
} piece_ref;

typedef struct window {
  char *text;
  size_t len, cap;
  piece_ref *pieces;
  size_t np, pcap;
  uint64_t tokens;
  uint64_t index;
} window;

static int win_text(window *w, const char *s, size_t n) {
  if (w->len + n > w->cap) {
    size_t cap = w->cap ? w->cap : 1 << 16;
    while (cap < w->len + n) cap *= 2;
    char *t = realloc(w->text, cap);
    if (!t) return CTXD_ENOMEM;
    w->text = t;
    w->cap = cap;
  }
  memcpy(w->text + w->len, s, n);
  w->len += n;
  return 0;
}

static int win_piece(window *w, uint32_t doc, uint64_t a, uint64_t b,
                     uint64_t tokens) {
  if (w->np == w->pcap) {
    size_t cap = w->pcap ? w->pcap * 2 : 64;
    piece_ref *p = realloc(w->pieces, cap * sizeof *p);
    if (!p) return CTXD_ENOMEM;
    w->pieces = p;
    w->pcap = cap;
  }
  w->pieces[w->np++] = (piece_ref){doc, a, b, tokens};
  return 0;
}

static void win_write(FILE *f, const window *w, const order_input *in) {
  fprintf(f, "{\"window\":%llu,\"tokens\":%llu,\"documents\":[",
          (unsigned long long)w->index, (unsigned long long)w->tokens);
  for (size_t i = 0; i < w->np; i++) {
    const piece_ref *p = &w->pieces[i];
    fputs(i ? ",{\"id\":" : "{\"id\":", f);
    order_json_str(f, in->ids[p->doc], strlen(in->ids[p->doc]));
    fprintf(f, ",\"start\":%llu,\"end\":%llu,\"tokens\":%llu}",
            (unsigned long long)p->start, (unsigned long long)p->end,
            (unsigned long long)p->tokens);
  }
  fputs("],\"text\":", f);
  order_json_str(f, w->text, w->len);
  fputs("}\n", f);
}

static void win_flush(FILE *f, window *w, const order_input *in, winsim *ws) {
  win_write(f, w, in);
  ws_close(ws);
  w->index++;
  w->len = 0;
  w->np = 0;
  w->tokens = 0;
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

/* Pack along the path; first_window[p] = window of position p's first
 * token, tokens[p] = its whole text's token count. */
static int pack_iclm(const order_input *in, const order_path *p,
                     const order_opts *o, const tok *tk, uint64_t sep_tokens,
                     FILE *f, uint64_t *first_window, uint64_t *tokens,
                     winsim *ws, order_summary *s, ctxd_error *e) {
  const uint64_t L = o->window_tokens;
  const char *sep = o->separator ? o->separator : "";
  size_t sep_len = strlen(sep);
  window w = {0};
  int rc = 0;
  for (uint64_t pos = 0; pos < p->n; pos++) {
    if ((pos & 4095) == 0 &&
        (rc = order_step(o, ORDER_PHASE_PACK, pos, p->n, e)))
      goto out;
    uint32_t doc = p->doc[pos];
    const char *t;
    size_t len;
    if ((rc = pack_text(in, doc, o, &t, &len, e))) goto out;
    uint64_t total = tok_count(tk, t, len), placed = 0;
    tokens[pos] = total;
    size_t a = 0;
    int first = 1;
    for (;;) {
      if (w.tokens == L) win_flush(f, &w, in, ws);
      uint64_t rem = L - w.tokens;
      /* the rest costs at least total - placed (counts are sub-additive) */
      uint64_t rest = a == 0 ? total : total > placed ? total - placed : 0;
      size_t b = len;
      if (a > 0 && rest <= rem) rest = tok_count(tk, t + a, len - a);
      if (rest > rem) {
        b = longest_prefix(tk, t, len, a, rem);
        if (b == a) { /* not even one character fits: next window */
          win_flush(f, &w, in, ws);
          continue;
        }
        rest = tok_count(tk, t + a, b - a);
      }
      if (first) first_window[pos] = w.index;
      if (first || w.np == 0 || w.pieces[w.np - 1].doc != doc) ws_add(ws, doc);
      first = 0;
      if (win_text(&w, t + a, b - a) ||
          win_piece(&w, doc, a, b, rest))
        goto nomem;
      w.tokens += rest;
      placed += rest;
      s->tokens += rest;
      a = b;
      if (a == len) break;
    }
    if (sep_tokens > L - w.tokens) win_flush(f, &w, in, ws);
    if (win_text(&w, sep, sep_len)) goto nomem;
    w.tokens += sep_tokens;
    s->tokens += sep_tokens;
  }
  if (w.np > 0 || w.tokens > 0) win_flush(f, &w, in, ws);
  s->windows = w.index;
  order_report(o, ORDER_PHASE_PACK, p->n, p->n);
  goto out;
nomem:
  rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for a window");
out:
  free(w.text);
  free(w.pieces);
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
                             const order_path *p, uint64_t pos,
                             const uint64_t *first_window) {
  uint32_t doc = p->doc[pos];
  fputs("{\"id\":", f);
  order_json_str(f, in->ids[doc], strlen(in->ids[doc]));
  fprintf(f, ",\"position\":%llu", (unsigned long long)pos);
  if (first_window)
    fprintf(f, ",\"window\":%llu", (unsigned long long)first_window[pos]);
  fputs(",\"similarity\":", f);
  order_json_num(f, pos ? p->sim[pos] : NAN);
  fputs(p->jump[pos] ? ",\"jump\":true}\n" : ",\"jump\":false}\n", f);
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
  uint64_t *first_window = NULL, *tokens = NULL;
  double *S = NULL;
  int rc;
  const tok *tk = o->tokenizer ? o->tokenizer : tok_estimator();
  const char *sep = o->separator ? o->separator : "";
  uint64_t sep_tokens = o->separator_tokens
                            ? o->separator_tokens
                            : tok_count(tk, sep, strlen(sep));
  s->window_similarity = s->random_window_similarity = NAN;
  if (o->mode == ORDER_MODE_ICLM && sep_tokens >= o->window_tokens)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "the separator costs %llu tokens, not less than the "
                       "window of %u",
                       (unsigned long long)sep_tokens, o->window_tokens);
  if ((rc = order_afile_open(&fo, dir, ORDER_FILE_ORDER, e))) goto out;
  if (o->mode != ORDER_MODE_ORDER &&
      (rc = order_afile_open(&fw, dir, ORDER_FILE_WINDOWS, e)))
    goto out;
  if (o->mode == ORDER_MODE_ICLM) {
    first_window = malloc((p->n ? p->n : 1) * sizeof *first_window);
    tokens = malloc((p->n ? p->n : 1) * sizeof *tokens);
    if (in->vectors) S = calloc(in->dim, sizeof *S);
    if (!first_window || !tokens || (in->vectors && !S)) {
      rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for packing");
      goto out;
    }
    winsim ws = {in, S, 0, 0, 0, 0};
    if ((rc = pack_iclm(in, p, o, tk, sep_tokens, fw.f, first_window, tokens,
                        &ws, s, e)))
      goto out;
    s->window_similarity = ws_mean(&ws);
    s->random_window_similarity = random_windows(
        p, tokens, in, o->window_tokens, sep_tokens, o->seed, S);
  } else if (o->mode == ORDER_MODE_DECOMPOSE) {
    if ((rc = pack_decompose(in, p, o, tk, fo.f, fw.f, s, e))) goto out;
  }
  if (o->mode != ORDER_MODE_DECOMPOSE)
    for (uint64_t pos = 0; pos < p->n; pos++)
      write_order_line(fo.f, in, p, pos, first_window);
  if ((rc = order_afile_open(&fd, dir, ORDER_FILE_DUPLICATES, e))) goto out;
  write_duplicates(fd.f, in, d);
  if ((fw.f && (rc = order_afile_commit(&fw, e))) ||
      (rc = order_afile_commit(&fo, e)) || (rc = order_afile_commit(&fd, e)))
    goto out;
out:
  order_afile_abort(&fo);
  order_afile_abort(&fw);
  order_afile_abort(&fd);
  free(first_window);
  free(tokens);
  free(S);
  return rc;
}
