import Foundation

// Differentiable element-wise arithmetic with NumPy broadcasting.

extension Tensor {
  /// Element-wise sum (broadcasting).
  public static func + (lhs: Tensor, rhs: Tensor) -> Tensor {
    recorded(binaryKernel(lhs, rhs, +), inputs: [lhs, rhs]) { g in [g, g] }
  }

  /// Element-wise difference (broadcasting).
  public static func - (lhs: Tensor, rhs: Tensor) -> Tensor {
    recorded(binaryKernel(lhs, rhs, -), inputs: [lhs, rhs]) { g in [g, -g] }
  }

  /// Element-wise product (broadcasting).
  public static func * (lhs: Tensor, rhs: Tensor) -> Tensor {
    let (a, b) = (lhs.detached(), rhs.detached())
    return recorded(binaryKernel(a, b, *), inputs: [lhs, rhs]) { g in [g * b, g * a] }
  }

  /// Element-wise quotient (broadcasting).
  public static func / (lhs: Tensor, rhs: Tensor) -> Tensor {
    let (a, b) = (lhs.detached(), rhs.detached())
    return recorded(binaryKernel(a, b, /), inputs: [lhs, rhs]) { g in
      [g / b, -(g * a) / (b * b)]
    }
  }

  /// Element-wise negation.
  public static prefix func - (x: Tensor) -> Tensor {
    recorded(unaryKernel(x) { -$0 }, inputs: [x]) { g in [-g] }
  }

  /// Adds a constant to every scalar.
  public static func + (lhs: Tensor, rhs: Float) -> Tensor {
    recorded(unaryKernel(lhs) { $0 + rhs }, inputs: [lhs]) { g in [g] }
  }

  /// Subtracts a constant from every scalar.
  public static func - (lhs: Tensor, rhs: Float) -> Tensor { lhs + (-rhs) }

  /// Multiplies every scalar by a constant.
  public static func * (lhs: Tensor, rhs: Float) -> Tensor {
    recorded(unaryKernel(lhs) { $0 * rhs }, inputs: [lhs]) { g in [g * rhs] }
  }

  /// Multiplies every scalar by a constant.
  public static func * (lhs: Float, rhs: Tensor) -> Tensor { rhs * lhs }

  /// Multiplies every scalar by a constant in place (no new storage when
  /// this tensor's is its own), as `self * factor` would. Detaches the
  /// tensor from gradient recording.
  public mutating func scale(by factor: Float) {
    withUnsafeMutableBufferPointer { values in
      for index in values.indices { values[index] *= factor }
    }
  }

  /// Divides every scalar by a constant.
  public static func / (lhs: Tensor, rhs: Float) -> Tensor { lhs * (1 / rhs) }

  /// Subtracts every scalar from a constant.
  public static func - (lhs: Float, rhs: Tensor) -> Tensor { -rhs + lhs }

  /// Element-wise power `self ** exponent` (broadcasting); the exponent's gradient uses
  /// `log(self)` and is only meaningful for positive bases.
  public func raised(to exponent: Tensor) -> Tensor {
    let (base, power) = (detached(), exponent.detached())
    let result = Tensor.binaryKernel(base, power) { Foundation.pow($0, $1) }
    return Tensor.recorded(result, inputs: [self, exponent]) { g in
      let dBase = g * power * Tensor.binaryKernel(base, power) { Foundation.pow($0, $1 - 1) }
      let dExponent = g * result * Tensor.unaryKernel(base) { Foundation.log($0) }
      return [dBase, dExponent]
    }
  }

  /// Element-wise power with a constant exponent.
  public func raised(to exponent: Float) -> Tensor {
    let base = detached()
    let result = Tensor.unaryKernel(base) { Foundation.pow($0, exponent) }
    return Tensor.recorded(result, inputs: [self]) { g in
      [g * Tensor.unaryKernel(base) { exponent * Foundation.pow($0, exponent - 1) }]
    }
  }

  /// Element-wise square.
  public func squared() -> Tensor { self * self }
}
