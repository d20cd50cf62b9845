import MeshProto
import MeshTensor

extension Pipemesh_V1_OptimizerSpec {
  /// The spec with every default written out — the kind (SGD), the
  /// learning rate (a constant 0.01) and each hyper-parameter left unset —
  /// so that a job's record says exactly what it trains with; a `WireError`
  /// for values that cannot work (a zero or negative learning rate, β ≥ 1, …).
  /// With `jobSteps`, a cosine decay left without a length runs to that step.
  public func resolved(jobSteps: Int? = nil) throws -> Pipemesh_V1_OptimizerSpec {
    var spec = self
    guard spec.clipGlobalNorm >= 0, spec.clipGlobalNorm.isFinite else {
      throw WireError("clip_global_norm must be a finite number >= 0 (0: no clipping), got \(spec.clipGlobalNorm)")
    }
    spec.learningRate = try learningRate.resolved(jobSteps: jobSteps)
    func fraction(_ value: Float?, default fallback: Float, _ name: String) throws -> Float {
      let value = value ?? fallback
      guard value >= 0, value < 1 else { throw WireError("\(name) must be in [0, 1), got \(value)") }
      return value
    }
    func positive(_ value: Float?, default fallback: Float, _ name: String) throws -> Float {
      let value = value ?? fallback
      guard value > 0, value.isFinite else {
        throw WireError("\(name) must be positive, got \(value)")
      }
      return value
    }
    func resolvedAdam(_ adam: Pipemesh_V1_AdamOptimizer, kind: String) throws -> Pipemesh_V1_AdamOptimizer {
      var resolved = adam
      resolved.beta1 = try fraction(adam.hasBeta1 ? adam.beta1 : nil, default: 0.9, "\(kind).beta1")
      resolved.beta2 = try fraction(adam.hasBeta2 ? adam.beta2 : nil, default: 0.999, "\(kind).beta2")
      resolved.epsilon = try positive(adam.hasEpsilon ? adam.epsilon : nil, default: 1e-8, "\(kind).epsilon")
      if kind == "adamw" {
        resolved.weightDecay = try fraction(
          adam.hasWeightDecay ? adam.weightDecay : nil, default: 0.01, "adamw.weight_decay")
      }
      return resolved
    }
    switch kind {
    case .sgd, nil:
      spec.sgd = .init()
    case .momentum(var momentum):
      momentum.momentum = try fraction(
        momentum.hasMomentum ? momentum.momentum : nil, default: 0.9, "momentum.momentum")
      spec.momentum = momentum
    case .adam(let adam):
      spec.adam = try resolvedAdam(adam, kind: "adam")
    case .adamw(let adam):
      spec.adamw = try resolvedAdam(adam, kind: "adamw")
    case .adagrad(var adagrad):
      guard adagrad.initialAccumulator >= 0, adagrad.initialAccumulator.isFinite else {
        throw WireError("adagrad.initial_accumulator must be a finite number >= 0, got \(adagrad.initialAccumulator)")
      }
      adagrad.epsilon = try positive(adagrad.hasEpsilon ? adagrad.epsilon : nil, default: 1e-10, "adagrad.epsilon")
      spec.adagrad = adagrad
    case .rmsprop(var rmsprop):
      rmsprop.decay = try fraction(rmsprop.hasDecay ? rmsprop.decay : nil, default: 0.9, "rmsprop.decay")
      rmsprop.epsilon = try positive(rmsprop.hasEpsilon ? rmsprop.epsilon : nil, default: 1e-8, "rmsprop.epsilon")
      spec.rmsprop = rmsprop
    }
    return spec
  }
}

/// Builds the update rule an `OptimizerSpec` describes, its defaults filled
/// in by `resolved()`.
public func makeOptimizer(_ spec: Pipemesh_V1_OptimizerSpec) throws -> any Optimizer {
  let spec = try spec.resolved()
  let schedule = try makeSchedule(spec.learningRate)
  switch spec.kind {
  case .sgd, nil:
    return SGD(learningRate: schedule)
  case .momentum(let momentum):
    return Momentum(learningRate: schedule, momentum: momentum.momentum, nesterov: momentum.nesterov)
  case .adam(let adam):
    return Adam(learningRate: schedule, beta1: adam.beta1, beta2: adam.beta2, epsilon: adam.epsilon)
  case .adamw(let adam):
    return AdamW(
      learningRate: schedule, weightDecay: adam.weightDecay, beta1: adam.beta1, beta2: adam.beta2,
      epsilon: adam.epsilon)
  case .adagrad(let adagrad):
    return Adagrad(learningRate: schedule, epsilon: adagrad.epsilon, initialAccumulator: adagrad.initialAccumulator)
  case .rmsprop(let rmsprop):
    return RMSProp(learningRate: schedule, rho: rmsprop.decay, epsilon: rmsprop.epsilon)
  }
}

extension Pipemesh_V1_LearningRateSchedule {
  /// The schedule with its defaults written out: a base rate of 0.01 when
  /// unset, a constant schedule when none is named, a step schedule's gamma
  /// of 0.1; a `WireError` for values that cannot work. With `jobSteps`,
  /// a cosine decay without `total_steps` decays over the job's steps after
  /// the warm-up.
  public func resolved(jobSteps: Int? = nil) throws -> Pipemesh_V1_LearningRateSchedule {
    var spec = self
    spec.base = hasBase ? base : 0.01
    guard spec.base > 0, spec.base.isFinite else {
      throw WireError(
        "learning_rate.base must be a finite rate above 0, got \(spec.base)"
          + (hasBase && base == 0 ? " (a zero rate trains nothing; leave it unset for 0.01)" : ""))
    }
    switch kind {
    case nil:
      spec.constant = .init()
    case .step(var step):
      step.gamma = step.hasGamma ? step.gamma : 0.1
      guard step.gamma > 0, step.gamma.isFinite else {
        throw WireError("learning_rate.step.gamma must be a finite number above 0, got \(step.gamma)")
      }
      spec.step = step
    case .cosine(var cosine):
      if cosine.totalSteps == 0, let jobSteps {
        // Its last update, the job's, then runs at the minimum (the rate of update i follows (i - 1) / total).
        let warmup = min(max(warmupSteps, 0), Int64(Int32.max))
        cosine.totalSteps = max(1, Int64(jobSteps) - warmup - 1)
        guard cosine.totalSteps <= Int32.max else {
          throw WireError(
            "learning_rate.cosine: a decay to the job's end would run \(cosine.totalSteps) updates, more than "
              + "2^31-1: give total_steps, or train fewer epochs")
        }
        spec.cosine = cosine
      }
    case .constant: break
    }
    return spec
  }
}

/// The learning-rate schedule of a spec, its defaults filled in by `resolved()`.
public func makeSchedule(_ spec: Pipemesh_V1_LearningRateSchedule) throws -> LearningRateSchedule {
  let spec = try spec.resolved()
  let base = spec.base
  let schedule: LearningRateSchedule
  switch spec.kind {
  case .constant, nil:
    schedule = .constant(base)
  case .step(let step):
    guard step.stepSize > 0, step.stepSize <= Int32.max else {
      throw WireError("step schedule needs step_size from 1 to 2^31-1, got \(step.stepSize)")
    }
    schedule = .step(initial: base, factor: step.gamma, every: Int(step.stepSize))
  case .cosine(let cosine):
    guard cosine.totalSteps > 0, cosine.totalSteps <= Int32.max else {
      throw WireError(
        "cosine schedule needs total_steps from 1 to 2^31-1 (0 only in a TrainRequest: the job's steps), got "
          + "\(cosine.totalSteps)")
    }
    guard cosine.minimum >= 0, cosine.minimum <= base else {
      throw WireError("cosine schedule needs minimum from 0 to the base rate \(base), got \(cosine.minimum)")
    }
    schedule = .cosine(initial: base, minimum: cosine.minimum, totalSteps: Int(cosine.totalSteps))
  }
  guard spec.warmupSteps >= 0, spec.warmupSteps <= Int32.max else {
    throw WireError("warmup_steps must be from 0 to 2^31-1, got \(spec.warmupSteps)")
  }
  return spec.warmupSteps > 0 ? .linearWarmup(steps: Int(spec.warmupSteps), then: schedule) : schedule
}
