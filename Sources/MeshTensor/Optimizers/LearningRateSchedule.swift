import Foundation

/// Learning rate as a function of the 1-based step number.
public indirect enum LearningRateSchedule: Codable, Sendable, Equatable {
  /// The same rate every step.
  case constant(Float)
  /// `initial · factor^⌊(step − 1) / every⌋`.
  case step(initial: Float, factor: Float, every: Int)
  /// Cosine decay from `initial` to `minimum` over `totalSteps`, then `minimum`.
  case cosine(initial: Float, minimum: Float, totalSteps: Int)
  /// Rises linearly from rate/steps to the rate of `then` over `steps`, then follows `then`
  /// (whose step count starts after the warm-up).
  case linearWarmup(steps: Int, then: LearningRateSchedule)

  /// The learning rate for `step` (1-based).
  public func rate(atStep step: Int) -> Float {
    precondition(step >= 1, "steps are 1-based, got \(step)")
    switch self {
    case .constant(let rate):
      return rate
    case .step(let initial, let factor, let every):
      return initial * Foundation.pow(factor, Float((step - 1) / Swift.max(every, 1)))
    case .cosine(let initial, let minimum, let totalSteps):
      let progress = Swift.min(Float(step - 1) / Float(Swift.max(totalSteps, 1)), 1)
      return minimum + (initial - minimum) * 0.5 * (1 + Foundation.cos(Float.pi * progress))
    case .linearWarmup(let steps, let then):
      if step <= steps { return then.rate(atStep: 1) * Float(step) / Float(steps) }
      return then.rate(atStep: step - steps)
    }
  }
}

/// Scales all gradients by min(1, maxNorm / globalNorm), where globalNorm is the Euclidean norm
/// of all gradients together. Returns the clipped gradients and the norm before clipping.
public func clipByGlobalNorm(_ gradients: [String: Tensor], maxNorm: Float) -> (
  gradients: [String: Tensor], globalNorm: Float
) {
  let squares = sumOfSquares(gradients.values)
  let norm = Float(squares.squareRoot())
  let scale = clipScale(sumOfSquares: squares, maxNorm: maxNorm)
  guard scale < 1 else { return (gradients, norm) }
  return (gradients.mapValues { $0.detached() * scale }, norm)
}

/// The sum of the squares of every element of `tensors`, in float64: the
/// squared Euclidean norm of them all together. Parts of one model (a
/// pipeline's stages) add theirs up for `clipScale(sumOfSquares:maxNorm:)`.
public func sumOfSquares(_ tensors: some Collection<Tensor>) -> Double {
  var sum: Double = 0
  for tensor in tensors {
    tensor.withUnsafeBufferPointer { values in
      for value in values { sum += Double(value) * Double(value) }
    }
  }
  return sum
}

/// What clipping to a global norm of `maxNorm` multiplies gradients by:
/// min(1, maxNorm / norm), where norm is the square root of `sumOfSquares`
/// (in float64, so that a norm past float32's range still scales; never 0).
public func clipScale(sumOfSquares: Double, maxNorm: Float) -> Float {
  let norm = sumOfSquares.squareRoot()
  guard norm > Double(maxNorm), norm > 0 else { return 1 }
  return max(.leastNonzeroMagnitude, Float(Double(maxNorm) / norm))
}
