import MeshCoordinator
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import Synchronization
import Testing

/// A ps task that answers Stats with the incarnation it is set to when the
/// call arrives, counting the calls; the first waits until released when
/// the task is made to hold it.
private final class ScriptedStats: RPCService, Sendable {
  let incarnation = Mutex<UInt64>(1)
  let calls = Mutex(0)
  private let held: AsyncStream<Void>?
  private let release: AsyncStream<Void>.Continuation?

  init(holdingTheFirstCall: Bool = false) {
    if holdingTheFirstCall {
      let (held, release) = AsyncStream<Void>.makeStream()
      (self.held, self.release) = (held, release)
    } else {
      (held, release) = (nil, nil)
    }
  }

  var serviceName: String { ParameterServerMethods.service }

  func releaseTheFirstCall() { release?.finish() }

  func register(with router: inout RPCRouter) {
    router.unary(ParameterServerMethods.stats) { [self] _, _ in
      let answer = Pipemesh_V1_StatsResponse.with { $0.incarnation = incarnation.withLock { $0 } }
      let call = calls.withLock { count -> Int in
        count += 1
        return count
      }
      if call == 1, let held {
        for await _ in held {}
      }
      return answer
    }
  }
}

/// The coordinator's view of its ps tasks: a round of Stats, and the
/// leases of tasks that keep one.
@Suite struct ParameterServerWatchTests {
  fileprivate static func watch(_ tasks: ScriptedStats...) throws -> ParameterServerWatch {
    let network = InProcessNetwork()
    let endpoints = tasks.indices.map { "ps-\($0).in-process:1" }
    for (task, endpoint) in zip(tasks, endpoints) { try network.serve([task], at: endpoint) }
    // Generous: a test may wait long for a thread while CI starts its other tests.
    return ParameterServerWatch(
      try ParameterServerClient(endpoints: endpoints, dialer: network), askInterval: .zero, askTimeout: .seconds(120))
  }

  /// A lease that outlasts any wait of a starved test: one that lapsed
  /// between two renewals would make the second news.
  static let longLease = Duration.seconds(3600)

  @Test func aLeaseThatIsNewsAsksItsTaskAtOnce() async throws {
    let (first, second) = (ScriptedStats(), ScriptedStats())
    let watch = try Self.watch(first, second)
    await watch.renew("ps-0.in-process:1", incarnation: 1, for: Self.longLease)
    // The first lease is news: its task alone was asked, with no round.
    #expect(first.calls.withLock { $0 } == 1 && second.calls.withLock { $0 } == 0)
    var status = watch.status
    #expect(status[0].joined && status[0].joinedIncarnation == 1 && status[0].stats.incarnation == 1, "\(status[0])")
    #expect(status[0].leaseSecondsLeft > 0 && !status[0].silent)
    #expect(!status[1].joined && !status[1].hasStats)
    // The same incarnation again is not news.
    await watch.renew("ps-0.in-process:1", incarnation: 1, for: Self.longLease)
    #expect(first.calls.withLock { $0 } == 1)
    // Restarted: its new incarnation is news.
    first.incarnation.withLock { $0 = 2 }
    await watch.renew("ps-0.in-process:1", incarnation: 2, for: Self.longLease)
    #expect(first.calls.withLock { $0 } == 2)
    status = watch.status
    #expect(status[0].stats.incarnation == 2 && status[0].joinedIncarnation == 2, "\(status[0])")
  }

  @Test func aLapsedLeaseIsSilentAndGoesWhenItsTaskIsBackWithoutOne() async throws {
    let task = ScriptedStats()
    let watch = try Self.watch(task)
    await watch.renew("ps-0.in-process:1", incarnation: 1, for: .milliseconds(1))
    try await Task.sleep(for: .milliseconds(20))
    var status = watch.status[0]
    #expect(status.silent && status.error.hasPrefix("its lease lapsed") && status.leaseSecondsLeft == 0, "\(status)")
    // Renewed after it lapsed (a task thawed): news, and no longer silent.
    await watch.renew("ps-0.in-process:1", incarnation: 1, for: Self.longLease)
    #expect(task.calls.withLock { $0 } == 2)
    status = watch.status[0]
    #expect(!status.silent && status.error.isEmpty && status.joined, "\(status)")
    // Lapsed again, and the task answers as another incarnation that keeps no lease: the lease goes.
    await watch.renew("ps-0.in-process:1", incarnation: 1, for: .milliseconds(1))
    try await Task.sleep(for: .milliseconds(20))
    task.incarnation.withLock { $0 = 3 }
    await watch.ask(within: .seconds(120))
    status = watch.status[0]
    #expect(!status.joined && !status.silent && status.stats.incarnation == 3, "\(status)")
  }

  /// A round held up past a later ask of one task does not undo what that
  /// ask found.
  @Test func anOlderRoundDoesNotUndoANewerAsk() async throws {
    let task = ScriptedStats(holdingTheFirstCall: true)
    let watch = try Self.watch(task)
    let round = Task { await watch.ask(within: .seconds(60)) }
    try #require(await eventually(timeout: .seconds(300)) { task.calls.withLock { $0 } == 1 })
    task.incarnation.withLock { $0 = 2 }
    await watch.renew("ps-0.in-process:1", incarnation: 2, for: Self.longLease)
    #expect(watch.status[0].stats.incarnation == 2)
    task.releaseTheFirstCall()
    await round.value
    #expect(watch.status[0].stats.incarnation == 2, "the held round's answer (incarnation 1) came last")
  }
}
