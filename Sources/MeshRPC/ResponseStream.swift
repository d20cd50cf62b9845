import CGRPCShim
import Foundation
import SwiftProtobuf
import Synchronization

/// The responses of a server-streaming call, as an async sequence that ends
/// with the stream or throws its error status.
public struct ResponseStream<Response: Message>: AsyncSequence, Sendable {
  let channel: ChannelHandle
  let path: String
  /// Serializes the request when the call starts.
  let request: @Sendable () throws -> OutgoingBytes
  let options: CallOptions

  public func makeAsyncIterator() -> Iterator { Iterator(stream: self) }

  public struct Iterator: AsyncIteratorProtocol {
    private let stream: ResponseStream
    private var call: StreamCall?

    init(stream: ResponseStream) { self.stream = stream }

    public mutating func next() async throws -> Response? {
      if call == nil { call = try StreamCall(stream) }
      guard let bytes = try await call!.next() else { return nil }
      return try Response(wireBytes: bytes)
    }
  }
}

/// A started stream, owned by its iterator: dropping it cancels the call.
final class StreamCall: Sendable {
  private let receiver = StreamReceiver()
  private let pointer: PointerBox

  init<Response>(_ stream: ResponseStream<Response>) throws {
    let bytes = try stream.request()
    // The shim holds a reference to the receiver until the stream ends.
    let context = Unmanaged.passRetained(receiver).toOpaque()
    let pointer = stream.options.withCOptions { options in
      pm_client_server_stream(
        stream.channel.pointer, stream.path, bytes.handOver(), options,
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
