import Foundation
import MeshInProcess
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// A cosine decay left without a length in a TrainRequest runs to the job's
/// last update: the coordinator writes the count out in the job's record,
/// and the stages train exactly as with that count given.
@Suite struct LearningRateScheduleTests {
  /// A rate of 0.1 warmed up over 4 steps, then decaying over `cosineSteps`
  /// (0: to the job's end), or constant when nil.
  static func schedule(cosineSteps: Int64?) -> Pipemesh_V1_LearningRateSchedule {
    .with {
      $0.base = 0.1
      $0.warmupSteps = 4
      if let cosineSteps { $0.cosine = .with { $0.totalSteps = cosineSteps } }
    }
  }

  @Test func aCosineDecayWithoutALengthRunsToTheJobsLastStep() async throws {
    let mesh = try InProcessMesh(stages: 2)
    let outcome = await Result(catching: {
      func train(_ job: String, cosineSteps: Int64?) async throws -> Pipemesh_V1_Job {
        try await JobCheckpointTests.trainToEnd(job, epochs: 2, on: mesh) {
          $0.optimizer.learningRate = Self.schedule(cosineSteps: cosineSteps)
        }
      }
      // 2 epochs of 8 steps: 12 after the warm-up, the last at the end of an 11-step decay.
      let toTheEnd = try await train("to-the-end", cosineSteps: 0)
      #expect(toTheEnd.state == .succeeded, "\(toTheEnd)")
      #expect(toTheEnd.options.optimizer.learningRate.cosine.totalSteps == 11, "\(toTheEnd.options.optimizer)")
      _ = try await train("eleven", cosineSteps: 11)
      _ = try await train("constant", cosineSteps: nil)
      let resolved = try await JobCheckpointTests.weights("to-the-end", on: mesh)
      let given = try await JobCheckpointTests.weights("eleven", on: mesh)
      let constant = try await JobCheckpointTests.weights("constant", on: mesh)
      #expect(resolved.count == 8 && Set(given.keys) == Set(resolved.keys))
      for (name, tensor) in resolved { #expect(given[name]?.scalars == tensor.scalars, "\(name)") }
      #expect(
        resolved.contains { name, tensor in constant[name]?.scalars != tensor.scalars }, "the decay changed nothing")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// Async replicas each apply their own updates: the decay counts them all.
  @Test func aCosineDecayOfAsyncReplicasCountsEachReplicasUpdates() async throws {
    let mesh = try InProcessMesh(stages: 1, replicas: 2)
    let outcome = await Result(catching: {
      // 128 examples, 16 a replica: 4 steps an epoch of 2 replicas, 8 updates; 16 in 2 epochs, 12 after the warm-up.
      let job = try await JobCheckpointTests.trainToEnd("async", epochs: 2, on: mesh) {
        $0.optimizer.learningRate = Self.schedule(cosineSteps: 0)
        $0.consistency = .with { $0.async = .init() }
      }
      #expect(job.state == .succeeded, "\(job)")
      #expect(job.options.optimizer.learningRate.cosine.totalSteps == 11, "\(job.options.optimizer)")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }
}
