import Foundation

/// A pre-norm transformer decoder block over [batch, time, modelSize]:
/// x + Attention(LayerNorm(x)), then x + MLP(LayerNorm(x)), with multi-head causal
/// self-attention and a GELU (tanh approximation) MLP. A pipeline may split it
/// between its two residual sublayers (`TransformerSublayer`).
public struct TransformerBlock: Layer {
  public let name: String
  public let modelSize: Int
  public let headCount: Int
  public let mlpSize: Int

  public init(name: String, modelSize: Int, headCount: Int, mlpSize: Int) {
    self.name = name
    self.modelSize = modelSize
    self.headCount = headCount
    self.mlpSize = mlpSize
  }

  /// The block's two residual sublayers, in order.
  enum Sublayer: CaseIterable {
    case attention, mlp
  }

  public var variableDeclarations: [VariableDeclaration] { Sublayer.allCases.flatMap(variableDeclarations(of:)) }

  /// The variables of one sublayer: its layer norm's and its own.
  func variableDeclarations(of sublayer: Sublayer) -> [VariableDeclaration] {
    let d = modelSize
    let m = mlpSize
    switch sublayer {
    case .attention:
      return [
        declare("ln1/gamma", [d], .ones, regularized: false),
        declare("ln1/beta", [d], .zeros, regularized: false),
        declare("attention/qkv_kernel", [d, 3 * d], .glorotUniform(fanIn: d, fanOut: 3 * d), regularized: true),
        declare("attention/qkv_bias", [3 * d], .zeros, regularized: false),
        declare("attention/output_kernel", [d, d], .glorotUniform(fanIn: d, fanOut: d), regularized: true),
        declare("attention/output_bias", [d], .zeros, regularized: false),
      ]
    case .mlp:
      return [
        declare("ln2/gamma", [d], .ones, regularized: false),
        declare("ln2/beta", [d], .zeros, regularized: false),
        declare("mlp/kernel1", [d, m], .glorotUniform(fanIn: d, fanOut: m), regularized: true),
        declare("mlp/bias1", [m], .zeros, regularized: false),
        declare("mlp/kernel2", [m, d], .glorotUniform(fanIn: m, fanOut: d), regularized: true),
        declare("mlp/bias2", [d], .zeros, regularized: false),
      ]
    }
  }

  public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
    try require(inputShape, rank: 2, last: modelSize)
    guard headCount > 0, modelSize % headCount == 0 else {
      throw ModelSpecError("layer \(name): model size \(modelSize) is not divisible by \(headCount) heads")
    }
    return inputShape
  }

  public func flops(forInput inputShape: [Int]) -> Int {
    Sublayer.allCases.reduce(0) { $0 + flops(of: $1, forInput: inputShape) }
  }

  func flops(of sublayer: Sublayer, forInput inputShape: [Int]) -> Int {
    let t = inputShape.first ?? 0
    let d = modelSize
    switch sublayer {
    case .attention: return t * (2 * d * 3 * d + 2 * d * d) + 4 * t * t * d
    case .mlp: return t * 4 * d * mlpSize
    }
  }

  /// The output, the normalised inputs, queries, keys and values, the
  /// attention's scores and weights per head, and the MLP's hidden layer.
  public func keptScalars(forInput inputShape: [Int]) -> Int {
    Sublayer.allCases.reduce(0) { $0 + keptScalars(of: $1, forInput: inputShape) }
  }

  func keptScalars(of sublayer: Sublayer, forInput inputShape: [Int]) -> Int {
    let t = inputShape.first ?? 0
    let d = modelSize
    switch sublayer {
    // Its normalised input, queries, keys and values, its output; scores and weights per head.
    case .attention: return t * d * 5 + 2 * headCount * t * t
    // Its normalised input and output, the hidden layer before and after GELU.
    case .mlp: return t * d * 2 + 2 * t * mlpSize
    }
  }

  public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    Sublayer.allCases.reduce(input) { run($1, on: $0, variables: variables) }
  }

  /// One residual sublayer on the residual stream `input`: input + Sublayer(LayerNorm(input)).
  func run(_ sublayer: Sublayer, on input: Tensor, variables: [String: Tensor]) -> Tensor {
    func v(_ suffix: String) -> Tensor { variable(suffix, in: variables) }
    switch sublayer {
    case .attention:
      return input + attention(input.layerNormalized(gamma: v("ln1/gamma"), beta: v("ln1/beta")), v)
    case .mlp:
      let normalized = input.layerNormalized(gamma: v("ln2/gamma"), beta: v("ln2/beta"))
      let hidden = (Tensor.matmul(normalized, v("mlp/kernel1")) + v("mlp/bias1")).gelu()
      return input + Tensor.matmul(hidden, v("mlp/kernel2")) + v("mlp/bias2")
    }
  }

  /// Multi-head causal self-attention of normalised input x [B, T, D].
  private func attention(_ x: Tensor, _ v: (String) -> Tensor) -> Tensor {
    let (batch, steps, d) = (x.shape[0], x.shape[1], modelSize)
    let headSize = d / headCount
    let qkv = (Tensor.matmul(x, v("attention/qkv_kernel")) + v("attention/qkv_bias"))
      .reshaped(to: [batch, steps, 3, headCount, headSize])
      .permuted([2, 0, 3, 1, 4])  // [3, B, H, T, hs]
    func part(_ index: Int) -> Tensor {
      qkv.slice(axis: 0, range: index..<(index + 1)).reshaped(to: [batch, headCount, steps, headSize])
    }
    let scores = Tensor.matmul(part(0), part(1), transposeB: true) * (1 / Float(headSize).squareRoot())
    let weights = scores.masked(where: Tensor.causalMask(size: steps), with: -1e9).softmax()
    let heads = Tensor.matmul(weights, part(2))  // [B, H, T, hs]
      .permuted([0, 2, 1, 3])
      .reshaped(to: [batch, steps, d])
    return Tensor.matmul(heads, v("attention/output_kernel")) + v("attention/output_bias")
  }
}

extension TransformerBlock: SplittableLayer {
  /// A stage boundary may fall between the block's attention and its MLP: its "inputs" are
  /// its two sublayers, and place 1 is after the attention.
  func splittableInputs(ofInput _: [Int]) -> Int { Sublayer.allCases.count }

  /// What passes between its stages is the residual stream, never the model's inputs.
  func piece(taking inputs: Range<Int>, wholeInputShape _: [Int], wholeOutputShape _: [Int], readsModelInputs _: Bool)
    -> any PieceOfLayer
  {
    precondition(inputs.count == 1, "a piece of a Transformer block runs one of its sublayers")
    return TransformerSublayer(block: self, sublayer: Sublayer.allCases[inputs.lowerBound])
  }

  /// The sublayers before the place's share of the block's FLOPs (the attention's is not half).
  func workShare(ofFirst inputs: Int, of _: Int, forInput inputShape: [Int]) -> Double {
    let before = Sublayer.allCases[..<inputs].reduce(0) { $0 + flops(of: $1, forInput: inputShape) }
    return Double(before) / Double(max(1, flops(forInput: inputShape)))
  }

  func heldParameters(byPieceTaking inputs: Range<Int>, of _: Int) -> Int {
    Sublayer.allCases[inputs].flatMap(variableDeclarations(of:)).reduce(0) { $0 + $1.scalarCount }
  }

  var piecesShareWeights: Bool { false }
}

/// One of a Transformer block's two residual sublayers, as one pipeline stage runs it when
/// the planner splits the block between its attention and its MLP. What passes between the
/// stages is the residual stream after the attention, of the block's input shape; each
/// piece holds its own sublayer's variables, named as the whole block's are.
struct TransformerSublayer: PieceOfLayer {
  let block: TransformerBlock
  let sublayer: TransformerBlock.Sublayer
  /// The residual stream it receives is the block's own, not the model's inputs.
  var readsModelInputs: Bool { false }

  private var index: Int { TransformerBlock.Sublayer.allCases.firstIndex(of: sublayer)! }

  /// The block's name with the sublayer, e.g. "transformer0[0..<1]" (its attention).
  var name: String { "\(block.name)[\(index)..<\(index + 1)]" }

  var variableDeclarations: [VariableDeclaration] { block.variableDeclarations(of: sublayer) }

  func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
    try block.outputShape(forInput: inputShape)
  }

  func flops(forInput inputShape: [Int]) -> Int { block.flops(of: sublayer, forInput: inputShape) }

  func keptScalars(forInput inputShape: [Int]) -> Int { block.keptScalars(of: sublayer, forInput: inputShape) }

  func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    block.run(sublayer, on: input, variables: variables)
  }
}
