import Foundation
import MeshPS
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// Variables whose only writer keeps the master copy: the ps reserves their
/// memory but holds no value until the writer assigns one.
@Suite struct WriterKeptValuesTests {
  static let sync = Fixtures.consistency(.sync(.init()), replicas: 1)

  @Test func theWriterKeepsValuesUntilItAssignsThem() async throws {
    let (client, channel) = try Fixtures.inProcessPS()
    let momentum = Fixtures.variable("w", shape: [3, 4], learningRate: 0.5, optimizer: .momentum(.init()))
    let registered = try await client.register(
      job: "kept", variables: [momentum], consistency: Self.sync, user: "stage0", writerKeepsValues: true)
    #expect(registered["w"]?.version == 0 && registered["w"]?.keptByWriter == true)
    var stats = try await channel.call(ParameterServerMethods.stats, .with { $0.job = "kept" })
    #expect(stats.bytes == 0, "the ps holds no value")
    #expect(stats.memoryInUseBytes == 2 * 12 * 4, "but reserves the value and its slot")

    let pull = await #expect(throws: RPCError.self) { _ = try await client.pull(job: "kept", names: ["w"]) }
    #expect(pull?.code == .failedPrecondition && pull?.message.contains("kept by the stage") == true)
    let push = await #expect(throws: RPCError.self) {
      try await client.push(
        job: "kept", step: 1, user: "stage0", clientID: "t", gradients: ["w": (.ones([3, 4]), 0)])
    }
    #expect(push?.code == .failedPrecondition, "\(String(describing: push))")
    // A second stage cannot share a variable one stage keeps; registering again as the writer is fine.
    let tied = await #expect(throws: RPCError.self) {
      try await client.register(job: "kept", variables: [momentum], consistency: Self.sync, user: "stage1")
    }
    #expect(tied?.code == .failedPrecondition)
    #expect(
      try await client.register(job: "kept", variables: [momentum], consistency: Self.sync, user: "stage0")["w"]?
        .keptByWriter == true)

    // Another user may not assign it; the writer may, once per version.
    let value = Tensor(shape: [3, 4], scalars: (0..<12).map(Float.init))
    let velocity = Tensor.filled([3, 4], with: 0.25)
    let stranger = await #expect(throws: RPCError.self) {
      try await client.assign(job: "kept", user: "stage1", states: ["w": (value, ["velocity": velocity], 7)])
    }
    #expect(stranger?.code == .failedPrecondition)
    #expect(
      try await client.assign(job: "kept", user: "stage0", states: ["w": (value, ["velocity": velocity], 7)]) == [
        "w": 7
      ])
    #expect(
      try await client.assign(job: "kept", user: "stage0", states: ["w": (value * 2, [:], 7)]) == ["w": 7], "a retry")
    let older = await #expect(throws: RPCError.self) {
      try await client.assign(job: "kept", user: "stage0", states: ["w": (value, [:], 6)])
    }
    #expect(older?.code == .failedPrecondition)
    for version: Int64 in [-1, Int64.max] {
      let outOfRange = await #expect(throws: RPCError.self) {
        try await client.assign(job: "kept", user: "stage0", states: ["w": (value, [:], version)])
      }
      #expect(outOfRange?.code == .invalidArgument, "version \(version): \(String(describing: outOfRange))")
    }
    let wrongShape = await #expect(throws: RPCError.self) {
      try await client.assign(job: "kept", user: "stage0", states: ["w": (.ones([12]), [:], 8)])
    }
    #expect(wrongShape?.code == .invalidArgument)

    let pulled = try await client.pull(job: "kept", names: ["w"])["w"]
    #expect(pulled?.value == value && pulled?.version == 7)
    stats = try await channel.call(ParameterServerMethods.stats, .with { $0.job = "kept" })
    #expect(stats.bytes == 2 * 12 * 4)
    // From here the ps holds the variable: the next step's push applies to the assigned state.
    try await client.push(job: "kept", step: 8, user: "stage0", clientID: "t", gradients: ["w": (.ones([3, 4]), 7)])
    let stepped = try await client.pull(job: "kept", names: ["w"])["w"]
    // Momentum 0.9 (the default): v = 0.9 · 0.25 + 1 = 1.225; w −= 0.5 · 1.225.
    #expect(stepped?.version == 8 && stepped?.value == value - Tensor.filled([3, 4], with: 0.6125))
  }

  @Test func onlySyncWithOneReplicaMayKeepValues() async throws {
    let (client, _) = try Fixtures.inProcessPS()
    let refused = await #expect(throws: RPCError.self) {
      try await client.register(
        job: "async", variables: [Fixtures.variable("w", shape: [2])],
        consistency: Fixtures.consistency(.async(.init()), replicas: 2), user: "stage0", writerKeepsValues: true)
    }
    #expect(refused?.code == .failedPrecondition && refused?.message.contains("one replica") == true)
  }
}
