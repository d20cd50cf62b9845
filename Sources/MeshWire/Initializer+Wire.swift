import MeshProto
import MeshTensor

extension Pipemesh_V1_Initializer {
  /// The wire form of a model's initializer, drawn with `seed`: the same bits
  /// as `initializer.makeTensor(_:seed:)`.
  public init(_ initializer: Initializer, seed: UInt64) {
    self.init()
    self.seed = seed
    switch initializer {
    case .zeros: break
    case .ones: kind = .constant(1)
    case .constant(let value): kind = .constant(value)
    case .normal(let standardDeviation): kind = .normal(.with { $0.stddev = standardDeviation })
    case .uniform(let limit):
      kind = .uniform(
        .with {
          $0.minimum = -limit
          $0.maximum = limit
        })
    case .glorotUniform(let fanIn, let fanOut):
      kind = .glorotUniform(
        .with {
          $0.fanIn = Int64(fanIn)
          $0.fanOut = Int64(fanOut)
        })
    case .heNormal(let fanIn): kind = .heNormal(.with { $0.fanIn = Int64(fanIn) })
    }
  }

  /// Draws a tensor of `shape`, from element `elementOffset` of the draw on
  /// (see `VariableDefinition.initializer_offset`); a `WireError` for
  /// parameters that cannot work. The same initializer and seed give the
  /// same bits everywhere.
  public func makeTensor(_ shape: [Int], elementOffset: Int = 0) throws -> Tensor {
    let tensor = try draw(shape, elementOffset)
    // Parameters at the edge of Float's range can still draw infinities.
    guard tensor.allFinite else {
      throw WireError("initializer parameters draw values beyond Float's range; use smaller ones")
    }
    return tensor
  }

  private func draw(_ shape: [Int], _ offset: Int) throws -> Tensor {
    switch kind {
    case .constant(let value):
      guard value.isFinite else { throw WireError("constant initializer must be finite") }
      return .filled(shape, with: value)
    case .normal(let normal):
      guard normal.stddev >= 0, normal.stddev.isFinite, normal.mean.isFinite else {
        throw WireError("normal initializer needs a finite mean and stddev >= 0")
      }
      return .randomNormal(
        shape, mean: normal.mean, standardDeviation: normal.stddev, seed: seed, elementOffset: offset)
    case .uniform(let uniform):
      guard uniform.minimum <= uniform.maximum, uniform.minimum.isFinite, uniform.maximum.isFinite else {
        throw WireError("uniform initializer needs finite minimum <= maximum")
      }
      return .randomUniform(
        shape, lowerBound: uniform.minimum, upperBound: uniform.maximum, seed: seed, elementOffset: offset)
    case .glorotUniform(let glorot):
      guard glorot.fanIn > 0, glorot.fanOut > 0, glorot.fanIn <= Int32.max, glorot.fanOut <= Int32.max else {
        throw WireError("glorot_uniform needs fan_in and fan_out from 1 to 2^31-1")
      }
      return .glorotUniform(
        shape, fanIn: Int(glorot.fanIn), fanOut: Int(glorot.fanOut), seed: seed, elementOffset: offset)
    case .heNormal(let he):
      guard he.fanIn > 0, he.fanIn <= Int32.max else {
        throw WireError("he_normal needs fan_in from 1 to 2^31-1")
      }
      return .heNormal(shape, fanIn: Int(he.fanIn), seed: seed, elementOffset: offset)
    case nil:
      return .zeros(shape)
    }
  }
}
