import Foundation

// Neural-network primitives over the last axis (softmax, log-softmax), embedding lookup, and
// layer normalisation composed from differentiable primitives.

extension Tensor {
  /// Rows of the last axis: (row count, row width).
  private var lastAxisRows: (rows: Int, width: Int) {
    let width = shape.last ?? 1
    return (width == 0 ? 0 : scalarCount / width, width)
  }

  /// Calls `body` with each row of the last axis and the same row of a new tensor of this
  /// shape, and returns that tensor.
  private func mapRows(
    _ body: (_ source: UnsafeMutablePointer<Float>, _ destination: UnsafeMutablePointer<Float>, _ width: Int) -> Void
  ) -> Tensor {
    let (rows, width) = lastAxisRows
    let y = Tensor(uninitializedShape: shape)
    for row in 0..<rows { body(buffer.pointer + row * width, y.buffer.pointer + row * width, width) }
    return y
  }

  /// The largest of `count` floats at `values` (−∞ for none).
  private static func maximum(_ values: UnsafeMutablePointer<Float>, count: Int) -> Float {
    var maximum = -Float.infinity
    for j in 0..<count where values[j] > maximum { maximum = values[j] }
    return maximum
  }

  /// Softmax over the last axis, computed after subtracting each row's maximum.
  public func softmax() -> Tensor {
    let (rows, width) = lastAxisRows
    let y = mapRows { src, dst, width in
      let maximum = Tensor.maximum(src, count: width)
      var total: Float = 0
      for j in 0..<width {
        dst[j] = Foundation.exp(src[j] - maximum)
        total += dst[j]
      }
      let scale = 1 / total
      for j in 0..<width { dst[j] *= scale }
    }
    return Tensor.recorded(y, inputs: [self]) { g in
      // dx = y ⊙ (g − Σ g⊙y)
      let dx = Tensor(uninitializedShape: g.shape)
      let gp = g.buffer.pointer
      let yp = y.buffer.pointer
      let dp = dx.buffer.pointer
      for row in 0..<rows {
        var dot: Float = 0
        for j in 0..<width { dot += gp[row * width + j] * yp[row * width + j] }
        for j in 0..<width { dp[row * width + j] = yp[row * width + j] * (gp[row * width + j] - dot) }
      }
      return [dx]
    }
  }

  /// Log-softmax over the last axis: x − max − log Σ exp(x − max).
  public func logSoftmax() -> Tensor {
    let (rows, width) = lastAxisRows
    let y = mapRows { src, dst, width in
      let maximum = Tensor.maximum(src, count: width)
      var total: Float = 0
      for j in 0..<width { total += Foundation.exp(src[j] - maximum) }
      let shift = maximum + Foundation.log(total)
      for j in 0..<width { dst[j] = src[j] - shift }
    }
    return Tensor.recorded(y, inputs: [self]) { g in
      // dx = g − softmax(x) · Σ g
      let dx = Tensor(uninitializedShape: g.shape)
      let gp = g.buffer.pointer
      let yp = y.buffer.pointer
      let dp = dx.buffer.pointer
      for row in 0..<rows {
        var total: Float = 0
        for j in 0..<width { total += gp[row * width + j] }
        for j in 0..<width {
          dp[row * width + j] = gp[row * width + j] - Foundation.exp(yp[row * width + j]) * total
        }
      }
      return [dx]
    }
  }

  /// The rows (slices along axis 0) at `indices`, in that order: a batch of examples.
  public func rows(_ indices: [Int]) -> Tensor {
    gathering(indices: indices, indexShape: [indices.count])
  }

  /// Rows of this table (axis 0) picked by `indices`; the result has shape
  /// `indexShape + shape[1...]`. This is an embedding lookup.
  public func gathering(indices: [Int], indexShape: [Int]) -> Tensor {
    precondition(
      Tensor.count(of: indexShape) == indices.count, "index shape \(indexShape) does not hold \(indices.count) indices")
    precondition(rank >= 1, "gathering from a scalar")
    let rowShape = Array(shape.dropFirst())
    let width = Tensor.count(of: rowShape)
    let rows = shape[0]
    let out = Tensor(uninitializedShape: indexShape + rowShape)
    for (position, index) in indices.enumerated() {
      precondition(index >= 0 && index < rows, "index \(index) out of range 0..<\(rows)")
      (out.buffer.pointer + position * width).update(from: buffer.pointer + index * width, count: width)
    }
    let tableShape = shape
    return Tensor.recorded(out, inputs: [self]) { g in
      let table = Tensor.zeros(tableShape)
      for (position, index) in indices.enumerated() {
        let dst = table.buffer.pointer + index * width
        let src = g.buffer.pointer + position * width
        for j in 0..<width { dst[j] += src[j] }
      }
      return [table]
    }
  }

  /// Normalises the last axis to zero mean and unit variance, then scales by `gamma` and
  /// shifts by `beta` (both shaped like the last axis).
  public func layerNormalized(gamma: Tensor, beta: Tensor, epsilon: Float = 1e-5) -> Tensor {
    let centered = self - mean(alongAxes: [-1], keepingDims: true)
    let variance = centered.squared().mean(alongAxes: [-1], keepingDims: true)
    return centered / (variance + epsilon).sqrt() * gamma + beta
  }

  /// A `[indices.count, classCount]` tensor with 1 at each row's index and 0 elsewhere.
  public static func oneHot(_ indices: [Int], classCount: Int) -> Tensor {
    let out = Tensor.zeros([indices.count, classCount])
    for (row, index) in indices.enumerated() {
      precondition(index >= 0 && index < classCount, "label \(index) out of range 0..<\(classCount)")
      out.buffer.pointer[row * classCount + index] = 1
    }
    return out
  }
}
