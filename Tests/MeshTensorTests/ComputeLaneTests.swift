import Dispatch
import Foundation
import MeshTensor
import Testing

/// Work given to a lane runs on threads of its own, never more than its
/// width at once; more is refused, not queued.
@Suite struct ComputeLaneTests {
  struct Busy: Error {}

  @Test func workRunsOffTheCooperativeThreadsAndTheLaneRefusesPastItsWidth() async throws {
    let lane = ComputeLane(label: "pipemesh.test.lane", width: 2)
    // Two pieces that block hold the lane (on the cooperative threads, as many as this machine
    // has cores, they would stall the rest of this test); a third is refused at once.
    let release = DispatchSemaphore(value: 0)
    let started = DispatchSemaphore(value: 0)
    let held = (0..<2).map { index in
      Task {
        try await lane.run(orThrow: Busy()) {
          started.signal()
          release.wait()
          return index
        }
      }
    }
    // Waited for on a thread of its own: Dispatch's global queue shares its threads with Swift's executor.
    for _ in 0..<2 {
      await withCheckedContinuation { c in
        Thread.detachNewThread {
          started.wait()
          c.resume()
        }
      }
    }
    await #expect(throws: Busy.self) { _ = try await lane.run(orThrow: Busy()) { 0 } }
    release.signal()
    release.signal()
    #expect(try await held[0].value + held[1].value == 1)
    // Once they are done, the lane takes work again; errors from the work are the caller's.
    #expect(try await lane.run(orThrow: Busy()) { 42 } == 42)
    struct Failed: Error {}
    await #expect(throws: Failed.self) {
      _ = try await lane.run(orThrow: Busy()) { () throws -> Int in throw Failed() }
    }
  }
}
