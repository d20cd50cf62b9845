import MeshProto
import Testing

@testable import MeshCoordinator

/// GetJob's history of a job's steps: bounded, evenly thinned, the newest
/// always there, and a run that starts again replacing what it redoes.
@Suite struct StepHistoryTests {
  static func step(_ step: Int64, loss: Double = 1) -> Pipemesh_V1_TrainProgress {
    .with {
      $0.step = step
      $0.loss = loss
    }
  }

  @Test func aLongJobIsThinnedEvenlyAndKeepsItsNewestStep() {
    var history = StepHistory()
    for step in Int64(1)...5000 { history.record(Self.step(step)) }
    let steps = history.steps.map(\.step)
    #expect(steps.count <= StepHistory.capacity && steps.count > StepHistory.capacity / 2, "\(steps.count)")
    #expect(steps.last == 5000)
    let gaps = Set(zip(steps.dropLast().dropFirst(), steps.dropFirst()).map { $1 - $0 })
    #expect(gaps.count == 1, "evenly spaced but for the newest: \(gaps)")
    #expect(steps.dropLast().allSatisfy { $0 % 8 == 0 }, "\(steps.prefix(5))")
  }

  @Test func onlyStepsAreRecordedAndARerunReplacesWhatItRedoes() {
    var history = StepHistory()
    for step in Int64(1)...10 { history.record(Self.step(step, loss: 2)) }
    history.record(.with { $0.queuePosition = 1 })
    history.record(
      .with {
        $0.step = 10
        $0.evaluated = true
        $0.validationLoss = 0.5
      })
    #expect(history.steps.map(\.step) == Array(1...10))
    // Gone on from a checkpoint at step 6.
    for step in Int64(7)...8 { history.record(Self.step(step, loss: 1)) }
    #expect(history.steps.map(\.step) == Array(1...8))
    #expect(history.steps.map(\.loss) == Array(repeating: 2, count: 6) + [1, 1])
    history.record(
      .with {
        $0.done = true
        $0.traceJson = "{}"
      })
    #expect(history.traceJson == "{}" && history.steps.count == 8)
  }
}
