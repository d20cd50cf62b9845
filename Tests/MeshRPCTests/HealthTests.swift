import Foundation
import MeshOps
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import Testing

/// The standard grpc.health.v1 service, driven from Swift.
@Suite struct HealthTests {
  func check(_ client: RPCClient, _ service: String) async throws -> Grpc_Health_V1_HealthCheckResponse.ServingStatus {
    var request = Grpc_Health_V1_HealthCheckRequest()
    request.service = service
    return try await client.call(HealthMethods.check, request).status
  }

  @Test func servingStatusChangesReachClients() async throws {
    try await withServer([DiagnosticsService(role: "test")]) { server, client in
      let whole = try await check(client, "")
      #expect(whole == .serving)
      let diagnostics = try await check(client, DiagnosticsMethods.service)
      #expect(diagnostics == .serving)

      var request = Grpc_Health_V1_HealthCheckRequest()
      request.service = DiagnosticsMethods.service
      var watch = client.stream(HealthMethods.watch, request).makeAsyncIterator()
      let first = try await watch.next()?.status
      #expect(first == .serving)

      server.setServing(false, service: DiagnosticsMethods.service)
      let second = try await watch.next()?.status
      #expect(second == .notServing)
      let checked = try await check(client, DiagnosticsMethods.service)
      #expect(checked == .notServing)

      server.setServing(true, service: DiagnosticsMethods.service)
      let third = try await watch.next()?.status
      #expect(third == .serving)
    }
  }

  @Test func unknownServiceIsNotFound() async throws {
    try await withServer([DiagnosticsService(role: "test")]) { _, client in
      let error = await #expect(throws: RPCError.self) { _ = try await check(client, "pipemesh.v1.Nope") }
      #expect(error?.code == .notFound)
    }
  }

  /// A watch of a service the server does not know says so, and follows it
  /// once the server reports it.
  @Test func aWatchOfAnUnknownServiceFollowsIt() async throws {
    try await withServer([DiagnosticsService(role: "test")]) { server, client in
      var request = Grpc_Health_V1_HealthCheckRequest()
      request.service = "pipemesh.v1.Later"
      var watch = client.stream(HealthMethods.watch, request).makeAsyncIterator()
      let first = try await watch.next()?.status
      #expect(first == .serviceUnknown)
      server.setServing(true, service: "pipemesh.v1.Later")
      let second = try await watch.next()?.status
      #expect(second == .serving)
    }
  }

  /// Shutting down reports NOT_SERVING to watchers and ends their streams,
  /// so that an open Watch does not hold up a graceful shutdown.
  @Test func shutdownEndsWatches() async throws {
    try await withServer([DiagnosticsService(role: "test")]) { server, client in
      var request = Grpc_Health_V1_HealthCheckRequest()
      request.service = DiagnosticsMethods.service
      var watch = client.stream(HealthMethods.watch, request).makeAsyncIterator()
      let first = try await watch.next()?.status
      #expect(first == .serving)
      let shutdown = Task { await server.shutdown(gracePeriod: .seconds(60)) }
      let last = try await watch.next()?.status
      #expect(last == .notServing)
      let error = await #expect(throws: RPCError.self) { _ = try await watch.next() }
      #expect(error?.code == .unavailable)
      await shutdown.value
    }
  }
}
