/* lmtok.c - cut-and-cache exact tokenization over llama.cpp (see lmtok.h). */
#include "model/lmtok.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <llama.h>

#define SHARDS 64     /* mutexes */
#define SLOTS 1024    /* entries per shard (power of two) */
#define WAYS 4        /* slots probed per lookup */
#define KEY_MAX 31    /* longest cached piece, bytes */
#define IDS_MAX 7     /* most tokens of a cached piece */

typedef struct entry {
  uint64_t h; /* 0: empty */
  uint8_t klen, nids;
  char key[KEY_MAX];
  int32_t ids[IDS_MAX];
} entry;

typedef struct shard {
  pthread_mutex_t mu;
  entry *e;
} shard;

struct lmtok {
  const struct llama_vocab *v;
  const uint32_t *text_off; /* token i's text is text_off[i+1] - text_off[i] bytes */
  shard sh[SHARDS];
};

/* Pre-tokenizers whose rules make the cut points safe (lmtok.h). */
static const char *const safe_pre[] = {"gpt-2", "llama3", "llama-v3", "llama-bpe", "qwen2"};

lmtok *lmtok_create(const struct llama_vocab *v, const char *pre, const uint32_t *text_off) {
  int ok = 0;
  for (size_t i = 0; i < sizeof safe_pre / sizeof *safe_pre; i++)
    if (strcmp(pre, safe_pre[i]) == 0) ok = 1;
  if (!ok || llama_vocab_type(v) != LLAMA_VOCAB_TYPE_BPE) return NULL;
  /* llama.cpp matches user-defined tokens in plain text too: one whose text
   * holds a cut point could be split by a cut. */
  int32_t n = llama_vocab_n_tokens(v);
  for (int32_t i = 0; i < n; i++) {
    if (!(llama_vocab_get_attr(v, i) & LLAMA_TOKEN_ATTR_USER_DEFINED)) continue;
    const char *s = llama_vocab_get_text(v, i);
    for (size_t k = 0; s[k] && s[k + 1]; k++)
      if (s[k] == ' ' && ((s[k + 1] | 0x20) >= 'a' && (s[k + 1] | 0x20) <= 'z')) return NULL;
  }
  lmtok *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->v = v;
  t->text_off = text_off;
  for (int i = 0; i < SHARDS; i++) {
    pthread_mutex_init(&t->sh[i].mu, NULL);
    t->sh[i].e = calloc(SLOTS, sizeof(entry));
    if (!t->sh[i].e) {
      lmtok_free(t);
      return NULL;
    }
  }
  return t;
}

void lmtok_free(lmtok *t) {
  if (!t) return;
  for (int i = 0; i < SHARDS; i++) {
    pthread_mutex_destroy(&t->sh[i].mu);
    free(t->sh[i].e);
  }
  free(t);
}

static int is_letter(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }

/* The end of the piece that starts at `at`: the next cut point, or n. */
static size_t piece_end(const char *s, size_t n, size_t at) {
  for (size_t i = at + 1; i + 1 < n; i++) {
    if (s[i] == ' ' && is_letter((unsigned char)s[i + 1]) &&
        (unsigned char)s[i - 1] > 0x20 && (unsigned char)s[i - 1] < 0x7f)
      return i;
  }
  return n;
}

static uint64_t hash(const char *s, size_t n) {
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ull;
  }
  return h | 1;
}

/* Cached tokens of the piece into out (IDS_MAX); -1 if not cached. */
static int lookup(lmtok *t, const char *s, size_t n, uint64_t h, int32_t *out) {
  shard *sh = &t->sh[h >> 58];
  uint32_t slot = (uint32_t)(h >> 16) & (SLOTS - 1);
  int r = -1;
  pthread_mutex_lock(&sh->mu);
  for (int w = 0; w < WAYS; w++) {
    const entry *e = &sh->e[(slot + (uint32_t)w) & (SLOTS - 1)];
    if (e->h == h && e->klen == n && memcmp(e->key, s, n) == 0) {
      memcpy(out, e->ids, e->nids * sizeof *out);
      r = e->nids;
      break;
    }
  }
  pthread_mutex_unlock(&sh->mu);
  return r;
}

static void insert(lmtok *t, const char *s, size_t n, uint64_t h, const int32_t *ids, int nids) {
  shard *sh = &t->sh[h >> 58];
  uint32_t slot = (uint32_t)(h >> 16) & (SLOTS - 1);
  pthread_mutex_lock(&sh->mu);
  entry *e = &sh->e[slot];
  for (int w = 0; w < WAYS; w++) {
    entry *c = &sh->e[(slot + (uint32_t)w) & (SLOTS - 1)];
    if (c->h == 0) {
      e = c;
      break;
    }
  }
  e->h = h;
  e->klen = (uint8_t)n;
  e->nids = (uint8_t)nids;
  memcpy(e->key, s, n);
  memcpy(e->ids, ids, (size_t)nids * sizeof *ids);
  pthread_mutex_unlock(&sh->mu);
}

static int reserve(int32_t **ids, size_t *cap, size_t need) {
  if (need <= *cap) return 0;
  size_t nc = *cap ? *cap : 64;
  while (nc < need) nc *= 2;
  int32_t *p = realloc(*ids, nc * sizeof *p);
  if (!p) return -1;
  *ids = p;
  *cap = nc;
  return 0;
}

/* llama.cpp on one span, appended. */
static int direct(lmtok *t, const char *s, size_t n, int32_t **ids, size_t *n_ids, size_t *cap) {
  size_t want = n / 2 + 16;
  for (int attempt = 0; attempt < 2; attempt++) {
    if (reserve(ids, cap, *n_ids + want) != 0) return -1;
    int32_t r = llama_tokenize(t->v, s, (int32_t)n, *ids + *n_ids, (int32_t)want, false, false);
    if (r >= 0) {
      *n_ids += (size_t)r;
      return 0;
    }
    if (r == INT32_MIN) return -1;
    want = (size_t)(-(int64_t)r);
  }
  return -1;
}

/* Tokenize the run of uncached pieces s[ends[-1]..ends[k-1]) (the first
 * starts at `from`) in one llama.cpp call, and cache each piece's share:
 * tokens never cross a cut point, and a byte-level token's text is its
 * bytes, so the token lengths say where each piece's tokens end. */
static int flush(lmtok *t, const char *s, size_t from, const size_t *ends, int k, int32_t **ids,
                 size_t *n_ids, size_t *cap) {
  if (k == 0) return 0;
  size_t first = *n_ids;
  if (direct(t, s + from, ends[k - 1] - from, ids, n_ids, cap) != 0) return -1;
  size_t pos = from, ps = from, ts = first;
  int j = 0;
  for (size_t i = first; i < *n_ids && j < k; i++) {
    int32_t id = (*ids)[i];
    pos += t->text_off[id + 1] - t->text_off[id];
    if (pos > ends[j]) break; /* not where a piece ends: cache nothing more */
    if (pos == ends[j]) {
      size_t len = ends[j] - ps, nt = i + 1 - ts;
      if (len <= KEY_MAX && nt <= IDS_MAX) insert(t, s + ps, len, hash(s + ps, len), *ids + ts, (int)nt);
      ps = ends[j];
      ts = i + 1;
      j++;
    }
  }
  return 0;
}

#define RUN_MAX 256 /* pieces per llama.cpp call */

int lmtok_tokenize(lmtok *t, const char *s, size_t n, int32_t **ids, size_t *n_ids, size_t *cap) {
  int32_t got[IDS_MAX];
  size_t ends[RUN_MAX], from = 0;
  int k = 0;
  for (size_t at = 0; at < n;) {
    size_t end = piece_end(s, n, at), len = end - at;
    int hit = -1;
    if (len <= KEY_MAX) hit = lookup(t, s + at, len, hash(s + at, len), got);
    if (hit >= 0) {
      if (flush(t, s, from, ends, k, ids, n_ids, cap) != 0) return -1;
      k = 0;
      if (reserve(ids, cap, *n_ids + (size_t)hit) != 0) return -1;
      memcpy(*ids + *n_ids, got, (size_t)hit * sizeof *got);
      *n_ids += (size_t)hit;
    } else {
      if (k == RUN_MAX) {
        if (flush(t, s, from, ends, k, ids, n_ids, cap) != 0) return -1;
        k = 0;
      }
      if (k == 0) from = at;
      ends[k++] = end;
    }
    at = end;
  }
  return flush(t, s, from, ends, k, ids, n_ids, cap);
}

uint64_t lmtok_count(lmtok *t, const char *s, size_t n) {
  int32_t *ids = NULL;
  size_t n_ids = 0, cap = 0;
  uint64_t r;
  if (lmtok_tokenize(t, s, n, &ids, &n_ids, &cap) == 0) {
    r = n_ids;
  } else {
    /* Out of memory: llama.cpp counts without storing anything. */
    int32_t c = llama_tokenize(t->v, s, (int32_t)n, NULL, 0, false, false);
    r = c < 0 ? (uint64_t)(-(int64_t)c) : (uint64_t)c;
  }
  free(ids);
  return r;
}
