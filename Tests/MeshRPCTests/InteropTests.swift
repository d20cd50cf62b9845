import Foundation
import MeshOps
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import Testing

/// Interop both ways with Python grpcio, stubs generated from protos/.
@Suite(.serialized) struct InteropTests {
  @Test func pythonClientCallsSwiftServer() async throws {
    let python = try await PythonInterop()
    let logs = try TemporaryDirectory()
    try await withServer([DiagnosticsService(role: "interop")]) { server, _ in
      let client = try python.start(
        script: "interop_client.py", arguments: [server.endpoint], log: logs.file("client.log"))
      let status = try await client.waitForExit()
      #expect(status == 0, "python client failed:\n\(client.log)")
      #expect(client.log.contains("INTEROP OK 16"), "\(client.log)")
    }
  }

  @Test func swiftClientCallsPythonServer() async throws {
    let python = try await PythonInterop()
    let logs = try TemporaryDirectory()
    let server = try python.start(script: "interop_server.py", arguments: [], log: logs.file("server.log"))
    let port = try await server.waitForLine(startingWith: "PORT ")
    let client = try RPCClient(target: "127.0.0.1:\(port)")

    var request = Pipemesh_V1_EchoRequest()
    request.payload = Data((0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 * 7) })
    #expect(try await client.call(DiagnosticsMethods.echo, request).payload == request.payload)

    var streamRequest = Pipemesh_V1_EchoStreamRequest()
    streamRequest.count = 5
    streamRequest.responseSize = 10
    var sequences: [UInt64] = []
    for try await response in client.stream(DiagnosticsMethods.echoStream, streamRequest) {
      sequences.append(response.sequence)
    }
    #expect(sequences == [0, 1, 2, 3, 4])

    var options = CallOptions()
    options.metadata.append("swift", forKey: "x-client")
    let description = try await client.call(DiagnosticsMethods.describe, .init(), options: options)
    #expect(description.role == "python")
    #expect(description.version == "swift", "metadata did not reach the python server")

    request.payload = Data("fail".utf8)
    let error = await #expect(throws: RPCError.self) { _ = try await client.call(DiagnosticsMethods.echo, request) }
    #expect(error?.code == .invalidArgument)
    #expect(error?.message == "payload 'fail' refused by the python server")

    request.payload = Data()
    request.delayMs = 3000
    let late = await #expect(throws: RPCError.self) {
      _ = try await client.call(DiagnosticsMethods.echo, request, options: .init(timeout: .milliseconds(200)))
    }
    #expect(late?.code == .deadlineExceeded)
  }
}
