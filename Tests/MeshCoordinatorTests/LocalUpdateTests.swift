import MeshInProcess
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// A stage applies the updates of the variables only it writes itself, also
/// when it shares another with a second stage: only the shared one travels
/// to the ps each step.
@Suite struct LocalUpdateTests {
  /// A table tied across two stages (the embedding on stage 0, the output
  /// layer reading it on stage 1): with no ps checkpoints, each stage keeps
  /// the master copy of its own variables, so no push ever names them (a
  /// push that did would fail), the table's gradients add up on the ps, and
  /// the job ends with every variable on the ps.
  @Test func aStageThatSharesATableUpdatesItsOwnVariablesItself() async throws {
    let mesh = try InProcessMesh(stages: 2)
    let outcome = await Result(catching: {
      let table = "embedding0/table"
      for ps in mesh.parameterServers {
        mesh.network.failNextCall(
          ParameterServerMethods.push.path, to: ps, losing: .request,
          with: RPCError(.internal, "the test refuses a push of a variable one stage writes alone")
        ) { bytes in
          guard let push = try? Pipemesh_V1_PushRequest(serializedBytes: bytes) else { return false }
          return push.gradients.contains { !$0.name.hasPrefix(table) }
        }
      }
      let (inputs, targets) = PipelineTrainingTests.successorTokens(rows: 24, length: 4, vocabulary: 10, seed: 9)
      var request = Pipemesh_V1_TrainRequest.inline(
        job: "tied-local", model: GradientClippingTests.tiedModel, inputs: inputs, targets: targets, epochs: 2,
        batchSize: 12, microBatches: 2, schedule: .scheduleOneFOneB, learningRate: 0.1)
      request.splitPoints = [2]
      for try await _ in mesh.coordinatorChannel().stream(CoordinatorMethods.train, request) {}
      let job = try await mesh.coordinatorChannel().call(CoordinatorMethods.getJob, .with { $0.job = "tied-local" })
      #expect(job.state == .succeeded && job.faults.isEmpty, "\(job)")
      #expect(mesh.network.unfiredFaults == mesh.parameterServers.count, "a push named a stage's own variable")

      // Every variable is on the ps at the end: the table, and each stage's own, assigned.
      let weights = try await JobCheckpointTests.weights("tied-local", on: mesh)
      let declared = try makeModel(GradientClippingTests.tiedModel).variableDeclarations(layers: 0..<3).map(\.name)
      #expect(Set(weights.keys) == Set(declared) && declared.contains(table), "\(weights.keys.sorted())")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }
}
