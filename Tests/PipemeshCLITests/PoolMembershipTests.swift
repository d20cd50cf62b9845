import Foundation
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import Testing

/// Partitions that join a coordinator's pool (`serve partition --join`),
/// keep a lease, are used by new jobs, and leave it: real processes, driven
/// through the `pipemesh` commands.
@Suite(.serialized) struct PoolMembershipTests {
  /// A ps and a coordinator listing no partitions, keeping its state in a directory.
  struct Mesh: CommandMesh {
    let directory: TemporaryDirectory
    let ps: RunningService
    let coordinator: RunningService
    let state: String

    /// `psCheckpoints`: the ps writes checkpoints (jobs can move between partitions).
    init(psCheckpoints: Bool = false) async throws {
      directory = try TemporaryDirectory(prefix: "pipemesh-pool")
      ps = try await RunningService.start(
        "ps", psCheckpoints ? ["--checkpoint-dir", directory.file("ps-checkpoints"), "--checkpoint-seconds", "0"] : [],
        log: directory.file("ps.log"))
      state = directory.file("coordinator-state")
      coordinator = try await RunningService.start(
        "coordinator", ["--ps", ps.endpoint, "--state-dir", state], log: directory.file("coordinator.log"))
    }

    private init(directory: TemporaryDirectory, ps: RunningService, coordinator: RunningService, state: String) {
      self.directory = directory
      self.ps = ps
      self.coordinator = coordinator
      self.state = state
    }

    /// The coordinator killed with SIGKILL and started again on its state directory.
    func restartedCoordinator() async throws -> Mesh {
      coordinator.process.signal(SIGKILL)
      _ = try await coordinator.process.waitForExit()
      let again = try await RunningService.start(
        "coordinator", ["--ps", ps.endpoint, "--state-dir", state],
        log: directory.file("coordinator-\(UUID().uuidString.prefix(4)).log"), listen: coordinator.endpoint)
      return Mesh(directory: directory, ps: ps, coordinator: again, state: state)
    }

    func partition(_ name: String) async throws -> RunningService {
      try await RunningService.start(
        "partition", ["--join", coordinator.endpoint], log: directory.file("\(name).log"))
    }

    /// The pool as `pipemesh status --json` prints it: state by endpoint.
    func pool() async throws -> [String: String] {
      let shown = try await run(["status", "--json"])
      try #require(shown.status == 0, "\(shown.output)")
      let pool = try #require(try JSONSerialization.jsonObject(with: Data(shown.output.utf8)) as? [String: Any])
      let members = pool["members"] as? [[String: Any]] ?? []
      return Dictionary(
        uniqueKeysWithValues: members.map { ($0["endpoint"] as? String ?? "", $0["state"] as? String ?? "") })
    }

    /// The only ps task of `pipemesh status --json` once `condition` holds of it (polled).
    func psTask(_ condition: ([String: Any]) -> Bool) async throws -> [String: Any] {
      let deadline = ContinuousClock.now + .seconds(60)
      while true {
        let shown = try await run(["status", "--json"])
        try #require(shown.status == 0, "\(shown.output)")
        let pool = try #require(try JSONSerialization.jsonObject(with: Data(shown.output.utf8)) as? [String: Any])
        let tasks = pool["parameterServers"] as? [[String: Any]] ?? []
        try #require(tasks.count == 1 && tasks[0]["endpoint"] as? String == ps.endpoint, "\(tasks)")
        if condition(tasks[0]) { return tasks[0] }
        try #require(ContinuousClock.now < deadline, "the ps task never got there: \(tasks[0])")
        try await Task.sleep(for: .milliseconds(200))
      }
    }

    /// Waits (polling the CLI) until the pool satisfies `condition`.
    func waitForPool(timeout: Duration = .seconds(60), _ condition: ([String: String]) -> Bool) async throws {
      let deadline = ContinuousClock.now + timeout
      while true {
        let pool = try await pool()
        if condition(pool) { return }
        try #require(ContinuousClock.now < deadline, "the pool never got there: \(pool)")
        try await Task.sleep(for: .milliseconds(200))
      }
    }
  }

  static func train(_ job: String, _ options: [String] = [], on mesh: Mesh) async throws -> [String: Any] {
    let trained = try await mesh.run(
      ["train", "--job", job, "--model", DurableStateTests.model, "--epochs", "1"] + options)
    #expect(trained.status == 0, "\(trained.output)")
    let shown = try await mesh.run(["jobs", "show", job, "--json"])
    return try #require(try JSONSerialization.jsonObject(with: Data(shown.output.utf8)) as? [String: Any])
  }

  /// `pipemesh status` shows the ps tasks as the coordinator last asked
  /// them: one that answers with its incarnation and checkpoints, one
  /// stopped (SIGSTOP, a frozen host) SILENT and why, the same one answering
  /// again once continued.
  @Test func theStatusShowsWhetherEachPsTaskAnswers() async throws {
    let mesh = try await Mesh(psCheckpoints: true)
    let serving = try await mesh.psTask { ($0["error"] as? String)?.isEmpty == true }
    let stats = serving["stats"] as? [String: Any] ?? [:]
    #expect(
      (stats["checkpointsEnabled"] as? NSNumber)?.boolValue == true && (Self.incarnation(serving) ?? 0) > 0,
      "\(serving)")
    let text = try await mesh.run(["status"])
    #expect(text.output.contains("ps \(mesh.ps.endpoint)\tSERVING\t0 variables"), "\(text.output)")

    mesh.ps.process.signal(SIGSTOP)
    let stopped: (json: [String: Any], text: String)
    do {
      stopped = (
        try await mesh.psTask { ($0["silent"] as? NSNumber)?.boolValue == true }, try await mesh.run(["status"]).output
      )
      mesh.ps.process.signal(SIGCONT)
    } catch {
      mesh.ps.process.signal(SIGCONT)
      throw error
    }
    #expect((stopped.json["error"] as? String)?.contains("DEADLINE_EXCEEDED") == true, "\(stopped.json)")
    #expect(stopped.text.contains("ps \(mesh.ps.endpoint)\tSILENT\tDEADLINE_EXCEEDED"), "\(stopped.text)")
    let continued = try await mesh.psTask { ($0["error"] as? String)?.isEmpty == true }
    #expect(Self.incarnation(continued) == Self.incarnation(serving), "\(continued)")
  }

  /// A status's ps task's incarnation, as its Stats answered.
  static func incarnation(_ task: [String: Any]) -> UInt64? {
    ((task["stats"] as? [String: Any])?["incarnation"] as? NSNumber)?.uint64Value
  }

  /// A ps task started with --join keeps a lease with the coordinator whose
  /// --ps lists it: `pipemesh status` shows the lease, a kill -9 shows once
  /// the lease lapses, and the task restarted shows its new incarnation.
  @Test func aPsTaskKeepsALeaseThatShowsItsHealthAndRestarts() async throws {
    let mesh = try await Mesh(psCheckpoints: true)
    let checkpoints = ["--checkpoint-dir", mesh.directory.file("ps-checkpoints"), "--checkpoint-seconds", "0"]
    let first = try await mesh.psTask { Self.incarnation($0) != nil }
    let firstIncarnation = try #require(Self.incarnation(first))
    #expect(
      (first["joined"] as? NSNumber)?.boolValue == false, "a task started without --join keeps no lease: \(first)")

    // Started again at its address (as systemd restarts a unit), now keeping a lease.
    mesh.ps.process.signal(SIGKILL)
    _ = try await mesh.ps.process.waitForExit()
    func joining(_ log: String) async throws -> RunningService {
      try await RunningService.start(
        "ps", checkpoints + ["--join", mesh.coordinator.endpoint], log: mesh.directory.file(log),
        listen: mesh.ps.endpoint)
    }
    let joined = try await joining("ps-joined.log")
    let leased = try await mesh.psTask { task in
      (task["joined"] as? NSNumber)?.boolValue == true && (task["error"] as? String)?.isEmpty == true
        && Self.incarnation(task) == (task["joinedIncarnation"] as? NSNumber)?.uint64Value
    }
    #expect(Self.incarnation(leased) != firstIncarnation, "a restarted task is a new incarnation: \(leased)")
    #expect(((leased["leaseSecondsLeft"] as? NSNumber)?.doubleValue ?? 0) > 0, "\(leased)")
    let text = try await mesh.run(["status"]).output
    let line = text.split(separator: "\n").first { $0.hasPrefix("ps \(mesh.ps.endpoint)\tSERVING") }
    #expect(line?.contains("\tjoined, lease ") == true, "\(text)")

    // Killed and not restarted: silent, and the lease says so once it lapses.
    joined.process.signal(SIGKILL)
    _ = try await joined.process.waitForExit()
    let lapsed = try await mesh.psTask { ($0["error"] as? String)?.contains("its lease lapsed") == true }
    #expect((lapsed["silent"] as? NSNumber)?.boolValue == true, "\(lapsed)")
    #expect((try await mesh.run(["status"]).output).contains("SILENT\tits lease lapsed"))

    // Back: serving, under a lease of its new incarnation.
    let again = try await joining("ps-again.log")
    let renewed = try await mesh.psTask { task in
      (task["error"] as? String)?.isEmpty == true
        && (task["joinedIncarnation"] as? NSNumber)?.uint64Value == Self.incarnation(task)
        && Self.incarnation(task) != Self.incarnation(leased)
    }
    #expect((renewed["silent"] as? NSNumber)?.boolValue == false, "\(renewed)")
    again.process.signal(SIGKILL)
  }

  @Test func partitionsThatJoinAreUsedKeepTheirLeaseAndLeave() async throws {
    var mesh = try await Mesh()
    let first = try await mesh.partition("first")
    try await mesh.waitForPool { $0 == [first.endpoint: "MEMBER_STATE_FREE"] }

    // With no layout, a job that names no shape takes the fewest stages that fit: one.
    let small = try await Self.train("small", on: mesh)
    #expect(small["partitions"] as? [String] == [first.endpoint], "\(small)")

    // A partition started later joins, and a 2-stage job uses both.
    let second = try await mesh.partition("second")
    try await mesh.waitForPool { $0[second.endpoint] == "MEMBER_STATE_FREE" }
    let wide = try await Self.train("wide", ["--stages", "2"], on: mesh)
    #expect(Set(wide["partitions"] as? [String] ?? []) == [first.endpoint, second.endpoint], "\(wide)")

    // A coordinator restarted on its state directory knows its members before they renew.
    mesh = try await mesh.restartedCoordinator()
    #expect(Set(try await mesh.pool().keys) == [first.endpoint, second.endpoint])
    _ = try await Self.train("after-restart", ["--stages", "2"], on: mesh)

    // Killed, a member is silent at the next look and gone once its lease lapses.
    second.process.signal(SIGKILL)
    _ = try await second.process.waitForExit()
    try await mesh.waitForPool { $0[second.endpoint] == "MEMBER_STATE_SILENT" }
    try await mesh.waitForPool { $0 == [first.endpoint: "MEMBER_STATE_FREE"] }

    // Stopped (SIGTERM), a member leaves the pool and exits.
    first.process.signal(SIGTERM)
    #expect(try await first.process.waitForExit() == 0)
    #expect(first.process.log.contains("left the pool"), "\(first.process.log)")
    #expect(try await mesh.pool()[first.endpoint] == "MEMBER_STATE_LEAVING")
  }

  /// SIGTERM (`systemctl stop`) of a partition under a sync job, with a
  /// spare in the pool: the job checkpoints at the next step boundary and
  /// goes on on the spare without a failed step (and without spending a
  /// restart), the partition exits once the job is off it, and the job ends
  /// with the weights of a run never moved.
  @Test func aStoppedPartitionIsDrainedAtAStepBoundary() async throws {
    let mesh = try await Mesh(psCheckpoints: true)
    var partitions: [RunningService] = []
    for index in 0..<3 { partitions.append(try await mesh.partition("partition\(index)")) }
    try await mesh.waitForPool { $0.count == 3 && $0.values.allSatisfy { $0 == "MEMBER_STATE_FREE" } }
    let options = [
      "--model", DurableStateTests.model, "--stages", "2", "--epochs", "20", "--micro-batches", "2",
      "--checkpoint-every", "5", "--json",
    ]
    let training = try await DurableStateTests.trainStraightThenStart("drained", options: options, on: mesh)
    let before = try await DurableStateTests.record("drained", on: mesh)["partitions"] as? [String] ?? []
    let leaving = try #require(partitions.first { $0.endpoint == before.last })

    leaving.process.signal(SIGTERM)
    #expect(try await leaving.process.waitForExit() == 0, "\(leaving.process.log)")
    #expect(leaving.process.log.contains("left the pool"), "\(leaving.process.log)")
    #expect(try await training.waitForExit() == 0, "\(training.log)")

    let ended = try await DurableStateTests.record("drained", on: mesh)
    #expect(ended["state"] as? String == "JOB_STATE_SUCCEEDED" && ended["resumes"] as? Int == 1, "\(ended)")
    let move = try #require((ended["faults"] as? [[String: Any]])?.first, "\(ended)")
    #expect(move["state"] as? String == "JOB_STATE_INTERRUPTED", "\(move)")
    #expect((move["error"] as? String)?.contains("is leaving the pool") == true, "\(move)")
    // Moved from a checkpoint at the step it had reached: nothing is run again.
    #expect(move["stepsRedone"] as? Int == 0 && (move["recoverySeconds"] as? Double ?? 0) > 0, "\(move)")
    print("drain: stepping again \(move["recoverySeconds"] ?? 0) s after the move")
    let after = ended["partitions"] as? [String] ?? []
    #expect(after.count == 2 && !after.contains(leaving.endpoint), "\(ended)")
    try await DurableStateTests.expectSameWeights("drained", as: "straight", on: mesh)
    try await DurableStateTests.expectSameEpochLosses("drained", as: "straight", on: mesh)
  }

  /// Without mutual TLS, a caller may add to the pool only its own address;
  /// a ps task keeps a lease only under an address the coordinator's --ps
  /// lists, and with its incarnation.
  @Test func aCallerJoinsOnlyItself() async throws {
    let mesh = try await Mesh()
    let client = try RPCClient(target: mesh.coordinator.endpoint)
    let refused = await #expect(throws: RPCError.self) {
      _ = try await client.call(CoordinatorMethods.joinPool, .with { $0.endpoint = "10.9.9.9:7100" })
    }
    #expect(refused?.code == .permissionDenied, "\(String(describing: refused))")
    #expect(refused?.message.contains("not the caller's own address") == true, "\(String(describing: refused))")
    let malformed = await #expect(throws: RPCError.self) {
      _ = try await client.call(CoordinatorMethods.joinPool, .with { $0.endpoint = "no-port" })
    }
    #expect(malformed?.code == .invalidArgument && malformed?.message.contains("endpoint") == true)
    // Its own address, where nothing answers: refused, and not added.
    let unreachable = await #expect(throws: RPCError.self) {
      _ = try await client.call(CoordinatorMethods.joinPool, .with { $0.endpoint = "127.0.0.1:1" })
    }
    #expect(unreachable?.code == .failedPrecondition, "\(String(describing: unreachable))")
    #expect(try await mesh.pool().isEmpty)

    // Only the coordinator's own ps tasks keep a lease, under an incarnation.
    let stranger = await #expect(throws: RPCError.self) {
      _ = try await client.call(
        CoordinatorMethods.joinPool,
        .with {
          $0.endpoint = "127.0.0.1:1"
          $0.parameterServer = true
          $0.incarnation = 7
        })
    }
    #expect(stranger?.code == .failedPrecondition, "\(String(describing: stranger))")
    #expect(stranger?.message.contains("not one of this coordinator's ps tasks") == true)
    let unnumbered = await #expect(throws: RPCError.self) {
      _ = try await client.call(
        CoordinatorMethods.joinPool,
        .with {
          $0.endpoint = mesh.ps.endpoint
          $0.parameterServer = true
        })
    }
    #expect(unnumbered?.code == .invalidArgument && unnumbered?.message.contains("incarnation") == true)
  }
}
