import Foundation
import MeshPS
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// A cluster of three ps processes behind one client.
@Suite struct RoutingTests {
  @Test func variablesAndRowBlocksAreSpreadAndJoined() async throws {
    let logs = try TemporaryDirectory(prefix: "pipemesh-routing")
    var tasks: [RunningService] = []
    for index in 0..<3 { tasks.append(try await Fixtures.startPS(logs, name: "ps\(index)")) }
    // Row blocks of 1 KiB: the 64×32 embedding (128 bytes a row) becomes 8 blocks of 8 rows.
    let client = try ParameterServerClient(endpoints: tasks.map(\.endpoint), rowBlockBytes: 1024)
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
    let placement = Placement(tasks: 3, rowBlockBytes: 1024)
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
  }
}
