import Foundation
import MeshCoordinator
import MeshPS
import MeshPartition
import MeshRPC
import MeshWire

/// A whole mesh in one process: ps tasks, partitions and a coordinator
/// serving each other over an `InProcessNetwork`, with the same services,
/// checks and arithmetic as a mesh of processes, and no sockets. What
/// `pipemesh up --in-process` runs, and what logic tests train on in
/// milliseconds. Each service reaches the others under its role's name
/// (`coordinator`, `partition`, `ps`), as mutual TLS would name it.
public final class InProcessMesh: Sendable {
  public let network = InProcessNetwork()
  /// The ps tasks' endpoints, in shard order.
  public let parameterServers: [String]
  /// `partitions[stage][replica]`.
  public let partitions: [[String]]
  public let coordinatorEndpoint = "coordinator.in-process:1"
  /// The coordinator's service, for its job counts.
  public let coordinator: CoordinatorService
  /// What each partition has been doing, by endpoint.
  public let partitionActivity: [String: PartitionActivity]
  private let servers: [InProcessServer]

  /// Starts `psTasks` ps tasks, `stages` × `replicas` partitions and a
  /// coordinator over them. `checkpointDirectory` gives the ps tasks
  /// checkpoints (task N in `checkpointDirectory/ps-N`); `loadDataset` serves
  /// Train requests that name a dataset instead of carrying the data;
  /// `stepDeadline` says when the coordinator takes a step to hang; `events`
  /// hears what its training jobs do.
  public init(
    psTasks: Int = 1, stages: Int, replicas: Int = 1, checkpointDirectory: String? = nil,
    loadDataset: DatasetLoader? = nil, stepDeadline: StepDeadline = StepDeadline(),
    events: (any TrainingEvents)? = nil
  ) throws {
    precondition(psTasks >= 1 && stages >= 1 && replicas >= 1, "a mesh needs a ps task and a partition per stage")
    parameterServers = (0..<psTasks).map { "ps-\($0).in-process:1" }
    partitions = (0..<stages).map { stage in (0..<replicas).map { "partition-\(stage)-\($0).in-process:1" } }
    var servers: [InProcessServer] = []
    for (task, endpoint) in parameterServers.enumerated() {
      let store = ParameterStore()
      let checkpointer = try checkpointDirectory.map { directory in
        let taskDirectory = "\(directory)/ps-\(task)"
        try FileManager.default.createDirectory(atPath: taskDirectory, withIntermediateDirectories: true)
        return try Checkpointer(directory: taskDirectory, store: store)
      }
      servers.append(
        try network.serve([ParameterServerService(store: store, checkpointer: checkpointer)], at: endpoint))
    }
    let partitionDialer = network.dialer(identity: "partition")
    var partitionActivity: [String: PartitionActivity] = [:]
    for endpoint in partitions.joined() {
      let partition = PartitionService(
        dataPlane: DataPlane(endpoint: endpoint, dialer: partitionDialer, sharedMemory: false), dialer: partitionDialer,
        dialPolicy: .anywhere)
      partitionActivity[endpoint] = partition.activity
      servers.append(try network.serve([partition], at: endpoint))
    }
    self.partitionActivity = partitionActivity
    coordinator = try CoordinatorService(
      cluster: Cluster(
        parameterServers: parameterServers, partitions: partitions, dialer: network.dialer(identity: "coordinator")),
      loadDataset: loadDataset, events: events, stepDeadline: stepDeadline)
    servers.append(try network.serve([coordinator], at: coordinatorEndpoint))
    self.servers = servers
  }

  /// A channel to the coordinator for a user named `user` (`client.NAME`
  /// as a certificate would name them), or for nobody in particular.
  public func coordinatorChannel(user: String? = nil) -> InProcessChannel {
    network.channel(to: coordinatorEndpoint, identity: user.map { "client.\($0)" })
  }

  /// Stops every service, the coordinator first.
  public func shutdown(gracePeriod: Duration = .seconds(5)) async {
    for server in servers.reversed() { await server.shutdown(gracePeriod: gracePeriod) }
  }
}
