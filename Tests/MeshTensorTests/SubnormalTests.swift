import Foundation
import Synchronization
import Testing

@testable import MeshTensor

/// Each test runs on threads of its own: the setting is a thread's, and a
/// thread of the test runner's pool would carry it into other tests.
@Suite struct SubnormalTests {
  /// Adam's second moment of a 1e-20 gradient, (1 − β2)·g² = 1e-43, and what
  /// the thread that computed it reports of its setting.
  struct Observed: Sendable {
    var secondMoments: [Float]
    var flushedToZero: Bool
  }

  static func adamStep() -> Observed {
    var variable = Tensor.filled([8], with: 0.5)
    var slots: [String: Tensor] = [:]
    Adam(learningRate: .constant(0.01)).update(
      variable: &variable, gradient: .filled([8], with: 1e-20), slots: &slots, step: 1)
    return Observed(secondMoments: slots["v"]?.scalars ?? [], flushedToZero: Subnormals.flushedToZero)
  }

  /// Runs `body` on a new thread and returns what it returns.
  static func onANewThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
      Thread { continuation.resume(returning: body()) }.start()
    }
  }

  @Test func aThreadThatFlushesComputesZeroForASubnormal() async {
    let plain = await Self.onANewThread { Self.adamStep() }
    #expect(!plain.flushedToZero)
    #expect(plain.secondMoments.allSatisfy { $0 != 0 && $0.isSubnormal }, "\(plain.secondMoments)")

    let flushed = await Self.onANewThread {
      Subnormals.flushToZero()
      return Self.adamStep()
    }
    #expect(flushed.flushedToZero)
    #expect(flushed.secondMoments == [Float](repeating: 0, count: 8))
  }

  /// Threads started after the call (the runtime's, gRPC's) flush too.
  @Test func threadsStartedLaterFlushToo() async {
    let child = await Self.onANewThread {
      Subnormals.flushToZero()
      let semaphore = DispatchSemaphore(value: 0)
      let observed = Mutex<Observed?>(nil)
      Thread {
        observed.withLock { $0 = Self.adamStep() }
        semaphore.signal()
      }.start()
      semaphore.wait()
      return observed.withLock { $0 }
    }
    #expect(child?.flushedToZero == true)
    #expect(child?.secondMoments == [Float](repeating: 0, count: 8))
  }
}
