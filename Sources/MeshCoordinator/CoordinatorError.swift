import MeshRPC

/// Why the coordinator refused a call or could not finish it, in its own
/// terms. `status` below is the one place where these kinds meet gRPC
/// statuses. `CoordinatorService`'s handlers answer what they check themselves
/// (a request's fields, the caller, a job's state as they find it) with
/// `RPCError` directly, and a member's failure passes on with its status.
public typealias CoordinatorError = ModuleError<CoordinatorErrorKind>

/// What kind of `CoordinatorError` it is.
public enum CoordinatorErrorKind: ErrorKind {
  /// A value in the request is refused; the message names it.
  case invalidRequest
  /// The model, job or member named is not known here.
  case notKnown
  /// The mesh cannot do what is asked as it stands: a member the coordinator
  /// cannot reach or does not own, no partition free, one that advertises
  /// another address, no timing to plan on.
  case unsuitableMesh
  /// It would pass a limit: the partitions' memory, the uploads in flight,
  /// the coordinator's disk.
  case overCapacity
  /// Members the job needs do not answer; a retry may find them back.
  case membersSilent
  /// A step, an upload or a bounded wait ran past its deadline.
  case deadlinePassed
  /// The coordinator's own state (its database, its files) failed.
  case stateStoreFailed
  /// What the coordinator stored reads back damaged.
  case storedDataDamaged
  /// The caller may not do this.
  case notPermitted
  /// The caller did not say who it is, or with a token that is not known.
  case unauthenticated

  public var status: RPCError.Code {
    switch self {
    case .invalidRequest: .invalidArgument
    case .notKnown: .notFound
    case .unsuitableMesh: .failedPrecondition
    case .overCapacity: .resourceExhausted
    case .membersSilent: .unavailable
    case .deadlinePassed: .deadlineExceeded
    case .stateStoreFailed: .internal
    case .storedDataDamaged: .dataLoss
    case .notPermitted: .permissionDenied
    case .unauthenticated: .unauthenticated
    }
  }
}
