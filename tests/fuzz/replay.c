/* replay.c - runs a fuzz target's LLVMFuzzerTestOneInput over files (or
 * every file of directories) without libFuzzer, so the seeds and the inputs
 * of fixed crashes are regression tests in every build (ctest
 * fuzz.replay.<target>). A crash or failed check aborts; exit 0 otherwise. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "replay: cannot open %s\n", path);
    return -1;
  }
  size_t cap = 4096, n = 0;
  uint8_t *buf = malloc(cap);
  size_t k;
  while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
    n += k;
    if (n == cap) {
      uint8_t *b = realloc(buf, cap *= 2);
      if (!b) free(buf);
      buf = b;
    }
  }
  fclose(f);
  if (!buf) {
    fprintf(stderr, "replay: out of memory reading %s\n", path);
    return -1;
  }
  /* An exact-size copy, so ASan sees reads past the input's end. */
  uint8_t *in = malloc(n ? n : 1);
  if (in) memcpy(in, buf, n);
  free(buf);
  if (!in) return -1;
  LLVMFuzzerTestOneInput(in, n);
  free(in);
  return 0;
}

static int name_cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Files of a directory in name order (hidden files skipped). */
static int replay_dir(const char *dir, int *count) {
  DIR *d = opendir(dir);
  if (!d) return 0; /* a target without regression inputs yet */
  char **names = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    if (n == cap) {
      char **nn = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof *nn);
      if (!nn) {
        rc = -1;
        break;
      }
      names = nn;
    }
    if (!(names[n] = malloc(strlen(dir) + strlen(de->d_name) + 2))) {
      rc = -1;
      break;
    }
    sprintf(names[n++], "%s/%s", dir, de->d_name);
  }
  closedir(d);
  if (n) qsort(names, n, sizeof *names, name_cmp);
  for (size_t i = 0; i < n; i++) {
    struct stat st;
    if (rc == 0 && stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
      if (replay_file(names[i])) rc = -1;
      (*count)++;
    }
    free(names[i]);
  }
  free(names);
  return rc;
}

int main(int argc, char **argv) {
  int count = 0, rc = 0;
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  for (int i = 1; i < argc; i++) {
    struct stat st;
    if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode))
      rc |= replay_dir(argv[i], &count);
    else if (stat(argv[i], &st) == 0)
      rc |= replay_file(argv[i]), count++;
  }
  printf("replayed %d inputs\n", count);
  return rc ? 1 : 0;
}
