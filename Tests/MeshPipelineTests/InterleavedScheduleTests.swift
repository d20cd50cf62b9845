import MeshPipeline
import Testing

/// Interleaved 1F1B: K devices each run v chunks of the model (virtual
/// stages), and the fill and drain shrink v times.
@Suite struct InterleavedScheduleTests {
  static let shapes: [(devices: Int, chunks: Int, microBatches: Int)] = [
    (1, 1, 1), (1, 3, 2), (2, 1, 4), (2, 2, 2), (2, 2, 4), (2, 3, 6), (4, 2, 4), (4, 2, 8), (4, 4, 16), (3, 2, 9),
  ]

  /// Each device runs every forward and backward of its own chunks once, and
  /// no device waits forever.
  @Test func everyShapeRunsToTheEnd() throws {
    for (devices, chunks, microBatches) in Self.shapes {
      let schedule = PipelineSchedule(interleavedOn: devices, chunks: chunks, microBatches: microBatches)
      #expect(schedule.stages == devices * chunks && schedule.actions.count == devices)
      for (device, list) in schedule.actions.enumerated() {
        #expect(list.allSatisfy { schedule.device(of: $0.stage) == device }, "K=\(devices) v=\(chunks)")
        #expect(list.count == 2 * chunks * microBatches)
      }
      // Megatron-LM's warm-up: 2(K − d − 1) + (v − 1)K forwards before the first backward.
      let warmUps = (0..<devices).map { 2 * (devices - $0 - 1) + (chunks - 1) * devices }
      #expect(
        schedule.peakInFlight == warmUps.map { min($0 + 1, chunks * microBatches) },
        "K=\(devices) v=\(chunks) M=\(microBatches)")
      _ = try schedule.timeline()
    }
  }

  /// On the unit clock (a chunk's forward one tick, its backward two) a step
  /// takes 3(vM + K − 1) ticks: the fill and drain of 1F1B over chunks, v
  /// times shorter than over whole stages (Megatron-LM's interleaved bubble).
  @Test func theBubbleShrinksWithTheChunks() throws {
    for (devices, chunks, microBatches) in Self.shapes {
      let schedule = PipelineSchedule(interleavedOn: devices, chunks: chunks, microBatches: microBatches)
      let (ticks, idle) = try schedule.bubble()
      #expect(ticks == 3 * (chunks * microBatches + devices - 1), "K=\(devices) v=\(chunks) M=\(microBatches)")
      let plain = try PipelineSchedule(kind: .oneFOneB, stages: devices, microBatches: microBatches).bubble()
      #expect(idle <= plain.idleFraction + 1e-12, "K=\(devices) v=\(chunks) M=\(microBatches)")
    }
  }

  /// Chunks on one device hand their tensors over in memory; between
  /// devices they cross the link.
  @Test func onlyTensorsBetweenDevicesCrossTheLink() throws {
    let slow = LinkModel(latency: 1, bytesPerSecond: 1)
    let unit = StageCosts(forward: 1, backward: 2)
    let alone = PipelineSchedule(interleavedOn: 1, chunks: 3, microBatches: 2)
    let costs = Array(repeating: unit, count: 3)
    let instant = try alone.simulate(costs: costs, link: .instant, activationBytes: [8, 8])
    #expect(try alone.simulate(costs: costs, link: slow, activationBytes: [8, 8]).seconds == instant.seconds)
    let two = PipelineSchedule(interleavedOn: 2, chunks: 2, microBatches: 2)
    let fourCosts = Array(repeating: unit, count: 4)
    let fast = try two.simulate(costs: fourCosts, link: .instant, activationBytes: [8, 8, 8])
    let linked = try two.simulate(costs: fourCosts, link: slow, activationBytes: [8, 8, 8])
    #expect(linked.seconds > fast.seconds)
    #expect(fast.busy == [12, 12], "each device computes its two chunks' forwards and backwards")
  }
}
