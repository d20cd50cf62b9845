// Seeded initialisers: the same seed gives bit-identical tensors on every machine.

extension Tensor {
  /// Scalars drawn from N(mean, standardDeviation²). With `elementOffset`, the scalars a
  /// larger tensor drawn with the same seed holds from that element on (a part of a
  /// partitioned variable starts exactly as the whole would).
  public static func randomNormal(
    _ shape: [Int], mean: Float = 0, standardDeviation: Float = 1, seed: UInt64, elementOffset: Int = 0
  ) -> Tensor {
    let out = Tensor(uninitializedShape: shape)
    let p = out.buffer.pointer - elementOffset
    let end = elementOffset + out.scalarCount
    var element = elementOffset
    // Scalars come in pairs; an odd offset starts with the second of a pair.
    while element < end {
      let (first, second) = PortableRandom.normalPair(seed: seed, pair: UInt64(element / 2))
      if element % 2 == 0 {
        p[element] = mean + standardDeviation * first
        element += 1
      }
      if element < end {
        p[element] = mean + standardDeviation * second
        element += 1
      }
    }
    return out
  }

  /// Scalars drawn uniformly from [lowerBound, upperBound), from element `elementOffset` of
  /// the draw on (see `randomNormal`).
  public static func randomUniform(
    _ shape: [Int], lowerBound: Float = 0, upperBound: Float = 1, seed: UInt64, elementOffset: Int = 0
  ) -> Tensor {
    let out = Tensor(uninitializedShape: shape)
    let p = out.buffer.pointer
    let width = upperBound - lowerBound
    for i in 0..<out.scalarCount {
      p[i] = lowerBound + width * PortableRandom.unitFloat(seed: seed, counter: UInt64(elementOffset + i))
    }
    return out
  }

  /// Glorot (Xavier) uniform: U(−l, l) with l = √(6 / (fanIn + fanOut)).
  public static func glorotUniform(
    _ shape: [Int], fanIn: Int, fanOut: Int, seed: UInt64, elementOffset: Int = 0
  ) -> Tensor {
    let limit = (6 / Float(fanIn + fanOut)).squareRoot()
    return randomUniform(shape, lowerBound: -limit, upperBound: limit, seed: seed, elementOffset: elementOffset)
  }

  /// He (Kaiming) normal: N(0, 2 / fanIn), suited to ReLU layers.
  public static func heNormal(_ shape: [Int], fanIn: Int, seed: UInt64, elementOffset: Int = 0) -> Tensor {
    randomNormal(shape, standardDeviation: (2 / Float(fanIn)).squareRoot(), seed: seed, elementOffset: elementOffset)
  }
}

/// How a variable's initial value is drawn; all variants are deterministic given a seed.
public enum Initializer: Codable, Sendable, Equatable {
  case zeros
  case ones
  case constant(Float)
  case normal(standardDeviation: Float)
  case uniform(limit: Float)
  case glorotUniform(fanIn: Int, fanOut: Int)
  case heNormal(fanIn: Int)

  /// A tensor of `shape` drawn with `seed`, from element `elementOffset` of the draw on.
  public func makeTensor(_ shape: [Int], seed: UInt64, elementOffset: Int = 0) -> Tensor {
    switch self {
    case .zeros: return .zeros(shape)
    case .ones: return .ones(shape)
    case .constant(let value): return .filled(shape, with: value)
    case .normal(let std): return .randomNormal(shape, standardDeviation: std, seed: seed, elementOffset: elementOffset)
    case .uniform(let limit):
      return .randomUniform(shape, lowerBound: -limit, upperBound: limit, seed: seed, elementOffset: elementOffset)
    case .glorotUniform(let fanIn, let fanOut):
      return .glorotUniform(shape, fanIn: fanIn, fanOut: fanOut, seed: seed, elementOffset: elementOffset)
    case .heNormal(let fanIn): return .heNormal(shape, fanIn: fanIn, seed: seed, elementOffset: elementOffset)
    }
  }
}
