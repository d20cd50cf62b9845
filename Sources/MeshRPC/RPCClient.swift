import CGRPCShim
import Foundation
import SwiftProtobuf
import Synchronization

/// A long-lived gRPC channel to one server, and typed calls over it.
/// Connects lazily and reconnects by itself; share one per peer.
public final class RPCClient: RPCChannel {
  /// The address dialled, `127.0.0.1:7000`.
  public let target: String
  /// Headers sent with every call (a bearer token), before each call's own.
  public let metadata: Metadata
  let channel: ChannelHandle

  public init(target: String, transport: TransportConfiguration = .init(), metadata: Metadata = Metadata()) throws {
    var error = pm_error()
    let pointer = transport.withCConfiguration { pm_channel_create(target, $0, &error) }
    guard let pointer else { throw RPCError(error) }
    self.target = target
    self.metadata = metadata
    channel = ChannelHandle(pointer)
  }

  /// Waits until the channel is connected; false when `timeout` passed first.
  public func waitForConnection(timeout: Duration) async -> Bool {
    let channel = self.channel
    return await withCheckedContinuation { continuation in
      Thread.detachNewThread {
        continuation.resume(returning: pm_channel_wait_connected(channel.pointer, timeout.milliseconds) == 1)
      }
    }
  }

  public func reconnect(timeout: Duration) async -> Bool {
    pm_channel_reset_connect_backoff(channel.pointer)
    return await waitForConnection(timeout: timeout)
  }

  /// Calls a unary method. Throws `RPCError` with the call's status;
  /// cancelling the task cancels the call.
  public func call<Request, Response>(
    _ method: UnaryMethod<Request, Response>, _ request: Request, options: CallOptions
  ) async throws -> Response {
    let response = try await unary(path: method.path, request: try OutgoingBytes.serializing(request), options: options)
    return try Response(wireBytes: response)
  }

  /// Calls a unary method with request bytes as they are, for tools and
  /// proxies that do not know the message types.
  public func call(path: String, requestBytes: Data, options: CallOptions = .init()) async throws -> Data {
    try await unary(path: path, request: OutgoingBytes(requestBytes), options: options)
  }

  private func unary(path: String, request: OutgoingBytes, options: CallOptions) async throws -> Data {
    let call = PendingCall()
    return try await withTaskCancellationHandler {
      try await withCheckedThrowingContinuation { continuation in
        let context = Unmanaged.passRetained(Box(continuation)).toOpaque()
        let pointer = withClientMetadata(options).withCOptions { cOptions in
          pm_client_unary(
            channel.pointer, path, request.handOver(), cOptions,
            { context, code, message, response in
              let continuation = Unmanaged<Box<CheckedContinuation<Data, any Error>>>.fromOpaque(context!)
                .takeRetainedValue().value
              if code == 0 {
                continuation.resume(returning: response.takeData())
              } else {
                continuation.resume(throwing: RPCError(.init(rawValue: Int(code)), String(cString: message!)))
              }
            }, context)
        }
        call.started(pointer!)
      }
    } onCancel: {
      call.cancel()
    }
  }

  /// Calls a server-streaming method. The call starts when iteration does and
  /// reads one response per iteration step (flow control); dropping the
  /// iterator early cancels it.
  public func stream<Request, Response>(
    _ method: ServerStreamingMethod<Request, Response>, _ request: Request, options: CallOptions
  ) -> ResponseStream<Response> {
    ResponseStream(
      channel: channel, path: method.path, request: { try .serializing(request) }, options: withClientMetadata(options))
  }

  /// Calls a server-streaming method with request bytes as they are.
  public func stream<Response>(
    path: String, requestBytes: Data, responseType: Response.Type, options: CallOptions = .init()
  ) -> ResponseStream<Response> {
    ResponseStream(
      channel: channel, path: path, request: { OutgoingBytes(requestBytes) }, options: withClientMetadata(options))
  }

  /// A call's options with this client's headers first.
  func withClientMetadata(_ options: CallOptions) -> CallOptions {
    guard metadata.count > 0 else { return options }
    var merged = options
    merged.metadata = metadata
    for (key, value) in options.metadata { merged.metadata.append(value, forKey: key) }
    return merged
  }
}

/// Owns a C channel.
final class ChannelHandle: @unchecked Sendable {
  let pointer: OpaquePointer
  init(_ pointer: OpaquePointer) { self.pointer = pointer }
  deinit { pm_channel_destroy(pointer) }
}

/// A started client call's handle, which a cancellation may reach before the
/// call has started.
final class PendingCall: Sendable {
  private enum State {
    case notStarted
    case started(PointerBox)
    case cancelledEarly
  }
  private let state = Mutex<State>(.notStarted)

  func started(_ pointer: OpaquePointer) {
    let call = PointerBox(pointer)
    let cancelledEarly = state.withLock { state in
      defer { state = .started(call) }
      if case .cancelledEarly = state { return true }
      return false
    }
    if cancelledEarly { pm_client_call_cancel(pointer) }
  }

  func cancel() {
    let call: PointerBox? = state.withLock { state in
      switch state {
      case .notStarted:
        state = .cancelledEarly
        return nil
      case .started(let call): return call
      case .cancelledEarly: return nil
      }
    }
    if let call { pm_client_call_cancel(call.value) }
  }

  deinit {
    if case .started(let call) = state.withLock({ $0 }) { pm_client_call_release(call.value) }
  }
}
