import MeshCoordinator
import MeshOps
import MeshPS
import MeshPartition

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
    registry.gauge("pipemesh_ps_pushes", help: "Pushes by outcome.") {
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
      "pipemesh_ps_checkpoint_age_seconds", help: "Seconds since the last checkpoint; -1 before the first."
    ) {
      [([:], checkpointer?.age.map { Double($0.components.seconds) } ?? -1)]
    }
  }
}

enum PartitionMetrics {
  static func register(_ partition: PartitionService, in registry: MetricsRegistry) {
    let activity = partition.activity
    registry.gauge("pipemesh_partition_busy_seconds", help: "Seconds spent computing forward and backward passes.") {
      [([:], activity.snapshot.busySeconds)]
    }
    registry.gauge(
      "pipemesh_partition_kept_micro_batches", help: "Micro-batches waiting for their backward pass (queue depth)."
    ) {
      [([:], Double(activity.snapshot.keptMicroBatches))]
    }
    registry.gauge(
      "pipemesh_partition_job_bytes",
      help: "Bytes each loaded job's stage held at its last commit: variables, optimizer slots, gradient sums."
    ) {
      activity.snapshot.jobBytes.map { (["job": $0.key], Double($0.value)) }
    }
    registry.gauge("pipemesh_partition_passes", help: "Forward and backward passes and commits run.") {
      let counts = activity.snapshot
      return [
        (["kind": "forward"], Double(counts.forwards)), (["kind": "backward"], Double(counts.backwards)),
        (["kind": "commit"], Double(counts.commits)),
      ]
    }
    let dataPlane = partition.dataPlane
    registry.gauge(
      "pipemesh_partition_data_plane_bytes", help: "Bytes of activations and gradients waiting to be fetched."
    ) {
      [([:], Double(dataPlane.heldBytes))]
    }
  }
}

enum CoordinatorMetrics {
  static func register(_ coordinator: CoordinatorService, in registry: MetricsRegistry) {
    registry.gauge("pipemesh_coordinator_jobs", help: "Jobs by state.") {
      coordinator.jobStates.map { (["state": $0.key], Double($0.value)) }
    }
    registry.gauge("pipemesh_coordinator_steps", help: "Training steps completed over all jobs.") {
      [([:], Double(coordinator.stepsCompleted))]
    }
    registry.gauge(
      "pipemesh_coordinator_job_stops",
      help: "Times the jobs run here stopped and went on, by how (failed, interrupted, cancelled)."
    ) { coordinator.jobStops.map { (["how": $0.key], Double($0.value.count)) } }
    registry.gauge("pipemesh_coordinator_steps_redone", help: "Steps run again after those stops, by how.") {
      coordinator.jobStops.map { (["how": $0.key], Double($0.value.stepsRedone)) }
    }
    registry.gauge(
      "pipemesh_coordinator_recovery_seconds",
      help: "Seconds from those stops to the first step after each, added up, by how."
    ) { coordinator.jobStops.map { (["how": $0.key], $0.value.recoverySeconds) } }
    registry.gauge("pipemesh_coordinator_pool_partitions", help: "Partitions of the pool by state.") {
      coordinator.poolStates.map { (["state": $0.key], Double($0.value)) }
    }
  }
}
