import Foundation
import MeshInProcess
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Testing

/// The coordinator, partitions and ps in one process over the in-process
/// transport: the same services and arithmetic as a mesh of processes, with
/// no sockets, so logic is checked in milliseconds. (PipelineTrainingTests
/// proves the same on real processes.)
@Suite struct InProcessMeshTests {
  @Test(arguments: [
    (stages: 1, microBatches: 1, schedule: Pipemesh_V1_ScheduleKind.scheduleGpipe),
    (stages: 2, microBatches: 4, schedule: .scheduleOneFOneB),
    (stages: 4, microBatches: 2, schedule: .scheduleGpipe),
    (stages: 4, microBatches: 8, schedule: .scheduleZeroBubbleH1),
  ])
  func aMeshInOneProcessTrainsAsTheNumPyReferenceDoes(
    stages: Int, microBatches: Int, schedule: Pipemesh_V1_ScheduleKind
  ) async throws {
    let mesh = try InProcessMesh(psTasks: 2, stages: stages)
    let outcome = await Result(catching: {
      let (inputs, targets) = PipelineTrainingTests.classification()
      let reference = try await PipelineTrainingTests.numPyReference(
        PipelineTrainingTests.mlp, inputs: inputs, targets: targets, epochs: 2, batchSize: 16, learningRate: 0.1,
        seed: 3)
      let job = "in-process-k\(stages)-m\(microBatches)"
      let progress = try await PipelineTrainingTests.train(
        mesh.coordinatorChannel(), job: job, model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets,
        microBatches: microBatches, schedule: schedule)
      PipelineTrainingTests.expectLosses(of: progress, near: reference, within: 1e-4, job: job)
      #expect(progress.last?.done == true)
      try await PipelineTrainingTests.expectFinalWeights(
        of: job, on: mesh.coordinatorChannel(), inputs: inputs, reference: reference)
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// A job's transfer dtype is what its stages fetch a training step's
  /// activations and gradients from each other in. A stage that begins
  /// inside the model's first layer fetches its input, which carries model
  /// inputs, as float32 (the stage after it, past the split layer, does
  /// not); an inference fetches float32.
  @Test func stagesFetchActivationsAndGradientsInTheJobsTransferDtype() async throws {
    let mesh = try InProcessMesh(stages: 3)
    mesh.network.logCalls()
    let outcome = await Result(catching: {
      let (inputs, targets) = PipelineTrainingTests.classification()
      let splits: [(String, [LayerPosition])] = [
        ("between-layers", [1, 2]), ("inside-first", [LayerPosition(layer: 0, inputs: 3), 1]),
      ]
      for (job, split) in splits {
        let progress = try await PipelineTrainingTests.train(
          mesh.coordinatorChannel(), job: job, model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets,
          microBatches: 2, schedule: .scheduleOneFOneB, epochs: 1, splitPoints: split, transferDType: .bfloat16)
        #expect(progress.last?.done == true, "\(job)")
      }
      // Enough rows that stage 0's output (16 floats a row) goes by reference, not inline.
      _ = try await mesh.coordinatorChannel().call(
        CoordinatorMethods.infer,
        .with {
          $0.job = "between-layers"
          $0.inputs = Pipemesh_V1_Tensor(Tensor.randomNormal([4200, 8], seed: 9))
        })
      // By job, kind and the stage that produced it (fetched from).
      var encodings: [String: Set<Pipemesh_V1_DType>] = [:]
      for event in mesh.network.loggedCalls where event.path == PartitionMethods.fetchTensor.path {
        let request = try Pipemesh_V1_FetchTensorRequest(serializedBytes: event.request)
        let key = try DataPlaneKey(wire: request.key)
        let stage = try #require(mesh.partitions.firstIndex { $0.contains(event.endpoint) })
        encodings["\(key.job.prefix { $0 != "." }) \(key.kind) of \(stage)", default: []].insert(request.encoding)
      }
      #expect(
        encodings == [
          "between-layers activation of 0": [.bfloat16], "between-layers activation of 1": [.bfloat16],
          "between-layers gradient of 1": [.bfloat16], "between-layers gradient of 2": [.bfloat16],
          "inside-first activation of 0": [.unspecified], "inside-first activation of 1": [.bfloat16],
          "inside-first gradient of 1": [.bfloat16], "inside-first gradient of 2": [.bfloat16],
          "between-layers inference of 0": [.unspecified], "between-layers inference of 1": [.unspecified],
        ], "\(encodings)")
    })
    await mesh.shutdown()
    try outcome.get()
  }

  /// Accuracy counts labels, not examples: a model with an output per
  /// position of a sequence (copying each token) reports fractions of its
  /// positions, never more than 1, and learns the copy.
  @Test func accuracyOfSequenceOutputsCountsEveryPosition() async throws {
    let mesh = try InProcessMesh(stages: 2)
    let outcome = await Result(catching: {
      let count = 256
      let tokens = (0..<(count * 8)).map { Float(($0 * 7 + $0 / 8) % 4) }
      let inputs = Tensor(shape: [count, 8], scalars: tokens)
      let model = Pipemesh_V1_ModelSpec.with {
        $0.inputShape = [8]
        $0.seed = 3
        $0.layers = [
          .with {
            $0.embedding = .with {
              $0.vocabularySize = 4
              $0.dimension = 8
            }
          },
          .with { $0.dense = .with { $0.units = 4 } },
        ]
        $0.loss.softmaxCrossEntropy = .init()
      }
      let progress = try await PipelineTrainingTests.train(
        mesh.coordinatorChannel(), job: "copy", model: model, inputs: inputs, targets: inputs, microBatches: 2,
        schedule: .scheduleGpipe, epochs: 4, batchSize: 32, learningRate: 0.5, validation: 0.25)
      let steps = progress.filter { !$0.done && !$0.evaluated }
      #expect(!steps.isEmpty && steps.allSatisfy { $0.accuracy >= 0 && $0.accuracy <= 1 }, "\(steps.map(\.accuracy))")
      let evaluated = progress.filter(\.evaluated).map(\.validationAccuracy)
      #expect(evaluated.count == 4 && evaluated.allSatisfy { $0 <= 1 }, "\(evaluated)")
      #expect((evaluated.last ?? 0) > 0.9, "the copy was not learned: \(evaluated)")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// The identity a caller carries reaches the services' admission checks,
  /// as a certificate's name does over mutual TLS.
  @Test func servicesAdmitByTheRoleTheCallerCarries() async throws {
    let mesh = try InProcessMesh(stages: 1)
    let outcome = await Result(catching: {
      let ps = try #require(mesh.parameterServers.first)
      let asUser = mesh.network.channel(to: ps, identity: "client.alice")
      let refused = await #expect(throws: RPCError.self) {
        _ = try await asUser.call(ParameterServerMethods.stats, .init())
      }
      #expect(refused?.code == .permissionDenied)
      #expect(refused?.message.contains("client.alice") == true, "\(String(describing: refused))")
      let asCoordinator = mesh.network.channel(to: ps, identity: "coordinator")
      _ = try await asCoordinator.call(ParameterServerMethods.stats, .init())
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }
}
