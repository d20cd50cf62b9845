import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

@testable import MeshPartition

/// The ring all-reduce of a stage's replicas, each replica a data plane
/// behind a gRPC server of its own on a loopback port. (The partition's own
/// FetchTensor waits only for a loaded job's tensors; the processes of
/// `syncReplicasTrainAsOneBigBatch` load real ones.)
@Suite struct RingReductionTests {
  /// FetchTensor of one data plane, for any job.
  struct DataPlaneService: RPCService {
    let dataPlane: DataPlane
    var serviceName: String { PartitionMethods.service }

    func register(with router: inout RPCRouter) {
      router.serverStreaming(PartitionMethods.fetchTensor) { [dataPlane] request, writer, _ in
        let tensor = try await dataPlane.take(
          try DataPlaneKey(wire: request.key), release: request.release, wait: request.wait)
        try await DataPlane.send(tensor, to: writer)
      }
    }
  }

  /// Replicas whose gradients are two variables (of 5 × 3 and 7 values: 22,
  /// in parts of unequal sizes for 3 and 4 replicas; of 1 and 1: some parts
  /// empty for 4) all end with the same bits, within float rounding of the
  /// mean added up in doubles.
  @Test(arguments: [(2, 5, 7), (3, 5, 7), (4, 5, 7), (4, 1, 1)])
  func everyReplicaEndsWithTheSameMean(replicas: Int, rows: Int, biases: Int) async throws {
    let dataPlanes = (0..<replicas).map { _ in DataPlane(dialer: GRPCDialer()) }
    var servers: [RPCServer] = []
    for dataPlane in dataPlanes {
      let server = try RPCServer(services: [DataPlaneService(dataPlane: dataPlane)])
      dataPlane.endpoint = server.endpoint
      servers.append(server)
    }
    let endpoints = dataPlanes.map(\.endpoint)
    let gradients = (0..<replicas).map { replica in
      [
        "kernel": Tensor.randomNormal([rows, rows == 1 ? 1 : 3], seed: UInt64(10 + replica)),
        "bias": Tensor.randomNormal([biases], seed: UInt64(20 + replica)),
      ]
    }
    let outcome = await Result {
      try await withThrowingTaskGroup(of: (Int, [String: Tensor]).self) { group in
        for rank in 0..<replicas {
          let ring = try RingReduction(
            job: "ringed", rank: rank, endpoints: endpoints, replicas: Int32(replicas), own: endpoints[rank],
            peers: Set(endpoints))
          group.addTask {
            var averaged = gradients[rank]
            try await ring.average(&averaged, step: 3, dataPlane: dataPlanes[rank], peers: Set(endpoints))
            return (rank, averaged)
          }
        }
        var means = [[String: Tensor]](repeating: [:], count: replicas)
        for try await (rank, mean) in group { means[rank] = mean }
        return means
      }
    }
    for server in servers { await server.shutdown(gracePeriod: .zero) }
    let means = try outcome.get()

    for rank in 1..<replicas {
      #expect(means[rank]["kernel"] == means[0]["kernel"] && means[rank]["bias"] == means[0]["bias"], "replica \(rank)")
    }
    for name in ["kernel", "bias"] {
      let got = try #require(means[0][name])
      let replicaGradients = try gradients.map { try #require($0[name]) }
      #expect(got.shape == replicaGradients[0].shape)
      for index in 0..<got.scalarCount {
        let want = replicaGradients.reduce(0.0) { $0 + Double($1.scalars[index]) } / Double(replicas)
        #expect(abs(Double(got.scalars[index]) - want) <= 1e-6, "\(name)[\(index)]")
      }
    }
    // Every part went with the fetch that took it: none is left held.
    #expect(dataPlanes.map(\.heldBytes) == Array(repeating: 0, count: replicas))
  }

  /// A ring that does not fit the job is refused with the field named.
  @Test func aRingThatIsNotTheStagesReplicasIsRefused() throws {
    let endpoints = ["127.0.0.1:7001", "127.0.0.1:7002"]
    let peers = Set(endpoints)
    let tooFew = #expect(throws: StageError.self) {
      try RingReduction(job: "j", rank: 0, endpoints: endpoints, replicas: 3, own: endpoints[0], peers: peers)
    }
    #expect(tooFew?.rpcError.code == .invalidArgument && tooFew?.message.contains("2 endpoints for 3 replicas") == true)
    let notOwn = #expect(throws: StageError.self) {
      try RingReduction(job: "j", rank: 1, endpoints: endpoints, replicas: 2, own: endpoints[0], peers: peers)
    }
    #expect(notOwn?.rpcError.code == .invalidArgument && notOwn?.message.contains("replica 1") == true)
    let stranger = #expect(throws: StageError.self) {
      try RingReduction(
        job: "j", rank: 0, endpoints: endpoints, replicas: 2, own: endpoints[0], peers: [endpoints[0]])
    }
    #expect(stranger?.rpcError.code == .invalidArgument && stranger?.message.contains("not one of peers") == true)
    let twice = #expect(throws: StageError.self) {
      try RingReduction(
        job: "j", rank: 0, endpoints: [endpoints[0], endpoints[0]], replicas: 2, own: endpoints[0], peers: peers)
    }
    #expect(twice?.rpcError.code == .invalidArgument && twice?.message.contains("an endpoint twice") == true)
  }

  /// A LoadStage whose ring does not go with its consistency is refused
  /// before the stage contacts anyone, naming the field.
  @Test func aLoadStageWithARingItsJobDoesNotUseIsRefused() async throws {
    let dataPlane = DataPlane(endpoint: "127.0.0.1:7001", dialer: GRPCDialer())
    let partition = PartitionService(dataPlane: dataPlane, dialer: GRPCDialer())
    var request = Pipemesh_V1_LoadStageRequest.with {
      $0.job = "ringless"
      $0.model = .with {
        $0.inputShape = [4]
        $0.layers = [.with { $0.dense = .with { $0.units = 2 } }]
        $0.loss = .with { $0.meanSquaredError = .init() }
      }
      $0.endLayer = 1
      $0.parameterServers = ["127.0.0.1:7100"]
      $0.peers = ["127.0.0.1:7001", "127.0.0.1:7002"]
      $0.replica = 0
      $0.ring = ["127.0.0.1:7001", "127.0.0.1:7002"]
      $0.consistency = .with {
        $0.sync = .init()
        $0.replicas = 2
      }
    }
    try await withChannel(.inProcess, [partition]) { channel in
      let byPs = await #expect(throws: RPCError.self) { try await channel.call(PartitionMethods.loadStage, request) }
      #expect(
        byPs?.code == .invalidArgument && byPs?.message.contains("do not reduce by ring") == true,
        "\(String(describing: byPs))")
      request.consistency.sync.reduction = .ring
      request.ring = []
      let missing = await #expect(throws: RPCError.self) { try await channel.call(PartitionMethods.loadStage, request) }
      #expect(
        missing?.code == .invalidArgument && missing?.message.contains("0 endpoints for 2 replicas") == true,
        "\(String(describing: missing))")
    }
  }

}
