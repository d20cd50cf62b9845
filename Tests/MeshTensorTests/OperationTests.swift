import Foundation
import Testing

@testable import MeshTensor

/// Reference matrix product in Float64 over explicit loops.
func naiveMatmul(_ a: [Float], _ b: [Float], m: Int, n: Int, k: Int, transposeA: Bool, transposeB: Bool) -> [Float] {
  var c = [Float](repeating: 0, count: m * n)
  for i in 0..<m {
    for j in 0..<n {
      var total = 0.0
      for p in 0..<k {
        let x = transposeA ? a[p * m + i] : a[i * k + p]
        let y = transposeB ? b[j * k + p] : b[p * n + j]
        total += Double(x) * Double(y)
      }
      c[i * n + j] = Float(total)
    }
  }
  return c
}

@Suite("Operations against references")
struct OperationTests {
  /// Five rows (sgemm) and one row (a matrix-vector product), each way of transposing.
  @Test(arguments: [(false, false), (true, false), (false, true), (true, true)], [5, 1])
  func matmulMatchesNaiveProduct(_ flags: (Bool, Bool), rows m: Int) {
    let (n, k) = (3, 4)
    let a = sample(flags.0 ? [k, m] : [m, k], seed: 1)
    let b = sample(flags.1 ? [n, k] : [k, n], seed: 2)
    let product = Tensor.matmul(a, b, transposeA: flags.0, transposeB: flags.1)
    let expected = naiveMatmul(a.scalars, b.scalars, m: m, n: n, k: k, transposeA: flags.0, transposeB: flags.1)
    expectClose(product, Tensor(shape: [m, n], scalars: expected), tolerance: 1e-5)
  }

  @Test func batchedMatmulMatchesPerBatchProducts() {
    let a = sample([2, 3, 4], seed: 3)
    let b = sample([2, 4, 2], seed: 4)
    let shared = sample([4, 2], seed: 5)
    let batched = Tensor.matmul(a, b)
    let broadcast = Tensor.matmul(a, shared)
    for index in 0..<2 {
      let ai = a.slice(axis: 0, range: index..<(index + 1)).reshaped(to: [3, 4])
      expectClose(
        batched.slice(axis: 0, range: index..<(index + 1)).reshaped(to: [3, 2]),
        Tensor.matmul(ai, b.slice(axis: 0, range: index..<(index + 1)).reshaped(to: [4, 2])), tolerance: 1e-6)
      expectClose(
        broadcast.slice(axis: 0, range: index..<(index + 1)).reshaped(to: [3, 2]),
        Tensor.matmul(ai, shared), tolerance: 1e-6)
    }
  }

  @Test func broadcastingFollowsNumPyRules() {
    let column = Tensor(shape: [2, 1], scalars: [10, 20])
    let row = Tensor(shape: [3], scalars: [1, 2, 3])
    #expect((column + row).shape == [2, 3])
    #expect((column + row).scalars == [11, 12, 13, 21, 22, 23])
    #expect((row * Tensor(2)).scalars == [2, 4, 6])
    #expect((Tensor(shape: [2, 1, 3], repeating: 1) - Tensor(shape: [4, 1], repeating: 1)).shape == [2, 4, 3])
  }

  @Test func elementwiseFunctionsMatchLibm() {
    let x = Tensor(shape: [3], scalars: [-1, 0.5, 2])
    expectClose(x.exp(), Tensor(shape: [3], scalars: x.scalars.map { Foundation.exp($0) }), tolerance: 1e-6)
    expectClose(x.tanh(), Tensor(shape: [3], scalars: x.scalars.map { Foundation.tanh($0) }), tolerance: 1e-6)
    expectClose(
      x.sigmoid(), Tensor(shape: [3], scalars: x.scalars.map { 1 / (1 + Foundation.exp(-$0)) }), tolerance: 1e-6)
    #expect(x.relu().scalars == [0, 0.5, 2])
    // GELU (tanh approximation) reference values: gelu(1) = 0.841192, gelu(-1) = -0.158808.
    expectClose(
      Tensor(shape: [2], scalars: [1, -1]).gelu(), Tensor(shape: [2], scalars: [0.841192, -0.158808]), tolerance: 1e-5)
    expectClose(Tensor(shape: [2], scalars: [4, 9]).sqrt(), Tensor(shape: [2], scalars: [2, 3]), tolerance: 0)
    expectClose(Tensor(shape: [1], scalars: [2]).raised(to: 3), Tensor(shape: [1], scalars: [8]), tolerance: 1e-6)
  }

  @Test func softmaxIsStableForLargeLogits() {
    let logits = Tensor(shape: [2, 3], scalars: [1000, 1001, 1002, -1000, 0, 1000])
    let probabilities = logits.softmax()
    #expect(probabilities.scalars.allSatisfy { $0.isFinite })
    expectClose(probabilities.sum(alongAxes: [1]), Tensor.ones([2]), tolerance: 1e-6)
    expectClose(
      probabilities.slice(axis: 0, range: 0..<1),
      Tensor(shape: [1, 3], scalars: [0.09003057, 0.24472847, 0.66524096]), tolerance: 1e-6)
    let logProbabilities = logits.logSoftmax()
    #expect(logProbabilities.scalars.allSatisfy { $0.isFinite })
    expectClose(
      logProbabilities.slice(axis: 0, range: 1..<2), Tensor(shape: [1, 3], scalars: [-2000, -1000, 0]), tolerance: 1e-3)
  }

  @Test func reductionsOverAxes() {
    let x = Tensor(shape: [2, 3], scalars: [1, 5, 3, 4, 2, 6])
    #expect(x.sum().scalar == 21)
    #expect(x.sum(alongAxes: [0]).scalars == [5, 7, 9])
    #expect(x.mean(alongAxes: [1], keepingDims: true).shape == [2, 1])
    #expect(x.mean(alongAxes: [1]).scalars == [3, 4])
    #expect(x.max(alongAxes: [1]).scalars == [5, 6])
    #expect(x.max().scalar == 6)
    #expect(x.argmaxLastAxis() == [1, 2])
  }

  /// Every kind of non-finite value is found wherever it sits; every finite one passes,
  /// the largest and subnormals of either sign included.
  @Test func allFiniteFindsEveryNonFiniteValue() {
    let finite: [Float] = [
      0, -0, 1, -1, .greatestFiniteMagnitude, -.greatestFiniteMagnitude,
      .leastNonzeroMagnitude, -.leastNonzeroMagnitude, Float.leastNormalMagnitude.nextDown,
    ]
    #expect(Tensor(shape: [finite.count], scalars: finite).allFinite)
    #expect(Tensor.zeros([0]).allFinite)
    let large = 100_003
    for bad: Float in [
      .infinity, -.infinity, .nan, -.nan, .signalingNaN, Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0xFFFF_FFFF),
    ] {
      for position in [0, 1, large / 2, large - 1] {
        var values = [Float](repeating: 0.5, count: large)
        values[position] = bad
        #expect(!Tensor(shape: [large], scalars: values).allFinite, "\(bad) at \(position)")
      }
    }
  }

  @Test func shapeOperations() {
    let x = Tensor(shape: [2, 3], scalars: [0, 1, 2, 3, 4, 5])
    #expect(x.transposed().scalars == [0, 3, 1, 4, 2, 5])
    #expect(x.reshaped(to: [3, -1]).shape == [3, 2])
    #expect(x.slice(lowerBounds: [0, 1], sizes: [2, 2]).scalars == [1, 2, 4, 5])
    #expect(Tensor.concatenate([x, x], alongAxis: 1).scalars == [0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5])
    let cube = Tensor(shape: [2, 2, 2], scalars: (0..<8).map(Float.init))
    #expect(cube.permuted([2, 0, 1]).scalars == [0, 2, 4, 6, 1, 3, 5, 7])
    #expect(
      Tensor(shape: [3, 2], scalars: [0, 1, 2, 3, 4, 5]).gathering(indices: [2, 0], indexShape: [2]).scalars == [
        4, 5, 0, 1,
      ])
  }

  @Test func conv2dMatchesDirectConvolution() {
    let input = sample([2, 3, 5, 4], seed: 6)
    let filter = sample([2, 3, 3, 3], seed: 7)
    let (stride, padding) = (2, 1)
    let output = Tensor.conv2d(input, filter: filter, stride: stride, padding: padding)
    #expect(output.shape == [2, 2, 3, 2])
    let x = input.scalars
    let w = filter.scalars
    var expected: [Float] = []
    for n in 0..<2 {
      for o in 0..<2 {
        for oy in 0..<3 {
          for ox in 0..<2 {
            var total: Float = 0
            for c in 0..<3 {
              for ky in 0..<3 {
                for kx in 0..<3 {
                  let iy = oy * stride - padding + ky
                  let ix = ox * stride - padding + kx
                  guard iy >= 0, iy < 5, ix >= 0, ix < 4 else { continue }
                  total += x[((n * 3 + c) * 5 + iy) * 4 + ix] * w[((o * 3 + c) * 3 + ky) * 3 + kx]
                }
              }
            }
            expected.append(total)
          }
        }
      }
    }
    expectClose(output, Tensor(shape: [2, 2, 3, 2], scalars: expected), tolerance: 1e-5)
  }

  @Test func pooling() {
    let x = Tensor(shape: [1, 1, 2, 4], scalars: [1, 2, 5, 6, 3, 4, 8, 7])
    #expect(x.maxPool2d(size: 2, stride: 2).scalars == [4, 8])
    #expect(x.avgPool2d(size: 2, stride: 2).scalars == [2.5, 6.5])
  }

  /// The 2×2 pooling path reads eight windows at a time; ties must go to the first scalar of
  /// the window, as in the one-window path, and the gradient with them.
  @Test func maxPoolingTakesTheFirstOfEqualScalars() {
    // Rows of 20 columns: ten windows a row, eight at once and two alone. Every window holds
    // its maximum twice (top-right and bottom-left), so only the visiting order picks one.
    let width = 20
    let scalars: [Float] = (0..<(2 * width)).map { index in
      let (row, column) = (index / width, index % width)
      let window = Float(column / 2)
      return (row == 0) == (column % 2 == 1) ? window : window - 1
    }
    let x = Tensor(shape: [1, 1, 2, width], scalars: scalars)
    let (pooled, gradients) = Autodiff.valueWithGradient(at: [x]) { $0[0].maxPool2d(size: 2, stride: 2).sum() }
    #expect(pooled.scalar == (0..<10).reduce(0) { $0 + Float($1) })
    let routed = gradients[0].scalars
    #expect((0..<10).allSatisfy { routed[2 * $0 + 1] == 1 }, "each window's top-right scalar, its first maximum")
    #expect(routed.reduce(0, +) == 10)
  }

  /// A NaN anywhere in a window is the window's maximum, on the 8-wide path and off it.
  @Test func maxPoolingPassesANaNOn() {
    for (width, column) in [(20, 3), (20, 18), (6, 1)] {
      var scalars = [Float](repeating: 1, count: 2 * width)
      scalars[width + column] = .nan
      let pooled = Tensor(shape: [1, 1, 2, width], scalars: scalars).maxPool2d(size: 2, stride: 2).scalars
      #expect(
        pooled.enumerated().allSatisfy { $0.offset == column / 2 ? $0.element.isNaN : $0.element == 1 }, "\(pooled)")
    }
  }

  /// Bias and ReLU applied inside the convolution equal the same steps done one after another,
  /// in value and in every gradient.
  @Test func convolutionWithBiasAndReLUEqualsTheStepsApart() {
    let input = sample([3, 2, 9, 9], seed: 71)
    let filter = sample([4, 2, 3, 3], seed: 72)
    let bias = sample([4, 1, 1], seed: 73)
    let weights = sample([3, 4, 9, 9], seed: 74)
    let (fused, fusedGradients) = Autodiff.valueWithGradient(at: [input, filter, bias]) { v in
      (Tensor.conv2d(v[0], filter: v[1], bias: v[2], rectified: true, stride: 1, padding: 1) * weights).sum()
    }
    let (apart, apartGradients) = Autodiff.valueWithGradient(at: [input, filter, bias]) { v in
      ((Tensor.conv2d(v[0], filter: v[1], stride: 1, padding: 1) + v[2]).relu() * weights).sum()
    }
    #expect(abs(fused.scalar - apart.scalar) <= 1e-4 * Swift.max(1, abs(apart.scalar)))
    for (fusedGradient, apartGradient) in zip(fusedGradients, apartGradients) {
      expectClose(fusedGradient, apartGradient, tolerance: 1e-4)
    }
    #expect(fusedGradients[2].shape == [4, 1, 1])
  }

  @Test func maskingAndDropout() {
    #expect(Tensor.causalMask(size: 3).scalars == [0, 1, 1, 0, 0, 1, 0, 0, 0])
    let scores = Tensor.ones([2, 2]).masked(where: Tensor.causalMask(size: 2), with: -9)
    #expect(scores.scalars == [1, -9, 1, 1])
    let ones = Tensor.ones([10_000])
    let dropped = ones.dropout(rate: 0.25, seed: 1)
    #expect(dropped == ones.dropout(rate: 0.25, seed: 1))
    #expect(dropped.scalars.allSatisfy { $0 == 0 || abs($0 - 4.0 / 3.0) < 1e-6 })
    let kept = Float(dropped.scalars.filter { $0 != 0 }.count) / 10_000
    #expect(abs(kept - 0.75) < 0.02)
  }

  @Test func layerNormalisationGivesZeroMeanUnitVariance() {
    let x = sample([3, 8], seed: 8) * 5 + 2
    let y = x.layerNormalized(gamma: Tensor.ones([8]), beta: Tensor.zeros([8]))
    expectClose(y.mean(alongAxes: [1]), Tensor.zeros([3]), tolerance: 1e-5)
    expectClose(y.squared().mean(alongAxes: [1]), Tensor.ones([3]), tolerance: 1e-3)
  }
}

@Suite("Convolution chunking")
struct ConvolutionChunkTests {
  /// 100×100 images with a 3×3 kernel make the backward pass split a batch of 3 into chunks of
  /// 2 and 1; results must equal per-image convolutions.
  @Test func chunkedBatchEqualsPerImageConvolution() {
    let input = sample([3, 1, 100, 100], seed: 31)
    let filter = sample([2, 1, 3, 3], seed: 32)
    let weights = sample([3, 2, 100, 100], seed: 33)
    let (batched, batchGradients) = Autodiff.valueWithGradient(at: [input, filter]) { v in
      (Tensor.conv2d(v[0], filter: v[1], stride: 1, padding: 1) * weights).sum()
    }
    var total: Float = 0
    var filterGradient = Tensor.zeros([2, 1, 3, 3])
    for n in 0..<3 {
      let image = input.slice(axis: 0, range: n..<(n + 1))
      let w = weights.slice(axis: 0, range: n..<(n + 1))
      let (value, gradients) = Autodiff.valueWithGradient(at: [image, filter]) { v in
        (Tensor.conv2d(v[0], filter: v[1], stride: 1, padding: 1) * w).sum()
      }
      total += value.scalar
      filterGradient = filterGradient + gradients[1]
      expectClose(batchGradients[0].slice(axis: 0, range: n..<(n + 1)), gradients[0], tolerance: 1e-5)
    }
    #expect(abs(batched.scalar - total) <= 1e-3 * Swift.max(1, abs(total)))
    expectClose(batchGradients[1], filterGradient, tolerance: 1e-2)
  }
}
