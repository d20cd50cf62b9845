import Foundation

/// Plain gradient descent: w ← w − η·g.
public struct SGD: Optimizer {
  public let learningRate: LearningRateSchedule
  public init(learningRate: LearningRateSchedule) { self.learningRate = learningRate }
  public var slotNames: [String] { [] }

  public func update(variable: inout Tensor, gradient: Tensor, slots: inout [String: Tensor], step: Int) {
    let lr = learningRate.rate(atStep: step)
    elementwiseUpdate(&variable, gradient: gradient, slots: &slots, names: []) { u in
      for i in 0..<u.count { u.newW[i] = u.w[i] - lr * u.g[i] }
    }
  }
}

/// Heavy-ball momentum: v ← μ·v + g; w ← w − η·v, or with Nesterov w ← w − η·(g + μ·v).
public struct Momentum: Optimizer {
  public let learningRate: LearningRateSchedule
  public let momentum: Float
  public let nesterov: Bool
  public init(learningRate: LearningRateSchedule, momentum: Float = 0.9, nesterov: Bool = false) {
    self.learningRate = learningRate
    self.momentum = momentum
    self.nesterov = nesterov
  }
  public var slotNames: [String] { ["velocity"] }

  public func update(variable: inout Tensor, gradient: Tensor, slots: inout [String: Tensor], step: Int) {
    let lr = learningRate.rate(atStep: step)
    let mu = momentum
    let nesterov = nesterov
    elementwiseUpdate(&variable, gradient: gradient, slots: &slots, names: slotNames) { u in
      let (v, newV) = (u.slots[0], u.newSlots[0])
      for i in 0..<u.count {
        let velocity = mu * v[i] + u.g[i]
        newV[i] = velocity
        u.newW[i] = u.w[i] - lr * (nesterov ? u.g[i] + mu * velocity : velocity)
      }
    }
  }
}

/// Adam: m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²; w ← w − η·m̂/(√v̂ + ε) with bias-corrected
/// m̂ = m/(1−β1^t), v̂ = v/(1−β2^t). With `weightDecay` > 0 it is AdamW: w ← w − η·λ·w first
/// (decoupled decay).
public struct Adam: Optimizer {
  public let learningRate: LearningRateSchedule
  public let beta1: Float
  public let beta2: Float
  public let epsilon: Float
  public let weightDecay: Float
  public init(
    learningRate: LearningRateSchedule, beta1: Float = 0.9, beta2: Float = 0.999,
    epsilon: Float = 1e-8, weightDecay: Float = 0
  ) {
    self.learningRate = learningRate
    self.beta1 = beta1
    self.beta2 = beta2
    self.epsilon = epsilon
    self.weightDecay = weightDecay
  }
  public var slotNames: [String] { ["m", "v"] }

  public func update(variable: inout Tensor, gradient: Tensor, slots: inout [String: Tensor], step: Int) {
    let lr = learningRate.rate(atStep: step)
    let (b1, b2, eps, decay) = (beta1, beta2, epsilon, weightDecay)
    let inverseCorrection1 = 1 / (1 - Foundation.pow(b1, Float(step)))
    let inverseCorrection2 = 1 / (1 - Foundation.pow(b2, Float(step)))
    let keep = 1 - lr * decay
    elementwiseUpdate(&variable, gradient: gradient, slots: &slots, names: slotNames) { u in
      // Eight lanes at a time (explicit SIMD: the compiler cannot prove the streams disjoint).
      typealias Lanes = SIMD8<Float>
      func load(_ p: UnsafePointer<Float>, _ i: Int) -> Lanes { UnsafeRawPointer(p + i).loadUnaligned(as: Lanes.self) }
      func store(_ value: Lanes, _ p: UnsafeMutablePointer<Float>, _ i: Int) {
        UnsafeMutableRawPointer(p + i).storeBytes(of: value, as: Lanes.self)
      }
      let (m, v, newM, newV) = (u.slots[0], u.slots[1], u.newSlots[0], u.newSlots[1])
      let vectorEnd = u.count - u.count % Lanes.scalarCount
      for i in stride(from: 0, to: vectorEnd, by: Lanes.scalarCount) {
        let g = load(u.g, i)
        let mi = b1 * load(m, i) + (1 - b1) * g
        let vi = b2 * load(v, i) + (1 - b2) * g * g
        store(mi, newM, i)
        store(vi, newV, i)
        store(
          keep * load(u.w, i) - lr * (mi * inverseCorrection1) / ((vi * inverseCorrection2).squareRoot() + eps), u.newW,
          i)
      }
      for i in vectorEnd..<u.count {
        let g = u.g[i]
        let mi = b1 * m[i] + (1 - b1) * g
        let vi = b2 * v[i] + (1 - b2) * g * g
        newM[i] = mi
        newV[i] = vi
        u.newW[i] = keep * u.w[i] - lr * (mi * inverseCorrection1) / ((vi * inverseCorrection2).squareRoot() + eps)
      }
    }
  }
}

/// AdamW (decoupled weight decay, Loshchilov & Hutter): Adam with w ← w − η·λ·w before each step.
public struct AdamW: Optimizer {
  let adam: Adam
  public init(
    learningRate: LearningRateSchedule, weightDecay: Float = 0.01, beta1: Float = 0.9,
    beta2: Float = 0.999, epsilon: Float = 1e-8
  ) {
    adam = Adam(learningRate: learningRate, beta1: beta1, beta2: beta2, epsilon: epsilon, weightDecay: weightDecay)
  }
  public var learningRate: LearningRateSchedule { adam.learningRate }
  public var slotNames: [String] { adam.slotNames }

  public func update(variable: inout Tensor, gradient: Tensor, slots: inout [String: Tensor], step: Int) {
    adam.update(variable: &variable, gradient: gradient, slots: &slots, step: step)
  }
}

/// Adagrad: s ← s + g²; w ← w − η·g/(√s + ε). The accumulator starts at `initialAccumulator`.
public struct Adagrad: Optimizer {
  public let learningRate: LearningRateSchedule
  public let epsilon: Float
  public let initialAccumulator: Float
  public init(learningRate: LearningRateSchedule, epsilon: Float = 1e-10, initialAccumulator: Float = 0) {
    self.learningRate = learningRate
    self.epsilon = epsilon
    self.initialAccumulator = initialAccumulator
  }
  public var slotNames: [String] { ["accumulator"] }

  public func update(variable: inout Tensor, gradient: Tensor, slots: inout [String: Tensor], step: Int) {
    let lr = learningRate.rate(atStep: step)
    let eps = epsilon
    elementwiseUpdate(&variable, gradient: gradient, slots: &slots, names: slotNames, initial: initialAccumulator) {
      u in
      for i in 0..<u.count {
        let accumulator = u.slots[0][i] + u.g[i] * u.g[i]
        u.newSlots[0][i] = accumulator
        u.newW[i] = u.w[i] - lr * u.g[i] / (accumulator.squareRoot() + eps)
      }
    }
  }
}

/// RMSProp: s ← ρ·s + (1−ρ)·g²; w ← w − η·g/(√s + ε).
public struct RMSProp: Optimizer {
  public let learningRate: LearningRateSchedule
  public let rho: Float
  public let epsilon: Float
  public init(learningRate: LearningRateSchedule, rho: Float = 0.9, epsilon: Float = 1e-8) {
    self.learningRate = learningRate
    self.rho = rho
    self.epsilon = epsilon
  }
  public var slotNames: [String] { ["mean_square"] }

  public func update(variable: inout Tensor, gradient: Tensor, slots: inout [String: Tensor], step: Int) {
    let lr = learningRate.rate(atStep: step)
    let rho = rho
    let eps = epsilon
    elementwiseUpdate(&variable, gradient: gradient, slots: &slots, names: slotNames) { u in
      for i in 0..<u.count {
        let meanSquare = rho * u.slots[0][i] + (1 - rho) * u.g[i] * u.g[i]
        u.newSlots[0][i] = meanSquare
        u.newW[i] = u.w[i] - lr * u.g[i] / (meanSquare.squareRoot() + eps)
      }
    }
  }
}
