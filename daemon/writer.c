/* writer.c - group commit for unary Put (see writer.h): workers queue
 * prepared documents, one thread takes everything queued (up to max_docs and
 * max_bytes), commits it in one transaction and answers each call.
 *
 * While the thread commits one group the next one gathers, so the group
 * size follows the load by itself: one document when calls come one at a
 * time (no added wait), hundreds under many concurrent calls. */
#include "writer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

struct writer_item {
  writer_item *next;    /* in the queue (writer mu) */
  pthread_mutex_t mu;   /* guards call and refs */
  rpc_call *call;       /* NULL once the call closed */
  int refs;             /* the writer's and the call's: 2, then 1, then 0 */
  uint64_t deadline_ns; /* rpc_deadline_ns() at submit, 0 if none */
  uint64_t bytes;
  store_put_doc doc; /* owned by `owner` until release(owner) */
  writer_answer_fn answer;
  void (*release)(void *owner);
  void *owner;
};

struct writer {
  store *st;
  writer_opts o;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* --- under mu --- */
  writer_item *head, *tail; /* FIFO: arrival order */
  uint64_t queued_bytes;
  int stopping;
  /* --- writer thread only: buffers kept across groups --- */
  writer_item **group;
  store_put_doc *docs;
  store_put_result *res;
  size_t cap;      /* entries of group, docs and res */
  uint32_t *slots; /* ids of the current transaction: index + 1, 0 = empty */
  size_t n_slots;  /* a power of two, at least 2 * cap */
  uint64_t n_txns, n_docs, n_split, n_retried; /* logged at stop */
};

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void item_unref(writer_item *it) {
  pthread_mutex_lock(&it->mu);
  int last = --it->refs == 0;
  pthread_mutex_unlock(&it->mu);
  if (!last) return;
  pthread_mutex_destroy(&it->mu);
  free(it);
}

/* The writer is done with the item: give the document back, drop its
 * reference. */
static void item_done(writer_item *it) {
  it->release(it->owner);
  it->owner = NULL;
  item_unref(it);
}

/* Answer the item's call if it is still open. The lock keeps on_close
 * (writer_call_closed) from returning while the call is in use. */
static void item_answer(writer_item *it, int rc, const store_put_result *res,
                        const ctxd_error *e) {
  pthread_mutex_lock(&it->mu);
  if (it->call) it->answer(it->call, it->owner, rc, res, e);
  pthread_mutex_unlock(&it->mu);
}

/* May this item's write start now? 1 yes. 0 no: its call is over (dropped
 * unanswered) or its deadline is too close (answered DEADLINE_EXCEEDED);
 * either way it was not written and the writer is done with it. */
static int item_may_write(writer_item *it, uint64_t now) {
  pthread_mutex_lock(&it->mu);
  int gone = !it->call || rpc_is_done(it->call);
  int late =
      !gone && it->deadline_ns && now + WRITER_MIN_LEFT_NS >= it->deadline_ns;
  if (late) {
    ctxd_error e;
    ctxd_seterr(&e, CTXD_ETIMEOUT, "deadline exceeded before the write");
    it->answer(it->call, it->owner, e.code, NULL, &e);
  }
  pthread_mutex_unlock(&it->mu);
  if (!gone && !late) return 1;
  item_done(it);
  return 0;
}

/* ---- duplicate ids ----------------------------------------------------------
 */

static uint64_t hash_id(const char *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= (uint8_t)s[i];
    h *= 0x100000001b3ULL;
  }
  return h;
}

/* 1 when group[i]'s id is already in the set of the transaction being
 * built; otherwise records it and returns 0. Generated ids (empty) never
 * clash. */
static int id_seen(writer *w, size_t i) {
  const store_put_doc *d = &w->group[i]->doc;
  if (!d->id_len) return 0;
  size_t mask = w->n_slots - 1;
  size_t h = hash_id(d->id, d->id_len) & mask;
  while (w->slots[h]) {
    const store_put_doc *o = &w->group[w->slots[h] - 1]->doc;
    if (o->id_len == d->id_len && memcmp(o->id, d->id, d->id_len) == 0)
      return 1;
    h = (h + 1) & mask;
  }
  w->slots[h] = (uint32_t)(i + 1);
  return 0;
}

/* ---- committing ---------------------------------------------------------- */

/* After a successful commit: the `committed` hook (0 without one). Its
 * failure is logged once per group and becomes every call's answer. */
static int after_commit(writer *w, size_t n, ctxd_error *e) {
  if (!w->o.committed) return 0;
  int rc = w->o.committed(w->o.committed_arg, e);
  if (rc)
    LOG_ERROR("after-commit-failed docs=%zu code=%d err=\"%s\"", n, rc,
              e->msg);
  return rc;
}

/* Write one item in a transaction of its own and answer it. */
static void commit_one(writer *w, writer_item *it) {
  ctxd_error e;
  store_put_result res;
  ctxd_clearerr(&e);
  if (!item_may_write(it, now_ns())) return;
  int rc = store_put(w->st, &it->doc, 1, &res, &e);
  w->n_txns++;
  if (rc == 0) {
    w->n_docs++;
    int hrc = after_commit(w, 1, &e);
    item_answer(it, hrc, &res, hrc ? &e : NULL);
  } else {
    item_answer(it, rc, NULL, &e);
  }
  item_done(it);
}

/* Commit group[lo, hi) - distinct ids - in one transaction and answer each
 * call. The deadline check comes first, here, so that it is as close as
 * possible to the write. A failed transaction is retried one document at a
 * time, so a document that cannot be written (no space, too large for the
 * map) fails alone and every client gets its own error. */
static void commit_range(writer *w, size_t lo, size_t hi) {
  uint64_t now = now_ns();
  size_t n = 0;
  for (size_t i = lo; i < hi; i++)
    if (item_may_write(w->group[i], now)) w->group[lo + n++] = w->group[i];
  if (n == 0) return;
  if (n == 1) {
    commit_one(w, w->group[lo]);
    return;
  }
  ctxd_error e;
  ctxd_clearerr(&e);
  for (size_t k = 0; k < n; k++) w->docs[k] = w->group[lo + k]->doc;
  int rc = store_put(w->st, w->docs, n, w->res, &e);
  w->n_txns++;
  if (rc == 0) {
    w->n_docs += n;
    int hrc = after_commit(w, n, &e);
    for (size_t k = 0; k < n; k++) {
      item_answer(w->group[lo + k], hrc, &w->res[k], hrc ? &e : NULL);
      item_done(w->group[lo + k]);
    }
    return;
  }
  LOG_WARN("group-commit-failed docs=%zu code=%d err=\"%s\" action=retry-each",
           n, rc, e.msg);
  w->n_retried += n;
  for (size_t k = 0; k < n; k++) commit_one(w, w->group[lo + k]);
}

/* Commit group[0, n) in arrival order: one transaction, split before any
 * id already in it (store_put refuses an id twice in one batch), so the
 * last write of an id wins as with one call after another. */
static void commit_group(writer *w, size_t n) {
  size_t lo = 0;
  memset(w->slots, 0, w->n_slots * sizeof *w->slots);
  for (size_t i = 0; i < n; i++) {
    if (!id_seen(w, i)) continue;
    commit_range(w, lo, i);
    w->n_split++;
    lo = i;
    memset(w->slots, 0, w->n_slots * sizeof *w->slots);
    id_seen(w, i);
  }
  commit_range(w, lo, n);
}

static void *writer_main(void *arg) {
  writer *w = arg;
  for (;;) {
    pthread_mutex_lock(&w->mu);
    while (!w->head && !w->stopping) pthread_cond_wait(&w->cv, &w->mu);
    if (!w->head) {
      pthread_mutex_unlock(&w->mu);
      break; /* stopping, and nothing left */
    }
    size_t n = 0;
    uint64_t bytes = 0;
    while (w->head && n < w->cap &&
           (n == 0 || bytes + w->head->bytes <= w->o.max_bytes)) {
      writer_item *it = w->head;
      w->head = it->next;
      it->next = NULL;
      bytes += it->bytes;
      w->group[n++] = it;
    }
    if (!w->head) w->tail = NULL;
    w->queued_bytes -= bytes;
    pthread_mutex_unlock(&w->mu);
    commit_group(w, n);
  }
  return NULL;
}

/* ---- writer.h
 * ---------------------------------------------------------------- */

int writer_create(store *st, const writer_opts *opts, writer **out,
                  ctxd_error *e) {
  int rc;
  *out = NULL;
  writer *w = calloc(1, sizeof *w);
  if (!w) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  w->st = st;
  w->o = *opts;
  if (w->o.max_docs == 0) w->o.max_docs = 1;
  if (w->o.max_queued_bytes == 0) w->o.max_queued_bytes = 4 * w->o.max_bytes;
  w->cap = w->o.max_docs;
  w->n_slots = 64;
  while (w->n_slots < 2 * w->cap) w->n_slots *= 2;
  w->group = malloc(w->cap * sizeof *w->group);
  w->docs = malloc(w->cap * sizeof *w->docs);
  w->res = malloc(w->cap * sizeof *w->res);
  w->slots = calloc(w->n_slots, sizeof *w->slots);
  if (!w->group || !w->docs || !w->res || !w->slots) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory for the writer's buffers");
    goto fail;
  }
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    rc = ctxd_seterr(e, CTXD_EINTERNAL, "cannot start the writer thread");
    goto fail;
  }
  *out = w;
  return 0;
fail:
  free(w->group);
  free(w->docs);
  free(w->res);
  free(w->slots);
  free(w);
  return rc;
}

int writer_submit(writer *w, rpc_call *c, const store_put_doc *doc,
                  uint64_t bytes, writer_answer_fn answer,
                  void (*release)(void *owner), void *owner,
                  writer_item **item) {
  *item = NULL;
  writer_item *it = malloc(sizeof *it);
  if (!it) return CTXD_ENOMEM;
  it->next = NULL;
  pthread_mutex_init(&it->mu, NULL);
  it->call = c;
  it->refs = 2;
  it->deadline_ns = rpc_deadline_ns(c);
  it->bytes = bytes;
  it->doc = *doc;
  it->answer = answer;
  it->release = release;
  it->owner = owner;
  int rc = 0;
  pthread_mutex_lock(&w->mu);
  if (w->stopping) {
    rc = CTXD_EBUSY;
  } else if (w->queued_bytes &&
             w->queued_bytes + bytes > w->o.max_queued_bytes) {
    rc = CTXD_ELIMIT;
  } else {
    int was_empty = !w->head;
    if (w->tail)
      w->tail->next = it;
    else
      w->head = it;
    w->tail = it;
    w->queued_bytes += bytes;
    /* The thread sleeps only on an empty queue. */
    if (was_empty) pthread_cond_signal(&w->cv);
  }
  pthread_mutex_unlock(&w->mu);
  if (rc) {
    pthread_mutex_destroy(&it->mu);
    free(it);
    return rc;
  }
  *item = it;
  return 0;
}

void writer_call_closed(writer_item *item) {
  if (!item) return;
  pthread_mutex_lock(&item->mu);
  item->call = NULL;
  int last = --item->refs == 0;
  pthread_mutex_unlock(&item->mu);
  if (!last) return;
  pthread_mutex_destroy(&item->mu);
  free(item);
}

void writer_stop(writer *w) {
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  w->stopping = 1;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, NULL);
  LOG_INFO(
      "writer-stopped transactions=%llu docs=%llu split=%llu "
      "retried=%llu",
      (unsigned long long)w->n_txns, (unsigned long long)w->n_docs,
      (unsigned long long)w->n_split, (unsigned long long)w->n_retried);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  free(w->group);
  free(w->docs);
  free(w->res);
  free(w->slots);
  free(w);
}
