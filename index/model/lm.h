/* lm.h - the language-model runtime: a thin layer over llama.cpp's C API.
 *
 * Loads a GGUF (weights, or only its vocabulary), tokenizes with byte
 * offsets, and runs the model on token sequences held in its KV cache to get
 * what segment selection needs: log-probabilities and entropies of chosen
 * positions, the attention rows of chosen positions over the context for one
 * layer, and pooled embeddings. It also offers the vocabulary as a `tok`
 * (exact token counts for the chunker) and the model as an `embedder`.
 *
 * Threads: an lm_model is immutable after lm_model_load and may be used from
 * any number of threads at once (info, tokenization, tok, creating
 * contexts). An lm_ctx is one decoding session (a KV cache and its token
 * sequences): one thread at a time, no locking inside; give each worker its
 * own. The `model` embedder is thread-safe (a pool of contexts).
 *
 * Ownership: lm_model is reference-counted. lm_model_free drops the caller's
 * reference; contexts and embedders hold their own, so a model stays alive
 * until the last of them is freed (the daemon can swap models while requests
 * finish on the old one). Every pointer an lm_ function returns into an
 * object stays valid as long as the object, unless its comment says
 * otherwise. All errors are reported as ctxd_err codes with a message that
 * names the call and, where llama.cpp gave one, its reason. */
#ifndef CTXD_LM_H
#define CTXD_LM_H

#include <stddef.h>
#include <stdint.h>

#include "embed.h"
#include "err.h"
#include "tok.h"

/* Limits, checked before anything is allocated. */
#define LM_TEXT_MAX ((size_t)1 << 30)  /* bytes one lm_tokenize call takes */
#define LM_SEQ_MAX 64                  /* sequences of one context */
#define LM_CTX_MAX (1u << 20)          /* tokens one sequence holds */
#define LM_BATCH_MAX 8192              /* tokens of one llama_decode call */
#define LM_OUT_MAX ((size_t)1 << 28)   /* floats of one result array (1 GiB) */
#define LM_CTX_DEFAULT 4096            /* n_ctx when the caller gives 0 (capped by the model's) */

typedef struct lm_model lm_model;
typedef struct lm_ctx lm_ctx;

/* ------------------------------------------------------------------ model */

typedef struct lm_model_opts {
  int vocab_only;   /* load only the vocabulary (tokenize, tok; no contexts). Default 0 */
  int use_mmap;     /* map the file instead of reading it. Default 1 */
  int n_gpu_layers; /* layers to offload where llama.cpp was built with a GPU
                     * backend; -1 = all. Default 0 */
} lm_model_opts;

void lm_model_defaults(lm_model_opts *o);

/* Load the GGUF at `path` (o NULL = defaults). *out holds one reference.
 * Errors: CTXD_EINVAL (path NULL or empty), CTXD_ENOTFOUND (no such file),
 * CTXD_EIO (not a GGUF llama.cpp can load, with its reason), CTXD_ENOMEM. */
int lm_model_load(const char *path, const lm_model_opts *o, lm_model **out,
                  ctxd_error *e);

/* Drop one reference (NULL is a no-op). */
void lm_model_free(lm_model *m);

/* Take one more reference (for a holder that hands the model to other
 * threads, e.g. the daemon's current model); returns m. NULL gives NULL. */
lm_model *lm_model_ref(lm_model *m);

typedef struct lm_info {
  char name[128];      /* general.name, else the file name */
  char arch[32];       /* general.architecture: "llama", "qwen2", ... */
  char tokenizer[96];  /* the tok name, see lm_model_tok */
  char path[512];      /* the file it was loaded from (cut if longer) */
  int vocab_only;
  uint32_t n_ctx_train;  /* training context length */
  uint32_t n_layer;
  uint32_t n_head;
  uint32_t n_head_kv;
  uint32_t n_embd;       /* model width; the embedder's dimension */
  uint32_t n_vocab;
  uint64_t n_params;     /* 0 for vocab_only */
  uint64_t size_bytes;   /* bytes of weights; 0 for vocab_only */
} lm_info;

/* Fill *out. Never fails. */
void lm_model_info(const lm_model *m, lm_info *out);

/* ----------------------------------------------------------- tokenization */

enum lm_tok_flags {
  LM_TOK_ADD_SPECIAL = 1,   /* add BOS/EOS where the model's vocabulary asks for them */
  LM_TOK_PARSE_SPECIAL = 2, /* text like "<|endoftext|>" becomes the special token
                             * (default: it is tokenized as plain text) */
  LM_TOK_NO_OFFSETS = 4,    /* leave start/end unset (faster) */
  LM_TOK_NO_CACHE = 8,      /* llama.cpp on the whole text, not through the
                             * piece cache (lmtok.h): the same tokens, slower;
                             * for tests and benchmarks */
};

/* A growable token array the caller owns and may reuse across calls. Token
 * i is id[i] and covers input bytes [start[i], end[i]). Ranges are in
 * order, never overlap, and together cover the input except where the
 * vocabulary drops bytes. An added special token (BOS) covers an empty range.
 * A token may end inside a UTF-8 character (byte-level vocabularies such as
 * GPT-2 split rare characters into byte tokens): a cut between tokens is on
 * a character boundary only where utf8 says so, which is the caller's check. */
typedef struct lm_tokens {
  int32_t *id;
  uint32_t *start, *end;
  size_t n, cap;
} lm_tokens;

/* Tokenize s[0..len) (any bytes; len 0 gives 0 tokens, or only the added
 * specials) into *t, replacing its contents. For GPT-2, Llama 3 and Qwen2
 * vocabularies without specials this goes through a cache of the tokens of
 * recent words (lmtok.h), 10x or more faster on prose, with the same result.
 * Errors: CTXD_EINVAL (len > LM_TEXT_MAX, or s NULL with len > 0),
 * CTXD_ENOMEM, CTXD_EUNIMPL (offsets asked of a vocabulary that rewrites the
 * text, e.g. BERT's lower-casing WordPiece: the message names the first token
 * that could not be placed; LM_TOK_NO_OFFSETS still works). */
int lm_tokenize(const lm_model *m, const char *s, size_t len, unsigned flags,
                lm_tokens *t, ctxd_error *e);

/* Free the arrays of *t and zero it (NULL is a no-op). */
void lm_tokens_free(lm_tokens *t);

/* The text of ids[0..n): special tokens rendered as their text, an SPM
 * vocabulary's added leading space removed, so that the text of
 * lm_tokenize(s) is s again for the byte-exact vocabularies. *out is
 * malloc'ed and NUL-terminated (free it); *len excludes the NUL.
 * Errors: CTXD_EINVAL (an id outside [0, n_vocab), n over LM_TEXT_MAX),
 * CTXD_ENOMEM. */
int lm_detokenize(const lm_model *m, const int32_t *ids, size_t n, char **out,
                  size_t *len, ctxd_error *e);

/* The model's vocabulary as a tok (tok.h), owned by the model. count() is
 * the number of tokens lm_tokenize gives with no flags: exact. Its name,
 * recorded in the store's meta record, is
 *   "gguf:<pre>/<n_vocab>/<hash>"   e.g. "gguf:gpt-2/50257/5f0c2a91"
 * with <pre> the GGUF's tokenizer.ggml.pre (else tokenizer.ggml.model) and
 * <hash> 32 bits of FNV-1a over every token's text and attributes and the
 * merges, so two GGUFs share a name only when they tokenize alike. Spans over LM_TEXT_MAX bytes
 * are counted in pieces cut before a newline, which can differ from the
 * whole by a token per piece. */
const tok *lm_model_tok(const lm_model *m);

/* ---------------------------------------------------------------- context */

enum lm_attn_path {
  LM_ATTN_AUTO = 0,    /* SOFTMAX with flash attention off, QK with it on */
  LM_ATTN_SOFTMAX = 1, /* copy llama.cpp's kq_soft_max-<layer> (needs flash attention off) */
  LM_ATTN_QK = 2,      /* record the layer's post-RoPE Q and K, compute the softmax here */
};

enum lm_pooling {
  LM_POOL_MODEL = 0, /* the GGUF's pooling; mean where it names none */
  LM_POOL_MEAN = 1,
  LM_POOL_CLS = 2,   /* first token */
  LM_POOL_LAST = 3,
};

typedef struct lm_ctx_opts {
  uint32_t n_ctx;    /* tokens each sequence can hold; 0 = min(n_ctx_train,
                      * LM_CTX_DEFAULT). llama.cpp rounds up to a multiple of 256 */
  uint32_t n_seq;    /* independent sequences 1..LM_SEQ_MAX, each with its own
                      * part of the cache. Default 1 */
  uint32_t n_batch;  /* tokens per llama_decode call (lm_eval splits larger
                      * requests); 0 = min(n_ctx, 512) */
  uint32_t n_ubatch; /* tokens per compute step; 0 = n_batch */
  int n_threads;     /* 0 = the CPUs this process may run on */
  int flash_attn;    /* 1 on, 0 off. Default 0 */
  int kv_f32;        /* keep K and V in float32 (default float16: half the memory) */
  int attn;          /* 1 = lm_eval_attn is available for layer attn_layer. Default 0 */
  int attn_layer;    /* negative counts from the end (-1 = last). Default -1 */
  int attn_path;     /* enum lm_attn_path. Default LM_ATTN_AUTO */
  int embeddings;    /* 1 = an embedding context: lm_embed only. Default 0 */
  int pooling;       /* enum lm_pooling, for embeddings. Default LM_POOL_MODEL */
} lm_ctx_opts;

void lm_ctx_defaults(lm_ctx_opts *o);

/* Create a decoding session on m (o NULL = defaults).
 * Errors: CTXD_EINVAL (a field out of range: n_seq, n_ctx over LM_CTX_MAX,
 * n_batch over LM_BATCH_MAX, attn_layer outside the model, attn_path SOFTMAX
 * with flash attention on), CTXD_EPRECOND (a vocabulary-only model),
 * CTXD_EUNIMPL (LM_ATTN_QK on a model with sliding-window attention, whose
 * mask this runtime does not reproduce), CTXD_ENOMEM, CTXD_EIO (llama.cpp
 * could not create the context: its reason). */
int lm_ctx_create(lm_model *m, const lm_ctx_opts *o, lm_ctx **out, ctxd_error *e);

void lm_ctx_free(lm_ctx *c);

/* The model a context runs (no new reference). */
const lm_model *lm_ctx_model(const lm_ctx *c);

/* Capacity of each sequence (n_ctx after llama.cpp's rounding), the number
 * of sequences, and the attention path in use (LM_ATTN_SOFTMAX or
 * LM_ATTN_QK; 0 without attn). */
uint32_t lm_ctx_n_ctx(const lm_ctx *c);
uint32_t lm_ctx_n_seq(const lm_ctx *c);
int lm_ctx_attn_path(const lm_ctx *c);

/* Called between compute steps; returning non-zero makes the running
 * lm_eval/lm_eval_attn/lm_embed fail with CTXD_ECANCELED (deadlines, client
 * cancellation). fn NULL removes it. */
void lm_ctx_set_abort(lm_ctx *c, int (*fn)(void *arg), void *arg);

typedef struct lm_stats {
  uint64_t tokens;    /* tokens decoded */
  uint64_t decodes;   /* llama_decode calls */
  uint64_t decode_us; /* wall time inside llama_decode */
} lm_stats;

/* Counters since creation (or the last reset). */
void lm_ctx_stats(const lm_ctx *c, lm_stats *out);
void lm_ctx_stats_reset(lm_ctx *c);

/* ---------------------------------------------------- sequences (KV cache)
 *
 * A sequence is a list of tokens at positions 0, 1, 2, ... whose keys and
 * values sit in the cache. Tokens are only ever appended (lm_eval) or cut
 * from the end (lm_seq_truncate), so a prefix computed once is reused as it
 * is: a causal model's state for a prefix does not depend on what follows.
 * The `cache + window + question` steps of InfiniRetri are then:
 *   keep = lm_seq_common_prefix(c, 0, ids, n);   ids = cache + window
 *   lm_seq_truncate(c, 0, keep);
 *   lm_eval(c, {seq 0, ids + keep, n - keep, no outputs});
 *   lm_eval_attn(c, 0, question, nq, 0, flags);
 * which decodes only what changed since the previous step. */

/* Tokens held by sequence seq, and their ids (valid until the next call that
 * changes the sequence). A seq out of range gives 0 / NULL. */
uint32_t lm_seq_len(const lm_ctx *c, uint32_t seq);
const int32_t *lm_seq_tokens(const lm_ctx *c, uint32_t seq);

/* Length of the common prefix of sequence seq and ids[0..n). */
uint32_t lm_seq_common_prefix(const lm_ctx *c, uint32_t seq, const int32_t *ids,
                              size_t n);

/* Keep the first n tokens of sequence seq (n >= its length: no change).
 * Errors: CTXD_EINVAL (seq out of range), CTXD_EIO (llama.cpp refused). */
int lm_seq_truncate(lm_ctx *c, uint32_t seq, uint32_t n, ctxd_error *e);

/* Empty every sequence. */
void lm_ctx_clear(lm_ctx *c);

/* ------------------------------------------------------------ evaluation */

/* One request of lm_eval: append ids[0..n) to sequence seq, and for the
 * appended tokens i in [out_from, n) report the model's next-token
 * distribution after token i (row r = i - out_from):
 *   logprob[r]  log P(target | tokens up to i), natural log. The target is
 *               target[r] when target is given; else ids[i+1], and for the
 *               last token `last_target` (negative: none, NaN reported).
 *   entropy[r]  entropy of that distribution, in nats.
 *   logits[r*n_vocab ...]  the raw logits.
 * Each output array is optional (NULL) and has n - out_from rows;
 * out_from >= n asks for nothing (the tokens only enter the cache). */
typedef struct lm_append {
  uint32_t seq;
  const int32_t *ids;
  uint32_t n;
  uint32_t out_from;
  const int32_t *target;
  int32_t last_target;
  float *logprob;
  float *entropy;
  float *logits;
} lm_append;

/* Run the requests (several may name different sequences: they are batched
 * together; two requests for one sequence append in order). Calls of any
 * size are split into llama_decode calls of n_batch tokens.
 * On failure every sequence is as it was before the call.
 * Errors: CTXD_EINVAL (seq out of range, an id outside the vocabulary, a
 * target outside it, logits rows over LM_OUT_MAX floats), CTXD_ELIMIT (a
 * sequence would exceed lm_ctx_n_ctx), CTXD_EPRECOND (an embedding context),
 * CTXD_ECANCELED (the abort callback), CTXD_ENOMEM, CTXD_EIO (llama.cpp
 * failed: its reason). */
int lm_eval(lm_ctx *c, const lm_append *req, size_t n_req, ctxd_error *e);

enum lm_attn_flags {
  LM_ATTN_SUM_HEADS = 1, /* one row per token: the sum over heads */
};

/* Append ids[0..n) to sequence seq and capture, for the appended tokens
 * [from, n), their attention probabilities over every position of the
 * sequence in layer attn_layer (lm_ctx_opts). Decode the context first and
 * the question here, so that only the question's rows are computed.
 * Results (lm_attn_rows) are rows x heads x cols floats, row r for appended
 * token from + r at position p = len_before + from + r, cols = the
 * sequence's length after the call; each head's row sums to 1 over columns
 * [0, p] and is 0 after p (causal). Query head h attends with key/value head
 * h / (n_head / n_head_kv), as llama.cpp groups them.
 * Errors: those of lm_eval, and CTXD_EPRECOND (the context was created
 * without attn), CTXD_ELIMIT (rows x heads x cols over LM_OUT_MAX),
 * CTXD_EINTERNAL (the captured tensors were not what this runtime expects:
 * a model architecture it does not support on this path). */
int lm_eval_attn(lm_ctx *c, uint32_t seq, const int32_t *ids, uint32_t n,
                 uint32_t from, unsigned flags, ctxd_error *e);

/* The rows of the last successful lm_eval_attn (owned by c, valid until the
 * next lm_eval_attn or lm_ctx_free): row-major [rows][heads][cols]. */
const float *lm_attn_rows(const lm_ctx *c, uint32_t *rows, uint32_t *heads,
                          uint32_t *cols);

/* Log-softmax helper, the one lm_eval uses: for logits[0..n_vocab), the
 * log-probability of each targets[i] into logprob[i] (n_targets of them; a
 * target outside [0, n_vocab) gives NaN), and the entropy in nats into
 * *entropy (entropy may be NULL). */
void lm_logprobs(const float *logits, uint32_t n_vocab, const int32_t *targets,
                 size_t n_targets, float *logprob, float *entropy);

/* ------------------------------------------------------------- embeddings */

/* Embed n token sequences (ids[i] of lens[i] tokens, at most lm_ctx_n_ctx
 * each) into out[n * n_embd], each row pooled as the context's pooling says
 * and L2-normalised; a sequence of 0 tokens gives a zero row. Uses and then
 * empties the context's sequences.
 * Errors: CTXD_EPRECOND (not an embedding context), CTXD_EINVAL (bad id),
 * CTXD_ELIMIT (a sequence longer than lm_ctx_n_ctx), CTXD_ECANCELED,
 * CTXD_ENOMEM, CTXD_EIO. */
int lm_embed(lm_ctx *c, const int32_t *const *ids, const uint32_t *lens, size_t n,
             float *out, ctxd_error *e);

typedef struct lm_embedder_opts {
  uint32_t max_tokens; /* per text; longer texts are cut (as sentence-transformers
                        * do). 0 = min(n_ctx_train, 512) */
  uint32_t n_ctx_max;  /* contexts in the pool = concurrent embeddings; 0 = 1 */
  int n_threads;       /* per context; 0 = the CPUs */
  int pooling;         /* enum lm_pooling; default LM_POOL_MODEL */
} lm_embedder_opts;

void lm_embedder_defaults(lm_embedder_opts *o);

/* The `model` embedder (embed.h) over m: texts are tokenized with the
 * model's specials (BOS where it asks), cut at max_tokens, embedded with
 * lm_embed. dim = n_embd. Thread-safe: a call takes a context from the pool
 * (creating it on first use, up to n_ctx_max) or waits for one.
 * Errors: CTXD_EINVAL (bad options), CTXD_EPRECOND (vocabulary-only model),
 * CTXD_ENOMEM; creating the first context happens here, so llama.cpp's
 * CTXD_EIO surfaces now rather than at the first embed. */
int lm_embedder_create(lm_model *m, const lm_embedder_opts *o, embedder **out,
                       ctxd_error *e);

#endif
