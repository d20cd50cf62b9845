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

  /// The prefix of every key of one step of a job.
  public static func step(job: String, step: Int64) -> String { "\(job)/\(step)/" }

  /// The prefix of every key of a job.
  public static func job(_ job: String) -> String { "\(job)/" }

  private static func step(_ key: Pipemesh_V1_MicroBatchKey) -> String { step(job: key.job, step: key.step) }
}
