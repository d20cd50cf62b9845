import Foundation
import MeshPipeline
import MeshProto
import MeshWire
import Synchronization

/// A step's pipeline timeline as the partitions lived it, as Chrome trace
/// events (open the JSON in Perfetto or chrome://tracing).
///
/// Each partition tells, by its own clock, when it received each call, when
/// its input arrived from the neighbouring stage, when it computed and when
/// it offered its output (`CallTiming`). The coordinator notes when it sent
/// each call and had the answer, by its clock, estimates each partition's
/// clock offset from these (`ClockOffsets`) and draws every stage's work on
/// one timeline: per replica, a track per stage with its computations and
/// commit, and beside it the transfers of its inputs from the neighbouring
/// stages (as many tracks as transfers overlap).
///
/// Hand-written rather than on swift-distributed-tracing: the timeline is a
/// product of the coordinator's (a job's trace, the planner's calibration,
/// the dashboard), so the partitions' times must come back to it with the
/// calls, in the job's terms; a tracer's spans go to an exporter instead,
/// and the only one in reach (swift-otel) brings a second gRPC stack and
/// minutes of build for spans the coordinator would still not see.
public final class TraceRecorder: Sendable {
  /// One call the coordinator sent and the partition answered.
  struct Call: Sendable {
    /// The pipeline action, or nil for a commit.
    let action: PipelineAction?
    let stage: Int
    let replica: Int
    let step: Int64
    let partition: String
    /// By the coordinator's clock.
    let sent: Int64
    let answered: Int64
    let timing: Pipemesh_V1_CallTiming
  }

  /// A span of the coordinator's own work, by its clock, on a track of the
  /// coordinator's (`track`): a request, a batch, a job's stop.
  struct Span: Sendable {
    let track: String
    let name: String
    let category: String
    let start: Int64
    let end: Int64
    var args: [String: any Sendable] = [:]
  }

  private let calls = Mutex<[Call]>([])
  private let spans = Mutex<[Span]>([])
  /// The step `chromeTrace()` draws.
  private let shownStep = Mutex<Int64>(0)
  /// The steps shown last, the last one last, whose calls are kept for `observed`.
  private let shownSteps = Mutex<[Int64]>([])
  /// How many of the steps shown last `observed` averages.
  static let stepsObserved = 8

  public init() {}

  /// Sends `call` to `partition` (the action `action`, or the stage's commit
  /// when nil) and notes when it went, came back, and what the partition
  /// said of its timing.
  func record<Response: TimedResponse>(
    _ action: PipelineAction?, stage: Int, replica: Int, step: Int64, partition: String,
    _ call: () async throws -> Response
  ) async rethrows -> Response {
    let sent = WallClock.nanos
    let response = try await call()
    let answered = WallClock.nanos
    calls.withLock {
      $0.append(
        Call(
          action: action, stage: stage, replica: replica, step: step, partition: partition, sent: sent,
          answered: answered, timing: response.timing.sanitized))
    }
    return response
  }

  /// How a stop is named on the trace.
  private static func describe(_ state: Pipemesh_V1_JobState) -> String {
    switch state {
    case .failed, .restarting: "failed"
    case .interrupted: "interrupted"
    case .cancelled: "cancelled"
    default: "stopped"
    }
  }

  /// Notes a span of the coordinator's own.
  func record(_ span: Span) {
    spans.withLock { $0.append(span) }
  }

  /// Makes `step` the one `chromeTrace()` draws, and drops the calls of
  /// steps before it but replica 0's of the `stepsObserved` shown last
  /// (keeping those of later ones, still running).
  func show(step: Int64) {
    shownStep.withLock { $0 = step }
    let kept = shownSteps.withLock { shown in
      if shown.last != step { shown.append(step) }
      shown.removeFirst(max(0, shown.count - Self.stepsObserved))
      return Set(shown)
    }
    // Of the steps before, only replica 0's calls are read (`observed`).
    calls.withLock { $0.removeAll { $0.step < step && ($0.replica != 0 || !kept.contains($0.step)) } }
  }

  /// The timeline of `step` (by default the one shown) as Chrome trace
  /// JSON, with the coordinator's spans (those recorded, and `more`) and
  /// the job's `faults` at their times on tracks of their own; empty when
  /// no call of the step was recorded.
  func chromeTrace(
    step: Int64? = nil, faults: [Pipemesh_V1_JobFault] = [], more: [Span] = []
  ) -> String {
    let step = step ?? shownStep.withLock { $0 }
    let selected = calls.withLock { $0 }.filter { $0.step == step }
    guard !selected.isEmpty else { return "" }
    // Each stop of the job, from when it stopped to the end of the first step after it.
    let stops = faults.map { fault in
      let stopped = Int64(fault.unixSeconds * 1e9)
      return Span(
        track: "stops and recoveries", name: "\(Self.describe(fault.state)) at step \(fault.step)",
        category: "fault", start: stopped, end: stopped + Int64(fault.recoverySeconds * 1e9),
        args: [
          "step": fault.step, "error": fault.error, "steps_redone": fault.stepsRedone,
          "recovery_seconds": fault.recoverySeconds,
        ])
    }
    let timeline = Timeline(selected, spans: spans.withLock { $0 } + more + stops)
    let data =
      (try? JSONSerialization.data(
        withJSONObject: [
          "traceEvents": timeline.events, "displayTimeUnit": "ms",
          "otherData": ["clock_offsets_us": timeline.offsets.offsets.mapValues { Double($0) / 1e3 }],
        ], options: [.sortedKeys])) ?? Data()
    return String(decoding: data, as: UTF8.self)
  }
}

/// What a job's last training steps cost as its partitions timed them, on
/// average over the steps: each stage's forward, backward (input gradients)
/// and weight gradients of a micro-batch and its commit (`StageCosts`), and
/// the time from a tensor's being offered to its arrival at the
/// neighbouring stage.
public struct ObservedStep: Sendable, Equatable {
  public let stages: [StageCosts]
  public let transfer: Double

  public init(stages: [StageCosts], transfer: Double) {
    self.stages = stages
    self.transfer = transfer
  }
}

extension TraceRecorder {
  /// What the training steps shown last cost (up to `stepsObserved` of
  /// them), from replica 0's calls: the mean of each stage's calls of each
  /// kind and of its commits, and of the transfers; nil unless every stage
  /// of `stages` ran a forward and a backward in them and committed.
  func observed(stages: Int) -> ObservedStep? {
    let steps = Set(shownSteps.withLock { $0 }.filter { $0 > 0 })
    let timelines = Dictionary(grouping: calls.withLock { $0 }.filter { steps.contains($0.step) }, by: \.step)
      .values.map { Timeline($0, spans: []) }
    func mean(_ values: [Double]) -> Double? {
      values.isEmpty ? nil : values.reduce(0, +) / Double(values.count)
    }
    var costs: [StageCosts] = []
    for stage in 0..<stages {
      func seconds(_ category: String) -> [Double] { timelines.flatMap { $0.seconds[stage]?[category] ?? [] } }
      guard let forward = mean(seconds("forward")), let backward = mean(seconds("backward")),
        let commit = mean(seconds("commit"))
      else { return nil }
      costs.append(
        StageCosts(
          forward: forward, inputGradient: backward, weightGradient: mean(seconds("weights")) ?? 0, commit: commit))
    }
    return ObservedStep(stages: costs, transfer: mean(timelines.flatMap(\.transferSeconds)) ?? 0)
  }
}

/// The calls of a step laid out on the coordinator's clock, as trace events.
private struct Timeline {
  let offsets: ClockOffsets
  private(set) var events: [[String: Any]] = []
  /// Replica 0's computations and commits by stage and category, and the
  /// transfers into its stages, in seconds.
  private(set) var seconds: [Int: [String: [Double]]] = [:]
  private(set) var transferSeconds: [Double] = []
  /// The earliest time drawn, the trace's zero.
  private let origin: Int64

  /// A track of one replica: its stage's computations (lane 0) or the
  /// transfers into it (lanes 1 and on).
  private struct Track: Hashable, Comparable {
    let replica: Int
    let stage: Int
    let lane: Int

    static func < (a: Track, b: Track) -> Bool { (a.replica, a.stage, a.lane) < (b.replica, b.stage, b.lane) }
    /// Perfetto's thread: stages in order, each one's transfer lanes after it.
    var thread: Int { stage * 100 + lane }
    var name: String { lane == 0 ? "stage \(stage)" : lane == 1 ? "stage \(stage) in" : "stage \(stage) in (\(lane))" }
  }

  private struct Slice {
    let name: String
    let category: String
    let start: Int64
    let end: Int64
    let args: [String: Any]

    var seconds: Double { Double(end - start) / 1e9 }
  }

  init(_ calls: [TraceRecorder.Call], spans: [TraceRecorder.Span]) {
    // Who offered each tensor a call fetched: the neighbour's call of the
    // same micro-batch (the previous stage's forward, the next stage's
    // backward).
    var byAction: [Key: TraceRecorder.Call] = [:]
    for call in calls { if let action = call.action { byAction[Key(call, action)] = call } }
    func producer(of call: TraceRecorder.Call) -> TraceRecorder.Call? {
      guard let action = call.action, call.timing.inputReceivedUnixNanos > 0 else { return nil }
      let neighbour: PipelineAction
      switch action.kind {
      case .forward: neighbour = .forward(action.stage - 1, action.microBatch)
      case .backward: neighbour = .backward(action.stage + 1, action.microBatch)
      case .weights: return nil
      }
      return byAction[Key(replica: call.replica, step: call.step, action: neighbour)].flatMap {
        $0.timing.outputOfferedUnixNanos > 0 ? $0 : nil
      }
    }
    offsets = ClockOffsets(
      exchanges: calls.filter { $0.timing.receivedUnixNanos > 0 && $0.timing.answeredUnixNanos > 0 }.map {
        .init(
          partition: $0.partition, sent: $0.sent, received: $0.timing.receivedUnixNanos,
          replied: $0.timing.answeredUnixNanos, answered: $0.answered)
      },
      handoffs: calls.compactMap { call in
        producer(of: call).map {
          .init(
            sender: $0.partition, receiver: call.partition, offered: $0.timing.outputOfferedUnixNanos,
            received: call.timing.inputReceivedUnixNanos)
        }
      })

    var computations: [Track: [Slice]] = [:]
    var transfers: [(replica: Int, stage: Int, slice: Slice)] = []
    for call in calls {
      let offset = offsets[call.partition]
      func local(_ time: Int64) -> Int64 { time - offset }
      let track = Track(replica: call.replica, stage: call.stage, lane: 0)
      let timing = call.timing
      var args: [String: Any] = ["step": call.step, "stage": call.stage, "partition": call.partition]
      guard let action = call.action else {
        computations[track, default: []].append(
          Slice(
            name: "commit", category: "commit", start: local(timing.receivedUnixNanos),
            end: local(timing.answeredUnixNanos), args: args))
        continue
      }
      args["micro_batch"] = action.microBatch
      var callArgs = args
      if [
        timing.receivedUnixNanos, timing.computeStartedUnixNanos, timing.computeEndedUnixNanos,
        timing.answeredUnixNanos,
      ].allSatisfy({ $0 > 0 }) {
        // Where the call's time went besides its compute, in µs: its request's way to the partition (sent
        // to handled), the partition's work before and after the compute, and its answer's way back.
        // The two ways split the round trip by the partition's estimated clock offset.
        callArgs["request_us"] = Double(local(timing.receivedUnixNanos) - call.sent) / 1e3
        callArgs["before_compute_us"] = Double(timing.computeStartedUnixNanos - timing.receivedUnixNanos) / 1e3
        callArgs["after_compute_us"] = Double(timing.answeredUnixNanos - timing.computeEndedUnixNanos) / 1e3
        callArgs["answer_us"] = Double(call.answered - local(timing.answeredUnixNanos)) / 1e3
      }
      let name = "\(action.kind.rawValue)\(action.microBatch)"
      computations[track, default: []].append(
        Slice(
          name: name, category: Self.category(action.kind), start: local(timing.computeStartedUnixNanos),
          end: local(timing.computeEndedUnixNanos), args: callArgs))
      guard timing.inputReceivedUnixNanos > 0 else { continue }
      // From when the tensor was both offered and asked for, to its arrival.
      var start = local(timing.inputRequestedUnixNanos)
      if let producer = producer(of: call) {
        start = max(start, producer.timing.outputOfferedUnixNanos - offsets[producer.partition])
        args["from"] = producer.partition
      }
      transfers.append(
        (
          call.replica, call.stage,
          Slice(
            name: action.kind == .forward ? "\(name) input" : "\(name) gradient", category: "transfer",
            start: start, end: max(start, local(timing.inputReceivedUnixNanos)), args: args)
        ))
    }
    // Transfers that overlap go on separate lanes.
    var lanes: [Track: [Slice]] = [:]
    var laneEnds: [[Int]: [Int64]] = [:]
    for (replica, stage, slice) in transfers.sorted(by: { $0.slice.start < $1.slice.start }) {
      var ends = laneEnds[[replica, stage], default: []]
      let lane = ends.firstIndex { $0 <= slice.start } ?? ends.count
      if lane == ends.count { ends.append(slice.end) } else { ends[lane] = slice.end }
      laneEnds[[replica, stage]] = ends
      lanes[Track(replica: replica, stage: stage, lane: lane + 1), default: []].append(slice)
    }
    for (track, slices) in computations where track.replica == 0 {
      for slice in slices { seconds[track.stage, default: [:]][slice.category, default: []].append(slice.seconds) }
    }
    transferSeconds = transfers.filter { $0.replica == 0 }.map(\.slice.seconds)
    let tracks = computations.merging(lanes) { $0 + $1 }
    origin = (tracks.values.joined().map(\.start) + spans.map(\.start)).min() ?? 0
    // The coordinator's tracks, below the replicas' processes.
    let coordinator = (tracks.keys.map(\.replica).max() ?? 0) + 1
    let coordinatorTracks = spans.reduce(into: [String]()) { if !$0.contains($1.track) { $0.append($1.track) } }
    if !spans.isEmpty {
      events.append(["name": "process_name", "ph": "M", "pid": coordinator, "args": ["name": "coordinator"]])
    }
    for (thread, track) in coordinatorTracks.enumerated() {
      events.append(["name": "thread_name", "ph": "M", "pid": coordinator, "tid": thread, "args": ["name": track]])
      for span in spans where span.track == track {
        events.append([
          "name": span.name, "cat": span.category, "ph": "X", "pid": coordinator, "tid": thread,
          "ts": microseconds(span.start - origin), "dur": microseconds(span.end - span.start),
          "args": span.args.mapValues { $0 as Any },
        ])
      }
    }
    for replica in Set(tracks.keys.map(\.replica)).sorted() {
      events.append(["name": "process_name", "ph": "M", "pid": replica, "args": ["name": "replica \(replica)"]])
    }
    for (track, slices) in tracks.sorted(by: { $0.key < $1.key }) {
      events.append([
        "name": "thread_name", "ph": "M", "pid": track.replica, "tid": track.thread, "args": ["name": track.name],
      ])
      events.append([
        "name": "thread_sort_index", "ph": "M", "pid": track.replica, "tid": track.thread,
        "args": ["sort_index": track.thread],
      ])
      for slice in slices.sorted(by: { $0.start < $1.start }) {
        events.append([
          "name": slice.name, "cat": slice.category, "ph": "X", "pid": track.replica, "tid": track.thread,
          "ts": microseconds(slice.start - origin), "dur": microseconds(slice.end - slice.start), "args": slice.args,
        ])
      }
    }
  }

  private struct Key: Hashable {
    let replica: Int
    let step: Int64
    let action: PipelineAction

    init(replica: Int, step: Int64, action: PipelineAction) {
      self.replica = replica
      self.step = step
      self.action = action
    }

    init(_ call: TraceRecorder.Call, _ action: PipelineAction) {
      self.init(replica: call.replica, step: call.step, action: action)
    }
  }

  private static func category(_ kind: PipelineAction.Kind) -> String {
    switch kind {
    case .forward: "forward"
    case .backward: "backward"
    case .weights: "weights"
    }
  }

  private func microseconds(_ nanoseconds: Int64) -> Double { Double(nanoseconds) / 1e3 }
}
