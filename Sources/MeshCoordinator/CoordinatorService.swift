import Foundation
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// Loads training data a `DatasetReference` names.
public typealias DatasetLoader = @Sendable (Pipemesh_V1_DatasetReference) throws -> (inputs: Tensor, targets: Tensor)

/// The file a request names in the coordinator's data directory;
/// PERMISSION_DENIED outside it, NOT_FOUND when missing.
public typealias DataFileResolver = @Sendable (String) throws -> URL

/// `pipemesh.v1.Coordinator`: plans splits, runs training jobs on partitions
/// of its pool (each job on its own, queued while too few are free), keeps
/// their records and the models they trained in its store, and answers
/// inference.
public final class CoordinatorService: RPCService, Sendable {
  public let cluster: Cluster
  /// Jobs and models, durable when the store has a directory.
  public let store: CoordinatorStore
  /// Jobs the store held as running when this coordinator started: they
  /// are marked interrupted.
  public let interruptedJobs: [String]
  /// Unloads the interrupted jobs' stages that partitions may still hold;
  /// a resume waits for it.
  private let interruptedCleanup: Task<Void, Never>
  private let loadDataset: DatasetLoader?
  private let resolveDataFile: DataFileResolver?
  /// The partitions jobs are placed on.
  let pool: PartitionPool
  /// Asks the pool's members how they are, every few seconds.
  private let poolWatch: Task<Void, Never>
  /// The ps tasks as last asked, and the task that asks them every few seconds.
  let parameterServerWatch: ParameterServerWatch
  private let parameterServerWatching: Task<Void, Never>
  private let registry: ModelRegistry
  /// The jobs this process started: their runs, and their stages while loaded.
  private let jobs = Mutex<[String: (job: TrainingJob, task: Task<Void, Never>)]>([:])
  /// The callers following each job whose run this process drives
  /// (FollowJob), by job name: an entry exists while the job is queued or runs.
  private let followers = Mutex<[String: [UInt64: AsyncStream<Pipemesh_V1_TrainProgress>.Continuation]]>([:])
  private let lastFollower = Mutex<UInt64>(0)
  /// The steps of each job this process ran, by job name (GetJob's history).
  private let histories = Mutex<[String: StepHistory]>([:])
  /// The last N given to an unnamed job ("job-N").
  private let jobNumbers = Mutex<Int?>(nil)
  /// Users and their tokens; nil authenticates no one (every caller is an
  /// anonymous admin).
  let tokens: TokenFile?
  /// Told what the jobs do (the metrics).
  private let events: (any TrainingEvents)?
  /// Small inferences of one model, batched while its pipeline is full.
  private let batching: InferenceBatching
  /// Layer times measured on the pool's partitions, for the planner.
  private let layerTimings = LayerTimings()
  /// Where closed-form solutions are computed, away from the cooperative
  /// threads that serve calls.
  private let solving = ComputeLane(label: "pipemesh.coordinator.solve", width: 2)
  /// Copies of imported files (seconds for a big one): off the threads that serve calls.
  private let copying = ComputeLane(label: "pipemesh.coordinator.import-copy", width: 2)
  /// The bytes of model uploads being received.
  private let uploads = UploadBudget()
  /// When a step of a job is taken to hang.
  private let stepDeadline: StepDeadline

  /// A coordinator over `cluster`; `store` defaults to one in memory;
  /// `events` hears what its jobs do. Concurrent inferences of up to
  /// `maxInferenceBatchRows` rows are batched together up to that many rows
  /// (0: each runs alone); `inferenceEvents` hears of each batch.
  /// `stepDeadline` says when a training step is taken to hang.
  public init(
    cluster: Cluster, loadDataset: DatasetLoader? = nil, resolveDataFile: DataFileResolver? = nil,
    tokens: TokenFile? = nil, store: CoordinatorStore? = nil, events: (any TrainingEvents)? = nil,
    maxInferenceBatchRows: Int = 256, inferenceEvents: (any InferenceEvents)? = nil,
    stepDeadline: StepDeadline = StepDeadline()
  ) throws {
    self.cluster = cluster
    self.stepDeadline = stepDeadline
    self.events = events
    batching = InferenceBatching(maxRows: maxInferenceBatchRows, events: inferenceEvents)
    self.loadDataset = loadDataset
    self.resolveDataFile = resolveDataFile
    self.tokens = tokens
    let store = try store ?? CoordinatorStore(directory: nil)
    self.store = store
    let pool = PartitionPool(
      members: try cluster.partitions.joined().map { .init(endpoint: $0, client: try cluster.dialer.channel(to: $0)) })
    self.pool = pool
    // Members that joined before a restart: each has a lease's time to renew.
    for endpoint in try store.poolMembers() {
      pool.join(.init(endpoint: endpoint, client: try cluster.dialer.channel(to: endpoint)), lease: Self.memberLease)
    }
    let parameterServers = try cluster.parameterServerClient()
    let interrupted = try store.interruptRunningJobs(at: Date().timeIntervalSince1970)
    // Nothing throws from here: the tasks started below end only with this service.
    poolWatch = Task {
      await pool.watch(every: Self.poolWatchPeriod, timeout: .seconds(2)) { try? await store.removePoolMember($0) }
    }
    let parameterServerWatch = ParameterServerWatch(parameterServers)
    self.parameterServerWatch = parameterServerWatch
    parameterServerWatching = Task {
      await parameterServerWatch.watch(every: Self.poolWatchPeriod, timeout: .seconds(2))
    }
    registry = ModelRegistry(store: store, cluster: cluster, pool: pool)
    layerTimings.restore(try store.calibrations())
    interruptedJobs = interrupted.map(\.record.job)
    // Their stages may still be loaded on partitions that outlived the coordinator.
    interruptedCleanup = Task {
      for job in interrupted { await StageLoading.unload(runID: job.runID, clients: pool.everyClient) }
    }
  }

  deinit {
    poolWatch.cancel()
    parameterServerWatching.cancel()
  }

  /// How often the pool's members are asked how they are.
  static let poolWatchPeriod = Duration.seconds(5)

  public var serviceName: String { CoordinatorMethods.service }

  /// How many jobs are in each state ("running", "succeeded", …).
  public var jobStates: [String: Int] { (try? store.jobCounts()) ?? [:] }

  /// Infer requests waiting for room in their model's pipeline, to leave in
  /// the next batch.
  public var waitingInferences: Int { batching.waitingRequests }

  /// How many partitions of the pool are in each state ("free", "busy", …).
  public var poolStates: [String: Int] {
    pool.status.reduce(into: [:]) { counts, member in counts["\(member.state)", default: 0] += 1 }
  }

  /// Training steps completed over all jobs.
  public var stepsCompleted: Int64 { jobs.withLock { $0.values.reduce(0) { $0 + $1.job.snapshot.step } } }

  public func register(with router: inout RPCRouter) {
    router.unary(CoordinatorMethods.plan) { [self] request, context in
      _ = try caller(context)
      let model = try makeModel(request.model)
      let memory = try StageMemory(plan: request)
      guard (0...4096).contains(request.microBatchRows), (0...4096).contains(request.microBatches) else {
        throw RPCError(
          .invalidArgument,
          "micro_batch_rows is \(request.microBatchRows) and micro_batches \(request.microBatches); give 0 to 4096 each"
        )
      }
      if case .UNRECOGNIZED(let value) = request.schedule {
        throw RPCError(.invalidArgument, "schedule \(value) is no ScheduleKind; give one of those TrainRequest takes")
      }
      _ = try JobConsistency(request.consistency)
      let budget = Self.leastBudget(await pool.ask(CallOptions(timeout: .seconds(2))))
      let splitPoints = try LayerPosition.splitPoints(layers: request.splitPoints, inputs: request.splitPointInputs)
      let stages =
        request.stages != 0
        ? Int(request.stages) : defaultStages(model, splitPoints: splitPoints, budget: budget, memory: memory)
      // A plan this coordinator's pool can run must fit its partitions' memory.
      let poolCanRun = (1...max(1, pool.members.count)).contains(stages)
      return try await Planner.answer(
        request, model: model, stages: stages, budgets: poolCanRun ? Array(repeating: budget, count: stages) : [],
        memory: memory, calibration: layerTimings.calibration(of: request.model, stages: stages)
      ) { [layerTimings, pool] rows, within in
        await layerTimings.times(of: request.model, model: model, rows: rows, pool: pool, within: within)
      }
    }
    router.serverStreaming(CoordinatorMethods.train) { [self] request, writer, context in
      let (job, updates) = try await start(request, owner: try caller(context))
      try await follow(job, updates, writer)
    }
    router.serverStreaming(CoordinatorMethods.resumeJob) { [self] request, writer, context in
      let (job, updates) = try await resume(request.job, by: try caller(context))
      try await follow(job, updates, writer)
    }
    router.serverStreaming(CoordinatorMethods.followJob) { [self] request, writer, context in
      let name = try await storedJob(request.job, for: try caller(context), to: "follow").record.job
      let (updates, continuation) = AsyncStream.makeStream(
        of: Pipemesh_V1_TrainProgress.self, bufferingPolicy: .bufferingNewest(64))
      let id = lastFollower.withLock {
        $0 += 1
        return $0
      }
      let following = followers.withLock { followers in
        guard followers[name] != nil else { return false }
        followers[name]![id] = continuation
        return true
      }
      // Not queued or running: nothing to follow.
      guard following, let job = liveJob(name) else { return }
      defer { followers.withLock { _ = $0[name]?.removeValue(forKey: id) } }
      try await follow(job, updates, writer)
    }
    router.unary(CoordinatorMethods.infer) { [self] request, context in
      let received = WallClock.nanos
      let target = try await inferenceTarget(request, for: try caller(context))
      let model =
        switch target {
        case .job(let job, _): job.model
        case .model(let stored): try makeModel(stored.record.spec)
        }
      // The request is checked before a model is loaded for it.
      var inputs = try Tensor(wire: request.inputs, what: "inputs")
      try model.checkInput(inputs, "inputs do not fit the model")
      // Rescaled as the model's training examples were.
      let normalization =
        switch target {
        case .job(let job, _): job.request.normalization
        case .model(let stored): stored.record.normalization
        }
      if let normalizer = try normalization.normalizer(
        features: model.activationShapes[0].reduce(1, *), field: "the model's normalization")
      {
        inputs = normalizer.apply(to: inputs)
      }
      guard request.microBatches >= 0 else {
        throw RPCError(.invalidArgument, "micro_batches is \(request.microBatches); give 1 or more (0: 1)")
      }
      let runID: String
      let stages: [any RPCChannel]
      switch target {
      case .job(let job, let placement): (runID, stages) = (job.runID, placement.firstReplica)
      case .model(let stored):
        let loaded = try await registry.load(stored)
        (runID, stages) = (loaded.runID, loaded.stages)
      }
      let microBatches = max(1, Int(request.microBatches))
      let outputs: Tensor
      var trace: TraceRecorder?
      if microBatches == 1, inputs.shape[0] < batching.maxRows {
        (outputs, trace) = try await batching.infer(inputs, runID: runID, stages: stages, traced: request.trace)
      } else {
        let chunk = (inputs.shape[0] + microBatches - 1) / microBatches
        trace = request.trace ? TraceRecorder() : nil
        outputs = try await Inference.run(inputs, job: runID, stages: stages, chunk: chunk, trace: trace)
      }
      var response = Pipemesh_V1_InferResponse()
      response.outputs = Pipemesh_V1_Tensor(sharing: outputs)
      if let trace {
        response.traceJson = trace.chromeTrace(more: [
          .init(
            track: "requests", name: "Infer of \(inputs.shape[0]) rows", category: "request", start: received,
            end: WallClock.nanos)
        ])
      }
      return response
    }
    router.unary(CoordinatorMethods.getJob) { [self] request, context in
      let caller = try caller(context)
      var record: Pipemesh_V1_Job
      let live = liveJob(request.job)
      if let live {
        try Self.check(caller, mayUse: live.owner, of: "job \(live.name)", to: "use")
        record = live.snapshot
        record.memory += await parameterServerMemory(of: live.runID)
      } else {
        record = try await storedJob(request.job, for: caller, to: "use").record
      }
      if request.history, let history = histories.withLock({ $0[request.job] }) {
        record.steps = history.steps
        // A running job's newest steady step; a finished one's last.
        if let live, live.snapshot.state == .running {
          record.traceJson = live.trace.chromeTrace(faults: record.faults)
        } else {
          record.traceJson = history.traceJson
        }
      }
      return record
    }
    router.unary(CoordinatorMethods.listJobs) { [self] request, context in
      try await listJobs(request, for: try caller(context))
    }
    router.unary(CoordinatorMethods.cancelJob) { [self] request, context in
      let caller = try caller(context)
      guard let entry = jobs.withLock({ $0[request.job] }) else {
        // A job of an earlier coordinator has ended: returned unchanged.
        return try await storedJob(request.job, for: caller, to: "cancel").record
      }
      try Self.check(caller, mayUse: entry.job.owner, of: "job \(entry.job.name)", to: "cancel")
      entry.task.cancel()
      await entry.task.value
      return entry.job.snapshot
    }
    router.unary(CoordinatorMethods.deleteJob) { [self] request, context in
      try await deleteJob(request.job, for: try caller(context))
    }
    registerPool(with: &router)
    router.unary(CoordinatorMethods.listModels) { [self] request, context in
      let caller = try caller(context)
      if !request.name.isEmpty, try ModelReference(parsing: request.name, field: "name").version != nil {
        throw RPCError(.invalidArgument, "name '\(request.name.echoed)' names a version; give the model's name only")
      }
      let visible = try await store.models(named: request.name).filter { caller.mayUse(jobOf: $0.record.owner) }
      return .with { $0.models = visible.map(\.record) }
    }
    router.unary(CoordinatorMethods.getModel) { [self] request, context in
      try await storedModel(request.model, field: "model", for: try caller(context), to: "use").record
    }
    router.unary(CoordinatorMethods.deleteModel) { [self] request, context in
      let caller = try caller(context)
      let reference = try ModelReference(parsing: request.model, field: "model")
      let versions =
        try await reference.version == nil
        ? store.models(named: reference.name) : store.model(reference).map { [$0] } ?? []
      guard !versions.isEmpty else {
        throw CoordinatorError(.notKnown, "no model '\(request.model.echoed)' on this coordinator")
      }
      for version in versions {
        try Self.check(caller, mayUse: version.record.owner, of: "model \(version.reference)", to: "delete")
      }
      // Gone from the store first: no Infer finds them while they are unloaded.
      try await store.deleteModels(versions)
      await registry.unload(versions)
      return .with { $0.models = versions.map(\.record) }
    }
    router.unary(CoordinatorMethods.importModel) { [self] request, context in
      let caller = try caller(context)
      let name = try Self.importedName(request, field: "name")
      guard let resolveDataFile else {
        throw RPCError(
          .failedPrecondition,
          "this coordinator reads no files (it has no --data-dir); start it with one and put the weights there, "
            + "or send them with UploadModel")
      }
      let file = try resolveDataFile(request.uri)
      let model = try await admitImport(request, name: name, by: caller)
      var isDirectory: ObjCBool = false
      guard FileManager.default.fileExists(atPath: file.path, isDirectory: &isDirectory) else {
        throw RPCError(.notFound, "no file \(request.uri.echoed) in the coordinator's data directory")
      }
      guard !isDirectory.boolValue else {
        throw RPCError(.invalidArgument, "\(request.uri.echoed) is a directory, not a safetensors file")
      }
      guard FileManager.default.isReadableFile(atPath: file.path),
        let size = (try? FileManager.default.attributesOfItem(atPath: file.path)[.size] as? NSNumber)?.intValue
      else {
        throw RPCError(.permissionDenied, "the coordinator may not read \(request.uri.echoed) in its data directory")
      }
      let largest = ModelUpload.largestFile(of: model)
      guard size <= largest else {
        throw RPCError(
          .invalidArgument,
          "\(request.uri.echoed) is \(size) bytes; a safetensors file of this spec's variables is at most \(largest)")
      }
      // Copied, then mapped: never whole in memory, and the file is a user's, which may change
      // (or be cut short under a mapping) while it is read. The copy counts as an upload (a file
      // over the uploads' limit takes all of it: one such import at a time).
      let reserved = min(size, uploads.limit)
      try uploads.reserve(reserved)
      defer { uploads.release(reserved) }
      let copy = store.incomingWeightsPath()
      defer { try? FileManager.default.removeItem(atPath: copy) }
      do {
        try await copying.run(
          orThrow: RPCError(
            .resourceExhausted,
            "the coordinator is copying \(copying.width) imports already: ask again once one is done")
        ) { _ in try FileManager.default.copyItem(atPath: file.path, toPath: copy) }
      } catch let error as RPCError {
        throw error
      } catch {
        guard FileManager.default.isReadableFile(atPath: file.path) else {
          throw RPCError(.notFound, "\(request.uri.echoed) went away while the coordinator copied it")
        }
        throw RPCError(
          .resourceExhausted, "the coordinator could not copy \(request.uri.echoed) into its state directory: \(error)")
      }
      let copied = (try? FileManager.default.attributesOfItem(atPath: copy)[.size] as? NSNumber)?.intValue
      guard copied == size else {
        throw RPCError(
          .aborted, "\(request.uri.echoed) changed while the coordinator copied it (\(size) bytes, then \(copied ?? 0))"
        )
      }
      return try await importWeights(
        try ModelUpload.mapped(copy), from: file.lastPathComponent, request, name: name, by: caller)
    }
    router.clientStreaming(CoordinatorMethods.uploadModel) { [self] requests, context in
      let caller = try caller(context)
      let spool = store.incomingWeightsPath()
      return try await ModelUpload.receive(
        requests, budget: uploads, spool: spool,
        admit: { [self] request in
          try await admitImport(request, name: try Self.importedName(request, field: "model.name"), by: caller)
        },
        register: { [self] request, file in
          let name = try Self.importedName(request, field: "model.name")
          return try await importWeights(file, from: "the uploaded file", request, name: name, by: caller)
        })
    }
    router.unary(CoordinatorMethods.solve) { [self] request, context in
      let caller = try caller(context)
      let reference = request.name.isEmpty ? nil : try ModelReference(parsing: request.name, field: "name")
      guard reference?.version == nil else {
        throw RPCError(.invalidArgument, "name '\(request.name.echoed)' names a version; give the model's name only")
      }
      let model = try makeModel(request.model)
      let solution = try await solving.run(
        orThrow: RPCError(
          .resourceExhausted, "the coordinator is solving \(solving.width) models already: ask again once one is done")
      ) { [self] _ in
        let (inputs, targets) = try data(request.data)
        return try ClosedForm.solve(request, model: model, inputs: inputs, targets: targets)
      }
      var response = Pipemesh_V1_SolveResponse.with {
        $0.kernel = Pipemesh_V1_Tensor(solution.kernel)
        $0.bias = Pipemesh_V1_Tensor(solution.bias)
        $0.trainingLoss = solution.trainingLoss
        $0.validationLoss = solution.validationLoss
        $0.validationR2 = solution.validationR2
        $0.normalization = solution.normalization
      }
      if let reference {
        let layer = model.layers[0].name
        response.model = try await registry.registerFitted(
          ["\(layer)/kernel": solution.kernel, "\(layer)/bias": solution.bias], as: reference.name,
          spec: request.model, normalization: solution.normalization, owner: caller.name,
          admit: Self.versionAdmission(reference.name, by: caller)
        ).record
      }
      return response
    }
    router.serverStreaming(CoordinatorMethods.exportModel) { [self] request, writer, context in
      let model = try await storedModel(request.model, field: "model", for: try caller(context), to: "export")
      let file: FileHandle
      do {
        file = try FileHandle(forReadingFrom: URL(fileURLWithPath: store.weightsPath(model)))
      } catch {
        throw CoordinatorError(.storedDataDamaged, "the weights of model \(model.reference) cannot be read: \(error)")
      }
      defer { try? file.close() }
      var first = true
      while true {
        let data = try file.read(upToCount: Self.exportChunkBytes) ?? Data()
        guard first || !data.isEmpty else { break }
        try await writer.write(
          .with {
            if first { $0.model = model.record }
            $0.data = data
          })
        first = false
        if data.count < Self.exportChunkBytes { break }
      }
    }
  }

  /// The bytes of a weights file an ExportModel message carries.
  static let exportChunkBytes = 4 << 20

  /// Who a call comes from: the user its token names, else the user its
  /// client certificate names (`client.NAME`, `admin.NAME`), else the
  /// anonymous admin when this coordinator authenticates no one.
  func caller(_ context: ServerContext) throws -> Caller {
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

  /// The job `name` when this process runs or ran it.
  private func liveJob(_ name: String) -> TrainingJob? { jobs.withLock { $0[name]?.job } }

  /// The stored record of job `name`, when `caller` may `action` it.
  private func storedJob(_ name: String, for caller: Caller, to action: String) async throws
    -> CoordinatorStore.StoredJob
  {
    guard var stored = try await store.job(name) else {
      throw CoordinatorError(.notKnown, "no job named '\(name.echoed)' on this coordinator")
    }
    try Self.check(caller, mayUse: stored.record.owner, of: "job \(name)", to: action)
    // A job this process runs has fresher figures than its last save.
    if let live = liveJob(name) { stored.record = live.snapshot }
    return stored
  }

  /// The model version `text` names, when `caller` may `action` it.
  private func storedModel(_ text: String, field: String, for caller: Caller, to action: String) async throws
    -> CoordinatorStore.StoredModel
  {
    let reference = try ModelReference(parsing: text, field: field)
    guard let model = try await store.model(reference) else {
      throw CoordinatorError(.notKnown, "no model '\(text.echoed)' on this coordinator")
    }
    try Self.check(caller, mayUse: model.record.owner, of: "model \(model.reference)", to: action)
    return model
  }

  /// What an Infer runs on: the stages of a job this process runs or ran
  /// (where they are placed), or a model version (loaded on first use).
  private enum InferenceTarget {
    case job(TrainingJob, Placement)
    case model(CoordinatorStore.StoredModel)
  }

  private func inferenceTarget(_ request: Pipemesh_V1_InferRequest, for caller: Caller) async throws
    -> InferenceTarget
  {
    guard request.job.isEmpty != request.model.isEmpty else {
      throw RPCError(.invalidArgument, "give exactly one of job and model (a job's name, or NAME or NAME:vN)")
    }
    if !request.model.isEmpty {
      return .model(try await storedModel(request.model, field: "model", for: caller, to: "use"))
    }
    // A job this process runs or ran needs no read of the store.
    if let job = liveJob(request.job) {
      try Self.check(caller, mayUse: job.owner, of: "job \(job.name)", to: "use")
      let state = job.snapshot.state
      if state == .running || (state == .succeeded && !job.request.discardModel), let placement = job.placement {
        return .job(job, placement)
      }
    }
    let stored = try await storedJob(request.job, for: caller, to: "use")
    switch stored.record.state {
    case .queued, .running:
      throw RPCError(
        .failedPrecondition, "job \(request.job) is queued for partitions and has no stages yet: infer once it runs")
    case .succeeded where !stored.record.model.isEmpty:
      return .model(try await storedModel(stored.record.model, field: "the job's model", for: caller, to: "use"))
    case .succeeded:
      let why = stored.record.error.isEmpty ? "it was trained with discard_model" : stored.record.error
      throw RPCError(.failedPrecondition, "job \(request.job) registered no model (\(why)): train it again to infer")
    default:
      throw RPCError(
        .failedPrecondition,
        "job \(request.job) \(Self.describe(stored.record.state)) and its stages were unloaded: train it again to infer"
      )
    }
  }

  private static func describe(_ state: Pipemesh_V1_JobState) -> String {
    switch state {
    case .failed: "failed"
    case .cancelled: "was cancelled"
    case .interrupted: "was interrupted (the coordinator stopped while it ran)"
    case .queued: "is queued"
    case .restarting: "is restarting (a member failed under it)"
    case .succeeded: "succeeded"
    default: "is \(state)"
    }
  }

  /// The longest page ListJobs answers.
  static let maxPageSize: Int32 = 1000

  private func listJobs(_ request: Pipemesh_V1_ListJobsRequest, for caller: Caller) async throws
    -> Pipemesh_V1_ListJobsResponse
  {
    if case .UNRECOGNIZED(let value) = request.state {
      throw RPCError(.invalidArgument, "state is \(value); give a JobState (0 for every state)")
    }
    guard request.pageSize >= 0, request.pageSize <= Self.maxPageSize else {
      throw RPCError(.invalidArgument, "page_size is \(request.pageSize); give 0 (100) to \(Self.maxPageSize)")
    }
    let after: String
    if request.pageToken.isEmpty {
      after = ""
    } else if let data = Data(base64Encoded: request.pageToken), let name = String(data: data, encoding: .utf8) {
      after = name
    } else {
      throw RPCError(.invalidArgument, "page_token is not one ListJobs gave; start again with an empty one")
    }
    let pageSize = request.pageSize == 0 ? 100 : Int(request.pageSize)
    let state = request.state == .unspecified ? nil : request.state
    var jobs: [Pipemesh_V1_Job] = []
    var last = after
    var more = false
    // Jobs the caller may not see are skipped; a page fills from the next ones.
    fetching: while true {
      let batch = try await store.jobs(state: state, after: last, limit: pageSize)
      for stored in batch {
        if caller.mayUse(jobOf: stored.record.owner) {
          if jobs.count == pageSize {
            more = true
            break fetching
          }
          jobs.append(liveJob(stored.record.job)?.snapshot ?? stored.record)
        }
        last = stored.record.job
      }
      if batch.count < pageSize { break }
    }
    return .with {
      $0.jobs = jobs
      if more { $0.nextPageToken = Data(last.utf8).base64EncodedString() }
    }
  }

  /// Forgets a job that is not running: its stages, its ps variables, its record.
  private func deleteJob(_ name: String, for caller: Caller) async throws -> Pipemesh_V1_DeleteJobResponse {
    let stored = try await storedJob(name, for: caller, to: "delete")
    guard !Self.active(stored.record.state) else {
      throw RPCError(
        .failedPrecondition, "job \(name) \(Self.describe(stored.record.state)); cancel it before deleting it")
    }
    registry.forgetStages(of: stored.runID)
    var freed = try await StageLoading.discard(runID: stored.runID, cluster: cluster, clients: pool.everyClient)
    if !stored.checkpointRunID.isEmpty, stored.checkpointRunID != stored.runID {
      freed += try await StageLoading.discard(
        runID: stored.checkpointRunID, cluster: cluster, clients: pool.everyClient)
    }
    store.removeData(of: stored.runID)
    try await store.deleteJob(name, runID: stored.runID)
    jobs.withLock { jobs in
      if jobs[name]?.job.runID == stored.runID { jobs[name] = nil }
    }
    histories.withLock { $0[name] = nil }
    return .with { $0.parameterServerBytesFreed = freed }
  }

  /// Admits a Train of job `name` by `caller` when the name is free, or
  /// (with `replace`) holds a job of the caller's that is not running; and
  /// when the model of that name, which the job will add a version to, is
  /// the caller's (or new).
  private static func jobAdmission(_ name: String, replace: Bool, by caller: Caller) -> CoordinatorStore.JobAdmission {
    { existing, modelOwner in
      if let modelOwner { try versionAdmission(name, by: caller)(modelOwner) }
      guard let existing else { return }
      try check(caller, mayUse: existing.record.owner, of: "job \(name)", to: "replace")
      if active(existing.record.state) {
        throw RPCError(
          .alreadyExists, "job \(name) \(describe(existing.record.state)); pick another name or cancel it")
      }
      guard replace else {
        throw RPCError(
          .alreadyExists,
          "job \(name) exists (\(describe(existing.record.state))); pick another name, delete it, "
            + "or set replace to train it again")
      }
    }
  }

  /// Whether a job in `state` holds (or waits for) partitions: it may not be
  /// replaced or deleted.
  private static func active(_ state: Pipemesh_V1_JobState) -> Bool {
    state == .running || state == .queued || state == .restarting
  }

  /// The model name an import adds a version to; `field` is where the
  /// request carries it.
  private static func importedName(_ request: Pipemesh_V1_ImportModelRequest, field: String) throws -> String {
    let reference = try ModelReference(parsing: request.name, field: field)
    guard reference.version == nil else {
      throw RPCError(.invalidArgument, "\(field) '\(request.name.echoed)' names a version; give the model's name only")
    }
    return reference.name
  }

  /// Admits an import or upload of model `name` by `caller` before a byte of
  /// its file is read: the caller may add a version to the name, and the
  /// spec, split and rescaling are valid. Returns the model.
  private func admitImport(_ request: Pipemesh_V1_ImportModelRequest, name: String, by caller: Caller) async throws
    -> Sequential
  {
    if let owner = try await store.models(named: name).first?.record.owner {
      try Self.check(caller, mayUse: owner, of: "model \(name)", to: "add a version to")
    }
    return try registry.checkedImport(
      spec: request.spec, splitPoints: try request.splitPositions, normalization: request.normalization)
  }

  /// Registers an imported or uploaded safetensors file as the next version
  /// of `name`, as `request` describes it.
  private func importWeights(
    _ file: Data, from source: String, _ request: Pipemesh_V1_ImportModelRequest, name: String, by caller: Caller
  ) async throws -> Pipemesh_V1_Model {
    try await registry.importWeights(
      file, from: source, as: name, spec: request.spec, splitPoints: try request.splitPositions,
      normalization: request.normalization, owner: caller.name, admit: Self.versionAdmission(name, by: caller)
    ).record
  }

  /// Admits a new version of model `name` by `caller` when the name is new
  /// or the caller's.
  private static func versionAdmission(_ name: String, by caller: Caller) -> ModelRegistry.Admission {
    { owner in
      if let owner { try check(caller, mayUse: owner, of: "model \(name)", to: "add a version to") }
    }
  }

  private static func check(_ caller: Caller, mayUse owner: String, of what: String, to action: String) throws {
    guard caller.mayUse(jobOf: owner) else {
      throw RPCError(
        .permissionDenied, "\(what) belongs to \(owner); \(caller.name) may not \(action) it (admins may)")
    }
  }

  /// The longest job name: the run id adds 9 characters (`.` and 8 hex
  /// digits) and the ps and partitions hold names of `MeshNames.maxJobLength`.
  static let maxJobName = MeshNames.maxJobLength - 9

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

  /// The least memory budget the partitions that answered report (nil when
  /// none reports one).
  private static func leastBudget(_ answers: [PartitionPool.Answer]) -> Int? {
    answers.filter { $0.error == nil }.compactMap(\.budget).min()
  }

  /// Asks every ps task (Stats) once; returns the ones that did not answer,
  /// each with the reason.
  private func silentParameterServers(_ options: CallOptions) async -> [(endpoint: String, error: String)] {
    await withTaskGroup(of: (String, String)?.self) { group in
      for endpoint in cluster.parameterServers {
        group.addTask { [cluster] in
          do {
            _ = try await cluster.dialer.channel(to: endpoint).call(
              ParameterServerMethods.stats, .init(), options: options)
            return nil
          } catch {
            return (endpoint, "\(error)")
          }
        }
      }
      return await group.compactMap { $0 }.reduce(into: []) { $0.append($1) }
    }
  }

  /// The members of the mesh that do not answer now (within 2 s), each with
  /// the reason: what a coordinator logs when it starts.
  public func unansweredMembers() async -> [String] {
    let options = CallOptions(timeout: .seconds(2))
    let partitions = await pool.ask(options).compactMap { answer in
      answer.error.map { "the partition at \(answer.member.endpoint) does not answer: \($0)" }
    }
    let parameterServers = await silentParameterServers(options).map {
      "the ps at \($0.endpoint) does not answer: \($0.error)"
    }
    return (partitions + parameterServers).sorted()
  }

  /// Checks that every ps task answers and that `needed` partitions of the
  /// pool do (those that do not are asked again, waiting up to `memberWait`
  /// for one that is restarting); returns the least memory budget among
  /// them. UNAVAILABLE names every member that was needed and did not answer.
  private func checkMembers(needed: Int) async throws -> Int? {
    var answers = await pool.ask(CallOptions(timeout: .seconds(2)))
    let patient = CallOptions(timeout: Self.memberWait, waitForReady: true)
    var silentPS = await silentParameterServers(CallOptions(timeout: .seconds(2)))
    if !silentPS.isEmpty { silentPS = await silentParameterServers(patient) }
    let silent = Set(answers.filter { $0.error != nil }.map(\.member.endpoint))
    if answers.count - silent.count < needed {
      answers = answers.filter { $0.error == nil } + (await pool.ask(patient, only: silent))
    }
    let missing = answers.compactMap { answer in
      answer.error.map { "the partition at \(answer.member.endpoint): \($0)" }
    }
    let answering = answers.count - missing.count
    guard silentPS.isEmpty, answering >= needed else {
      let partitions = answering >= needed ? [] : missing
      let silentPS = silentPS.map { "the ps at \($0.endpoint): \($0.error)" }
      throw CoordinatorError(
        .membersSilent,
        "the job needs \(needed) of the pool's \(pool.members.count) partitions and the mesh's ps tasks; "
          + "\(partitions.count + silentPS.count) member(s) did not answer within \(Self.memberWait): "
          + (partitions + silentPS).sorted().joined(separator: "; "))
    }
    return Self.leastBudget(answers)
  }

  /// The stages of a plan or job that names none: as many as its split
  /// points make, else the coordinator's layout, else the fewest whose plan
  /// fits the partitions' `budget` (leaving the rest of the pool to other jobs).
  private func defaultStages(_ model: Sequential, splitPoints: [LayerPosition], budget: Int?, memory: StageMemory)
    -> Int
  {
    if !splitPoints.isEmpty { return splitPoints.count + 1 }
    if cluster.stages > 0 { return cluster.stages }
    let most = max(1, min(pool.members.count, model.layers.count))
    return (1...most).first { stages in
      (try? Planner.plan(model, stages: stages, budgets: Array(repeating: budget, count: stages), memory: memory))
        != nil
    } ?? most
  }

  /// A Train request's stages and replicas, 0 read as `defaultStages` and
  /// the coordinator's layout's replicas (one without a layout);
  /// INVALID_ARGUMENT when the pool cannot hold them.
  private func shape(of request: Pipemesh_V1_TrainRequest) async throws -> (stages: Int32, replicas: Int32) {
    guard request.stages >= 0, request.replicas >= 0 else {
      throw RPCError(
        .invalidArgument,
        "stages \(request.stages) and replicas \(request.replicas) must be 0 (the coordinator's layout) or more")
    }
    var stages = request.stages
    // As `defaultStages` says; the model, the pool's memory and the optimizer's are looked at
    // only where the answer depends on them (a bad optimizer is refused with the other options).
    if stages == 0, !request.splitPoints.isEmpty {
      stages = Int32(request.splitPoints.count + 1)
    } else if stages == 0, cluster.stages > 0 {
      stages = Int32(cluster.stages)
    } else if stages == 0 {
      let budget = Self.leastBudget(await pool.ask(CallOptions(timeout: .seconds(2))))
      stages = Int32(
        defaultStages(
          try makeModel(request.model), splitPoints: [], budget: budget,
          memory: try StageMemory(train: request)))
    }
    let replicas = request.replicas == 0 ? Int32(max(1, cluster.replicas)) : request.replicas
    guard Int(stages) * Int(replicas) <= pool.members.count else {
      throw RPCError(
        .invalidArgument,
        "stages \(stages) × replicas \(replicas) needs \(Int(stages) * Int(replicas)) partitions; "
          + "this coordinator's pool has \(pool.members.count)")
    }
    return (stages, replicas)
  }

  /// Checks a Train request and records its job, queued; the job runs (on
  /// if the caller goes away) once the pool has partitions for it;
  /// CancelJob stops it. Returns its progress stream.
  private func start(
    _ request: Pipemesh_V1_TrainRequest, owner: Caller
  ) async throws -> (TrainingJob, AsyncStream<Pipemesh_V1_TrainProgress>) {
    let name = request.job.isEmpty ? try await unusedJobName() : request.job
    try MeshNames.checkJob(name, maxLength: Self.maxJobName)
    guard request.normalization.offset.isEmpty, request.normalization.scale.isEmpty else {
      throw RPCError(
        .invalidArgument,
        "normalization.offset and normalization.scale are fitted by the coordinator on the training split: "
          + "give the method alone")
    }
    let admission = Self.jobAdmission(name, replace: request.replace, by: owner)
    // The cheap refusals before loading any data (checked again when the job is added).
    try await store.checkJobName(name, admit: admission)
    var request = request
    (request.stages, request.replicas) = try await shape(of: request)
    let (inputs, targets) = try data(request.data)
    let budget = try await checkMembers(needed: Int(request.stages * request.replicas))
    // A job that may grow starts on as many replicas as the free partitions hold, if no job waits.
    let vacancy = pool.vacancy
    let fitting = vacancy.waiting == nil ? TrainingJob.replicas(of: request, fittingIn: vacancy.free) : 0
    // Stages split where the layers' measured times balance (the split is kept with the job, so
    // a resumed run splits the same way).
    // The request's options checked first: a request refused costs no timing.
    try TrainingJob.checkOptions(request)
    _ = try LayerPosition.splitPoints(layers: request.splitPoints, inputs: request.splitPointInputs)
    let measured =
      request.stages > 1 && request.splitPoints.isEmpty
      ? await layerTimings.times(
        of: request.model, model: try makeModel(request.model),
        rows: Int(request.batchSize) / max(1, Int(request.microBatches)), pool: pool) : nil
    let job = try TrainingJob(
      name: name, owner: owner.name, request: request, running: max(Int(request.replicas), fitting), inputs: inputs,
      targets: targets, cluster: cluster, store: store, events: events, budget: budget,
      layerTimes: measured?.layers, stepDeadline: stepDeadline)
    if job.checkpoints {
      let missing = try await cluster.parameterServerClient().tasksWithoutCheckpoints()
      guard missing.isEmpty else {
        throw RPCError(
          .failedPrecondition,
          "checkpoint.every_steps or checkpoint.at_end asks for checkpoints, but the ps at \(missing.joined(separator: ", ")) "
            + "was started without --checkpoint-dir: give it one, or train without checkpoints")
      }
    }
    // A job sent its examples inline keeps them if it may resume, or waits
    // in the queue (a coordinator that restarts meanwhile starts it then).
    if case .inline = request.data.source,
      request.checkpoint.everySteps > 0 || request.maxRestarts > 0 || pool.wouldWait(job.stages * job.replicas)
    {
      try store.saveData(of: job.runID, inputs: inputs, targets: targets)
    }
    // Recorded (queued) before it runs, in one transaction with the
    // checks: a second Train of the name sees it.
    let replaced = try await store.insertJob(job.stored, admit: admission)
    if let replaced { Task { await release(replaced) } }
    return (job, launch(job, owner: owner))
  }

  /// Keeps what `job`, which trained to its end, says of how its model's stages run
  /// (`StepCalibration`, from the trace of its last steps), for the planner's
  /// next predictions of the model on as many stages. Only from a
  /// synchronous pipeline of one replica whose steps do not overlap, that
  /// neither recomputes activations nor clips gradients, sending its
  /// activations as float32 (the calls, transfers and commits a plan
  /// predicts), with layer times measured at its rows before:
  /// nothing is timed here. Kept in the coordinator's state too, at best
  /// (a state that cannot be written fails the next job's save anyway).
  private func calibrate(by job: TrainingJob) async {
    let request = job.request
    let rows = job.stepExamples / max(1, Int(request.microBatches))
    let synchronous =
      switch request.consistency.mode {
      case nil, .sync: true
      case .async, .bounded: false
      }
    guard job.stages > 1, job.replicas == 1, synchronous, !job.schedule.kind.overlapsSteps,
      !request.recomputeActivations, request.optimizer.clipGlobalNorm == 0,
      [.unspecified, .float32].contains(request.transferDtype),
      let observed = job.trace.observed(stages: job.stages),
      let measured = layerTimings.measuredBefore(of: request.model, model: job.model, rows: rows),
      let plan = try? Planner.plan(
        job.model, stages: job.stages, splitPoints: Array(job.plan.splitPoints), measured: measured.layers),
      let times = plan.times,
      let calibration = StepCalibration(
        job: job.name, rows: rows, bounds: job.plan.bounds, backwardCalls: job.schedule.kind.callsPerBackward,
        observed: observed, predicted: times)
    else { return }
    guard let key = layerTimings.record(calibration, of: job.request.model, stages: job.stages) else { return }
    try? await store.saveCalibration(
      calibration, key: key, at: Date().timeIntervalSince1970, capacity: LayerTimings.capacity)
  }

  /// Runs a job in a task of its own (it runs on if its caller goes away):
  /// waits for partitions of the pool, runs on them, gives them back, and
  /// after a member failed under it (while it may restart) waits again,
  /// ahead of the jobs in line. Returns its progress.
  private func launch(_ job: TrainingJob, owner: Caller) -> AsyncStream<Pipemesh_V1_TrainProgress> {
    let (updates, continuation) = AsyncStream.makeStream(
      of: Pipemesh_V1_TrainProgress.self, bufferingPolicy: .bufferingNewest(64))
    let admission = Self.versionAdmission(job.name, by: owner)
    let name = job.name
    followers.withLock { $0[name] = $0[name] ?? [:] }
    // A new job of a name (one replaced) starts a history of its own; a resumed one goes on with it.
    if job.snapshot.step == 0 { histories.withLock { $0[name] = nil } }
    /// To the caller that started the run, and to every caller following the job.
    let tell: @Sendable (Pipemesh_V1_TrainProgress) -> Void = { [self] progress in
      histories.withLock { $0[name, default: StepHistory()].record(progress) }
      continuation.yield(progress)
      for follower in followers.withLock({ $0[name].map { Array($0.values) } ?? [] }) { follower.yield(progress) }
    }
    jobs.withLock { jobs in
      let task = Task { [self] in
        var job = job
        var restarted = false
        while true {
          let placement: Placement
          do {
            placement = try await pool.acquire(
              stages: job.stages, replicas: job.replicas, for: job.runID, first: restarted
            ) { position in
              tell(
                .with {
                  $0.job = name
                  $0.queuePosition = Int32(position)
                })
            }
          } catch {
            await job.endQueued(error)
            break
          }
          // Moves and coordinator restarts spend none of its restarts.
          let restarts = job.snapshot.faults.filter { $0.state == .failed || $0.state == .restarting }.count
          let mayRestart = restarts < job.request.maxRestarts
          let maxRestarts = job.request.maxRestarts
          let failure = await job.run(
            on: placement, report: tell, move: { [pool, job] in Self.move(job, placement, pool) },
            restarts: { error in
              guard Self.isMemberFailure(error) else { return .stop }
              if mayRestart { return .restart }
              // A cancellation may surface as a member's failure: it spent nothing.
              return maxRestarts > 0 && !Task.isCancelled ? .restartsSpent(maxRestarts) : .stop
            }
          ) { [self, registry] job in
            // Before the job's last report, so that a plan asked for once it is done is calibrated.
            await calibrate(by: job)
            // A job whose figures are all that is wanted registers nothing: it is freed below.
            return job.request.discardModel ? "" : "\(try await registry.register(job, admit: admission).reference)"
          }
          if job.snapshot.state == .succeeded, job.request.discardModel {
            // Freed once its success is saved (the ps drops its checkpoints too, which a resume
            // after a coordinator restart would need), whether or not its caller is still there.
            // Best effort, as when a job is replaced: DeleteJob frees what a failure here leaves.
            // A coordinator stopped before the release is recorded frees the job when it starts again.
            // A resumed job that succeeded before its first checkpoint still holds the run it resumed.
            let runs = Set([job.runID, job.stored.checkpointRunID]).filter { !$0.isEmpty }
            let (name, runID, cluster, clients, store) = (job.name, job.runID, cluster, placement.clients, store)
            _ = await Task {
              for run in runs { try await StageLoading.discard(runID: run, cluster: cluster, clients: clients) }
              try await store.markReleased(name, runID: runID)
            }.result
          }
          pool.release(job.runID)
          // Moved off a partition that leaves the pool, or a member failed
          // under the job while it may restart: run it on.
          guard let failure, failure is TrainingJob.Move || job.snapshot.state == .restarting,
            let next = await restart(job)
          else { break }
          job = next
          restarted = true
          self.jobs.withLock { $0[next.name]?.job = next }
        }
        // Examples kept for a resume are needed no more.
        if job.snapshot.state == .succeeded { store.removeData(of: job.runID) }
        continuation.finish()
        for follower in followers.withLock({ $0.removeValue(forKey: name)?.values.map { $0 } ?? [] }) {
          follower.finish()
        }
      }
      jobs[job.name] = (job, task)
    }
    return updates
  }

  /// Why `job`, running on `placement`, should go on on another placement
  /// after its current step: a partition of it is leaving the pool, or the
  /// job grows onto free partitions or gives back replicas to a waiting job
  /// (`TrainingJob.replicasToRun`). Nil to run on.
  private static func move(_ job: TrainingJob, _ placement: Placement, _ pool: PartitionPool) -> String? {
    if let leaving = pool.leaving(among: Set(placement.partitions.joined())) {
      return "the partition at \(leaving) is leaving the pool"
    }
    let vacancy = pool.vacancy
    guard let replicas = job.replicasToRun(free: vacancy.free, waiting: vacancy.waiting) else { return nil }
    return replicas > job.replicas
      ? "partitions of the pool are free (\(vacancy.free)): the job grows from \(job.replicas) to \(replicas) replicas"
      : "a job waits for partitions: the job gives back the replicas past the \(replicas) it asked for"
  }

  /// Whether a job's failure is a member of the mesh failing under it (a
  /// partition or ps task that died, restarted or stopped answering), which
  /// a restart from a checkpoint can cure.
  private static func isMemberFailure(_ error: any Error) -> Bool {
    [.unavailable, .deadlineExceeded, .aborted].contains(RPCError(answering: error).code)
  }

  /// How many times a restart waits for the members to answer (each wait up
  /// to `memberWait`) before the job stays failed.
  static let restartWaits = 6

  /// Prepares a failed job to run on from its newest checkpoint (or from the
  /// start), once the ps tasks and enough partitions of the pool answer: a
  /// spare in place of the one that was lost, or the lost one back. Nil when
  /// they do not, or it cannot (the job's record says why).
  private func restart(_ failed: TrainingJob) async -> TrainingJob? {
    var problem: any Error = CoordinatorError(.membersSilent, "the mesh's members did not answer")
    for _ in 0..<Self.restartWaits {
      do {
        return try await prepareResume(failed.name, by: .anonymous, fromStart: true)
      } catch  where RPCError(answering: error).code == .unavailable {
        problem = error
      } catch {
        problem = error
        break
      }
    }
    if Task.isCancelled {
      // Cancelled while it waited to go on.
      await failed.endQueued(CancellationError())
    } else {
      await failed.noteRestartFailure(problem)
    }
    return nil
  }

  /// Streams a job's progress to a caller; the call fails as the job (or the
  /// run that restarted it) does.
  private func follow(
    _ job: TrainingJob, _ updates: AsyncStream<Pipemesh_V1_TrainProgress>,
    _ writer: ResponseWriter<Pipemesh_V1_TrainProgress>
  ) async throws {
    for await progress in updates { try await writer.write(progress) }
    let last = liveJob(job.name)?.snapshot ?? job.snapshot
    if last.state == .failed { throw RPCError(.aborted, "job \(job.name) failed: \(last.error)") }
    if last.state == .cancelled { throw RPCError(.cancelled, "job \(job.name) was cancelled") }
  }

  /// Runs a job that was interrupted, failed or was cancelled on from its
  /// newest checkpoint.
  private func resume(_ name: String, by caller: Caller) async throws -> (
    TrainingJob, AsyncStream<Pipemesh_V1_TrainProgress>
  ) {
    let job = try await prepareResume(name, by: caller, fromStart: false)
    return (job, launch(job, owner: Caller(name: job.owner, isAdmin: false)))
  }

  /// A stopped job, ready to run on from its newest checkpoint (`fromStart`:
  /// from step 0 when it has none) under a new run id, and recorded as
  /// running; not started yet.
  private func prepareResume(_ name: String, by caller: Caller, fromStart: Bool) async throws -> TrainingJob {
    await interruptedCleanup.value
    let stored = try await storedJob(name, for: caller, to: "resume")
    let resumable: Set<Pipemesh_V1_JobState> = [.interrupted, .failed, .cancelled, .restarting]
    guard resumable.contains(stored.record.state) else {
      throw RPCError(
        .failedPrecondition,
        "job \(name) \(Self.describe(stored.record.state)); only a job that stopped part way resumes")
    }
    // A job that stopped while it was queued loses nothing by starting.
    let neverRan = stored.record.startedUnixSeconds == 0 && stored.record.step == 0
    guard stored.record.checkpointStep > 0 || fromStart || neverRan else {
      throw RPCError(
        .failedPrecondition,
        "job \(name) wrote no checkpoint to resume from (checkpoint.every_steps); train it again with replace")
    }
    let (inputs, targets): (Tensor, Tensor)
    if case .dataset = stored.record.options.data.source {
      (inputs, targets) = try data(stored.record.options.data)
    } else if let kept = try store.data(of: stored.runID) {
      (inputs, targets) = kept
    } else if let kept = try store.data(of: stored.checkpointRunID) {
      (inputs, targets) = kept
    } else {
      throw RPCError(
        .failedPrecondition, "the examples job \(name) was sent inline were not kept; train it again with replace")
    }
    var options = stored.record.options
    (options.stages, options.replicas) = try await shape(of: options)
    // One replica's partitions must answer: a job that lost a replica goes on
    // with the others, on as many as the free partitions hold (no more than it
    // asked for while a job waits), and grows back later.
    let budget = try await checkMembers(needed: Int(options.stages))
    let vacancy = pool.vacancy
    let fitting = TrainingJob.replicas(
      of: options, fittingIn: vacancy.free, limit: vacancy.waiting == nil ? nil : Int(options.replicas))
    let running = max(fitting, 1)
    let job = try TrainingJob(
      name: name, owner: stored.record.owner, request: options, running: running, inputs: inputs, targets: targets,
      cluster: cluster, store: store, events: events, budget: budget, resuming: stored, stepDeadline: stepDeadline)
    // Examples that were sent inline are kept for the new run.
    if stored.record.options.data.source == nil { try store.saveData(of: job.runID, inputs: inputs, targets: targets) }
    // Only the run that stopped, and only once: another resume or a replace meanwhile is refused.
    _ = try await store.insertJob(job.stored) { existing, _ in
      guard let existing, existing.runID == stored.runID, resumable.contains(existing.record.state) else {
        throw RPCError(.failedPrecondition, "job \(name) changed while it was being resumed; look at it again")
      }
    }
    if let stop = job.snapshot.faults.last { events?.stopped(name, stop) }
    // What the stopped run held: its stages and data; its variables stay until the new run checkpoints.
    store.removeData(of: stored.runID)
    if stored.runID != stored.checkpointRunID {
      _ = try? await StageLoading.discard(runID: stored.runID, cluster: cluster, clients: pool.everyClient)
    }
    return job
  }

  /// Frees the stages and variables of the jobs trained with discard_model
  /// that succeeded while a coordinator on this state stopped before freeing
  /// them; returns the jobs whose variables the ps still held. Best effort:
  /// at the first failure (a ps that does not answer) the rest waits for the
  /// next start (DeleteJob frees a job too).
  public func releaseDiscardedJobs() async -> [String] {
    var freed: [String] = []
    for stored in (try? await store.unreleasedDiscardJobs()) ?? [] {
      do {
        var bytes: Int64 = 0
        for run in Set([stored.runID, stored.checkpointRunID]) where !run.isEmpty {
          bytes += try await StageLoading.discard(runID: run, cluster: cluster, clients: pool.everyClient)
        }
        try await store.markReleased(stored.record.job, runID: stored.runID)
        if bytes > 0 { freed.append(stored.record.job) }
      } catch {
        break
      }
    }
    return freed
  }

  /// Resumes every job this coordinator found interrupted when it started
  /// and that can go on from a checkpoint; returns each one's outcome ("" when it runs).
  public func resumeInterruptedJobs() async -> [(job: String, problem: String)] {
    var outcomes: [(String, String)] = []
    for name in interruptedJobs {
      do {
        _ = try await resume(name, by: .anonymous)
        outcomes.append((name, ""))
      } catch {
        outcomes.append((name, RPCError.describing(error)))
      }
    }
    return outcomes
  }

  /// "job-N" for the next N no job has: each call takes its own N, counted
  /// on from the number of stored jobs.
  private func unusedJobName() async throws -> String {
    while true {
      let number = try jobNumbers.withLock { last in
        let next = try (last ?? store.jobCounts().values.reduce(0, +)) + 1
        last = next
        return next
      }
      if try await store.job("job-\(number)") == nil { return "job-\(number)" }
    }
  }

  /// Frees what a replaced job held: its stages and its variables on the ps.
  private func release(_ replaced: CoordinatorStore.StoredJob) async {
    registry.forgetStages(of: replaced.runID)
    for run in Set([replaced.runID, replaced.checkpointRunID]) where !run.isEmpty {
      _ = try? await StageLoading.discard(runID: run, cluster: cluster, clients: pool.everyClient)
    }
    store.removeData(of: replaced.runID)
  }

  private func data(_ source: Pipemesh_V1_DataSource) throws -> (Tensor, Tensor) {
    switch source.source {
    case .inline(let data):
      let inputs = try Tensor(wire: data.inputs, what: "inline inputs")
      let targets = try Tensor(targets: data.targets, what: "inline targets")
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

extension Pipemesh_V1_ImportModelRequest {
  /// Where the model is to be split, as its two lists say.
  fileprivate var splitPositions: [LayerPosition] {
    get throws { try LayerPosition.splitPoints(layers: splitPoints, inputs: splitPointInputs) }
  }
}
