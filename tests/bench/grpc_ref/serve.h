// serve.h - the main() shared by the benchmark's reference gRPC C++ servers:
// parse HOST:PORT (or --listen HOST:PORT; other --options and their values
// are ignored, so a script can stand one of these in for ctxd), serve one
// service, print "listening addr=HOST:PORT" on stderr like ctxd, and shut
// down cleanly on SIGTERM/SIGINT (exit 0). Header-only: each server is one
// g++ command.
#pragma once

#include <grpcpp/grpcpp.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <unistd.h>

namespace serve_detail {
inline int sigpipe_fds[2];
inline void on_signal(int) {
  char c = 1;
  ssize_t n = write(sigpipe_fds[1], &c, 1);
  (void)n;
}
}  // namespace serve_detail

// Serve `svc` until SIGTERM/SIGINT; max_receive_bytes 0 keeps gRPC's default.
inline int serve_main(int argc, char **argv, grpc::Service *svc,
                      int max_receive_bytes = 0) {
  std::string addr = "127.0.0.1:0";
  for (int i = 1; i < argc; i++) {
    if (std::strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
      addr = argv[++i];
    else if (argv[i][0] != '-')
      addr = argv[i];
    else if (i + 1 < argc && argv[i + 1][0] != '-')
      i++;  // skip the value of an option we don't know (stand-in for ctxd)
  }
  int port = 0;
  grpc::ServerBuilder b;
  b.AddListeningPort(addr, grpc::InsecureServerCredentials(), &port);
  if (max_receive_bytes) b.SetMaxReceiveMessageSize(max_receive_bytes);
  b.RegisterService(svc);
  std::unique_ptr<grpc::Server> server = b.BuildAndStart();
  if (!server || port == 0) {
    std::fprintf(stderr, "error msg=\"cannot listen\" addr=%s\n", addr.c_str());
    return 1;
  }
  std::string host = addr.substr(0, addr.rfind(':'));
  std::fprintf(stderr, "info listening addr=%s:%d\n", host.c_str(), port);
  std::fflush(stderr);

  if (pipe(serve_detail::sigpipe_fds) != 0) return 1;
  std::signal(SIGTERM, serve_detail::on_signal);
  std::signal(SIGINT, serve_detail::on_signal);
  std::thread waiter([&] {
    char c;
    while (read(serve_detail::sigpipe_fds[0], &c, 1) < 0) {
    }
    server->Shutdown();
  });
  server->Wait();
  waiter.join();
  return 0;
}
