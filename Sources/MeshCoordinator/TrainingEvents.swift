import MeshProto

/// What the coordinator's training jobs do, told as it happens (the
/// coordinator's metrics listen). Each method returns at once.
public protocol TrainingEvents: Sendable {
  /// A run of `job` left the queue and starts on `partitions` (stage by stage, a stage's replicas in turn).
  func started(_ job: String, stages: Int, replicas: Int, partitions: [String], fromStep step: Int64)
  /// A step of `job` ended `seconds` after it began; `progress` is what its caller was sent.
  func stepped(_ job: String, _ progress: Pipemesh_V1_TrainProgress, seconds: Double, replicas: Int)
  /// An epoch of `job` was evaluated on its held-out split.
  func evaluated(_ job: String, _ progress: Pipemesh_V1_TrainProgress)
  /// `what` of `job` ("step 3", an epoch's evaluation) ran `after` past its
  /// start, beyond its deadline, and runs on: every partition and ps task of
  /// the job answered (slow, not hung; see `StepDeadline`).
  func ranPastDeadline(_ job: String, _ what: String, after: Duration)
  /// After a failed step, `job`'s checkpoint at the step before was
  /// written from what the ps tasks held, or not (`refusal` says why).
  func checkpointedAfterFailure(_ job: String, step: Int64, refusal: String?)
  /// `job` stopped and goes on in a new run, as `fault` records.
  func stopped(_ job: String, _ fault: Pipemesh_V1_JobFault)
  /// The first step of `job` after a stop that ended `how`, `seconds` after it.
  func recovered(_ job: String, how: Pipemesh_V1_JobState, seconds: Double)
  /// A run of `job` ended in `state`, with `error` when it did not succeed
  /// cleanly (a later run may go on with the job).
  func ended(_ job: String, _ state: Pipemesh_V1_JobState, error: String)
}
