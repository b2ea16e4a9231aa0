/* jobs.h - the corpus job runner: Corpus.Reorder jobs (In-Context
 * Pretraining ordering and packing, index/order.h) run on threads of their
 * own, never on the request worker pool, one at a time by default, the
 * others queued in submission order.
 *
 * State: each job is a record in the store (store_job_*: the magic
 * "CTXDJOB1" and a packed ctxd.v1.Job), written when it is submitted, at
 * every state and phase change and every 5 s while it runs. A job goes on
 * when the client that started it goes away.
 *
 * Restart: jobs_open finds the records; a job that was queued, or running
 * when the daemon stopped, is queued again and resumes from its last
 * finished expensive phase through order_run's checkpoints in its output
 * directory (vectors.ckpt, knn.ckpt). A job found running (the daemon
 * stopped uncleanly) counts an interruption; after JOBS_MAX_INTERRUPTIONS
 * it is failed rather than run again, so a job that crashes the daemon
 * cannot do it forever. A job whose request no longer passes the checks
 * (its input file is gone, its collection dropped) is failed with the
 * reason. No job is ever dropped without a record saying why.
 *
 * Stop (SIGTERM): jobs_stop sets every running job's cancel flag; it stops
 * at its next check, is recorded as queued and resumes at the next start.
 *
 * Progress: watchers (jobs_watch_*) get the job's events; the runner calls
 * a watcher's nudge at every phase change and at the end, and the watcher
 * polls (the handlers do so every JOBS_PROGRESS_MS in between).
 *
 * Thread safety: every function may be called from any thread. */
#ifndef CTXD_JOBS_H
#define CTXD_JOBS_H

#include <stddef.h>
#include <stdint.h>

#include "../index/coll.h"
#include "../index/err.h"
#include "../index/store.h"
#include "ctxd/v1/corpus.pb-c.h"

#define JOBS_ID_MAX 32            /* "job-" + 12 hex digits + NUL fits */
#define JOBS_MAX_INTERRUPTIONS 3  /* unclean stops survived while running */
#define JOBS_PROGRESS_MS 250      /* watchers' polling period */
#define JOBS_LIST_DEFAULT 100
#define JOBS_LIST_MAX 10000
#define JOBS_META_MAX 64          /* metadata filters of one request */
/* doc_ids of one request: the request is kept in the job's record and sent
 * back by GetJob, which must stay well below a client's 4 MiB limit; larger
 * selections go by metadata or a JSONL file. */
#define JOBS_DOC_IDS_MAX 100000

typedef struct jobs jobs;

typedef struct jobs_opts {
  unsigned max_running;   /* jobs run at once (one thread each), >= 1 */
  unsigned max_queued;    /* jobs waiting; a submission beyond is refused */
  unsigned keep_finished; /* ended jobs kept; the oldest are forgotten */
  unsigned threads;       /* each job's order_opts.threads; 0: every core */
  unsigned test_delay_ms; /* tests only: each progress report of a job
                           * sleeps this long (so that tests can act on a
                           * job mid-way); 0 in production */
  const char *output_root; /* output_dir must resolve under this
                            * directory (paths.h; created when missing);
                            * "" or NULL: anywhere ("/") */
  const char *input_root;  /* input_jsonl likewise */
  uint64_t max_docs;       /* documents one job may read (limits.max_job_docs;
                            * more fails it RESOURCE_EXHAUSTED); 0: the
                            * engine's ORDER_DOCS_MAX */
} jobs_opts;

/* Start the runner: load the job records, requeue or fail the unfinished
 * ones (see the top), start max_running threads. st and cs must outlive
 * it. Errors: CTXD_EINVAL (a root cannot be created or resolved), CTXD_EIO,
 * CTXD_ENOMEM. */
int jobs_open(store *st, coll_set *cs, const jobs_opts *o, jobs **out,
              ctxd_error *e);

/* Shutting down: refuse new jobs, stop running ones at their next cancel
 * check (they resume at the next start), end every watcher. Idempotent;
 * returns at once. */
void jobs_stop(jobs *j);

/* jobs_stop, wait for the job threads, free. No watcher may remain (the
 * server's calls are over). NULL is a no-op. */
void jobs_close(jobs *j);

/* Check a request and queue a job for it. Checks that need no reading:
 * mode, k, window, separator, dedup and decompose options, vectors and
 * embedder, output_dir (paths_confine'd to output_root, not an existing
 * non-directory; created with its parents), the input (a readable regular
 * file paths_confine'd to input_root, or an existing collection; filters
 * only with a collection; doc_ids unique, at most 100,000). *id receives
 * the job's id. Errors: CTXD_ELIMIT (k, doc_ids or metadata filters over
 * their limits), CTXD_EINVAL (the message names the field), CTXD_ENOTFOUND (collection), CTXD_EPRECOND
 * (another queued or running job writes to output_dir), CTXD_ELIMIT
 * (max_queued jobs wait already), CTXD_EBUSY (shutting down), CTXD_EIO,
 * CTXD_ENOSPC (recording the job). */
int jobs_submit(jobs *j, const Ctxd__V1__ReorderRequest *req,
                char id[JOBS_ID_MAX], ctxd_error *e);

/* A job as a packed ctxd.v1.Job (*buf malloc'd, caller frees).
 * Errors: CTXD_ENOTFOUND, CTXD_ENOMEM. */
int jobs_get(jobs *j, const char *id, uint8_t **buf, size_t *len,
             ctxd_error *e);

/* The most recent `limit` jobs (0: JOBS_LIST_DEFAULT) in state `state`
 * ("" or NULL: any), oldest first, as a packed ListJobsResponse; their
 * requests without doc_ids (jobs_get has them).
 * Errors: CTXD_EINVAL (unknown state, limit above JOBS_LIST_MAX),
 * CTXD_ENOMEM. */
int jobs_list(jobs *j, const char *state, uint32_t limit, uint8_t **buf,
              size_t *len, ctxd_error *e);

/* Cancel a job: a queued one ends `cancelled` at once, a running one sets
 * its cancel flag and ends `cancelled` at its next check. Errors:
 * CTXD_ENOTFOUND, CTXD_EPRECOND (it has ended already). */
int jobs_cancel(jobs *j, const char *id, ctxd_error *e);

/* 1 when the job has ended (done, failed or cancelled) or is unknown. */
int jobs_ended(jobs *j, const char *id);

/* ---- metrics ---------------------------------------------------------------- */

#define JOBS_STATES 5 /* queued, running, done, failed, cancelled */

/* A running job's current phase. */
typedef struct jobs_progress {
  char id[JOBS_ID_MAX];
  const char *phase; /* order_phase_name(), static; "" before the first */
  const char *unit;  /* the phase's unit, static; "" before the first */
  uint64_t done, total; /* total 0: not known yet */
} jobs_progress;

/* The name of state i < JOBS_STATES ("queued", ...). */
const char *jobs_state_name(int i);

/* Jobs the runner keeps (keep_finished bounds the ended ones) per state,
 * and the progress of up to `cap` running jobs (*n_run of them filled).
 * Never fails; holds the runner's lock only to copy. */
void jobs_counts(jobs *j, uint64_t counts[JOBS_STATES], jobs_progress *run,
                 size_t cap, size_t *n_run);

/* ---- watching a job -------------------------------------------------------- */

typedef struct jobs_watch jobs_watch;

/* Follow job `id`. `nudge(arg)` is called (with the runner's lock held: it
 * must only schedule a poll, e.g. rpc_set_timer(call, 0)) when there is
 * something new. Errors: CTXD_ENOTFOUND, CTXD_EBUSY (shutting down),
 * CTXD_ENOMEM. */
int jobs_watch_open(jobs *j, const char *id, void (*nudge)(void *arg),
                    void *arg, jobs_watch **out, ctxd_error *e);

/* Send (through `send`, with packed ReorderEvents) what is new: an event
 * for each phase that ended since the last poll, then the current progress;
 * or, once the job has ended, its last event. Then *over = 1 and *status /
 * msg (msg_cap bytes) say how the stream should end: OK (done), CANCELLED,
 * the failure's status and message, or UNAVAILABLE (shutting down). A
 * `send` that returns non-zero (the call is gone) stops the poll.
 * Errors: CTXD_ENOMEM. */
int jobs_watch_poll(jobs_watch *w,
                    int (*send)(void *arg, const uint8_t *msg, size_t len),
                    void *arg, int *over, int *status, char *msg,
                    size_t msg_cap, ctxd_error *e);

/* Stop watching (after this no nudge comes). NULL is a no-op. */
void jobs_watch_close(jobs_watch *w);

#endif
