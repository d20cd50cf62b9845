import MeshProto
import MeshTensor

extension [LayerTiming] {
  /// The times of `model`'s layers (one each, in order) as TimeLayers and
  /// Plan answer them.
  public func wire(of model: Sequential) -> [Pipemesh_V1_LayerTime] {
    zip(model.layers, self).enumerated().map { index, timed in
      .with {
        $0.layer = Int32(index)
        $0.name = timed.0.name
        $0.forwardSeconds = timed.1.forward.seconds
        $0.backwardSeconds = timed.1.backward.seconds
        $0.splitForwardSeconds = timed.1.splitForward.seconds
        $0.splitBackwardSeconds = timed.1.splitBackward.seconds
        if let share = timed.1.firstPartShare { $0.firstPartShare = share }
      }
    }
  }
}
