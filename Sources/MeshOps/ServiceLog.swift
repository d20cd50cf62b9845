import CSystemd
import Foundation

/// Where a service's log lines go: the systemd journal with structured
/// fields when systemd started the service (JOURNAL_STREAM is set), stderr
/// otherwise.
public struct ServiceLog: Sendable {
  public enum Priority: Int32, Sendable {
    case error = 3
    case warning = 4
    case info = 6
    case debug = 7
  }

  /// The service's role, logged as PIPEMESH_ROLE ("ps", "partition", …).
  public let role: String
  public let toJournal: Bool

  public init(role: String, environment: [String: String] = ProcessInfo.processInfo.environment) {
    self.role = role
    toJournal = environment["JOURNAL_STREAM"] != nil
  }

  /// Logs `message` with extra journal fields (upper-case names, e.g. "PIPEMESH_JOB").
  public func log(_ message: String, priority: Priority = .info, fields: [String: String] = [:]) {
    guard toJournal else {
      FileHandle.standardError.write(Data("pipemesh \(role): \(message)\n".utf8))
      return
    }
    var entries = [
      "MESSAGE=\(message)", "PRIORITY=\(priority.rawValue)", "SYSLOG_IDENTIFIER=pipemesh", "PIPEMESH_ROLE=\(role)",
    ]
    entries += fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    // All fields in one buffer; each iovec points at its slice.
    var bytes: [UInt8] = []
    var spans: [Range<Int>] = []
    for entry in entries {
      let start = bytes.count
      bytes.append(contentsOf: entry.utf8)
      spans.append(start..<bytes.count)
    }
    bytes.withUnsafeMutableBytes { buffer in
      let vectors = spans.map { iovec(iov_base: buffer.baseAddress! + $0.lowerBound, iov_len: $0.count) }
      _ = sd_journal_sendv(vectors, Int32(vectors.count))
    }
  }
}
