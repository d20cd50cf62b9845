import CGRPCShim

/// Per-call settings.
public struct CallOptions: Sendable {
  /// How long the call may take; none when nil.
  public var timeout: Duration?
  /// Headers sent with the request.
  public var metadata: Metadata
  /// While the channel is connecting, or backing off after its server went
  /// away (a restarted service), wait for it up to `timeout` instead of
  /// failing at once with UNAVAILABLE (gRPC's wait-for-ready). For calls
  /// that may wait: give a timeout.
  public var waitForReady: Bool

  public init(timeout: Duration? = nil, metadata: Metadata = Metadata(), waitForReady: Bool = false) {
    self.timeout = timeout
    self.metadata = metadata
    self.waitForReady = waitForReady
  }

  /// Runs `body` with the C form of these options, valid only inside it.
  func withCOptions<R>(_ body: (UnsafePointer<pm_call_options>) -> R) -> R {
    // Keys and values laid out in one buffer; entries point into it.
    var storage: [CChar] = []
    var spans: [(key: Range<Int>, value: Range<Int>)] = []
    for (key, value) in metadata {
      let keyStart = storage.count
      storage.append(contentsOf: key.utf8CString.dropLast())
      let valueStart = storage.count
      storage.append(contentsOf: value.utf8CString.dropLast())
      spans.append((keyStart..<valueStart, valueStart..<storage.count))
    }
    return storage.withUnsafeBufferPointer { buffer in
      let entries = spans.map { span in
        pm_metadata_entry(
          key: buffer.baseAddress.map { $0 + span.key.lowerBound }, key_length: span.key.count,
          value: buffer.baseAddress.map { $0 + span.value.lowerBound }, value_length: span.value.count)
      }
      return entries.withUnsafeBufferPointer { entries in
        var options = pm_call_options(
          timeout_ms: timeout.map { max(1, $0.milliseconds) } ?? 0,
          metadata: entries.baseAddress, metadata_count: entries.count, wait_for_ready: waitForReady ? 1 : 0)
        return body(&options)
      }
    }
  }
}
