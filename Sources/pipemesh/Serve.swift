import ArgumentParser
import Foundation
import MeshCoordinator
import MeshOps
import MeshPS
import MeshRPC

struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run one Pipemesh service until SIGTERM or SIGINT.",
    subcommands: [ServePS.self, ServePartition.self, ServeCoordinator.self])
}

/// Options every service takes.
struct ServiceOptions: ParsableArguments {
  @Option(help: "Address to listen on; port 0 picks a free port. [PIPEMESH_LISTEN]")
  var listen: String = environment("LISTEN") ?? "127.0.0.1:0"

  @Option(help: "Seconds running calls get to finish on shutdown. [PIPEMESH_GRACE_SECONDS]")
  var graceSeconds: Int = environment("GRACE_SECONDS").flatMap(Int.init) ?? 10

  @OptionGroup var tls: TLSOptions

  @Option(help: "Largest message in MiB. [PIPEMESH_MAX_MESSAGE_MIB]")
  var maxMessageMib: Int = environment("MAX_MESSAGE_MIB").flatMap(Int.init) ?? 256

  @Option(help: "Serve Prometheus metrics at http://HOST:PORT/metrics; none when unset. [PIPEMESH_METRICS_LISTEN]")
  var metricsListen: String?

  var metricsAddress: String? { metricsListen ?? environment("METRICS_LISTEN") }

  /// What the service listens with.
  func transport() throws -> TransportConfiguration {
    TransportConfiguration(
      tls: try tls.configuration(server: true), maxMessageBytes: maxMessageMib << 20,
      keepaliveInterval: .seconds(30), keepaliveTimeout: .seconds(20))
  }

  /// What the service dials other services with: the same certificate, key and CA.
  func clientTransport() throws -> TransportConfiguration {
    TransportConfiguration(
      tls: try tls.configuration(server: false), maxMessageBytes: maxMessageMib << 20,
      keepaliveInterval: .seconds(30), keepaliveTimeout: .seconds(20))
  }
}

/// TLS from PEM files, for servers and clients alike.
struct TLSOptions: ParsableArguments {
  @Option(help: "PEM certificate chain this side presents. [PIPEMESH_TLS_CERT]")
  var tlsCert: String?

  @Option(help: "PEM private key of --tls-cert. [PIPEMESH_TLS_KEY]")
  var tlsKey: String?

  @Option(help: "PEM CA bundle the peer must chain to; on a server it requires client certificates (mTLS). [PIPEMESH_TLS_CA]")
  var tlsCa: String?

  var isEnabled: Bool { (tlsCert ?? environment("TLS_CERT")) != nil || (tlsCa ?? environment("TLS_CA")) != nil }

  func configuration(server: Bool) throws -> TLSConfiguration? {
    let tlsCert = tlsCert ?? environment("TLS_CERT")
    let tlsKey = tlsKey ?? environment("TLS_KEY")
    let tlsCa = tlsCa ?? environment("TLS_CA")
    if tlsCert == nil, tlsKey == nil, tlsCa == nil { return nil }
    if server, tlsCert == nil || tlsKey == nil {
      throw ValidationError("a TLS server needs both --tls-cert and --tls-key")
    }
    return try TLSConfiguration(
      certificateFile: tlsCert, keyFile: tlsKey, caFile: tlsCa, requireClientCertificate: server && tlsCa != nil)
  }
}

struct ServePS: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "ps",
    abstract: "Run a parameter server task: holds variables, applies pushed gradients, writes checkpoints.",
    discussion: """
      With --checkpoint-dir the task restores the newest readable checkpoint at start, writes one
      every --checkpoint-seconds while variables change, on a Checkpoint call, and on shutdown. A crash
      loses at most the updates applied since the last checkpoint.
      """)

  @OptionGroup var service: ServiceOptions

  @Option(help: "Directory for safetensors checkpoints; none when unset. [PIPEMESH_CHECKPOINT_DIR]")
  var checkpointDir: String?

  @Option(help: "Seconds between periodic checkpoints; 0 disables them. [PIPEMESH_CHECKPOINT_SECONDS]")
  var checkpointSeconds: Int = environment("CHECKPOINT_SECONDS").flatMap(Int.init) ?? 60

  @Option(help: "Checkpoint files to keep. [PIPEMESH_CHECKPOINT_KEEP]")
  var checkpointKeep: Int = environment("CHECKPOINT_KEEP").flatMap(Int.init) ?? 3

  func run() async throws {
    let host = ServiceHost(role: "ps", options: service)
    let store = ParameterStore()
    let checkpointer = try (checkpointDir ?? environment("CHECKPOINT_DIR")).map {
      try Checkpointer(directory: $0, store: store, keep: checkpointKeep)
    }
    if let checkpointer {
      let (path, skipped) = try await checkpointer.restoreLatest()
      for problem in skipped { host.log.log("skipped unreadable checkpoint \(problem)", priority: .warning) }
      host.log.log(path.map { "restored \($0)" } ?? "no checkpoint in \(checkpointer.directory); starting empty")
    }
    ParameterServerMetrics.register(store: store, checkpointer: checkpointer, in: host.metrics)
    let periodic = Task {
      if let checkpointer, checkpointSeconds > 0 { await checkpointer.runPeriodically(every: .seconds(checkpointSeconds)) }
    }
    try await host.run(
      [ParameterServerService(store: store, checkpointer: checkpointer)],
      status: {
        let stats = try? store.stats(job: "")
        return "\(stats?.variables ?? 0) variables, \(stats?.pushesApplied ?? 0) pushes applied"
      },
      stopping: {
        periodic.cancel()
        if let checkpointer { host.log.log("final checkpoint \(try await checkpointer.write().path)") }
      })
  }
}
