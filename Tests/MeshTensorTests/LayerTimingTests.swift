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
    // Timing the whole 1 GiB layer would fit 7 rows in the planning FLOP budget.
    let rows = try bigModel.rowsToTime(wanted: 64, repeats: 3, within: .planning).get()
    #expect(rows == 64)
  }

  @Test func aStandInIsTimedAndScaled() throws {
    let model = try Sequential(
      spec: ModelSpec(
        inputShape: [4096],
        layers: [.dense(inputSize: 4096, outputSize: 4100, activation: .relu)],
        loss: .meanSquaredError, seed: 1))
    #expect(model.largestTimedLayerParameters < model.layers[0].parameterCount)
    let timings = try model.timeLayers(rows: 2, repeats: 1)
    #expect(timings.count == 1)
    #expect(timings[0].forward > .zero && timings[0].backward > .zero)
  }
}
