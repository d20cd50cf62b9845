/// How long one layer's training forward and backward take on a micro-batch.
public struct LayerTiming: Sendable, Equatable {
  public let forward: Duration
  /// The input gradient (none for the first layer) and the weight gradients.
  public let backward: Duration

  public init(forward: Duration, backward: Duration) {
    self.forward = forward
    self.backward = backward
  }

  public var total: Duration { forward + backward }
}

extension Sequential {
  /// Estimated FLOPs of one example's training forward and backward
  /// through every layer (the first computes no input gradient).
  public var trainingFlopsPerExample: Double {
    layerCosts.enumerated().reduce(0) { sum, layer in
      sum + Double(layer.element.trainingFlops(computesInputGradient: layer.offset > 0))
    }
  }

  /// The rows `timeLayers(rows:repeats:)` may time within `flops` in all:
  /// `wanted`, fewer when that many would take more (nil when even one would).
  public func rowsToTime(wanted: Int, repeats: Int, within flops: Double) -> Int? {
    let perRow = trainingFlopsPerExample * Double(repeats + 1)
    let most = Int(min(Double(max(1, wanted)), flops / max(perRow, 1)))
    return most >= 1 ? most : nil
  }

  /// Times each layer's training forward and backward on a micro-batch of
  /// `rows` examples on this machine, one layer at a time (so only one
  /// layer's variables and activations are held): its variables drawn as a
  /// job draws them, an input of zeros of the layer's shape (a valid token
  /// for an embedding), an output gradient of ones. Each time is the median
  /// of `repeats` runs after one untimed.
  public func timeLayers(rows: Int, repeats: Int) -> [LayerTiming] {
    precondition(rows >= 1 && repeats >= 1, "at least one row and one run")
    let clock = ContinuousClock()
    return layers.indices.map { index in
      let range = index..<(index + 1)
      let variables = initialVariables(layers: range)
      let input = Tensor.zeros([rows] + activationShapes[index])
      let context = ForwardContext(training: true, seed: spec.seed)
      var forwards: [Duration] = []
      var backwards: [Duration] = []
      for run in 0...repeats {
        var stage: StageForward?
        let forward = clock.measure {
          stage = forwardStage(input, variables: variables, layers: range, context: context, inputGradient: index > 0)
        }
        let upstream = Tensor.filled([rows] + activationShapes[index + 1], with: 1)
        let backward = clock.measure { _ = stage!.backward(upstream) }
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
}
