import Foundation
import MeshRPC
import Synchronization

/// Timelines of pipeline actions as Chrome trace events (open the JSON in
/// Perfetto or chrome://tracing): one row per stage, one process per replica.
public final class TraceRecorder: Sendable {
  public struct Event: Sendable {
    let name: String
    let stage: Int
    let replica: Int
    let step: Int64
    let start: Duration
    let duration: Duration
  }

  private let origin = ContinuousClock.now
  private let events = Mutex<[Event]>([])

  public init() {}

  /// Times `body` as the event `name` on `stage` of `replica`.
  func record<R>(_ name: String, stage: Int, replica: Int, step: Int64, _ body: () async throws -> R) async rethrows
    -> (R, Duration)
  {
    let start = ContinuousClock.now
    let result = try await body()
    let duration = ContinuousClock.now - start
    events.withLock {
      $0.append(
        Event(name: name, stage: stage, replica: replica, step: step, start: start - origin, duration: duration))
    }
    return (result, duration)
  }

  /// Records a call that a partition answered just now after computing for
  /// `computeSeconds`: the event is that computation, ending now (the answer's
  /// transit is not subtracted).
  func record(_ name: String, stage: Int, replica: Int, step: Int64, computeSeconds: Double) {
    let duration = Duration.seconds(computeSeconds)
    let end = ContinuousClock.now - origin
    events.withLock {
      $0.append(
        Event(name: name, stage: stage, replica: replica, step: step, start: end - duration, duration: duration))
    }
  }

  /// Drops events of steps before `step`, keeping the trace small.
  func keep(fromStep step: Int64) {
    events.withLock { $0.removeAll { $0.step < step } }
  }

  /// The events of `step` (all kept ones when nil) as Chrome trace JSON.
  public func chromeTrace(step: Int64? = nil) -> String {
    let selected = events.withLock { $0 }.filter { step == nil || $0.step == step }
    func microseconds(_ duration: Duration) -> Double { duration.seconds * 1e6 }
    var trace: [[String: Any]] = []
    for (replica, stage) in Set(selected.map { [$0.replica, $0.stage] }).map({ ($0[0], $0[1]) }).sorted(by: {
      ($0.0, $0.1) < ($1.0, $1.1)
    }) {
      trace.append(["name": "thread_name", "ph": "M", "pid": replica, "tid": stage, "args": ["name": "stage \(stage)"]])
      trace.append([
        "name": "process_name", "ph": "M", "pid": replica, "tid": stage, "args": ["name": "replica \(replica)"],
      ])
    }
    for event in selected {
      trace.append([
        "name": event.name,
        "cat": event.name == "commit" ? "commit" : event.name.contains("B") ? "backward" : "forward", "ph": "X",
        "ts": microseconds(event.start), "dur": microseconds(event.duration),
        "pid": event.replica, "tid": event.stage, "args": ["step": event.step],
      ])
    }
    let data =
      (try? JSONSerialization.data(
        withJSONObject: ["traceEvents": trace, "displayTimeUnit": "ms"], options: [.sortedKeys])) ?? Data()
    return String(decoding: data, as: UTF8.self)
  }
}
