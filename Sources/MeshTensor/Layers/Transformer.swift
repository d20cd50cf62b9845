import Foundation

/// A pre-norm transformer decoder block over [batch, time, modelSize]:
/// x + Attention(LayerNorm(x)), then x + MLP(LayerNorm(x)), with multi-head causal
/// self-attention and a GELU (tanh approximation) MLP. A pipeline may split it between its
/// attention and its MLP, or inside its MLP between hidden units (`TransformerPiece`).
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
    run(units: 0..<units, on: input, variables: variables)
  }

  /// The block's units, the places a pipeline may split it between: its attention, then each
  /// hidden unit of its MLP.
  var units: Int { 1 + mlpSize }

  /// The MLP's hidden units that the block's units `taken` take in.
  func hiddenUnits(of taken: Range<Int>) -> Range<Int> {
    (max(taken.lowerBound, 1) - 1)..<max(taken.upperBound - 1, 0)
  }

  /// Units `units` of the block (all of them, or a `TransformerPiece`'s) on `input`: the
  /// residual stream where they begin at the attention or the MLP, otherwise the MLP's
  /// normalised input and the residual stream with the hidden units so far added, side by side
  /// along the last axis. Returns the same where they end inside the MLP, otherwise the residual
  /// stream. For all units this is input + Attention(LayerNorm(input)), then the same with the
  /// MLP, added in that order.
  func run(units: Range<Int>, on input: Tensor, variables: [String: Tensor]) -> Tensor {
    func v(_ suffix: String) -> Tensor { variable(suffix, in: variables) }
    var stream = input
    if units.lowerBound == 0 {
      stream = input + attention(input.layerNormalized(gamma: v("ln1/gamma"), beta: v("ln1/beta")), v)
      if units.upperBound == 1 { return stream }
    }
    let normalized: Tensor
    if units.lowerBound <= 1 {
      normalized = stream.layerNormalized(gamma: v("ln2/gamma"), beta: v("ln2/beta"))
    } else {
      normalized = input.slice(axis: -1, range: 0..<modelSize)
      stream = input.slice(axis: -1, range: modelSize..<(2 * modelSize))
    }
    let hidden = hiddenUnits(of: units)
    /// The variable, or the piece of it that these hidden units meet.
    func mlp(_ suffix: String) -> Tensor {
      v(hidden.count < mlpSize ? VariablePiece.name(of: suffix, range: hidden) : suffix)
    }
    let activations = (Tensor.matmul(normalized, mlp("mlp/kernel1")) + mlp("mlp/bias1")).gelu()
    let sum = stream + Tensor.matmul(activations, mlp("mlp/kernel2"))
    guard units.upperBound == self.units else { return Tensor.concatenate([normalized, sum], alongAxis: -1) }
    return sum + v("mlp/bias2")
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
  /// A stage boundary may fall after the block's attention (place 1) or inside its MLP, after
  /// some of its hidden units (place 1 + units taken).
  func splittableInputs(ofInput _: [Int]) -> Int { units }

  /// What passes between its stages is the residual stream (with the MLP's normalised input
  /// inside the MLP), never the model's inputs.
  func piece(taking inputs: Range<Int>, wholeInputShape _: [Int], wholeOutputShape _: [Int], readsModelInputs _: Bool)
    -> any PieceOfLayer
  {
    TransformerPiece(block: self, units: inputs)
  }

  /// The attention's share before place 1 (as timed, else its share of the block's FLOPs: it is
  /// not half), then the MLP's share in proportion to its hidden units.
  func workShare(ofFirst inputs: Int, of _: Int, forInput inputShape: [Int], measuredShare: Double?) -> Double {
    guard inputs > 0 else { return 0 }
    let attention =
      measuredShare ?? Double(flops(of: .attention, forInput: inputShape)) / Double(max(1, flops(forInput: inputShape)))
    return attention + (1 - attention) * Double(inputs - 1) / Double(mlpSize)
  }

  /// The attention's share of the block's time, which its FLOPs tell badly: its GELU and
  /// softmax cost more per FLOP than its products, and differently on each machine.
  var measuredPlace: Int? { 1 }

  /// The attention hands the residual stream on as it is; inside the MLP the stages pass the
  /// normalised input beside it.
  func splitAddsWork(at place: Int) -> Bool { place != 1 }

  /// Place 1 (between the attention and the MLP), then places spread evenly over the MLP's
  /// hidden units.
  func places(_ pieces: Int, of count: Int) -> [Int] {
    let pieces = max(1, min(pieces, count - 1))
    return Array(Set([1] + (1..<pieces).map { 1 + mlpSize * $0 / pieces })).sorted()
  }

  /// In closed form (a planner asks for many ranges): the attention's variables with its layer
  /// norm, the MLP's layer norm where the piece begins the MLP, each hidden unit's column of the
  /// first kernel, its bias and its row of the second kernel, and the second bias at the end.
  func heldParameters(byPieceTaking inputs: Range<Int>, of count: Int) -> Int {
    let d = modelSize
    let attention = inputs.lowerBound == 0 ? 4 * d * d + 6 * d : 0
    let hidden = hiddenUnits(of: inputs).count
    guard hidden > 0 else { return attention }
    return attention + (inputs.lowerBound <= 1 ? 2 * d : 0) + hidden * (2 * d + 1)
      + (inputs.upperBound == count ? d : 0)
  }

  var piecesShareWeights: Bool { false }

  /// The MLP's weights, which each piece holds its hidden units' part of: the first kernel's
  /// columns and bias, the second kernel's rows.
  var piecedVariables: [(name: String, axis: Int)] {
    [("\(name)/mlp/kernel1", 1), ("\(name)/mlp/bias1", 0), ("\(name)/mlp/kernel2", 0)]
  }
}

/// Units `units` of a Transformer block (`TransformerBlock.units`), as one pipeline stage runs
/// them when the planner splits the block: unit 0 is its attention, units 1… its MLP's hidden
/// units. Between the attention and the MLP the stages pass the residual stream; inside the
/// MLP they pass the MLP's normalised input beside the residual stream with the hidden units so
/// far added (twice the model size along the last axis). A piece holds the attention's
/// variables when it runs the attention, the MLP's layer norm when it begins the MLP, its
/// hidden units' columns of the first kernel and bias and rows of the second kernel (each a
/// `VariablePiece`, or the whole variable when it takes every hidden unit), and the second bias
/// when it ends the block.
struct TransformerPiece: PieceOfLayer {
  let block: TransformerBlock
  let units: Range<Int>
  /// The residual stream it receives is the block's own, not the model's inputs.
  var readsModelInputs: Bool { false }

  init(block: TransformerBlock, units: Range<Int>) {
    precondition(
      units.lowerBound >= 0 && units.upperBound <= block.units && !units.isEmpty && units.count < block.units,
      "a piece takes some, not all, of block \(block.name)'s units")
    self.block = block
    self.units = units
  }

  /// The block's name with the units taken, e.g. "transformer0[0..<1]" (its attention).
  var name: String { "\(block.name)[\(units.lowerBound)..<\(units.upperBound)]" }

  private var hidden: Range<Int> { block.hiddenUnits(of: units) }

  var variableDeclarations: [VariableDeclaration] {
    let attention = units.lowerBound == 0 ? block.variableDeclarations(of: .attention) : []
    guard !hidden.isEmpty else { return attention }
    let pieced = Dictionary(uniqueKeysWithValues: block.piecedVariables.map { ($0.name, $0.axis) })
    let mlp = block.variableDeclarations(of: .mlp).compactMap { declaration -> VariableDeclaration? in
      if let axis = pieced[declaration.name] {
        guard hidden.count < block.mlpSize else { return declaration }
        return VariableDeclaration(
          VariablePiece(whole: declaration.name, wholeShape: declaration.shape, axis: axis, range: hidden),
          of: declaration)
      }
      let isNorm = declaration.name.hasPrefix("\(block.name)/ln2/")
      return (isNorm ? units.lowerBound <= 1 : units.upperBound == block.units) ? declaration : nil
    }
    return attention + mlp
  }

  /// The residual stream where the piece begins or ends at a sublayer's edge; inside the MLP,
  /// the normalised input beside it.
  func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
    let stream = try block.outputShape(forInput: [inputShape.first ?? 0, block.modelSize])
    let carried = [stream[0], 2 * block.modelSize]
    let expected = units.lowerBound <= 1 ? stream : carried
    guard inputShape == expected else {
      throw ModelSpecError("layer piece \(name) expects a per-sample input of shape \(expected), got \(inputShape)")
    }
    return units.upperBound == 1 || units.upperBound == block.units ? stream : carried
  }

  func flops(forInput inputShape: [Int]) -> Int {
    let attention = units.lowerBound == 0 ? block.flops(of: .attention, forInput: inputShape) : 0
    return attention + block.flops(of: .mlp, forInput: inputShape) * hidden.count / block.mlpSize
  }

  func keptScalars(forInput inputShape: [Int]) -> Int {
    let t = inputShape.first ?? 0
    let attention = units.lowerBound == 0 ? block.keptScalars(of: .attention, forInput: inputShape) : 0
    // Its normalised input and output, its hidden units before and after GELU, and the
    // normalised input again beside the output where it ends inside the MLP.
    let carriesOn = units.upperBound != 1 && units.upperBound != block.units
    return attention + (hidden.isEmpty ? 0 : t * block.modelSize * (carriesOn ? 3 : 2) + 2 * t * hidden.count)
  }

  func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    block.run(units: units, on: input, variables: variables)
  }
}
