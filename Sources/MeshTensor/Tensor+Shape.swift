// Differentiable shape operations: reshape, permute / transpose, slice, concatenate, split.

extension Tensor {
  /// The same scalars under a new shape (shares storage); no recording.
  func reshapedValues(to newShape: [Int]) -> Tensor {
    Tensor(shape: newShape, buffer: buffer)
  }

  /// The same scalars under `newShape`; one extent may be -1 (inferred).
  public func reshaped(to newShape: [Int]) -> Tensor {
    var resolved = newShape
    if let inferred = newShape.firstIndex(of: -1) {
      let known = newShape.enumerated().filter { $0.offset != inferred }.reduce(1) { $0 * $1.element }
      precondition(known > 0 && scalarCount % known == 0, "cannot reshape \(shape) to \(newShape)")
      resolved[inferred] = scalarCount / known
    }
    precondition(Tensor.count(of: resolved) == scalarCount, "cannot reshape \(shape) to \(newShape)")
    let inputShape = shape
    return Tensor.recorded(reshapedValues(to: resolved), inputs: [self]) { g in
      [g.reshapedValues(to: inputShape)]
    }
  }

  /// Axes reordered: result axis i is input axis `permutation[i]`.
  public func permuted(_ permutation: [Int]) -> Tensor {
    precondition(permutation.sorted() == Array(0..<rank), "\(permutation) is not a permutation of rank \(rank)")
    let own = Tensor.strides(of: shape)
    let outShape = permutation.map { shape[$0] }
    let result = Tensor.stridedGather(
      from: buffer.pointer, base: 0,
      strides: permutation.map { own[$0] }, shape: outShape)
    var inverse = [Int](repeating: 0, count: rank)
    for (index, axis) in permutation.enumerated() { inverse[axis] = index }
    return Tensor.recorded(result, inputs: [self]) { [inverse] g in [g.permuted(inverse)] }
  }

  /// The last two axes swapped (a matrix transpose for rank 2).
  public func transposed() -> Tensor {
    precondition(rank >= 2, "transposed() needs rank >= 2, shape is \(shape)")
    var permutation = Array(0..<rank)
    permutation.swapAt(rank - 1, rank - 2)
    return permuted(permutation)
  }

  /// The block starting at `lowerBounds` with extents `sizes`.
  public func slice(lowerBounds: [Int], sizes: [Int]) -> Tensor {
    precondition(lowerBounds.count == rank && sizes.count == rank, "slice bounds must have rank \(rank)")
    for axis in 0..<rank {
      precondition(
        lowerBounds[axis] >= 0 && sizes[axis] >= 0 && lowerBounds[axis] + sizes[axis] <= shape[axis],
        "slice \(lowerBounds)+\(sizes) out of bounds for \(shape)")
    }
    let own = Tensor.strides(of: shape)
    let base = zip(lowerBounds, own).reduce(0) { $0 + $1.0 * $1.1 }
    let result = Tensor.stridedGather(from: buffer.pointer, base: base, strides: own, shape: sizes)
    let inputShape = shape
    return Tensor.recorded(result, inputs: [self]) { g in
      let padded = Tensor.zeros(inputShape)
      let destination = padded.buffer.pointer
      let source = g.buffer.pointer
      let inner = sizes.last ?? 1
      Tensor.walkRows(shape: sizes, stridesA: own, stridesB: own, baseA: base) { row, offset, _ in
        (destination + offset).update(from: source + row * inner, count: inner)
      }
      return [padded]
    }
  }

  /// The sub-range `range` of `axis`, all of the other axes.
  public func slice(axis: Int, range: Range<Int>) -> Tensor {
    let axis = Tensor.normalize(axis: axis, rank: rank)
    var lower = [Int](repeating: 0, count: rank)
    var sizes = shape
    lower[axis] = range.lowerBound
    sizes[axis] = range.count
    return slice(lowerBounds: lower, sizes: sizes)
  }

  /// Joins `tensors` along `axis`; all other extents must agree.
  public static func concatenate(_ tensors: [Tensor], alongAxis axis: Int = 0) -> Tensor {
    precondition(!tensors.isEmpty, "concatenating no tensors")
    let first = tensors[0]
    let axis = normalize(axis: axis, rank: first.rank)
    var outShape = first.shape
    outShape[axis] = 0
    for tensor in tensors {
      var expected = first.shape
      expected[axis] = tensor.shape[axis]
      precondition(tensor.shape == expected, "cannot concatenate \(tensor.shape) with \(first.shape) on axis \(axis)")
      outShape[axis] += tensor.shape[axis]
    }
    let out = Tensor(uninitializedShape: outShape)
    let outer = count(of: Array(outShape[..<axis]))
    let inner = count(of: Array(outShape[(axis + 1)...]))
    let rowLength = outShape[axis] * inner
    var start = 0
    for tensor in tensors {
      let chunk = tensor.shape[axis] * inner
      for o in 0..<outer {
        (out.buffer.pointer + o * rowLength + start).update(from: tensor.buffer.pointer + o * chunk, count: chunk)
      }
      start += chunk
    }
    let extents = tensors.map { $0.shape[axis] }
    return recorded(out, inputs: tensors) { g in
      var offset = 0
      return extents.map { extent in
        defer { offset += extent }
        return g.slice(axis: axis, range: offset..<(offset + extent))
      }
    }
  }

  /// Splits the batch axis (axis 0) into consecutive micro-batches of at most `size` rows.
  public func splitBatch(intoChunksOf size: Int) -> [Tensor] {
    precondition(size > 0 && rank > 0, "splitBatch needs a positive chunk size and rank >= 1")
    return stride(from: 0, to: shape[0], by: size).map { start in
      slice(axis: 0, range: start..<Swift.min(start + size, shape[0]))
    }
  }

  /// Joins micro-batches along the batch axis (axis 0).
  public static func concatenateBatch(_ parts: [Tensor]) -> Tensor {
    concatenate(parts, alongAxis: 0)
  }
}
