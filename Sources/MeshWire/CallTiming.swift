import Foundation
import MeshProto

/// The clock call timings are told in.
public enum WallClock {
  /// Nanoseconds since the Unix epoch, now.
  public static var nanos: Int64 {
    var time = timespec()
    clock_gettime(CLOCK_REALTIME, &time)
    return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
  }

  /// Seconds from one reading to a later one; 0 for a span that makes no
  /// sense (negative, as after the clock was set back, or over a year).
  public static func seconds(from start: Int64, to end: Int64) -> Double {
    let seconds = (Double(end) - Double(start)) / 1e9
    return seconds >= 0 && seconds < 365 * 86_400 ? seconds : 0
  }
}

extension Pipemesh_V1_CallTiming {
  /// Seconds the call computed; 0 for times that make no sense (a
  /// partition's answer is read, not trusted).
  public var computeSeconds: Double { WallClock.seconds(from: computeStartedUnixNanos, to: computeEndedUnixNanos) }

  /// These timings with every time outside 0 ..< 2^62 ns (before 1970, or
  /// after 2116) taken as not given: differences of the rest cannot overflow.
  public var sanitized: Self {
    func kept(_ nanos: Int64) -> Int64 { (0..<(1 << 62)).contains(nanos) ? nanos : 0 }
    var timing = Self()
    timing.receivedUnixNanos = kept(receivedUnixNanos)
    timing.answeredUnixNanos = kept(answeredUnixNanos)
    timing.inputRequestedUnixNanos = kept(inputRequestedUnixNanos)
    timing.inputReceivedUnixNanos = kept(inputReceivedUnixNanos)
    timing.computeStartedUnixNanos = kept(computeStartedUnixNanos)
    timing.computeEndedUnixNanos = kept(computeEndedUnixNanos)
    timing.outputOfferedUnixNanos = kept(outputOfferedUnixNanos)
    return timing
  }
}

/// A partition's answer that says when the partition did the call's work.
public protocol TimedResponse: Sendable {
  var timing: Pipemesh_V1_CallTiming { get set }
}

extension Pipemesh_V1_ForwardResponse: TimedResponse {}
extension Pipemesh_V1_BackwardResponse: TimedResponse {}
extension Pipemesh_V1_BackwardWeightsResponse: TimedResponse {}
extension Pipemesh_V1_CommitResponse: TimedResponse {}
