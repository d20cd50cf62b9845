import Foundation
import MeshPS
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// Concurrent pushers against the ps service over the in-process transport
/// (the same service and checks as a ps process; RoutingTests and
/// CheckpointTests use real processes): no update is lost, and each
/// consistency rule gives the exact expected values.
@Suite struct ConsistencyTests {
  /// Replica r pushes gradient r+1 at every step; sync applies the mean over
  /// replicas once per step: w = -lr · steps · mean(1…R).
  @Test(arguments: [1, 4]) func syncReplicasMatchSingleProcessTraining(replicas: Int32) async throws {
    let (client, ps) = try Fixtures.inProcessPS()
    let steps = 40
    try await client.register(
      job: "sync", variables: [Fixtures.variable("w", shape: [1000])],
      consistency: Fixtures.consistency(.sync(.init()), replicas: replicas), user: "stage0")
    try await withThrowingTaskGroup(of: Void.self) { group in
      for replica in 0..<replicas {
        group.addTask {
          for step in 1...steps {
            let base = try #require(await client.pull(job: "sync", names: ["w"])["w"]).version
            #expect(base == Int64(step - 1), "replica \(replica) saw version \(base) before step \(step)")
            try await client.push(
              job: "sync", step: Int64(step), user: "stage0", replica: replica, clientID: "r\(replica)",
              gradients: ["w": (Fixtures.filled([1000], Float(replica + 1)), base)])
          }
        }
      }
      try await group.waitForAll()
    }
    let pulled = try #require(await client.pull(job: "sync", names: ["w"])["w"])
    let mean = Float(replicas + 1) / 2
    #expect(pulled.version == Int64(steps))
    #expect(pulled.value == Fixtures.filled([1000], -0.5 * Float(steps) * mean))
  }

  @Test func asyncAppliesEveryPush() async throws {
    let (client, ps) = try Fixtures.inProcessPS()
    try await client.register(
      job: "async", variables: [Fixtures.variable("w", shape: [256], learningRate: 0.25)],
      consistency: Fixtures.consistency(.async(.init()), replicas: 4), user: "stage0")
    try await withThrowingTaskGroup(of: Void.self) { group in
      for replica in Int32(0)..<4 {
        group.addTask {
          for step in 1...50 {
            try await client.push(
              job: "async", step: Int64(step), user: "stage0", replica: replica, clientID: "r\(replica)",
              gradients: ["w": (Fixtures.filled([256], 1), 0)])
          }
        }
      }
      try await group.waitForAll()
    }
    let pulled = try #require(await client.pull(job: "async", names: ["w"])["w"])
    #expect(pulled.version == 200)
    #expect(pulled.value == Fixtures.filled([256], -50))
  }

  @Test func retriedPushIsAppliedOnce() async throws {
    let (client, ps) = try Fixtures.inProcessPS()
    try await client.register(
      job: "retry", variables: [Fixtures.variable("w", shape: [4])],
      consistency: Fixtures.consistency(.async(.init())), user: "stage0")
    for _ in 0..<3 {
      try await client.push(
        job: "retry", step: 1, user: "stage0", clientID: "c", gradients: ["w": (Fixtures.filled([4], 1), 0)])
    }
    let pulled = try #require(await client.pull(job: "retry", names: ["w"])["w"])
    #expect(pulled.version == 1)
    #expect(pulled.value == Fixtures.filled([4], -0.5))
    let stats = try await ps.call(ParameterServerMethods.stats, .with { $0.job = "retry" })
    #expect(stats.pushesDuplicate == 2)
  }

  /// Two stages share one variable (tied weights): in sync their gradients add.
  @Test func tiedVariableGradientsAddUp() async throws {
    let (client, ps) = try Fixtures.inProcessPS()
    let consistency = Fixtures.consistency(.sync(.init()))
    let tied = Fixtures.variable("embedding", shape: [3, 2])
    try await client.register(job: "tied", variables: [tied], consistency: consistency, user: "stage0")
    try await client.register(job: "tied", variables: [tied], consistency: consistency, user: "stage3")
    async let first: Void = {
      _ = try await client.push(
        job: "tied", step: 1, user: "stage0", clientID: "s0", gradients: ["embedding": (Fixtures.filled([3, 2], 1), 0)])
    }()
    async let last: Void = {
      _ = try await client.push(
        job: "tied", step: 1, user: "stage3", clientID: "s3", gradients: ["embedding": (Fixtures.filled([3, 2], 2), 0)])
    }()
    _ = try await (first, last)
    let pulled = try #require(await client.pull(job: "tied", names: ["embedding"])["embedding"])
    #expect(pulled.version == 1)
    #expect(pulled.value == Fixtures.filled([3, 2], -1.5))
  }

  @Test func boundedRefusesStalePushes() async throws {
    let (client, ps) = try Fixtures.inProcessPS()
    try await client.register(
      job: "bounded", variables: [Fixtures.variable("w", shape: [2])],
      consistency: Fixtures.consistency(.bounded(.with { $0.maxStaleness = 2 }), replicas: 2), user: "stage0")
    for step in 1...5 {
      try await client.push(
        job: "bounded", step: Int64(step), user: "stage0", replica: 0, clientID: "fast",
        gradients: ["w": (Fixtures.filled([2], 1), Int64(step - 1))])
    }
    let error = await #expect(throws: RPCError.self) {
      try await client.push(
        job: "bounded", step: 1, user: "stage0", replica: 1, clientID: "slow",
        gradients: ["w": (Fixtures.filled([2], 1), 2)])
    }
    #expect(error?.code == .failedPrecondition)
    #expect(error?.message.contains("3 versions behind") == true)
    // Within the bound it is applied.
    try await client.push(
      job: "bounded", step: 2, user: "stage0", replica: 1, clientID: "slow",
      gradients: ["w": (Fixtures.filled([2], 1), 3)])
    let pulled = try #require(await client.pull(job: "bounded", names: ["w"])["w"])
    #expect(pulled.version == 6)
    let stats = try await ps.call(ParameterServerMethods.stats, .with { $0.job = "bounded" })
    #expect(stats.pushesRefusedStale == 1)
    // The fast replica's pushes were current; the slow one's was 2 behind.
    #expect(stats.maxStaleness == 2)
    #expect(abs(stats.meanStaleness - 2.0 / 6.0) < 1e-9)
  }

  /// A ps in this process holding job "ssp": variable `w` of shape [2],
  /// pushed by "stage0" of `replicas` replicas held within 1 step of each
  /// other, a push waiting at most `timeoutSeconds` (0: the default).
  static func staleSynchronousJob(replicas: Int32, timeoutSeconds: Int32 = 0) async throws -> (
    client: ParameterServerClient, ps: any RPCChannel
  ) {
    let (client, ps) = try Fixtures.inProcessPS()
    try await client.register(
      job: "ssp", variables: [Fixtures.variable("w", shape: [2])],
      consistency: Fixtures.consistency(
        .bounded(
          .with {
            $0.maxStaleness = 1
            $0.wait = true
            $0.waitTimeoutSeconds = timeoutSeconds
          }), replicas: replicas),
      user: "stage0")
    return (client, ps)
  }

  @Test func boundedWaitHoldsTheFastReplica() async throws {
    let (client, ps) = try await Self.staleSynchronousJob(replicas: 2)
    func push(replica: Int32, step: Int64, timeout: Duration = .seconds(30)) async throws {
      var request = Pipemesh_V1_PushRequest()
      request.job = "ssp"
      request.step = step
      request.user = "stage0"
      request.replica = replica
      request.gradients = [
        .with {
          $0.name = "w"
          $0.gradient = Pipemesh_V1_Tensor(Fixtures.filled([2], 1))
        }
      ]
      _ = try await ps.call(ParameterServerMethods.push, request, options: .init(timeout: timeout))
    }
    try await push(replica: 0, step: 1)  // the slowest (replica 1, at 0) is within 1 step
    // Step 2 is 2 steps ahead of replica 1: it waits, here until its deadline.
    let error = await #expect(throws: RPCError.self) {
      try await push(replica: 0, step: 2, timeout: .milliseconds(300))
    }
    #expect(error?.code == .deadlineExceeded)
    async let held: Void = push(replica: 0, step: 3)
    try await push(replica: 1, step: 1)
    try await push(replica: 1, step: 2)
    try await held
    let pulled = try #require(await client.pull(job: "ssp", names: ["w"])["w"])
    #expect(pulled.version == 4)
    let stats = try await ps.call(ParameterServerMethods.stats, .with { $0.job = "ssp" })
    // Step 3 of replica 0 waited for replica 1's step 2; none was applied more than 1 step ahead.
    #expect(stats.pushesWaited >= 1 && stats.maxReplicaLead == 1, "\(stats)")
  }

  /// A push repeated while the first still waits for the slow replica (its
  /// caller's connection dropped, and the caller sent it again) waits for
  /// the first to end: when the first is then cancelled, as a dropped
  /// connection cancels it, the repeat applies the gradients, once.
  @Test func aRepeatedBoundedPushWaitsForTheOneStillWaiting() async throws {
    let (client, ps) = try await Self.staleSynchronousJob(replicas: 2)
    func push(replica: Int32, step: Int64) async throws {
      _ = try await client.push(
        job: "ssp", step: step, user: "stage0", replica: replica, clientID: "r\(replica)",
        gradients: ["w": (Fixtures.filled([2], 1), 0)])
    }
    func waitForWaitingPushes(_ count: Int64) async throws {
      let deadline = ContinuousClock.now + .seconds(30)
      while try await ps.call(ParameterServerMethods.stats, .with { $0.job = "ssp" }).pushesWaiting < count {
        try #require(ContinuousClock.now < deadline, "\(count) pushes never waited")
        try await Task.sleep(for: .milliseconds(5))
      }
    }
    try await push(replica: 0, step: 1)
    // Step 2 of replica 0 is 2 ahead of replica 1 (at 0): it waits, and so does its repeat.
    let first = Task { try await push(replica: 0, step: 2) }
    try await waitForWaitingPushes(1)
    let repeated = Task { try await push(replica: 0, step: 2) }
    try await waitForWaitingPushes(2)
    first.cancel()
    let cancelled = await first.result
    #expect(throws: (any Error).self) { try cancelled.get() }
    try await push(replica: 1, step: 1)
    try await repeated.value
    let pulled = try #require(await client.pull(job: "ssp", names: ["w"])["w"])
    #expect(pulled.version == 3, "replica 0's steps 1 and 2 and replica 1's step 1, each once")
  }

  /// A bounded push that waits longer than the job's wait timeout (replica
  /// 1 never pushes, replica 0 goes 2 steps ahead of it) fails
  /// with DEADLINE_EXCEEDED naming the replica it waited for, and is not
  /// applied.
  @Test func aBoundedWaitEndsAtItsTimeoutNamingTheSlowReplica() async throws {
    let (client, _) = try await Self.staleSynchronousJob(replicas: 3, timeoutSeconds: 1)
    for replica: Int32 in [0, 2] {
      _ = try await client.push(
        job: "ssp", step: 1, user: "stage0", replica: replica, clientID: "r\(replica)",
        gradients: ["w": (Fixtures.filled([2], 1), 0)])
    }
    let error = await #expect(throws: RPCError.self) {
      try await client.push(
        job: "ssp", step: 2, user: "stage0", replica: 0, clientID: "r0", gradients: ["w": (Fixtures.filled([2], 1), 0)])
    }
    #expect(error?.code == .deadlineExceeded)
    #expect(
      error?.message.contains("waited 1.0 seconds for replica 1, whose last push is of step 0") == true,
      "\(String(describing: error))")
    // Step 1 of replicas 0 and 2 only.
    #expect(try #require(await client.pull(job: "ssp", names: ["w"])["w"]).version == 2)
  }
}
