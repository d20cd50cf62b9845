/// Settings of one forward pass.
public struct ForwardContext: Sendable {
  /// Whether dropout is active.
  public var training: Bool
  /// Seed for stochastic layers; vary it per step and micro-batch. Each layer derives its own
  /// stream from it and the layer name.
  public var seed: UInt64

  public init(training: Bool, seed: UInt64 = 0) {
    self.training = training
    self.seed = seed
  }

  /// Inference: no dropout.
  public static let inference = ForwardContext(training: false)
}

/// A trainable variable a layer needs: its stable name (for example "dense0/kernel"), shape,
/// initialiser, and whether the L2 penalty applies to it (weights yes, biases and norms no).
/// A variable that holds a part of another (`piece`) is drawn as that part of the whole.
public struct VariableDeclaration: Sendable, Equatable {
  public let name: String
  public let shape: [Int]
  public let initializer: Initializer
  public let regularized: Bool
  /// The part of a whole variable this one holds, when it holds one.
  public let piece: VariablePiece?

  public init(name: String, shape: [Int], initializer: Initializer, regularized: Bool) {
    self.name = name
    self.shape = shape
    self.initializer = initializer
    self.regularized = regularized
    piece = nil
  }

  /// The variable holding `piece` of `whole`, named after both.
  init(_ piece: VariablePiece, of whole: VariableDeclaration) {
    precondition(piece.whole == whole.name && piece.wholeShape == whole.shape, "a piece of another variable")
    name = piece.name
    shape = piece.shape
    initializer = whole.initializer
    regularized = whole.regularized
    self.piece = piece
  }

  /// The number of scalars.
  public var scalarCount: Int { shape.reduce(1, *) }

  /// Its initial value in a model of seed `modelSeed`: drawn with the seed derived from the
  /// variable's name (its whole's, for a piece), so that values depend neither on the other
  /// variables nor on how a layer is cut.
  public func initialValue(modelSeed: UInt64) -> Tensor {
    guard let piece else { return initializer.makeTensor(shape, seed: PortableRandom.derivedSeed(modelSeed, name)) }
    let seed = PortableRandom.derivedSeed(modelSeed, piece.whole)
    let value = Tensor(uninitializedShape: shape)
    for run in piece.runs {
      let drawn = initializer.makeTensor([run.count], seed: seed, elementOffset: run.whole)
      (value.buffer.pointer + run.piece).update(from: drawn.buffer.pointer, count: run.count)
    }
    return value
  }
}

/// The inputs `range` along axis `axis` of a whole variable, held as a variable of its own:
/// a pipeline stage that computes part of a layer holds only the part of the layer's weights
/// its inputs meet (`LayerPiece`: the rows of a Dense kernel, a filter's input channels;
/// `TransformerPiece`: its hidden units' columns of the MLP's first kernel and bias, rows of
/// its second kernel), and is their only writer. The whole is put back together from its
/// pieces (`runs`) when a model is saved.
public struct VariablePiece: Sendable, Equatable {
  public let whole: String
  public let wholeShape: [Int]
  public let axis: Int
  public let range: Range<Int>

  public init(whole: String, wholeShape: [Int], axis: Int, range: Range<Int>) {
    precondition(
      axis >= 0 && axis < wholeShape.count && range.lowerBound >= 0 && range.upperBound <= wholeShape[axis]
        && !range.isEmpty, "piece \(range) on axis \(axis) of a variable of shape \(wholeShape)")
    self.whole = whole
    self.wholeShape = wholeShape
    self.axis = axis
    self.range = range
  }

  /// E.g. "dense1/kernel#inputs:0-512".
  public var name: String { Self.name(of: whole, range: range) }

  static func name(of whole: String, range: Range<Int>) -> String {
    "\(whole)\(marker)\(range.lowerBound)-\(range.upperBound)"
  }

  /// What follows the whole's name in a piece's.
  static let marker = "#inputs:"

  public var shape: [Int] {
    var shape = wholeShape
    shape[axis] = range.count
    return shape
  }

  /// The piece's elements as runs of the whole's, in row-major order: each run starts at
  /// `whole` in the whole variable and at `piece` in the piece. A piece along the first axis
  /// is one run.
  public var runs: [(whole: Int, piece: Int, count: Int)] {
    let outer = wholeShape[..<axis].reduce(1, *)
    let inner = wholeShape[(axis + 1)...].reduce(1, *)
    let run = range.count * inner
    return (0..<outer).map { index in
      (whole: (index * wholeShape[axis] + range.lowerBound) * inner, piece: index * run, count: run)
    }
  }

  /// The runs of the whole that the piece's elements `elements` fill, each
  /// with where it starts in the whole and in `elements`.
  public func wholeRuns(ofPieceElements elements: Range<Int>) -> [(whole: Int, offset: Int, count: Int)] {
    runs.compactMap { run in
      let overlap = elements.clamped(to: run.piece..<(run.piece + run.count))
      guard !overlap.isEmpty else { return nil }
      return (run.whole + overlap.lowerBound - run.piece, overlap.lowerBound - elements.lowerBound, overlap.count)
    }
  }

  /// The piece's values in the whole's.
  public func cut(from whole: Tensor) -> Tensor {
    precondition(whole.shape == wholeShape, "cutting \(name) from a tensor of shape \(whole.shape)")
    return whole.detached().slice(axis: axis, range: range)
  }
}

/// A model layer. Layers hold configuration only; variable values live in a `[String: Tensor]`
/// keyed by `VariableDeclaration.name`, so a parameter server can own them.
/// Shapes passed to and returned by the shape and cost functions exclude the batch axis.
public protocol Layer: Sendable {
  /// Unique, stable name within the model, e.g. "dense0"; variables are prefixed with it.
  var name: String { get }
  /// The variables this layer owns.
  var variableDeclarations: [VariableDeclaration] { get }
  /// Variables owned by another layer that this one reads too (tied weights).
  var sharedVariables: [VariableDeclaration] { get }
  /// Per-sample output shape for a per-sample input shape, or an error if the input does not fit.
  func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int]
  /// Estimated floating-point operations of one sample's forward pass (backward is about 2×).
  func flops(forInput inputShape: [Int]) -> Int
  /// Scalars one sample keeps from its forward pass to its backward: the
  /// output, and what the layer records inside (attention scores, gates).
  func keptScalars(forInput inputShape: [Int]) -> Int
  /// Applies the layer to a batch.
  func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor
}

extension Layer {
  public var sharedVariables: [VariableDeclaration] { [] }

  public func keptScalars(forInput inputShape: [Int]) -> Int {
    ((try? outputShape(forInput: inputShape)) ?? []).reduce(1, *)
  }

  /// Total number of trainable scalars.
  public var parameterCount: Int { variableDeclarations.reduce(0) { $0 + $1.scalarCount } }

  /// The value of this layer's variable `suffix` (e.g. "kernel") in `variables`.
  func variable(_ suffix: String, in variables: [String: Tensor]) -> Tensor {
    let key = "\(name)/\(suffix)"
    guard let value = variables[key] else { preconditionFailure("variable \(key) is missing") }
    return value
  }

  /// Declares variable `suffix` of this layer.
  func declare(_ suffix: String, _ shape: [Int], _ initializer: Initializer, regularized: Bool) -> VariableDeclaration {
    VariableDeclaration(name: "\(name)/\(suffix)", shape: shape, initializer: initializer, regularized: regularized)
  }

  /// Throws unless `inputShape` has `rank` axes and, when given, last extent `last`.
  func require(_ inputShape: [Int], rank: Int, last: Int? = nil) throws(ModelSpecError) {
    guard inputShape.count == rank, last == nil || inputShape.last == last else {
      throw ModelSpecError(
        "layer \(name) expects a per-sample input of rank \(rank)"
          + (last.map { " with last extent \($0)" } ?? "") + ", got \(inputShape)")
    }
  }
}

/// Element-wise activation functions.
public enum Activation: String, Codable, Sendable, Equatable {
  case linear, relu, tanh, sigmoid, gelu

  /// Applies the activation (GELU uses the tanh approximation).
  public func apply(_ x: Tensor) -> Tensor {
    switch self {
    case .linear: return x
    case .relu: return x.relu()
    case .tanh: return x.tanh()
    case .sigmoid: return x.sigmoid()
    case .gelu: return x.gelu()
    }
  }

  /// Rough FLOPs per element, for cost estimates.
  var flopsPerElement: Int {
    switch self {
    case .linear: return 0
    case .relu: return 1
    case .tanh, .sigmoid: return 4
    case .gelu: return 8
    }
  }
}
