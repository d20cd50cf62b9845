import Testing

@testable import MeshTensor

@Suite("Layer timing")
struct LayerTimingTests {
  /// MLP 784-16384-16384-10: its middle kernel is 1 GiB in float32.
  let bigModel = try! Sequential(
    spec: ModelSpec(
      inputShape: [784],
      layers: [
        .dense(inputSize: 784, outputSize: 16384, activation: .relu),
        .dense(inputSize: 16384, outputSize: 16384, activation: .relu),
        .dense(inputSize: 16384, outputSize: 10, activation: .linear),
      ],
      loss: .softmaxCrossEntropy, seed: 3))

  @Test func aDenseLayerTooBigToTimeWholeIsTimedOnASliceOfItsOutputs() {
    let standIn = bigModel.timedStandIn(for: 1)
    let timed = standIn.model.layers[standIn.layer]
    #expect(timed.parameterCount <= Sequential.largestTimedParameters)
    #expect(standIn.model.activationShapes[standIn.layer] == [16384])
    let slice = standIn.model.activationShapes[standIn.layer + 1][0]
    #expect(slice == Sequential.largestTimedParameters / 16385)
    #expect(standIn.scale == 16384 / Double(slice))
    #expect(bigModel.largestTimedLayerParameters == timed.parameterCount)
  }

  @Test func layersSmallEnoughAreTimedThemselves() {
    for index in [0, 2] {
      let standIn = bigModel.timedStandIn(for: index)
      #expect(standIn.layer == index && standIn.scale == 1)
      #expect(standIn.model.spec == bigModel.spec)
    }
  }

  @Test func theRowsTimedAreBoundedByWhatIsTimedNotByTheWholeLayer() throws {
    // Per example, the layers' training FLOPs are 51.4 M (layer 0, no input gradient), 1.61 G
    // (layer 1) and 0.98 M; layer 1 is timed on a slice of 1,023 of its 16,384 outputs, 100.6 M.
    // Four runs (3 timed, 1 warm-up) of 153 M fit 81 rows in the planning budget of 5·10^10
    // FLOPs; timing the whole layer would fit 7.
    let rows = try bigModel.rowsToTime(wanted: 4096, repeats: 3, within: .planning).get()
    #expect(rows == 81)
  }

  @Test func aStandInsTimesAreScaledToTheWholeLayer() throws {
    // A 4096 → 65,536 dense layer (1 GiB) is timed on 4,095 of its outputs.
    let model = try Sequential(
      spec: ModelSpec(
        inputShape: [4096],
        layers: [
          .dense(inputSize: 4096, outputSize: 65536, activation: .relu),
          .dense(inputSize: 65536, outputSize: 2, activation: .linear),
        ],
        loss: .meanSquaredError, seed: 1))
    let scale = model.timedStandIn(for: 0).scale
    #expect(scale == 65536 / 4095.0)
    #expect(model.largestTimedLayerParameters == 4096 * 4095 + 4095)
    // Each layer's runs (a warm-up and one timed, forward and backward) measured as 1 ms: its
    // time is 1 ms, scaled for the stand-in. The second layer (131,074 parameters) is then timed
    // split in two, its parts as one stage, measured as 3 ms: a split adds 2 ms to its forward
    // and to its backward. The stand-in's layer is not timed split.
    var runs = 0
    let timings = try model.timeLayers(rows: 1, repeats: 1) { run in
      run()
      runs += 1
      return .milliseconds(runs <= 8 ? 1 : 3)
    }
    #expect(runs == 12)
    #expect(
      timings == [
        LayerTiming(forward: .milliseconds(1) * scale, backward: .milliseconds(1) * scale),
        LayerTiming(
          forward: .milliseconds(1), backward: .milliseconds(1), splitForward: .milliseconds(2),
          splitBackward: .milliseconds(2)),
      ])
  }

  /// A Transformer block is also timed with its attention alone as a stage,
  /// for the attention's share of the block (its FLOPs tell it badly); other
  /// layers are not.
  @Test func aTransformerBlocksAttentionIsTimedApart() throws {
    let model = try Sequential(
      spec: ModelSpec(
        inputShape: [4],
        layers: [
          .embedding(vocabularySize: 5, embeddingSize: 8), .transformerBlock(modelSize: 8, headCount: 2, mlpSize: 8),
          .dense(inputSize: 8, outputSize: 3, activation: .linear),
        ],
        loss: .softmaxCrossEntropy, seed: 2))
    // Four runs per timing (a warm-up forward and backward, then the timed ones), in order: the
    // embedding, the block, the block split at its middle, its attention alone (runs 13 to 16:
    // timed 100 µs forward and 400 backward, a quarter of the others' 2000 only together), the
    // head, the head split.
    var runs = 0
    let timings = try model.timeLayers(rows: 2, repeats: 1) { run in
      run()
      runs += 1
      return .microseconds([15: 100, 16: 400][runs] ?? 1000)
    }
    #expect(runs == 24)
    #expect(timings.map(\.firstPartShare) == [nil, 0.25, nil])
    #expect(timings[1].total == .milliseconds(2) && timings[1].splitTotal == .zero)
  }

  /// Layers are timed on inputs like those they meet in training: token ids
  /// drawn from an embedding's vocabulary (after any Flatten layers), and
  /// varied values elsewhere. On zeros, tanh, exp and GELU take their fast
  /// paths, and a stage after the first seemed a fifth to a quarter cheaper
  /// than it runs.
  @Test func layersAreTimedOnInputsLikeTheirOwn() throws {
    let model = try Sequential(
      spec: ModelSpec(
        inputShape: [4, 4],
        layers: [
          .flatten,
          .embedding(vocabularySize: 50, embeddingSize: 8),
          .flatten,
          .dense(inputSize: 128, outputSize: 4, activation: .tanh),
        ],
        loss: .softmaxCrossEntropy, seed: 3))
    for layer in [0, 1] {
      let ids = model.timingInput(rows: 4, layer: layer)
      #expect(ids.scalars.count == 64)
      #expect(ids.scalars.allSatisfy { $0 >= 0 && $0 < 50 && $0 == $0.rounded() }, "token ids of the vocabulary")
      #expect(Set(ids.scalars).count > 25, "ids spread over the vocabulary")
    }
    let activations = model.timingInput(rows: 4, layer: 3)
    #expect(activations.shape == [4, 128])
    let mean = activations.scalars.reduce(0, +) / Float(activations.scalarCount)
    let variance = activations.scalars.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(activations.scalarCount)
    #expect(abs(mean) < 0.2 && variance > 0.6 && variance < 1.5, "N(0, 1): mean \(mean), variance \(variance)")
  }
}
