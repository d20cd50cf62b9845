import MeshData
import MeshTensor
import Testing

@Suite struct SyntheticDatasetTests {
  @Test func parityLabelsCountTheOnes() throws {
    let dataset = try Datasets.syntheticSequences(count: 200, length: 6, seed: 5)
    #expect(dataset.inputs.shape == [200, 6])
    #expect(dataset.classCount == 2)
    let bits = dataset.inputs.scalars
    #expect(bits.allSatisfy { $0 == 0 || $0 == 1 })
    for row in 0..<200 {
      let ones = bits[(row * 6)..<(row * 6 + 6)].reduce(0, +)
      #expect(dataset.labels.scalars[row] == Float(Int(ones) % 2))
    }
    let odd = dataset.labels.scalars.reduce(0, +)
    #expect(odd > 60 && odd < 140)
    let again = try Datasets.syntheticSequences(count: 200, length: 6, seed: 5)
    #expect(again.inputs == dataset.inputs)
    #expect(try Datasets.syntheticSequences(count: 200, length: 6, seed: 6).inputs != dataset.inputs)
  }

  @Test func reversalTargetsAreTheSequenceBackwards() throws {
    let dataset = try Datasets.syntheticSequences(count: 4, length: 5, task: .reversal, seed: 1)
    #expect(dataset.classCount == nil)
    #expect(dataset.labels.shape == [4, 5])
    for row in 0..<4 {
      let input = Array(dataset.inputs.scalars[(row * 5)..<(row * 5 + 5)])
      #expect(Array(dataset.labels.scalars[(row * 5)..<(row * 5 + 5)]) == input.reversed())
    }
  }

  @Test func regressionTargetsFollowTheReturnedWeights() throws {
    let problem = try Datasets.syntheticRegression(count: 500, features: 3, outputs: 2, noise: 0.05, seed: 9)
    let dataset = problem.dataset
    #expect(dataset.inputs.shape == [500, 3])
    #expect(dataset.labels.shape == [500, 2])
    #expect(problem.weights.shape == [3, 2])
    let x = dataset.inputs.scalars
    let y = dataset.labels.scalars
    let w = problem.weights.scalars
    let b = problem.bias.scalars
    var squaredError: Float = 0
    for row in 0..<500 {
      for output in 0..<2 {
        let clean = b[output] + (0..<3).map { x[row * 3 + $0] * w[$0 * 2 + output] }.reduce(0, +)
        squaredError += (y[row * 2 + output] - clean) * (y[row * 2 + output] - clean)
      }
    }
    let noise = (squaredError / 1000).squareRoot()
    #expect(noise > 0.04 && noise < 0.06)
    let fit = try LinearRegression.leastSquares(x: dataset.inputs, y: dataset.labels)
    for (fitted, truth) in zip(fit.weights.scalars, w) {
      #expect(abs(fitted - truth) < 0.02)
    }
    let again = try Datasets.syntheticRegression(count: 500, features: 3, outputs: 2, noise: 0.05, seed: 9)
    #expect(again.dataset.labels == dataset.labels)
  }

  @Test func invalidSizesAreNamed() throws {
    let error = try #require(throws: DatasetError.self) {
      try Datasets.syntheticSequences(count: 3, length: 0, seed: 0)
    }
    #expect(error.message == "length must be at least 1, got 0")
    #expect(throws: DatasetError.self) {
      try Datasets.syntheticRegression(count: 3, features: 2, noise: -1, seed: 0)
    }
  }
}
