import Foundation
import MeshPS
import MeshPSClient
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

@testable import MeshPartition

/// A stage's verbs over its own types — a `MicroBatch`, tensors, results —
/// with no protobuf and no sockets: the stages and their ps talk over the
/// in-process transport.
@Suite struct StageRunnerTests {
  static let spec = ModelSpec(
    inputShape: [6],
    layers: [
      .dense(inputSize: 6, outputSize: 5, activation: .tanh),
      .dense(inputSize: 5, outputSize: 3, activation: .linear),
    ],
    loss: .softmaxCrossEntropy, l2Penalty: 0.01, seed: 7)
  static let learningRate: Float = 0.1
  static let inputs = Tensor(shape: [8, 6], scalars: (0..<48).map { Float(($0 * 37) % 23) / 11 - 1 })
  static let labels = Tensor(shape: [8], scalars: (0..<8).map { Float($0 % 3) })

  /// A job of `spec` cut into `stages` (layer ranges), loaded on one fresh
  /// ps under sync consistency, so each stage is its variables' sole
  /// writer and keeps them. The stages share one data plane, as stages on
  /// one partition do. Returns them, a ps client that reads what they
  /// flushed, and their activity.
  static func loaded(job: String, stages: [Range<Int>] = [0..<2]) async throws -> (
    stages: [StageRunner], ps: ParameterServerClient, activity: PartitionActivity
  ) {
    let network = InProcessNetwork()
    _ = try network.serve([ParameterServerService(store: ParameterStore(), checkpointer: nil)], at: "ps-0.test:1")
    let dialer = network.dialer(identity: "partition")
    let activity = PartitionActivity()
    let dataPlane = DataPlane(endpoint: "partition-0.test:1", dialer: dialer)
    let reader = try ParameterServerClient(endpoints: ["ps-0.test:1"], dialer: dialer)
    var runners: [StageRunner] = []
    for (index, layers) in stages.enumerated() {
      let stage = StageRunner(
        job: job, model: try Sequential(spec: spec), layers: layers, stage: index, replica: 0, recompute: false,
        maxKeptBytes: 1 << 20, peers: [],
        optimizer: .with {
          $0.sgd = .init()
          $0.learningRate = .with { $0.base = learningRate }
        }, ps: try ParameterServerClient(endpoints: ["ps-0.test:1"], dialer: dialer), dataPlane: dataPlane,
        activity: activity)
      try await stage.start(consistency: JobConsistency(.with { $0.sync = .init() }))
      reader.expect(variables: await stage.definitions.map { ($0.name, $0.shape.map { Int($0) }) })
      runners.append(stage)
    }
    return (runners, reader, activity)
  }

  /// Checks that the stages' `loss` (without the L2 penalty) plus their
  /// commits' `penalty` is one process's loss of `inputs`, and that the ps
  /// holds what one SGD step from the initial values gives; returns the
  /// trained values.
  static func expectOneProcessStep(loss: Double, penalty: Double, ps: ParameterServerClient, job: String)
    async throws -> [String: Tensor]
  {
    let model = try Sequential(spec: spec)
    let initial = model.initialVariables()
    let reference = model.lossAndGradients(
      input: inputs, target: labels, variables: initial, context: ForwardContext(training: true))
    #expect(
      abs(loss + penalty - Double(reference.loss)) < 1e-6, "stages \(loss + penalty), one process \(reference.loss)")
    let pulled = try await ps.pull(job: job, names: initial.keys.sorted())
    #expect(Set(pulled.keys) == Set(initial.keys))
    var trained: [String: Tensor] = [:]
    for (name, value) in initial {
      let gradient = try #require(reference.gradients[name]).scalars
      let expected = value.scalars.enumerated().map { $1 - learningRate * gradient[$0] }
      let values = try #require(pulled[name]?.value)
      trained[name] = values
      #expect(values.shape == value.shape, "\(name)")
      let worst = zip(values.scalars, expected).map { abs($0 - $1) }.max() ?? .infinity
      #expect(worst < 1e-6, "\(name) is off by \(worst)")
      #expect(values.scalars != value.scalars, "\(name) moved")
    }
    return trained
  }

  /// A forward, a backward and a flushing commit of one micro-batch leave
  /// the loss and the weights that one process's gradient and SGD step give.
  @Test func oneStepOfTheVerbsIsOneProcessStep() async throws {
    let (stages, ps, _) = try await Self.loaded(job: "verbs")
    let microBatch = MicroBatch(step: 1, index: 0)
    let forward = try await stages[0].forward(
      ForwardCall(
        microBatch: microBatch, input: .value(Self.inputs), targets: Self.labels, batchSize: 8, schedulePosition: 0,
        weightsAfterStep: nil))
    #expect(forward.output == nil, "the last stage answers its loss, not an output")
    let backward = try await stages[0].backward(
      BackwardCall(microBatch: microBatch, outputGradient: nil, schedulePosition: 0, weightsLater: false))
    #expect(backward.inputGradient == nil, "the first stage has no stage before it to send a gradient to")
    let commit = try await stages[0].commit(step: 1, flush: true)
    #expect(commit.version == 1)
    _ = try await Self.expectOneProcessStep(
      loss: try #require(forward.loss), penalty: commit.penalty, ps: ps, job: "verbs")
    await stages[0].close()
  }

  /// Two stages pass the activation and its gradient by reference on the
  /// data plane, the last one holding its weight gradients back for
  /// BackwardWeights (zero-bubble's W): one process's step. Then an
  /// inference through both gives the trained model's outputs.
  @Test func twoStagesWithHeldBackWeightGradientsAreOneProcess() async throws {
    let (stages, ps, _) = try await Self.loaded(job: "two", stages: [0..<1, 1..<2])
    let microBatch = MicroBatch(step: 1, index: 0)
    let first = try await stages[0].forward(
      ForwardCall(
        microBatch: microBatch, input: .value(Self.inputs), targets: nil, batchSize: 8, schedulePosition: 1,
        weightsAfterStep: nil))
    guard case .offered(let activation)? = first.output else {
      Issue.record("stage 0 offered no activation: \(String(describing: first.output))")
      return
    }
    let last = try await stages[1].forward(
      ForwardCall(
        microBatch: microBatch, input: .reference(activation), targets: Self.labels, batchSize: 8,
        schedulePosition: 1, weightsAfterStep: nil))
    #expect(last.timing.inputRequested > 0, "the input was fetched by its reference")
    let lastBackward = try await stages[1].backward(
      BackwardCall(microBatch: microBatch, outputGradient: nil, schedulePosition: 2, weightsLater: true))
    let early = await #expect(throws: StageError.self, "a commit before the held-back weight gradients") {
      try await stages[1].commit(step: 1, flush: true)
    }
    #expect(early?.rpcError.code == .failedPrecondition && early?.message.contains("BackwardWeights") == true)
    _ = try await stages[1].backwardWeights(microBatch, schedulePosition: 3)
    let firstBackward = try await stages[0].backward(
      BackwardCall(
        microBatch: microBatch, outputGradient: .reference(try #require(lastBackward.inputGradient)),
        schedulePosition: 2, weightsLater: false))
    #expect(firstBackward.inputGradient == nil)
    var penalty = 0.0
    for stage in stages { penalty += try await stage.commit(step: 1, flush: true).penalty }
    let trained = try await Self.expectOneProcessStep(
      loss: try #require(last.loss), penalty: penalty, ps: ps, job: "two")

    let inference = MicroBatch(step: -1, index: 0)
    guard case .value(let hidden)? = try await stages[0].infer(inference, input: .value(Self.inputs)).output,
      case .value(let outputs)? = try await stages[1].infer(inference, input: .value(hidden)).output
    else {
      Issue.record("a small inference output did not come back in the answer")
      return
    }
    let expected = try Sequential(spec: Self.spec)(Self.inputs, variables: trained)
    let worst = zip(outputs.scalars, expected.scalars).map { abs($0 - $1) }.max() ?? .infinity
    #expect(outputs.shape == expected.shape && worst < 1e-6, "the inference is off by \(worst)")
    for stage in stages { await stage.close() }
  }

  /// A call that comes before its turn waits for the step's calls before it;
  /// a repeated call gets the first one's answer without computing again.
  @Test func callsTakeTheirTurnsAndARepeatComputesNothing() async throws {
    let (stages, _, activity) = try await Self.loaded(job: "turns")
    func forward(_ index: Int32, position: Int32) async throws -> ForwardResult {
      try await stages[0].forward(
        ForwardCall(
          microBatch: MicroBatch(step: 1, index: index), input: .value(Self.inputs.slice(axis: 0, range: 0..<4)),
          targets: Self.labels.slice(axis: 0, range: 0..<4), batchSize: 8, schedulePosition: position,
          weightsAfterStep: nil))
    }
    let second = Task { try await forward(1, position: 2) }
    #expect(await eventually(timeout: .seconds(300)) { activity.snapshot.callsWaitingForTurn == 1 })
    #expect(activity.snapshot.forwards == 0, "position 2 computed before position 1")
    let first = try await forward(0, position: 1)
    _ = try await second.value
    #expect(activity.snapshot.forwards == 2)
    let repeated = try await forward(0, position: 1)
    #expect(repeated.timing == first.timing, "the repeat computed again: it has times of its own")
    #expect(activity.snapshot.forwards == 2, "the repeat computed again")
    await stages[0].close()
  }
}
