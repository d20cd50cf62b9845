import Foundation
import MeshTestSupport
import Testing

/// Every service on its own host: separate network namespaces with their own
/// addresses, joined by a bridge. A job trains across those addresses.
@Suite struct MultiHostTests {
  @Test(.enabled(if: TestNetwork.unavailableReason == nil, "\(TestNetwork.unavailableReason ?? "")"))
  func trainsAcrossHostsInNetworkNamespaces() async throws {
    let logs = try TemporaryDirectory(prefix: "pipemesh-hosts")
    let network = try TestNetwork(hosts: ["ps", "stage0", "stage1", "coordinator"])
    let addresses = network.hosts
    /// A host's address in the test's network.
    func address(_ host: String) throws -> String { try #require(addresses[host], "no host \(host)") }
    let binary = PipemeshBinary.path
    func serve(_ host: String, _ role: String, _ arguments: [String]) async throws -> ChildProcess {
      let process = try network.start(on: host, binary, ["serve", role] + arguments, logPath: logs.file("\(host).log"))
      _ = try await process.waitForLine(startingWith: "\(role) listening on ")
      return process
    }
    let ps = try await serve("ps", "ps", ["--listen", "\(try address("ps")):7100"])
    // Without mutual TLS a partition dials loopback only, unless told the mesh's hosts.
    let meshHosts = try ["ps", "stage0", "stage1"].map { try address($0) }.joined(separator: ",")
    let partitionArguments = { (host: String) in
      [
        "--listen", "0.0.0.0:7200", "--advertise", "\(try address(host)):7200", "--metrics-listen", "127.0.0.1:9464",
        "--peers", meshHosts,
      ]
    }
    let stage0 = try await serve("stage0", "partition", partitionArguments("stage0"))
    let stage1 = try await serve("stage1", "partition", partitionArguments("stage1"))
    let coordinator = try await serve(
      "coordinator", "coordinator",
      [
        "--listen", "\(try address("coordinator")):7000", "--ps", "\(try address("ps")):7100",
        "--partitions", "\(try address("stage0")):7200;\(try address("stage1")):7200",
      ])

    // The client runs on the coordinator's host.
    let train = try network.start(
      on: "coordinator", binary,
      [
        "train", "--coordinator", "\(try address("coordinator")):7000", "--model",
        Repository.path("examples/mlp-digits.json"),
        "--epochs", "1", "--micro-batches", "2", "--json",
      ],
      logPath: logs.file("train.log"))
    let status = try await train.waitForExit(timeout: .seconds(180))
    #expect(status == 0, "train failed:\n\(train.log)\n\(stage0.log)\n\(stage1.log)\n\(coordinator.log)")
    let final = train.log.split(separator: "\n").compactMap {
      try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
    .last { $0["evaluated"] as? Bool == true }
    let accuracy = try #require(final?["validationAccuracy"] as? Double)
    #expect(accuracy > 0.6, "accuracy \(accuracy) after one epoch across hosts")
    // The data plane went partition to partition: each stage served the
    // other FetchTensor calls (activations forward, gradients back).
    let python = try PythonInterop.findPython()
    for host in ["stage0", "stage1"] {
      let scrape = try network.start(
        on: host, python,
        [
          "-c", "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:9464/metrics').read().decode())",
        ],
        logPath: logs.file("\(host)-metrics.txt"))
      #expect(try await scrape.waitForExit() == 0, "\(scrape.log)")
      let served = scrape.log.split(separator: "\n")
        .first {
          $0.hasPrefix("pipemesh_rpc_requests_total{code=\"OK\",method=\"/pipemesh.v1.Partition/FetchTensor\"}")
        }
      let count = served.flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
      #expect(count > 0, "\(host) served no FetchTensor:\n\(scrape.log)")
    }
    #expect(ps.isRunning && stage0.isRunning && stage1.isRunning)
  }
}
