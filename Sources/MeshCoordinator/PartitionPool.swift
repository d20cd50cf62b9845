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

/// The partitions a coordinator trains on, and the job that holds each. A
/// training job holds stages × replicas partitions of its own while it
/// runs; jobs that find too few free wait in the order they came (a job
/// never passes one that waits before it, so a big job is not starved). A
/// partition that did not answer when last asked is not given out.
/// Inference shares partitions with training and holds none.
final class PartitionPool: Sendable {
  /// One partition of the pool.
  struct Member: Sendable {
    let endpoint: String
    let client: any RPCChannel
  }

  /// In the order they are given out: the coordinator's layout, stage by stage.
  let members: [Member]
  private let state = Mutex(State())

  private struct State {
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

  init(members: [Member]) {
    self.members = members
  }

  /// Every member's client, for calls that must reach wherever a run may
  /// have been loaded (unloads).
  var everyClient: [[any RPCChannel]] { [members.map(\.client)] }

  /// Whether a job of `count` partitions would wait now.
  func wouldWait(_ count: Int) -> Bool {
    state.withLock { state in !state.waiting.isEmpty || Self.free(in: state, of: members).count < count }
  }

  /// What each member is doing: the run that holds it (nil when free), and
  /// whether it answered when last asked.
  var holders: [(member: Member, run: String?, answering: Bool)] {
    state.withLock { state in
      members.map { ($0, state.holders[$0.endpoint], !state.silent.contains($0.endpoint)) }
    }
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
    guard stages * replicas <= members.count else {
      throw RPCError(
        .invalidArgument,
        "stages \(stages) × replicas \(replicas) needs \(stages * replicas) partitions; the pool has \(members.count)")
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
    let (free, held) = state.withLock { state in
      let answering = members.filter { !state.silent.contains($0.endpoint) }
      return (
        answering.filter { state.holders[$0.endpoint] == nil }, answering.filter { state.holders[$0.endpoint] != nil }
      )
    }
    guard free.count + held.count >= stages else {
      throw RPCError(
        .unavailable,
        "the model needs \(stages) partitions and \(free.count + held.count) of the pool's \(members.count) answer")
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
        group.addTask {
          do {
            let described = try await member.client.call(DiagnosticsMethods.describe, .init(), options: options)
            return Answer(
              member: member, budget: described.memoryBudgetBytes > 0 ? Int(described.memoryBudgetBytes) : nil)
          } catch let error as RPCError where error.code == .unimplemented {
            // It answers, without diagnostics (a mesh in one process): its budget is unknown.
            return Answer(member: member)
          } catch {
            return Answer(member: member, error: "\(error)")
          }
        }
      }
      return await group.reduce(into: []) { $0.append($1) }
    }
    note(
      answering: Set(answers.filter { $0.error == nil }.map(\.member.endpoint)),
      silent: Set(answers.filter { $0.error != nil }.map(\.member.endpoint)))
    return answers
  }

  /// Asks every member each `period` (each within `timeout`) until the task
  /// is cancelled, so that a member that stopped is not given out and one
  /// that came back is.
  func watch(every period: Duration, timeout: Duration) async {
    while !Task.isCancelled {
      _ = await ask(CallOptions(timeout: timeout))
      try? await Task.sleep(for: period)
    }
  }

  /// Members neither held nor silent, in pool order.
  private static func free(in state: State, of members: [Member]) -> [Member] {
    members.filter { state.holders[$0.endpoint] == nil && !state.silent.contains($0.endpoint) }
  }

  /// Gives free members to the waiters at the head of the line, in order;
  /// returns what to tell them (called outside the lock).
  private func grant(_ state: inout State) -> [() -> Void] {
    var notices: [() -> Void] = []
    while let head = state.waiting.first {
      let free = Self.free(in: state, of: members)
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
