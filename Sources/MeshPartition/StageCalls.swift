import MeshTensor
import MeshWire

// The calls a stage answers (`StageRunner`), in the stage's own terms:
// tensors, micro-batches and the places tensors wait on the data plane. The
// protobuf messages that carry them stop at `PartitionService`
// (`StageCalls+Wire.swift` translates).

/// One micro-batch of a job's training step, or of an inference (whose
/// steps are numbered apart from training's).
struct MicroBatch: Hashable, Sendable, CustomStringConvertible {
  let step: Int64
  let index: Int32

  /// The data-plane key of this micro-batch's tensor of `kind` in `job`.
  func key(_ kind: DataPlaneKey.Kind, of job: String) -> DataPlaneKey {
    DataPlaneKey(job: job, step: step, microBatch: index, kind: kind)
  }

  var description: String { "step \(step) micro-batch \(index)" }
}

/// A tensor a partition's data plane holds for a neighbour to fetch.
struct TensorReference: Hashable, Sendable {
  /// The data-plane endpoint (`host:port`) of the partition that holds it.
  let endpoint: String
  let key: DataPlaneKey
}

/// A tensor a call hands a stage: in the call itself, or held by a
/// partition's data plane until the stage fetches it.
enum TensorSource: Sendable {
  case value(Tensor)
  case reference(TensorReference)
}

/// When a stage fetched a call's input, computed and offered its output:
/// Unix nanoseconds (`WallClock`), 0 for a moment the call did not have.
/// (When the call came and was answered the service notes itself.)
struct StageTiming: Sendable, Equatable {
  /// When the stage asked a neighbour for its input, and when it came
  /// (inputs given in the call are not fetched).
  var inputRequested: Int64 = 0
  var inputReceived: Int64 = 0
  var computeStarted: Int64 = 0
  var computeEnded: Int64 = 0
  /// When the output was offered on the data plane, for the neighbour.
  var outputOffered: Int64 = 0

  /// Seconds the call computed.
  var computeSeconds: Double { WallClock.seconds(from: computeStarted, to: computeEnded) }

  /// The input `source` names: the tensor itself, or the result of `fetch`
  /// for a reference, noting when it was asked for and when it came.
  mutating func resolving(
    _ source: TensorSource, fetch: (TensorReference) async throws -> Tensor
  ) async -> Result<Tensor, any Error> {
    switch source {
    case .value(let tensor): return .success(tensor)
    case .reference(let reference):
      inputRequested = WallClock.nanos
      defer { inputReceived = WallClock.nanos }
      do { return .success(try await fetch(reference)) } catch { return .failure(error) }
    }
  }
}

/// A training Forward: runs the stage on a micro-batch's input and keeps
/// what the micro-batch's backward needs.
struct ForwardCall: Sendable {
  let microBatch: MicroBatch
  let input: TensorSource
  /// The targets of the loss: given to the last stage only.
  let targets: Tensor?
  /// Examples in the whole mini-batch: the last stage weighs the
  /// micro-batch's mean loss by its share.
  let batchSize: Int
  /// Where the call comes among the step's Forward, Backward and
  /// BackwardWeights calls, from 1 (0: in no order).
  let schedulePosition: Int32
  /// The step after whose commit the weights are that the step runs on
  /// (PipeDream-2BW's weight stashing); nil: the stage's newest.
  let weightsAfterStep: Int64?
}

/// Where a stage's output waits for its reader.
enum StageOutput: Sendable {
  /// On this partition's data plane, for the next stage to fetch.
  case offered(TensorReference)
  /// In the answer (the last stage's inference output, or a small one the
  /// caller passes on itself).
  case value(Tensor)
}

/// A Forward's or an inference's answer.
struct ForwardResult: Sendable {
  /// Nil on the last stage in training, which answers the loss instead.
  var output: StageOutput?
  /// The micro-batch's share of the mini-batch's mean loss (the last stage
  /// in training).
  var loss: Double?
  /// Examples whose largest output is the target class (the last stage of a
  /// classifier, in training).
  var correct = 0
  var timing = StageTiming()
}

/// A Backward: the gradients of a micro-batch whose forward the stage ran.
struct BackwardCall: Sendable {
  let microBatch: MicroBatch
  /// The loss's gradient with respect to the stage's output; nil on the last
  /// stage, which computed it in its forward.
  let outputGradient: TensorSource?
  /// See `ForwardCall.schedulePosition`.
  let schedulePosition: Int32
  /// Whether the weight gradients wait for a BackwardWeights call (the W of
  /// a zero-bubble schedule) rather than being computed now.
  let weightsLater: Bool
}

/// A Backward's answer.
struct BackwardResult: Sendable {
  /// The gradient with respect to the stage's input, for the stage before;
  /// nil on the first stage.
  var inputGradient: TensorReference?
  var timing = StageTiming()
}

/// A Commit's answer.
struct CommitResult: Sendable {
  /// The lowest version among the stage's variables after the step.
  var version: Int64 = 0
  /// The L2 penalty of the weights the step ran on.
  var penalty: Double = 0
  /// Bytes the job holds on this stage at its fullest (variables, optimizer
  /// slots and the running steps' gradient sums), and the process's
  /// resident bytes now and at their peak, read before the update.
  var jobBytes = 0
  var residentBytes = 0
  var peakResidentBytes = 0
}
