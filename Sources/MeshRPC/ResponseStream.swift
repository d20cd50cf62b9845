import CGRPCShim
import Foundation
import SwiftProtobuf
import Synchronization

/// The responses of a server-streaming call, as an async sequence that ends
/// with the stream or throws its error status.
public struct ResponseStream<Response: Message>: AsyncSequence, Sendable {
  private let source: Source

  /// Where the serialized responses come from.
  enum Source: Sendable {
    /// A gRPC call through the shim, started on the first `next()`.
    case shim(
      channel: ChannelHandle, path: String, request: @Sendable () throws -> OutgoingBytes, options: CallOptions)
    /// A call in this process, started on the first `next()`.
    case inProcess(@Sendable () -> InProcessStreamReader)
  }

  init(
    channel: ChannelHandle, path: String, request: @escaping @Sendable () throws -> OutgoingBytes, options: CallOptions
  ) {
    source = .shim(channel: channel, path: path, request: request, options: options)
  }

  init(inProcess start: @escaping @Sendable () -> InProcessStreamReader) {
    source = .inProcess(start)
  }

  public func makeAsyncIterator() -> Iterator { Iterator(source: source) }

  public struct Iterator: AsyncIteratorProtocol {
    private let source: Source
    private var call: StreamCall?
    private var reader: InProcessStreamReader?

    init(source: Source) { self.source = source }

    public mutating func next() async throws -> Response? {
      let bytes: Data?
      switch source {
      case .shim(let channel, let path, let request, let options):
        if call == nil { call = try StreamCall(channel: channel, path: path, request: request(), options: options) }
        bytes = try await call?.next()
      case .inProcess(let start):
        if reader == nil { reader = start() }
        bytes = try await reader?.next()
      }
      return try bytes.map { try Response(wireBytes: $0) }
    }
  }
}

/// A started stream, owned by its iterator: dropping it cancels the call.
final class StreamCall: Sendable {
  private let receiver = StreamReceiver()
  private let pointer: PointerBox

  init(channel: ChannelHandle, path: String, request bytes: OutgoingBytes, options: CallOptions) throws {
    // The shim holds a reference to the receiver until the stream ends.
    let context = Unmanaged.passRetained(receiver).toOpaque()
    let pointer = options.withCOptions { options in
      pm_client_server_stream(
        channel.pointer, path, bytes.handOver(), options,
        { context, message in
          Unmanaged<StreamReceiver>.fromOpaque(context!).takeUnretainedValue()
            .deliver(.message(message.takeData()))
        },
        { context, code, message in
          let error = code == 0 ? nil : RPCError(.init(rawValue: Int(code)), String(cString: message!))
          Unmanaged<StreamReceiver>.fromOpaque(context!).takeRetainedValue().deliver(.end(error))
        }, context)
    }
    self.pointer = PointerBox(pointer!)
  }

  /// The next message, or nil at the end of a stream that ended with OK.
  func next() async throws -> Data? {
    let event = await withTaskCancellationHandler {
      await receiver.next { pm_client_call_request_next(pointer.value) }
    } onCancel: {
      pm_client_call_cancel(pointer.value)
    }
    switch event {
    case .message(let data): return data
    case .end(nil): return nil
    case .end(let error?): throw error
    }
  }

  deinit {
    pm_client_call_cancel(pointer.value)
    pm_client_call_release(pointer.value)
  }
}

/// Hands the shim's stream events to the one waiting reader.
final class StreamReceiver: Sendable {
  enum Event {
    case message(Data)
    case end(RPCError?)
  }
  private struct State {
    var waiting: CheckedContinuation<Event, Never>?
    var end: Event?
  }
  private let state = Mutex(State())

  /// Waits for the next event; `request` asks the shim for it.
  func next(request: () -> Void) async -> Event {
    await withCheckedContinuation { continuation in
      let ended: Event? = state.withLock { state in
        if state.end == nil { state.waiting = continuation }
        return state.end
      }
      if let ended { continuation.resume(returning: ended) } else { request() }
    }
  }

  func deliver(_ event: Event) {
    let continuation = state.withLock { state in
      if case .end = event { state.end = event }
      return state.waiting.take()
    }
    continuation?.resume(returning: event)
  }
}

/// A C handle that may cross tasks; the shim's calls on it are thread-safe.
struct PointerBox: @unchecked Sendable {
  let value: OpaquePointer
  init(_ value: OpaquePointer) { self.value = value }
}
