/* fuzz_config.c - the daemon's configuration parsers: the INI file
 * (config_load_file, libinih) and the command line (config_parse_args).
 *
 * Input: INI text, optionally followed by "\0\0" and command-line arguments
 * separated by '\0'. The INI part is the file that --config names (every
 * --config value is pointed at it, so no other file is ever read). When
 * the configuration is accepted, --dump-config must round-trip: the dump
 * loads back without error and dumps to the same text - unless a value
 * from the command line makes a line longer than libinih reads
 * (INI_MAX_LINE), which config_load_file refuses with a message. */
#include <ini.h>
#include <string.h>

#include "config.h"
#include "fuzz_common.h"

#define MAX_ARGS 64

static int ini_fd = -1, dump_fd = -1;

/* The longest line of s, without its newline. */
static size_t longest_line(const char *s) {
  size_t best = 0;
  while (*s) {
    size_t n = strcspn(s, "\n");
    if (n > best) best = n;
    s += n + (s[n] == '\n');
  }
  return best;
}

static char *dump_text(const ctxd_config *c, size_t *n) {
  char *buf = NULL;
  FILE *f = open_memstream(&buf, n);
  FUZZ_CHECK(f != NULL, "open_memstream");
  config_dump(c, f);
  fclose(f);
  return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char ini_path[64], dump_path[64], err[512];
  const uint8_t *sep = NULL;
  for (size_t i = 0; i + 1 < size; i++)
    if (data[i] == 0 && data[i + 1] == 0) {
      sep = data + i;
      break;
    }
  size_t ini_len = sep ? (size_t)(sep - data) : size;
  if (fuzz_memfile(&ini_fd, "fuzz.ini", data, ini_len, ini_path) != 0)
    return 0;

  /* argv: "ctxd", "--config", PATH, then the arguments of the input. */
  char *args = NULL;
  char *argv[MAX_ARGS + 4];
  int argc = 0;
  argv[argc++] = "ctxd";
  argv[argc++] = "--config";
  argv[argc++] = ini_path;
  char config_eq[80];
  snprintf(config_eq, sizeof config_eq, "--config=%s", ini_path);
  if (sep) {
    size_t alen = size - ini_len - 2;
    args = malloc(alen + 1);
    if (!args) return 0;
    memcpy(args, sep + 2, alen);
    args[alen] = '\0';
    for (char *p = args; p < args + alen && argc < MAX_ARGS;
         p += strlen(p) + 1) {
      if (strncmp(p, "--config=", 9) == 0) {
        argv[argc++] = config_eq;
      } else if (strcmp(p, "--config") == 0) {
        argv[argc++] = "--config";
        argv[argc++] = ini_path;
        p += strlen(p) + 1; /* its value is replaced */
        if (p >= args + alen) break;
      } else {
        argv[argc++] = p;
      }
    }
  }
  argv[argc] = NULL;

  ctxd_config c;
  int action;
  config_defaults(&c);
  if (config_parse_args(&c, argc, argv, &action, err, sizeof err) == 0) {
    size_t n1, n2;
    char *d1 = dump_text(&c, &n1);
    FUZZ_CHECK(fuzz_memfile(&dump_fd, "fuzz.dump", (const uint8_t *)d1, n1,
                            dump_path) == 0,
               "memfd");
    ctxd_config c2;
    config_defaults(&c2);
    if (longest_line(d1) > INI_MAX_LINE - 2) {
      FUZZ_CHECK(config_load_file(&c2, dump_path, err, sizeof err) != 0 &&
                     strstr(err, "line longer than"),
                 "a dump with a line over the limit loads (or: %s)", err);
      free(d1);
      free(args);
      return 0;
    }
    FUZZ_CHECK(config_load_file(&c2, dump_path, err, sizeof err) == 0,
               "the dump of an accepted config does not load: %s", err);
    char *d2 = dump_text(&c2, &n2);
    FUZZ_CHECK(n1 == n2 && memcmp(d1, d2, n1) == 0,
               "--dump-config does not round-trip:\n%s\n---\n%s", d1, d2);
    free(d1);
    free(d2);
  } else {
    FUZZ_CHECK(err[0] != '\0', "refused without a message");
  }
  free(args);
  return 0;
}
