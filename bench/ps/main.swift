// bench/ps: push+pull throughput of a real ps process next to the echo
// throughput of the same process (every service also serves Diagnostics),
// so both go through the same transport on the same machine in one run.
//
//   ps-bench HOST:PORT BYTES:CLIENTS:OPERATIONS...
//     prints one JSON line per workload and kind (echo, push+pull)
import Foundation
import MeshPS
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

let transport = TransportConfiguration(maxMessageBytes: 256 << 20)

struct Workload {
  let bytes: Int
  let clients: Int
  let operations: Int
}

/// Runs `operation` `operations` times on each of `clients` concurrent
/// callers; returns the wall time.
func measure(clients: Int, operations: Int, _ operation: @escaping @Sendable (Int) async throws -> Void) async throws
  -> Duration
{
  try await ContinuousClock().measure {
    try await withThrowingTaskGroup(of: Void.self) { group in
      for client in 0..<clients {
        group.addTask { for _ in 0..<operations { try await operation(client) } }
      }
      try await group.waitForAll()
    }
  }
}

func report(_ kind: String, _ workload: Workload, _ elapsed: Duration) {
  let operations = Double(workload.clients * workload.operations)
  let gigabytes = 2 * Double(workload.bytes) * operations / 1e9
  print(
    String(
      format: "{\"kind\":\"%@\",\"bytes\":%d,\"clients\":%d,\"gb_per_s\":%.3f,\"operations_per_s\":%.1f}",
      kind as NSString, workload.bytes, workload.clients, gigabytes / elapsed.seconds, operations / elapsed.seconds))
}

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
  FileHandle.standardError.write(Data("usage: ps-bench HOST:PORT BYTES:CLIENTS:OPERATIONS...\n".utf8))
  exit(2)
}
let endpoint = arguments[1]
let workloads = arguments.dropFirst(2).map { text -> Workload in
  let parts = text.split(separator: ":").compactMap { Int($0) }
  guard parts.count == 3 else { fatalError("bad workload \(text)") }
  return Workload(bytes: parts[0], clients: parts[1], operations: parts[2])
}

let echoClient = try RPCClient(target: endpoint, transport: transport)
let ps = try ParameterServerClient(
  endpoints: [endpoint], dialer: GRPCDialer(transport: transport), blockBytes: 1 << 30, transferBytes: 1 << 30)
for (index, workload) in workloads.enumerated() {
  let scalars = workload.bytes / 4
  let echo = Pipemesh_V1_EchoRequest.with { $0.payload = Data(count: workload.bytes) }
  _ = try await echoClient.call(DiagnosticsMethods.echo, echo)  // warm-up
  report(
    "echo", workload,
    try await measure(clients: workload.clients, operations: workload.operations) { _ in
      _ = try await echoClient.call(DiagnosticsMethods.echo, echo)
    })

  // Each client pushes to its own variable of one async job: the updates
  // are applied one at a time per job, as the ps does for every job.
  let job = "bench\(index)"
  let names = (0..<workload.clients).map { "layer\($0)/kernel" }
  try await ps.register(
    job: job,
    variables: names.map { name in
      .with {
        $0.name = name
        $0.shape = [Int64(scalars)]
        $0.initializer = .with { $0.constant = 0 }
        $0.optimizer = .with {
          $0.sgd = .init()
          $0.learningRate = .with { $0.base = 0.001 }
        }
      }
    },
    consistency: .with { $0.async = .init() }, user: "bench")
  let gradient = Tensor.filled([scalars], with: 1)
  let steps = Mutex([Int64](repeating: 0, count: workload.clients))
  report(
    "push+pull", workload,
    try await measure(clients: workload.clients, operations: workload.operations) { client in
      let step = steps.withLock {
        $0[client] += 1
        return $0[client]
      }
      try await ps.push(
        job: job, step: step, user: "bench", clientID: "client\(client)",
        gradients: [names[client]: (gradient, step - 1)])
      _ = try await ps.pull(job: job, names: [names[client]])
    })
}
