// putstream_ack_server.cc - transport-ceiling baseline for
// tests/bench/putstream_ingest.py.
//
// Serves only ctxd.v1.Documents/PutStream (every other Documents method is
// UNIMPLEMENTED) with Debian's libgrpc++ 1.51 (synchronous API: one stream
// at a time is all the benchmark opens). It decodes every PutRequest into the
// generated C++ message, stores nothing, and acknowledges the ids in batches
// the way ctxd does by default: a PutAck after 1000 documents or 16 MiB of
// text, and one for the remainder when the client half-closes. The
// difference between ctxd and this server is therefore the cost of ctxd's
// real work (validation, chunking, token counting, LMDB commits), with the
// same client, the same messages and the same HTTP/2 transport.
//
// Usage: putstream_ack_server [HOST:PORT | --listen HOST:PORT]
// Prints "listening addr=HOST:PORT" on stderr, exits 0 on SIGTERM/SIGINT.
// Built by putstream_ingest.py (see build_ref() there for the commands).
#include <grpcpp/grpcpp.h>

#include <string>

#include "serve.h"

#include "ctxd/v1/documents.grpc.pb.h"

using ctxd::v1::Documents;
using ctxd::v1::PutAck;
using ctxd::v1::PutRequest;

namespace {

constexpr size_t kBatchDocs = 1000;
constexpr size_t kBatchBytes = 16u << 20;

class AckOnly final : public Documents::Service {
  grpc::Status PutStream(grpc::ServerContext *,
                         grpc::ServerReaderWriter<PutAck, PutRequest> *s) override {
    PutRequest req;
    PutAck ack;
    size_t bytes = 0;
    while (s->Read(&req)) {
      if (!req.has_document())
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "document: missing");
      bytes += req.document().text().size();
      ack.add_ids(req.document().id());
      if (static_cast<size_t>(ack.ids_size()) >= kBatchDocs || bytes >= kBatchBytes) {
        if (!s->Write(ack)) return grpc::Status(grpc::StatusCode::CANCELLED, "gone");
        ack.Clear();
        bytes = 0;
      }
    }
    if (ack.ids_size() > 0) s->Write(ack);
    return grpc::Status::OK;
  }
};

}  // namespace

int main(int argc, char **argv) {
  AckOnly svc;
  return serve_main(argc, argv, &svc, 64 << 20);
}
