import Foundation
import MeshPSClient
import MeshProto
import MeshRPC
import MeshWire
import Testing

/// A ps task that never answers DropJob: stopped, or stuck on its disk.
private final class HangingParameterServer: RPCService, Sendable {
  var serviceName: String { ParameterServerMethods.service }

  func register(with router: inout RPCRouter) {
    router.unary(ParameterServerMethods.dropJob) { _, _ in
      try await Task.sleep(for: .seconds(600))
      return .init()
    }
  }
}

@Suite struct DropTests {
  @Test(.timeLimit(.minutes(1))) func aTaskThatDoesNotAnswerFailsTheDropNamingItself() async throws {
    let network = InProcessNetwork()
    try network.serve([HangingParameterServer()], at: "ps-hanging:1")
    let client = try ParameterServerClient(endpoints: ["ps-hanging:1"], dialer: network)
    let error = await #expect(throws: RPCError.self) {
      _ = try await client.drop(job: "stuck", timeout: .milliseconds(200))
    }
    #expect(error?.code == .deadlineExceeded, "\(String(describing: error))")
    #expect(error?.message.contains("ps-hanging:1") == true && error?.message.contains("stuck") == true)
  }
}
