import Foundation
import MeshTensor
import MeshTestSupport
import Testing

/// Partitions of one host pass activations and gradients through memory
/// files (`pipemesh partition --shared-memory`, on by default): the same
/// training as over the network, bit for bit.
@Suite(.serialized) struct SharedMemoryTests {
  /// A ps, two partitions with metrics and a coordinator, the partitions
  /// started with `--shared-memory on|off`.
  final class Mesh: CommandMesh {
    let directory: TemporaryDirectory
    let parameterServer: RunningService
    let partitions: [RunningService]
    let coordinator: RunningService

    init(sharedMemory: Bool) async throws {
      directory = try TemporaryDirectory(prefix: "pipemesh-shared-memory")
      parameterServer = try await RunningService.start("ps", log: directory.file("ps.log"))
      var partitions: [RunningService] = []
      for index in 0..<2 {
        partitions.append(
          try await RunningService.start(
            "partition", ["--metrics-listen", "127.0.0.1:0", "--shared-memory", sharedMemory ? "on" : "off"],
            log: directory.file("partition\(index).log")))
      }
      self.partitions = partitions
      coordinator = try await RunningService.start(
        "coordinator",
        ["--ps", parameterServer.endpoint, "--partitions", partitions.map(\.endpoint).joined(separator: ";")],
        log: directory.file("coordinator.log"))
    }

    /// How many tensors each partition handed to the other, through shared memory and by the
    /// network, and how many shared buffers it refused.
    func fetchesServed() async throws -> [(sharedMemory: Double, network: Double, refused: Double)] {
      var counts: [(Double, Double, Double)] = []
      for partition in partitions {
        let text = try await OperationsTests.scrape(try await OperationsTests.metricsURL(of: partition, "partition"))
        counts.append(
          (
            OperationsTests.value(in: text, "pipemesh_partition_fetches_served_total{by=\"shared_memory\"}") ?? -1,
            OperationsTests.value(in: text, "pipemesh_partition_fetches_served_total{by=\"network\"}") ?? -1,
            OperationsTests.value(in: text, "pipemesh_partition_shared_buffers_refused_total") ?? -1
          ))
      }
      return counts
    }
  }

  /// A 2-stage job, in float32 and in bfloat16 transfers, trains the same
  /// losses and weights with its tensors in shared memory as by the
  /// network; the partitions' counters say which way each went.
  @Test func aJobTrainsTheSameThroughSharedMemoryAsByTheNetwork() async throws {
    var results: [Bool: [String: (losses: [Double], weights: [String: Tensor])]] = [:]
    for sharedMemory in [true, false] {
      let mesh = try await Mesh(sharedMemory: sharedMemory)
      for transfer in ["float32", "bfloat16"] {
        let job = "job-\(transfer)"
        let progress = try await mesh.json([
          "train", "--job", job, "--model", DurableStateTests.model, "--stages", "2", "--split", "1", "--epochs", "2",
          "--micro-batches", "2", "--transfer-dtype", transfer,
        ])
        let losses = progress.compactMap { line -> Double? in
          guard line["evaluated"] as? Bool == false, line["done"] as? Bool == false, line["step"] as? Int ?? 0 > 0
          else { return nil }
          return line["loss"] as? Double
        }
        try #require(losses.count > 10, "\(progress)")
        results[sharedMemory, default: [:]][transfer] = (losses, try await DurableStateTests.weights(job, on: mesh))
      }
      let served = try await mesh.fetchesServed()
      for (stage, counts) in served.enumerated() {
        if sharedMemory {
          #expect(counts.sharedMemory > 0 && counts.network == 0, "stage \(stage): \(counts)")
        } else {
          #expect(counts.sharedMemory == 0 && counts.network > 0, "stage \(stage): \(counts)")
        }
        #expect(counts.refused == 0, "stage \(stage): \(counts)")
      }
    }
    for transfer in ["float32", "bfloat16"] {
      let (shared, network) = (try #require(results[true]?[transfer]), try #require(results[false]?[transfer]))
      #expect(shared.losses == network.losses, "\(transfer)")
      #expect(shared.weights.count == network.weights.count && !shared.weights.isEmpty)
      for (name, tensor) in network.weights { #expect(shared.weights[name] == tensor, "\(transfer): \(name)") }
    }
  }
}
