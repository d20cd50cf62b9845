import CGRPCShim
import Foundation
import SwiftProtobuf
import Synchronization

/// The requests of a client-streaming call as its handler reads them: the
/// first, then each one the client sends, until the client ends its stream.
/// Reading past the end, or on a call that is over, finds the end.
///
/// Over gRPC, a client that cancels or goes away may read as the stream's
/// end: the server learns that a call was cancelled only after the read
/// failed. A stream whose completeness matters says how long it is (an
/// upload declares its size) and the handler checks it.
public struct RequestStream<Request: Message>: AsyncSequence, Sendable {
  let call: any ServerCall

  public func makeAsyncIterator() -> Iterator { Iterator(call: call) }

  public struct Iterator: AsyncIteratorProtocol {
    let call: any ServerCall
    private var tookFirst = false

    init(call: any ServerCall) { self.call = call }

    /// The next request; throws INVALID_ARGUMENT for bytes that are not one,
    /// and CancellationError when the handler's task was cancelled before
    /// the read ended (see above for when a cancellation reads as the end).
    public mutating func next() async throws -> Request? {
      let bytes: Data?
      if tookFirst {
        bytes = await call.readRequest()
      } else {
        tookFirst = true
        bytes = call.request
      }
      guard let bytes else {
        try Task.checkCancellation()
        return nil
      }
      return try Request(wireBytes: bytes)
    }

    /// The next request, waiting at most `limit` for it: a client that sends
    /// nothing for that long has its call ended with DEADLINE_EXCEEDED.
    public mutating func next(within limit: Duration) async throws -> Request? {
      guard tookFirst else { return try await next() }
      let call = self.call
      let bytes = try await withThrowingTaskGroup(of: Data?.self) { group in
        group.addTask { await call.readRequest() }
        group.addTask {
          try await Task.sleep(for: limit)
          // Ending the call ends the read too, so the group can finish.
          let error = RPCError(.deadlineExceeded, "no message came for \(limit); the call was dropped")
          call.finish(with: error)
          throw error
        }
        defer { group.cancelAll() }
        return try await group.next() ?? nil
      }
      guard let bytes else {
        try Task.checkCancellation()
        return nil
      }
      return try Request(wireBytes: bytes)
    }
  }
}

/// Sends the requests of a client-streaming call, one at a time.
public struct RequestWriter<Request: Message>: Sendable {
  let send: @Sendable (Data) async -> Bool

  /// Sends one request; returns once the transport has taken it
  /// (back-pressure). Throws when the call is over: the server answered
  /// early (its answer, an error, is what the call throws) or it was
  /// cancelled.
  public func write(_ request: Request) async throws {
    guard await send(try request.serializedData()) else { throw CallAlreadyAnswered() }
  }
}

/// A write to a call that is over; the call's own outcome says why.
struct CallAlreadyAnswered: Error {}

extension RPCClient {
  /// Calls a client-streaming method: `requests` writes the requests, the
  /// stream ends when it returns, and the call answers the response. A
  /// server that answers before reading everything (an error) ends the
  /// call: the writes throw and the call throws the server's status.
  /// Cancelling the task cancels the call.
  public func clientStream<Request, Response>(
    _ method: ClientStreamingMethod<Request, Response>, options: CallOptions,
    requests: @Sendable (RequestWriter<Request>) async throws -> Void
  ) async throws -> Response {
    let answer = OneAnswer()
    let context = Unmanaged.passRetained(answer).toOpaque()
    let started = withClientMetadata(options).withCOptions { cOptions in
      pm_client_client_stream(
        channel.pointer, method.path, cOptions,
        { context, code, message, response in
          let answer = Unmanaged<OneAnswer>.fromOpaque(context!).takeRetainedValue()
          if code == 0 {
            answer.deliver(.success(response.takeData()))
          } else {
            answer.deliver(.failure(RPCError(.init(rawValue: Int(code)), String(cString: message!))))
          }
        }, context)
    }
    let call = PointerBox(started!)
    defer { pm_client_call_release(call.value) }
    let writer = RequestWriter<Request> { bytes in
      await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
        let box = Unmanaged.passRetained(Box(continuation)).toOpaque()
        pm_client_call_write(
          call.value, OutgoingBytes(bytes).handOver(),
          { context, ok in
            Unmanaged<Box<CheckedContinuation<Bool, Never>>>.fromOpaque(context!)
              .takeRetainedValue().value.resume(returning: ok != 0)
          }, box)
      }
    }
    let bytes = try await withTaskCancellationHandler {
      try await runClientStream(
        requests, writer: writer, endRequests: { pm_client_call_writes_done(call.value) },
        cancel: { pm_client_call_cancel(call.value) }, answer: answer)
    } onCancel: {
      pm_client_call_cancel(call.value)
    }
    return try Response(wireBytes: bytes)
  }
}

/// Runs a client stream's sender beside the wait for its answer: the
/// requests end when the sender returns; an answer that comes first (the
/// server refused, or needed no more) stops the sender, since nothing it
/// writes can be delivered; a sender that fails cancels the call.
func runClientStream<Request>(
  _ requests: @Sendable (RequestWriter<Request>) async throws -> Void, writer: RequestWriter<Request>,
  endRequests: @escaping @Sendable () -> Void, cancel: @escaping @Sendable () -> Void, answer: OneAnswer
) async throws -> Data {
  return try await withoutActuallyEscaping(requests) { requests in
    // A child's result: the answer, or nil when the sender is done.
    try await withThrowingTaskGroup(of: Result<Data, RPCError>?.self) { group in
      group.addTask {
        do {
          try await requests(writer)
          endRequests()
        } catch is CallAlreadyAnswered {
          // The answer says why.
        } catch {
          cancel()
          throw error
        }
        return nil
      }
      group.addTask { await answer.result() }
      defer { group.cancelAll() }
      while let event = try await group.next() {
        if let answer = event { return try answer.get() }
      }
      throw RPCError(.internal, "a client stream ended without an answer")
    }
  }
}

/// The one answer of a call, which may arrive before anyone waits for it.
final class OneAnswer: Sendable {
  private struct State {
    var answer: Result<Data, RPCError>?
    var waiting: CheckedContinuation<Result<Data, RPCError>, Never>?
  }
  private let state = Mutex(State())

  /// Keeps the first answer delivered; later ones are ignored.
  func deliver(_ answer: Result<Data, RPCError>) {
    let waiting = state.withLock { state -> CheckedContinuation<Result<Data, RPCError>, Never>? in
      guard state.answer == nil else { return nil }
      state.answer = answer
      return state.waiting.take()
    }
    waiting?.resume(returning: answer)
  }

  func result() async -> Result<Data, RPCError> {
    await withCheckedContinuation { continuation in
      let ready = state.withLock { state in
        if state.answer == nil { state.waiting = continuation }
        return state.answer
      }
      if let ready { continuation.resume(returning: ready) }
    }
  }
}
