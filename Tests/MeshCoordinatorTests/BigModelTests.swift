import Foundation
import MeshCoordinator
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// A model with a variable larger than any message, trained with the
/// services' default options on 2 stages and 2 ps tasks; each stage keeps
/// its master copy.
@Suite struct BigModelTests {
  /// Dense 16 → 4,200 → 4,096 → 4: the middle kernel is 68.8 MB, over the
  /// default message limit, so it can only travel in parts.
  static let model = Pipemesh_V1_ModelSpec.with {
    $0.inputShape = [16]
    $0.seed = 23
    $0.layers = [4200, 4096, 4].enumerated().map { index, units in
      .with {
        $0.dense = .with {
          $0.units = Int64(units)
          $0.activation = index < 2 ? .tanh : .none
        }
      }
    }
    $0.loss = .with { $0.softmaxCrossEntropy = .init() }
  }

  @Test func aVariableLargerThanAMessageTrainsLikeOneProcess() async throws {
    let kernelBytes = 4200 * 4096 * 4
    #expect(kernelBytes > TransportConfiguration.defaultMaxMessageBytes)
    let mesh = try await LocalMesh(parameterServers: 2, partitions: 2)
    let coordinator = try await mesh.coordinator([[0], [1]], name: "big")

    let inputs = Tensor.randomNormal([32, 16], seed: 9)
    let labels = (0..<32).map { row in
      Float(inputs.scalars[row * 16..<(row * 16 + 4)].map { $0 > 0 ? 1 : 0 }.reduce(0, +))
    }
    let targets = Tensor(shape: [32], scalars: labels.map { min($0, 3) })
    let built = try makeModel(Self.model)
    let (expectedLosses, expectedLogits) = try await onOwnThread {
      var reference = InProcessReference(model: built, learningRate: 0.05)
      let losses = reference.train(inputs: inputs, targets: targets, epochs: 1, batchSize: 8, seed: 3)
      return (losses, built(inputs, variables: reference.variables))
    }

    let progress = try await PipelineTrainingTests.train(
      coordinator, job: "big", model: Self.model, inputs: inputs, targets: targets, microBatches: 2,
      schedule: .scheduleOneFOneB, epochs: 1, batchSize: 8, learningRate: 0.05)
    let losses = progress.filter { !$0.done && !$0.evaluated }.map(\.loss)
    #expect(losses.count == expectedLosses.count, "\(mesh.logText)")
    for (step, (got, want)) in zip(losses, expectedLosses).enumerated() {
      #expect(abs(got - Double(want)) <= 1e-4 * abs(Double(want)), "step \(step + 1): \(got) vs \(want)")
    }

    // The kernel's parts are spread over both ps tasks, which together hold
    // the whole model once. Each stage kept its master copy (the ps tasks
    // write no checkpoints): no gradient was pushed, and the final values
    // were assigned at the end of the job.
    var heldBytes: Int64 = 0
    for ps in mesh.parameterServers {
      let stats = try await RPCClient(target: ps.endpoint).call(ParameterServerMethods.stats, .init())
      #expect(stats.variables > 1, "\(ps.endpoint) holds \(stats.variables) variables")
      #expect(stats.pushesApplied == 0, "\(ps.endpoint) applied \(stats.pushesApplied) pushes")
      heldBytes += stats.bytes
    }
    let parameters = 16 * 4200 + 4200 + 4200 * 4096 + 4096 + 4096 * 4 + 4
    #expect(heldBytes == Int64(parameters * 4))

    // The job's memory on each process: each partition held its stage's
    // weights and gradient sums at its last commit (SGD keeps no slots), and
    // each ps task its share of the model once the stages assigned it.
    let job = try await RPCClient(target: coordinator.endpoint).call(
      CoordinatorMethods.getJob, .with { $0.job = "big" })
    let partitionMemory = job.memory.filter { $0.member.hasPrefix("stage") }
    #expect(partitionMemory.count == 2 && job.memory.count == 4, "\(job.memory)")
    #expect(partitionMemory.map(\.memory.jobBytes).reduce(0, +) == Int64(2 * 4 * parameters))
    for member in job.memory {
      #expect(member.memory.peakResidentBytes >= member.memory.jobBytes, "\(member)")
    }
    #expect(
      job.memory.filter { $0.member.hasPrefix("ps") }.map(\.memory.jobBytes).reduce(0, +) == Int64(4 * parameters))

    // The trained weights, through inference on all 32 inputs.
    let inferred = try await RPCClient(target: coordinator.endpoint).call(
      CoordinatorMethods.infer,
      .with {
        $0.job = "big"
        $0.inputs = Pipemesh_V1_Tensor(inputs)
      })
    let logits = try Tensor(wire: inferred.outputs, what: "logits")
    #expect(logits.shape == expectedLogits.shape)
    let largest = zip(logits.scalars, expectedLogits.scalars).map { abs($0 - $1) / (1 + abs($1)) }.max() ?? .infinity
    #expect(largest <= 1e-5, "logits differ from one process's by up to \(largest) (relative)")
  }
}
