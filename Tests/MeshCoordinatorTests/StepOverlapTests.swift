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
    mesh.network.logCalls()
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
      // The weights each step's forwards name (none: each stage's newest).
      var weightsNamed: [Int64: Set<Int64?>] = [:]
      for (index, event) in mesh.network.loggedCalls.enumerated() {
        if event.kind == .answered, event.path == PartitionMethods.commit.path {
          lastCommitAnswered[try Pipemesh_V1_CommitRequest(serializedBytes: event.request).step] = index
        } else if event.kind == .sent, event.path == PartitionMethods.forward.path {
          let forward = try Pipemesh_V1_ForwardRequest(serializedBytes: event.request)
          firstForwardSent[forward.key.step] = firstForwardSent[forward.key.step] ?? index
          weightsNamed[forward.key.step, default: []].insert(
            forward.hasWeightsAfterStep ? forward.weightsAfterStep : nil)
        }
      }
      #expect(lastCommitAnswered.keys.sorted() == Array(1...16) && firstForwardSent.keys.sorted() == Array(1...16))
      // Steps the next one began beside.
      let overlapped = (1..<16).filter { step in
        guard let next = firstForwardSent[Int64(step + 1)], let commit = lastCommitAnswered[Int64(step)] else {
          return false
        }
        return next < commit
      }
      if schedule == .schedulePipedream2Bw {
        // Each epoch's first step runs on the newest weights (after a drain); every other begins
        // beside the step before, on the weights from before that one's update.
        for step in Int64(1)...16 {
          let behind: Int64 = (step - 1) % 8 == 0 ? 1 : 2
          #expect(weightsNamed[step] == [step - behind], "step \(step) named \(weightsNamed[step] ?? [])")
        }
        // On the wire: the next step's forwards go out while the step before still commits (when
        // that step did not end first: the order of two running steps is the machine's), never
        // past an epoch's end.
        #expect(!overlapped.isEmpty && !overlapped.contains(8), "overlapped: \(overlapped)")
      } else {
        #expect(weightsNamed.values.allSatisfy { $0 == [nil] }, "\(weightsNamed)")
        #expect(overlapped.isEmpty, "steps whose next began before they committed: \(overlapped)")
      }
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }
}
