import MeshRPC

/// When a training step is taken to hang. A step runs past its deadline
/// after `factor` times the median of the job's recent steps (at least
/// `floor`; `firstSteps` before there are any): the median, so that one
/// slow step does not stretch the deadlines after it. It is not failed then
/// without a look: every member of the job (its partitions and the ps
/// tasks) is asked to answer within `probeTimeout`. One that does not (a
/// stopped process, a host that froze) fails the step with
/// DEADLINE_EXCEEDED naming it. When all answer, the step is slow, not hung
/// (a host shared with other work, a machine that swaps): it runs on and
/// they are asked again at each further deadline, until the step has run
/// `limit` deadlines; then it fails whatever they answer (a member that
/// answers but computes nothing, a tensor that will not come).
public struct StepDeadline: Sendable {
  public var factor: Int
  public var floor: Duration
  public var firstSteps: Duration
  public var probeTimeout: Duration
  public var limit: Int

  public init(
    factor: Int = 10, floor: Duration = .seconds(10), firstSteps: Duration = .seconds(120),
    probeTimeout: Duration = .seconds(5), limit: Int = 6
  ) {
    precondition(factor >= 1 && limit >= 1, "a step deadline is at least one step's time, given at least once")
    self.factor = factor
    self.floor = floor
    self.firstSteps = firstSteps
    self.probeTimeout = probeTimeout
    self.limit = limit
  }

  /// How many recent steps the deadline looks at.
  static let recentStepsCounted = 16

  /// The deadline of the next step, after steps that took `recent`.
  func after(_ recent: [Duration]) -> Duration {
    guard !recent.isEmpty else { return firstSteps }
    return max(floor, recent.sorted()[recent.count / 2] * factor)
  }

  /// A member of a job, as a probe names it.
  struct Member: Sendable {
    /// "stage 1 replica 0 (HOST:PORT)", "ps task 0 (HOST:PORT)".
    let name: String
    let channel: any RPCChannel
  }

  /// `body`, or DEADLINE_EXCEEDED once it has run past `deadline` and one
  /// of `members` does not answer, or has run `rounds` deadlines (`limit`
  /// when nil). `slow` hears of each deadline after the first `expected`
  /// that it runs past with every member answering (work of several
  /// deadlines' length is asked about at each, but slow only past them).
  func run<T: Sendable>(
    _ deadline: Duration, rounds: Int? = nil, expected: Int = 0, _ what: String, members: [Member],
    slow: @escaping @Sendable (Duration) -> Void, _ body: @escaping @Sendable () async throws -> T
  ) async throws -> T {
    let began = ContinuousClock.now
    let limit = max(1, rounds ?? limit)
    return try await racing(body) {
      for round in 1...limit {
        try await Task.sleep(until: began + deadline * round)
        let silent = await Self.silent(among: members, within: probeTimeout)
        // Ended meanwhile: the body's outcome decides.
        try Task.checkCancellation()
        guard silent.isEmpty else {
          throw CoordinatorError(
            .deadlinePassed,
            "\(what) ran past its deadline of \(deadline) and \(silent.joined(separator: ", ")) did not answer a "
              + "health check within \(probeTimeout): a stopped process or a host that froze")
        }
        if round < limit, round > expected { slow(ContinuousClock.now - began) }
      }
      throw CoordinatorError(
        .deadlinePassed,
        "\(what) ran past \(limit) deadlines of \(deadline) though every partition and ps task of the job answers "
          + "a health check: one may compute nothing or wait for a tensor that will not come")
    }
  }

  /// The names of `members` that do not answer within `timeout`.
  static func silent(among members: [Member], within timeout: Duration) async -> [String] {
    await withTaskGroup(of: String?.self) { group in
      for member in members {
        group.addTask { await member.channel.answers(within: timeout) ? nil : member.name }
      }
      return await group.reduce(into: []) { if let name = $1 { $0.append(name) } }.sorted()
    }
  }
}

/// `body`, or DEADLINE_EXCEEDED naming `what` once it runs past `deadline`.
func within<T: Sendable>(
  _ deadline: Duration, _ what: String, _ body: @escaping @Sendable () async throws -> T
) async throws -> T {
  try await racing(body) {
    try await Task.sleep(for: deadline)
    throw CoordinatorError(.deadlinePassed, "\(what) ran past \(deadline)")
  }
}

/// `body`, or the error `watchdog` throws first; the other is cancelled. A
/// watchdog that returns leaves `body` to end.
func racing<T: Sendable>(
  _ body: @escaping @Sendable () async throws -> T, watchdog: @escaping @Sendable () async throws -> Void
) async throws -> T {
  try await withThrowingTaskGroup(of: T?.self) { group in
    group.addTask { try await body() }
    group.addTask {
      try await watchdog()
      return nil
    }
    defer { group.cancelAll() }
    while let result = try await group.next() {
      if let value = result { return value }
    }
    throw CancellationError()
  }
}
