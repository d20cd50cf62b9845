import MeshPipeline
import Testing

/// Schedules are checked as data: the lists, their dependencies, the memory
/// they need, with no network.
@Suite struct ScheduleTests {
  static let shapes: [(stages: Int, microBatches: Int)] = [
    (1, 1), (1, 4), (2, 1), (2, 4), (4, 1), (4, 4), (4, 8), (3, 7),
  ]

  @Test func actionsPrintAndParse() {
    #expect(PipelineAction.forward(1, 0).description == "1F0")
    #expect(PipelineAction("12B34") == .backward(12, 34))
    #expect(PipelineAction("2W3") == .weights(2, 3))
    #expect(PipelineAction.weights(2, 3).description == "2W3")
    #expect(PipelineAction("1X0") == nil)
    #expect(PipelineAction("F0") == nil)
  }

  @Test func gpipeListsForTwoStages() {
    let schedule = PipelineSchedule(kind: .gpipe, stages: 2, microBatches: 3)
    #expect(
      schedule.actions.map { $0.map(\.description) } == [
        ["0F0", "0F1", "0F2", "0B0", "0B1", "0B2"],
        ["1F0", "1F1", "1F2", "1B0", "1B1", "1B2"],
      ])
  }

  @Test func oneFOneBListsForFourStages() {
    let schedule = PipelineSchedule(kind: .oneFOneB, stages: 4, microBatches: 4)
    #expect(
      schedule.actions.map { $0.map(\.description).joined(separator: " ") } == [
        "0F0 0F1 0F2 0F3 0B0 0B1 0B2 0B3",
        "1F0 1F1 1F2 1B0 1F3 1B1 1B2 1B3",
        "2F0 2F1 2B0 2F2 2B1 2F3 2B2 2B3",
        "3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3",
      ])
  }

  /// PipeDream-2BW runs 1F1B's lists; what sets it apart is that its steps
  /// overlap (the coordinator begins the next before this one ends).
  @Test(arguments: shapes)
  func pipeDream2BWRunsOneFOneBsListsAndOverlapsSteps(shape: (stages: Int, microBatches: Int)) {
    let twoBW = PipelineSchedule(kind: .pipeDream2BW, stages: shape.stages, microBatches: shape.microBatches)
    let oneFOneB = PipelineSchedule(kind: .oneFOneB, stages: shape.stages, microBatches: shape.microBatches)
    #expect(twoBW.actions == oneFOneB.actions)
    #expect(ScheduleKind.allCases.filter(\.overlapsSteps) == [.pipeDream2BW])
  }

  @Test(arguments: ScheduleKind.allCases, shapes)
  func everyScheduleRunsToCompletion(kind: ScheduleKind, shape: (stages: Int, microBatches: Int)) throws {
    let schedule = PipelineSchedule(kind: kind, stages: shape.stages, microBatches: shape.microBatches)
    let grid = try schedule.timeline()
    // Each action starts after what it depends on finished.
    var started: [PipelineAction: Int] = [:]
    var finished: [PipelineAction: Int] = [:]
    for (stage, row) in grid.enumerated() {
      for (tick, action) in row.enumerated() {
        guard let action else { continue }
        #expect(action.stage == stage)
        started[action] = min(started[action] ?? tick, tick)
        finished[action] = tick
      }
    }
    let split = kind == .zeroBubbleH1
    #expect(finished.count == (split ? 3 : 2) * shape.stages * shape.microBatches)
    // Every backward of a stage takes the calls the kind says (the planner counts a call's fixed cost by it).
    for stage in 0..<shape.stages {
      let calls = schedule.actions[stage].filter { $0.kind != .forward }.count
      #expect(calls == kind.callsPerBackward * shape.microBatches)
    }
    for (action, tick) in started {
      for dependency in action.dependencies(stages: shape.stages) {
        #expect(try #require(finished[dependency]) < tick, "\(action) started before \(dependency) finished")
      }
    }
    // With a forward one tick and a backward two (or its halves one each), the critical path is
    // a micro-batch's forwards and backwards through the stages plus the other micro-batches'
    // work on one stage: 3(M + K − 1) ticks; ZB-H1 fills K − 1 ticks of each stage's idle time
    // at the end with weight gradients once every stage has at least K micro-batches to overlap.
    let (stages, microBatches) = (shape.stages, shape.microBatches)
    let ticks = try #require(grid.map(\.count).max())
    if split {
      #expect(ticks <= 3 * (microBatches + stages - 1))
      if microBatches >= stages { #expect(ticks == 3 * microBatches + stages - 1) }
    } else {
      #expect(ticks == 3 * (microBatches + stages - 1))
    }
  }

  @Test func zeroBubbleListsForFourStages() {
    let schedule = PipelineSchedule(kind: .zeroBubbleH1, stages: 4, microBatches: 4)
    #expect(
      schedule.actions.map { $0.map(\.description).joined(separator: " ") } == [
        "0F0 0F1 0F2 0F3 0B0 0W0 0B1 0W1 0B2 0W2 0B3 0W3",
        "1F0 1F1 1F2 1B0 1F3 1B1 1W0 1B2 1W1 1B3 1W2 1W3",
        "2F0 2F1 2B0 2F2 2B1 2F3 2B2 2W0 2B3 2W1 2W2 2W3",
        "3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3 3W0 3W1 3W2 3W3",
      ])
    #expect(schedule.splitsBackward(stage: 2, microBatch: 1))
    #expect(!PipelineSchedule(kind: .oneFOneB, stages: 4, microBatches: 4).splitsBackward(stage: 2, microBatch: 1))
  }

  @Test(arguments: shapes)
  func zeroBubbleKeepsAtMostKMicroBatchesAndAThirdOfTheIdleTime(shape: (stages: Int, microBatches: Int)) throws {
    let (stages, microBatches) = (shape.stages, shape.microBatches)
    let zeroBubble = PipelineSchedule(kind: .zeroBubbleH1, stages: stages, microBatches: microBatches)
    let oneFOneB = PipelineSchedule(kind: .oneFOneB, stages: stages, microBatches: microBatches)
    for stage in 0..<stages {
      #expect(zeroBubble.peakInFlight[stage] <= min(stages, microBatches))
    }
    // Idle stage-ticks: the same work (3 ticks a micro-batch a stage) in fewer ticks.
    func idle(_ schedule: PipelineSchedule) throws -> Int {
      let (ticks, fraction) = try schedule.bubble()
      return Int((fraction * Double(ticks * stages)).rounded())
    }
    if microBatches >= stages {
      #expect(try idle(zeroBubble) * 3 == idle(oneFOneB))
    } else {
      #expect(try idle(zeroBubble) <= idle(oneFOneB))
    }
  }

  @Test(arguments: shapes)
  func oneFOneBKeepsAtMostKMinusSMicroBatches(shape: (stages: Int, microBatches: Int)) {
    let oneFOneB = PipelineSchedule(kind: .oneFOneB, stages: shape.stages, microBatches: shape.microBatches)
    let gpipe = PipelineSchedule(kind: .gpipe, stages: shape.stages, microBatches: shape.microBatches)
    for stage in 0..<shape.stages {
      #expect(oneFOneB.peakInFlight[stage] == min(shape.stages - stage, shape.microBatches))
      #expect(gpipe.peakInFlight[stage] == shape.microBatches)
    }
  }

  @Test func bubbleMatchesTheGPipeFormula() throws {
    // Idle fraction (K - 1) / (M + K - 1) for unit-time forwards and backwards.
    for (stages, microBatches) in [(2, 8), (4, 8), (4, 4)] {
      let bubble = try PipelineSchedule(kind: .gpipe, stages: stages, microBatches: microBatches).bubble()
      #expect(abs(bubble.idleFraction - Double(stages - 1) / Double(microBatches + stages - 1)) < 1e-12)
    }
  }

  @Test func deadlockIsReportedWithTheGrid() {
    // Stage 0 wants backward 0 before stage 1 has run forward 0.
    let broken = PipelineSchedule(
      kind: .gpipe, stages: 2, microBatches: 1,
      actions: [[.forward(0, 0), .backward(0, 0)], [.backward(1, 0), .forward(1, 0)]])
    let error = #expect(throws: ScheduleError.self) { try broken.timeline() }
    #expect(error?.message.contains("deadlock") == true)
    #expect(error?.grid.contains("[1B0]") == true)
    #expect(error?.grid.contains("[0B0]") == true)
  }

  @Test func incompleteListsAreRefused() {
    let missing = PipelineSchedule(
      kind: .gpipe, stages: 1, microBatches: 2, actions: [[.forward(0, 0), .forward(0, 1), .backward(0, 0)]])
    let error = #expect(throws: ScheduleError.self) { try missing.timeline() }
    #expect(error?.message.contains("0B1") == true)
  }
}
