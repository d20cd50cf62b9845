import MeshRPC
import MeshTensor
import Synchronization

/// Batches concurrent small inferences of one model, as inference servers
/// do: a request that finds its model's pipeline with room runs at once;
/// one that finds it full (a batch in flight per stage, and one more) waits
/// and leaves with every request that came meanwhile, as one batch of at
/// most `maxRows` rows. A request never waits longer than a batch in flight
/// takes, and under load the stages multiply many rows at a time instead
/// of one.
final class InferenceBatching: Sendable {
  /// The most rows a batch gathers; larger requests run on their own.
  let maxRows: Int
  private let lanes = Mutex<[Lane.Key: Lane]>([:])
  private let events: (any InferenceEvents)?

  init(maxRows: Int, events: (any InferenceEvents)?) {
    self.maxRows = maxRows
    self.events = events
  }

  /// Requests waiting for room in their pipeline, in every lane.
  var waitingRequests: Int { lanes.withLock { $0.values.reduce(0) { $0 + $1.waiting.count } } }

  /// The outputs for `inputs` (at most `maxRows` rows) through the stages of
  /// `runID`; with requests for the same stages that arrive meanwhile.
  func infer(_ inputs: Tensor, runID: String, stages: [any RPCChannel]) async throws -> Tensor {
    let key = Lane.Key(runID: runID, endpoints: stages.map(\.target))
    let id = Lane.RequestID()
    try Task.checkCancellation()
    return try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { continuation in
        let batch = lanes.withLock { lanes -> Lane.Batch? in
          var lane = lanes[key] ?? Lane(stages: stages)
          lane.continuations[id] = continuation
          lane.waiting.append(Lane.Request(id: id, inputs: inputs))
          let batch = lane.nextBatch(maxRows: maxRows)
          lanes[key] = lane
          return batch
        }
        if let batch { run(batch, key: key) }
      }
    } onCancel: {
      // A request that has not left yet is taken out; one in a running
      // batch is answered now, and its rows dropped when the batch ends.
      let continuation = lanes.withLock { $0[key]?.remove(id) }
      continuation?.resume(throwing: CancellationError())
    }
  }

  /// Runs `batch` in a task of its own (no request's cancellation stops the
  /// others'), answers its requests, and starts the lane's next batch.
  private func run(_ batch: Lane.Batch, key: Lane.Key) {
    Task {
      events?.inferenceBatchStarted(rows: batch.rows, requests: batch.requests.count)
      let inputs =
        batch.requests.count == 1 ? batch.requests[0].inputs : Tensor.concatenate(batch.requests.map(\.inputs))
      let outcome: Result<Tensor, any Error>
      do {
        outcome = .success(
          try await Inference.run(inputs, job: key.runID, stages: batch.stages, chunk: inputs.shape[0]))
      } catch {
        outcome = .failure(error)
      }
      var row = 0
      var answers: [(Lane.RequestID, Result<Tensor, any Error>)] = []
      for request in batch.requests {
        let rows = request.inputs.shape[0]
        answers.append((request.id, outcome.map { $0.slice(axis: 0, range: row..<(row + rows)) }))
        row += rows
      }
      let (continuations, next) = lanes.withLock { lanes in
        // A lane stays while a batch of it is in flight.
        var lane = lanes[key]!
        let continuations = answers.compactMap { id, answer in lane.remove(id).map { ($0, answer) } }
        lane.inFlight -= 1
        let next = lane.nextBatch(maxRows: maxRows)
        lanes[key] = lane.isIdle ? nil : lane
        return (continuations, next)
      }
      for (continuation, answer) in continuations { continuation.resume(with: answer) }
      if let next { run(next, key: key) }
    }
  }

  /// The requests for one run's stages: waiting, and the batches in flight.
  private struct Lane {
    struct Key: Hashable {
      let runID: String
      let endpoints: [String]
    }
    final class RequestID: Hashable, Sendable {
      static func == (lhs: RequestID, rhs: RequestID) -> Bool { lhs === rhs }
      func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
    }
    struct Request {
      let id: RequestID
      let inputs: Tensor
    }
    struct Batch {
      let requests: [Request]
      let stages: [any RPCChannel]
      var rows: Int { requests.reduce(0) { $0 + $1.inputs.shape[0] } }
    }

    let stages: [any RPCChannel]
    /// Requests not in a batch yet, oldest first.
    var waiting: [Request] = []
    /// Every request not answered yet, waiting or in a running batch.
    var continuations: [RequestID: CheckedContinuation<Tensor, any Error>] = [:]
    var inFlight = 0

    init(stages: [any RPCChannel]) { self.stages = stages }

    var isIdle: Bool { inFlight == 0 && waiting.isEmpty }

    /// The oldest waiting requests, up to `maxRows` rows, when the pipeline
    /// has room for another batch (one per stage, and one more: fewer
    /// batches in flight make larger ones, which cost less per row).
    mutating func nextBatch(maxRows: Int) -> Batch? {
      guard !waiting.isEmpty, inFlight < stages.count + 1 else { return nil }
      var rows = 0
      var taken = 0
      while taken < waiting.count, taken == 0 || rows + waiting[taken].inputs.shape[0] <= maxRows {
        rows += waiting[taken].inputs.shape[0]
        taken += 1
      }
      inFlight += 1
      defer { waiting.removeFirst(taken) }
      return Batch(requests: Array(waiting.prefix(taken)), stages: stages)
    }

    /// Forgets request `id`, waiting or in flight; its continuation when it
    /// had not been answered.
    mutating func remove(_ id: RequestID) -> CheckedContinuation<Tensor, any Error>? {
      waiting.removeAll { $0.id == id }
      return continuations.removeValue(forKey: id)
    }
  }
}

/// What inference batching reports (the coordinator's metrics).
public protocol InferenceEvents: Sendable {
  /// A batch of `requests` requests, `rows` rows in all, starts through the stages.
  func inferenceBatchStarted(rows: Int, requests: Int)
}
