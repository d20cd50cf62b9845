import Testing

@testable import MeshTensor

/// Largest absolute difference between two same-shaped tensors.
func maxAbsDifference(_ a: Tensor, _ b: Tensor) -> Float {
  precondition(a.shape == b.shape, "shapes \(a.shape) and \(b.shape) differ")
  return zip(a.scalars, b.scalars).reduce(0) { Swift.max($0, abs($1.0 - $1.1)) }
}

/// Expects `a` and `b` to have the same shape and scalars within `tolerance`.
func expectClose(_ a: Tensor, _ b: Tensor, tolerance: Float, sourceLocation: SourceLocation = #_sourceLocation) {
  #expect(a.shape == b.shape, sourceLocation: sourceLocation)
  guard a.shape == b.shape else { return }
  #expect(
    maxAbsDifference(a, b) <= tolerance, "max |a − b| = \(maxAbsDifference(a, b))", sourceLocation: sourceLocation)
}

/// Seeded values in [-1, 1) whose magnitudes are at least `margin` (away from kinks at 0).
func sample(_ shape: [Int], seed: UInt64, margin: Float = 0) -> Tensor {
  let raw = Tensor.randomUniform(shape, lowerBound: -1, upperBound: 1, seed: seed).scalars
  return Tensor(shape: shape, scalars: raw.map { $0 >= 0 ? margin + $0 * (1 - margin) : -margin + $0 * (1 - margin) })
}

/// Seeded values in [low, high).
func positive(_ shape: [Int], seed: UInt64, low: Float = 0.5, high: Float = 2) -> Tensor {
  Tensor.randomUniform(shape, lowerBound: low, upperBound: high, seed: seed)
}

/// Distinct values 0.1 apart in a seeded order (no ties, so max and max-pooling are smooth
/// under a 0.01 perturbation).
func distinct(_ shape: [Int], seed: UInt64) -> Tensor {
  let count = shape.reduce(1, *)
  let keys = Tensor.randomUniform([count], seed: seed).scalars
  let order = (0..<count).sorted { keys[$0] < keys[$1] }
  var values = [Float](repeating: 0, count: count)
  for (rank, index) in order.enumerated() { values[index] = Float(rank) * 0.1 - Float(count) * 0.05 }
  return Tensor(shape: shape, scalars: values)
}

/// A function of tensors to check against finite differences.
struct GradientCase: Sendable, CustomTestStringConvertible {
  let name: String
  let inputs: [Tensor]
  let function: @Sendable ([Tensor]) -> Tensor

  init(_ name: String, _ inputs: [Tensor], _ function: @escaping @Sendable ([Tensor]) -> Tensor) {
    self.name = name
    self.inputs = inputs
    self.function = function
  }

  var testDescription: String { name }
}

/// Compares tape gradients with central differences of L = Σ f(x) ⊙ R (R a fixed seeded
/// tensor, the sum taken in Float64). Step ε = 1e-2; a scalar passes when
/// |numeric − analytic| ≤ 2e-3 + 2e-2·|numeric|.
func checkGradients(
  _ gradientCase: GradientCase, epsilon: Float = 1e-2, sourceLocation: SourceLocation = #_sourceLocation
) {
  let probe = gradientCase.function(gradientCase.inputs)
  let weights = Tensor.randomNormal(probe.shape, seed: 99).scalars
  func objective(_ inputs: [Tensor]) -> Double {
    let output = gradientCase.function(inputs)
    return zip(output.scalars, weights).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
  }
  let (_, analytic) = Autodiff.valueWithGradient(at: gradientCase.inputs) { tracked in
    (gradientCase.function(tracked) * Tensor(shape: probe.shape, scalars: weights)).sum()
  }
  for (inputIndex, input) in gradientCase.inputs.enumerated() {
    let analyticScalars = analytic[inputIndex].scalars
    #expect(analytic[inputIndex].shape == input.shape, sourceLocation: sourceLocation)
    for element in 0..<input.scalarCount {
      var inputs = gradientCase.inputs
      inputs[inputIndex].withUnsafeMutableBufferPointer { $0[element] += epsilon }
      let plus = objective(inputs)
      inputs[inputIndex].withUnsafeMutableBufferPointer { $0[element] -= 2 * epsilon }
      let minus = objective(inputs)
      let numeric = Float((plus - minus) / Double(2 * epsilon))
      let error = abs(numeric - analyticScalars[element])
      #expect(
        error <= 2e-3 + 2e-2 * abs(numeric),
        "\(gradientCase.name): input \(inputIndex) element \(element): numeric \(numeric), analytic \(analyticScalars[element])",
        sourceLocation: sourceLocation)
    }
  }
}
