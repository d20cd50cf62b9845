import Testing

@testable import MeshTensor

@Suite("End-to-end training")
struct TrainingTests {
  @Test func mlpLearnsXOR() throws {
    let model = try Sequential(
      spec: ModelSpec(
        inputShape: [2],
        layers: [
          .dense(inputSize: 2, outputSize: 8, activation: .tanh),
          .dense(inputSize: 8, outputSize: 2, activation: .linear),
        ],
        loss: .softmaxCrossEntropy, seed: 1))
    let x = Tensor(shape: [4, 2], scalars: [0, 0, 0, 1, 1, 0, 1, 1])
    let labels = Tensor(shape: [4], scalars: [0, 1, 1, 0])
    var variables = model.initialVariables()
    var slots: [String: [String: Tensor]] = [:]
    let optimizer = Adam(learningRate: .constant(0.05))
    var loss: Float = .infinity
    for step in 1...300 {
      let result = model.lossAndGradients(
        input: x, target: labels, variables: variables, context: ForwardContext(training: true))
      loss = result.loss
      optimizer.update(&variables, along: result.gradients, slots: &slots, step: step)
    }
    #expect(loss < 0.05)
    #expect(model(x, variables: variables).argmaxLastAxis() == [0, 1, 1, 0])
  }

  @Test func convolutionalModelFitsATinyImageSet() throws {
    // Class 0: bright left half; class 1: bright right half.
    let model = try Sequential(
      spec: ModelSpec(
        inputShape: [1, 4, 4],
        layers: [
          .conv2d(inputChannels: 1, outputChannels: 2, kernelSize: 3, stride: 1, padding: 1, activation: .relu),
          .avgPool2d(size: 2, stride: 2), .flatten, .dense(inputSize: 8, outputSize: 2, activation: .linear),
        ],
        loss: .softmaxCrossEntropy, seed: 3))
    var images: [Float] = []
    var labels: [Float] = []
    for index in 0..<8 {
      let label = index % 2
      for _ in 0..<4 { for column in 0..<4 { images.append((column < 2) == (label == 0) ? 1 : 0) } }
      labels.append(Float(label))
    }
    let x = Tensor(shape: [8, 1, 4, 4], scalars: images) + sample([8, 1, 4, 4], seed: 4) * 0.1
    let y = Tensor(shape: [8], scalars: labels)
    var variables = model.initialVariables()
    var slots: [String: [String: Tensor]] = [:]
    let optimizer = SGD(learningRate: .linearWarmup(steps: 5, then: .constant(0.5)))
    for step in 1...100 {
      let result = model.lossAndGradients(
        input: x, target: y, variables: variables, context: ForwardContext(training: true))
      optimizer.update(
        &variables, along: clipByGlobalNorm(result.gradients, maxNorm: 5).gradients, slots: &slots, step: step)
    }
    #expect(model(x, variables: variables).argmaxLastAxis() == labels.map { Int($0) })
  }
}
