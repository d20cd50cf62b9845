import Foundation
import Testing

@testable import MeshTensor

/// A finite-difference case for a one-layer model: the inputs are the layer input (when
/// differentiable) followed by the layer's variables in declaration order.
func layerCase(_ name: String, _ spec: LayerSpec, input: Tensor, differentiableInput: Bool = true) -> GradientCase {
  let model = try! Sequential(
    spec: ModelSpec(
      inputShape: Array(input.shape.dropFirst()), layers: [spec],
      loss: .meanSquaredError, seed: 5))
  let declarations = model.variableDeclarations()
  let names = declarations.map(\.name)
  let variables = declarations.map { declaration in
    // Non-trivial norm parameters so their gradients are exercised.
    declaration.name.hasSuffix("beta") || declaration.name.hasSuffix("bias")
      ? sample(declaration.shape, seed: UInt64(declaration.name.utf8.count)) * 0.1
      : declaration.initialValue(modelSeed: model.spec.seed)
  }
  let offset = differentiableInput ? 1 : 0
  return GradientCase(name, (differentiableInput ? [input] : []) + variables) { values in
    var dictionary: [String: Tensor] = [:]
    for (index, name) in names.enumerated() { dictionary[name] = values[index + offset] }
    return model.layers[0](
      differentiableInput ? values[0] : input, variables: dictionary, context: ForwardContext(training: true, seed: 3))
  }
}

let layerCases: [GradientCase] = [
  layerCase("dense gelu", .dense(inputSize: 3, outputSize: 2, activation: .gelu), input: sample([2, 3], seed: 1)),
  layerCase(
    "dense on [B,T,F]", .dense(inputSize: 3, outputSize: 2, activation: .tanh), input: sample([2, 2, 3], seed: 2)),
  layerCase(
    "conv2d sigmoid",
    .conv2d(inputChannels: 2, outputChannels: 2, kernelSize: 2, stride: 1, padding: 1, activation: .sigmoid),
    input: sample([1, 2, 3, 3], seed: 3)),
  layerCase("layer norm", .layerNorm(size: 4), input: sample([2, 4], seed: 4)),
  layerCase(
    "embedding", .embedding(vocabularySize: 5, embeddingSize: 3),
    input: Tensor(shape: [2, 2], scalars: [4, 0, 4, 2]), differentiableInput: false),
  layerCase(
    "embedding with learned positions", .embedding(vocabularySize: 5, embeddingSize: 3, positions: .learned(steps: 2)),
    input: Tensor(shape: [3, 2], scalars: [4, 0, 4, 2, 1, 1]), differentiableInput: false),
  layerCase(
    "lstm sequences", .lstm(inputSize: 2, hiddenSize: 3, returnSequences: true), input: sample([2, 3, 2], seed: 5)),
  layerCase(
    "lstm last state", .lstm(inputSize: 2, hiddenSize: 2, returnSequences: false), input: sample([1, 3, 2], seed: 6)),
  layerCase(
    "gru sequences", .gru(inputSize: 2, hiddenSize: 3, returnSequences: true), input: sample([2, 3, 2], seed: 7)),
  layerCase(
    "transformer block", .transformerBlock(modelSize: 4, headCount: 2, mlpSize: 8), input: sample([1, 3, 4], seed: 8)),
  layerCase("dropout", .dropout(rate: 0.3), input: sample([3, 4], seed: 9)),
]

@Suite("Layers and sequential models")
struct LayerTests {
  static let mlpSpec = ModelSpec(
    inputShape: [4],
    layers: [
      .dense(inputSize: 4, outputSize: 6, activation: .relu), .dropout(rate: 0.2),
      .dense(inputSize: 6, outputSize: 5, activation: .tanh), .layerNorm(size: 5),
      .dense(inputSize: 5, outputSize: 3, activation: .linear),
    ],
    loss: .softmaxCrossEntropy, l2Penalty: 0.01, seed: 2026)

  @Test("layer gradient matches central differences", arguments: layerCases)
  func layerGradient(_ gradientCase: GradientCase) {
    checkGradients(gradientCase)
  }

  @Test func variablesHaveStableNames() throws {
    let spec = ModelSpec(
      inputShape: [1, 6, 6],
      layers: [
        .conv2d(inputChannels: 1, outputChannels: 2, kernelSize: 3, stride: 1, padding: 0, activation: .relu),
        .maxPool2d(size: 2, stride: 2), .flatten, .dense(inputSize: 8, outputSize: 4, activation: .relu),
        .activation(.gelu), .dense(inputSize: 4, outputSize: 2, activation: .linear),
      ],
      loss: .softmaxCrossEntropy, seed: 1)
    let model = try Sequential(spec: spec)
    #expect(model.layers.map(\.name) == ["conv2d0", "maxpool0", "flatten0", "dense0", "gelu0", "dense1"])
    #expect(
      model.variableDeclarations().map(\.name) == [
        "conv2d0/filter", "conv2d0/bias", "dense0/kernel", "dense0/bias", "dense1/kernel", "dense1/bias",
      ])
    #expect(model.variableDeclarations(layers: 3..<4).map(\.name) == ["dense0/kernel", "dense0/bias"])
    #expect(model.activationShapes == [[1, 6, 6], [2, 4, 4], [2, 2, 2], [8], [4], [4], [2]])
  }

  @Test func sameSpecAndSeedGiveIdenticalInitialWeights() throws {
    let a = try Sequential(spec: Self.mlpSpec).initialVariables()
    let b = try Sequential(spec: Self.mlpSpec).initialVariables()
    #expect(a.keys.sorted() == b.keys.sorted())
    for (name, value) in a {
      #expect(value.scalars.map(\.bitPattern) == (try #require(b[name])).scalars.map(\.bitPattern))
    }
    var reseeded = Self.mlpSpec
    reseeded.seed += 1
    #expect(try Sequential(spec: reseeded).initialVariables()["dense0/kernel"] != a["dense0/kernel"])
    // A variable's value depends on its name and the seed only, not on the rest of the model.
    var truncated = Self.mlpSpec
    truncated.layers = [Self.mlpSpec.layers[0]]
    #expect(try Sequential(spec: truncated).initialVariables()["dense0/kernel"] == a["dense0/kernel"])
    #expect(
      try Sequential(spec: Self.mlpSpec).initialVariables(layers: 2..<3).keys.sorted() == [
        "dense1/bias", "dense1/kernel",
      ])
  }

  @Test func costsReportParametersActivationsAndFlops() throws {
    let costs = try Sequential(spec: Self.mlpSpec).layerCosts
    #expect(
      costs[0] == LayerCost(name: "dense0", parameterCount: 30, outputActivationSize: 6, flops: 6 * (2 * 4 + 1 + 1)))
    #expect(costs.map(\.parameterCount) == [30, 0, 35, 10, 18])
    #expect(costs.map(\.outputActivationSize) == [6, 6, 5, 5, 3])
    #expect(costs.allSatisfy { $0.flops > 0 })
  }

  @Test func mismatchedShapesAreReported() {
    let spec = ModelSpec(
      inputShape: [3],
      layers: [
        .dense(inputSize: 3, outputSize: 4, activation: .relu),
        .dense(inputSize: 5, outputSize: 2, activation: .linear),
      ],
      loss: .meanSquaredError, seed: 0)
    #expect(throws: ModelSpecError("layer dense1 expects 5 input features, got shape [4]")) {
      try Sequential(spec: spec)
    }
    let heads = ModelSpec(
      inputShape: [2, 6], layers: [.transformerBlock(modelSize: 6, headCount: 4, mlpSize: 8)],
      loss: .meanSquaredError, seed: 0)
    #expect(throws: ModelSpecError.self) { try Sequential(spec: heads) }
  }

  @Test func specRoundTripsThroughJSON() throws {
    let data = try JSONEncoder().encode(Self.mlpSpec)
    #expect(try JSONDecoder().decode(ModelSpec.self, from: data) == Self.mlpSpec)
  }

  @Test func twoStagesMatchSingleProcessGradients() throws {
    let model = try Sequential(spec: Self.mlpSpec)
    let variables = model.initialVariables()
    let input = sample([6, 4], seed: 11)
    let labels = Tensor(shape: [6], scalars: [0, 1, 2, 2, 1, 0])
    let context = ForwardContext(training: true, seed: 77)
    let full = model.lossAndGradients(input: input, target: labels, variables: variables, context: context)

    let first = model.forwardStage(input, variables: variables, layers: 0..<2, context: context)
    let second = model.forwardStage(first.output, variables: variables, layers: 2..<5, context: context)
    let (_, lossGradient) = Autodiff.valueWithGradient(at: [second.output]) {
      model.loss(output: $0[0], target: labels)
    }
    let secondGradients = second.backward(lossGradient[0])
    let firstGradients = first.backward(try #require(secondGradients.input))
    #expect(firstGradients.input?.shape == input.shape)
    let staged = firstGradients.variables.merging(secondGradients.variables) { a, _ in a }
    #expect(staged.keys.sorted() == full.gradients.keys.sorted())
    for (name, gradient) in full.gradients { expectClose(try #require(staged[name]), gradient, tolerance: 1e-6) }
  }

  @Test func microBatchedPipelineMatchesFullBatchGradients() throws {
    // GPipe order: all micro-batch forwards through both stages, then the backwards in
    // reverse, each from its kept StageForward. Gradients of the batch-mean loss add up
    // with weights (micro-batch size / batch size).
    var spec = Self.mlpSpec
    spec.layers.remove(at: 1)  // no dropout: masks would differ per micro-batch
    spec.l2Penalty = 0
    let model = try Sequential(spec: spec)
    let variables = model.initialVariables()
    let input = sample([7, 4], seed: 13)
    let labels = Tensor(shape: [7], scalars: [0, 1, 2, 2, 1, 0, 1])
    let full = model.lossAndGradients(input: input, target: labels, variables: variables, context: .inference)

    let inputs = input.splitBatch(intoChunksOf: 3)
    let targets = labels.splitBatch(intoChunksOf: 3)
    let first = inputs.map {
      model.forwardStage($0, variables: variables, layers: 0..<2, context: .inference, inputGradient: false)
    }
    let second = first.map { model.forwardStage($0.output, variables: variables, layers: 2..<4, context: .inference) }
    var summed: [String: Tensor] = [:]
    for index in inputs.indices.reversed() {
      let share = Float(inputs[index].shape[0]) / 7
      let (_, lossGradient) = Autodiff.valueWithGradient(at: [second[index].output]) {
        model.loss(output: $0[0], target: targets[index])
      }
      let late = second[index].backward(lossGradient[0] * share)
      let early = first[index].backward(try #require(late.input))
      #expect(early.input == nil)
      for (name, gradient) in late.variables.merging(early.variables, uniquingKeysWith: { a, _ in a }) {
        summed[name] = summed[name].map { $0 + gradient } ?? gradient
      }
    }
    for (name, gradient) in full.gradients { expectClose(try #require(summed[name]), gradient, tolerance: 1e-5) }
  }

  @Test func sequenceLayersProduceDocumentedShapes() throws {
    let spec = ModelSpec(
      inputShape: [5],
      layers: [
        .embedding(vocabularySize: 7, embeddingSize: 4),
        .transformerBlock(modelSize: 4, headCount: 2, mlpSize: 8),
        .gru(inputSize: 4, hiddenSize: 3, returnSequences: true),
        .lstm(inputSize: 3, hiddenSize: 2, returnSequences: false),
        .dense(inputSize: 2, outputSize: 7, activation: .linear),
      ],
      loss: .softmaxCrossEntropy, seed: 4)
    let model = try Sequential(spec: spec)
    #expect(model.activationShapes == [[5], [5, 4], [5, 4], [5, 3], [2], [7]])
    let tokens = Tensor(shape: [2, 5], scalars: [1, 2, 3, 4, 5, 6, 0, 1, 2, 3])
    #expect(model(tokens, variables: model.initialVariables()).shape == [2, 7])
  }

  @Test func attentionIsCausal() throws {
    let model = try Sequential(
      spec: ModelSpec(
        inputShape: [4, 4], layers: [.transformerBlock(modelSize: 4, headCount: 2, mlpSize: 8)],
        loss: .meanSquaredError, seed: 9))
    let variables = model.initialVariables()
    let x = sample([1, 4, 4], seed: 12)
    var future = x
    future.withUnsafeMutableBufferPointer { $0[15] += 3 }  // last token only
    let a = model(x, variables: variables)
    let b = model(future, variables: variables)
    expectClose(a.slice(axis: 1, range: 0..<3), b.slice(axis: 1, range: 0..<3), tolerance: 1e-6)
    #expect(maxAbsDifference(a.slice(axis: 1, range: 3..<4), b.slice(axis: 1, range: 3..<4)) > 1e-3)
  }

  /// Attention alone cannot see order: at the last position, a Transformer's output is the same
  /// for any order of the tokens before it. Positions added by the embedding make it differ.
  @Test(arguments: [PositionEncoding.none, .sinusoidal, .learned(steps: 5)])
  func positionsLetATransformerSeeOrder(_ positions: PositionEncoding) throws {
    let model = try Sequential(
      spec: ModelSpec(
        inputShape: [5],
        layers: [
          .embedding(vocabularySize: 6, embeddingSize: 8, positions: positions),
          .transformerBlock(modelSize: 8, headCount: 2, mlpSize: 16),
        ],
        loss: .meanSquaredError, seed: 4))
    var variables = model.initialVariables()
    if case .learned = positions {
      // Rows as far apart as sinusoids (the initial table is small, 0.02).
      variables["embedding0/positions"] = try #require(variables["embedding0/positions"]) * 50
    }
    let ordered = model(Tensor(shape: [1, 5], scalars: [1, 2, 3, 4, 5]), variables: variables)
    let shuffled = model(Tensor(shape: [1, 5], scalars: [3, 1, 4, 2, 5]), variables: variables)
    let lastDifference = maxAbsDifference(
      ordered.slice(axis: 1, range: 4..<5), shuffled.slice(axis: 1, range: 4..<5))
    if positions == .none {
      #expect(lastDifference < 1e-5)
    } else {
      #expect(lastDifference > 1e-3)
    }
  }

  @Test func sinusoidsFollowTheirFormula() {
    let table = Embedding.sinusoids(steps: 7, size: 6)
    #expect(table.shape == [7, 6])
    let values = table.scalars
    for position in 0..<7 {
      for pair in 0..<3 {
        let angle = Double(position) / pow(10_000, Double(2 * pair) / 6)
        #expect(abs(Double(values[position * 6 + 2 * pair]) - sin(angle)) < 1e-6)
        #expect(abs(Double(values[position * 6 + 2 * pair + 1]) - cos(angle)) < 1e-6)
      }
    }
  }

  @Test func learnedPositionsNeedTheirNumberOfSteps() {
    #expect(throws: ModelSpecError.self) {
      try Sequential(
        spec: ModelSpec(
          inputShape: [4], layers: [.embedding(vocabularySize: 3, embeddingSize: 2, positions: .learned(steps: 5))],
          loss: .meanSquaredError, seed: 1))
    }
  }
}

@Suite("Input validation")
struct ValidationTests {
  static let model = try! Sequential(
    spec: ModelSpec(
      inputShape: [3],
      layers: [
        .embedding(vocabularySize: 4, embeddingSize: 2), .flatten,
        .dense(inputSize: 6, outputSize: 5, activation: .linear),
      ],
      loss: .softmaxCrossEntropy, seed: 1))

  @Test func acceptsWellFormedBatches() throws {
    try Self.model.validate(input: Tensor(shape: [2, 3], scalars: [0, 1, 3, 2, 2, 0]))
    try Self.model.validate(input: Tensor.zeros([2, 6]), layers: 2..<3)
    try Self.model.validate(target: Tensor(shape: [2], scalars: [4, 0]), batchSize: 2)
  }

  @Test func rejectsBadBatchesWithAMessage() {
    #expect(throws: TensorError.self) { try Self.model.validate(input: Tensor.zeros([2, 4])) }
    #expect(throws: TensorError.self) { try Self.model.validate(input: Tensor(shape: [1, 3], scalars: [0, 4, 1])) }
    #expect(throws: TensorError.self) { try Self.model.validate(input: Tensor(shape: [1, 3], scalars: [0, 0.5, 1])) }
    #expect(throws: TensorError.self) {
      try Self.model.validate(input: Tensor(shape: [1, 6], scalars: [0, .nan, 0, 0, 0, 0]), layers: 2..<3)
    }
    #expect(throws: TensorError.self) {
      try Self.model.validate(target: Tensor(shape: [2], scalars: [5, 0]), batchSize: 2)
    }
    #expect(throws: TensorError.self) {
      try Self.model.validate(target: Tensor(shape: [3], scalars: [1, 0, 0]), batchSize: 2)
    }
  }

  /// Ids and labels too large for an integer, infinite or NaN are refused, not a crash.
  @Test func rejectsIdsAndLabelsBeyondAnyIndex() {
    for bad: Float in [1e19, -1e19, .infinity, -.infinity, .nan] {
      #expect(throws: TensorError.self) {
        try Self.model.validate(target: Tensor(shape: [2], scalars: [bad, 0]), batchSize: 2)
      }
      #expect(throws: TensorError.self) {
        try Self.model.validate(input: Tensor(shape: [1, 3], scalars: [0, bad, 1]))
      }
    }
  }
}
