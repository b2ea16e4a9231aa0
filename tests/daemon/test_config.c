/* test_config.c - the option table: defaults, INI file, flags over file,
 * bad values and their messages, --dump-config loading back identically. */
#include "../check.h"
#include "config.h"

#include <stdlib.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/ctxd-test-config-XXXXXX";

static const char *write_file(const char *name, const char *text) {
  static char path[256];
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
  return path;
}

static int parse(ctxd_config *c, int *action, char *err, size_t errlen,
                 int argc, char **argv) {
  config_defaults(c);
  return config_parse_args(c, argc, argv, action, err, errlen);
}

static void test_defaults(void) {
  ctxd_config c;
  config_defaults(&c);
  CHECK_EQ_STR(c.listen, "127.0.0.1:50051");
  CHECK_EQ_INT(c.workers, 0);
  CHECK_EQ_INT(c.max_message_bytes, 64ULL << 20);
  CHECK_EQ_INT(c.max_connections, 10000);
  CHECK_EQ_INT(c.max_concurrent_streams, 1000);
  CHECK_EQ_INT(c.shutdown_grace_ms, 10000);
  CHECK_EQ_INT(c.handshake_timeout_ms, 10000);
  CHECK_EQ_STR(c.data, "./data");
  CHECK_EQ_INT(c.map_size, 1ULL << 30);
  CHECK_EQ_INT(c.max_map_size, 1ULL << 40);
  CHECK_EQ_INT(c.group_commit_docs, 1024);
  CHECK_EQ_INT(c.chunk_max_tokens, 512);
  CHECK_EQ_INT(c.chunk_overlap_tokens, 0);
  CHECK_EQ_INT(c.put_batch_docs, 1000);
  CHECK_EQ_INT(c.put_batch_bytes, 16ULL << 20);
  CHECK_EQ_INT(c.put_batch_ms, 50);
  CHECK_EQ_STR(c.log_level, "info");
  CHECK_EQ_INT(c.log_access, 0);
  CHECK_EQ_STR(c.metrics_listen, "");
  CHECK_EQ_STR(c.index_spec, "Flat");
  CHECK_EQ_STR(c.index_metric, "ip");
  CHECK_EQ_INT(c.index_save_every_changes, 10000);
  CHECK_EQ_INT(c.index_save_interval_s, 60);
  CHECK(c.index_rebuild_masked_ratio == 0.25);
  CHECK_EQ_INT(c.index_build_threads, 0);
  CHECK_EQ_STR(c.embedder, "hash");
  CHECK(c.bm25_k1 == 1.2);
  CHECK(c.bm25_b == 0.75);
}

static void test_file_and_flags(void) {
  ctxd_config c;
  char err[512];
  int action;
  const char *path = write_file("a.ini",
                                "; comment\n"
                                "[server]\n"
                                "listen = 0.0.0.0:6000\n"
                                "max_message_bytes = 1G\n"
                                "workers = 3\n"
                                "[store]\n"
                                "data = /var/lib/ctxd\n"
                                "group_commit_docs = 64\n"
                                "[log]\n"
                                "level = debug\n");
  char *argv[] = {"ctxd", "--listen", "127.0.0.1:7000", "--config",
                  (char *)path, "--server.workers=5", "--chunk.max_tokens",
                  "256"};
  CHECK_EQ_INT(parse(&c, &action, err, sizeof err, 8, argv), 0);
  CHECK_EQ_INT(action, CONFIG_RUN);
  CHECK_EQ_STR(c.listen, "127.0.0.1:7000"); /* flag beats file */
  CHECK_EQ_INT(c.workers, 5);
  CHECK_EQ_INT(c.max_message_bytes, 1ULL << 30);
  CHECK_EQ_STR(c.data, "/var/lib/ctxd");
  CHECK_EQ_INT(c.group_commit_docs, 64);
  CHECK_EQ_STR(c.log_level, "debug");
  CHECK_EQ_INT(c.chunk_max_tokens, 256);

  char *argv2[] = {"ctxd", "--data", "/d", "--log-level", "warn",
                   "--store.map_size", "64MiB", "--putstream.batch_bytes",
                   "4096"};
  CHECK_EQ_INT(parse(&c, &action, err, sizeof err, 9, argv2), 0);
  CHECK_EQ_STR(c.data, "/d");
  CHECK_EQ_STR(c.log_level, "warn");
  CHECK_EQ_INT(c.map_size, 64ULL << 20);
  CHECK_EQ_INT(c.put_batch_bytes, 4096);

  /* Booleans: true/false, yes/no, on/off, 1/0. */
  CHECK_EQ_INT(c.plaintext, 0);
  char *argv6[] = {"ctxd", "--server.plaintext=yes"};
  CHECK_EQ_INT(parse(&c, &action, err, sizeof err, 2, argv6), 0);
  CHECK_EQ_INT(c.plaintext, 1);
  char *argv7[] = {"ctxd", "--server.plaintext", "off"};
  CHECK_EQ_INT(parse(&c, &action, err, sizeof err, 3, argv7), 0);
  CHECK_EQ_INT(c.plaintext, 0);

  char *argv3[] = {"ctxd", "--dump-config"};
  CHECK_EQ_INT(parse(&c, &action, err, sizeof err, 2, argv3), 0);
  CHECK_EQ_INT(action, CONFIG_DUMP);
  char *argv4[] = {"ctxd", "--version"};
  CHECK_EQ_INT(parse(&c, &action, err, sizeof err, 2, argv4), 0);
  CHECK_EQ_INT(action, CONFIG_VERSION);
  char *argv5[] = {"ctxd", "--help"};
  CHECK_EQ_INT(parse(&c, &action, err, sizeof err, 2, argv5), 0);
  CHECK_EQ_INT(action, CONFIG_HELP);
}

/* The call fails and the message mentions `needle`. */
static void expect_bad(int argc, char **argv, const char *needle) {
  ctxd_config c;
  char err[512] = "";
  int action;
  int rc = parse(&c, &action, err, sizeof err, argc, argv);
  CHECK_EQ_INT(rc, -1);
  if (!strstr(err, needle)) {
    fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", err, needle);
    CHECK(0);
  }
}

static void test_bad_values(void) {
  char *a1[] = {"ctxd", "--server.workers", "many"};
  expect_bad(3, a1, "server.workers");
  char *a2[] = {"ctxd", "--server.max_message_bytes", "10Q"};
  expect_bad(3, a2, "server.max_message_bytes");
  char *a3[] = {"ctxd", "--server.max_message_bytes", "8G"};
  expect_bad(3, a3, "out of range");
  char *a4[] = {"ctxd", "--server.max_concurrent_streams", "0"};
  expect_bad(3, a4, "out of range");
  char *s1[] = {"ctxd", "--server.plaintext", "maybe"};
  expect_bad(3, s1, "is not true or false");
  char *s2[] = {"ctxd", "--server.tls_cert", "/c.pem"};
  expect_bad(3, s2, "server.tls_cert and server.tls_key go together");
  char *s3[] = {"ctxd", "--server.tls_client_ca", "/ca.pem"};
  expect_bad(3, s3, "server.tls_client_ca needs server.tls_cert");
  char *a5[] = {"ctxd", "--nope", "1"};
  expect_bad(3, a5, "unknown option --nope");
  char *a6[] = {"ctxd", "--log-level", "loud"};
  expect_bad(3, a6, "log.level");
  char *a7[] = {"ctxd", "--listen"};
  expect_bad(2, a7, "needs a value");
  char *a8[] = {"ctxd", "--chunk.overlap_tokens", "600"};
  expect_bad(3, a8, "chunk.overlap_tokens");
  char *a9[] = {"ctxd", "stray"};
  expect_bad(2, a9, "stray");
  char *a10[] = {"ctxd", "--server.workers", "-1"};
  expect_bad(3, a10, "server.workers");
  char *a11[] = {"ctxd", "--server.max_connections", "99999999999999999999"};
  expect_bad(3, a11, "server.max_connections");
  char *a12[] = {"ctxd", "--store.group_commit_docs", "0"};
  expect_bad(3, a12, "store.group_commit_docs");
  char *a13[] = {"ctxd", "--bm25.b", "1.5"};
  expect_bad(3, a13, "bm25.b: 1.5 is out of range [0, 1]");
  char *a14[] = {"ctxd", "--bm25.k1", "1.2x"};
  expect_bad(3, a14, "bm25.k1: \"1.2x\" is not a number");
  char *a15[] = {"ctxd", "--index.metric", "cosine"};
  expect_bad(3, a15, "index.metric");
  char *a16[] = {"ctxd", "--index.rebuild_masked_ratio", "0"};
  expect_bad(3, a16, "index.rebuild_masked_ratio");
  char *a17[] = {"ctxd", "--bm25.k1", "nan"};
  expect_bad(3, a17, "bm25.k1");
  char *a18[] = {"ctxd", "--log.access", "maybe"};
  expect_bad(3, a18, "log.access: \"maybe\" is not true or false");

  const char *p1 = write_file("b.ini", "[server]\nlisten = x:1\nbogus = 1\n");
  char *b1[] = {"ctxd", "--config", (char *)p1};
  expect_bad(3, b1, "b.ini:3: unknown option server.bogus");
  const char *p2 = write_file("c.ini", "[nosuch]\nkey = 1\n");
  char *b2[] = {"ctxd", "--config", (char *)p2};
  expect_bad(3, b2, "c.ini:2:");
  const char *p3 = write_file("d.ini", "[server]\nworkers = 2\nworkers x\n");
  char *b3[] = {"ctxd", "--config", (char *)p3};
  expect_bad(3, b3, "d.ini:3:");
  const char *p4 = write_file("e.ini", "[chunk]\nmax_tokens = 1\n");
  char *b4[] = {"ctxd", "--config", (char *)p4};
  expect_bad(3, b4, "e.ini:2: chunk.max_tokens");
  char *b5[] = {"ctxd", "--config", "/nonexistent/ctxd.ini"};
  expect_bad(3, b5, "cannot open");
}

static void test_dump_reload(void) {
  ctxd_config a, b;
  char err[512];
  int action;
  char *argv[] = {"ctxd",
                  "--listen",
                  "[::1]:0",
                  "--data",
                  "/tmp/some dir",
                  "--server.max_message_bytes",
                  "12345",
                  "--store.max_map_size",
                  "2T",
                  "--chunk.overlap_tokens",
                  "16",
                  "--log.level",
                  "error",
                  "--log.access",
                  "yes",
                  "--metrics.listen",
                  "0.0.0.0:9464",
                  "--bm25.k1",
                  "0.9",
                  "--bm25.b",
                  "0.3333333333333333",
                  "--index.spec",
                  "IVF64,Flat",
                  "--index.metric",
                  "l2",
                  "--embed.embedder",
                  "hash:dim=256"};
  int argc = (int)(sizeof argv / sizeof argv[0]);
  CHECK_EQ_INT(parse(&a, &action, err, sizeof err, argc, argv), 0);
  CHECK(a.bm25_k1 == 0.9);
  CHECK(a.bm25_b == 0.3333333333333333);
  char path[256];
  snprintf(path, sizeof path, "%s/dump.ini", tmpdir);
  FILE *f = fopen(path, "w");
  config_dump(&a, f);
  fclose(f);
  config_defaults(&b);
  CHECK_EQ_INT(config_load_file(&b, path, err, sizeof err), 0);
  CHECK(memcmp(&a, &b, sizeof a) == 0);
  CHECK_EQ_STR(b.data, "/tmp/some dir");
  CHECK_EQ_INT(b.max_message_bytes, 12345);
  CHECK_EQ_INT(b.max_map_size, 2ULL << 40);
  CHECK_EQ_STR(b.index_spec, "IVF64,Flat");
  CHECK_EQ_STR(b.index_metric, "l2");
  CHECK_EQ_STR(b.embedder, "hash:dim=256");
  CHECK_EQ_INT(b.log_access, 1);
  CHECK_EQ_STR(b.metrics_listen, "0.0.0.0:9464");
  /* The dump of the defaults loads back to the defaults too. */
  config_defaults(&a);
  f = fopen(path, "w");
  config_dump(&a, f);
  fclose(f);
  memset(&b, 0x5a, sizeof b);
  config_defaults(&b);
  b.workers = 9;
  CHECK_EQ_INT(config_load_file(&b, path, err, sizeof err), 0);
  CHECK(memcmp(&a, &b, sizeof a) == 0);
  unlink(path);
}

int main(void) {
  if (!mkdtemp(tmpdir)) return 1;
  test_defaults();
  test_file_and_flags();
  test_bad_values();
  test_dump_reload();
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) return 1;
  return check_report("config");
}
