import Foundation
import Testing

@testable import MeshTensor

@Suite("Reverse-mode differentiation")
struct AutodiffTests {
  @Test func gradientAccumulatesOverReuse() {
    let x = Tensor(shape: [2], scalars: [3, -1])
    let (value, gradients) = Autodiff.valueWithGradient(at: [x]) { v in (v[0] * v[0] + v[0]).sum() }
    #expect(value.scalar == 12)
    #expect(gradients[0].scalars == [7, -1])
  }

  @Test func backwardFromUpstreamEqualsWeightedLoss() {
    let x = sample([3, 4], seed: 1)
    let w = sample([4, 2], seed: 2)
    let upstream = sample([3, 2], seed: 3)
    let (output, backpropagator) = Autodiff.valueWithBackpropagator(at: [x, w]) { v in Tensor.matmul(v[0], v[1]).tanh()
    }
    #expect(!output.isTrackingGradients)
    let fromUpstream = backpropagator(upstream)
    let (_, reference) = Autodiff.valueWithGradient(at: [x, w]) { v in
      (Tensor.matmul(v[0], v[1]).tanh() * upstream).sum()
    }
    expectClose(fromUpstream[0], reference[0], tolerance: 1e-6)
    expectClose(fromUpstream[1], reference[1], tolerance: 1e-6)
  }

  @Test func backpropagatorsOfSeveralMicroBatchesRunLaterInAnyOrder() {
    let w = sample([2, 2], seed: 4)
    let microBatches = [sample([1, 2], seed: 5), sample([1, 2], seed: 6)]
    let kept = microBatches.map { x in
      Autodiff.valueWithBackpropagator(at: [x, w]) { v in Tensor.matmul(v[0], v[1]).sigmoid() }
    }
    let upstream = Tensor.ones([1, 2])
    let late = kept.reversed().map { $0.backpropagator(upstream)[1] }
    let direct = microBatches.reversed().map { x in
      Autodiff.valueWithGradient(at: [w]) { v in Tensor.matmul(x, v[0]).sigmoid().sum() }.gradients[0]
    }
    for (a, b) in zip(late, direct) { expectClose(a, b, tolerance: 1e-6) }
  }

  @Test func unusedAndUntrackedInputsGetZeroGradients() {
    let x = Tensor(shape: [2], scalars: [1, 2]).trackingGradients()
    let unused = Tensor.ones([3]).trackingGradients()
    let gradients = Autodiff.gradients(of: (x * 2).sum(), withRespectTo: [x, unused])
    #expect(gradients[0].scalars == [2, 2])
    #expect(gradients[1].scalars == [0, 0, 0])
    #expect(!(x.detached() * 2).isTrackingGradients)
  }

  /// Nothing switches recording off: the rules that reuse their inputs compute on detached
  /// copies, so their backward pass records nothing (each loss uses its inputs once, so that no
  /// accumulation of gradients hides a tracked one), and inference on tracked variables
  /// records nothing either.
  @Test func backwardAndInferenceRecordNothing() throws {
    let (xs, ys): ([Float], [Float]) = ([1, 2, 3], [0.5, 1.5, 2])
    let x = Tensor(shape: [3], scalars: xs).trackingGradients()
    let y = Tensor(shape: [3], scalars: ys).trackingGradients()
    let cases: [(loss: Tensor, dx: [Float], dy: [Float])] = [
      ((x * y).sum(), ys, xs),
      ((x / y).sum(), ys.map { 1 / $0 }, zip(xs, ys).map { -$0 / ($1 * $1) }),
      (
        x.raised(to: y).sum(), zip(xs, ys).map { $1 * Foundation.pow($0, $1 - 1) },
        zip(xs, ys).map { Foundation.pow($0, $1) * Foundation.log($0) }
      ),
      (x.log().sum() + (y * 0).sum(), xs.map { 1 / $0 }, [0, 0, 0]),
    ]
    for (loss, dx, dy) in cases {
      let gradients = Autodiff.gradients(of: loss, withRespectTo: [x, y])
      #expect(gradients.allSatisfy { !$0.isTrackingGradients })
      expectClose(gradients[0], Tensor(shape: [3], scalars: dx), tolerance: 1e-4)
      expectClose(gradients[1], Tensor(shape: [3], scalars: dy), tolerance: 1e-4)
    }

    let model = try Sequential(
      spec: ModelSpec(
        inputShape: [3], layers: [.dense(inputSize: 3, outputSize: 2, activation: .relu)],
        loss: .meanSquaredError, seed: 1))
    let batch = x.reshaped(to: [1, 3])
    let tracked = model.initialVariables().mapValues { $0.trackingGradients() }
    let output = model(batch, variables: tracked)
    #expect(!output.isTrackingGradients)
    expectClose(output, model(batch.detached(), variables: model.initialVariables()), tolerance: 0)
  }

  @Test func broadcastGradientIsSummedBackToShape() {
    let bias = Tensor(shape: [3], scalars: [0, 0, 0])
    let (_, gradients) = Autodiff.valueWithGradient(at: [bias]) { v in (Tensor.ones([4, 3]) + v[0]).sum() }
    #expect(gradients[0].shape == [3])
    #expect(gradients[0].scalars == [4, 4, 4])
  }

  @Test func longTapeIsDifferentiatedAndReleasedWithoutDeepRecursion() async {
    // 200 000 recorded operations in one chain, on a non-main thread (smaller stack).
    let gradient = await Task.detached { () -> Float in
      var x = Tensor.ones([2]).trackingGradients()
      let leaf = x
      for _ in 0..<100_000 { x = x * 1.0001 + 0 }
      return Autodiff.gradients(of: x.sum(), withRespectTo: [leaf])[0].scalars[0]
    }.value
    let expected = Foundation.pow(Double(Float(1.0001)), 100_000)
    #expect(abs(Double(gradient) - expected) <= 1e-2 * expected)
  }

  /// A stage summing its gradients over micro-batches into one set of sums (weight gradients
  /// added straight into them by sgemm) gets what adding each micro-batch's gradients gives,
  /// L2 penalty included; its input gradients are unchanged.
  @Test func summingGradientsIntoSumsMatchesAddingThem() throws {
    let model = try Sequential(
      spec: ModelSpec(
        inputShape: [6],
        layers: [
          .dense(inputSize: 6, outputSize: 5, activation: .relu),
          .dense(inputSize: 5, outputSize: 3, activation: .linear),
        ],
        loss: .softmaxCrossEntropy, l2Penalty: 0.01, seed: 1))
    let variables = model.initialVariables()
    let inputs = sample([8, 6], seed: 2)
    let labels = Tensor(shape: [8], scalars: (0..<8).map { Float($0 % 3) })
    var added: [String: Tensor] = [:]
    var summed: [String: Tensor] = [:]
    for part in 0..<2 {
      let rows = (part * 4)..<(part * 4 + 4)
      let stage = model.forwardStage(
        inputs.slice(axis: 0, range: rows), variables: variables, layers: 0..<2,
        context: ForwardContext(training: true), inputGradient: true)
      let target = labels.slice(axis: 0, range: rows)
      let (_, lossGradient) = Autodiff.valueWithGradient(at: [stage.output]) {
        model.loss(output: $0[0], target: target)
      }
      let plain = stage.backward(lossGradient[0], addingPenalty: part == 0)
      for (name, gradient) in plain.variables {
        added[name] = added[name].map { $0 + gradient } ?? gradient
      }
      let input = stage.backward(lossGradient[0], addingPenalty: part == 0, addingInto: &summed)
      expectClose(try #require(input), try #require(plain.input), tolerance: 0)
    }
    #expect(Set(summed.keys) == Set(added.keys) && summed.count == 4)
    for (name, sum) in summed { expectClose(sum, try #require(added[name]), tolerance: 1e-6) }
  }

  /// A stage hands its input gradient on before it computes the weight products: when
  /// `inputGradientReady` runs, the weights' sums (kernels, filters) do not hold this
  /// micro-batch yet; the input gradient and the sums are those of a backward without it, bit
  /// for bit, also when the sums start empty, and they add up to each micro-batch's own
  /// gradients, and a micro-batch's to its halves'. The convolution's micro-batches (600 images)
  /// span two of its backward's chunks; their halves fit one each.
  @Test(arguments: [
    (
      "dense", 4,
      ModelSpec(
        inputShape: [6],
        layers: [
          .dense(inputSize: 6, outputSize: 5, activation: .relu),
          .dense(inputSize: 5, outputSize: 3, activation: .linear),
        ],
        loss: .meanSquaredError, seed: 4)
    ),
    (
      "convolution", 600,
      ModelSpec(
        inputShape: [2, 5, 5],
        layers: [
          .conv2d(inputChannels: 2, outputChannels: 3, kernelSize: 3, stride: 1, padding: 1, activation: .relu),
          .flatten, .dense(inputSize: 75, outputSize: 3, activation: .linear),
        ],
        loss: .meanSquaredError, seed: 5)
    ),
  ])
  func theWeightHalfWaitsUntilItIsComputed(_ name: String, _ batch: Int, _ spec: ModelSpec) throws {
    let model = try Sequential(spec: spec)
    let variables = model.initialVariables()
    let stages = (0..<2).map { part in
      model.forwardStage(
        sample([batch] + spec.inputShape, seed: UInt64(10 + part)), variables: variables,
        layers: model.layers.indices, context: ForwardContext(training: true), inputGradient: true)
    }
    let upstream = sample([batch, 3], seed: 12)
    var reference: [String: Tensor] = [:]
    var early: [String: Tensor] = [:]
    _ = stages[0].backward(upstream, addingInto: &reference)
    // With no sums yet, the stage makes them, so that this micro-batch's products can wait too.
    let first = stages[0].splitBackward(upstream, addingInto: &early)
    #expect(!first.weights.isEmpty)
    first.weights.compute()
    #expect(early.count == 4)
    let referenceInput = try #require(stages[1].backward(upstream, addingPenalty: false, addingInto: &reference))

    // The weights' sums before this micro-batch, and where they are written (the engine
    // writes into these very buffers; no copy of them is held, which would move the sums).
    // A convolution's bias goes with its filter; a dense layer's bias sums in the B half.
    func isWeight(_ name: String) -> Bool {
      name.hasSuffix("/kernel") || name.hasSuffix("/filter") || (name.hasPrefix("conv2d") && name.hasSuffix("/bias"))
    }
    let before = early.filter { isWeight($0.key) }.mapValues(\.scalars)
    let storage = early.filter { isWeight($0.key) }.mapValues { ($0.buffer.pointer, $0.scalarCount) }
    #expect(before.count == (name == "convolution" ? 3 : 2))
    // The B half: the input gradient, and the weights' sums not yet touched.
    let (input, weights) = stages[1].splitBackward(upstream, addingPenalty: false, addingInto: &early)
    let whenHandedOn = storage.mapValues { Array(UnsafeBufferPointer(start: $0.0, count: $0.1)) }
    #expect(whenHandedOn == before)
    // The W half, later, adds into those same buffers.
    weights.compute()
    #expect(
      storage.allSatisfy { early[$0.key]?.buffer.pointer == $0.value.0 },
      "the sums were moved; the check above read stale storage")
    #expect(early.filter { isWeight($0.key) }.mapValues(\.scalars) != before)
    expectClose(try #require(input), referenceInput, tolerance: 0)
    for (name, sum) in early { expectClose(sum, try #require(reference[name]), tolerance: 0) }
    let separate = stages.map { $0.backward(upstream, addingPenalty: false).variables }
    for (name, sum) in early {
      expectClose(sum, try #require(separate[0][name]) + #require(separate[1][name]), tolerance: 1e-4)
    }
    // The first micro-batch's gradients from its two halves (one chunk each) agree too.
    let firstInput = sample([batch] + spec.inputShape, seed: 10)
    let halves = [0..<(batch / 2), (batch / 2)..<batch].map { rows in
      model.forwardStage(
        firstInput.slice(axis: 0, range: rows), variables: variables, layers: model.layers.indices,
        context: ForwardContext(training: true), inputGradient: true
      )
      .backward(upstream.slice(axis: 0, range: rows), addingPenalty: false).variables
    }
    for (name, whole) in separate[0] {
      expectClose(whole, try #require(halves[0][name]) + #require(halves[1][name]), tolerance: 1e-4)
    }
  }
}
