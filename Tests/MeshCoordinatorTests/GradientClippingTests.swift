import MeshInProcess
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// Clipping by global norm takes the norm over the whole model: a job cut
/// into two stages, its variables spread over two ps tasks, trains as one
/// process that clips all its gradients together — not as stages or ps
/// tasks that each clip their own part.
@Suite struct GradientClippingTests {
  /// Below the norm of every step's gradients, so every step is clipped.
  static let clipNorm: Float = 0.05

  /// Without ps checkpoints the stages apply their own updates (and keep
  /// the values); with them, they push every step's clipped gradients to
  /// the ps tasks, which apply them as they are.
  @Test(arguments: [
    (Pipemesh_V1_ScheduleKind.scheduleOneFOneB, false), (.schedulePipedream2Bw, false), (.scheduleOneFOneB, true),
  ])
  func aClippedJobTrainsAsOneProcessClippingTheWholeModel(
    schedule: Pipemesh_V1_ScheduleKind, psCheckpoints: Bool
  ) async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-clipping")
    let mesh = try InProcessMesh(psTasks: 2, stages: 2, checkpointDirectory: psCheckpoints ? directory.path : nil)
    let outcome = await Result(catching: {
      let job = try await JobCheckpointTests.trainToEnd("clipped", epochs: 2, on: mesh) {
        $0.optimizer.clipGlobalNorm = Self.clipNorm
        $0.schedule = schedule
        $0.shuffleSeed = 3
      }
      #expect(job.state == .succeeded, "\(job)")
      let trained = try await JobCheckpointTests.weights("clipped", on: mesh)

      let (inputs, targets) = PipelineTrainingTests.classification(count: 128)
      let model = try makeModel(PipelineTrainingTests.mlp)
      // PipeDream-2BW: each step but an epoch's first (8 steps) runs on the weights before the last update.
      let oneStepBehind = schedule == .schedulePipedream2Bw
      let (clipped, unclipped) = try await onOwnThread {
        let weightsAfter: ((Int) -> Int)? = oneStepBehind ? { $0 % 8 == 0 ? $0 : $0 - 1 } : nil
        func train(clipNorm: Float) -> [String: Tensor] {
          var reference = InProcessReference(model: model, learningRate: 0.1, clipNorm: clipNorm)
          _ = reference.train(
            inputs: inputs, targets: targets, epochs: 2, batchSize: 16, seed: 3, weightsAfter: weightsAfter)
          return reference.variables
        }
        return (train(clipNorm: Self.clipNorm), train(clipNorm: 0))
      }
      #expect(trained.count == 8 && Set(trained.keys) == Set(clipped.keys), "\(trained.keys.sorted())")
      for (name, expected) in clipped {
        let got = trained[name]?.scalars ?? []
        let largest = zip(got, expected.scalars).map { abs($0 - $1) }.max() ?? .infinity
        #expect(got.count == expected.scalarCount && largest <= 1e-5, "\(name) differs by \(largest)")
      }
      // Clipping changed the training: the check above would not pass without it.
      let change =
        clipped.map { name, tensor in
          zip(tensor.scalars, unclipped[name]?.scalars ?? []).map { abs($0 - $1) }.max() ?? 0
        }.max() ?? 0
      #expect(change > 1e-2, "clipping to \(Self.clipNorm) changed the weights by \(change) only")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// An embedding of 10 tokens in 8 features, a dense layer, and a dense
  /// head tied to the embedding's table.
  static let tiedModel = Pipemesh_V1_ModelSpec.with {
    $0.inputShape = [4]
    $0.seed = 21
    $0.layers = [
      .with {
        $0.embedding = .with {
          $0.vocabularySize = 10
          $0.dimension = 8
        }
      },
      .with { $0.dense = .with { $0.units = 8 } },
      .with { $0.dense = .with { $0.tiedTo = "embedding0" } },
    ]
    $0.loss = .with { $0.softmaxCrossEntropy = .init() }
  }

  /// A tied layer on another stage than its table: the two stages'
  /// gradients of the table add up on the ps, so neither stage's part of
  /// the norm is the table's. Refused before anything runs.
  @Test func aTableTiedAcrossStagesIsRefusedWithClipping() async throws {
    let mesh = try InProcessMesh(stages: 2)
    let outcome = await Result(catching: {
      let model = Self.tiedModel
      let (inputs, targets) = PipelineTrainingTests.successorTokens(rows: 24, length: 4, vocabulary: 10, seed: 9)
      var request = Pipemesh_V1_TrainRequest.inline(
        job: "tied", model: model, inputs: inputs, targets: targets, epochs: 1, batchSize: 12, microBatches: 2,
        schedule: .scheduleOneFOneB, learningRate: 0.1)
      request.optimizer.clipGlobalNorm = 1
      request.splitPoints = [2]
      await mesh.expectTrainRefused(request, containing: "is used on stages 0 and 1 (a tied layer")
      // On one stage, the table's gradient is whole there: clipping trains.
      request.job = "tied-together"
      request.splitPoints = []
      request.stages = 1
      for try await _ in mesh.coordinatorChannel().stream(CoordinatorMethods.train, request) {}
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// Replicas that reduce by ring each apply their own stage's gradients:
  /// a tied table, whose gradients add up over its layers on the ps, is
  /// refused before anything runs, even on one stage.
  @Test func aTiedTableIsRefusedUnderARingReduction() async throws {
    let mesh = try InProcessMesh(stages: 1)
    let (inputs, targets) = PipelineTrainingTests.successorTokens(rows: 24, length: 4, vocabulary: 10, seed: 9)
    var request = Pipemesh_V1_TrainRequest.inline(
      job: "tied-ring", model: Self.tiedModel, inputs: inputs, targets: targets, epochs: 1, batchSize: 12,
      microBatches: 2, schedule: .scheduleOneFOneB, learningRate: 0.1)
    request.consistency = .with { $0.sync = .with { $0.reduction = .ring } }
    await mesh.expectTrainRefused(request, containing: "is shared by several layers (a tied layer)")
    await mesh.shutdown(gracePeriod: .zero)
  }
}
