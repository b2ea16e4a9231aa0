/* rpc_pb.c - rpc_send_pb(): the one place handlers turn a protobuf-c message
 * into response bytes. Small messages are packed on the stack, since
 * rpc_send() copies them anyway. */
#include <protobuf-c/protobuf-c.h>
#include <stdlib.h>

#include "err.h"
#include "rpc.h"

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
