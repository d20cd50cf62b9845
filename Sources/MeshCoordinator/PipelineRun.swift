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
/// A Forward, Backward or BackwardWeights that fails with UNAVAILABLE (a
/// dropped connection: the request may or may not have arrived, the answer
/// was lost) is sent again (`callRetry`): a partition answers a
/// repeated call of a micro-batch from what it computed (or is computing),
/// never computing it twice. A Commit is not sent again: one that failed may
/// have updated the stage's weights and given up its gradients (the
/// partition sends its own calls to the ps again), so it fails the step.
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
  let trace: TraceRecorder

  /// Calls a stage has outstanding at most: one computing, one arriving.
  static let callsAhead = 2

  /// How a Forward, Backward or BackwardWeights is sent again after UNAVAILABLE.
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
  }

  /// What one call added to its stage's outcome.
  private struct CallResult: Sendable {
    var loss: Double = 0
    var correct: Int64 = 0
    var computeSeconds: Double
  }

  func run() async throws -> Outcome {
    try await withThrowingTaskGroup(of: (Int, Outcome).self) { group in
      for stage in stages.indices {
        group.addTask {
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
            let committed = try await commit(stage: stage)
            outcome.loss += committed.penalty
            outcome.memory = [committed.memory]
            return (stage, outcome)
          }
        }
      }
      var total = Outcome(
        busy: Array(repeating: .zero, count: stages.count), memory: Array(repeating: .init(), count: stages.count))
      for try await (stage, outcome) in group {
        total.loss += outcome.loss
        total.correct += outcome.correct
        total.busy[stage] = outcome.busy[0]
        total.memory[stage] = outcome.memory[0]
      }
      return total
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

  /// Ends the step on `stage`; returns the L2 penalty of its variables and
  /// the partition's memory.
  private func commit(stage: Int) async throws -> Pipemesh_V1_CommitResponse {
    try await trace.record(nil, stage: stage, replica: replica, step: step, partition: stages[stage].target) {
      try await stages[stage].call(
        PartitionMethods.commit,
        .with {
          $0.job = job
          $0.step = step
          $0.flush = flush
        })
    }
  }

  /// Sends `call` (again after a lost answer), noting its timing on the trace.
  private func perform(_ call: Call) async throws -> CallResult {
    func send<Request, Response: TimedResponse>(
      _ method: UnaryMethod<Request, Response>, _ request: Request, _ action: PipelineAction, stage: Int
    ) async throws -> Response {
      try await trace.record(action, stage: stage, replica: replica, step: step, partition: stages[stage].target) {
        try await Self.callRetry.run(server: "the partition") { try await stages[stage].call(method, request) }
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
