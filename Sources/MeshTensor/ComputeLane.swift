import Dispatch
import Synchronization

/// Runs CPU-bound work (timing a model, solving normal equations) on
/// dispatch threads of its own rather than on Swift's cooperative threads,
/// which must stay free to serve calls; at most `width` pieces at once, and
/// more are refused rather than queued, so callers cannot pile work up.
public final class ComputeLane: Sendable {
  /// Pieces of work that may run at once.
  public let width: Int
  private let queue: DispatchQueue
  private let running = Mutex(0)

  public init(label: String, width: Int = 1) {
    precondition(width >= 1, "a lane runs at least one piece of work")
    self.width = width
    queue = DispatchQueue(label: label, qos: .utility, attributes: width > 1 ? .concurrent : [])
  }

  /// Runs `work` on the lane and returns its result; throws `busy` at once
  /// when `width` pieces run already. `work` is handed a check that turns
  /// true once the calling task is cancelled (its caller gave up), for work
  /// that can stop early.
  public func run<Result: Sendable>(
    orThrow busy: @autoclosure () -> any Error,
    _ work: @escaping @Sendable (_ cancelled: @Sendable () -> Bool) throws -> Result
  ) async throws -> Result {
    let admitted = running.withLock { running in
      guard running < width else { return false }
      running += 1
      return true
    }
    guard admitted else { throw busy() }
    let cancellation = Cancellation()
    return try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { continuation in
        queue.async { [self] in
          let result = Swift.Result { try work { cancellation.flag.load(ordering: .relaxed) } }
          // Free before the caller resumes, so that it may run again at once.
          running.withLock { $0 -= 1 }
          continuation.resume(with: result)
        }
      }
    } onCancel: {
      cancellation.flag.store(true, ordering: .relaxed)
    }
  }

  /// Whether the task that handed work to the lane was cancelled.
  private final class Cancellation: Sendable {
    let flag = Atomic(false)
  }
}
