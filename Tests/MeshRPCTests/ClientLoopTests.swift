import Foundation
import MeshOps
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import Synchronization
import Testing

/// Tasks that prefer a client loop's executor run on the thread that
/// completes their calls, whatever resumes them.
@Suite struct ClientLoopTests {
  let diagnostics = DiagnosticsService(role: "test")

  func echoRequest(_ size: Int) -> Pipemesh_V1_EchoRequest {
    var request = Pipemesh_V1_EchoRequest()
    request.payload = Data(repeating: 0x5a, count: size)
    return request
  }

  @Test func unaryCallsResumeOnTheClientLoop() async throws {
    let loop = ClientLoopExecutor.shared
    try await withServer([diagnostics]) { _, client in
      #expect(!loop.isCurrent, "a test task runs on the client loop")
      try await withTaskExecutorPreference(loop) {
        #expect(loop.isCurrent)
        for size in [0, 64, 1 << 20] {
          let response = try await client.call(DiagnosticsMethods.echo, echoRequest(size))
          #expect(response.payload.count == size)
          #expect(loop.isCurrent, "resumed off the loop after a \(size)-byte echo")
        }
        // Resumed by a timer, from a thread of the runtime's own.
        try await Task.sleep(for: .milliseconds(5))
        #expect(loop.isCurrent, "resumed off the loop after a sleep")
      }
      let response = try await client.call(DiagnosticsMethods.echo, echoRequest(8))
      #expect(response.payload.count == 8)
      #expect(!loop.isCurrent, "a task without the preference resumed on the loop")
    }
  }

  /// A task that yields in a loop keeps posting work to the loop; answers
  /// must still be taken between its turns, or it waits forever. (It gives
  /// up after 20 s; its echo answers in well under one.)
  @Test func aTaskYieldingInALoopDoesNotStarveAnswers() async throws {
    let loop = ClientLoopExecutor.shared
    try await withServer([diagnostics]) { _, client in
      try await withTaskExecutorPreference(loop) {
        let answered = Flag()
        try await withThrowingTaskGroup(of: Void.self) { group in
          group.addTask {
            _ = try await client.call(DiagnosticsMethods.echo, echoRequest(16))
            answered.set()
          }
          let giveUp = ContinuousClock.now + .seconds(20)
          var turns = 0
          while !answered.isSet, ContinuousClock.now < giveUp {
            await Task.yield()
            turns += 1
          }
          #expect(answered.isSet, "no answer while a task on the loop yielded \(turns) times")
          try await group.waitForAll()
        }
      }
    }
  }

  @Test func streamsAndConcurrentCallsOnTheLoop() async throws {
    let loop = ClientLoopExecutor.shared
    try await withServer([diagnostics]) { _, client in
      try await withTaskExecutorPreference(loop) {
        var request = Pipemesh_V1_EchoStreamRequest()
        request.count = 10
        request.responseSize = 100
        var received = 0
        for try await response in client.stream(DiagnosticsMethods.echoStream, request) {
          #expect(response.sequence == UInt64(received))
          #expect(loop.isCurrent)
          received += 1
        }
        #expect(received == 10)

        let sizes = try await withThrowingTaskGroup(of: Int.self) { group in
          for index in 0..<200 {
            group.addTask {
              let response = try await client.call(DiagnosticsMethods.echo, echoRequest(index))
              return loop.isCurrent ? response.payload.count : -1
            }
          }
          return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(sizes.sorted() == Array(0..<200), "a call failed, or a child task ran off the loop (-1)")
      }
    }
  }
}

/// Set by one task, read by another.
private final class Flag: Sendable {
  private let state = Mutex(false)
  func set() { state.withLock { $0 = true } }
  var isSet: Bool { state.withLock { $0 } }
}
