import Foundation
import MeshProto
import MeshRPC

/// Starts a server on a free loopback port with `services`, opens a client to
/// it, runs `body`, and shuts the server down whether `body` threw or not.
public func withServer<R>(
  _ services: [any RPCService], server serverTransport: TransportConfiguration = .init(),
  client clientTransport: TransportConfiguration = .init(),
  _ body: (RPCServer, RPCClient) async throws -> R
) async throws -> R {
  let server = try RPCServer(
    transport: serverTransport, services: services, reflection: MeshDescriptors.fileDescriptorSet)
  let result: Result<R, any Error>
  do {
    let client = try RPCClient(target: server.endpoint, transport: clientTransport)
    result = .success(try await body(server, client))
  } catch {
    result = .failure(error)
  }
  await server.shutdown(gracePeriod: .zero)
  return try result.get()
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
public func eventually(timeout: Duration = .seconds(30), _ condition: () -> Bool) async -> Bool {
  let deadline = ContinuousClock.now + timeout
  while !condition() {
    guard ContinuousClock.now < deadline else { return false }
    try? await Task.sleep(for: .milliseconds(10))
  }
  return true
}

/// Polls `condition` (which may call services) until it holds or `timeout`
/// passes; returns whether it held.
public func eventually(timeout: Duration = .seconds(30), _ condition: () async throws -> Bool) async rethrows -> Bool {
  let deadline = ContinuousClock.now + timeout
  while try await !condition() {
    guard ContinuousClock.now < deadline else { return false }
    try? await Task.sleep(for: .milliseconds(20))
  }
  return true
}

/// Runs seconds of CPU work (reference training) on a thread of its own, so
/// that it does not hold one of Swift's few executor threads.
public func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
  try await withCheckedThrowingContinuation { continuation in
    Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
  }
}

/// The transports a test can run a contract on: the same calls must behave
/// the same over both.
public enum TestTransport: String, CaseIterable, Sendable, CustomStringConvertible {
  /// A server on a loopback port through the C++ shim.
  case grpc
  /// An `InProcessNetwork`, no sockets.
  case inProcess

  public var description: String { rawValue }
}

/// A server of a test on one transport: a channel to it, and how to stop it.
public struct TestServer: Sendable {
  public let channel: any RPCChannel
  /// Stops taking calls and gives running ones the grace period.
  public let shutdown: @Sendable (Duration) async -> Void

  /// Serves `services` on `transport`; `observer` sees every finished call.
  public init(_ transport: TestTransport, _ services: [any RPCService], observer: (any RPCObserver)? = nil) throws {
    switch transport {
    case .grpc:
      let server = try RPCServer(
        services: services, reflection: MeshDescriptors.fileDescriptorSet, observer: observer)
      channel = try RPCClient(target: server.endpoint)
      shutdown = { await server.shutdown(gracePeriod: $0) }
    case .inProcess:
      let network = InProcessNetwork()
      let server = try network.serve(services, at: "test.in-process:1", observer: observer)
      channel = network.channel(to: server.endpoint, identity: nil)
      shutdown = { await server.shutdown(gracePeriod: $0) }
    }
  }
}

/// Serves `services` on `transport`, runs `body` with a channel to them, and
/// stops the server whether `body` threw or not.
public func withChannel<R>(
  _ transport: TestTransport, _ services: [any RPCService], observer: (any RPCObserver)? = nil,
  _ body: (any RPCChannel) async throws -> R
) async throws -> R {
  let server = try TestServer(transport, services, observer: observer)
  let result: Result<R, any Error>
  do {
    result = .success(try await body(server.channel))
  } catch {
    result = .failure(error)
  }
  await server.shutdown(.zero)
  return try result.get()
}

extension Result where Failure == any Error {
  /// The outcome of `body`, so that a test can clean up before it rethrows.
  public init(catching body: () async throws -> Success) async {
    do {
      self = .success(try await body())
    } catch {
      self = .failure(error)
    }
  }
}

/// A loopback port that refuses connections for as long as this value lives.
/// The port is bound but not listening, so a call to it fails at once, and no
/// other test's server can be given it meanwhile — unlike the port of a server
/// that was shut down, which the next server to start may reuse.
public final class RefusingPort: Sendable {
  /// `127.0.0.1:<port>`.
  public let endpoint: String
  private let descriptor: Int32

  public init() throws {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { generic in
        bind(descriptor, generic, length) == 0 && getsockname(descriptor, generic, &length) == 0
      }
    }
    guard bound else {
      let failure = POSIXError(.init(rawValue: errno) ?? .EIO)
      close(descriptor)
      throw failure
    }
    self.descriptor = descriptor
    endpoint = "127.0.0.1:\(UInt16(bigEndian: address.sin_port))"
  }

  deinit { close(descriptor) }
}
