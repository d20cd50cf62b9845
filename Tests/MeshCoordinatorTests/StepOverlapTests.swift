import Foundation
import MeshInProcess
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import Testing

/// Under PipeDream-2BW the coordinator sends a step's forwards while the
/// step before still runs, before its commits are answered: the pipeline
/// does not drain between steps. A flushing schedule (1F1B) sends none of a
/// step until every stage committed the step before.
@Suite struct StepOverlapTests {
  @Test(arguments: [Pipemesh_V1_ScheduleKind.schedulePipedream2Bw, .scheduleOneFOneB])
  func stepsOverlapOnlyUnderPipeDream2BW(schedule: Pipemesh_V1_ScheduleKind) async throws {
    let mesh = try InProcessMesh(stages: 2)
    mesh.network.logUnaryCalls()
    let outcome = await Result(catching: {
      let (inputs, targets) = PipelineTrainingTests.classification(count: 128)
      // Two epochs of 8 steps: 2BW drains only at each epoch's end (no checkpoints).
      let request = Pipemesh_V1_TrainRequest.inline(
        job: "overlap", model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets, epochs: 2, batchSize: 16,
        microBatches: 2, schedule: schedule, learningRate: 0.1)
      var last = Pipemesh_V1_TrainProgress()
      for try await progress in mesh.coordinatorChannel().stream(CoordinatorMethods.train, request) { last = progress }
      try #require(last.done && last.step == 16, "\(last)")

      // Where in the log each step's last commit was answered and its first forward sent.
      var lastCommitAnswered: [Int64: Int] = [:]
      var firstForwardSent: [Int64: Int] = [:]
      for (index, event) in mesh.network.loggedCalls.enumerated() {
        if event.kind == .answered, event.path == PartitionMethods.commit.path {
          lastCommitAnswered[try Pipemesh_V1_CommitRequest(serializedBytes: event.request).step] = index
        } else if event.kind == .sent, event.path == PartitionMethods.forward.path {
          let step = try Pipemesh_V1_ForwardRequest(serializedBytes: event.request).key.step
          firstForwardSent[step] = firstForwardSent[step] ?? index
        }
      }
      #expect(lastCommitAnswered.keys.sorted() == Array(1...16) && firstForwardSent.keys.sorted() == Array(1...16))
      // Steps the next one began beside.
      let overlapped = (1..<16).filter { step in
        firstForwardSent[Int64(step + 1)]! < lastCommitAnswered[Int64(step)]!
      }
      if schedule == .schedulePipedream2Bw {
        // Every step but each epoch's last (8 and 16) may have the next begin beside it; the
        // coordinator begins it before it awaits the step, so nearly all do.
        #expect(overlapped.count >= 7 && !overlapped.contains(8), "overlapped: \(overlapped)")
      } else {
        #expect(overlapped.isEmpty, "steps whose next began before they committed: \(overlapped)")
      }
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }
}
