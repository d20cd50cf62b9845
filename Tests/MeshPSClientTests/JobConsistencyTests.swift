import MeshPSClient
import MeshProto
import MeshWire
import Testing

/// The one reading of a job's consistency request: defaults, the replica range, the staleness bound, and the
/// proto it is sent back as.
@Suite struct JobConsistencyTests {
  static func consistency(_ mode: Pipemesh_V1_Consistency.OneOf_Mode?, replicas: Int32 = 0)
    -> Pipemesh_V1_Consistency
  {
    var proto = Pipemesh_V1_Consistency()
    proto.mode = mode
    proto.replicas = replicas
    return proto
  }

  static func bounded(maxStaleness: Int64, wait: Bool, timeoutSeconds: Int32 = 0) -> Pipemesh_V1_Consistency.OneOf_Mode
  {
    var bounded = Pipemesh_V1_BoundedConsistency()
    bounded.maxStaleness = maxStaleness
    bounded.wait = wait
    bounded.waitTimeoutSeconds = timeoutSeconds
    return .bounded(bounded)
  }

  @Test func anUnsetModeReadsAsSyncWithOneReplica() throws {
    let consistency = try JobConsistency(Pipemesh_V1_Consistency())
    #expect(consistency.mode == .sync)
    #expect(consistency.replicas == 1)
  }

  @Test func modesReadAsTheyAreNamed() throws {
    #expect(try JobConsistency(Self.consistency(.sync(.init()))).mode == .sync)
    #expect(try JobConsistency(Self.consistency(.async(.init()))).mode == .async)
    #expect(
      try JobConsistency(Self.consistency(Self.bounded(maxStaleness: 3, wait: true))).mode
        == .bounded(maxStaleness: 3, wait: .seconds(60)))
    #expect(
      try JobConsistency(Self.consistency(Self.bounded(maxStaleness: 0, wait: false))).mode
        == .bounded(maxStaleness: 0, wait: nil))
    #expect(
      try JobConsistency(Self.consistency(Self.bounded(maxStaleness: 1, wait: true, timeoutSeconds: 5))).mode
        == .bounded(maxStaleness: 1, wait: .seconds(5)))
  }

  @Test(arguments: [Int32(-1), JobConsistency.maxWaitTimeoutSeconds + 1, .min, .max])
  func aWaitTimeoutOutOfRangeIsRefused(seconds: Int32) {
    let proto = Self.consistency(Self.bounded(maxStaleness: 1, wait: true, timeoutSeconds: seconds))
    let error = #expect(throws: WireError.self) { _ = try JobConsistency(proto) }
    #expect(error?.rpcError.code == .invalidArgument)
    #expect(error?.message.contains("wait_timeout_seconds is \(seconds)") == true, "\(String(describing: error))")
  }

  @Test(arguments: [Int32(0), 1, 2, JobConsistency.maxReplicas])
  func replicasInRangeAreKept(replicas: Int32) throws {
    let consistency = try JobConsistency(Self.consistency(.async(.init()), replicas: replicas))
    #expect(consistency.replicas == max(1, replicas))
  }

  @Test(arguments: [Int32(-1), JobConsistency.maxReplicas + 1, .min, .max])
  func replicasOutOfRangeAreRefused(replicas: Int32) {
    let proto = Self.consistency(.sync(.init()), replicas: replicas)
    let error = #expect(throws: WireError.self) { _ = try JobConsistency(proto) }
    #expect(error?.rpcError.code == .invalidArgument)
    #expect(
      error?.message == "consistency replicas must be in 1...4096, got \(replicas)", "\(String(describing: error))")
    #expect(throws: WireError.self) { try proto.validate() }
  }

  @Test func aNegativeStalenessBoundIsRefused() {
    for wait in [false, true] {
      let proto = Self.consistency(Self.bounded(maxStaleness: -1, wait: wait))
      let error = #expect(throws: WireError.self) { _ = try JobConsistency(proto) }
      #expect(error?.rpcError.code == .invalidArgument)
      #expect(error?.message == "bounded consistency needs max_staleness >= 0", "\(String(describing: error))")
      #expect(throws: WireError.self) { try proto.validate() }
    }
  }

  @Test(arguments: [
    JobConsistencyTests.consistency(.sync(.init()), replicas: 1),
    JobConsistencyTests.consistency(.sync(.with { $0.reduction = .ring }), replicas: 3),
    JobConsistencyTests.consistency(.async(.init()), replicas: 4),
    JobConsistencyTests.consistency(JobConsistencyTests.bounded(maxStaleness: 2, wait: false), replicas: 2),
    JobConsistencyTests.consistency(
      JobConsistencyTests.bounded(maxStaleness: 5, wait: true, timeoutSeconds: 60), replicas: 4096),
  ])
  func protoSurvivesTheRoundTrip(proto: Pipemesh_V1_Consistency) throws {
    #expect(throws: Never.self) { try proto.validate() }
    let consistency = try JobConsistency(proto)
    #expect(consistency.proto == proto)
    #expect(try JobConsistency(consistency.proto) == consistency)
  }

  /// Replicas that reduce by ring reach the ps as one writer per stage;
  /// the ps's own reduction is the default, and an unknown one is refused.
  @Test func aRingReductionIsOneReplicaAtThePs() throws {
    let ring = try JobConsistency(Self.consistency(.sync(.with { $0.reduction = .ring }), replicas: 4))
    #expect(ring.reduction == .ring && ring.reducesByRing)
    #expect(ring.atParameterServer == Self.consistency(.sync(.init()), replicas: 1))
    let alone = try JobConsistency(Self.consistency(.sync(.with { $0.reduction = .ring }), replicas: 1))
    #expect(!alone.reducesByRing)
    let byPs = try JobConsistency(Self.consistency(.sync(.with { $0.reduction = .parameterServer }), replicas: 4))
    #expect(byPs.reduction == .parameterServer && byPs.atParameterServer == byPs.proto)
    #expect(byPs.atParameterServer.replicas == 4)
    let unknown = Self.consistency(.sync(.with { $0.reduction = .UNRECOGNIZED(9) }), replicas: 2)
    let error = #expect(throws: WireError.self) { try unknown.validate() }
    #expect(error?.rpcError.code == .invalidArgument && error?.message.contains("sync.reduction is 9") == true)
  }

  @Test func theDefaultsAreSpelledOutInTheProto() throws {
    let proto = try JobConsistency(Pipemesh_V1_Consistency()).proto
    #expect(proto.replicas == 1)
    #expect(proto.mode == .sync(.init()))
  }
}
