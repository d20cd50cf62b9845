import Foundation

/// A slice of a Chrome trace's timeline (times in microseconds), as
/// Pipemesh's traces draw them.
public struct TraceEvent: CustomStringConvertible, Sendable {
  public let name: String
  public let category: String
  public let replica: Int
  public let thread: Int
  /// The stage the slice belongs to (-1 for the coordinator's own).
  public let stage: Int
  public let step: Int64
  public let start: Double
  public let end: Double
  /// A call's legs beside its compute, in µs (`request_us`, `before_compute_us`,
  /// `after_compute_us`, `answer_us`), where the slice is a call's compute.
  public let legs: [String: Double]

  public var description: String { "\(name)@stage\(stage)[\(start)–\(end)]" }
}

/// The complete ("X") events of a Chrome trace.
public func traceEvents(_ json: String) throws -> [TraceEvent] {
  let object = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
  guard let events = object?["traceEvents"] as? [[String: Any]] else {
    throw ChildProcessError("not a Chrome trace: \(json.prefix(200))")
  }
  return events.filter { $0["ph"] as? String == "X" }.map { event in
    let args = event["args"] as? [String: Any]
    func number(_ value: Any?) -> Double { (value as? NSNumber)?.doubleValue ?? -1 }
    let start = number(event["ts"])
    return TraceEvent(
      name: event["name"] as? String ?? "", category: event["cat"] as? String ?? "",
      replica: Int(number(event["pid"])), thread: Int(number(event["tid"])), stage: Int(number(args?["stage"])),
      step: Int64(number(args?["step"])), start: start, end: start + number(event["dur"]),
      legs: (args ?? [:]).filter { $0.key.hasSuffix("_us") }.mapValues(number))
  }
}
