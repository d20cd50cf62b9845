// The reference for bench/rpc: pipemesh.v1.Diagnostics/Echo served and called
// with plain grpc++ generated code (callback server, blocking stubs), the way
// a C++ service would be written without Pipemesh.
//
//   echo_reference serve    prints "PORT <n>", serves until killed
//   echo_reference client HOST:PORT LATENCY_CALLS [BYTES:IN_FLIGHT:CALLS...]
//                           runs the workloads bench/rpc/run names (no
//                           latency workload for 0 calls), prints one JSON
//                           line each
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "pipemesh/v1/diagnostics.grpc.pb.h"

using pipemesh::v1::Diagnostics;
using pipemesh::v1::EchoRequest;
using pipemesh::v1::EchoResponse;

namespace {

constexpr int kMaxMessageBytes = 64 << 20;
constexpr int kLatencyPayloadBytes = 64;

struct ThroughputWorkload {
  int64_t bytes;
  int in_flight;
  int calls;
};

class EchoService final : public Diagnostics::CallbackService {
  grpc::ServerUnaryReactor *Echo(grpc::CallbackServerContext *context,
                                 const EchoRequest *request,
                                 EchoResponse *response) override {
    response->set_payload(request->payload());
    auto *reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status::OK);
    return reactor;
  }
};

int Serve() {
  EchoService service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(kMaxMessageBytes);
  builder.SetMaxSendMessageSize(kMaxMessageBytes);
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  std::printf("PORT %d\n", port);
  std::fflush(stdout);
  server->Wait();
  return 0;
}

double Seconds(std::chrono::steady_clock::duration duration) {
  return std::chrono::duration<double>(duration).count();
}

void Call(Diagnostics::Stub &stub, const EchoRequest &request) {
  grpc::ClientContext context;
  EchoResponse response;
  grpc::Status status = stub.Echo(&context, request, &response);
  if (!status.ok() || response.payload().size() != request.payload().size()) {
    std::fprintf(stderr, "echo failed: %s\n", status.error_message().c_str());
    std::exit(1);
  }
}

int Client(const std::string &target, int latency_calls,
           const std::vector<ThroughputWorkload> &workloads) {
  grpc::ChannelArguments arguments;
  arguments.SetMaxReceiveMessageSize(kMaxMessageBytes);
  arguments.SetMaxSendMessageSize(kMaxMessageBytes);
  auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), arguments);
  auto stub = Diagnostics::NewStub(channel);

  if (latency_calls > 0) {
    EchoRequest small;
    small.set_payload(std::string(kLatencyPayloadBytes, 'x'));
    for (int i = 0; i < latency_calls / 10; ++i) Call(*stub, small);
    std::vector<double> latencies;
    for (int i = 0; i < latency_calls; ++i) {
      auto start = std::chrono::steady_clock::now();
      Call(*stub, small);
      latencies.push_back(Seconds(std::chrono::steady_clock::now() - start) * 1e6);
    }
    std::sort(latencies.begin(), latencies.end());
    std::printf("{\"workload\":\"latency\",\"p50_us\":%.2f,\"p99_us\":%.2f}\n",
                latencies[latencies.size() / 2], latencies[latencies.size() * 99 / 100]);
  }

  for (const auto &workload : workloads) {
    EchoRequest request;
    request.set_payload(std::string(workload.bytes, 'y'));
    Call(*stub, request);  // warm-up
    std::atomic<int> next{0};
    auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < workload.in_flight; ++t) {
      threads.emplace_back([&] {
        while (next.fetch_add(1) < workload.calls) Call(*stub, request);
      });
    }
    for (auto &thread : threads) thread.join();
    double seconds = Seconds(std::chrono::steady_clock::now() - start);
    std::printf("{\"workload\":\"throughput\",\"bytes\":%lld,\"in_flight\":%d,\"mib_per_s\":%.1f}\n",
                static_cast<long long>(workload.bytes), workload.in_flight,
                2.0 * workload.bytes * workload.calls / seconds / (1 << 20));
  }
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc >= 2 && std::string(argv[1]) == "serve") return Serve();
  if (argc >= 4 && std::string(argv[1]) == "client") {
    std::vector<ThroughputWorkload> workloads;
    for (int i = 4; i < argc; ++i) {
      ThroughputWorkload workload{};
      long long bytes = 0;
      if (std::sscanf(argv[i], "%lld:%d:%d", &bytes, &workload.in_flight, &workload.calls) != 3) {
        std::fprintf(stderr, "bad workload %s (want BYTES:IN_FLIGHT:CALLS)\n", argv[i]);
        return 2;
      }
      workload.bytes = bytes;
      workloads.push_back(workload);
    }
    return Client(argv[2], std::atoi(argv[3]), workloads);
  }
  std::fprintf(stderr, "usage: echo_reference serve | client HOST:PORT LATENCY_CALLS BYTES:IN_FLIGHT:CALLS...\n");
  return 2;
}
