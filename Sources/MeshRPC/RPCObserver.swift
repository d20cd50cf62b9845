/// Sees every call a server finishes: for metrics and logs. Called on the
/// thread that finished the call; keep it cheap.
public protocol RPCObserver: Sendable {
  /// `code` is nil for OK. Bytes are message payloads (for a stream, all of them).
  func callFinished(path: String, code: RPCError.Code?, duration: Duration, requestBytes: Int, responseBytes: Int)
}
