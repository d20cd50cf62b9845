import ArgumentParser
import Foundation
import MeshCoordinator
import MeshPartition
import MeshTensor
import MeshOps
import MeshRPC

struct ServePartition: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "partition",
    abstract: "Run a partition: holds one pipeline stage per job and runs its micro-batches forward and backward.",
    discussion: """
      The coordinator loads a stage with LoadStage; the partition pulls the stage's variables from the
      ps, fetches its inputs and output gradients directly from the neighbouring partitions, and pushes
      its gradients to the ps on Commit. Run several on one host with different ports (the
      pipemesh-partition@ systemd template does).
      """)

  @OptionGroup var service: ServiceOptions

  @Option(help: "host:port other partitions reach this one at; default: the listen address. [PIPEMESH_ADVERTISE]")
  var advertise: String?

  @Option(help: "OpenBLAS threads (give each partition on a host its share of the cores). [PIPEMESH_BLAS_THREADS]")
  var blasThreads: Int = environment("BLAS_THREADS").flatMap(Int.init) ?? 1

  @Option(help: "Bound on activations kept for backward, in MiB, when a job sets none (0: no bound). [PIPEMESH_MAX_KEPT_MIB]")
  var maxKeptMib: Int = environment("MAX_KEPT_MIB").flatMap(Int.init) ?? 0

  func run() async throws {
    BLAS.setThreadCount(max(1, blasThreads))
    let host = ServiceHost(role: "partition", options: service)
    let clientTransport = try service.clientTransport()
    let dataPlane = DataPlane(transport: clientTransport)
    let partition = PartitionService(dataPlane: dataPlane, transport: clientTransport, defaultMaxKeptBytes: maxKeptMib << 20)
    PartitionMetrics.register(partition, in: host.metrics)
    try await host.run(
      [partition],
      status: {
        let counts = partition.activity.snapshot
        return "jobs \(partition.loadedJobs.joined(separator: ", ")); \(counts.forwards) forwards, \(counts.backwards) backwards"
      },
      started: { server in
        let advertised = advertise ?? environment("ADVERTISE") ?? server.endpoint
        guard !advertised.hasPrefix("0.0.0.0:"), !advertised.hasPrefix("[::]:") else {
          throw ValidationError("listening on all addresses: give --advertise HOST:PORT, the address other partitions dial")
        }
        dataPlane.endpoint = advertised
      })
  }
}

struct ServeCoordinator: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "coordinator",
    abstract: "Run the coordinator: plans stages, pipelines training steps through the partitions, answers inference.")

  @OptionGroup var service: ServiceOptions

  @Option(help: "ps tasks, in shard order: HOST:PORT,HOST:PORT. [PIPEMESH_PS]")
  var ps: String?

  @Option(help: "Partitions: stages separated by ';', a stage's replicas by ','. [PIPEMESH_PARTITIONS]")
  var partitions: String?

  func run() async throws {
    guard let ps = ps ?? environment("PS"), !ps.isEmpty else { throw ValidationError("give the ps tasks with --ps") }
    guard let partitions = partitions ?? environment("PARTITIONS"), !partitions.isEmpty else {
      throw ValidationError("give the partitions with --partitions")
    }
    let cluster = try Cluster(
      parameterServers: ps.split(separator: ",").map(String.init), partitions: Cluster.parsePartitions(partitions),
      transport: try service.clientTransport())
    let coordinator = try CoordinatorService(cluster: cluster, loadDataset: loadTrainingData)
    let host = ServiceHost(role: "coordinator", options: service)
    CoordinatorMetrics.register(coordinator, in: host.metrics)
    try await host.run(
      [coordinator],
      status: {
        let states = coordinator.jobStates
        return "\(states["running"] ?? 0) jobs running, \(coordinator.stepsCompleted) steps done"
      })
  }
}
