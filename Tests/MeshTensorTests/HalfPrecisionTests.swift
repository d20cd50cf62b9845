import Foundation
import Testing

@testable import MeshTensor

/// Tensors in two-byte formats, as activations and gradients travel between
/// stages when a job asks: each element rounded to the nearest even.
@Suite struct HalfPrecisionTests {
  /// `scalars` through `format` and back.
  static func roundTrip(_ scalars: [Float], _ format: HalfPrecision) throws -> [Float] {
    let tensor = Tensor(shape: [scalars.count], scalars: scalars)
    let data = tensor.littleEndianData(format, elements: 0..<scalars.count)
    #expect(data.count == scalars.count * 2)
    return try Tensor(shape: [scalars.count], format, littleEndianBytes: data).scalars
  }

  /// The nearest value with `bits` bits of precision (ties to an even last
  /// bit), computed in Double apart from the code under test: for normal
  /// values within the format's range.
  static func nearest(_ value: Float, bits: Int) -> Float {
    let magnitude = Double(abs(value))
    let ulp = pow(2, Double(Int(floor(log2(magnitude)))) - Double(bits - 1))
    let below = floor(magnitude / ulp)
    let remainder = magnitude / ulp - below
    let units =
      remainder > 0.5 || (remainder == 0.5 && below.truncatingRemainder(dividingBy: 2) == 1) ? below + 1 : below
    return Float(units * ulp) * (value < 0 ? -1 : 1)
  }

  @Test(arguments: [(HalfPrecision.bfloat16, 8), (.float16, 11)])
  func eachElementRoundsToTheNearestEven(format: HalfPrecision, bits: Int) throws {
    // Exact values pass unchanged; halfway cases go to the even neighbour.
    let ulpAtOne = Float(pow(2, Double(1 - bits)))
    let exact: [Float] = [0, -0.0, 1, -2.5, 0.15625, 3, -1024]
    #expect(try Self.roundTrip(exact, format) == exact)
    #expect(try Self.roundTrip([1 + ulpAtOne / 2], format) == [1], "a tie rounds down to the even 1")
    #expect(try Self.roundTrip([1 + 3 * ulpAtOne / 2], format) == [1 + 2 * ulpAtOne], "a tie rounds up to even")
    #expect(try Self.roundTrip([1 + ulpAtOne * 0.5001], format) == [1 + ulpAtOne])

    var random = SystemRandomNumberGenerator()
    let values = (0..<2000).map { _ in Float.random(in: -100...100, using: &random) }.filter { abs($0) > 1e-3 }
    let back = try Self.roundTrip(values, format)
    let wrong = zip(values, back).filter { Self.nearest($0.0, bits: bits) != $0.1 }
    #expect(wrong.isEmpty, "\(format): (value, decoded) \(wrong.prefix(3))")
  }

  @Test func specialValuesKeepTheirMeaning() throws {
    for format in HalfPrecision.allCases {
      let back = try Self.roundTrip([.nan, .infinity, -.infinity], format)
      #expect(back[0].isNaN && back[1] == .infinity && back[2] == -.infinity, "\(format): \(back)")
    }
    // bfloat16 keeps float32's range: its largest finite value rounds up to infinity, the
    // smallest subnormal stays (it is a multiple of bfloat16's smallest).
    #expect(try Self.roundTrip([.greatestFiniteMagnitude], .bfloat16) == [.infinity])
    #expect(try Self.roundTrip([1e38], .bfloat16) == [Self.nearest(1e38, bits: 8)])
    #expect(try Self.roundTrip([Float(bitPattern: 0x0001_0000)], .bfloat16) == [Float(bitPattern: 0x0001_0000)])
    // float16 does not: past 65504 is infinity, under its smallest subnormal half is zero.
    #expect(try Self.roundTrip([65504, 70000, 1e-8, 6e-8], .float16) == [65504, .infinity, 0, Float(Float16(6e-8))])
    // The last value under the carry to infinity, and ties between float16's subnormals.
    #expect(try Self.roundTrip([65519.996, 65520, 0x1p-25, 0x1.8p-24], .float16) == [65504, .infinity, 0, 0x1p-23])
  }

  /// float16 travels scaled by a power of two that brings the largest
  /// magnitude into [2^14, 2^15): small gradients keep its 11 bits, and
  /// tensors past its range keep their size, where unscaled they would
  /// round to zero or infinity.
  @Test func float16ScalesATensorIntoItsRange() throws {
    func roundTrip(_ scalars: [Float]) throws -> (exponent: Int, back: [Float]) {
      let tensor = Tensor(shape: [scalars.count], scalars: scalars)
      let exponent = tensor.float16ScaleExponent(elements: 0..<scalars.count)
      let data = tensor.littleEndianData(.float16, elements: 0..<scalars.count, scaleExponent: exponent)
      return (
        exponent, try Tensor(shape: [scalars.count], .float16, littleEndianBytes: data, scaleExponent: exponent).scalars
      )
    }
    for (scalars, exponent) in [
      ([Float(3e-7), -1e-6, 2.5e-9], 34), ([1e30, -3e29, 7e26], -85), ([40_000, 1, -0.5], -1),
      ([.leastNonzeroMagnitude], 163), ([1e38], -112),
    ] {
      let (found, back) = try roundTrip(scalars)
      #expect(found == exponent, "\(scalars)")
      for (value, decoded) in zip(scalars, back) {
        #expect(abs(decoded - value) <= abs(value) / 2048, "\(value) came back as \(decoded)")
      }
    }
    // Infinities and NaNs neither set the scale nor lose their meaning; an all-zero tensor is not scaled.
    let (exponent, back) = try roundTrip([.infinity, .nan, 2e-5, 0])
    #expect(exponent == 30 && back[0] == .infinity && back[1].isNaN && back[3] == 0)
    #expect(abs(back[2] - 2e-5) <= 2e-5 / 2048)
    let zeros = try roundTrip([0, -0.0])
    #expect(zeros.exponent == 0 && zeros.back == [0, 0])
    // A value 2^-40 of the largest is under float16's smallest after scaling: zero.
    #expect(try roundTrip([1, 0x1p-40]).back == [1, 0])
  }

  /// The vectorizable float16 conversions agree with Swift's `Float16` on
  /// every float16 and on float32 values of every magnitude.
  @Test func float16BitsAgreeWithSwiftsFloat16() {
    var disagreements: [String] = []
    for bits in 0...UInt16.max {
      let reference = Float(Float16(bitPattern: bits))
      let decoded = Tensor.float(float16: bits)
      if reference.isNaN ? !decoded.isNaN : decoded.bitPattern != reference.bitPattern {
        disagreements.append("decode \(bits): \(decoded) not \(reference)")
      }
      if !reference.isNaN, Tensor.float16(reference) != bits { disagreements.append("encode \(reference)") }
    }
    var random = SystemRandomNumberGenerator()
    for _ in 0..<200_000 {
      // Every float32 exponent, from subnormals to infinity and NaN.
      let scalar = Float(bitPattern: random.next())
      let reference = Float16(scalar)
      let encoded = Tensor.float16(scalar)
      if reference.isNaN ? !Float16(bitPattern: encoded).isNaN : encoded != reference.bitPattern {
        disagreements.append("encode \(scalar): \(encoded) not \(reference.bitPattern)")
      }
    }
    #expect(disagreements.isEmpty, "\(disagreements.count): \(disagreements.prefix(5))")
  }

  @Test func bytesThatDoNotFitTheShapeAreRefused() throws {
    for format in HalfPrecision.allCases {
      #expect(throws: TensorError.self) { try Tensor(shape: [3], format, littleEndianBytes: Data(count: 5)) }
      #expect(throws: TensorError.self) { try Tensor(shape: [3], format, littleEndianBytes: Data(count: 12)) }
      #expect(throws: TensorError.self) { try Tensor(shape: [-1], format, littleEndianBytes: Data()) }
    }
  }

  @Test func aRangeOfElementsIsEncodedAlone() throws {
    let tensor = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
    let middle = tensor.littleEndianData(.bfloat16, elements: 2..<5)
    #expect(try Tensor(shape: [3], .bfloat16, littleEndianBytes: middle).scalars == [3, 4, 5])
    // Little-endian bfloat16 of 3.0 (0x4040).
    #expect(Array(middle.prefix(2)) == [0x40, 0x40])
  }
}
