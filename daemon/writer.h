/* writer.h - group commit for unary Documents.Put: one thread gathers the
 * documents that Put handlers validated and chunked on the workers and
 * commits them together, one LMDB transaction (one fsync) per group.
 *
 * Threads. writer_submit() and writer_call_closed() may be called from any
 * thread (in ctxd: the worker running the call's on_message, and later its
 * on_close); everything else the writer does runs on its own thread, which
 * is the only one that commits through it. A worker never waits for a
 * group: writer_submit() queues and returns.
 *
 * Ownership. The document's memory belongs to its `owner`, handed to the
 * writer by writer_submit(): the writer reads `doc` until it calls
 * release(owner), exactly once, on its thread (or never, when
 * writer_submit() fails: the caller keeps the owner then).
 *
 * The call. The writer uses the rpc_call only while the call is open: each
 * submitted document gets an item shared by the writer and the call,
 * reference-counted and locked, freed by whichever lets go last. The call's
 * on_close must call writer_call_closed() on it; once that returns, the
 * writer never touches the call again (if it was answering just then,
 * writer_call_closed() waits for that one answer, microseconds).
 *
 * Answers. For every document whose call is still open, answer() runs once
 * on the writer thread with the call's item locked: rc 0 and the store's
 * result, or an error in `e`: the store's (each document of a failed group is
 * retried alone, so every client gets its own error), the `committed` hook's
 * (the write is durable then, and `res` is still given), or CTXD_ETIMEOUT when
 * the call's deadline was less than WRITER_MIN_LEFT_NS away when its write
 * was about to start (then it was not written). A document whose call is
 * already over when its group forms is dropped unwritten and unanswered. */
#ifndef CTXD_WRITER_H
#define CTXD_WRITER_H

#include <stddef.h>
#include <stdint.h>

#include "../index/err.h"
#include "../index/store.h"
#include "rpc.h"

/* A write is not started with less than this left before the deadline. */
#define WRITER_MIN_LEFT_NS 2000000ULL

typedef struct writer writer;
typedef struct writer_item writer_item;

typedef struct writer_opts {
  uint32_t max_docs;         /* documents per transaction (>= 1) */
  uint64_t max_bytes;        /* bytes per transaction, as counted by submitters;
                                a group always takes at least one document */
  uint64_t max_queued_bytes; /* writer_submit() refuses beyond this (0: 4 x
                                max_bytes) */
  /* Optional: called on the writer thread after every successful commit,
   * before the calls of its documents are answered. ctxd passes coll_sync,
   * so that a Put returns only once search sees the document. When it
   * fails, the documents are durable but every call of the group is
   * answered with its error (code and message). */
  int (*committed)(void *arg, ctxd_error *e);
  void *committed_arg;
} writer_opts;

/* Answer a call (see above). `owner` is the one given to writer_submit(). */
typedef void (*writer_answer_fn)(rpc_call *c, void *owner, int rc,
                                 const store_put_result *res,
                                 const ctxd_error *e);

/* Start the writer thread on `st` (which must outlive writer_stop()).
 * Errors: CTXD_ENOMEM, CTXD_EINTERNAL (no thread). */
int writer_create(store *st, const writer_opts *opts, writer **out,
                  ctxd_error *e);

/* Queue one document for call `c`; `bytes` is what it holds in memory (it
 * counts against max_bytes and max_queued_bytes). On 0 the writer owns
 * `owner` and *item is the call's side of the shared item: keep it for
 * writer_call_closed(). Errors (nothing queued, the caller keeps owner):
 * CTXD_EBUSY - the writer is stopping; CTXD_ELIMIT - the queue holds
 * max_queued_bytes already (the caller may commit the document itself,
 * which is what slows its client down); CTXD_ENOMEM. */
int writer_submit(writer *w, rpc_call *c, const store_put_doc *doc,
                  uint64_t bytes, writer_answer_fn answer,
                  void (*release)(void *owner), void *owner,
                  writer_item **item);

/* The call of `item` is over (its on_close): after this the writer neither
 * answers nor touches it. Drops the call's reference; NULL is a no-op.
 * Safe after writer_stop(). */
void writer_call_closed(writer_item *item);

/* Stop taking documents (writer_submit() answers CTXD_EBUSY), commit and
 * answer what is queued as usual, join the thread and free the writer.
 * Items whose call has not closed yet stay alive until it does. NULL is a
 * no-op. */
void writer_stop(writer *w);

#endif
