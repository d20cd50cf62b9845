import Foundation
import MeshProto
import MeshRPC
import MeshWire
import Synchronization

/// `pipemesh.v1.Diagnostics`: echo and describe, served by every Pipemesh
/// process to check reachability, latency and bandwidth between hosts.
public struct DiagnosticsService: RPCService {
  /// The largest payload an echo may be asked to produce (under the default
  /// message limit, so a refusal never costs an allocation).
  public static let maxResponseSize: UInt64 = 128 << 20
  /// Echoes up to this size answer inline, larger ones as a task.
  static let inlinePayloadLimit = 64 << 10
  /// The longest delay or interval an echo may ask for, in milliseconds.
  public static let maxDelayMs: UInt32 = 60_000
  /// Bytes of produced payloads the echoes of this service hold at once, at
  /// most: beyond it an echo is RESOURCE_EXHAUSTED, so that many large echoes
  /// at once cannot exhaust the process's memory.
  public var maxPayloadBytesInFlight: Int { inFlight.limit }
  private let inFlight: InFlightBytes

  public let role: String
  public let version: String
  /// The services of the process, reported by Describe.
  public let services: [String]

  /// `maxPayloadBytesInFlight` bounds the payloads produced at once (256 MiB).
  /// The most bytes this process gives to a model's parameters (0: none).
  public let memoryBudgetBytes: Int

  public init(
    role: String, version: String = pipemeshVersion, services: [String] = [], memoryBudgetBytes: Int = 0,
    maxPayloadBytesInFlight: Int = 256 << 20
  ) {
    inFlight = InFlightBytes(limit: maxPayloadBytesInFlight)
    self.role = role
    self.version = version
    self.services = services
    self.memoryBudgetBytes = memoryBudgetBytes
  }

  public var serviceName: String { DiagnosticsMethods.service }

  public func register(with router: inout RPCRouter) {
    let inFlight = self.inFlight
    // Small echoes answer on the gRPC thread: they measure the transport.
    router.unary(DiagnosticsMethods.echo) { request, _ in
      try Self.check(delayMs: request.delayMs, "delay_ms")
      let echo = { @Sendable in
        var response = Pipemesh_V1_EchoResponse()
        guard request.responseSize > 0 else {
          response.payload = request.payload
          return response
        }
        let size = try Self.checked(size: request.responseSize)
        try inFlight.take(size)
        defer { inFlight.give(size) }
        response.payload = Data(count: size)
        return response
      }
      guard request.delayMs == 0, request.payload.count <= Self.inlinePayloadLimit,
        request.responseSize <= Self.inlinePayloadLimit
      else {
        return .later {
          if request.delayMs > 0 { try await Task.sleep(for: .milliseconds(request.delayMs)) }
          return try echo()
        }
      }
      return .now(try echo())
    }
    router.serverStreaming(DiagnosticsMethods.echoStream) { request, writer, _ in
      try Self.check(delayMs: request.intervalMs, "interval_ms")
      let size = try Self.checked(size: request.responseSize)
      try inFlight.take(size)
      defer { inFlight.give(size) }
      let payload = Data(count: size)
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
    response.memoryBudgetBytes = Int64(memoryBudgetBytes)
    return response
  }

  private static func checked(size: UInt64) throws -> Int {
    guard size <= maxResponseSize else {
      throw RPCError(.invalidArgument, "response_size \(size) is over the limit of \(maxResponseSize) bytes")
    }
    return Int(size)
  }

  private static func check(delayMs: UInt32, _ field: String) throws {
    guard delayMs <= maxDelayMs else {
      throw RPCError(.invalidArgument, "\(field) \(delayMs) is over the limit of \(maxDelayMs) ms")
    }
  }
}

/// Payload bytes the echoes of a process hold now.
private final class InFlightBytes: Sendable {
  let limit: Int
  private let bytes = Mutex(0)

  init(limit: Int) { self.limit = limit }

  func take(_ count: Int) throws {
    let taken = bytes.withLock { bytes in
      guard count <= limit - bytes else { return false }
      bytes += count
      return true
    }
    guard taken else {
      throw RPCError(
        .resourceExhausted, "echoes hold \(limit) bytes of payloads at once at most; ask for less or try again")
    }
  }

  func give(_ count: Int) { bytes.withLock { $0 -= count } }
}

/// This build's version.
public let pipemeshVersion = "0.1.0"
