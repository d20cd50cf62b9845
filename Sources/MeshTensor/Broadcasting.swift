// Shape broadcasting (NumPy rules) and the strided loops shared by element-wise kernels.

extension Tensor {
  /// The NumPy broadcast of two shapes; traps if they are incompatible.
  static func broadcastShape(_ lhs: [Int], _ rhs: [Int]) -> [Int] {
    let rank = Swift.max(lhs.count, rhs.count)
    var result = [Int](repeating: 1, count: rank)
    for axis in 0..<rank {
      let left = axis - (rank - lhs.count) >= 0 ? lhs[axis - (rank - lhs.count)] : 1
      let right = axis - (rank - rhs.count) >= 0 ? rhs[axis - (rank - rhs.count)] : 1
      precondition(
        left == right || left == 1 || right == 1,
        "shapes \(lhs) and \(rhs) do not broadcast")
      result[axis] = left == 1 ? right : left
    }
    return result
  }

  /// Strides for reading a tensor of `shape` as if it had `target` shape (0 on broadcast axes).
  static func broadcastStrides(of shape: [Int], to target: [Int]) -> [Int] {
    let own = strides(of: shape)
    let offset = target.count - shape.count
    return (0..<target.count).map { axis in
      let source = axis - offset
      return source < 0 || shape[source] == 1 ? 0 : own[source]
    }
  }

  /// Visits every row (last axis) of `shape`, passing the row index and two strided offsets
  /// (the first starting at `baseA`).
  @inline(__always)
  static func walkRows(
    shape: [Int], stridesA: [Int], stridesB: [Int], baseA: Int = 0,
    _ body: (_ row: Int, _ offsetA: Int, _ offsetB: Int) -> Void
  ) {
    let rank = shape.count
    if rank <= 1 {
      body(0, baseA, 0)
      return
    }
    let rows = count(of: Array(shape.dropLast()))
    var index = [Int](repeating: 0, count: rank - 1)
    var offsetA = baseA
    var offsetB = 0
    for row in 0..<rows {
      body(row, offsetA, offsetB)
      var axis = rank - 2
      while axis >= 0 {
        index[axis] += 1
        offsetA += stridesA[axis]
        offsetB += stridesB[axis]
        if index[axis] < shape[axis] { break }
        offsetA -= stridesA[axis] * shape[axis]
        offsetB -= stridesB[axis] * shape[axis]
        index[axis] = 0
        axis -= 1
      }
    }
  }

  /// Applies `op` element-wise with broadcasting; no recording.
  @inline(__always)
  static func binaryKernel(_ lhs: Tensor, _ rhs: Tensor, _ op: (Float, Float) -> Float) -> Tensor {
    let a = lhs.buffer.pointer
    let b = rhs.buffer.pointer
    if lhs.shape == rhs.shape {
      let out = Tensor(uninitializedShape: lhs.shape)
      let o = out.buffer.pointer
      for i in 0..<out.scalarCount { o[i] = op(a[i], b[i]) }
      return out
    }
    if rhs.scalarCount == 1 && rhs.rank <= lhs.rank {
      let out = Tensor(uninitializedShape: lhs.shape)
      let o = out.buffer.pointer
      let s = b[0]
      for i in 0..<out.scalarCount { o[i] = op(a[i], s) }
      return out
    }
    if lhs.scalarCount == 1 && lhs.rank <= rhs.rank {
      let out = Tensor(uninitializedShape: rhs.shape)
      let o = out.buffer.pointer
      let s = a[0]
      for i in 0..<out.scalarCount { o[i] = op(s, b[i]) }
      return out
    }
    let shape = broadcastShape(lhs.shape, rhs.shape)
    let out = Tensor(uninitializedShape: shape)
    let o = out.buffer.pointer
    let sa = broadcastStrides(of: lhs.shape, to: shape)
    let sb = broadcastStrides(of: rhs.shape, to: shape)
    let inner = shape.last ?? 1
    let ia = sa.last ?? 0
    let ib = sb.last ?? 0
    walkRows(shape: shape, stridesA: sa, stridesB: sb) { row, offA, offB in
      let dst = o + row * inner
      let pa = a + offA
      let pb = b + offB
      if ia == 1 && ib == 1 {
        for i in 0..<inner { dst[i] = op(pa[i], pb[i]) }
      } else if ia == 1 && ib == 0 {
        let s = pb[0]
        for i in 0..<inner { dst[i] = op(pa[i], s) }
      } else if ia == 0 && ib == 1 {
        let s = pa[0]
        for i in 0..<inner { dst[i] = op(s, pb[i]) }
      } else {
        for i in 0..<inner { dst[i] = op(pa[i * ia], pb[i * ib]) }
      }
    }
    return out
  }

  /// Applies `op` to every scalar; no recording.
  @inline(__always)
  static func unaryKernel(_ x: Tensor, _ op: (Float) -> Float) -> Tensor {
    let out = Tensor(uninitializedShape: x.shape)
    let source = x.buffer.pointer
    let destination = out.buffer.pointer
    for i in 0..<x.scalarCount { destination[i] = op(source[i]) }
    return out
  }

  /// Copies scalars read with `strides` (per output axis) from `base` into a new `shape` tensor.
  static func stridedGather(from source: UnsafeMutablePointer<Float>, base: Int, strides: [Int], shape: [Int]) -> Tensor
  {
    let out = Tensor(uninitializedShape: shape)
    let o = out.buffer.pointer
    let inner = shape.last ?? 1
    let step = strides.last ?? 0
    walkRows(shape: shape, stridesA: strides, stridesB: strides, baseA: base) { row, offset, _ in
      let dst = o + row * inner
      let src = source + offset
      if step == 1 {
        dst.update(from: src, count: inner)
      } else {
        for i in 0..<inner { dst[i] = src[i * step] }
      }
    }
    return out
  }

  /// This tensor's values repeated to `target` shape; no recording.
  func broadcastedValues(to target: [Int]) -> Tensor {
    if shape == target { return detached() }
    _ = Tensor.broadcastShape(shape, target)
    return Tensor.stridedGather(
      from: buffer.pointer, base: 0,
      strides: Tensor.broadcastStrides(of: shape, to: target), shape: target)
  }

  /// Sums a broadcast result back to `target`, the shape it was broadcast from; no recording.
  func summedToShape(_ target: [Int]) -> Tensor {
    if shape == target { return self }
    precondition(target.count <= rank, "cannot sum shape \(shape) to \(target)")
    let offset = rank - target.count
    var axes = Array(0..<offset)
    for axis in 0..<target.count where target[axis] == 1 && shape[axis + offset] != 1 {
      axes.append(axis + offset)
    }
    return reducedValues(axes: axes, keepingDims: true, kind: .sum).reshapedValues(to: target)
  }

  /// Adds `other` (same shape) into this tensor's storage, copying first if it is shared.
  public mutating func accumulate(_ other: Tensor) {
    precondition(shape == other.shape, "accumulating shape \(other.shape) into \(shape)")
    withUnsafeMutableBufferPointer { other.add(into: $0.baseAddress!) }
  }

  /// Adds this tensor's scalars into the `scalarCount` floats at `destination`.
  func add(into destination: UnsafeMutablePointer<Float>) {
    let source = buffer.pointer
    for i in 0..<scalarCount { destination[i] += source[i] }
  }
}
