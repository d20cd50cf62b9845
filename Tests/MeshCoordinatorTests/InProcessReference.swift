import MeshTensor

/// Single-process training of the same model on the same data in the same
/// order as the coordinator: the reference pipelined results must match.
struct InProcessReference {
  let model: Sequential
  var variables: [String: Tensor]
  let learningRate: Float
  /// Each step's gradients are clipped to this norm, all together; 0: not clipped.
  let clipNorm: Float

  init(model: Sequential, learningRate: Float, clipNorm: Float = 0) {
    self.model = model
    variables = model.initialVariables()
    self.learningRate = learningRate
    self.clipNorm = clipNorm
  }

  /// Per-step losses of plain SGD over `epochs`, with the coordinator's
  /// held-out split and shuffles (`PortableRandom.heldOutSplit`, then a
  /// permutation per epoch). With `weightsAfter`, step i (from 0) takes its
  /// loss and gradient at the weights after `weightsAfter(i)` steps and
  /// applies the gradient to the newest (PipeDream-2BW's stale weights).
  mutating func train(
    inputs: Tensor, targets: Tensor, epochs: Int, batchSize: Int, seed: UInt64, validationFraction: Double = 0,
    weightsAfter: ((Int) -> Int)? = nil
  ) -> [Float] {
    let order = PortableRandom.heldOutSplit(count: inputs.shape[0], validationFraction: validationFraction, seed: seed)
      .train
    let trainInputs = inputs.rows(order)
    let trainTargets = targets.rows(order)
    let optimizer = SGD(learningRate: .constant(learningRate))
    var losses: [Float] = []
    var history = [variables]
    for epoch in 1...epochs {
      let epochOrder = PortableRandom.permutation(
        trainInputs.shape[0], seed: PortableRandom.epochSeed(seed, epoch: epoch - 1))
      for step in 0..<(trainInputs.shape[0] / batchSize) {
        let batch = Array(epochOrder[(step * batchSize)..<((step + 1) * batchSize)])
        let seen = weightsAfter.map { history[$0(losses.count)] } ?? variables
        var (loss, gradients) = model.lossAndGradients(
          input: trainInputs.rows(batch), target: trainTargets.rows(batch), variables: seen,
          context: ForwardContext(training: true))
        losses.append(loss)
        if clipNorm > 0 { gradients = clipByGlobalNorm(gradients, maxNorm: clipNorm).gradients }
        for (name, gradient) in gradients {
          guard let variable = variables[name] else { preconditionFailure("a gradient of no variable: \(name)") }
          variables[name] =
            optimizer.update(variable: variable, gradient: gradient, slots: [:], step: losses.count).variable
        }
        if weightsAfter != nil { history.append(variables) }
      }
    }
    return losses
  }
}

extension InProcessReference {
  /// Accuracy on the coordinator's held-out split.
  func validationAccuracy(inputs: Tensor, targets: Tensor, seed: UInt64, validationFraction: Double) -> Double {
    let order = PortableRandom.heldOutSplit(count: inputs.shape[0], validationFraction: validationFraction, seed: seed)
      .validation
    let logits = model(inputs.rows(order), variables: variables)
    return Double(Loss.correctPredictions(logits: logits, labels: targets.rows(order))) / Double(order.count)
  }
}
