import MeshRPC

/// Why the ps refused a call or could not finish it, in the ps's own terms.
/// `status` below is the one place where these kinds meet gRPC statuses;
/// `ParameterServerService`'s handlers answer what they check themselves (a
/// request's fields, a checkpoint directory) with `RPCError` directly.
public typealias ParameterServerError = ModuleError<ParameterServerErrorKind>

/// What kind of `ParameterServerError` it is.
public enum ParameterServerErrorKind: ErrorKind {
  /// A value in the request is refused; the message names it.
  case invalidRequest
  /// A pushed gradient of the variable holds NaN or infinity.
  case nonFiniteGradient
  /// The job, variable or checkpoint named is not held here.
  case notHeld
  /// The call does not fit what the ps holds: a definition that cannot
  /// change, a variable its writer keeps, a step out of turn, a stale gradient.
  case conflict
  /// Holding it would pass the task's memory limits.
  case overBudget
  /// What the ps holds or reads back is damaged.
  case damaged
  /// A checkpoint could not be written.
  case checkpointNotWritten
  /// The job was dropped, or this task restarted, while the call needed it.
  case jobLost
  /// A push waited for the other replicas longer than it may.
  case waitExpired
  /// The caller left while its push or checkpoint waited.
  case cancelled

  public var status: RPCError.Code {
    switch self {
    case .invalidRequest, .nonFiniteGradient: .invalidArgument
    case .notHeld: .notFound
    case .conflict: .failedPrecondition
    case .overBudget: .resourceExhausted
    case .damaged: .dataLoss
    case .checkpointNotWritten: .internal
    case .jobLost: .aborted
    case .waitExpired: .deadlineExceeded
    case .cancelled: .cancelled
    }
  }
}
