/* handlers.h - every method the daemon serves. methods.c puts these in the
 * method table; a path not in the table is answered UNIMPLEMENTED by the
 * transport.
 *
 * Owners: handlers_documents.c (Documents), handlers_retrieval.c
 * (Retrieval's Search and SearchBatch), handlers_select.c (Retrieval's
 * SelectContext and SelectContextStream), handlers_admin.c (Admin), handlers_health.c
 * (grpc.health.v1.Health), handlers_reflection.c (v1 and v1alpha server
 * reflection), handlers_corpus.c (Corpus: jobs, see jobs.h). */
#ifndef CTXD_HANDLERS_H
#define CTXD_HANDLERS_H

#include "rpc.h"

/* /ctxd.v1.Documents/... */
extern const rpc_method h_documents_put;        /* unary */
extern const rpc_method h_documents_put_stream; /* bidi */
extern const rpc_method h_documents_get;        /* unary */
extern const rpc_method h_documents_delete;     /* unary */
extern const rpc_method h_documents_list;       /* unary */
extern const rpc_method h_documents_chunk;      /* unary */
/* /ctxd.v1.Retrieval/... */
extern const rpc_method h_retrieval_search;       /* unary */
extern const rpc_method h_retrieval_search_batch; /* unary */
extern const rpc_method h_retrieval_select;        /* unary */
extern const rpc_method h_retrieval_select_stream; /* server stream */
/* /ctxd.v1.Admin/... */
extern const rpc_method h_admin_stats;             /* unary */
extern const rpc_method h_admin_verify;            /* unary */
extern const rpc_method h_admin_create_collection; /* unary */
extern const rpc_method h_admin_drop_collection;   /* unary */
extern const rpc_method h_admin_list_collections;  /* unary */
extern const rpc_method h_admin_rebuild_index;     /* server stream */
extern const rpc_method h_admin_load_model;        /* unary */
extern const rpc_method h_admin_rechunk;           /* server stream */
extern const rpc_method h_admin_backup;            /* unary */
extern const rpc_method h_admin_compact;           /* unary */
/* /ctxd.v1.Corpus/... */
extern const rpc_method h_corpus_reorder;      /* server stream */
extern const rpc_method h_corpus_get_job;      /* unary */
extern const rpc_method h_corpus_watch_job;    /* server stream */
extern const rpc_method h_corpus_cancel_job;   /* unary */
extern const rpc_method h_corpus_list_jobs;    /* unary */
extern const rpc_method h_corpus_fetch_result; /* server stream */
/* /grpc.health.v1.Health/... */
extern const rpc_method h_health_check; /* unary */
extern const rpc_method h_health_watch; /* server stream */
/* /grpc.reflection.v1(alpha).ServerReflection/ServerReflectionInfo */
extern const rpc_method h_reflection_v1;      /* bidi */
extern const rpc_method h_reflection_v1alpha; /* bidi */

/* The method with this :path, or NULL. */
const rpc_method *methods_find(const char *path);

/* 1 if some method of the table belongs to service `name` (len bytes,
 * "ctxd.v1.Documents"); "" counts as the whole server. */
int methods_has_service(const char *name, size_t len);

/* Health: tell every Watch stream the serving status changed (reads
 * ctx->serving). When the server stops serving, the watches get
 * NOT_SERVING and then end with UNAVAILABLE. Any thread. */
void health_notify(void);

#endif
