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
        try await lane.run(orThrow: Busy()) { _ in
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
    await #expect(throws: Busy.self) { _ = try await lane.run(orThrow: Busy()) { _ in 0 } }
    release.signal()
    release.signal()
    #expect(try await held[0].value + held[1].value == 1)
    // Once they are done, the lane takes work again; errors from the work are the caller's.
    #expect(try await lane.run(orThrow: Busy()) { _ in 42 } == 42)
    struct Failed: Error {}
    await #expect(throws: Failed.self) {
      _ = try await lane.run(orThrow: Busy()) { _ throws -> Int in throw Failed() }
    }
  }

  /// Work that checks whether its caller gave up can stop when the calling
  /// task is cancelled, and the lane is free again for the next piece.
  @Test func workSeesItsCallerGiveUp() async throws {
    let lane = ComputeLane(label: "pipemesh.test.lane.cancel")
    let started = DispatchSemaphore(value: 0)
    struct GaveUp: Error {}
    let stoppable = Task {
      try await lane.run(orThrow: Busy()) { cancelled in
        started.signal()
        // Bounded, so that a check that never turns fails the test instead of hanging it.
        let deadline = ContinuousClock.now + .seconds(30)
        while !cancelled(), ContinuousClock.now < deadline { usleep(1_000) }
        if cancelled() { throw GaveUp() }
        return "ran on for 30 s after its caller gave up"
      }
    }
    await withCheckedContinuation { c in
      Thread.detachNewThread {
        started.wait()
        c.resume()
      }
    }
    stoppable.cancel()
    await #expect(throws: GaveUp.self) { try await stoppable.value }
    #expect(try await lane.run(orThrow: Busy()) { cancelled in cancelled() } == false)
  }
}
