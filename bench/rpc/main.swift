// bench/rpc: the MeshRPC side of the transport benchmark; bench/rpc/run
// measures the plain grpc++ reference in the same run and prints ratios.
//
//   rpc-bench serve    prints "PORT <n>", serves Diagnostics until killed
//   rpc-bench client HOST:PORT LATENCY_CALLS [BYTES:IN_FLIGHT:CALLS...]
//                      runs the workloads (no latency workload for 0
//                      calls), prints one JSON line each
import Foundation
import MeshOps
import MeshProto
import MeshRPC
import MeshWire
import Synchronization

let maxMessageBytes = 64 << 20
let transport = TransportConfiguration(maxMessageBytes: maxMessageBytes)

struct ThroughputWorkload {
  let bytes: Int
  let inFlight: Int
  let calls: Int

  init?(_ text: String) {
    let parts = text.split(separator: ":").compactMap { Int($0) }
    guard parts.count == 3 else { return nil }
    (bytes, inFlight, calls) = (parts[0], parts[1], parts[2])
  }
}

/// Hands out call numbers to the concurrent callers of one workload.
final class CallCounter: Sendable {
  private let next = Atomic<Int>(0)
  func takeNext() -> Int { next.add(1, ordering: .relaxed).oldValue }
}

func echo(_ client: RPCClient, _ request: Pipemesh_V1_EchoRequest) async throws {
  let response = try await client.call(DiagnosticsMethods.echo, request)
  guard response.payload.count == request.payload.count else {
    throw RPCError(.dataLoss, "echo returned \(response.payload.count) of \(request.payload.count) bytes")
  }
}

func seconds(_ duration: Duration) -> Double {
  Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
}

/// p50 and p99 of sequential 64-byte echoes, printed as one JSON line. The
/// caller runs them on the client loop (`ClientLoopExecutor`), as a task
/// that waits on one call after another should.
func measureLatency(_ client: RPCClient, calls: Int, workload: String) async throws {
  var small = Pipemesh_V1_EchoRequest()
  small.payload = Data(repeating: 0x78, count: 64)
  for _ in 0..<(calls / 10) { try await echo(client, small) }
  var latencies: [Double] = []
  latencies.reserveCapacity(calls)
  let clock = ContinuousClock()
  for _ in 0..<calls {
    let elapsed = try await clock.measure { try await echo(client, small) }
    latencies.append(seconds(elapsed) * 1e6)
  }
  latencies.sort()
  print(
    "{\"workload\":\"\(workload)\","
      + String(
        format: "\"p50_us\":%.2f,\"p99_us\":%.2f}", latencies[latencies.count / 2],
        latencies[latencies.count * 99 / 100]))
}

func runClient(target: String, latencyCalls: Int, workloads: [ThroughputWorkload]) async throws {
  let client = try RPCClient(target: target, transport: transport)
  let clock = ContinuousClock()
  if latencyCalls > 0 {
    try await withTaskExecutorPreference(ClientLoopExecutor.shared) {
      try await measureLatency(client, calls: latencyCalls, workload: "latency")
    }
  }

  for workload in workloads {
    let request = Pipemesh_V1_EchoRequest.with { $0.payload = Data(repeating: 0x79, count: workload.bytes) }
    try await echo(client, request)  // warm-up
    let issued = CallCounter()
    let elapsed = try await clock.measure {
      try await withThrowingTaskGroup(of: Void.self) { group in
        for _ in 0..<workload.inFlight {
          group.addTask {
            while issued.takeNext() < workload.calls { try await echo(client, request) }
          }
        }
        try await group.waitForAll()
      }
    }
    let mibPerSecond = 2.0 * Double(workload.bytes * workload.calls) / seconds(elapsed) / Double(1 << 20)
    print(
      String(
        format: "{\"workload\":\"throughput\",\"bytes\":%d,\"in_flight\":%d,\"mib_per_s\":%.1f}",
        workload.bytes, workload.inFlight, mibPerSecond))
  }
}

let arguments = CommandLine.arguments
switch arguments.dropFirst().first {
case "serve":
  let server = try RPCServer(transport: transport, services: [DiagnosticsService(role: "bench")])
  FileHandle.standardOutput.write(Data("PORT \(server.port)\n".utf8))
  while true { try await Task.sleep(for: .seconds(3600)) }
case "client" where arguments.count >= 4:
  let workloads = arguments.dropFirst(4).map { ThroughputWorkload($0) }
  guard let latencyCalls = Int(arguments[3]), workloads.allSatisfy({ $0 != nil }) else {
    FileHandle.standardError.write(Data("bad arguments; want LATENCY_CALLS BYTES:IN_FLIGHT:CALLS...\n".utf8))
    exit(2)
  }
  try await runClient(target: arguments[2], latencyCalls: latencyCalls, workloads: workloads.map { $0! })
default:
  FileHandle.standardError.write(
    Data("usage: rpc-bench serve | client HOST:PORT LATENCY_CALLS BYTES:IN_FLIGHT:CALLS...\n".utf8))
  exit(2)
}
