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
  static let table = "embedding0/table"

  /// Trains a table tied across two stages (the embedding on stage 0, the
  /// output layer reading it on stage 1) on `mesh`; the weights it ends with.
  static func trainTied(on mesh: InProcessMesh) async throws -> [String: Tensor] {
    let (inputs, targets) = PipelineTrainingTests.successorTokens(rows: 24, length: 4, vocabulary: 10, seed: 9)
    var request = Pipemesh_V1_TrainRequest.inline(
      job: "tied-local", model: GradientClippingTests.tiedModel, inputs: inputs, targets: targets, epochs: 2,
      batchSize: 12, microBatches: 2, schedule: .scheduleOneFOneB, learningRate: 0.1)
    request.splitPoints = [2]
    for try await _ in mesh.coordinatorChannel().stream(CoordinatorMethods.train, request) {}
    let job = try await mesh.coordinatorChannel().call(CoordinatorMethods.getJob, .with { $0.job = "tied-local" })
    #expect(job.state == .succeeded && job.faults.isEmpty, "\(job)")
    return try await JobCheckpointTests.weights("tied-local", on: mesh)
  }

  /// With no ps checkpoints each stage keeps the master copy of its own
  /// variables, so no push ever names them (a push that did would fail),
  /// and the job ends with every variable on the ps: bit for bit those of
  /// the same job on ps tasks that checkpoint, where the stages push their
  /// own gradients too and the ps applies them beside the table's.
  @Test func aStageThatSharesATableUpdatesItsOwnVariablesItself() async throws {
    let kept = try InProcessMesh(stages: 2)
    let keptWeights = await Result(catching: {
      for ps in kept.parameterServers {
        kept.network.failNextCall(
          ParameterServerMethods.push.path, to: ps, losing: .request,
          with: RPCError(.internal, "the test refuses a push of a variable one stage writes alone")
        ) { bytes in
          guard let push = try? Pipemesh_V1_PushRequest(serializedBytes: bytes) else { return false }
          return push.gradients.contains { !$0.name.hasPrefix(Self.table) }
        }
      }
      let weights = try await Self.trainTied(on: kept)
      #expect(kept.network.unfiredFaults == kept.parameterServers.count, "a push named a stage's own variable")
      return weights
    })
    await kept.shutdown(gracePeriod: .zero)

    let directory = try TemporaryDirectory(prefix: "pipemesh-local-updates")
    let pushed = try InProcessMesh(stages: 2, checkpointDirectory: directory.path)
    let pushedWeights = await Result(catching: { try await Self.trainTied(on: pushed) })
    await pushed.shutdown(gracePeriod: .zero)

    let (got, want) = (try keptWeights.get(), try pushedWeights.get())
    let declared = try makeModel(GradientClippingTests.tiedModel).variableDeclarations().map(\.name)
    #expect(Set(got.keys) == Set(declared) && declared.contains(Self.table), "\(got.keys.sorted())")
    for (name, tensor) in want { #expect(got[name]?.scalars == tensor.scalars, "\(name)") }
  }
}
