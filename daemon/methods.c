/* methods.c - the method table: every rpc_method of handlers.h, found by
 * :path. A path not listed here is answered UNIMPLEMENTED by the server. */
#include <string.h>

#include "handlers.h"

static const rpc_method *const methods[] = {
    &h_retrieval_search,
    &h_retrieval_search_batch,
    &h_retrieval_select,
    &h_retrieval_select_stream,
    &h_documents_put,
    &h_documents_put_stream,
    &h_documents_get,
    &h_documents_delete,
    &h_documents_list,
    &h_documents_chunk,
    &h_admin_stats,
    &h_admin_verify,
    &h_admin_create_collection,
    &h_admin_drop_collection,
    &h_admin_list_collections,
    &h_admin_rebuild_index,
    &h_admin_load_model,
    &h_admin_rechunk,
    &h_admin_backup,
    &h_admin_compact,
    &h_corpus_reorder,
    &h_corpus_get_job,
    &h_corpus_watch_job,
    &h_corpus_cancel_job,
    &h_corpus_list_jobs,
    &h_corpus_fetch_result,
    &h_health_check,
    &h_health_watch,
    &h_reflection_v1,
    &h_reflection_v1alpha,
};

#define N_METHODS (sizeof methods / sizeof methods[0])

const rpc_method *methods_find(const char *path) {
  for (size_t i = 0; i < N_METHODS; i++)
    if (strcmp(methods[i]->path, path) == 0) return methods[i];
  return NULL;
}

int methods_has_service(const char *name, size_t len) {
  if (len == 0) return 1;
  /* `name` comes from the client and may hold NUL bytes: compare lengths
   * first so the path is never read past its end. */
  for (size_t i = 0; i < N_METHODS; i++) {
    const char *p = methods[i]->path;
    size_t pl = strlen(p + 1);
    if (len < pl && memcmp(p + 1, name, len) == 0 && p[1 + len] == '/')
      return 1;
  }
  return 0;
}
