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

#include <string>

#include "serve.h"

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

}  // namespace

int main(int argc, char **argv) {
  HealthImpl svc;
  return serve_main(argc, argv, &svc);
}
