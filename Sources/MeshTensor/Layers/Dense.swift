/// Fully connected layer: activation(x · kernel + bias). Accepts any rank; the last axis is
/// the feature axis.
public struct Dense: Layer {
  public let name: String
  public let inputSize: Int
  public let outputSize: Int
  public let activation: Activation

  public init(name: String, inputSize: Int, outputSize: Int, activation: Activation = .linear) {
    self.name = name
    self.inputSize = inputSize
    self.outputSize = outputSize
    self.activation = activation
  }

  public var variableDeclarations: [VariableDeclaration] {
    [
      declare(
        "kernel", [inputSize, outputSize], .glorotUniform(fanIn: inputSize, fanOut: outputSize), regularized: true),
      declare("bias", [outputSize], .zeros, regularized: false),
    ]
  }

  public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
    guard inputShape.last == inputSize else {
      throw ModelSpecError("layer \(name) expects \(inputSize) input features, got shape \(inputShape)")
    }
    return inputShape.dropLast() + [outputSize]
  }

  public func flops(forInput inputShape: [Int]) -> Int {
    let rows = inputShape.dropLast().reduce(1, *)
    return rows * outputSize * (2 * inputSize + 1 + activation.flopsPerElement)
  }

  public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    finish(partialSum(input, weight: variable("kernel", in: variables)), variables: variables)
  }
}

extension Dense: SumOverInputs {
  var inputCount: Int { inputSize }
  func inputAxis(ofInput inputShape: [Int]) -> Int { inputShape.count - 1 }
  var weightName: String { "\(name)/kernel" }

  var weightInputAxis: Int { 0 }

  func partialSum(_ input: Tensor, weight: Tensor) -> Tensor { Tensor.matmul(input, weight) }

  func finish(_ sum: Tensor, variables: [String: Tensor]) -> Tensor {
    activation.apply(sum + variable("bias", in: variables))
  }
}

/// A stand-alone activation layer (ReLU, Tanh, Sigmoid, GELU).
public struct ActivationLayer: Layer {
  public let name: String
  public let activation: Activation

  public init(name: String, activation: Activation) {
    self.name = name
    self.activation = activation
  }

  public var variableDeclarations: [VariableDeclaration] { [] }
  public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] { inputShape }
  public func flops(forInput inputShape: [Int]) -> Int { inputShape.reduce(1, *) * activation.flopsPerElement }
  public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    activation.apply(input)
  }
}

/// Collapses all per-sample axes into one.
public struct Flatten: Layer {
  public let name: String

  public init(name: String) { self.name = name }

  public var variableDeclarations: [VariableDeclaration] { [] }
  public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] { [inputShape.reduce(1, *)] }
  public func flops(forInput inputShape: [Int]) -> Int { 0 }
  public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    input.reshaped(to: [input.shape[0], -1])
  }
}

/// Inverted dropout while training; the identity otherwise. The mask stream is derived from the
/// context seed and the layer name.
public struct Dropout: Layer {
  public let name: String
  public let rate: Float

  public init(name: String, rate: Float) {
    self.name = name
    self.rate = rate
  }

  public var variableDeclarations: [VariableDeclaration] { [] }
  public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
    guard rate >= 0 && rate < 1 else { throw ModelSpecError("layer \(name): dropout rate \(rate) must be in [0, 1)") }
    return inputShape
  }
  public func flops(forInput inputShape: [Int]) -> Int { inputShape.reduce(1, *) }
  public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    guard context.training else { return input }
    return input.dropout(rate: rate, seed: PortableRandom.derivedSeed(context.seed, name))
  }
}
