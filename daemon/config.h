/* config.h - the daemon's configuration: one table of options feeds the
 * command line, the INI config file (libinih) and --dump-config.
 *
 * Every option has an INI name `section.key`; on the command line it is
 * `--section.key VALUE` (or `=VALUE`), and the common ones have short
 * aliases: --listen (server.listen), --data (store.data), --log-level
 * (log.level). Precedence: defaults < config file < command line. */
#ifndef CTXD_CONFIG_H
#define CTXD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct ctxd_config {
  /* [server] */
  char listen[256];            /* HOST:PORT, default 127.0.0.1:50051 */
  uint32_t workers;            /* worker threads, 0 = number of CPUs */
  uint64_t max_message_bytes;  /* default 64 MiB */
  uint32_t max_connections;    /* default 10000 */
  uint32_t max_concurrent_streams; /* per connection, default 1000 */
  uint32_t shutdown_grace_ms;  /* in-flight calls get this long, 10000 */
  uint32_t handshake_timeout_ms; /* preface + SETTINGS due within, 10000 */
  uint64_t max_inflight_bytes; /* request bytes held, whole daemon, 256 MiB */
  uint64_t max_conn_inflight_bytes; /* ... per connection, 128 MiB */
  char tls_cert[4096];         /* PEM certificate chain; "" = cleartext h2c */
  char tls_key[4096];          /* PEM private key of tls_cert */
  char tls_client_ca[4096];    /* PEM CAs; set = client certificates required */
  uint32_t plaintext;          /* 1: h2c allowed on a non-loopback address */
  /* [auth] */
  char auth_tokens_file[4096]; /* TOKEN ROLE [NAME] lines; "" = auth off */
  /* [store] */
  char data[4096];             /* data directory, default ./data */
  uint64_t map_size;           /* initial LMDB map, default 1 GiB */
  uint64_t max_map_size;       /* growth limit, default 1 TiB */
  char backup_root[4096];      /* Admin.Backup targets lie under it;
                                * "" = <data>/backups */
  uint32_t group_commit_docs;  /* unary Puts per transaction, 1024; 1 = alone */
  /* [chunk] */
  uint32_t chunk_max_tokens;   /* default 512 */
  uint32_t chunk_overlap_tokens; /* default 0 */
  /* [putstream] */
  uint32_t put_batch_docs;     /* commit after this many documents, 1000 */
  uint64_t put_batch_bytes;    /* ... or this many bytes held, 16 MiB */
  uint32_t put_batch_ms;       /* ... or this long after the first pending, 50 */
  /* [index] (vector indexes; see the README, "Collections") */
  char index_spec[128];        /* FAISS factory string, default Flat */
  char index_metric[8];        /* "ip" or "l2" */
  uint32_t index_save_every_changes; /* save after this many changes, 10000 */
  uint32_t index_save_interval_s;    /* ... or this long after one, 60 */
  double index_rebuild_masked_ratio; /* rebuild HNSW past this, 0.25 */
  uint32_t index_build_threads;      /* training/rebuild threads, 0 = all */
  /* [embed] */
  char embedder[256];          /* "hash", "hash:dim=...", "none:dim=N" */
  /* [bm25] */
  double bm25_k1;              /* 1.2 */
  double bm25_b;               /* 0.75 */
  /* [jobs] (corpus jobs, jobs.h) */
  uint32_t jobs_max_running;   /* jobs run at once, 1 */
  uint32_t jobs_max_queued;    /* jobs waiting, 100 */
  uint32_t jobs_keep_finished; /* ended jobs kept, 1000 */
  uint32_t jobs_threads;       /* threads of each job, 0 = all cores */
  uint32_t jobs_test_delay_ms; /* tests only, 0 */
  char jobs_output_root[4096]; /* "" = DATA/exports; "/" = anywhere */
  char jobs_input_root[4096];  /* "" = DATA/imports; "/" = anywhere */
  /* [limits] (work one request may ask for; RESOURCE_EXHAUSTED beyond) */
  uint32_t limits_max_docs_per_stream; /* PutStream documents, 10M; 0 = none */
  uint32_t limits_max_select_tokens;   /* SelectContext input, 4M; 0 = none */
  uint32_t limits_max_job_docs;        /* Reorder job input, 10M; 0 = 2^31 */
  /* [model] (the language model, models.h) */
  char model_path[4096];       /* GGUF loaded at start; "" = none */
  char model_builtin[4096];    /* reference model for selections with no
                                * model.path; "none" = off */
  uint32_t model_threads;      /* threads of one selection, 0 = all CPUs */
  uint32_t model_n_ctx;        /* largest context a selection may use, 0 = model's */
  uint32_t model_gpu_layers;   /* layers offloaded (GPU builds), 0 */
  uint32_t model_max_concurrent; /* model selections at once, 1 */
  /* [tokenizer] */
  char tokenizer_path[4096];   /* vocabulary-only GGUF; "" = none */
  /* [metrics] */
  char metrics_listen[256];    /* HTTP /metrics and /healthz; "" = off */
  /* [log] */
  char log_level[16];          /* error, warn, info, debug */
  uint32_t log_access;         /* one line per finished call, 0 */
} ctxd_config;

/* Fill `c` with the defaults. */
void config_defaults(ctxd_config *c);

/* Parse argv into `c` (applying --config FILE first, then the flags, so the
 * command line wins). Sets *action to CONFIG_RUN, CONFIG_DUMP (--dump-config),
 * CONFIG_VERSION or CONFIG_HELP. On a bad option/value/file returns -1 and
 * writes a message to `err` (size errlen). */
enum { CONFIG_RUN, CONFIG_DUMP, CONFIG_VERSION, CONFIG_HELP };
int config_parse_args(ctxd_config *c, int argc, char **argv, int *action,
                      char *err, size_t errlen);

/* Load an INI file into `c`. -1 and a message naming the line on error. */
int config_load_file(ctxd_config *c, const char *path, char *err,
                     size_t errlen);

/* Print `c` as an INI file that config_load_file() reads back. */
void config_dump(const ctxd_config *c, FILE *out);

/* Print usage (all options with their help and default). */
void config_usage(FILE *out);

#endif
