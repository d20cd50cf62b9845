import Foundation
import MeshOps
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import Testing

/// TLS and mutual TLS with certificates made by openssl for the test.
@Suite struct SecurityTests {
  let directory: TemporaryDirectory
  let certificates: TestCertificates
  let services: [any RPCService] = [DiagnosticsService(role: "test")]

  init() async throws {
    directory = try TemporaryDirectory(prefix: "pipemesh-pki")
    certificates = try await TestCertificates.make(in: directory.path)
  }

  func describe(_ client: RPCClient) async throws -> String {
    try await client.call(DiagnosticsMethods.describe, .init(), options: .init(timeout: .seconds(60))).role
  }

  @Test func tlsServerAcceptsClientsThatTrustItsCA() async throws {
    let server = TransportConfiguration(tls: try certificates.server(mutual: false))
    try await withServer(services, server: server, client: .init(tls: try certificates.client())) { server, client in
      #expect(try await describe(client) == "test")
      let plaintext = try RPCClient(target: server.endpoint)
      let error = await #expect(throws: RPCError.self) { _ = try await describe(plaintext) }
      #expect(error?.code == .unavailable)
      var untrusting = try certificates.client()
      untrusting.rootCertificatesPEM = try String(contentsOfFile: certificates.path("other-ca.crt"), encoding: .utf8)
      let wrongCA = try RPCClient(target: server.endpoint, transport: .init(tls: untrusting))
      let refused = await #expect(throws: RPCError.self) { _ = try await describe(wrongCA) }
      #expect(refused?.code == .unavailable)
    }
  }

  @Test func serverNameIsChecked() async throws {
    let server = TransportConfiguration(tls: try certificates.server(mutual: false))
    var client = try certificates.client()
    client.serverNameOverride = "not-this-server.example"
    try await withServer(services, server: server, client: .init(tls: client)) { _, client in
      let error = await #expect(throws: RPCError.self) { _ = try await describe(client) }
      #expect(error?.code == .unavailable)
    }
  }

  @Test func mutualTLSRequiresAClientCertificateFromTheCA() async throws {
    let server = TransportConfiguration(tls: try certificates.server(mutual: true))
    try await withServer(services, server: server, client: .init(tls: try certificates.client(identity: "client"))) {
      server, client in
      #expect(try await describe(client) == "test")
      for identity in [nil, "stranger"] {
        let refusedClient = try RPCClient(
          target: server.endpoint, transport: .init(tls: try certificates.client(identity: identity)))
        let error = await #expect(throws: RPCError.self) { _ = try await describe(refusedClient) }
        #expect(error?.code == .unavailable, "identity \(identity ?? "none") was not refused")
      }
    }
  }

  @Test func unreadableCertificateFileIsAClearError() throws {
    let error = #expect(throws: RPCError.self) {
      _ = try TLSConfiguration(certificateFile: "/nonexistent/server.crt", keyFile: "/nonexistent/server.key")
    }
    #expect(error?.code == .invalidArgument)
    #expect(error?.message.contains("/nonexistent/server.crt") == true)
  }
}
