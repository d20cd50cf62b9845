import MeshTensor

extension Dataset {
  /// The same examples with each one viewed as `featureShape` (for example `[64]` as `[1, 8, 8]`
  /// for a convolutional model). The number of scalars per example must stay the same.
  public func reshaped(featureShape newShape: [Int]) throws -> Dataset {
    guard newShape.allSatisfy({ $0 >= 1 }) else {
      throw DatasetError(.invalidArgument, "\(name): feature shape \(newShape) has an extent below 1")
    }
    let newCount = newShape.reduce(1, *)
    guard newCount == featureCount else {
      throw DatasetError(
        .shapeMismatch,
        "\(name): cannot view features of shape \(featureShape) (\(featureCount) values) as "
          + "\(newShape) (\(newCount) values)")
    }
    return Dataset(
      unchecked: name, inputs: inputs.reshaped(to: [count] + newShape), labels: labels,
      classCount: classCount)
  }

  /// Checks that one example has exactly `expected` shape, as a model's input layer requires.
  /// The error names both shapes and, when only the layout differs, the reshape that fixes it.
  public func validate(featureShape expected: [Int]) throws {
    guard featureShape != expected else { return }
    var message = "\(name): examples have shape \(featureShape) but the model expects \(expected)"
    if expected.reduce(1, *) == featureCount {
      message += "; the sizes agree, so reshaped(featureShape: \(expected)) fixes this"
    }
    throw DatasetError(.shapeMismatch, message)
  }

  /// Checks that the labels suit a model with `outputs` classes (classification) or `outputs`
  /// targets per example (regression).
  public func validate(outputs expected: Int) throws {
    if let classCount {
      guard classCount == expected else {
        throw DatasetError(
          .shapeMismatch, "\(name): has \(classCount) classes but the model outputs \(expected)")
      }
    } else {
      guard labels.shape[1] == expected else {
        throw DatasetError(
          .shapeMismatch,
          "\(name): has \(labels.shape[1]) targets per example but the model outputs \(expected)")
      }
    }
  }
}

/// An affine rescaling of input features, `(x − offset) / scale`, whose parameters are computed
/// on one dataset (the training part) and then applied unchanged to others (validation, test).
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

  /// Computes parameters from `dataset`'s inputs. With `perFeature` each feature gets its own
  /// statistics; without, one statistic over all scalars (right for pixels sharing a range).
  /// A constant feature gets scale 1, so it maps to 0 rather than to a division by zero.
  public init(_ method: Method, fittedOn dataset: Dataset, perFeature: Bool = true) {
    let features = dataset.featureCount
    let groups = perFeature ? features : 1
    var low = [Double](repeating: .infinity, count: groups)
    var high = [Double](repeating: -.infinity, count: groups)
    var sum = [Double](repeating: 0, count: groups)
    var sumOfSquares = [Double](repeating: 0, count: groups)
    var samples = [Double](repeating: 0, count: groups)
    dataset.inputs.withUnsafeBufferPointer { values in
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

  /// `dataset` with every input feature rescaled; labels are unchanged.
  public func apply(to dataset: Dataset) throws -> Dataset {
    guard dataset.featureCount == offset.count else {
      throw DatasetError(
        .shapeMismatch,
        "\(dataset.name): has \(dataset.featureCount) features per example but the normalizer "
          + "was fitted on \(offset.count)")
    }
    var inputs = dataset.inputs
    let features = offset.count
    inputs.withUnsafeMutableBufferPointer { values in
      for index in values.indices {
        let feature = index % features
        values[index] = (values[index] - offset[feature]) / scale[feature]
      }
    }
    return Dataset(
      unchecked: dataset.name, inputs: inputs, labels: dataset.labels,
      classCount: dataset.classCount)
  }
}
