/// Long short-term memory over [batch, time, features] input. Gates are ordered input, forget,
/// cell, output in "kernel" [F, 4H], "recurrent_kernel" [H, 4H] and "bias" [4H].
/// Returns [batch, time, H] or, without `returnSequences`, the last state [batch, H].
public struct LSTM: GatedRecurrentLayer {
  public let name: String
  public let inputSize: Int
  public let hiddenSize: Int
  public let returnSequences: Bool

  public static let gateCount = 4
  public static let carriedStates = 2

  /// z = x + h·R; c ← f⊙c + i⊙g; h ← o⊙tanh(c). `carry` is [h, c].
  public func step(_ x: Tensor, recurrent: Tensor, carry: inout [Tensor]) {
    let h = hiddenSize
    let z = x + Tensor.matmul(carry[0], recurrent)
    let inputGate = z.slice(axis: 1, range: 0..<h).sigmoid()
    let forgetGate = z.slice(axis: 1, range: h..<(2 * h)).sigmoid()
    let candidate = z.slice(axis: 1, range: (2 * h)..<(3 * h)).tanh()
    let outputGate = z.slice(axis: 1, range: (3 * h)..<(4 * h)).sigmoid()
    carry[1] = forgetGate * carry[1] + inputGate * candidate
    carry[0] = outputGate * carry[1].tanh()
  }
}

/// Gated recurrent unit over [batch, time, features] input. Gates are ordered update, reset,
/// candidate in "kernel" [F, 3H], "recurrent_kernel" [H, 3H] and "bias" [3H]; the reset gate
/// multiplies the recurrent projection of the candidate (the cuDNN / PyTorch variant).
public struct GRU: GatedRecurrentLayer {
  public let name: String
  public let inputSize: Int
  public let hiddenSize: Int
  public let returnSequences: Bool

  public static let gateCount = 3
  public static let carriedStates = 1

  /// r = h·R; u, r̂ from x + r; n = tanh(x_n + r̂⊙r_n); h ← n + u⊙(h − n). `carry` is [h].
  public func step(_ x: Tensor, recurrent: Tensor, carry: inout [Tensor]) {
    let h = hiddenSize
    let r = Tensor.matmul(carry[0], recurrent)
    let update = (x.slice(axis: 1, range: 0..<h) + r.slice(axis: 1, range: 0..<h)).sigmoid()
    let reset = (x.slice(axis: 1, range: h..<(2 * h)) + r.slice(axis: 1, range: h..<(2 * h))).sigmoid()
    let candidate =
      (x.slice(axis: 1, range: (2 * h)..<(3 * h))
      + reset * r.slice(axis: 1, range: (2 * h)..<(3 * h))).tanh()
    carry[0] = candidate + update * (carry[0] - candidate)
  }
}

/// What LSTM and GRU share: [batch, time, features] in, [batch, time, hidden] (or the last
/// state) out, and "kernel" [F, G·H], "recurrent_kernel" [H, G·H], "bias" [G·H] for G gates.
public protocol GatedRecurrentLayer: Layer {
  var inputSize: Int { get }
  var hiddenSize: Int { get }
  var returnSequences: Bool { get }
  /// Gates per hidden unit: 4 for LSTM, 3 for GRU.
  static var gateCount: Int { get }
  /// States carried from step to step, the hidden state first: 2 for LSTM (and its cell), 1 for GRU.
  static var carriedStates: Int { get }
  /// One time step: `x` is the step's input projection with bias, [batch, G·H]; updates `carry`.
  func step(_ x: Tensor, recurrent: Tensor, carry: inout [Tensor])
}

extension GatedRecurrentLayer {
  public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    var carry = initialCarry(batch: input.shape[0])
    let outputs = run(input, carry: &carry, variables: variables)
    return returnSequences ? Tensor.concatenate(outputs, alongAxis: 1) : carry[0]
  }

  /// The states before the first step: zeros, [batch, H] each.
  func initialCarry(batch: Int) -> [Tensor] {
    Array(repeating: Tensor.zeros([batch, hiddenSize]), count: Self.carriedStates)
  }

  /// Runs the layer over the time steps of `input` ([batch, steps, features]) from the
  /// states `carry` on, which it leaves after the last step. Returns each step's hidden
  /// state ([batch, 1, H]) when the layer returns sequences, else nothing.
  func run(_ input: Tensor, carry: inout [Tensor], variables: [String: Tensor]) -> [Tensor] {
    let (batch, steps, width) = (input.shape[0], input.shape[1], Self.gateCount * hiddenSize)
    // All input projections in one product: [B, T, G·H].
    let projected = Tensor.matmul(input, variable("kernel", in: variables)) + variable("bias", in: variables)
    let recurrent = variable("recurrent_kernel", in: variables)
    var outputs: [Tensor] = []
    for time in 0..<steps {
      step(
        projected.slice(axis: 1, range: time..<(time + 1)).reshaped(to: [batch, width]), recurrent: recurrent,
        carry: &carry)
      if returnSequences { outputs.append(carry[0].reshaped(to: [batch, 1, hiddenSize])) }
    }
    return outputs
  }

  public var variableDeclarations: [VariableDeclaration] {
    let width = Self.gateCount * hiddenSize
    return [
      declare("kernel", [inputSize, width], .glorotUniform(fanIn: inputSize, fanOut: width), regularized: true),
      declare(
        "recurrent_kernel", [hiddenSize, width], .glorotUniform(fanIn: hiddenSize, fanOut: width), regularized: true),
      declare("bias", [width], .zeros, regularized: false),
    ]
  }

  public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
    try require(inputShape, rank: 2, last: inputSize)
    guard inputShape[0] > 0 else {
      throw ModelSpecError("layer \(name) needs at least one time step, got \(inputShape)")
    }
    return returnSequences ? [inputShape[0], hiddenSize] : [hiddenSize]
  }

  public func flops(forInput inputShape: [Int]) -> Int {
    (inputShape.first ?? 0) * Self.gateCount * hiddenSize * (2 * (inputSize + hiddenSize) + 8)
  }

  /// Every step's gates and carried states.
  public func keptScalars(forInput inputShape: [Int]) -> Int {
    (inputShape.first ?? 0) * hiddenSize * (Self.gateCount + Self.carriedStates)
  }
}

extension LSTM: SplittableLayer {}
extension GRU: SplittableLayer {}

extension GatedRecurrentLayer {
  func splittableInputs(ofInput inputShape: [Int]) -> Int { inputShape.first ?? 0 }

  func piece(taking inputs: Range<Int>, wholeInputShape: [Int], wholeOutputShape _: [Int], readsModelInputs: Bool)
    -> any PieceOfLayer
  {
    StepsPiece(self, steps: inputs, wholeInputShape: wholeInputShape, readsModelInputs: readsModelInputs)
  }

  /// Every piece runs the whole weights.
  func heldParameters(byPieceTaking _: Range<Int>, of _: Int) -> Int { parameterCount }

  var piecesShareWeights: Bool { true }
}
