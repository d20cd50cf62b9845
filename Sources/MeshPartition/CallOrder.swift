import MeshRPC

// How a stage orders the calls it answers: each call computed once however
// often it is repeated, and a step's calls computed in its schedule's order.

/// Runs each key's call once: the first request starts `compute`, and a
/// repeated one (a retry, even while the first still runs) gets the same
/// task. The caller forgets a failed call, so that a retry runs it again.
struct CallOnce<Key: Hashable & Sendable, Value: Sendable> {
  /// Each key's call, and how many requests for it came without leaving.
  private var calls: [Key: (task: Task<Value, any Error>, callers: Int)] = [:]

  mutating func call(_ key: Key, _ compute: @escaping @Sendable () async throws -> Value) -> Task<Value, any Error> {
    if let running = calls[key] {
      calls[key]!.callers += 1
      return running.task
    }
    let task = Task { try await compute() }
    calls[key] = (task, 1)
    return task
  }

  /// Notes that a request for `task`, the call of `key`, stopped waiting
  /// for it; true when it was the last.
  mutating func leave(_ key: Key, _ task: Task<Value, any Error>) -> Bool {
    guard calls[key]?.task == task else { return false }
    calls[key]!.callers -= 1
    return calls[key]!.callers == 0
  }

  /// Forgets `task`, the failed call of `key`, unless a retry replaced it.
  mutating func forgetFailed(_ key: Key, _ task: Task<Value, any Error>) {
    if calls[key]?.task == task { calls[key] = nil }
  }

  /// Forgets the call of `key` if every request for it left; whether it did.
  mutating func dropIfAbandoned(_ key: Key) -> Bool {
    guard calls[key]?.callers == 0 else { return false }
    calls[key] = nil
    return true
  }

  mutating func forget(where isDone: (Key) -> Bool) {
    calls = calls.filter { !isDone($0.key) }
  }
}

/// A step's calls in schedule-position order: position p computes once
/// positions 1..<p have (a repeated position, a retry, goes at once).
/// Committed steps, and all steps once the job is unloaded, are closed:
/// their waiting calls fail, and so do later ones.
struct ScheduleTurns {
  /// A call parked until its turn.
  private struct Waiter {
    let call: TurnCall
    let continuation: CheckedContinuation<Void, any Error>
  }

  private var next: [Int64: Int32] = [:]
  private var waiting: [Int64: [Int32: Waiter]] = [:]
  /// The first failed position of a step, and its error.
  private var failures: [Int64: (position: Int32, error: any Error)] = [:]
  /// Steps 1 through this one are committed.
  private var closedThrough: Int64 = 0
  private var closedThroughError: StageError?
  /// Set when the job is unloaded.
  private var closedError: StageError?

  /// Why a call of `step` may not run any more, if so.
  func closed(step: Int64) -> StageError? {
    closedError ?? (step >= 1 && step <= closedThrough ? closedThroughError : nil)
  }

  func isTurn(step: Int64, position: Int32) -> Bool { position <= next[step, default: 1] }

  func isWaiting(step: Int64, position: Int32) -> Bool { waiting[step]?[position] != nil }

  /// Parks `call` until the turn of `position` in its step.
  mutating func wait(_ call: TurnCall, position: Int32, _ continuation: CheckedContinuation<Void, any Error>) {
    waiting[call.microBatch.step, default: [:]][position] = Waiter(call: call, continuation: continuation)
  }

  /// Ends the wait of `call` with `error`; false when it does not wait.
  mutating func endWait(of call: TurnCall, _ error: StageError) -> Bool {
    let step = call.microBatch.step
    guard let position = waiting[step]?.first(where: { $0.value.call == call })?.key else { return false }
    waiting[step]![position]!.continuation.resume(throwing: error)
    waiting[step]![position] = nil
    return true
  }

  /// The failure of a call of `step` before `position`, if any.
  func failure(step: Int64, before position: Int32) -> (Int32, any Error)? {
    failures[step].flatMap { $0.position < position ? ($0.position, $0.error) : nil }
  }

  /// Passes the turn on from `position` (noting `failure` for the later calls).
  mutating func finish(step: Int64, position: Int32, failure: (any Error)? = nil) {
    if let failure {
      if failures[step].map({ position < $0.position }) ?? true { failures[step] = (position, failure) }
    } else if failures[step]?.position == position {
      failures[step] = nil  // a retry of the failed call succeeded
    }
    let following = max(next[step, default: 1], position + 1)
    next[step] = following
    waiting[step]?.removeValue(forKey: following)?.continuation.resume()
  }

  /// Closes steps 1 through `step` (committed): fails their waiting calls
  /// with `error`, and later calls of those steps too.
  mutating func abandon(through step: Int64, _ error: StageError) {
    if step > closedThrough {
      closedThrough = step
      closedThroughError = error
    }
    end(with: error) { $0 <= step }
  }

  /// Closes every step (the job was unloaded).
  mutating func close(_ error: StageError) {
    closedError = error
    end(with: error) { _ in true }
  }

  private mutating func end(with error: StageError, steps: (Int64) -> Bool) {
    for (step, waiters) in waiting where steps(step) {
      for waiter in waiters.values { waiter.continuation.resume(throwing: error) }
      waiting[step] = nil
    }
    next = next.filter { !steps($0.key) }
    failures = failures.filter { !steps($0.key) }
  }
}

/// A call of a step that takes its turn in the step's schedule order.
enum TurnCall: Hashable, CustomStringConvertible {
  case forward(MicroBatch)
  case backward(MicroBatch)
  case weights(MicroBatch)

  var microBatch: MicroBatch {
    switch self {
    case .forward(let microBatch), .backward(let microBatch), .weights(let microBatch): microBatch
    }
  }

  var description: String {
    switch self {
    case .forward(let microBatch): "the forward of \(microBatch)"
    case .backward(let microBatch): "the backward of \(microBatch)"
    case .weights(let microBatch): "the weight gradients of \(microBatch)"
    }
  }
}
