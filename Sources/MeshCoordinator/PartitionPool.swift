import MeshProto
import MeshRPC
import MeshWire
import Synchronization

/// Where a job's stages run: for each stage, the partitions of its replicas.
struct Placement: Sendable {
  /// `partitions[stage][replica]`.
  let partitions: [[String]]
  let clients: [[any RPCChannel]]

  var stages: Int { partitions.count }
  var replicas: Int { partitions[0].count }
  /// Replica 0 of every stage: the pipeline inference and evaluation run through.
  var firstReplica: [any RPCChannel] { clients.map { $0[0] } }

  /// `members` laid out stage by stage, a stage's replicas in order.
  init(_ members: [PartitionPool.Member], replicas: Int) {
    let stages = stride(from: 0, to: members.count, by: replicas).map { members[$0..<$0 + replicas] }
    partitions = stages.map { $0.map(\.endpoint) }
    clients = stages.map { $0.map(\.client) }
  }
}

/// The partitions a coordinator trains on, and the job that holds each: the
/// coordinator's `--partitions`, and partitions that joined (JoinPool) and
/// keep their lease. A training job holds stages × replicas partitions of
/// its own while it runs; jobs that find too few free wait in the order they
/// came (a job never passes one that waits before it, so a big job is not
/// starved). A partition that did not answer when last asked, or that is
/// leaving, is not given out. Inference shares partitions with training and
/// holds none.
final class PartitionPool: Sendable {
  /// One partition of the pool.
  struct Member: Sendable {
    let endpoint: String
    let client: any RPCChannel
  }

  private let state: Mutex<State>

  /// A member and how it stands.
  private struct Entry {
    let member: Member
    /// When a joined member's lease lapses; nil for a listed one.
    var lease: ContinuousClock.Instant?
    /// Leaving the pool (LeavePool): given to no job.
    var leaving = false
    /// What it admits a stage's parameters at, when it said.
    var budget: Int?
  }

  private struct State {
    /// In the order members are given out: the coordinator's layout stage
    /// by stage, then the joined ones in the order they came.
    var entries: [Entry]
    /// The run that holds each member, by endpoint.
    var holders: [String: String] = [:]
    /// Members that did not answer when last asked.
    var silent: Set<String> = []
    var waiting: [Waiter] = []
    /// Waits cancelled before they were queued.
    var cancelled: Set<UInt64> = []
    var nextTicket: UInt64 = 0
  }

  private struct Waiter {
    let ticket: UInt64
    let run: String
    let count: Int
    let continuation: CheckedContinuation<[Member], any Error>
    let onPosition: @Sendable (Int) -> Void
    /// The place in line it was last told (0: none yet).
    var told = 0
  }

  /// A pool of the coordinator's listed partitions.
  init(members: [Member]) {
    state = Mutex(State(entries: members.map { Entry(member: $0) }))
  }

  /// Every member, in the order they are given out.
  var members: [Member] { state.withLock { $0.entries.map(\.member) } }

  /// Every member's client, for calls that must reach wherever a run may
  /// have been loaded (unloads).
  var everyClient: [[any RPCChannel]] { [members.map(\.client)] }

  /// The partitions free now (neither held, silent nor leaving), and how
  /// many the first job in line waits for (nil: none waits).
  var vacancy: (free: Int, waiting: Int?) {
    state.withLock { state in (Self.free(in: state).count, state.waiting.first?.count) }
  }

  /// Whether a job of `count` partitions would wait now.
  func wouldWait(_ count: Int) -> Bool {
    state.withLock { state in !state.waiting.isEmpty || Self.free(in: state).count < count }
  }

  /// Adds a partition that joined, or renews its lease (and takes it back
  /// if it was leaving); returns whether it is new to the pool.
  @discardableResult
  func join(_ member: Member, lease: Duration) -> Bool {
    let (new, notices) = state.withLock { state -> (Bool, [() -> Void]) in
      let expiry = ContinuousClock.now + lease
      if let index = state.entries.firstIndex(where: { $0.member.endpoint == member.endpoint }) {
        if state.entries[index].lease != nil { state.entries[index].lease = expiry }
        state.entries[index].leaving = false
        return (false, grant(&state))
      }
      state.entries.append(Entry(member: member, lease: expiry))
      return (true, grant(&state))
    }
    for notice in notices { notice() }
    return new
  }

  /// Marks a member as leaving: no job is placed on it any more. Returns the
  /// run that still holds it (nil when none); NOT_FOUND for no member.
  func leave(_ endpoint: String) throws -> String? {
    try state.withLock { state in
      guard let index = state.entries.firstIndex(where: { $0.member.endpoint == endpoint }) else {
        throw CoordinatorError(.notKnown, "no partition \(endpoint.echoed) in this coordinator's pool")
      }
      state.entries[index].leaving = true
      return state.holders[endpoint]
    }
  }

  /// The first of `endpoints` that is leaving the pool, if any.
  func leaving(among endpoints: Set<String>) -> String? {
    state.withLock { state in
      state.entries.first { $0.leaving && endpoints.contains($0.member.endpoint) }?.member.endpoint
    }
  }

  /// Removes the joined members whose lease has lapsed; returns their endpoints.
  func expireLeases() -> [String] {
    let now = ContinuousClock.now
    return state.withLock { state in
      let lapsed = state.entries.filter { $0.lease.map { $0 < now } ?? false }.map(\.member.endpoint)
      state.entries.removeAll { lapsed.contains($0.member.endpoint) }
      state.silent.subtract(lapsed)
      return lapsed
    }
  }

  /// Every member as GetPool shows it.
  var status: [Pipemesh_V1_PoolMember] {
    let now = ContinuousClock.now
    return state.withLock { state in
      state.entries.map { entry in
        let endpoint = entry.member.endpoint
        return .with {
          $0.endpoint = endpoint
          $0.job = state.holders[endpoint].map { Self.jobName(ofRun: $0) } ?? ""
          $0.state =
            entry.leaving
            ? .leaving
            : state.silent.contains(endpoint) ? .silent : state.holders[endpoint] != nil ? .busy : .free
          $0.joined = entry.lease != nil
          $0.leaseSecondsLeft = entry.lease.map { max(0, ($0 - now).seconds) } ?? 0
          $0.memoryBudgetBytes = Int64(entry.budget ?? 0)
        }
      }
    }
  }

  /// A job's name from its run id (`NAME.8HEX`).
  static func jobName(ofRun run: String) -> String {
    guard let dot = run.lastIndex(of: ".") else { return run }
    return String(run[..<dot])
  }

  /// Waits for `stages × replicas` free partitions, in line behind the jobs
  /// that wait already (`first`: ahead of them, for a job that held its
  /// partitions until a member failed under it), and holds them for `run`
  /// until `release`. `onPosition` hears the place in line (1: next) each
  /// time it changes. Cancelling the task ends the wait.
  func acquire(
    stages: Int, replicas: Int, for run: String, first: Bool = false,
    onPosition: @escaping @Sendable (Int) -> Void
  ) async throws -> Placement {
    let size = members.count
    guard stages * replicas <= size else {
      throw CoordinatorError(
        .invalidRequest,
        "stages \(stages) × replicas \(replicas) needs \(stages * replicas) partitions; the pool has \(size)")
    }
    let ticket = state.withLock { state in
      defer { state.nextTicket += 1 }
      return state.nextTicket
    }
    let members = try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<[Member], any Error>) in
        let waiter = Waiter(
          ticket: ticket, run: run, count: stages * replicas, continuation: continuation, onPosition: onPosition)
        let notices = state.withLock { state -> [() -> Void] in
          guard state.cancelled.remove(ticket) == nil else {
            return [{ continuation.resume(throwing: CancellationError()) }]
          }
          state.waiting.insert(waiter, at: first ? 0 : state.waiting.count)
          return grant(&state)
        }
        for notice in notices { notice() }
      }
    } onCancel: {
      let left = state.withLock { state -> Waiter? in
        guard let index = state.waiting.firstIndex(where: { $0.ticket == ticket }) else {
          state.cancelled.insert(ticket)
          return nil
        }
        return state.waiting.remove(at: index)
      }
      left?.continuation.resume(throwing: CancellationError())
      let notices = state.withLock { grant(&$0) }
      for notice in notices { notice() }
    }
    // Granted as the wait was cancelled: the ticket is no longer waited for.
    state.withLock { _ = $0.cancelled.remove(ticket) }
    return Placement(members, replicas: replicas)
  }

  /// `stages` partitions to load a model for inference on, held by no one:
  /// free ones first, then ones that train (inference shares them).
  func sharedPlacement(stages: Int) throws -> Placement {
    let (free, held, silent) = state.withLock { state in
      let members = state.entries.map(\.member)
      let answering = members.filter { !state.silent.contains($0.endpoint) }
      return (
        answering.filter { state.holders[$0.endpoint] == nil }, answering.filter { state.holders[$0.endpoint] != nil },
        members.map(\.endpoint).filter { state.silent.contains($0) }
      )
    }
    guard free.count + held.count >= stages else {
      let size = free.count + held.count + silent.count
      let needs = "the model needs \(stages) partitions and \(free.count + held.count) of the pool's \(size) answer"
      guard !silent.isEmpty else { throw CoordinatorError(.unsuitableMesh, needs) }
      throw CoordinatorError(
        .membersSilent,
        "the partitions at \(silent.joined(separator: ", ")) do not answer: \(needs)")
    }
    return Placement(Array((free + held).prefix(stages)), replicas: 1)
  }

  /// Frees the partitions `run` holds; the jobs in line may start.
  func release(_ run: String) {
    let notices = state.withLock { state in
      state.holders = state.holders.filter { $0.value != run }
      return grant(&state)
    }
    for notice in notices { notice() }
  }

  /// Records which members answered when asked; those that did not are not
  /// given out until they answer again.
  func note(answering: Set<String>, silent: Set<String>) {
    let notices = state.withLock { state in
      state.silent.subtract(answering)
      state.silent.formUnion(silent)
      return grant(&state)
    }
    for notice in notices { notice() }
  }

  /// What a member answered when asked: its memory budget for parameters
  /// (nil: unknown), or why it did not answer.
  struct Answer: Sendable {
    let member: Member
    var budget: Int? = nil
    var error: String? = nil
  }

  /// Asks `endpoints` (every member when nil) to describe themselves, and
  /// records who answered.
  func ask(_ options: CallOptions, only endpoints: Set<String>? = nil) async -> [Answer] {
    let answers = await withTaskGroup(of: Answer.self) { group in
      for member in members where endpoints?.contains(member.endpoint) ?? true {
        group.addTask { await Self.ask(member, options) }
      }
      return await group.reduce(into: []) { $0.append($1) }
    }
    state.withLock { state in
      for answer in answers where answer.error == nil {
        guard let index = state.entries.firstIndex(where: { $0.member.endpoint == answer.member.endpoint }) else {
          continue
        }
        state.entries[index].budget = answer.budget
      }
    }
    note(
      answering: Set(answers.filter { $0.error == nil }.map(\.member.endpoint)),
      silent: Set(answers.filter { $0.error != nil }.map(\.member.endpoint)))
    return answers
  }

  /// Asks one partition, member or not, to describe itself.
  static func ask(_ member: Member, _ options: CallOptions) async -> Answer {
    do {
      let described = try await member.client.call(DiagnosticsMethods.describe, .init(), options: options)
      guard described.services.contains(PartitionMethods.service) else {
        return Answer(member: member, error: "it serves no partition (it is a \(described.role.echoed))")
      }
      return Answer(member: member, budget: described.memoryBudgetBytes > 0 ? Int(described.memoryBudgetBytes) : nil)
    } catch let error as RPCError where error.code == .unimplemented {
      // It answers, without diagnostics (a mesh in one process): its budget is unknown.
      return Answer(member: member)
    } catch {
      return Answer(member: member, error: "\(error)")
    }
  }

  /// Each `period` until the task is cancelled: drops the joined members
  /// whose lease lapsed (telling `lapsed`), and asks the others (each within
  /// `timeout`), so that a member that stopped is not given out and one that
  /// came back is.
  func watch(every period: Duration, timeout: Duration, lapsed: @Sendable (String) async -> Void) async {
    while !Task.isCancelled {
      for endpoint in expireLeases() { await lapsed(endpoint) }
      _ = await ask(CallOptions(timeout: timeout))
      try? await Task.sleep(for: period)
    }
  }

  /// Members neither held, silent nor leaving, in pool order.
  private static func free(in state: State) -> [Member] {
    state.entries.filter {
      !$0.leaving && state.holders[$0.member.endpoint] == nil && !state.silent.contains($0.member.endpoint)
    }
    .map(\.member)
  }

  /// Gives free members to the waiters at the head of the line, in order;
  /// returns what to tell them (called outside the lock).
  private func grant(_ state: inout State) -> [() -> Void] {
    var notices: [() -> Void] = []
    while let head = state.waiting.first {
      let free = Self.free(in: state)
      guard free.count >= head.count else { break }
      let granted = Array(free.prefix(head.count))
      for member in granted { state.holders[member.endpoint] = head.run }
      state.waiting.removeFirst()
      notices.append { head.continuation.resume(returning: granted) }
    }
    for index in state.waiting.indices where state.waiting[index].told != index + 1 {
      state.waiting[index].told = index + 1
      let tell = state.waiting[index].onPosition
      notices.append { tell(index + 1) }
    }
    return notices
  }
}
