import ArgumentParser
import Foundation
import MeshCoordinator
import MeshOps
import MeshPS
import MeshRPC
import Synchronization

struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run one Pipemesh service until SIGTERM or SIGINT.",
    subcommands: [ServePS.self, ServePartition.self, ServeCoordinator.self])
}

/// Options every service takes. `resolved()` reads them, with their
/// `PIPEMESH_*` variables and defaults, and checks each.
struct ServiceOptions: ParsableArguments {
  @Option(help: "Address to listen on; port 0 picks a free port (default 127.0.0.1:0). [PIPEMESH_LISTEN]")
  var listen: String?

  @Option(help: "Seconds running calls get to finish on shutdown (default 10). [PIPEMESH_GRACE_SECONDS]")
  var graceSeconds: Int?

  @OptionGroup var tls: TLSOptions

  @Option(
    help:
      "Largest message in MiB (default 64). The mesh sends variables in parts of 16 MiB, with their optimizer slots three times that, so give ps tasks and partitions 64 or more. [PIPEMESH_MAX_MESSAGE_MIB]"
  )
  var maxMessageMib: Int?

  @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics; none when unset. [PIPEMESH_METRICS_LISTEN]")
  var metricsListen: String?

  /// The settings, checked: a ValidationError (exit 64) names a bad one.
  func resolved() throws -> ServiceSettings {
    let listen = Settings.text(listen, option: "--listen") ?? "127.0.0.1:0"
    try Settings.checkAddress(listen, option: "--listen")
    let metrics = Settings.text(metricsListen, option: "--metrics-listen")
    if let metrics { try Settings.checkAddress(metrics, option: "--metrics-listen") }
    let maxMessageMiB = try Settings.integer(
      maxMessageMib, option: "--max-message-mib", in: 1...2047,
      default: TransportConfiguration.defaultMaxMessageBytes >> 20)
    let keepalive = (interval: Duration.seconds(30), timeout: Duration.seconds(20))
    return ServiceSettings(
      listen: listen,
      graceSeconds: try Settings.integer(graceSeconds, option: "--grace-seconds", in: 0...3600, default: 10),
      metricsAddress: metrics,
      server: TransportConfiguration(
        tls: try tls.configuration(server: true), maxMessageBytes: maxMessageMiB << 20,
        keepaliveInterval: keepalive.interval, keepaliveTimeout: keepalive.timeout),
      // Members restart within seconds (systemd, Kubernetes): look for them again every 2 s at most.
      client: TransportConfiguration(
        tls: try tls.configuration(server: false), maxMessageBytes: maxMessageMiB << 20,
        keepaliveInterval: keepalive.interval, keepaliveTimeout: keepalive.timeout,
        maxReconnectBackoff: .seconds(2)))
  }
}

/// A service's checked settings.
struct ServiceSettings {
  let listen: String
  let graceSeconds: Int
  let metricsAddress: String?
  /// What the service listens with.
  let server: TransportConfiguration
  /// What it dials other services with: the same certificate, key and CA.
  let client: TransportConfiguration
}

/// TLS from PEM files, for servers and clients alike.
struct TLSOptions: ParsableArguments {
  @Option(help: "PEM certificate chain this side presents. [PIPEMESH_TLS_CERT]")
  var tlsCert: String?

  @Option(help: "PEM private key of --tls-cert. [PIPEMESH_TLS_KEY]")
  var tlsKey: String?

  @Option(
    help: "PEM CA bundle the peer must chain to; on a server it requires client certificates (mTLS). [PIPEMESH_TLS_CA]")
  var tlsCa: String?

  var isEnabled: Bool {
    Settings.text(tlsCert, option: "--tls-cert") != nil || Settings.text(tlsCa, option: "--tls-ca") != nil
  }

  /// TLS from the files given; nil when none is. A missing or unreadable
  /// file is a ValidationError naming its option.
  func configuration(server: Bool) throws -> TLSConfiguration? {
    let tlsCert = Settings.text(tlsCert, option: "--tls-cert")
    let tlsKey = Settings.text(tlsKey, option: "--tls-key")
    let tlsCa = Settings.text(tlsCa, option: "--tls-ca")
    if tlsCert == nil, tlsKey == nil, tlsCa == nil { return nil }
    if server, tlsCert == nil || tlsKey == nil {
      throw ValidationError(
        "a TLS server needs both --tls-cert and --tls-key (or PIPEMESH_TLS_CERT and PIPEMESH_TLS_KEY)")
    }
    if let tlsCert { try Settings.checkReadableFile(tlsCert, option: "--tls-cert") }
    if let tlsKey { try Settings.checkReadableFile(tlsKey, option: "--tls-key") }
    if let tlsCa { try Settings.checkReadableFile(tlsCa, option: "--tls-ca") }
    return try TLSConfiguration(
      certificateFile: tlsCert, keyFile: tlsKey, caFile: tlsCa, requireClientCertificate: server && tlsCa != nil)
  }
}

struct ServePS: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ps",
    abstract: "Run a parameter server task: holds variables, applies pushed gradients, writes checkpoints.",
    discussion: """
      With --checkpoint-dir the task restores the newest readable checkpoint at start, writes one \
      every --checkpoint-seconds while variables change, on a Checkpoint call, and on shutdown. A crash \
      loses at most the updates applied since the last checkpoint.
      """)

  @OptionGroup var service: ServiceOptions

  @Option(help: "Directory for safetensors checkpoints; none when unset. [PIPEMESH_CHECKPOINT_DIR]")
  var checkpointDir: String?

  @Option(help: "Seconds between periodic checkpoints; 0 disables them (default 60). [PIPEMESH_CHECKPOINT_SECONDS]")
  var checkpointSeconds: Int?

  @Option(help: "Checkpoint files to keep (default 3). [PIPEMESH_CHECKPOINT_KEEP]")
  var checkpointKeep: Int?

  @Option(
    help: """
      MiB the variables of all jobs and their optimizer slots may take; a registration beyond it is \
      refused with RESOURCE_EXHAUSTED (default: half the host's or the cgroup's memory). [PIPEMESH_MEMORY_BUDGET_MIB]
      """)
  var memoryBudgetMib: Int?

  @Option(help: "MiB one variable may take (default 4096, at most the budget). [PIPEMESH_MAX_VARIABLE_MIB]")
  var maxVariableMib: Int?

  @Option(
    help: """
      Coordinator (HOST:PORT) to keep a lease with while the task runs: the coordinator then sees the task's \
      health from the lease and a restart at once. The task must be one of the coordinator's --ps, as listed \
      there (see --advertise). A coordinator with tokens needs an admin's token in PIPEMESH_TOKEN. [PIPEMESH_JOIN]
      """)
  var join: String?

  @Option(
    help: "host:port the coordinator's --ps lists this task as; default: the listen address. [PIPEMESH_ADVERTISE]")
  var advertise: String?

  func run() async throws {
    let settings = try service.resolved()
    let checkpointDir = Settings.text(checkpointDir, option: "--checkpoint-dir")
    if let checkpointDir { try Settings.checkWritableDirectory(checkpointDir, option: "--checkpoint-dir") }
    let checkpointSeconds = try Settings.integer(
      checkpointSeconds, option: "--checkpoint-seconds", in: 0...86_400 * 365, default: 60)
    let checkpointKeep = try Settings.integer(checkpointKeep, option: "--checkpoint-keep", in: 1...10_000, default: 3)
    let budgetMiB = try Settings.integer(
      memoryBudgetMib, option: "--memory-budget-mib", in: 1...(1 << 40), default: HostMemory.defaultBudget() >> 20)
    let variableMiB = try Settings.integer(
      maxVariableMib, option: "--max-variable-mib", in: 1...(1 << 40), default: 4096)
    let budget = MemoryBudget(limit: budgetMiB << 20, variableLimit: min(variableMiB, budgetMiB) << 20)
    let join = Settings.text(join, option: "--join")
    if let join { try Settings.checkAddress(join, option: "--join") }
    let advertise = Settings.text(advertise, option: "--advertise")
    if let advertise { try Settings.checkAddress(advertise, option: "--advertise") }

    let host = ServiceHost(role: "ps", settings: settings, memoryBudget: budgetMiB << 20)
    let store = ParameterStore(budget: budget)
    let checkpointer = try checkpointDir.map { try Checkpointer(directory: $0, store: store, keep: checkpointKeep) }
    if let checkpointer {
      for path in checkpointer.removedTemporaries {
        host.log.info("removed \(path), a checkpoint whose write was cut short")
      }
      let (path, skipped) = try await checkpointer.restoreLatest()
      for problem in skipped { host.log.warning("skipped unreadable checkpoint \(problem)") }
      host.log.info("\(path.map { "restored \($0)" } ?? "no checkpoint in \(checkpointer.directory); starting empty")")
    }
    host.log.info("memory budget \(HostMemory.describe(budget.limit)), \(HostMemory.describe(budget.inUse)) in use")
    ParameterServerMetrics.register(store: store, checkpointer: checkpointer, in: host.metrics)
    let periodic = Task {
      if let checkpointer, checkpointSeconds > 0 {
        await checkpointer.runPeriodically(every: .seconds(checkpointSeconds))
      }
    }
    let service = ParameterServerService(store: store, checkpointer: checkpointer)
    let lease = Mutex<Task<Void, Never>?>(nil)
    try await host.run(
      [service],
      status: {
        let stats = try? store.stats(job: "")
        return "\(stats?.variables ?? 0) variables, \(stats?.pushesApplied ?? 0) pushes applied"
      },
      started: { server in
        guard let join else { return }
        let advertised = advertise ?? server.endpoint
        // A warning, not a refusal to start: PIPEMESH_JOIN may come from a file the host's partitions share.
        guard !advertised.hasPrefix("0.0.0.0:"), !advertised.hasPrefix("[::]:") else {
          host.log.warning(
            """
            keeping no lease with the coordinator at \(join): listening on all addresses, the task needs \
            --advertise HOST:PORT, the address the coordinator's --ps lists
            """)
          return
        }
        let member = try PoolMembership(
          coordinator: join, transport: settings.client, endpoint: advertised,
          parameterServer: service.incarnation, log: host.log)
        lease.withLock { $0 = Task { await member.keepJoined() } }
      },
      leaving: { lease.withLock { $0?.cancel() } },
      stopping: {
        periodic.cancel()
        if let checkpointer {
          let written = try await checkpointer.write()
          host.log.info("final checkpoint \(written.path)")
        }
      })
  }
}
