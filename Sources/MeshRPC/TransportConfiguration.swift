import CGRPCShim
import Foundation

/// TLS material in PEM form, for servers and clients.
public struct TLSConfiguration: Sendable, Hashable {
  /// The certificate chain this side presents (a server always; a client for mTLS).
  public var certificateChainPEM: String?
  public var privateKeyPEM: String?
  /// The CA the peer's certificate must chain to.
  public var rootCertificatesPEM: String?
  /// Server: refuse clients without a valid certificate (mTLS).
  public var requireClientCertificate: Bool
  /// Client: the name to check in the server certificate instead of the target host.
  public var serverNameOverride: String?

  public init(
    certificateChainPEM: String? = nil, privateKeyPEM: String? = nil,
    rootCertificatesPEM: String? = nil, requireClientCertificate: Bool = false,
    serverNameOverride: String? = nil
  ) {
    self.certificateChainPEM = certificateChainPEM
    self.privateKeyPEM = privateKeyPEM
    self.rootCertificatesPEM = rootCertificatesPEM
    self.requireClientCertificate = requireClientCertificate
    self.serverNameOverride = serverNameOverride
  }

  /// Reads PEM files; a missing or unreadable file is an INVALID_ARGUMENT
  /// error naming it.
  public init(
    certificateFile: String? = nil, keyFile: String? = nil, caFile: String? = nil,
    requireClientCertificate: Bool = false, serverNameOverride: String? = nil
  ) throws {
    func read(_ path: String?) throws -> String? {
      guard let path else { return nil }
      do {
        return try String(contentsOfFile: path, encoding: .utf8)
      } catch {
        throw RPCError(.invalidArgument, "cannot read TLS file \(path): \(error.localizedDescription)")
      }
    }
    self.init(
      certificateChainPEM: try read(certificateFile), privateKeyPEM: try read(keyFile),
      rootCertificatesPEM: try read(caFile), requireClientCertificate: requireClientCertificate,
      serverNameOverride: serverNameOverride)
  }
}

/// Settings shared by servers and client channels.
public struct TransportConfiguration: Sendable, Hashable {
  /// Plaintext when nil.
  public var tls: TLSConfiguration?
  /// The largest message sent or received; larger ones fail with RESOURCE_EXHAUSTED.
  public var maxMessageBytes: Int
  /// Interval between keepalive pings; gRPC's default when nil.
  public var keepaliveInterval: Duration?
  /// How long to wait for a ping's answer before closing the connection.
  public var keepaliveTimeout: Duration?
  /// Longest wait between a client channel's attempts to reconnect to a
  /// server that went away (gRPC's 120 s when nil): a restarted service is
  /// found again within this.
  public var maxReconnectBackoff: Duration?

  /// 64 MiB: the mesh's own transfers are cut into parts of at most 16 MiB
  /// (variables) and 4 MiB (data-plane tensors), so this bounds only what
  /// callers send whole, such as inline datasets and inference batches.
  public static let defaultMaxMessageBytes = 64 << 20

  public init(
    tls: TLSConfiguration? = nil, maxMessageBytes: Int = defaultMaxMessageBytes,
    keepaliveInterval: Duration? = nil, keepaliveTimeout: Duration? = nil, maxReconnectBackoff: Duration? = nil
  ) {
    self.tls = tls
    self.maxMessageBytes = maxMessageBytes
    self.keepaliveInterval = keepaliveInterval
    self.keepaliveTimeout = keepaliveTimeout
    self.maxReconnectBackoff = maxReconnectBackoff
  }

  /// Runs `body` with the C form of this configuration, valid only inside it.
  func withCConfiguration<R>(_ body: (UnsafePointer<pm_transport_config>) throws -> R) rethrows -> R {
    var config = pm_transport_config(
      tls: nil, max_message_bytes: Int64(maxMessageBytes),
      keepalive_time_ms: keepaliveInterval?.milliseconds ?? 0,
      keepalive_timeout_ms: keepaliveTimeout?.milliseconds ?? 0,
      max_reconnect_backoff_ms: maxReconnectBackoff?.milliseconds ?? 0)
    guard let tls else { return try body(&config) }
    return try withOptionalCString(tls.certificateChainPEM) { chain in
      try withOptionalCString(tls.privateKeyPEM) { key in
        try withOptionalCString(tls.rootCertificatesPEM) { roots in
          try withOptionalCString(tls.serverNameOverride) { name in
            var cTLS = pm_tls_config(
              certificate_chain_pem: chain, private_key_pem: key, root_certificates_pem: roots,
              require_client_certificate: tls.requireClientCertificate ? 1 : 0,
              server_name_override: name)
            return try withUnsafePointer(to: &cTLS) { pointer in
              config.tls = pointer
              return try body(&config)
            }
          }
        }
      }
    }
  }
}

private func withOptionalCString<R>(
  _ string: String?, _ body: (UnsafePointer<CChar>?) throws -> R
) rethrows -> R {
  guard let string else { return try body(nil) }
  return try string.withCString(body)
}

extension Duration {
  /// The duration in seconds.
  public var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }

  /// Whole milliseconds, rounded down.
  var milliseconds: Int64 {
    let (seconds, attoseconds) = components
    return seconds * 1000 + attoseconds / 1_000_000_000_000_000
  }
}
