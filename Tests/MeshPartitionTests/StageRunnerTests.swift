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
/// with no protobuf and no sockets: the stage and its ps talk over the
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

  /// A one-stage job of `model` on a fresh ps, under sync consistency: the
  /// stage is its variables' sole writer and keeps them. Returns the stage
  /// and a ps client that reads what the stage flushed.
  static func loadedStage(job: String) async throws -> (StageRunner, ParameterServerClient, PartitionActivity) {
    let network = InProcessNetwork()
    _ = try network.serve([ParameterServerService(store: ParameterStore(), checkpointer: nil)], at: "ps-0.test:1")
    let dialer = network.dialer(identity: "partition")
    let activity = PartitionActivity()
    let stage = StageRunner(
      job: job, model: try Sequential(spec: spec), layers: 0..<2, stage: 0, replica: 0, recompute: false,
      maxKeptBytes: 1 << 20,
      peers: [],
      optimizer: .with {
        $0.sgd = .init()
        $0.learningRate = .with { $0.base = learningRate }
      }, ps: try ParameterServerClient(endpoints: ["ps-0.test:1"], dialer: dialer),
      dataPlane: DataPlane(endpoint: "partition-0.test:1", dialer: dialer), activity: activity)
    try await stage.start(consistency: JobConsistency(.with { $0.sync = .init() }))
    let reader = try ParameterServerClient(endpoints: ["ps-0.test:1"], dialer: dialer)
    reader.expect(variables: await stage.definitions.map { ($0.name, $0.shape.map { Int($0) }) })
    return (stage, reader, activity)
  }

  static let inputs = Tensor(shape: [8, 6], scalars: (0..<48).map { Float(($0 * 37) % 23) / 11 - 1 })
  static let labels = Tensor(shape: [8], scalars: (0..<8).map { Float($0 % 3) })

  /// A forward, a backward and a flushing commit of one micro-batch leave
  /// the loss and the weights that one process's gradient and SGD step give.
  @Test func oneStepOfTheVerbsIsOneProcesssStep() async throws {
    let (stage, ps, _) = try await Self.loadedStage(job: "verbs")
    let microBatch = MicroBatch(step: 1, index: 0)
    let forward = try await stage.forward(
      ForwardCall(
        microBatch: microBatch, input: .value(Self.inputs), targets: Self.labels, batchSize: 8, schedulePosition: 0,
        weightsAfterStep: nil))
    #expect(forward.output == nil, "the last stage answers its loss, not an output")
    let backward = try await stage.backward(
      BackwardCall(microBatch: microBatch, outputGradient: nil, schedulePosition: 0, weightsLater: false))
    #expect(backward.inputGradient == nil, "the first stage has no stage before it to send a gradient to")
    let commit = try await stage.commit(step: 1, flush: true)
    #expect(commit.version == 1)

    let model = try Sequential(spec: Self.spec)
    let initial = model.initialVariables()
    let (loss, gradients) = model.lossAndGradients(
      input: Self.inputs, target: Self.labels, variables: initial, context: ForwardContext(training: true))
    let stageLoss = try #require(forward.loss) + commit.penalty
    #expect(abs(stageLoss - Double(loss)) < 1e-6, "stage \(stageLoss), one process \(loss)")
    let pulled = try await ps.pull(job: "verbs", names: initial.keys.sorted())
    #expect(Set(pulled.keys) == Set(initial.keys))
    for (name, value) in initial {
      let gradient = try #require(gradients[name]).scalars
      let expected = value.scalars.enumerated().map { $1 - Self.learningRate * gradient[$0] }
      let trained = try #require(pulled[name]?.value).scalars
      let worst = zip(trained, expected).map { abs($0 - $1) }.max() ?? .infinity
      #expect(worst < 1e-6, "\(name) is off by \(worst)")
      #expect(trained != value.scalars, "\(name) moved")
    }
    await stage.close()
  }

  /// A call that comes before its turn waits for the step's calls before it;
  /// a repeated call gets the first one's answer without computing again.
  @Test func callsTakeTheirTurnsAndARepeatComputesNothing() async throws {
    let (stage, _, activity) = try await Self.loadedStage(job: "turns")
    func forward(_ index: Int32, position: Int32) async throws -> ForwardResult {
      try await stage.forward(
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
    await stage.close()
  }
}
