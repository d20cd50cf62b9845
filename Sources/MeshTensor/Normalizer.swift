/// An affine rescaling of input features, `(x − offset) / scale`, whose parameters are computed
/// on one set of examples (the training part) and then applied unchanged to others (validation,
/// inference). A feature is one scalar of a flattened example.
public struct Normalizer: Sendable, Equatable {
  /// How the parameters are computed.
  public enum Method: Sendable, Equatable {
    /// Maps each feature's training minimum to 0 and maximum to 1.
    case minMax
    /// Subtracts the training mean and divides by the training standard deviation.
    case standardize
  }

  /// Subtracted from each feature, one value per feature.
  public let offset: [Float]
  /// Then divided into each feature, one value per feature; never zero.
  public let scale: [Float]

  /// Parameters given as they are (recorded with a model); `scale` must hold no zero.
  public init(offset: [Float], scale: [Float]) {
    precondition(offset.count == scale.count, "\(offset.count) offsets for \(scale.count) scales")
    self.offset = offset
    self.scale = scale
  }

  /// Computes parameters from `inputs` (examples along the first axis). With `perFeature` each
  /// feature gets its own statistics; without, one statistic over all scalars (right for pixels
  /// sharing a range). A constant feature gets scale 1, so it maps to 0 rather than to a division
  /// by zero.
  public init(_ method: Method, fittedOn inputs: Tensor, perFeature: Bool = true) {
    let features = inputs.shape.dropFirst().reduce(1, *)
    let groups = perFeature ? features : 1
    var low = [Double](repeating: .infinity, count: groups)
    var high = [Double](repeating: -.infinity, count: groups)
    var sum = [Double](repeating: 0, count: groups)
    var sumOfSquares = [Double](repeating: 0, count: groups)
    var samples = [Double](repeating: 0, count: groups)
    inputs.withUnsafeBufferPointer { values in
      for (index, value) in values.enumerated() {
        let group = perFeature ? index % features : 0
        let x = Double(value)
        low[group] = Swift.min(low[group], x)
        high[group] = Swift.max(high[group], x)
        sum[group] += x
        sumOfSquares[group] += x * x
        samples[group] += 1
      }
    }
    var offsets = [Float](repeating: 0, count: groups)
    var scales = [Float](repeating: 1, count: groups)
    for group in 0..<groups where samples[group] > 0 {
      switch method {
      case .minMax:
        offsets[group] = Float(low[group])
        scales[group] = Float(high[group] - low[group])
      case .standardize:
        let mean = sum[group] / samples[group]
        offsets[group] = Float(mean)
        scales[group] = Float(Swift.max(0, sumOfSquares[group] / samples[group] - mean * mean).squareRoot())
      }
      if !(scales[group] > 0) { scales[group] = 1 }
    }
    self.offset = perFeature ? offsets : Array(repeating: offsets[0], count: features)
    self.scale = perFeature ? scales : Array(repeating: scales[0], count: features)
  }

  /// `inputs` (examples along the first axis, `offset.count` scalars each) rescaled.
  public func apply(to inputs: Tensor) -> Tensor {
    precondition(
      inputs.shape.dropFirst().reduce(1, *) == offset.count,
      "examples of shape \(Array(inputs.shape.dropFirst())) for a normalizer of \(offset.count) features")
    var rescaled = inputs
    let features = offset.count
    rescaled.withUnsafeMutableBufferPointer { values in
      for index in values.indices {
        let feature = index % features
        values[index] = (values[index] - offset[feature]) / scale[feature]
      }
    }
    return rescaled
  }
}
