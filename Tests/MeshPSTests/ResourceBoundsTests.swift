import Foundation
import MeshCheckpoint
import MeshPS
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// The ps holds what its memory budget allows and refuses the rest with the
/// figures; definitions that cannot be held are refused before anything is
/// allocated; long names do not swell the status they are refused with.
@Suite struct ResourceBoundsTests {
  let logs: TemporaryDirectory
  init() throws { logs = try TemporaryDirectory(prefix: "pipemesh-ps-bounds") }

  func register(_ client: RPCClient, job: String, _ variables: [Pipemesh_V1_VariableDefinition]) async throws {
    _ = try await client.call(
      ParameterServerMethods.register,
      .with {
        $0.job = job
        $0.user = "stage0"
        $0.variables = variables
      })
  }

  /// A variable of `mebibytes` MiB in float32.
  func variable(_ name: String, mebibytes: Int, optimizer: Pipemesh_V1_OptimizerSpec.OneOf_Kind = .sgd(.init()))
    -> Pipemesh_V1_VariableDefinition
  {
    Fixtures.variable(name, shape: [mebibytes, 1 << 18], optimizer: optimizer)
  }

  @Test func registrationsBeyondTheBudgetAreRefusedWithTheFigures() async throws {
    let ps = try await RunningService.start(
      "ps", ["--memory-budget-mib", "64", "--max-variable-mib", "32"], log: logs.file("ps.log"))
    let client = try RPCClient(target: ps.endpoint)

    let tooBig = await #expect(throws: RPCError.self) {
      try await register(client, job: "big", [variable("w", mebibytes: 33)])
    }
    #expect(tooBig?.code == .resourceExhausted)
    #expect(tooBig?.message.contains("limit of 32.0 MiB") == true, "\(String(describing: tooBig))")

    // A new job each time, as a hostile caller would: four fit, the fifth does not.
    for index in 0..<4 { try await register(client, job: "job\(index)", [variable("w", mebibytes: 16)]) }
    let over = await #expect(throws: RPCError.self) {
      try await register(client, job: "job4", [variable("w", mebibytes: 16)])
    }
    #expect(over?.code == .resourceExhausted)
    let message = over?.message ?? ""
    #expect(
      message.contains("needs 16.0 MiB") && message.contains("holds 64.0 MiB")
        && message.contains("budget of 64.0 MiB"), "\(message)")
    let refusedJob = await #expect(throws: RPCError.self) {
      _ = try await client.call(ParameterServerMethods.stats, .with { $0.job = "job4" })
    }
    #expect(refusedJob?.code == .notFound, "a refused first registration leaves no job behind")

    let stats = try await client.call(ParameterServerMethods.stats, .init())
    #expect(stats.bytes == 64 << 20)
    #expect(try residentBytes(of: ps) < 64 << 20 + 256 << 20, "the refused registrations allocated nothing")
  }

  @Test func optimizerSlotsCountAndAFailedBatchReleasesItsBytes() async throws {
    let ps = try await RunningService.start("ps", ["--memory-budget-mib", "40"], log: logs.file("ps.log"))
    let client = try RPCClient(target: ps.endpoint)
    // Adam keeps two slots: 12 MiB of values hold 36 MiB.
    try await register(client, job: "adam", [variable("w", mebibytes: 12, optimizer: .adam(.init()))])
    let noRoom = await #expect(throws: RPCError.self) {
      try await register(client, job: "adam2", [variable("w", mebibytes: 2, optimizer: .adam(.init()))])
    }
    #expect(noRoom?.code == .resourceExhausted)
    // The first variable fits; the second is refused; the first's bytes come back.
    let batch = await #expect(throws: RPCError.self) {
      try await register(client, job: "sgd", [variable("a", mebibytes: 3), variable("b", mebibytes: 3)])
    }
    #expect(batch?.code == .resourceExhausted)
    try await register(client, job: "sgd", [variable("a", mebibytes: 4)])
  }

  @Test func definitionsThatCannotBeHeldAreRefusedBeforeAllocating() async throws {
    let ps = try await Fixtures.startPS(logs)
    let client = try RPCClient(target: ps.endpoint)
    let huge = Int(Int32.max)
    var nonFinite = Fixtures.variable("nan", shape: [2])
    nonFinite.initialValue = Pipemesh_V1_Tensor(Tensor(shape: [2], scalars: [1, .nan]))
    nonFinite.clearInitializer()
    var wild = Fixtures.variable("wild", shape: [4])
    wild.initializer = .with {
      $0.uniform = .with {
        $0.minimum = -Float.greatestFiniteMagnitude
        $0.maximum = .greatestFiniteMagnitude
      }
    }
    var fans = Fixtures.variable("fans", shape: [4])
    fans.initializer = .with {
      $0.glorotUniform = .with {
        $0.fanIn = .max
        $0.fanOut = .max
      }
    }
    let cases: [(String, Pipemesh_V1_VariableDefinition, RPCError.Code)] = [
      ("a zero extent", Fixtures.variable("zero", shape: [0, 4]), .invalidArgument),
      ("a negative extent", Fixtures.variable("negative", shape: [-1, 4]), .invalidArgument),
      (
        "a shape whose product overflows", Fixtures.variable("overflow", shape: [huge, huge, huge]), .resourceExhausted
      ),
      (
        "2^28 scalars over a smaller variable limit", Fixtures.variable("large", shape: [1 << 28, 8]),
        .resourceExhausted
      ),
      ("NaN in the initial value", nonFinite, .invalidArgument),
      ("a uniform range beyond Float", wild, .invalidArgument),
      ("fans beyond Int32", fans, .invalidArgument),
    ]
    for (what, definition, code) in cases {
      let error = await #expect(throws: RPCError.self, "\(what)") {
        try await register(client, job: "defs", [definition])
      }
      #expect(error?.code == code, "\(what): \(String(describing: error))")
    }
    #expect(ps.process.isRunning)
    #expect(try residentBytes(of: ps) < 512 << 20)
  }

  @Test func longNamesAreCutInTheStatusNotEchoedWhole() async throws {
    let ps = try await Fixtures.startPS(logs)
    let client = try RPCClient(target: ps.endpoint)
    let long = String(repeating: "j", count: 100_000) + "!"
    let badJob = await #expect(throws: RPCError.self) {
      try await register(client, job: long, [Fixtures.variable("w", shape: [1])])
    }
    #expect(
      badJob?.code == .invalidArgument, "not RESOURCE_EXHAUSTED from an oversized status: \(String(describing: badJob))"
    )
    #expect((badJob?.message.utf8.count ?? .max) < 1000)
    #expect(badJob?.message.contains("cut; 100001 bytes in all") == true)
    let unknown = await #expect(throws: RPCError.self) {
      _ = try await client.call(ParameterServerMethods.pull, .with { $0.job = String(repeating: "x", count: 200_000) })
    }
    #expect(unknown?.code == .notFound, "\(String(describing: unknown))")
    #expect((unknown?.message.utf8.count ?? .max) <= RPCError.maxMessageBytes)
  }

  @Test func aPartialCheckpointIsRemovedAtStartAndNeverLoaded() async throws {
    let checkpoints = try TemporaryDirectory(prefix: "pipemesh-ckpt")
    let ps = try await Fixtures.startPS(logs, checkpoints: checkpoints.path)
    let client = try RPCClient(target: ps.endpoint)
    try await register(client, job: "kept", [Fixtures.variable("w", shape: [3], constant: 2)])
    _ = try await client.call(ParameterServerMethods.checkpoint, .init())
    ps.process.signal(SIGKILL)
    _ = try await ps.process.waitForExit()

    // What a write cut short by `kill -9` leaves: a later sequence's
    // temporary file, of a process that is gone, holding garbage.
    let files = try FileManager.default.contentsOfDirectory(atPath: checkpoints.path)
    let written = try #require(files.first { $0.hasPrefix("checkpoint-") })
    let partial = checkpoints.file("\(AtomicFile.temporaryPrefix)checkpoint-99.safetensors-\(Self.deadPID())")
    try Data(repeating: 0xAB, count: 4096).write(to: URL(fileURLWithPath: partial))

    let restarted = try await Fixtures.startPS(logs, name: "ps-restarted", checkpoints: checkpoints.path)
    #expect(!FileManager.default.fileExists(atPath: partial))
    #expect(restarted.process.log.contains("removed \(partial)"), "\(restarted.process.log)")
    #expect(restarted.process.log.contains("restored \(checkpoints.file(written))"), "\(restarted.process.log)")
    let pulled = try await RPCClient(target: restarted.endpoint).call(
      ParameterServerMethods.pull, .with { $0.job = "kept" })
    #expect(try Tensor(wire: pulled.variables[0].value) == Fixtures.filled([3], 2))
  }

  /// A pid no process has: one past the highest the kernel hands out.
  static func deadPID() -> Int32 {
    let text = (try? String(contentsOfFile: "/proc/sys/kernel/pid_max", encoding: .utf8)) ?? "4194304"
    return (Int32(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 4_194_304) + 1
  }

  func residentBytes(of service: RunningService) throws -> Int {
    let status = try String(contentsOfFile: "/proc/\(service.process.pid)/status", encoding: .utf8)
    let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") })
    let kibibytes = try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]))
    return kibibytes << 10
  }
}
