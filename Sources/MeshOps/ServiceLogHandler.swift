import CSystemd
import Foundation
import Logging

/// A swift-log handler for a Pipemesh service: to the systemd journal with
/// structured fields when systemd started the service (JOURNAL_STREAM is
/// set), else to stderr as `pipemesh <role>: <message>`.
///
/// In the journal a line carries PRIORITY (syslog levels), SYSLOG_IDENTIFIER
/// `pipemesh`, PIPEMESH_ROLE, the source location (CODE_FILE, CODE_LINE,
/// CODE_FUNC), and each metadata key as `PIPEMESH_<KEY>`, so that
/// `journalctl PIPEMESH_ROLE=ps PIPEMESH_ENDPOINT=…` selects lines. On stderr
/// only the message is written: its metadata is for the journal.
public struct ServiceLogHandler: LogHandler {
  /// The service's role, logged as PIPEMESH_ROLE ("ps", "partition", …).
  public let role: String
  /// Whether lines go to the journal.
  public let toJournal: Bool
  public var logLevel: Logger.Level = .info
  public var metadata: Logger.Metadata = [:]

  public init(role: String, environment: [String: String] = ProcessInfo.processInfo.environment) {
    self.role = role
    toJournal = environment["JOURNAL_STREAM"] != nil
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    guard toJournal else {
      FileHandle.standardError.write(Data("pipemesh \(role): \(event.message)\n".utf8))
      return
    }
    let fields = metadata.merging(event.metadata ?? [:]) { $1 }
    var entries = [
      "MESSAGE=\(event.message)", "PRIORITY=\(Self.syslogPriority(event.level))", "SYSLOG_IDENTIFIER=pipemesh",
      "PIPEMESH_ROLE=\(role)", "CODE_FILE=\(event.file)", "CODE_LINE=\(event.line)", "CODE_FUNC=\(event.function)",
    ]
    entries += fields.sorted { $0.key < $1.key }.map { "\(Self.journalField($0.key))=\($0.value)" }
    Self.send(entries)
  }

  /// The syslog priority journald files a level under.
  static func syslogPriority(_ level: Logger.Level) -> Int {
    switch level {
    case .trace, .debug: 7
    case .info: 6
    case .notice: 5
    case .warning: 4
    case .error: 3
    case .critical: 2
    }
  }

  /// A metadata key as a journal field name: `PIPEMESH_` and the key in
  /// upper case, with anything but A-Z, 0-9 and _ as _.
  static func journalField(_ key: String) -> String {
    "PIPEMESH_" + String(key.uppercased().map { $0.isASCII && ($0.isLetter || $0.isNumber) ? $0 : "_" })
  }

  /// Sends the entries as one journal record, each an iovec into one buffer.
  private static func send(_ entries: [String]) {
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
