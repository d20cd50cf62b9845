import Foundation
import MeshRPC

/// A test PKI made with openssl: a CA, a server certificate for localhost and
/// 127.0.0.1, a client certificate, and a client certificate from another CA.
public struct TestCertificates: Sendable {
  public let directory: String

  public init(in directory: String) throws {
    self.directory = directory
    let openssl = "/usr/bin/openssl"
    func file(_ name: String) -> String { (directory as NSString).appendingPathComponent(name) }
    func makeCA(_ name: String) throws {
      try run(openssl, [
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=\(name)",
        "-keyout", file("\(name).key"), "-out", file("\(name).crt"),
      ])
    }
    func issue(_ name: String, by ca: String, extensions: String) throws {
      try run(openssl, [
        "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=\(name)",
        "-keyout", file("\(name).key"), "-out", file("\(name).csr"),
      ])
      try extensions.write(toFile: file("\(name).ext"), atomically: true, encoding: .utf8)
      try run(openssl, [
        "x509", "-req", "-in", file("\(name).csr"), "-CA", file("\(ca).crt"), "-CAkey", file("\(ca).key"),
        "-CAcreateserial", "-days", "2", "-extfile", file("\(name).ext"), "-out", file("\(name).crt"),
      ])
    }
    try makeCA("ca")
    try makeCA("other-ca")
    try issue("server", by: "ca", extensions: "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    try issue("client", by: "ca", extensions: "extendedKeyUsage=clientAuth\n")
    try issue("stranger", by: "other-ca", extensions: "extendedKeyUsage=clientAuth\n")
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
