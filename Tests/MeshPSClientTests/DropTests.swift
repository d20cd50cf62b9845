import Foundation
import MeshPSClient
import MeshProto
import MeshRPC
import MeshWire
import Synchronization
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

/// A ps task that refuses DropJob at once.
private final class FailingParameterServer: RPCService, Sendable {
  var serviceName: String { ParameterServerMethods.service }

  func register(with router: inout RPCRouter) {
    router.unary(ParameterServerMethods.dropJob) { _, _ in throw RPCError(.internal, "disk full") }
  }
}

/// A ps task that drops a job after a pause, and remembers which jobs it dropped.
private final class SlowParameterServer: RPCService, Sendable {
  let dropped = Mutex<[String]>([])
  var serviceName: String { ParameterServerMethods.service }

  func register(with router: inout RPCRouter) {
    router.unary(ParameterServerMethods.dropJob) { [self] request, _ in
      try await Task.sleep(for: .milliseconds(300))
      dropped.withLock { $0.append(request.job) }
      return .with { $0.bytes = 1024 }
    }
  }
}

@Suite struct DropTests {
  /// The failing task answers first; the other task must still be asked to the end.
  @Test(.timeLimit(.minutes(1))) func aTaskThatFailsLeavesTheOthersToDropTheJob() async throws {
    let network = InProcessNetwork()
    let slow = SlowParameterServer()
    try network.serve([FailingParameterServer()], at: "ps-failing:1")
    try network.serve([slow], at: "ps-slow:1")
    let client = try ParameterServerClient(endpoints: ["ps-failing:1", "ps-slow:1"], dialer: network)
    let error = await #expect(throws: RPCError.self) { _ = try await client.drop(job: "old-run") }
    #expect(error?.code == .internal && error?.message.contains("ps-failing:1") == true, "\(String(describing: error))")
    #expect(slow.dropped.withLock { $0 } == ["old-run"])
  }

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
