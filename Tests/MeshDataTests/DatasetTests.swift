import MeshData
import MeshTensor
import Testing

@Suite struct DatasetTests {
  /// `count` examples whose two features are (i, −i) and whose label is i mod 3.
  static func numbered(_ count: Int) throws -> Dataset {
    try Dataset(
      name: "numbered",
      inputs: Tensor(shape: [count, 2], scalars: (0..<count).flatMap { [Float($0), -Float($0)] }),
      labels: Tensor(shape: [count], scalars: (0..<count).map { Float($0 % 3) }), classCount: 3)
  }

  /// The example numbers (first feature) in `dataset`, in order.
  static func ids(_ dataset: Dataset) -> [Int] {
    stride(from: 0, to: dataset.inputs.scalarCount, by: 2).map { Int(dataset.inputs.scalars[$0]) }
  }

  @Test func theSameSeedGivesTheSameSplitAndADifferentSeedADifferentOne() throws {
    let dataset = try DatasetTests.numbered(100)
    let first = try dataset.split(validationFraction: 0.2, seed: 7)
    let again = try dataset.split(validationFraction: 0.2, seed: 7)
    let other = try dataset.split(validationFraction: 0.2, seed: 8)
    #expect(DatasetTests.ids(first.train) == DatasetTests.ids(again.train))
    #expect(DatasetTests.ids(first.validation) == DatasetTests.ids(again.validation))
    #expect(DatasetTests.ids(first.validation) != DatasetTests.ids(other.validation))
    // Pinned so that every machine (and every later version) splits identically; the values
    // agree with a separate Python implementation of SplitMix64 + Fisher–Yates.
    #expect(DatasetTests.ids(first.validation).prefix(5) == [61, 50, 27, 73, 46])
  }

  @Test(arguments: [0.0, 0.15, 0.5, 1.0])
  func aSplitPartitionsTheExamplesAndKeepsRowsWhole(fraction: Double) throws {
    let dataset = try DatasetTests.numbered(41)
    let (train, validation) = try dataset.split(validationFraction: fraction, seed: 3)
    #expect(validation.count == Int((fraction * 41).rounded()))
    #expect(train.count + validation.count == 41)
    #expect((DatasetTests.ids(train) + DatasetTests.ids(validation)).sorted() == Array(0..<41))
    for part in [train, validation] {
      let ids = DatasetTests.ids(part)
      #expect(part.inputs.scalars == ids.flatMap { [Float($0), -Float($0)] })
      #expect(part.labels.scalars == ids.map { Float($0 % 3) })
      #expect(part.classCount == 3)
    }
    #expect(train.name == "numbered/train")
  }

  @Test func aFractionOutsideZeroToOneIsRejected() throws {
    let error = try #require(throws: DatasetError.self) {
      try DatasetTests.numbered(4).split(validationFraction: 1.5, seed: 0)
    }
    #expect(error.code == .invalidArgument)
    #expect(error.message.contains("1.5"))
  }

  @Test(arguments: [1, 7, 10, 64])
  func everyEpochVisitsEveryExampleOnce(size: Int) throws {
    let dataset = try DatasetTests.numbered(50)
    var orders: [[Int]] = []
    for epoch in 0..<3 {
      let batches = try dataset.batches(size: size, shuffleSeed: 11, epoch: epoch)
      var seen: [Int] = []
      for batch in batches {
        #expect(batch.inputs.shape[0] <= size)
        #expect(batch.labels.shape == [batch.inputs.shape[0]])
        let ids = stride(from: 0, to: batch.inputs.scalarCount, by: 2).map { Int(batch.inputs.scalars[$0]) }
        #expect(ids == batch.indices)
        #expect(batch.labels.scalars == ids.map { Float($0 % 3) })
        seen += ids
      }
      #expect(batches.count == (50 + size - 1) / size)
      #expect(seen.sorted() == Array(0..<50))
      orders.append(seen)
    }
    if size < 50 {
      #expect(orders[0] != orders[1])
    }
    let replay = try dataset.batches(size: size, shuffleSeed: 11, epoch: 1).flatMap(\.indices)
    #expect(replay == orders[1])
  }

  @Test func unshuffledBatchesKeepOrderAndCanDropTheRemainder() throws {
    let dataset = try DatasetTests.numbered(10)
    #expect(try dataset.batches(size: 4).map(\.indices) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]])
    let whole = try dataset.batches(size: 4, dropRemainder: true)
    #expect(whole.count == 2)
    #expect(whole.map(\.indices) == [[0, 1, 2, 3], [4, 5, 6, 7]])
    #expect(throws: DatasetError.self) { try dataset.batches(size: 0) }
  }

  @Test func reshapingKeepsValuesAndChecksSizes() throws {
    let dataset = try Dataset(
      name: "flat", inputs: Tensor(shape: [2, 6], scalars: (0..<12).map(Float.init)),
      labels: Tensor(shape: [2], scalars: [0, 1]), classCount: 2)
    let images = try dataset.reshaped(featureShape: [1, 2, 3])
    #expect(images.inputs.shape == [2, 1, 2, 3])
    #expect(images.inputs.scalars == dataset.inputs.scalars)
    #expect(images.featureShape == [1, 2, 3])
    let error = try #require(throws: DatasetError.self) { try dataset.reshaped(featureShape: [4, 2]) }
    #expect(error.message == "flat: cannot view features of shape [6] (6 values) as [4, 2] (8 values)")
    let zero = try #require(throws: DatasetError.self) { try dataset.reshaped(featureShape: [0, 6]) }
    #expect(zero.code == .invalidArgument)
  }

  @Test func validationNamesBothShapesAndTheFix() throws {
    let dataset = try DatasetTests.numbered(3)
    try dataset.validate(featureShape: [2])
    let fixable = try #require(throws: DatasetError.self) { try dataset.validate(featureShape: [1, 2]) }
    #expect(fixable.code == .shapeMismatch)
    #expect(
      fixable.message == "numbered: examples have shape [2] but the model expects [1, 2]; "
        + "the sizes agree, so reshaped(featureShape: [1, 2]) fixes this")
    let wrong = try #require(throws: DatasetError.self) { try dataset.validate(featureShape: [3]) }
    #expect(wrong.message == "numbered: examples have shape [2] but the model expects [3]")
    try dataset.validate(outputs: 3)
    let outputs = try #require(throws: DatasetError.self) { try dataset.validate(outputs: 10) }
    #expect(outputs.message == "numbered: has 3 classes but the model outputs 10")
    let regression = try Datasets.syntheticRegression(count: 4, features: 2, outputs: 3, seed: 0).dataset
    try regression.validate(outputs: 3)
    let targets = try #require(throws: DatasetError.self) { try regression.validate(outputs: 1) }
    #expect(targets.message == "regression: has 3 targets per example but the model outputs 1")
  }

  @Test func theInitializerRejectsPartsThatDisagree() throws {
    let inputs = Tensor(shape: [3, 2], repeating: 0)
    let rows = try #require(throws: DatasetError.self) {
      try Dataset(name: "d", inputs: inputs, labels: Tensor(shape: [2], repeating: 0), classCount: 2)
    }
    #expect(rows.message == "d: 3 input rows but 2 label rows")
    let label = try #require(throws: DatasetError.self) {
      try Dataset(name: "d", inputs: inputs, labels: Tensor(shape: [3], scalars: [0, 1, 2]), classCount: 2)
    }
    #expect(label.code == .badLabel)
    #expect(label.message == "d: example 2: label 2 is outside the 2 classes 0...1")
    let targets = try #require(throws: DatasetError.self) {
      try Dataset(name: "d", inputs: inputs, labels: Tensor(shape: [3], repeating: 0), classCount: nil)
    }
    #expect(targets.message == "d: regression targets must have shape [N, k], got [3]")
  }
}
