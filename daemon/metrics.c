/* metrics.c - Prometheus text exposition and /healthz on an evhttp server
 * of their own thread and event_base (metrics.h), the per-method call
 * counters the transport feeds, and the access log.
 *
 * Counters are relaxed atomics in fixed arrays: the transport's hooks never
 * allocate or lock. Method labels come from the method table only (a slot
 * is claimed per method path, lock-free), so client input cannot add
 * series. A scrape reads the store and the other modules through their
 * thread-safe calls on the metrics thread; it never waits on the worker
 * pool or the gRPC loop. */
#include "metrics.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../index/coll.h"
#include "../index/store.h"
#include "../index/utf8.h"
#include "ctx.h"
#include "jobs.h"
#include "log.h"
#include "models.h"

#define MAX_METHODS 64       /* method slots; more methods share "unknown" */
#define N_CODES 17           /* gRPC status codes 0..16 */
#define MAX_RUNNING_JOBS 64  /* progress series per scrape */
#define HTTP_TIMEOUT_S 10
#define HTTP_MAX_HEADERS 8192

/* Latency buckets (seconds): from a fast Health.Check to a long stream. */
static const double bucket_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01,
                                   0.025,  0.05,  0.1,    0.25,  0.5,
                                   1,      2.5,   5,      10,    30,
                                   60,     300};
static const char *const bucket_text[] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "10",
    "30",     "60",    "300",    "+Inf"};
#define N_BOUNDS (sizeof bucket_le / sizeof bucket_le[0])
_Static_assert(sizeof bucket_text / sizeof bucket_text[0] == N_BOUNDS + 1,
               "one text per bound and +Inf");

typedef struct mslot {
  _Atomic(const char *) path; /* NULL: free; the table's "/svc/Method" */
  _Atomic uint64_t codes[N_CODES];
  _Atomic uint64_t buckets[N_BOUNDS + 1]; /* not cumulative; last = +Inf */
  _Atomic uint64_t sum_ns;
  _Atomic uint64_t bytes_in, bytes_out;
} mslot;

/* slots[MAX_METHODS] is "unknown". */
static mslot slots[MAX_METHODS + 1];
static _Atomic int64_t streams_open, conns_open;
static _Atomic uint64_t conns_accepted;
static atomic_int access_log;

/* ---- hooks ------------------------------------------------------------------ */

/* The slot of a method path: found, or claimed (first come), or the
 * "unknown" one when every slot is taken. */
static mslot *slot_for(const char *path) {
  if (!path) return &slots[MAX_METHODS];
  for (size_t i = 0; i < MAX_METHODS; i++) {
    const char *p = atomic_load_explicit(&slots[i].path, memory_order_acquire);
    if (!p) {
      const char *expect = NULL;
      if (atomic_compare_exchange_strong(&slots[i].path, &expect, path))
        return &slots[i];
      p = expect; /* another thread claimed it meanwhile */
    }
    if (p == path || strcmp(p, path) == 0) return &slots[i];
  }
  return &slots[MAX_METHODS];
}

/* Quote client text for a log field: printable ASCII as is, the rest and
 * the quote and backslash as \xHH. */
static void log_quote(const char *s, char *out, size_t cap) {
  size_t o = 0;
  for (; *s && o + 5 < cap; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\')
      out[o++] = (char)ch;
    else
      o += (size_t)snprintf(out + o, cap - o, "\\x%02x", ch);
  }
  out[o] = '\0';
}

static void peer_name(int fd, char *out, size_t cap) {
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char ip[INET6_ADDRSTRLEN];
  snprintf(out, cap, "-");
  if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) != 0) return;
  if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
    if (inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip))
      snprintf(out, cap, "[%s]:%u", ip, ntohs(a->sin6_port));
  } else if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
    if (inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip))
      snprintf(out, cap, "%s:%u", ip, ntohs(a->sin_port));
  } else if (ss.ss_family == AF_UNIX) {
    snprintf(out, cap, "unix");
  }
}

void metrics_call_end(const metrics_call *mc) {
  mslot *s = slot_for(mc->method);
  int code = mc->status < 0 || mc->status >= N_CODES ? 1 : mc->status;
  double secs = (double)mc->duration_ns * 1e-9;
  size_t b = 0;
  while (b < N_BOUNDS && secs > bucket_le[b]) b++;
  atomic_fetch_add_explicit(&s->codes[code], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->sum_ns, mc->duration_ns, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->bytes_in, mc->bytes_in, memory_order_relaxed);
  atomic_fetch_add_explicit(&s->bytes_out, mc->bytes_out,
                            memory_order_relaxed);
  if (!atomic_load_explicit(&access_log, memory_order_relaxed)) return;
  char path[4 * 200 + 1], peer[INET6_ADDRSTRLEN + 16];
  log_quote(mc->path ? mc->path : "", path, sizeof path);
  peer_name(mc->peer_fd, peer, sizeof peer);
  /* Written whatever log.level says: the operator asked for it. */
  log_write(LOG_LVL_INFO,
            "access method=%s path=\"%s\" code=%s status=%d "
            "duration_ms=%.3f bytes_in=%llu bytes_out=%llu peer=%s user=%s",
            mc->method ? mc->method + 1 : "unknown", path,
            mc->status < 0 ? "CANCELLED" : grpc_status_name(code),
            mc->status, secs * 1e3, (unsigned long long)mc->bytes_in,
            (unsigned long long)mc->bytes_out, peer,
            mc->user && *mc->user ? mc->user : "-");
}

void metrics_stream_open(void) {
  atomic_fetch_add_explicit(&streams_open, 1, memory_order_relaxed);
}

void metrics_stream_close(void) {
  atomic_fetch_sub_explicit(&streams_open, 1, memory_order_relaxed);
}

void metrics_conn_open(void) {
  atomic_fetch_add_explicit(&conns_open, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&conns_accepted, 1, memory_order_relaxed);
}

void metrics_conn_close(void) {
  atomic_fetch_sub_explicit(&conns_open, 1, memory_order_relaxed);
}

void metrics_set_access_log(int on) { atomic_store(&access_log, on != 0); }

/* ---- text exposition --------------------------------------------------------- */

static void put(metrics_text *t, const char *p, size_t n) {
  if (t->oom) return;
  if (t->len + n + 1 > t->cap) {
    size_t cap = t->cap ? t->cap : 4096;
    while (cap < t->len + n + 1) cap *= 2;
    char *b = realloc(t->buf, cap);
    if (!b) {
      t->oom = 1;
      return;
    }
    t->buf = b;
    t->cap = cap;
  }
  memcpy(t->buf + t->len, p, n);
  t->len += n;
  t->buf[t->len] = '\0';
}

static void puts_(metrics_text *t, const char *s) { put(t, s, strlen(s)); }

/* Escape `s` for a HELP text (quote = 0: \\ and \n) or a label value
 * (quote = 1: also \"); invalid UTF-8 bytes become U+FFFD so that the
 * output is always valid UTF-8. */
static void put_escaped(metrics_text *t, const char *s, int quote) {
  size_t n = strlen(s), i = 0;
  while (i < n) {
    size_t bad = n - i;
    int ok = utf8_valid(s + i, n - i, &bad);
    size_t end = ok ? n : i + bad;
    size_t run = i;
    for (; i < end; i++) {
      const char *rep = s[i] == '\\' ? "\\\\"
                        : s[i] == '\n' ? "\\n"
                        : quote && s[i] == '"' ? "\\\""
                                              : NULL;
      if (!rep) continue;
      put(t, s + run, i - run);
      puts_(t, rep);
      run = i + 1;
    }
    put(t, s + run, end - run);
    if (!ok) {
      puts_(t, "\xEF\xBF\xBD");
      i = end + 1;
    }
  }
}

void metrics_text_family(metrics_text *t, const char *name, const char *type,
                         const char *help) {
  puts_(t, "# HELP ");
  puts_(t, name);
  puts_(t, " ");
  put_escaped(t, help, 0);
  puts_(t, "\n# TYPE ");
  puts_(t, name);
  puts_(t, " ");
  puts_(t, type);
  puts_(t, "\n");
}

static void put_name_labels(metrics_text *t, const char *name,
                            const char *const *labels) {
  puts_(t, name);
  if (!labels || !labels[0]) return;
  puts_(t, "{");
  for (size_t i = 0; labels[i] && labels[i + 1]; i += 2) {
    if (i) puts_(t, ",");
    puts_(t, labels[i]);
    puts_(t, "=\"");
    put_escaped(t, labels[i + 1], 1);
    puts_(t, "\"");
  }
  puts_(t, "}");
}

void metrics_text_sample(metrics_text *t, const char *name,
                         const char *const *labels, double value) {
  char num[64];
  if (isnan(value))
    snprintf(num, sizeof num, "NaN");
  else if (isinf(value))
    snprintf(num, sizeof num, "%s", value > 0 ? "+Inf" : "-Inf");
  else if (value == floor(value) && fabs(value) < 1e15)
    snprintf(num, sizeof num, "%.0f", value);
  else /* the shortest text that reads back exactly: 0.09, not 0.0899... */
    for (int prec = 6; prec <= 17; prec++) {
      snprintf(num, sizeof num, "%.*g", prec, value);
      if (strtod(num, NULL) == value) break;
    }
  put_name_labels(t, name, labels);
  puts_(t, " ");
  puts_(t, num);
  puts_(t, "\n");
}

void metrics_text_sample_u64(metrics_text *t, const char *name,
                             const char *const *labels, uint64_t value) {
  char num[32];
  snprintf(num, sizeof num, "%llu", (unsigned long long)value);
  put_name_labels(t, name, labels);
  puts_(t, " ");
  puts_(t, num);
  puts_(t, "\n");
}

/* ---- the families -------------------------------------------------------------- */

static uint64_t ld(_Atomic uint64_t *a) {
  return atomic_load_explicit(a, memory_order_relaxed);
}

/* The label of slot i: "Service/Method" (the path without its '/'), or
 * NULL while the slot has counted no call. */
static const char *slot_label(size_t i) {
  uint64_t n = 0;
  for (int c = 0; c < N_CODES; c++) n += ld(&slots[i].codes[c]);
  if (!n) return NULL;
  if (i == MAX_METHODS) return "unknown";
  const char *p = atomic_load_explicit(&slots[i].path, memory_order_acquire);
  return p ? (p[0] == '/' ? p + 1 : p) : NULL;
}

static void render_grpc(metrics_text *t) {
  /* Copy each slot's histogram once, so the cumulative buckets, +Inf and
   * _count of a scrape agree even while calls end. */
  static const char *const F_CALLS = "ctxd_grpc_calls_total";
  static const char *const F_DUR = "ctxd_grpc_call_duration_seconds";
  metrics_text_family(t, F_CALLS, "counter",
                      "gRPC calls ended, by method and status code "
                      "(streams reset before a status count as CANCELLED)");
  for (size_t i = 0; i <= MAX_METHODS; i++) {
    const char *m = slot_label(i);
    if (!m) continue;
    for (int c = 0; c < N_CODES; c++) {
      uint64_t v = ld(&slots[i].codes[c]);
      if (!v) continue;
      const char *lb[] = {"method", m, "code", grpc_status_name(c), NULL};
      metrics_text_sample_u64(t, F_CALLS, lb, v);
    }
  }
  metrics_text_family(t, F_DUR, "histogram",
                      "gRPC call latency, request headers to stream close, "
                      "by method");
  for (size_t i = 0; i <= MAX_METHODS; i++) {
    const char *m = slot_label(i);
    uint64_t b[N_BOUNDS + 1], cum = 0;
    if (!m) continue;
    for (size_t k = 0; k <= N_BOUNDS; k++) b[k] = ld(&slots[i].buckets[k]);
    for (size_t k = 0; k <= N_BOUNDS; k++) cum += b[k];
    if (!cum) continue;
    uint64_t sum = ld(&slots[i].sum_ns);
    cum = 0;
    for (size_t k = 0; k <= N_BOUNDS; k++) {
      cum += b[k];
      const char *lb[] = {"method", m, "le", bucket_text[k], NULL};
      metrics_text_sample_u64(t, "ctxd_grpc_call_duration_seconds_bucket", lb,
                              cum);
    }
    const char *lb[] = {"method", m, NULL};
    metrics_text_sample(t, "ctxd_grpc_call_duration_seconds_sum", lb,
                        (double)sum * 1e-9);
    metrics_text_sample_u64(t, "ctxd_grpc_call_duration_seconds_count", lb,
                            cum);
  }
  static const struct {
    const char *name, *help;
    size_t off;
  } bytes[] = {
      {"ctxd_grpc_received_bytes_total",
       "request message bytes received (gRPC framing included), by method",
       offsetof(mslot, bytes_in)},
      {"ctxd_grpc_sent_bytes_total",
       "response message bytes sent (gRPC framing included), by method",
       offsetof(mslot, bytes_out)},
  };
  for (size_t f = 0; f < 2; f++) {
    metrics_text_family(t, bytes[f].name, "counter", bytes[f].help);
    for (size_t i = 0; i <= MAX_METHODS; i++) {
      const char *m = slot_label(i);
      if (!m) continue;
      const char *lb[] = {"method", m, NULL};
      metrics_text_sample_u64(
          t, bytes[f].name, lb,
          ld((_Atomic uint64_t *)((char *)&slots[i] + bytes[f].off)));
    }
  }
  metrics_text_family(t, "ctxd_grpc_streams_in_flight", "gauge",
                      "gRPC calls (HTTP/2 request streams) open now");
  metrics_text_sample(t, "ctxd_grpc_streams_in_flight", NULL,
                      (double)atomic_load(&streams_open));
  metrics_text_family(t, "ctxd_grpc_connections", "gauge",
                      "client connections open now");
  metrics_text_sample(t, "ctxd_grpc_connections", NULL,
                      (double)atomic_load(&conns_open));
  metrics_text_family(t, "ctxd_grpc_connections_accepted_total", "counter",
                      "client connections accepted since the start");
  metrics_text_sample_u64(t, "ctxd_grpc_connections_accepted_total", NULL,
                          atomic_load(&conns_accepted));
}

/* process_* as the Prometheus client libraries export them, from /proc. */
static void render_process(metrics_text *t) {
  long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
  unsigned long long utime = 0, stime = 0, start = 0, vsize = 0, rss = 0,
                     btime = 0;
  char buf[1024], *p;
  FILE *f = fopen("/proc/self/stat", "r");
  int have_stat = 0;
  if (f) {
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    /* Fields after the command name, which may hold spaces: from the last
     * ')' on, field 3 (state) comes first. */
    p = strrchr(buf, ')');
    if (p && sscanf(p + 2,
                    "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu "
                    "%*d %*d %*d %*d %*d %*d %llu %llu %llu",
                    &utime, &stime, &start, &vsize, &rss) == 5)
      have_stat = 1;
  }
  f = fopen("/proc/stat", "r");
  if (f) {
    while (fgets(buf, sizeof buf, f))
      if (sscanf(buf, "btime %llu", &btime) == 1) break;
    fclose(f);
  }
  if (have_stat && tick > 0) {
    metrics_text_family(t, "process_cpu_seconds_total", "counter",
                        "user and system CPU time spent, in seconds");
    metrics_text_sample(t, "process_cpu_seconds_total", NULL,
                        (double)(utime + stime) / (double)tick);
    metrics_text_family(t, "process_resident_memory_bytes", "gauge",
                        "resident memory size in bytes");
    metrics_text_sample_u64(t, "process_resident_memory_bytes", NULL,
                            rss * (unsigned long long)page);
    metrics_text_family(t, "process_virtual_memory_bytes", "gauge",
                        "virtual memory size in bytes (the LMDB map counts)");
    metrics_text_sample_u64(t, "process_virtual_memory_bytes", NULL, vsize);
    if (btime) {
      metrics_text_family(t, "process_start_time_seconds", "gauge",
                          "start time of the process since the epoch, in "
                          "seconds");
      metrics_text_sample(t, "process_start_time_seconds", NULL,
                          (double)btime + (double)start / (double)tick);
    }
  }
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    uint64_t n = 0;
    for (struct dirent *de; (de = readdir(d));)
      if (de->d_name[0] != '.') n++;
    closedir(d);
    metrics_text_family(t, "process_open_fds", "gauge",
                        "open file descriptors");
    metrics_text_sample_u64(t, "process_open_fds", NULL, n ? n - 1 : 0);
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
    metrics_text_family(t, "process_max_fds", "gauge",
                        "the limit of open file descriptors");
    metrics_text_sample_u64(t, "process_max_fds", NULL, rl.rlim_cur);
  }
}

static void render_store(metrics_text *t, ctxd_ctx *ctx) {
  store_stats st;
  ctxd_error e;
  if (store_stats_get(ctx->st, &st, &e) != 0) {
    LOG_WARN("metrics-store-stats-failed err=\"%s\"", e.msg);
    return;
  }
  static const struct {
    const char *name, *type, *help;
  } fam[] = {
      {"ctxd_store_documents", "gauge", "documents stored"},
      {"ctxd_store_chunks", "gauge", "chunks stored"},
      {"ctxd_store_text_bytes", "gauge", "bytes of document text stored"},
      {"ctxd_store_tokens", "gauge", "tokens of the stored chunks"},
      {"ctxd_store_file_bytes", "gauge", "size of the LMDB data file"},
      {"ctxd_store_map_bytes", "gauge", "LMDB map size"},
      {"ctxd_store_map_used_bytes", "gauge",
       "LMDB map in use (last used page times the page size)"},
      {"ctxd_store_last_seq", "gauge", "the change log's last sequence number"},
  };
  const uint64_t v[] = {st.documents,     st.chunks,    st.bytes,
                        st.tokens,        st.file_bytes, st.map_bytes,
                        st.map_used_bytes, st.last_seq};
  for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
    metrics_text_family(t, fam[i].name, fam[i].type, fam[i].help);
    metrics_text_sample_u64(t, fam[i].name, NULL, v[i]);
  }
}

static void render_collections(metrics_text *t, ctxd_ctx *ctx) {
  coll_info *in = NULL;
  size_t n = 0;
  ctxd_error e;
  if (coll_info_list(ctx->cs, &in, &n, &e) != 0) {
    LOG_WARN("metrics-collections-failed err=\"%s\"", e.msg);
    return;
  }
  static const struct {
    const char *name, *help;
    size_t off;
  } fam[] = {
      {"ctxd_collection_documents", "documents in the collection",
       offsetof(coll_info, documents)},
      {"ctxd_collection_chunks", "chunks in the collection",
       offsetof(coll_info, chunks)},
      {"ctxd_collection_vectors", "chunk vectors stored for the collection",
       offsetof(coll_info, vectors)},
      {"ctxd_collection_indexed_vectors",
       "live vectors in the collection's search index",
       offsetof(coll_info, indexed)},
      {"ctxd_collection_masked_vectors",
       "removed vectors the index still holds until a rebuild",
       offsetof(coll_info, masked)},
  };
  for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
    metrics_text_family(t, fam[f].name, "gauge", fam[f].help);
    for (size_t i = 0; i < n; i++) {
      const char *lb[] = {"collection", in[i].config.name, NULL};
      metrics_text_sample_u64(
          t, fam[f].name, lb,
          *(const uint64_t *)((const char *)&in[i] + fam[f].off));
    }
  }
  metrics_text_family(t, "ctxd_collection_rebuilding", "gauge",
                      "1 while the collection's index is being rebuilt");
  for (size_t i = 0; i < n; i++) {
    const char *lb[] = {"collection", in[i].config.name, NULL};
    metrics_text_sample(t, "ctxd_collection_rebuilding", lb,
                        in[i].rebuilding ? 1 : 0);
  }
  free(in);
}

static void render_jobs(metrics_text *t, ctxd_ctx *ctx) {
  uint64_t counts[JOBS_STATES];
  jobs_progress run[MAX_RUNNING_JOBS];
  size_t n_run = 0;
  jobs_counts(ctx->jobs, counts, run, MAX_RUNNING_JOBS, &n_run);
  metrics_text_family(t, "ctxd_jobs", "gauge",
                      "corpus jobs kept, by state (jobs.keep_finished bounds "
                      "the ended ones)");
  for (int i = 0; i < JOBS_STATES; i++) {
    const char *lb[] = {"state", jobs_state_name(i), NULL};
    metrics_text_sample_u64(t, "ctxd_jobs", lb, counts[i]);
  }
  static const char *const fam[2][2] = {
      {"ctxd_job_phase_done",
       "a running job's progress in its current phase, in the phase's unit"},
      {"ctxd_job_phase_total",
       "the size of a running job's current phase (0: not known yet)"},
  };
  for (int f = 0; f < 2; f++) {
    metrics_text_family(t, fam[f][0], "gauge", fam[f][1]);
    for (size_t i = 0; i < n_run; i++) {
      const char *lb[] = {"job",  run[i].id,   "phase", run[i].phase,
                          "unit", run[i].unit, NULL};
      metrics_text_sample_u64(t, fam[f][0], lb,
                              f ? run[i].total : run[i].done);
    }
  }
}

static void render_models(metrics_text *t, ctxd_ctx *ctx) {
  static const char *const slot_name[3] = {"model", "tokenizer", "builtin"};
  lm_info info[3];
  int have[3];
  double at[3], took[3];
  have[0] = models_info(ctx->models, 0, &info[0]);
  have[1] = models_info(ctx->models, 1, &info[1]);
  /* The built-in model has no slot in models_info: it is what
   * models_model() lends while the model slot is empty. */
  lm_model *lm = models_model(ctx->models);
  have[2] = lm && models_is_builtin(ctx->models, lm);
  if (have[2]) lm_model_info(lm, &info[2]);
  lm_model_free(lm);
  for (int s = 0; s < 3; s++)
    if (have[s] && !models_load_time(ctx->models, s, &at[s], &took[s]))
      have[s] = 0; /* swapped out meanwhile */
  metrics_text_family(t, "ctxd_model_info", "gauge",
                      "1 per loaded model slot (model, tokenizer, builtin), "
                      "with the GGUF's name, architecture and path");
  for (int s = 0; s < 3; s++) {
    if (!have[s]) continue;
    const char *lb[] = {"slot", slot_name[s], "name", info[s].name, "arch",
                        info[s].arch, "path", info[s].path, NULL};
    metrics_text_sample(t, "ctxd_model_info", lb, 1);
  }
  const struct {
    const char *name, *help;
    const double *v;
  } per_slot[] = {
      {"ctxd_model_loaded_timestamp_seconds",
       "when the slot's model was loaded, since the epoch", at},
      {"ctxd_model_load_duration_seconds",
       "how long loading the slot's model took", took},
  };
  for (size_t f = 0; f < 2; f++) {
    metrics_text_family(t, per_slot[f].name, "gauge", per_slot[f].help);
    for (int s = 0; s < 3; s++) {
      const char *lb[] = {"slot", slot_name[s], NULL};
      if (have[s]) metrics_text_sample(t, per_slot[f].name, lb, per_slot[f].v[s]);
    }
  }
  metrics_text_family(t, "ctxd_model_selections_running", "gauge",
                      "model selections (XL3M, InfiniRetri) running now");
  metrics_text_sample(t, "ctxd_model_selections_running", NULL,
                      models_running(ctx->models));
  metrics_text_family(t, "ctxd_model_selections_max", "gauge",
                      "model.max_concurrent: selections allowed at once");
  metrics_text_sample(t, "ctxd_model_selections_max", NULL,
                      ctx->cfg->model_max_concurrent);
}

int metrics_render(ctxd_ctx *ctx, metrics_text *t, ctxd_error *e) {
  const char *lb[] = {"version", CTXD_VERSION, NULL};
  metrics_text_family(t, "ctxd_build_info", "gauge",
                      "1, with the daemon's version");
  metrics_text_sample(t, "ctxd_build_info", lb, 1);
  metrics_text_family(t, "ctxd_serving", "gauge",
                      "1 while the daemon serves; 0 while it starts or "
                      "stops");
  metrics_text_sample(t, "ctxd_serving", NULL,
                      ctx && atomic_load(&ctx->serving) ? 1 : 0);
  render_process(t);
  render_grpc(t);
  if (ctx) {
    render_store(t, ctx);
    render_collections(t, ctx);
    render_jobs(t, ctx);
    render_models(t, ctx);
  }
  if (t->oom) {
    free(t->buf);
    t->buf = NULL;
    t->len = t->cap = 0;
    return ctxd_seterr(e, CTXD_ENOMEM, "out of memory rendering metrics");
  }
  return 0;
}

/* ---- the HTTP endpoint --------------------------------------------------------- */

struct metrics {
  struct event_base *base;
  struct evhttp *http;
  struct event *stop_ev;
  int stop_fd;
  pthread_t thread;
  int started;
  _Atomic(ctxd_ctx *) ctx;
  char addr[INET6_ADDRSTRLEN + 16];
};

static void reply_text(struct evhttp_request *req, int code,
                       const char *reason, const char *ctype, const char *p,
                       size_t n) {
  struct evbuffer *b = evbuffer_new();
  struct evkeyvalq *h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", ctype);
  evhttp_add_header(h, "Cache-Control", "no-store");
  if (b) evbuffer_add(b, p, n);
  evhttp_send_reply(req, code, reason, b);
  if (b) evbuffer_free(b);
}

static void metrics_cb(struct evhttp_request *req, void *arg) {
  metrics *m = arg;
  metrics_text t = {0};
  ctxd_error e;
  if (metrics_render(atomic_load(&m->ctx), &t, &e) != 0) {
    reply_text(req, 500, "Internal Server Error", "text/plain", e.msg,
               strlen(e.msg));
    return;
  }
  reply_text(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8",
             t.buf ? t.buf : "", t.len);
  free(t.buf);
}

static void healthz_cb(struct evhttp_request *req, void *arg) {
  metrics *m = arg;
  ctxd_ctx *ctx = atomic_load(&m->ctx);
  const char *why = !ctx ? "starting\n" : "stopping\n";
  if (ctx && atomic_load(&ctx->serving))
    reply_text(req, 200, "OK", "text/plain", "ok\n", 3);
  else
    reply_text(req, 503, "Service Unavailable", "text/plain", why,
               strlen(why));
}

static void notfound_cb(struct evhttp_request *req, void *arg) {
  (void)arg;
  static const char msg[] = "not found: try /metrics or /healthz\n";
  reply_text(req, 404, "Not Found", "text/plain", msg, sizeof msg - 1);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg) {
  metrics *m = arg;
  (void)fd;
  (void)what;
  event_base_loopbreak(m->base);
}

static void *metrics_thread(void *arg) {
  metrics *m = arg;
  event_base_dispatch(m->base);
  return NULL;
}

/* Split HOST:PORT or [V6]:PORT for evhttp_bind (which resolves HOST). */
static int parse_addr(const char *a, char *host, size_t hcap, uint16_t *port) {
  const char *c = strrchr(a, ':');
  char *end;
  if (!c || !c[1]) return -1;
  unsigned long p = strtoul(c + 1, &end, 10);
  if (*end || p > 65535 || c[1] < '0' || c[1] > '9') return -1;
  const char *h = a;
  size_t hl = (size_t)(c - a);
  if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
    h++;
    hl -= 2;
  } else if (memchr(h, ':', hl) || memchr(h, '[', hl)) {
    return -1; /* a bare IPv6 address needs brackets */
  }
  if (hl >= hcap) return -1;
  memcpy(host, h, hl);
  host[hl] = '\0';
  *port = (uint16_t)p;
  return 0;
}

int metrics_start(const char *addr, metrics **out, ctxd_error *e) {
  char host[256];
  uint16_t port;
  int rc = 0;
  *out = NULL;
  if (parse_addr(addr, host, sizeof host, &port) != 0)
    return ctxd_seterr(e, CTXD_EINVAL,
                       "metrics.listen \"%s\": expected HOST:PORT or "
                       "[IPV6]:PORT",
                       addr);
  metrics *m = calloc(1, sizeof *m);
  if (!m) return ctxd_seterr(e, CTXD_ENOMEM, "out of memory");
  m->stop_fd = -1;
  atomic_init(&m->ctx, NULL);
  m->base = event_base_new();
  m->http = m->base ? evhttp_new(m->base) : NULL;
  if (!m->http) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "metrics: cannot create the HTTP server");
    goto fail;
  }
  evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
  evhttp_set_timeout(m->http, HTTP_TIMEOUT_S);
  evhttp_set_max_headers_size(m->http, HTTP_MAX_HEADERS);
  evhttp_set_max_body_size(m->http, 0);
  evhttp_set_cb(m->http, "/metrics", metrics_cb, m);
  evhttp_set_cb(m->http, "/healthz", healthz_cb, m);
  evhttp_set_gencb(m->http, notfound_cb, m);
  errno = 0;
  struct evhttp_bound_socket *bs =
      evhttp_bind_socket_with_handle(m->http, host[0] ? host : "0.0.0.0",
                                     port);
  if (!bs) {
    rc = ctxd_seterr(e, CTXD_EIO, "metrics.listen %s: cannot listen: %s",
                     addr, errno ? strerror(errno) : "bind failed");
    goto fail;
  }
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char ip[INET6_ADDRSTRLEN] = "?";
  if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss,
                  &sl) == 0 &&
      ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &a6->sin6_addr, ip, sizeof ip);
    snprintf(m->addr, sizeof m->addr, "[%s]:%u", ip, ntohs(a6->sin6_port));
  } else {
    const struct sockaddr_in *a4 = (const struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &a4->sin_addr, ip, sizeof ip);
    snprintf(m->addr, sizeof m->addr, "%s:%u", ip, ntohs(a4->sin_port));
  }
  m->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  m->stop_ev = m->stop_fd >= 0 ? event_new(m->base, m->stop_fd, EV_READ,
                                           stop_cb, m)
                               : NULL;
  if (!m->stop_ev || event_add(m->stop_ev, NULL) != 0) {
    rc = ctxd_seterr(e, CTXD_EIO, "metrics: cannot set up the stop event");
    goto fail;
  }
  if (pthread_create(&m->thread, NULL, metrics_thread, m) != 0) {
    rc = ctxd_seterr(e, CTXD_ENOMEM, "metrics: cannot start the thread");
    goto fail;
  }
  m->started = 1;
  *out = m;
  return 0;
fail:
  metrics_stop(m);
  return rc;
}

const char *metrics_addr(const metrics *m) { return m->addr; }

void metrics_set_ctx(metrics *m, ctxd_ctx *ctx) {
  if (m) atomic_store(&m->ctx, ctx);
}

void metrics_stop(metrics *m) {
  if (!m) return;
  if (m->started) {
    uint64_t one = 1;
    ssize_t w = write(m->stop_fd, &one, sizeof one);
    (void)w;
    pthread_join(m->thread, NULL);
  }
  if (m->stop_ev) event_free(m->stop_ev);
  if (m->http) evhttp_free(m->http);
  if (m->base) event_base_free(m->base);
  if (m->stop_fd >= 0) close(m->stop_fd);
  free(m);
}
