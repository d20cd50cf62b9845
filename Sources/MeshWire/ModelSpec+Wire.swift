import MeshProto
import MeshRPC
import MeshTensor

/// Builds the model a wire `ModelSpec` describes. Layer sizes the wire form
/// leaves implicit (a Dense layer's inputs, a convolution's input channels)
/// come from the shape flowing into the layer. Throws a `WireError` naming
/// the layer when the spec cannot be built.
public func makeModel(_ proto: Pipemesh_V1_ModelSpec) throws -> Sequential {
  guard !proto.inputShape.isEmpty, proto.inputShape.count <= ModelLimits.rank, proto.inputShape.allSatisfy({ $0 > 0 }),
    let inputSize = Tensor.checkedCount(of: proto.inputShape.map { Int(clamping: $0) }),
    inputSize <= ModelLimits.activation
  else {
    throw WireError(
      "model input_shape \(proto.inputShape.description.echoed) must list 1 to \(ModelLimits.rank) positive extents, "
        + "at most \(ModelLimits.activation) scalars in all")
  }
  guard !proto.layers.isEmpty, proto.layers.count <= ModelLimits.layers else {
    throw WireError("the model has \(proto.layers.count) layers; it needs 1 to \(ModelLimits.layers)")
  }
  var spec = ModelSpec(
    inputShape: proto.inputShape.map { Int($0) }, layers: [], loss: try lossSpec(proto.loss),
    l2Penalty: proto.loss.l2, seed: proto.seed)
  guard proto.loss.l2 >= 0, proto.loss.l2.isFinite else {
    throw WireError("loss l2 must be a finite number >= 0, got \(proto.loss.l2)")
  }
  var shape = spec.inputShape
  var parameters = 0
  for (index, layer) in proto.layers.enumerated() {
    spec.layers.append(try layerSpec(layer, index: index, inputShape: shape))
    let model = try build(spec)
    shape = model.activationShapes.last!
    guard let size = Tensor.checkedCount(of: shape), size <= ModelLimits.activation else {
      throw WireError("layer \(index) outputs \(shape) per example, over \(ModelLimits.activation) scalars")
    }
    for declaration in model.layers[index].variableDeclarations {
      guard let count = Tensor.checkedCount(of: declaration.shape), count <= ModelLimits.parameters else {
        throw WireError(
          "variable \(declaration.name) of shape \(declaration.shape) is over \(ModelLimits.parameters) scalars")
      }
      parameters += count
    }
    guard parameters <= ModelLimits.totalParameters else {
      throw WireError(
        "the model has over \(ModelLimits.totalParameters) parameters by layer \(index); Pipemesh holds at most that many"
      )
    }
  }
  return try build(spec)
}

/// Bounds on what a model spec from outside may ask for, so that sizes and
/// cost estimates stay far from overflow and a request cannot make a
/// service allocate without limit.
public enum ModelLimits {
  public static let layers = 1024
  /// Scalars in one example's activation at any layer boundary.
  public static let activation = 1 << 26
  /// Scalars in one variable.
  public static let parameters = 1 << 30
  /// Scalars in all of a model's variables (16 GiB in float32).
  public static let totalParameters = 1 << 32
  /// Extents in the model's input shape.
  public static let rank = 8
  /// Units, filters, vocabulary, dimensions, heads.
  public static let size: Int64 = 1 << 20
  /// Kernel size, stride, padding.
  public static let window: Int64 = 64
}

private func build(_ spec: ModelSpec) throws -> Sequential {
  do {
    return try Sequential(spec: spec)
  } catch {
    throw WireError("invalid model: \(error.message)")
  }
}

private func lossSpec(_ loss: Pipemesh_V1_LossSpec) throws -> LossSpec {
  switch loss.kind {
  case .softmaxCrossEntropy, nil: return .softmaxCrossEntropy
  case .meanSquaredError: return .meanSquaredError
  }
}

private func activation(_ activation: Pipemesh_V1_Activation) throws -> Activation {
  switch activation {
  case .none: return .linear
  case .relu: return .relu
  case .tanh: return .tanh
  case .sigmoid: return .sigmoid
  case .gelu: return .gelu
  case .UNRECOGNIZED(let value): throw WireError("unknown activation \(value)")
  }
}

private func layerSpec(_ layer: Pipemesh_V1_LayerSpec, index: Int, inputShape: [Int]) throws -> LayerSpec {
  func positive(_ value: Int64, _ what: String, limit: Int64 = ModelLimits.size) throws -> Int {
    guard value > 0, value <= limit else {
      throw WireError("layer \(index): \(what) must be in 1...\(limit), got \(value)")
    }
    return Int(value)
  }
  let features = inputShape.last ?? 0
  switch layer.kind {
  case .dense(let dense):
    if !dense.tiedTo.isEmpty {
      return .tiedDense(embedding: dense.tiedTo, activation: try activation(dense.activation))
    }
    return .dense(
      inputSize: features, outputSize: try positive(dense.units, "units"), activation: try activation(dense.activation))
  case .conv2D(let conv):
    guard inputShape.count == 3 else {
      throw WireError("layer \(index): conv2d needs a [channels, height, width] input, got \(inputShape)")
    }
    guard conv.padding >= 0, conv.padding <= ModelLimits.window else {
      throw WireError("layer \(index): padding must be in 0...\(ModelLimits.window)")
    }
    let window = ModelLimits.window
    return .conv2d(
      inputChannels: inputShape[0], outputChannels: try positive(conv.filters, "filters"),
      kernelSize: try positive(conv.kernelSize, "kernel_size", limit: window),
      stride: conv.stride == 0 ? 1 : try positive(conv.stride, "stride", limit: window),
      padding: Int(conv.padding), activation: try activation(conv.activation))
  case .maxPool2D(let pool):
    let size = try positive(pool.size, "size", limit: ModelLimits.window)
    return .maxPool2d(
      size: size, stride: pool.stride == 0 ? size : try positive(pool.stride, "stride", limit: ModelLimits.window))
  case .avgPool2D(let pool):
    let size = try positive(pool.size, "size", limit: ModelLimits.window)
    return .avgPool2d(
      size: size, stride: pool.stride == 0 ? size : try positive(pool.stride, "stride", limit: ModelLimits.window))
  case .flatten:
    return .flatten
  case .activation(let layer):
    return .activation(try activation(layer.activation))
  case .dropout(let dropout):
    return .dropout(rate: dropout.rate)
  case .layerNorm:
    return .layerNorm(size: features)
  case .embedding(let embedding):
    guard index == 0 else {
      throw WireError("layer \(index): an embedding reads token ids, so it must be the model's first layer")
    }
    let positions: PositionEncoding
    switch embedding.positions {
    case .none: positions = .none
    case .sinusoidal: positions = .sinusoidal
    case .learned: positions = .learned(steps: inputShape.last ?? 1)
    case .UNRECOGNIZED(let value):
      throw WireError("layer \(index): unknown embedding positions \(value)")
    }
    return .embedding(
      vocabularySize: try positive(embedding.vocabularySize, "vocabulary_size"),
      embeddingSize: try positive(embedding.dimension, "dimension"), positions: positions)
  case .lstm(let recurrent):
    return .lstm(
      inputSize: features, hiddenSize: try positive(recurrent.units, "units"),
      returnSequences: recurrent.returnSequences)
  case .gru(let recurrent):
    return .gru(
      inputSize: features, hiddenSize: try positive(recurrent.units, "units"),
      returnSequences: recurrent.returnSequences)
  case .transformerBlock(let block):
    // Attention keeps heads × steps² scores per example.
    let heads = try positive(block.heads, "heads")
    let steps = inputShape.count == 2 ? inputShape[0] : 0
    // (Steps are at most 2^26 and heads 2^20: checking steps first keeps the product from overflowing.)
    guard steps <= 1 << 13, steps * steps * heads <= ModelLimits.activation else {
      throw WireError(
        "layer \(index): attention over \(steps) steps with \(heads) heads keeps over \(ModelLimits.activation) scores per example"
      )
    }
    return .transformerBlock(
      modelSize: features, headCount: heads, mlpSize: try positive(block.mlpHidden, "mlp_hidden"))
  case nil:
    throw WireError("layer \(index) has no kind")
  }
}

extension VariableDeclaration {
  /// The ps definition of this variable: its initializer with the seed
  /// derived from the model's (the ps draws the same bits on every machine,
  /// so no value travels) and the job's optimizer. A piece of a variable is
  /// drawn as those elements of the whole are: at its offset in the whole's
  /// draw when it is one run of it (rows of a Dense kernel), otherwise
  /// (channels of a convolution's filter, columns of a Transformer MLP's
  /// first kernel) as the whole's draw cut, sent as its initial value.
  public func definition(seed: UInt64, optimizer: Pipemesh_V1_OptimizerSpec) -> Pipemesh_V1_VariableDefinition {
    .with {
      $0.name = name
      $0.shape = shape.map { Int64($0) }
      $0.dtype = .float32
      $0.optimizer = optimizer
      let drawn = piece?.whole ?? name
      let runs = piece?.runs ?? []
      if runs.count > 1 {
        $0.initialValue = Pipemesh_V1_Tensor(sharing: initialValue(modelSeed: seed))
      } else {
        $0.initializer = Pipemesh_V1_Initializer(initializer, seed: PortableRandom.derivedSeed(seed, drawn))
        $0.initializerOffset = Int64(runs.first?.whole ?? 0)
      }
    }
  }
}

extension Sequential {
  /// Checks a caller's input batch for layers `range`; a `WireError`
  /// starting with `context` otherwise.
  public func checkInput(_ input: Tensor, layers range: Range<Int>? = nil, _ context: String) throws {
    do {
      try validate(input: input, layers: range)
    } catch {
      throw WireError("\(context): \(error.message)")
    }
  }

  /// Checks a caller's targets for a batch of `batchSize`; a `WireError`
  /// starting with `context` otherwise.
  public func checkTarget(_ target: Tensor, batchSize: Int, _ context: String) throws {
    do {
      try validate(target: target, batchSize: batchSize)
    } catch {
      throw WireError("\(context): \(error.message)")
    }
  }
}
