import Testing

@testable import MeshTensor

@Suite("Layers split between stages")
struct LayerPieceTests {
  /// Runs `model` as a pipeline whose stages end at `positions` (the start and end included),
  /// one batch through every stage forward and back: the loss, the output and each whole
  /// variable's gradient, put together from its pieces' where a layer is split.
  static func pipelined(
    _ model: Sequential, at positions: [LayerPosition], input: Tensor, target: Tensor
  ) throws -> (output: Tensor, loss: Float, gradients: [String: Tensor]) {
    let variables = model.initialVariables()
    var activation = input
    var forwards: [StageForward] = []
    var pieces: [String: VariablePiece] = [:]
    for (index, (start, end)) in zip(positions, positions.dropFirst()).enumerated() {
      let stage = try model.stage(from: start, to: end)
      var held = variables
      for declaration in stage.model.variableDeclarations(layers: stage.layers) {
        guard let piece = declaration.piece else { continue }
        pieces[declaration.name] = piece
        held[declaration.name] = piece.cut(from: try #require(variables[piece.whole]))
      }
      let forward = stage.model.forwardStage(
        activation, variables: held, layers: stage.layers, context: .init(training: true), inputGradient: index > 0)
      forwards.append(forward)
      activation = forward.output
    }
    let (loss, lossGradient) = Autodiff.valueWithGradient(at: [activation]) { outputs in
      model.loss(output: outputs[0], target: target)
    }
    var upstream = lossGradient[0]
    var gradients: [String: Tensor] = [:]
    for forward in forwards.reversed() {
      let stage = forward.backward(upstream)
      for (name, gradient) in stage.variables {
        guard let piece = pieces[name] else {
          // A variable several stages read (a recurrent layer's weights): their shares add up.
          gradients[name] = gradients[name].map { $0 + gradient } ?? gradient
          continue
        }
        var whole = gradients[piece.whole] ?? Tensor.zeros(piece.wholeShape)
        let scalars = gradient.scalars
        whole.withUnsafeMutableBufferPointer { whole in
          for run in piece.runs {
            for element in 0..<run.count { whole[run.whole + element] += scalars[run.piece + element] }
          }
        }
        gradients[piece.whole] = whole
      }
      if let input = stage.input { upstream = input }
    }
    return (activation, loss.scalar + model.penalty(variables: variables), gradients)
  }

  /// Expects the pipeline cut at `positions` to compute what the whole model does, on
  /// `input` (random values when nil).
  static func expectSameAsWhole(
    _ spec: ModelSpec, at positions: [LayerPosition], batch: Int, classes: Int, input: Tensor? = nil,
    sourceLocation: SourceLocation = #_sourceLocation
  ) throws {
    let model = try Sequential(spec: spec)
    let input = input ?? sample([batch] + spec.inputShape, seed: 11)
    let target = Tensor(shape: [batch], scalars: (0..<batch).map { Float($0 % classes) })
    let whole = model.lossAndGradients(
      input: input, target: target, variables: model.initialVariables(), context: .init(training: true))
    let split = try pipelined(
      model, at: [LayerPosition(layer: 0)] + positions + [LayerPosition(layer: model.layers.count)], input: input,
      target: target)
    #expect(abs(split.loss - whole.loss) <= 1e-5 * max(1, abs(whole.loss)), sourceLocation: sourceLocation)
    #expect(Set(split.gradients.keys) == Set(whole.gradients.keys), sourceLocation: sourceLocation)
    for (name, gradient) in whole.gradients {
      guard let piecewise = split.gradients[name] else { continue }
      let scale = max(1, gradient.scalars.map(abs).max() ?? 0)
      #expect(
        maxAbsDifference(piecewise, gradient) <= 1e-5 * scale, "gradient of \(name)", sourceLocation: sourceLocation)
    }
  }

  static let mlp = ModelSpec(
    inputShape: [12],
    layers: [
      .dense(inputSize: 12, outputSize: 16, activation: .relu), .dense(inputSize: 16, outputSize: 9, activation: .tanh),
      .dense(inputSize: 9, outputSize: 4, activation: .linear),
    ],
    loss: .softmaxCrossEntropy, l2Penalty: 0.05, seed: 5)

  @Test func denseLayersCutAnywhereComputeTheWholeModel() throws {
    // A cut in the first layer, one in the middle of another, and three pieces of one layer.
    try Self.expectSameAsWhole(Self.mlp, at: [LayerPosition(layer: 0, inputs: 5)], batch: 6, classes: 4)
    try Self.expectSameAsWhole(
      Self.mlp, at: [LayerPosition(layer: 1, inputs: 1), LayerPosition(layer: 2)], batch: 6, classes: 4)
    try Self.expectSameAsWhole(
      Self.mlp, at: [LayerPosition(layer: 1, inputs: 4), LayerPosition(layer: 1, inputs: 11)], batch: 6, classes: 4)
  }

  static let convolutional = ModelSpec(
    inputShape: [2, 6, 6],
    layers: [
      .conv2d(inputChannels: 2, outputChannels: 5, kernelSize: 3, stride: 1, padding: 1, activation: .relu),
      .conv2d(inputChannels: 5, outputChannels: 3, kernelSize: 3, stride: 2, padding: 0, activation: .relu),
      .flatten, .dense(inputSize: 12, outputSize: 3, activation: .linear),
    ],
    loss: .softmaxCrossEntropy, l2Penalty: 0.01, seed: 8)

  @Test func convolutionsCutByChannelComputeTheWholeModel() throws {
    let spec = Self.convolutional
    try Self.expectSameAsWhole(spec, at: [LayerPosition(layer: 1, inputs: 2)], batch: 4, classes: 3)
    try Self.expectSameAsWhole(
      spec, at: [LayerPosition(layer: 0, inputs: 1), LayerPosition(layer: 3, inputs: 7)], batch: 4, classes: 3)
    // Three pieces of one convolution: the middle one receives and passes on channels and sums.
    try Self.expectSameAsWhole(
      spec, at: [LayerPosition(layer: 1, inputs: 1), LayerPosition(layer: 1, inputs: 3)], batch: 4, classes: 3)
  }

  /// The pieces of split layers' weights, as stages hold them, put back together: a
  /// convolution's filter cut by input channel (a run of the whole per output channel) and a
  /// dense kernel cut by rows; a piece's elements land where they were cut from however a
  /// pull cuts them into chunks; pieces that leave a gap are left out.
  @Test func piecesJoinIntoTheWholeWeight() throws {
    let model = try Sequential(spec: Self.convolutional)
    let whole = model.initialVariables()
    let held = try model.variableDeclarations(
      cutAt: [0, LayerPosition(layer: 1, inputs: 2), LayerPosition(layer: 3, inputs: 7), 4])
    let values = Dictionary(
      uniqueKeysWithValues: held.map { ($0.name, $0.initialValue(modelSeed: Self.convolutional.seed)) })
    #expect(held.compactMap(\.piece).map(\.axis) == [1, 1, 0, 0])
    #expect(model.joiningPieces(values) == whole)

    let piece = try #require(held.first { $0.piece?.axis == 1 }?.piece)
    let source = try #require(whole[piece.whole]).scalars
    let scalars = try #require(values[piece.name]).scalars
    for chunk in [1, 4, 7, scalars.count] {
      var rebuilt = [Float](repeating: .nan, count: source.count)
      for start in stride(from: 0, to: scalars.count, by: chunk) {
        let elements = start..<min(scalars.count, start + chunk)
        for run in piece.wholeRuns(ofPieceElements: elements) {
          for index in 0..<run.count { rebuilt[run.whole + index] = scalars[elements.lowerBound + run.offset + index] }
        }
      }
      let placed = rebuilt.indices.filter { !rebuilt[$0].isNaN }
      #expect(placed.count == scalars.count && placed.allSatisfy { rebuilt[$0] == source[$0] }, "chunks of \(chunk)")
    }
    var gap = values
    gap[piece.name] = nil
    #expect(model.joiningPieces(gap)[piece.whole] == nil)
    // A piece's optimizer slot, or a part of a piece a ps task holds, is neither a piece nor kept.
    var more = values
    more[piece.name + "@m"] = values[piece.name]
    more[piece.name + "#rows:0-1"] = try #require(values[piece.name]).slice(axis: 0, range: 0..<1)
    #expect(model.joiningPieces(more) == whole)
  }

  /// A piece of the model's first layer passes back the gradient of the sum it received, which
  /// the piece before needs, and none for the model's inputs.
  @Test func aPieceOfTheFirstLayerSendsBackOnlyTheSumsGradient() throws {
    let model = try Sequential(spec: Self.mlp)
    let tail = try model.stage(from: LayerPosition(layer: 0, inputs: 5), to: LayerPosition(layer: 1))
    let input = sample([3, 7 + 16], seed: 4)
    let forward = tail.model.forwardStage(
      input, variables: tail.model.initialVariables(layers: tail.layers), layers: tail.layers,
      context: .init(training: true))
    let gradient = try #require(forward.backward(sample([3, 16], seed: 5)).input)
    #expect(gradient.slice(axis: 1, range: 0..<7).scalars.allSatisfy { $0 == 0 })
    #expect(gradient.slice(axis: 1, range: 7..<23).scalars.contains { $0 != 0 })
    // Counted as a stage holds it: the layer's kernel rows for inputs 5..<12, and its bias.
    #expect(tail.model.heldParameters(layers: tail.layers) == 7 * 16 + 16)
  }

  @Test func denseLayersOverSequencesCutByFeature() throws {
    let spec = ModelSpec(
      inputShape: [3, 5],
      layers: [
        .dense(inputSize: 5, outputSize: 4, activation: .relu), .flatten,
        .dense(inputSize: 12, outputSize: 2, activation: .linear),
      ],
      loss: .softmaxCrossEntropy, seed: 2)
    try Self.expectSameAsWhole(spec, at: [LayerPosition(layer: 0, inputs: 3)], batch: 5, classes: 2)
  }

  @Test func theFirstPieceOwnsTheWeightAndTheLastTheBias() throws {
    let model = try Sequential(spec: Self.mlp)
    let head = try model.stage(from: LayerPosition(layer: 0), to: LayerPosition(layer: 1, inputs: 4))
    let tail = try model.stage(from: LayerPosition(layer: 1, inputs: 4), to: LayerPosition(layer: 3))
    #expect(head.model.layers[head.layers].map(\.name) == ["dense0", "dense1[0..<4]"])
    #expect(tail.model.layers[tail.layers].map(\.name) == ["dense1[4..<16]", "dense2"])
    // Each holds the kernel rows of its inputs, regularised, as a variable of its own.
    let piece = try #require(head.model.layers[1].variableDeclarations.first?.piece)
    #expect(piece == VariablePiece(whole: "dense1/kernel", wholeShape: [16, 9], axis: 0, range: 0..<4))
    #expect(head.model.layers[1].variableDeclarations.map(\.name) == ["dense1/kernel#inputs:0-4"])
    let read = tail.model.variableDeclarations(layers: tail.layers)
    #expect(read.map(\.name) == ["dense1/kernel#inputs:4-16", "dense1/bias", "dense2/kernel", "dense2/bias"])
    #expect(read.map(\.shape) == [[12, 9], [9], [9, 4], [4]])
    #expect(read[0].regularized && head.model.layers[1].variableDeclarations[0].regularized)
    // Drawn as those rows of the whole kernel are.
    let whole = try #require(model.initialVariables()["dense1/kernel"])
    #expect(read[0].initialValue(modelSeed: Self.mlp.seed) == whole.slice(axis: 0, range: 4..<16))
    // What the head passes on: the 12 inputs not taken and the 9 sums.
    #expect(head.model.activationShapes[head.layers.upperBound] == [12 + 9])
    #expect(tail.model.activationShapes[tail.layers.lowerBound] == [12 + 9])
  }

  static let recurrent = ModelSpec(
    inputShape: [6],
    layers: [
      .embedding(vocabularySize: 5, embeddingSize: 3), .gru(inputSize: 3, hiddenSize: 4, returnSequences: true),
      .lstm(inputSize: 4, hiddenSize: 5, returnSequences: false),
      .dense(inputSize: 5, outputSize: 3, activation: .linear),
    ],
    loss: .softmaxCrossEntropy, l2Penalty: 0.05, seed: 3)

  @Test func recurrentLayersCutAtTimeStepsComputeTheWholeModel() throws {
    // Tokens, as the embedding reads them.
    let tokens = Tensor(shape: [4, 6], scalars: (0..<24).map { Float(($0 * 7 + 3) % 5) })
    func expectSameAsWhole(_ positions: [LayerPosition], sourceLocation: SourceLocation = #_sourceLocation) throws {
      try Self.expectSameAsWhole(
        Self.recurrent, at: positions, batch: 4, classes: 3, input: tokens, sourceLocation: sourceLocation)
    }
    // A sequence-returning GRU cut once; an LSTM cut twice (a middle piece receives and passes
    // on states); both cut, with a whole-layer boundary between.
    try expectSameAsWhole([LayerPosition(layer: 1, inputs: 2)])
    try expectSameAsWhole([LayerPosition(layer: 2, inputs: 1), LayerPosition(layer: 2, inputs: 4)])
    try expectSameAsWhole([
      LayerPosition(layer: 1, inputs: 5), LayerPosition(layer: 2), LayerPosition(layer: 2, inputs: 3),
    ])
  }

  @Test func aRecurrentLayerReadingTheModelsInputsCutsTheSame() throws {
    let spec = ModelSpec(
      inputShape: [5, 2],
      layers: [
        .lstm(inputSize: 2, hiddenSize: 3, returnSequences: true), .flatten,
        .dense(inputSize: 15, outputSize: 2, activation: .linear),
      ],
      loss: .softmaxCrossEntropy, seed: 9)
    try Self.expectSameAsWhole(spec, at: [LayerPosition(layer: 0, inputs: 2)], batch: 3, classes: 2)
    try Self.expectSameAsWhole(
      spec, at: [LayerPosition(layer: 0, inputs: 1), LayerPosition(layer: 0, inputs: 4)], batch: 3, classes: 2)
    // A stage after the first receives the steps' inputs it has not run: the model's own.
    let model = try Sequential(spec: spec)
    let tail = try model.stage(from: LayerPosition(layer: 0, inputs: 2), to: LayerPosition(layer: 3))
    #expect(tail.model.receivesModelInputs(atLayer: tail.layers.lowerBound))
  }

  /// The first piece of a recurrent layer owns its weights, with their penalty; the others
  /// read them as shared variables, and every stage holds them whole. What passes between
  /// pieces: the inputs of the steps not run, the hidden and cell states, and for a layer
  /// returning sequences the hidden states so far.
  @Test func everyPieceOfARecurrentLayerRunsItsOneSetOfWeights() throws {
    let model = try Sequential(spec: Self.recurrent)
    let head = try model.stage(from: LayerPosition(layer: 0), to: LayerPosition(layer: 2, inputs: 2))
    let tail = try model.stage(from: LayerPosition(layer: 2, inputs: 2), to: LayerPosition(layer: 4))
    #expect(head.model.layers[head.layers].map(\.name) == ["embedding0", "gru0", "lstm0[0..<2]"])
    #expect(tail.model.layers[tail.layers].map(\.name) == ["lstm0[2..<6]", "dense0"])
    let weights = ["lstm0/kernel", "lstm0/recurrent_kernel", "lstm0/bias"]
    let (first, later) = (head.model.layers[2], tail.model.layers[tail.layers.lowerBound])
    #expect(first.variableDeclarations.map(\.name) == weights && first.sharedVariables.isEmpty)
    #expect(later.variableDeclarations.isEmpty && later.sharedVariables.map(\.name) == weights)
    #expect(first.variableDeclarations[0].regularized && later.sharedVariables.allSatisfy { !$0.regularized })
    // The tail stage holds the shared weights with its dense layer's.
    #expect(tail.model.heldParameters(layers: tail.layers) == first.parameterCount + 5 * 3 + 3)
    // The 4 steps' inputs of 4 features, the hidden and cell states of 5.
    #expect(head.model.activationShapes[head.layers.upperBound] == [4 * 4 + 2 * 5])
    #expect(tail.model.activationShapes[tail.layers.lowerBound] == [4 * 4 + 2 * 5])
    // The GRU returns sequences: cut after 2 of its 6 steps, it also passes on 2 hidden states of 4.
    let gruHead = try model.stage(from: LayerPosition(layer: 0), to: LayerPosition(layer: 1, inputs: 2))
    #expect(gruHead.model.activationShapes[gruHead.layers.upperBound] == [4 * 3 + 4 + 2 * 4])
    let lstm = model.layers[2].parameterCount
    #expect(model.heldParameters(byPieceOf: 2, taking: 0..<2) == lstm)
    #expect(model.heldParameters(byPieceOf: 2, taking: 2..<6) == lstm)
    #expect(model.splittableInputs(ofLayer: 2) == 6)
  }

  static let transformer = ModelSpec(
    inputShape: [5],
    layers: [
      .embedding(vocabularySize: 7, embeddingSize: 8), .transformerBlock(modelSize: 8, headCount: 2, mlpSize: 12),
      .transformerBlock(modelSize: 8, headCount: 2, mlpSize: 12), .flatten,
      .dense(inputSize: 40, outputSize: 3, activation: .linear),
    ],
    loss: .softmaxCrossEntropy, l2Penalty: 0.05, seed: 6)

  /// Between the attention and the MLP, inside the MLP (after some hidden units), several
  /// times in one block, and a piece running the attention with some hidden units.
  @Test func transformerBlocksCutAtAnyUnitComputeTheWholeModel() throws {
    let tokens = Tensor(shape: [3, 5], scalars: (0..<15).map { Float(($0 * 5 + 2) % 7) })
    for positions in [
      [LayerPosition(layer: 1, inputs: 1)], [LayerPosition(layer: 1, inputs: 1), LayerPosition(layer: 2, inputs: 1)],
      [LayerPosition(layer: 2), LayerPosition(layer: 2, inputs: 1)], [LayerPosition(layer: 1, inputs: 5)],
      [LayerPosition(layer: 1, inputs: 3), LayerPosition(layer: 1, inputs: 9), LayerPosition(layer: 2, inputs: 12)],
      [LayerPosition(layer: 1, inputs: 1), LayerPosition(layer: 1, inputs: 2), LayerPosition(layer: 2, inputs: 7)],
    ] {
      try Self.expectSameAsWhole(Self.transformer, at: positions, batch: 3, classes: 3, input: tokens)
    }
  }

  /// Split between its attention and its MLP, a Transformer block's two parts
  /// each hold their own variables, named as the whole block's, and pass on the
  /// residual stream alone.
  @Test func theAttentionAndTheMLPOfASplitTransformerBlockHoldTheirOwnVariables() throws {
    let model = try Sequential(spec: Self.transformer)
    let head = try model.stage(from: LayerPosition(layer: 0), to: LayerPosition(layer: 1, inputs: 1))
    let tail = try model.stage(from: LayerPosition(layer: 1, inputs: 1), to: LayerPosition(layer: 5))
    #expect(head.model.layers[head.layers].map(\.name) == ["embedding0", "transformer0[0..<1]"])
    #expect(tail.model.layers[tail.layers].first?.name == "transformer0[1..<13]")
    let attention = head.model.layers[1].variableDeclarations.map(\.name)
    let mlp = tail.model.layers[tail.layers.lowerBound].variableDeclarations.map(\.name)
    #expect(attention.allSatisfy { $0.hasPrefix("transformer0/ln1/") || $0.hasPrefix("transformer0/attention/") })
    #expect(mlp.allSatisfy { $0.hasPrefix("transformer0/ln2/") || $0.hasPrefix("transformer0/mlp/") })
    #expect(Set(attention + mlp) == Set(model.layers[1].variableDeclarations.map(\.name)))
    #expect(head.model.activationShapes[head.layers.upperBound] == [5, 8])
    #expect(!model.piecesShareWeights(ofLayer: 1))
    #expect(
      model.heldParameters(byPieceOf: 1, taking: 0..<1) + model.heldParameters(byPieceOf: 1, taking: 1..<13)
        == model.layers[1].parameterCount)
  }

  /// Cut inside its MLP, a block's pieces hold their hidden units' parts of the MLP's weights
  /// (the layer norm with the first, the second bias with the last), pass on the normalised
  /// input beside the residual stream, and their parts put back together are the whole.
  @Test func piecesOfATransformerBlocksMLPHoldTheirHiddenUnits() throws {
    let model = try Sequential(spec: Self.transformer)
    #expect(model.splittableInputs(ofLayer: 1) == 13)
    #expect(model.places(inLayer: 1, pieces: 4) == [1, 4, 7, 10])
    let bounds = [LayerPosition(layer: 0), LayerPosition(layer: 1, inputs: 5), LayerPosition(layer: 5)]
    let head = try model.stage(from: bounds[0], to: bounds[1])
    let tail = try model.stage(from: bounds[1], to: bounds[2])
    #expect(head.model.layers[head.layers].map(\.name) == ["embedding0", "transformer0[0..<5]"])
    #expect(head.model.activationShapes[head.layers.upperBound] == [5, 16])
    let first = head.model.layers[1].variableDeclarations
    let second = tail.model.layers[tail.layers.lowerBound].variableDeclarations
    let mlp = "transformer0/mlp/"
    #expect(
      first.filter { $0.name.hasPrefix(mlp) }.map(\.name) == [
        mlp + "kernel1#inputs:0-4", mlp + "bias1#inputs:0-4", mlp + "kernel2#inputs:0-4",
      ])
    #expect(first.filter { $0.name.hasPrefix(mlp) }.map(\.shape) == [[8, 4], [4], [4, 8]])
    #expect(first.contains { $0.name == "transformer0/ln2/gamma" } && !first.contains { $0.name == mlp + "bias2" })
    #expect(
      second.map(\.name) == [
        mlp + "kernel1#inputs:4-12", mlp + "bias1#inputs:4-12", mlp + "kernel2#inputs:4-12", mlp + "bias2",
      ])
    #expect(
      model.heldParameters(byPieceOf: 1, taking: 0..<5) + model.heldParameters(byPieceOf: 1, taking: 5..<13)
        == model.layers[1].parameterCount)
    for units in [0..<1, 0..<5, 1..<13, 1..<2, 5..<13, 3..<9, 12..<13] {
      #expect(
        model.heldParameters(byPieceOf: 1, taking: units)
          == TransformerPiece(block: try #require(model.layers[1] as? TransformerBlock), units: units).parameterCount,
        "\(units)")
    }
    // The pieces' values as the ps draws them, put back together: the whole model's.
    let held = try model.variableDeclarations(cutAt: bounds)
    let values = Dictionary(
      uniqueKeysWithValues: held.map { ($0.name, $0.initialValue(modelSeed: Self.transformer.seed)) })
    #expect(values.count > model.variableDeclarations().count)
    #expect(model.joiningPieces(values) == model.initialVariables())
  }

  @Test func cutsOutsideSummingLayersAreRefused() throws {
    let spec = ModelSpec(
      inputShape: [1, 4, 4],
      layers: [.maxPool2d(size: 2, stride: 2), .flatten, .dense(inputSize: 4, outputSize: 2, activation: .linear)],
      loss: .softmaxCrossEntropy, seed: 1)
    let model = try Sequential(spec: spec)
    #expect(model.splittableInputs(ofLayer: 0) == nil)
    #expect(model.splittableInputs(ofLayer: 2) == 4)
    #expect(throws: ModelSpecError.self) {
      try model.stage(from: LayerPosition(layer: 0), to: LayerPosition(layer: 0, inputs: 1))
    }
    #expect(throws: ModelSpecError.self) {
      try model.stage(from: LayerPosition(layer: 2, inputs: 4), to: LayerPosition(layer: 3))
    }
    #expect(throws: ModelSpecError.self) {
      try model.stage(from: LayerPosition(layer: 2), to: LayerPosition(layer: 1))
    }
  }
}
