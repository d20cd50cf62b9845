/// Embedding lookup: integer token ids (stored as Float) of any shape map to rows of "table".
public struct Embedding: Layer {
  public let name: String
  public let vocabularySize: Int
  public let embeddingSize: Int

  public init(name: String, vocabularySize: Int, embeddingSize: Int) {
    self.name = name
    self.vocabularySize = vocabularySize
    self.embeddingSize = embeddingSize
  }

  public var variableDeclarations: [VariableDeclaration] {
    [declare("table", [vocabularySize, embeddingSize], .normal(standardDeviation: 0.02), regularized: true)]
  }

  public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] { inputShape + [embeddingSize] }

  public func flops(forInput inputShape: [Int]) -> Int { inputShape.reduce(1, *) * embeddingSize }

  public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    let ids = input.scalars.map { Int($0) }
    return variable("table", in: variables).gathering(indices: ids, indexShape: input.shape)
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
