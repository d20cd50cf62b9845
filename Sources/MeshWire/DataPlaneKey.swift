import MeshProto

/// Keys under which a stage holds the tensors its neighbours fetch (see the
/// Partition service in protos/): the coordinator names them in the
/// neighbour's call before the stage has produced them.
public enum DataPlaneKey {
  /// A training Forward's output.
  public static func activation(_ key: Pipemesh_V1_MicroBatchKey) -> String { "\(step(key))\(key.microBatch)/activation" }

  /// A Backward's gradient with respect to the stage's input.
  public static func inputGradient(_ key: Pipemesh_V1_MicroBatchKey) -> String { "\(step(key))\(key.microBatch)/gradient" }

  /// An inference Forward's output.
  public static func inference(_ key: Pipemesh_V1_MicroBatchKey) -> String { "\(step(key))\(key.microBatch)/inference" }

  /// The job and step a key belongs to (nil for a key of another form).
  public static func jobAndStep(of key: String) -> (job: String, step: Int64)? {
    let parts = key.split(separator: "/", maxSplits: 2)
    guard parts.count == 3, let step = Int64(parts[1]) else { return nil }
    return (String(parts[0]), step)
  }

  private static func step(_ key: Pipemesh_V1_MicroBatchKey) -> String { "\(key.job)/\(key.step)/" }
}
