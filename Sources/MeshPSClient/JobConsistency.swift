import MeshProto
import MeshWire

/// A job's consistency rule, validated: the one reading of a
/// `Pipemesh_V1_Consistency` that the coordinator, partitions and ps share.
/// A request that names no mode is sync (it matches single-process training).
public struct JobConsistency: Equatable, Sendable {
  public enum Mode: Equatable, Sendable {
    /// Step t is applied once every user of a variable pushed it from every replica.
    case sync
    /// Every push is applied at once, as it is.
    case async
    /// Applied at once; refuse pushes more than `maxStaleness` versions
    /// behind, or with a `wait`, hold replicas within `maxStaleness` steps of
    /// each other, a push waiting at most that long for the slowest replica.
    case bounded(maxStaleness: Int64, wait: Duration?)
  }

  /// Where sync replicas add up their gradients.
  public enum Reduction: Equatable, Sendable {
    /// Each replica pushes to the ps, which applies their mean.
    case parameterServer
    /// The replicas of a stage all-reduce among themselves, each applying
    /// the same update; the ps sees one writer per stage.
    case ring
  }

  public let mode: Mode
  public let replicas: Int32
  /// `.parameterServer` unless the mode is sync and asks for the ring.
  public let reduction: Reduction
  public static let maxReplicas: Int32 = 4096
  /// How long a bounded push waits for the slowest replica when the request
  /// gives no time, and the most it may give.
  public static let defaultWaitTimeout = Duration.seconds(60)
  public static let maxWaitTimeoutSeconds: Int32 = 86_400

  public init(_ proto: Pipemesh_V1_Consistency) throws {
    replicas = proto.replicas == 0 ? 1 : proto.replicas
    guard replicas > 0, replicas <= Self.maxReplicas else {
      throw WireError("consistency replicas must be in 1...\(Self.maxReplicas), got \(replicas)")
    }
    reduction = try proto.sync.reduction.parsed
    switch proto.mode {
    case .sync, nil: mode = .sync
    case .async: mode = .async
    case .bounded(let bounded):
      guard bounded.maxStaleness >= 0 else {
        throw WireError("bounded consistency needs max_staleness >= 0")
      }
      guard bounded.waitTimeoutSeconds >= 0, bounded.waitTimeoutSeconds <= Self.maxWaitTimeoutSeconds else {
        throw WireError(
          "bounded consistency wait_timeout_seconds is \(bounded.waitTimeoutSeconds); give 0 (60 seconds) to \(Self.maxWaitTimeoutSeconds)"
        )
      }
      let timeout = bounded.waitTimeoutSeconds == 0 ? Self.defaultWaitTimeout : .seconds(bounded.waitTimeoutSeconds)
      mode = .bounded(maxStaleness: bounded.maxStaleness, wait: bounded.wait ? timeout : nil)
    }
  }

  public var proto: Pipemesh_V1_Consistency {
    var proto = Pipemesh_V1_Consistency()
    proto.replicas = replicas
    switch mode {
    case .sync: proto.sync = .with { $0.reduction = reduction == .ring ? .ring : .unspecified }
    case .async: proto.async = .init()
    case .bounded(let maxStaleness, let wait):
      proto.bounded = .with {
        $0.maxStaleness = maxStaleness
        $0.wait = wait != nil
        $0.waitTimeoutSeconds = Int32(wait?.components.seconds ?? 0)
      }
    }
    return proto
  }
}

extension JobConsistency {
  /// Whether the stages' replicas sum their gradients around a ring.
  public var reducesByRing: Bool { reduction == .ring && replicas > 1 }

  /// What the ps is told: as `proto`, except that replicas reducing by ring
  /// reach it as one writer per stage (one replica, the ps's own sum).
  public var atParameterServer: Pipemesh_V1_Consistency {
    reduction == .ring ? JobConsistency(mode: mode, replicas: 1, reduction: .parameterServer).proto : proto
  }

  private init(mode: Mode, replicas: Int32, reduction: Reduction) {
    self.mode = mode
    self.replicas = replicas
    self.reduction = reduction
  }
}

extension Pipemesh_V1_Reduction {
  fileprivate var parsed: JobConsistency.Reduction {
    get throws {
      switch self {
      case .unspecified, .parameterServer: return .parameterServer
      case .ring: return .ring
      case .UNRECOGNIZED(let value):
        throw WireError(
          "consistency sync.reduction is \(value); give REDUCTION_PARAMETER_SERVER (1) or REDUCTION_RING (2)")
      }
    }
  }
}

extension Pipemesh_V1_Consistency {
  /// Throws a `WireError` when the ps would refuse this consistency.
  public func validate() throws {
    _ = try JobConsistency(self)
  }
}
