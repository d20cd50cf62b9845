import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// A ps process computes with subnormal floats flushed to zero: a job that
/// has all but learnt its data pushes gradients whose squares are subnormal,
/// and the CPU takes a hundred cycles and more over each of them.
@Suite struct SubnormalTests {
  @Test func aPsProcessKeepsNoSubnormalSecondMoment() async throws {
    let logs = try TemporaryDirectory(prefix: "pipemesh-subnormal")
    let ps = try await Fixtures.startPS(logs)
    let client = try ParameterServerClient(endpoints: [ps.endpoint])
    let adam = Fixtures.variable("w", shape: [8], constant: 0.5, learningRate: 0.01, optimizer: .adam(.init()))
    try await client.register(job: "learnt", variables: [adam], consistency: .init(), user: "stage0")
    // (1 − β2)·g² = 1e-43 is subnormal; so is β1·m after the next 830 steps.
    try await client.push(
      job: "learnt", step: 1, user: "stage0", clientID: "t", gradients: ["w": (.filled([8], with: 1e-20), 0)])

    let pulled = try await RPCClient(target: ps.endpoint).call(
      ParameterServerMethods.pull,
      .with {
        $0.job = "learnt"
        $0.includeSlots = true
      })
    let slots = try #require(pulled.variables.first?.slots)
    let secondMoment = try Tensor(wire: try #require(slots.first { $0.name == "v" }?.tensor))
    let firstMoment = try Tensor(wire: try #require(slots.first { $0.name == "m" }?.tensor))
    #expect(secondMoment.scalars == [Float](repeating: 0, count: 8), "\(ps.process.log)")
    #expect(firstMoment.scalars == [Float](repeating: (1 - 0.9) * 1e-20, count: 8))
  }
}
