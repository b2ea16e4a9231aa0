/* test_jobs.c - the corpus job runner (daemon/jobs.h) without the RPC
 * layer: a job submitted and followed through a watcher to its end, the
 * request checks, recovery at start from job records (a job found running
 * counts an interruption and runs again, the crash-loop limit, an input
 * gone, an unreadable record left alone), and the trimming of ended jobs. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "coll.h"
#include "jobs.h"
#include "store.h"
#include "vindex.h"

static char base[256];

typedef struct env {
  char sdir[300], idir[300];
  store *st;
  coll_set *cs;
  jobs *J;
} env;

static int env_open(env *v, unsigned keep) {
  ctxd_error e;
  store_opts so = {0, 0, 0, 1};
  coll_opts co;
  memset(&co, 0, sizeof co);
  co.index_dir = v->idir;
  snprintf(co.defaults.embedder, sizeof co.defaults.embedder, "hash:dim=64");
  co.defaults.metric = VINDEX_IP;
  snprintf(co.defaults.index_spec, sizeof co.defaults.index_spec, "Flat");
  co.defaults.chunk_max_tokens = 64;
  co.build_threads = 1;
  jobs_opts jo = {1, 10, keep, 1, 0, "", "", 0};
  if (store_open(v->sdir, &so, &v->st, &e) ||
      coll_open(v->st, &co, NULL, NULL, &v->cs, &e) ||
      jobs_open(v->st, v->cs, &jo, &v->J, &e)) {
    fprintf(stderr, "env_open: %s\n", e.msg);
    return -1;
  }
  return 0;
}

static void env_close(env *v) {
  jobs_close(v->J);
  coll_close(v->cs);
  store_close(v->st);
  v->J = NULL;
  v->cs = NULL;
  v->st = NULL;
}

static int env_new(env *v, const char *name, unsigned keep) {
  memset(v, 0, sizeof *v);
  snprintf(v->sdir, sizeof v->sdir, "%s/%s", base, name);
  snprintf(v->idir, sizeof v->idir, "%s/%s/index", base, name);
  return env_open(v, keep);
}

/* A JSONL corpus of two topics. */
static void write_corpus(const char *path, int n) {
  static const char *const topics[2][6] = {
      {"river", "boat", "water", "bank", "fish", "current"},
      {"planet", "orbit", "star", "comet", "moon", "telescope"}};
  FILE *f = fopen(path, "w");
  for (int i = 0; f && i < n; i++) {
    fprintf(f, "{\"id\": \"d%d\", \"text\": \"", i);
    for (int w = 0; w < 40; w++)
      fprintf(f, "%s ", topics[i % 2][(i * 7 + w * 3) % 6]);
    fprintf(f, "\"}\n");
  }
  if (f) fclose(f);
}

/* ---- following a job --------------------------------------------------------- */

typedef struct sink {
  atomic_int nudges;
  int events, phase_done, done_events;
} sink;

static void on_nudge(void *arg) { atomic_fetch_add(&((sink *)arg)->nudges, 1); }

static int on_event(void *arg, const uint8_t *msg, size_t len) {
  sink *s = arg;
  Ctxd__V1__ReorderEvent *ev = ctxd__v1__reorder_event__unpack(NULL, len, msg);
  if (!ev) return -1;
  s->events++;
  s->phase_done += ev->phase_done;
  s->done_events += strcmp(ev->state, "done") == 0;
  ctxd__v1__reorder_event__free_unpacked(ev, NULL);
  return 0;
}

/* Poll a watcher until the job ends; the final gRPC status. */
static int follow(jobs *J, const char *id, sink *s) {
  jobs_watch *w;
  ctxd_error e;
  char msg[512];
  int over = 0, status = -1;
  if (jobs_watch_open(J, id, on_nudge, s, &w, &e)) return -1;
  for (int i = 0; i < 6000 && !over; i++) {
    if (jobs_watch_poll(w, on_event, s, &over, &status, msg, sizeof msg, &e))
      break;
    if (!over) usleep(5000);
  }
  jobs_watch_close(w);
  return status;
}

static Ctxd__V1__Job *get(jobs *J, const char *id) {
  uint8_t *buf;
  size_t n;
  ctxd_error e;
  if (jobs_get(J, id, &buf, &n, &e)) return NULL;
  Ctxd__V1__Job *j = ctxd__v1__job__unpack(NULL, n, buf);
  free(buf);
  return j;
}

static void test_run(void) {
  env v;
  char in[400], out[400], id[JOBS_ID_MAX];
  ctxd_error e;
  CHECK_EQ_INT(env_new(&v, "run", 100), 0);
  snprintf(in, sizeof in, "%s/run.jsonl", base);
  snprintf(out, sizeof out, "%s/run-out/deeper", base);
  write_corpus(in, 30);
  Ctxd__V1__ReorderRequest req = CTXD__V1__REORDER_REQUEST__INIT;
  req.input_jsonl = in;
  req.output_dir = out;
  req.window_tokens = 256;
  req.k = 5;
  CHECK_EQ_INT(jobs_submit(v.J, &req, id, &e), 0);
  CHECK(strncmp(id, "job-", 4) == 0);
  sink s;
  memset(&s, 0, sizeof s);
  CHECK_EQ_INT(follow(v.J, id, &s), GRPC_OK);
  CHECK(atomic_load(&s.nudges) > 0);
  CHECK_EQ_INT(s.phase_done, 7); /* read embed index knn dedup traverse pack */
  CHECK_EQ_INT(s.done_events >= 1, 1);
  Ctxd__V1__Job *j = get(v.J, id);
  CHECK(j != NULL);
  if (j) {
    CHECK_EQ_STR(j->state, "done");
    CHECK(j->result && j->result->documents == 30 && j->result->n_files == 4);
    CHECK_EQ_INT(j->n_phases, 7);
    ctxd__v1__job__free_unpacked(j, NULL);
  }
  char p[500];
  struct stat st;
  snprintf(p, sizeof p, "%s/summary.json", out);
  CHECK_EQ_INT(stat(p, &st), 0);
  /* a second job on that directory is fine once the first ended */
  CHECK_EQ_INT(jobs_submit(v.J, &req, id, &e), 0);
  CHECK_EQ_INT(follow(v.J, id, &s), GRPC_OK);
  CHECK_EQ_INT(jobs_cancel(v.J, id, &e), CTXD_EPRECOND);
  CHECK_EQ_INT(jobs_cancel(v.J, "job-nope", &e), CTXD_ENOTFOUND);
  env_close(&v);
}

/* ---- request checks ---------------------------------------------------------- */

static void expect_refused(jobs *J, const Ctxd__V1__ReorderRequest *r,
                           int code, const char *words) {
  char id[JOBS_ID_MAX];
  ctxd_error e;
  ctxd_clearerr(&e);
  CHECK_EQ_INT(jobs_submit(J, r, id, &e), code);
  if (!strstr(e.msg, words)) fprintf(stderr, "message: %s\n", e.msg);
  CHECK(strstr(e.msg, words) != NULL);
}

static void test_checks(void) {
  env v;
  char in[400], out[400], file[400], rel[] = "relative/dir";
  char *ids[] = {"a", "b", "a"};
  CHECK_EQ_INT(env_new(&v, "checks", 100), 0);
  snprintf(in, sizeof in, "%s/checks.jsonl", base);
  snprintf(out, sizeof out, "%s/checks-out", base);
  snprintf(file, sizeof file, "%s/checks-out-file", base);
  write_corpus(in, 4);
  write_corpus(file, 1);
  Ctxd__V1__ReorderRequest r = CTXD__V1__REORDER_REQUEST__INIT, q;
  r.input_jsonl = in;
  r.output_dir = out;
  r.window_tokens = 128;
  q = r, q.output_dir = rel;
  expect_refused(v.J, &q, CTXD_EINVAL, "absolute");
  q = r, q.output_dir = "/tmp/../etc";
  expect_refused(v.J, &q, CTXD_EINVAL, "..");
  q = r, q.output_dir = file;
  expect_refused(v.J, &q, CTXD_EINVAL, "not a directory");
  q = r, q.mode = "shuffle";
  expect_refused(v.J, &q, CTXD_EINVAL, "unknown mode");
  q = r, q.k = 1001;
  expect_refused(v.J, &q, CTXD_ELIMIT, "k must be 1..1000");
  q = r, q.window_tokens = 0;
  expect_refused(v.J, &q, CTXD_EINVAL, "window_tokens is required");
  q = r, q.input_jsonl = "/no/such/file.jsonl";
  expect_refused(v.J, &q, CTXD_EINVAL, "no such file");
  q = r, q.n_doc_ids = 1, q.doc_ids = ids;
  expect_refused(v.J, &q, CTXD_EINVAL, "do not go with input_jsonl");
  q = r, q.input_jsonl = "", q.n_doc_ids = 3, q.doc_ids = ids;
  expect_refused(v.J, &q, CTXD_EINVAL, "twice");
  q = r, q.input_jsonl = "", q.collection = "nope";
  expect_refused(v.J, &q, CTXD_ENOTFOUND, "nope");
  q = r, q.vectors = "maybe";
  expect_refused(v.J, &q, CTXD_EINVAL, "unknown vectors");
  q = r, q.embedder = "none:dim=4";
  expect_refused(v.J, &q, CTXD_EINVAL, "must compute");
  q = r, q.dedup_cosine = -1;
  expect_refused(v.J, &q, CTXD_EINVAL, "dedup_cosine");
  env_close(&v);
}

/* ---- recovery ---------------------------------------------------------------- */

/* Write a job record as the runner would. */
static void put_record(store *st, const char *id, const char *state,
                       uint32_t interruptions,
                       Ctxd__V1__ReorderRequest *req) {
  Ctxd__V1__Job j = CTXD__V1__JOB__INIT;
  ctxd_error e;
  j.job_id = (char *)id;
  j.state = (char *)state;
  j.request = req;
  j.interruptions = interruptions;
  size_t n = protobuf_c_message_get_packed_size(&j.base);
  uint8_t *buf = malloc(8 + n);
  memcpy(buf, "CTXDJOB1", 8);
  protobuf_c_message_pack(&j.base, buf + 8);
  CHECK_EQ_INT(store_job_put(st, id, buf, 8 + n, &e), 0);
  free(buf);
}

static void test_recover(void) {
  env v;
  char in[400], gone[400], out[4][400];
  ctxd_error e;
  CHECK_EQ_INT(env_new(&v, "recover", 100), 0);
  snprintf(in, sizeof in, "%s/recover.jsonl", base);
  snprintf(gone, sizeof gone, "%s/gone.jsonl", base);
  write_corpus(in, 12);
  for (int i = 0; i < 4; i++)
    snprintf(out[i], sizeof out[i], "%s/recover-out%d", base, i);
  jobs_close(v.J); /* write records as a daemon that stopped would have */
  v.J = NULL;
  Ctxd__V1__ReorderRequest r = CTXD__V1__REORDER_REQUEST__INIT;
  r.input_jsonl = in;
  r.window_tokens = 128;
  r.output_dir = out[0];
  put_record(v.st, "job-000000000001", "running", 0, &r);
  r.output_dir = out[1];
  put_record(v.st, "job-000000000002", "running", 3, &r);
  r.output_dir = out[2];
  r.input_jsonl = gone;
  put_record(v.st, "job-000000000003", "queued", 0, &r);
  CHECK_EQ_INT(store_job_put(v.st, "job-000000000004", "garbage", 7, &e), 0);
  jobs_opts jo = {1, 10, 100, 1, 0, "", "", 0};
  CHECK_EQ_INT(jobs_open(v.st, v.cs, &jo, &v.J, &e), 0);

  sink s;
  memset(&s, 0, sizeof s);
  CHECK_EQ_INT(follow(v.J, "job-000000000001", &s), GRPC_OK);
  Ctxd__V1__Job *j = get(v.J, "job-000000000001");
  CHECK(j && strcmp(j->state, "done") == 0 && j->resumes == 1 &&
        j->interruptions == 1);
  if (j) ctxd__v1__job__free_unpacked(j, NULL);
  j = get(v.J, "job-000000000002");
  CHECK(j && strcmp(j->state, "failed") == 0 && j->interruptions == 4 &&
        strcmp(j->error_status, "ABORTED") == 0 && strstr(j->error, "4 times"));
  if (j) ctxd__v1__job__free_unpacked(j, NULL);
  j = get(v.J, "job-000000000003");
  CHECK(j && strcmp(j->state, "failed") == 0 &&
        strstr(j->error, "cannot resume") && strstr(j->error, gone));
  if (j) ctxd__v1__job__free_unpacked(j, NULL);
  /* the unreadable record is neither served nor removed */
  CHECK(get(v.J, "job-000000000004") == NULL);
  void *rec;
  size_t len;
  int grc = store_job_get(v.st, "job-000000000004", &rec, &len, &e);
  CHECK_EQ_INT(grc, 0);
  if (grc == 0) free(rec);
  /* ids go on after the highest one found */
  char id[JOBS_ID_MAX];
  r.input_jsonl = in;
  r.output_dir = out[3];
  CHECK_EQ_INT(jobs_submit(v.J, &r, id, &e), 0);
  CHECK(strcmp(id, "job-000000000003") > 0);
  CHECK_EQ_INT(follow(v.J, id, &s), GRPC_OK);
  env_close(&v);
}

static void test_trim(void) {
  env v;
  char in[400], out[400], ids[4][JOBS_ID_MAX];
  ctxd_error e;
  CHECK_EQ_INT(env_new(&v, "trim", 2), 0);
  snprintf(in, sizeof in, "%s/trim.jsonl", base);
  write_corpus(in, 6);
  Ctxd__V1__ReorderRequest r = CTXD__V1__REORDER_REQUEST__INIT;
  r.input_jsonl = in;
  r.window_tokens = 128;
  r.output_dir = out;
  sink s;
  memset(&s, 0, sizeof s);
  for (int i = 0; i < 4; i++) {
    snprintf(out, sizeof out, "%s/trim-out%d", base, i);
    CHECK_EQ_INT(jobs_submit(v.J, &r, ids[i], &e), 0);
    CHECK_EQ_INT(follow(v.J, ids[i], &s), GRPC_OK);
  }
  for (int tries = 0; tries < 200 && jobs_ended(v.J, ids[1]); tries++) {
    Ctxd__V1__Job *g = get(v.J, ids[1]); /* freed: a retry leaked it */
    if (!g) break;
    ctxd__v1__job__free_unpacked(g, NULL);
    usleep(5000);
  }
  Ctxd__V1__Job *j = get(v.J, ids[0]);
  CHECK(j == NULL);
  if (j) ctxd__v1__job__free_unpacked(j, NULL);
  void *rec;
  size_t len;
  CHECK_EQ_INT(store_job_get(v.st, ids[0], &rec, &len, &e), CTXD_ENOTFOUND);
  j = get(v.J, ids[3]);
  CHECK(j && strcmp(j->state, "done") == 0);
  if (j) ctxd__v1__job__free_unpacked(j, NULL);
  env_close(&v);
}

int main(void) {
  snprintf(base, sizeof base, "/tmp/ctxd-test-jobs-XXXXXX");
  if (!mkdtemp(base)) return 2;
  vindex_global_init(1);
  test_run();
  test_checks();
  test_recover();
  test_trim();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf %s", base);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", base);
  return check_report("jobs");
}
