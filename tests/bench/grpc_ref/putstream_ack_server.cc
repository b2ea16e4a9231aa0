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

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <unistd.h>

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

int g_sigpipe[2];

void on_signal(int) {
  char c = 1;
  ssize_t n = write(g_sigpipe[1], &c, 1);
  (void)n;
}

}  // namespace

int main(int argc, char **argv) {
  std::string addr = "127.0.0.1:0";
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
      addr = argv[++i];
    else if (argv[i][0] != '-')
      addr = argv[i];
    else if (i + 1 < argc && argv[i + 1][0] != '-')
      i++;  // skip the value of an option we don't know (stand-in for ctxd)
  }
  AckOnly svc;
  int port = 0;
  grpc::ServerBuilder b;
  b.AddListeningPort(addr, grpc::InsecureServerCredentials(), &port);
  b.SetMaxReceiveMessageSize(64 << 20);
  b.RegisterService(&svc);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "error msg=\"cannot listen\" addr=%s\n", addr.c_str());
    return 1;
  }
  std::string host = addr.substr(0, addr.rfind(':'));
  std::fprintf(stderr, "info listening addr=%s:%d\n", host.c_str(), port);
  std::fflush(stderr);

  if (pipe(g_sigpipe) != 0) return 1;
  std::signal(SIGTERM, on_signal);
  std::signal(SIGINT, on_signal);
  std::thread waiter([&] {
    char c;
    while (read(g_sigpipe[0], &c, 1) < 0) {
    }
    server->Shutdown();
  });
  server->Wait();
  waiter.join();
  return 0;
}
