import MeshTensor

extension Dataset {
  /// Splits the examples into a training and a validation part after a seeded shuffle, by
  /// `PortableRandom.heldOutSplit` (the coordinator's rule).
  ///
  /// The validation part holds `round(validationFraction · count)` examples. The same seed gives
  /// the same split on every machine; the two parts are disjoint and together hold every example.
  public func split(validationFraction: Double, seed: UInt64) throws -> (train: Dataset, validation: Dataset) {
    guard validationFraction >= 0, validationFraction <= 1 else {
      throw DatasetError(
        .invalidArgument, "\(name): validationFraction must lie in 0...1, got \(validationFraction)")
    }
    let parts = PortableRandom.heldOutSplit(count: count, validationFraction: validationFraction, seed: seed)
    return (subset(parts.train, name: "\(name)/train"), subset(parts.validation, name: "\(name)/validation"))
  }

  /// The mini-batches of one epoch: every example exactly once, in batches of `size` (the last
  /// one smaller when `size` does not divide `count`, unless `dropRemainder`).
  ///
  /// With a `shuffleSeed` the order is a seeded permutation that differs per `epoch`; without one
  /// the examples keep their order.
  public func batches(
    size: Int, shuffleSeed: UInt64? = nil, epoch: Int = 0, dropRemainder: Bool = false
  ) throws -> Batches {
    guard size >= 1 else {
      throw DatasetError(.invalidArgument, "\(name): batch size must be at least 1, got \(size)")
    }
    let order: [Int]
    if let shuffleSeed {
      order = PortableRandom.permutation(count, seed: PortableRandom.epochSeed(shuffleSeed, epoch: epoch))
    } else {
      order = Array(0..<count)
    }
    let usable = dropRemainder ? count - count % size : count
    return Batches(dataset: self, order: Array(order[..<usable]), size: size)
  }

  /// One mini-batch: `inputs` of shape `[b] + featureShape` and the matching `labels`.
  public struct Batch: Sendable {
    /// The batch's examples.
    public let inputs: Tensor
    /// The batch's labels or targets.
    public let labels: Tensor
    /// The positions of the batch's examples in the dataset.
    public let indices: [Int]
  }

  /// The mini-batches of one epoch, gathered lazily as they are iterated.
  public struct Batches: Sequence, Sendable {
    let dataset: Dataset
    let order: [Int]
    let size: Int

    /// The number of batches in the epoch.
    public var count: Int { (order.count + size - 1) / size }

    public func makeIterator() -> Iterator { Iterator(batches: self, start: 0) }

    /// Gathers the batches one at a time.
    public struct Iterator: IteratorProtocol {
      let batches: Batches
      var start: Int

      public mutating func next() -> Batch? {
        guard start < batches.order.count else { return nil }
        let end = Swift.min(start + batches.size, batches.order.count)
        let indices = Array(batches.order[start..<end])
        start = end
        return Batch(
          inputs: batches.dataset.inputs.rows(indices),
          labels: batches.dataset.labels.rows(indices),
          indices: indices)
      }
    }
  }
}
