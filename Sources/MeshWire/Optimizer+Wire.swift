import MeshProto
import MeshRPC
import MeshTensor

/// Builds the update rule an `OptimizerSpec` describes; INVALID_ARGUMENT for
/// hyper-parameters that cannot work (a negative learning rate, β ≥ 1, …).
public func makeOptimizer(_ spec: Pipemesh_V1_OptimizerSpec) throws -> any Optimizer {
  let schedule = try makeSchedule(spec.learningRate)
  guard spec.clipGlobalNorm >= 0, spec.clipGlobalNorm.isFinite else {
    throw RPCError(
      .invalidArgument, "clip_global_norm must be a finite number >= 0 (0: no clipping), got \(spec.clipGlobalNorm)")
  }
  func fraction(_ value: Float, default fallback: Float, _ name: String) throws -> Float {
    let value = value == 0 ? fallback : value
    guard value >= 0, value < 1 else { throw RPCError(.invalidArgument, "\(name) must be in [0, 1), got \(value)") }
    return value
  }
  func positive(_ value: Float, default fallback: Float, _ name: String) throws -> Float {
    let value = value == 0 ? fallback : value
    guard value > 0, value.isFinite else { throw RPCError(.invalidArgument, "\(name) must be positive, got \(value)") }
    return value
  }
  switch spec.kind {
  case .sgd, nil:
    return SGD(learningRate: schedule)
  case .momentum(let momentum):
    return Momentum(
      learningRate: schedule, momentum: try fraction(momentum.momentum, default: 0.9, "momentum"),
      nesterov: momentum.nesterov)
  case .adam(let adam):
    return Adam(
      learningRate: schedule, beta1: try fraction(adam.beta1, default: 0.9, "beta1"),
      beta2: try fraction(adam.beta2, default: 0.999, "beta2"),
      epsilon: try positive(adam.epsilon, default: 1e-8, "epsilon"))
  case .adamw(let adam):
    return AdamW(
      learningRate: schedule, weightDecay: try fraction(adam.weightDecay, default: 0.01, "weight_decay"),
      beta1: try fraction(adam.beta1, default: 0.9, "beta1"), beta2: try fraction(adam.beta2, default: 0.999, "beta2"),
      epsilon: try positive(adam.epsilon, default: 1e-8, "epsilon"))
  case .adagrad(let adagrad):
    guard adagrad.initialAccumulator >= 0, adagrad.initialAccumulator.isFinite else {
      throw RPCError(
        .invalidArgument, "initial_accumulator must be a finite number >= 0, got \(adagrad.initialAccumulator)")
    }
    return Adagrad(
      learningRate: schedule, epsilon: try positive(adagrad.epsilon, default: 1e-10, "epsilon"),
      initialAccumulator: adagrad.initialAccumulator)
  case .rmsprop(let rmsprop):
    return RMSProp(
      learningRate: schedule, rho: try fraction(rmsprop.decay, default: 0.9, "decay"),
      epsilon: try positive(rmsprop.epsilon, default: 1e-8, "epsilon"))
  }
}

/// The learning-rate schedule of a spec; a base rate of 0 means 0.01.
public func makeSchedule(_ spec: Pipemesh_V1_LearningRateSchedule) throws -> LearningRateSchedule {
  let base = spec.base == 0 ? 0.01 : spec.base
  guard base > 0, base.isFinite else { throw RPCError(.invalidArgument, "learning rate must be positive, got \(base)") }
  let schedule: LearningRateSchedule
  switch spec.kind {
  case .constant, nil:
    schedule = .constant(base)
  case .step(let step):
    guard step.stepSize > 0, step.stepSize <= Int32.max else {
      throw RPCError(.invalidArgument, "step schedule needs step_size from 1 to 2^31-1, got \(step.stepSize)")
    }
    guard step.gamma >= 0, step.gamma.isFinite else {
      throw RPCError(.invalidArgument, "step schedule needs a finite gamma > 0 (0: 0.1), got \(step.gamma)")
    }
    schedule = .step(initial: base, factor: step.gamma == 0 ? 0.1 : step.gamma, every: Int(step.stepSize))
  case .cosine(let cosine):
    guard cosine.totalSteps > 0, cosine.totalSteps <= Int32.max else {
      throw RPCError(.invalidArgument, "cosine schedule needs total_steps from 1 to 2^31-1, got \(cosine.totalSteps)")
    }
    guard cosine.minimum >= 0, cosine.minimum <= base else {
      throw RPCError(
        .invalidArgument, "cosine schedule needs minimum from 0 to the base rate \(base), got \(cosine.minimum)")
    }
    schedule = .cosine(initial: base, minimum: cosine.minimum, totalSteps: Int(cosine.totalSteps))
  }
  guard spec.warmupSteps >= 0, spec.warmupSteps <= Int32.max else {
    throw RPCError(.invalidArgument, "warmup_steps must be from 0 to 2^31-1, got \(spec.warmupSteps)")
  }
  return spec.warmupSteps > 0 ? .linearWarmup(steps: Int(spec.warmupSteps), then: schedule) : schedule
}
