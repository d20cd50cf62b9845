import MeshTensor

/// Single-process training of the same model on the same data in the same
/// order as the coordinator: the reference pipelined results must match.
struct InProcessReference {
  let model: Sequential
  var variables: [String: Tensor]
  let learningRate: Float

  init(model: Sequential, learningRate: Float) {
    self.model = model
    variables = model.initialVariables()
    self.learningRate = learningRate
  }

  static func rows(_ tensor: Tensor, _ indices: [Int]) -> Tensor {
    let rowShape = Array(tensor.shape.dropFirst())
    return tensor.reshaped(to: [tensor.shape[0], rowShape.reduce(1, *)])
      .gathering(indices: indices, indexShape: [indices.count]).reshaped(to: [indices.count] + rowShape)
  }

  /// Per-step losses of plain SGD over `epochs`, with the coordinator's
  /// shuffles (seed, then seed + epoch) and held-out split (the first
  /// `held` examples of the seed's permutation).
  mutating func train(inputs: Tensor, targets: Tensor, epochs: Int, batchSize: Int, seed: UInt64, held: Int = 0) -> [Float] {
    let order = Array(PortableRandom.permutation(inputs.shape[0], seed: seed)[held...])
    let trainInputs = Self.rows(inputs, order)
    let trainTargets = Self.rows(targets, order)
    let optimizer = SGD(learningRate: .constant(learningRate))
    var losses: [Float] = []
    for epoch in 1...epochs {
      let epochOrder = PortableRandom.permutation(trainInputs.shape[0], seed: seed &+ UInt64(epoch))
      for step in 0..<(trainInputs.shape[0] / batchSize) {
        let batch = Array(epochOrder[(step * batchSize)..<((step + 1) * batchSize)])
        let (loss, gradients) = model.lossAndGradients(
          input: Self.rows(trainInputs, batch), target: Self.rows(trainTargets, batch), variables: variables,
          context: ForwardContext(training: true))
        losses.append(loss)
        for (name, gradient) in gradients {
          variables[name] = optimizer.update(variable: variables[name]!, gradient: gradient, slots: [:], step: losses.count).variable
        }
      }
    }
    return losses
  }
}

extension InProcessReference {
  /// Accuracy on the coordinator's held-out split.
  func validationAccuracy(inputs: Tensor, targets: Tensor, seed: UInt64, held: Int) -> Double {
    let order = Array(PortableRandom.permutation(inputs.shape[0], seed: seed)[..<held])
    let logits = model(Self.rows(inputs, order), variables: variables)
    return Double(Loss.correctPredictions(logits: logits, labels: Self.rows(targets, order))) / Double(held)
  }
}
