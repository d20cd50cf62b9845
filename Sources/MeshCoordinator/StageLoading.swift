import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// Loads a model's stages onto the partitions of a placement under one run
/// id: each partition registers its stage's variables with the ps and pulls
/// them.
struct StageLoading: Sendable {
  /// The name the partitions and the ps know the stages by.
  let runID: String
  let model: Pipemesh_V1_ModelSpec
  /// Where each stage begins, then the model's end.
  let bounds: [LayerPosition]
  /// The mesh's ps tasks, in shard order.
  let parameterServers: [String]
  let placement: Placement
  let consistency: Pipemesh_V1_Consistency
  let optimizer: Pipemesh_V1_OptimizerSpec
  /// How activations and gradients travel between the stages (TrainRequest.transfer_dtype).
  var transferDType = Pipemesh_V1_DType.float32
  /// Whether the job's steps overlap (PipeDream-2BW): the stage then holds two versions of its weights.
  var overlappingSteps = false

  /// Loads every stage on the partitions of `replicas`; returns where each
  /// one's tensors are fetched, by stage and replica (indexed from the
  /// first of `replicas`).
  func load(replicas: Range<Int>, recomputeActivations: Bool = false, maxKeptBytes: Int64 = 0) async throws
    -> [[String]]
  {
    // Every partition of the job, as the coordinator names them: what each may fetch from.
    let members = replicas.flatMap { replica in placement.partitions.map { $0[replica] } }
    let reducesByRing = try JobConsistency(consistency).reducesByRing
    return try await withThrowingTaskGroup(of: (Int, Int, String).self) { group in
      for stage in 0..<placement.stages {
        for replica in replicas {
          let request = Pipemesh_V1_LoadStageRequest.with {
            $0.job = runID
            $0.model = model
            $0.stage = Int32(stage)
            $0.firstLayer = Int32(bounds[stage].layer)
            $0.firstLayerInputs = Int32(bounds[stage].inputs)
            $0.endLayer = Int32(bounds[stage + 1].layer)
            $0.endLayerInputs = Int32(bounds[stage + 1].inputs)
            $0.parameterServers = parameterServers
            $0.replica = Int32(replica)
            $0.consistency = consistency
            $0.optimizer = optimizer
            $0.recomputeActivations = recomputeActivations
            $0.maxKeptBytes = maxKeptBytes
            $0.peers = members
            $0.overlappingSteps = overlappingSteps
            $0.transferDtype = transferDType
            // A partition's data plane is at the address it is listed at (checked below).
            if reducesByRing { $0.ring = replicas.map { placement.partitions[stage][$0] } }
          }
          group.addTask {
            let client = placement.clients[stage][replica]
            let response = try await client.call(PartitionMethods.loadStage, request)
            guard !response.dataPlaneEndpoint.isEmpty else {
              throw CoordinatorError(
                .unsuitableMesh,
                "the partition at \(client.target) did not say where its tensors are fetched")
            }
            // Its neighbours fetch from it only at an address they were given as a peer.
            guard members.contains(response.dataPlaneEndpoint) else {
              throw CoordinatorError(
                .unsuitableMesh,
                "the partition at \(client.target) advertises \(response.dataPlaneEndpoint.echoed): list it under that address "
                  + "in the coordinator's --partitions, or start it with --advertise \(client.target)")
            }
            return (stage, replica, response.dataPlaneEndpoint)
          }
        }
      }
      var endpoints = Array(repeating: Array(repeating: "", count: replicas.count), count: placement.stages)
      for try await (stage, replica, endpoint) in group { endpoints[stage][replica - replicas.lowerBound] = endpoint }
      return endpoints
    }
  }

  /// Frees everything a run id holds: its stages (see `unload`), then its
  /// variables on every ps task; returns the bytes the ps freed.
  @discardableResult
  static func discard(runID: String, cluster: Cluster, clients: [[any RPCChannel]]) async throws -> Int64 {
    await unload(runID: runID, clients: clients)
    return try await cluster.parameterServerClient().drop(job: runID)
  }

  /// Frees the stages on the partitions of every replica (best effort: a
  /// partition that cannot be reached, or does not answer within
  /// `unloadWait`, keeps them until it restarts).
  static func unload(runID: String, clients: [[any RPCChannel]]) async {
    await withTaskGroup(of: Void.self) { group in
      for client in clients.joined() {
        group.addTask {
          _ = try? await client.call(
            PartitionMethods.unloadStage, .with { $0.job = runID }, options: CallOptions(timeout: unloadWait))
        }
      }
    }
  }

  /// How long an unload waits for a partition.
  static let unloadWait = Duration.seconds(10)
}
