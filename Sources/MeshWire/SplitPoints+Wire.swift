import MeshTensor

extension LayerPosition {
  /// The split points a request gives in two lists: `split_points`, layer
  /// indices, and `split_point_inputs`, how many of each layer's inputs go to
  /// the stage before (empty: none, every point is before a whole layer).
  /// A `WireError` when the lists differ in length; the planner checks the
  /// places themselves.
  public static func splitPoints(layers: [Int32], inputs: [Int32]) throws -> [LayerPosition] {
    guard inputs.isEmpty || inputs.count == layers.count else {
      throw WireError(
        "split_point_inputs lists \(inputs.count) values for \(layers.count) split_points: give one per split point, "
          + "or none when every split point is before a whole layer")
    }
    return layers.indices.map { LayerPosition(layer: Int(layers[$0]), inputs: inputs.isEmpty ? 0 : Int(inputs[$0])) }
  }
}

extension Collection<LayerPosition> {
  /// The split points' layers, as `split_points` carries them.
  public var wireLayers: [Int32] { map { Int32(clamping: $0.layer) } }
  /// How far into its layer each split point falls, as `split_point_inputs`
  /// carries it: empty when every one is before a whole layer.
  public var wireInputs: [Int32] { allSatisfy { $0.inputs == 0 } ? [] : map { Int32(clamping: $0.inputs) } }
}
