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
