/// A place in a model's computation where one pipeline stage may end and the next begin:
/// before layer `layer` has taken in its input number `inputs` (a Dense layer's feature, a
/// convolution's channel, a recurrent layer's time step, a Transformer block's unit: its
/// attention, then its MLP's hidden units). `inputs` 0 is before the whole layer; anything
/// else is inside a layer that may be split (see `SplittableLayer`).
public struct LayerPosition: Hashable, Comparable, Codable, Sendable, CustomStringConvertible,
  ExpressibleByIntegerLiteral
{
  public var layer: Int
  public var inputs: Int

  public init(layer: Int, inputs: Int = 0) {
    self.layer = layer
    self.inputs = inputs
  }

  /// Before the whole layer of this index.
  public init(integerLiteral layer: Int) { self.init(layer: layer) }

  public static func < (lhs: LayerPosition, rhs: LayerPosition) -> Bool {
    (lhs.layer, lhs.inputs) < (rhs.layer, rhs.inputs)
  }

  /// "3" before layer 3, "3:256" after its first 256 inputs.
  public var description: String { inputs == 0 ? "\(layer)" : "\(layer):\(inputs)" }
}

/// A layer a pipeline stage boundary may fall inside, after some of its inputs: one whose
/// output sums over its inputs (`SumOverInputs`: a Dense layer's features, a convolution's
/// channels), one that runs over them in order (`GatedRecurrentLayer`: its time steps), or a
/// Transformer block (its attention, then its MLP's hidden units).
protocol SplittableLayer: Layer {
  /// How many inputs the layer takes in, for its per-sample input shape.
  func splittableInputs(ofInput inputShape: [Int]) -> Int
  /// The piece of the layer that takes in `inputs`, as one stage runs it.
  func piece(taking inputs: Range<Int>, wholeInputShape: [Int], wholeOutputShape: [Int], readsModelInputs: Bool)
    -> any PieceOfLayer
  /// The parameters the stage running the piece that takes in `inputs` of `count` holds.
  func heldParameters(byPieceTaking inputs: Range<Int>, of count: Int) -> Int
  /// Whether its pieces all run the layer's one set of weights, which their stages then
  /// share (a recurrent layer's), rather than each its own part of them.
  var piecesShareWeights: Bool { get }
  /// The share of the layer's work its first `inputs` of `count` inputs take; `measuredShare`
  /// is the share its part before `measuredPlace` took when timed (nil when not timed).
  func workShare(ofFirst inputs: Int, of count: Int, forInput inputShape: [Int], measuredShare: Double?) -> Double
  /// A place whose share of the layer's work its inputs do not tell, so that `timeLayers`
  /// times the part before it apart (`LayerTiming.firstPartShare`): a Transformer block's
  /// attention. Nil for a layer whose inputs each cost alike.
  var measuredPlace: Int? { get }
  /// Whether a stage boundary at `place` adds work to the layer's (slicing what the next part
  /// takes, copying on what it does not, the cost `timeLayers` times at the middle): not
  /// between a Transformer block's attention and its MLP, which pass the residual stream on.
  func splitAddsWork(at place: Int) -> Bool
  /// The places inside the layer (input counts from 1 to `count` − 1) a planner weighs when it
  /// may weigh about `pieces` − 1 of them (a Transformer block one more: the place between its
  /// attention and its MLP).
  func places(_ pieces: Int, of count: Int) -> [Int]
  /// The variables its pieces each hold a part of, with the axis they are cut along (a piece
  /// holds the range of that axis its inputs meet); none when its pieces share its weights.
  var piecedVariables: [(name: String, axis: Int)] { get }
}

extension SplittableLayer {
  /// In proportion to the inputs (features, channels, time steps), which each cost alike.
  func workShare(ofFirst inputs: Int, of count: Int, forInput _: [Int], measuredShare _: Double?) -> Double {
    Double(inputs) / Double(count)
  }

  var measuredPlace: Int? { nil }

  func splitAddsWork(at _: Int) -> Bool { true }

  /// Spread evenly over the inputs.
  func places(_ pieces: Int, of count: Int) -> [Int] {
    let pieces = min(pieces, count)
    return Array(Set((1..<max(1, pieces)).map { count * $0 / pieces })).sorted()
  }

  var piecedVariables: [(name: String, axis: Int)] { [] }
}

/// A part of a layer split between pipeline stages (`LayerPiece`, `StepsPiece`, `TransformerPiece`).
protocol PieceOfLayer: Layer {
  /// Whether the whole layer reads the model's inputs (as they are, or flattened: only
  /// Flatten layers come before it): a piece after the first then receives some of them.
  var readsModelInputs: Bool { get }
}

/// A layer whose output is activation(Σᵢ wᵢ·xᵢ + bias) over its inputs (a Dense layer's
/// features, a convolution's input channels), so that a pipeline can take its inputs in
/// runs, one stage after another, each adding its run's share to the sum (`LayerPiece`).
protocol SumOverInputs: SplittableLayer {
  /// How many inputs the sum runs over.
  var inputCount: Int { get }
  /// The axis of a per-sample input shape that the inputs lie along.
  func inputAxis(ofInput inputShape: [Int]) -> Int
  /// The variable that weighs the inputs, e.g. "dense0/kernel"; the layer's others (its
  /// bias) are read only once the sum is complete.
  var weightName: String { get }
  /// The axis of the weight that its inputs' weights lie along.
  var weightInputAxis: Int { get }
  /// The share of the sum of the inputs in `input`, weighed by `weight` (the whole weight,
  /// or the piece of it along `weightInputAxis` that those inputs meet), without bias.
  func partialSum(_ input: Tensor, weight: Tensor) -> Tensor
  /// The layer's output from its complete sum: bias, then activation.
  func finish(_ sum: Tensor, variables: [String: Tensor]) -> Tensor
}

extension SumOverInputs {
  func splittableInputs(ofInput _: [Int]) -> Int { inputCount }

  var piecesShareWeights: Bool { false }

  func piece(taking inputs: Range<Int>, wholeInputShape: [Int], wholeOutputShape: [Int], readsModelInputs: Bool)
    -> any PieceOfLayer
  {
    LayerPiece(
      self, inputs: inputs, wholeInputShape: wholeInputShape, wholeOutputShape: wholeOutputShape,
      readsModelInputs: readsModelInputs)
  }

  /// Its weight, along the axis its inputs meet.
  var piecedVariables: [(name: String, axis: Int)] { [(weightName, weightInputAxis)] }

  /// The rows of the weight its inputs meet, and the rest (the bias) when it is the last piece.
  func heldParameters(byPieceTaking inputs: Range<Int>, of count: Int) -> Int {
    let weight = variableDeclarations.first { $0.name == weightName }?.scalarCount ?? 0
    return weight / inputCount * inputs.count + (inputs.upperBound == count ? parameterCount - weight : 0)
  }
}

/// Inputs `inputs` of a layer whose output sums over its inputs, as one pipeline stage takes
/// them when the planner splits the layer between stages. A piece after the first receives,
/// flattened side by side, the layer's inputs not yet taken and the sum so far; a piece
/// before the last passes on the same for the next. The last adds bias and activation, so
/// the pieces in a row compute the whole layer (up to the order of the sum's additions).
///
/// Each piece holds only the part of the weight its inputs meet, as a variable of its own
/// (`VariablePiece`), with that part's L2 penalty: the stages share no variable, each is the
/// only writer of what it holds. The last piece holds the rest (the bias).
///
/// A piece of the model's first layer passes no gradient back to the model's inputs it
/// receives (nobody needs it), only to the sum so far, which the piece before needs.
struct LayerPiece: PieceOfLayer {
  let whole: any SumOverInputs
  let inputs: Range<Int>
  let wholeInputShape: [Int]
  let wholeOutputShape: [Int]
  let readsModelInputs: Bool

  init(
    _ whole: any SumOverInputs, inputs: Range<Int>, wholeInputShape: [Int], wholeOutputShape: [Int],
    readsModelInputs: Bool
  ) {
    precondition(
      inputs.lowerBound >= 0 && inputs.upperBound <= whole.inputCount && !inputs.isEmpty
        && inputs.count < whole.inputCount, "a piece takes some, not all, of layer \(whole.name)'s inputs")
    self.whole = whole
    self.inputs = inputs
    self.wholeInputShape = wholeInputShape
    self.wholeOutputShape = wholeOutputShape
    self.readsModelInputs = readsModelInputs
  }

  /// The whole layer's name with the inputs taken, e.g. "dense1[0..<512]".
  var name: String { "\(whole.name)[\(inputs.lowerBound)..<\(inputs.upperBound)]" }

  /// The piece of the weight this piece's inputs meet; the rest of the layer's variables
  /// when it is the last.
  var variableDeclarations: [VariableDeclaration] {
    whole.variableDeclarations.compactMap { declaration in
      guard declaration.name == whole.weightName else {
        return inputs.upperBound == whole.inputCount ? declaration : nil
      }
      let piece = VariablePiece(
        whole: declaration.name, wholeShape: declaration.shape, axis: whole.weightInputAxis, range: inputs)
      return VariableDeclaration(piece, of: declaration)
    }
  }

  private var weightPieceName: String {
    VariablePiece.name(of: whole.weightName, range: inputs)
  }

  private var axis: Int { whole.inputAxis(ofInput: wholeInputShape) }
  private var scalarsPerInput: Int { wholeInputShape.reduce(1, *) / whole.inputCount }

  /// Per sample: the inputs from `first` on, then the sum over those before it.
  private func carried(from first: Int) -> Int {
    (whole.inputCount - first) * scalarsPerInput + wholeOutputShape.reduce(1, *)
  }

  /// The whole layer's per-sample input shape, holding inputs from `first` on.
  private func inputShape(from first: Int) -> [Int] {
    var shape = wholeInputShape
    shape[axis] = whole.inputCount - first
    return shape
  }

  func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
    let expected = inputs.lowerBound == 0 ? wholeInputShape : [carried(from: inputs.lowerBound)]
    guard inputShape == expected else {
      throw ModelSpecError("layer piece \(name) expects a per-sample input of shape \(expected), got \(inputShape)")
    }
    return inputs.upperBound == whole.inputCount ? wholeOutputShape : [carried(from: inputs.upperBound)]
  }

  func flops(forInput inputShape: [Int]) -> Int {
    whole.flops(forInput: wholeInputShape) * inputs.count / whole.inputCount
  }

  /// The input it received and the output it made: the inputs it takes, its share of the
  /// sum, the sum and what it passes on are of their size.
  func keptScalars(forInput inputShape: [Int]) -> Int {
    inputShape.reduce(1, *) + ((try? outputShape(forInput: inputShape)) ?? []).reduce(1, *)
  }

  func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    let batch = input.shape[0]
    let count = whole.inputCount
    // The whole layer's inputs from this piece's first on, and the sum over those before.
    var remaining = input
    var sumSoFar: Tensor?
    if inputs.lowerBound > 0 {
      let remainingScalars = (count - inputs.lowerBound) * scalarsPerInput
      remaining = input.slice(axis: 1, range: 0..<remainingScalars)
        .reshaped(to: [batch] + inputShape(from: inputs.lowerBound))
      if readsModelInputs { remaining = remaining.detached() }
      sumSoFar = input.slice(axis: 1, range: remainingScalars..<input.shape[1]).reshaped(to: [batch] + wholeOutputShape)
    }
    let batchAxis = axis + 1
    let taken = inputs.upperBound == count ? remaining : remaining.slice(axis: batchAxis, range: 0..<inputs.count)
    guard let weight = variables[weightPieceName] else { preconditionFailure("variable \(weightPieceName) is missing") }
    let share = whole.partialSum(taken, weight: weight)
    let sum = sumSoFar.map { $0 + share } ?? share
    guard inputs.upperBound < count else { return whole.finish(sum, variables: variables) }
    let left = remaining.slice(axis: batchAxis, range: inputs.count..<(count - inputs.lowerBound))
    return Tensor.concatenate([left.reshaped(to: [batch, -1]), sum.reshaped(to: [batch, -1])], alongAxis: 1)
  }
}

extension Sequential {
  /// How many inputs layer `index` takes in when a stage boundary may fall inside it (a
  /// Dense layer's features, a convolution's channels, a recurrent layer's time steps, a
  /// Transformer block's units), or nil when it may not.
  public func splittableInputs(ofLayer index: Int) -> Int? {
    guard let layer = layers[index] as? any SplittableLayer else { return nil }
    let count = layer.splittableInputs(ofInput: activationShapes[index])
    return count > 1 ? count : nil
  }

  /// The layers of one pipeline stage from `start` to `end`: this model with the layers those
  /// positions fall inside cut into pieces there, and the range of its layers the stage runs.
  /// Every stage of a pipeline cuts the same layers at the same inputs, so what one stage
  /// passes on is what the next expects.
  public func stage(from start: LayerPosition, to end: LayerPosition) throws(ModelSpecError)
    -> (model: Sequential, layers: Range<Int>)
  {
    guard start < end, start.layer >= 0, start.inputs >= 0, end.inputs >= 0,
      end.layer < layers.count || end == LayerPosition(layer: layers.count)
    else {
      throw ModelSpecError(
        "a stage from \(start) to \(end) is not a non-empty part of the model's \(layers.count) layers")
    }
    let cut = try cut(at: [start, end])
    func index(of position: LayerPosition) -> Int {
      cut.positions.firstIndex(of: position) ?? cut.positions.count
    }
    return (cut.model, index(of: start)..<index(of: end))
  }

  /// The share of layer `index`'s work that its first `inputs` inputs take: their share of the
  /// inputs, or in a Transformer block its attention's share (`measuredShare`, the layer's
  /// `LayerTiming.firstPartShare`, or else its share of the block's FLOPs) and the MLP's
  /// hidden units' share of the rest.
  public func workShare(ofLayer index: Int, firstInputs inputs: Int, measuredShare: Double? = nil) -> Double {
    guard let layer = layers[index] as? any SplittableLayer, let count = splittableInputs(ofLayer: index) else {
      return inputs == 0 ? 0 : 1
    }
    return layer.workShare(ofFirst: inputs, of: count, forInput: activationShapes[index], measuredShare: measuredShare)
  }

  /// The place inside layer `index` whose share of the layer's work `timeLayers` measures, if any.
  func measuredPlace(ofLayer index: Int) -> Int? {
    splittableInputs(ofLayer: index) == nil ? nil : (layers[index] as? any SplittableLayer)?.measuredPlace
  }

  /// Whether a stage boundary at `place` inside layer `index` adds work to the layer's (what
  /// `LayerTiming.splitTotal` measures): not between a Transformer block's attention and MLP.
  public func splitAddsWork(ofLayer index: Int, at place: Int) -> Bool {
    (layers[index] as? any SplittableLayer)?.splitAddsWork(at: place) ?? true
  }

  /// The places inside layer `index` (input counts) a planner weighs when it may weigh about
  /// `pieces` − 1 of them: spread over its inputs, and for a Transformer block the place
  /// between its attention and its MLP besides. Empty when the layer may not be split.
  public func places(inLayer index: Int, pieces: Int) -> [Int] {
    guard let layer = layers[index] as? any SplittableLayer, let count = splittableInputs(ofLayer: index) else {
      return []
    }
    return layer.places(pieces, of: count)
  }

  /// Whether the stages that run the pieces of layer `index` share its weights (a recurrent
  /// layer's, which each piece runs whole): their gradients then add up only on the ps, and
  /// only under sync consistency.
  public func piecesShareWeights(ofLayer index: Int) -> Bool {
    (layers[index] as? any SplittableLayer)?.piecesShareWeights ?? false
  }

  /// The parameters a stage holds that runs the piece of layer `index` taking in `inputs`:
  /// a summing layer's rows of its weight (and the bias with the last piece), a recurrent
  /// layer's weights whole, which each of its pieces runs, a Transformer block's variables of
  /// the units it runs.
  public func heldParameters(byPieceOf index: Int, taking inputs: Range<Int>) -> Int {
    guard let layer = layers[index] as? any SplittableLayer, let count = splittableInputs(ofLayer: index) else {
      return layers[index].parameterCount
    }
    return layer.heldParameters(byPieceTaking: inputs, of: count)
  }

  /// `held` (variables as a pipeline's stages hold them, e.g. a ps checkpoint's) with the
  /// pieces of each split layer's weights ("dense1/kernel#inputs:0-512") put back together into
  /// the whole weights, when they cover them; pieces that do not, and anything else named after
  /// a piece (its optimizer slots, "…#inputs:0-512@m"), are left out.
  public func joiningPieces(_ held: [String: Tensor]) -> [String: Tensor] {
    var joined = held.filter { !$0.key.contains(VariablePiece.marker) }
    let pieced = layers.flatMap { layer in
      ((layer as? any SplittableLayer)?.piecedVariables ?? []).compactMap { pieced in
        layer.variableDeclarations.first { $0.name == pieced.name }.map { ($0, pieced.axis) }
      }
    }
    for (weight, axis) in pieced where joined[weight.name] == nil {
      let prefix = weight.name + VariablePiece.marker
      let pieces = held.compactMap { name, value -> (VariablePiece, Tensor)? in
        guard name.hasPrefix(prefix) else { return nil }
        let bounds = name.dropFirst(prefix.count).split(separator: "-", omittingEmptySubsequences: false)
        guard bounds.count == 2, let first = Int(bounds[0]), let end = Int(bounds[1]), first >= 0, first < end,
          end <= weight.shape[axis]
        else { return nil }
        let piece = VariablePiece(whole: weight.name, wholeShape: weight.shape, axis: axis, range: first..<end)
        return value.shape == piece.shape ? (piece, value) : nil
      }.sorted { $0.0.range.lowerBound < $1.0.range.lowerBound }
      guard let last = pieces.last,
        zip([0] + pieces.map(\.0.range.upperBound), pieces).allSatisfy({ $0 == $1.0.range.lowerBound }),
        last.0.range.upperBound == weight.shape[axis]
      else { continue }
      // Every element is written: the pieces cover the whole.
      let whole = Tensor(uninitializedShape: weight.shape)
      for (piece, value) in pieces {
        for run in piece.runs {
          (whole.buffer.pointer + run.whole).update(from: value.buffer.pointer + run.piece, count: run.count)
        }
      }
      joined[weight.name] = whole
    }
    return joined
  }

  /// The variables a pipeline of stages between `bounds` holds: the model's,
  /// with the weight of each layer a bound falls inside held as pieces.
  public func variableDeclarations(cutAt bounds: [LayerPosition]) throws(ModelSpecError) -> [VariableDeclaration] {
    try cut(at: bounds).model.variableDeclarations()
  }

  /// This model with the layers `positions` fall inside cut into pieces there, and where each
  /// of its layers starts in this model.
  private func cut(at positions: [LayerPosition]) throws(ModelSpecError)
    -> (model: Sequential, positions: [LayerPosition])
  {
    var pieces: [any Layer] = []
    var starts: [LayerPosition] = []
    var shapes = [activationShapes[0]]
    for (index, layer) in layers.enumerated() {
      let cuts = Set(positions.filter { $0.layer == index && $0.inputs > 0 }.map(\.inputs)).sorted()
      guard let last = cuts.last else {
        pieces.append(layer)
        starts.append(LayerPosition(layer: index))
        shapes.append(activationShapes[index + 1])
        continue
      }
      guard let splittable = layer as? any SplittableLayer, let count = splittableInputs(ofLayer: index), last < count
      else {
        let why =
          (layer as? any SplittableLayer).map {
            "it takes \($0.splittableInputs(ofInput: activationShapes[index])) inputs"
          }
          ?? "only Dense, Conv2D, LSTM, GRU and Transformer layers split between stages"
        throw ModelSpecError("layer \(layer.name) cannot be split after input \(last): \(why)")
      }
      let bounds = [0] + cuts + [count]
      for (first, end) in zip(bounds, bounds.dropFirst()) {
        let piece = splittable.piece(
          taking: first..<end, wholeInputShape: activationShapes[index], wholeOutputShape: activationShapes[index + 1],
          readsModelInputs: layers[..<index].allSatisfy { $0 is Flatten })
        shapes.append(try piece.outputShape(forInput: shapes[shapes.count - 1]))
        pieces.append(piece)
        starts.append(LayerPosition(layer: index, inputs: first))
      }
    }
    return (Sequential(spec: spec, layers: pieces, activationShapes: shapes), starts)
  }
}
