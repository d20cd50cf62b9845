import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

@testable import MeshCoordinator

/// A job trained with discard_model is freed once its success is saved, and
/// the release is recorded; a coordinator that stopped in between frees the
/// job when it starts again on the same state.
@Suite struct DiscardReleaseTests {
  @Test func aDiscardJobLeftHeldByAStoppedCoordinatorIsFreedWhenTheNextStarts() async throws {
    let mesh = try await LocalMesh(partitions: 2)
    let state = try TemporaryDirectory(prefix: "pipemesh-release")
    let cluster = try Cluster(
      parameterServers: mesh.parameterServers.map(\.endpoint), partitions: mesh.partitions.map { [$0.endpoint] })
    let ps = try RPCClient(target: mesh.parameterServers[0].endpoint)
    func psVariables(of runID: String) async throws -> Int64? {
      do {
        return try await ps.call(ParameterServerMethods.stats, .with { $0.job = runID }).variables
      } catch let error as RPCError where error.code == .notFound {
        return nil
      }
    }
    let (inputs, targets) = PipelineTrainingTests.classification()
    func train(_ client: RPCClient, _ job: String, discard: Bool) async throws {
      var request = Pipemesh_V1_TrainRequest.inline(
        job: job, model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets, epochs: 1, batchSize: 16,
        microBatches: 2, schedule: .scheduleOneFOneB, learningRate: 0.1)
      request.discardModel = discard
      var last = Pipemesh_V1_TrainProgress()
      for try await update in client.stream(CoordinatorMethods.train, request, options: .init(timeout: .seconds(120))) {
        last = update
      }
      #expect(last.done, "\(job): \(mesh.logText)")
    }

    // The first coordinator frees a discard job and records it; a kept job stays on the ps.
    do {
      let store = try CoordinatorStore(directory: state.path)
      let coordinator = try CoordinatorService(cluster: cluster, store: store)
      try await withServer([coordinator]) { _, client in
        try await train(client, "discarded", discard: true)
        try await train(client, "held", discard: false)
      }
      let discarded = try #require(try await store.job("discarded"))
      #expect(discarded.released && discarded.record.state == .succeeded)
      #expect(try await psVariables(of: discarded.runID) == nil)
      // What a coordinator killed after saving the success of a discard job, before freeing it,
      // leaves behind: the job on the ps, not released.
      var held = try #require(try await store.job("held"))
      #expect(try await psVariables(of: held.runID) ?? 0 > 0)
      held.record.options.discardModel = true
      try await store.update(held)
    }

    let store = try CoordinatorStore(directory: state.path)
    let held = try #require(try await store.job("held"))
    #expect(!held.released)
    let restarted = try CoordinatorService(cluster: cluster, store: store)
    #expect(await restarted.releaseDiscardedJobs() == ["held"])
    #expect(try await psVariables(of: held.runID) == nil)
    #expect(try await store.job("held")?.released == true)
    // Once recorded, nothing is left to free.
    #expect(await restarted.releaseDiscardedJobs() == [])
  }
}
