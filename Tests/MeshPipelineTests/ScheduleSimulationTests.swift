import MeshPipeline
import Testing

/// The simulator runs schedules with costs in seconds and links between the
/// stages; with unit costs and instant links it agrees with the unit clock.
@Suite struct ScheduleSimulationTests {
  static let unit = StageCosts(forward: 1, inputGradient: 1, weightGradient: 1)

  /// Every backward split: the simulation is the unit clock's.
  @Test func zeroBubbleWithUnitCostsTakesTheUnitClocksTicks() throws {
    for (stages, microBatches) in ScheduleTests.shapes {
      let schedule = PipelineSchedule(kind: .zeroBubbleH1, stages: stages, microBatches: microBatches)
      let step = try schedule.simulate(
        costs: Array(repeating: Self.unit, count: stages), link: .instant,
        activationBytes: Array(repeating: 1 << 20, count: stages))
      let (ticks, idle) = try schedule.bubble()
      #expect(step.seconds == Double(ticks), "K=\(stages) M=\(microBatches)")
      #expect(abs(step.efficiency - (1 - idle)) < 1e-12, "K=\(stages) M=\(microBatches)")
    }
  }

  /// An unsplit backward hands its input gradient on halfway: a step takes
  /// 3M + 2(K − 1) units, not the unit clock's 3(M + K − 1) (docs/benchmarks.md,
  /// bench/pipeline).
  @Test(arguments: [ScheduleKind.gpipe, .oneFOneB])
  func aBackwardHandsItsInputGradientOnFirst(kind: ScheduleKind) throws {
    for (stages, microBatches) in ScheduleTests.shapes {
      let schedule = PipelineSchedule(kind: kind, stages: stages, microBatches: microBatches)
      let step = try schedule.simulate(
        costs: Array(repeating: Self.unit, count: stages), link: .instant,
        activationBytes: Array(repeating: 0, count: stages))
      #expect(step.seconds == Double(3 * microBatches + 2 * (stages - 1)), "\(kind) K=\(stages) M=\(microBatches)")
      #expect(step.seconds <= Double(try schedule.bubble().ticks))
    }
  }

  @Test func gpipesBubbleIsTheFillAndDrain() throws {
    // Equal forward and backward on every stage: M / (M + K − 1) of the time is compute.
    let step = try PipelineSchedule(kind: .gpipe, stages: 4, microBatches: 8).simulate(
      costs: Array(repeating: StageCosts(forward: 2, inputGradient: 4, weightGradient: 0), count: 4),
      link: .instant, activationBytes: [0, 0, 0])
    #expect(step.seconds == 11 * 2 + 11 * 4)
    #expect(abs(step.efficiency - 8.0 / 11.0) < 1e-12)
  }

  @Test func transfersWaitOnTheLinkAndItsLatency() throws {
    // One micro-batch over two stages: F0, send, F1, B1, send back, B0, then the commits.
    let costs = [
      StageCosts(forward: 1, backward: 2, commit: 0.25), StageCosts(forward: 1, backward: 2, commit: 0.5),
    ]
    let link = LinkModel(latency: 0.5, bytesPerSecond: 1000)
    let step = try PipelineSchedule(kind: .gpipe, stages: 2, microBatches: 1).simulate(
      costs: costs, link: link, activationBytes: [1000])
    // 1 + (1 + 0.5) + 1, stage 1's input gradient 1, (1 + 0.5) back, 2, and stage 0's commit.
    #expect(step.seconds == 8 + 0.25)
    #expect(step.spans[.forward(1, 0)] == 2.5...3.5)
    #expect(step.spans[.backward(1, 0)] == 3.5...5.5)
    #expect(step.spans[.backward(0, 0)] == 6...8)
    // Two micro-batches sent back to back share the link: the second waits for the first.
    let two = try PipelineSchedule(kind: .gpipe, stages: 2, microBatches: 2).simulate(
      costs: [StageCosts(forward: 0.1, backward: 0.2), StageCosts(forward: 0.1, backward: 0.2)], link: link,
      activationBytes: [1000])
    #expect(abs(try #require(two.spans[.forward(1, 0)]).lowerBound - 1.6) < 1e-12)
    #expect(abs(try #require(two.spans[.forward(1, 1)]).lowerBound - 2.6) < 1e-12)
  }

  @Test func zeroBubbleBeatsOneFOneBWhereTheBubbleMatters() throws {
    let costs = Array(repeating: Self.unit, count: 4)
    func seconds(_ kind: ScheduleKind) throws -> Double {
      try PipelineSchedule(kind: kind, stages: 4, microBatches: 8).simulate(
        costs: costs, link: .gigabits(10, latency: 0.01), activationBytes: [1 << 20, 1 << 20, 1 << 20]
      ).seconds
    }
    #expect(try seconds(.zeroBubbleH1) < seconds(.oneFOneB))
  }

  @Test func theSlowestStageSetsTheSteadyState() throws {
    // Many micro-batches: the step tends to M × the slowest stage's forward and backward.
    let costs = [StageCosts(forward: 1, backward: 2), StageCosts(forward: 2, backward: 4)]
    let step = try PipelineSchedule(kind: .oneFOneB, stages: 2, microBatches: 64).simulate(
      costs: costs, link: .instant, activationBytes: [0])
    #expect(step.seconds >= 64 * 6 && step.seconds <= 64 * 6 + 1 + 2, "\(step.seconds)")
  }
}
