import Foundation
import MeshOps
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// `pipemesh.v1.Partition`: serves one pipeline stage per job.
public final class PartitionService: RPCService, Sendable {
  public let dataPlane: DataPlane
  public let activity = PartitionActivity()
  private let dialer: any RPCDialer
  private let defaultMaxKeptBytes: Int
  private let blasThreads: Int
  private let dialPolicy: DialPolicy
  private let parameterBudget: Int
  private let stages = Mutex<[String: (request: Pipemesh_V1_LoadStageRequest, runner: StageRunner)]>([:])
  /// Where models are timed, one at a time, away from the cooperative threads.
  private let timing = ComputeLane(label: "pipemesh.partition.time-layers")

  /// `dialer` is how the partition reaches the ps and its peers;
  /// `defaultMaxKeptBytes` bounds a stage's activations when LoadStage gives
  /// none (0: the host's memory, more than any stage can hold);
  /// `blasThreads` is the OpenBLAS thread count the process was given, the
  /// most a LoadStage may ask for; `dialPolicy` says which ps tasks and
  /// peers a LoadStage may name; `parameterBudget` bounds the bytes a stage's
  /// variables take with their gradients and optimizer slots.
  public init(
    dataPlane: DataPlane, dialer: any RPCDialer, defaultMaxKeptBytes: Int = 0, blasThreads: Int = 1,
    dialPolicy: DialPolicy = .loopback, parameterBudget: Int = HostMemory.defaultBudget()
  ) {
    self.dialPolicy = dialPolicy
    self.parameterBudget = parameterBudget
    self.dataPlane = dataPlane
    self.dialer = dialer
    self.defaultMaxKeptBytes =
      defaultMaxKeptBytes > 0 ? defaultMaxKeptBytes : Int(clamping: ProcessInfo.processInfo.physicalMemory)
    self.blasThreads = blasThreads
  }

  public var serviceName: String { PartitionMethods.service }

  /// Jobs loaded here, for status lines.
  public var loadedJobs: [String] { stages.withLock { $0.keys.sorted() } }

  private func runner(_ job: String) throws -> StageRunner {
    guard let runner = stages.withLock({ $0[job]?.runner }) else {
      throw RPCError(.failedPrecondition, "job \(job) has no stage loaded on this partition: call LoadStage first")
    }
    return runner
  }

  /// Only the mesh's own services may call a partition (when mutual TLS
  /// names them).
  public func register(with router: inout RPCRouter) {
    router.admitting({ path, context in try MeshRole.requireMember(context, for: path) }) { registerMethods(with: &$0) }
  }

  private func registerMethods(with router: inout RPCRouter) {
    router.unary(PartitionMethods.loadStage) { [self] request, _ in try await load(request) }
    router.unary(PartitionMethods.forward) { [self] request, _ in
      try await Self.timed {
        try Self.check(request.key, training: true)
        try Self.check(schedulePosition: request.schedulePosition)
        let runner = try runner(request.key.job)
        return try await .init(runner.forward(ForwardCall(request, lastStage: runner.isLast)))
      }
    }
    router.unary(PartitionMethods.infer) { [self] request, _ in
      try await Self.timed {
        try Self.check(request.key, training: false)
        let runner = try runner(request.key.job)
        return try await .init(
          runner.infer(MicroBatch(request.key), input: TensorSource(wire: request.input, field: "input")))
      }
    }
    router.unary(PartitionMethods.backward) { [self] request, _ in
      try await Self.timed {
        try Self.check(request.key, training: true)
        try Self.check(schedulePosition: request.schedulePosition)
        let runner = try runner(request.key.job)
        return try await .init(runner.backward(BackwardCall(request, lastStage: runner.isLast)))
      }
    }
    router.unary(PartitionMethods.backwardWeights) { [self] request, _ in
      try await Self.timed {
        try Self.check(request.key, training: true)
        try Self.check(schedulePosition: request.schedulePosition)
        return try await .init(
          runner(request.key.job).backwardWeights(MicroBatch(request.key), schedulePosition: request.schedulePosition))
      }
    }
    router.unary(PartitionMethods.commit) { [self] request, _ in
      try await Self.timed {
        try Self.check(trainingStep: request.step)
        guard request.gradientScale.isFinite, (0...1).contains(request.gradientScale) else {
          throw RPCError(
            .invalidArgument, "gradient_scale is \(request.gradientScale); give 0 (unscaled) to 1")
        }
        return try await .init(
          runner(request.job).commit(
            step: request.step, flush: request.flush,
            gradientScale: request.gradientScale == 0 ? 1 : request.gradientScale))
      }
    }
    router.unary(PartitionMethods.gradientNorm) { [self] request, _ in
      try Self.check(trainingStep: request.step)
      let squares = try await runner(request.job).gradientSumOfSquares(step: request.step)
      return .with { $0.sumOfSquares = squares }
    }
    router.serverStreaming(PartitionMethods.fetchTensor) { [self] request, writer, _ in
      // A tensor of a job not loaded here will not be produced here.
      let key = try DataPlaneKey(wire: request.key)
      let encoding = try HalfPrecision(transfer: request.encoding, field: "encoding")
      if request.wait, stages.withLock({ $0[key.job] == nil }) {
        throw RPCError(
          .failedPrecondition, "job \(key.job) is not loaded on this partition: its tensor \(key) will not be produced")
      }
      // A training step's tensor stays held until its step is dropped: a fetch that does not get
      // through is asked again once the fetcher's call is sent again.
      let tensor = try await dataPlane.take(key, release: request.release, wait: request.wait)
      let outcome = try await DataPlane.send(
        tensor, encoding: encoding,
        sharedBuffer: request.hasSharedBuffer && dataPlane.servesSharedBuffers ? request.sharedBuffer : nil, to: writer)
      activity.update { counts in
        switch outcome {
        case .written: counts.fetchesInSharedMemory += 1
        case .elsewhere: counts.fetchesInChunks += 1
        case .refused:
          counts.fetchesInChunks += 1
          counts.sharedBuffersRefused += 1
        }
      }
    }
    router.unary(PartitionMethods.timeLayers) { [self] request, _ in try await timeLayers(request) }
    router.unary(PartitionMethods.unloadStage) { [self] request, _ in
      // Only a job loaded here leaves a mark: any other name changes nothing.
      guard let unloaded = stages.withLock({ $0.removeValue(forKey: request.job) }) else { return .init() }
      await unloaded.runner.close()
      dataPlane.drop(job: request.job)
      return .init()
    }
  }

  /// The answer of `call`, stamped with when this call came and when its
  /// answer was ready (a repeated call's own times, with the first call's
  /// work).
  private static func timed<Response: TimedResponse>(_ call: () async throws -> Response) async throws -> Response {
    let received = WallClock.nanos
    var response = try await call()
    response.timing.receivedUnixNanos = received
    response.timing.answeredUnixNanos = WallClock.nanos
    return response
  }

  /// Refuses a micro-batch key no coordinator sends: training steps count
  /// from 1 (inference uses steps of its own, any number), micro-batches
  /// from 0.
  private static func check(_ key: Pipemesh_V1_MicroBatchKey, training: Bool) throws {
    guard !training || key.step >= 1 else {
      throw RPCError(.invalidArgument, "key.step is \(key.step); training steps count from 1")
    }
    guard key.microBatch >= 0 else {
      throw RPCError(.invalidArgument, "key.micro_batch is \(key.microBatch); micro-batches count from 0")
    }
  }

  /// A Commit's or GradientNorm's step: training steps count from 1.
  private static func check(trainingStep step: Int64) throws {
    guard step >= 1 else { throw RPCError(.invalidArgument, "step is \(step); training steps count from 1") }
  }

  private static func check(schedulePosition: Int32) throws {
    guard schedulePosition >= 0 else {
      throw RPCError(.invalidArgument, "schedule_position is \(schedulePosition); positions count from 1 (0: no order)")
    }
  }

  private func load(_ request: Pipemesh_V1_LoadStageRequest) async throws -> Pipemesh_V1_LoadStageResponse {
    try MeshNames.checkJob(request.job)
    guard request.stage >= 0 else { throw RPCError(.invalidArgument, "stage is \(request.stage); stages count from 0") }
    guard request.replica >= 0 else {
      throw RPCError(.invalidArgument, "replica is \(request.replica); replicas count from 0")
    }
    guard request.maxKeptBytes >= 0 else {
      throw RPCError(
        .invalidArgument, "max_kept_bytes is \(request.maxKeptBytes); give 0 for the partition's bound or a byte count")
    }
    guard request.blasThreads >= 0, request.blasThreads <= blasThreads else {
      throw RPCError(
        .invalidArgument,
        "blas_threads is \(request.blasThreads); this partition was started with \(blasThreads) (--blas-threads), "
          + "the most a stage may ask for (0 keeps it)")
    }
    let transfer = try HalfPrecision(transfer: request.transferDtype, field: "transfer_dtype")
    let (whole, model, layers) = try stageLayers(request)
    let parameters = model.heldParameters(layers: layers)
    let memory = try StageMemory(optimizer: request.optimizer, overlappingSteps: request.overlappingSteps)
    let room = memory.room(within: parameterBudget)
    guard parameters <= room else {
      throw RPCError(
        .resourceExhausted,
        "stage \(request.stage) has \(parameters) parameters, which with their gradients and optimizer slots "
          + (request.overlappingSteps ? "(twice the weights and gradients: its job's steps overlap) " : "") + "need "
          + "\(HostMemory.describe(parameters * memory.bytesPerParameter)); this partition's budget is "
          + "\(HostMemory.describe(parameterBudget)) (--memory-budget-mib), room for \(room) parameters: "
          + memory.advice(layers: whole.layers.map(\.parameterCount), room: room))
    }
    guard !request.parameterServers.isEmpty, request.parameterServers.count <= 1024 else {
      throw RPCError(
        .invalidArgument, "parameter_servers lists \(request.parameterServers.count) endpoints; give 1 to 1024")
    }
    guard request.peers.count <= 65536 else {
      throw RPCError(.invalidArgument, "peers lists \(request.peers.count) endpoints; give at most 65536")
    }
    for (field, endpoints) in [("parameter_servers", request.parameterServers), ("peers", request.peers)] {
      if let malformed = endpoints.first(where: { !DialPolicy.isWellFormed($0) }) {
        throw RPCError(
          .invalidArgument, "\(field) names '\(malformed.echoed)'; give HOST:PORT with a port from 1 to 65535")
      }
      if let refused = endpoints.first(where: { !dialPolicy.allows($0) }) {
        throw RPCError(
          .permissionDenied, "\(field) names \(refused.echoed); this partition dials \(dialPolicy.description)")
      }
    }
    let rule: JobConsistency
    do { rule = try JobConsistency(request.consistency) } catch let error as WireError {
      throw error.within("consistency")
    }
    let ring = try ringReduction(request, rule: rule)
    await dataPlane.reconnect(to: request.peers, timeout: .seconds(5))
    if let existing = stages.withLock({ $0[request.job] }) {
      guard existing.request == request else {
        throw RPCError(
          .failedPrecondition, "job \(request.job) is loaded here with another stage or model: unload it first")
      }
      return response(model: model, layers: layers)
    }
    if request.blasThreads > 0 { BLAS.setThreadCount(Int(request.blasThreads)) }
    let runner = StageRunner(
      job: request.job, model: model, layers: layers, stage: Int(request.stage), replica: request.replica,
      recompute: request.recomputeActivations,
      // A job may ask for a tighter bound than the partition's, never a looser one.
      maxKeptBytes: request.maxKeptBytes > 0
        ? min(Int(request.maxKeptBytes), defaultMaxKeptBytes) : defaultMaxKeptBytes,
      peers: Set(request.peers), transfer: transfer, ring: ring,
      optimizer: request.optimizer,
      ps: try ParameterServerClient(endpoints: request.parameterServers, dialer: dialer), dataPlane: dataPlane,
      activity: activity)
    try await runner.start(consistency: rule)
    stages.withLock { $0[request.job] = (request, runner) }
    return response(model: model, layers: layers)
  }

  /// The ring of the stage's replicas a LoadStage names, when its job's
  /// replicas reduce by ring; INVALID_ARGUMENT for a ring given otherwise,
  /// or one missing or not the stage's replicas.
  private func ringReduction(_ request: Pipemesh_V1_LoadStageRequest, rule: JobConsistency) throws -> RingReduction? {
    guard rule.reducesByRing else {
      guard request.ring.isEmpty else {
        throw RPCError(
          .invalidArgument,
          "ring names \(request.ring.count) endpoints, but the job's replicas do not reduce by ring "
            + "(consistency.sync.reduction REDUCTION_RING with more than one replica): leave ring empty")
      }
      return nil
    }
    return try RingReduction(
      job: request.job, rank: Int(request.replica), endpoints: request.ring, replicas: rule.replicas,
      own: dataPlane.endpoint, peers: Set(request.peers))
  }

  /// How long one TimeLayers may run before it stops with DEADLINE_EXCEEDED.
  static let timingDeadline = Duration.seconds(30)

  /// Times each layer of the request's model here, within the bounds
  /// TimeLayersRequest states: one timing at a time, on a thread of its own
  /// (never one of the threads that serve the partition's other calls).
  private func timeLayers(_ request: Pipemesh_V1_TimeLayersRequest) async throws -> Pipemesh_V1_TimeLayersResponse {
    let model = try makeModel(request.model)
    let limits = Sequential.TimingLimits.planning
    guard (1...Int32(limits.rows)).contains(request.rows) else {
      throw RPCError(.invalidArgument, "rows is \(request.rows); give 1 to \(limits.rows)")
    }
    guard (0...10).contains(request.repeats) else {
      throw RPCError(.invalidArgument, "repeats is \(request.repeats); give 0 (3) to 10")
    }
    let repeats = request.repeats == 0 ? 3 : Int(request.repeats)
    let largest = model.largestTimedLayerParameters
    let room = StageMemory.mostSlots.room(within: parameterBudget)
    guard largest <= room else {
      throw RPCError(
        .resourceExhausted,
        "timing the model's largest layer holds \(largest) parameters; this partition's budget "
          + "(\(HostMemory.describe(parameterBudget)), --memory-budget-mib) has room for \(room)")
    }
    switch model.rowsToTime(wanted: Int(request.rows), repeats: repeats, within: limits) {
    case .failure(let refusal): throw RPCError(.resourceExhausted, "\(refusal)")
    case .success(let most) where most < request.rows:
      throw RPCError(
        .resourceExhausted,
        "timing \(request.rows) rows would take too long or too much memory: ask for \(most) or fewer")
    case .success: break
    }
    let deadline = ContinuousClock.now + Self.timingDeadline
    let times = try await timing.run(
      orThrow: RPCError(.resourceExhausted, "this partition is timing another model: ask again once it is done")
    ) { callerGaveUp in
      do {
        return try model.timeLayers(rows: Int(request.rows), repeats: repeats) {
          ContinuousClock.now < deadline && !callerGaveUp()
        }
      } catch {
        guard !callerGaveUp() else { throw RPCError(.cancelled, "the timing stopped: its caller gave up on it") }
        throw RPCError(.deadlineExceeded, "\(error) after \(Self.timingDeadline), the most a timing may take")
      }
    }
    return .with { $0.layers = times.wire(of: model) }
  }

  /// The request's model, the same cut where its stage begins and ends, and
  /// the range of the cut one's layers the stage runs; INVALID_ARGUMENT
  /// naming the fields when they are no part of the model.
  private func stageLayers(_ request: Pipemesh_V1_LoadStageRequest) throws -> (
    whole: Sequential, cut: Sequential, layers: Range<Int>
  ) {
    let whole = try makeModel(request.model)
    let start = LayerPosition(layer: Int(request.firstLayer), inputs: Int(request.firstLayerInputs))
    let end = LayerPosition(layer: Int(request.endLayer), inputs: Int(request.endLayerInputs))
    do {
      let stage = try whole.stage(from: start, to: end)
      return (whole, stage.model, stage.layers)
    } catch {
      throw RPCError(
        .invalidArgument,
        "first_layer \(request.firstLayer), first_layer_inputs \(request.firstLayerInputs), end_layer "
          + "\(request.endLayer) and end_layer_inputs \(request.endLayerInputs) are no stage of the model: \(error.message)"
      )
    }
  }

  private func response(model: Sequential, layers: Range<Int>) -> Pipemesh_V1_LoadStageResponse {
    .with {
      $0.parameters = Int64(model.heldParameters(layers: layers))
      $0.inputShape = model.activationShapes[layers.lowerBound].map { Int64($0) }
      $0.outputShape = model.activationShapes[layers.upperBound].map { Int64($0) }
      $0.dataPlaneEndpoint = dataPlane.endpoint
    }
  }
}
