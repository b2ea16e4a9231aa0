/* handlers_corpus.c - the ctxd.v1.Corpus service: Reorder and WatchJob
 * (server streams of a job's progress), GetJob, CancelJob, ListJobs, and
 * FetchResult (a finished job's output files in pieces). The jobs
 * themselves belong to the runner (jobs.h): a stream that ends, for any
 * reason, stops only the watching. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctx.h"
#include "ctxd/v1/corpus.pb-c.h"
#include "err.h"
#include "grpc_wire.h"
#include "handlers.h"
#include "jobs.h"
#include "rpc.h"

/* A stream stops producing while this much is queued for a slow client. */
#define PENDING_MAX (4u << 20)
#define FETCH_CHUNK_DEFAULT (1u << 20)
/* Below a stock client's default 4 MiB receive limit with room to spare. */
#define FETCH_CHUNK_MAX (3u << 20)
/* names in one FetchResultRequest (a job writes a handful of files) */
#define FETCH_FILES_MAX 64
/* CancelJob waits this long for a running job to stop. */
#define CANCEL_WAIT_MS 5000
#define CANCEL_POLL_MS 50

/* 1 when a string of the message holds a NUL byte (protobuf-c would cut it
 * short): top-level fields `fields` (0-terminated), and key/value of the
 * MetadataFilter entries of field `meta` (0: none). */
static int has_nul(const uint8_t *msg, size_t len, const uint32_t *fields,
                   uint32_t meta) {
  for (const uint32_t *f = fields; *f; f++)
    if (pbw_field_has_nul(msg, len, *f)) return 1;
  if (!meta) return 0;
  pbw_reader r;
  pbw_field f;
  pbw_init(&r, msg, len);
  while (pbw_next(&r, &f) == 1)
    if (f.num == meta && f.wire_type == 2 &&
        (pbw_field_has_nul(f.data, f.len, 1) ||
         pbw_field_has_nul(f.data, f.len, 2)))
      return 1;
  return 0;
}

static jobs *runner(rpc_call *c) { return rpc_ctx(c)->jobs; }

/* ---- Reorder and WatchJob -------------------------------------------------- */

typedef struct watch_state {
  jobs_watch *w;
} watch_state;

static void nudge(void *arg) { rpc_set_timer(arg, 0); }

static int send_event(void *arg, const uint8_t *msg, size_t len) {
  return rpc_send(arg, msg, len);
}

/* Send what is new; end the call once the job has ended. */
static void watch_poll(rpc_call *c) {
  watch_state *ws = rpc_state(c);
  char msg[1200];
  int over, status;
  ctxd_error e;
  if (!ws || !ws->w) return;
  if (rpc_pending_bytes(c) > PENDING_MAX) {
    rpc_set_timer(c, JOBS_PROGRESS_MS); /* the client is not reading */
    return;
  }
  ctxd_clearerr(&e);
  if (jobs_watch_poll(ws->w, send_event, c, &over, &status, msg, sizeof msg,
                      &e)) {
    rpc_finish_error(c, &e);
    return;
  }
  if (over && status == GRPC_OK)
    rpc_finish(c, GRPC_OK, NULL);
  else if (over)
    rpc_finish(c, status, "%s", msg);
  else
    rpc_set_timer(c, JOBS_PROGRESS_MS);
}

/* Start watching job `id` on call c and send its first events. */
static void watch_start(rpc_call *c, const char *id) {
  watch_state *ws = calloc(1, sizeof *ws);
  ctxd_error e;
  if (!ws) {
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  rpc_set_state(c, ws);
  ctxd_clearerr(&e);
  if (jobs_watch_open(runner(c), id, nudge, c, &ws->w, &e)) {
    rpc_finish_error(c, &e);
    return;
  }
  watch_poll(c);
}

static void watch_on_close(rpc_call *c) {
  watch_state *ws = rpc_state(c);
  if (!ws) return;
  jobs_watch_close(ws->w);
  free(ws);
  rpc_set_state(c, NULL);
}

/* More than `max` occurrences of top-level field `num`, counted on the
 * wire before protobuf-c allocates a string or a struct for each
 * (grpc_wire.h, pbw_walk): finish the call RESOURCE_EXHAUSTED, "at most
 * MAX WHAT (got N)HINT", and return 1. */
static int wire_over(rpc_call *c, const uint8_t *msg, size_t len, uint32_t num,
                     long long max, const char *what, const char *hint) {
  long long n = pbw_count(msg, len, &num, 1);
  if (n <= max) return 0;
  rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "at most %lld %s (got %lld)%s", max,
             what, n, hint);
  return 1;
}

static void reorder_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  static const uint32_t strings[] = {1, 2, 6, 7, 8, 10, 11, 16, 0};
  char id[JOBS_ID_MAX];
  ctxd_error e;
  /* jobs_submit says the same after unpacking */
  if (wire_over(c, msg, len, 8, JOBS_DOC_IDS_MAX, "doc_ids",
                ": select more documents by metadata, or give a JSONL file") ||
      wire_over(c, msg, len, 9, JOBS_META_MAX, "metadata filters", ""))
    return;
  Ctxd__V1__ReorderRequest *req =
      ctxd__v1__reorder_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed ReorderRequest message");
    return;
  }
  ctxd_clearerr(&e);
  if (has_nul(msg, len, strings, 9))
    rpc_finish(c, GRPC_INVALID_ARGUMENT,
               "a string of the ReorderRequest contains a NUL byte");
  else if (jobs_submit(runner(c), req, id, &e))
    rpc_finish_error(c, &e);
  else
    watch_start(c, id);
  ctxd__v1__reorder_request__free_unpacked(req, NULL);
}

const rpc_method h_corpus_reorder = {
    "/ctxd.v1.Corpus/Reorder", RPC_SERVER_STREAM, 0, reorder_on_message, NULL,
    watch_poll, watch_on_close};

/* The job id of a GetJobRequest / CancelJobRequest (field 1), or NULL
 * after finishing the call with the reason. `req` is freed by the caller. */
static const char *job_id_of(rpc_call *c, const uint8_t *msg, size_t len,
                             const char *id) {
  static const uint32_t strings[] = {1, 0};
  if (has_nul(msg, len, strings, 0)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "job_id contains a NUL byte");
    return NULL;
  }
  if (!*id) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "job_id is required");
    return NULL;
  }
  return id;
}

static void watch_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  Ctxd__V1__GetJobRequest *req = ctxd__v1__get_job_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed GetJobRequest message");
    return;
  }
  if (job_id_of(c, msg, len, req->job_id)) watch_start(c, req->job_id);
  ctxd__v1__get_job_request__free_unpacked(req, NULL);
}

const rpc_method h_corpus_watch_job = {
    "/ctxd.v1.Corpus/WatchJob", RPC_SERVER_STREAM, 0, watch_on_message, NULL,
    watch_poll, watch_on_close};

/* ---- GetJob, ListJobs -------------------------------------------------------- */

/* Send the packed Job `id` and end the call. */
static void send_job(rpc_call *c, const char *id) {
  uint8_t *buf;
  size_t n;
  ctxd_error e;
  ctxd_clearerr(&e);
  if (jobs_get(runner(c), id, &buf, &n, &e)) {
    rpc_finish_error(c, &e);
    return;
  }
  if (rpc_send(c, buf, n) == 0) rpc_finish(c, GRPC_OK, NULL);
  free(buf);
}

static void get_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  Ctxd__V1__GetJobRequest *req = ctxd__v1__get_job_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed GetJobRequest message");
    return;
  }
  if (job_id_of(c, msg, len, req->job_id)) send_job(c, req->job_id);
  ctxd__v1__get_job_request__free_unpacked(req, NULL);
}

const rpc_method h_corpus_get_job = {"/ctxd.v1.Corpus/GetJob", RPC_UNARY, 0,
                                     get_on_message, NULL, NULL, NULL};

static void list_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  static const uint32_t strings[] = {1, 0};
  uint8_t *buf;
  size_t n;
  ctxd_error e;
  Ctxd__V1__ListJobsRequest *req =
      ctxd__v1__list_jobs_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed ListJobsRequest message");
    return;
  }
  ctxd_clearerr(&e);
  if (has_nul(msg, len, strings, 0)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "state contains a NUL byte");
  } else if (jobs_list(runner(c), req->state, req->limit, &buf, &n, &e)) {
    rpc_finish_error(c, &e);
  } else {
    if (rpc_send(c, buf, n) == 0) rpc_finish(c, GRPC_OK, NULL);
    free(buf);
  }
  ctxd__v1__list_jobs_request__free_unpacked(req, NULL);
}

const rpc_method h_corpus_list_jobs = {"/ctxd.v1.Corpus/ListJobs", RPC_UNARY,
                                       0, list_on_message, NULL, NULL, NULL};

/* ---- CancelJob --------------------------------------------------------------- */

/* The answer waits (polling) until the job has stopped or CANCEL_WAIT_MS
 * have passed, so that a client usually sees the final state. */
typedef struct cancel_state {
  char id[JOBS_ID_MAX];
  unsigned waited_ms;
} cancel_state;

static void cancel_check(rpc_call *c) {
  cancel_state *cs = rpc_state(c);
  if (!cs) return;
  if (jobs_ended(runner(c), cs->id) || cs->waited_ms >= CANCEL_WAIT_MS) {
    send_job(c, cs->id);
    return;
  }
  cs->waited_ms += CANCEL_POLL_MS;
  rpc_set_timer(c, CANCEL_POLL_MS);
}

static void cancel_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  ctxd_error e;
  Ctxd__V1__CancelJobRequest *req =
      ctxd__v1__cancel_job_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed CancelJobRequest message");
    return;
  }
  ctxd_clearerr(&e);
  if (!job_id_of(c, msg, len, req->job_id)) goto out;
  if (jobs_cancel(runner(c), req->job_id, &e)) {
    rpc_finish_error(c, &e);
    goto out;
  }
  cancel_state *cs = calloc(1, sizeof *cs);
  if (!cs) {
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  snprintf(cs->id, sizeof cs->id, "%s", req->job_id);
  rpc_set_state(c, cs);
  cancel_check(c);
out:
  ctxd__v1__cancel_job_request__free_unpacked(req, NULL);
}

static void free_state(rpc_call *c) {
  free(rpc_state(c));
  rpc_set_state(c, NULL);
}

const rpc_method h_corpus_cancel_job = {
    "/ctxd.v1.Corpus/CancelJob", RPC_UNARY, 0, cancel_on_message, NULL,
    cancel_check, free_state};

/* ---- FetchResult ------------------------------------------------------------- */

typedef struct fetch_state {
  Ctxd__V1__Job *job;             /* the job as it ended (unpacked) */
  Ctxd__V1__OutputFile **files;   /* what to send, in order */
  size_t n, cur;
  int fd;                         /* files[cur], or -1 */
  uint64_t off;
  uint32_t chunk;
  uint8_t *buf;
} fetch_state;

static void fetch_free(fetch_state *fs) {
  if (!fs) return;
  if (fs->fd >= 0) close(fs->fd);
  free(fs->files);
  free(fs->buf);
  if (fs->job) ctxd__v1__job__free_unpacked(fs->job, NULL);
  free(fs);
}

/* Open files[cur], checking it is still what the job wrote (its size). */
static int fetch_open(rpc_call *c, fetch_state *fs) {
  const Ctxd__V1__OutputFile *f = fs->files[fs->cur];
  struct stat st;
  fs->fd = open(f->path, O_RDONLY | O_CLOEXEC);
  if (fs->fd < 0 || fstat(fs->fd, &st) != 0) {
    rpc_finish(c, GRPC_FAILED_PRECONDITION,
               "%s of job %s cannot be read (%s): it was moved or removed "
               "since the job ended",
               f->path, fs->job->job_id, strerror(errno));
    return -1;
  }
  if ((uint64_t)st.st_size != f->bytes) {
    rpc_finish(c, GRPC_FAILED_PRECONDITION,
               "%s has %lld bytes, but job %s wrote %llu: it changed since "
               "the job ended (another job with the same output_dir?)",
               f->path, (long long)st.st_size, fs->job->job_id,
               (unsigned long long)f->bytes);
    return -1;
  }
  fs->off = 0;
  return 0;
}

/* Send pieces while the client keeps up; resume from a timer otherwise. */
static void fetch_pump(rpc_call *c) {
  fetch_state *fs = rpc_state(c);
  if (!fs) return;
  while (rpc_pending_bytes(c) < PENDING_MAX) {
    if (fs->cur == fs->n) {
      rpc_finish(c, GRPC_OK, NULL);
      return;
    }
    const Ctxd__V1__OutputFile *f = fs->files[fs->cur];
    if (fs->fd < 0 && fetch_open(c, fs)) return;
    uint64_t left = f->bytes - fs->off;
    size_t want = left < fs->chunk ? (size_t)left : fs->chunk;
    ssize_t got = want ? pread(fs->fd, fs->buf, want, (off_t)fs->off) : 0;
    if (got < 0 || (size_t)got != want) {
      rpc_finish(c, GRPC_FAILED_PRECONDITION,
                 "%s of job %s: %s at byte %llu", f->path, fs->job->job_id,
                 got < 0 ? strerror(errno) : "the file got shorter",
                 (unsigned long long)fs->off);
      return;
    }
    Ctxd__V1__ResultChunk rc = CTXD__V1__RESULT_CHUNK__INIT;
    rc.file = f->name;
    rc.offset = fs->off;
    rc.data.data = fs->buf;
    rc.data.len = want;
    rc.size = f->bytes;
    rc.last = fs->off + want == f->bytes;
    if (rpc_send_pb(c, &rc.base) != 0) return; /* the call is gone */
    fs->off += want;
    if (rc.last) {
      close(fs->fd);
      fs->fd = -1;
      fs->cur++;
    }
  }
  rpc_set_timer(c, 5);
}

static void fetch_on_message(rpc_call *c, const uint8_t *msg, size_t len) {
  static const uint32_t strings[] = {1, 2, 0};
  uint8_t *buf = NULL;
  size_t n;
  ctxd_error e;
  fetch_state *fs = NULL;
  if (wire_over(c, msg, len, 2, FETCH_FILES_MAX, "file names", ""))
    return;
  Ctxd__V1__FetchResultRequest *req =
      ctxd__v1__fetch_result_request__unpack(NULL, len, msg);
  if (!req) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "malformed FetchResultRequest message");
    return;
  }
  ctxd_clearerr(&e);
  if (has_nul(msg, len, strings, 0)) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT, "a string contains a NUL byte");
    goto out;
  }
  if (!job_id_of(c, msg, len, req->job_id)) goto out;
  if (req->chunk_bytes > FETCH_CHUNK_MAX) {
    rpc_finish(c, GRPC_INVALID_ARGUMENT,
               "chunk_bytes must be at most %u (got %u)", FETCH_CHUNK_MAX,
               req->chunk_bytes);
    goto out;
  }
  if (jobs_get(runner(c), req->job_id, &buf, &n, &e)) {
    rpc_finish_error(c, &e);
    goto out;
  }
  fs = calloc(1, sizeof *fs);
  if (!fs || !(fs->job = ctxd__v1__job__unpack(NULL, n, buf))) {
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  fs->fd = -1;
  const Ctxd__V1__ReorderResult *r = fs->job->result;
  if (strcmp(fs->job->state, "done") != 0 || !r) {
    rpc_finish(c, GRPC_FAILED_PRECONDITION,
               "job %s is %s: only a done job has output files",
               fs->job->job_id, fs->job->state);
    goto out;
  }
  size_t want = req->n_files ? req->n_files : r->n_files;
  fs->files = calloc(want ? want : 1, sizeof *fs->files);
  fs->chunk = req->chunk_bytes ? req->chunk_bytes : FETCH_CHUNK_DEFAULT;
  fs->buf = malloc(fs->chunk);
  if (!fs->files || !fs->buf) {
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < want; i++) {
    Ctxd__V1__OutputFile *f = req->n_files ? NULL : r->files[i];
    for (size_t k = 0; k < r->n_files && !f; k++)
      if (strcmp(r->files[k]->name, req->files[i]) == 0) f = r->files[k];
    if (!f) {
      char names[256] = "";
      for (size_t k = 0; k < r->n_files; k++) {
        size_t l = strlen(names);
        snprintf(names + l, sizeof names - l, "%s%s", k ? ", " : "",
                 r->files[k]->name);
      }
      rpc_finish(c, GRPC_INVALID_ARGUMENT,
                 "job %s has no file \"%.100s\" (it has %s)", fs->job->job_id,
                 req->files[i], names);
      goto out;
    }
    fs->files[fs->n++] = f;
  }
  rpc_set_state(c, fs);
  fs = NULL;
  fetch_pump(c);
out:
  fetch_free(fs);
  free(buf);
  ctxd__v1__fetch_result_request__free_unpacked(req, NULL);
}

static void fetch_on_close(rpc_call *c) {
  fetch_free(rpc_state(c));
  rpc_set_state(c, NULL);
}

const rpc_method h_corpus_fetch_result = {
    "/ctxd.v1.Corpus/FetchResult", RPC_SERVER_STREAM, 0, fetch_on_message,
    NULL, fetch_pump, fetch_on_close};
