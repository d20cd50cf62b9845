import Foundation
import MeshPSClient
import MeshPipeline
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// A training job: waits QUEUED until it is placed on partitions of its own,
/// loads the stages on them, then runs epochs of pipelined steps on R
/// replicas over disjoint shards of each epoch's shuffled data, evaluating on
/// the held-out split at the end of each epoch. A step's examples are the
/// same however many replicas run it (`stepExamples`, split evenly), so a
/// job may go on with fewer replicas or grow onto more between runs.
final class TrainingJob: Sendable {
  let name: String
  /// The user who started it ("" when the coordinator authenticates no one).
  let owner: String
  /// The job's name on the partitions and the ps: the name plus a suffix of
  /// its own, so a later run under the same name starts from fresh state
  /// (and a resumed run from its checkpoint, never from what a partition
  /// kept of the run it resumes).
  let runID: String
  /// The run whose checkpoints hold the job's newest one: an earlier run
  /// it resumes, until this one writes its own.
  private let checkpointRun: Mutex<String>
  /// The request without its data.
  let request: Pipemesh_V1_TrainRequest
  let model: Sequential
  let plan: Planner.Plan
  let schedule: PipelineSchedule
  /// Pipeline stages, and the data-parallel replicas of each that this run
  /// runs on (the request's `replicas` are what the job asked for).
  let stages: Int
  let replicas: Int
  /// The examples of one step: batch_size × the replicas the job asked for.
  let stepExamples: Int
  /// The mesh's ps tasks (the job's partitions are its placement).
  let cluster: Cluster
  let trace = TraceRecorder()
  /// Told of every step, evaluation and end (the coordinator's metrics).
  private let events: (any TrainingEvents)?
  /// Where the job's record is kept as it runs.
  private let store: CoordinatorStore
  private let status: Mutex<Pipemesh_V1_Job>
  /// When the record was last written while steps ran.
  private let savedAt = Mutex(ContinuousClock.now)
  /// When a step is taken to hang.
  private let stepDeadline: StepDeadline
  /// The deadline of the next step (`stepDeadline.after(_:)` the recent ones).
  private let nextStepDeadline: Mutex<Duration>
  /// The partitions the job runs on, once it has left the queue.
  private let placed = Mutex<Placement?>(nil)
  /// Each ps task's incarnation when the run began: a task that restarted
  /// since writes no checkpoint of the run and answers no pull of its final
  /// weights.
  private let psIncarnations = Mutex<[String: UInt64]>([:])
  var psIncarnationsAtStart: [String: UInt64] { psIncarnations.withLock { $0 } }
  private let data: Mutex<JobData?>

  /// The examples a job trains and evaluates on, dropped when it ends.
  private struct JobData {
    let train: (inputs: Tensor, targets: Tensor)
    let validation: (inputs: Tensor, targets: Tensor)?
  }

  /// Checks the request (its `stages` and `replicas` given) and the data
  /// against the model, with `budget` the memory of the least partition it
  /// may be placed on; nothing runs yet. The run runs on `running` replicas
  /// (the request's when nil; see `replicas(of:fittingIn:)`). Resuming
  /// `stored` (its options as `request`), the job keeps its record and goes
  /// on from its newest checkpoint under a new run id. With `layerTimes`
  /// (measured per layer on a partition) the stages balance those times.
  init(
    name: String, owner: String, request: Pipemesh_V1_TrainRequest, running: Int? = nil, inputs: Tensor,
    targets: Tensor, cluster: Cluster, store: CoordinatorStore, events: (any TrainingEvents)? = nil, budget: Int? = nil,
    resuming stored: CoordinatorStore.StoredJob? = nil, layerTimes: [LayerTiming]? = nil,
    stepDeadline: StepDeadline = StepDeadline()
  ) throws {
    self.stepDeadline = stepDeadline
    nextStepDeadline = Mutex(stepDeadline.firstSteps)
    var request = request
    // Bounded jobs stored before replicas ran apart did not wait; they do now.
    if stored != nil, case .bounded(var bounded) = request.consistency.mode, !bounded.wait {
      bounded.wait = true
      request.consistency.bounded = bounded
    }
    try Self.checkOptions(request)
    stages = Int(request.stages)
    replicas = running ?? Int(request.replicas)
    precondition(stages >= 1 && request.replicas >= 1, "the coordinator gives every job its stages and replicas")
    stepExamples = Int(request.batchSize) * Int(request.replicas)
    model = try makeModel(request.model)
    plan = try Planner.plan(
      model, stages: stages,
      splitPoints: try LayerPosition.splitPoints(layers: request.splitPoints, inputs: request.splitPointInputs),
      budgets: Array(repeating: budget, count: stages),
      memory: try StageMemory(train: request), measured: layerTimes, wholeLayers: request.wholeLayers,
      splitsSharingWeights: Planner.splitsSharingWeights(optimizer: request.optimizer, consistency: request.consistency)
    )
    if request.optimizer.clipGlobalNorm > 0, let shared = plan.variableSharedAcrossStages(of: model) {
      throw CoordinatorError(
        .invalidRequest,
        "optimizer.clip_global_norm takes each stage's part of the gradients' norm, but \(shared.name) is used on "
          + "stages \(shared.stages.map(String.init).joined(separator: " and ")) (a tied layer, or a recurrent layer "
          + "split at a time step), whose gradients add up on the ps: put its layers on one stage (split_points, "
          + "whole_layers) or train without clipping")
    }
    if try JobConsistency(request.consistency).reduction == .ring,
      let shared = model.layers.lazy.flatMap(\.sharedVariables).first
    {
      throw CoordinatorError(
        .invalidRequest,
        "consistency.sync.reduction is REDUCTION_RING, but \(shared.name) is shared by several layers (a tied "
          + "layer), whose gradients add up on the ps: give REDUCTION_PARAMETER_SERVER")
    }
    let microBatches = max(1, Int(request.microBatches))
    let batchSize = Int(request.batchSize)
    guard request.epochs >= 1 else { throw CoordinatorError(.invalidRequest, "epochs must be at least 1") }
    guard batchSize >= microBatches else {
      throw CoordinatorError(
        .invalidRequest,
        "batch_size \(batchSize) must be at least the number of micro-batches (\(microBatches))")
    }
    guard replicas >= 1, stepExamples % replicas == 0, stepExamples / replicas >= microBatches else {
      throw CoordinatorError(
        .invalidRequest,
        "\(replicas) replicas do not split a step's \(stepExamples) examples evenly into \(microBatches) micro-batches each"
      )
    }
    guard request.validationFraction >= 0, request.validationFraction < 1 else {
      throw CoordinatorError(.invalidRequest, "validation_fraction must be in [0, 1)")
    }
    let stopping = request.earlyStopping
    guard (0...10_000).contains(stopping.patience), stopping.minDelta.isFinite, stopping.minDelta >= 0 else {
      throw CoordinatorError(
        .invalidRequest,
        "early_stopping: patience must be 0 to 10000 epochs and min_delta a finite number >= 0, got "
          + "\(stopping.patience) and \(stopping.minDelta)")
    }
    guard stopping.patience == 0 || request.validationFraction > 0 || request.fold.folds > 0 else {
      throw CoordinatorError(
        .invalidRequest,
        "early_stopping watches the validation loss: give validation_fraction above 0 or a fold (held-out data)")
    }
    // Flat rows (a CSV's features) take the model's input shape when the sizes agree.
    let inputShape = model.activationShapes[0]
    let inputs =
      inputs.rank >= 1 && Array(inputs.shape.dropFirst()) != inputShape
        && inputs.shape.dropFirst().reduce(1, *) == inputShape.reduce(1, *)
      ? inputs.reshaped(to: [inputs.shape[0]] + inputShape) : inputs
    try model.checkInput(inputs, "the data does not fit the model")
    // One regression target per example may come as [N]: the model's output is [N, 1].
    let targets =
      model.spec.loss == .meanSquaredError && targets.rank == 1 && model.activationShapes.last == [1]
      ? targets.reshaped(to: [targets.shape[0], 1]) : targets
    try model.checkTarget(targets, batchSize: inputs.shape[0], "the targets do not fit the model")
    let folds = request.fold
    guard folds.folds == 0 || ((2...1000).contains(folds.folds) && (0..<folds.folds).contains(folds.fold)) else {
      throw CoordinatorError(
        .invalidRequest,
        "fold: folds must be 0 or 2 to 1000 and fold 0 to folds - 1, got fold \(folds.fold) of \(folds.folds)")
    }
    guard folds.folds == 0 || request.validationFraction == 0 else {
      throw CoordinatorError(.invalidRequest, "give fold or validation_fraction, not both: a fold is the held-out data")
    }
    let split =
      folds.folds > 0
      ? PortableRandom.foldSplit(
        count: inputs.shape[0], folds: Int(folds.folds), fold: Int(folds.fold), seed: request.shuffleSeed)
      : PortableRandom.heldOutSplit(
        count: inputs.shape[0], validationFraction: Double(request.validationFraction), seed: request.shuffleSeed)
    // Rescaling fitted on the training split alone, then the same for the held-out examples.
    let training = inputs.rows(split.train)
    // A job that goes on (resumed, restarted, moved) keeps the rescaling its weights were trained with.
    let features = inputShape.reduce(1, *)
    let kept = stored?.record.options.normalization
    let normalization =
      if let kept, kept.method == request.normalization.method, kept.method != .none, kept.offset.count == features {
        kept
      } else {
        try Pipemesh_V1_InputNormalization.fitted(
          request.normalization.method, on: training, model: model, field: "normalization")
      }
    let normalizer = try normalization.normalizer(features: features, field: "normalization")
    guard request.earlyStopping.patience == 0 || !split.validation.isEmpty else {
      throw CoordinatorError(
        .invalidRequest,
        "early_stopping watches the validation loss, but validation_fraction \(request.validationFraction) of "
          + "\(inputs.shape[0]) examples holds out none: hold out more")
    }
    func rescaled(_ inputs: Tensor) -> Tensor { normalizer?.apply(to: inputs) ?? inputs }
    let validation =
      split.validation.isEmpty ? nil : (rescaled(inputs.rows(split.validation)), targets.rows(split.validation))
    let train = (inputs: rescaled(training), targets: targets.rows(split.train))
    guard train.inputs.shape[0] >= stepExamples else {
      throw CoordinatorError(
        .invalidRequest,
        "\(train.inputs.shape[0]) training examples are fewer than one step needs (batch_size \(batchSize) × \(request.replicas) replicas)"
      )
    }
    data = Mutex(JobData(train: train, validation: validation))
    stepsPerEpoch = train.inputs.shape[0] / stepExamples
    schedule = PipelineSchedule(
      kind: Self.scheduleKind(request.schedule), stages: stages,
      microBatches: microBatches)
    self.name = name
    self.owner = owner
    runID = "\(name).\(String(UInt32.random(in: 0x1000_0000...UInt32.max), radix: 16))"
    checkpointRun = Mutex(stored?.checkpointRunID ?? "")
    // The examples are held in `data` while the job runs; the request keeps
    // the rest (a dataset's reference, not examples sent inline), so a
    // finished job holds no copy of them.
    var options = request
    if case .inline = options.data.source { options.data = .init() }
    options.job = name
    options.microBatches = Int32(microBatches)
    options.splitPoints = plan.splitPoints.wireLayers
    options.splitPointInputs = plan.splitPoints.wireInputs
    if options.schedule == .scheduleUnspecified { options.schedule = .scheduleOneFOneB }
    if options.consistency.mode == nil { options.consistency.sync = .init() }
    options.consistency.replicas = Int32(replicas)
    // The schedule counts updates: one a step, or one per replica and step where each applies its
    // own (as many replicas as the job asked for, so that it does not change when the count does).
    let updatesPerStep = Self.replicasApplyTheirOwnUpdates(request) ? Int(request.replicas) : 1
    do {
      options.optimizer = try request.optimizer.resolved(jobSteps: stepsPerEpoch * Int(request.epochs) * updatesPerStep)
    } catch let error as WireError {
      throw error.within("optimizer")
    }
    options.normalization = normalization
    self.request = options
    self.cluster = cluster
    self.store = store
    self.events = events
    var record =
      stored?.record
      ?? .with {
        $0.job = name
        $0.owner = owner
        $0.createdUnixSeconds = Date().timeIntervalSince1970
        $0.options = options
      }
    record.stoppedEarlyEpoch = 0
    if let stopped = stored?.record {
      record.faults.append(
        .with {
          $0.step = stopped.step
          $0.state = stopped.state
          $0.error = stopped.error
          $0.unixSeconds = stopped.endedUnixSeconds
          $0.stepsRedone = max(0, stopped.step - stopped.checkpointStep)
        })
      record.resumes += 1
      // Epochs after the checkpoint are run again.
      record.epochs.removeAll { $0.step > stopped.checkpointStep }
    }
    record.state = .queued
    record.error = ""
    record.endedUnixSeconds = 0
    record.startedUnixSeconds = 0
    record.partitions = []
    record.runningReplicas = 0
    status = Mutex(record)
  }

  /// Whether each replica of a job of `request` applies updates of its own
  /// (async and bounded), rather than all of them one update a step (sync).
  /// Either may run on fewer replicas than it asked for, each taking a
  /// bigger share of the step's examples: in sync mode a step is the same
  /// whoever runs it; an async or bounded job's survivors of a lost replica
  /// make fewer updates of more examples each until it is back. Only a sync
  /// job grows past its replicas (max_replicas).
  static func replicasApplyTheirOwnUpdates(_ request: Pipemesh_V1_TrainRequest) -> Bool {
    switch request.consistency.mode {
    case .sync, nil: false
    case .async, .bounded: true
    }
  }

  /// The most replicas a job of `request` (its stages and replicas given)
  /// runs on in `partitions` partitions, at most `limit` (its max_replicas
  /// when nil): a count that splits a step's examples evenly, at least one
  /// example per micro-batch each. 0 when the partitions hold no replica.
  static func replicas(of request: Pipemesh_V1_TrainRequest, fittingIn partitions: Int, limit: Int? = nil) -> Int {
    let stepExamples = Int(request.batchSize) * Int(request.replicas)
    let most = min(limit ?? mostReplicas(request), partitions / max(1, Int(request.stages)))
    return stride(from: most, through: 1, by: -1).first {
      stepExamples % $0 == 0 && stepExamples / $0 >= max(1, Int(request.microBatches))
    } ?? 0
  }

  /// The most replicas a job of `request` grows to.
  static func mostReplicas(_ request: Pipemesh_V1_TrainRequest) -> Int {
    Int(max(request.replicas, request.maxReplicas))
  }

  /// The replicas the job should run on after this step, when it should
  /// change, with `free` partitions of the pool free and `waiting` the
  /// partitions the first job in the queue waits for (nil: none waits): it
  /// grows onto free partitions while no job waits, and gives back the
  /// replicas past those it asked for when that lets the first waiting job
  /// start. Nil to run on as it is.
  func replicasToRun(free: Int, waiting: Int?) -> Int? {
    let asked = Int(request.replicas)
    guard let waiting else {
      let target = Self.replicas(of: request, fittingIn: stages * replicas + free)
      return target > replicas ? target : nil
    }
    return replicas > asked && waiting <= free + (replicas - asked) * stages ? asked : nil
  }

  /// The most micro-batches a step may be cut into.
  static let maxMicroBatches: Int32 = 4096

  /// The most restarts a job may ask for.
  static let maxRestarts: Int32 = 100

  /// The schedule a request names (1F1B when it names none: GPipe's
  /// throughput, holding at most K micro-batches' activations per stage).
  static func scheduleKind(_ kind: Pipemesh_V1_ScheduleKind) -> ScheduleKind {
    switch kind {
    case .scheduleUnspecified, .scheduleOneFOneB: .oneFOneB
    case .scheduleZeroBubbleH1: .zeroBubbleH1
    case .schedulePipedream2Bw: .pipeDream2BW
    case .scheduleGpipe, .UNRECOGNIZED: .gpipe
    }
  }

  /// Checks the options that the partitions and the ps would otherwise
  /// refuse only once the job runs, so that a bad request creates nothing.
  static func checkOptions(_ request: Pipemesh_V1_TrainRequest) throws {
    guard request.microBatches >= 0, request.microBatches <= maxMicroBatches else {
      throw CoordinatorError(
        .invalidRequest,
        "micro_batches is \(request.microBatches); give 1 to \(maxMicroBatches) (0: 1)")
    }
    switch request.schedule {
    case .scheduleUnspecified, .scheduleGpipe, .scheduleOneFOneB, .scheduleZeroBubbleH1: break
    case .schedulePipedream2Bw:
      switch request.consistency.mode {
      case .sync, nil: break
      case .async, .bounded:
        throw CoordinatorError(
          .invalidRequest,
          "schedule SCHEDULE_PIPEDREAM_2BW needs sync consistency (its steps overlap, each a step behind on the "
            + "weights, and async or bounded replicas run their steps apart): give consistency sync, or another "
            + "schedule")
      }
    case .UNRECOGNIZED(let value):
      throw CoordinatorError(
        .invalidRequest,
        "schedule is \(value); give SCHEDULE_GPIPE (1), SCHEDULE_ONE_F_ONE_B (2), SCHEDULE_ZERO_BUBBLE_H1 (3) "
          + "or SCHEDULE_PIPEDREAM_2BW (4)")
    }
    do {
      // A cosine decay to the job's end takes its length from the data; any length checks the rest.
      _ = try makeOptimizer(request.optimizer.resolved(jobSteps: 1))
    } catch let error as WireError {
      throw error.within("optimizer")
    }
    do {
      try request.consistency.validate()
    } catch let error as WireError {
      throw error.within("consistency")
    }
    guard request.checkpoint.everySteps >= 0 else {
      throw CoordinatorError(
        .invalidRequest,
        "checkpoint.every_steps is \(request.checkpoint.everySteps); give 0 (none) or a step count")
    }
    _ = try HalfPrecision(transfer: request.transferDtype, field: "transfer_dtype")
    guard request.maxRestarts >= 0, request.maxRestarts <= maxRestarts else {
      throw CoordinatorError(.invalidRequest, "max_restarts is \(request.maxRestarts); give 0 to \(maxRestarts)")
    }
    guard request.maxReplicas == 0 || (request.maxReplicas >= request.replicas && request.maxReplicas <= 4096) else {
      throw CoordinatorError(
        .invalidRequest,
        "max_replicas is \(request.maxReplicas); give 0 (replicas) or \(request.replicas) (replicas) to 4096")
    }
    guard request.maxReplicas <= request.replicas || !replicasApplyTheirOwnUpdates(request) else {
      throw CoordinatorError(
        .invalidRequest,
        "max_replicas \(request.maxReplicas) needs sync consistency: each replica of an async or bounded job "
          + "applies updates of its own, and more replicas than it asked for would make more updates of fewer "
          + "examples each; give max_replicas 0, or consistency sync")
    }
    if case .bounded(let bounded) = request.consistency.mode, !bounded.wait, request.replicas > 1 {
      throw CoordinatorError(
        .invalidRequest,
        "consistency.bounded.wait is false with \(request.replicas) replicas: the replicas run apart, and a push "
          + "refused as stale would fail the job; set wait (each replica stays within max_staleness "
          + "\(bounded.maxStaleness) steps of the slowest), or use async")
    }
    guard request.maxKeptBytes >= 0 else {
      throw CoordinatorError(
        .invalidRequest,
        "max_kept_bytes is \(request.maxKeptBytes); give 0 for the partitions' bound or a byte count")
    }
  }

  /// Whether the job writes checkpoints, which needs every ps to have a
  /// checkpoint directory.
  var checkpoints: Bool { request.checkpoint.everySteps > 0 || request.checkpoint.atEnd }

  var snapshot: Pipemesh_V1_Job { status.withLock { $0 } }

  /// The job as its record stores it.
  var stored: CoordinatorStore.StoredJob {
    CoordinatorStore.StoredJob(record: snapshot, runID: runID, checkpointRunID: checkpointRun.withLock { $0 })
  }

  /// Writes the job's record; while steps run (`throttled`), at most every
  /// two seconds.
  private func save(throttled: Bool = false) async throws {
    if throttled {
      let now = ContinuousClock.now
      let due = savedAt.withLock { savedAt in
        guard now - savedAt >= .seconds(2) else { return false }
        savedAt = now
        return true
      }
      guard due else { return }
    }
    try await store.update(stored)
  }

  /// Adds to a stopped job's error why it was not run on; one that was
  /// restarting has failed.
  func noteRestartFailure(_ problem: any Error) async {
    let stored = status.withLock { status in
      if status.state == .restarting { status.state = .failed }
      status.error += "; it was not restarted: \(RPCError.describing(problem))"
      return CoordinatorStore.StoredJob(
        record: status, runID: runID, checkpointRunID: checkpointRun.withLock { $0 })
    }
    try? await store.update(stored)
  }

  /// Records how the job ended (with `error` when it failed) and saves it.
  private func finish(_ state: Pipemesh_V1_JobState, error: String = "") async {
    status.withLock {
      $0.state = state
      $0.error = error
      $0.endedUnixSeconds = Date().timeIntervalSince1970
    }
    events?.ended(name, state, error: error)
    // Not cancelled with the job's task: the record must be written.
    let stored = stored
    await Task { [store] in try? await store.update(stored) }.value
  }

  let stepsPerEpoch: Int

  /// The partitions the job runs (or ran) on; nil while it is queued.
  var placement: Placement? { placed.withLock { $0 } }

  /// Records that the job waits for partitions (it had none, or lost one).
  func queue() async {
    status.withLock {
      $0.state = .queued
      $0.startedUnixSeconds = 0
      $0.runningReplicas = 0
    }
    try? await save()
  }

  /// Records that a job stopped before it left the queue (cancelled, or its
  /// wait failed).
  func endQueued(_ error: any Error) async {
    if error is CancellationError || Task.isCancelled {
      await finish(.cancelled)
    } else {
      await finish(.failed, error: RPCError.describing(error))
    }
    data.withLock { $0 = nil }
  }

  /// A job that stopped at a step boundary, after a checkpoint there, to go
  /// on from it on another placement without a failed step: a partition it
  /// runs on is leaving the pool, or it grows or gives back replicas.
  struct Move: Error, CustomStringConvertible {
    /// Why, as the coordinator put it ("the partition at … is leaving the pool").
    let reason: String
    let step: Int64
    var description: String {
      "\(reason): the job stopped after step \(step), at a checkpoint there, to go on on another placement"
    }
  }

  /// What a failure of a run leads to.
  enum RestartDecision: Equatable, Sendable {
    /// The job goes on from its newest checkpoint.
    case restart
    /// The job stops there.
    case stop
    /// The job stops there, a member having failed under it after it spent
    /// its `max_restarts` (the count) on earlier failures.
    case restartsSpent(Int32)

    /// What the job's error adds.
    var note: String {
      guard case .restartsSpent(let count) = self else { return "" }
      return "; it was not restarted: it had spent its max_restarts (\(count)) on the failures its faults list"
    }
  }

  /// Runs the job to its end on `placement`, reporting progress; records
  /// how it ended. A job that fails or is cancelled unloads its stages (its
  /// variables stay on the ps): that ends the partitions' calls still
  /// waiting in its last step, and frees their memory. When `move` gives a
  /// reason to go on elsewhere after a step and the ps tasks write
  /// checkpoints, the job checkpoints and stops there, interrupted, with a
  /// `Move`. A failure that `restarts` answers `.restart` leaves the job
  /// RESTARTING (its caller runs it on), any other FAILED, its error saying
  /// when its restarts were spent. The job runs (and counts as
  /// running: it cannot be replaced or deleted) until `register` has
  /// recorded its model; a job whose model cannot be registered succeeds and
  /// says why, unless `restarts` restarts it for the error (a ps task that
  /// restarted since the run began, or did not answer): then it is
  /// RESTARTING, to register the model from its newest checkpoint. Returns
  /// why it failed (nil when it did not).
  @discardableResult
  func run(
    on placement: Placement, report: @Sendable (Pipemesh_V1_TrainProgress) -> Void,
    move: @Sendable () -> String? = { nil }, restarts: @Sendable (any Error) -> RestartDecision = { _ in .stop },
    register: @escaping @Sendable (TrainingJob) async throws -> String
  ) async -> (any Error)? {
    precondition(placement.stages == stages && placement.replicas == replicas, "a job runs on the shape it was given")
    // The job needs its examples only while it runs.
    defer { data.withLock { $0 = nil } }
    placed.withLock { $0 = placement }
    events?.started(
      name, stages: stages, replicas: replicas, partitions: placement.partitions.joined().map { $0 },
      fromStep: status.withLock { $0.checkpointStep })
    status.withLock {
      $0.state = .running
      $0.startedUnixSeconds = Date().timeIntervalSince1970
      $0.partitions = placement.partitions.joined().map { $0 }
      $0.runningReplicas = Int32(replicas)
    }
    let failure: (any Error)?
    do {
      guard let data = data.withLock({ $0 }) else { preconditionFailure("job \(name) ran twice") }
      try await save()
      let last = try await execute(data, on: placement, report: report, move: move)
      do {
        let model = try await register(self)
        status.withLock { $0.model = model }
        report(last)
        await finish(.succeeded)
        // A resumed run that ended before a checkpoint of its own no longer needs the run it
        // resumed, once the model holds the weights and the success is saved (a coordinator
        // killed before that resumes from it). Not cancelled with this task.
        let resumedRun = checkpointRun.withLock { $0 }
        if !resumedRun.isEmpty, resumedRun != runID {
          let cluster = cluster
          _ = await Task { try await cluster.parameterServerClient().drop(job: resumedRun) }.result
        }
      } catch let error where !(error is CancellationError) && !Task.isCancelled {
        // Its final weights could not be read (a ps task restarted, or did not answer): a job that
        // may restart goes on from its newest checkpoint (from the start without one) and
        // registers them then.
        let decision = restarts(error)
        guard decision == .restart else {
          report(last)
          await finish(
            .succeeded, error: "its model could not be registered: \(RPCError.describing(error))\(decision.note)")
          return nil
        }
        let status = RPCError(answering: error)
        throw RPCError(status.code, "its model could not be registered: \(status.message)")
      }
      return nil
    } catch is CancellationError {
      await finish(.cancelled)
      failure = nil
    } catch let error as RPCError where error.code == .cancelled && Task.isCancelled {
      await finish(.cancelled)
      failure = nil
    } catch let move as Move {
      await finish(.interrupted, error: "\(move)")
      failure = move
    } catch {
      let decision = restarts(error)
      await finish(decision == .restart ? .restarting : .failed, error: RPCError.describing(error) + decision.note)
      failure = error
    }
    // Not cancelled with this task: the unload must reach the partitions.
    let unload = Task { await StageLoading.unload(runID: self.runID, clients: placement.clients) }
    // A failed run does not wait for it: the member that failed may hang, and the
    // job may go on at once elsewhere under a new run id.
    if failure == nil { await unload.value }
    return failure
  }

  /// Runs the job's steps on `placement`; returns the last progress to
  /// report, once its model is registered.
  private func execute(
    _ data: JobData, on placement: Placement, report: @Sendable (Pipemesh_V1_TrainProgress) -> Void,
    move: @Sendable () -> String?
  ) async throws -> Pipemesh_V1_TrainProgress {
    let psTasks = try await cluster.parameterServerClient().taskStates()
    psIncarnations.withLock { $0 = Dictionary(psTasks.map { ($0.endpoint, $0.incarnation) }) { first, _ in first } }
    // A job moves through a checkpoint, which needs every ps task's directory.
    let mayMove = psTasks.allSatisfy(\.checkpointsEnabled)
    let train = data.train
    // A resumed job goes on after the step of its newest checkpoint, every
    // ps task put back as that checkpoint holds it.
    let (resumedStep, recordedEpochs) = status.withLock { ($0.checkpointStep, $0.epochs.count) }
    if resumedStep > 0 {
      try await cluster.parameterServerClient().restore(
        job: runID, from: checkpointRun.withLock { $0 }, step: resumedStep,
        replicas: try JobConsistency(consistency).atParameterServer.replicas)
    }
    let dataPlane = try await loadStages(on: placement)
    let members = try probedMembers(on: placement)
    let totalSteps = stepsPerEpoch * Int(request.epochs)
    status.withLock { $0.totalSteps = Int64(totalSteps) }
    var step = resumedStep
    // The current epoch's step losses: a resumed job starts from those up to its checkpoint.
    var (epochLossSum, epochSteps) = status.withLock {
      $0.checkpointStep > 0 ? ($0.checkpointEpochLossSum, Int($0.checkpointEpochSteps)) : (0, 0)
    }
    var recentSteps: [Duration] = []
    var lastEnded = ContinuousClock.now
    // The step the trace shows: the last one that did not flush to the ps
    // (a steady step's timeline), or 0 while every step flushed.
    var tracedStep: Int64 = 0
    /// Records an epoch's metrics, evaluating on the held-out split.
    func endEpoch(_ epoch: Int) async throws {
      var metrics = Pipemesh_V1_EpochMetrics.with {
        $0.epoch = Int32(epoch)
        $0.step = step
        $0.loss = epochLossSum / Double(max(1, epochSteps))
      }
      (epochLossSum, epochSteps) = (0, 0)
      if let validation = data.validation {
        // A step's deadline for each chunk of a step's rows: a partition that hangs is found as in a step.
        let (loss, accuracy, r2) = try await evaluate(
          validation.inputs, validation.targets, at: step, on: placement, members: members,
          chunkDeadline: stepDeadline.after(recentSteps))
        metrics.validationLoss = loss
        metrics.validationAccuracy = accuracy
        metrics.validationR2 = r2
        let evaluated = Pipemesh_V1_TrainProgress.with {
          $0.job = name
          $0.epoch = Int32(epoch)
          $0.step = step
          $0.totalSteps = Int64(totalSteps)
          $0.evaluated = true
          $0.validationLoss = loss
          $0.validationAccuracy = accuracy
          $0.validationR2 = r2
        }
        events?.evaluated(name, evaluated)
        report(evaluated)
      }
      status.withLock { $0.epochs.append(metrics) }
      try await save()
    }
    let firstEpoch = Int(resumedStep) / stepsPerEpoch + 1
    // Stopped right after an epoch's last step, before its metrics were recorded.
    /// Whether the job stops early after `epoch` (recorded when it does).
    func stoppedEarly(after epoch: Int) async throws -> Bool {
      guard stopsEarly, epoch < request.epochs, Self.stopsEarly(after: snapshot.epochs, request.earlyStopping) else {
        return false
      }
      status.withLock { $0.stoppedEarlyEpoch = Int32(epoch) }
      try await save()
      return true
    }
    var stopped = false
    if resumedStep > 0, Int(resumedStep) % stepsPerEpoch == 0 {
      if recordedEpochs < firstEpoch - 1 { try await endEpoch(firstEpoch - 1) }
      // A run that stopped early there (and resumes to register its model) stops there again.
      stopped = try await stoppedEarly(after: firstEpoch - 1)
    }
    // Resumed at an epoch's end: the next epoch starts afresh.
    if Int(resumedStep) % stepsPerEpoch == 0 { (epochLossSum, epochSteps) = (0, 0) }
    /// Records a step every replica ran (in `elapsed` since the one before):
    /// the job's progress, its record and the report.
    func record(_ outcomes: [PipelineRun.Outcome], epoch: Int, elapsed: Duration, flushed: Bool) async throws {
      recentSteps = Array((recentSteps + [elapsed]).suffix(StepDeadline.recentStepsCounted))
      nextStepDeadline.withLock { $0 = stepDeadline.after(recentSteps) }
      var progress = Pipemesh_V1_TrainProgress()
      progress.job = name
      progress.epoch = Int32(epoch)
      progress.step = step
      progress.totalSteps = Int64(totalSteps)
      progress.loss = outcomes.map(\.loss).reduce(0, +) / Double(outcomes.count)
      // Of the step's labels: one per example, or one per position of a sequence output.
      let labels = stepExamples * (train.targets.scalarCount / max(1, train.targets.shape[0]))
      progress.accuracy = Double(outcomes.map(\.correct).reduce(0, +)) / Double(max(1, labels))
      progress.samplesPerSecond = Double(stepExamples) / elapsed.seconds
      progress.stages = outcomes.enumerated().flatMap { replica, outcome in
        outcome.busy.enumerated().map { stage, busy in
          Pipemesh_V1_StageBusy.with {
            $0.stage = Int32(stage)
            $0.replica = Int32(replica)
            $0.busySeconds = busy.seconds
          }
        }
      }
      let memory = outcomes.enumerated().flatMap { replica, outcome in
        outcome.memory.enumerated().map { stage, memory in
          Pipemesh_V1_MemberMemory.with {
            $0.member = "stage \(stage) replica \(replica)"
            $0.endpoint = placement.partitions[stage][replica]
            $0.memory = memory
          }
        }
      }
      let recovered = status.withLock { status -> Pipemesh_V1_JobFault? in
        status.step = step
        status.loss = progress.loss
        status.memory = memory
        // The first step after a stop: what going on cost.
        guard let last = status.faults.indices.last, status.faults[last].recoverySeconds == 0 else { return nil }
        status.faults[last].recoverySeconds = max(0, Date().timeIntervalSince1970 - status.faults[last].unixSeconds)
        return status.faults[last]
      }
      if let recovered { events?.recovered(name, how: recovered.state, seconds: recovered.recoverySeconds) }
      events?.stepped(name, progress, seconds: elapsed.seconds, replicas: replicas)
      epochLossSum += progress.loss
      epochSteps += 1
      try await save(throttled: true)
      if !flushed { tracedStep = step }
      trace.show(step: tracedStep > 0 ? tracedStep : step)
      report(progress)
    }
    /// Writes the job's checkpoint at the current step, with the epoch's losses so far.
    func checkpointHere() async throws {
      _ = try await checkpoint(at: step, epochLossSum: epochLossSum, epochSteps: epochSteps)
    }
    let checkpointEvery = request.checkpoint.everySteps
    // Sync steps that do not overlap leave the ps at a step boundary between them.
    let checkpointsAfterFailures =
      checkpointEvery > 0 && mayMove && !schedule.kind.overlapsSteps && !replicasRunApart
      && ((try? JobConsistency(request.consistency))?.mode == .sync)
    /// After the step after the current one failed: when the ps tasks hold
    /// the current step exactly (every stage's update of it applied, none of
    /// the failed step's), writes the job's checkpoint there, so that going
    /// on runs no completed step again. Within a few seconds, or not at all.
    func checkpointAfterFailedStep() async {
      guard checkpointsAfterFailures, step > status.withLock({ $0.checkpointStep }) else { return }
      let (at, lossSum, lossSteps) = (step, epochLossSum, epochSteps)
      do {
        _ = try await within(Self.checkpointAfterFailureLimit, "the checkpoint after a failed step") {
          try await self.checkpoint(at: at, epochLossSum: lossSum, epochSteps: lossSteps, exactStep: true)
        }
        events?.checkpointedAfterFailure(name, step: at, refusal: nil)
      } catch {
        events?.checkpointedAfterFailure(name, step: at, refusal: RPCError.describing(error))
      }
    }
    for epoch in firstEpoch..<(Int(request.epochs) + 1) where !stopped {
      let order = PortableRandom.permutation(
        train.inputs.shape[0], seed: PortableRandom.epochSeed(request.shuffleSeed, epoch: epoch - 1))
      /// The examples replica `replica` trains on in the epoch's step `index`:
      /// its even share of the step's examples.
      @Sendable func shard(_ index: Int, replica: Int) -> [Int] {
        let share = stepExamples / replicas
        return Array(order[(index * stepExamples + replica * share)..<(index * stepExamples + (replica + 1) * share)])
      }
      var index = epoch == firstEpoch ? Int(resumedStep) % stepsPerEpoch : 0
      /// A step still running while the next one runs (PipeDream-2BW).
      var running: BegunStep?
      /// Records `begun`'s outcomes once every replica ran it.
      func finish(_ begun: BegunStep) async throws {
        let outcomes = try await begun.outcomes()
        step = begun.step
        let now = ContinuousClock.now
        // Since the step began, or since the one before ended when they overlapped.
        try await record(
          outcomes, epoch: epoch, elapsed: now - max(begun.started, lastEnded), flushed: begun.flush)
        lastEnded = now
      }
      while index < stepsPerEpoch {
        if Task.isCancelled, let running {
          running.cancel()
          _ = try? await running.outcomes()
        }
        try Task.checkCancellation()
        if replicasRunApart {
          // Up to the next step every replica must end together: a checkpoint's, the epoch's last,
          // or `maxStepsApart` on.
          let firstStep = step + 1
          let lastIndex =
            (index..<min(stepsPerEpoch, index + Self.maxStepsApart)).first { candidate in
              let candidateStep = firstStep + Int64(candidate - index)
              return checkpointEvery > 0 && candidateStep % checkpointEvery == 0
            } ?? min(stepsPerEpoch, index + Self.maxStepsApart) - 1
          var moving: String?
          try await runApart(
            steps: firstStep...(firstStep + Int64(lastIndex - index)), firstIndex: index, shard: shard, train: train,
            on: placement, members: members, dataPlane: dataPlane
          ) { outcomes, elapsed in
            step += 1
            index += 1
            try await record(outcomes, epoch: epoch, elapsed: elapsed, flushed: false)
            // A reason to go on elsewhere: every replica stops at the furthest step one of them began.
            guard moving == nil, mayMove, step < Int64(totalSteps) else { return true }
            moving = move()
            return moving == nil
          }
          // Stopped at the job's last step, it has nothing left to move.
          if step >= Int64(totalSteps) { moving = nil }
          if (checkpointEvery > 0 && step % checkpointEvery == 0) || moving != nil { try await checkpointHere() }
          if let moving { throw Move(reason: moving, step: step) }
          continue
        }
        // Under PipeDream-2BW the step before may still run: this one begins beside it, on the
        // weights from before that one's update (after a drain, on the newest).
        let thisStep = (running?.step ?? step) + 1
        // A reason to go on elsewhere: the job checkpoints after this step and moves.
        let moving = mayMove && thisStep < Int64(totalSteps) ? move() : nil
        // The ps must hold the step before a checkpoint and at the end.
        let checkpointDue = checkpointEvery > 0 && thisStep % checkpointEvery == 0
        // A job that may stop early after this epoch leaves its variables on the ps at the epoch's end.
        let mayStopHere = stopsEarly && index == stepsPerEpoch - 1
        let flush = checkpointDue || moving != nil || thisStep == Int64(totalSteps) || mayStopHere
        let weightsAfterStep = schedule.kind.overlapsSteps ? thisStep - (running == nil ? 1 : 2) : nil
        // An overlapping step runs beside the one before and the one after: about two steps' time.
        let deadline = stepDeadline.after(recentSteps) * (schedule.kind.overlapsSteps ? 2 : 1)
        let thisIndex = index
        let begun = BegunStep(step: thisStep, flush: flush) {
          try await self.withinDeadline(deadline, "step \(thisStep)", members: members) {
            try await self.runStep(
              thisStep, examples: { shard(thisIndex, replica: $0) }, train: train, flush: flush,
              weightsAfterStep: weightsAfterStep, on: placement, dataPlane: dataPlane)
          }
        }
        index += 1
        if let previous = running {
          running = nil
          do { try await finish(previous) } catch {
            begun.cancel()
            _ = try? await begun.outcomes()  // ended before the job unloads its stages
            throw error
          }
        }
        // The pipeline drains where every stage must hold this step: a flush, and the epoch's end
        // (its evaluation reads the newest weights).
        if schedule.kind.overlapsSteps && !flush && index < stepsPerEpoch {
          running = begun
          continue
        }
        do { try await finish(begun) } catch  where !(error is CancellationError) && !Task.isCancelled {
          await checkpointAfterFailedStep()
          // A job cancelled meanwhile ends cancelled, not failed.
          try Task.checkCancellation()
          throw error
        }
        if checkpointDue || moving != nil { try await checkpointHere() }
        if let moving { throw Move(reason: moving, step: step) }
      }
      try await endEpoch(epoch)
      if try await stoppedEarly(after: epoch) { break }
    }
    var last = Pipemesh_V1_TrainProgress()
    last.job = name
    last.step = step
    last.totalSteps = Int64(totalSteps)
    last.done = true
    last.stoppedEarlyEpoch = snapshot.stoppedEarlyEpoch
    last.traceJson = trace.chromeTrace(step: tracedStep > 0 ? tracedStep : step, faults: snapshot.faults)
    if request.checkpoint.atEnd {
      last.checkpoints = try await checkpoint(at: step, epochLossSum: epochLossSum, epochSteps: epochSteps)
    }
    return last
  }

  /// How long a checkpoint after a failed step may take (the ps tasks wait up
  /// to 2 s for the step's pushes still on their way).
  static let checkpointAfterFailureLimit: Duration = .seconds(5)

  /// Whether the job watches its validation loss to stop before its last epoch.
  private var stopsEarly: Bool { request.earlyStopping.patience > 0 }

  /// Whether `epochs` (oldest first, each with its validation loss) end with
  /// `patience` epochs in a row whose loss fell no more than `min_delta`
  /// below the best of the epochs before it.
  static func stopsEarly(after epochs: [Pipemesh_V1_EpochMetrics], _ rule: Pipemesh_V1_EarlyStopping) -> Bool {
    let patience = Int(rule.patience)
    guard patience > 0, epochs.count > patience else { return false }
    // A loss that is not a number (a diverged job) improves on nothing.
    let best = epochs.dropLast(patience).map(\.validationLoss).filter(\.isFinite).min() ?? .infinity
    return epochs.suffix(patience).allSatisfy { !($0.validationLoss <= best - Double(rule.minDelta)) }
  }

  /// Loads every stage on every replica; returns where each one's tensors
  /// are fetched, by stage and replica.
  private func loadStages(on placement: Placement) async throws -> [[String]] {
    try await StageLoading(
      runID: runID, model: request.model, bounds: plan.bounds, parameterServers: cluster.parameterServers,
      placement: placement,
      consistency: consistency, optimizer: request.optimizer, transferDType: request.transferDtype,
      overlappingSteps: schedule.kind.overlapsSteps
    ).load(
      replicas: 0..<replicas, recomputeActivations: request.recomputeActivations,
      maxKeptBytes: request.maxKeptBytes)
  }

  /// The job's consistency as the request gives it (read by `JobConsistency`
  /// everywhere: no mode is sync), with the cluster's replica count.
  var consistency: Pipemesh_V1_Consistency {
    var consistency = request.consistency
    consistency.replicas = Int32(replicas)
    // Unless the request bounds it, a push waits as long as the step's deadline lets it: that
    // deadline finds a replica that hangs, and names it.
    if case .bounded(var bounded) = consistency.mode, bounded.wait, bounded.waitTimeoutSeconds == 0 {
      bounded.waitTimeoutSeconds = JobConsistency.maxWaitTimeoutSeconds
      consistency.bounded = bounded
    }
    return consistency
  }

  /// Whether the job's replicas run their steps apart, each going on to its
  /// next step without waiting for the others: async and bounded jobs of more
  /// than one replica (a bounded job's ps holds the replicas within its
  /// bound: stale-synchronous parallel). Sync replicas meet at every step.
  private var replicasRunApart: Bool {
    guard replicas > 1 else { return false }
    switch request.consistency.mode {
    case .async, .bounded: return true
    case .sync, nil: return false
    }
  }

  /// Every replica's pipeline through one step, replica `r` on `examples(r)`;
  /// the outcomes by replica.
  private func runStep(
    _ step: Int64, examples: @escaping @Sendable (_ replica: Int) -> [Int], train: (inputs: Tensor, targets: Tensor),
    flush: Bool, weightsAfterStep: Int64?, on placement: Placement, dataPlane: [[String]]
  ) async throws -> [PipelineRun.Outcome] {
    try await withThrowingTaskGroup(of: (Int, PipelineRun.Outcome).self) { group in
      for replica in 0..<replicas {
        group.addTask {
          let outcome = try await self.runReplica(
            step, replica: replica, examples: examples(replica), train: train, flush: flush,
            weightsAfterStep: weightsAfterStep, on: placement, dataPlane: dataPlane)
          return (replica, outcome)
        }
      }
      var outcomes = [PipelineRun.Outcome?](repeating: nil, count: replicas)
      for try await (replica, outcome) in group { outcomes[replica] = outcome }
      return outcomes.map { $0! }
    }
  }

  /// One replica's pipeline through one step on `examples` (each stage
  /// commits when its calls are done).
  private func runReplica(
    _ step: Int64, replica: Int, examples: [Int], train: (inputs: Tensor, targets: Tensor), flush: Bool,
    weightsAfterStep: Int64? = nil, on placement: Placement, dataPlane: [[String]]
  ) async throws -> PipelineRun.Outcome {
    let inputs = train.inputs.rows(examples)
    let targets = train.targets.rows(examples)
    let parts = evenRanges(examples.count, parts: schedule.microBatches).map { range in
      (input: inputs.rows(Array(range)), target: targets.rows(Array(range)))
    }
    return try await PipelineRun(
      job: runID, step: step, replica: replica, schedule: schedule, stages: placement.clients.map { $0[replica] },
      dataPlane: dataPlane.map { $0[replica] }, microBatches: parts, flush: flush,
      weightsAfterStep: weightsAfterStep, clipGlobalNorm: request.optimizer.clipGlobalNorm, trace: trace
    ).run()
  }

  /// The most steps replicas running apart take before they meet: it bounds
  /// how far an async job's fastest replica runs ahead (what a move or a
  /// checkpoint waits for, and the calls the trace keeps).
  static let maxStepsApart = 16

  /// Runs `steps` with every replica going through them on its own (the
  /// epoch's `firstIndex` onwards, `shard` giving each replica's examples),
  /// each replica's step within the step deadline as it stands when the
  /// step begins. Once every replica ran a step, `stepped` gets its outcomes
  /// by replica and the time since the step before ended; when it returns
  /// false, the replicas stop after the furthest step one of them began,
  /// and the run returns once every replica ran it. Stages flush at the last
  /// of `steps` (which matters only to a stage that applies its own updates,
  /// never one of several replicas).
  private func runApart(
    steps: ClosedRange<Int64>, firstIndex: Int, shard: @escaping @Sendable (Int, _ replica: Int) -> [Int],
    train: (inputs: Tensor, targets: Tensor), on placement: Placement, members: [StepDeadline.Member],
    dataPlane: [[String]], stepped: ([PipelineRun.Outcome], Duration) async throws -> Bool
  ) async throws {
    let bounds = ApartSteps(last: steps.upperBound, furthestBegun: steps.lowerBound - 1)
    let (ran, ranSink) = AsyncThrowingStream.makeStream(
      of: (step: Int64, replica: Int, outcome: PipelineRun.Outcome?).self)
    try await withThrowingTaskGroup(of: Void.self) { group in
      for replica in 0..<replicas {
        group.addTask {
          do {
            var step = steps.lowerBound
            while bounds.begin(step) {
              let (thisStep, examples) = (step, shard(firstIndex + Int(step - steps.lowerBound), replica))
              let deadline = self.nextStepDeadline.withLock { $0 }
              let outcome = try await self.withinDeadline(
                deadline, "step \(thisStep) of replica \(replica)", members: members
              ) {
                try await self.runReplica(
                  thisStep, replica: replica, examples: examples, train: train, flush: thisStep == steps.upperBound,
                  on: placement, dataPlane: dataPlane)
              }
              ranSink.yield((step, replica, outcome))
              step += 1
            }
            ranSink.yield((step, replica, nil))
          } catch {
            ranSink.finish(throwing: error)
            throw error
          }
        }
      }
      var waiting: [Int64: [Int: PipelineRun.Outcome]] = [:]
      var nextStep = steps.lowerBound
      var replicasDone = 0
      var lastEnded = ContinuousClock.now
      for try await result in ran {
        guard let outcome = result.outcome else {
          replicasDone += 1
          if replicasDone == replicas { break }
          continue
        }
        waiting[result.step, default: [:]][result.replica] = outcome
        while let outcomes = waiting[nextStep], outcomes.count == replicas {
          waiting[nextStep] = nil
          nextStep += 1
          let now = ContinuousClock.now
          let goOn = try await stepped((0..<replicas).map { outcomes[$0]! }, now - lastEnded)
          lastEnded = now
          if !goOn { bounds.stopAtFurthestBegun() }
        }
      }
      // A cancelled job's stream ends early: no replica may be left past the recorded step.
      try Task.checkCancellation()
      guard replicasDone == replicas else { throw CancellationError() }
    }
  }

  /// A step begun on every replica, run by a task of its own so that the
  /// next step may begin beside it (PipeDream-2BW).
  private struct BegunStep {
    let step: Int64
    let flush: Bool
    let started = ContinuousClock.now
    private let task: Task<[PipelineRun.Outcome], any Error>

    init(step: Int64, flush: Bool, _ run: @escaping @Sendable () async throws -> [PipelineRun.Outcome]) {
      self.step = step
      self.flush = flush
      task = Task(operation: run)
    }

    /// The step's outcomes by replica; cancelling the caller cancels the step.
    func outcomes() async throws -> [PipelineRun.Outcome] {
      try await withTaskCancellationHandler {
        try await task.value
      } onCancel: {
        task.cancel()
      }
    }

    func cancel() { task.cancel() }
  }

  /// How far replicas running apart go: the last step, lowered to the
  /// furthest one begun when they are to stop early.
  private final class ApartSteps: Sendable {
    private let state: Mutex<(last: Int64, furthestBegun: Int64)>

    init(last: Int64, furthestBegun: Int64) { state = Mutex((last, furthestBegun)) }

    /// Whether a replica may begin `step` (noting that it did).
    func begin(_ step: Int64) -> Bool {
      state.withLock { state in
        guard step <= state.last else { return false }
        state.furthestBegun = max(state.furthestBegun, step)
        return true
      }
    }

    func stopAtFurthestBegun() { state.withLock { $0.last = $0.furthestBegun } }
  }

  /// `body`, a step's run or an evaluation's, within `deadline` as
  /// `stepDeadline` holds it to (asking `members` whether they answer once it
  /// runs past), for `rounds` deadlines at most (the policy's limit when nil).
  private func withinDeadline<T: Sendable>(
    _ deadline: Duration, rounds: Int? = nil, expected: Int = 0, _ what: String, members: [StepDeadline.Member],
    _ body: @escaping @Sendable () async throws -> T
  ) async throws -> T {
    try await stepDeadline.run(
      deadline, rounds: rounds, expected: expected, what, members: members,
      slow: { [name, events] in events?.ranPastDeadline(name, what, after: $0) }, body)
  }

  /// The members of a run on `placement` a step deadline asks about: its
  /// partitions and the ps tasks.
  private func probedMembers(on placement: Placement) throws -> [StepDeadline.Member] {
    var members: [StepDeadline.Member] = []
    for (stage, replicas) in placement.clients.enumerated() {
      for (replica, channel) in replicas.enumerated() {
        members.append(.init(name: "stage \(stage) replica \(replica) (\(channel.target))", channel: channel))
      }
    }
    return members + (try parameterServerMembers())
  }

  /// The ps tasks, as a step deadline asks about them.
  private func parameterServerMembers() throws -> [StepDeadline.Member] {
    try cluster.parameterServers.enumerated().map { task, endpoint in
      .init(name: "ps task \(task) (\(endpoint))", channel: try cluster.dialer.channel(to: endpoint))
    }
  }

  /// Runs `pull`, the pull of the job's final weights from the ps tasks as
  /// its model is registered: within a step's deadline for each request of
  /// the pull (`MeshPSClient.Placement.defaultBlockBytes` of weights), the
  /// ps tasks asked whether they answer once it runs past one. A task that
  /// stopped (a frozen host) fails the registration in seconds with
  /// DEADLINE_EXCEEDED, as it would fail a step, rather than when its
  /// connection's keepalive gives up. What the registry does after the pull
  /// (the version's commit) is not timed: a restart then would only find the
  /// version registered.
  func withinFinalPullDeadline(_ pull: @escaping @Sendable () async throws -> Void) async throws {
    let bytes = model.layerCosts.reduce(0) { $0 + $1.parameterCount } * MemoryLayout<Float>.size
    let requests = max(
      1, (bytes + MeshPSClient.Placement.defaultBlockBytes - 1) / MeshPSClient.Placement.defaultBlockBytes)
    try await withinDeadline(
      nextStepDeadline.withLock { $0 }, rounds: stepDeadline.limit * requests, expected: requests,
      "the pull of the final weights", members: try parameterServerMembers(), pull)
  }

  /// Loss and accuracy of the current variables after `step` on held-out
  /// data, through replica 0's pipeline, each part within `chunkDeadline`
  /// for each chunk of a step's rows in it (see `StepDeadline`).
  private func evaluate(
    _ inputs: Tensor, _ targets: Tensor, at step: Int64, on placement: Placement, members: [StepDeadline.Member],
    chunkDeadline: Duration
  ) async throws -> (loss: Double, accuracy: Double, r2: Double) {
    // In parts of at most `Self.evaluatedScalars` outputs, each part's mean loss weighted by its
    // rows: a language model's held-out text gives 256 logits a byte, too many to hold at once.
    let rows = inputs.shape[0]
    let outputScalars = max(1, model.activationShapes[model.activationShapes.count - 1].reduce(1, *))
    let part = max(1, Self.evaluatedScalars / outputScalars)
    var (lossSum, correct, squaredErrors) = (0.0, 0, 0.0)
    for start in stride(from: 0, to: rows, by: part) {
      let range = Array(start..<min(rows, start + part))
      let (partInputs, partTargets) =
        range.count == rows ? (inputs, targets) : (inputs.rows(range), targets.rows(range))
      // Asked about every chunk's deadline, up to the policy's limit for each chunk; slow past all of them.
      let chunk = Int(request.batchSize)
      let chunks = (range.count + chunk - 1) / chunk
      let outputs = try await withinDeadline(
        chunkDeadline, rounds: stepDeadline.limit * chunks, expected: chunks,
        "the evaluation of held-out rows \(range[0])...\(range[range.count - 1]) after step \(step)",
        members: members
      ) { [runID] in
        try await Inference.run(partInputs, job: runID, stages: placement.firstReplica, chunk: chunk)
      }
      lossSum += Double(model.loss(output: outputs, target: partTargets).scalar) * Double(range.count)
      switch model.spec.loss {
      case .softmaxCrossEntropy: correct += Loss.correctPredictions(logits: outputs, labels: partTargets)
      case .meanSquaredError:
        squaredErrors += zip(outputs.scalars, partTargets.scalars).reduce(0) {
          $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1))
        }
      }
    }
    switch model.spec.loss {
    case .softmaxCrossEntropy:
      return (lossSum / Double(max(1, rows)), Double(correct) / Double(max(1, targets.scalarCount)), 0)
    case .meanSquaredError:
      return (lossSum / Double(max(1, rows)), 0, Self.determination(squaredErrors: squaredErrors, targets: targets))
    }
  }

  /// 1 − `squaredErrors` / Σ(y − ȳ)² over `targets` [N, outputs…], ȳ each
  /// output's mean; 0 when the targets do not vary.
  static func determination(squaredErrors: Double, targets: Tensor) -> Double {
    let outputs = max(1, targets.scalarCount / max(1, targets.shape[0]))
    let values = targets.scalars
    var means = [Double](repeating: 0, count: outputs)
    for (index, value) in values.enumerated() { means[index % outputs] += Double(value) }
    let rows = Double(max(1, targets.shape[0]))
    means = means.map { $0 / rows }
    let total = values.enumerated().reduce(0.0) { sum, item in
      let deviation = Double(item.element) - means[item.offset % outputs]
      return sum + deviation * deviation
    }
    return total > 0 ? 1 - squaredErrors / total : 0
  }

  /// The most outputs an evaluation holds at once (64 MiB of float32).
  static let evaluatedScalars = 16 << 20

  /// Has every ps task write the job's own checkpoint after `step` (the ps
  /// holds the step: it flushed) and records it as where the job resumes,
  /// with the losses of the epoch's steps up to it, which a resumed job goes
  /// on from. A checkpoint that fails leaves the record at the one before,
  /// its losses included. With `exactStep`, the ps tasks write the state
  /// after exactly `step` without a flush, or nothing (see
  /// CheckpointRequest.exact_step).
  private func checkpoint(
    at step: Int64, epochLossSum: Double, epochSteps: Int, exactStep: Bool = false
  ) async throws -> [String] {
    let ps = try cluster.parameterServerClient()
    // A task that restarted since the run began (it may hold none of the job, or older values)
    // refuses, and the job restarts from the checkpoint before. Not sent again: a task that failed
    // it may have restarted.
    let files = try await ps.checkpoint(
      job: runID, step: step, incarnations: psIncarnations.withLock { $0 }, exactStep: exactStep)
    status.withLock {
      $0.checkpointStep = step
      $0.checkpointEpochLossSum = epochLossSum
      $0.checkpointEpochSteps = Int64(epochSteps)
    }
    let previous = checkpointRun.withLock { run in
      defer { run = runID }
      return run
    }
    try await save()
    // The run this one resumed is needed no more: its variables and checkpoints go.
    if !previous.isEmpty, previous != runID { _ = try? await ps.drop(job: previous) }
    return files
  }
}
