import Foundation
import MeshPSClient
import MeshProto
import MeshTensor
import Synchronization

/// One pusher of gradients: a stage (user) in one data-parallel replica.
struct Pusher: Hashable, Sendable {
  let user: String
  let replica: Int32
}

/// One pusher's gradient of one variable at one step.
struct PushKey: Hashable, Sendable {
  let pusher: Pusher
  let step: Int64
  let variable: String
}

/// Counters a job reports in Stats.
struct JobCounters: Sendable {
  var pushesApplied: Int64 = 0
  var refusedStale: Int64 = 0
  var refusedNonFinite: Int64 = 0
  var duplicates: Int64 = 0
  var pulls: Int64 = 0
  /// Pushes waiting now: for the other pushers of their step (sync), or
  /// for the slowest replica or a repeat for its first copy (bounded with wait).
  var waiting: Int64 = 0
  /// Over gradients of applied async and bounded pushes: current version
  /// minus the version they were computed from.
  var stalenessMax: Int64 = 0
  var stalenessSum: Int64 = 0
  var stalenessCount: Int64 = 0
  /// Async and bounded: the most steps an applied push was ahead of the
  /// slowest replica's last push.
  var replicaLeadMax: Int64 = 0
  /// Bounded with wait: pushes that waited for the slowest replica.
  var waited: Int64 = 0
}

/// The variables of one job and the rule that applies pushes to them.
///
/// Updates run inside the actor, one at a time; when one completes, the new
/// values are published whole, so pulls (which read the published map and
/// never wait for an update) see each update entirely or not at all.
actor ParameterJob {
  nonisolated let name: String
  nonisolated let consistency: JobConsistency
  /// The ps task's budget, which this job's variables take bytes from.
  nonisolated let budget: MemoryBudget
  /// Read from the task's periodic checkpoint when its process started: a
  /// sync push ahead of it means the task restarted behind the job, which
  /// must be restored from its own checkpoint (ABORTED, not refused).
  nonisolated let recoveredAtStart: Bool
  /// Registrations started and not yet finished: a job whose first one
  /// failed is dropped only when no other is under way.
  nonisolated let registrationsUnderWay = Mutex(0)
  nonisolated let counters = Mutex(JobCounters())
  private nonisolated let published = Mutex<[String: VariableSnapshot]>([:])

  private var variables: [String: HeldVariable] = [:]
  /// Async and bounded: the furthest step any pusher applied.
  private var furthestStep: Int64 = 0
  /// Bounded with wait: gradients waiting for the slowest replica.
  private var pushesInFlight: Set<PushKey> = []
  /// Sync: gradients of steps not yet complete, per step and variable.
  private var pendingSteps: [Int64: [String: PendingGradient]] = [:]
  /// Async and bounded: the last step each replica pushed.
  private var replicaProgress: [Int32: Int64] = [:]
  private var waiters: [UInt64: Waiter] = [:]
  /// The store dropped the job: nothing is registered in it any more.
  private var dropped = false
  private var nextWaiterID: UInt64 = 0

  private struct PendingGradient {
    var sum: Tensor
    var received: Set<Pusher>
  }

  private struct Waiter {
    let isReady: @Sendable (ParameterJob.Progress) -> Bool
    let continuation: CheckedContinuation<Void, any Error>
    /// Ends the wait when it runs out of time.
    let timer: Task<Void, Never>?
  }

  /// What waiters look at.
  struct Progress: Sendable {
    let appliedStep: [String: Int64]
    /// The replica furthest behind (the lowest-numbered of those equally
    /// behind) and the last step it pushed (0 before its first push).
    let slowestReplica: Int32
    let slowestReplicaStep: Int64
    /// Bounded with wait: the gradients of pushes waiting.
    let inFlight: Set<PushKey>
  }

  init(name: String, consistency: JobConsistency, budget: MemoryBudget) {
    self.name = name
    self.consistency = consistency
    self.budget = budget
    recoveredAtStart = false
  }

  /// A job as a checkpoint holds it: its variables and their retry state.
  /// `recoveredAtStart`: the task's own periodic checkpoint, read when its
  /// process started, so the job may be behind its pushers.
  init(
    restoring restored: [String: HeldVariable], name: String, consistency: JobConsistency, budget: MemoryBudget,
    recoveredAtStart: Bool = false
  ) {
    self.name = name
    self.consistency = consistency
    self.budget = budget
    self.recoveredAtStart = recoveredAtStart
    variables = restored
    furthestStep = restored.values.flatMap(\.lastSteps.values).max() ?? 0
    // Each replica as far as its furthest push the checkpoint holds. A job's
    // checkpoint is taken where every replica of its run met, the step every
    // replica of this run starts after, whichever of them pushed before (the
    // run may have more replicas than the one checkpointed); a task's own
    // periodic checkpoint may find them apart.
    for (pusher, step) in restored.values.flatMap(\.lastSteps) {
      replicaProgress[pusher.replica] = max(replicaProgress[pusher.replica, default: 0], step)
    }
    if !recoveredAtStart {
      for replica in 0..<consistency.replicas { replicaProgress[replica] = furthestStep }
    }
    published.withLock { published in
      for (name, variable) in restored { published[name] = variable.snapshot }
    }
  }

  // MARK: - Registration

  /// Defines variables, or checks that they match their existing definitions.
  /// All or nothing: when one definition is refused, none is added. With
  /// `writerKeepsValues`, the variables this creates hold no value until
  /// `user` assigns one.
  func register(_ definitions: [Pipemesh_V1_VariableDefinition], user: String, writerKeepsValues: Bool = false) throws
    -> [Pipemesh_V1_VariableVersion]
  {
    // A registration that took the job before it was dropped takes no memory.
    guard !dropped else {
      throw ParameterServerError(.jobLost, "job \(name) was dropped from this ps while it registered")
    }
    if writerKeepsValues {
      guard consistency.mode == .sync, consistency.replicas == 1 else {
        throw ParameterServerError(
          .conflict,
          "writer_keeps_values needs sync consistency with one replica; job \(name) has \(consistency.proto)")
      }
    }
    var added: [String: HeldVariable] = [:]
    var created: [String] = []
    do {
      try define(definitions, user: user, keptByWriter: writerKeepsValues, into: &added, created: &created)
    } catch {
      for name in created { budget.release(added[name]!.reservedBytes) }
      throw error
    }
    for (name, variable) in added { variables[name] = variable }
    publish(Array(added.keys))
    return definitions.map { versionOf($0.name) }
  }

  private func define(
    _ definitions: [Pipemesh_V1_VariableDefinition], user: String, keptByWriter: Bool,
    into added: inout [String: HeldVariable], created: inout [String]
  ) throws {
    for definition in definitions {
      if var existing = variables[definition.name] ?? added[definition.name] {
        guard existing.isDefined(by: definition) else {
          throw ParameterServerError(
            .conflict,
            "variable \(definition.name) of job \(name) is registered with a different definition "
              + "(shape \(existing.definition.shape), initializer or optimizer); a job's variables cannot change: use a new job name"
          )
        }
        guard existing.value != nil || existing.users == [user] else {
          throw ParameterServerError(
            .conflict,
            "variable \(definition.name) of job \(name) is kept by its writer, \(existing.users.sorted().joined()); "
              + "a variable two stages share cannot be kept by one of them")
        }
        existing.users.insert(user)
        existing.takeClipping(of: definition)
        added[definition.name] = existing
      } else {
        added[definition.name] = try HeldVariable(
          defining: definition, user: user, keptByWriter: keptByWriter, budget: budget)
        created.append(definition.name)
      }
    }
  }

  // MARK: - Pull

  /// Reads variables (all when `requests` is empty); a value is left out when
  /// it is not newer than the version asked for.
  nonisolated func pull(_ requests: [Pipemesh_V1_VariableVersion], includeSlots: Bool) throws
    -> [Pipemesh_V1_VariableValue]
  {
    counters.withLock { $0.pulls += 1 }
    let snapshots = published.withLock { $0 }
    let wanted =
      requests.isEmpty
      ? snapshots.keys.sorted().map { name in Pipemesh_V1_VariableVersion.with { $0.name = name } } : requests
    return try wanted.map { request in
      guard let snapshot = snapshots[request.name] else {
        throw ParameterServerError(.notHeld, "job \(name) has no variable \(request.name)")
      }
      guard let held = snapshot.value else {
        throw ParameterServerError(
          .conflict,
          "variable \(request.name) of job \(name) is kept by the stage that writes it until it assigns it "
            + "(before a checkpoint and at the end of the job)")
      }
      var value = Pipemesh_V1_VariableValue()
      value.name = request.name
      value.version = snapshot.version
      if request.version == 0 || snapshot.version > request.version {
        value.value = Pipemesh_V1_Tensor(sharing: held)
        if includeSlots {
          value.slots = snapshot.slots.keys.sorted().map { slot in
            Pipemesh_V1_NamedTensor.with {
              $0.name = slot
              $0.tensor = Pipemesh_V1_Tensor(sharing: snapshot.slots[slot]!)
            }
          }
        }
      }
      return value
    }
  }

  /// Bytes this job's variables take from the budget.
  var reservedBytes: Int { variables.values.reduce(0) { $0 + $1.reservedBytes } }

  /// Every variable's definition, state, users and retry state, for a checkpoint.
  func checkpointState() -> [String: HeldVariable] { variables }

  /// Sync: the state after exactly `step`, for a checkpoint taken without
  /// a flush (after a failed step): once every variable has had `step`
  /// applied, waiting up to `patience` for pushes still on their way.
  /// FAILED_PRECONDITION when a variable is past it, or still short of it
  /// after the wait.
  func checkpointState(atSyncStep step: Int64, patience: Duration) async throws -> [String: HeldVariable] {
    guard consistency.mode == .sync else {
      throw ParameterServerError(
        .conflict,
        "job \(name) is not under sync consistency: it has no step all its variables share")
    }
    let name = name
    @Sendable func notAt(_ steps: some Collection<Int64>) -> ParameterServerError {
      ParameterServerError(
        .conflict,
        "job \(name)'s variables on this task are at steps \(steps.min() ?? 0) to \(steps.max() ?? 0), not all at "
          + "step \(step): the state after it is not here")
    }
    let syncSteps = { (variables: [String: HeldVariable]) in variables.values.map(\.syncStep) }
    guard syncSteps(variables).allSatisfy({ $0 <= step }) else { throw notAt(syncSteps(variables)) }
    try await waitUntil(
      { progress in progress.appliedStep.values.allSatisfy { $0 >= step } }, timeout: patience,
      expired: { progress in notAt(progress.appliedStep.values) })
    // A push of the step after may have been applied since.
    guard syncSteps(variables).allSatisfy({ $0 == step }) else { throw notAt(syncSteps(variables)) }
    return variables
  }

  nonisolated var variableCount: Int { published.withLock { $0.count } }

  nonisolated var heldBytes: Int64 {
    published.withLock {
      $0.values.reduce(0) { $0 + Int64(($1.value?.scalarCount ?? 0) * (1 + $1.slots.count) * 4) }
    }
  }

  nonisolated var maxVersion: Int64 { published.withLock { $0.values.map(\.version).max() ?? 0 } }

  nonisolated var totalVersions: Int64 { published.withLock { $0.values.reduce(0) { $0 + $1.version } } }

  // MARK: - Assign

  /// Takes the state of variables their writer kept: all of them, or none
  /// when one is refused.
  func assign(_ request: Pipemesh_V1_AssignRequest) throws -> [Pipemesh_V1_VariableVersion] {
    guard Set(request.variables.map(\.name)).count == request.variables.count else {
      throw ParameterServerError(.invalidRequest, "an assignment names a variable twice")
    }
    var assigned: [String: HeldVariable] = [:]
    for state in request.variables {
      guard var variable = variables[state.name] else {
        throw ParameterServerError(.notHeld, "job \(name) has no variable \(state.name): register it first")
      }
      try variable.assign(state, user: request.user, job: name)
      assigned[state.name] = variable
    }
    for (name, variable) in assigned { variables[name] = variable }
    publish(Array(assigned.keys))
    resumeReadyWaiters()
    return request.variables.map { versionOf($0.name) }
  }

  // MARK: - Push

  /// Applies a push under the job's consistency rule and returns the new
  /// versions of its variables. Nothing is applied when any gradient is bad.
  func push(_ request: Pipemesh_V1_PushRequest) async throws -> [Pipemesh_V1_VariableVersion] {
    guard request.step >= 1 else {
      throw ParameterServerError(.invalidRequest, "push step must be 1 or more, got \(request.step)")
    }
    guard request.replica >= 0, request.replica < consistency.replicas else {
      throw ParameterServerError(
        .invalidRequest,
        "replica \(request.replica) is out of range: job \(name) has \(consistency.replicas) replicas"
      )
    }
    var gradients: [(name: String, tensor: Tensor, baseVersion: Int64)] = []
    do {
      for gradient in request.gradients {
        let tensor = try decodeGradient(gradient, for: variables[gradient.name], job: name)
        gradients.append((gradient.name, tensor, gradient.baseVersion))
      }
    } catch let error as ParameterServerError where error.kind == .nonFiniteGradient {
      counters.withLock { $0.refusedNonFinite += 1 }
      throw error
    }
    guard Set(gradients.map(\.name)).count == gradients.count else {
      throw ParameterServerError(.invalidRequest, "a push names a variable twice")
    }
    let pusher = Pusher(user: request.user, replica: request.replica)
    let step = request.step
    try checkNotAhead(pusher, step, names: gradients.map(\.name))

    switch consistency.mode {
    case .async:
      let fresh = unapplied(gradients, pusher, step)
      if fresh.isEmpty { break }
      reached(step, by: request.replica)
      applyNow(fresh, pusher: pusher, step: step)
    case .bounded(let maxStaleness, let wait):
      // A repeat of a push still waiting (its caller's connection dropped) waits for that one to
      // end, applied or given up, so that it answers only once the gradients are applied.
      let keys = Set(gradients.map { PushKey(pusher: pusher, step: step, variable: $0.name) })
      while !pushesInFlight.isDisjoint(with: keys) {
        try await waitUntil { $0.inFlight.isDisjoint(with: keys) }
      }
      let fresh = unapplied(gradients, pusher, step)
      if fresh.isEmpty { break }
      reached(step, by: request.replica)
      if let wait {
        // Marked in flight before waiting, so a retry that arrives meanwhile is not applied too.
        let keys = Set(fresh.map { PushKey(pusher: pusher, step: step, variable: $0.name) })
        pushesInFlight.formUnion(keys)
        defer {
          pushesInFlight.subtract(keys)
          resumeReadyWaiters()
        }
        let isReady: @Sendable (Progress) -> Bool = { $0.slowestReplicaStep >= step - maxStaleness }
        if !isReady(progress) { counters.withLock { $0.waited += 1 } }
        try await waitUntil(isReady, timeout: wait) { progress in
          ParameterServerError(
            .waitExpired,
            "push of step \(step) from \(pusher.user.echoed) replica \(pusher.replica) waited \(wait) for replica "
              + "\(progress.slowestReplica), whose last push is of step \(progress.slowestReplicaStep), to come within "
              + "\(maxStaleness) steps (bounded consistency): that replica may hang or run far slower than the others")
        }
        // The caller may have gone while this push was being resumed.
        try Task.checkCancellation()
      } else if let stale = fresh.first(where: { variables[$0.name]!.version - $0.baseVersion > maxStaleness }) {
        counters.withLock { $0.refusedStale += 1 }
        let behind = variables[stale.name]!.version - stale.baseVersion
        throw ParameterServerError(
          .conflict,
          "gradient of \(stale.name) was computed from version \(stale.baseVersion), \(behind) versions behind "
            + "(the limit is \(maxStaleness)): pull fresh values and compute it again")
      }
      applyNow(fresh, pusher: pusher, step: step)
    case .sync:
      try accumulate(gradients, pusher: pusher, step: step)
      let names = gradients.map(\.name)
      try await waitUntil { progress in names.allSatisfy { progress.appliedStep[$0, default: 0] >= step } }
    }
    return gradients.map { versionOf($0.name) }
  }

  /// The most steps an async or bounded push may run ahead of the job's
  /// furthest pusher (stale or refused pushes leave gaps, so some are allowed).
  static let maxStepsAhead: Int64 = 1000

  /// Refuses a push of a step far beyond the job's progress: a pusher's
  /// steps are retries up to its last one, so a step far ahead would make
  /// every step before it look like a retry and never be applied. Sync steps
  /// follow one another exactly; async and bounded ones within
  /// `maxStepsAhead` of the furthest pusher.
  private func checkNotAhead(_ pusher: Pusher, _ step: Int64, names: [String]) throws {
    let limit: Int64
    switch consistency.mode {
    case .sync:
      guard let applied = names.compactMap({ variables[$0]?.syncStep }).min() else { return }
      limit = applied + 1
    case .async, .bounded:
      limit = furthestStep + Self.maxStepsAhead
    }
    guard step <= limit else {
      if recoveredAtStart, consistency.mode == .sync {
        throw ParameterServerError(
          .jobLost,
          "this ps task restarted and holds job \(name) as its last periodic checkpoint left it, at step "
            + "\(limit - 1); the push of step \(step) from \(pusher.user.echoed) is ahead of that: restore the job "
            + "from its own checkpoint")
      }
      throw ParameterServerError(
        .conflict,
        "push of step \(step) from \(pusher.user.echoed) replica \(pusher.replica) is ahead of the job: the latest step it may push is \(limit)"
      )
    }
  }

  /// Async and bounded: the gradients of a push that this pusher's step has
  /// not applied yet, nor is waiting to apply; a push that holds others is a
  /// retry, counted in Stats.
  private func unapplied(
    _ gradients: [(name: String, tensor: Tensor, baseVersion: Int64)], _ pusher: Pusher, _ step: Int64
  ) -> [(name: String, tensor: Tensor, baseVersion: Int64)] {
    let fresh = gradients.filter { gradient in
      step > variables[gradient.name]!.lastSteps[pusher, default: 0]
        && !pushesInFlight.contains(PushKey(pusher: pusher, step: step, variable: gradient.name))
    }
    if fresh.count < gradients.count { counters.withLock { $0.duplicates += 1 } }
    return fresh
  }

  /// Async and bounded: notes that `replica` pushed `step`, which may let
  /// pushes waiting for it go on.
  private func reached(_ step: Int64, by replica: Int32) {
    replicaProgress[replica] = max(replicaProgress[replica, default: 0], step)
    resumeReadyWaiters()
  }

  private func applyNow(_ gradients: [(name: String, tensor: Tensor, baseVersion: Int64)], pusher: Pusher, step: Int64)
  {
    for gradient in gradients { variables[gradient.name]!.lastSteps[pusher] = step }
    furthestStep = max(furthestStep, step)
    let staleness = gradients.map { max(0, variables[$0.name]!.version - $0.baseVersion) }
    let lead = max(0, step - slowestReplica.step)
    counters.withLock { counters in
      counters.replicaLeadMax = max(counters.replicaLeadMax, lead)
      counters.stalenessMax = max(counters.stalenessMax, staleness.max() ?? 0)
      counters.stalenessSum += staleness.reduce(0, +)
      counters.stalenessCount += Int64(staleness.count)
    }
    let clipped = clip(Dictionary(uniqueKeysWithValues: gradients.map { ($0.name, $0.tensor) }))
    for (name, gradient) in clipped { variables[name]!.apply(gradient) }
    counters.withLock { $0.pushesApplied += 1 }
    publish(Array(clipped.keys))
  }

  /// Sync: adds a push's gradients (divided by the replica count) to its
  /// step, and applies each variable whose step is complete.
  private func accumulate(
    _ gradients: [(name: String, tensor: Tensor, baseVersion: Int64)], pusher: Pusher, step: Int64
  ) throws {
    for gradient in gradients where !variables[gradient.name]!.users.contains(pusher.user) {
      throw ParameterServerError(
        .conflict,
        "user '\(pusher.user)' did not register \(gradient.name), so sync consistency does not expect its gradients")
    }
    let scale = 1 / Float(consistency.replicas)
    var completed: [String: Tensor] = [:]
    var retried = false
    for gradient in gradients {
      // A retry: the step is applied already, or this pusher's share is in.
      if variables[gradient.name]!.syncStep >= step
        || pendingSteps[step]?[gradient.name]?.received.contains(pusher) == true
      {
        retried = true
        continue
      }
      let share = consistency.replicas == 1 ? gradient.tensor : gradient.tensor * scale
      var pending = pendingSteps[step]?[gradient.name] ?? PendingGradient(sum: share, received: [])
      if !pending.received.isEmpty { pending.sum = pending.sum + share }
      pending.received.insert(pusher)
      let expected = variables[gradient.name]!.users.count * Int(consistency.replicas)
      if pending.received.count >= expected {
        completed[gradient.name] = pending.sum
        pendingSteps[step]?[gradient.name] = nil
      } else {
        pendingSteps[step, default: [:]][gradient.name] = pending
      }
    }
    if retried { counters.withLock { $0.duplicates += 1 } }
    if pendingSteps[step]?.isEmpty == true { pendingSteps[step] = nil }
    guard !completed.isEmpty else { return }
    for (name, gradient) in clip(completed) {
      variables[name]!.apply(gradient)
      variables[name]!.syncStep = step
    }
    counters.withLock { $0.pushesApplied += 1 }
    publish(Array(completed.keys))
    resumeReadyWaiters()
  }

  /// Clips gradients to the optimizer's global norm over the variables of
  /// one update, when the variables ask for it.
  private func clip(_ gradients: [String: Tensor]) -> [String: Tensor] {
    let limit = gradients.keys.compactMap { variables[$0]?.definition.optimizer.clipGlobalNorm }.filter { $0 > 0 }.min()
    guard let limit else { return gradients }
    return clipByGlobalNorm(gradients, maxNorm: limit).gradients
  }

  private func versionOf(_ name: String) -> Pipemesh_V1_VariableVersion {
    .with {
      $0.name = name
      $0.version = variables[name]?.version ?? 0
      $0.keptByWriter = variables[name].map { $0.value == nil } ?? false
    }
  }

  private func publish(_ names: [String]) {
    let snapshots = names.map { ($0, variables[$0]!.snapshot) }
    published.withLock { published in
      for (name, snapshot) in snapshots { published[name] = snapshot }
    }
  }

  // MARK: - Waiting

  private var progress: Progress {
    let slowest = slowestReplica
    return Progress(
      appliedStep: variables.mapValues(\.syncStep), slowestReplica: slowest.replica, slowestReplicaStep: slowest.step,
      inFlight: pushesInFlight)
  }

  /// The replica furthest behind and the last step it pushed; replicas that
  /// never pushed are at step 0.
  private var slowestReplica: (replica: Int32, step: Int64) {
    (0..<consistency.replicas).map { ($0, replicaProgress[$0, default: 0]) }.min { $0.1 < $1.1 } ?? (0, 0)
  }

  /// Forgets every variable (the store dropped the job): pushes waiting in
  /// it fail with ABORTED. Returns the parts and the budget's bytes freed.
  func drop() -> (variables: Int, bytes: Int) {
    dropped = true
    let freed = (variables: variables.count, bytes: reservedBytes)
    for waiter in waiters.values {
      waiter.timer?.cancel()
      waiter.continuation.resume(
        throwing: ParameterServerError(.jobLost, "job \(name) was dropped from this ps while the push waited"))
    }
    waiters = [:]
    variables = [:]
    pendingSteps = [:]
    pushesInFlight = []
    published.withLock { $0 = [:] }
    return freed
  }

  /// Suspends until `isReady` holds; cancelling the task (the caller's
  /// deadline) stops the wait.
  /// Returns once `isReady`; with a `timeout`, fails with what `expired`
  /// makes of the progress when it runs out.
  private func waitUntil(
    _ isReady: @escaping @Sendable (Progress) -> Bool, timeout: Duration? = nil,
    expired: @escaping @Sendable (Progress) -> ParameterServerError = { _ in
      ParameterServerError(.waitExpired, "the wait ran out")
    }
  ) async throws {
    if isReady(progress) { return }
    let id = nextWaiterID
    nextWaiterID += 1
    counters.withLock { $0.waiting += 1 }
    defer { counters.withLock { $0.waiting -= 1 } }
    try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { continuation in
        let timer = timeout.map { timeout in
          Task {
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            await self.endWait(id) { expired($0) }
          }
        }
        waiters[id] = Waiter(isReady: isReady, continuation: continuation, timer: timer)
        if Task.isCancelled { cancelWaiter(id) }
      }
    } onCancel: {
      Task { await self.cancelWaiter(id) }
    }
  }

  private func cancelWaiter(_ id: UInt64) {
    endWait(id) { _ in
      ParameterServerError(.cancelled, "the call was cancelled while it waited for the job's other pushes")
    }
  }

  /// Ends a wait with the error `reason` makes of the current progress.
  private func endWait(_ id: UInt64, _ reason: (Progress) -> ParameterServerError) {
    guard let waiter = waiters.removeValue(forKey: id) else { return }
    waiter.timer?.cancel()
    waiter.continuation.resume(throwing: reason(progress))
  }

  private func resumeReadyWaiters() {
    guard !waiters.isEmpty else { return }
    let current = progress
    for (id, waiter) in waiters where waiter.isReady(current) {
      waiters[id] = nil
      waiter.timer?.cancel()
      waiter.continuation.resume()
    }
  }
}
