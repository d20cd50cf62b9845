import MeshTensor

extension Tensor {
  /// The rows (examples along axis 0) at `indices`, in that order.
  func rows(_ indices: [Int]) -> Tensor {
    let rowShape = Array(shape.dropFirst())
    let width = rowShape.reduce(1, *)
    return reshaped(to: [shape[0], width]).gathering(indices: indices, indexShape: [indices.count])
      .reshaped(to: [indices.count] + rowShape)
  }
}

/// Cuts `count` examples into `parts` contiguous ranges whose sizes differ by at most one.
func evenRanges(_ count: Int, parts: Int) -> [Range<Int>] {
  var start = 0
  return (0..<parts).map { part in
    let size = count / parts + (part < count % parts ? 1 : 0)
    defer { start += size }
    return start..<(start + size)
  }
}
