import MeshRPC

/// Why a stage refused a call or could not finish it, in the stage's own
/// terms. `status` below is the one place where these kinds meet gRPC
/// statuses. `PartitionService`'s handlers answer what they check themselves
/// (a request's fields, which stage is loaded, a timing's limits) with
/// `RPCError` directly, and failures of the transport stay `RPCError`s.
public typealias StageError = ModuleError<StageErrorKind>

/// What kind of `StageError` it is.
public enum StageErrorKind: ErrorKind {
  /// A value in the call is refused; the message names it.
  case invalidCall
  /// A gradient of the variable holds NaN or infinity, so nothing is applied.
  case nonFiniteGradient
  /// The call comes out of the stage's order: a backward without its
  /// forward, a weight gradient before its backward, a commit with
  /// micro-batches unfinished, weights the stage no longer holds.
  case outOfOrder
  /// The stage's variables do not fit what the ps holds of the job (a
  /// checkpoint of other layers, values others updated already).
  case psStateConflict
  /// The ps holds older state than the stage (a task restarted behind the
  /// others): the coordinator runs the job on from its newest checkpoint.
  case psBehind
  /// A peer (the ps or another partition) answered something that does not
  /// fit what was asked.
  case peerAnswerDamaged
  /// Keeping the call's activations would pass the stage's memory bound.
  case overMemoryBound
  /// The call's step or job ended before it could be answered: an earlier
  /// call of the step failed, its tensor's step was committed, or the job
  /// was unloaded.
  case stepEnded
  /// Every caller left while the call waited for its turn.
  case abandoned
  /// A tensor asked of the data plane is not held: never produced, or
  /// fetched already.
  case tensorNotHeld
  /// A reference names a partition that is not one of the job's.
  case strangerPeer

  public var status: RPCError.Code {
    switch self {
    case .invalidCall, .nonFiniteGradient: .invalidArgument
    case .outOfOrder, .psStateConflict: .failedPrecondition
    case .psBehind: .unavailable
    case .peerAnswerDamaged: .dataLoss
    case .overMemoryBound: .resourceExhausted
    case .stepEnded: .aborted
    case .abandoned: .cancelled
    case .tensorNotHeld: .notFound
    case .strangerPeer: .permissionDenied
    }
  }
}
