/// 2-D convolution over NCHW input with square kernels, then bias and activation.
public struct Conv2D: Layer {
  public let name: String
  public let inputChannels: Int
  public let outputChannels: Int
  public let kernelSize: Int
  public let stride: Int
  public let padding: Int
  public let activation: Activation

  public init(
    name: String, inputChannels: Int, outputChannels: Int, kernelSize: Int,
    stride: Int = 1, padding: Int = 0, activation: Activation = .linear
  ) {
    self.name = name
    self.inputChannels = inputChannels
    self.outputChannels = outputChannels
    self.kernelSize = kernelSize
    self.stride = stride
    self.padding = padding
    self.activation = activation
  }

  public var variableDeclarations: [VariableDeclaration] {
    let fanIn = inputChannels * kernelSize * kernelSize
    return [
      declare(
        "filter", [outputChannels, inputChannels, kernelSize, kernelSize], .heNormal(fanIn: fanIn), regularized: true),
      declare("bias", [outputChannels, 1, 1], .zeros, regularized: false),
    ]
  }

  public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
    try require(inputShape, rank: 3)
    let height = (inputShape[1] + 2 * padding - kernelSize) / stride + 1
    let width = (inputShape[2] + 2 * padding - kernelSize) / stride + 1
    guard inputShape[0] == inputChannels, stride > 0, height > 0, width > 0 else {
      throw ModelSpecError(
        "layer \(name) (\(inputChannels) channels, kernel \(kernelSize), stride \(stride), padding \(padding)) does not fit input \(inputShape)"
      )
    }
    return [outputChannels, height, width]
  }

  public func flops(forInput inputShape: [Int]) -> Int {
    guard let out = try? outputShape(forInput: inputShape) else { return 0 }
    return out.reduce(1, *) * (2 * inputChannels * kernelSize * kernelSize + 1 + activation.flopsPerElement)
  }

  public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    // ReLU is applied as the convolution lays its output out; other activations after it.
    let convolved = Tensor.conv2d(
      input, filter: variable("filter", in: variables), bias: variable("bias", in: variables),
      rectified: activation == .relu, stride: stride, padding: padding)
    return activation == .relu ? convolved : activation.apply(convolved)
  }
}

extension Conv2D: SumOverInputs {
  var inputCount: Int { inputChannels }
  func inputAxis(ofInput inputShape: [Int]) -> Int { 0 }
  var weightName: String { "\(name)/filter" }

  var weightInputAxis: Int { 1 }

  func partialSum(_ input: Tensor, weight: Tensor) -> Tensor {
    Tensor.conv2d(input, filter: weight, stride: stride, padding: padding)
  }

  func finish(_ sum: Tensor, variables: [String: Tensor]) -> Tensor {
    activation.apply(sum + variable("bias", in: variables))
  }
}

/// Max or average pooling over square windows of an NCHW input (no padding).
public struct Pool2D: Layer {
  /// Which statistic a window is reduced to.
  public enum Kind: String, Sendable { case max, average }

  public let name: String
  public let kind: Kind
  public let size: Int
  public let stride: Int

  public init(name: String, kind: Kind, size: Int, stride: Int) {
    self.name = name
    self.kind = kind
    self.size = size
    self.stride = stride
  }

  public var variableDeclarations: [VariableDeclaration] { [] }

  public func outputShape(forInput inputShape: [Int]) throws(ModelSpecError) -> [Int] {
    try require(inputShape, rank: 3)
    guard size > 0, stride > 0, inputShape[1] >= size, inputShape[2] >= size else {
      throw ModelSpecError("layer \(name): window \(size) stride \(stride) does not fit input \(inputShape)")
    }
    return [inputShape[0], (inputShape[1] - size) / stride + 1, (inputShape[2] - size) / stride + 1]
  }

  public func flops(forInput inputShape: [Int]) -> Int {
    ((try? outputShape(forInput: inputShape)) ?? []).reduce(1, *) * size * size
  }

  public func callAsFunction(_ input: Tensor, variables: [String: Tensor], context: ForwardContext) -> Tensor {
    kind == .max ? input.maxPool2d(size: size, stride: stride) : input.avgPool2d(size: size, stride: stride)
  }
}
