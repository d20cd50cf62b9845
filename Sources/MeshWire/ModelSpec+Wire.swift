import MeshProto
import MeshRPC
import MeshTensor

/// Builds the model a wire `ModelSpec` describes. Layer sizes the wire form
/// leaves implicit (a Dense layer's inputs, a convolution's input channels)
/// come from the shape flowing into the layer. Throws INVALID_ARGUMENT naming
/// the layer when the spec cannot be built.
public func makeModel(_ proto: Pipemesh_V1_ModelSpec) throws -> Sequential {
  guard !proto.inputShape.isEmpty, proto.inputShape.allSatisfy({ $0 > 0 && $0 <= Int32.max }) else {
    throw RPCError(.invalidArgument, "model input_shape \(proto.inputShape) must list positive extents")
  }
  guard !proto.layers.isEmpty else { throw RPCError(.invalidArgument, "the model has no layers") }
  var spec = ModelSpec(
    inputShape: proto.inputShape.map { Int($0) }, layers: [], loss: try lossSpec(proto.loss),
    l2Penalty: proto.loss.l2, seed: proto.seed)
  guard proto.loss.l2 >= 0, proto.loss.l2.isFinite else {
    throw RPCError(.invalidArgument, "loss l2 must be a finite number >= 0, got \(proto.loss.l2)")
  }
  var model = try build(spec)
  for (index, layer) in proto.layers.enumerated() {
    let shape = model.activationShapes.last!
    spec.layers.append(try layerSpec(layer, index: index, inputShape: shape))
    model = try build(spec)
  }
  return model
}

private func build(_ spec: ModelSpec) throws -> Sequential {
  do {
    return try Sequential(spec: spec)
  } catch {
    throw RPCError(.invalidArgument, "invalid model: \(error.message)")
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
  case .UNRECOGNIZED(let value): throw RPCError(.invalidArgument, "unknown activation \(value)")
  }
}

private func layerSpec(_ layer: Pipemesh_V1_LayerSpec, index: Int, inputShape: [Int]) throws -> LayerSpec {
  func positive(_ value: Int64, _ what: String) throws -> Int {
    guard value > 0, value <= Int32.max else {
      throw RPCError(.invalidArgument, "layer \(index): \(what) must be positive, got \(value)")
    }
    return Int(value)
  }
  let features = inputShape.last ?? 0
  switch layer.kind {
  case .dense(let dense):
    if !dense.tiedTo.isEmpty { return .tiedDense(embedding: dense.tiedTo, activation: try activation(dense.activation)) }
    return .dense(inputSize: features, outputSize: try positive(dense.units, "units"), activation: try activation(dense.activation))
  case .conv2D(let conv):
    guard inputShape.count == 3 else {
      throw RPCError(.invalidArgument, "layer \(index): conv2d needs a [channels, height, width] input, got \(inputShape)")
    }
    guard conv.padding >= 0 else { throw RPCError(.invalidArgument, "layer \(index): padding must not be negative") }
    return .conv2d(
      inputChannels: inputShape[0], outputChannels: try positive(conv.filters, "filters"),
      kernelSize: try positive(conv.kernelSize, "kernel_size"), stride: conv.stride == 0 ? 1 : try positive(conv.stride, "stride"),
      padding: Int(conv.padding), activation: try activation(conv.activation))
  case .maxPool2D(let pool):
    let size = try positive(pool.size, "size")
    return .maxPool2d(size: size, stride: pool.stride == 0 ? size : try positive(pool.stride, "stride"))
  case .avgPool2D(let pool):
    let size = try positive(pool.size, "size")
    return .avgPool2d(size: size, stride: pool.stride == 0 ? size : try positive(pool.stride, "stride"))
  case .flatten:
    return .flatten
  case .activation(let layer):
    return .activation(try activation(layer.activation))
  case .dropout(let dropout):
    return .dropout(rate: dropout.rate)
  case .layerNorm:
    return .layerNorm(size: features)
  case .embedding(let embedding):
    return .embedding(
      vocabularySize: try positive(embedding.vocabularySize, "vocabulary_size"),
      embeddingSize: try positive(embedding.dimension, "dimension"))
  case .lstm(let recurrent):
    return .lstm(inputSize: features, hiddenSize: try positive(recurrent.units, "units"), returnSequences: recurrent.returnSequences)
  case .gru(let recurrent):
    return .gru(inputSize: features, hiddenSize: try positive(recurrent.units, "units"), returnSequences: recurrent.returnSequences)
  case .transformerBlock(let block):
    return .transformerBlock(
      modelSize: features, headCount: try positive(block.heads, "heads"), mlpSize: try positive(block.mlpHidden, "mlp_hidden"))
  case nil:
    throw RPCError(.invalidArgument, "layer \(index) has no kind")
  }
}

extension VariableDeclaration {
  /// The ps definition of this variable with its initial value drawn for the
  /// model's seed (the same bits on every machine) and the job's optimizer.
  public func definition(seed: UInt64, optimizer: Pipemesh_V1_OptimizerSpec) -> Pipemesh_V1_VariableDefinition {
    .with {
      $0.name = name
      $0.shape = shape.map { Int64($0) }
      $0.dtype = .float32
      $0.initialValue = Pipemesh_V1_Tensor(
        initializer.makeTensor(shape, seed: PortableRandom.derivedSeed(seed, name)))
      $0.optimizer = optimizer
    }
  }
}

extension Sequential {
  /// Checks a caller's input batch for layers `range`; INVALID_ARGUMENT
  /// starting with `context` otherwise.
  public func checkInput(_ input: Tensor, layers range: Range<Int>? = nil, _ context: String) throws {
    do {
      try validate(input: input, layers: range)
    } catch {
      throw RPCError(.invalidArgument, "\(context): \(error.message)")
    }
  }

  /// Checks a caller's targets for a batch of `batchSize`; INVALID_ARGUMENT
  /// starting with `context` otherwise.
  public func checkTarget(_ target: Tensor, batchSize: Int, _ context: String) throws {
    do {
      try validate(target: target, batchSize: batchSize)
    } catch {
      throw RPCError(.invalidArgument, "\(context): \(error.message)")
    }
  }
}
