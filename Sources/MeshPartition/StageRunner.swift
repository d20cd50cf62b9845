import Foundation
import MeshPS
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// One loaded stage of one job: layers `layers` of `model`, their variables
/// (cached from the ps), what backward needs per micro-batch, and the
/// gradients accumulated over the current step.
///
/// Requests are idempotent: a Forward, Backward or Commit repeated after a
/// retry returns the first answer and computes nothing again.
actor StageRunner {
  let job: String
  let model: Sequential
  let layers: Range<Int>
  let stage: Int
  let replica: Int32
  let recompute: Bool
  let maxKeptBytes: Int
  let definitions: [Pipemesh_V1_VariableDefinition]
  private let ps: ParameterServerClient
  private let dataPlane: DataPlane
  private let activity: PartitionActivity
  private var variables: [String: Tensor] = [:]
  private var versions: [String: Int64] = [:]
  /// Set when this stage is the only writer of its variables (see
  /// `start`): it applies each update itself, bit for bit as the ps does,
  /// and pushes to the ps in the background instead of pulling values back.
  private var localUpdates: LocalUpdates?

  private struct LocalUpdates {
    let optimizer: any Optimizer
    var slots: [String: [String: Tensor]] = [:]
    /// The previous step's push, awaited before the next one is sent.
    var pendingPush: Task<Void, any Error>?
  }
  private var kept: [MicroBatch: Kept] = [:]
  private var accumulated: [String: Tensor] = [:]
  // Calls by micro-batch (or step), running or done: a repeated request
  // awaits the first one's answer, even while it is still running.
  private var forwards = CallOnce<MicroBatch, Pipemesh_V1_ForwardResponse>()
  private var backwards = CallOnce<MicroBatch, Pipemesh_V1_BackwardResponse>()
  private var commits = CallOnce<Int64, Pipemesh_V1_CommitResponse>()

  struct MicroBatch: Hashable {
    let step: Int64
    let index: Int32
  }

  /// What backward needs: the recorded forward (or only the input, to run
  /// forward again), and on the last stage the loss gradient.
  private struct Kept {
    var forward: StageForward?
    var input: Tensor?
    var lossGradient: Tensor?
    let bytes: Int
    let seed: UInt64
  }

  var isFirst: Bool { layers.lowerBound == 0 }
  var isLast: Bool { layers.upperBound == model.layers.count }
  var user: String { "stage\(stage)" }

  init(
    job: String, model: Sequential, layers: Range<Int>, stage: Int, replica: Int32, recompute: Bool,
    maxKeptBytes: Int, optimizer: Pipemesh_V1_OptimizerSpec, ps: ParameterServerClient, dataPlane: DataPlane,
    activity: PartitionActivity
  ) {
    self.activity = activity
    self.job = job
    self.model = model
    self.layers = layers
    self.stage = stage
    self.replica = replica
    self.recompute = recompute
    self.maxKeptBytes = maxKeptBytes
    self.ps = ps
    self.dataPlane = dataPlane
    definitions = model.variableDeclarations(layers: layers).map { $0.definition(seed: model.spec.seed, optimizer: optimizer) }
  }

  /// Registers the stage's variables with the ps and pulls their values.
  ///
  /// Under sync consistency with one replica, when none of the stage's
  /// variables is shared with another stage, no gradient clipping is asked
  /// for, and the variables are fresh (version 0, so no optimizer slots exist
  /// yet), the ps would apply exactly the stage's own gradients with the same
  /// rule: the stage then applies them itself and only pushes.
  func start(consistency: Pipemesh_V1_Consistency, optimizer spec: Pipemesh_V1_OptimizerSpec) async throws {
    try await ps.register(job: job, variables: definitions, consistency: consistency, user: user)
    try await refresh()
    let shared = Set(model.layers.flatMap(\.sharedVariables).map(\.name))
    var isSync = false
    if case .sync = consistency.mode { isSync = true }
    if isSync, consistency.replicas <= 1, spec.clipGlobalNorm == 0, versions.values.allSatisfy({ $0 == 0 }),
      definitions.allSatisfy({ !shared.contains($0.name) })
    {
      localUpdates = LocalUpdates(optimizer: try makeOptimizer(spec))
    }
  }

  private func refresh() async throws {
    let names = definitions.map(\.name)
    let pulled = try await ps.pull(job: job, names: names, newerThan: versions)
    for (name, value) in pulled {
      versions[name] = value.version
      if let tensor = value.value { variables[name] = tensor }
    }
  }

  private func key(_ microBatch: MicroBatch, _ what: String) -> String {
    "\(job)/\(microBatch.step)/\(microBatch.index)/\(what)"
  }

  // MARK: - Forward

  func forward(_ request: Pipemesh_V1_ForwardRequest, training: Bool) async throws -> Pipemesh_V1_ForwardResponse {
    guard training else { return try await computeForward(request, training: false) }
    let microBatch = MicroBatch(step: request.key.step, index: request.key.microBatch)
    let call = forwards.call(microBatch) { try await self.computeForward(request, training: true) }
    do { return try await call.value } catch {
      forwards.forgetFailed(microBatch)
      throw error
    }
  }

  private func computeForward(_ request: Pipemesh_V1_ForwardRequest, training: Bool) async throws -> Pipemesh_V1_ForwardResponse {
    let microBatch = MicroBatch(step: request.key.step, index: request.key.microBatch)
    let input = try await dataPlane.resolve(request.input, what: "input of stage \(stage)")
    try model.checkInput(input, layers: layers, "stage \(stage) of job \(job)")
    let batch = input.shape[0]
    var target: Tensor?
    if isLast, training {
      target = try Tensor(wire: request.targets, what: "targets")
      try model.checkTarget(target!, batchSize: batch, "targets of job \(job)")
      guard request.batchSize >= batch else {
        throw RPCError(.invalidArgument, "batch_size \(request.batchSize) is smaller than the micro-batch (\(batch) examples)")
      }
    }
    let seed = UInt64(bitPattern: request.key.step) &* 1_000_003 &+ UInt64(request.key.microBatch)
    var response = Pipemesh_V1_ForwardResponse()
    guard training else {
      let output = model(input, variables: variables, layers: layers)
      if isLast {
        response.outputValue = Pipemesh_V1_Tensor(output)
      } else {
        response.output = dataPlane.offer(output, key: key(microBatch, "inference"))
      }
      return response
    }

    let bytes = keptBytes(batch: batch)
    let holding = kept.values.reduce(0) { $0 + $1.bytes }
    guard maxKeptBytes == 0 || holding + bytes <= maxKeptBytes else {
      throw RPCError(
        .resourceExhausted,
        "stage \(stage) would keep \(holding + bytes) bytes of activations, over its bound of \(maxKeptBytes): "
          + "use more, smaller micro-batches, the 1F1B schedule, or activation recomputation")
    }
    let computeStarted = ContinuousClock.now
    let forward = runForward(input, seed: seed)
    var entry = Kept(forward: recompute ? nil : forward, input: recompute ? input : nil, bytes: bytes, seed: seed)
    if let target {
      let share = Float(batch) / Float(request.batchSize)
      let (loss, gradient) = Autodiff.valueWithGradient(at: [forward.output]) { outputs in
        model.loss(output: outputs[0], target: target)
      }
      entry.lossGradient = gradient[0] * share
      response.loss = Double(loss.scalar * share)
      if model.spec.loss == .softmaxCrossEntropy { response.correct = Int64(Loss.correctPredictions(logits: forward.output, labels: target)) }
    } else {
      response.output = dataPlane.offer(forward.output, key: key(microBatch, "activation"))
    }
    kept[microBatch] = entry
    activity.update {
      $0.busySeconds += (ContinuousClock.now - computeStarted).seconds
      $0.forwards += 1
      $0.keptMicroBatches += 1
    }
    return response
  }

  private func runForward(_ input: Tensor, seed: UInt64) -> StageForward {
    model.forwardStage(
      input, variables: variables, layers: layers, context: ForwardContext(training: true, seed: seed),
      inputGradient: !isFirst)
  }

  /// Bytes kept for backward for a micro-batch of `batch` examples: the
  /// activations at every layer boundary of the stage (only its input when
  /// recomputing).
  private func keptBytes(batch: Int) -> Int {
    let boundaries = recompute ? [layers.lowerBound] : Array(layers.lowerBound...layers.upperBound)
    return boundaries.reduce(0) { $0 + model.activationShapes[$1].reduce(1, *) } * batch * 4
  }

  // MARK: - Backward

  func backward(_ request: Pipemesh_V1_BackwardRequest) async throws -> Pipemesh_V1_BackwardResponse {
    let microBatch = MicroBatch(step: request.key.step, index: request.key.microBatch)
    let call = backwards.call(microBatch) { try await self.computeBackward(request, microBatch) }
    do { return try await call.value } catch {
      backwards.forgetFailed(microBatch)
      throw error
    }
  }

  private func computeBackward(_ request: Pipemesh_V1_BackwardRequest, _ microBatch: MicroBatch) async throws -> Pipemesh_V1_BackwardResponse {
    guard let entry = kept[microBatch] else {
      throw RPCError(
        .failedPrecondition,
        "stage \(stage) of job \(job) has no forward of step \(microBatch.step) micro-batch \(microBatch.index) to run backward from")
    }
    let upstream: Tensor
    if isLast {
      upstream = entry.lossGradient!
    } else {
      upstream = try await dataPlane.resolve(request.outputGradient, what: "output gradient of stage \(stage)")
    }
    let computeStarted = ContinuousClock.now
    let forward = entry.forward ?? runForward(entry.input!, seed: entry.seed)
    guard upstream.shape == forward.output.shape else {
      throw RPCError(.invalidArgument, "output gradient has shape \(upstream.shape), the stage's output \(forward.output.shape)")
    }
    // The L2 penalty's gradient belongs to the step, not to each micro-batch.
    let gradients = forward.backward(upstream, addingPenalty: microBatch.index == 0)
    for (name, gradient) in gradients.variables {
      accumulated[name] = accumulated[name].map { $0 + gradient } ?? gradient
    }
    kept[microBatch] = nil
    activity.update {
      $0.busySeconds += (ContinuousClock.now - computeStarted).seconds
      $0.backwards += 1
      $0.keptMicroBatches -= 1
    }
    var response = Pipemesh_V1_BackwardResponse()
    if let input = gradients.input {
      response.inputGradient = dataPlane.offer(input, key: key(microBatch, "gradient"))
    }
    return response
  }

  // MARK: - Commit

  /// Pushes the step's gradients to the ps (waiting there under sync
  /// consistency) and pulls the updated variables.
  /// Ends a step: updates the variables from the step's gradients and
  /// pushes them to the ps. With `flush`, returns only once the ps applied
  /// them (before a checkpoint or at the end of a job).
  func commit(step: Int64, flush: Bool) async throws -> Pipemesh_V1_CommitResponse {
    let call = commits.call(step) { try await self.computeCommit(step: step, flush: flush) }
    do { return try await call.value } catch {
      commits.forgetFailed(step)
      throw error
    }
  }

  private func computeCommit(step: Int64, flush: Bool) async throws -> Pipemesh_V1_CommitResponse {
    guard kept.isEmpty else {
      throw RPCError(
        .failedPrecondition, "stage \(stage) of job \(job) still has \(kept.count) micro-batches without backward at commit")
    }
    var response = Pipemesh_V1_CommitResponse()
    response.penalty = Double(model.penalty(variables: variables, layers: layers))
    if !accumulated.isEmpty {
      let pushed = Dictionary(uniqueKeysWithValues: accumulated.map { ($0.key, ($0.value, versions[$0.key] ?? 0)) })
      let gradients = accumulated
      accumulated = [:]
      if var local = localUpdates {
        // The ps applies this push exactly as below; its answer is checked
        // before the next push, and awaited now when the caller flushes.
        try await local.pendingPush?.value
        for (name, gradient) in gradients {
          let version = versions[name] ?? 0
          let updated = local.optimizer.update(
            variable: variables[name]!, gradient: gradient, slots: local.slots[name] ?? [:], step: Int(version + 1))
          variables[name] = updated.variable
          local.slots[name] = updated.slots
          versions[name] = version + 1
        }
        let (ps, job, user, replica) = (ps, job, user, replica)
        let push = Task {
          try await ps.push(job: job, step: step, user: user, replica: replica, clientID: "\(user)/replica\(replica)", gradients: pushed)
          return ()
        }
        local.pendingPush = flush ? nil : push
        localUpdates = local
        if flush { try await push.value }
      } else {
        try await ps.push(job: job, step: step, user: user, replica: replica, clientID: "\(user)/replica\(replica)", gradients: pushed)
        try await refresh()
      }
    }
    response.version = versions.values.min() ?? 0
    activity.update { $0.commits += 1 }
    forwards.forget { $0.step <= step }
    backwards.forget { $0.step <= step }
    commits.forget { $0 < step }
    dataPlane.drop(prefix: "\(job)/\(step)/")
    return response
  }
}

/// Runs each key's call once: the first request starts `compute`, and a
/// repeated one (a retry, even while the first still runs) gets the same
/// task. The caller forgets a failed call, so that a retry runs it again.
struct CallOnce<Key: Hashable & Sendable, Value: Sendable> {
  private var calls: [Key: Task<Value, any Error>] = [:]

  mutating func call(_ key: Key, _ compute: @escaping @Sendable () async throws -> Value) -> Task<Value, any Error> {
    if let running = calls[key] { return running }
    let task = Task { try await compute() }
    calls[key] = task
    return task
  }

  mutating func forgetFailed(_ key: Key) { calls[key] = nil }

  mutating func forget(where isDone: (Key) -> Bool) {
    calls = calls.filter { !isDone($0.key) }
  }
}
