/* select.h - key-context selection: the segments of a long text that matter
 * for a question, under a token budget, returned in their original order.
 *
 * Methods (select_method): XL3M (the model's certainty on the question after
 * each segment), InfiniRetri (the model's own attention, streamed window by
 * window with a sentence cache), BM25 and embeddings (no model needed).
 * `auto` is InfiniRetri when the caller passes a model it was told to use
 * for auto (the operator configured model.path), BM25 otherwise.
 *
 * Threads: select_run is reentrant; every call creates the lm contexts it
 * needs from the shared lm_model (immutable) and frees them before it
 * returns, so concurrent calls share nothing but the model. Memory of one
 * call is bounded by the window, the cache and the batch, plus the input's
 * sentence table (O(sentences)), never by a model pass over the whole input.
 *
 * Ownership: select_result is filled by select_run and freed with
 * select_result_free. Errors are ctxd_err codes with a message. */
#ifndef CTXD_SELECT_H
#define CTXD_SELECT_H

#include <stddef.h>
#include <stdint.h>

#include "embed.h"
#include "err.h"
#include "tok.h"

typedef struct lm_model lm_model;

/* Limits, checked before allocating. */
#define SELECT_TEXT_MAX ((size_t)1 << 30)   /* bytes of input */
#define SELECT_QUESTION_MAX 16384           /* bytes of question */
#define SELECT_BUDGET_MAX 1000000           /* tokens of budget, and of segment_tokens */
#define SELECT_WINDOW_MAX 262144            /* window_tokens, top_k, cache_max_tokens */
#define SELECT_TAIL_MAX 65536               /* question_tail */
#define SELECT_FILTER_MAX 1024              /* filter_width */

enum select_method {
  SELECT_AUTO = 0,
  SELECT_XL3M = 1,
  SELECT_INFINIRETRI = 2,
  SELECT_BM25 = 3,
  SELECT_EMBEDDING = 4,
};

/* "auto", "xl3m", "infiniretri", "bm25", "embedding" <-> enum; parse gives
 * -1 for an unknown name (the empty string is "auto"). */
const char *select_method_name(int m);
int select_method_parse(const char *s);

enum select_xl3m_score {
  SELECT_XL3M_ENTROPY = 0, /* mean entropy of the question tokens (lower = more certain) */
  SELECT_XL3M_LOGPROB = 1, /* mean log-probability of the question tokens (higher = better) */
};

/* Progress of a long call: `done` of `total` in the current phase:
 * "segment" (bytes of the input cut into sentences and counted), "score"
 * (XL3M, BM25, embedding: segments scored), "window" (InfiniRetri: input
 * tokens read), "select" (once at the end, input tokens). Returning
 * non-zero cancels the call (CTXD_ECANCELED). Called from the calling
 * thread, at most every 200 ms plus once at the end of a phase; a running
 * llama_decode stops at its next compute step. */
typedef int (*select_progress_fn)(void *arg, const char *phase, uint64_t done,
                                  uint64_t total);

/* Units. Every method works on units: the sentences of the input by the
 * chunker's rules (chunk_sentences: a sentence starts after . ! ? or a CJK
 * full stop and whitespace, unless a lowercase ASCII letter follows; a
 * paragraph break starts one too), a sentence longer than the method's unit
 * cap cut again (at a word start where there is one, never inside a UTF-8
 * character). The cap is min(segment_tokens, token_budget) for the segment
 * methods, min(window_tokens, cache_max_tokens, token_budget) for
 * InfiniRetri. A unit runs from its first character to the next unit (the
 * whitespace after a sentence is its own). Token counts: for XL3M and
 * InfiniRetri the model's tokens of the input tokenized once in pieces of
 * about 64 KiB cut at sentence starts (unit boundaries move onto a token
 * boundary that is also a character boundary); otherwise env->tk (the
 * model's vocabulary where env->model is set) counts each sentence. */
typedef struct select_opts {
  int method;               /* enum select_method. Default SELECT_AUTO */
  uint32_t token_budget;    /* tokens of the returned context; 0 = 1024 */

  /* Segments (XL3M, BM25, embedding): runs of whole units of at most
   * segment_tokens (and of token_budget; XL3M: and of the model's context
   * less the question), the next segment starting at the earliest unit
   * whose run to the previous segment's end holds at most segment_overlap
   * tokens. */
  uint32_t segment_tokens;  /* 0 = 256; at most SELECT_BUDGET_MAX */
  uint32_t segment_overlap; /* < segment_tokens. Default 0 */

  /* XL3M: each sequence is [BOS where the vocabulary adds one] + segment +
   * question; the score is over the distributions that predict each
   * question token (the question's last token is never fed). */
  uint32_t question_tail;   /* with no question: its last N context tokens are
                             * the question and are not selectable. 0 = 64 */
  int xl3m_score;           /* enum select_xl3m_score. Default ENTROPY */
  uint32_t xl3m_batch;      /* segments scored per lm_eval call (sequences
                             * of one context, in llama_decode calls of up to
                             * LM_BATCH_MAX tokens). 0 = 8; at most LM_SEQ_MAX */

  /* InfiniRetri. Each step runs [BOS] + cache + window + question in one
   * sequence; BOS + cache + window + question must fit the model's training
   * context (else CTXD_EINVAL). A token's score is
   *   sum over question tokens r of  q_r * (1/w) * sum of a_r[t], t in
   *   [j - w/2, j - w/2 + w) within the context columns,
   * a_r the attention of question token r (attn_layer, summed over heads),
   * q_r = the sum of a_r over the question's columns (1 without
   * question_weights). The first position (BOS, else the attention sink)
   * is never picked. Units holding a top_k token form the next cache (in
   * input order); a unit's score accumulates, step after step, the scores
   * of its top tokens; over cache_max_tokens the best-scored units stay.
   * The last cache, best scores first, fills the budget. */
  uint32_t window_tokens;   /* whole units per step, at most this. 0 = 1024 */
  uint32_t top_k;           /* tokens kept per step. 0 = 300 */
  uint32_t filter_width;    /* box filter width along each row. 0 = 8; 1 = none */
  int attn_layer;           /* negative counts from the end. Default -1 */
  int question_weights;     /* weight each question row by that token's
                             * attention to the question. Default 1 */
  uint32_t cache_max_tokens;/* cap of the sentence cache. 0 = max(budget, 2 x top_k) */

  /* Work limit: more input tokens than this is CTXD_ELIMIT, found while
   * the input is cut into units (before any method or model runs, and as
   * soon as the count passes the limit). 0 = none. max_input_what names the
   * limit in the message (the daemon's option); NULL: "max_input_tokens". */
  uint64_t max_input_tokens;
  const char *max_input_what;

  /* Model contexts */
  int n_threads;            /* per context; 0 = the CPUs */
  int flash_attn;           /* 1: flash attention on (QK attention path). Default 0 */

  select_progress_fn progress;
  void *progress_arg;
} select_opts;

/* Fill *o with the defaults above (a zeroed struct is the same except
 * question_weights, which select_defaults turns on). */
void select_defaults(select_opts *o);

/* What select_run works with. env->model may be shared by concurrent
 * calls; env->tk NULL with no model means the built-in estimator. */
typedef struct select_env {
  lm_model *model;      /* NULL: no model; XL3M/InfiniRetri are CTXD_EPRECOND */
  int auto_model;       /* 1: auto means InfiniRetri (model configured by the
                         * operator); 0: auto means BM25 */
  const tok *tk;        /* counts tokens for budgets when model is NULL (the
                         * daemon's tokenizer); with a model, its vocabulary */
  const embedder *emb;  /* for SELECT_EMBEDDING; NULL: CTXD_EPRECOND */
  double bm25_k1, bm25_b; /* 0,0 = 1.2, 0.75 */
} select_env;

typedef struct select_seg {
  uint64_t start, end;  /* byte range of the input */
  uint32_t tokens;
  float score;          /* method's score, higher = more relevant (XL3M
                         * entropy is negated; InfiniRetri: the accumulated
                         * attention score; BM25; cosine). A merged run takes
                         * its best pick's score; the whole-input answer 0 */
} select_seg;

typedef struct select_stats {
  uint64_t input_tokens;   /* tokens of the input */
  uint64_t segments;       /* segments (or sentences for InfiniRetri) scored */
  uint64_t model_tokens;   /* tokens fed to the model (sum over its decodes) */
  uint64_t model_decodes;  /* llama_decode calls */
  uint64_t model_outputs;  /* positions whose logits the model computed (XL3M) */
  uint64_t model_us;       /* wall time inside llama_decode */
  uint64_t windows;        /* InfiniRetri steps */
  uint64_t max_seq_tokens; /* the longest sequence the model held: bounded by
                            * the options, never by the input's length */
} select_stats;

typedef struct select_result {
  int method;            /* the method that ran (auto resolved) */
  select_seg *segs;      /* kept segments in input order; ranges never overlap
                          * (touching/overlapping picks are merged) */
  size_t n_segs;
  char *context;         /* the kept text in order, non-adjacent segments
                          * joined by "\n"; NUL-terminated */
  size_t context_len;
  uint32_t tokens;       /* sum of segs[].tokens, <= token_budget */
  select_stats stats;
} select_result;

/* Select from text[0..len) for question (may be empty: XL3M then uses the
 * tail; InfiniRetri and BM25/embedding need a question: CTXD_EINVAL).
 * The pick: candidates best score first (ties: earlier first), each kept
 * when its units not yet kept fit what is left of the budget (so a
 * candidate too large is skipped and smaller ones still fill the budget);
 * runs of consecutive kept units become one segment.
 * Segment boundaries never split a UTF-8 character. The whole input fits
 * the budget: it is returned as one segment without running the method.
 * Availability and the question are checked before that shortcut.
 * On failure *out is empty (nothing to free).
 * Errors: CTXD_ELIMIT (more input tokens than max_input_tokens),
 * CTXD_EINVAL (bad options, len/question over the limits, empty
 * question where required, invalid UTF-8 named by its offset, bm25 k1 < 0
 * or b outside [0, 1], a question or window + cache too long for the
 * model's context), CTXD_EPRECOND (the method needs a model or embedder
 * that env lacks, or the model is a vocabulary only: the message says how
 * to load one), CTXD_ECANCELED (progress returned non-zero), CTXD_ENOMEM,
 * and the lm_ errors of the model. */
int select_run(const select_env *env, const char *text, size_t len,
               const char *question, size_t qlen, const select_opts *o,
               select_result *out, ctxd_error *e);

void select_result_free(select_result *r);

#endif
