/// Sends a call again after UNAVAILABLE, for calls whose server applies a
/// request once however often it arrives: UNAVAILABLE means a dropped
/// connection or a server restarting, so the request may or may not have
/// arrived and the answer was lost. A repeat that fails otherwise fails as
/// UNAVAILABLE naming both answers: the call's fate is unknown (a server
/// that answers differently has most likely restarted without the caller's
/// state), which the caller's own recovery (a restart from a checkpoint)
/// cures.
public struct CallRetry: Sendable {
  /// How many times a call is sent at most.
  public let attempts: Int
  /// The pause before the second attempt, doubling for each after it.
  public let firstPause: Duration

  public init(attempts: Int = 3, firstPause: Duration = .milliseconds(100)) {
    precondition(attempts >= 1, "a call is sent at least once")
    self.attempts = attempts
    self.firstPause = firstPause
  }

  /// `send`, again after each UNAVAILABLE while attempts are left; `server`
  /// names who answered in the error of a repeat (`the partition`).
  public func run<Response>(
    server: String, isolation: isolated (any Actor)? = #isolation, _ send: () async throws -> Response
  ) async throws -> Response {
    var pause = firstPause
    var lost: RPCError?
    for attempt in 1...attempts {
      do {
        return try await send()
      } catch let error where error is RPCError || error is any RPCErrorConvertible {
        // What the call's failure means to the caller, thrown in this process or answered.
        let status = RPCError(answering: error)
        if status.code == .unavailable && attempt < attempts {
          lost = lost ?? status
          try await Task.sleep(for: pause)
          pause *= 2
          continue
        }
        guard let lost, status.code != .cancelled else { throw error }
        throw RPCError(.unavailable, "\(lost.message); sent again, \(server) answered \(status)")
      }
    }
    preconditionFailure("the last attempt returns or throws")
  }
}
