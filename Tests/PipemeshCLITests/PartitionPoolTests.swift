import Foundation
import MeshRPC
import MeshTestSupport
import MeshWire
import Testing

/// A coordinator's partitions as a pool: each job holds stages × replicas
/// partitions of its own, jobs of different shapes run at once, the rest
/// wait in order, and a spare takes the place of a partition that dies.
/// Real processes, driven through the `pipemesh` commands.
@Suite(.serialized) struct PartitionPoolTests {
  typealias Mesh = DurableStateTests.Mesh

  /// `pipemesh train` of `job` with `options`, followed in a process of its own.
  static func startTraining(_ job: String, _ options: [String], on mesh: Mesh) throws -> ChildProcess {
    try ChildProcess(
      PipemeshBinary.path,
      ["train", "--coordinator", mesh.coordinator.endpoint, "--job", job, "--model", DurableStateTests.model, "--json"]
        + options, logPath: mesh.directory.file("\(job).log"))
  }

  static func partitions(of record: [String: Any]) -> [String] { record["partitions"] as? [String] ?? [] }

  @Test func jobsOfDifferentShapesShareThePoolAndTheRestWaitInOrder() async throws {
    let mesh = try await Mesh(partitions: 3)
    let wide = try Self.startTraining("wide", ["--stages", "2", "--epochs", "1000"], on: mesh)
    let wideRecord = try await DurableStateTests.waitFor("wide", on: mesh) {
      $0["state"] as? String == "JOB_STATE_RUNNING"
    }
    #expect(Self.partitions(of: wideRecord).count == 2, "\(wideRecord)")

    // A one-stage job runs to its end beside it, on the third partition.
    let narrow = try await mesh.run([
      "train", "--job", "narrow", "--model", DurableStateTests.model, "--stages", "1", "--epochs", "1",
    ])
    #expect(narrow.status == 0, "\(narrow.output)")
    let narrowRecord = try await DurableStateTests.record("narrow", on: mesh)
    #expect(narrowRecord["state"] as? String == "JOB_STATE_SUCCEEDED", "\(narrowRecord)")
    #expect(Self.partitions(of: narrowRecord).count == 1, "\(narrowRecord)")
    #expect(Set(Self.partitions(of: narrowRecord)).isDisjoint(with: Self.partitions(of: wideRecord)))
    #expect(try await DurableStateTests.record("wide", on: mesh)["state"] as? String == "JOB_STATE_RUNNING")

    // Its model answers from its partition while "wide" trains.
    let inputs = try await DurableStateTests.inputs(in: mesh.directory)
    let inferred = try await mesh.run(["infer", "--model", "narrow", "--input", inputs])
    #expect(inferred.status == 0, "\(inferred.output)")

    // Two partitions are not free: "waiting" is queued, first in line; "later"
    // needs only the free one but does not pass it.
    let waiting = try Self.startTraining("waiting", ["--stages", "2", "--epochs", "1"], on: mesh)
    _ = try await waiting.waitForJSONLine { $0["job"] as? String == "waiting" && $0["queuePosition"] as? Int == 1 }
    let later = try Self.startTraining("later", ["--stages", "1", "--epochs", "1"], on: mesh)
    _ = try await later.waitForJSONLine { $0["job"] as? String == "later" && $0["queuePosition"] as? Int == 2 }
    let queued = try await mesh.json(["jobs", "list", "--state", "queued"]).first?["jobs"] as? [[String: Any]] ?? []
    #expect(queued.compactMap { $0["job"] as? String } == ["later", "waiting"], "\(queued)")

    // A queued job cancelled never runs.
    let cancelled = try await mesh.json(["cancel", "--job", "later"])
    #expect(cancelled.first?["state"] as? String == "JOB_STATE_CANCELLED", "\(cancelled)")
    #expect(try await later.waitForExit() != 0)
    #expect(Self.partitions(of: try await DurableStateTests.record("later", on: mesh)).isEmpty)

    // When "wide" ends, "waiting" gets its partitions and runs to its end.
    _ = try await mesh.json(["cancel", "--job", "wide"])
    #expect(try await wide.waitForExit() != 0)
    #expect(try await waiting.waitForExit() == 0, "\(waiting.log)")
    let ran = try await DurableStateTests.record("waiting", on: mesh)
    #expect(ran["state"] as? String == "JOB_STATE_SUCCEEDED" && Self.partitions(of: ran).count == 2, "\(ran)")

    // A shape the pool can never hold is refused, naming the fields.
    let tooBig = try await mesh.run([
      "train", "--job", "too-big", "--model", DurableStateTests.model, "--stages", "2", "--replicas", "2",
    ])
    #expect(tooBig.status == 65, "\(tooBig.output)")
    #expect(tooBig.output.contains("stages 2 × replicas 2 needs 4 partitions; this coordinator's pool has 3"))
  }

  /// `kill -9` of the coordinator while one job runs and another waits in
  /// the queue: started again on its state directory, the coordinator
  /// starts the queued job (it had not begun: nothing to lose) and it runs
  /// to its end; the running one, without a checkpoint, stays interrupted.
  @Test func aQueuedJobOutlivesAKilledCoordinator() async throws {
    var mesh = try await Mesh(partitions: 2)
    let holder = try Self.startTraining("holder", ["--stages", "2", "--epochs", "1000"], on: mesh)
    _ = try await DurableStateTests.waitFor("holder", on: mesh) { $0["state"] as? String == "JOB_STATE_RUNNING" }
    let waiting = try Self.startTraining("waiting", ["--stages", "2", "--epochs", "1"], on: mesh)
    _ = try await waiting.waitForJSONLine { $0["job"] as? String == "waiting" && $0["queuePosition"] as? Int == 1 }

    mesh = try await mesh.restarted()
    #expect(try await holder.waitForExit() != 0)
    #expect(try await waiting.waitForExit() != 0)
    let ran = try await DurableStateTests.waitFor("waiting", on: mesh) {
      $0["state"] as? String == "JOB_STATE_SUCCEEDED"
    }
    #expect(Self.partitions(of: ran).count == 2 && ran["resumes"] as? Int == 1, "\(ran)")
    let held = try await DurableStateTests.record("holder", on: mesh)
    #expect(held["state"] as? String == "JOB_STATE_INTERRUPTED", "\(held)")
  }

  /// `kill -9` of a partition under a sync job that checkpoints and may
  /// restart, on a pool with a spare: the job runs on at once on the spare
  /// (the dead partition stays down) and ends with the weights of a run
  /// never interrupted. The same for a partition stopped (`SIGSTOP`, a host
  /// that froze) for good: the step's deadline finds it, and the job runs
  /// on on the spare while it stays stopped.
  @Test(arguments: [SIGKILL, SIGSTOP])
  func aSparePartitionTakesTheStagesOfOneThatDies(signal: Int32) async throws {
    let mesh = try await Mesh(psCheckpoints: true, partitions: 3)
    let options = [
      "--model", DurableStateTests.model, "--stages", "2", "--epochs", "20", "--micro-batches", "2",
      "--checkpoint-every", "5", "--max-restarts", "1", "--json",
    ]
    let training = try await DurableStateTests.trainStraightThenStart("survivor", options: options, on: mesh)
    let before = Self.partitions(of: try await DurableStateTests.record("survivor", on: mesh))
    try #require(before.count == 2)
    let lost = try #require(mesh.partitions.first { $0.endpoint == before[1] })
    lost.process.signal(signal)
    // A stopped partition stays stopped to the end (the mesh kills it).
    if signal == SIGKILL { _ = try await lost.process.waitForExit() }

    #expect(try await training.waitForExit() == 0, "\(training.log)")
    let ended = try await DurableStateTests.record("survivor", on: mesh)
    #expect(ended["state"] as? String == "JOB_STATE_SUCCEEDED" && ended["resumes"] as? Int == 1, "\(ended)")
    let after = Self.partitions(of: ended)
    #expect(after.count == 2 && !after.contains(lost.endpoint), "\(ended)")
    // What the fault cost is in the record.
    let fault = try #require((ended["faults"] as? [[String: Any]])?.first, "\(ended)")
    #expect((fault["recoverySeconds"] as? Double ?? 0) > 0, "\(fault)")
    if signal == SIGSTOP {
      #expect((fault["error"] as? String)?.contains("DEADLINE_EXCEEDED") == true, "\(fault)")
    }
    print(
      "spare after \(signal == SIGKILL ? "kill -9" : "SIGSTOP"): stepping again \(fault["recoverySeconds"] ?? 0) s "
        + "after the job stopped, \(fault["stepsRedone"] ?? "0") steps redone")
    // And in what `pipemesh jobs show` prints.
    let shown = try await mesh.run(["jobs", "show", "survivor"])
    #expect(shown.output.contains("stopped at step \(fault["step"] as? Int ?? -1) (restarting)"), "\(shown.output)")
    #expect(shown.output.contains("steps run again"), "\(shown.output)")
    // And in the run's trace, on a track of its own.
    let traced = try await RPCClient(target: mesh.coordinator.endpoint).call(
      CoordinatorMethods.getJob,
      .with {
        $0.job = "survivor"
        $0.history = true
      })
    let stops = try JSONSerialization.jsonObject(with: Data(traced.traceJson.utf8)) as? [String: Any]
    let stopEvents = (stops?["traceEvents"] as? [[String: Any]] ?? []).filter { $0["cat"] as? String == "fault" }
    #expect(
      stopEvents.map { $0["name"] as? String } == ["failed at step \(fault["step"] as? Int ?? -1)"],
      "\(traced.traceJson)")
    try await DurableStateTests.expectSameWeights("survivor", as: "straight", on: mesh)
    try await DurableStateTests.expectSameEpochLosses("survivor", as: "straight", on: mesh)
  }
}
