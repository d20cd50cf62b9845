import Foundation
import MeshCoordinator
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// A job started while a partition is down, and one started right after it
/// came back from `kill -9`.
@Suite struct MemberRestartTests {
  @Test func aJobNamesAPartitionThatIsDownAndStartsAtOnceWhenItIsBack() async throws {
    let mesh = try await LocalMesh(partitions: 2)
    let coordinator = try await mesh.coordinator([[0], [1]], name: "restart")
    let (inputs, targets) = PipelineTrainingTests.classification()
    func train(_ job: String) async throws -> [Pipemesh_V1_TrainProgress] {
      try await PipelineTrainingTests.train(
        coordinator, job: job, model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets, microBatches: 2,
        schedule: .scheduleOneFOneB, epochs: 1)
    }
    #expect(try await train("before").last?.done == true)

    // Down: the job is refused before anything is loaded, naming the partition.
    let endpoint = mesh.partitions[1].endpoint
    mesh.partitions[1].process.signal(SIGKILL)
    _ = try await mesh.partitions[1].process.waitForExit()
    let started = ContinuousClock.now
    let refused = await #expect(throws: RPCError.self) { _ = try await train("while-down") }
    #expect(refused?.code == .unavailable, "\(String(describing: refused))")
    #expect(
      refused?.message.contains("the partition at \(endpoint)") == true, "\(String(describing: refused))")
    #expect(ContinuousClock.now - started < .seconds(60))

    // Back at the same address, as systemd restarts it: the coordinator's
    // channel to it is backing off after the failed calls, and the next job
    // waits for it to connect instead of failing at once with UNAVAILABLE.
    let restarted = try await RunningService.start(
      "partition", log: mesh.logs.file("partition1-restarted.log"), listen: endpoint)
    #expect(try await train("after").last?.done == true, "\(mesh.logText)\n\(restarted.process.log)")
  }
}
