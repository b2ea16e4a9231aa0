/* fixtures.h - request messages with every field set, shared by the wire
 * tests (their bytes) and the client tests (their round trip through the
 * test server). */
#ifndef CTXD_TEST_CLIENTS_FIXTURES_H
#define CTXD_TEST_CLIENTS_FIXTURES_H

#include "ctxd/v1/admin.pb-c.h"
#include "ctxd/v1/retrieval.pb-c.h"

/* A SearchRequest and the storage it points into. */
typedef struct search_fixture {
  Ctxd__V1__SearchRequest q;
  Ctxd__V1__MetadataFilter m;
  Ctxd__V1__MetadataFilter *mp[1];
  char *ids[2];
  float v[2];
} search_fixture;

/* text "q", vector {1, -2.5}, k 5, mode "hybrid", collection "c", doc ids
 * "a" and "b", metadata k=v, with_text, ef_search 64, nprobe 300. */
static inline void search_fixture_init(search_fixture *f) {
  Ctxd__V1__SearchRequest q = CTXD__V1__SEARCH_REQUEST__INIT;
  Ctxd__V1__MetadataFilter m = CTXD__V1__METADATA_FILTER__INIT;
  f->q = q;
  f->m = m;
  f->m.key = "k";
  f->m.value = "v";
  f->mp[0] = &f->m;
  f->ids[0] = "a";
  f->ids[1] = "b";
  f->v[0] = 1.0f;
  f->v[1] = -2.5f;
  f->q.text = "q";
  f->q.vector = f->v;
  f->q.n_vector = 2;
  f->q.k = 5;
  f->q.mode = "hybrid";
  f->q.collection = "c";
  f->q.doc_ids = f->ids;
  f->q.n_doc_ids = 2;
  f->q.metadata = f->mp;
  f->q.n_metadata = 1;
  f->q.with_text = 1;
  f->q.ef_search = 64;
  f->q.nprobe = 300;
}

/* name "n", embedder "hash", metric "l2", index "Flat", chunks of 200
 * tokens with 20 overlap. */
static inline void config_fixture_init(Ctxd__V1__CollectionConfig *c) {
  Ctxd__V1__CollectionConfig init = CTXD__V1__COLLECTION_CONFIG__INIT;
  *c = init;
  c->name = "n";
  c->embedder = "hash";
  c->metric = "l2";
  c->index_spec = "Flat";
  c->chunk_max_tokens = 200;
  c->chunk_overlap_tokens = 20;
}

#endif
