import Foundation
import MeshPipeline
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// One training step of one replica's pipeline: runs every stage's action
/// list concurrently, and commits each stage as soon as its own calls are
/// answered (a stage that finishes early updates its variables while the
/// others still compute). Only control messages, references and the step's
/// inputs and targets cross the coordinator; activations and gradients go
/// partition to partition.
///
/// A call names its input by the key the neighbour will hold it under (see
/// `DataPlaneKey`), so it need not wait for the neighbour's answer: the
/// partition's fetch waits for the tensor, and the dependency costs one
/// transfer between partitions, not a round trip through the coordinator. A
/// stage gets its next call while it still computes the previous one
/// (`callsAhead`); each call carries its position in the stage's list, and
/// the partition computes them in that order.
///
/// A Forward, Backward, BackwardWeights, GradientNorm or Commit that fails
/// with UNAVAILABLE (a dropped connection: the request may or may not have
/// arrived, the answer was lost) is sent again (`callRetry`): a partition
/// answers a repeated call of a micro-batch or a step from what it computed
/// (or is computing), never computing or applying it twice. A commit that
/// failed on the partition fails its repeats the same way.
///
/// Clipping by global norm (`clipGlobalNorm`) needs the norm over every
/// stage: each stage, its calls done, reports its gradients' sum of squares
/// (GradientNorm), and every stage commits with the same scale once all have.
/// The norm is the replica's: as TensorFlow's workers clip their own
/// gradients before they are aggregated.
struct PipelineRun {
  let job: String
  let step: Int64
  let replica: Int
  let schedule: PipelineSchedule
  /// The partitions of this replica, by stage.
  let stages: [any RPCChannel]
  /// Where each stage's tensors are fetched.
  let dataPlane: [String]
  let microBatches: [(input: Tensor, target: Tensor)]
  /// Whether each stage's commit returns only once the ps holds the step.
  let flush: Bool
  /// The step whose weights the micro-batches use, when the schedule's
  /// steps overlap (see `ScheduleKind.pipeDream2BW`); nil: each stage's newest.
  let weightsAfterStep: Int64?
  /// Clip the step's gradients to this norm over every stage; 0: no clipping.
  let clipGlobalNorm: Float
  let trace: TraceRecorder

  /// Calls a stage has outstanding at most: one computing, one arriving.
  static let callsAhead = 2

  /// How a pipeline call is sent again after UNAVAILABLE.
  static let callRetry = CallRetry(attempts: 3, firstPause: .milliseconds(100))

  struct Outcome {
    /// The mini-batch's mean loss (the micro-batches' shares and the
    /// stages' L2 penalties added up).
    var loss: Double = 0
    var correct: Int64 = 0
    /// Time each stage's partition spent computing.
    var busy: [Duration]
    /// Each stage's partition's memory, as its commit reported it.
    var memory: [Pipemesh_V1_ProcessMemory] = []
    /// The sum of squares of the stages' gradients (when clipping).
    var gradientSquares: Double = 0
  }

  /// What one call added to its stage's outcome.
  private struct CallResult: Sendable {
    var loss: Double = 0
    var correct: Int64 = 0
    var computeSeconds: Double
  }

  func run() async throws -> Outcome {
    guard clipGlobalNorm > 0 else {
      return try await eachStage { stage in
        var outcome = try await runCalls(stage: stage)
        try await commit(stage: stage, into: &outcome)
        return outcome
      }
    }
    var measured = try await eachStage { stage in
      var outcome = try await runCalls(stage: stage)
      outcome.gradientSquares = try await gradientNorm(stage: stage)
      return outcome
    }
    let scale = clipScale(sumOfSquares: measured.gradientSquares, maxNorm: clipGlobalNorm)
    let committed = try await eachStage { stage in
      var outcome = Outcome(busy: [.zero])
      try await commit(stage: stage, into: &outcome, gradientScale: scale)
      return outcome
    }
    measured.loss += committed.loss
    measured.memory = committed.memory
    return measured
  }

  /// Runs `body` for every stage concurrently and adds up their outcomes
  /// (each holds its stage's `busy` and `memory` only).
  private func eachStage(_ body: @escaping @Sendable (Int) async throws -> Outcome) async throws -> Outcome {
    try await withThrowingTaskGroup(of: (Int, Outcome).self) { group in
      for stage in stages.indices {
        group.addTask { (stage, try await body(stage)) }
      }
      var total = Outcome(
        busy: Array(repeating: .zero, count: stages.count), memory: Array(repeating: .init(), count: stages.count))
      for try await (stage, outcome) in group {
        total.loss += outcome.loss
        total.correct += outcome.correct
        total.gradientSquares += outcome.gradientSquares
        total.busy[stage] = outcome.busy[0]
        total.memory[stage] = outcome.memory.first ?? .init()
      }
      return total
    }
  }

  /// Sends `stage`'s action list, a few calls ahead; returns what they added up to.
  private func runCalls(stage: Int) async throws -> Outcome {
    try await withThrowingTaskGroup(of: CallResult.self) { calls in
      var outcome = Outcome(busy: [.zero])
      func add(_ result: CallResult) {
        outcome.loss += result.loss
        outcome.correct += result.correct
        outcome.busy[0] += .seconds(result.computeSeconds)
      }
      for (index, action) in schedule.actions[stage].enumerated() {
        if index >= Self.callsAhead, let done = try await calls.next() { add(done) }
        let call = prepare(action, stage: stage, position: Int32(index + 1))
        calls.addTask { try await perform(call) }
      }
      for try await done in calls { add(done) }
      return outcome
    }
  }

  /// A call to send.
  private enum Call: Sendable {
    case forward(PipelineAction, stage: Int, Pipemesh_V1_ForwardRequest)
    case backward(PipelineAction, stage: Int, Pipemesh_V1_BackwardRequest)
    case weights(PipelineAction, stage: Int, Pipemesh_V1_BackwardWeightsRequest)
  }

  private func prepare(_ action: PipelineAction, stage: Int, position: Int32) -> Call {
    let key = Pipemesh_V1_MicroBatchKey.with {
      $0.job = job
      $0.step = step
      $0.microBatch = Int32(action.microBatch)
    }
    switch action.kind {
    case .forward:
      var request = Pipemesh_V1_ForwardRequest()
      request.key = key
      request.schedulePosition = position
      if let weightsAfterStep { request.weightsAfterStep = weightsAfterStep }
      if stage == 0 {
        request.input.inline = Pipemesh_V1_Tensor(sharing: microBatches[action.microBatch].input)
      } else {
        request.input.reference = .with {
          $0.endpoint = dataPlane[stage - 1]
          $0.key = DataPlaneKey(key, .activation).wire
        }
      }
      if stage == stages.count - 1 {
        request.targets = Pipemesh_V1_Tensor(sharing: microBatches[action.microBatch].target)
        request.batchSize = Int32(microBatches.reduce(0) { $0 + $1.input.shape[0] })
      }
      return .forward(action, stage: stage, request)
    case .backward:
      var request = Pipemesh_V1_BackwardRequest()
      request.key = key
      request.schedulePosition = position
      if stage < stages.count - 1 {
        request.outputGradient.reference = .with {
          $0.endpoint = dataPlane[stage + 1]
          $0.key = DataPlaneKey(key, .gradient).wire
        }
      }
      request.weightsLater = schedule.splitsBackward(stage: stage, microBatch: action.microBatch)
      return .backward(action, stage: stage, request)
    case .weights:
      return .weights(
        action, stage: stage,
        .with {
          $0.key = key
          $0.schedulePosition = position
        })
    }
  }

  /// Ends the step on `stage`, its gradients multiplied by `gradientScale`;
  /// adds the L2 penalty of its variables to `outcome` and notes the
  /// partition's memory.
  private func commit(stage: Int, into outcome: inout Outcome, gradientScale: Float = 1) async throws {
    let committed = try await trace.record(
      nil, stage: stage, replica: replica, step: step, partition: stages[stage].target
    ) {
      try await callPartition(
        PartitionMethods.commit, stage: stage,
        .with {
          $0.job = job
          $0.step = step
          $0.flush = flush
          if gradientScale < 1 { $0.gradientScale = gradientScale }
        })
    }
    outcome.loss += committed.penalty
    outcome.memory = [committed.memory]
  }

  /// The sum of squares of `stage`'s gradients of the step (sent again
  /// after a lost answer: it changes nothing).
  private func gradientNorm(stage: Int) async throws -> Double {
    try await callPartition(
      PartitionMethods.gradientNorm, stage: stage,
      .with {
        $0.job = job
        $0.step = step
      }
    ).sumOfSquares
  }

  /// Calls `method` on `stage`'s partition, again after a lost answer.
  private func callPartition<Request, Response>(
    _ method: UnaryMethod<Request, Response>, stage: Int, _ request: Request
  )
    async throws -> Response
  {
    try await Self.callRetry.run(server: "the partition") { try await stages[stage].call(method, request) }
  }

  /// Sends `call` (again after a lost answer), noting its timing on the trace.
  private func perform(_ call: Call) async throws -> CallResult {
    func send<Request, Response: TimedResponse>(
      _ method: UnaryMethod<Request, Response>, _ request: Request, _ action: PipelineAction, stage: Int
    ) async throws -> Response {
      try await trace.record(action, stage: stage, replica: replica, step: step, partition: stages[stage].target) {
        try await callPartition(method, stage: stage, request)
      }
    }
    switch call {
    case .forward(let action, let stage, let request):
      let response = try await send(PartitionMethods.forward, request, action, stage: stage)
      return CallResult(
        loss: response.loss, correct: response.correct, computeSeconds: response.timing.computeSeconds)
    case .backward(let action, let stage, let request):
      let response = try await send(PartitionMethods.backward, request, action, stage: stage)
      return CallResult(computeSeconds: response.timing.computeSeconds)
    case .weights(let action, let stage, let request):
      let response = try await send(PartitionMethods.backwardWeights, request, action, stage: stage)
      return CallResult(computeSeconds: response.timing.computeSeconds)
    }
  }
}
