import MeshInProcess
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// What keeps an LSTM or GRU from being split at a time step where its
/// stages' gradients would not add up to one update: clipping by the global
/// norm, and consistency other than sync.
@Suite struct RecurrentSplitTests {
  /// Training a model of an LSTM over 8 steps of 2 features and a dense head of 2 classes.
  static func request(_ job: String) -> Pipemesh_V1_TrainRequest {
    let model = Pipemesh_V1_ModelSpec.with {
      $0.inputShape = [8, 2]
      $0.seed = 4
      $0.layers = [.with { $0.lstm = .with { $0.units = 16 } }, .with { $0.dense = .with { $0.units = 2 } }]
      $0.loss = .with { $0.softmaxCrossEntropy = .init() }
    }
    let inputs = Tensor.randomUniform([24, 8, 2], lowerBound: -1, upperBound: 1, seed: 6)
    let targets = Tensor(shape: [24], scalars: (0..<24).map { Float($0 % 2) })
    return Pipemesh_V1_TrainRequest.inline(
      job: job, model: model, inputs: inputs, targets: targets, epochs: 1, batchSize: 12, microBatches: 2,
      schedule: .scheduleOneFOneB, learningRate: 0.1)
  }

  /// Two layers, an LSTM and a dense head, in three stages: one layer must
  /// be split. Split at a time step, the LSTM's stages would share its
  /// weights, which clipping refuses; so with clipping the planner splits
  /// the head instead, and the job trains.
  @Test func withClippingAnLSTMIsNotSplitAtATimeStep() async throws {
    let mesh = try InProcessMesh(stages: 3)
    let outcome = await Result(catching: {
      var request = Self.request("clipped-lstm")
      request.optimizer.clipGlobalNorm = 1
      for try await _ in mesh.coordinatorChannel().stream(CoordinatorMethods.train, request) {}
      let job = try await mesh.coordinatorChannel().call(CoordinatorMethods.getJob, .with { $0.job = "clipped-lstm" })
      #expect(job.state == .succeeded, "\(job)")
      let split = zip(job.options.splitPoints, job.options.splitPointInputs).map { ($0, $1) }
      #expect(split.count == 2 && split.allSatisfy { $0.0 != 0 || $0.1 == 0 }, "\(job.options)")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// An async job given a split at the LSTM's time steps is refused before
  /// anything runs: its ps would apply each stage's share of the gradient as
  /// an update of its own; so is a sync job reducing by ring, whose replicas
  /// each apply their own stage's share. Planned by itself, the same job
  /// splits the head.
  @Test(arguments: [
    Pipemesh_V1_Consistency.with { $0.async = .init() },
    .with { $0.sync = .with { $0.reduction = .ring } },
  ])
  func aJobThatCannotAddUpTheStagesSharesRefusesAnLSTMSplitAtATimeStep(consistency: Pipemesh_V1_Consistency)
    async throws
  {
    let mesh = try InProcessMesh(stages: 2)
    let outcome = await Result(catching: {
      var request = Self.request("async-lstm")
      request.consistency = consistency
      request.splitPoints = [0]
      request.splitPointInputs = [4]
      await mesh.expectTrainRefused(request, containing: "split point 0:4 splits lstm0 at a time step")
      request.splitPoints = []
      request.splitPointInputs = []
      for try await _ in mesh.coordinatorChannel().stream(CoordinatorMethods.train, request) {}
      let job = try await mesh.coordinatorChannel().call(CoordinatorMethods.getJob, .with { $0.job = "async-lstm" })
      #expect(job.state == .succeeded, "\(job)")
      #expect(
        !zip(job.options.splitPoints, job.options.splitPointInputs).contains { $0 == 0 && $1 > 0 }, "\(job.options)")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }
}
