import Foundation
import MeshOps
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import SwiftProtobuf
import Testing

/// Random bytes sent to every registered method get INVALID_ARGUMENT, and the
/// server keeps serving.
@Suite struct GarbageInputTests {
  /// A small deterministic generator, so a failure reproduces.
  struct SplitMix64: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
      state &+= 0x9E37_79B9_7F4A_7C15
      var z = state
      z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
      z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
      return z ^ (z >> 31)
    }
  }

  /// Methods and a check of whether bytes decode as their request.
  static let methods: [(path: String, decodes: @Sendable (Data) -> Bool)] = [
    (DiagnosticsMethods.echo.path, { (try? Pipemesh_V1_EchoRequest(serializedBytes: $0)) != nil }),
    (DiagnosticsMethods.echoStream.path, { (try? Pipemesh_V1_EchoStreamRequest(serializedBytes: $0)) != nil }),
    (DiagnosticsMethods.describe.path, { (try? Pipemesh_V1_DescribeRequest(serializedBytes: $0)) != nil }),
    (HealthMethods.check.path, { (try? Grpc_Health_V1_HealthCheckRequest(serializedBytes: $0)) != nil }),
    (HealthMethods.watch.path, { (try? Grpc_Health_V1_HealthCheckRequest(serializedBytes: $0)) != nil }),
  ]
  /// Bidirectional: the interop test sends them garbage from Python.
  static let reflectionPaths = [ReflectionMethods.info.path, ReflectionMethods.alphaInfo.path]

  @Test func randomBytesAreInvalidArgument() async throws {
    try await withServer([DiagnosticsService(role: "test")]) { server, client in
      #expect(
        Set(server.methodPaths) == Set(Self.methods.map(\.path) + Self.reflectionPaths),
        "a registered method is not covered")
      var random = SplitMix64(state: 42)
      var refused = 0
      for (path, decodes) in Self.methods {
        for _ in 0..<60 {
          let count = Int.random(in: 1...256, using: &random)
          let bytes = Data((0..<count).map { _ in UInt8.random(in: 0...255, using: &random) })
          // Bytes that happen to be a valid message are not garbage; skip them.
          guard !decodes(bytes) else { continue }
          if [DiagnosticsMethods.echoStream.path, HealthMethods.watch.path].contains(path) {
            let error = await #expect(throws: RPCError.self) {
              let stream = client.stream(path: path, requestBytes: bytes, responseType: Pipemesh_V1_EchoResponse.self)
              for try await _ in stream {}
            }
            #expect(error?.code == .invalidArgument, "\(path) answered \(String(describing: error))")
          } else {
            let error = await #expect(throws: RPCError.self) {
              _ = try await client.call(path: path, requestBytes: bytes, options: .init(timeout: .seconds(60)))
            }
            #expect(error?.code == .invalidArgument, "\(path) answered \(String(describing: error))")
            #expect(error?.message.contains("not a valid") == true)
          }
          refused += 1
        }
      }
      #expect(refused > 150, "too few garbage inputs were tried: \(refused)")
      let healthy = try await client.call(DiagnosticsMethods.describe, .init())
      #expect(healthy.role == "test")
    }
  }

}
