import Foundation
import MeshCheckpoint
import MeshInProcess
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// A job's own checkpoints: every N steps and at its end, each written at a
/// step boundary, the ps keeping the newest few; the last one holds exactly
/// the weights the job registered as its model.
@Suite struct JobCheckpointTests {
  @Test func checkpointsEveryNStepsHoldTheRegisteredWeightsAtTheEnd() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-job-checkpoints")
    let mesh = try InProcessMesh(stages: 2, checkpointDirectory: directory.path)
    let outcome = await Result(catching: {
      let (inputs, targets) = PipelineTrainingTests.classification(count: 128)
      var request = Pipemesh_V1_TrainRequest.inline(
        job: "every-2", model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets, epochs: 1, batchSize: 16,
        microBatches: 2, schedule: .scheduleOneFOneB, learningRate: 0.1)
      request.checkpoint = .with {
        $0.everySteps = 2
        $0.atEnd = true
      }
      var last = Pipemesh_V1_TrainProgress()
      for try await progress in mesh.coordinatorChannel().stream(CoordinatorMethods.train, request) { last = progress }
      #expect(last.done && last.step == 8)
      #expect(last.checkpoints.count == 1, "\(last.checkpoints)")

      // Steps 2, 4, 6, 8 and the end wrote five; the ps keeps its newest three.
      let files = try FileManager.default.contentsOfDirectory(atPath: directory.file("ps-0"))
        .filter { $0.hasPrefix("checkpoint-") }
      #expect(files.count == 3, "\(files)")
      let newest = try #require(last.checkpoints.first)
      let checkpoint = try SafeTensors.decode(try Data(contentsOf: URL(fileURLWithPath: newest)))

      var weights = Data()
      for try await chunk in mesh.coordinatorChannel().stream(
        CoordinatorMethods.exportModel, .with { $0.model = "every-2" })
      {
        weights.append(chunk.data)
      }
      let model = try SafeTensors.decode(weights)
      #expect(model.tensors.count == 8)
      for (name, tensor) in model.tensors {
        let stored = checkpoint.tensors.first { key, _ in key.hasPrefix("every-2.") && key.hasSuffix("/\(name)") }
        #expect(stored?.value == tensor, "\(name) in \(newest)")
      }
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }
}
