/* jobs.c - the corpus job runner (jobs.h): request checks, the queue and
 * its threads, each job's state and phase progress, the store records,
 * restart handling, and the events watchers see. The work itself is
 * order_run (index/order.h) on the input jobs_input.c builds. */
#include "jobs.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "../index/order.h"
#include "jobs_input.h"
#include "log.h"
#include "paths.h"

#define RECORD_MAGIC "CTXDJOB1"
#define RECORD_MAGIC_LEN 8
#define PERSIST_EVERY_S 5.0
#define JOB_ERR_MAX 1024
#define MAX_EVENTS (ORDER_PHASE_COUNT + 2)

enum { JS_QUEUED, JS_RUNNING, JS_DONE, JS_FAILED, JS_CANCELLED, JS_COUNT };
static const char *const state_names[JS_COUNT] = {"queued", "running", "done",
                                                  "failed", "cancelled"};

static const char *const phase_units[ORDER_PHASE_COUNT] = {
    "bytes", "documents", "iterations", "vectors",
    "queries", "documents", "documents", "documents"};

/* One phase of a job. A phase may be entered more than once (IVF training
 * and list assignment alternate; a resumed job reads its input again):
 * `closes` counts how often it ended, so a watcher reports each end. */
typedef struct phase_rec {
  int used;
  unsigned seq;      /* order of first entry */
  const char *unit;
  uint64_t done, total;
  double seconds;    /* of the closed intervals */
  double t_open;     /* start of the open interval; 0 when closed */
  unsigned closes;
} phase_rec;

typedef struct job job;

struct jobs_watch {
  jobs *J;
  job *jb;
  void (*nudge)(void *arg);
  void *arg;
  unsigned sent[ORDER_PHASE_COUNT]; /* closes already reported */
  jobs_watch *prev, *next;
};

struct job {
  jobs *J;
  char id[JOBS_ID_MAX];
  Ctxd__V1__ReorderRequest *req; /* owned (protobuf-c unpacked) */
  char outdir[PATH_MAX];         /* normalised output_dir */
  int state;
  phase_rec ph[ORDER_PHASE_COUNT];
  unsigned nseq;
  int cur;                       /* the open phase, or -1 */
  Ctxd__V1__ReorderResult *result; /* owned, state done */
  char error[JOB_ERR_MAX];
  int error_status;              /* gRPC status of the failure */
  int64_t created_ms, started_ms, finished_ms, updated_ms;
  uint32_t resumes, interruptions;
  atomic_int cancel;
  int cancel_user;               /* CancelJob asked (not a shutdown) */
  double t_start;                /* monotonic, this run's start */
  double last_persist;
  int reserved;                  /* submitted, record not yet written */
  int pins;                      /* threads using it without the lock:
                                  * trim() leaves it alone */
  jobs_watch *watchers;
  job *next;                     /* every job, oldest first */
  job *qnext;                    /* the queue */
};

struct jobs {
  store *st;
  coll_set *cs;
  jobs_opts o;
  char output_root[PATH_MAX]; /* resolved; "/" = anywhere */
  char input_root[PATH_MAX];
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_mutex_t persist_mu; /* one record write at a time, in order */
  job *head, *tail;
  job *qhead, *qtail;
  unsigned n_waiting;         /* queued, reserved included */
  int stopping;
  pthread_t *threads;
  unsigned n_threads;
  uint64_t last_id_ms;
};

/* ---- small helpers ------------------------------------------------------- */

static double mono(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int ended(int state) { return state >= JS_DONE; }

static job *find(jobs *J, const char *id) {
  for (job *jb = J->head; jb; jb = jb->next)
    if (strcmp(jb->id, id) == 0) return jb;
  return NULL;
}

static void nudge_all(job *jb) {
  for (jobs_watch *w = jb->watchers; w; w = w->next) w->nudge(w->arg);
}

/* A copy of a protobuf-c message (pack, unpack): what the job keeps of a
 * request or a result is owned by it alone. */
static void *pb_copy(const ProtobufCMessage *m,
                     const ProtobufCMessageDescriptor *d, ctxd_error *e) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(n ? n : 1);
  void *out = NULL;
  if (buf) {
    protobuf_c_message_pack(m, buf);
    out = protobuf_c_message_unpack(d, NULL, n, buf);
    free(buf);
  }
  if (!out) ctxd_seterr(e, CTXD_ENOMEM, "out of memory copying a message");
  return out;
}

/* ---- request checks ------------------------------------------------------ */

/* A request turned into order options and an input spec (pointing into
 * the request, which must outlive it). */
typedef struct job_spec {
  order_opts o;
  jobin_spec in;
  store_kv *meta; /* owned */
  char outdir[PATH_MAX];  /* output_dir resolved under output_root */
  char injsonl[PATH_MAX]; /* input_jsonl resolved under input_root */
} job_spec;

static void spec_free(job_spec *s) {
  free(s->meta);
  s->meta = NULL;
}

static int cmp_strp(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The checks of jobs_submit that read nothing but the request, the file
 * system's metadata and the collection list. */
static int spec_build(jobs *J, const Ctxd__V1__ReorderRequest *r,
                      job_spec *s, ctxd_error *e) {
  struct stat st;
  int rc, m;
  memset(s, 0, sizeof *s);
  order_opts_defaults(&s->o);
  if ((rc = paths_confine("output_dir", "jobs.output_root", J->output_root,
                          r->output_dir, s->outdir, sizeof s->outdir, e)))
    return rc;
  if (stat(s->outdir, &st) == 0 && !S_ISDIR(st.st_mode))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "output_dir %s exists and is not a directory",
                       s->outdir);

  if ((m = order_mode_parse(*r->mode ? r->mode : "iclm")) < 0)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "unknown mode \"%.64s\" (iclm, decompose or order)",
                       r->mode);
  s->o.mode = (order_mode)m;
  /* more work than one request may ask for: RESOURCE_EXHAUSTED (README,
   * "Limits"); values that mean nothing stay INVALID_ARGUMENT */
  if (r->k > ORDER_K_MAX)
    return ctxd_seterr(e, CTXD_ELIMIT, "k must be 1..%d (got %u)", ORDER_K_MAX,
                       r->k);
  s->o.k = r->k ? r->k : ORDER_DEFAULT_K;
  if (s->o.mode != ORDER_MODE_ORDER && r->window_tokens == 0)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "window_tokens is required for mode %s: 1..%u tokens "
                       "(8192 is usual)",
                       order_mode_name(s->o.mode), ORDER_WINDOW_MAX);
  if (r->window_tokens > ORDER_WINDOW_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "window_tokens must be 1..%u (got %u)",
                       ORDER_WINDOW_MAX, r->window_tokens);
  if (r->window_tokens) s->o.window_tokens = r->window_tokens;
  s->o.seed = r->seed;
  if (r->dedup_cosine != r->dedup_cosine || r->dedup_cosine < 0)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "dedup_cosine must be positive (0: %.2f; above 1: no "
                       "duplicate removal)",
                       ORDER_DEFAULT_DUP_COSINE);
  if (r->dedup_cosine > 0) s->o.dup_cosine = r->dedup_cosine;
  if (!(r->dedup_jaccard >= 0 && r->dedup_jaccard <= 1))
    return ctxd_seterr(e, CTXD_EINVAL,
                       "dedup_jaccard must be in [0, 1] (0: no Jaccard check)");
  s->o.dup_jaccard = r->dedup_jaccard;
  if (r->decompose_min_log2) s->o.decompose_min_log2 = r->decompose_min_log2;
  s->o.decompose_max_log2 = r->decompose_max_log2;
  if (r->no_separator)
    s->o.separator = "";
  else if (*r->separator)
    s->o.separator = r->separator;
  s->o.keep_checkpoints = r->keep_checkpoints;
  s->o.threads = J->o.threads;
  if ((rc = order_opts_check(&s->o, e))) return rc;

  /* the input */
  jobin_spec *in = &s->in;
  in->jsonl_path = "";
  in->collection = r->collection;
  in->embedder = r->embedder;
  if ((m = jobin_vectors_parse(r->vectors)) < 0)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "unknown vectors \"%.64s\" (auto, embed or given)",
                       r->vectors);
  in->vectors = (jobin_vectors)m;
  in->max_docs = J->o.max_docs;
  if (*r->input_jsonl) {
    if ((rc = paths_confine("input_jsonl", "jobs.input_root", J->input_root,
                            r->input_jsonl, s->injsonl, sizeof s->injsonl,
                            e)))
      return rc;
    in->jsonl_path = s->injsonl;
    if (r->n_doc_ids || r->n_metadata)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "doc_ids and metadata select stored documents; they "
                         "do not go with input_jsonl");
    if (stat(s->injsonl, &st) != 0)
      return ctxd_seterr(e, CTXD_EINVAL, "input_jsonl %s: %s", r->input_jsonl,
                         errno == ENOENT ? "no such file" : strerror(errno));
    if (!S_ISREG(st.st_mode))
      return ctxd_seterr(e, CTXD_EINVAL, "input_jsonl %s is not a regular file",
                         r->input_jsonl);
    if (access(s->injsonl, R_OK) != 0)
      return ctxd_seterr(e, CTXD_EINVAL, "input_jsonl %s: %s", r->input_jsonl,
                         strerror(errno));
  }
  if (r->n_metadata > JOBS_META_MAX)
    return ctxd_seterr(e, CTXD_ELIMIT, "at most %d metadata filters (got %zu)",
                       JOBS_META_MAX, r->n_metadata);
  if (r->n_metadata) {
    s->meta = calloc(r->n_metadata, sizeof *s->meta);
    if (!s->meta) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    for (size_t i = 0; i < r->n_metadata; i++) {
      const Ctxd__V1__MetadataFilter *f = r->metadata[i];
      if (!f || !*f->key)
        return ctxd_seterr(e, CTXD_EINVAL, "metadata filter %zu has no key", i);
      s->meta[i].key = f->key;
      s->meta[i].key_len = strlen(f->key);
      s->meta[i].val = f->value;
      s->meta[i].val_len = strlen(f->value);
    }
    in->meta = s->meta;
    in->n_meta = r->n_metadata;
  }
  if (r->n_doc_ids > JOBS_DOC_IDS_MAX)
    return ctxd_seterr(e, CTXD_ELIMIT,
                       "at most %d doc_ids (got %zu): select more documents "
                       "by metadata, or give a JSONL file",
                       JOBS_DOC_IDS_MAX, r->n_doc_ids);
  if (r->n_doc_ids) {
    char **sorted = malloc(r->n_doc_ids * sizeof *sorted);
    if (!sorted) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    memcpy(sorted, r->doc_ids, r->n_doc_ids * sizeof *sorted);
    qsort(sorted, r->n_doc_ids, sizeof *sorted, cmp_strp);
    for (size_t i = 0; i < r->n_doc_ids && !rc; i++) {
      size_t l = strlen(sorted[i]);
      if (l == 0 || l > STORE_ID_MAX)
        rc = ctxd_seterr(e, CTXD_EINVAL, "doc_ids: an id must be 1..%d bytes",
                         STORE_ID_MAX);
      else if (i && strcmp(sorted[i], sorted[i - 1]) == 0)
        rc = ctxd_seterr(e, CTXD_EINVAL, "doc_ids lists \"%.200s\" twice",
                         sorted[i]);
    }
    free(sorted);
    if (rc) return rc;
    in->doc_ids = (const char *const *)r->doc_ids;
    in->n_doc_ids = r->n_doc_ids;
  }
  return jobin_check(J->cs, in, e);
}

/* ---- the Job message --------------------------------------------------------- */

/* Protobuf-c structs of one job, pointing into it (valid while the lock is
 * held and the job unchanged). */
typedef struct job_pb {
  Ctxd__V1__Job job;
  Ctxd__V1__ReorderRequest req; /* ListJobs: the request without doc_ids */
  Ctxd__V1__JobPhase ph[ORDER_PHASE_COUNT];
  Ctxd__V1__JobPhase *php[ORDER_PHASE_COUNT];
} job_pb;

/* Phases in the order they were first entered. */
static size_t phase_order(const job *jb, int out[ORDER_PHASE_COUNT]) {
  size_t n = 0;
  for (unsigned s = 0; s < jb->nseq; s++)
    for (int p = 0; p < ORDER_PHASE_COUNT; p++)
      if (jb->ph[p].used && jb->ph[p].seq == s) out[n++] = p;
  return n;
}

static double phase_seconds(const phase_rec *r, double now) {
  return r->seconds + (r->t_open > 0 ? now - r->t_open : 0);
}

/* The phase a Job or an event shows: the open one, else the last one. */
static int shown_phase(const job *jb) {
  if (jb->cur >= 0) return jb->cur;
  int order[ORDER_PHASE_COUNT];
  size_t n = phase_order(jb, order);
  return n ? order[n - 1] : -1;
}

static void rate_eta(const phase_rec *r, double now, double *rate,
                     double *eta) {
  double s = phase_seconds(r, now);
  *rate = s > 0 ? (double)r->done / s : 0;
  if (r->total && r->done >= r->total)
    *eta = 0;
  else if (*rate > 0 && r->total)
    *eta = (double)(r->total - r->done) / *rate;
  else
    *eta = -1;
}

static void job_fill(const job *jb, job_pb *out) {
  double now = mono();
  int order[ORDER_PHASE_COUNT];
  size_t n = phase_order(jb, order);
  Ctxd__V1__Job *j = &out->job;
  ctxd__v1__job__init(j);
  j->job_id = (char *)jb->id;
  j->state = (char *)state_names[jb->state];
  j->request = jb->req;
  for (size_t i = 0; i < n; i++) {
    const phase_rec *r = &jb->ph[order[i]];
    Ctxd__V1__JobPhase *p = &out->ph[i];
    ctxd__v1__job_phase__init(p);
    p->name = (char *)order_phase_name((order_phase)order[i]);
    p->unit = (char *)r->unit;
    p->done = r->done;
    p->total = r->total;
    p->seconds = phase_seconds(r, now);
    out->php[i] = p;
  }
  j->phases = out->php;
  j->n_phases = n;
  int cp = shown_phase(jb);
  j->eta_seconds = -1;
  if (cp >= 0) {
    const phase_rec *r = &jb->ph[cp];
    j->phase = (char *)order_phase_name((order_phase)cp);
    j->unit = (char *)r->unit;
    j->done = r->done;
    j->total = r->total;
    rate_eta(r, now, &j->rate, &j->eta_seconds);
  }
  j->result = jb->result;
  j->error = (char *)jb->error;
  j->error_status =
      (char *)(jb->error[0] ? grpc_status_name(jb->error_status) : "");
  j->created_ms = jb->created_ms;
  j->started_ms = jb->started_ms;
  j->finished_ms = jb->finished_ms;
  j->updated_ms = jb->updated_ms;
  j->resumes = jb->resumes;
  j->interruptions = jb->interruptions;
  j->cancel_requested = jb->cancel_user;
}

static int pack_pb(const ProtobufCMessage *m, size_t prefix, uint8_t **buf,
                   size_t *len, ctxd_error *e) {
  size_t n = protobuf_c_message_get_packed_size(m);
  *buf = malloc(prefix + n + 1);
  if (!*buf) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  protobuf_c_message_pack(m, *buf + prefix);
  *len = prefix + n;
  return 0;
}

/* ---- records ---------------------------------------------------------------- */

/* Write jb's record; with the lock not held. Failures are logged: the job
 * goes on, and the next write tries again. */
static int persist(jobs *J, job *jb, ctxd_error *e) {
  ctxd_error e2;
  uint8_t *buf = NULL;
  size_t len = 0;
  int rc;
  if (!e) e = &e2;
  pthread_mutex_lock(&J->persist_mu);
  pthread_mutex_lock(&J->mu);
  /* The record carries the time it is written; GetJob shows that time only
   * once the write committed, so updated_ms >= started_ms tells a client
   * that the running state is durable (a kill -9 then finds it running). */
  int64_t prev = jb->updated_ms, now = now_ms();
  jb->updated_ms = now;
  jb->last_persist = mono();
  job_pb pb;
  job_fill(jb, &pb);
  rc = pack_pb(&pb.job.base, RECORD_MAGIC_LEN, &buf, &len, e);
  jb->updated_ms = prev;
  pthread_mutex_unlock(&J->mu);
  if (!rc) {
    memcpy(buf, RECORD_MAGIC, RECORD_MAGIC_LEN);
    rc = store_job_put(J->st, jb->id, buf, len, e);
  }
  if (!rc) {
    pthread_mutex_lock(&J->mu);
    if (jb->updated_ms < now) jb->updated_ms = now;
    pthread_mutex_unlock(&J->mu);
  }
  pthread_mutex_unlock(&J->persist_mu);
  if (rc)
    LOG_ERROR("job-record-failed id=%s err=\"%s\"", jb->id, e->msg);
  free(buf);
  return rc;
}

static void job_free(job *jb) {
  if (!jb) return;
  if (jb->req) ctxd__v1__reorder_request__free_unpacked(jb->req, NULL);
  if (jb->result) ctxd__v1__reorder_result__free_unpacked(jb->result, NULL);
  free(jb);
}

static job *job_new(jobs *J) {
  job *jb = calloc(1, sizeof *jb);
  if (!jb) return NULL;
  jb->J = J;
  jb->cur = -1;
  atomic_init(&jb->cancel, 0);
  return jb;
}

/* Rebuild a job from its record. NULL when the record is unreadable. */
static job *job_from_record(jobs *J, const char *id, const uint8_t *rec,
                            size_t len) {
  if (len < RECORD_MAGIC_LEN || memcmp(rec, RECORD_MAGIC, RECORD_MAGIC_LEN))
    return NULL;
  Ctxd__V1__Job *pj = ctxd__v1__job__unpack(NULL, len - RECORD_MAGIC_LEN,
                                            rec + RECORD_MAGIC_LEN);
  if (!pj) return NULL;
  job *jb = job_new(J);
  int st = -1;
  for (int s = 0; s < JS_COUNT; s++)
    if (strcmp(pj->state, state_names[s]) == 0) st = s;
  if (!jb || st < 0 || !pj->request || strlen(id) >= JOBS_ID_MAX) {
    job_free(jb);
    ctxd__v1__job__free_unpacked(pj, NULL);
    return NULL;
  }
  snprintf(jb->id, sizeof jb->id, "%s", id);
  jb->state = st;
  /* the request and result are separate allocations: keep them */
  jb->req = pj->request;
  pj->request = NULL;
  jb->result = pj->result;
  pj->result = NULL;
  for (size_t i = 0; i < pj->n_phases; i++) {
    const Ctxd__V1__JobPhase *p = pj->phases[i];
    for (int k = 0; k < ORDER_PHASE_COUNT; k++) {
      if (strcmp(p->name, order_phase_name((order_phase)k)) != 0) continue;
      phase_rec *r = &jb->ph[k];
      r->used = 1;
      r->seq = jb->nseq++;
      r->unit = k == ORDER_PHASE_READ && strcmp(p->unit, "documents") == 0
                    ? "documents"
                    : phase_units[k];
      r->done = p->done;
      r->total = p->total;
      r->seconds = p->seconds;
      r->closes = 1;
    }
  }
  snprintf(jb->error, sizeof jb->error, "%s", pj->error);
  jb->error_status = GRPC_UNKNOWN;
  for (int s = 0; s <= 16; s++)
    if (strcmp(pj->error_status, grpc_status_name(s)) == 0) jb->error_status = s;
  jb->created_ms = pj->created_ms;
  jb->started_ms = pj->started_ms;
  jb->finished_ms = pj->finished_ms;
  jb->updated_ms = pj->updated_ms;
  jb->resumes = pj->resumes;
  jb->interruptions = pj->interruptions;
  jb->cancel_user = pj->cancel_requested;
  ctxd__v1__job__free_unpacked(pj, NULL);
  return jb;
}

/* ---- phases and progress ------------------------------------------------ */

static void phase_close(job *jb, double now) {
  if (jb->cur < 0) return;
  phase_rec *r = &jb->ph[jb->cur];
  if (r->t_open > 0) r->seconds += now - r->t_open;
  r->t_open = 0;
  r->closes++;
  jb->cur = -1;
}

static void phase_open(job *jb, int p, double now) {
  phase_rec *r = &jb->ph[p];
  if (!r->used) {
    r->used = 1;
    r->seq = jb->nseq++;
  }
  r->unit = phase_units[p];
  r->t_open = now;
  jb->cur = p;
}

/* order_progress_fn of a running job. */
static void on_progress(void *arg, order_phase p, uint64_t done,
                        uint64_t total) {
  job *jb = arg;
  jobs *J = jb->J;
  double now = mono();
  int changed = 0;
  if ((unsigned)p >= ORDER_PHASE_COUNT) return;
  pthread_mutex_lock(&J->mu);
  if (jb->cur != (int)p) {
    phase_close(jb, now);
    phase_open(jb, (int)p, now);
    if (p == ORDER_PHASE_READ && !*jb->req->input_jsonl)
      jb->ph[p].unit = "documents";
    changed = 1;
  }
  jb->ph[p].done = done;
  jb->ph[p].total = total;
  int due = changed || now - jb->last_persist >= PERSIST_EVERY_S;
  if (changed) nudge_all(jb);
  pthread_mutex_unlock(&J->mu);
  if (due) persist(J, jb, NULL);
  /* tests only: hold the job here a while (cancel cuts it short) */
  for (unsigned t = 0; t < J->o.test_delay_ms && !atomic_load(&jb->cancel);
       t += 10) {
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
}

/* ---- results -------------------------------------------------------------------- */

/* Size and CRC-32 of a file. */
static int file_sum(const char *path, uint64_t *bytes, uint32_t *crc,
                    ctxd_error *e) {
  FILE *f = fopen(path, "rb");
  if (!f) return ctxd_seterr(e, CTXD_EIO, "%s: %s", path, strerror(errno));
  static const size_t BUF = 1 << 20;
  unsigned char *buf = malloc(BUF);
  uLong c = crc32(0L, Z_NULL, 0);
  uint64_t n = 0;
  size_t got;
  int rc = 0;
  if (!buf) {
    fclose(f);
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  }
  while ((got = fread(buf, 1, BUF, f)) > 0) {
    c = crc32(c, buf, (uInt)got);
    n += got;
  }
  if (ferror(f)) rc = ctxd_seterr(e, CTXD_EIO, "%s: read error", path);
  fclose(f);
  free(buf);
  *bytes = n;
  *crc = (uint32_t)c;
  return rc;
}

/* The ReorderResult of a finished order_run, owned by the caller. */
static int result_build(const order_summary *s, const char *dir,
                        Ctxd__V1__ReorderResult **out, ctxd_error *e) {
  Ctxd__V1__ReorderResult r = CTXD__V1__REORDER_RESULT__INIT;
  Ctxd__V1__ReorderTimings t = CTXD__V1__REORDER_TIMINGS__INIT;
  Ctxd__V1__DecomposeBucket b[ORDER_LOG2_MAX + 1], *bp[ORDER_LOG2_MAX + 1];
  Ctxd__V1__OutputFile f[4], *fp[4];
  char paths[4][PATH_MAX + 32]; /* dir is at most PATH_MAX - 64 bytes */
  const char *names[4];
  size_t nf = 0;
  int rc;
  r.mode = (char *)order_mode_name(s->mode);
  r.documents = s->documents;
  r.ordered = s->ordered;
  r.duplicates = s->duplicates;
  r.jumps = s->jumps;
  r.edges = s->edges;
  r.windows = s->windows;
  r.tokens = s->tokens;
  r.dropped_tokens = s->dropped_tokens;
  for (int i = 0; i <= ORDER_LOG2_MAX; i++) {
    if (!s->bucket_pieces[i]) continue;
    ctxd__v1__decompose_bucket__init(&b[r.n_buckets]);
    b[r.n_buckets].tokens = 1u << i;
    b[r.n_buckets].pieces = s->bucket_pieces[i];
    bp[r.n_buckets] = &b[r.n_buckets];
    r.n_buckets++;
  }
  r.buckets = bp;
  r.adjacent_similarity = s->adjacent_similarity;
  r.random_adjacent_similarity = s->random_adjacent_similarity;
  r.window_similarity = s->window_similarity;
  r.random_window_similarity = s->random_window_similarity;
  r.knn_method = (char *)s->knn_method;
  r.k = s->k;
  r.nprobe = s->nprobe;
  r.knn_recall = s->knn_recall;
  r.resumed_vectors = s->resumed_vectors;
  r.resumed_knn = s->resumed_knn;
  t.read = s->t_read;
  t.embed = s->t_embed;
  t.knn = s->t_knn;
  t.dedup = s->t_dedup;
  t.traverse = s->t_traverse;
  t.pack = s->t_pack;
  t.total = s->t_read + s->t_total;
  r.timings = &t;
  r.output_dir = (char *)dir;
  names[nf++] = ORDER_FILE_ORDER;
  if (s->mode != ORDER_MODE_ORDER) names[nf++] = ORDER_FILE_WINDOWS;
  names[nf++] = ORDER_FILE_DUPLICATES;
  names[nf++] = ORDER_FILE_SUMMARY;
  for (size_t i = 0; i < nf; i++) {
    ctxd__v1__output_file__init(&f[i]);
    snprintf(paths[i], sizeof paths[i], "%s/%s", dir, names[i]);
    f[i].name = (char *)names[i];
    f[i].path = paths[i];
    if ((rc = file_sum(paths[i], &f[i].bytes, &f[i].crc32, e))) return rc;
    fp[i] = &f[i];
  }
  r.files = fp;
  r.n_files = nf;
  *out = pb_copy(&r.base, &ctxd__v1__reorder_result__descriptor, e);
  return *out ? 0 : CTXD_ENOMEM;
}

/* ---- running a job --------------------------------------------------------- */

/* Forget the oldest ended jobs beyond keep_finished (not those watched). */
static void trim(jobs *J) {
  job *gone = NULL;
  pthread_mutex_lock(&J->mu);
  unsigned n = 0;
  for (job *jb = J->head; jb; jb = jb->next) n += ended(jb->state);
  for (job **pp = &J->head; *pp && n > J->o.keep_finished;) {
    job *jb = *pp;
    if (!ended(jb->state) || jb->watchers || jb->pins) {
      pp = &jb->next;
      continue;
    }
    *pp = jb->next;
    jb->next = gone;
    gone = jb;
    n--;
  }
  J->tail = NULL;
  for (job *jb = J->head; jb; jb = jb->next) J->tail = jb;
  pthread_mutex_unlock(&J->mu);
  while (gone) {
    job *jb = gone;
    gone = jb->next;
    ctxd_error e;
    if (store_job_delete(J->st, jb->id, &e) && e.code != CTXD_ENOTFOUND)
      LOG_WARN("job-forget-failed id=%s err=\"%s\"", jb->id, e.msg);
    job_free(jb);
  }
}

/* Record how a run ended. */
static void finish(jobs *J, job *jb, int rc, const ctxd_error *e,
                   Ctxd__V1__ReorderResult *result) {
  pthread_mutex_lock(&J->mu);
  phase_close(jb, mono());
  if (rc == 0) {
    jb->state = JS_DONE;
    jb->result = result;
    result = NULL;
  } else if (rc == CTXD_ECANCELED && !jb->cancel_user) {
    /* the daemon is stopping: run again at the next start */
    jb->state = JS_QUEUED;
  } else if (rc == CTXD_ECANCELED) {
    jb->state = JS_CANCELLED;
    jb->error_status = GRPC_CANCELLED;
    snprintf(jb->error, sizeof jb->error, "cancelled (CancelJob) during %s",
             order_phase_name((order_phase)shown_phase(jb)));
  } else {
    jb->state = JS_FAILED;
    jb->error_status = ctxd_err_grpc_status(rc);
    snprintf(jb->error, sizeof jb->error, "%s", e->msg);
  }
  if (ended(jb->state)) jb->finished_ms = now_ms();
  nudge_all(jb);
  pthread_mutex_unlock(&J->mu);
  if (result) ctxd__v1__reorder_result__free_unpacked(result, NULL);
  LOG_INFO("job-end id=%s state=%s err=\"%s\"", jb->id, state_names[jb->state],
           jb->error);
  persist(J, jb, NULL);
}

static void run(jobs *J, job *jb) {
  job_spec sp;
  jobin *in = NULL;
  order_summary sum;
  Ctxd__V1__ReorderResult *result = NULL;
  ctxd_error e;
  int rc;
  ctxd_clearerr(&e);
  LOG_INFO("job-start id=%s output_dir=\"%s\" resumes=%u", jb->id,
           jb->req->output_dir, jb->resumes);
  persist(J, jb, NULL);
  if ((rc = spec_build(J, jb->req, &sp, &e)) == 0 &&
      (rc = paths_mkdir("output_dir", sp.outdir, 0755, &e)) == 0) {
    sp.in.progress = on_progress;
    sp.in.progress_arg = jb;
    sp.in.cancel = &jb->cancel;
    rc = jobin_open(J->st, J->cs, &sp.in, &in, &e);
  }
  if (rc == 0) {
    sp.o.embedder = jobin_embedder(in);
    sp.o.progress = on_progress;
    sp.o.progress_arg = jb;
    sp.o.cancel = &jb->cancel;
    rc = order_run(jobin_input(in), sp.outdir, &sp.o, &sum, &e);
  }
  jobin_free(in);
  if (rc == 0) rc = result_build(&sum, sp.outdir, &result, &e);
  /* a cancel that came after the work was done changes nothing */
  finish(J, jb, rc, &e, result);
  spec_free(&sp);
}

static void *worker(void *arg) {
  jobs *J = arg;
  for (;;) {
    pthread_mutex_lock(&J->mu);
    while (!J->stopping && !J->qhead) pthread_cond_wait(&J->cv, &J->mu);
    if (J->stopping) {
      pthread_mutex_unlock(&J->mu);
      return NULL;
    }
    job *jb = J->qhead;
    J->qhead = jb->qnext;
    if (!J->qhead) J->qtail = NULL;
    jb->qnext = NULL;
    J->n_waiting--;
    jb->state = JS_RUNNING;
    jb->started_ms = now_ms();
    jb->t_start = mono();
    jb->pins++;
    nudge_all(jb);
    pthread_mutex_unlock(&J->mu);
    run(J, jb);
    pthread_mutex_lock(&J->mu);
    jb->pins--;
    pthread_mutex_unlock(&J->mu);
    trim(J);
  }
}

/* Queue jb (lock held). */
static void enqueue(jobs *J, job *jb) {
  jb->state = JS_QUEUED;
  if (J->qtail)
    J->qtail->qnext = jb;
  else
    J->qhead = jb;
  J->qtail = jb;
  pthread_cond_signal(&J->cv);
}

/* Append to the list of every job (lock held). */
static void append(jobs *J, job *jb) {
  if (J->tail)
    J->tail->next = jb;
  else
    J->head = jb;
  J->tail = jb;
}

/* ---- open / stop / close ------------------------------------------------------ */

typedef struct load_state {
  jobs *J;
  unsigned bad;
} load_state;

static int load_one(const char *id, size_t id_len, const void *rec, size_t len,
                    void *arg) {
  load_state *ls = arg;
  jobs *J = ls->J;
  char name[JOBS_ID_MAX];
  job *jb = NULL;
  if (id_len < sizeof name) {
    memcpy(name, id, id_len);
    name[id_len] = '\0';
    jb = job_from_record(J, name, rec, len);
  }
  if (!jb) {
    /* kept as it is for a person to look at; nothing can run it */
    LOG_ERROR("job-record-unreadable id=\"%.*s\" bytes=%zu",
              (int)(id_len < 64 ? id_len : 64), id, len);
    ls->bad++;
    return 0;
  }
  unsigned long long ms;
  if (sscanf(jb->id, "job-%12llx", &ms) == 1 && ms > J->last_id_ms)
    J->last_id_ms = ms;
  append(J, jb);
  return 0;
}

/* After a start: requeue or fail every job that had not ended. */
static void recover(jobs *J) {
  for (job *jb = J->head; jb; jb = jb->next) {
    if (ended(jb->state)) continue;
    int was_running = jb->state == JS_RUNNING;
    ctxd_error e;
    job_spec sp;
    ctxd_clearerr(&e);
    memset(&sp, 0, sizeof sp);
    jb->resumes++;
    if (was_running) jb->interruptions++;
    if (jb->cancel_user) {
      jb->state = JS_CANCELLED;
      jb->error_status = GRPC_CANCELLED;
      snprintf(jb->error, sizeof jb->error,
               "cancelled (CancelJob) before the daemon stopped");
    } else if (jb->interruptions > JOBS_MAX_INTERRUPTIONS) {
      jb->state = JS_FAILED;
      jb->error_status = GRPC_ABORTED;
      snprintf(jb->error, sizeof jb->error,
               "the daemon stopped uncleanly (crash, kill or power loss) %u "
               "times while this job ran; it is not run again",
               jb->interruptions);
    } else if (spec_build(J, jb->req, &sp, &e) != 0) {
      jb->state = JS_FAILED;
      jb->error_status = ctxd_err_grpc_status(e.code);
      snprintf(jb->error, sizeof jb->error,
               "cannot resume after a restart: %s", e.msg);
    } else {
      snprintf(jb->outdir, sizeof jb->outdir, "%s", sp.outdir);
      enqueue(J, jb);
      J->n_waiting++;
    }
    spec_free(&sp);
    if (jb->state != JS_QUEUED) jb->finished_ms = now_ms();
    jb->cur = -1;
    LOG_INFO("job-recover id=%s was=%s now=%s interruptions=%u err=\"%s\"",
             jb->id, was_running ? "running" : "queued",
             state_names[jb->state], jb->interruptions, jb->error);
    persist(J, jb, NULL);
  }
}

int jobs_open(store *st, coll_set *cs, const jobs_opts *o, jobs **out,
              ctxd_error *e) {
  jobs *J = calloc(1, sizeof *J);
  int rc;
  *out = NULL;
  if (!J) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  J->st = st;
  J->cs = cs;
  J->o = *o;
  if (J->o.max_running == 0) J->o.max_running = 1;
  pthread_mutex_init(&J->mu, NULL);
  pthread_mutex_init(&J->persist_mu, NULL);
  pthread_cond_init(&J->cv, NULL);
  /* an unset root (tests, tools) allows anywhere; the daemon's
   * configuration always sets both (main.c) */
  strcpy(J->output_root, "/");
  strcpy(J->input_root, "/");
  if ((o->output_root && *o->output_root &&
       (rc = paths_root("jobs.output_root", o->output_root, NULL, NULL,
                        J->output_root, sizeof J->output_root, e))) ||
      (o->input_root && *o->input_root &&
       (rc = paths_root("jobs.input_root", o->input_root, NULL, NULL,
                        J->input_root, sizeof J->input_root, e))))
    goto fail;
  load_state ls = {J, 0};
  if ((rc = store_job_list(st, load_one, &ls, e))) goto fail;
  recover(J);
  trim(J);
  J->threads = calloc(J->o.max_running, sizeof *J->threads);
  if (!J->threads) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto fail;
  }
  for (unsigned i = 0; i < J->o.max_running; i++) {
    if (pthread_create(&J->threads[i], NULL, worker, J) != 0) {
      rc = ctxd_seterr(e, CTXD_EIO, "cannot start a job thread");
      goto fail;
    }
    J->n_threads++;
  }
  *out = J;
  return 0;
fail:
  jobs_close(J);
  return rc;
}

void jobs_stop(jobs *J) {
  if (!J) return;
  pthread_mutex_lock(&J->mu);
  J->stopping = 1;
  for (job *jb = J->head; jb; jb = jb->next) {
    if (jb->state == JS_RUNNING) atomic_store(&jb->cancel, 1);
    nudge_all(jb);
  }
  pthread_cond_broadcast(&J->cv);
  pthread_mutex_unlock(&J->mu);
}

void jobs_close(jobs *J) {
  if (!J) return;
  jobs_stop(J);
  for (unsigned i = 0; i < J->n_threads; i++)
    pthread_join(J->threads[i], NULL);
  free(J->threads);
  for (job *jb = J->head, *next; jb; jb = next) {
    next = jb->next;
    job_free(jb);
  }
  pthread_cond_destroy(&J->cv);
  pthread_mutex_destroy(&J->persist_mu);
  pthread_mutex_destroy(&J->mu);
  free(J);
}

/* ---- the calls ------------------------------------------------------------------ */

int jobs_submit(jobs *J, const Ctxd__V1__ReorderRequest *req,
                char id[JOBS_ID_MAX], ctxd_error *e) {
  job_spec sp;
  job *jb = NULL;
  int rc = spec_build(J, req, &sp, e);
  if (rc || (rc = paths_mkdir("output_dir", sp.outdir, 0755, e))) goto out;
  if (!(jb = job_new(J))) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
    goto out;
  }
  if (!(jb->req = pb_copy(&req->base, &ctxd__v1__reorder_request__descriptor,
                          e))) {
    rc = CTXD_ENOMEM;
    goto out;
  }
  snprintf(jb->outdir, sizeof jb->outdir, "%s", sp.outdir);

  pthread_mutex_lock(&J->mu);
  if (J->stopping) {
    rc = ctxd_seterr(e, CTXD_EBUSY, "ctxd is shutting down; submit the job "
                                    "again when it is back");
  } else if (J->n_waiting >= J->o.max_queued) {
    rc = ctxd_seterr(e, CTXD_ELIMIT,
                     "%u jobs are waiting already (jobs.max_queued); try "
                     "again later",
                     J->n_waiting);
  } else {
    for (job *o = J->head; o && !rc; o = o->next)
      if (!ended(o->state) && strcmp(o->outdir, jb->outdir) == 0)
        rc = ctxd_seterr(e, CTXD_EPRECOND,
                         "job %s (%s) writes to %s already", o->id,
                         state_names[o->state], jb->outdir);
  }
  if (!rc) {
    uint64_t ms = (uint64_t)now_ms();
    J->last_id_ms = ms > J->last_id_ms ? ms : J->last_id_ms + 1;
    snprintf(jb->id, sizeof jb->id, "job-%012llx",
             (unsigned long long)J->last_id_ms);
    jb->created_ms = now_ms();
    jb->state = JS_QUEUED;
    jb->reserved = 1;
    J->n_waiting++;
    append(J, jb);
  }
  pthread_mutex_unlock(&J->mu);
  if (rc) goto out;

  /* acknowledged = recorded: write the record before it can run */
  rc = persist(J, jb, e);
  pthread_mutex_lock(&J->mu);
  jb->reserved = 0;
  if (rc) {
    J->n_waiting--;
    for (job **pp = &J->head; *pp; pp = &(*pp)->next)
      if (*pp == jb) {
        *pp = jb->next;
        break;
      }
    J->tail = NULL;
    for (job *o = J->head; o; o = o->next) J->tail = o;
  } else {
    enqueue(J, jb);
    snprintf(id, JOBS_ID_MAX, "%s", jb->id);
    jb = NULL; /* the runner owns it */
  }
  pthread_mutex_unlock(&J->mu);
  if (!rc)
    LOG_INFO("job-submit id=%s mode=%s input=\"%s\" output_dir=\"%s\"", id,
             order_mode_name(sp.o.mode),
             *req->input_jsonl ? req->input_jsonl : "collection",
             req->output_dir);
out:
  job_free(jb);
  spec_free(&sp);
  return rc;
}

int jobs_get(jobs *J, const char *id, uint8_t **buf, size_t *len,
             ctxd_error *e) {
  int rc;
  pthread_mutex_lock(&J->mu);
  job *jb = find(J, id);
  if (!jb) {
    rc = ctxd_seterr(e, CTXD_ENOTFOUND, "job %.100s not found", id);
  } else {
    job_pb pb;
    job_fill(jb, &pb);
    rc = pack_pb(&pb.job.base, 0, buf, len, e);
  }
  pthread_mutex_unlock(&J->mu);
  return rc;
}

int jobs_list(jobs *J, const char *state, uint32_t limit, uint8_t **buf,
              size_t *len, ctxd_error *e) {
  int want = -1, rc = 0;
  if (state && *state) {
    for (int s = 0; s < JS_COUNT; s++)
      if (strcmp(state, state_names[s]) == 0) want = s;
    if (want < 0)
      return ctxd_seterr(e, CTXD_EINVAL,
                         "unknown state \"%.32s\" (queued, running, done, "
                         "failed, cancelled)",
                         state);
  }
  if (limit > JOBS_LIST_MAX)
    return ctxd_seterr(e, CTXD_EINVAL, "limit must be at most %d (got %u)",
                       JOBS_LIST_MAX, limit);
  if (!limit) limit = JOBS_LIST_DEFAULT;
  pthread_mutex_lock(&J->mu);
  size_t n = 0, skip;
  for (job *jb = J->head; jb; jb = jb->next)
    n += want < 0 || jb->state == want;
  skip = n > limit ? n - limit : 0;
  n -= skip;
  job_pb *pbs = calloc(n ? n : 1, sizeof *pbs);
  Ctxd__V1__Job **ptrs = calloc(n ? n : 1, sizeof *ptrs);
  if (!pbs || !ptrs) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  } else {
    size_t i = 0;
    for (job *jb = J->head; jb && i < n; jb = jb->next) {
      if (want >= 0 && jb->state != want) continue;
      if (skip) {
        skip--;
        continue;
      }
      job_fill(jb, &pbs[i]);
      pbs[i].req = *jb->req;
      pbs[i].req.n_doc_ids = 0;
      pbs[i].req.doc_ids = NULL;
      pbs[i].job.request = &pbs[i].req;
      ptrs[i] = &pbs[i].job;
      i++;
    }
    Ctxd__V1__ListJobsResponse r = CTXD__V1__LIST_JOBS_RESPONSE__INIT;
    r.jobs = ptrs;
    r.n_jobs = i;
    rc = pack_pb(&r.base, 0, buf, len, e);
  }
  pthread_mutex_unlock(&J->mu);
  free(pbs);
  free(ptrs);
  return rc;
}

int jobs_cancel(jobs *J, const char *id, ctxd_error *e) {
  int rc = 0, now_over = 0;
  pthread_mutex_lock(&J->mu);
  job *jb = find(J, id);
  if (!jb) {
    rc = ctxd_seterr(e, CTXD_ENOTFOUND, "job %.100s not found", id);
  } else if (ended(jb->state)) {
    rc = ctxd_seterr(e, CTXD_EPRECOND, "job %s has ended already (%s)", id,
                     state_names[jb->state]);
  } else if (jb->state == JS_QUEUED && !jb->reserved) {
    for (job **pp = &J->qhead; *pp; pp = &(*pp)->qnext)
      if (*pp == jb) {
        *pp = jb->qnext;
        break;
      }
    J->qtail = NULL;
    for (job *q = J->qhead; q; q = q->qnext) J->qtail = q;
    J->n_waiting--;
    jb->state = JS_CANCELLED;
    jb->cancel_user = 1;
    jb->error_status = GRPC_CANCELLED;
    snprintf(jb->error, sizeof jb->error,
             "cancelled (CancelJob) before it started");
    jb->finished_ms = now_ms();
    jb->pins++;
    nudge_all(jb);
    now_over = 1;
  } else {
    jb->cancel_user = 1;
    atomic_store(&jb->cancel, 1);
  }
  pthread_mutex_unlock(&J->mu);
  if (!rc) LOG_INFO("job-cancel id=%s", id);
  if (now_over) {
    persist(J, jb, NULL);
    pthread_mutex_lock(&J->mu);
    jb->pins--;
    pthread_mutex_unlock(&J->mu);
    trim(J);
  }
  return rc;
}

_Static_assert(JOBS_STATES == JS_COUNT, "jobs.h counts every state");

const char *jobs_state_name(int i) {
  return i >= 0 && i < JS_COUNT ? state_names[i] : "";
}

void jobs_counts(jobs *J, uint64_t counts[JOBS_STATES], jobs_progress *run,
                 size_t cap, size_t *n_run) {
  size_t n = 0;
  for (int i = 0; i < JOBS_STATES; i++) counts[i] = 0;
  pthread_mutex_lock(&J->mu);
  for (job *jb = J->head; jb; jb = jb->next) {
    counts[jb->state]++;
    if (jb->state != JS_RUNNING || n >= cap) continue;
    jobs_progress *p = &run[n++];
    int cp = shown_phase(jb);
    snprintf(p->id, sizeof p->id, "%s", jb->id);
    p->phase = cp >= 0 ? order_phase_name((order_phase)cp) : "";
    p->unit = cp >= 0 && jb->ph[cp].unit ? jb->ph[cp].unit : "";
    p->done = cp >= 0 ? jb->ph[cp].done : 0;
    p->total = cp >= 0 ? jb->ph[cp].total : 0;
  }
  pthread_mutex_unlock(&J->mu);
  *n_run = n;
}

int jobs_ended(jobs *J, const char *id) {
  pthread_mutex_lock(&J->mu);
  job *jb = find(J, id);
  int r = !jb || ended(jb->state);
  pthread_mutex_unlock(&J->mu);
  return r;
}

/* ---- watching -------------------------------------------------------------------- */

int jobs_watch_open(jobs *J, const char *id, void (*nudge)(void *arg),
                    void *arg, jobs_watch **out, ctxd_error *e) {
  int rc = 0;
  jobs_watch *w = calloc(1, sizeof *w);
  *out = NULL;
  if (!w) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  pthread_mutex_lock(&J->mu);
  job *jb = find(J, id);
  if (!jb) {
    rc = ctxd_seterr(e, CTXD_ENOTFOUND, "job %.100s not found", id);
  } else if (J->stopping) {
    rc = ctxd_seterr(e, CTXD_EBUSY, "ctxd is shutting down");
  } else {
    w->J = J;
    w->jb = jb;
    w->nudge = nudge;
    w->arg = arg;
    w->next = jb->watchers;
    if (jb->watchers) jb->watchers->prev = w;
    jb->watchers = w;
  }
  pthread_mutex_unlock(&J->mu);
  if (rc) {
    free(w);
    return rc;
  }
  *out = w;
  return 0;
}

void jobs_watch_close(jobs_watch *w) {
  if (!w) return;
  jobs *J = w->J;
  pthread_mutex_lock(&J->mu);
  if (w->prev)
    w->prev->next = w->next;
  else
    w->jb->watchers = w->next;
  if (w->next) w->next->prev = w->prev;
  pthread_mutex_unlock(&J->mu);
  free(w);
}

/* One event of job jb about phase p (-1: none) (lock held). */
static int event_pack(const job *jb, int p, int phase_done, int final,
                      uint8_t **buf, size_t *len, ctxd_error *e) {
  Ctxd__V1__ReorderEvent ev = CTXD__V1__REORDER_EVENT__INIT;
  double now = mono();
  ev.job_id = (char *)jb->id;
  ev.state = (char *)state_names[jb->state];
  ev.eta_seconds = -1;
  if (p >= 0) {
    const phase_rec *r = &jb->ph[p];
    ev.phase = (char *)order_phase_name((order_phase)p);
    ev.unit = (char *)r->unit;
    ev.done = r->done;
    ev.total = r->total;
    rate_eta(r, now, &ev.rate, &ev.eta_seconds);
    ev.phase_done = phase_done;
  }
  if (jb->state == JS_RUNNING)
    ev.elapsed_seconds = now - jb->t_start;
  else if (ended(jb->state) && jb->started_ms)
    ev.elapsed_seconds = (double)(jb->finished_ms - jb->started_ms) / 1000;
  if (final) {
    ev.result = jb->result;
    ev.error = (char *)jb->error;
    ev.error_status =
        (char *)(jb->error[0] ? grpc_status_name(jb->error_status) : "");
  }
  return pack_pb(&ev.base, 0, buf, len, e);
}

int jobs_watch_poll(jobs_watch *w,
                    int (*send)(void *arg, const uint8_t *msg, size_t len),
                    void *arg, int *over, int *status, char *msg,
                    size_t msg_cap, ctxd_error *e) {
  jobs *J = w->J;
  uint8_t *bufs[MAX_EVENTS];
  size_t lens[MAX_EVENTS], n = 0;
  int rc = 0, order[ORDER_PHASE_COUNT];
  *over = 0;
  *status = GRPC_OK;
  if (msg_cap) msg[0] = '\0';
  pthread_mutex_lock(&J->mu);
  job *jb = w->jb;
  size_t np = phase_order(jb, order);
  for (size_t i = 0; i < np && !rc; i++) {
    int p = order[i];
    if (jb->ph[p].closes <= w->sent[p]) continue;
    w->sent[p] = jb->ph[p].closes;
    if (p == jb->cur) continue; /* reopened: reported as current below */
    if (!(rc = event_pack(jb, p, 1, 0, &bufs[n], &lens[n], e))) n++;
  }
  int fin = ended(jb->state);
  if (!rc && (fin || jb->cur >= 0 || n == 0) &&
      !(rc = event_pack(jb, fin ? shown_phase(jb) : jb->cur, 0, fin,
                        &bufs[n], &lens[n], e)))
    n++;
  if (fin) {
    *over = 1;
    *status = jb->state == JS_DONE ? GRPC_OK
              : jb->state == JS_CANCELLED ? GRPC_CANCELLED
                                          : jb->error_status;
    if (jb->state != JS_DONE)
      snprintf(msg, msg_cap, "job %s: %s", jb->id, jb->error);
  } else if (J->stopping) {
    *over = 1;
    *status = GRPC_UNAVAILABLE;
    snprintf(msg, msg_cap,
             "ctxd is shutting down: job %s stops and resumes when the "
             "server starts again",
             jb->id);
  }
  pthread_mutex_unlock(&J->mu);
  for (size_t i = 0; i < n; i++) {
    if (!rc && send(arg, bufs[i], lens[i]) != 0) rc = -1;
    free(bufs[i]);
  }
  if (rc == -1) {
    *over = 1;
    rc = 0;
  }
  return rc;
}
