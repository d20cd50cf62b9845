import Foundation
import MeshRPC

/// A test PKI made with openssl: a CA, a server certificate for localhost and
/// 127.0.0.1, a client certificate, and a client certificate from another CA.
public struct TestCertificates: Sendable {
  public let directory: String

  /// Makes the certificates in `directory`.
  public static func make(in directory: String) async throws -> TestCertificates {
    let certificates = TestCertificates(directory: directory)
    try await certificates.generate()
    return certificates
  }

  private init(directory: String) { self.directory = directory }

  private func generate() async throws {
    let openssl = "/usr/bin/openssl"
    func file(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }
    func makeCA(_ name: String) async throws {
      try await run(
        openssl,
        [
          "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
          "/CN=\(name)",
          "-keyout", file("\(name).key"), "-out", file("\(name).crt"),
        ])
    }
    func issue(_ name: String, by ca: String, extensions: String) async throws {
      try await run(
        openssl,
        [
          "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=\(name)",
          "-keyout", file("\(name).key"), "-out", file("\(name).csr"),
        ])
      try extensions.write(toFile: file("\(name).ext"), atomically: true, encoding: .utf8)
      try await run(
        openssl,
        [
          "x509", "-req", "-in", file("\(name).csr"), "-CA", file("\(ca).crt"), "-CAkey", file("\(ca).key"),
          "-CAcreateserial", "-days", "2", "-extfile", file("\(name).ext"), "-out", file("\(name).crt"),
        ])
    }
    try await makeCA("ca")
    try await makeCA("other-ca")
    try await issue(
      "server", by: "ca", extensions: "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    try await issue("client", by: "ca", extensions: "extendedKeyUsage=clientAuth\n")
    try await issue("stranger", by: "other-ca", extensions: "extendedKeyUsage=clientAuth\n")
  }

  public func path(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }

  /// The server's TLS settings; with `mutual`, clients must present a
  /// certificate from the CA.
  public func server(mutual: Bool) throws -> TLSConfiguration {
    try TLSConfiguration(
      certificateFile: path("server.crt"), keyFile: path("server.key"), caFile: mutual ? path("ca.crt") : nil,
      requireClientCertificate: mutual)
  }

  /// A client's TLS settings, presenting the certificate `identity` ("client",
  /// "stranger") when given.
  public func client(identity: String? = nil) throws -> TLSConfiguration {
    try TLSConfiguration(
      certificateFile: identity.map { path("\($0).crt") }, keyFile: identity.map { path("\($0).key") },
      caFile: path("ca.crt"))
  }
}
