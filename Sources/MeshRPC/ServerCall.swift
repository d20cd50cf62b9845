import CGRPCShim
import Foundation
import SwiftProtobuf
import Synchronization

/// What a handler knows of the call it serves.
public struct ServerContext: Sendable {
  /// The client's request headers.
  public let metadata: Metadata
  /// The client's address, `ipv4:127.0.0.1:40312`.
  public let peer: String
  /// The common name of the client's certificate when mutual TLS verified
  /// it against the server's CA; nil when the client presented none.
  public let peerIdentity: String?
  /// When the client stops waiting; nil when it set no deadline.
  public let deadline: ContinuousClock.Instant?
  let cancel: @Sendable () -> Void

  /// Cancels the call from the server's side: the client sees CANCELLED, and
  /// the handler's task is cancelled.
  public func cancelCall() { cancel() }
}

/// Streams responses of a server-streaming call, one at a time.
public struct ResponseWriter<Response: Message>: Sendable {
  let call: any ServerCall

  /// Sends one response; returns once the transport has taken it
  /// (back-pressure). Throws CANCELLED when the client has gone.
  public func write(_ response: Response) async throws {
    guard try await call.write(response) else {
      throw RPCError(.cancelled, "the client is no longer reading the stream")
    }
  }

  /// Sends the last response and ends the stream with OK, together: the
  /// client gets both at once, a round through the transport sooner than a
  /// write and the handler's return. Whatever the handler does after it
  /// changes nothing (a later write throws CANCELLED). Throws CANCELLED when
  /// the call is over (the client has gone, or the stream already ended) or
  /// a write is still in flight, and then sends nothing.
  public func writeLast(_ response: Response) async throws {
    guard try await call.writeLast(response) else {
      throw RPCError(.cancelled, "the client is no longer reading the stream")
    }
  }
}

/// One call a server answers, whichever transport carried it: the request,
/// what the handler may know of the caller, and the ways to answer. Each
/// call is finished exactly once.
protocol ServerCall: AnyObject, Sendable {
  var request: Data { get }
  var context: ServerContext { get }
  /// Answers with `response` (unary) and ends the call.
  func finish(with response: some Message)
  /// Ends the call with an error status.
  func finish(with error: RPCError)
  /// Ends a server stream with OK.
  func finishStream()
  /// Sends one response of a stream; false when the client has gone.
  func write(_ response: some Message) async throws -> Bool
  /// Sends a stream's last response and ends the call with OK; false
  /// (nothing sent) when the call is over or a write is still in flight.
  func writeLast(_ response: some Message) async throws -> Bool
  /// The next request of a client stream after the first; nil at its end
  /// or when the call is over.
  func readRequest() async -> Data?
}

/// One call as the shim handed it over: the request bytes and the handle to
/// answer through. Releases the handle when dropped.
final class IncomingCall: ServerCall, @unchecked Sendable {
  let pointer: OpaquePointer
  let request: Data
  let path: String
  private let observer: (any RPCObserver)?
  private let started = ContinuousClock.now
  /// Bytes written so far on a server stream.
  let streamedBytes = Mutex(0)
  /// Bytes read so far on a client stream, after the first request.
  private let readBytes = Mutex(0)

  init(pointer: OpaquePointer, request: pm_received_bytes, path: String, observer: (any RPCObserver)?) {
    self.pointer = pointer
    self.request = request.takeData()
    self.path = path
    self.observer = observer
  }

  /// Whether the call's end was reported (once, whichever finish came first).
  private let reported = Mutex(false)

  private func report(_ code: RPCError.Code?, responseBytes: Int) {
    let first = reported.withLock { reported in
      defer { reported = true }
      return !reported
    }
    guard first else { return }
    observer?.callFinished(
      path: path, code: code, duration: .now - started, requestBytes: request.count + readBytes.withLock { $0 },
      responseBytes: responseBytes)
  }

  deinit { pm_server_call_release(pointer) }

  var context: ServerContext {
    var metadata = Metadata()
    for index in 0..<pm_server_call_metadata_count(pointer) {
      let entry = pm_server_call_metadata(pointer, index)
      metadata.append(
        String(decoding: UnsafeRawBufferPointer(start: entry.value, count: entry.value_length), as: UTF8.self),
        forKey: String(decoding: UnsafeRawBufferPointer(start: entry.key, count: entry.key_length), as: UTF8.self))
    }
    let remaining = pm_server_call_remaining_ms(pointer)
    let identity = String(cString: pm_server_call_peer_identity(pointer))
    return ServerContext(
      metadata: metadata, peer: String(cString: pm_server_call_peer(pointer)),
      peerIdentity: identity.isEmpty ? nil : identity,
      deadline: remaining == .max ? nil : .now + .milliseconds(remaining),
      cancel: { [self] in pm_server_call_cancel(pointer) })
  }

  /// Cancels `task` if the call is cancelled before it finishes.
  func cancelOnCallCancellation(_ task: Task<Void, Never>) {
    let box = Unmanaged.passRetained(Box(task)).toOpaque()
    pm_server_call_on_cancel(
      pointer,
      { context, cancelled in
        let task = Unmanaged<Box<Task<Void, Never>>>.fromOpaque(context!).takeRetainedValue().value
        if cancelled != 0 { task.cancel() }
      }, box)
  }

  func finish(with response: some Message) {
    do {
      let bytes = try OutgoingBytes.serializing(response)
      report(nil, responseBytes: bytes.count)
      pm_server_call_finish(pointer, 0, nil, bytes.handOver())
    } catch {
      finish(with: RPCError(answering: error))
    }
  }

  func finishStream() {
    report(nil, responseBytes: streamedBytes.withLock { $0 })
    pm_server_call_finish(pointer, 0, nil, OutgoingBytes(repeating: 0, count: 0).handOver())
  }

  func finish(with error: RPCError) {
    report(error.code, responseBytes: streamedBytes.withLock { $0 })
    pm_server_call_finish(
      pointer, Int32(error.code.rawValue), error.message.cut(toUTF8Bytes: RPCError.maxMessageBytes),
      OutgoingBytes(repeating: 0, count: 0).handOver())
  }

  func readRequest() async -> Data? {
    let message = await withCheckedContinuation { (continuation: CheckedContinuation<Data?, Never>) in
      let box = Unmanaged.passRetained(Box(continuation)).toOpaque()
      pm_server_call_read(
        pointer,
        { context, hasMessage, message in
          Unmanaged<Box<CheckedContinuation<Data?, Never>>>.fromOpaque(context!)
            .takeRetainedValue().value.resume(returning: hasMessage != 0 ? message.takeData() : nil)
        }, box)
    }
    if let message { readBytes.withLock { $0 += message.count } }
    return message
  }

  func write(_ response: some Message) async throws -> Bool {
    let bytes = try OutgoingBytes.serializing(response)
    streamedBytes.withLock { $0 += bytes.count }
    return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
      let box = Unmanaged.passRetained(Box(continuation)).toOpaque()
      pm_server_call_write(
        pointer, bytes.handOver(),
        { context, ok in
          Unmanaged<Box<CheckedContinuation<Bool, Never>>>.fromOpaque(context!)
            .takeRetainedValue().value.resume(returning: ok != 0)
        }, box)
    }
  }

  func writeLast(_ response: some Message) async throws -> Bool {
    let bytes = try OutgoingBytes.serializing(response)
    let count = bytes.count
    guard pm_server_call_write_last(pointer, bytes.handOver()) != 0 else { return false }
    let streamed = streamedBytes.withLock {
      $0 += count
      return $0
    }
    report(nil, responseBytes: streamed)
    return true
  }
}

/// A reference box to pass Swift values through a C `void *` context.
final class Box<Value>: @unchecked Sendable {
  let value: Value
  init(_ value: Value) { self.value = value }
}
