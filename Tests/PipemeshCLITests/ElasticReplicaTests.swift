import Foundation
import MeshTestSupport
import Testing

/// Data-parallel jobs whose replicas change while they run, through the
/// `pipemesh` commands on real processes: a job goes on without a replica
/// it lost and grows back, grows onto partitions that join the pool, and
/// gives back what it grew onto when another job waits. A step's examples
/// are the same however many replicas run it, so each ends with the weights
/// of a run that never changed (within 1e-5: the replicas' gradients are
/// added in another order).
@Suite(.serialized) struct ElasticReplicaTests {
  static func runningReplicas(_ record: [String: Any]) -> Int { record["runningReplicas"] as? Int ?? 0 }
  static func step(_ record: [String: Any]) -> Int { record["step"] as? Int ?? 0 }
  static func running(_ record: [String: Any]) -> Bool { record["state"] as? String == "JOB_STATE_RUNNING" }
  /// Why the job stopped each time it did, oldest first.
  static func reasons(_ record: [String: Any]) -> [String] {
    (record["faults"] as? [[String: Any]] ?? []).map { $0["error"] as? String ?? "" }
  }

  /// `kill -9` of one of a sync job's two replicas with no spare in the
  /// pool: the survivor goes on at once from the checkpoint with the whole
  /// step's examples, and once the partition is back (as systemd restarts
  /// it) the job grows back to two replicas at a step boundary. The same
  /// when the replicas reduce by ring: each run of the job loads its ring of
  /// the replicas it has.
  @Test(arguments: ["ps", "ring"])
  func aJobGoesOnWithoutALostReplicaAndGrowsBackWhenItReturns(reduction: String) async throws {
    let mesh = try await DurableStateTests.Mesh(psCheckpoints: true, partitions: 2)
    let options = [
      "--model", DurableStateTests.model, "--stages", "1", "--replicas", "2", "--batch-size", "32", "--epochs", "40",
      "--micro-batches", "2", "--optimizer", "sgd", "--learning-rate", "0.001", "--checkpoint-every", "5",
      "--max-restarts", "1", "--reduction", reduction, "--json",
    ]
    try await Self.loseAReplicaAndGrowBack("elastic", options: options, on: mesh)
    try await DurableStateTests.expectSameWeights("elastic", as: "straight", on: mesh, within: 1e-5)
  }

  /// `kill -9` of one of two async (or bounded) replicas, which each push
  /// as they go, so no two runs are equal: with no spare, the survivor goes
  /// on at once with the whole step's examples, and the job grows back to
  /// two replicas once the partition is back. It ends within a point of
  /// validation accuracy of a run never interrupted.
  @Test(arguments: ["async", "bounded:1"])
  func replicasThatApplyTheirOwnUpdatesGoOnWithoutALostOne(consistency: String) async throws {
    let mesh = try await DurableStateTests.Mesh(psCheckpoints: true, partitions: 2)
    // Long enough (~30 s here) for the partition to come back while it runs.
    let options = [
      "--model", DurableStateTests.model, "--stages", "1", "--replicas", "2", "--batch-size", "32", "--epochs", "120",
      "--micro-batches", "2", "--consistency", consistency, "--optimizer", "sgd", "--learning-rate", "0.002",
      "--checkpoint-every", "5", "--max-restarts", "1", "--json",
      // The learning rate suits the raw pixel counts (0-16): standardised, the run learns too little.
      "--normalize", "none",
    ]
    let ended = try await Self.loseAReplicaAndGrowBack("apart", options: options, on: mesh)
    let straight = try await DurableStateTests.record("straight", on: mesh)
    func accuracy(_ record: [String: Any]) throws -> Double {
      #expect(record["state"] as? String == "JOB_STATE_SUCCEEDED", "\(record)")
      let epochs = try #require(record["epochs"] as? [[String: Any]], "\(record)")
      return try #require(epochs.last?["validationAccuracy"] as? Double, "\(record)")
    }
    let (faulted, reference) = (try accuracy(ended), try accuracy(straight))
    #expect(reference > 0.9, "the fault-free run learned too little to compare: \(reference)")
    print("\(consistency): validation accuracy \(faulted), \(reference) without the fault")
    #expect(abs(faulted - reference) <= 0.01, "validation accuracy \(faulted) after the fault, \(reference) without")
  }

  /// Trains job "straight" with `options` (two replicas, on the mesh's two
  /// partitions), then `job`: `kill -9` of its second replica's partition
  /// once it checkpointed. Expects the survivor to run the job alone past
  /// the step it stopped at; starts the partition again at its address (as
  /// systemd would), and expects the job to grow back onto it at a step
  /// boundary and succeed on both. Returns the job's record.
  @discardableResult
  static func loseAReplicaAndGrowBack(
    _ job: String, options: [String], on mesh: DurableStateTests.Mesh
  ) async throws -> [String: Any] {
    let training = try await DurableStateTests.trainStraightThenStart(job, options: options, on: mesh)
    let before = try await DurableStateTests.record(job, on: mesh)
    #expect(runningReplicas(before) == 2, "\(before)")
    let lost = try #require(mesh.partitions.first { $0.endpoint == (before["partitions"] as? [String])?.last })
    lost.process.signal(SIGKILL)
    _ = try await lost.process.waitForExit()

    // Without a spare, the survivor runs the job alone, past the step it stopped at.
    let shrunk = try await DurableStateTests.waitFor(job, on: mesh) {
      running($0) && runningReplicas($0) == 1 && step($0) > step(before) + 5
    }
    #expect(shrunk["partitions"] as? [String] == mesh.partitions.map(\.endpoint).filter { $0 != lost.endpoint })
    // Kept until the job ends: the process is killed when the last reference goes.
    let back = try await RunningService.start(
      "partition", log: mesh.directory.file("partition-back.log"), listen: lost.endpoint)
    let grown = try await DurableStateTests.waitFor(job, on: mesh) { runningReplicas($0) == 2 }
    #expect(running(grown), "the job ended before it grew back: \(grown)")

    #expect(try await training.waitForExit() == 0, "\(training.log)")
    let ended = try await DurableStateTests.record(job, on: mesh)
    #expect(ended["state"] as? String == "JOB_STATE_SUCCEEDED", "\(ended)")
    let faults = ended["faults"] as? [[String: Any]] ?? []
    #expect(faults.map { $0["state"] as? String } == ["JOB_STATE_RESTARTING", "JOB_STATE_INTERRUPTED"], "\(faults)")
    #expect((faults.last?["error"] as? String)?.contains("the job grows from 1 to 2 replicas") == true, "\(faults)")
    print(
      "replica lost: stepping again on one replica \(faults.first?["recoverySeconds"] ?? 0) s after the stop; "
        + "grown back \(faults.last?["recoverySeconds"] ?? 0) s after its move")
    #expect(Set(ended["partitions"] as? [String] ?? []) == Set([back.endpoint] + mesh.partitions.map(\.endpoint)))
    return ended
  }

  /// A job that may grow (`--max-replicas 2`) starts on the one partition
  /// of the pool, grows onto a second that joins, and gives it back when
  /// another job comes to wait for a partition; both end, and the grown job
  /// with the weights of a run on one replica throughout.
  @Test func aJobGrowsOntoAJoinedPartitionAndGivesItBackToAWaitingJob() async throws {
    let mesh = try await PoolMembershipTests.Mesh(psCheckpoints: true)
    let first = try await mesh.partition("first")
    try await mesh.waitForPool { $0 == [first.endpoint: "MEMBER_STATE_FREE"] }
    let options = [
      "--model", DurableStateTests.model, "--stages", "1", "--replicas", "1", "--max-replicas", "2", "--batch-size",
      "64", "--epochs", "40", "--micro-batches", "2", "--optimizer", "sgd", "--learning-rate", "0.001",
      "--checkpoint-every", "5", "--json",
    ]
    let training = try await DurableStateTests.trainStraightThenStart("growing", options: options, on: mesh)
    #expect(Self.runningReplicas(try await DurableStateTests.record("growing", on: mesh)) == 1)

    let second = try await mesh.partition("second")
    let grown = try await DurableStateTests.waitFor("growing", on: mesh) { Self.runningReplicas($0) == 2 }
    #expect(Self.running(grown) && Set(grown["partitions"] as? [String] ?? []) == [first.endpoint, second.endpoint])

    // Another job waits for a partition: the grown job gives one back.
    let other = try ChildProcess(
      PipemeshBinary.path,
      [
        "train", "--coordinator", mesh.coordinator.endpoint, "--job", "other", "--model", DurableStateTests.model,
        "--stages", "1", "--epochs", "1",
      ],
      logPath: mesh.directory.file("other.log"))
    // Its record keeps the move: running on one replica lasts only while the
    // other job's single epoch runs, too short to catch by polling on a busy host.
    let shrunk = try await DurableStateTests.waitFor("growing", on: mesh) {
      Self.reasons($0).contains { $0.contains("gives back the replicas past the 1 it asked for") }
        || ["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"].contains($0["state"] as? String ?? "")
    }
    #expect(
      Self.reasons(shrunk).contains { $0.contains("gives back") },
      "the job ended before it gave a partition back: \(shrunk)")
    #expect(try await other.waitForExit() == 0, "\(other.log)")
    #expect(try await training.waitForExit() == 0, "\(training.log)")

    let ended = try await DurableStateTests.record("growing", on: mesh)
    let reasons = Self.reasons(ended)
    #expect(reasons.first?.contains("the job grows from 1 to 2 replicas") == true, "\(reasons)")
    #expect(reasons.contains { $0.contains("gives back the replicas past the 1 it asked for") }, "\(reasons)")
    #expect(ended["state"] as? String == "JOB_STATE_SUCCEEDED" && ended["resumes"] as? Int == reasons.count)
    try await DurableStateTests.expectSameWeights("growing", as: "straight", on: mesh, within: 1e-5)
    try await DurableStateTests.expectSameEpochLosses("growing", as: "straight", on: mesh, within: 1e-5)
  }
}
