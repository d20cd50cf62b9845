import Foundation
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// Loads training data a `DatasetReference` names.
public typealias DatasetLoader = @Sendable (Pipemesh_V1_DatasetReference) throws -> (inputs: Tensor, targets: Tensor)

/// `pipemesh.v1.Coordinator`: plans splits, runs training jobs over the
/// cluster's partitions and answers inference.
public final class CoordinatorService: RPCService, Sendable {
  public let cluster: Cluster
  private let loadDataset: DatasetLoader?
  private let clients: [[any RPCChannel]]
  private let jobs = Mutex<[String: (job: TrainingJob, task: Task<Void, Never>)]>([:])
  private let jobCounter = Mutex(0)
  /// Users and their tokens; nil authenticates no one (every caller is an
  /// anonymous admin).
  private let tokens: TokenFile?

  public init(cluster: Cluster, loadDataset: DatasetLoader? = nil, tokens: TokenFile? = nil) throws {
    self.cluster = cluster
    self.loadDataset = loadDataset
    self.tokens = tokens
    clients = try cluster.partitions.map { stage in
      try stage.map { try cluster.dialer.channel(to: $0) }
    }
  }

  public var serviceName: String { CoordinatorMethods.service }

  /// How many jobs are in each state ("running", "succeeded", …).
  public var jobStates: [String: Int] {
    let states = jobs.withLock { $0.values.map(\.job.snapshot.state) }
    return Dictionary(states.map { (String(describing: $0), 1) }, uniquingKeysWith: +)
  }

  /// Training steps completed over all jobs.
  public var stepsCompleted: Int64 { jobs.withLock { $0.values.reduce(0) { $0 + $1.job.snapshot.step } } }

  public func register(with router: inout RPCRouter) {
    router.unary(CoordinatorMethods.plan) { [self] request, context in
      _ = try caller(context)
      let model = try makeModel(request.model)
      // Over this coordinator's partitions, the plan must fit their memory.
      let overPartitions = request.stages == 0 || Int(request.stages) == cluster.stages
      return try Planner.plan(
        model, stages: overPartitions ? cluster.stages : Int(request.stages),
        splitPoints: request.splitPoints.map { Int($0) },
        budgets: overPartitions ? try await checkMembers(requireAll: false) : [],
        memory: request.hasOptimizer ? try StageMemory(optimizer: request.optimizer) : .mostSlots
      ).response
    }
    router.serverStreaming(CoordinatorMethods.train) { [self] request, writer, context in
      let (job, updates) = try await start(request, owner: try caller(context))
      for await progress in updates { try await writer.write(progress) }
      if job.snapshot.state == .failed { throw RPCError(.aborted, "job \(job.name) failed: \(job.snapshot.error)") }
      if job.snapshot.state == .cancelled { throw RPCError(.cancelled, "job \(job.name) was cancelled") }
    }
    router.unary(CoordinatorMethods.infer) { [self] request, context in
      let job = try job(request.job, for: try caller(context))
      let state = job.snapshot.state
      guard state != .failed, state != .cancelled else {
        throw RPCError(
          .failedPrecondition,
          "job \(request.job) \(state == .failed ? "failed" : "was cancelled") and its stages were unloaded: train it again to infer"
        )
      }
      let inputs = try Tensor(wire: request.inputs, what: "inputs")
      try job.model.checkInput(inputs, "inputs do not fit job \(request.job)'s model")
      guard request.microBatches >= 0 else {
        throw RPCError(.invalidArgument, "micro_batches is \(request.microBatches); give 1 or more (0: 1)")
      }
      let microBatches = max(1, Int(request.microBatches))
      let chunk = (inputs.shape[0] + microBatches - 1) / microBatches
      let outputs = try await Inference.run(inputs, job: job.runID, stages: clients.map { $0[0] }, chunk: chunk)
      return .with { $0.outputs = Pipemesh_V1_Tensor(sharing: outputs) }
    }
    router.unary(CoordinatorMethods.getJob) { [self] request, context in
      let job = try job(request.job, for: try caller(context))
      var snapshot = job.snapshot
      snapshot.memory += await parameterServerMemory(of: job.runID)
      return snapshot
    }
    router.unary(CoordinatorMethods.listJobs) { [self] _, context in
      let caller = try caller(context)
      let visible = jobs.withLock { $0.values.map(\.job.snapshot) }.filter { caller.mayUse(jobOf: $0.owner) }
      return .with { $0.jobs = visible.sorted { $0.job < $1.job } }
    }
    router.unary(CoordinatorMethods.cancelJob) { [self] request, context in
      let entry = jobs.withLock { $0[request.job] }
      guard let entry else { throw RPCError(.notFound, "no job named '\(request.job.echoed)' on this coordinator") }
      try Self.check(try caller(context), mayUse: entry.job, to: "cancel")
      entry.task.cancel()
      await entry.task.value
      return entry.job.snapshot
    }
  }

  /// Who a call comes from: the user its token names, else the user its
  /// client certificate names (`client.NAME`, `admin.NAME`), else the
  /// anonymous admin when this coordinator authenticates no one.
  private func caller(_ context: ServerContext) throws -> Caller {
    if let tokens, context.metadata["authorization"] != nil || context.peerIdentity == nil {
      return try tokens.caller(context.metadata)
    }
    guard let identity = context.peerIdentity else { return .anonymous }
    switch MeshRole(commonName: identity) {
    case .client(let name): return Caller(name: name, isAdmin: false)
    case .admin(let name): return Caller(name: name, isAdmin: true)
    default:
      throw RPCError(
        .permissionDenied,
        "the certificate '\(identity.echoed)' names no user: users present client.NAME or admin.NAME certificates")
    }
  }

  /// The job `name`, when `caller` may use it.
  private func job(_ name: String, for caller: Caller) throws -> TrainingJob {
    guard let job = jobs.withLock({ $0[name]?.job }) else {
      throw RPCError(.notFound, "no job named '\(name.echoed)' on this coordinator")
    }
    try Self.check(caller, mayUse: job, to: "use")
    return job
  }

  /// Refuses a Train that would replace another user's job, or a running one.
  private func checkReplaceable(_ name: String, by owner: Caller) throws {
    try Self.checkReplaceable(jobs.withLock { $0[name]?.job }, by: owner)
  }

  private static func checkReplaceable(_ existing: TrainingJob?, by owner: Caller) throws {
    guard let existing else { return }
    try check(owner, mayUse: existing, to: "replace")
    if existing.snapshot.state == .running {
      throw RPCError(.alreadyExists, "job \(existing.name) is running; pick another name or cancel it")
    }
  }

  private static func check(_ caller: Caller, mayUse job: TrainingJob, to action: String) throws {
    guard caller.mayUse(jobOf: job.owner) else {
      throw RPCError(
        .permissionDenied, "job \(job.name) belongs to \(job.owner); \(caller.name) may not \(action) it (admins may)")
    }
  }

  /// The longest job name: the run id adds 9 characters (`.` and 8 hex
  /// digits) and the ps and partitions hold names of `MeshNames.maxJobLength`.
  static let maxJobName = MeshNames.maxJobLength - 9

  /// Checks a Train request, starts its job and returns its progress stream.
  /// The job runs on if the caller goes away; CancelJob stops it.
  /// Each ps task's memory and what `runID` holds of it, for the tasks
  /// that answer within 5 s.
  private func parameterServerMemory(of runID: String) async -> [Pipemesh_V1_MemberMemory] {
    await withTaskGroup(of: Pipemesh_V1_MemberMemory?.self) { group in
      for (index, endpoint) in cluster.parameterServers.enumerated() {
        group.addTask { [cluster] in
          guard let task = try? cluster.dialer.channel(to: endpoint),
            let stats = try? await task.call(
              ParameterServerMethods.stats, .with { $0.job = runID }, options: CallOptions(timeout: .seconds(5)))
          else { return nil }
          return .with {
            $0.member = "ps \(index)"
            $0.endpoint = endpoint
            $0.memory = stats.memory
          }
        }
      }
      return await group.compactMap { $0 }.reduce(into: []) { $0.append($1) }.sorted { $0.member < $1.member }
    }
  }

  /// How long the checks before a job wait for a member that is starting
  /// or restarting.
  static let memberWait = Duration.seconds(10)

  /// What one member of the mesh answered: its memory budget (partitions),
  /// or why it did not answer.
  private struct MemberAnswer: Sendable {
    let stage: Int?
    let member: String
    var budget: Int? = nil
    var error: String? = nil
  }

  /// Asks every partition (Describe) and ps task (Stats) of the mesh once.
  private func askMembers(_ options: CallOptions) async -> [MemberAnswer] {
    await withTaskGroup(of: MemberAnswer.self) { group in
      for (stage, replicas) in clients.enumerated() {
        for partition in replicas {
          let member = "the partition at \(partition.target) (stage \(stage))"
          group.addTask {
            do {
              let described = try await partition.call(DiagnosticsMethods.describe, .init(), options: options)
              let budget = described.memoryBudgetBytes > 0 ? Int(described.memoryBudgetBytes) : nil
              return MemberAnswer(stage: stage, member: member, budget: budget)
            } catch let error as RPCError where error.code == .unimplemented {
              // It answers, without diagnostics (a mesh in one process): its budget is unknown.
              return MemberAnswer(stage: stage, member: member)
            } catch {
              return MemberAnswer(stage: stage, member: member, error: "\(error)")
            }
          }
        }
      }
      for endpoint in cluster.parameterServers {
        group.addTask { [cluster] in
          do {
            _ = try await cluster.dialer.channel(to: endpoint).call(
              ParameterServerMethods.stats, .init(), options: options)
            return MemberAnswer(stage: nil, member: "the ps at \(endpoint)")
          } catch {
            return MemberAnswer(stage: nil, member: "the ps at \(endpoint)", error: "\(error)")
          }
        }
      }
      return await group.reduce(into: []) { $0.append($1) }
    }
  }

  /// The members of the mesh that do not answer now (within 2 s), each with
  /// the reason: what a coordinator logs when it starts.
  public func unansweredMembers() async -> [String] {
    await askMembers(CallOptions(timeout: .seconds(2))).compactMap { answer in
      answer.error.map { "\(answer.member) does not answer: \($0)" }
    }.sorted()
  }

  /// Asks every member, waiting up to `memberWait` for one that is
  /// (re)starting, and returns each stage's memory budget for parameters:
  /// the least its partitions report. With `requireAll`, UNAVAILABLE names
  /// every member that does not answer; without, such a stage's budget is
  /// nil (unknown).
  private func checkMembers(requireAll: Bool) async throws -> [Int?] {
    let answers = await askMembers(CallOptions(timeout: Self.memberWait, waitForReady: true))
    let silent = answers.compactMap { answer in answer.error.map { "\(answer.member): \($0)" } }.sorted()
    if requireAll, !silent.isEmpty {
      throw RPCError(
        .unavailable,
        "\(silent.count) of the mesh's members did not answer within \(Self.memberWait): "
          + silent.joined(separator: "; "))
    }
    var budgets = [Int?](repeating: nil, count: clients.count)
    for answer in answers {
      guard let stage = answer.stage, let budget = answer.budget else { continue }
      budgets[stage] = min(budgets[stage] ?? .max, budget)
    }
    return budgets
  }

  private func start(
    _ request: Pipemesh_V1_TrainRequest, owner: Caller
  ) async throws -> (TrainingJob, AsyncStream<Pipemesh_V1_TrainProgress>) {
    var name = request.job
    if name.isEmpty {
      let number = jobCounter.withLock { counter in
        counter += 1
        return counter
      }
      name = "job-\(number)"
    }
    try MeshNames.checkJob(name, maxLength: Self.maxJobName)
    // The cheap refusals before loading any data (checked again when the job is added).
    try checkReplaceable(name, by: owner)
    let (inputs, targets) = try data(request.data)
    let job = try TrainingJob(
      name: name, owner: owner.name, request: request, inputs: inputs, targets: targets, cluster: cluster,
      clients: clients, budgets: try await checkMembers(requireAll: true))
    if job.checkpoints {
      let missing = try await ParameterServerClient(endpoints: cluster.parameterServers, dialer: cluster.dialer)
        .tasksWithoutCheckpoints()
      guard missing.isEmpty else {
        throw RPCError(
          .failedPrecondition,
          "checkpoint.every_steps or checkpoint.at_end asks for checkpoints, but the ps at \(missing.joined(separator: ", ")) "
            + "was started without --checkpoint-dir: give it one, or train without checkpoints")
      }
    }
    let (updates, continuation) = AsyncStream.makeStream(
      of: Pipemesh_V1_TrainProgress.self, bufferingPolicy: .bufferingNewest(64))
    let replaced = try jobs.withLock { jobs in
      let existing = jobs[name]
      try Self.checkReplaceable(existing?.job, by: owner)
      let task = Task {
        await job.run { continuation.yield($0) }
        continuation.finish()
      }
      jobs[name] = (job, task)
      return existing?.job
    }
    if let replaced { Task { await replaced.unload() } }
    return (job, updates)
  }

  private func data(_ source: Pipemesh_V1_DataSource) throws -> (Tensor, Tensor) {
    switch source.source {
    case .inline(let data):
      let inputs = try Tensor(wire: data.inputs, what: "inline inputs")
      let targets = try Tensor(wire: data.targets, what: "inline targets")
      guard inputs.rank >= 1, targets.rank >= 1, inputs.shape[0] == targets.shape[0] else {
        throw RPCError(
          .invalidArgument,
          "inline inputs \(inputs.shape) and targets \(targets.shape) must have the same number of rows")
      }
      return (inputs, targets)
    case .dataset(let reference):
      guard let loadDataset else {
        throw RPCError(.unimplemented, "this coordinator cannot load datasets by reference")
      }
      return try loadDataset(reference)
    case nil:
      throw RPCError(.invalidArgument, "the request names no training data")
    }
  }
}
