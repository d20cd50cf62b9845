import MeshTensor

/// A toy task over binary sequences, for examples and tests of sequence models.
public enum SequenceTask: Sendable, Equatable {
  /// Classify whether a sequence holds an odd number of ones (2 classes: 0 even, 1 odd).
  case parity
  /// Predict the sequence reversed (regression targets `[N, length]`).
  case reversal
}

/// A synthetic linear regression problem together with the parameters that generated it.
public struct SyntheticRegression: Sendable {
  /// Inputs `[N, features]` from N(0, 1); targets `[N, outputs]` = inputs · weights + bias + noise.
  public let dataset: Dataset
  /// The true weights, `[features, outputs]`.
  public let weights: Tensor
  /// The true bias, `[outputs]`.
  public let bias: Tensor
}

extension Datasets {
  /// `count` random 0/1 sequences of `length` labelled for `task`. The same seed gives the same
  /// dataset on every machine.
  public static func syntheticSequences(
    count: Int, length: Int, task: SequenceTask = .parity, seed: UInt64
  ) throws -> Dataset {
    try requirePositive(["count": count, "length": length])
    let stream = PortableRandom.derivedSeed(seed, "sequences")
    let bits = (0..<(count * length)).map { index in
      Float(PortableRandom.bits(seed: stream, counter: UInt64(index)) >> 63)
    }
    let inputs = Tensor(shape: [count, length], scalars: bits)
    let rows = (0..<count).map { bits[($0 * length)..<(($0 + 1) * length)] }
    switch task {
    case .parity:
      let labels = rows.map { row in Float(Int(row.reduce(0, +)) % 2) }
      return try Dataset(
        name: "parity", inputs: inputs, labels: Tensor(shape: [count], scalars: labels), classCount: 2)
    case .reversal:
      let targets = rows.flatMap { $0.reversed() }
      return try Dataset(
        name: "reversal", inputs: inputs, labels: Tensor(shape: [count, length], scalars: targets),
        classCount: nil)
    }
  }

  /// `count` examples of a random linear map from `features` to `outputs` values plus Gaussian
  /// noise of standard deviation `noise`. The same seed gives the same problem on every machine
  /// (products are summed in a fixed order, not by BLAS).
  public static func syntheticRegression(
    count: Int, features: Int, outputs: Int = 1, noise: Float = 0.1, seed: UInt64
  ) throws -> SyntheticRegression {
    try requirePositive(["count": count, "features": features, "outputs": outputs])
    guard noise >= 0, noise.isFinite else {
      throw DatasetError(.invalidArgument, "noise must be a finite value >= 0, got \(noise)")
    }
    let inputs = Tensor.randomNormal([count, features], seed: PortableRandom.derivedSeed(seed, "inputs"))
    let weights = Tensor.randomNormal([features, outputs], seed: PortableRandom.derivedSeed(seed, "weights"))
    let bias = Tensor.randomNormal([outputs], seed: PortableRandom.derivedSeed(seed, "bias"))
    let errors = Tensor.randomNormal(
      [count, outputs], standardDeviation: noise, seed: PortableRandom.derivedSeed(seed, "noise"))
    let x = inputs.scalars
    let w = weights.scalars
    let b = bias.scalars
    let e = errors.scalars
    var targets = [Float](repeating: 0, count: count * outputs)
    for row in 0..<count {
      for output in 0..<outputs {
        var sum = b[output]
        for feature in 0..<features {
          sum += x[row * features + feature] * w[feature * outputs + output]
        }
        targets[row * outputs + output] = sum + e[row * outputs + output]
      }
    }
    let dataset = try Dataset(
      name: "regression", inputs: inputs, labels: Tensor(shape: [count, outputs], scalars: targets),
      classCount: nil)
    return SyntheticRegression(dataset: dataset, weights: weights, bias: bias)
  }

  /// Throws `invalidArgument` naming the first argument below 1.
  private static func requirePositive(_ arguments: KeyValuePairs<String, Int>) throws {
    for (name, value) in arguments where value < 1 {
      throw DatasetError(.invalidArgument, "\(name) must be at least 1, got \(value)")
    }
  }
}
