import ArgumentParser
import Foundation
import MeshCoordinator
import MeshDashboard
import MeshData
import MeshOps
import MeshPS
import MeshPartition
import MeshRPC
import MeshTensor
import Synchronization

struct ServePartition: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "partition",
    abstract: "Run a partition: holds one pipeline stage per job and runs its micro-batches forward and backward.",
    discussion: """
      The coordinator loads a stage with LoadStage; the partition pulls the stage's variables from the \
      ps, fetches its inputs and output gradients directly from the neighbouring partitions, and pushes \
      its gradients to the ps on Commit. Run several on one host with different ports (the \
      pipemesh-partition@ systemd template does).
      """)

  @OptionGroup var service: ServiceOptions

  @Option(help: "host:port other partitions reach this one at; default: the listen address. [PIPEMESH_ADVERTISE]")
  var advertise: String?

  @Option(
    help: "OpenBLAS threads (give each partition on a host its share of the cores; default 1). [PIPEMESH_BLAS_THREADS]")
  var blasThreads: Int?

  @Option(
    help: """
      Bound on a stage's activations (kept for backward, or in flight in an inference), in MiB, when a job sets none \
      (default: half the host's or the cgroup's memory). [PIPEMESH_MAX_KEPT_MIB]
      """)
  var maxKeptMib: Int?

  @Option(
    help: """
      MiB a stage's variables may take with their gradients and optimizer slots (five copies); a larger stage is \
      refused with RESOURCE_EXHAUSTED (default: half the host's or the cgroup's memory). [PIPEMESH_MEMORY_BUDGET_MIB]
      """)
  var memoryBudgetMib: Int?

  @Option(
    help: """
      Hosts (or HOST:PORT) of the ps tasks and partitions this partition may dial, comma-separated; '*' for any. \
      Default: any with mutual TLS (peers must present the mesh CA's certificates), else loopback only. [PIPEMESH_PEERS]
      """)
  var peers: String?

  @Option(
    help: """
      Coordinator (HOST:PORT) whose pool this partition joins, keeping its lease while it runs; on SIGTERM it \
      leaves the pool and waits (up to 60 s) until no job runs on it. A coordinator with tokens needs an admin's \
      token in PIPEMESH_TOKEN. [PIPEMESH_JOIN]
      """)
  var join: String?

  @Option(
    help: """
      on: tensors pass to and from partitions on this host (the same boot and PID and network namespaces, the same \
      user) through memory files instead of sockets; off: always by the network. Default: on. [PIPEMESH_SHARED_MEMORY]
      """)
  var sharedMemory: String?

  func run() async throws {
    let settings = try service.resolved()
    let dialPolicy =
      Settings.text(peers, option: "--peers").map {
        DialPolicy(listing: $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) })
      } ?? (settings.server.tls?.requireClientCertificate == true ? .anywhere : .loopback)
    let blasThreads = try Settings.integer(blasThreads, option: "--blas-threads", in: 1...1024, default: 1)
    let budgetMiB = try Settings.integer(
      memoryBudgetMib, option: "--memory-budget-mib", in: 1...(1 << 40), default: HostMemory.defaultBudget() >> 20)
    let maxKeptMiB = try Settings.integer(
      maxKeptMib, option: "--max-kept-mib", in: 1...(1 << 30), default: HostMemory.defaultBudget() >> 20)
    let advertise = Settings.text(advertise, option: "--advertise")
    if let advertise { try Settings.checkAddress(advertise, option: "--advertise") }
    let join = Settings.text(join, option: "--join")
    if let join { try Settings.checkAddress(join, option: "--join") }
    BLAS.setThreadCount(blasThreads)
    let host = ServiceHost(role: "partition", settings: settings, memoryBudget: budgetMiB << 20)
    host.log.info(
      "OpenBLAS with \(BLAS.kernels) kernels, \(blasThreads) thread\(blasThreads == 1 ? "" : "s")",
      metadata: ["blas_kernels": "\(BLAS.kernels)"])
    let clientTransport = settings.client
    let dataPlane = DataPlane(
      dialer: GRPCDialer(transport: clientTransport),
      sharedMemory: try Settings.switch(sharedMemory, option: "--shared-memory", default: true))
    let partition = PartitionService(
      dataPlane: dataPlane, dialer: GRPCDialer(transport: clientTransport), defaultMaxKeptBytes: maxKeptMiB << 20,
      blasThreads: blasThreads,
      dialPolicy: dialPolicy, parameterBudget: budgetMiB << 20)
    PartitionMetrics.register(partition, in: host.metrics)
    let membership = Mutex<(PoolMembership, Task<Void, Never>)?>(nil)
    try await host.run(
      [partition],
      status: {
        let counts = partition.activity.snapshot
        return
          "jobs \(partition.loadedJobs.joined(separator: ", ")); \(counts.forwards) forwards, \(counts.backwards) backwards"
      },
      started: { server in
        let advertised = advertise ?? server.endpoint
        guard !advertised.hasPrefix("0.0.0.0:"), !advertised.hasPrefix("[::]:") else {
          throw ValidationError(
            "listening on all addresses: give --advertise HOST:PORT, the address other partitions dial")
        }
        dataPlane.endpoint = advertised
        if let join {
          let member = try PoolMembership(
            coordinator: join, transport: clientTransport, endpoint: advertised, log: host.log)
          membership.withLock { $0 = (member, Task { await member.keepJoined() }) }
        }
      },
      leaving: {
        guard let (member, renewals) = membership.withLock({ $0 }) else { return }
        renewals.cancel()
        await member.leave(within: .seconds(60))
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

  @Option(
    help: """
      Partitions of the pool jobs are placed on, as a layout: stages separated by ';', a stage's replicas \
      by ','; a job that does not set its stages and replicas takes this shape. Partitions started with \
      --join add themselves. [PIPEMESH_PARTITIONS]
      """)
  var partitions: String?

  @Option(
    help: """
      Folder that Train requests may name dataset files in (relative to it; nothing outside it is read). \
      Without it, only bundled datasets and inline data are served. [PIPEMESH_DATA_DIR]
      """)
  var dataDir: String?

  @Option(
    help: """
      File of users and their bearer tokens ('NAME admin|user TOKEN' per line, not readable by others); \
      calls without a listed token are refused. Read again when it changes. [PIPEMESH_TOKENS_FILE]
      """)
  var tokensFile: String?

  @Option(
    help: """
      Folder of the coordinator's durable state: its database of jobs and models (coordinator.sqlite) \
      and the models' weights. Without it, jobs and models end with the process. [PIPEMESH_STATE_DIR]
      """)
  var stateDir: String?

  @Option(
    help: """
      Rows an inference batch gathers: concurrent Infer requests of fewer rows for the same model (and one \
      micro-batch) wait while its pipeline is full and leave together, up to this many rows; 0 runs each \
      request alone (default 256). [PIPEMESH_MAX_INFERENCE_BATCH]
      """)
  var maxInferenceBatch: Int?

  @Option(
    help: """
      Serve the web dashboard (jobs with live curves and pipeline timelines, members, models) at \
      http://HOST:PORT/; none when unset. It reads through the coordinator's API with the browser's token, and \
      serves plain HTTP: with --tokens-file, only on a loopback address (reach it through an SSH tunnel, \
      kubectl port-forward or a TLS proxy). [PIPEMESH_DASHBOARD_LISTEN]
      """)
  var dashboardListen: String?

  func run() async throws {
    let settings = try service.resolved()
    let maxInferenceBatch = try Settings.integer(
      maxInferenceBatch, option: "--max-inference-batch", in: 0...65536, default: 256)
    let stateDir = Settings.text(stateDir, option: "--state-dir")
    if let stateDir { try Settings.checkWritableDirectory(stateDir, option: "--state-dir") }
    guard let ps = Settings.text(ps, option: "--ps") else {
      throw ValidationError("give the ps tasks with --ps (or PIPEMESH_PS)")
    }
    let partitions = Settings.text(partitions, option: "--partitions") ?? ""
    let parameterServers = ps.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
    let stages = Cluster.parsePartitions(partitions)
    for endpoint in parameterServers { try Settings.checkAddress(endpoint, option: "--ps") }
    for endpoint in stages.joined() { try Settings.checkAddress(endpoint, option: "--partitions") }
    let cluster: Cluster
    do {
      cluster = try Cluster(
        parameterServers: parameterServers, partitions: stages, dialer: GRPCDialer(transport: settings.client))
    } catch let error as CoordinatorError {
      throw ValidationError("--partitions (or PIPEMESH_PARTITIONS) '\(partitions.echoed)': \(error.message)")
    }
    var files = DatasetFiles.none
    if let dataDir = Settings.text(dataDir, option: "--data-dir") {
      do {
        files = .inside(try DataDirectory(dataDir))
      } catch {
        throw ValidationError("--data-dir (or PIPEMESH_DATA_DIR) is '\(dataDir.echoed)', which is not a folder")
      }
    }
    let host = ServiceHost(role: "coordinator", settings: settings)
    let tokens: TokenFile?
    do {
      let log = host.log
      tokens = try Settings.text(tokensFile, option: "--tokens-file").map {
        try TokenFile(path: $0) { problem in log.warning("\(problem)") }
      }
    } catch let error as TokenFileError {
      throw ValidationError("--tokens-file (or PIPEMESH_TOKENS_FILE): \(error)")
    }
    let store: CoordinatorStore
    do {
      store = try CoordinatorStore(directory: stateDir)
    } catch let error as CoordinatorError {
      throw ValidationError("--state-dir (or PIPEMESH_STATE_DIR): \(error.message)")
    }
    let dashboardAddress = Settings.text(dashboardListen, option: "--dashboard-listen")
    if let dashboardAddress {
      try Settings.checkAddress(dashboardAddress, option: "--dashboard-listen")
      if tokens == nil, settings.server.tls?.requireClientCertificate == true {
        throw ValidationError(
          "--dashboard-listen: the dashboard knows users by their bearer tokens, and this coordinator knows them by "
            + "client certificates: give it a --tokens-file as well, or leave the dashboard off")
      }
      if tokens != nil, !Dashboard.isLoopback(dashboardAddress) {
        throw ValidationError(
          "--dashboard-listen \(dashboardAddress): the dashboard serves plain HTTP, so users' tokens would cross the "
            + "network in the clear: listen on 127.0.0.1 and reach it through an SSH tunnel, kubectl port-forward or "
            + "a TLS proxy on this host")
      }
    }
    let metrics = CoordinatorMetrics(registry: host.metrics)
    let coordinator = try CoordinatorService(
      cluster: cluster, loadDataset: trainingDataLoader(files: files), resolveDataFile: dataFileResolver(files: files),
      tokens: tokens, store: store, events: LoggedTrainingEvents(log: host.log, next: metrics),
      maxInferenceBatchRows: maxInferenceBatch, inferenceEvents: metrics)
    metrics.register(coordinator)
    let log = host.log
    if let stateDir {
      log.info("state in \(stateDir)")
    } else {
      log.warning("no --state-dir: jobs and models are kept in memory and end with this process")
    }
    if stages.isEmpty {
      log.notice("no --partitions: jobs wait for partitions to join (pipemesh serve partition --join)")
    }
    for job in coordinator.interruptedJobs {
      log.warning("job \(job) was running when the coordinator stopped; it is marked interrupted and resumes if it can")
    }
    // The dashboard calls the coordinator in this process, as a remote caller would.
    var dashboard: Dashboard?
    if let dashboardAddress {
      let network = InProcessNetwork()
      try network.serve([coordinator], at: "coordinator.dashboard:1")
      do {
        dashboard = try await Dashboard.start(
          address: dashboardAddress, coordinator: network.channel(to: "coordinator.dashboard:1"), logger: log)
      } catch let error as DashboardError {
        throw ValidationError("--dashboard-listen (or PIPEMESH_DASHBOARD_LISTEN): \(error)")
      }
      log.info("dashboard on http://\(dashboard!.endpoint)/")
    }
    try await host.run(
      [coordinator],
      status: {
        let states = coordinator.jobStates
        return "\(states["running"] ?? 0) jobs running, \(coordinator.stepsCompleted) steps done"
      },
      started: { _ in
        // A wrong address shows now, not when the first job fails (members may also still be starting).
        Task {
          for problem in await coordinator.unansweredMembers() { log.warning("\(problem)") }
          for (job, problem) in await coordinator.resumeInterruptedJobs() {
            if problem.isEmpty {
              log.info("job \(job) resumed from its newest checkpoint")
            } else {
              log.warning("job \(job) stays interrupted: \(problem)")
            }
          }
          let freed = await coordinator.releaseDiscardedJobs()
          if !freed.isEmpty {
            log.info("freed the variables finished discard_model jobs still held: \(freed.joined(separator: ", "))")
          }
        }
      })
    await dashboard?.stop()
  }
}
