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

/// Runs seconds of CPU work (reference training) on a thread of its own, so
/// that it does not hold one of Swift's few executor threads.
public func onOwnThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
  try await withCheckedThrowingContinuation { continuation in
    Thread.detachNewThread { continuation.resume(with: Result { try work() }) }
  }
}
