import Foundation
import Synchronization

/// Prometheus metrics of one process, in the text exposition format.
/// Counters and histograms are updated as things happen, or read when
/// scraped from a count the service keeps; gauges are read when scraped.
/// Hand-written rather than swift-prometheus: that package has no series read at scrape time
/// (most here are) and would add swift-atomics to remove ~60 lines.
public final class MetricsRegistry: Sendable {
  private struct Series {
    let labels: [String: String]
    var value: Double = 0
    var buckets: [Double] = []
    var sum: Double = 0
    var count: Double = 0
  }
  private struct Family {
    let help: String
    let type: String
    let bounds: [Double]
    var series: [String: Series] = [:]
  }
  private let families = Mutex<[String: Family]>([:])
  private let scraped = Mutex<
    [(name: String, help: String, type: String, read: @Sendable () -> [(labels: [String: String], value: Double)])]
  >([])

  /// Latency buckets in seconds, 100 µs to 30 s.
  public static let latencyBuckets: [Double] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
  ]

  public init() {}

  /// Adds `amount` to a counter.
  public func increment(_ name: String, help: String, labels: [String: String] = [:], by amount: Double = 1) {
    update(name, help: help, type: "counter", bounds: [], labels: labels) { $0.value += amount }
  }

  /// Records one observation in a histogram.
  public func observe(
    _ name: String, help: String, labels: [String: String] = [:], value: Double, buckets: [Double] = latencyBuckets
  ) {
    update(name, help: help, type: "histogram", bounds: buckets, labels: labels) { series in
      if series.buckets.isEmpty { series.buckets = Array(repeating: 0, count: buckets.count) }
      for (index, bound) in buckets.enumerated() where value <= bound { series.buckets[index] += 1 }
      series.sum += value
      series.count += 1
    }
  }

  /// A gauge whose series `read` returns at every scrape.
  public func gauge(
    _ name: String, help: String, read: @escaping @Sendable () -> [(labels: [String: String], value: Double)]
  ) {
    scraped.withLock { $0.append((name, help, "gauge", read)) }
  }

  /// A counter whose series `read` returns at every scrape: counts the
  /// service keeps, which only grow while it runs.
  public func counter(
    _ name: String, help: String, read: @escaping @Sendable () -> [(labels: [String: String], value: Double)]
  ) {
    scraped.withLock { $0.append((name, help, "counter", read)) }
  }

  /// Drops the series of every counter and histogram whose `label` is
  /// `value` (a job that ended: its series would otherwise stay for the
  /// life of the process).
  public func forget(_ label: String, _ value: String) {
    families.withLock { families in
      for name in families.keys { families[name]!.series = families[name]!.series.filter { $1.labels[label] != value } }
    }
  }

  private func update(
    _ name: String, help: String, type: String, bounds: [Double], labels: [String: String],
    _ change: (inout Series) -> Void
  ) {
    let key = Self.render(labels)
    families.withLock { families in
      // In place: a copy of the family would copy all its series on every update.
      change(
        &families[name, default: Family(help: help, type: type, bounds: bounds)].series[
          key, default: Series(labels: labels)])
    }
  }

  /// The text exposition of every metric.
  public func exposition() -> String {
    var lines: [String] = []
    for (name, family) in families.withLock({ $0 }).sorted(by: { $0.key < $1.key }) where !family.series.isEmpty {
      lines += ["# HELP \(name) \(family.help)", "# TYPE \(name) \(family.type)"]
      for (labels, series) in family.series.sorted(by: { $0.key < $1.key }) {
        guard family.type == "histogram" else {
          lines.append("\(name)\(labels) \(Self.number(series.value))")
          continue
        }
        for (bound, count) in zip(family.bounds, series.buckets) {
          lines.append("\(name)_bucket\(Self.adding("le", Self.number(bound), to: labels)) \(Self.number(count))")
        }
        lines.append("\(name)_bucket\(Self.adding("le", "+Inf", to: labels)) \(Self.number(series.count))")
        lines.append("\(name)_sum\(labels) \(Self.number(series.sum))")
        lines.append("\(name)_count\(labels) \(Self.number(series.count))")
      }
    }
    for metric in scraped.withLock({ $0 }) {
      lines += ["# HELP \(metric.name) \(metric.help)", "# TYPE \(metric.name) \(metric.type)"]
      for (labels, value) in metric.read() {
        lines.append("\(metric.name)\(Self.render(labels)) \(Self.number(value))")
      }
    }
    return lines.joined(separator: "\n") + "\n"
  }

  private static func render(_ labels: [String: String]) -> String {
    guard !labels.isEmpty else { return "" }
    let pairs = labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\(escape($0.value))\"" }
    return "{\(pairs.joined(separator: ","))}"
  }

  private static func adding(_ key: String, _ value: String, to rendered: String) -> String {
    rendered.isEmpty ? "{\(key)=\"\(value)\"}" : String(rendered.dropLast()) + ",\(key)=\"\(value)\"}"
  }

  /// `value` with backslashes, quotes and newlines escaped (updates run on
  /// every call: a value with none of them is returned as it is).
  private static func escape(_ value: String) -> String {
    guard value.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == 10 }) else {
      return value
    }
    var escaped = ""
    for scalar in value.unicodeScalars {
      switch scalar {
      case "\\": escaped += "\\\\"
      case "\"": escaped += "\\\""
      case "\n": escaped += "\\n"
      default: escaped.unicodeScalars.append(scalar)
      }
    }
    return escaped
  }

  private static func number(_ value: Double) -> String {
    if value.isNaN { return "NaN" }
    if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
    return value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
  }
}
