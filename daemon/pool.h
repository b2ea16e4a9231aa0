/* pool.h - the worker pool: a fixed set of threads running tasks, and
 * strands (serial queues) whose tasks run one at a time, in order, on any
 * worker. The transport gives every call a strand, so a handler's callbacks
 * never run concurrently.
 *
 * Tasks are intrusive: the caller embeds a pool_task in its own struct and
 * owns its memory. run() executes the work; done() (may be NULL) is called
 * after the pool has stopped touching the strand, so it may free the task
 * and even the strand's owner. */
#ifndef CTXD_POOL_H
#define CTXD_POOL_H

#include <stddef.h>

typedef struct pool pool;
typedef struct pool_task pool_task;
typedef struct pool_strand pool_strand;

struct pool_task {
  pool_task *next;
  void (*run)(pool_task *t);
  void (*done)(pool_task *t);
};

/* Zero-initialise (or pool_strand_init) before first use; no teardown. */
struct pool_strand {
  pool_task *head, *tail;
  pool_strand *next_ready;
  int scheduled; /* on the ready queue or running */
};

static inline void pool_strand_init(pool_strand *s) {
  s->head = s->tail = NULL;
  s->next_ready = NULL;
  s->scheduled = 0;
}

/* Start `n` worker threads (0 = number of online CPUs). Returns NULL when a
 * thread cannot be created. */
pool *pool_create(unsigned n);

/* Queue a task on a strand. Never blocks on task execution. */
void pool_post(pool *p, pool_strand *s, pool_task *t);

/* Queue an independent task (runs in parallel with others). */
void pool_submit(pool *p, pool_task *t);

/* Number of workers. */
unsigned pool_size(const pool *p);

/* Run every queued task, then join the threads and free the pool. Tasks may
 * post more tasks while draining; they run too. NULL is a no-op. */
void pool_destroy(pool *p);

#endif
