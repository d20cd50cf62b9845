/// Layer normalisation over the last axis with learned scale ("gamma") and shift ("beta").
public struct LayerNorm: Layer {
  public let name: String
  public let size: Int
  public let epsilon: Float

  public init(name: String, size: Int, epsilon: Float = 1e-5) {
    self.name = name
    self.size = size
    self.epsilon = epsilon
  }

  public var variableDeclarations: [VariableDeclaration] {
    [declare("gamma", [size], .ones, regularized: false), declare("beta", [size], .zeros, regularized: false)]
  }

  public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
    guard inputShape.last == size else {
      throw ModelSpecError("layer \(name) normalises \(size) features, got \(inputShape)")
    }
    return inputShape
  }

  public func flops(forInput inputShape: [Int]) -> Int { inputShape.reduce(1, *) * 8 }

  public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    input.layerNormalized(
      gamma: variable("gamma", in: variables), beta: variable("beta", in: variables), epsilon: epsilon)
  }
}
