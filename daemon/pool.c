/* pool.c - worker threads and strands over one mutex-protected ready queue.
 *
 * The ready queue holds strands with queued tasks; independent tasks sit on
 * a second FIFO. A worker pops a strand, runs its first task outside the
 * lock, then requeues the strand at the tail when it has more tasks - so a
 * busy call cannot starve the others. */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct pool {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pool_strand *ready_head, *ready_tail;
  pool_task *free_head, *free_tail; /* independent tasks */
  int stopping;
  unsigned n;
  pthread_t *threads;
};

static void ready_push(pool *p, pool_strand *s) {
  s->next_ready = NULL;
  if (p->ready_tail)
    p->ready_tail->next_ready = s;
  else
    p->ready_head = s;
  p->ready_tail = s;
}

static void *worker_main(void *arg) {
  pool *p = arg;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    pool_strand *s = p->ready_head;
    pool_task *t = NULL;
    if (s) {
      p->ready_head = s->next_ready;
      if (!p->ready_head) p->ready_tail = NULL;
      t = s->head;
      s->head = t->next;
      if (!s->head) s->tail = NULL;
    } else if (p->free_head) {
      t = p->free_head;
      p->free_head = t->next;
      if (!p->free_head) p->free_tail = NULL;
    } else if (p->stopping) {
      break;
    } else {
      pthread_cond_wait(&p->cv, &p->mu);
      continue;
    }
    pthread_mutex_unlock(&p->mu);
    t->next = NULL;
    t->run(t);
    pthread_mutex_lock(&p->mu);
    if (s) {
      /* Still "scheduled" while it ran, so nobody else picked it up. */
      if (s->head)
        ready_push(p, s);
      else
        s->scheduled = 0;
    }
    if (t->done) {
      pthread_mutex_unlock(&p->mu);
      t->done(t);
      pthread_mutex_lock(&p->mu);
    }
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

pool *pool_create(unsigned n) {
  pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  if (n == 0) {
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    n = c > 0 ? (unsigned)c : 1;
  }
  p->threads = calloc(n, sizeof *p->threads);
  if (!p->threads) {
    free(p);
    return NULL;
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  for (unsigned i = 0; i < n; i++) {
    if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) {
      p->n = i;
      pool_destroy(p);
      return NULL;
    }
    p->n = i + 1;
  }
  return p;
}

void pool_post(pool *p, pool_strand *s, pool_task *t) {
  t->next = NULL;
  pthread_mutex_lock(&p->mu);
  if (s->tail)
    s->tail->next = t;
  else
    s->head = t;
  s->tail = t;
  if (!s->scheduled) {
    s->scheduled = 1;
    ready_push(p, s);
    pthread_cond_signal(&p->cv);
  }
  pthread_mutex_unlock(&p->mu);
}

void pool_submit(pool *p, pool_task *t) {
  t->next = NULL;
  pthread_mutex_lock(&p->mu);
  if (p->free_tail)
    p->free_tail->next = t;
  else
    p->free_head = t;
  p->free_tail = t;
  pthread_cond_signal(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

unsigned pool_size(const pool *p) {
  return p->n;
}

void pool_destroy(pool *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->stopping = 1;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (unsigned i = 0; i < p->n; i++) pthread_join(p->threads[i], NULL);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p->threads);
  free(p);
}
