import MeshInProcess
import MeshProto
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// Clipping by global norm takes the norm over the whole model: a job cut
/// into two stages, its variables spread over two ps tasks, trains as one
/// process that clips all its gradients together — not as stages or ps
/// tasks that each clip their own part.
@Suite struct GradientClippingTests {
  /// Below the norm of every step's gradients, so every step is clipped.
  static let clipNorm: Float = 0.05

  @Test(arguments: [Pipemesh_V1_ScheduleKind.scheduleOneFOneB, .schedulePipedream2Bw])
  func aClippedJobTrainsAsOneProcessClippingTheWholeModel(schedule: Pipemesh_V1_ScheduleKind) async throws {
    let mesh = try InProcessMesh(psTasks: 2, stages: 2)
    let outcome = await Result(catching: {
      let job = try await JobCheckpointTests.trainToEnd("clipped", epochs: 2, on: mesh) {
        $0.optimizer.clipGlobalNorm = Self.clipNorm
        $0.schedule = schedule
        $0.shuffleSeed = 3
      }
      #expect(job.state == .succeeded, "\(job)")
      let trained = try await JobCheckpointTests.weights("clipped", on: mesh)

      let (inputs, targets) = PipelineTrainingTests.classification(count: 128)
      let model = try makeModel(PipelineTrainingTests.mlp)
      // PipeDream-2BW: each step but an epoch's first (8 steps) runs on the weights before the last update.
      let oneStepBehind = schedule == .schedulePipedream2Bw
      let (clipped, unclipped) = try await onOwnThread {
        let weightsAfter: ((Int) -> Int)? = oneStepBehind ? { $0 % 8 == 0 ? $0 : $0 - 1 } : nil
        func train(clipNorm: Float) -> [String: Tensor] {
          var reference = InProcessReference(model: model, learningRate: 0.1, clipNorm: clipNorm)
          _ = reference.train(
            inputs: inputs, targets: targets, epochs: 2, batchSize: 16, seed: 3, weightsAfter: weightsAfter)
          return reference.variables
        }
        return (train(clipNorm: Self.clipNorm), train(clipNorm: 0))
      }
      #expect(trained.count == 8 && Set(trained.keys) == Set(clipped.keys), "\(trained.keys.sorted())")
      for (name, expected) in clipped {
        let got = trained[name]?.scalars ?? []
        let largest = zip(got, expected.scalars).map { abs($0 - $1) }.max() ?? .infinity
        #expect(got.count == expected.scalarCount && largest <= 1e-5, "\(name) differs by \(largest)")
      }
      // Clipping changed the training: the check above would not pass without it.
      let change =
        clipped.map { name, tensor in
          zip(tensor.scalars, unclipped[name]!.scalars).map { abs($0 - $1) }.max() ?? 0
        }.max() ?? 0
      #expect(change > 1e-2, "clipping to \(Self.clipNorm) changed the weights by \(change) only")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }
}
