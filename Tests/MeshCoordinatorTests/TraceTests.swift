import Foundation
import MeshPipeline
import MeshProto
import MeshTestSupport
import MeshWire
import Testing

@testable import MeshCoordinator

/// The merged trace: clock offsets from what happened in order, and a
/// timeline of partitions whose clocks are far apart that still reads in
/// the order things happened.
@Suite struct TraceTests {
  typealias Exchange = ClockOffsets.Exchange

  /// An exchange with a partition whose clock is `offset` ahead, the call
  /// taking `there` and the answer `back` nanoseconds on the wire.
  static func exchange(_ partition: String, offset: Int64, at sent: Int64, there: Int64, back: Int64) -> Exchange {
    let received = sent + there + offset
    let replied = received + 1_000_000
    return Exchange(
      partition: partition, sent: sent, received: received, replied: replied, answered: replied - offset + back)
  }

  @Test func offsetsOfClocksSecondsApartAreFoundWithinTheirQuickestRoundTrips() throws {
    let truth: [String: Int64] = ["a:1": 5_000_000_000, "b:2": -3_000_000_000]
    var exchanges: [Exchange] = []
    var generator = SystemRandomNumberGenerator()
    var quickest: [String: (there: Int64, back: Int64)] = [:]
    for (index, (partition, offset)) in truth.sorted(by: { $0.key < $1.key }).enumerated() {
      for call in 0..<20 {
        let there = Int64.random(in: 50_000...400_000, using: &generator)
        let back = Int64.random(in: 50_000...400_000, using: &generator)
        exchanges.append(
          Self.exchange(partition, offset: offset, at: Int64(1000 * call + index) * 1_000_000, there: there, back: back)
        )
        quickest[partition] = (
          min(quickest[partition]?.there ?? .max, there), min(quickest[partition]?.back ?? .max, back)
        )
      }
    }
    let offsets = ClockOffsets(exchanges: exchanges, handoffs: [])
    for (partition, offset) in truth {
      // The true offset lies within [offset - quickest back, offset + quickest there]; the
      // estimate is its midpoint.
      let (there, back) = try #require(quickest[partition])
      #expect(abs(offsets[partition] - offset) <= max(there, back), "\(partition): \(offsets[partition]) vs \(offset)")
    }
  }

  /// Each exchange alone leaves a partition's offset loose when its calls
  /// take long one way; a tensor it handed on bounds it further, and the
  /// estimate then never shows the tensor arriving before it was offered.
  @Test func handoffsKeepATensorFromArrivingBeforeItWasOffered() {
    // Both clocks agree; the sender's calls came quickly and answered slowly.
    let exchanges = [
      Self.exchange("sender", offset: 0, at: 0, there: 10_000, back: 500_000),
      Self.exchange("receiver", offset: 0, at: 0, there: 10_000, back: 10_000),
    ]
    let handoff = ClockOffsets.Handoff(
      sender: "sender", receiver: "receiver", offered: 2_000_000, received: 2_020_000)
    func arrivesAfterOffer(_ offsets: ClockOffsets) -> Bool {
      handoff.received - offsets["receiver"] >= handoff.offered - offsets["sender"]
    }
    // Without the handoff, the sender's clock is taken to be 245 µs behind: the tensor seems to
    // arrive before it was offered.
    #expect(!arrivesAfterOffer(ClockOffsets(exchanges: exchanges, handoffs: [])))
    let offsets = ClockOffsets(exchanges: exchanges, handoffs: [handoff])
    #expect(arrivesAfterOffer(offsets))
    #expect(abs(offsets["sender"]) <= 20_000 && abs(offsets["receiver"]) <= 10_000, "\(offsets.offsets)")
  }

  /// Facts that contradict each other (a clock stepped between two calls)
  /// fall back to NTP's reading of the quickest exchange.
  @Test func contradictoryFactsFallBackToTheQuickestRoundTrip() {
    let exchanges = [
      Self.exchange("stepped", offset: 0, at: 0, there: 100_000, back: 100_000),
      Self.exchange("stepped", offset: 2_000_000_000, at: 10_000_000, there: 300_000, back: 300_000),
    ]
    let offsets = ClockOffsets(exchanges: exchanges, handoffs: [])
    #expect(offsets["stepped"] == 0)
    #expect(offsets["unknown"] == 0)
  }

  /// A job's stops go on a track of their own at their times: from the
  /// stop to the end of the first step after it, before the traced step.
  @Test func aJobsStopsAreOnTheirOwnTrackAtTheirTimes() async throws {
    let trace = TraceRecorder()
    // Three seconds before the step began.
    let stopped = Double(WallClock.nanos) / 1e9 - 3
    _ = try await trace.record(.forward(0, 0), stage: 0, replica: 0, step: 7, partition: "p:1") {
      var response = Pipemesh_V1_ForwardResponse()
      response.timing.receivedUnixNanos = WallClock.nanos
      response.timing.computeStartedUnixNanos = WallClock.nanos
      try await Task.sleep(for: .milliseconds(1))
      response.timing.computeEndedUnixNanos = WallClock.nanos
      response.timing.answeredUnixNanos = WallClock.nanos
      return response
    }
    let stop = Pipemesh_V1_JobFault.with {
      $0.step = 4
      $0.state = .failed
      $0.error = "partition p:2 does not answer"
      $0.unixSeconds = stopped
      $0.stepsRedone = 2
      $0.recoverySeconds = 1.5
    }
    let json = trace.chromeTrace(step: 7, faults: [stop])
    let events = try traceEvents(json)
    let stops = events.filter { $0.category == "fault" }
    try #require(stops.count == 1, "\(events)")
    #expect(stops[0].name == "failed at step 4")
    #expect(stops[0].start == 0 && abs(stops[0].end - 1.5e6) < 1, "\(stops[0])")
    let forward = try #require(events.first { $0.category == "forward" })
    // (Less the error of the partition's clock offset: a part of one round trip.)
    #expect(forward.start > 2.9e6, "\(forward)")
    // Its own track, not a stage's.
    #expect(stops[0].replica != forward.replica)
    #expect(json.contains("\"steps_redone\":2") && json.contains("does not answer"))
  }

  /// What the last steps shown cost: replica 0's calls of the last
  /// `stepsObserved` steps, averaged stage by stage; what a calibration of
  /// the planner is made of.
  @Test func theLastStepsShownAreObservedStageByStage() async throws {
    let trace = TraceRecorder()
    let base = WallClock.nanos
    func timing(computing milliseconds: Int64) -> Pipemesh_V1_CallTiming {
      .with {
        $0.receivedUnixNanos = base
        $0.computeStartedUnixNanos = base
        $0.computeEndedUnixNanos = base + milliseconds * 1_000_000
        $0.answeredUnixNanos = base + milliseconds * 1_000_000
      }
    }
    for step in Int64(1)...12 {
      for stage in 0..<2 {
        for replica in 0..<2 {
          // Step s's forwards take s ms (replica 1's ten times more), its backwards twice that.
          let scale = Int64(replica == 0 ? 1 : 10)
          _ = try await trace.record(.forward(stage, 0), stage: stage, replica: replica, step: step, partition: "p:1") {
            Pipemesh_V1_ForwardResponse.with { $0.timing = timing(computing: step * scale) }
          }
          _ = try await trace.record(
            .backward(stage, 0), stage: stage, replica: replica, step: step, partition: "p:1"
          ) { Pipemesh_V1_BackwardResponse.with { $0.timing = timing(computing: 2 * step * scale) } }
          _ = try await trace.record(nil, stage: stage, replica: replica, step: step, partition: "p:1") {
            Pipemesh_V1_CommitResponse.with { $0.timing = timing(computing: 1) }
          }
        }
      }
      // A flushed step (the last) is not shown, as a job does not: the step before is shown again.
      trace.show(step: step == 12 ? 11 : step)
    }
    let observed = try #require(trace.observed(stages: 2))
    // Steps 4 to 11 (the last 8 shown): forwards of 7.5 ms on average, backwards of 15.
    for costs in observed.stages {
      #expect(abs(costs.forward - 0.0075) < 1e-9 && abs(costs.inputGradient - 0.015) < 1e-9, "\(costs)")
      #expect(costs.weightGradient == 0 && abs(costs.commit - 0.001) < 1e-9, "\(costs)")
    }
    #expect(trace.observed(stages: 3) == nil)
    // Of the steps before the one shown, only replica 0's calls are kept; the shown step draws every replica.
    #expect(try traceEvents(trace.chromeTrace(step: 10)).allSatisfy { $0.replica == 0 })
    #expect(try traceEvents(trace.chromeTrace()).contains { $0.replica == 1 })
  }

  /// A partition that answers with absurd times (a bug, or a hostile
  /// member) costs the coordinator nothing: no arithmetic on them traps,
  /// they count as no computing, and the trace still draws.
  @Test func absurdTimingsAreReadNotTrusted() async throws {
    let trace = TraceRecorder()
    for (stage, (low, high)) in [(0, (Int64.min, Int64.max)), (1, (Int64.max, Int64.min))] {
      let response = try await trace.record(
        .forward(stage, 0), stage: stage, replica: 0, step: 1, partition: "p:\(stage)"
      ) {
        var response = Pipemesh_V1_ForwardResponse()
        response.timing.receivedUnixNanos = low
        response.timing.answeredUnixNanos = high
        response.timing.inputRequestedUnixNanos = low
        response.timing.inputReceivedUnixNanos = high
        response.timing.computeStartedUnixNanos = low
        response.timing.computeEndedUnixNanos = high
        response.timing.outputOfferedUnixNanos = low
        return response
      }
      #expect(response.timing.computeSeconds == 0)
    }
    let events = try traceEvents(trace.chromeTrace(step: 1))
    #expect(events.filter { $0.category == "forward" }.count == 2, "\(events)")
  }

  /// Two stages on partitions whose clocks are 2 s ahead and 1 s behind
  /// the coordinator's: the merged timeline puts each micro-batch's
  /// forward on stage 1 after its forward on stage 0 and the transfer
  /// between them, and spans the step's real length, not seconds.
  @Test func aTimelineOfSkewedClocksReadsInTheOrderThingsHappened() async throws {
    let trace = TraceRecorder()
    let skew = ["stage0:1": Int64(2_000_000_000), "stage1:2": -1_000_000_000]
    let began = WallClock.nanos
    /// A call that computes for `milliseconds` on `partition`, its input
    /// (when `fetched`) arriving first; times by that partition's clock.
    func call(
      _ action: PipelineAction?, on partition: String, fetched: Bool = false, offersOutput: Bool = false,
      milliseconds: Int = 2
    ) async throws {
      _ = try await trace.record(action, stage: action?.stage ?? 0, replica: 0, step: 1, partition: partition) {
        let clock = { WallClock.nanos + (skew[partition] ?? 0) }
        var response = Pipemesh_V1_ForwardResponse()
        try await Task.sleep(for: .microseconds(200))
        response.timing.receivedUnixNanos = clock()
        if fetched {
          response.timing.inputRequestedUnixNanos = clock()
          try await Task.sleep(for: .microseconds(300))
          response.timing.inputReceivedUnixNanos = clock()
        }
        response.timing.computeStartedUnixNanos = clock()
        try await Task.sleep(for: .milliseconds(milliseconds))
        response.timing.computeEndedUnixNanos = clock()
        if offersOutput { response.timing.outputOfferedUnixNanos = clock() }
        response.timing.answeredUnixNanos = clock()
        try await Task.sleep(for: .microseconds(200))
        return response
      }
    }
    for microBatch in 0..<2 {
      try await call(.forward(0, microBatch), on: "stage0:1", offersOutput: true)
      try await call(.forward(1, microBatch), on: "stage1:2", fetched: true)
    }
    for microBatch in 0..<2 {
      try await call(.backward(1, microBatch), on: "stage1:2", offersOutput: true)
      try await call(.backward(0, microBatch), on: "stage0:1", fetched: true)
    }
    try await call(nil, on: "stage0:1")
    let elapsed = Double(WallClock.nanos - began) / 1e3

    let events = try traceEvents(trace.chromeTrace(step: 1))
    #expect(events.filter { $0.category == "transfer" }.count == 4)
    #expect(events.allSatisfy { $0.start >= 0 && $0.end <= elapsed }, "\(events) within \(elapsed) µs")
    PipelineTrainingTests.expectCausalTimeline(events, stages: 2, microBatches: 2, job: "skewed")
    // Slices keep their lengths: 2 ms computations.
    for event in events where event.category == "forward" {
      #expect(event.end - event.start >= 2000, "\(event)")
    }
    // Each computation carries its call's legs, on one clock despite the skews of seconds (read
    // on the partitions' clocks, a request or an answer would take a negative time): none negative.
    // Transfers carry none.
    for event in events where event.category == "forward" || event.category == "backward" {
      let legs = ["request_us", "before_compute_us", "after_compute_us", "answer_us"].compactMap { event.legs[$0] }
      #expect(legs.count == 4 && legs.allSatisfy { $0 >= 0 }, "\(event) \(event.legs)")
    }
    let transfers = events.filter { $0.category == "transfer" }
    #expect(!transfers.isEmpty && transfers.allSatisfy { $0.legs.isEmpty }, "\(transfers)")
  }
}
