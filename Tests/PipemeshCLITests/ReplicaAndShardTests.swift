import Foundation
import MeshTestSupport
import Testing

/// Paths beyond one pipeline and one ps task, through the `pipemesh`
/// commands on real processes: data-parallel replicas in sync, and faults of
/// a replica and of one ps shard under a job that may restart.
@Suite(.serialized) struct ReplicaAndShardTests {
  typealias Mesh = DurableStateTests.Mesh

  /// R sync replicas of batch 32 take the steps one replica of batch 32 R
  /// takes: each step's examples are the same, and the replicas apply the
  /// mean of their gradients, added up by the ps or around a ring of the
  /// stage's replicas (on 1 or 2 stages, 2 or 3 replicas). (Equal up to the
  /// order floats are added in; a small learning rate keeps the raw digits
  /// from amplifying it.)
  @Test(arguments: [("ps", 1, 2), ("ring", 1, 2), ("ring", 1, 3), ("ring", 2, 2)])
  func syncReplicasTrainAsOneBigBatch(reduction: String, stages: Int, replicas: Int) async throws {
    let mesh = try await Mesh(parameterServers: 2, partitions: stages * replicas)
    let common =
      [
        "--model", DurableStateTests.model, "--stages", "\(stages)", "--epochs", "1", "--optimizer", "sgd",
        "--learning-rate", "0.001", "--micro-batches", "2", "--json",
      ] + (stages == 2 ? ["--split", "1"] : [])  // both jobs split alike, whatever the layers' timings
    func losses(_ output: String) -> [Double] {
      output.split(separator: "\n").compactMap {
        let progress = try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        // A step's progress: not an evaluation, not the last message, not a place in the queue.
        guard let progress, progress["evaluated"] as? Bool == false, progress["done"] as? Bool == false,
          progress["step"] as? Int ?? 0 > 0
        else { return nil }
        return progress["loss"] as? Double
      }
    }
    let two = try await mesh.run(
      ["train", "--job", "two", "--replicas", "\(replicas)", "--batch-size", "32", "--reduction", reduction] + common)
    #expect(two.status == 0, "\(two.output)")
    let one = try await mesh.run(
      ["train", "--job", "one", "--replicas", "1", "--batch-size", "\(32 * replicas)"] + common)
    #expect(one.status == 0, "\(one.output)")
    #expect(
      (try await DurableStateTests.record("two", on: mesh)["partitions"] as? [String])?.count == stages * replicas)

    let (replicatedLosses, singleLosses) = (losses(two.output), losses(one.output))
    // 1,437 training examples (80 % of 1,797 digits) in steps of 32 R.
    #expect(replicatedLosses.count == 1437 / (32 * replicas) && replicatedLosses.count == singleLosses.count)
    for (step, (got, want)) in zip(replicatedLosses, singleLosses).enumerated() {
      #expect(abs(got - want) <= 1e-5 * abs(want), "step \(step + 1): \(got) with two replicas, \(want) with one")
    }
    try await DurableStateTests.expectSameWeights("two", as: "one", on: mesh, within: 1e-5)
  }

  /// `kill -9` of one of a sync job's two replicas, with a spare partition
  /// in the pool: the job restarts from its checkpoint with the spare in
  /// the lost replica's place and ends with the weights of a run never
  /// interrupted.
  /// The same with the replicas reducing by ring, whose replica 0 pushes
  /// their mean to the ps for its checkpoints.
  @Test(arguments: ["ps", "ring"])
  func aKilledReplicaIsReplacedFromThePool(reduction: String) async throws {
    let mesh = try await Mesh(psCheckpoints: true, partitions: 3)
    let options = [
      "--model", DurableStateTests.model, "--stages", "1", "--replicas", "2", "--batch-size", "32", "--epochs", "20",
      "--micro-batches", "2", "--checkpoint-every", "5", "--max-restarts", "1", "--reduction", reduction, "--json",
    ]
    let training = try await DurableStateTests.trainStraightThenStart("replicated", options: options, on: mesh)
    let before = try await DurableStateTests.record("replicated", on: mesh)["partitions"] as? [String] ?? []
    let lost = try #require(mesh.partitions.first { $0.endpoint == before.last })
    lost.process.signal(SIGKILL)
    _ = try await lost.process.waitForExit()

    #expect(try await training.waitForExit() == 0, "\(training.log)")
    let ended = try await DurableStateTests.record("replicated", on: mesh)
    #expect(ended["state"] as? String == "JOB_STATE_SUCCEEDED" && ended["resumes"] as? Int == 1, "\(ended)")
    let after = ended["partitions"] as? [String] ?? []
    #expect(after.count == 2 && !after.contains(lost.endpoint), "\(ended)")
    try await DurableStateTests.expectSameWeights("replicated", as: "straight", on: mesh)
  }

  /// A job of 20 epochs that checkpoints every 5 steps and may restart twice.
  static let restarting = [
    "--model", DurableStateTests.model, "--epochs", "20", "--micro-batches", "2", "--checkpoint-every", "5",
    "--max-restarts", "2", "--json",
  ]

  /// `kill -9` of one of two ps shards in the middle of a job that may
  /// restart, the shard started again as systemd would (empty: it keeps no
  /// periodic checkpoint here): the coordinator puts every shard back to the
  /// job's newest checkpoint, consistent across them, and the job ends with
  /// the weights of a run never interrupted.
  @Test func aJobWhosePsShardDiesRestartsAndEndsWithTheSameWeights() async throws {
    var mesh = try await Mesh(psCheckpoints: true, parameterServers: 2)
    let training = try await DurableStateTests.trainStraightThenStart("sharded", options: Self.restarting, on: mesh)
    mesh = try await mesh.restarted(coordinator: false, psTasks: [1])
    #expect(try await training.waitForExit() == 0, "\(training.log)")
    let ended = try await DurableStateTests.record("sharded", on: mesh)
    #expect(ended["state"] as? String == "JOB_STATE_SUCCEEDED" && (ended["resumes"] as? Int ?? 0) >= 1, "\(ended)")
    try await DurableStateTests.expectSameWeights("sharded", as: "straight", on: mesh)
  }

  /// A ps task restarted by systemd reads its last periodic checkpoint, which
  /// holds the job some steps behind its stages. The stages are stopped
  /// meanwhile, so their next push reaches the restarted task. Under sync it
  /// refuses the push as ABORTED rather than as a push ahead of the job;
  /// under async (one replica) it applies it, and the stage's pull after it
  /// finds versions older than its own, UNAVAILABLE. Either way the job
  /// restarts from its own checkpoint and ends with the weights of an
  /// uninterrupted run.
  @Test(arguments: [("sync", "ps task restarted"), ("async", "restarted from older values")])
  func aJobWhosePsRestartsBehindItRestartsAndEndsWithTheSameWeights(consistency: String, fault: String)
    async throws
  {
    var mesh = try await Mesh(psCheckpoints: true, periodicSeconds: 1)
    let training = try await DurableStateTests.trainStraightThenStart(
      "behind", options: Self.restarting + ["--consistency", consistency], on: mesh)
    // A periodic checkpoint written from now on holds the running job.
    let periodic = mesh.directory.file("ps0-checkpoints")
    func newest() -> Int {
      let names = (try? FileManager.default.contentsOfDirectory(atPath: periodic)) ?? []
      return names.compactMap { Int($0.dropFirst("checkpoint-".count).dropLast(".safetensors".count)) }.max() ?? 0
    }
    let before = newest()
    try #require(await eventually(timeout: .seconds(30)) { newest() > before }, "no periodic checkpoint in \(periodic)")
    for partition in mesh.partitions { partition.process.signal(SIGSTOP) }
    let stopped = try await DurableStateTests.record("behind", on: mesh)
    try #require(stopped["state"] as? String == "JOB_STATE_RUNNING", "it ended before the kill: \(stopped)")
    mesh = try await mesh.restarted(coordinator: false, psTasks: [0])
    for partition in mesh.partitions { partition.process.signal(SIGCONT) }
    #expect(try await training.waitForExit() == 0, "\(training.log)")
    let ended = try await DurableStateTests.record("behind", on: mesh)
    #expect(ended["state"] as? String == "JOB_STATE_SUCCEEDED", "\(ended)")
    // What the task that restarted behind the stages says; or the coordinator's Checkpoint call
    // failed first: the kill landed in it, or the restarted task refused it by its incarnation.
    let faults = (ended["faults"] as? [[String: Any]] ?? []).map { $0["error"] as? String ?? "" }
    #expect(
      faults.first.map { first in
        [fault, "does not answer", "ps task restarted since"].contains { first.contains($0) }
      } == true, "\(faults)")
    try await DurableStateTests.expectSameWeights("behind", as: "straight", on: mesh)
  }
}
