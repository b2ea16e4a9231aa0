/* models.h - the daemon's language model and tokenizer: what model.path and
 * tokenizer.path load at start-up and Admin.LoadModel replaces while the
 * daemon serves.
 *
 * Two slots: the model (a GGUF with weights, for XL3M and InfiniRetri) and
 * the tokenizer vocabulary (a vocabulary-only GGUF). With no model.path, a
 * third holds the built-in reference model (model.builtin): it serves model
 * selections while the model slot is empty, and nothing else - it never
 * counts tokens, `auto` does not pick InfiniRetri for it, the `model`
 * embedder does not use it, and models_info does not report it. The tokenizer in use -
 * the one the chunker counts with and the store records - is the model's
 * vocabulary when a model is loaded, else the tokenizer vocabulary's, else
 * the built-in estimator (tok.h).
 *
 * Swaps are atomic: a caller takes a reference (models_model, models_tok)
 * and drops it when its request ends, so a model being replaced stays alive
 * until the last request that started on it finishes (lm_model is
 * reference-counted). Every function may be called from any thread. */
#ifndef CTXD_MODELS_H
#define CTXD_MODELS_H

#include <stddef.h>
#include <stdint.h>

#include "../index/err.h"
#include "../index/model/lm.h"
#include "../index/store.h"
#include "../index/tok.h"

typedef struct models models;

typedef struct models_opts {
  const char *model_path;     /* "" or NULL: no model at start */
  const char *tokenizer_path; /* "" or NULL: no tokenizer vocabulary */
  const char *builtin_path;   /* the reference model, loaded only when
                               * model_path is empty; "" or NULL: none */
  uint32_t gpu_layers;        /* layers to offload (GPU builds) */
  uint32_t max_concurrent;    /* model selections at once, >= 1 */
} models_opts;

/* Load what the options name. Errors (the message names the option and the
 * file): those of lm_model_load - CTXD_ENOTFOUND (no such file), CTXD_EIO
 * (not a GGUF llama.cpp loads) - and CTXD_EINVAL (model.path names a
 * vocabulary-only GGUF, which has no weights), CTXD_ENOMEM. */
int models_open(const models_opts *o, models **out, ctxd_error *e);

/* Drop the slots' references (models still used elsewhere live on). NULL
 * is a no-op. */
void models_close(models *m);

/* The model with weights, one reference the caller drops with
 * lm_model_free(): the loaded model, else the built-in one; NULL when there
 * is neither. */
lm_model *models_model(models *m);

/* 1 when lm is the built-in reference model (see above), else 0. */
int models_is_builtin(models *m, const lm_model *lm);

/* The tokenizer in use (see above). *ref receives the reference that keeps
 * it alive (NULL for the estimator); drop it with lm_model_free() after the
 * last use of the tok. */
const tok *models_tok(models *m, lm_model **ref);

/* Load the GGUF at `path` and swap it into the model slot, or with
 * tokenizer_only (only its vocabulary is read) into the tokenizer slot.
 * path NULL or "" empties the slot instead. *info (may be NULL) receives
 * what was loaded (zeroed after an unload). Errors: those of models_open;
 * the slots are unchanged on error. */
int models_load(models *m, const char *path, int tokenizer_only,
                lm_info *info, ctxd_error *e);

/* Infos of the slots: 1 and *out filled when the slot holds a model, 0
 * when it is empty. */
int models_info(models *m, int tokenizer_slot, lm_info *out);

/* When the slot's model was loaded (CLOCK_REALTIME seconds) and how long
 * the load took (seconds); slot 0 model, 1 tokenizer, 2 the built-in
 * model. 1 when the slot holds a model, 0 when it is empty. */
int models_load_time(models *m, int slot, double *at, double *seconds);

/* Bound the model selections running at once: 0 and a slot taken, or
 * CTXD_ELIMIT (RESOURCE_EXHAUSTED: as many as max_concurrent run; the
 * message says so) without waiting: a waiting selection would hold a worker
 * thread that other calls need. Give the slot back with models_run_end(). */
int models_run_begin(models *m, ctxd_error *e);
void models_run_end(models *m);
uint32_t models_running(models *m);

/* Log one line per loaded slot (name, architecture, sizes, path). */
void models_log_loaded(models *m);

/* Compare the tokenizer in use with the one the store's meta record names:
 * *mismatch = 1 when they differ while documents are stored. With
 * `record`, a store that holds no documents (nothing was counted with the
 * old one) or records none gets the current name recorded instead. recorded (STORE's 64 bytes, may be NULL)
 * receives the store's name after the call. Errors: those of
 * store_stats_get and store_set_tokenizer. */
int models_check_store(models *m, store *st, int record, int *mismatch,
                       char recorded[64], ctxd_error *e);

/* ---- The `model` collection embedder ------------------------------------
 * A collection made with embedder "model" records the loaded model's
 * identity (embed.h's text form); its puts and query embeddings go through
 * one lm_embedder per loaded model and options (max_tokens, pooling),
 * created on first use and dropped when the model is swapped out (calls
 * holding one finish on it). Its context pool has MODELS_EMBED_CTX
 * contexts (fewer on machines of fewer than 8 cores), each with
 * cores / contexts threads. */
#define MODELS_EMBED_CTX 4

/* The canonical text of the embedder a client asked for ("model", or
 * "model:" with max_tokens and/or pooling) over the loaded model:
 * name, dim (n_embd) and hash filled, max_tokens defaulted to
 * min(n_ctx_train, 512) and bounded by n_ctx_train. out needs 256 bytes.
 * Errors: CTXD_EPRECOND (no model with weights is loaded; the message says
 * how to load one), CTXD_EINVAL (bad options, max_tokens over the model's
 * training context). */
int models_embedder_text(models *m, const char *req, char *out, size_t cap,
                         ctxd_error *e);

/* coll_opts.model_acquire / model_release (arg = the models): lend the
 * embedder for a collection's "model:..." text. Errors: CTXD_EPRECOND (no
 * model loaded, or the loaded one is not the collection's: the message
 * names both), CTXD_EINVAL (a text that does not parse), and those of
 * lm_embedder_create (CTXD_ENOMEM, CTXD_EIO). */
int models_embedder_acquire(void *arg, const char *text, const embedder **emb,
                            void **hold, ctxd_error *e);
void models_embedder_release(void *arg, void *hold);

#endif
