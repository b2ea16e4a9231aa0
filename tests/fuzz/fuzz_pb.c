/* fuzz_pb.c - protobuf decoding of every request message the daemon takes
 * (ctxd.v1, grpc.health.v1, both server reflection versions). The first
 * byte picks the message type, the rest is the encoded message.
 *
 * protobuf-c's unpack has no limits of its own (DESIGN.md), so this checks
 * what the handlers rely on: unpack never reads out of bounds or leaks, and
 * what it accepts is a well-formed message (protobuf_c_message_check) that
 * packs to its announced size and re-encodes stably (pack, unpack, pack
 * gives the same bytes).
 *
 * protobuf-c 1.4.1 accepts an overlong tag whose field number is 0
 * ("\x80\x00") and keeps it as an unknown field, which then packs as a
 * tag its unpack refuses. The handlers ignore unknown fields, so this is
 * harmless to ctxd; the re-encoding checks run on messages without
 * unknown fields (anywhere inside). */
#include <protobuf-c/protobuf-c.h>
#include <string.h>

#include "ctxd/v1/admin.pb-c.h"
#include "ctxd/v1/corpus.pb-c.h"
#include "ctxd/v1/documents.pb-c.h"
#include "ctxd/v1/retrieval.pb-c.h"
#include "fuzz_common.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"

static const ProtobufCMessageDescriptor *const requests[] = {
    /* ctxd.v1.Documents */
    &ctxd__v1__put_request__descriptor,
    &ctxd__v1__get_request__descriptor,
    &ctxd__v1__delete_request__descriptor,
    &ctxd__v1__list_request__descriptor,
    &ctxd__v1__chunk_request__descriptor,
    /* ctxd.v1.Retrieval */
    &ctxd__v1__search_request__descriptor,
    &ctxd__v1__search_batch_request__descriptor,
    &ctxd__v1__select_context_request__descriptor,
    /* ctxd.v1.Admin */
    &ctxd__v1__stats_request__descriptor,
    &ctxd__v1__verify_request__descriptor,
    &ctxd__v1__create_collection_request__descriptor,
    &ctxd__v1__drop_collection_request__descriptor,
    &ctxd__v1__list_collections_request__descriptor,
    &ctxd__v1__rebuild_index_request__descriptor,
    &ctxd__v1__load_model_request__descriptor,
    &ctxd__v1__rechunk_request__descriptor,
    /* ctxd.v1.Corpus */
    &ctxd__v1__reorder_request__descriptor,
    &ctxd__v1__get_job_request__descriptor,
    &ctxd__v1__cancel_job_request__descriptor,
    &ctxd__v1__list_jobs_request__descriptor,
    &ctxd__v1__fetch_result_request__descriptor,
    /* grpc.health.v1.Health, server reflection v1 and v1alpha */
    &grpc__health__v1__health_check_request__descriptor,
    &grpc__reflection__v1__server_reflection_request__descriptor,
    &grpc__reflection__v1alpha__server_reflection_request__descriptor,
};
#define N_REQUESTS (sizeof requests / sizeof requests[0])

static uint8_t *pack(const ProtobufCMessage *m, size_t *n) {
  *n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = malloc(*n ? *n : 1);
  FUZZ_CHECK(buf != NULL, "out of memory");
  size_t w = protobuf_c_message_pack(m, buf);
  FUZZ_CHECK(w == *n, "%s: packed %zu bytes, announced %zu",
             m->descriptor->name, w, *n);
  return buf;
}

/* 1 if m or a message inside it kept unknown fields. */
static int has_unknown(const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  const char *base = (const char *)m;
  if (m->n_unknown_fields) return 1;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(const size_t *)(base + f->quantifier_offset);
      ProtobufCMessage *const *v =
          *(ProtobufCMessage *const *const *)(base + f->offset);
      for (size_t j = 0; j < n; j++)
        if (has_unknown(v[j])) return 1;
      continue;
    }
    if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
        *(const uint32_t *)(base + f->quantifier_offset) != f->id)
      continue;
    const ProtobufCMessage *sub =
        *(const ProtobufCMessage *const *)(base + f->offset);
    if (sub && has_unknown(sub)) return 1;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  const ProtobufCMessageDescriptor *d = requests[data[0] % N_REQUESTS];
  ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, size - 1, data + 1);
  if (!m) return 0;
  FUZZ_CHECK(protobuf_c_message_check(m), "%s: unpacked message fails check",
             d->name);
  size_t n1, n2, n3;
  uint8_t *p1 = pack(m, &n1);
  if (has_unknown(m)) {
    free(p1);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
  }
  ProtobufCMessage *m2 = protobuf_c_message_unpack(d, NULL, n1, p1);
  FUZZ_CHECK(m2 != NULL, "%s: its own encoding (%zu bytes) does not unpack",
             d->name, n1);
  uint8_t *p2 = pack(m2, &n2);
  ProtobufCMessage *m3 = protobuf_c_message_unpack(d, NULL, n2, p2);
  FUZZ_CHECK(m3 != NULL, "%s: re-encoding does not unpack", d->name);
  uint8_t *p3 = pack(m3, &n3);
  FUZZ_CHECK(n2 == n3 && memcmp(p2, p3, n2) == 0,
             "%s: encoding not stable (%zu vs %zu bytes)", d->name, n2, n3);
  free(p1);
  free(p2);
  free(p3);
  protobuf_c_message_free_unpacked(m, NULL);
  protobuf_c_message_free_unpacked(m2, NULL);
  protobuf_c_message_free_unpacked(m3, NULL);
  return 0;
}
