import Foundation

/// A counter-based pseudo-random generator that gives the same bits on every machine: value `i`
/// of stream `seed` is SplitMix64's finaliser applied to `seed + (i + 1) · γ`. Normals use
/// Box–Muller with logarithm and sine/cosine written here from IEEE-exact operations (+, −, ×, ÷,
/// √), so no platform math library is involved.
public enum PortableRandom {
  static let gamma: UInt64 = 0x9E37_79B9_7F4A_7C15

  /// SplitMix64's output function.
  @inline(__always)
  static func mix(_ value: UInt64) -> UInt64 {
    var z = value
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// The `counter`-th 64-bit value of stream `seed`.
  @inline(__always)
  public static func bits(seed: UInt64, counter: UInt64) -> UInt64 {
    mix(seed &+ (counter &+ 1) &* gamma)
  }

  /// A Float uniformly distributed in [0, 1), from the top 24 bits.
  @inline(__always)
  public static func unitFloat(seed: UInt64, counter: UInt64) -> Float {
    Float(bits(seed: seed, counter: counter) >> 40) * 0x1p-24
  }

  /// The `counter`-th standard normal of stream `seed`: the cosine (even counters) or sine (odd
  /// counters) branch of the Box–Muller pair `counter / 2`.
  public static func normal(seed: UInt64, counter: UInt64) -> Float {
    let (first, second) = normalPair(seed: seed, pair: counter / 2)
    return counter % 2 == 0 ? first : second
  }

  /// Standard normals 2·`pair` and 2·`pair` + 1 of stream `seed`, from uniforms 2·`pair` and
  /// 2·`pair` + 1.
  static func normalPair(seed: UInt64, pair: UInt64) -> (Float, Float) {
    // u1 in (0, 1] so the logarithm is finite; u2 in [0, 1).
    let u1 = Double((bits(seed: seed, counter: 2 * pair) >> 11) + 1) * 0x1p-53
    let u2 = Double(bits(seed: seed, counter: 2 * pair + 1) >> 11) * 0x1p-53
    let radius = (-2 * portableLog(u1)).squareRoot()
    let (sine, cosine) = portableSinCosOfTurn(u2)
    return (Float(radius * cosine), Float(radius * sine))
  }

  /// A seeded permutation of `0..<count` (Fisher–Yates), the same on every machine: draw k
  /// (k = 0, 1, … for positions count − 1 down to 1) is value k of stream `seed`, bounded by
  /// the high word of its 128-bit product with the position's range.
  public static func permutation(_ count: Int, seed: UInt64) -> [Int] {
    var order = Array(0..<count)
    for (draw, index) in stride(from: count - 1, to: 0, by: -1).enumerated() {
      let value = bits(seed: seed, counter: UInt64(draw))
      order.swapAt(index, Int(value.multipliedFullWidth(by: UInt64(index + 1)).high))
    }
    return order
  }

  /// The seed of epoch `epoch`'s example order (epochs counted from 0) in a run seeded with
  /// `seed`.
  public static func epochSeed(_ seed: UInt64, epoch: Int) -> UInt64 {
    derivedSeed(seed, "epoch \(epoch)")
  }

  /// Examples `0..<count` split in two: after `permutation(count, seed:)`, the last
  /// `round(validationFraction · count)` positions hold the validation examples and the others
  /// the training examples, each in permuted order. `validationFraction` must be in 0...1.
  public static func heldOutSplit(count: Int, validationFraction: Double, seed: UInt64) -> (
    train: [Int], validation: [Int]
  ) {
    precondition((0...1).contains(validationFraction), "validation fraction \(validationFraction) outside 0...1")
    let order = permutation(count, seed: seed)
    let trainCount = count - Int((validationFraction * Double(count)).rounded())
    return (Array(order[..<trainCount]), Array(order[trainCount...]))
  }

  /// Examples `0..<count` split for fold `fold` of `folds`-fold cross-validation: after
  /// `permutation(count, seed:)`, the positions are cut into `folds` runs of near-equal length
  /// (the first `count % folds` one longer); run `fold` holds the validation examples and the
  /// others, in order, the training examples. Each example is held out by exactly one fold.
  public static func foldSplit(count: Int, folds: Int, fold: Int, seed: UInt64) -> (
    train: [Int], validation: [Int]
  ) {
    precondition(folds >= 2 && (0..<folds).contains(fold), "fold \(fold) of \(folds)")
    let order = permutation(count, seed: seed)
    func start(_ index: Int) -> Int { index * (count / folds) + Swift.min(index, count % folds) }
    let held = start(fold)..<start(fold + 1)
    return (Array(order[..<held.lowerBound] + order[held.upperBound...]), Array(order[held]))
  }

  /// A stable 64-bit seed for `name` under `seed` (FNV-1a of the UTF-8 bytes, then mixed).
  public static func derivedSeed(_ seed: UInt64, _ name: String) -> UInt64 {
    mix(seed ^ fnv1a64(name.utf8))
  }

  /// Natural logarithm of a positive, normal `x` from its binary exponent and an atanh series.
  static func portableLog(_ x: Double) -> Double {
    precondition(x > 0 && x.isNormal, "portableLog of \(x)")
    var exponent = Int(x.exponent)
    var mantissa = x.significand  // in [1, 2)
    if mantissa > 1.4142135623730951 {
      mantissa /= 2
      exponent += 1
    }
    let s = (mantissa - 1) / (mantissa + 1)  // |s| <= 0.1716
    let s2 = s * s
    var term = s
    var sum = 0.0
    var k = 1.0
    while k < 40 {
      sum += term / k
      term *= s2
      k += 2
    }
    return Double(exponent) * 0.6931471805599453 + 2 * sum
  }

  /// (sin, cos) of the angle 2π·`turn` for `turn` in [0, 1), from Taylor series on a quarter turn.
  static func portableSinCosOfTurn(_ turn: Double) -> (Double, Double) {
    let quarters = turn * 4
    let quadrant = Int(quarters)
    let angle = (quarters - Double(quadrant)) * 1.5707963267948966  // in [0, π/2)
    let a2 = angle * angle
    var sine = 0.0
    var cosine = 0.0
    var sinTerm = angle
    var cosTerm = 1.0
    var n = 1.0
    while n < 24 {
      sine += sinTerm
      cosine += cosTerm
      sinTerm *= -a2 / ((n + 1) * (n + 2))
      cosTerm *= -a2 / (n * (n + 1))
      n += 2
    }
    switch quadrant & 3 {
    case 0: return (sine, cosine)
    case 1: return (cosine, -sine)
    case 2: return (-sine, -cosine)
    default: return (-cosine, sine)
    }
  }
}

/// FNV-1a, 64-bit: a hash every machine computes alike (seeds, the ps's placement of variables,
/// comparing initial values).
public func fnv1a64(_ bytes: some Sequence<UInt8>) -> UInt64 {
  var hash: UInt64 = 0xCBF2_9CE4_8422_2325
  for byte in bytes {
    hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01B3
  }
  return hash
}

/// FNV-1a, 64-bit, of `data`'s bytes.
public func fnv1a64(_ data: Data) -> UInt64 {
  data.withUnsafeBytes { fnv1a64($0) }
}
