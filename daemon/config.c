/* config.c - the option table and its three readers: defaults, the INI file
 * (libinih) and the command line; and its one writer, --dump-config.
 *
 * Every option is one row of `options[]`: adding a row is all it takes to
 * get a flag, an INI key, a dump line and a help line. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

/* index/model/ctxd-mini.gguf of the source tree (daemon/CMakeLists.txt). */
#ifndef CTXD_BUILTIN_MODEL
#define CTXD_BUILTIN_MODEL ""
#endif

typedef enum opt_type {
  OPT_STR,   /* char array of `size` bytes */
  OPT_U32,   /* uint32_t */
  OPT_SIZE,  /* uint64_t bytes, accepts K/M/G/T suffixes (powers of 1024) */
  OPT_LEVEL, /* char array holding a log level name */
  OPT_F64,   /* double, bounds in fmin/fmax */
  OPT_METRIC, /* char array holding "ip" or "l2" */
  OPT_BOOL,  /* uint32_t 0/1: true/false, yes/no, on/off, 1/0 */
} opt_type;

typedef struct opt {
  const char *name;  /* "section.key" */
  const char *alias; /* short flag without "--", or NULL */
  opt_type type;
  const char *def;   /* default, as it would be written in the file */
  double min, max;   /* numeric bounds (inclusive; every bound in the table
                      * is exact in a double) */
  size_t off;        /* offset in ctxd_config */
  size_t size;       /* field size, for strings */
  const char *help;
} opt;

#define F(f) offsetof(ctxd_config, f), sizeof(((ctxd_config *)0)->f)
#define KiB 1024ULL
#define MiB (1024ULL * KiB)
#define GiB (1024ULL * MiB)
#define TiB (1024ULL * GiB)

static const opt options[] = {
    {"server.listen", "listen", OPT_STR, "127.0.0.1:50051", 0, 0, F(listen),
     "address to serve gRPC (h2c) on: HOST:PORT, [IPV6]:PORT; port 0 picks "
     "a free one"},
    {"server.workers", NULL, OPT_U32, "0", 0, 1024, F(workers),
     "worker threads for request handlers; 0 = one per CPU"},
    {"server.max_message_bytes", NULL, OPT_SIZE, "64M", 1024, 4 * GiB - 1,
     F(max_message_bytes),
     "largest request message accepted (checked before allocating)"},
    {"server.max_connections", NULL, OPT_U32, "10000", 1, 1000000,
     F(max_connections), "concurrent client connections"},
    {"server.max_concurrent_streams", NULL, OPT_U32, "1000", 1, 1000000,
     F(max_concurrent_streams),
     "concurrent calls per connection (HTTP/2 SETTINGS)"},
    {"server.shutdown_grace_ms", NULL, OPT_U32, "10000", 0, 3600000,
     F(shutdown_grace_ms),
     "on SIGTERM/SIGINT, how long in-flight calls may finish before they are "
     "cancelled"},
    {"server.handshake_timeout_ms", NULL, OPT_U32, "10000", 0, 3600000,
     F(handshake_timeout_ms),
     "a connection that has not sent the HTTP/2 preface and SETTINGS within "
     "this long is closed; 0 = never"},
    {"server.max_inflight_bytes", NULL, OPT_SIZE, "256M", 64 * KiB,
     1024 * GiB, F(max_inflight_bytes),
     "request bytes held at once (messages arriving or waiting for a "
     "handler), all connections together; a message beyond it is refused "
     "RESOURCE_EXHAUSTED unallocated"},
    {"server.max_conn_inflight_bytes", NULL, OPT_SIZE, "128M", 64 * KiB,
     1024 * GiB, F(max_conn_inflight_bytes),
     "... the same, per connection (raised to server.max_message_bytes + 5 "
     "when smaller)"},
    {"server.tls_cert", NULL, OPT_STR, "", 0, 0, F(tls_cert),
     "PEM certificate chain (server certificate first): serve gRPC over TLS "
     "(ALPN h2, TLS 1.2+); empty: cleartext h2c; reloaded on SIGHUP"},
    {"server.tls_key", NULL, OPT_STR, "", 0, 0, F(tls_key),
     "PEM private key of server.tls_cert"},
    {"server.tls_client_ca", NULL, OPT_STR, "", 0, 0, F(tls_client_ca),
     "PEM CA certificates: when set, every client must present a "
     "certificate signed by one of them (mutual TLS)"},
    {"server.plaintext", NULL, OPT_BOOL, "false", 0, 0, F(plaintext),
     "allow cleartext h2c (no server.tls_cert) on a non-loopback address; "
     "without it such a start is refused"},
    {"auth.tokens_file", NULL, OPT_STR, "", 0, 0, F(auth_tokens_file),
     "bearer tokens, one 'TOKEN ROLE [NAME]' per line (roles read, write, "
     "admin); mode 0600 or stricter; reloaded on SIGHUP; empty: no "
     "authentication"},
    {"store.data", "data", OPT_STR, "./data", 0, 0, F(data),
     "data directory (created if missing)"},
    {"store.map_size", NULL, OPT_SIZE, "1G", 1 * MiB, 1024 * TiB,
     F(map_size), "initial LMDB map size (sparse)"},
    {"store.max_map_size", NULL, OPT_SIZE, "1T", 1 * MiB, 1024 * TiB,
     F(max_map_size), "LMDB map growth limit"},
    {"store.group_commit_docs", NULL, OPT_U32, "1024", 1, 65536,
     F(group_commit_docs),
     "concurrent unary Puts committed together, one transaction and one "
     "fsync; 1 = each Put alone"},
    {"backup.root", NULL, OPT_STR, "", 0, 0, F(backup_root),
     "directory that Admin.Backup targets must lie under (created if "
     "missing); empty = <store.data>/backups. Best on another disk"},
    {"chunk.max_tokens", NULL, OPT_U32, "512", 8, 1000000,
     F(chunk_max_tokens), "largest chunk, in tokens"},
    {"chunk.overlap_tokens", NULL, OPT_U32, "0", 0, 1000000,
     F(chunk_overlap_tokens),
     "tokens repeated between neighbouring chunks (< chunk.max_tokens)"},
    {"putstream.batch_docs", NULL, OPT_U32, "1000", 1, 1000000,
     F(put_batch_docs), "PutStream commits after this many documents"},
    {"putstream.batch_bytes", NULL, OPT_SIZE, "16M", 1 * KiB, 4 * GiB,
     F(put_batch_bytes), "... or when it holds this many bytes (requests and chunk lists)"},
    {"putstream.batch_ms", NULL, OPT_U32, "50", 0, 60000, F(put_batch_ms),
     "... or this many milliseconds after the first pending document"},
    /* Vector indexes and embedders: the defaults of the `default`
     * collection and of every collection created on first use or without
     * settings of its own; a collection keeps what it was created with. */
    {"index.spec", NULL, OPT_STR, "Flat", 0, 0, F(index_spec),
     "vector index of new collections (FAISS factory string): Flat (exact), "
     "HNSW32 (graph), IVF1024,Flat, IVF1024,PQ32 (exact until trained)"},
    {"index.metric", NULL, OPT_METRIC, "ip", 0, 0, F(index_metric),
     "vector metric of new collections: ip (inner product of L2-normalised "
     "vectors = cosine) or l2 (squared Euclidean distance)"},
    {"index.save_every_changes", NULL, OPT_U32, "10000", 1, 1000000000,
     F(index_save_every_changes),
     "save a collection's index file once this many changes were applied "
     "since its last save (start-up replays the rest from the change log)"},
    {"index.save_interval_s", NULL, OPT_U32, "60", 1, 86400 * 365,
     F(index_save_interval_s),
     "... or this many seconds after the first unsaved change"},
    {"index.rebuild_masked_ratio", NULL, OPT_F64, "0.25", 0.01, 1,
     F(index_rebuild_masked_ratio),
     "rebuild an index (HNSW cannot remove) in the background once removed "
     "but still held vectors reach this fraction of it"},
    {"index.build_threads", NULL, OPT_U32, "0", 0, 1024,
     F(index_build_threads),
     "threads for training and rebuilding indexes (FAISS OpenMP); 0 = one "
     "per CPU"},
    {"embed.embedder", NULL, OPT_STR, "hash", 0, 0, F(embedder),
     "embedder of new collections: hash (built in; options as "
     "hash:dim=1024,bigrams=0,sublinear_tf=1,idf=query,seed=0) or "
     "none:dim=N (clients send every chunk's vector)"},
    {"bm25.k1", NULL, OPT_F64, "1.2", 0, 100, F(bm25_k1),
     "BM25 term-frequency saturation k1 (lexical search)"},
    {"bm25.b", NULL, OPT_F64, "0.75", 0, 1, F(bm25_b),
     "BM25 length normalisation b (0 = none, 1 = full)"},
    {"jobs.max_running", NULL, OPT_U32, "1", 1, 64, F(jobs_max_running),
     "corpus jobs (Corpus.Reorder) run at once, each on its own thread; "
     "the others wait in submission order"},
    {"jobs.max_queued", NULL, OPT_U32, "100", 0, 1000000, F(jobs_max_queued),
     "jobs that may wait; a submission beyond is refused "
     "(RESOURCE_EXHAUSTED)"},
    {"jobs.keep_finished", NULL, OPT_U32, "1000", 1, 10000000,
     F(jobs_keep_finished),
     "ended jobs kept for GetJob/ListJobs/FetchResult; the oldest records "
     "are forgotten (their output files stay)"},
    {"jobs.threads", NULL, OPT_U32, "0", 0, 1024, F(jobs_threads),
     "threads one job uses (embedding, kNN searches); 0 = one per CPU"},
    {"jobs.output_root", NULL, OPT_STR, "", 0, 0, F(jobs_output_root),
     "directory a job's output_dir must resolve under (symbolic links "
     "followed; created at start); empty: DATA/exports of store.data; "
     "/: anywhere the daemon may write"},
    {"jobs.input_root", NULL, OPT_STR, "", 0, 0, F(jobs_input_root),
     "directory a job's input_jsonl must resolve under (symbolic links "
     "followed; created at start); empty: DATA/imports of store.data; "
     "/: any file the daemon may read"},
    {"jobs.test_delay_ms", NULL, OPT_U32, "0", 0, 60000,
     F(jobs_test_delay_ms),
     "TESTS ONLY: each progress report of a job sleeps this long, so that "
     "tests can cancel, disconnect or kill the daemon mid-job; keep 0"},
    {"limits.max_docs_per_stream", NULL, OPT_U32, "10000000", 0, 4294967295.0,
     F(limits_max_docs_per_stream),
     "documents one PutStream call may send; the next one ends the stream "
     "RESOURCE_EXHAUSTED (those before stay written); 0 = no limit"},
    {"limits.max_select_tokens", NULL, OPT_U32, "4000000", 0, 4294967295.0,
     F(limits_max_select_tokens),
     "input tokens (text or stored document) one SelectContext may read; "
     "more is RESOURCE_EXHAUSTED before any model runs; 0 = no limit"},
    {"limits.max_job_docs", NULL, OPT_U32, "10000000", 0, 2147483648.0,
     F(limits_max_job_docs),
     "documents one Corpus.Reorder job may read (JSONL lines or stored "
     "documents); more fails the job RESOURCE_EXHAUSTED while reading; "
     "0 = the engine's 2^31"},
    {"model.path", NULL, OPT_STR, "", 0, 0, F(model_path),
     "GGUF language model loaded at start (XL3M, InfiniRetri; its "
     "vocabulary counts chunk tokens); a file that does not load stops the "
     "start; empty: none (Admin.LoadModel can load one later)"},
    {"model.builtin", NULL, OPT_STR, CTXD_BUILTIN_MODEL, 0, 0, F(model_builtin),
     "with no model.path, this GGUF serves xl3m and infiniretri only (no "
     "token counts, auto stays bm25); missing: logged, skipped; none: off"},
    {"model.threads", NULL, OPT_U32, "0", 0, 1024, F(model_threads),
     "threads of one model selection; 0 = one per CPU (ggml's threads spin: "
     "threads x model.max_concurrent should not exceed the cores)"},
    {"model.n_ctx", NULL, OPT_U32, "0", 0, 1048576, F(model_n_ctx),
     "largest model context, in tokens, a selection may use (InfiniRetri's "
     "cache + window + question, XL3M's segment + question; a request "
     "over it is refused); 0 = the model's training context"},
    {"model.gpu_layers", NULL, OPT_U32, "0", 0, 100000, F(model_gpu_layers),
     "layers offloaded to the GPU where llama.cpp was built with a GPU "
     "backend; at or above the model's layer count = all"},
    {"model.max_concurrent", NULL, OPT_U32, "1", 1, 1024,
     F(model_max_concurrent),
     "model selections (XL3M, InfiniRetri) running at once; one more is "
     "refused RESOURCE_EXHAUSTED"},
    {"tokenizer.path", NULL, OPT_STR, "", 0, 0, F(tokenizer_path),
     "vocabulary-only GGUF (e.g. llama.cpp's models/ggml-vocab-qwen2.gguf) "
     "for exact token counts with no model; a loaded model's vocabulary "
     "takes precedence"},
    {"metrics.listen", NULL, OPT_STR, "", 0, 0, F(metrics_listen),
     "address of the HTTP endpoint for Prometheus metrics (/metrics) and "
     "/healthz: HOST:PORT, [IPV6]:PORT; port 0 picks a free one; \"\" = off"},
    {"log.level", "log-level", OPT_LEVEL, "info", 0, 0, F(log_level),
     "error, warn, info or debug"},
    {"log.access", NULL, OPT_BOOL, "false", 0, 0, F(log_access),
     "log one line per finished call (method, status, duration, bytes, "
     "peer)"},
};

#define N_OPTIONS (sizeof options / sizeof options[0])

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  if (!err || !errlen) return;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static const opt *find_opt(const char *name) {
  for (size_t i = 0; i < N_OPTIONS; i++)
    if (strcmp(options[i].name, name) == 0) return &options[i];
  return NULL;
}

static const opt *find_alias(const char *alias) {
  for (size_t i = 0; i < N_OPTIONS; i++)
    if (options[i].alias && strcmp(options[i].alias, alias) == 0)
      return &options[i];
  return NULL;
}

/* A string value --dump-config can write as an INI line that reads back
 * the same: no control character (a newline would end the line), no space
 * at either end (inih strips it) and no " ;" or " #", nor one at the
 * start (the dump writes "key = value": inih takes the rest for a
 * comment). The fuzzer found each of these. */
static int str_dumpable(const char *v) {
  size_t n = strlen(v);
  if (n && (isspace((unsigned char)v[0]) || isspace((unsigned char)v[n - 1])))
    return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)v[i];
    if (ch < 0x20 || ch == 0x7f) return 0;
    if ((ch == ';' || ch == '#') && (!i || isspace((unsigned char)v[i - 1])))
      return 0;
  }
  return 1;
}

/* "64M", "1G", "512", "4KiB", "16MB" -> bytes. -1 on junk or overflow. */
static int parse_size(const char *s, uint64_t *out) {
  char *end;
  uint64_t mul = 1;
  if (*s < '0' || *s > '9') return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno) return -1;
  switch (*end) {
    case 'k': case 'K': mul = KiB; end++; break;
    case 'm': case 'M': mul = MiB; end++; break;
    case 'g': case 'G': mul = GiB; end++; break;
    case 't': case 'T': mul = TiB; end++; break;
    default: break;
  }
  if (mul > 1 && (strcmp(end, "iB") == 0 || strcmp(end, "B") == 0 ||
                  strcmp(end, "b") == 0))
    end += strlen(end);
  else if (mul == 1 && (strcmp(end, "B") == 0 || strcmp(end, "b") == 0))
    end++;
  if (*end) return -1;
  if (v > UINT64_MAX / mul) return -1;
  *out = v * mul;
  return 0;
}

static int parse_f64(const char *s, double *out) {
  char *end;
  if (!*s) return -1;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || *end || v != v) return -1;
  *out = v;
  return 0;
}

static int parse_u64(const char *s, uint64_t *out) {
  char *end;
  if (*s < '0' || *s > '9') return -1;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end) return -1;
  *out = v;
  return 0;
}

/* Set one option from text. Errors name the option and the bounds. */
static int opt_set(ctxd_config *c, const opt *o, const char *val, char *err,
                   size_t errlen) {
  char *field = (char *)c + o->off;
  uint64_t v;
  switch (o->type) {
    case OPT_STR:
      if (strlen(val) >= o->size) {
        seterr(err, errlen, "%s: value longer than %zu bytes", o->name,
               o->size - 1);
        return -1;
      }
      if (!*val && *o->def) { /* an empty default: empty means "unset" */
        seterr(err, errlen, "%s: must not be empty", o->name);
        return -1;
      }
      if (!str_dumpable(val)) {
        seterr(err, errlen,
               "%s: \"%s\" has a control character, space at an end or an "
               "inline comment (\";\" or \"#\" at the start or after a "
               "space)",
               o->name, val);
        return -1;
      }
      strcpy(field, val);
      return 0;
    case OPT_LEVEL:
      if (log_level_parse(val) < 0) {
        seterr(err, errlen,
               "%s: \"%s\" is not a level (error, warn, info, debug)",
               o->name, val);
        return -1;
      }
      snprintf(field, o->size, "%s", val);
      return 0;
    case OPT_METRIC:
      if (strcmp(val, "ip") != 0 && strcmp(val, "l2") != 0) {
        seterr(err, errlen, "%s: \"%s\" is not a metric (ip, l2)", o->name,
               val);
        return -1;
      }
      snprintf(field, o->size, "%s", val);
      return 0;
    case OPT_BOOL:
      if (!strcmp(val, "true") || !strcmp(val, "yes") || !strcmp(val, "on") ||
          !strcmp(val, "1")) {
        *(uint32_t *)field = 1;
      } else if (!strcmp(val, "false") || !strcmp(val, "no") ||
                 !strcmp(val, "off") || !strcmp(val, "0")) {
        *(uint32_t *)field = 0;
      } else {
        seterr(err, errlen, "%s: \"%s\" is not true or false", o->name, val);
        return -1;
      }
      return 0;
    case OPT_F64: {
      double d;
      if (parse_f64(val, &d) != 0) {
        seterr(err, errlen, "%s: \"%s\" is not a number", o->name, val);
        return -1;
      }
      if (d < o->min || d > o->max) {
        seterr(err, errlen, "%s: %s is out of range [%g, %g]", o->name, val,
               o->min, o->max);
        return -1;
      }
      *(double *)field = d;
      return 0;
    }
    case OPT_U32:
    case OPT_SIZE:
      if ((o->type == OPT_U32 ? parse_u64(val, &v) : parse_size(val, &v)) !=
          0) {
        seterr(err, errlen, "%s: \"%s\" is not %s", o->name, val,
               o->type == OPT_U32 ? "a non-negative integer"
                                  : "a size (e.g. 4096, 64M, 1G)");
        return -1;
      }
      if ((double)v < o->min || (double)v > o->max) {
        seterr(err, errlen, "%s: %s is out of range [%llu, %llu]", o->name,
               val, (unsigned long long)o->min, (unsigned long long)o->max);
        return -1;
      }
      if (o->type == OPT_U32)
        *(uint32_t *)field = (uint32_t)v;
      else
        *(uint64_t *)field = v;
      return 0;
  }
  return -1;
}

void config_defaults(ctxd_config *c) {
  memset(c, 0, sizeof *c);
  for (size_t i = 0; i < N_OPTIONS; i++) {
    int rc = opt_set(c, &options[i], options[i].def, NULL, 0);
    (void)rc; /* the table's defaults are within their own bounds */
  }
}

/* Rules that involve two options. */
static int config_check(const ctxd_config *c, char *err, size_t errlen) {
  if (c->chunk_overlap_tokens >= c->chunk_max_tokens) {
    seterr(err, errlen,
           "chunk.overlap_tokens (%u) must be smaller than chunk.max_tokens "
           "(%u)",
           c->chunk_overlap_tokens, c->chunk_max_tokens);
    return -1;
  }
  if (c->map_size > c->max_map_size) {
    seterr(err, errlen, "store.map_size must not exceed store.max_map_size");
    return -1;
  }
  if (!c->tls_cert[0] != !c->tls_key[0]) {
    seterr(err, errlen, "server.tls_cert and server.tls_key go together: "
                        "set both or neither");
    return -1;
  }
  if (c->tls_client_ca[0] && !c->tls_cert[0]) {
    seterr(err, errlen, "server.tls_client_ca needs server.tls_cert and "
                        "server.tls_key (client certificates are a TLS "
                        "feature)");
    return -1;
  }
  return 0;
}

typedef struct ini_state {
  ctxd_config *c;
  char err[512];
} ini_state;

static int config_ini_line(void *user, const char *section, const char *name,
                       const char *value) {
  ini_state *st = user;
  char full[128];
  if (st->err[0]) return 0;
  if (!name) return 1; /* a bare [section] line (inih >= 53 with callbacks) */
  snprintf(full, sizeof full, "%s.%s", section, name);
  const opt *o = find_opt(full);
  if (!o) {
    snprintf(st->err, sizeof st->err, "unknown option %s (section [%s])",
             full, section);
    return 0;
  }
  return opt_set(st->c, o, value, st->err, sizeof st->err) == 0;
}

/* libinih reads a file in lines of at most INI_MAX_LINE - 1 bytes (200
 * in Debian's build) and parses the rest of a longer line as a line of its
 * own, which could set an option the file never named. This reader hands
 * it whole lines and stops at one that does not fit (the fuzzer found it). */
typedef struct ini_file {
  FILE *f;
  char *line;
  size_t cap;
  long lineno, too_long; /* the line that did not fit, or 0 */
} ini_file;

static char *ini_read_line(char *buf, int num, void *stream) {
  ini_file *r = stream;
  ssize_t n = getline(&r->line, &r->cap, r->f);
  if (n < 0) return NULL;
  r->lineno++;
  if (n >= num) {
    r->too_long = r->lineno;
    return NULL;
  }
  memcpy(buf, r->line, (size_t)n + 1);
  return buf;
}

int config_load_file(ctxd_config *c, const char *path, char *err,
                     size_t errlen) {
  ini_state st;
  st.c = c;
  st.err[0] = '\0';
  ini_file r = {fopen(path, "r"), NULL, 0, 0, 0};
  if (!r.f) {
    seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  int rc = ini_parse_stream(ini_read_line, &r, config_ini_line, &st);
  fclose(r.f);
  free(r.line);
  if (rc == 0 && r.too_long) {
    seterr(err, errlen, "%s:%ld: line longer than %d bytes", path,
           r.too_long, INI_MAX_LINE - 2);
    return -1;
  }
  if (rc == -1) {
    seterr(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    return -1;
  }
  if (rc == -2) {
    seterr(err, errlen, "%s: out of memory", path);
    return -1;
  }
  if (rc > 0) {
    seterr(err, errlen, "%s:%d: %s", path, rc,
           st.err[0] ? st.err : "syntax error");
    return -1;
  }
  return config_check(c, err, errlen);
}

/* Resolve "--x" (without the dashes) to an option. */
static const opt *flag_opt(const char *flag) {
  const opt *o = find_opt(flag);
  return o ? o : find_alias(flag);
}

int config_parse_args(ctxd_config *c, int argc, char **argv, int *action,
                      char *err, size_t errlen) {
  *action = CONFIG_RUN;
  /* Pass 1: the config file, so that flags override it wherever they are. */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *path = NULL;
    if (strcmp(a, "--config") == 0) {
      if (i + 1 >= argc) {
        seterr(err, errlen, "--config needs a FILE");
        return -1;
      }
      path = argv[++i];
    } else if (strncmp(a, "--config=", 9) == 0) {
      path = a + 9;
    }
    if (path && config_load_file(c, path, err, errlen) != 0) return -1;
  }
  /* Pass 2: everything else. */
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--config") == 0) {
      i++;
      continue;
    }
    if (strncmp(a, "--config=", 9) == 0) continue;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      *action = CONFIG_HELP;
      return 0;
    }
    if (strcmp(a, "--version") == 0) {
      *action = CONFIG_VERSION;
      return 0;
    }
    if (strcmp(a, "--dump-config") == 0) {
      *action = CONFIG_DUMP;
      continue;
    }
    if (strncmp(a, "--", 2) != 0) {
      seterr(err, errlen, "unexpected argument \"%s\" (see --help)", a);
      return -1;
    }
    char name[128];
    const char *val;
    const char *eq = strchr(a + 2, '=');
    size_t n = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
    if (n >= sizeof name) n = sizeof name - 1;
    memcpy(name, a + 2, n);
    name[n] = '\0';
    const opt *o = flag_opt(name);
    if (!o) {
      seterr(err, errlen, "unknown option --%s (see --help)", name);
      return -1;
    }
    if (eq) {
      val = eq + 1;
    } else {
      if (i + 1 >= argc) {
        seterr(err, errlen, "--%s needs a value", name);
        return -1;
      }
      val = argv[++i];
    }
    if (opt_set(c, o, val, err, errlen) != 0) return -1;
  }
  return config_check(c, err, errlen);
}

/* Sizes come out with the largest exact suffix, so a dump reads well. */
static void format_size(uint64_t v, char *buf, size_t n) {
  static const struct {
    uint64_t mul;
    char suffix;
  } units[] = {{TiB, 'T'}, {GiB, 'G'}, {MiB, 'M'}, {KiB, 'K'}};
  for (size_t i = 0; i < 4; i++)
    if (v && v % units[i].mul == 0) {
      snprintf(buf, n, "%llu%c", (unsigned long long)(v / units[i].mul),
               units[i].suffix);
      return;
    }
  snprintf(buf, n, "%llu", (unsigned long long)v);
}

static void format_value(const ctxd_config *c, const opt *o, char *buf,
                         size_t n) {
  const char *field = (const char *)c + o->off;
  switch (o->type) {
    case OPT_STR:
    case OPT_LEVEL:
    case OPT_METRIC:
      snprintf(buf, n, "%s", field);
      break;
    case OPT_F64: {
      /* The shortest form that reads back exactly ("1.2", not
       * "1.1999999999999999"). */
      double d = *(const double *)field;
      for (int prec = 6; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, d);
        if (strtod(buf, NULL) == d) break;
      }
      break;
    }
    case OPT_U32:
      snprintf(buf, n, "%u", *(const uint32_t *)field);
      break;
    case OPT_BOOL:
      snprintf(buf, n, "%s", *(const uint32_t *)field ? "true" : "false");
      break;
    case OPT_SIZE:
      format_size(*(const uint64_t *)field, buf, n);
      break;
  }
}

void config_dump(const ctxd_config *c, FILE *out) {
  char section[64] = "";
  char value[4200];
  fprintf(out, "# ctxd configuration (ctxd --dump-config)\n");
  for (size_t i = 0; i < N_OPTIONS; i++) {
    const opt *o = &options[i];
    const char *dot = strchr(o->name, '.');
    size_t sl = (size_t)(dot - o->name);
    if (strlen(section) != sl || strncmp(section, o->name, sl) != 0) {
      snprintf(section, sizeof section, "%.*s", (int)sl, o->name);
      fprintf(out, "\n[%s]\n", section);
    }
    format_value(c, o, value, sizeof value);
    fprintf(out, "# %s\n%s = %s\n", o->help, dot + 1, value);
  }
}

void config_usage(FILE *out) {
  fprintf(out,
          "usage: ctxd [--config FILE] [--section.key VALUE ...]\n"
          "            [--dump-config] [--version] [--help]\n\n"
          "Serves ctxd's gRPC API over HTTP/2: TLS with server.tls_cert, "
          "else\ncleartext h2c. Options come from the defaults, then the INI "
          "file given\nwith --config, then the command line.\n\n"
          "options (INI [section] key, default):\n");
  for (size_t i = 0; i < N_OPTIONS; i++) {
    const opt *o = &options[i];
    fprintf(out, "  --%s VALUE", o->name);
    if (o->alias) fprintf(out, "  (or --%s)", o->alias);
    fprintf(out, "\n      %s (default %s)\n", o->help, o->def);
  }
}
