import Foundation

/// How an Embedding tells the positions of a sequence apart: its output for a token then
/// depends on where the token stands, which attention alone cannot see.
public enum PositionEncoding: Codable, Sendable, Equatable {
  /// No positional information: a token's embedding is the same anywhere.
  case none
  /// Fixed sines and cosines of the position at geometric frequencies (Vaswani et al., 2017),
  /// added to each token's embedding; no variables.
  case sinusoidal
  /// A learned `[steps, embeddingSize]` table whose row p is added to the token at position p of
  /// the input's last axis, which must have exactly `steps` positions.
  case learned(steps: Int)
}

/// Embedding lookup: integer token ids (stored as Float) of any shape map to rows of "table",
/// plus the position's encoding along the input's last axis when `positions` asks for one.
public struct Embedding: Layer {
  public let name: String
  public let vocabularySize: Int
  public let embeddingSize: Int
  public let positions: PositionEncoding

  public init(name: String, vocabularySize: Int, embeddingSize: Int, positions: PositionEncoding = .none) {
    self.name = name
    self.vocabularySize = vocabularySize
    self.embeddingSize = embeddingSize
    self.positions = positions
  }

  public var variableDeclarations: [VariableDeclaration] {
    let table = declare("table", [vocabularySize, embeddingSize], .normal(standardDeviation: 0.02), regularized: true)
    guard case .learned(let steps) = positions else { return [table] }
    return [table, declare("positions", [steps, embeddingSize], .normal(standardDeviation: 0.02), regularized: true)]
  }

  public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
    if case .learned(let steps) = positions, inputShape.last != steps {
      throw ModelSpecError(
        "layer \(name) learns \(steps) positions but its input has \(inputShape.last ?? 0) along its last axis")
    }
    return inputShape + [embeddingSize]
  }

  public func flops(forInput inputShape: [Int]) -> Int {
    inputShape.reduce(1, *) * embeddingSize * (positions == .none ? 1 : 2)
  }

  public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    let ids = input.scalars.map { Int($0) }
    let tokens = variable("table", in: variables).gathering(indices: ids, indexShape: input.shape)
    switch positions {
    case .none: return tokens
    case .sinusoidal: return tokens + Self.sinusoids(steps: input.shape.last ?? 1, size: embeddingSize)
    case .learned: return tokens + variable("positions", in: variables)
    }
  }

  /// The fixed encoding of positions 0..<steps, `[steps, size]`: column 2i holds
  /// sin(p / 10000^(2i/size)) and column 2i + 1 the cosine at the same frequency.
  public static func sinusoids(steps: Int, size: Int) -> Tensor {
    let out = Tensor(shape: [steps, size], repeating: 0)
    for position in 0..<steps {
      for column in 0..<size {
        let frequency = pow(10_000, -Double(column - column % 2) / Double(size))
        let angle = Double(position) * frequency
        out.buffer.pointer[position * size + column] = Float(column % 2 == 0 ? sin(angle) : cos(angle))
      }
    }
    return out
  }
}

/// A dense layer whose kernel is an Embedding's table, transposed (tied input and output
/// embeddings): activation(x · tableᵀ + bias). The table stays the Embedding's variable; the
/// gradients of both uses add up.
public struct TiedDense: Layer {
  public let name: String
  public let table: VariableDeclaration
  public let activation: Activation

  public init(name: String, embedding: Embedding, activation: Activation = .linear) {
    self.name = name
    let owned = embedding.variableDeclarations[0]
    table = VariableDeclaration(
      name: owned.name, shape: owned.shape, initializer: owned.initializer, regularized: false)
    self.activation = activation
  }

  private var vocabularySize: Int { table.shape[0] }
  private var embeddingSize: Int { table.shape[1] }

  public var variableDeclarations: [VariableDeclaration] {
    [declare("bias", [vocabularySize], .zeros, regularized: false)]
  }

  public var sharedVariables: [VariableDeclaration] { [table] }

  public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
    guard inputShape.last == embeddingSize else {
      throw ModelSpecError(
        "layer \(name) expects \(embeddingSize) input features (the tied table's width), got \(inputShape)")
    }
    return inputShape.dropLast() + [vocabularySize]
  }

  public func flops(forInput inputShape: [Int]) -> Int {
    inputShape.dropLast().reduce(1, *) * vocabularySize * (2 * embeddingSize + 1 + activation.flopsPerElement)
  }

  public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    guard let tableValue = variables[table.name] else { preconditionFailure("variable \(table.name) is missing") }
    return activation.apply(Tensor.matmul(input, tableValue, transposeB: true) + variable("bias", in: variables))
  }
}
