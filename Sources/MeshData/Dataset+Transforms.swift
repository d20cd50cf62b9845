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

extension Normalizer {
  /// Fits parameters on `dataset`'s inputs (see `init(_:fittedOn:perFeature:)` on a tensor).
  public init(_ method: Method, fittedOn dataset: Dataset, perFeature: Bool = true) {
    self.init(method, fittedOn: dataset.inputs, perFeature: perFeature)
  }

  /// `dataset` with every input feature rescaled; labels are unchanged.
  public func apply(to dataset: Dataset) throws -> Dataset {
    guard dataset.featureCount == offset.count else {
      throw DatasetError(
        .shapeMismatch,
        "\(dataset.name): has \(dataset.featureCount) features per example but the normalizer "
          + "was fitted on \(offset.count)")
    }
    return Dataset(
      unchecked: dataset.name, inputs: apply(to: dataset.inputs), labels: dataset.labels,
      classCount: dataset.classCount)
  }
}
