import Foundation
import MeshProto
import MeshRPC
import Synchronization

/// A test service whose handlers report what they saw: metadata, peers,
/// cancellations.
final class ProbeService: RPCService, Sendable {
  static let name = "pipemesh.test.Probe"
  static let metadata = UnaryMethod<Pipemesh_V1_EchoRequest, Pipemesh_V1_EchoResponse>(service: name, name: "Metadata")
  static let waitForCancel = UnaryMethod<Pipemesh_V1_EchoRequest, Pipemesh_V1_EchoResponse>(service: name, name: "Wait")
  static let streamThenCancel = ServerStreamingMethod<Pipemesh_V1_EchoStreamRequest, Pipemesh_V1_EchoResponse>(
    service: name, name: "StreamThenCancel")
  static let slow = UnaryMethod<Pipemesh_V1_EchoRequest, Pipemesh_V1_EchoResponse>(service: name, name: "Slow")
  static let streamForever = ServerStreamingMethod<Pipemesh_V1_EchoStreamRequest, Pipemesh_V1_EchoResponse>(
    service: name, name: "StreamForever")
  /// Sends `count` responses numbered from 0, the last with the stream's
  /// end (`writeLast`), then fails with INTERNAL, which the client, its
  /// stream already ended with OK, must not see.
  static let endWithTheLastWrite = ServerStreamingMethod<Pipemesh_V1_EchoStreamRequest, Pipemesh_V1_EchoResponse>(
    service: name, name: "EndWithTheLastWrite")
  /// Sends a small response, then starts sending one of `responseSize`
  /// bytes from another task and, 200 ms after that write began, while it
  /// waits for the client to read, fails with INVALID_ARGUMENT.
  static let failWhileWriting = ServerStreamingMethod<Pipemesh_V1_EchoStreamRequest, Pipemesh_V1_EchoResponse>(
    service: name, name: "FailWhileWriting")
  /// Fails with INVALID_ARGUMENT and a message quoting the whole payload.
  static let refuseQuoting = UnaryMethod<Pipemesh_V1_EchoRequest, Pipemesh_V1_EchoResponse>(
    service: name, name: "RefuseQuoting")

  /// Answers the payloads of every request, joined, and their count as its
  /// sequence; refuses at once a request whose payload is "stop".
  static let collect = ClientStreamingMethod<Pipemesh_V1_EchoRequest, Pipemesh_V1_EchoResponse>(
    service: name, name: "Collect")

  /// As `collect`, waiting at most 2 seconds for each request after the
  /// first.
  static let collectPatiently = ClientStreamingMethod<Pipemesh_V1_EchoRequest, Pipemesh_V1_EchoResponse>(
    service: name, name: "CollectPatiently")

  private let events = Mutex<[String]>([])

  var seen: [String] { events.withLock { $0 } }

  var serviceName: String { Self.name }

  private func record(_ event: String) { events.withLock { $0.append(event) } }

  /// Returns once a handler recorded an event, or after `timeout`.
  func waitForAnEvent(within timeout: Duration = .seconds(60)) async throws {
    let deadline = ContinuousClock.now + timeout
    while seen.isEmpty, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
  }

  func register(with router: inout RPCRouter) {
    router.unary(Self.refuseQuoting) { request, _ in
      throw RPCError(.invalidArgument, "refused '\(String(decoding: request.payload, as: UTF8.self))'")
    }
    router.unary(Self.metadata) { request, context in
      var response = Pipemesh_V1_EchoResponse()
      let headers = context.metadata.map { "\($0.key)=\($0.value)" }.joined(separator: ";")
      let deadline = context.deadline.map { _ in "deadline" } ?? "no-deadline"
      response.payload = Data("\(headers)|\(context.peer)|\(deadline)".utf8)
      return response
    }
    router.unary(Self.waitForCancel) { [self] request, _ in
      record("started")
      do {
        try await Task.sleep(for: .seconds(60))
      } catch {
        record("cancelled")
        throw error
      }
      return Pipemesh_V1_EchoResponse()
    }
    router.unary(Self.slow) { [self] request, _ in
      record("slow started")
      try await Task.sleep(for: .milliseconds(300))
      var response = Pipemesh_V1_EchoResponse()
      response.payload = request.payload
      return response
    }
    router.clientStreaming(Self.collect) { [self] requests, _ in
      record("collect started")
      var response = Pipemesh_V1_EchoResponse()
      do {
        for try await request in requests {
          guard request.payload != Data("stop".utf8) else {
            throw RPCError(.invalidArgument, "stopped at request \(response.sequence)")
          }
          response.payload += request.payload
          response.sequence += 1
          record("collect read \(response.sequence)")
        }
      } catch is CancellationError {
        record("collect cancelled after \(response.sequence)")
        throw CancellationError()
      }
      record("collect ended after \(response.sequence)")
      return response
    }
    router.clientStreaming(Self.collectPatiently) { requests, _ in
      var response = Pipemesh_V1_EchoResponse()
      var iterator = requests.makeAsyncIterator()
      while let request = try await iterator.next(within: .seconds(2)) {
        response.payload += request.payload
        response.sequence += 1
      }
      return response
    }
    router.serverStreaming(Self.endWithTheLastWrite) { request, writer, _ in
      for sequence in 0..<request.count {
        let response = Pipemesh_V1_EchoResponse.with { $0.sequence = sequence }
        if sequence + 1 < request.count {
          try await writer.write(response)
        } else {
          try await writer.writeLast(response)
        }
      }
      throw RPCError(.internal, "after the stream's end")
    }
    router.serverStreaming(Self.streamThenCancel) { request, writer, context in
      for sequence in 0..<request.count {
        var response = Pipemesh_V1_EchoResponse()
        response.sequence = sequence
        try await writer.write(response)
      }
      context.cancelCall()
      try await Task.sleep(for: .seconds(60))
    }
    router.serverStreaming(Self.failWhileWriting) { [self] request, writer, _ in
      try await writer.write(.with { $0.sequence = 0 })
      let size = Int(request.responseSize)
      let big = Pipemesh_V1_EchoResponse.with { $0.payload = Data(count: size) }
      let writing = Mutex(false)
      Task {
        writing.withLock { $0 = true }
        let written = (try? await writer.write(big)) != nil
        record(written ? "big write sent" : "big write refused")
      }
      while !writing.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(5)) }
      try await Task.sleep(for: .milliseconds(200))
      throw RPCError(.invalidArgument, "failed while writing")
    }
    router.serverStreaming(Self.streamForever) { [self] request, writer, _ in
      var sequence: UInt64 = 0
      do {
        while true {
          var response = Pipemesh_V1_EchoResponse()
          response.sequence = sequence
          try await writer.write(response)
          sequence += 1
        }
      } catch {
        record("stream ended after \(sequence)")
        throw error
      }
    }
  }
}
