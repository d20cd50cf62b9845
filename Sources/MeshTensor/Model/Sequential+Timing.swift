/// How long one layer's training forward and backward take on a micro-batch.
public struct LayerTiming: Sendable, Equatable {
  public let forward: Duration
  /// The input gradient (none for the first layer) and the weight gradients.
  public let backward: Duration
  /// How much longer the forward and the backward take when the layer is split between two
  /// stages, both parts together (`LayerPiece`: each part slices the inputs it takes and
  /// copies on those it does not); zero when the layer was not timed split.
  public let splitForward: Duration
  public let splitBackward: Duration
  /// The share of the layer's forward and backward that its part before the place whose
  /// share its inputs do not tell took, timed alone (a Transformer block's attention); nil
  /// for other layers, and layers not timed split.
  public let firstPartShare: Double?

  public init(
    forward: Duration, backward: Duration, splitForward: Duration = .zero, splitBackward: Duration = .zero,
    firstPartShare: Double? = nil
  ) {
    self.forward = forward
    self.backward = backward
    self.splitForward = splitForward
    self.splitBackward = splitBackward
    self.firstPartShare = firstPartShare
  }

  public var total: Duration { forward + backward }
  /// What splitting the layer between two stages adds to a training step's work.
  public var splitTotal: Duration { splitForward + splitBackward }
}

extension Sequential {
  /// Estimated FLOPs of one example's training forward and backward through
  /// each layer (the first computes no input gradient).
  public var trainingFlopsPerLayer: [Int] {
    layerCosts.enumerated().map { $0.element.trainingFlops(computesInputGradient: $0.offset > 0) }
  }

  /// `trainingFlopsPerLayer` summed: one example through the whole model.
  public var trainingFlopsPerExample: Double { trainingFlopsPerLayer.reduce(0) { $0 + Double($1) } }

  /// How much timing a model's layers may take: scalars one layer holds at
  /// once, FLOPs in all, and the time steps of a recurrent layer (whose
  /// cost is one small product per step more than its FLOPs).
  public struct TimingLimits: Sendable {
    public var scalars: Double
    public var flops: Double
    public var recurrentSteps: Int
    public var rows: Int

    /// What a partition spends on timing a model for the planner: 256 MiB
    /// of tensors, 5·10^10 FLOPs (seconds on a core), 4,096 steps, 4,096 rows.
    public static let planning = TimingLimits(scalars: 64 * 1_048_576, flops: 5e10, recurrentSteps: 4096, rows: 4096)
  }

  /// The most scalars one example holds at once in layer `index` while it is
  /// timed, four times over for the copies autodiff keeps: its input and
  /// output, or what the layer builds of its own when that is more (a
  /// convolution's patches, attention's scores and MLP, a recurrent layer's
  /// gates at every step).
  private func timingScalarsPerExample(_ index: Int) -> Double {
    let input = activationShapes[index]
    let output = activationShapes[index + 1]
    let boundary = input.reduce(1, *) + output.reduce(1, *)
    let steps = input.first ?? 1
    let own: Int
    switch layers[index] {
    case let conv as Conv2D:
      own = conv.inputChannels * conv.kernelSize * conv.kernelSize * (output.reduce(1, *) / max(1, conv.outputChannels))
    case let block as TransformerBlock:
      own = 3 * block.headCount * steps * steps + steps * (block.mlpSize + 4 * block.modelSize)
    case let recurrent as any GatedRecurrentLayer:
      own = steps * (2 * type(of: recurrent).gateCount * recurrent.hiddenSize + recurrent.inputSize)
    default:
      own = 0
    }
    // Timed split, its parts also copy the inputs they do not take and the sums they pass on.
    let split = timesSplit(index) ? 2 * input.reduce(1, *) + output.reduce(1, *) : 0
    return 4 * Double(max(boundary, own, split))
  }

  /// The rows `timeLayers(rows:repeats:)` may time within `limits`: `wanted`,
  /// fewer when that many would go past them; a refusal saying why when
  /// even one would.
  public func rowsToTime(wanted: Int, repeats: Int, within limits: TimingLimits) -> Result<Int, TimingRefusal> {
    for (index, layer) in layers.enumerated() where layer is any GatedRecurrentLayer {
      let steps = activationShapes[index].first ?? 1
      guard steps <= limits.recurrentSteps else {
        return .failure(
          TimingRefusal(
            "layer \(index) (\(layer.name)) runs \(steps) steps; timing runs at most \(limits.recurrentSteps)"))
      }
    }
    let scalars = layers.indices.map(timingScalarsPerExample).max() ?? 0
    // A layer timed split too is timed twice, and once more when the part before its measured
    // place is timed apart (a Transformer block's attention: at most the whole block again).
    let timedFlops = layers.indices.reduce(0.0) { total, index in
      let times = timesSplit(index) ? (measuredPlace(ofLayer: index) == nil ? 2.0 : 3.0) : 1.0
      return total + Double(trainingFlopsPerLayer[index]) / timedStandIn(for: index).scale * times
    }
    let flops = timedFlops * Double(repeats + 1)
    let most = min(
      Double(min(max(1, wanted), limits.rows)), limits.scalars / max(scalars, 1), limits.flops / max(flops, 1))
    guard most >= 1 else {
      return .failure(
        TimingRefusal(
          String(
            format: "one example takes %.3g scalars in a layer and %.3g FLOPs to time; the most timing takes is "
              + "%.3g and %.3g", scalars, flops, limits.scalars, limits.flops)))
    }
    return .success(Int(most))
  }

  /// A dense layer with more parameters than this is timed on a slice of
  /// its outputs (16 Mi parameters, 64 MiB in float32), and its times scaled.
  public static let largestTimedParameters = 1 << 24

  /// The largest layer whose split `timeLayers` times, and so the largest a
  /// planner splits between stages by itself (it splits only where it knows
  /// what a split adds): 4 Mi parameters, which keeps the timing short and
  /// its memory small. A bigger layer may still be split by hand.
  public static let largestSplitParameters = 1 << 22

  /// Whether `timeLayers` times layer `index` split in two as well.
  func timesSplit(_ index: Int) -> Bool {
    splittableInputs(ofLayer: index) != nil && layers[index].parameterCount <= Self.largestSplitParameters
      && timedStandIn(for: index).scale == 1
  }

  /// The most parameters `timeLayers(rows:repeats:goOn:)` holds at once: a
  /// layer's, or its stand-in's.
  public var largestTimedLayerParameters: Int {
    layers.indices.map { index in
      let standIn = timedStandIn(for: index)
      return standIn.model.layers[standIn.layer].parameterCount
    }.max() ?? 0
  }

  /// What is timed for layer `index`, and the factor its times are scaled
  /// by: the layer itself, or for a dense layer of more than
  /// `largestTimedParameters` parameters, a dense layer with the same input
  /// and a slice of its outputs. A dense layer's forward and backward take
  /// time in proportion to its outputs, and timing the whole of a big one
  /// would hold its kernel and the kernel's gradient on a partition that
  /// may hold none of it.
  func timedStandIn(for index: Int) -> (model: Sequential, layer: Int, scale: Double) {
    guard let dense = layers[index] as? Dense, dense.parameterCount > Self.largestTimedParameters else {
      return (self, index, 1)
    }
    let slice = max(1, Self.largestTimedParameters / (dense.inputSize + 1))
    let standIn = ModelSpec(
      inputShape: activationShapes[index],
      layers: [.dense(inputSize: dense.inputSize, outputSize: slice, activation: dense.activation)],
      loss: spec.loss, seed: spec.seed)
    guard let model = try? Sequential(spec: standIn) else { return (self, index, 1) }
    return (model, 0, Double(dense.outputSize) / Double(slice))
  }

  /// Times each layer's training forward and backward on a micro-batch of
  /// `rows` examples on this machine, one layer at a time (so only one
  /// layer's variables and activations are held): its variables drawn as a
  /// job draws them, an input as `timingInput` draws it, an output gradient
  /// of ones. Each time is the median of `repeats` runs after one untimed. `goOn` is asked before each run:
  /// once it says no, timing stops with `TimingRefusal` (a deadline passed).
  /// A dense layer too big to time whole is timed on a stand-in (`timedStandIn(for:)`).
  /// A Dense, Conv2D, LSTM, GRU or Transformer layer of at most `largestSplitParameters` is also
  /// timed split between two stages at the middle of its inputs, for what
  /// that adds (`LayerTiming.splitForward`, `splitBackward`), and a Transformer block's
  /// attention alone, for its share of the block (`LayerTiming.firstPartShare`).
  public func timeLayers(rows: Int, repeats: Int, goOn: () -> Bool = { true }) throws(TimingRefusal) -> [LayerTiming] {
    try timeLayers(rows: rows, repeats: repeats, goOn: goOn) { ContinuousClock().measure($0) }
  }

  /// `timeLayers(rows:repeats:goOn:)` with the time of each run taken by `measure`.
  func timeLayers(
    rows: Int, repeats: Int, goOn: () -> Bool = { true }, measure: (() -> Void) -> Duration
  ) throws(TimingRefusal) -> [LayerTiming] {
    precondition(rows >= 1 && repeats >= 1, "at least one row and one run")
    var timings: [LayerTiming] = []
    for index in layers.indices {
      let (model, timed, scale) = timedStandIn(for: index)
      func time(_ model: Sequential, _ range: Range<Int>, inputGradient: Bool) throws(TimingRefusal) -> LayerTiming {
        try model.timeStage(
          range, inputGradient: inputGradient, rows: rows, repeats: repeats, goOn: goOn, measure: measure,
          what: "layer \(index) (\(layers[index].name))")
      }
      let whole = try time(model, timed..<(timed + 1), inputGradient: index > 0)
      var split = (forward: Duration.zero, backward: Duration.zero)
      // The layer cut at the middle of its inputs, both parts run as one stage: what the
      // parts add, without a second stage's own costs, which a split does not add.
      if timesSplit(index), let inputs = splittableInputs(ofLayer: index),
        let cut = try? stage(from: LayerPosition(layer: index), to: LayerPosition(layer: index, inputs: inputs / 2))
      {
        let parts = try time(cut.model, index..<(index + 2), inputGradient: index > 0)
        split = (max(.zero, parts.forward - whole.forward), max(.zero, parts.backward - whole.backward))
      }
      // The part before a place whose share the inputs do not tell, alone as a stage.
      var firstPartShare: Double?
      if timesSplit(index), let place = measuredPlace(ofLayer: index),
        let cut = try? stage(from: LayerPosition(layer: index), to: LayerPosition(layer: index, inputs: place))
      {
        let first = try time(cut.model, index..<(index + 1), inputGradient: index > 0)
        firstPartShare = whole.total > .zero ? min(1, first.total / whole.total) : nil
      }
      timings.append(
        LayerTiming(
          forward: whole.forward * scale, backward: whole.backward * scale, splitForward: split.forward,
          splitBackward: split.backward, firstPartShare: firstPartShare))
    }
    return timings
  }

  /// One stage of `range`'s training forward and backward on `rows`
  /// examples on this machine, as `timeLayers` times each layer.
  public func timeStage(_ range: Range<Int>, inputGradient: Bool, rows: Int, repeats: Int) -> LayerTiming {
    // Never refused: it goes on to the end.
    (try? timeStage(
      range, inputGradient: inputGradient, rows: rows, repeats: repeats, goOn: { true },
      measure: { ContinuousClock().measure($0) }, what: "layers \(range)"))!
  }

  /// One stage of `range`'s training forward and backward on `rows`
  /// examples: its variables drawn as a job draws them, an input as
  /// `timingInput` draws it, an output gradient of ones; the median of
  /// `repeats` runs after one untimed, each taken by `measure`.
  private func timeStage(
    _ range: Range<Int>, inputGradient: Bool, rows: Int, repeats: Int, goOn: () -> Bool,
    measure: (() -> Void) -> Duration, what: String
  ) throws(TimingRefusal) -> LayerTiming {
    let variables = initialVariables(layers: range)
    let input = timingInput(rows: rows, layer: range.lowerBound)
    let context = ForwardContext(training: true, seed: spec.seed)
    var forwards: [Duration] = []
    var backwards: [Duration] = []
    let upstream = Tensor.filled([rows] + activationShapes[range.upperBound], with: 1)
    for run in 0...repeats {
      guard goOn() else { throw TimingRefusal("timing stopped at \(what)") }
      var stage: StageForward?
      let forward = measure {
        stage = forwardStage(input, variables: variables, layers: range, context: context, inputGradient: inputGradient)
      }
      let backward = measure { _ = stage!.backward(upstream) }
      // The first run warms the caches and the buffer pool.
      if run > 0 {
        forwards.append(forward)
        backwards.append(backward)
      }
    }
    return LayerTiming(
      forward: forwards.sorted()[forwards.count / 2], backward: backwards.sorted()[backwards.count / 2])
  }
}

extension Sequential {
  /// What layer times are taken on and how a planner reads them, numbered anew whenever that
  /// changes: what was derived from predictions made otherwise (a job's calibration) is not
  /// mixed with the predictions now. 1: zeros; 2: token ids and varied values; 3: the same,
  /// with a Transformer block's places weighed by its attention's timed share.
  public static let timingInputs = 3

  /// An input of `rows` examples for timing the layers from `layer` on: token ids drawn from
  /// the vocabulary of the embedding that reads them (after any Flatten layers), else varied
  /// values of unit variance, drawn uniformly (cheap to draw for the largest layers timed).
  /// Zeros would time the elementwise functions at their fast paths (tanh, exp and GELU of 0,
  /// a softmax of equal scores): layers fed zeros would seem cheaper than those after them.
  func timingInput(rows: Int, layer: Int) -> Tensor {
    let shape = [rows] + activationShapes[layer]
    let seed = PortableRandom.derivedSeed(spec.seed, "timing input")
    guard let embedding = layers[layer...].first(where: { !($0 is Flatten) }) as? Embedding else {
      return .randomUniform(shape, lowerBound: -Float(3).squareRoot(), upperBound: Float(3).squareRoot(), seed: seed)
    }
    let vocabulary = embedding.vocabularySize
    let count = shape.reduce(1, *)
    return Tensor(
      shape: shape,
      scalars: (0..<count).map { Float(PortableRandom.bits(seed: seed, counter: UInt64($0)) % UInt64(vocabulary)) })
  }
}

/// Why a model's layers are not timed.
public struct TimingRefusal: Error, Sendable, CustomStringConvertible {
  public let description: String
  public init(_ description: String) { self.description = description }
}
