import Foundation
import MeshProto

/// `pipemesh.v1.Diagnostics`: echo and describe, served by every Pipemesh
/// process to check reachability, latency and bandwidth between hosts.
public struct DiagnosticsService: RPCService {
  /// The largest payload an echo may be asked to produce (under the default
  /// message limit, so a refusal never costs an allocation).
  public static let maxResponseSize: UInt64 = 128 << 20
  /// Echoes up to this size answer inline, larger ones as a task.
  static let inlinePayloadLimit = 64 << 10

  public let role: String
  public let version: String
  /// The services of the process, reported by Describe.
  public let services: [String]

  public init(role: String, version: String = pipemeshVersion, services: [String] = []) {
    self.role = role
    self.version = version
    self.services = services
  }

  public var serviceName: String { DiagnosticsMethods.service }

  public func register(with router: inout RPCRouter) {
    // Small echoes answer on the gRPC thread: they measure the transport.
    router.unary(DiagnosticsMethods.echo) { request, _ in
      let echo = { @Sendable in
        var response = Pipemesh_V1_EchoResponse()
        response.payload = request.responseSize > 0 ? try Self.payload(size: request.responseSize) : request.payload
        return response
      }
      guard request.delayMs == 0, request.payload.count <= Self.inlinePayloadLimit, request.responseSize <= Self.inlinePayloadLimit else {
        return .later {
          if request.delayMs > 0 { try await Task.sleep(for: .milliseconds(request.delayMs)) }
          return try echo()
        }
      }
      return .now(try echo())
    }
    router.serverStreaming(DiagnosticsMethods.echoStream) { request, writer, _ in
      let payload = try Self.payload(size: request.responseSize)
      for sequence in 0..<request.count {
        if sequence > 0, request.intervalMs > 0 {
          try await Task.sleep(for: .milliseconds(request.intervalMs))
        }
        try Task.checkCancellation()
        var response = Pipemesh_V1_EchoResponse()
        response.payload = payload
        response.sequence = sequence
        try await writer.write(response)
      }
    }
    let description = describe()
    router.unary(DiagnosticsMethods.describe) { _, _ in .now(description) }
  }

  private func describe() -> Pipemesh_V1_DescribeResponse {
    var response = Pipemesh_V1_DescribeResponse()
    response.role = role
    response.version = version
    response.services = services + [serviceName]
    return response
  }

  private static func payload(size: UInt64) throws -> Data {
    guard size <= maxResponseSize else {
      throw RPCError(.invalidArgument, "response_size \(size) is over the limit of \(maxResponseSize) bytes")
    }
    return Data(count: Int(size))
  }
}

/// This build's version.
public let pipemeshVersion = "0.1.0"
