import Testing

@testable import MeshTensor

/// One finite-difference case per differentiable operation.
let operationCases: [GradientCase] = [
  GradientCase("add", [sample([2, 3], seed: 1), sample([2, 3], seed: 2)]) { $0[0] + $0[1] },
  GradientCase("add broadcast [2,3]+[3]", [sample([2, 3], seed: 1), sample([3], seed: 2)]) { $0[0] + $0[1] },
  GradientCase("sub broadcast [2,1,3]-[4,1]", [sample([2, 1, 3], seed: 3), sample([4, 1], seed: 4)]) { $0[0] - $0[1] },
  GradientCase("mul broadcast [3,1]*[1,4]", [sample([3, 1], seed: 5), sample([1, 4], seed: 6)]) { $0[0] * $0[1] },
  GradientCase("div", [sample([2, 3], seed: 7), positive([2, 3], seed: 8)]) { $0[0] / $0[1] },
  GradientCase("div broadcast by scalar tensor", [sample([2, 3], seed: 7), positive([], seed: 8)]) { $0[0] / $0[1] },
  GradientCase("neg", [sample([5], seed: 9)]) { -$0[0] },
  GradientCase("scalar ops", [sample([4], seed: 10)]) { 2 - ($0[0] * 3 + 1) / 4 },
  GradientCase("exp", [sample([2, 3], seed: 11)]) { $0[0].exp() },
  GradientCase("log", [positive([2, 3], seed: 12)]) { $0[0].log() },
  GradientCase("sqrt", [positive([2, 3], seed: 13)]) { $0[0].sqrt() },
  GradientCase("pow tensor", [positive([2, 3], seed: 14), sample([2, 3], seed: 15)]) { $0[0].raised(to: $0[1]) },
  GradientCase("pow scalar", [positive([2, 3], seed: 16)]) { $0[0].raised(to: 2.5) },
  GradientCase("squared", [sample([2, 3], seed: 16)]) { $0[0].squared() },
  GradientCase("tanh", [sample([2, 3], seed: 17)]) { $0[0].tanh() },
  GradientCase("sigmoid", [sample([2, 3], seed: 18)]) { $0[0].sigmoid() },
  GradientCase("relu", [sample([2, 4], seed: 19, margin: 0.05)]) { $0[0].relu() },
  GradientCase("gelu", [sample([2, 4], seed: 20)]) { ($0[0] * 3).gelu() },
  GradientCase("softmax", [sample([2, 5], seed: 21)]) { ($0[0] * 3).softmax() },
  GradientCase("log-softmax", [sample([2, 5], seed: 22)]) { ($0[0] * 3).logSoftmax() },
  GradientCase("sum all", [sample([2, 3], seed: 23)]) { $0[0].sum() },
  GradientCase("sum axes [0,2]", [sample([2, 3, 4], seed: 24)]) { $0[0].sum(alongAxes: [0, 2]) },
  GradientCase("mean axis -1 keepdims", [sample([2, 3], seed: 25)]) { $0[0].mean(alongAxes: [-1], keepingDims: true) },
  GradientCase("max axis 1", [distinct([3, 4], seed: 26)]) { $0[0].max(alongAxes: [1]) },
  GradientCase("reshape", [sample([2, 6], seed: 27)]) { $0[0].reshaped(to: [3, -1]) },
  GradientCase("permute", [sample([2, 3, 4], seed: 28)]) { $0[0].permuted([2, 0, 1]) },
  GradientCase("transpose", [sample([3, 4], seed: 29)]) { $0[0].transposed() },
  GradientCase("slice", [sample([4, 5], seed: 30)]) { $0[0].slice(lowerBounds: [1, 2], sizes: [2, 3]) },
  GradientCase("concat axis 1", [sample([2, 3], seed: 31), sample([2, 2], seed: 32)]) {
    Tensor.concatenate([$0[0], $0[1]], alongAxis: 1)
  },
  GradientCase("split and rejoin batch", [sample([5, 2], seed: 33)]) { inputs in
    let parts = inputs[0].splitBatch(intoChunksOf: 2)
    return Tensor.concatenateBatch([parts[2], parts[0] * 2, parts[1]])
  },
  GradientCase("gather", [sample([4, 3], seed: 34)]) { $0[0].gathering(indices: [2, 0, 2], indexShape: [3]) },
  GradientCase("matmul", [sample([3, 4], seed: 35), sample([4, 2], seed: 36)]) { Tensor.matmul($0[0], $0[1]) },
  GradientCase("matmul Aᵀ", [sample([4, 3], seed: 37), sample([4, 2], seed: 38)]) {
    Tensor.matmul($0[0], $0[1], transposeA: true)
  },
  GradientCase("matmul Bᵀ", [sample([3, 4], seed: 39), sample([2, 4], seed: 40)]) {
    Tensor.matmul($0[0], $0[1], transposeB: true)
  },
  GradientCase("matmul Aᵀ Bᵀ", [sample([4, 3], seed: 41), sample([2, 4], seed: 42)]) {
    Tensor.matmul($0[0], $0[1], transposeA: true, transposeB: true)
  },
  GradientCase("matmul batched", [sample([2, 3, 4], seed: 43), sample([2, 4, 2], seed: 44)]) {
    Tensor.matmul($0[0], $0[1])
  },
  GradientCase("matmul batched × shared", [sample([2, 3, 4], seed: 45), sample([4, 2], seed: 46)]) {
    Tensor.matmul($0[0], $0[1])
  },
  GradientCase("matmul batched Aᵀ × shared Bᵀ", [sample([2, 4, 3], seed: 47), sample([2, 4], seed: 48)]) {
    Tensor.matmul($0[0], $0[1], transposeA: true, transposeB: true)
  },
  GradientCase("conv2d stride 1 padding 1", [sample([2, 2, 4, 4], seed: 49), sample([3, 2, 3, 3], seed: 50)]) {
    Tensor.conv2d($0[0], filter: $0[1], stride: 1, padding: 1)
  },
  GradientCase("conv2d stride 2", [sample([1, 2, 5, 5], seed: 51), sample([2, 2, 2, 2], seed: 52)]) {
    Tensor.conv2d($0[0], filter: $0[1], stride: 2, padding: 0)
  },
  // With ReLU, finite differences cross its kinks: OperationTests compares that with the steps apart.
  GradientCase(
    "conv2d with bias", [sample([2, 2, 4, 4], seed: 49), sample([3, 2, 3, 3], seed: 50), sample([3], seed: 63)]
  ) {
    Tensor.conv2d($0[0], filter: $0[1], bias: $0[2], stride: 1, padding: 1)
  },
  GradientCase("max pool", [distinct([1, 2, 4, 4], seed: 53)]) { $0[0].maxPool2d(size: 2, stride: 2) },
  // Eleven outputs a row: eight at a time, then three one by one.
  GradientCase("max pool 3×3, stride 1", [distinct([2, 2, 5, 6], seed: 66)]) { $0[0].maxPool2d(size: 3, stride: 1) },
  GradientCase("max pool, rows of 11 windows", [distinct([1, 2, 4, 22], seed: 64)]) {
    $0[0].maxPool2d(size: 2, stride: 2)
  },
  GradientCase("relu over 16 and 5 more", [sample([3, 7], seed: 65, margin: 0.05)]) { $0[0].relu() },
  GradientCase("average pool overlapping", [sample([1, 2, 4, 4], seed: 54)]) { $0[0].avgPool2d(size: 3, stride: 1) },
  GradientCase("dropout", [sample([4, 4], seed: 55)]) { $0[0].dropout(rate: 0.5, seed: 7) },
  GradientCase("layer norm", [sample([3, 4], seed: 56), positive([4], seed: 57), sample([4], seed: 58)]) {
    $0[0].layerNormalized(gamma: $0[1], beta: $0[2])
  },
  GradientCase("masked causal", [sample([2, 3, 3], seed: 59)]) {
    $0[0].masked(where: Tensor.causalMask(size: 3), with: -5)
  },
  GradientCase("softmax cross-entropy", [sample([3, 4], seed: 60)]) {
    Loss.softmaxCrossEntropy(logits: $0[0], labels: Tensor(shape: [3], scalars: [1, 3, 0]))
  },
  GradientCase("mean squared error", [sample([3, 2], seed: 61), sample([3, 2], seed: 62)]) {
    Loss.meanSquaredError(predicted: $0[0], expected: $0[1])
  },
  GradientCase("l2 penalty", [sample([2, 2], seed: 63), sample([3], seed: 64)]) {
    Loss.l2Penalty($0, coefficient: 0.3)
  },
]

@Suite("Finite-difference gradient checks")
struct GradientCheckTests {
  @Test("operation gradient matches central differences", arguments: operationCases)
  func operationGradient(_ gradientCase: GradientCase) {
    checkGradients(gradientCase)
  }
}
