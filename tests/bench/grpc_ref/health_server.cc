// health_server.cc - reference gRPC C++ server for tests/bench/grpc_health.sh.
//
// A minimal grpc.health.v1.Health server on Debian's libgrpc++ 1.51 using the
// callback API (Health::CallbackService, ServerUnaryReactor). Check answers
// SERVING for "" and "ctxd.v1.Documents", NOT_FOUND otherwise. It exists only
// so that the benchmark has a yardstick from the same machine and the same
// run: the same h2load command is pointed at this server and at ctxd.
//
// Usage: health_server [HOST:PORT | --listen HOST:PORT]   (default 127.0.0.1:0;
// other --options and their values are ignored, so the benchmark scripts can
// be dry-run with this server standing in for ctxd)
// Prints "listening addr=HOST:PORT" on stderr once it serves, like ctxd, and
// shuts down cleanly on SIGTERM/SIGINT.
//
// Build (grpc_health.sh does this):
//   protoc -I proto --cpp_out=OUT --grpc_out=OUT \
//     --plugin=protoc-gen-grpc=$(which grpc_cpp_plugin) grpc/health/v1/health.proto
//   g++ -O2 -std=c++17 -I OUT health_server.cc OUT/grpc/health/v1/health*.cc \
//     $(pkg-config --cflags --libs grpc++ protobuf) -o health_server
#include <grpcpp/grpcpp.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <unistd.h>

#include "grpc/health/v1/health.grpc.pb.h"

using grpc::health::v1::Health;
using grpc::health::v1::HealthCheckRequest;
using grpc::health::v1::HealthCheckResponse;

namespace {

class HealthImpl final : public Health::CallbackService {
  grpc::ServerUnaryReactor *Check(grpc::CallbackServerContext *ctx,
                                  const HealthCheckRequest *req,
                                  HealthCheckResponse *resp) override {
    grpc::ServerUnaryReactor *r = ctx->DefaultReactor();
    const std::string &svc = req->service();
    if (svc.empty() || svc == "ctxd.v1.Documents") {
      resp->set_status(HealthCheckResponse::SERVING);
      r->Finish(grpc::Status::OK);
    } else {
      r->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service"));
    }
    return r;
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
  for (int i = 1; i < argc; i++) {  // ADDR or --listen ADDR; others ignored
    if (std::strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
      addr = argv[++i];
    else if (argv[i][0] != '-')
      addr = argv[i];
    else if (i + 1 < argc && argv[i + 1][0] != '-')
      i++;  // skip the value of an option we don't know
  }
  HealthImpl svc;
  int port = 0;
  grpc::ServerBuilder b;
  b.AddListeningPort(addr, grpc::InsecureServerCredentials(), &port);
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
