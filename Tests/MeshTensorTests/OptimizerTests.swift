import Testing

@testable import MeshTensor

/// One or two update steps on the scalar variable w = 1 with gradient 0.5, against values worked
/// out by hand.
struct OptimizerCase: Sendable, CustomTestStringConvertible {
  let name: String
  let optimizer: any Optimizer
  let expected: [Float]  // w after step 1, step 2
  var testDescription: String { name }
}

let optimizerCases: [OptimizerCase] = [
  // w − 0.1·0.5
  OptimizerCase(name: "SGD", optimizer: SGD(learningRate: .constant(0.1)), expected: [0.95, 0.9]),
  // v = 0.5 → w = 0.95; v = 0.9·0.5 + 0.5 = 0.95 → w = 0.855
  OptimizerCase(
    name: "momentum", optimizer: Momentum(learningRate: .constant(0.1), momentum: 0.9), expected: [0.95, 0.855]),
  // v = 0.5 → w = 1 − 0.1·(0.5 + 0.45) = 0.905; v = 0.95 → w = 0.905 − 0.1·(0.5 + 0.855) = 0.7695
  OptimizerCase(
    name: "Nesterov", optimizer: Momentum(learningRate: .constant(0.1), momentum: 0.9, nesterov: true),
    expected: [0.905, 0.7695]),
  // m̂ = 0.5, v̂ = 0.25 on both steps (constant gradient) → w −= 0.1·0.5/0.5 each step
  OptimizerCase(name: "Adam", optimizer: Adam(learningRate: .constant(0.1)), expected: [0.9, 0.8]),
  // w = 1 − 0.1·0.1·1 = 0.99 then − 0.1 → 0.89; 0.89 − 0.01·0.89 = 0.8811 then − 0.1 → 0.7811
  OptimizerCase(
    name: "AdamW", optimizer: AdamW(learningRate: .constant(0.1), weightDecay: 0.1), expected: [0.89, 0.7811]),
  // s = 0.25 → w = 1 − 0.1·0.5/0.5 = 0.9; s = 0.5 → w = 0.9 − 0.05/√0.5 = 0.829289
  OptimizerCase(name: "Adagrad", optimizer: Adagrad(learningRate: .constant(0.1)), expected: [0.9, 0.8292893]),
  // s = 0.025 → w = 1 − 0.005/0.1581139 = 0.9683772; s = 0.0475 → w −= 0.005/0.2179449 → 0.9454356
  OptimizerCase(
    name: "RMSProp", optimizer: RMSProp(learningRate: .constant(0.01), rho: 0.9), expected: [0.9683772, 0.9454356]),
]

@Suite("Optimizers, schedules and clipping")
struct OptimizerTests {
  @Test("update rule matches a hand-computed step", arguments: optimizerCases)
  func handComputedSteps(_ testCase: OptimizerCase) {
    let w0 = Tensor(shape: [1], scalars: [1])
    let g = Tensor(shape: [1], scalars: [0.5])
    let first = testCase.optimizer.update(variable: w0, gradient: g, slots: [:], step: 1)
    let second = testCase.optimizer.update(variable: first.variable, gradient: g, slots: first.slots, step: 2)
    #expect(abs(first.variable.scalar - testCase.expected[0]) < 1e-6)
    #expect(abs(second.variable.scalar - testCase.expected[1]) < 1e-6)
    #expect(first.slots.keys.sorted() == testCase.optimizer.slotNames.sorted())
    #expect(w0.scalar == 1, "the rule is pure: its input is unchanged")
  }

  @Test(arguments: optimizerCases)
  func vectorUpdateEqualsPerScalarUpdates(_ testCase: OptimizerCase) throws {
    // 19 scalars: Adam's eight-lane loop covers 16 of them and its scalar tail the rest.
    let w = sample([19], seed: 1)
    let g = sample([19], seed: 2)
    let m = positive([19], seed: 3)
    let v = positive([19], seed: 4)  // accumulators must be non-negative
    let slots = Dictionary(uniqueKeysWithValues: zip(testCase.optimizer.slotNames, [m, v]))
    let whole = testCase.optimizer.update(variable: w, gradient: g, slots: slots, step: 3)
    for i in 0..<19 {
      let one = testCase.optimizer.update(
        variable: Tensor(shape: [1], scalars: [w.scalars[i]]),
        gradient: Tensor(shape: [1], scalars: [g.scalars[i]]),
        slots: slots.mapValues { Tensor(shape: [1], scalars: [$0.scalars[i]]) }, step: 3)
      #expect(abs(whole.variable.scalars[i] - one.variable.scalar) <= 1e-6)
      for name in testCase.optimizer.slotNames {
        let (wholeSlot, oneSlot) = (try #require(whole.slots[name]), try #require(one.slots[name]))
        #expect(abs(wholeSlot.scalars[i] - oneSlot.scalar) <= 1e-6)
      }
    }
  }

  /// A variable and slots no other tensor shares are updated where they are
  /// (no second copy of a big variable), to the same values as the pure form.
  @Test(arguments: optimizerCases)
  func inPlaceUpdatesWriteTheTensorsOwnStorage(_ testCase: OptimizerCase) {
    var w = sample([19], seed: 1)
    let g = sample([19], seed: 2)
    var slots: [String: Tensor] = [:]
    let expected = testCase.optimizer.update(variable: w, gradient: g, slots: slots, step: 1)
    let storage = w.withUnsafeBufferPointer { $0.baseAddress }
    testCase.optimizer.update(variable: &w, gradient: g, slots: &slots, step: 1)
    #expect(w == expected.variable)
    #expect(w.withUnsafeBufferPointer { $0.baseAddress } == storage)
    let slotStorage = slots.mapValues { slot in slot.withUnsafeBufferPointer { $0.baseAddress } }
    let second = testCase.optimizer.update(variable: w, gradient: g, slots: slots, step: 2)
    testCase.optimizer.update(variable: &w, gradient: g, slots: &slots, step: 2)
    #expect(w == second.variable && slots == second.slots)
    #expect(w.withUnsafeBufferPointer { $0.baseAddress } == storage)
    #expect(slots.mapValues { slot in slot.withUnsafeBufferPointer { $0.baseAddress } } == slotStorage)
  }

  @Test func updatesEveryVariableOfAModel() {
    var variables = ["a": Tensor(shape: [2], scalars: [1, 2]), "b": Tensor(3)]
    var slots: [String: [String: Tensor]] = [:]
    let optimizer = Momentum(learningRate: .constant(0.5), momentum: 0.5)
    optimizer.update(
      &variables, along: ["a": Tensor(shape: [2], scalars: [1, 1]), "b": Tensor(2)], slots: &slots, step: 1)
    #expect(variables["a"]?.scalars == [0.5, 1.5])
    #expect(variables["b"]?.scalar == 2)
    #expect(slots["b"]?["velocity"]?.scalar == 2)
  }

  @Test func learningRateSchedules() {
    #expect(LearningRateSchedule.constant(0.3).rate(atStep: 100) == 0.3)
    let step = LearningRateSchedule.step(initial: 1, factor: 0.5, every: 2)
    #expect([1, 2, 3, 5].map { step.rate(atStep: $0) } == [1, 1, 0.5, 0.25])
    let cosine = LearningRateSchedule.cosine(initial: 1, minimum: 0, totalSteps: 10)
    #expect(
      abs(cosine.rate(atStep: 1) - 1) < 1e-6 && abs(cosine.rate(atStep: 6) - 0.5) < 1e-6
        && abs(cosine.rate(atStep: 20)) < 1e-6)
    let warm = LearningRateSchedule.linearWarmup(steps: 4, then: .constant(1))
    #expect([1, 2, 4, 5, 9].map { warm.rate(atStep: $0) } == [0.25, 0.5, 1, 1, 1])
  }

  @Test func clippingByGlobalNorm() throws {
    let gradients = ["a": Tensor(shape: [1], scalars: [3]), "b": Tensor(shape: [1], scalars: [4])]
    let (clipped, norm) = clipByGlobalNorm(gradients, maxNorm: 1)
    #expect(norm == 5)
    let (a, b) = try (#require(clipped["a"]), #require(clipped["b"]))
    #expect(abs(a.scalar - 0.6) < 1e-6 && abs(b.scalar - 0.8) < 1e-6)
    #expect(clipByGlobalNorm(gradients, maxNorm: 10).gradients["a"]?.scalar == 3)
  }
}
