import Foundation
import MeshPS
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// Every kind of bad request gets a clear status, and nothing is applied.
@Suite struct BadInputTests {
  let logs: TemporaryDirectory
  init() throws { logs = try TemporaryDirectory(prefix: "pipemesh-ps") }

  func push(_ client: RPCClient, _ gradient: Pipemesh_V1_Tensor, name: String = "w", step: Int64 = 1) async throws {
    _ = try await client.call(
      ParameterServerMethods.push,
      .with {
        $0.job = "bad"
        $0.step = step
        $0.user = "stage0"
        $0.gradients = [
          .with {
            $0.name = name
            $0.gradient = gradient
          }
        ]
      })
  }

  @Test func badPushesAreRefusedAndNothingIsApplied() async throws {
    let ps = try await Fixtures.startPS(logs)
    let client = try RPCClient(target: ps.endpoint)
    _ = try await client.call(
      ParameterServerMethods.register,
      .with {
        $0.job = "bad"
        $0.user = "stage0"
        $0.variables = [Fixtures.variable("w", shape: [2, 3], constant: 1)]
      })
    var cases: [(String, Pipemesh_V1_Tensor, String, RPCError.Code)] = []
    cases.append(("unknown variable", Pipemesh_V1_Tensor(Fixtures.filled([2, 3], 1)), "nope", .notFound))
    cases.append(("wrong shape", Pipemesh_V1_Tensor(Fixtures.filled([3, 2], 1)), "w", .invalidArgument))
    var int32 = Pipemesh_V1_Tensor(Fixtures.filled([2, 3], 1))
    int32.dtype = .int32
    cases.append(("wrong dtype", int32, "w", .invalidArgument))
    var short = Pipemesh_V1_Tensor(Fixtures.filled([2, 3], 1))
    short.data = short.data.prefix(10)
    cases.append(("bytes that do not fit the shape", short, "w", .invalidArgument))
    for value in [Float.nan, .infinity, -.infinity] {
      var scalars = [Float](repeating: 1, count: 6)
      scalars[4] = value
      cases.append(
        ("\(value) in a gradient", Pipemesh_V1_Tensor(Tensor(shape: [2, 3], scalars: scalars)), "w", .invalidArgument))
    }
    for (what, gradient, name, code) in cases {
      let error = await #expect(throws: RPCError.self, "\(what)") { try await push(client, gradient, name: name) }
      #expect(error?.code == code, "\(what): \(String(describing: error))")
      #expect(error?.message.isEmpty == false)
    }
    let stats = try await client.call(ParameterServerMethods.stats, .with { $0.job = "bad" })
    #expect(stats.pushesRefusedNonFinite == 3)
    #expect(stats.pushesApplied == 0)
    let pulled = try await client.call(ParameterServerMethods.pull, .with { $0.job = "bad" })
    #expect(pulled.variables.first?.version == 0)
    #expect(try Tensor(wire: pulled.variables[0].value) == Fixtures.filled([2, 3], 1))
  }

  @Test func registrationIsIdempotentAndRefusesChanges() async throws {
    let ps = try await Fixtures.startPS(logs)
    let client = try RPCClient(target: ps.endpoint)
    let register = { (definition: Pipemesh_V1_VariableDefinition, consistency: Pipemesh_V1_Consistency) in
      _ = try await client.call(
        ParameterServerMethods.register,
        .with {
          $0.job = "defs"
          $0.user = "stage0"
          $0.variables = [definition]
          $0.consistency = consistency
        })
    }
    let definition = Fixtures.variable("w", shape: [4])
    try await register(definition, .init())
    try await register(definition, .init())
    let changed = await #expect(throws: RPCError.self) {
      try await register(Fixtures.variable("w", shape: [5]), .init())
    }
    #expect(changed?.code == .failedPrecondition)
    let otherRule = await #expect(throws: RPCError.self) {
      try await register(definition, Fixtures.consistency(.sync(.init()), replicas: 2))
    }
    #expect(otherRule?.code == .failedPrecondition)
    var badRate = definition
    badRate.name = "v"
    badRate.optimizer.learningRate.base = -1
    let invalid = await #expect(throws: RPCError.self) { try await register(badRate, .init()) }
    #expect(invalid?.code == .invalidArgument)
    let badName = await #expect(throws: RPCError.self) {
      _ = try await client.call(ParameterServerMethods.register, .with { $0.job = "no spaces allowed" })
    }
    #expect(badName?.code == .invalidArgument)
    let missingJob = await #expect(throws: RPCError.self) {
      _ = try await client.call(ParameterServerMethods.pull, .with { $0.job = "never-registered" })
    }
    #expect(missingJob?.code == .notFound)
  }

  @Test func oversizeMessagesAreResourceExhausted() async throws {
    let ps = try await RunningService.start("ps", ["--max-message-mib", "1"], log: logs.file("ps.log"))
    let client = try RPCClient(target: ps.endpoint)
    let error = await #expect(throws: RPCError.self) {
      _ = try await client.call(
        ParameterServerMethods.register,
        .with {
          $0.job = "big"
          $0.variables = [
            .with {
              $0.name = "w"
              $0.shape = [512 * 1024]
              $0.initialValue = Pipemesh_V1_Tensor(Fixtures.filled([512 * 1024], 1))
            }
          ]
        })
    }
    #expect(error?.code == .resourceExhausted)
  }
}

/// Small requests that ask for huge allocations or overflow sizes are
/// refused, and the service stays up.
@Suite struct HostileInputTests {
  @Test func hugeShapesAndCountsAreRefused() async throws {
    let logs = try TemporaryDirectory(prefix: "pipemesh-ps")
    let ps = try await Fixtures.startPS(logs)
    let client = try RPCClient(target: ps.endpoint)
    _ = try await client.call(
      ParameterServerMethods.register,
      .with {
        $0.job = "hostile"
        $0.variables = [Fixtures.variable("w", shape: [2])]
      })
    var hugeGradient = Pipemesh_V1_Tensor()
    hugeGradient.dtype = .float32
    hugeGradient.shape = [1 << 30, 1 << 30]
    hugeGradient.data = Data(count: 16)
    var overflowing = hugeGradient
    overflowing.shape = [Int64(Int32.max), Int64(Int32.max), Int64(Int32.max)]
    for gradient in [hugeGradient, overflowing] {
      let error = await #expect(throws: RPCError.self) {
        _ = try await client.call(
          ParameterServerMethods.push,
          .with {
            $0.job = "hostile"
            $0.step = 1
            $0.gradients = [
              .with {
                $0.name = "w"
                $0.gradient = gradient
              }
            ]
          })
      }
      #expect(error?.code == .invalidArgument)
    }
    let cases: [(Pipemesh_V1_RegisterRequest, RPCError.Code)] = [
      (
        .with {
          $0.job = "big"
          $0.variables = [Fixtures.variable("v", shape: [1 << 20, 1 << 20])]
        }, .resourceExhausted
      ),
      (
        .with {
          $0.job = "overflow"
          $0.variables = [Fixtures.variable("v", shape: [Int(Int32.max), Int(Int32.max), Int(Int32.max)])]
        }, .resourceExhausted
      ),
      (
        .with {
          $0.job = "replicas"
          $0.consistency = Fixtures.consistency(.sync(.init()), replicas: .max)
        }, .invalidArgument
      ),
    ]
    for (request, code) in cases {
      let error = await #expect(throws: RPCError.self) {
        _ = try await client.call(ParameterServerMethods.register, request)
      }
      #expect(error?.code == code, "\(request.job): \(String(describing: error))")
    }
    let stale = await #expect(throws: RPCError.self) {
      _ = try await client.call(
        ParameterServerMethods.push,
        .with {
          $0.job = "hostile"
          $0.step = 1
          $0.gradients = [
            .with {
              $0.name = "w"
              $0.baseVersion = .min
              $0.gradient = Pipemesh_V1_Tensor(Fixtures.filled([2], 1))
            }
          ]
        })
    }
    #expect(stale?.code == .invalidArgument)
    #expect(ps.process.isRunning)
    // A failed first registration does not pin the job's consistency.
    _ = try await client.call(
      ParameterServerMethods.register,
      .with {
        $0.job = "big"
        $0.consistency = Fixtures.consistency(.sync(.init()))
        $0.variables = [Fixtures.variable("v", shape: [4])]
      })
  }
}

/// A push far ahead of the job would make every step before it look like a
/// retry and never be applied: it is refused, and the next step still applies.
@Suite struct StepsAheadTests {
  @Test(arguments: ["async", "sync"])
  func aPushFarAheadOfTheJobIsRefused(mode: String) async throws {
    let logs = try TemporaryDirectory(prefix: "pipemesh-ps")
    let ps = try await Fixtures.startPS(logs)
    let client = try RPCClient(target: ps.endpoint)
    _ = try await client.call(
      ParameterServerMethods.register,
      .with {
        $0.job = "steps"
        $0.user = "stage0"
        $0.variables = [Fixtures.variable("w", shape: [2], constant: 1)]
        $0.consistency = Fixtures.consistency(mode == "sync" ? .sync(.init()) : .async(.init()))
      })
    func push(step: Int64) async throws {
      _ = try await client.call(
        ParameterServerMethods.push,
        .with {
          $0.job = "steps"
          $0.user = "stage0"
          $0.step = step
          $0.gradients = [
            .with {
              $0.name = "w"
              $0.gradient = Pipemesh_V1_Tensor(Fixtures.filled([2], 1))
            }
          ]
        }, options: .init(timeout: .seconds(10)))
    }
    try await push(step: 1)
    let limit: Int64 = mode == "sync" ? 2 : 1001
    for step in [limit + 1, Int64.max] {
      let error = await #expect(throws: RPCError.self) { try await push(step: step) }
      #expect(error?.code == .failedPrecondition, "\(String(describing: error))")
      #expect(
        error?.message.contains("the latest step it may push is \(limit)") == true, "\(String(describing: error))")
    }
    try await push(step: 2)
    let pulled = try await client.call(ParameterServerMethods.pull, .with { $0.job = "steps" })
    #expect(pulled.variables.first?.version == 2, "steps 1 and 2 applied, nothing else")
  }
}
