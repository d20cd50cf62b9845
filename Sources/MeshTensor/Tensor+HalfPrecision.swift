import Foundation

/// A two-byte float format a tensor may travel in: half the bytes of float32,
/// each element rounded to the nearest even on the way out and widened back
/// to float32 exactly on the way in. Tensors compute in float32 only.
public enum HalfPrecision: String, Sendable, CaseIterable {
  /// bfloat16: float32's sign, exponent and top 7 fraction bits, so float32's
  /// whole range with 8 bits of precision.
  case bfloat16
  /// IEEE 754 binary16: 11 bits of precision over a range of 2^-24 to 65504,
  /// so a tensor travels scaled by a power of two (`scaleExponent`) that
  /// brings its largest magnitude near the top of that range.
  case float16
}

extension Tensor {
  /// The power of two float16 needs `elements` scaled by: the one that brings
  /// their largest finite magnitude into [2^14, 2^15), so that every element
  /// down to 2^-28 of it keeps float16's 11 bits (smaller ones fewer, and
  /// those under 2^-40 of it become zero). 0 when none is finite and
  /// nonzero. Scaling by a power of two is exact, so the element's only
  /// rounding is float16's.
  public func float16ScaleExponent(elements: Range<Int>) -> Int {
    var largest: Float = 0
    withUnsafeBufferPointer { scalars in
      for scalar in scalars[elements] where scalar.isFinite { largest = Swift.max(largest, abs(scalar)) }
    }
    return largest == 0 ? 0 : 14 - Int(largest.exponent)
  }

  /// The scalars `elements` in `format`, little-endian, 2 bytes each; each
  /// multiplied by 2^`scaleExponent` before it is rounded (float16's scale;
  /// see `float16ScaleExponent`).
  public func littleEndianData(_ format: HalfPrecision, elements: Range<Int>, scaleExponent: Int = 0) -> Data {
    precondition(elements.lowerBound >= 0 && elements.upperBound <= scalarCount, "elements \(elements) of \(shape)")
    let (first, second) = Self.factors(scaleExponent)
    var data = Data(count: elements.count * 2)
    data.withUnsafeMutableBytes { bytes in
      let halves = bytes.bindMemory(to: UInt16.self)
      let scalars = UnsafeBufferPointer(start: buffer.pointer + elements.lowerBound, count: elements.count)
      switch format {
      case .bfloat16:
        for (i, scalar) in scalars.enumerated() { halves[i] = Self.bfloat16(scalar * first * second).littleEndian }
      case .float16:
        for (i, scalar) in scalars.enumerated() {
          halves[i] = Self.float16(scalar * first * second).littleEndian
        }
      }
    }
    return withExtendedLifetime(self) { data }
  }

  /// Decodes `shape`'s scalars from little-endian `format` bytes, 2 per
  /// scalar, each divided by 2^`scaleExponent` (the sender's scale). Throws
  /// when the byte count does not match the shape.
  public init(
    shape: [Int], _ format: HalfPrecision, littleEndianBytes bytes: some ContiguousBytes, scaleExponent: Int = 0
  ) throws {
    let byteCount = bytes.withUnsafeBytes { $0.count }
    guard let count = Tensor.checkedCount(of: shape), count.multipliedReportingOverflow(by: 2) == (byteCount, false)
    else {
      throw TensorError(
        message: "\(format.rawValue) tensor of shape \(shape) does not fit the \(byteCount) bytes given (2 per scalar)")
    }
    let (first, second) = Self.factors(-scaleExponent)
    let buffer = TensorBuffer(uninitializedCount: count)
    bytes.withUnsafeBytes { source in
      func half(_ i: Int) -> UInt16 {
        UInt16(littleEndian: source.loadUnaligned(fromByteOffset: i * 2, as: UInt16.self))
      }
      switch format {
      case .bfloat16:
        for i in 0..<count { buffer.pointer[i] = Float(bitPattern: UInt32(half(i)) << 16) * first * second }
      case .float16:
        for i in 0..<count { buffer.pointer[i] = Self.float(float16: half(i)) * first * second }
      }
    }
    self.init(shape: shape, buffer: buffer)
  }

  /// 2^`exponent` as two float32 factors, each within float32's range for
  /// any exponent `float16ScaleExponent` gives (-113 to 163): multiplying by
  /// one, then the other, is exact for every value float16 can hold whose
  /// unscaled value float32 can (at -113, float16's top, 2^15, is 2^128:
  /// infinity, as float32's largest rounds to when it rounds up).
  private static func factors(_ exponent: Int) -> (Float, Float) {
    let half = exponent / 2
    return (
      Float(sign: .plus, exponent: half, significand: 1), Float(sign: .plus, exponent: exponent - half, significand: 1)
    )
  }

  /// `scalar` as float16 bits, rounded to the nearest even, as `Float16(scalar)`
  /// rounds it but in integer steps the compiler vectorizes (`Float16`'s
  /// conversion is a library call per element on CPUs Swift does not assume
  /// have one): a NaN stays a quiet NaN, 65520 and up become infinity.
  static func float16(_ scalar: Float) -> UInt16 {
    let bits = scalar.bitPattern
    let sign = UInt16(truncatingIfNeeded: bits >> 16) & 0x8000
    let magnitude = bits & 0x7FFF_FFFF
    let half: UInt32
    if magnitude >= 0x4780_0000 {
      // 2^16 and up: infinity, or a NaN.
      half = magnitude > 0x7F80_0000 ? 0x7E00 : 0x7C00
    } else if magnitude < 0x3880_0000 {
      // Under 2^-14, float16's subnormals: adding 0.5 puts the float16's 10 fraction bits at the
      // bottom of the sum's, which the float32 addition rounds to the nearest even.
      half = (Float(bitPattern: magnitude) + 0.5).bitPattern &- Float(0.5).bitPattern
    } else {
      // Rebias the exponent (127 to 15) and round the 13 bits dropped to the nearest even; a
      // carry out of the fraction raises the exponent, up to infinity past 65504.
      half = (magnitude &+ 0xC800_0FFF &+ ((magnitude >> 13) & 1)) >> 13
    }
    return UInt16(truncatingIfNeeded: half) | sign
  }

  /// The float32 value of float16 bits `half` (exact), as `Float(Float16(bitPattern:))`.
  static func float(float16 half: UInt16) -> Float {
    let shifted = UInt32(half & 0x7FFF) << 13
    let exponent = shifted & 0x0F80_0000
    var bits = shifted &+ 0x3800_0000  // the exponent rebiased from 15 to 127
    if exponent == 0x0F80_0000 {
      bits &+= 0x3800_0000  // infinity or NaN: float32's largest exponent
    } else if exponent == 0 {
      // A subnormal (or zero): as a normal float32 of exponent 2^-14 less the implicit bit's 2^-14.
      bits = (Float(bitPattern: bits &+ 0x0080_0000) - Float(bitPattern: 0x3880_0000)).bitPattern
    }
    return Float(bitPattern: bits | UInt32(half & 0x8000) << 16)
  }

  /// `scalar` as bfloat16 bits, rounded to the nearest even (a NaN stays a
  /// quiet NaN of the same sign; a value past bfloat16's largest becomes
  /// infinity, as float32 rounding does).
  static func bfloat16(_ scalar: Float) -> UInt16 {
    let bits = scalar.bitPattern
    if scalar.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
    return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16)
  }
}
