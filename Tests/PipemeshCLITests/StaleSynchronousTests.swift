import Foundation
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import Testing

/// Async and bounded replicas run their steps apart, through the `pipemesh`
/// commands on real processes: with one replica's partition slowed to a
/// quarter of its speed (stopped for 150 ms of every 200), an async job's
/// fast replica runs steps ahead of the slow one, while a `bounded:1` job's
/// ps holds it within one step; both jobs finish and learn.
@Suite(.serialized) struct StaleSynchronousTests {
  @Test func boundedReplicasOfUnequalSpeedStayWithinTheirBoundAndFinish() async throws {
    let mesh = try await DurableStateTests.Mesh(partitions: 2)
    let throttle = mesh.partitions[1].process.throttled(stopped: .milliseconds(150), running: .milliseconds(50))
    func train(_ job: String, consistency: String) async throws -> [String: Any] {
      let trained = try await mesh.run([
        "train", "--job", job, "--model", DurableStateTests.model, "--stages", "1", "--replicas", "2", "--batch-size",
        "32", "--epochs", "3", "--micro-batches", "2", "--consistency", consistency, "--json",
      ])
      #expect(trained.status == 0, "\(trained.output)")
      return try await DurableStateTests.record(job, on: mesh)
    }
    func stats() async throws -> Pipemesh_V1_StatsResponse {
      try await RPCClient(target: mesh.parameterServers[0].endpoint).call(ParameterServerMethods.stats, .init())
    }

    let bounded = try await train("bounded", consistency: "bounded:1")
    let afterBounded = try await stats()
    let free = try await train("free", consistency: "async")
    let afterAsync = try await stats()
    throttle.end()

    for record in [bounded, free] {
      #expect(record["state"] as? String == "JOB_STATE_SUCCEEDED", "\(record)")
      let epochs = record["epochs"] as? [[String: Any]] ?? []
      #expect(epochs.count == 3, "\(record)")
      // Chance is 0.1 on the ten digits.
      #expect((epochs.last?["validationAccuracy"] as? Double ?? 0) > 0.5, "\(record)")
    }
    print(
      "bounded:1 — most steps ahead \(afterBounded.maxReplicaLead), pushes that waited \(afterBounded.pushesWaited); "
        + "async — most steps ahead \(afterAsync.maxReplicaLead)")
    // The bound held because pushes waited, not because the replicas ran at one speed:
    // without it the fast replica ran further ahead.
    #expect(afterBounded.maxReplicaLead == 1 && afterBounded.pushesWaited > 0, "\(afterBounded)")
    #expect(afterAsync.maxReplicaLead >= 2, "\(afterAsync)")
    #expect(afterAsync.pushesWaited == afterBounded.pushesWaited, "\(afterAsync)")
  }
}
