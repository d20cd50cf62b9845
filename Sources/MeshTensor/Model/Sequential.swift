/// A stack of layers built from a `ModelSpec`. Variable values are not stored here: callers pass
/// a `[String: Tensor]` keyed by variable name (see `variableDeclarations`), so the same model
/// value serves a parameter server, a pipeline stage, or single-process training.
public struct Sequential: Sendable {
  public let spec: ModelSpec
  public let layers: [any Layer]
  /// `activationShapes[i]` is the per-sample input shape of layer i; the last entry is the
  /// model's per-sample output shape.
  public let activationShapes: [[Int]]

  /// Builds the layers, naming the n-th layer of each kind prefix + n ("dense0", "dense1",
  /// "conv2d0", …), and checks that the shapes chain.
  public init(spec: ModelSpec) throws(ModelSpecError) {
    var counters: [String: Int] = [:]
    var layers: [any Layer] = []
    var shapes = [spec.inputShape]
    for layerSpec in spec.layers {
      let prefix = layerSpec.namePrefix
      let index = counters[prefix, default: 0]
      counters[prefix] = index + 1
      let layer = try layerSpec.makeLayer(name: "\(prefix)\(index)", earlier: layers)
      shapes.append(try layer.outputShape(forInput: shapes[shapes.count - 1]))
      layers.append(layer)
    }
    self.init(spec: spec, layers: layers, activationShapes: shapes)
  }

  /// A model of these layers, whose shapes chain as `activationShapes` says.
  init(spec: ModelSpec, layers: [any Layer], activationShapes: [[Int]]) {
    self.spec = spec
    self.layers = layers
    self.activationShapes = activationShapes
  }

  /// Declarations of the variables layers `range` (all by default) read, in layer order: those
  /// they own and those they share with an owner elsewhere (tied weights), each once. A shared
  /// variable read outside its owner's range is not regularised there, so the L2 penalty is
  /// added once, by the owner's stage.
  public func variableDeclarations(layers range: Range<Int>? = nil) -> [VariableDeclaration] {
    var seen = Set<String>()
    return layers[range ?? layers.indices].flatMap { $0.variableDeclarations + $0.sharedVariables }
      .filter { seen.insert($0.name).inserted }
  }

  /// Initial values of the variables of `range` (see `VariableDeclaration.initialValue`).
  public func initialVariables(layers range: Range<Int>? = nil) -> [String: Tensor] {
    Dictionary(
      uniqueKeysWithValues: variableDeclarations(layers: range).map { ($0.name, $0.initialValue(modelSeed: spec.seed)) }
    )
  }

  /// Whether a stage beginning at layer `index` receives some of the
  /// model's inputs: where only Flatten layers come before it, or at a
  /// piece (after the first) of a layer that reads them, whose input carries
  /// the model's inputs the stages before did not take.
  public func receivesModelInputs(atLayer index: Int) -> Bool {
    layers[..<index].allSatisfy { $0 is Flatten } || (layers[index] as? any PieceOfLayer)?.readsModelInputs == true
  }

  /// The parameters a stage of layers `range` holds: every variable they read, once (a piece
  /// of a summing layer, its part of the weight; a tied layer or a later piece of a recurrent
  /// one, the weights it shares with another stage).
  public func heldParameters(layers range: Range<Int>) -> Int {
    variableDeclarations(layers: range).reduce(0) { $0 + $1.scalarCount }
  }

  /// Per-layer parameter count, output activation size and forward FLOPs, for one sample.
  public var layerCosts: [LayerCost] {
    layers.enumerated().map { index, layer in
      LayerCost(
        name: layer.name, parameterCount: layer.parameterCount,
        outputActivationSize: activationShapes[index + 1].reduce(1, *),
        flops: layer.flops(forInput: activationShapes[index]))
    }
  }

  /// Runs layers `range` (all by default) on a batch without recording gradients: on detached
  /// copies of the input and the variables.
  public func callAsFunction(
    _ input: Tensor, variables: [String: Tensor], layers range: Range<Int>? = nil,
    context: ForwardContext = .inference
  ) -> Tensor {
    let untracked =
      variables.values.contains(where: \.isTrackingGradients) ? variables.mapValues { $0.detached() } : variables
    return run(input.detached(), variables: untracked, layers: range ?? layers.indices, context: context)
  }

  private func run(_ input: Tensor, variables: [String: Tensor], layers range: Range<Int>, context: ForwardContext)
    -> Tensor
  {
    layers[range].reduce(input) { $1($0, variables: variables, context: context) }
  }

  /// Runs layers `range` as one pipeline stage and keeps what backward needs. The returned
  /// value can be stored per micro-batch and its `backward(_:)` called later. Pass
  /// `inputGradient: false` on the first stage, whose input gradient nobody needs.
  public func forwardStage(
    _ input: Tensor, variables: [String: Tensor], layers range: Range<Int>, context: ForwardContext,
    inputGradient: Bool = true
  ) -> StageForward {
    precondition(
      range.lowerBound >= 0 && range.upperBound <= layers.count, "layer range \(range) outside 0..<\(layers.count)")
    let declarations = variableDeclarations(layers: range)
    let names = declarations.map(\.name)
    let values = names.map { name -> Tensor in
      guard let value = variables[name] else { preconditionFailure("variable \(name) is missing") }
      return value
    }
    let offset = inputGradient ? 1 : 0
    let (output, backpropagator) = Autodiff.valueWithBackpropagator(at: (inputGradient ? [input] : []) + values) {
      tracked in
      var local = variables
      for (index, name) in names.enumerated() { local[name] = tracked[index + offset] }
      return run(inputGradient ? tracked[0] : input, variables: local, layers: range, context: context)
    }
    let penalized = spec.l2Penalty == 0 ? [] : declarations.filter(\.regularized).map(\.name)
    return StageForward(
      output: output, variableNames: names, backpropagator: backpropagator,
      penalized: Dictionary(uniqueKeysWithValues: penalized.map { ($0, variables[$0]!) }),
      l2Penalty: spec.l2Penalty, inputGradient: inputGradient)
  }

  /// The spec's loss of `output` against `target` (without the L2 penalty, which stages add to
  /// their variable gradients).
  public func loss(output: Tensor, target: Tensor) -> Tensor {
    Loss.apply(spec.loss, output: output, target: target)
  }

  /// (λ/2)·Σ‖w‖² over the regularised variables of layers `range` that those layers own.
  public func penalty(variables: [String: Tensor], layers range: Range<Int>? = nil) -> Float {
    guard spec.l2Penalty != 0 else { return 0 }
    let owned = layers[range ?? layers.indices].flatMap(\.variableDeclarations).filter(\.regularized)
    return Loss.l2Penalty(owned.compactMap { variables[$0.name]?.detached() }, coefficient: spec.l2Penalty).scalar
  }

  /// One training step's loss (including the L2 penalty) and gradients for every variable,
  /// computed as a single stage over all layers.
  public func lossAndGradients(
    input: Tensor, target: Tensor, variables: [String: Tensor], context: ForwardContext
  ) -> (loss: Float, gradients: [String: Tensor]) {
    let stage = forwardStage(
      input, variables: variables, layers: layers.indices, context: context, inputGradient: false)
    let (loss, lossGradient) = Autodiff.valueWithGradient(at: [stage.output]) { outputs in
      self.loss(output: outputs[0], target: target)
    }
    return (loss.scalar + penalty(variables: variables), stage.backward(lossGradient[0]).variables)
  }
}

/// A stage's forward result and the recorded computation needed for its backward pass.
public struct StageForward: Sendable {
  /// The stage output (not tracking gradients); send it to the next stage.
  public let output: Tensor
  /// Names of the variables the stage read, in layer order.
  public let variableNames: [String]
  let backpropagator: Backpropagator
  let penalized: [String: Tensor]
  let l2Penalty: Float
  let inputGradient: Bool

  /// Given the gradient of the loss with respect to `output`, returns the gradients for the
  /// stage input and for each variable, including λ·w for L2-regularised variables unless
  /// `addingPenalty` is false (a stage that runs several micro-batches adds it once per step).
  public func backward(_ upstream: Tensor, addingPenalty: Bool = true) -> StageGradients {
    var sums: [String: Tensor] = [:]
    let input = backward(upstream, addingPenalty: addingPenalty, addingInto: &sums)
    return StageGradients(input: input, variables: sums)
  }

  /// Like `backward(_:addingPenalty:)`, but adds each variable's gradient into its entry in
  /// `sums` (set to the gradient when absent), the products straight into the sums: this is
  /// how a stage sums its gradients over micro-batches. Returns the input gradient.
  public func backward(
    _ upstream: Tensor, addingPenalty: Bool = true, addingInto sums: inout [String: Tensor]
  ) -> Tensor? {
    let (input, weights) = backward(upstream, addingPenalty: addingPenalty, addingInto: &sums, holdingBack: false)
    weights.compute()
    return input
  }

  /// `backward(_:addingPenalty:addingInto:)` in its two halves, as a zero-bubble schedule
  /// places them: returns the input gradient (B) and, held back, the weight gradients' matrix
  /// products, convolution filter and bias gradients into `sums` and the L2 penalty's gradient (W).
  /// Compute the W half once, before anything reads or replaces `sums`' tensors; computed at
  /// once it gives the sums `backward(_:addingPenalty:addingInto:)` gives, bit for bit. A stage
  /// forwarded with `inputGradient: false` has no input gradient (nil).
  public func splitBackward(
    _ upstream: Tensor, addingPenalty: Bool = true, addingInto sums: inout [String: Tensor]
  ) -> (input: Tensor?, weights: WeightGradients) {
    backward(upstream, addingPenalty: addingPenalty, addingInto: &sums, holdingBack: true)
  }

  /// Both: holding back, every variable gets a sum (products wait only when they add into
  /// one) and the penalty waits with them; not holding back, a variable without a sum gets
  /// its gradient as computed, and the penalty is added at once.
  private func backward(
    _ upstream: Tensor, addingPenalty: Bool, addingInto sums: inout [String: Tensor], holdingBack: Bool
  ) -> (input: Tensor?, weights: WeightGradients) {
    let offset = inputGradient ? 1 : 0
    // Each sum moves into the engine's array, so that it is owned there alone.
    var summed = [Tensor?](repeating: nil, count: offset) + variableNames.map { sums.removeValue(forKey: $0) }
    if holdingBack {
      for index in summed.indices.dropFirst(offset) where summed[index] == nil {
        summed[index] = Tensor.zeros(backpropagator.inputs[index].shape)
      }
    }
    let (grads, held) =
      holdingBack
      ? backpropagator.split(upstream, addingInto: &summed)
      : (backpropagator(upstream, addingInto: &summed), WeightGradients(products: []))
    var penalties: [@Sendable () -> Void] = []
    for (index, name) in variableNames.enumerated() {
      var gradient =
        summed[index + offset].take() ?? grads[index + offset]
        ?? Tensor.zeros(backpropagator.inputs[index + offset].shape)
      if addingPenalty, let weight = penalized[name] {
        let penalty = weight.detached() * l2Penalty
        if holdingBack {
          let destination = GradientSink(gradient)
          penalties.append { destination.add(penalty) }
        } else {
          gradient.accumulate(penalty)
        }
      }
      sums[name] = gradient
    }
    return (inputGradient ? gradientOfInput(grads) : nil, held.followed(by: penalties))
  }

  private func gradientOfInput(_ grads: [Tensor?]) -> Tensor {
    grads[0] ?? Tensor.zeros(backpropagator.inputs[0].shape)
  }
}

/// Gradients a stage produces for one micro-batch.
public struct StageGradients: Sendable {
  /// Gradient with respect to the stage input (nil when the stage ran with
  /// `inputGradient: false`); send it to the previous stage.
  public let input: Tensor?
  /// Gradient for each variable the stage read, by name.
  public let variables: [String: Tensor]
}
