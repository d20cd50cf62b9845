import Foundation

// Differentiable element-wise functions. Each result's gradient rule reuses the forward value
// where it can (exp, sqrt, tanh, sigmoid).

extension Tensor {
  /// Element-wise e^x.
  public func exp() -> Tensor {
    let y = Tensor.unaryKernel(self) { Foundation.exp($0) }
    return Tensor.recorded(y, inputs: [self]) { g in [g * y] }
  }

  /// Element-wise natural logarithm.
  public func log() -> Tensor {
    let x = detached()
    return Tensor.recorded(Tensor.unaryKernel(x) { Foundation.log($0) }, inputs: [self]) { g in [g / x] }
  }

  /// Element-wise square root.
  public func sqrt() -> Tensor {
    let y = Tensor.unaryKernel(self) { $0.squareRoot() }
    return Tensor.recorded(y, inputs: [self]) { g in [g / (y * 2)] }
  }

  /// Element-wise hyperbolic tangent.
  public func tanh() -> Tensor {
    let y = Tensor.unaryKernel(self) { Foundation.tanh($0) }
    return Tensor.recorded(y, inputs: [self]) { g in
      [Tensor.binaryKernel(g, y) { $0 * (1 - $1 * $1) }]
    }
  }

  /// Element-wise logistic sigmoid 1 / (1 + e^-x).
  public func sigmoid() -> Tensor {
    let y = Tensor.unaryKernel(self) { 1 / (1 + Foundation.exp(-$0)) }
    return Tensor.recorded(y, inputs: [self]) { g in
      [Tensor.binaryKernel(g, y) { $0 * $1 * (1 - $1) }]
    }
  }

  /// Element-wise max(x, 0); the gradient at 0 is taken as 0.
  public func relu() -> Tensor {
    let x = detached()
    return Tensor.recorded(Tensor.unaryKernel(x) { $0 > 0 ? $0 : 0 }, inputs: [self]) { g in
      precondition(g.shape == x.shape, "relu's gradient has shape \(g.shape), its input \(x.shape)")
      let dx = Tensor(uninitializedShape: x.shape)
      Tensor.passGradient(
        g.buffer.pointer, wherePositive: x.buffer.pointer, into: dx.buffer.pointer, count: x.scalarCount)
      return [dx]
    }
  }

  /// into[i] = gradient[i] where input[i] > 0, else 0: ReLU's backward, sixteen scalars at a time
  /// (a per-scalar branch on the sign mispredicts half the time).
  @inline(__always)
  static func passGradient(
    _ gradient: UnsafePointer<Float>, wherePositive input: UnsafePointer<Float>,
    into target: UnsafeMutablePointer<Float>,
    count: Int
  ) {
    typealias Lanes = SIMD16<Float>
    let whole = count / Lanes.scalarCount * Lanes.scalarCount
    for start in Swift.stride(from: 0, to: whole, by: Lanes.scalarCount) {
      let g = UnsafeRawPointer(gradient + start).loadUnaligned(as: Lanes.self)
      let x = UnsafeRawPointer(input + start).loadUnaligned(as: Lanes.self)
      UnsafeMutableRawPointer(target + start).storeBytes(of: g.replacing(with: 0, where: .!(x .> 0)), as: Lanes.self)
    }
    for i in whole..<count { target[i] = input[i] > 0 ? gradient[i] : 0 }
  }

  /// GELU with the tanh approximation:
  /// 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))).
  public func gelu() -> Tensor {
    let x = detached()
    let c: Float = 0.7978845608028654  // √(2/π)
    let y = Tensor.unaryKernel(x) { v in
      0.5 * v * (1 + Foundation.tanh(c * (v + 0.044715 * v * v * v)))
    }
    return Tensor.recorded(y, inputs: [self]) { g in
      [
        Tensor.binaryKernel(g, x) { grad, v in
          let t = Foundation.tanh(c * (v + 0.044715 * v * v * v))
          let derivative = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * c * (1 + 3 * 0.044715 * v * v)
          return grad * derivative
        }
      ]
    }
  }

  /// Replaces the scalars where `mask` is non-zero by `value` (broadcasting `mask`); the
  /// gradient flows only through the kept scalars. Used for attention masks.
  public func masked(where mask: Tensor, with value: Float) -> Tensor {
    let constantMask = mask.detached()
    let result = Tensor.binaryKernel(self, constantMask) { $1 != 0 ? value : $0 }
    return Tensor.recorded(result, inputs: [self]) { g in
      [Tensor.binaryKernel(g, constantMask) { $1 != 0 ? 0 : $0 }]
    }
  }

  /// A `[size, size]` mask that is 1 above the diagonal (position j > i, the future) and 0
  /// elsewhere, for causal self-attention with `masked(where:with:)`.
  public static func causalMask(size: Int) -> Tensor {
    let out = Tensor(shape: [size, size], repeating: 0)
    for i in 0..<size {
      for j in (i + 1)..<Swift.max(size, i + 1) { out.buffer.pointer[i * size + j] = 1 }
    }
    return out
  }

  /// Inverted dropout: zeroes each scalar with probability `rate` and scales the kept ones by
  /// 1 / (1 - rate). The mask depends only on `seed`, so it is reproducible everywhere.
  public func dropout(rate: Float, seed: UInt64) -> Tensor {
    precondition(rate >= 0 && rate < 1, "dropout rate \(rate) must be in [0, 1)")
    if rate == 0 { return self }
    let mask = Tensor(uninitializedShape: shape)
    let scale = 1 / (1 - rate)
    let m = mask.buffer.pointer
    for i in 0..<scalarCount {
      m[i] = PortableRandom.unitFloat(seed: seed, counter: UInt64(i)) >= rate ? scale : 0
    }
    return self * mask
  }
}
