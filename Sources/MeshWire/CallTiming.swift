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
}

extension Pipemesh_V1_CallTiming {
  /// Seconds the call computed.
  public var computeSeconds: Double { Double(computeEndedUnixNanos - computeStartedUnixNanos) / 1e9 }
}

/// A partition's answer that says when the partition did the call's work.
public protocol TimedResponse: Sendable {
  var timing: Pipemesh_V1_CallTiming { get set }
}

extension Pipemesh_V1_ForwardResponse: TimedResponse {}
extension Pipemesh_V1_BackwardResponse: TimedResponse {}
extension Pipemesh_V1_BackwardWeightsResponse: TimedResponse {}
extension Pipemesh_V1_CommitResponse: TimedResponse {}
