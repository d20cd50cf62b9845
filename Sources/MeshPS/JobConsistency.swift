import MeshProto
import MeshRPC

/// A job's consistency rule, validated.
struct JobConsistency: Equatable, Sendable {
  enum Mode: Equatable, Sendable {
    /// Step t is applied once every user of a variable pushed it from every replica.
    case sync
    /// Every push is applied at once, as it is.
    case async
    /// Applied at once; refuse pushes more than `maxStaleness` versions behind,
    /// or with `wait`, hold replicas within `maxStaleness` steps of each other.
    case bounded(maxStaleness: Int64, wait: Bool)
  }

  let mode: Mode
  let replicas: Int32
  static let maxReplicas: Int32 = 4096

  init(_ proto: Pipemesh_V1_Consistency) throws {
    replicas = proto.replicas == 0 ? 1 : proto.replicas
    guard replicas > 0, replicas <= Self.maxReplicas else {
      throw RPCError(.invalidArgument, "consistency replicas must be in 1...\(Self.maxReplicas), got \(replicas)")
    }
    switch proto.mode {
    case .sync: mode = .sync
    case .async, nil: mode = .async
    case .bounded(let bounded):
      guard bounded.maxStaleness >= 0 else {
        throw RPCError(.invalidArgument, "bounded consistency needs max_staleness >= 0")
      }
      mode = .bounded(maxStaleness: bounded.maxStaleness, wait: bounded.wait)
    }
  }

  var proto: Pipemesh_V1_Consistency {
    var proto = Pipemesh_V1_Consistency()
    proto.replicas = replicas
    switch mode {
    case .sync: proto.sync = .init()
    case .async: proto.async = .init()
    case .bounded(let maxStaleness, let wait):
      proto.bounded = .with {
        $0.maxStaleness = maxStaleness
        $0.wait = wait
      }
    }
    return proto
  }
}

extension Pipemesh_V1_Consistency {
  /// Throws INVALID_ARGUMENT when the ps would refuse this consistency.
  public func validate() throws {
    _ = try JobConsistency(self)
  }
}

/// Names that become checkpoint keys: a job is `[A-Za-z0-9_.-]+`; a variable
/// may also hold `/`, `#` and `:` (row blocks), never `@` (the slot separator).
enum Names {
  static func checkJob(_ job: String) throws {
    guard !job.isEmpty, job.utf8.count <= 128, job.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) })
    else { throw RPCError(.invalidArgument, "job name '\(job.echoed)' must be 1-128 characters of A-Z a-z 0-9 _ . -") }
  }

  static func checkVariable(_ name: String) throws {
    guard !name.isEmpty, name.utf8.count <= 512,
      name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_.-/#:".contains($0)) })
    else { throw RPCError(.invalidArgument, "variable name '\(name.echoed)' must be 1-512 characters of A-Z a-z 0-9 _ . - / # :") }
  }
}
