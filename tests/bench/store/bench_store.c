/* bench_store.c - ingest throughput of store_put() alone (LMDB records,
 * chunk records, BM25 postings) on prose, next to the cost of tokenizing
 * the same chunks with lex_terms(), the part of store_put that runs before
 * the write transaction. Documents are cut from the corpus at paragraph
 * breaks and chunked (512 tokens) before the clock starts.
 *
 * usage: bench_store CORPUS [total_MB] [doc_KB] [batch] [sync] [dir]
 *   total_MB  bytes to ingest (the corpus is repeated as needed), default 100
 *   doc_KB    document size, default 16
 *   batch     documents per store_put call, default 16
 *   sync      1: fsync every commit (the daemon's setting), default 0
 *   dir       where the store goes (default a new directory under /tmp) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../benchfile.h"
#include "chunk.h"
#include "lex.h"
#include "store.h"

typedef struct bdoc {
  const char *text;
  size_t len;
  chunk_span *chunks;
  size_t n_chunks;
  char id[24];
} bdoc;

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr,
            "usage: %s CORPUS [total_MB] [doc_KB] [batch] [sync] [dir]\n",
            argv[0]);
    return 2;
  }
  size_t total = (size_t)(argc > 2 ? atof(argv[2]) : 100) * 1024 * 1024;
  size_t doc_bytes = (size_t)(argc > 3 ? atof(argv[3]) : 16) * 1024;
  size_t batch = argc > 4 ? (size_t)atoi(argv[4]) : 16;
  int sync = argc > 5 ? atoi(argv[5]) : 0;
  char dir[256];
  if (argc > 6) {
    snprintf(dir, sizeof dir, "%s", argv[6]);
  } else {
    snprintf(dir, sizeof dir, "/tmp/ctxd-bench-store-XXXXXX");
    if (!mkdtemp(dir)) return 1;
  }
  size_t clen;
  char *corpus = slurp(argv[1], &clen);
  if (!corpus || clen < 2) {
    fprintf(stderr, "cannot read %s\n", argv[1]);
    return 1;
  }

  /* Cut documents at paragraph breaks, repeating the corpus. */
  size_t cap = total / doc_bytes + 16, n = 0, bytes = 0, pos = 0;
  bdoc *docs = calloc(cap, sizeof *docs);
  chunk_opts co = {512, 0, 0};
  while (bytes < total && n < cap) {
    if (pos >= clen) pos = 0;
    size_t end = pos + doc_bytes < clen ? pos + doc_bytes : clen;
    const char *br = end < clen ? strstr(corpus + end, "\n\n") : NULL;
    end = br ? (size_t)(br - corpus) + 2 : clen;
    bdoc *d = &docs[n];
    d->text = corpus + pos;
    d->len = end - pos;
    snprintf(d->id, sizeof d->id, "d%08zu", n);
    ctxd_error e;
    if (chunk_text(d->text, d->len, &co, tok_estimator(), &d->chunks,
                   &d->n_chunks, &e)) {
      fprintf(stderr, "chunk: %s\n", e.msg);
      return 1;
    }
    bytes += d->len;
    pos = end;
    n++;
  }
  size_t n_chunks = 0;
  for (size_t i = 0; i < n; i++) n_chunks += docs[i].n_chunks;

  /* Baseline: lex_terms over every chunk, the tokenizing part alone. */
  double t0 = now();
  uint64_t postings = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < docs[i].n_chunks; j++) {
      lex_tf *tfs;
      size_t nt;
      uint32_t len;
      const chunk_span *c = &docs[i].chunks[j];
      lex_terms(docs[i].text + c->byte_start,
                (size_t)(c->byte_end - c->byte_start), &tfs, &nt, &len, NULL);
      postings += nt;
      free(tfs);
    }
  double t_lex = now() - t0;

  store *s;
  ctxd_error e;
  store_opts so = {0, 0, 0, !sync};
  uint32_t cid;
  if (store_open(dir, &so, &s, &e) ||
      store_coll_create(s, "bench", "", 0, &cid, &e)) {
    fprintf(stderr, "store: %s\n", e.msg);
    return 1;
  }
  store_put_doc *pd = calloc(batch, sizeof *pd);
  t0 = now();
  for (size_t i = 0; i < n; i += batch) {
    size_t m = n - i < batch ? n - i : batch;
    for (size_t k = 0; k < m; k++) {
      bdoc *d = &docs[i + k];
      pd[k] = (store_put_doc){.cid = cid,
                              .id = d->id,
                              .id_len = strlen(d->id),
                              .text = d->text,
                              .text_len = d->len,
                              .chunks = d->chunks,
                              .n_chunks = d->n_chunks};
    }
    if (store_put(s, pd, m, NULL, &e)) {
      fprintf(stderr, "store_put: %s\n", e.msg);
      return 1;
    }
  }
  double t_put = now() - t0;
  store_stats st;
  store_stats_get(s, &st, &e);
  store_close(s);

  double mb = (double)bytes / (1024 * 1024);
  printf(
      "input\t%.1f MB\t%zu documents of ~%zu KB\t%zu chunks\t%llu "
      "postings\tbatch %zu\t%s\n",
      mb, n, doc_bytes / 1024, n_chunks, (unsigned long long)postings, batch,
      sync ? "fsync per commit" : "no fsync");
  printf("lex_terms only\t%.2f s\t%.1f MB/s\n", t_lex, mb / t_lex);
  printf("store_put\t%.2f s\t%.1f MB/s\t%.0f postings/s\n", t_put, mb / t_put,
         (double)postings / t_put);
  printf("data.mdb\t%.1f MB (%.2f x input)\n",
         (double)st.file_bytes / (1024 * 1024),
         (double)st.file_bytes / (double)bytes);
  if (argc <= 6) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  }
  for (size_t i = 0; i < n; i++) free(docs[i].chunks);
  free(docs);
  free(pd);
  free(corpus);
  return 0;
}
