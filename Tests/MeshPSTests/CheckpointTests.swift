import Foundation
import MeshCheckpoint
import MeshPS
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Synchronization
import Testing

/// Checkpoints across real restarts and crashes.
@Suite(.serialized) struct CheckpointTests {
  let logs: TemporaryDirectory
  init() throws { logs = try TemporaryDirectory(prefix: "pipemesh-ckpt") }

  func trainAFewSteps(_ client: ParameterServerClient, job: String, steps: Int) async throws {
    let adam = Fixtures.variable(
      "dense0/kernel", shape: [8, 4], constant: 0.5, learningRate: 0.1, optimizer: .adam(.init()))
    try await client.register(job: job, variables: [adam], consistency: .init(), user: "stage0")
    for step in 1...steps {
      let gradient = Tensor(shape: [8, 4], scalars: (0..<32).map { Float($0 % 5) - 2 + Float(step) / 8 })
      try await client.push(
        job: job, step: Int64(step), user: "stage0", clientID: "t", gradients: ["dense0/kernel": (gradient, 0)])
    }
  }

  func pullWithSlots(_ endpoint: String, job: String) async throws -> Pipemesh_V1_VariableValue {
    let response = try await RPCClient(target: endpoint).call(
      ParameterServerMethods.pull,
      .with {
        $0.job = job
        $0.includeSlots = true
      })
    return response.variables[0]
  }

  @Test func restartRestoresValuesSlotsAndVersions() async throws {
    let directory = logs.file("checkpoints")
    var ps = try await Fixtures.startPS(logs, name: "first", checkpoints: directory)
    try await trainAFewSteps(try ParameterServerClient(endpoints: [ps.endpoint]), job: "restart", steps: 5)
    let before = try await pullWithSlots(ps.endpoint, job: "restart")
    #expect(before.version == 5)
    #expect(before.slots.map(\.name).sorted() == ["m", "v"])

    ps.process.signal(SIGTERM)  // a clean stop writes a final checkpoint
    #expect(try await ps.process.waitForExit() == 0, "\(ps.process.log)")
    ps = try await Fixtures.startPS(logs, name: "second", checkpoints: directory)
    #expect(ps.process.log.contains("restored "))
    let after = try await pullWithSlots(ps.endpoint, job: "restart")
    #expect(after == before)

    // Training goes on from the restored state (Adam's step count included).
    let client = try ParameterServerClient(endpoints: [ps.endpoint])
    try await client.register(
      job: "restart",
      variables: [
        Fixtures.variable("dense0/kernel", shape: [8, 4], constant: 0.5, learningRate: 0.1, optimizer: .adam(.init()))
      ],
      consistency: .init(), user: "stage0")
    let versions = try await client.push(
      job: "restart", step: 6, user: "stage0", clientID: "t",
      gradients: ["dense0/kernel": (.filled([8, 4], with: 1), 5)])
    #expect(versions["dense0/kernel"] == 6)
  }

  /// `kill -9` while a checkpoint is being written: the restarted ps restores
  /// a complete checkpoint, and no file it could pick is partial.
  @Test func killDuringCheckpointLeavesNoPartialCheckpoint() async throws {
    let directory = logs.file("checkpoints")
    var ps = try await Fixtures.startPS(logs, name: "victim", checkpoints: directory)
    let client = try ParameterServerClient(endpoints: [ps.endpoint])
    // Big enough (4 × 48 MiB with slots) that writing takes a while.
    let big = (0..<4).map {
      Fixtures.variable("layer\($0)/kernel", shape: [3072, 4096], constant: Float($0), learningRate: 0.5)
    }
    try await client.register(job: "crash", variables: big, consistency: .init(), user: "stage0")
    try await client.push(
      job: "crash", step: 1, user: "stage0", clientID: "t",
      gradients: Dictionary(
        uniqueKeysWithValues: big.map { ($0.name, (Tensor.filled([3072, 4096], with: 2), Int64(0))) }))
    _ = try await client.checkpoint()  // one complete checkpoint to fall back on

    var killedMidWrite = 0
    for attempt in 0..<3 {
      let writing = Task { try? await client.checkpoint() }
      let sawTemporary = await eventually(timeout: .seconds(20)) {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).contains {
          $0.hasPrefix(AtomicFile.temporaryPrefix)
        }
      }
      ps.process.signal(SIGKILL)
      _ = try await ps.process.waitForExit()
      _ = await writing.value
      if sawTemporary { killedMidWrite += 1 }

      for name in try FileManager.default.contentsOfDirectory(atPath: directory) where name.hasPrefix("checkpoint-") {
        let data = try Data(contentsOf: URL(fileURLWithPath: (directory as NSString).appendingPathComponent(name)))
        #expect(throws: Never.self, "\(name) is not a complete checkpoint") { _ = try SafeTensors.decode(data) }
      }
      ps = try await Fixtures.startPS(logs, name: "restarted\(attempt)", checkpoints: directory)
      // A client learns how variables are cut into row blocks by registering
      // them, as a restarted partition does; registering again is idempotent.
      let restarted = try ParameterServerClient(endpoints: [ps.endpoint])
      try await restarted.register(job: "crash", variables: big, consistency: .init(), user: "stage0")
      let restored = try await restarted.pull(job: "crash", names: big.map(\.name))
      for (index, definition) in big.enumerated() {
        #expect(restored[definition.name]?.version == 1)
        #expect(restored[definition.name]?.value == Tensor.filled([3072, 4096], with: Float(index) - 1))
      }
    }
    #expect(killedMidWrite >= 1, "no kill landed while a checkpoint was being written")
  }

  /// The checkpoint files in `directory`, by their sequence number.
  func checkpointNumbers(_ directory: String) -> [Int] {
    ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).compactMap { name in
      guard name.hasPrefix("checkpoint-"), name.hasSuffix(".safetensors") else { return nil }
      return Int(name.dropFirst("checkpoint-".count).dropLast(".safetensors".count))
    }.sorted()
  }

  /// The value of `tensor` in the newest checkpoint in `directory`.
  func newestCheckpointValue(_ directory: String, tensor: String) -> Tensor? {
    guard let newest = checkpointNumbers(directory).last,
      let data = try? Data(contentsOf: URL(fileURLWithPath: "\(directory)/checkpoint-\(newest).safetensors"))
    else { return nil }
    return try? SafeTensors.decode(data).tensors[tensor]
  }

  /// Periodic checkpoints (every second here) follow the updates, only the
  /// newest `--checkpoint-keep` stay, and a ps killed with `kill -9` comes
  /// back from the newest with every update it held.
  @Test func periodicCheckpointsKeepTheNewestAndSurviveKill9() async throws {
    let directory = logs.file("checkpoints")
    var ps = try await Fixtures.startPS(logs, name: "periodic", checkpoints: directory, seconds: 1, keep: 2)
    let client = try ParameterServerClient(endpoints: [ps.endpoint])
    let variable = Fixtures.variable("w", shape: [64], constant: 1, learningRate: 0.5)
    try await client.register(job: "periodic", variables: [variable], consistency: .init(), user: "stage0")
    for step in 1...4 {
      try await client.push(
        job: "periodic", step: Int64(step), user: "stage0", clientID: "t", gradients: ["w": (.filled([64], with: 1), 0)]
      )
      // Ready when the newest file holds the step (no sleep): the timer writes it within about a second.
      let expected = Tensor.filled([64], with: 1 - Float(step) * 0.5)
      #expect(
        await eventually { newestCheckpointValue(directory, tensor: "periodic/w") == expected },
        "no checkpoint holds step \(step)")
    }
    // The oldest file goes right after the newest is written.
    #expect(await eventually { checkpointNumbers(directory).count == 2 }, "\(checkpointNumbers(directory))")
    let kept = checkpointNumbers(directory)
    #expect((kept.last ?? 0) >= 4, "\(kept)")

    ps.process.signal(SIGKILL)
    _ = try await ps.process.waitForExit()
    ps = try await Fixtures.startPS(logs, name: "periodic-restarted", checkpoints: directory, listen: ps.endpoint)
    let restarted = try ParameterServerClient(endpoints: [ps.endpoint])
    try await restarted.register(job: "periodic", variables: [variable], consistency: .init(), user: "stage0")
    let restored = try await restarted.pull(job: "periodic", names: ["w"])
    #expect(restored["w"]?.version == 4)
    #expect(restored["w"]?.value == Tensor.filled([64], with: -1))
  }

  /// A task killed with `kill -9` and restarted from a periodic checkpoint
  /// holds a sync job behind its pushers: the next push is ABORTED (the job
  /// must be restored from its own checkpoint), not refused as a push ahead
  /// of the job, which it still is for a job the task did not read back; and
  /// a job checkpoint that names the task's incarnation from before writes nothing.
  @Test func aTaskThatRestartedBehindAJobAbortsItsPushesAndCheckpoints() async throws {
    let directory = logs.file("checkpoints")
    var ps = try await Fixtures.startPS(logs, name: "behind", checkpoints: directory)
    var client = try ParameterServerClient(endpoints: [ps.endpoint])
    try await trainAFewSteps(client, job: "behind", steps: 2)
    let first = try await client.taskStates()
    #expect(first.count == 1 && first[0].endpoint == ps.endpoint && first[0].checkpointsEnabled, "\(first)")
    let incarnations = [ps.endpoint: first[0].incarnation]
    #expect(try await client.checkpoint(job: "behind", step: 2, incarnations: incarnations).count == 1)
    _ = try await client.checkpoint()  // what the periodic timer writes
    try await client.push(
      job: "behind", step: 3, user: "stage0", clientID: "t",
      gradients: ["dense0/kernel": (.filled([8, 4], with: 1), 2)])

    ps.process.signal(SIGKILL)
    _ = try await ps.process.waitForExit()
    ps = try await Fixtures.startPS(logs, name: "behind-restarted", checkpoints: directory, listen: ps.endpoint)
    client = try ParameterServerClient(endpoints: [ps.endpoint])
    let again = try await client.taskStates()
    #expect(again.count == 1 && again[0].incarnation != first[0].incarnation, "\(again) after \(first)")
    #expect(try await pullWithSlots(ps.endpoint, job: "behind").version == 2)

    let behind = await #expect(throws: RPCError.self) {
      try await client.push(
        job: "behind", step: 4, user: "stage0", clientID: "t",
        gradients: ["dense0/kernel": (.filled([8, 4], with: 1), 3)])
    }
    #expect(
      behind?.code == .aborted && behind?.message.contains("ps task restarted") == true,
      "\(String(describing: behind))")
    let stale = await #expect(throws: RPCError.self) {
      try await client.checkpoint(job: "behind", step: 3, incarnations: incarnations)
    }
    #expect(stale?.code == .aborted && stale?.message.contains("restarted") == true, "\(String(describing: stale))")
    #expect(!FileManager.default.fileExists(atPath: "\(directory)/jobs/behind/step-3.safetensors"))
    // Nor does it answer the pull of the job's final weights that names the incarnation from before.
    client.expect(variables: [("dense0/kernel", [8, 4])])
    func pullKernel(_ incarnations: [String: UInt64]) async throws -> Int {
      let bytes = Mutex(0)
      try await client.pull(job: "behind", names: ["dense0/kernel"], incarnations: incarnations) { _, _, data in
        bytes.withLock { $0 += data.count }
      }
      return bytes.withLock { $0 }
    }
    let refusedPull = await #expect(throws: RPCError.self) { _ = try await pullKernel(incarnations) }
    #expect(
      refusedPull?.code == .aborted && refusedPull?.message.contains("answers no pull of its values") == true,
      "\(String(describing: refusedPull))")
    #expect(try await pullKernel([ps.endpoint: again[0].incarnation]) == 8 * 4 * 4)
    #expect(
      try await client.checkpoint(job: "behind", step: 2, incarnations: [ps.endpoint: again[0].incarnation]).count == 1)

    // A job registered since the restart: a push far ahead of it is refused as such.
    try await trainAFewSteps(client, job: "fresh", steps: 1)
    let ahead = await #expect(throws: RPCError.self) {
      try await client.push(
        job: "fresh", step: 5, user: "stage0", clientID: "t",
        gradients: ["dense0/kernel": (.filled([8, 4], with: 1), 1)])
    }
    #expect(ahead?.code == .failedPrecondition, "\(String(describing: ahead))")
  }

  /// A bounded job's checkpoint restored as a run on more replicas (a job
  /// that grew back after running short): every replica starts at the
  /// checkpoint's step, so the first push after it neither waits for a
  /// replica that has not pushed in this run nor counts it as far behind.
  @Test func aRunRestoredOnMoreReplicasStartsEveryReplicaAtTheCheckpoint() async throws {
    let ps = try await Fixtures.startPS(logs, name: "grown", checkpoints: logs.file("checkpoints"))
    let client = try ParameterServerClient(endpoints: [ps.endpoint])
    func consistency(replicas: Int32) -> Pipemesh_V1_Consistency {
      Fixtures.consistency(
        .bounded(
          .with {
            $0.maxStaleness = 1
            $0.wait = true
            $0.waitTimeoutSeconds = 2
          }), replicas: replicas)
    }
    func push(_ job: String, step: Int64) async throws {
      _ = try await client.push(
        job: job, step: step, user: "stage0", replica: 0, clientID: "r0", gradients: ["w": (Fixtures.filled([2], 1), 0)]
      )
    }
    let variables = [Fixtures.variable("w", shape: [2])]
    try await client.register(
      job: "narrow", variables: variables, consistency: consistency(replicas: 1), user: "stage0")
    for step in Int64(1)...3 { try await push("narrow", step: step) }
    _ = try await client.checkpoint(job: "narrow", step: 3)

    try await client.restore(job: "wide", from: "narrow", step: 3, replicas: 2)
    try await client.register(job: "wide", variables: variables, consistency: consistency(replicas: 2), user: "stage0")
    try await push("wide", step: 4)
    let stats = try await RPCClient(target: ps.endpoint).call(ParameterServerMethods.stats, .with { $0.job = "wide" })
    #expect(stats.pushesWaited == 0 && stats.maxReplicaLead == 1, "\(stats)")
  }

  /// A job's own checkpoints: one file per step taken, read back into the
  /// job itself or into another (a new run of it), bad names refused, and
  /// gone when the job is dropped.
  @Test func aJobsOwnCheckpointsRestoreItOrANewRunOfIt() async throws {
    let directory = logs.file("checkpoints")
    let ps = try await Fixtures.startPS(logs, name: "own", checkpoints: directory)
    let client = try ParameterServerClient(endpoints: [ps.endpoint])
    let channel = try RPCClient(target: ps.endpoint)
    try await trainAFewSteps(client, job: "own", steps: 2)
    let atTwo = try await pullWithSlots(ps.endpoint, job: "own")
    let files = try await client.checkpoint(job: "own", step: 2)
    #expect(files == ["\(directory)/jobs/own/step-2.safetensors"])
    try await client.push(
      job: "own", step: 3, user: "stage0", clientID: "t", gradients: ["dense0/kernel": (.filled([8, 4], with: 1), 2)])
    #expect(try await pullWithSlots(ps.endpoint, job: "own").version == 3)

    // Back to step 2, in place and as a new run.
    try await client.restore(job: "own", from: "", step: 2)
    #expect(try await pullWithSlots(ps.endpoint, job: "own") == atTwo)
    try await client.restore(job: "own.next", from: "own", step: 2)
    #expect(try await pullWithSlots(ps.endpoint, job: "own.next") == atTwo)
    // A new run on two replicas (a job that grew): it is registered as such, as the checkpoint's one no more.
    try await client.restore(job: "own.wide", from: "own", step: 2, replicas: 2)
    #expect(try await pullWithSlots(ps.endpoint, job: "own.wide") == atTwo)
    let adam = Fixtures.variable(
      "dense0/kernel", shape: [8, 4], constant: 0.5, learningRate: 0.1, optimizer: .adam(.init()))
    try await client.register(
      job: "own.wide", variables: [adam], consistency: .with { $0.replicas = 2 }, user: "stage0")
    let narrow = await #expect(throws: RPCError.self) {
      try await client.register(job: "own.wide", variables: [adam], consistency: .init(), user: "stage0")
    }
    #expect(narrow?.message.contains("cannot change") == true, "\(String(describing: narrow))")

    let refusals: [(Pipemesh_V1_RestoreJobRequest, RPCError.Code, String)] = [
      (
        .with {
          $0.job = ".."
          $0.step = 2
        }, .invalidArgument, "job name"
      ),
      (
        .with {
          $0.job = "x"
          $0.fromJob = "../own"
          $0.step = 2
        }, .invalidArgument, "job name"
      ),
      (
        .with {
          $0.job = "own"
          $0.step = 7
        }, .notFound, "it holds steps 2"
      ),
      (
        .with {
          $0.job = "own"
          $0.step = 2
          $0.replicas = -1
        }, .invalidArgument, "replicas is -1"
      ),
    ]
    for (request, code, message) in refusals {
      let error = await #expect(throws: RPCError.self) {
        _ = try await channel.call(ParameterServerMethods.restoreJob, request)
      }
      #expect(error?.code == code && error?.message.contains(message) == true, "\(String(describing: error))")
    }
    let badStep = await #expect(throws: RPCError.self) {
      _ = try await channel.call(
        ParameterServerMethods.checkpoint,
        .with {
          $0.job = "own"
          $0.step = -1
        })
    }
    #expect(badStep?.code == .invalidArgument)

    _ = try await channel.call(ParameterServerMethods.dropJob, .with { $0.job = "own" })
    #expect(!FileManager.default.fileExists(atPath: "\(directory)/jobs/own"))
    // A drop sent again after its first answer timed out, once the job had left memory,
    // still takes the checkpoints.
    try FileManager.default.createDirectory(atPath: "\(directory)/jobs/ghost", withIntermediateDirectories: true)
    #expect(FileManager.default.createFile(atPath: "\(directory)/jobs/ghost/step-1.safetensors", contents: Data()))
    let gone = await #expect(throws: RPCError.self) {
      _ = try await channel.call(ParameterServerMethods.dropJob, .with { $0.job = "ghost" })
    }
    #expect(gone?.code == .notFound)
    #expect(!FileManager.default.fileExists(atPath: "\(directory)/jobs/ghost"))
  }

  @Test func numpyReadsTheCheckpoint() async throws {
    let directory = logs.file("checkpoints")
    let ps = try await Fixtures.startPS(logs, checkpoints: directory)
    let client = try ParameterServerClient(endpoints: [ps.endpoint])
    try await trainAFewSteps(client, job: "numpy", steps: 3)
    let path = try await client.checkpoint()[0]
    let expected = try await pullWithSlots(ps.endpoint, job: "numpy")
    let python = try await PythonInterop()
    let script = """
      import json, sys
      from safetensors.numpy import load_file
      tensors = load_file(sys.argv[1])
      print(json.dumps({name: {"shape": list(t.shape), "dtype": str(t.dtype), "values": t.ravel().tolist()} for name, t in tensors.items()}))
      """
    let output = try await run(python.python, ["-c", script, path])
    let decoded = try #require(JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: [String: Any]])
    #expect(Set(decoded.keys) == ["numpy/dense0/kernel", "numpy/dense0/kernel@m", "numpy/dense0/kernel@v"])
    let kernel = try #require(decoded["numpy/dense0/kernel"])
    #expect(kernel["shape"] as? [Int] == [8, 4])
    #expect(kernel["dtype"] as? String == "float32")
    let values = try #require(kernel["values"] as? [NSNumber]).map(\.floatValue)
    #expect(values == (try Tensor(wire: expected.value)).scalars)
  }
}
