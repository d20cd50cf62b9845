// Reductions over axes: sum, mean, max.

extension Tensor {
  enum ReductionKind { case sum, max }

  /// Reduces one axis of a raw tensor viewed as [outer, extent, inner]; keeps the axis as 1.
  private func reducedValues(axis: Int, kind: ReductionKind) -> Tensor {
    let extent = shape[axis]
    let outer = Tensor.count(of: Array(shape[..<axis]))
    let inner = Tensor.count(of: Array(shape[(axis + 1)...]))
    var outShape = shape
    outShape[axis] = 1
    let out = Tensor(shape: outShape, repeating: kind == .sum ? 0 : -.infinity)
    let source = buffer.pointer
    let destination = out.buffer.pointer
    for o in 0..<outer {
      let row = destination + o * inner
      for k in 0..<extent {
        let src = source + (o * extent + k) * inner
        switch kind {
        case .sum: for i in 0..<inner { row[i] += src[i] }
        case .max: for i in 0..<inner where src[i] > row[i] { row[i] = src[i] }
        }
      }
    }
    return out
  }

  /// Raw reduction over `axes` (possibly negative); no recording.
  func reducedValues(axes: [Int], keepingDims: Bool, kind: ReductionKind) -> Tensor {
    let resolved = Set(axes.map { Tensor.normalize(axis: $0, rank: rank) })
    var result = detached()
    for axis in resolved.sorted() { result = result.reducedValues(axis: axis, kind: kind) }
    if keepingDims { return result }
    let kept = shape.indices.filter { !resolved.contains($0) }.map { shape[$0] }
    return result.reshapedValues(to: kept)
  }

  /// The shape this tensor has after reducing `axes` with dimensions kept as 1.
  private func keptShape(_ axes: [Int]) -> [Int] {
    var kept = shape
    for axis in axes { kept[Tensor.normalize(axis: axis, rank: rank)] = 1 }
    return kept
  }

  /// Sum over `axes`; all axes when `axes` is nil.
  public func sum(alongAxes axes: [Int]? = nil, keepingDims: Bool = false) -> Tensor {
    let axes = axes ?? Array(0..<rank)
    let inputShape = shape
    let kept = keptShape(axes)
    let result = reducedValues(axes: axes, keepingDims: keepingDims, kind: .sum)
    return Tensor.recorded(result, inputs: [self]) { g in
      [g.reshapedValues(to: kept).broadcastedValues(to: inputShape)]
    }
  }

  /// Arithmetic mean over `axes`; all axes when `axes` is nil.
  public func mean(alongAxes axes: [Int]? = nil, keepingDims: Bool = false) -> Tensor {
    let axes = axes ?? Array(0..<rank)
    let count = Set(axes.map { Tensor.normalize(axis: $0, rank: rank) }).reduce(1) { $0 * shape[$1] }
    return sum(alongAxes: axes, keepingDims: keepingDims) / Float(count)
  }

  /// Maximum over `axes`; all axes when `axes` is nil. The gradient goes to every position that
  /// attains the maximum.
  public func max(alongAxes axes: [Int]? = nil, keepingDims: Bool = false) -> Tensor {
    let axes = axes ?? Array(0..<rank)
    let x = detached()
    let kept = keptShape(axes)
    let result = reducedValues(axes: axes, keepingDims: keepingDims, kind: .max)
    return Tensor.recorded(result, inputs: [self]) { g in
      let maxima = result.reshapedValues(to: kept)
      let hits = Tensor.binaryKernel(x, maxima) { $0 == $1 ? 1 : 0 }
      return [Tensor.binaryKernel(hits, g.reshapedValues(to: kept), *)]
    }
  }

  /// Whether no element is NaN or infinite: one pass without branches (the largest magnitude's
  /// bit pattern stays below infinity's), which vectorizes, so it runs at memory speed on the
  /// megabytes a gradient push or a stage input carries.
  public var allFinite: Bool {
    withUnsafeBufferPointer { values in
      var largestMagnitude: UInt32 = 0
      for value in values { largestMagnitude = Swift.max(largestMagnitude, value.bitPattern & 0x7FFF_FFFF) }
      return largestMagnitude < Float.infinity.bitPattern
    }
  }

  /// Index of the maximum along the last axis, per row (for accuracy metrics; not differentiable).
  public func argmaxLastAxis() -> [Int] {
    let width = shape.last ?? 1
    let rows = scalarCount / Swift.max(width, 1)
    let p = buffer.pointer
    return (0..<rows).map { row in
      var best = 0
      for j in 1..<Swift.max(width, 1) where p[row * width + j] > p[row * width + best] { best = j }
      return best
    }
  }
}
