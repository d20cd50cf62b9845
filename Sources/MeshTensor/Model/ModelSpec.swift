/// A model described as data: per-sample input shape, layers, loss and seed. The same spec and
/// seed give bit-identical initial variables on every machine.
public struct ModelSpec: Codable, Sendable, Equatable {
  /// Shape of one sample, without the batch axis (e.g. [784], [1, 28, 28], [sequenceLength]).
  public var inputShape: [Int]
  public var layers: [LayerSpec]
  public var loss: LossSpec
  /// Coefficient λ of the penalty (λ/2)·Σ‖w‖² over regularised variables; 0 disables it.
  public var l2Penalty: Float
  public var seed: UInt64

  public init(inputShape: [Int], layers: [LayerSpec], loss: LossSpec, l2Penalty: Float = 0, seed: UInt64) {
    self.inputShape = inputShape
    self.layers = layers
    self.loss = loss
    self.l2Penalty = l2Penalty
    self.seed = seed
  }
}

/// The loss applied to the last layer's output.
public enum LossSpec: String, Codable, Sendable, Equatable {
  /// Softmax cross-entropy against integer class labels (stored as Float), averaged over rows.
  case softmaxCrossEntropy
  /// Mean of squared differences against a target of the output's shape.
  case meanSquaredError
}

/// One layer's configuration.
public enum LayerSpec: Codable, Sendable, Equatable {
  case dense(inputSize: Int, outputSize: Int, activation: Activation)
  case conv2d(
    inputChannels: Int, outputChannels: Int, kernelSize: Int, stride: Int, padding: Int, activation: Activation)
  case maxPool2d(size: Int, stride: Int)
  case avgPool2d(size: Int, stride: Int)
  case flatten
  case activation(Activation)
  case dropout(rate: Float)
  case layerNorm(size: Int)
  case embedding(vocabularySize: Int, embeddingSize: Int, positions: PositionEncoding = .none)
  case lstm(inputSize: Int, hiddenSize: Int, returnSequences: Bool)
  case gru(inputSize: Int, hiddenSize: Int, returnSequences: Bool)
  case transformerBlock(modelSize: Int, headCount: Int, mlpSize: Int)
  /// A dense layer whose kernel is the transposed table of the named Embedding layer (tied
  /// weights): activation(x · tableᵀ + bias), with output size the vocabulary size.
  case tiedDense(embedding: String, activation: Activation)

  /// The prefix of generated layer names; the n-th layer of a kind is named prefix + n.
  var namePrefix: String {
    switch self {
    case .dense: return "dense"
    case .conv2d: return "conv2d"
    case .maxPool2d: return "maxpool"
    case .avgPool2d: return "avgpool"
    case .flatten: return "flatten"
    case .activation(let activation): return activation.rawValue
    case .dropout: return "dropout"
    case .layerNorm: return "layernorm"
    case .embedding: return "embedding"
    case .lstm: return "lstm"
    case .gru: return "gru"
    case .transformerBlock: return "transformer"
    case .tiedDense: return "tied_dense"
    }
  }

  /// The layer this spec describes, named `name`; `earlier` are the layers before it.
  func makeLayer(name: String, earlier: [any Layer]) throws(ModelSpecError) -> any Layer {
    switch self {
    case .dense(let inputSize, let outputSize, let activation):
      return Dense(name: name, inputSize: inputSize, outputSize: outputSize, activation: activation)
    case .conv2d(let inputChannels, let outputChannels, let kernelSize, let stride, let padding, let activation):
      return Conv2D(
        name: name, inputChannels: inputChannels, outputChannels: outputChannels,
        kernelSize: kernelSize, stride: stride, padding: padding, activation: activation)
    case .maxPool2d(let size, let stride): return Pool2D(name: name, kind: .max, size: size, stride: stride)
    case .avgPool2d(let size, let stride): return Pool2D(name: name, kind: .average, size: size, stride: stride)
    case .flatten: return Flatten(name: name)
    case .activation(let activation): return ActivationLayer(name: name, activation: activation)
    case .dropout(let rate): return Dropout(name: name, rate: rate)
    case .layerNorm(let size): return LayerNorm(name: name, size: size)
    case .embedding(let vocabularySize, let embeddingSize, let positions):
      return Embedding(
        name: name, vocabularySize: vocabularySize, embeddingSize: embeddingSize, positions: positions)
    case .lstm(let inputSize, let hiddenSize, let returnSequences):
      return LSTM(name: name, inputSize: inputSize, hiddenSize: hiddenSize, returnSequences: returnSequences)
    case .gru(let inputSize, let hiddenSize, let returnSequences):
      return GRU(name: name, inputSize: inputSize, hiddenSize: hiddenSize, returnSequences: returnSequences)
    case .transformerBlock(let modelSize, let headCount, let mlpSize):
      return TransformerBlock(name: name, modelSize: modelSize, headCount: headCount, mlpSize: mlpSize)
    case .tiedDense(let embeddingName, let activation):
      guard let embedding = earlier.first(where: { $0.name == embeddingName }) as? Embedding else {
        throw ModelSpecError(
          "layer \(name) ties its kernel to \(embeddingName), which is not an earlier Embedding layer")
      }
      return TiedDense(name: name, embedding: embedding, activation: activation)
    }
  }
}

/// A model spec that cannot be built, with a message a person can act on.
public struct ModelSpecError: Error, Sendable, Equatable, CustomStringConvertible {
  public let message: String
  public init(_ message: String) { self.message = message }
  public var description: String { message }
}

/// What the pipeline partitioner needs to know about one layer (per sample).
public struct LayerCost: Sendable, Equatable {
  public let name: String
  public let parameterCount: Int
  /// Scalars in one sample's output activation (what crosses a stage boundary after this layer).
  public let outputActivationSize: Int
  /// Estimated forward FLOPs for one sample.
  public let flops: Int

  /// Estimated FLOPs for one sample's forward and backward pass in training. Backward costs
  /// about one forward for the input gradient (which the model's first layer skips) and,
  /// for a layer with parameters, one more for their gradient.
  public func trainingFlops(computesInputGradient: Bool) -> Int {
    flops * (1 + (computesInputGradient ? 1 : 0) + (parameterCount > 0 ? 1 : 0))
  }
}
