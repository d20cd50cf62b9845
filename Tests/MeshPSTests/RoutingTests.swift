import Foundation
import MeshPS
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Synchronization
import Testing

/// A cluster of three ps processes behind one client.
@Suite struct RoutingTests {
  @Test func variablesAndRowBlocksAreSpreadAndJoined() async throws {
    let logs = try TemporaryDirectory(prefix: "pipemesh-routing")
    var tasks: [RunningService] = []
    for index in 0..<3 { tasks.append(try await Fixtures.startPS(logs, name: "ps\(index)")) }
    // Row blocks of 1 KiB: the 64×32 embedding (128 bytes a row) becomes 8 blocks of 8 rows.
    let client = try ParameterServerClient(endpoints: tasks.map(\.endpoint), blockBytes: 1024)
    var definitions = (0..<24).map { Fixtures.variable("layer\($0)/bias", shape: [16], constant: Float($0)) }
    var embedding = Fixtures.variable("embedding/table", shape: [64, 32])
    embedding.initializer = .with {
      $0.uniform = .with {
        $0.minimum = -1
        $0.maximum = 1
      }
      $0.seed = 7
    }
    definitions.append(embedding)
    try await client.register(job: "spread", variables: definitions, consistency: .init(), user: "stage0")

    // Every task holds exactly what the placement rule gives it.
    let placement = Placement(tasks: 3, blockBytes: 1024)
    let parts = definitions.flatMap { placement.parts(of: $0.name, shape: $0.shape.map { Int($0) }).map(\.name) }
    #expect(parts.count == 24 + 8)
    for (index, task) in tasks.enumerated() {
      let stats = try await RPCClient(target: task.endpoint).call(
        ParameterServerMethods.stats, .with { $0.job = "spread" })
      #expect(stats.variables == Int64(parts.filter { placement.task(of: $0) == index }.count))
      #expect(stats.variables > 0, "task \(index) holds nothing")
    }

    // The embedding starts as the whole initializer would draw it, and
    // pushes and pulls see it whole.
    let initial = Tensor.randomUniform([64, 32], lowerBound: -1, upperBound: 1, seed: 7)
    let pulled = try await client.pull(job: "spread", names: ["embedding/table", "layer5/bias"])
    #expect(pulled["embedding/table"]?.value == initial)
    #expect(pulled["layer5/bias"]?.value == .filled([16], with: 5))
    let gradient = Tensor(shape: [64, 32], scalars: (0..<2048).map { Float($0 % 7) })
    let versions = try await client.push(
      job: "spread", step: 1, user: "stage0", clientID: "t",
      gradients: ["embedding/table": (gradient, 0), "layer5/bias": (.filled([16], with: 2), 0)])
    #expect(versions == ["embedding/table": 1, "layer5/bias": 1])
    let updated = try await client.pull(job: "spread", names: ["embedding/table", "layer5/bias"])
    #expect(updated["embedding/table"]?.value == initial - gradient * 0.5)
    #expect(updated["layer5/bias"]?.value == .filled([16], with: 4))

    // Pulled part by part, never whole: each piece lands where it belongs, and together they
    // are the values pulled whole.
    let pieces = Mutex<[String: Tensor]>([
      "embedding/table": .zeros([64, 32]), "layer5/bias": .zeros([16]),
    ])
    let counted = Mutex(0)
    try await client.pull(job: "spread", names: ["embedding/table", "layer5/bias"]) { name, element, bytes in
      // An unexpected name would find an empty tensor, which refuses the bytes.
      try pieces.withLock {
        try $0[name, default: .zeros([0])].overwrite(fromElement: element, littleEndianBytes: bytes)
      }
      counted.withLock { $0 += 1 }
    }
    #expect(pieces.withLock { $0 } == updated.compactMapValues(\.value))
    #expect(counted.withLock { $0 } == 8 + 1, "one piece per row block and one for the bias")
    let unknown = await #expect(throws: RPCError.self) {
      try await client.pull(job: "spread", names: ["nope"]) { _, _, _ in }
    }
    // A variable whose parts this client does not know is refused before anything is asked.
    #expect(
      unknown?.code == .failedPrecondition && unknown?.message.contains("register or expect") == true,
      "\(String(describing: unknown))")
  }

  /// A variable spread in row blocks over the tasks is pulled with its
  /// optimizer's slots put together as its value is, each equal to what
  /// one process applying the same Adam steps holds (what a stage that
  /// resumes a run takes over); a variable in one piece too.
  @Test func slotsArePulledWholeBesideTheirValues() async throws {
    let logs = try TemporaryDirectory(prefix: "pipemesh-routing-slots")
    var tasks: [RunningService] = []
    for index in 0..<3 { tasks.append(try await Fixtures.startPS(logs, name: "ps\(index)")) }
    let client = try ParameterServerClient(endpoints: tasks.map(\.endpoint), blockBytes: 1024)
    let shapes = ["embedding/table": [64, 32], "dense/bias": [16]]
    try await client.register(
      job: "slots",
      variables: shapes.map {
        Fixtures.variable($0.key, shape: $0.value, constant: 0.5, learningRate: 0.1, optimizer: .adam(.init()))
      }, consistency: .init(), user: "stage0")

    var expected = shapes.mapValues { Tensor.filled($0, with: 0.5) }
    var expectedSlots: [String: [String: Tensor]] = [:]
    let adam = Adam(learningRate: .constant(0.1))
    for step in 1...2 {
      let gradients = shapes.mapValues { shape in
        Tensor(shape: shape, scalars: (0..<shape.reduce(1, *)).map { Float(($0 * step) % 11) - 5 })
      }
      _ = try await client.push(
        job: "slots", step: Int64(step), user: "stage0", clientID: "t",
        gradients: gradients.mapValues { ($0, Int64(step - 1)) })
      for (name, gradient) in gradients {
        var variable = try #require(expected[name])
        adam.update(variable: &variable, gradient: gradient, slots: &expectedSlots[name, default: [:]], step: step)
        expected[name] = variable
      }
    }

    let pulled = try await client.pull(job: "slots", names: Array(shapes.keys), withSlots: true)
    for name in shapes.keys {
      #expect(pulled[name]?.version == 2)
      #expect(pulled[name]?.value == expected[name], "\(name)")
      #expect(pulled[name]?.slots?.keys.sorted() == ["m", "v"], "\(name)")
      #expect(pulled[name]?.slots == expectedSlots[name], "\(name)")
    }
    // Asked without them, no slots come.
    #expect(try await client.pull(job: "slots", names: ["embedding/table"])["embedding/table"]?.slots == nil)
  }

  /// A transfer far larger than one request: every request carries at most
  /// `transferBytes`, one async step pushed in several requests is applied
  /// whole (each part once), and parts drawn on the ps at odd offsets of a
  /// normal draw match the whole.
  @Test func transfersAreCutIntoBoundedRequests() async throws {
    let logs = try TemporaryDirectory(prefix: "pipemesh-routing")
    var tasks: [RunningService] = []
    for index in 0..<2 { tasks.append(try await Fixtures.startPS(logs, name: "ps\(index)")) }
    let client = try ParameterServerClient(endpoints: tasks.map(\.endpoint), blockBytes: 1024, transferBytes: 1024)
    // 20 bytes a row: 51 rows a block, so the second block starts at element 255.
    var kernel = Fixtures.variable("kernel", shape: [100, 5])
    kernel.initializer = .with {
      $0.normal = .with { $0.stddev = 1 }
      $0.seed = 11
    }
    let biases = (0..<6).map { Fixtures.variable("bias\($0)", shape: [100], constant: 1) }
    let consistency = Pipemesh_V1_Consistency.with { $0.async = .init() }
    try await client.register(job: "chunks", variables: [kernel] + biases, consistency: consistency, user: "stage0")

    let names = ["kernel"] + biases.map(\.name)
    let pulled = try await client.pull(job: "chunks", names: names)
    let initial = Tensor.randomNormal([100, 5], standardDeviation: 1, seed: 11)
    #expect(pulled["kernel"]?.value == initial)
    // 2 kernel blocks of ~1 KiB and 6 biases of 400 bytes: no request holds more than 1 KiB.
    var pulls: Int64 = 0
    for task in tasks {
      pulls += try await RPCClient(target: task.endpoint).call(
        ParameterServerMethods.stats, .with { $0.job = "chunks" }
      )
      .pulls
    }
    #expect(pulls >= 5, "\(pulls) pull requests carried 2 KiB of kernel and 2.4 KiB of biases")

    let gradients = Dictionary(
      uniqueKeysWithValues: names.map { name in (name, (Tensor.ones(name == "kernel" ? [100, 5] : [100]), Int64(0))) })
    let versions = try await client.push(job: "chunks", step: 1, user: "stage0", clientID: "t", gradients: gradients)
    #expect(versions == Dictionary(uniqueKeysWithValues: names.map { ($0, Int64(1)) }))
    // The same step again is a retry: applied once.
    let again = try await client.push(job: "chunks", step: 1, user: "stage0", clientID: "t", gradients: gradients)
    #expect(again == versions)
    let updated = try await client.pull(job: "chunks", names: names)
    #expect(updated["kernel"]?.value == initial - Tensor.ones([100, 5]) * 0.5)
    #expect(updated["bias5"]?.value == .filled([100], with: 0.5))
  }
}
