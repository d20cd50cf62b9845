import Logging
import MeshCoordinator
import MeshOps
import MeshPS
import MeshPartition
import MeshProto
import Synchronization

/// The gauges each role adds to its metrics, read at every scrape.
enum ParameterServerMetrics {
  static func register(store: ParameterStore, checkpointer: Checkpointer?, in registry: MetricsRegistry) {
    let stats = { @Sendable in (try? store.stats(job: "")) ?? .init() }
    registry.gauge("pipemesh_ps_variables", help: "Variables held.") { [([:], Double(stats().variables))] }
    registry.gauge("pipemesh_ps_bytes", help: "Bytes of values and optimizer slots held.") {
      [([:], Double(stats().bytes))]
    }
    registry.gauge("pipemesh_ps_job_bytes", help: "Bytes of values and optimizer slots each job holds.") {
      store.bytesByJob.map { (["job": $0.key], Double($0.value)) }
    }
    registry.gauge("pipemesh_ps_max_version", help: "Highest version of any variable (updates applied to it).") {
      [([:], Double(stats().maxVersion))]
    }
    registry.counter("pipemesh_ps_pushes_total", help: "Pushes by outcome.") {
      let current = stats()
      return [
        (["outcome": "applied"], Double(current.pushesApplied)),
        (["outcome": "refused_stale"], Double(current.pushesRefusedStale)),
        (["outcome": "refused_non_finite"], Double(current.pushesRefusedNonFinite)),
        (["outcome": "duplicate"], Double(current.pushesDuplicate)),
      ]
    }
    registry.gauge(
      "pipemesh_ps_pushes_waiting",
      help: "Pushes waiting for the other pushers of their step (sync) or the slowest replica (bounded)."
    ) {
      [([:], Double(stats().pushesWaiting))]
    }
    registry.gauge("pipemesh_ps_staleness_max", help: "Most versions an applied async or bounded gradient was behind.")
    {
      [([:], Double(stats().maxStaleness))]
    }
    registry.gauge("pipemesh_ps_staleness_mean", help: "Mean versions applied async or bounded gradients were behind.")
    {
      [([:], stats().meanStaleness)]
    }
    registry.gauge(
      "pipemesh_ps_replica_lead_max",
      help: "Most steps an applied async or bounded push was ahead of the slowest replica."
    ) {
      [([:], Double(stats().maxReplicaLead))]
    }
    registry.counter(
      "pipemesh_ps_pushes_waited_total", help: "Bounded pushes that waited for the slowest replica to come near."
    ) {
      [([:], Double(stats().pushesWaited))]
    }
    registry.gauge(
      "pipemesh_ps_checkpoint_age_seconds", help: "Seconds since the last checkpoint; -1 before the first."
    ) {
      [([:], checkpointer?.age.map { Double($0.components.seconds) } ?? -1)]
    }
  }
}

enum PartitionMetrics {
  static func register(_ partition: PartitionService, in registry: MetricsRegistry) {
    let activity = partition.activity
    registry.counter(
      "pipemesh_partition_busy_seconds_total", help: "Seconds spent computing forward and backward passes."
    ) {
      [([:], activity.snapshot.busySeconds)]
    }
    registry.gauge(
      "pipemesh_partition_kept_micro_batches", help: "Micro-batches waiting for their backward pass (queue depth)."
    ) {
      [([:], Double(activity.snapshot.keptMicroBatches))]
    }
    registry.gauge(
      "pipemesh_partition_calls_waiting_for_turn",
      help: "Forward, Backward and BackwardWeights calls that came before their turn in their step's schedule and wait."
    ) {
      [([:], Double(activity.snapshot.callsWaitingForTurn))]
    }
    registry.gauge(
      "pipemesh_partition_job_bytes",
      help: "Bytes each loaded job's stage held at its last commit: variables, optimizer slots, gradient sums."
    ) {
      activity.snapshot.jobBytes.map { (["job": $0.key], Double($0.value)) }
    }
    registry.counter("pipemesh_partition_passes_total", help: "Forward and backward passes and commits run.") {
      let counts = activity.snapshot
      return [
        (["kind": "forward"], Double(counts.forwards)), (["kind": "backward"], Double(counts.backwards)),
        (["kind": "commit"], Double(counts.commits)),
      ]
    }
    registry.counter(
      "pipemesh_partition_fetches_served_total",
      help:
        "Tensors this partition's data plane handed to other partitions, by how: shared_memory (same host) or network."
    ) {
      let counts = activity.snapshot
      return [
        (["by": "shared_memory"], Double(counts.fetchesInSharedMemory)),
        (["by": "network"], Double(counts.fetchesInChunks)),
      ]
    }
    registry.counter(
      "pipemesh_partition_shared_buffers_refused_total",
      help:
        "Same-host fetches whose shared buffer this partition could not write (not permitted, not a fetch buffer waiting for the answer, or the write failed); they went by the network."
    ) {
      [([:], Double(activity.snapshot.sharedBuffersRefused))]
    }
    let dataPlane = partition.dataPlane
    registry.gauge(
      "pipemesh_partition_data_plane_bytes", help: "Bytes of activations and gradients waiting to be fetched."
    ) {
      [([:], Double(dataPlane.heldBytes))]
    }
  }
}

/// The coordinator's metrics: its jobs by state and its pool, counted as
/// steps and stops happen, and each running job's figures (labelled `job`)
/// until its run ends.
final class CoordinatorMetrics: TrainingEvents, InferenceEvents {
  private let registry: MetricsRegistry
  /// The latest figures of each running job.
  private let running = Mutex<[String: JobFigures]>([:])

  private struct JobFigures {
    var step: Int64 = 0
    var loss: Double = 0
    var accuracy: Double = 0
    var samplesPerSecond: Double = 0
    var bubble: Double = 0
    var replicas = 0
    var validation: (loss: Double, accuracy: Double)?
    /// Busy seconds over the step's seconds, by stage and replica.
    var busy: [(stage: Int32, replica: Int32, fraction: Double)] = []
  }

  init(registry: MetricsRegistry) {
    self.registry = registry
  }

  func started(_ job: String, stages: Int, replicas: Int, partitions: [String], fromStep step: Int64) {}

  /// Rows per inference batch: powers of two up to 65,536.
  private static let batchRowBuckets = (0...16).map { Double(1 << $0) }

  func inferenceBatchStarted(rows: Int, requests: Int) {
    registry.observe(
      "pipemesh_inference_batch_rows", help: "Rows of each inference batch sent through the stages.",
      value: Double(rows), buckets: Self.batchRowBuckets)
    registry.increment(
      "pipemesh_inference_batched_requests_total", help: "Infer requests answered by a batch.", by: Double(requests))
  }

  /// Adds the gauges read from `coordinator` and from the running jobs.
  func register(_ coordinator: CoordinatorService) {
    registry.gauge("pipemesh_coordinator_jobs", help: "Jobs by state.") {
      coordinator.jobStates.map { (["state": $0.key], Double($0.value)) }
    }
    registry.gauge("pipemesh_coordinator_pool_partitions", help: "Partitions of the pool by state.") {
      coordinator.poolStates.map { (["state": $0.key], Double($0.value)) }
    }
    registry.gauge(
      "pipemesh_inference_waiting_requests", help: "Infer requests waiting for the next batch of their model."
    ) { [([:], Double(coordinator.waitingInferences))] }
    func perJob(_ name: String, _ help: String, _ value: @escaping @Sendable (JobFigures) -> Double?) {
      registry.gauge(name, help: help) { [self] in
        running.withLock { $0.compactMap { job, figures in value(figures).map { (["job": job], $0) } } }
      }
    }
    perJob("pipemesh_job_step", "The step each running job has reached.") { Double($0.step) }
    perJob("pipemesh_job_loss", "Each running job's training loss at its last step.") { $0.loss }
    perJob("pipemesh_job_accuracy", "Each running job's training accuracy at its last step (classification).") {
      $0.accuracy
    }
    perJob("pipemesh_job_validation_loss", "Each running job's loss on its held-out split at its last epoch.") {
      $0.validation?.loss
    }
    perJob("pipemesh_job_validation_accuracy", "Each running job's accuracy on its held-out split at its last epoch.") {
      $0.validation?.accuracy
    }
    perJob("pipemesh_job_samples_per_second", "Examples each running job trained on per second at its last step.") {
      $0.samplesPerSecond
    }
    perJob(
      "pipemesh_job_bubble_fraction",
      "Share of its partitions' time in its last step that each running job's stages sat idle (the pipeline bubble)."
    ) { $0.bubble }
    perJob("pipemesh_job_replicas", "Data-parallel replicas each running job runs on.") { Double($0.replicas) }
    registry.gauge(
      "pipemesh_job_stage_busy_fraction", help: "Share of each running job's last step each stage spent computing."
    ) { [self] in
      running.withLock { jobs in
        jobs.flatMap { job, figures in
          figures.busy.map { (["job": job, "stage": "\($0.stage)", "replica": "\($0.replica)"], $0.fraction) }
        }
      }
    }
  }

  func stepped(_ job: String, _ progress: Pipemesh_V1_TrainProgress, seconds: Double, replicas: Int) {
    registry.increment("pipemesh_coordinator_steps_total", help: "Training steps completed, over all jobs.")
    registry.observe(
      "pipemesh_job_step_seconds", help: "How long each running job's steps take.", labels: ["job": job],
      value: seconds)
    let busy = progress.stages.map { ($0.stage, $0.replica, seconds > 0 ? min(1, $0.busySeconds / seconds) : 0) }
    running.withLock { running in
      var figures = running[job] ?? JobFigures()
      figures.step = progress.step
      figures.loss = progress.loss
      figures.accuracy = progress.accuracy
      figures.samplesPerSecond = progress.samplesPerSecond
      figures.replicas = replicas
      figures.busy = busy
      figures.bubble = busy.isEmpty ? 0 : 1 - busy.map(\.2).reduce(0, +) / Double(busy.count)
      running[job] = figures
    }
  }

  func evaluated(_ job: String, _ progress: Pipemesh_V1_TrainProgress) {
    running.withLock {
      $0[job, default: JobFigures()].validation = (progress.validationLoss, progress.validationAccuracy)
    }
  }

  func ranPastDeadline(_ job: String, _ what: String, after: Duration) {
    registry.increment(
      "pipemesh_coordinator_slow_steps_total",
      help: "Times a training step (of one replica, when replicas run apart) or an epoch's evaluation ran past its "
        + "deadline and ran on, every partition and ps task of its job answering a health check (slow, not hung).")
  }

  func checkpointedAfterFailure(_ job: String, step: Int64, refusal: String?) {
    registry.increment(
      "pipemesh_coordinator_failure_checkpoints_total",
      help: "Checkpoints at the step before a failed one, as the ps tasks held it: written, or refused (the ps "
        + "did not hold that step exactly), by outcome.", labels: ["outcome": refusal == nil ? "written" : "refused"])
  }

  func stopped(_ job: String, _ fault: Pipemesh_V1_JobFault) {
    let how = Self.how(fault.state)
    registry.increment(
      "pipemesh_coordinator_job_stops_total",
      help: "Times jobs stopped and went on, by how (failed: a member failed under it; interrupted: a coordinator "
        + "restart, a move or a change of replicas; cancelled).", labels: ["how": how])
    registry.increment(
      "pipemesh_coordinator_steps_redone_total", help: "Steps run again after those stops, by how.",
      labels: ["how": how], by: Double(fault.stepsRedone))
  }

  func recovered(_ job: String, how: Pipemesh_V1_JobState, seconds: Double) {
    registry.observe(
      "pipemesh_coordinator_recovery_seconds", help: "Seconds from a stop to the first step after it, by how.",
      labels: ["how": Self.how(how)], value: seconds)
  }

  func ended(_ job: String, _ state: Pipemesh_V1_JobState, error: String) {
    running.withLock { _ = $0.removeValue(forKey: job) }
    registry.forget("job", job)
  }

  /// "failed", "interrupted", "cancelled".
  private static func how(_ state: Pipemesh_V1_JobState) -> String {
    switch state {
    case .failed, .restarting: "failed"
    case .interrupted: "interrupted"
    case .cancelled: "cancelled"
    default: "\(state)"
    }
  }
}

/// The coordinator's log of its jobs: each run that starts and ends, each
/// epoch's evaluation, each stop and how soon the job went on; then the
/// metrics hear the same.
struct LoggedTrainingEvents: TrainingEvents {
  let log: Logger
  let next: any TrainingEvents

  func started(_ job: String, stages: Int, replicas: Int, partitions: [String], fromStep step: Int64) {
    let from = step > 0 ? " from step \(step)" : ""
    log.info(
      "job \(job) starts\(from) on \(stages) stages × \(replicas) replicas: \(partitions.joined(separator: ", "))")
    next.started(job, stages: stages, replicas: replicas, partitions: partitions, fromStep: step)
  }

  func stepped(_ job: String, _ progress: Pipemesh_V1_TrainProgress, seconds: Double, replicas: Int) {
    next.stepped(job, progress, seconds: seconds, replicas: replicas)
  }

  func evaluated(_ job: String, _ progress: Pipemesh_V1_TrainProgress) {
    let figures = String(format: "%.4f, accuracy %.4f", progress.validationLoss, progress.validationAccuracy)
    log.info(
      "job \(job) epoch \(progress.epoch) (step \(progress.step)/\(progress.totalSteps)): validation loss \(figures)")
    next.evaluated(job, progress)
  }

  func ranPastDeadline(_ job: String, _ what: String, after: Duration) {
    log.notice(
      "job \(job): \(what) runs \(after) past its start, beyond its deadline; every partition and ps task of the job answers, so it runs on"
    )
    next.ranPastDeadline(job, what, after: after)
  }

  func checkpointedAfterFailure(_ job: String, step: Int64, refusal: String?) {
    if let refusal {
      log.notice("job \(job): no checkpoint at step \(step) after the failed step after it: \(refusal)")
    } else {
      log.info("job \(job): checkpointed at step \(step), as the ps held it, after the failed step after it")
    }
    next.checkpointedAfterFailure(job, step: step, refusal: refusal)
  }

  func stopped(_ job: String, _ fault: Pipemesh_V1_JobFault) {
    log.warning(
      "job \(job) stopped at step \(fault.step) (\(fault.state)) and goes on, \(fault.stepsRedone) steps to run again: \(fault.error)"
    )
    next.stopped(job, fault)
  }

  func recovered(_ job: String, how: Pipemesh_V1_JobState, seconds: Double) {
    log.info("job \(job) steps again \(String(format: "%.1f", seconds)) s after it stopped (\(how))")
    next.recovered(job, how: how, seconds: seconds)
  }

  func ended(_ job: String, _ state: Pipemesh_V1_JobState, error: String) {
    let why = error.isEmpty ? "" : ": \(error)"
    switch state {
    case .succeeded: log.notice("job \(job) succeeded\(why)")
    case .failed: log.error("job \(job) failed\(why)")
    default: log.notice("job \(job) stopped (\(state))\(why)")
    }
    next.ended(job, state, error: error)
  }
}
