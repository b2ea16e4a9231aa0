/* main.c - the ctxd executable: configuration, the store, the collections
 * engine, the worker pool and the gRPC server on one libevent loop; graceful
 * stop on SIGTERM and SIGINT (stop accepting, NOT_SERVING, drain in-flight
 * calls for server.shutdown_grace_ms, then cancel the rest); SIGHUP reloads
 * the TLS certificates and the token file. */
#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../index/coll.h"
#include "../index/store.h"
#include "../index/tok.h"
#include "../index/vindex.h"
#include "collections.h"
#include "config.h"
#include "ctx.h"
#include "handlers.h"
#include "jobs.h"
#include "log.h"
#include "metrics.h"
#include "models.h"
#include "paths.h"
#include "notify.h"
#include "pool.h"
#include "rechunk.h"
#include "server.h"
#include "writer.h"

/* A group commit stops taking documents once it holds this many bytes
 * (messages and chunk lists); a larger document goes alone. */
#define GROUP_COMMIT_MAX_BYTES (16u << 20)

/* The writer's `committed` hook: what was committed becomes searchable
 * before the Puts are answered. */
static int writer_coll_sync(void *arg, ctxd_error *e) {
  return coll_sync(arg, e);
}

typedef struct app {
  struct event_base *base;
  server *srv;
  ctxd_ctx *ctx;
  const ctxd_config *cfg;
  notifier *notify; /* systemd readiness (NULL outside Type=notify) */
  int signals;
} app;

/* FAISS's OpenMP threads spin while they wait for work (libgomp's default
 * wait policy), and the spinning starves OpenBLAS's own threads and every
 * other thread of the daemon: a 2-thread exact search ran slower than a
 * 1-thread one. libgomp reads OMP_WAIT_POLICY once, when it is loaded,
 * before main(), so setting it here is too late for this process: when the
 * variable is unset, ctxd sets it to PASSIVE and executes itself again with
 * the same arguments. An operator who sets OMP_WAIT_POLICY (even to ACTIVE)
 * is obeyed. CTXD_OMP_REEXEC marks the second start, for the log line. */
#define OMP_REEXEC_MARK "CTXD_OMP_REEXEC"
static int omp_reexec_errno; /* why the re-exec failed, 0 if it was not tried */

static void omp_policy_reexec(char **argv) {
  if (getenv("OMP_WAIT_POLICY")) return;
  if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0 ||
      setenv(OMP_REEXEC_MARK, "1", 1) != 0) {
    omp_reexec_errno = errno;
    return;
  }
  /* The binary's own path, not /proc/self/exe: the process name (comm, what
   * ps, top and pgrep show) is taken from the file executed, and "exe"
   * would be a poor name. /proc/self/exe is the fallback (e.g. the file was
   * replaced since the start). */
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    execv(self, argv);
  }
  execv("/proc/self/exe", argv);
  /* Still here: run on with libgomp's default (logged once logging is set
   * up); the variable stays set for any child, which is harmless. */
  omp_reexec_errno = errno;
  unsetenv(OMP_REEXEC_MARK);
}

static void omp_policy_log(int passive) {
  const char *pol = getenv("OMP_WAIT_POLICY");
  if (omp_reexec_errno) {
    LOG_WARN("omp-wait-policy policy=default passive=%d err=\"cannot "
             "re-execute /proc/self/exe: %s\"",
             passive, strerror(omp_reexec_errno));
  } else if (getenv(OMP_REEXEC_MARK)) {
    LOG_INFO("omp-wait-policy policy=%s passive=%d set_by=ctxd reexec=1",
             pol ? pol : "", passive);
    unsetenv(OMP_REEXEC_MARK);
  } else {
    LOG_INFO("omp-wait-policy policy=%s passive=%d set_by=environment",
             pol ? pol : "", passive);
  }
}

/* coll_open's log callback. Its messages are "some words key=value ...":
 * the words before the first field become the event name, joined by '-'
 * (msg=index-rebuild-failed collection=...), so the line stays logfmt. */
static void coll_log(int level, const char *msg, void *arg) {
  char ev[128];
  size_t n = 0;
  const char *p = msg;
  (void)arg;
  while (*p) {
    size_t wl = strcspn(p, " ");
    if (memchr(p, '=', wl) || n + wl + 2 > sizeof ev) break;
    if (n) ev[n++] = '-';
    memcpy(ev + n, p, wl);
    n += wl;
    p += wl;
    p += strspn(p, " ");
  }
  ev[n] = '\0';
  LOG_AT(level, "%s %s", n ? ev : "collections", p);
}

static void drained(void *arg) {
  app *a = arg;
  event_base_loopexit(a->base, NULL);
}

static void on_sighup(evutil_socket_t sig, short what, void *arg) {
  app *a = arg;
  (void)sig;
  (void)what;
  LOG_INFO("reload signal=SIGHUP");
  server_reload(a->srv);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
  app *a = arg;
  (void)what;
  if (a->signals++ > 0) {
    LOG_WARN("second-signal action=exit-now signal=%d", (int)sig);
    event_base_loopexit(a->base, NULL);
    return;
  }
  LOG_INFO("shutting-down signal=%s grace_ms=%u",
           sig == SIGTERM ? "SIGTERM" : "SIGINT", a->cfg->shutdown_grace_ms);
  ctxd_error e;
  if (notify_sendf(a->notify, &e, "STOPPING=1\nSTATUS=draining calls (up to %u ms)",
                   a->cfg->shutdown_grace_ms) != 0)
    LOG_WARN("notify-failed err=\"%s\"", e.msg);
  atomic_store(&a->ctx->serving, 0);
  health_notify();
  jobs_stop(a->ctx->jobs); /* running jobs stop and resume at next start */
  server_shutdown(a->srv, a->cfg->shutdown_grace_ms, drained, a);
}

int main(int argc, char **argv) {
  static ctxd_config cfg;
  ctxd_ctx ctx;
  char err[1024];
  int action, rc = 1;
  store *st = NULL;
  pool *workers = NULL;
  struct event_base *base = NULL;
  server *srv = NULL;
  writer *wr = NULL;
  struct event *sigterm = NULL, *sigint = NULL, *sighup = NULL;
  coll_set *cs = NULL;
  models *mods = NULL;
  metrics *ms = NULL;
  notifier *nt = NULL;
  app a;
  ctxd_error e;

  omp_policy_reexec(argv);
  config_defaults(&cfg);
  if (config_parse_args(&cfg, argc, argv, &action, err, sizeof err) != 0) {
    fprintf(stderr, "ctxd: %s\n", err);
    return 2;
  }
  switch (action) {
    case CONFIG_HELP:
      config_usage(stdout);
      return 0;
    case CONFIG_VERSION:
      printf("ctxd %s\n", CTXD_VERSION);
      return 0;
    case CONFIG_DUMP:
      config_dump(&cfg, stdout);
      return 0;
    default:
      break;
  }
  log_level = log_level_parse(cfg.log_level);
  signal(SIGPIPE, SIG_IGN);
  /* Fixed malloc thresholds: glibc otherwise raises its mmap threshold (up
   * to 32 MiB) and trim threshold (twice that) each time a large block is
   * freed, after which freed batch and message buffers stay resident for
   * good. With these, blocks of 256 KiB and more are mapped and unmapped on
   * their own, and a heap's free top beyond 1 MiB goes back to the system. */
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
  omp_policy_log(vindex_global_init(cfg.index_build_threads));
  ctxd_clearerr(&e);
  if (notify_open(&nt, &e) != 0) {
    fprintf(stderr, "ctxd: %s\n", e.msg);
    return 2;
  }

  /* The settings of `default` and of collections created on first use:
   * checked before anything opens, so a bad index.spec or embed.embedder
   * stops the start with a message naming the option. */
  memset(&ctx, 0, sizeof ctx);
  ctxd_clearerr(&e);
  if (collections_defaults(&cfg, &ctx.coll_defaults, &e) != 0) {
    fprintf(stderr, "ctxd: %s\n", e.msg);
    return 2;
  }

  /* The metrics port opens first: /healthz says "starting" (503) while a
   * model loads and the indexes replay, which can take minutes. */
  metrics_set_access_log(cfg.log_access);
  if (cfg.metrics_listen[0]) {
    if (metrics_start(cfg.metrics_listen, &ms, &e) != 0) {
      LOG_ERROR("metrics-listen-failed addr=%s err=\"%s\"",
                cfg.metrics_listen, e.msg);
      fprintf(stderr, "ctxd: %s\n", e.msg);
      return 2;
    }
    LOG_INFO("metrics-listening addr=%s", metrics_addr(ms));
  }

  /* The model and tokenizer load before the store opens, so that a file
   * that does not load stops the start at once with a message naming it. */
  models_opts mo = {cfg.model_path, cfg.tokenizer_path,
                    strcmp(cfg.model_builtin, "none") ? cfg.model_builtin : NULL,
                    cfg.model_gpu_layers, cfg.model_max_concurrent};
  if (models_open(&mo, &mods, &e) != 0) {
    LOG_ERROR("model-load-failed err=\"%s\"", e.msg);
    fprintf(stderr, "ctxd: %s\n", e.msg);
    goto out;
  }
  models_log_loaded(mods);

  store_opts so;
  memset(&so, 0, sizeof so);
  so.map_size = cfg.map_size;
  so.max_map_size = cfg.max_map_size;
  ctxd_clearerr(&e);
  if (store_open(cfg.data, &so, &st, &e) != 0) {
    LOG_ERROR("store-open-failed data=\"%s\" err=\"%s\"", cfg.data, e.msg);
    fprintf(stderr, "ctxd: cannot open data directory %s: %s\n", cfg.data,
            e.msg);
    goto out;
  }
  {
    int mismatch;
    char recorded[64];
    if (models_check_store(mods, st, 1, &mismatch, recorded, &e) != 0) {
      LOG_ERROR("store-set-tokenizer-failed err=\"%s\"", e.msg);
      goto out;
    }
    lm_model *ref;
    const tok *tk = models_tok(mods, &ref);
    if (mismatch)
      LOG_WARN("tokenizer-mismatch store=\"%s\" current=\"%s\" "
               "action=\"the stored chunks were counted with another "
               "tokenizer: run ctxctl rechunk\"",
               recorded, tk->name);
    else
      LOG_INFO("tokenizer name=\"%s\"", tk->name);
    lm_model_free(ref);
  }

  char index_dir[sizeof cfg.data + 16];
  snprintf(index_dir, sizeof index_dir, "%s/index", cfg.data);
  coll_opts co;
  memset(&co, 0, sizeof co);
  co.index_dir = index_dir;
  co.defaults = ctx.coll_defaults;
  co.bm25.k1 = cfg.bm25_k1;
  co.bm25.b = cfg.bm25_b;
  co.rebuild_masked_ratio = cfg.index_rebuild_masked_ratio;
  co.save_every_changes = cfg.index_save_every_changes;
  co.save_interval_s = cfg.index_save_interval_s;
  co.build_threads = cfg.index_build_threads;
  co.model_acquire = models_embedder_acquire;
  co.model_release = models_embedder_release;
  co.model_arg = mods;
  if (coll_open(st, &co, coll_log, NULL, &cs, &e) != 0) {
    LOG_ERROR("collections-open-failed dir=\"%s\" err=\"%s\"", index_dir,
              e.msg);
    fprintf(stderr, "ctxd: cannot open the collections in %s: %s\n",
            index_dir, e.msg);
    goto out;
  }

  ctx.cfg = &cfg;
  ctx.st = st;
  ctx.cs = cs;
  ctx.models = mods;
  if (rechunk_create(&ctx, &ctx.rechunk, &e) != 0) {
    LOG_ERROR("rechunk-create-failed err=\"%s\"", e.msg);
    goto out;
  }
  ctx.start_time = (uint64_t)time(NULL);
  atomic_init(&ctx.serving, 1);

  /* Client-named paths stay under these (paths.h); like Qdrant's
   * snapshots_path, the defaults live in the data directory. */
  char out_root[PATH_MAX], in_root[PATH_MAX];
  if (paths_root("jobs.output_root", cfg.jobs_output_root, cfg.data,
                 "exports", out_root, sizeof out_root, &e) != 0 ||
      paths_root("jobs.input_root", cfg.jobs_input_root, cfg.data, "imports",
                 in_root, sizeof in_root, &e) != 0) {
    LOG_ERROR("jobs-root-failed err=\"%s\"", e.msg);
    fprintf(stderr, "ctxd: %s\n", e.msg);
    goto out;
  }
  jobs_opts jo = {cfg.jobs_max_running, cfg.jobs_max_queued,
                  cfg.jobs_keep_finished, cfg.jobs_threads,
                  cfg.jobs_test_delay_ms, out_root, in_root,
                  cfg.limits_max_job_docs};
  if (jobs_open(st, cs, &jo, &ctx.jobs, &e) != 0) {
    LOG_ERROR("jobs-open-failed err=\"%s\"", e.msg);
    fprintf(stderr, "ctxd: cannot start the job runner: %s\n", e.msg);
    goto out;
  }

  if (cfg.group_commit_docs > 1) {
    writer_opts wo;
    memset(&wo, 0, sizeof wo);
    wo.max_docs = cfg.group_commit_docs;
    wo.max_bytes = GROUP_COMMIT_MAX_BYTES;
    wo.committed = writer_coll_sync;
    wo.committed_arg = cs;
    if (writer_create(st, &wo, &wr, &e) != 0) {
      LOG_ERROR("writer-create-failed err=\"%s\"", e.msg);
      goto out;
    }
    ctx.wr = wr;
  }

  workers = pool_create(cfg.workers);
  if (!workers) {
    LOG_ERROR("pool-create-failed workers=%u", cfg.workers);
    goto out;
  }
  base = event_base_new();
  if (!base) {
    LOG_ERROR("event-base-failed");
    goto out;
  }
  if (server_create(base, &cfg, &ctx, workers, &srv, err, sizeof err) != 0) {
    LOG_ERROR("listen-failed addr=%s err=\"%s\"", cfg.listen, err);
    fprintf(stderr, "ctxd: %s\n", err);
    goto out;
  }
  a.base = base;
  a.srv = srv;
  a.ctx = &ctx;
  a.cfg = &cfg;
  a.notify = nt;
  a.signals = 0;
  sigterm = evsignal_new(base, SIGTERM, on_signal, &a);
  sigint = evsignal_new(base, SIGINT, on_signal, &a);
  sighup = evsignal_new(base, SIGHUP, on_sighup, &a);
  event_add(sigterm, NULL);
  event_add(sigint, NULL);
  event_add(sighup, NULL);

  metrics_set_ctx(ms, &ctx);
  LOG_INFO("listening addr=%s workers=%u data=\"%s\" version=%s",
           server_addr(srv), pool_size(workers), cfg.data, CTXD_VERSION);
  /* Ready only now: the store is open and the listener bound, so a unit
   * ordered After=ctxd.service can connect at once. */
  if (notify_sendf(nt, &e, "READY=1\nSTATUS=serving on %s", server_addr(srv)) != 0 ||
      notify_watchdog_start(nt, base, &e) != 0)
    LOG_WARN("notify-failed err=\"%s\"", e.msg);
  event_base_dispatch(base);
  rc = 0;

out:
  /* Order matters: calls still open are cancelled while the pool runs
   * (their on_close is queued); the writer stops: what it still holds
   * belongs to calls that are now over, never acknowledged, and is dropped
   * unwritten, and a Put handler still running is refused (UNAVAILABLE);
   * the pool drains, and only then do the server, the job runner (its
   * threads stop at their jobs' next cancel check), the collections (which
   * save their indexes) and the store go. After a graceful drain the writer
   * holds nothing: every call was answered. */
  if (srv) server_close_all(srv);
  writer_stop(wr);
  pool_destroy(workers);
  if (srv) {
    server_stats ss;
    server_get_stats(srv, &ss);
    LOG_INFO("stopped connections=%llu calls=%llu ok=%llu cancelled=%llu",
             (unsigned long long)ss.connections, (unsigned long long)ss.calls,
             (unsigned long long)ss.calls_ok,
             (unsigned long long)ss.calls_cancelled);
  }
  server_free(srv);
  metrics_stop(ms); /* scrapes read what closes below */
  if (sigterm) event_free(sigterm);
  if (sigint) event_free(sigint);
  if (sighup) event_free(sighup);
  notify_close(nt); /* its watchdog timer belongs to base */
  if (base) event_base_free(base);
  jobs_close(ctx.jobs);
  rechunk_close(ctx.rechunk);
  coll_close(cs);
  models_close(mods);
  store_close(st);
  return rc;
}
