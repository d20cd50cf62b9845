import MeshProto
import MeshRPC

/// The name under which a stage holds a tensor its neighbours fetch (see the
/// Partition service in protos/): the coordinator names it in the neighbour's
/// call before the stage has produced it. On the wire it is the string
/// `job/step/micro-batch/kind` (`TensorReference.key`).
public struct DataPlaneKey: Hashable, Sendable, CustomStringConvertible {
  /// What the tensor is.
  public enum Kind: String, Sendable, CaseIterable {
    /// A training Forward's output.
    case activation
    /// A Backward's gradient with respect to the stage's input.
    case gradient
    /// An inference Forward's output.
    case inference
    /// A part of a step's gradients that a replica passes to the next around
    /// the ring of its stage's replicas; the micro-batch field counts the
    /// ring's rounds.
    case reduction
  }

  public let job: String
  public let step: Int64
  public let microBatch: Int32
  public let kind: Kind

  /// The key of `kind` for the micro-batch `key` names.
  public init(_ key: Pipemesh_V1_MicroBatchKey, _ kind: Kind) {
    job = key.job
    step = key.step
    microBatch = key.microBatch
    self.kind = kind
  }

  /// The key of `kind` for `microBatch` (or ring round) of a job's step.
  public init(job: String, step: Int64, microBatch: Int32, kind: Kind) {
    self.job = job
    self.step = step
    self.microBatch = microBatch
    self.kind = kind
  }

  /// Reads a key in its wire form; throws a `WireError` naming the form
  /// for any other string.
  public init(wire: String) throws {
    let parts = wire.split(separator: "/", omittingEmptySubsequences: false)
    guard parts.count == 4, !parts[0].isEmpty, let step = Int64(parts[1]), let microBatch = Int32(parts[2]),
      let kind = Kind(rawValue: String(parts[3]))
    else {
      throw WireError(
        "key '\(wire.echoed)' is not a data-plane key: job/step/micro-batch/\(Kind.allCases.map(\.rawValue).joined(separator: "|"))"
      )
    }
    job = String(parts[0])
    self.step = step
    self.microBatch = microBatch
    self.kind = kind
    // One spelling per key ("+1" or "01" would name a tensor never offered).
    guard self.wire == wire else {
      throw WireError("key '\(wire.echoed)' is not in canonical form; it would be '\(self.wire.echoed)'")
    }
  }

  /// The key as `TensorReference.key` carries it.
  public var wire: String { "\(job)/\(step)/\(microBatch)/\(kind.rawValue)" }

  public var description: String { wire }
}
