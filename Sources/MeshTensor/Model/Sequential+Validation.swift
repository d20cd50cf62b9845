// Checks of caller-supplied batches, so a service can reject bad input with a clear message
// instead of reaching a precondition inside an operation.

extension Sequential {
  /// Throws unless `input` is a batch for the first layer of `range` (all layers by default):
  /// shape [batch] + that layer's per-sample input shape, finite values, and, when that layer
  /// is an embedding, integer ids inside its vocabulary.
  public func validate(input: Tensor, layers range: Range<Int>? = nil) throws(TensorError) {
    let range = range ?? layers.indices
    guard range.lowerBound >= 0, range.upperBound <= layers.count else {
      throw TensorError(message: "layer range \(range) is outside the model's layers 0..<\(layers.count)")
    }
    let expected = activationShapes[range.lowerBound]
    guard input.rank == expected.count + 1, Array(input.shape.dropFirst()) == expected else {
      throw TensorError(message: "input shape \(input.shape) must be [batch] + \(expected)")
    }
    guard input.shape[0] > 0 else {
      throw TensorError(message: "the batch is empty: input shape \(input.shape) needs at least one example")
    }
    guard input.allFinite else {
      throw TensorError(message: "input contains NaN or infinite values")
    }
    if range.lowerBound < layers.count, let embedding = layers[range.lowerBound] as? Embedding,
      let bad = input.withUnsafeBufferPointer({ $0.first(where: { !isIndex($0, below: embedding.vocabularySize) }) })
    {
      throw TensorError(
        message: "token id \(bad) is not an integer in 0..<\(embedding.vocabularySize) (layer \(embedding.name))")
    }
  }

  /// Throws unless `target` fits the model's loss for a batch of `batchSize`: integer class
  /// labels in range for softmax cross-entropy, or the output's shape for mean squared error.
  public func validate(target: Tensor, batchSize: Int) throws(TensorError) {
    let output = activationShapes[activationShapes.count - 1]
    switch spec.loss {
    case .softmaxCrossEntropy:
      let expected = [batchSize] + output.dropLast()
      guard target.shape == expected else {
        throw TensorError(message: "labels shape \(target.shape) must be \(expected)")
      }
      let classes = output.last ?? 1
      if let bad = target.withUnsafeBufferPointer({ $0.first(where: { !isIndex($0, below: classes) }) }) {
        throw TensorError(message: "label \(bad) is not an integer class in 0..<\(classes)")
      }
    case .meanSquaredError:
      guard target.shape == [batchSize] + output else {
        throw TensorError(message: "target shape \(target.shape) must be \([batchSize] + output)")
      }
      guard target.allFinite else {
        throw TensorError(message: "targets hold NaN or infinity")
      }
    }
  }
}

/// Whether `value` is a whole number in 0..<count. Compared as floats: NaN, infinities and values
/// beyond `Int`'s range are refused rather than trapping in a conversion.
private func isIndex(_ value: Float, below count: Int) -> Bool {
  value >= 0 && value < Float(count) && value == value.rounded()
}
