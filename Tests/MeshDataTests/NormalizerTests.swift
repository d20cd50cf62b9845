import MeshData
import MeshTensor
import Testing

@Suite struct NormalizerTests {
  static func dataset(_ rows: [[Float]], name: String = "d") throws -> Dataset {
    try Dataset(
      name: name, inputs: Tensor(shape: [rows.count, rows[0].count], scalars: rows.flatMap { $0 }),
      labels: Tensor(shape: [rows.count, 1], repeating: 0), classCount: nil)
  }

  @Test func minMaxUsesTrainingStatisticsOnValidationData() throws {
    let train = try NormalizerTests.dataset([[0, 10, 5], [4, 30, 5], [2, 20, 5]])
    let validation = try NormalizerTests.dataset([[8, 0, 6]])
    let normalizer = Normalizer(.minMax, fittedOn: train)
    #expect(normalizer.offset == [0, 10, 5])
    #expect(normalizer.scale == [4, 20, 1])
    #expect(try normalizer.apply(to: train).inputs.scalars == [0, 0, 0, 1, 1, 0, 0.5, 0.5, 0])
    #expect(try normalizer.apply(to: validation).inputs.scalars == [2, -0.5, 1])
  }

  @Test func globalMinMaxSharesOneRange() throws {
    let train = try NormalizerTests.dataset([[0, 16], [8, 4]])
    let normalizer = Normalizer(.minMax, fittedOn: train, perFeature: false)
    #expect(normalizer.scale == [16, 16])
    #expect(try normalizer.apply(to: train).inputs.scalars == [0, 1, 0.5, 0.25])
  }

  @Test func standardizationGivesZeroMeanAndUnitVariance() throws {
    let train = try NormalizerTests.dataset([[1, 7], [3, 7], [5, 7], [7, 7]])
    let normalizer = Normalizer(.standardize, fittedOn: train)
    #expect(normalizer.offset == [4, 7])
    #expect(abs(normalizer.scale[0] - Float(5).squareRoot()) < 1e-6)
    #expect(normalizer.scale[1] == 1)
    let scaled = try normalizer.apply(to: train).inputs.scalars
    let first = stride(from: 0, to: 8, by: 2).map { scaled[$0] }
    #expect(abs(first.reduce(0, +)) < 1e-6)
    #expect(abs(first.map { $0 * $0 }.reduce(0, +) / 4 - 1) < 1e-6)
    #expect(stride(from: 1, to: 8, by: 2).allSatisfy { scaled[$0] == 0 })
  }

  @Test func applyingToADifferentWidthIsAnError() throws {
    let normalizer = Normalizer(.minMax, fittedOn: try NormalizerTests.dataset([[0, 1]]))
    let error = try #require(throws: DatasetError.self) {
      try normalizer.apply(to: NormalizerTests.dataset([[0, 1, 2]], name: "wide"))
    }
    #expect(error.message == "wide: has 3 features per example but the normalizer was fitted on 2")
  }
}
