import MeshRPC
import MeshTensor
import MeshWire
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

  /// The outputs of one request, and the timeline of the batch it ran in
  /// when it asked for one.
  typealias Answer = (outputs: Tensor, trace: TraceRecorder?)

  /// The outputs for `inputs` (at most `maxRows` rows) through the stages of
  /// `runID`; with requests for the same stages that arrive meanwhile. With
  /// `traced`, the batch's calls are noted on a trace that comes with them.
  func infer(_ inputs: Tensor, runID: String, stages: [any RPCChannel], traced: Bool = false) async throws -> Answer {
    let key = Lane.Key(runID: runID, endpoints: stages.map(\.target))
    let id = Lane.RequestID()
    try Task.checkCancellation()
    return try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { continuation in
        let batch = lanes.withLock { lanes -> Lane.Batch? in
          var lane = lanes[key] ?? Lane(stages: stages)
          lane.continuations[id] = continuation
          lane.waiting.append(Lane.Request(id: id, inputs: inputs, traced: traced))
          let batch = lane.nextBatch(maxRows: maxRows)
          lanes[key] = lane
          return batch
        }
        if let batch { run(batch, key: key) }
        // Cancelled before the handler below was in place: it found nothing to take out.
        if Task.isCancelled { cancel(id, key: key) }
      }
    } onCancel: {
      cancel(id, key: key)
    }
  }

  /// Answers request `id` with CancellationError if it is not answered yet:
  /// a waiting request leaves the queue; one in a running batch leaves its
  /// rows to be dropped, and a batch left with no request is cancelled (its
  /// calls too), so that a stage that hangs holds no room for nobody.
  private func cancel(_ id: Lane.RequestID, key: Lane.Key) {
    let (continuation, abandoned) = lanes.withLock {
      lanes -> (CheckedContinuation<Answer, any Error>?, Task<Void, Never>?) in
      guard var lane = lanes[key] else { return (nil, nil) }
      defer { lanes[key] = lane.isIdle ? nil : lane }
      return lane.cancel(id)
    }
    continuation?.resume(throwing: CancellationError())
    abandoned?.cancel()
  }

  /// Runs `batch` in a task of its own (no request's cancellation stops the
  /// others'), answers its requests, and starts the lane's next batch.
  private func run(_ batch: Lane.Batch, key: Lane.Key) {
    let task = Task {
      events?.inferenceBatchStarted(rows: batch.rows, requests: batch.requests.count)
      let inputs =
        batch.requests.count == 1 ? batch.requests[0].inputs : Tensor.concatenate(batch.requests.map(\.inputs))
      let trace = batch.requests.contains(where: \.traced) ? TraceRecorder() : nil
      let started = WallClock.nanos
      let outcome: Result<Tensor, any Error>
      do {
        outcome = .success(
          try await Inference.run(inputs, job: key.runID, stages: batch.stages, chunk: inputs.shape[0], trace: trace))
      } catch {
        outcome = .failure(error)
      }
      trace?.record(
        .init(
          track: "batches", name: "batch of \(batch.rows) rows", category: "batch", start: started,
          end: WallClock.nanos, args: ["requests": batch.requests.count, "rows": batch.rows]))
      var row = 0
      var answers: [(Lane.RequestID, Result<Answer, any Error>)] = []
      for request in batch.requests {
        let rows = request.inputs.shape[0]
        // A request alone in its batch takes the outputs as they are, without a copy.
        let whole = batch.requests.count == 1
        answers.append(
          (request.id, outcome.map { (whole ? $0 : $0.slice(axis: 0, range: row..<(row + rows)), trace) }))
        row += rows
      }
      let (continuations, next) = lanes.withLock { lanes in
        // A lane stays while a batch of it is in flight.
        var lane = lanes[key]!
        let continuations = answers.compactMap { id, answer in
          lane.continuations.removeValue(forKey: id).map { ($0, answer) }
        }
        lane.running[batch.id] = nil
        let next = lane.nextBatch(maxRows: maxRows)
        lanes[key] = lane.isIdle ? nil : lane
        return (continuations, next)
      }
      for (continuation, answer) in continuations { continuation.resume(with: answer) }
      if let next { run(next, key: key) }
    }
    // Every request of the batch may have gone before its task existed.
    let abandoned = lanes.withLock { lanes -> Bool in
      guard lanes[key]?.running[batch.id] != nil else { return false }
      lanes[key]!.running[batch.id]!.task = task
      return lanes[key]!.running[batch.id]!.live.isEmpty
    }
    if abandoned { task.cancel() }
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
      let traced: Bool
    }
    struct Batch {
      let id: Int
      let requests: [Request]
      let stages: [any RPCChannel]
      var rows: Int { requests.reduce(0) { $0 + $1.inputs.shape[0] } }
    }
    /// A batch in flight: its requests not answered or gone yet, and its task.
    struct Running {
      var live: Set<RequestID>
      var task: Task<Void, Never>?
    }

    let stages: [any RPCChannel]
    /// Requests not in a batch yet, oldest first.
    var waiting: [Request] = []
    /// Every request not answered yet, waiting or in a running batch.
    var continuations: [RequestID: CheckedContinuation<Answer, any Error>] = [:]
    /// The batches in flight, by id.
    var running: [Int: Running] = [:]
    var lastBatch = 0

    init(stages: [any RPCChannel]) { self.stages = stages }

    var isIdle: Bool { running.isEmpty && waiting.isEmpty }

    /// The oldest waiting requests, up to `maxRows` rows, when the pipeline
    /// has room for another batch (one per stage, and one more: fewer
    /// batches in flight make larger ones, which cost less per row).
    mutating func nextBatch(maxRows: Int) -> Batch? {
      guard !waiting.isEmpty, running.count < stages.count + 1 else { return nil }
      var rows = 0
      var taken = 0
      while taken < waiting.count, taken == 0 || rows + waiting[taken].inputs.shape[0] <= maxRows {
        rows += waiting[taken].inputs.shape[0]
        taken += 1
      }
      let requests = Array(waiting.prefix(taken))
      waiting.removeFirst(taken)
      lastBatch += 1
      running[lastBatch] = Running(live: Set(requests.map(\.id)))
      return Batch(id: lastBatch, requests: requests, stages: stages)
    }

    /// Takes request `id` out: its continuation when it was not answered
    /// yet, and the task of a batch it leaves with no request.
    mutating func cancel(_ id: RequestID) -> (CheckedContinuation<Answer, any Error>?, Task<Void, Never>?) {
      waiting.removeAll { $0.id == id }
      var abandoned: Task<Void, Never>?
      for (batch, var entry) in running where entry.live.remove(id) != nil {
        running[batch] = entry
        if entry.live.isEmpty { abandoned = entry.task }
      }
      return (continuations.removeValue(forKey: id), abandoned)
    }
  }
}

/// What inference batching reports (the coordinator's metrics).
public protocol InferenceEvents: Sendable {
  /// A batch of `requests` requests, `rows` rows in all, starts through the stages.
  func inferenceBatchStarted(rows: Int, requests: Int)
}
