/// Time steps `steps` of a recurrent layer (LSTM, GRU), as one pipeline stage runs them
/// when the planner splits the layer between stages. A piece after the first receives,
/// flattened side by side, the layer's inputs of the steps not yet run, the states carried
/// so far (the hidden state first) and, when the layer returns sequences, the hidden states
/// of the steps run; a piece before the last passes on the same for the next. The last
/// returns what the whole layer does, so the pieces in a row compute the whole layer.
///
/// Every piece runs the layer's one set of weights: the first piece owns them (with their
/// L2 penalty), the others read them as shared variables, as a tied layer reads its
/// table. Backpropagation through time adds a weight's gradient over the steps; here each
/// stage computes its steps' share, and the ps adds the stages' shares up.
struct StepsPiece: PieceOfLayer {
  let whole: any GatedRecurrentLayer
  let steps: Range<Int>
  /// The whole layer's time steps and input features per step.
  let totalSteps: Int
  let features: Int
  let readsModelInputs: Bool

  init(_ whole: any GatedRecurrentLayer, steps: Range<Int>, wholeInputShape: [Int], readsModelInputs: Bool) {
    precondition(
      wholeInputShape.count == 2 && steps.lowerBound >= 0 && steps.upperBound <= wholeInputShape[0] && !steps.isEmpty
        && steps.count < wholeInputShape[0], "a piece runs some, not all, of layer \(whole.name)'s time steps")
    self.whole = whole
    self.steps = steps
    totalSteps = wholeInputShape[0]
    features = wholeInputShape[1]
    self.readsModelInputs = readsModelInputs
  }

  /// The whole layer's name with the steps run, e.g. "lstm1[0..<4]".
  var name: String { "\(whole.name)[\(steps.lowerBound)..<\(steps.upperBound)]" }

  var variableDeclarations: [VariableDeclaration] { steps.lowerBound == 0 ? whole.variableDeclarations : [] }

  var sharedVariables: [VariableDeclaration] {
    guard steps.lowerBound > 0 else { return [] }
    return whole.variableDeclarations.map {
      VariableDeclaration(name: $0.name, shape: $0.shape, initializer: $0.initializer, regularized: false)
    }
  }

  private var hidden: Int { whole.hiddenSize }
  private var carriedStates: Int { type(of: whole).carriedStates }

  /// Per sample, what passes between stages once `run` steps have run.
  private func carried(after run: Int) -> Int {
    (totalSteps - run) * features + carriedStates * hidden + (whole.returnSequences ? run * hidden : 0)
  }

  func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
    let expected = steps.lowerBound == 0 ? [totalSteps, features] : [carried(after: steps.lowerBound)]
    guard inputShape == expected else {
      throw ModelSpecError("layer piece \(name) expects a per-sample input of shape \(expected), got \(inputShape)")
    }
    guard steps.upperBound == totalSteps else { return [carried(after: steps.upperBound)] }
    return whole.returnSequences ? [totalSteps, hidden] : [hidden]
  }

  func flops(forInput _: [Int]) -> Int {
    whole.flops(forInput: [totalSteps, features]) * steps.count / totalSteps
  }

  /// Its steps' gates and states, the input it received and the output it made.
  func keptScalars(forInput inputShape: [Int]) -> Int {
    whole.keptScalars(forInput: [totalSteps, features]) * steps.count / totalSteps + inputShape.reduce(1, *)
      + ((try? outputShape(forInput: inputShape)) ?? []).reduce(1, *)
  }

  func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    let batch = input.shape[0]
    let first = steps.lowerBound
    // The inputs of the steps from this piece's first on, the states and the outputs so far.
    var remaining = input
    var carry = whole.initialCarry(batch: batch)
    var outputs: [Tensor] = []
    if first > 0 {
      let inputsLeft = (totalSteps - first) * features
      remaining = input.slice(axis: 1, range: 0..<inputsLeft).reshaped(to: [batch, totalSteps - first, features])
      if readsModelInputs { remaining = remaining.detached() }
      for state in 0..<carriedStates {
        let start = inputsLeft + state * hidden
        carry[state] = input.slice(axis: 1, range: start..<(start + hidden))
      }
      if whole.returnSequences {
        let start = inputsLeft + carriedStates * hidden
        outputs.append(input.slice(axis: 1, range: start..<input.shape[1]).reshaped(to: [batch, first, hidden]))
      }
    }
    let left = totalSteps - steps.upperBound
    let taken = left == 0 ? remaining : remaining.slice(axis: 1, range: 0..<steps.count)
    outputs += whole.run(taken, carry: &carry, variables: variables)
    guard left > 0 else { return whole.returnSequences ? Tensor.concatenate(outputs, alongAxis: 1) : carry[0] }
    var passed =
      [remaining.slice(axis: 1, range: steps.count..<(steps.count + left)).reshaped(to: [batch, -1])] + carry
    if whole.returnSequences { passed.append(Tensor.concatenate(outputs, alongAxis: 1).reshaped(to: [batch, -1])) }
    return Tensor.concatenate(passed, alongAxis: 1)
  }
}
