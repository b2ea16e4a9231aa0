/* fuzz_jsonl.c - the JSONL reader of corpus jobs (order_read_jsonl, the
 * reader the daemon's Reorder jobs and ctxd-corpus use) on arbitrary file
 * contents, then every document's text read back through get_text.
 *
 * Checked (order.h): an accepted file gives ids of 1..ORDER_ID_MAX bytes
 * without NUL, unique; finite vector elements, one dimension; texts that
 * are valid UTF-8; a refused file always says why. */
#include <math.h>
#include <string.h>

#include "fuzz_common.h"
#include "order.h"
#include "utf8.h"

static int fd = -1;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char path[64];
  if (fuzz_memfile(&fd, "fuzz.jsonl", data, size, path) != 0) return 0;
  order_jsonl *r = NULL;
  ctxd_error e = {0};
  order_read_opts ro = {.max_docs = 4096};
  if (order_read_jsonl(path, &ro, &r, &e) != 0) {
    FUZZ_CHECK(e.msg[0] != '\0', "refused without a message");
    FUZZ_CHECK(r == NULL, "refused but returned a reader");
    return 0;
  }
  order_input in;
  order_jsonl_input(r, &in);
  for (uint64_t i = 0; i < in.n; i++) {
    size_t n = strlen(in.ids[i]);
    FUZZ_CHECK(n >= 1 && n <= ORDER_ID_MAX, "id %llu has %zu bytes",
               (unsigned long long)i, n);
    for (uint64_t j = 0; j < i; j++)
      FUZZ_CHECK(strcmp(in.ids[i], in.ids[j]) != 0, "ids %llu and %llu are "
                 "both \"%s\"", (unsigned long long)j, (unsigned long long)i,
                 in.ids[i]);
    if (in.vectors && (!in.has_vector || in.has_vector[i]))
      for (uint32_t k = 0; k < in.dim; k++)
        FUZZ_CHECK(isfinite(in.vectors[i * in.dim + k]),
                   "document %llu: vector element %u is not finite",
                   (unsigned long long)i, k);
    const char *text = NULL;
    size_t tlen = 0;
    ctxd_error te = {0};
    int rc = in.get_text(in.text_arg, i, &text, &tlen, &te);
    FUZZ_CHECK(rc == 0, "get_text(%llu): %s", (unsigned long long)i, te.msg);
    FUZZ_CHECK(!text || utf8_valid(text, tlen, NULL),
               "document %llu: text is not valid UTF-8",
               (unsigned long long)i);
    FUZZ_CHECK(order_jsonl_line(r, i) >= 1, "document %llu has no line",
               (unsigned long long)i);
  }
  order_jsonl_free(r);
  return 0;
}
