/* chunk.h - the chunker: cuts a document into segments of at most max_tokens.
 *
 * Cuts fall at paragraph boundaries first, then sentence boundaries, then
 * word boundaries, and only inside a long word as a last resort - never
 * inside a UTF-8 sequence. With overlap_tokens > 0 a chunk starts up to that
 * many tokens before the previous chunk's end (at a word boundary).
 * The chunks cover the whole text in order; each records its byte range and
 * its token count under the given tokenizer. */
#ifndef CTXD_CHUNK_H
#define CTXD_CHUNK_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"
#include "tok.h"

#define CHUNK_DEFAULT_MAX_TOKENS 512
#define CHUNK_MAX_MAX_TOKENS 1000000

typedef struct chunk_opts {
  uint32_t max_tokens;     /* 1..CHUNK_MAX_MAX_TOKENS */
  uint32_t overlap_tokens; /* < max_tokens */
  size_t max_chunks;       /* 0: no limit; else more chunks is CTXD_ELIMIT */
} chunk_opts;

typedef struct chunk_span {
  uint64_t byte_start;
  uint64_t byte_end; /* exclusive */
  uint32_t tokens;
} chunk_span;

/* Chunk text[0..len) (must be valid UTF-8; not re-checked). On success
 * *out is a malloc'd array of *n spans the caller frees with free();
 * an empty text gives zero chunks and *out == NULL.
 * Errors: CTXD_EINVAL (bad options), CTXD_ELIMIT (the text would make more
 * than o->max_chunks chunks: a server bounds the memory one document can
 * take this way), CTXD_ENOMEM. */
int chunk_text(const char *text, size_t len, const chunk_opts *o,
               const tok *tk, chunk_span **out, size_t *n, ctxd_error *e);

/* The sentence starts of text[0..len) by the chunker's rules (boundaries of
 * level sentence or paragraph, see chunk.c), in order, each passed to
 * fn(arg, byte offset); offset 0 is never one. The text must be valid
 * UTF-8. fn returns non-zero to stop the scan; chunk_sentences returns that
 * value, else 0. Segment selection (select.h) cuts its input with this. */
int chunk_sentences(const char *text, size_t len,
                    int (*fn)(void *arg, size_t pos), void *arg);

#endif
