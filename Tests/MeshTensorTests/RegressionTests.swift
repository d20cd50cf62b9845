import Testing

@testable import MeshTensor

/// x uniform in [-1, 1)^[64, 3], y = x·W + b (+ noise), W = [[1, -2], [0.5, 3], [-1.5, 0.25]], b = [0.3, -0.7].
func regressionData(noise: Float) -> (x: Tensor, y: Tensor, weights: Tensor, bias: Tensor) {
  let x = sample([64, 3], seed: 21)
  let weights = Tensor(shape: [3, 2], scalars: [1, -2, 0.5, 3, -1.5, 0.25])
  let bias = Tensor(shape: [2], scalars: [0.3, -0.7])
  let y = Tensor.matmul(x, weights) + bias + Tensor.randomNormal([64, 2], standardDeviation: noise, seed: 22)
  return (x, y, weights, bias)
}

@Suite("Linear regression")
struct RegressionTests {
  @Test func closedFormAndLeastSquaresRecoverExactWeights() throws {
    let data = regressionData(noise: 0)
    let normal = try LinearRegression.closedForm(x: data.x, y: data.y)
    let qr = try LinearRegression.leastSquares(x: data.x, y: data.y)
    for model in [normal, qr] {
      expectClose(model.weights, data.weights, tolerance: 1e-4)
      expectClose(model.bias, data.bias, tolerance: 1e-4)
    }
    expectClose(normal.predict(data.x), data.y, tolerance: 1e-4)
  }

  @Test func ridgeShrinksWeights() throws {
    let data = regressionData(noise: 0.1)
    let plain = try LinearRegression.closedForm(x: data.x, y: data.y)
    let ridge = try LinearRegression.closedForm(x: data.x, y: data.y, ridge: 20)
    #expect(ridge.weights.squared().sum().scalar < plain.weights.squared().sum().scalar)
  }

  @Test func batchGradientDescentReachesRidgeClosedForm() throws {
    let data = regressionData(noise: 0.1)
    let exact = try LinearRegression.closedForm(x: data.x, y: data.y, ridge: 5)
    let trained = LinearRegression.gradientDescent(
      x: data.x, y: data.y, ridge: 5, mode: .batch,
      learningRate: .constant(0.5), epochs: 400)
    // Tolerance 1e-3 on every weight and bias.
    expectClose(trained.weights, exact.weights, tolerance: 1e-3)
    expectClose(trained.bias, exact.bias, tolerance: 1e-3)
  }

  @Test(arguments: [GradientDescentMode.stochastic, .miniBatch(size: 8)])
  func stochasticGradientDescentReachesClosedForm(_ mode: GradientDescentMode) throws {
    // Noise-free data: every sample agrees with the optimum, so constant-rate SGD converges.
    let data = regressionData(noise: 0)
    let exact = try LinearRegression.closedForm(x: data.x, y: data.y)
    let trained = LinearRegression.gradientDescent(
      x: data.x, y: data.y, mode: mode,
      learningRate: .constant(mode == .stochastic ? 0.1 : 0.3), epochs: 60, seed: 3)
    // Tolerance 1e-2 on every weight and bias.
    expectClose(trained.weights, exact.weights, tolerance: 1e-2)
    expectClose(trained.bias, exact.bias, tolerance: 1e-2)
  }

  @Test func illPosedProblemsThrow() {
    let x = Tensor(shape: [4, 2], scalars: [1, 2, 2, 4, 3, 6, 4, 8])  // second column = 2 × first
    let y = Tensor(shape: [4, 1], scalars: [1, 2, 3, 4])
    #expect(throws: TensorError.self) { try LinearRegression.closedForm(x: x, y: y) }
    #expect(throws: TensorError.self) {
      try LinearRegression.leastSquares(x: x.slice(axis: 0, range: 0..<2), y: y.slice(axis: 0, range: 0..<2))
    }
  }
}
