import Foundation
import MeshPipeline
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// One training step of one replica's pipeline: runs every stage's action
/// list concurrently, each action once its dependencies posted their results.
/// Only control messages, references and the step's inputs and targets cross
/// the coordinator; activations and gradients go partition to partition.
struct PipelineRun {
  let job: String
  let step: Int64
  let replica: Int
  let schedule: PipelineSchedule
  /// The partitions of this replica, by stage.
  let stages: [RPCClient]
  let microBatches: [(input: Tensor, target: Tensor)]
  let trace: TraceRecorder

  struct Outcome {
    /// The mini-batch's mean loss (the micro-batches' shares added up).
    var loss: Double = 0
    var correct: Int64 = 0
    /// Time each stage spent in its calls.
    var busy: [Duration]
  }

  func run() async throws -> Outcome {
    let board = ActionBoard()
    let batchSize = Int32(microBatches.reduce(0) { $0 + $1.input.shape[0] })
    let last = stages.count - 1
    return try await withThrowingTaskGroup(of: (Int, Outcome).self) { group in
      for stage in stages.indices {
        group.addTask {
          var outcome = Outcome(busy: [.zero])
          for action in schedule.actions[stage] {
            let key = Pipemesh_V1_MicroBatchKey.with {
              $0.job = job
              $0.step = step
              $0.microBatch = Int32(action.microBatch)
            }
            switch action.kind {
            case .forward:
              var request = Pipemesh_V1_ForwardRequest()
              request.key = key
              if stage == 0 {
                request.input.inline = Pipemesh_V1_Tensor(microBatches[action.microBatch].input)
              } else if case .forward(let previous) = try await board.result(of: .forward(stage - 1, action.microBatch)) {
                request.input.reference = previous.output
              }
              if stage == last {
                request.targets = Pipemesh_V1_Tensor(microBatches[action.microBatch].target)
                request.batchSize = batchSize
              }
              let (response, duration) = try await trace.record(action.description, stage: stage, replica: replica, step: step) {
                try await stages[stage].call(PartitionMethods.forward, request)
              }
              outcome.busy[0] += duration
              outcome.loss += response.loss
              outcome.correct += response.correct
              await board.post(action, .forward(response))
            case .backward:
              var request = Pipemesh_V1_BackwardRequest()
              request.key = key
              _ = try await board.result(of: .forward(stage, action.microBatch))
              if stage < last, case .backward(let next) = try await board.result(of: .backward(stage + 1, action.microBatch)) {
                request.outputGradient.reference = next.inputGradient
              }
              let (response, duration) = try await trace.record(action.description, stage: stage, replica: replica, step: step) {
                try await stages[stage].call(PartitionMethods.backward, request)
              }
              outcome.busy[0] += duration
              await board.post(action, .backward(response))
            }
          }
          return (stage, outcome)
        }
      }
      var total = Outcome(busy: Array(repeating: .zero, count: stages.count))
      for try await (stage, outcome) in group {
        total.loss += outcome.loss
        total.correct += outcome.correct
        total.busy[stage] = outcome.busy[0]
      }
      return total
    }
  }
}
