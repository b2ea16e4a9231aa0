/* rpc_pb.c - rpc_send_pb(): the one place handlers turn a protobuf-c message
 * into response bytes (small messages are packed on the stack, since
 * rpc_send() copies them anyway); rpc_finish_error(): the one place an
 * index/ error becomes a gRPC status. */
#include <protobuf-c/protobuf-c.h>
#include <stdlib.h>

#include "err.h"
#include "rpc.h"

void rpc_finish_error(rpc_call *c, const ctxd_error *e) {
  rpc_finish(c, ctxd_err_grpc_status(e->code), "%s", e->msg);
}

int rpc_send_pb(rpc_call *c, const ProtobufCMessage *m) {
  uint8_t small[4096];
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *buf = n <= sizeof small ? small : malloc(n);
  if (!buf) {
    rpc_finish(c, GRPC_RESOURCE_EXHAUSTED, "out of memory packing a response");
    return -1;
  }
  protobuf_c_message_pack(m, buf);
  int rc = rpc_send(c, buf, n);
  if (buf != small) free(buf);
  return rc;
}
