import Foundation
import MeshOps
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// One loaded stage of one job: layers `layers` of `model`, their variables
/// (cached from the ps), what backward needs per micro-batch, and the
/// gradients accumulated over the steps running (one, or two whose steps
/// overlap under PipeDream-2BW, each on its own version of the weights).
///
/// Requests are idempotent: a Forward, Backward or Commit repeated after a
/// retry returns the first answer and computes nothing again.
///
/// The actor keeps the books; fetching inputs and computing run off it, so
/// that a call sent ahead fetches its input while the previous one computes.
/// Calls that carry a schedule position compute one at a time in that order;
/// the calls of two overlapping steps take turns, the older step's first.
actor StageRunner {
  let job: String
  let model: Sequential
  let layers: Range<Int>
  let stage: Int
  let replica: Int32
  let recompute: Bool
  /// The most bytes of activations the stage holds at once.
  let maxKeptBytes: Int
  /// The data-plane endpoints of the job's other partitions: the only ones
  /// this stage fetches tensors from.
  let peers: Set<String>
  /// The format a training step's inputs and output gradients are fetched
  /// in from the peers (nil: float32, exact). A stage that begins inside the
  /// model's first layer fetches its inputs as float32: they carry model
  /// inputs, which always travel exact.
  let transfer: HalfPrecision?
  private let inputTransfer: HalfPrecision?
  /// The ring of the stage's replicas when they reduce their gradients
  /// among themselves (REDUCTION_RING): each applies the mean itself, and
  /// only replica 0 sends the ps anything.
  private let ring: RingReduction?
  /// Steps whose commit failed once it had taken the step's gradient sums,
  /// with its error: the sums are spent (sent, applied in part, or half
  /// reduced by the ring), so a repeated commit fails as the first did
  /// instead of committing a step without its update.
  private var failedCommits: [Int64: any Error] = [:]
  /// The stage's variables as the ps registers them.
  let definitions: [Pipemesh_V1_VariableDefinition]
  /// The job's update rule, which a sole writer applies itself (see `start`).
  private let optimizer: Pipemesh_V1_OptimizerSpec
  private let ps: ParameterServerClient
  private let dataPlane: DataPlane
  private let activity: PartitionActivity
  private var variables: [String: Tensor] = [:]
  private var versions: [String: Int64] = [:]
  /// Weight stashing (PipeDream-2BW), on once a forward names the weights
  /// it runs on: the step after whose commit `variables` are (the step of
  /// the weights the stage was loaded with, as the first such forward names
  /// it), and the weights from before the last commit.
  private var stashesWeights = false
  private var weightsStep: Int64?
  private var stashed: (step: Int64, variables: [String: Tensor])?
  /// The weights each running step's forwards named, by step.
  private var stepWeights: [Int64: Int64] = [:]
  /// Commits waiting for an earlier step's (overlapping steps commit in order).
  private var commitWaiters: [CheckedContinuation<Void, any Error>] = []
  /// Set when this stage is the only writer of some of its variables (see
  /// `start`): it applies their updates itself, bit for bit as the ps does,
  /// and either keeps their master copy (`kept`) or pushes to the ps in the
  /// background instead of pulling values back.
  private var localUpdates: LocalUpdates?

  private struct LocalUpdates {
    let optimizer: any Optimizer
    /// The variables the stage updates itself: those no other layer shares
    /// (the others travel through the ps each step).
    let names: Set<String>
    /// The variables whose master copy the stage keeps: the ps holds none
    /// of their values until a flushing commit assigns them.
    let kept: Set<String>
    var slots: [String: [String: Tensor]] = [:]
    /// The previous step's push, awaited before the next one is sent.
    var pendingPush: Task<Void, any Error>?
  }
  private var kept: [MicroBatch: Kept] = [:]
  /// Inference outputs up to this size go back in the answer, for the
  /// caller to pass on: cheaper than the next stage's fetch round trip.
  static let inlineInferenceBytes = 256 << 10
  /// Bytes the inferences running now work with.
  private var inferenceBytes = 0
  /// Each running step's gradient sums.
  private var accumulated: [Int64: [String: Tensor]] = [:]
  /// The last step's gradient sums, kept once applied: the next step's
  /// first backward zeroes them and sums into them, instead of faulting in
  /// fresh memory for each (for a 1 GiB variable, a zero pass costs 0.1 s
  /// where new pages cost 0.5–1.5 s on this project's machine).
  private var spareSums: [String: Tensor] = [:]
  private var turns = ScheduleTurns()
  // Calls by micro-batch (or step), running or done: a repeated request
  // awaits the first one's answer, even while it is still running.
  private var forwards = CallOnce<MicroBatch, ForwardResult>()
  private var backwards = CallOnce<MicroBatch, BackwardResult>()
  private var weightCalls = CallOnce<MicroBatch, StageTiming>()
  /// What calls that stopped waiting for their turn (every caller gave up)
  /// had fetched, for their repeats, until their step commits.
  private var givenUpInputs: [TurnCall: Tensor] = [:]
  /// Weight gradients a split backward held back, with the sums they add
  /// into (lent until then) and the bytes the micro-batch still holds.
  private var heldWeights: [MicroBatch: (weights: WeightGradients, sums: GradientSums, bytes: Int)] = [:]
  private var commits = CallOnce<Int64, CommitResult>()
  /// Whether a call computes, and the calls waiting to (when two steps
  /// overlap): the oldest step's goes first.
  private var computing = false
  private var computeQueue: [(step: Int64, position: Int32, continuation: CheckedContinuation<Void, Never>)] = []

  /// What backward needs: the recorded forward (or only the input, to run
  /// forward again), and on the last stage the loss gradient.
  /// (Neither `forward` nor `input` while the forward is still running.)
  private struct Kept {
    var forward: StageForward?
    var input: Tensor?
    /// The weights to run forward again with (when recomputing).
    var weights: [String: Tensor]?
    var lossGradient: Tensor?
    let bytes: Int
    let seed: UInt64
    /// Set while its backward computes off the actor: still kept (and
    /// counted), and a Commit meanwhile is refused.
    var backwardRunning = false
  }

  var isFirst: Bool { layers.lowerBound == 0 }
  /// Whether the stage ends its model: it computes the loss, from targets
  /// its forwards bring, and its backwards bring no output gradient.
  nonisolated var isLast: Bool { layers.upperBound == model.layers.count }
  var user: String { "stage\(stage)" }

  init(
    job: String, model: Sequential, layers: Range<Int>, stage: Int, replica: Int32, recompute: Bool,
    maxKeptBytes: Int, peers: Set<String>, transfer: HalfPrecision? = nil, ring: RingReduction? = nil,
    optimizer: Pipemesh_V1_OptimizerSpec,
    ps: ParameterServerClient, dataPlane: DataPlane, activity: PartitionActivity
  ) {
    self.activity = activity
    self.peers = peers
    self.transfer = transfer
    self.ring = ring
    inputTransfer = model.receivesModelInputs(atLayer: layers.lowerBound) ? nil : transfer
    self.job = job
    self.model = model
    self.layers = layers
    self.stage = stage
    self.replica = replica
    self.recompute = recompute
    self.maxKeptBytes = maxKeptBytes
    self.ps = ps
    self.dataPlane = dataPlane
    self.optimizer = optimizer
    // The coordinator clips a step's gradients by their norm over every stage (GradientNorm,
    // then Commit's gradient_scale): the ps, which sees one stage's part, must not clip again.
    var unclipped = optimizer
    unclipped.clipGlobalNorm = 0
    definitions = model.variableDeclarations(layers: layers).map {
      $0.definition(seed: model.spec.seed, optimizer: unclipped)
    }
  }

  /// Registers the stage's variables with the ps and pulls their values.
  ///
  /// Under sync consistency with one replica, the ps would apply exactly the
  /// stage's own gradients to each variable no other layer shares, with the
  /// same rule: the stage then applies them itself, from the values and optimizer slots it pulls (a run resumed from
  /// a checkpoint goes on as fast as a fresh one), and pushes its gradients in
  /// the background. When, moreover, the variables are fresh (version 0) and
  /// no ps task writes checkpoints (which would need the values every step),
  /// the stage keeps the master copy: it draws the initial values itself, the
  /// ps holds none, and a flushing commit (before a checkpoint, at the end of
  /// the job) assigns them. It pushes the gradients of the variables it shares
  /// (tied weights, a layer split at its time steps), and of every variable
  /// under other consistencies, and pulls their values back each step.
  ///
  /// Replicas that reduce by ring are such a writer together: each applies
  /// the mean of their gradients, and replica 0 stands for them at the ps.
  func start(consistency rule: JobConsistency) async throws {
    let shared = Set(model.layers.flatMap(\.sharedVariables).map(\.name))
    if ring != nil, let name = definitions.map(\.name).first(where: shared.contains) {
      throw StageError(
        .invalidCall,
        "consistency.sync.reduction is REDUCTION_RING, but variable \(name) of stage \(stage) is shared by several "
          + "layers (tied weights, or a layer split at its time steps), whose gradients add up on the ps: "
          + "give REDUCTION_PARAMETER_SERVER")
    }
    let own = Set(definitions.map(\.name).filter { !shared.contains($0) })
    let soleWriter =
      rule.mode == .sync && (rule.replicas <= 1 || ring != nil) && (!own.isEmpty || definitions.isEmpty)
    let keepValues = soleWriter ? try await ps.tasksWithoutCheckpoints().count == ps.placement.tasks : false
    var registered = try await ps.register(
      job: job, variables: definitions.filter { own.contains($0.name) }, consistency: rule.atParameterServer,
      user: user, writerKeepsValues: keepValues)
    let sharedDefinitions = definitions.filter { !own.contains($0.name) }
    if !sharedDefinitions.isEmpty {
      try await registered.merge(
        ps.register(job: job, variables: sharedDefinitions, consistency: rule.atParameterServer, user: user)
      ) { $1 }
    }
    let kept = Set(registered.filter(\.value.keptByWriter).keys)
    for definition in definitions where kept.contains(definition.name) {
      let shape = definition.shape.map { Int($0) }
      variables[definition.name] =
        definition.hasInitialValue
        ? try Tensor(wire: definition.initialValue, what: "initial value of \(definition.name)")
        : try definition.initializer.makeTensor(shape, elementOffset: Int(definition.initializerOffset))
      versions[definition.name] = 0
    }
    let pulled = definitions.map(\.name).filter { !kept.contains($0) }
    // The slots of every pulled variable when the stage applies its own updates.
    var pulledSlots: [String: [String: Tensor]]?
    if soleWriter, kept.isEmpty {
      pulledSlots = try await pullWithSlots(pulled.filter(own.contains))
      try await refresh(pulled.filter { !own.contains($0) })
    } else {
      try await refresh(pulled)
    }
    // A run resumed from a checkpoint finds its variables there, all updated alike; one
    // drawn afresh beside them was not in the checkpoint (taken before a layer was cut
    // otherwise) and would train on from its initial values.
    let fresh = pulled.filter { versions[$0] == 0 }
    if !fresh.isEmpty, fresh.count < pulled.count {
      throw StageError(
        .psStateConflict,
        "stage \(stage) of job \(job) finds \(pulled.count - fresh.count) of its variables trained but "
          + "\(fresh.prefix(3).joined(separator: ", ")) new: the checkpoint it resumes holds other variables "
          + "(its layers were cut at other places); start the job under a new name")
    }
    if soleWriter, let slots = pulledSlots ?? (versions.values.allSatisfy { $0 == 0 } ? [:] : nil) {
      let optimizer = try makeOptimizer(self.optimizer)
      // An updated variable has every slot its optimizer keeps: one missing would start from zero.
      if let updated = slots.first(where: {
        versions[$0.key] ?? 0 > 0 && Set($0.value.keys) != Set(optimizer.slotNames)
      }) {
        throw StageError(
          .peerAnswerDamaged,
          "the ps holds \(updated.key) of job \(job) with slots \(updated.value.keys.sorted()), not the "
            + "\(optimizer.slotNames) its optimizer keeps")
      }
      localUpdates = LocalUpdates(optimizer: optimizer, names: own, kept: kept, slots: slots)
    } else if !kept.isEmpty {
      throw StageError(
        .psStateConflict,
        "stage \(stage) of job \(job) keeps \(kept.count) variables but others were updated already: "
          + "start the job under a new name")
    } else if ring != nil {
      // The ps would take pushes from one replica only: it must not be left to apply them.
      throw StageError(
        .psBehind,
        "the ps holds the variables of stage \(stage) of job \(job) at different versions (a ps task restarted "
          + "behind the others): replicas that reduce by ring start only from one step of them")
    }
  }

  /// Pulls the values of `names` newer than the stage's (sent again when
  /// lost, as `psRetry` says).
  private func refresh(_ names: [String]) async throws {
    try adopt(try await newerValues(of: names))
  }

  /// The values of `names` newer than the stage's, pulled (sent again when
  /// lost, as `psRetry` says).
  private func newerValues(of names: [String]) async throws -> [String: ParameterServerClient.Pulled] {
    guard !names.isEmpty else { return [:] }
    let (ps, job, held) = (ps, job, versions)
    return try await Self.psRetry.run(server: "the ps") {
      try await ps.pull(job: job, names: names, newerThan: held)
    }
  }

  /// Takes pulled values as the variables' own.
  private func adopt(_ pulled: [String: ParameterServerClient.Pulled]) throws {
    // Versions only grow: a ps task that answers with an older one restarted from older values.
    if let older = pulled.first(where: { $0.value.version < versions[$0.key] ?? 0 }) {
      throw StageError(
        .psBehind,
        "the ps holds \(older.key) of job \(job) at version \(older.value.version), older than this stage's "
          + "\(versions[older.key] ?? 0): it restarted from older values")
    }
    for (name, value) in pulled {
      versions[name] = value.version
      if let tensor = value.value { variables[name] = tensor }
    }
  }

  /// Pulls the values of `names` with their optimizer slots, for a stage
  /// that applies its own updates: nil when a variable's parts are at
  /// different versions (a ps task restarted behind the others).
  private func pullWithSlots(_ names: [String]) async throws -> [String: [String: Tensor]]? {
    guard !names.isEmpty else { return [:] }
    let (ps, job) = (ps, job)
    let pulled = try await Self.psRetry.run(server: "the ps") {
      try await ps.pull(job: job, names: names, withSlots: true)
    }
    for (name, value) in pulled {
      guard let tensor = value.value else {
        throw StageError(.peerAnswerDamaged, "the ps answered no value of \(name)")
      }
      versions[name] = value.version
      variables[name] = tensor
    }
    let slots = pulled.compactMapValues(\.slots)
    return slots.count == pulled.count ? slots : nil
  }

  // MARK: - Forward

  /// Runs a training step's forward of one micro-batch, once however often
  /// the call is repeated, in its schedule position's turn.
  func forward(_ call: ForwardCall) async throws -> ForwardResult {
    let microBatch = call.microBatch
    try checkOpen(microBatch.step)
    if let wanted = call.weightsAfterStep { try noteWeights(after: wanted, step: microBatch.step) }
    let task = forwards.call(microBatch) { try await self.computeForward(call) }
    return try await answer(
      task, of: .forward(microBatch), leave: { $0.forwards.leave(microBatch, task) },
      forget: { $0.forwards.forgetFailed(microBatch, task) })
  }

  /// Runs the stage on an inference's micro-batch with the newest weights:
  /// its output goes back in the answer when it is small or the model's,
  /// else it waits on the data plane for the next stage.
  func infer(_ microBatch: MicroBatch, input source: TensorSource) async throws -> ForwardResult {
    var result = ForwardResult()
    let (dataPlane, stage, peers) = (dataPlane, stage, peers)
    let input = try await result.timing.resolving(source) {
      try await dataPlane.fetch($0, wait: false, what: "input of stage \(stage)", peers: peers)
    }.get()
    try model.checkInput(input, layers: layers, "stage \(stage) of job \(job)")
    // Inferences running at once share the bound with what training keeps.
    let bytes = try checkActivationBound(
      batch: input.shape[0], perExample: inferenceBytesPerExample, holding: heldBytes + inferenceBytes,
      what: "an inference")
    inferenceBytes += bytes
    defer { inferenceBytes -= bytes }
    let (model, layers, variables) = (model, layers, variables)
    result.timing.computeStarted = WallClock.nanos
    let output = await offActor { model(input, variables: variables, layers: layers) }
    result.timing.computeEnded = WallClock.nanos
    result.output =
      isLast || output.scalarCount * MemoryLayout<Float>.size <= Self.inlineInferenceBytes
      ? .value(output) : .offered(dataPlane.offer(output, key: microBatch.key(.inference, of: job)))
    return result
  }

  private func computeForward(_ call: ForwardCall) async throws -> ForwardResult {
    let (dataPlane, stage) = (dataPlane, stage)
    let (peers, transfer) = (self.peers, inputTransfer)
    var timing = StageTiming()
    let turn = TurnCall.forward(call.microBatch)
    let resolved: Result<Tensor, any Error>
    if let fetched = givenUpInputs.removeValue(forKey: turn) {
      resolved = .success(fetched)
    } else {
      resolved = await timing.resolving(call.input) {
        try await dataPlane.fetch($0, wait: true, what: "input of stage \(stage)", peers: peers, encoding: transfer)
      }
    }
    return try await onTurn(turn, position: call.schedulePosition, fetched: try? resolved.get()) {
      try await forwardOnTurn(call, input: resolved.get(), timing: timing)
    }
  }

  private func forwardOnTurn(_ call: ForwardCall, input: Tensor, timing: StageTiming) async throws -> ForwardResult {
    let microBatch = call.microBatch
    try model.checkInput(input, layers: layers, "stage \(stage) of job \(job)")
    let batch = input.shape[0]
    let target = call.targets
    // The last stage alone computes the loss, and it must.
    guard (target != nil) == isLast else {
      throw StageError(
        .invalidCall,
        isLast ? "targets are missing: the last stage computes the loss" : "stage \(stage) takes no targets")
    }
    if let target {
      try model.checkTarget(target, batchSize: batch, "targets of job \(job)")
      guard call.batchSize >= batch else {
        throw StageError(
          .invalidCall, "batch_size \(call.batchSize) is smaller than the micro-batch (\(batch) examples)")
      }
    }
    let seed = UInt64(bitPattern: microBatch.step) &* 1_000_003 &+ UInt64(bitPattern: Int64(microBatch.index))
    var result = ForwardResult(timing: timing)
    let variables = try weightsUsed(by: microBatch.step)
    let (model, layers, isFirst) = (model, layers, isFirst)
    let holding = heldBytes + inferenceBytes
    let bytes = try checkActivationBound(
      batch: batch, perExample: keptBytesPerExample, holding: holding, what: "a micro-batch")
    // Counted from here: a forward running off the actor still holds its bytes.
    kept[microBatch] = Kept(bytes: bytes, seed: seed)
    result.timing.computeStarted = WallClock.nanos
    let share = Float(batch) / Float(max(call.batchSize, 1))
    let (forward, loss) = await offActor { () -> (StageForward, (value: Float, gradient: Tensor, correct: Int)?) in
      let forward = Self.runForward(model, input, variables: variables, layers: layers, seed: seed, isFirst: isFirst)
      guard let target else { return (forward, nil) }
      let (loss, gradient) = Autodiff.valueWithGradient(at: [forward.output]) { outputs in
        model.loss(output: outputs[0], target: target)
      }
      let correct =
        model.spec.loss == .softmaxCrossEntropy ? Loss.correctPredictions(logits: forward.output, labels: target) : 0
      return (forward, (loss.scalar * share, gradient[0] * share, correct))
    }
    result.timing.computeEnded = WallClock.nanos
    kept[microBatch] = Kept(
      forward: recompute ? nil : forward, input: recompute ? input : nil, weights: recompute ? variables : nil,
      lossGradient: loss?.gradient, bytes: bytes, seed: seed)
    if let loss {
      result.loss = Double(loss.value)
      result.correct = loss.correct
    } else {
      // Read before the offer: the neighbour may have the tensor before this task runs again.
      result.timing.outputOffered = WallClock.nanos
      result.output = .offered(dataPlane.offer(forward.output, key: microBatch.key(.activation, of: job)))
    }
    let computeSeconds = result.timing.computeSeconds
    activity.update {
      $0.busySeconds += computeSeconds
      $0.forwards += 1
      $0.keptMicroBatches += 1
    }
    return result
  }

  private static func runForward(
    _ model: Sequential, _ input: Tensor, variables: [String: Tensor], layers: Range<Int>, seed: UInt64, isFirst: Bool
  ) -> StageForward {
    model.forwardStage(
      input, variables: variables, layers: layers, context: ForwardContext(training: true, seed: seed),
      inputGradient: !isFirst)
  }

  /// Bytes kept for backward per example: the stage's input and what each
  /// of its layers keeps (only the input when recomputing).
  private var keptBytesPerExample: Int {
    let input = model.activationShapes[layers.lowerBound].reduce(1, *)
    guard !recompute else { return input * 4 }
    return layers.reduce(input) { $0 + model.layers[$1].keptScalars(forInput: model.activationShapes[$1]) } * 4
  }

  /// Bytes an inference of one example works with at once, at most: a
  /// layer's input and what it keeps.
  private var inferenceBytesPerExample: Int {
    layers.map {
      model.activationShapes[$0].reduce(1, *) + model.layers[$0].keptScalars(forInput: model.activationShapes[$0])
    }
    .max()! * 4
  }

  /// Refuses a call of `batch` examples that would take the stage over its
  /// bound on activation bytes, with `holding` bytes kept already; returns
  /// the call's bytes.
  private func checkActivationBound(batch: Int, perExample: Int, holding: Int, what: String) throws -> Int {
    let (bytes, overflow) = batch.multipliedReportingOverflow(by: perExample)
    guard !overflow, bytes <= maxKeptBytes - holding else {
      throw StageError(
        .overMemoryBound,
        "stage \(stage) holds \(holding) bytes of activations and would need \(overflow ? "over \(Int.max)" : "\(bytes)") more for \(what) of "
          + "\(batch) examples, over its bound of \(maxKeptBytes): use more, smaller micro-batches, the 1F1B schedule "
          + "(2bw holds two steps' micro-batches at once), or activation recomputation")
    }
    return bytes
  }

  /// Bytes of activations the running steps' micro-batches hold: kept for a
  /// backward, or for weight gradients held back.
  private var heldBytes: Int {
    kept.values.reduce(0) { $0 + $1.bytes } + heldWeights.values.reduce(0) { $0 + $1.bytes }
  }

  // MARK: - Backward

  /// Runs the backward of a micro-batch whose forward the stage ran, once
  /// however often the call is repeated, in its schedule position's turn:
  /// offers the input gradient, and adds the weight gradients to the step's
  /// sums (or holds them back for BackwardWeights).
  func backward(_ call: BackwardCall) async throws -> BackwardResult {
    let microBatch = call.microBatch
    try checkOpen(microBatch.step)
    let task = backwards.call(microBatch) { try await self.computeBackward(call) }
    return try await answer(
      task, of: .backward(microBatch), leave: { $0.backwards.leave(microBatch, task) },
      forget: { $0.backwards.forgetFailed(microBatch, task) })
  }

  private func computeBackward(_ call: BackwardCall) async throws -> BackwardResult {
    let (dataPlane, stage, peers, transfer) = (dataPlane, stage, peers, transfer)
    var timing = StageTiming()
    let turn = TurnCall.backward(call.microBatch)
    let resolved: Result<Tensor?, any Error>
    if let fetched = givenUpInputs.removeValue(forKey: turn) {
      resolved = .success(fetched)
    } else if let source = call.outputGradient {
      resolved = await timing.resolving(source) {
        try await dataPlane.fetch(
          $0, wait: true, what: "output gradient of stage \(stage)", peers: peers, encoding: transfer)
      }.map { $0 }
    } else {
      resolved = .success(nil)
    }
    return try await onTurn(turn, position: call.schedulePosition, fetched: (try? resolved.get()) ?? nil) {
      try await backwardOnTurn(call, outputGradient: resolved.get(), timing: timing)
    }
  }

  private func backwardOnTurn(_ call: BackwardCall, outputGradient: Tensor?, timing: StageTiming) async throws
    -> BackwardResult
  {
    let microBatch = call.microBatch
    guard let entry = kept[microBatch], entry.forward != nil || entry.input != nil, !entry.backwardRunning else {
      throw StageError(
        .outOfOrder,
        "stage \(stage) of job \(job) has no finished forward of \(microBatch) to run backward from"
      )
    }
    guard let upstream = outputGradient ?? entry.lossGradient else {
      throw StageError(.invalidCall, "output_gradient is missing: stage \(stage) is not the model's last")
    }
    kept[microBatch]?.backwardRunning = true
    let (model, layers, isFirst) = (model, layers, isFirst)
    let variables = entry.weights ?? variables
    // The step's sums go with the computation, which adds its gradients
    // straight into them; another backward meanwhile starts sums of its own,
    // merged when both are back.
    let sums = GradientSums(accumulated.removeValue(forKey: microBatch.step) ?? [:], spares: spareSums)
    spareSums = [:]
    let (dataPlane, inputGradientKey) = (dataPlane, microBatch.key(.gradient, of: job))
    let weightsLater = call.weightsLater
    var result = BackwardResult(timing: timing)
    result.timing.computeStarted = WallClock.nanos
    let offered: (reference: TensorReference, at: Int64)?
    let held: WeightGradients?
    do {
      (offered, held) = try await offActor {
        sums.startFromSpares()
        let forward =
          entry.forward
          ?? Self.runForward(
            model, entry.input!, variables: variables, layers: layers, seed: entry.seed, isFirst: isFirst)
        guard upstream.shape == forward.output.shape else {
          throw StageError(
            .invalidCall,
            "output gradient has shape \(upstream.shape), the stage's output \(forward.output.shape)")
        }
        // A neighbour's gradient is checked here; the loss's own, when the
        // loss overflows, reaches the sums and is refused at commit.
        guard outputGradient?.allFinite ?? true else {
          throw StageError(.invalidCall, "output gradient holds NaN or infinity; nothing was computed")
        }
        // The input gradient goes out before the weight gradients are computed: the previous
        // stage waits for it, not for them. The L2 penalty's gradient belongs to the step, not
        // to each micro-batch.
        let (inputGradient, weights) = forward.splitBackward(
          upstream, addingPenalty: microBatch.index == 0, addingInto: &sums.values)
        let offered = inputGradient.map { gradient in
          let at = WallClock.nanos  // before the offer, as in forward
          return (dataPlane.offer(gradient, key: inputGradientKey), at)
        }
        if weightsLater { return (offered, weights) }
        weights.compute()
        return (offered, nil)
      }
    } catch {
      merge(sums, step: microBatch.step)
      kept[microBatch]?.backwardRunning = false
      throw error
    }
    if let held {
      // The sums stay lent to the held products until BackwardWeights.
      heldWeights[microBatch] = (held, sums, entry.bytes)
    } else {
      merge(sums, step: microBatch.step)
    }
    kept[microBatch] = nil
    result.timing.computeEnded = WallClock.nanos
    if let offered {
      result.inputGradient = offered.reference
      result.timing.outputOffered = offered.at
    }
    let computeSeconds = result.timing.computeSeconds
    activity.update {
      $0.busySeconds += computeSeconds
      $0.backwards += 1
      if held == nil { $0.keptMicroBatches -= 1 }
    }
    return result
  }

  /// Computes the weight gradients a split backward held back (the W of a
  /// zero-bubble schedule), in the step's schedule order at
  /// `schedulePosition` (see `ForwardCall.schedulePosition`).
  func backwardWeights(_ microBatch: MicroBatch, schedulePosition: Int32) async throws -> StageTiming {
    try checkOpen(microBatch.step)
    let task = weightCalls.call(microBatch) {
      try await self.onTurn(.weights(microBatch), position: schedulePosition) {
        try await self.computeWeights(microBatch)
      }
    }
    return try await answer(
      task, of: .weights(microBatch), leave: { $0.weightCalls.leave(microBatch, task) },
      forget: { $0.weightCalls.forgetFailed(microBatch, task) })
  }

  private func computeWeights(_ microBatch: MicroBatch) async throws -> StageTiming {
    guard let held = heldWeights.removeValue(forKey: microBatch) else {
      throw StageError(
        .outOfOrder,
        "stage \(stage) of job \(job) holds no weight gradients of \(microBatch): its Backward must run first, "
          + "with weights_later")
    }
    var timing = StageTiming()
    timing.computeStarted = WallClock.nanos
    let weights = held.weights
    await offActor { weights.compute() }
    merge(held.sums, step: microBatch.step)
    timing.computeEnded = WallClock.nanos
    let computeSeconds = timing.computeSeconds
    activity.update {
      $0.busySeconds += computeSeconds
      $0.keptMicroBatches -= 1
    }
    return timing
  }

  /// Adds sums lent to a backward back into its step's.
  private func merge(_ sums: GradientSums, step: Int64) {
    spareSums.merge(sums.spares) { kept, _ in kept }
    sums.spares = [:]
    for (name, sum) in sums.values {
      if accumulated[step]?[name] == nil {
        accumulated[step, default: [:]][name] = sum
      } else {
        accumulated[step]![name]!.accumulate(sum)
      }
    }
  }

  // MARK: - Weight stashing

  /// Notes that `step` runs on the weights after step `wanted`'s commit:
  /// the newest or the ones before the last commit. All of a step's
  /// forwards use the same, and the step commits after the ones before it.
  private func noteWeights(after wanted: Int64, step: Int64) throws {
    stashesWeights = true
    if weightsStep == nil { weightsStep = wanted }
    guard weights(after: wanted) != nil else {
      let held = ([weightsStep] + [stashed?.step]).compactMap { $0 }.sorted()
      throw StageError(
        .outOfOrder,
        "weights_after_step is \(wanted) for step \(step), but stage \(stage) of job \(job) holds the weights "
          + "after steps \(held) only (a step runs on the weights of one of the two newest commits): run the job on "
          + "from its newest checkpoint")
    }
    if let named = stepWeights[step], named != wanted {
      throw StageError(
        .invalidCall,
        "weights_after_step is \(wanted), but another forward of step \(step) named \(named): a step's "
          + "micro-batches use one version of the weights")
    }
    stepWeights[step] = wanted
  }

  /// The weights `step` runs on: those its forwards named, else the newest.
  private func weightsUsed(by step: Int64) throws -> [String: Tensor] {
    guard let named = stepWeights[step] else { return variables }
    guard let weights = weights(after: named) else {
      throw StageError(
        .outOfOrder,
        "stage \(stage) of job \(job) no longer holds the weights after step \(named) that step \(step) runs on: "
          + "run the job on from its newest checkpoint")
    }
    return weights
  }

  /// The weights after step `step`'s commit, if the stage holds them.
  private func weights(after step: Int64) -> [String: Tensor]? {
    if step == weightsStep { return variables }
    if step == stashed?.step { return stashed?.variables }
    return nil
  }

  // MARK: - Order

  /// Runs `body`, the computation of `call`, when the step's calls before
  /// `position` have run (at once for position 0, which takes no turn), then
  /// passes the turn on. Once a call of a step fails, the step's later calls
  /// fail with its error rather than run on a broken step; but a call that
  /// fails with UNAVAILABLE (a neighbour's tensor lost on the way, a peer
  /// that did not answer) keeps its turn: the coordinator sends it again,
  /// and the later calls wait for that, as they would for a call whose
  /// connection dropped. A call every caller gave up on stops waiting (see
  /// `answer`) and keeps the tensor it `fetched` for its repeat: the
  /// neighbour may no longer hold it by then.
  private func onTurn<R>(_ call: TurnCall, position: Int32, fetched: Tensor? = nil, _ body: () async throws -> R)
    async throws -> R
  {
    guard position > 0 else { return try await body() }
    let step = call.microBatch.step
    if let closed = turns.closed(step: step) { throw closed }
    if !turns.isTurn(step: step, position: position) {
      guard !turns.isWaiting(step: step, position: position) else {
        throw StageError(.invalidCall, "another call of step \(step) already waits at schedule position \(position)")
      }
      do {
        // Its callers may have left while it fetched its input, before it could be stopped waiting.
        guard !dropIfAbandoned(call) else { throw Self.gaveUp(on: call) }
        activity.update { $0.callsWaitingForTurn += 1 }
        defer { activity.update { $0.callsWaitingForTurn -= 1 } }
        try await withCheckedThrowingContinuation { turns.wait(call, position: position, $0) }
      } catch let error as StageError where error.kind == .abandoned {
        if let fetched { givenUpInputs[call] = fetched }
        throw error
      }
    }
    do {
      if let (failed, error) = turns.failure(step: step, before: position) {
        throw StageError(
          .stepEnded,
          "not run: the step's call at schedule position \(failed) failed first with \(RPCError(answering: error))")
      }
      await takeCompute(step: step, position: position)
      defer { passCompute() }
      let result = try await body()
      turns.finish(step: step, position: position)
      return result
    } catch  where RPCError(answering: error).code == .unavailable {
      throw error
    } catch {
      turns.finish(step: step, position: position, failure: error)
      throw error
    }
  }

  /// The answer of `task`, the run of `call` that this caller and any
  /// repeats of it share. A caller that gives up (its client cancelled or
  /// went away) `leave`s it; once none is left while it still waits for its
  /// turn, it stops waiting and is forgotten, so that nothing stays parked
  /// for a call nobody waits for and a later repeat runs it afresh.
  private func answer<Value: Sendable>(
    _ task: Task<Value, any Error>, of call: TurnCall, leave: @escaping @Sendable (isolated StageRunner) -> Bool,
    forget: @escaping @Sendable (isolated StageRunner) -> Void
  ) async throws -> Value {
    do {
      return try await withTaskCancellationHandler {
        try await task.value
      } onCancel: {
        Task { await self.callerGaveUp(on: call, leave: leave, forget: forget) }
      }
    } catch {
      forget(self)
      throw error
    }
  }

  private func callerGaveUp(
    on call: TurnCall, leave: (isolated StageRunner) -> Bool, forget: (isolated StageRunner) -> Void
  ) {
    guard leave(self), turns.endWait(of: call, Self.gaveUp(on: call)) else { return }
    forget(self)
  }

  private static func gaveUp(on call: TurnCall) -> StageError {
    StageError(.abandoned, "\(call) waited for its turn and every caller gave up on it")
  }

  /// Forgets `call` if no request for it waits any more; whether it did.
  private func dropIfAbandoned(_ call: TurnCall) -> Bool {
    switch call {
    case .forward(let microBatch): forwards.dropIfAbandoned(microBatch)
    case .backward(let microBatch): backwards.dropIfAbandoned(microBatch)
    case .weights(let microBatch): weightCalls.dropIfAbandoned(microBatch)
    }
  }

  /// Waits until no other call computes: one call at a time, so that two
  /// overlapping steps take the stage in turns, not its cores at once.
  private func takeCompute(step: Int64, position: Int32) async {
    guard computing else {
      computing = true
      return
    }
    await withCheckedContinuation { computeQueue.append((step, position, $0)) }
  }

  /// Hands computing on to the waiting call of the oldest step, earliest
  /// in its schedule.
  private func passCompute() {
    guard
      let next = computeQueue.indices.min(by: {
        (computeQueue[$0].step, computeQueue[$0].position) < (computeQueue[$1].step, computeQueue[$1].position)
      })
    else {
      computing = false
      return
    }
    computeQueue.remove(at: next).continuation.resume()
  }

  /// Ends the calls still waiting for their turn, and refuses later ones
  /// (the job was unloaded).
  func close() {
    givenUpInputs = [:]
    turns.close(StageError(.stepEnded, "job \(job) was unloaded from this partition"))
    for waiter in commitWaiters {
      waiter.resume(throwing: StageError(.stepEnded, "job \(job) was unloaded from this partition"))
    }
    commitWaiters = []
    activity.update { $0.jobBytes[job] = nil }
  }

  /// Runs a call to the ps tasks of a job this stage registered. A task that
  /// answers NOT_FOUND has lost the job (it restarted without its state):
  /// that is UNAVAILABLE, a member failing under the job, which the
  /// coordinator cures by running the job on from its newest checkpoint.
  private func psCall<T>(_ body: () async throws -> T) async throws -> T {
    do {
      return try await body()
    } catch let error as RPCError where error.code == .notFound {
      throw StageError(
        .psBehind,
        "a ps task no longer holds job \(job) (it restarted without its state): \(error.message)")
    }
  }

  /// Refuses a call of a step that is committed (or of an unloaded job).
  private func checkOpen(_ step: Int64) throws {
    if let closed = turns.closed(step: step) { throw closed }
  }

  // MARK: - Commit

  /// Ends a step with the step's summed gradients. A stage updates the
  /// variables it alone writes itself, pushing their gradients to the ps in
  /// the background (or keeping them); it pushes the others' (the ps waits
  /// for every user and replica under sync consistency) and pulls their new
  /// values. With `flush`,
  /// returns only once the ps applied them (before a checkpoint or at the
  /// end of a job).
  /// With a `gradientScale` below 1, the step's gradients are multiplied by
  /// it first (clipping by the norm over every stage).
  func commit(step: Int64, flush: Bool, gradientScale: Float = 1) async throws -> CommitResult {
    let call = commits.call(step) {
      try await self.computeCommit(step: step, flush: flush, gradientScale: gradientScale)
    }
    do { return try await call.value } catch {
      commits.forgetFailed(step, call)
      throw error
    }
  }

  /// The squared norm of the step's gradients on this stage, once every
  /// micro-batch of it has had its backward (those of the step before may
  /// still run, under PipeDream-2BW).
  func gradientSumOfSquares(step: Int64) async throws -> Double {
    try checkBackwardsDone(of: step, orEarlier: false, before: "GradientNorm")
    let gradients = accumulated[step] ?? [:]
    return await offActor { sumOfSquares(gradients.values) }
  }

  /// Refuses `what` while a micro-batch of `step` (or, `orEarlier`, of an
  /// earlier one) waits for its Backward or BackwardWeights: the step's
  /// gradients are not whole.
  private func checkBackwardsDone(of step: Int64, orEarlier: Bool, before what: String) throws {
    let counted = { (batch: MicroBatch) in orEarlier ? batch.step <= step : batch.step == step }
    // A step that began beside this one (PipeDream-2BW) keeps its micro-batches.
    let unfinished = kept.keys.filter(counted).count
    guard unfinished == 0 else {
      throw StageError(
        .outOfOrder,
        "stage \(stage) of job \(job) still has \(unfinished) micro-batches of step \(step)\(orEarlier ? " or earlier" : "") "
          + "without backward at \(what)")
    }
    let unweighed = heldWeights.keys.filter(counted).count
    guard unweighed == 0 else {
      throw StageError(
        .outOfOrder,
        "stage \(stage) of job \(job) still holds the weight gradients of \(unweighed) micro-batches "
          + "at \(what): their BackwardWeights calls must come first")
    }
  }

  private func computeCommit(step: Int64, flush: Bool, gradientScale: Float) async throws -> CommitResult {
    // Overlapping steps (PipeDream-2BW) commit in order: the update of the step before comes first.
    while stashesWeights, let newest = weightsStep, newest < step - 1 {
      try await withCheckedThrowingContinuation { commitWaiters.append($0) }
    }
    // The previous step's push is answered first, before anything of this
    // step is looked at or taken. A push that failed fails every later
    // commit of the stage (its variables on the ps missed a step): the
    // coordinator runs the job on from its newest checkpoint.
    if let pending = localUpdates?.pendingPush { try await psCall { try await pending.value } }
    if let failure = failedCommits[step] { throw failure }
    // A repeat of a commit whose answer is no longer kept (two steps on) must not step the weights back.
    if let newest = weightsStep, newest >= step {
      throw StageError(
        .outOfOrder, "step \(step) of job \(job) is already committed: the stage holds the weights after step \(newest)"
      )
    }
    try checkBackwardsDone(of: step, orEarlier: true, before: "commit")
    var result = CommitResult()
    // The penalty of the weights the step ran on.
    result.penalty = Double(model.penalty(variables: try weightsUsed(by: step), layers: layers))
    // What the stage holds at its fullest: its variables (two versions when stashing), their
    // slots and the running steps' gradient sums (counted without holding on to them, which
    // would make the update below copy them).
    func bytes(_ tensors: Dictionary<String, Tensor>.Values) -> Int { tensors.reduce(0) { $0 + $1.scalarCount * 4 } }
    let jobBytes =
      bytes(variables.values) * (stashesWeights ? 2 : 1) + accumulated.values.reduce(0) { $0 + bytes($1.values) }
      + (localUpdates?.slots.values.reduce(0) { $0 + bytes($1.values) } ?? 0)
    result.jobBytes = jobBytes
    let resident = HostMemory.resident()
    (result.residentBytes, result.peakResidentBytes) = (resident.now, resident.peak)
    // Under weight stashing the weights before the update stay, for the step begun beside this one.
    let previous = stashesWeights ? weightsStep.map { (step: $0, variables: variables) } : nil
    func advanceWeights() {
      if let previous { stashed = previous }
      weightsStep = step
    }
    if accumulated[step]?.isEmpty == false {
      // The ps refuses a non-finite gradient; so does the stage that applies
      // its own (one rule on both paths). The sums stay, so the refusal is
      // the same on a retry.
      if localUpdates != nil,
        let name = accumulated[step]!.keys.sorted().first(where: { !accumulated[step]![$0]!.allFinite })
      {
        throw StageError(.nonFiniteGradient, "gradient of \(name) holds NaN or infinity; nothing was applied")
      }
      // The weights this step ran on go before the update copies the newest: never three versions.
      if stashesWeights { stashed = nil }
      var gradients = accumulated.removeValue(forKey: step)!
      if gradientScale < 1 {
        for name in Array(gradients.keys) { gradients[name]!.scale(by: gradientScale) }
      }
      do {
        try await update(with: &gradients, step: step, flush: flush, advancing: advanceWeights)
      } catch {
        failedCommits[step] = error
        throw error
      }
    } else {
      advanceWeights()
    }
    stepWeights = stepWeights.filter { $0.key > step }
    failedCommits = failedCommits.filter { $0.key > step }
    for waiter in commitWaiters { waiter.resume() }
    commitWaiters = []
    result.version = versions.values.min() ?? 0
    activity.update {
      $0.commits += 1
      $0.jobBytes[job] = jobBytes
    }
    forwards.forget { $0.step <= step }
    givenUpInputs = givenUpInputs.filter { $0.key.microBatch.step > step }
    backwards.forget { $0.step <= step }
    weightCalls.forget { $0.step <= step }
    // The step before's answer stays too: under overlapping steps its repeat may come after this one.
    commits.forget { $0 < step - 1 }
    turns.abandon(through: step, StageError(.outOfOrder, "step \(step) of job \(job) is already committed"))
    // Under weight stashing the step before may still be fetched from here: a neighbour can be a
    // step behind this stage (every stage finished the step before that one).
    dataPlane.drop(job: job, throughStep: stashesWeights ? step - 1 : step)
    return result
  }

  /// Applies a step's gradient sums (scaled already; taken, and left empty
  /// or handed on as `spareSums`): averaged around the ring first when the
  /// replicas reduce by ring; the variables the stage alone writes updated
  /// here, the others through the ps. Calls `advanceWeights` once the
  /// stage's weights are the step's.
  private func update(
    with gradients: inout [String: Tensor], step: Int64, flush: Bool, advancing advanceWeights: () -> Void
  ) async throws {
    if let ring { try await ring.average(&gradients, step: step, dataPlane: dataPlane, peers: peers) }
    // Variables the stage shares travel through the ps first, beside one that updates
    // its own: those are updated below without a suspension, so that no call in
    // between sees some of the step's updates and not others.
    var shared: [String: Tensor] = [:]
    if let own = localUpdates?.names, definitions.contains(where: { !own.contains($0.name) }) {
      shared = gradients.filter { !own.contains($0.key) }
      gradients = gradients.filter { own.contains($0.key) }
      try adopt(
        try await exchange(shared, step: step, pulling: definitions.map(\.name).filter { !own.contains($0) }))
    }
    if var local = localUpdates {
      // Moved out until it is put back below (no suspension in between), so
      // that the optimizer slots it holds are updated in place, not copied.
      localUpdates = nil
      // A flush (before a checkpoint, at the end of the job) keeps no sums:
      // the ps is about to receive the variables beside them.
      let push = applyLocally(gradients, step: step, local: &local, keepingSums: !flush)
      gradients = [:]
      local.pendingPush = flush ? nil : push
      localUpdates = local
      advanceWeights()
      if !flush { spareSums.merge(shared) { $1 } }
      if flush {
        try await psCall { try await push.value }
        // The ps holds the kept variables from here: for a checkpoint, and for readers after the job.
        let states = Dictionary(
          uniqueKeysWithValues: local.kept.map { name in
            (name, (value: variables[name]!, slots: local.slots[name] ?? [:], version: versions[name] ?? 0))
          })
        if !states.isEmpty, speaksForReplicas {
          _ = try await psCall {
            try await Self.psRetry.run(server: "the ps") { try await ps.assign(job: job, user: user, states: states) }
          }
        }
      }
    } else {
      try adopt(try await exchange(gradients, step: step, pulling: definitions.map(\.name)))
      advanceWeights()
      if !flush { spareSums = gradients }
    }
  }

  /// Whether this replica sends the ps what the stage's replicas apply: all
  /// do, each its own share, unless they reduce by ring (replica 0 then
  /// sends the mean they all applied).
  private var speaksForReplicas: Bool { ring == nil || replica == 0 }

  /// Pushes `gradients` of `step` to the ps, then pulls the values of
  /// `names` newer than the stage's (under sync consistency, once the ps
  /// applied the step: the push waits for every user and replica).
  private func exchange(_ gradients: [String: Tensor], step: Int64, pulling names: [String]) async throws
    -> [String: ParameterServerClient.Pulled]
  {
    let pushed = versioned(gradients)
    let (ps, job, user, replica) = (ps, job, user, replica)
    return try await psCall {
      try await Self.psRetry.run(server: "the ps") {
        try await ps.push(
          job: job, step: step, user: user, replica: replica, clientID: "\(user)/replica\(replica)",
          gradients: pushed)
      }
      return try await newerValues(of: names)
    }
  }

  /// Each gradient with the version of the variable it was computed from, as a push carries it.
  private func versioned(_ gradients: [String: Tensor]) -> [String: (Tensor, Int64)] {
    Dictionary(uniqueKeysWithValues: gradients.map { ($0.key, ($0.value, versions[$0.key] ?? 0)) })
  }

  /// Applies a step's gradient sums to the stage's variables in place (the
  /// variables and their slots are held once), and pushes those of the
  /// variables the ps also keeps in a task of their own (the ps applies them
  /// exactly as here). With `keepingSums`, the sums stay for the next step to
  /// sum into (one still being pushed then is not reused: new memory is
  /// taken for it); else they are freed on return, or once pushed.
  private func applyLocally(
    _ gradients: [String: Tensor], step: Int64, local: inout LocalUpdates, keepingSums: Bool
  ) -> Task<Void, any Error> {
    let kept = local.kept
    let pushed = speaksForReplicas ? versioned(gradients.filter { !kept.contains($0.key) }) : [:]
    for (name, gradient) in gradients {
      let version = versions[name] ?? 0
      var slots = local.slots.removeValue(forKey: name) ?? [:]
      local.optimizer.update(variable: &variables[name]!, gradient: gradient, slots: &slots, step: Int(version + 1))
      local.slots[name] = slots
      versions[name] = version + 1
    }
    if keepingSums { spareSums = gradients }
    let (ps, job, user, replica) = (ps, job, user, replica)
    return Task {
      if !pushed.isEmpty {
        try await Self.psRetry.run(server: "the ps") {
          try await ps.push(
            job: job, step: step, user: user, replica: replica, clientID: "\(user)/replica\(replica)",
            gradients: pushed)
        }
      }
    }
  }

  /// How a commit's calls to the ps are sent again when they or their
  /// answers were lost. Each is applied once however often it arrives: the
  /// ps applies a pusher's step once (sync: it knows the pushers each step
  /// received and the step each variable reached; async and bounded: the
  /// last step of each pusher and variable, a repeat of a bounded push
  /// still waiting for it), and a pull or an assignment of values
  /// is the same again.
  static let psRetry = CallRetry(attempts: 3, firstPause: .milliseconds(100))
}

/// A stage's gradient sums lent to one backward computing off the actor:
/// that computation alone touches them until it hands them back.
private final class GradientSums: @unchecked Sendable {
  var values: [String: Tensor]
  /// Buffers of applied sums, to reuse for the variables `values` lacks.
  var spares: [String: Tensor]

  init(_ values: [String: Tensor], spares: [String: Tensor] = [:]) {
    self.values = values
    self.spares = spares
  }

  /// Zeroes each spare that `values` lacks and moves it there.
  func startFromSpares() {
    for name in Array(spares.keys) {
      guard var spare = spares.removeValue(forKey: name), values[name] == nil else { continue }
      spare.setToZero()
      values[name] = spare
    }
  }
}

/// Runs `body` on the global executor, off the calling actor.
@concurrent private func offActor<T: Sendable>(_ body: @Sendable () throws -> T) async rethrows -> T {
  try body()
}
