import Foundation
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import Testing

/// `pipemesh serve` refuses a bad configuration at start with exit status 64
/// (which the units' `RestartPreventExitStatus=64` keeps systemd from
/// restarting in a loop) and a message naming the setting and the value.
@Suite struct ServeConfigurationTests {
  /// One bad configuration: extra arguments and environment, and what the
  /// message must say.
  struct Case: CustomTestStringConvertible, Sendable {
    let arguments: [String]
    let environment: [String: String]
    let expected: String
    var testDescription: String {
      (environment.map { "\($0.key)=\($0.value)" }.sorted() + arguments).joined(separator: " ")
    }
  }

  /// Cases every role shares, with the arguments a role needs to start otherwise.
  static let commonCases: [Case] = [
    Case(
      arguments: [], environment: ["PIPEMESH_MAX_MESSAGE_MIB": "25x"],
      expected: "PIPEMESH_MAX_MESSAGE_MIB='25x' is not an integer"),
    Case(arguments: ["--max-message-mib", "0"], environment: [:], expected: "--max-message-mib is 0"),
    Case(arguments: [], environment: ["PIPEMESH_GRACE_SECONDS": "-1"], expected: "PIPEMESH_GRACE_SECONDS is -1"),
    Case(arguments: ["--listen", "127.0.0.1"], environment: [:], expected: "expected HOST:PORT"),
    Case(arguments: ["--listen", "192.0.2.1:0"], environment: [:], expected: "cannot listen on 192.0.2.1:0"),
    Case(
      arguments: ["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/nonexistent/key.pem"], environment: [:],
      expected: "--tls-cert (or PIPEMESH_TLS_CERT) is '/nonexistent/cert.pem', which does not exist"),
    Case(
      arguments: [], environment: ["PIPEMESH_TLS_CA": "/nonexistent/ca.pem"],
      expected: "a TLS server needs both --tls-cert and --tls-key"),
    Case(
      arguments: ["--metrics-listen", "127.0.0.1:99999"], environment: [:],
      expected: "--metrics-listen (or PIPEMESH_METRICS_LISTEN)"),
  ]

  static let roleArguments: [String: [String]] = [
    "ps": [],
    "partition": [],
    "coordinator": ["--ps", "127.0.0.1:1", "--partitions", "127.0.0.1:2"],
  ]

  static let roleCases: [(role: String, case: Case)] = [
    (
      "ps",
      Case(
        arguments: ["--checkpoint-dir", "/proc/pipemesh-checkpoints"], environment: [:], expected: "--checkpoint-dir")
    ),
    (
      "ps",
      Case(arguments: [], environment: ["PIPEMESH_CHECKPOINT_KEEP": "0"], expected: "PIPEMESH_CHECKPOINT_KEEP is 0")
    ),
    ("ps", Case(arguments: ["--memory-budget-mib", "0"], environment: [:], expected: "--memory-budget-mib is 0")),
    (
      "partition",
      Case(arguments: ["--blas-threads", "2147483648"], environment: [:], expected: "--blas-threads is 2147483648")
    ),
    (
      "partition",
      Case(arguments: [], environment: ["PIPEMESH_MAX_KEPT_MIB": "lots"], expected: "PIPEMESH_MAX_KEPT_MIB='lots'")
    ),
    (
      "partition",
      Case(arguments: ["--advertise", "no-port"], environment: [:], expected: "--advertise (or PIPEMESH_ADVERTISE)")
    ),
    (
      "coordinator",
      Case(arguments: ["--partitions", "127.0.0.1:2"], environment: [:], expected: "give the ps tasks with --ps")
    ),
    (
      "coordinator",
      Case(
        arguments: ["--ps", "127.0.0.1:1", "--partitions", "127.0.0.1:2;127.0.0.1:3,127.0.0.1:4"], environment: [:],
        expected: "every stage needs the same number of replicas")
    ),
    (
      "coordinator",
      Case(
        arguments: ["--ps", "nowhere", "--partitions", "127.0.0.1:2"], environment: [:],
        expected: "--ps (or PIPEMESH_PS)")
    ),
  ]

  static var allCases: [(role: String, case: Case)] {
    roleArguments.keys.sorted().flatMap { role in commonCases.map { (role, $0) } } + roleCases
  }

  @Test(arguments: allCases)
  func badConfigurationExits64(role: String, case bad: Case) async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-config")
    // Role-specific arguments come first, so a case's own --ps or --partitions wins.
    let base =
      bad.arguments.contains(where: { ["--ps", "--partitions"].contains($0) })
      ? [] : try #require(Self.roleArguments[role])
    let process = try ChildProcess(
      PipemeshBinary.path, ["serve", role, "--listen", "127.0.0.1:0"] + base + bad.arguments,
      logPath: directory.file("serve.log"), environment: bad.environment)
    let status = try await process.waitForExit(timeout: .seconds(60))
    #expect(status == 64, "pipemesh serve \(role) \(bad.testDescription) exited \(status): \(process.log)")
    #expect(process.log.contains(bad.expected), "pipemesh serve \(role) \(bad.testDescription) said: \(process.log)")
  }

  @Test(arguments: ["ps", "partition", "coordinator"])
  func aTakenPortIsRefusedNotShared(role: String) async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-port")
    let arguments = try #require(Self.roleArguments[role])
    let first = try await RunningService.start(role, arguments, log: directory.file("first.log"))
    let second = try ChildProcess(
      PipemeshBinary.path, ["serve", role, "--listen", first.endpoint] + arguments,
      logPath: directory.file("second.log"))
    let status = try await second.waitForExit(timeout: .seconds(60))
    #expect(status == 64, "a second \(role) on \(first.endpoint) exited \(status): \(second.log)")
    #expect(second.log.contains("cannot listen on \(first.endpoint)"), "\(second.log)")
    #expect(first.process.isRunning)
  }
}

/// A partition dials only the hosts it may: a LoadStage naming any other ps
/// or peer is refused before a connection is opened.
@Suite struct PartitionDialTests {
  @Test func aLoadStageNamingAHostOutsideThePeersIsRefused() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-dial")
    let ps = try await RunningService.start("ps", log: directory.file("ps.log"))
    let port = try #require(ps.endpoint.split(separator: ":").last)
    // Listed by address: the same ps under another loopback address or name is not.
    let partition = try await RunningService.start(
      "partition", ["--peers", "127.0.0.1"], log: directory.file("partition.log"))
    let client = try RPCClient(target: partition.endpoint)
    func load(ps endpoint: String, peers: [String] = []) async throws {
      _ = try await client.call(
        PartitionMethods.loadStage,
        .with {
          $0.job = "dial"
          $0.model = .with {
            $0.inputShape = [2]
            $0.layers = [.with { $0.dense = .with { $0.units = 2 } }]
          }
          $0.endLayer = 1
          $0.parameterServers = [endpoint]
          $0.peers = peers
        })
    }
    for (ps, peers) in [("127.0.0.2:\(port)", []), ("localhost:\(port)", []), (ps.endpoint, ["127.0.0.3:7200"])] {
      let error = await #expect(throws: RPCError.self, "\(ps) \(peers)") { try await load(ps: ps, peers: peers) }
      #expect(error?.code == .permissionDenied, "\(String(describing: error))")
      #expect(error?.message.contains("this partition dials the hosts given by --peers (127.0.0.1)") == true)
    }
    let stats = try await RPCClient(target: ps.endpoint).call(ParameterServerMethods.stats, .init())
    #expect(stats.variables == 0, "no refused load reached the ps")
    try await load(ps: ps.endpoint, peers: ["127.0.0.1:7200"])
    #expect(try await RPCClient(target: ps.endpoint).call(ParameterServerMethods.stats, .init()).variables == 2)
  }
}

/// A partition refuses a stage whose variables would not fit its budget
/// before drawing any of them.
@Suite struct PartitionBudgetTests {
  @Test func aStageOverTheBudgetIsRefusedBeforeAnythingIsDrawn() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-budget")
    let ps = try await RunningService.start("ps", log: directory.file("ps.log"))
    let partition = try await RunningService.start(
      "partition", ["--memory-budget-mib", "1"], log: directory.file("partition.log"))
    let client = try RPCClient(target: partition.endpoint)
    func load(job: String, units: Int64) async throws {
      _ = try await client.call(
        PartitionMethods.loadStage,
        .with {
          $0.job = job
          $0.model = .with {
            $0.inputShape = [64]
            $0.layers = [.with { $0.dense = .with { $0.units = units } }]
          }
          $0.endLayer = 1
          $0.parameterServers = [ps.endpoint]
          $0.optimizer = .with { $0.adam = .init() }
        })
    }
    // With Adam, 64 × 1024 + 1024 = 66,560 parameters need 1.02 MiB at four copies; 1 MiB holds 65,536.
    let error = await #expect(throws: RPCError.self) { try await load(job: "big", units: 1024) }
    #expect(error?.code == .resourceExhausted, "\(String(describing: error))")
    #expect(error?.message.contains("66560 parameters") == true, "\(String(describing: error))")
    #expect(error?.message.contains("layer 0 alone has 66560") == true, "\(String(describing: error))")
    #expect(try await RPCClient(target: ps.endpoint).call(ParameterServerMethods.stats, .init()).variables == 0)
    try await load(job: "small", units: 512)
  }

  /// A coordinator plans over its partitions' memory budgets (from their
  /// Describe): a model whose layer cannot fit any of them is refused before
  /// anything is loaded, with what would fit.
  @Test func theCoordinatorPlansWithinItsPartitionsMemory() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-plan-budget")
    let ps = try await RunningService.start("ps", log: directory.file("ps.log"))
    var partitions: [RunningService] = []
    for index in 0..<2 {
      partitions.append(
        try await RunningService.start(
          "partition", ["--memory-budget-mib", "1"], log: directory.file("partition\(index).log")))
    }
    let coordinator = try await RunningService.start(
      "coordinator", ["--ps", ps.endpoint, "--partitions", partitions.map(\.endpoint).joined(separator: ";")],
      log: directory.file("coordinator.log"))
    let client = try RPCClient(target: coordinator.endpoint)
    func model(_ widths: [Int64]) -> Pipemesh_V1_ModelSpec {
      .with {
        $0.inputShape = [64]
        $0.layers = widths.map { units in .with { $0.dense = .with { $0.units = units } } }
        $0.loss = .with { $0.softmaxCrossEntropy = .init() }
      }
    }
    // Whole layers, so that each stage holds one (split inside the first, both stages would hold it).
    let plan = try await client.call(
      CoordinatorMethods.plan,
      .with {
        $0.model = model([128, 10])
        $0.wholeLayers = true
      })
    #expect(plan.stages.map(\.memoryBudgetBytes) == [1 << 20, 1 << 20])
    #expect(plan.stages.map(\.parameterBytes) == [Int64(16 * (64 * 128 + 128)), Int64(16 * (128 * 10 + 10))])
    // 512 × 128 + 128 = 65,664 parameters: over the 65,536 a 1 MiB partition holds.
    let refused = await #expect(throws: RPCError.self) {
      _ = try await client.call(CoordinatorMethods.plan, .with { $0.model = model([512, 128, 10]) })
    }
    #expect(refused?.code == .resourceExhausted, "\(String(describing: refused))")
    #expect(refused?.message.contains("layer 1 alone has 65664") == true, "\(String(describing: refused))")
  }

  /// A coordinator whose partition address answers nothing says so when it
  /// starts, not only when a job fails.
  @Test func aCoordinatorLogsMembersThatDoNotAnswerWhenItStarts() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-members")
    let ps = try await RunningService.start("ps", log: directory.file("ps.log"))
    // Nothing listens on port 1 of the loopback address: connections are refused at once.
    let coordinator = try await RunningService.start(
      "coordinator", ["--ps", ps.endpoint, "--partitions", "127.0.0.1:1"], log: directory.file("coordinator.log"))
    let warning = try await coordinator.process.waitForLine(
      startingWith: "pipemesh coordinator: the partition at 127.0.0.1:1 does not answer:",
      timeout: .seconds(30))
    #expect(warning.contains("UNAVAILABLE"), "\(coordinator.process.log)")
    #expect(!coordinator.process.log.contains("the ps at \(ps.endpoint) does not answer"), "\(coordinator.process.log)")
  }
}
