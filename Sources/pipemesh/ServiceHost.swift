import ArgumentParser
import Foundation
import Logging
import MeshOps
import MeshProto
import MeshRPC
import MeshWire
import UnixSignals

/// Runs one Pipemesh service the same way for every role: serve, check that
/// the port answers, tell systemd READY=1 (and keep STATUS= and WATCHDOG=1
/// going), serve metrics, log to the journal or stderr, and on SIGTERM or
/// SIGINT drain calls and stop.
struct ServiceHost {
  let role: String
  let settings: ServiceSettings
  let memoryBudget: Int
  let log: Logger
  let metrics = MetricsRegistry()
  private let notifier = SystemdNotifier()

  /// `memoryBudget`: the bytes the service gives to a model's parameters,
  /// which Describe reports (0: none).
  init(role: String, settings: ServiceSettings, memoryBudget: Int = 0) {
    self.role = role
    self.settings = settings
    self.memoryBudget = memoryBudget
    log = Logger(label: "pipemesh.\(role)") { _ in ServiceLogHandler(role: role) }
  }

  /// Serves `services` until a termination signal. `started` runs once the
  /// server listens (before READY=1); `leaving` on the signal, while calls
  /// are still served; `stopping` after calls drained.
  func run(
    _ services: [any RPCService], status: @escaping @Sendable () -> String,
    started: (RPCServer) throws -> Void = { _ in }, leaving: () async -> Void = {},
    stopping: () async throws -> Void = {}
  ) async throws {
    // Trapped before the port opens, so that a SIGTERM at any time drains.
    let signals = await terminationSignals()
    metrics.gauge("pipemesh_process_resident_bytes", help: "Resident memory of this process, now and at its peak.") {
      let resident = HostMemory.resident()
      return [(["at": "now"], Double(resident.now)), (["at": "peak"], Double(resident.peak))]
    }
    let diagnostics = DiagnosticsService(
      role: role, services: services.map(\.serviceName), memoryBudgetBytes: memoryBudget)
    // Failing to listen is a configuration error (a taken port, an address not
    // on this host, an unusable key): exit 64, so that systemd does not
    // restart the service in a loop.
    let server: RPCServer
    do {
      server = try RPCServer(
        address: settings.listen, transport: settings.server, services: services + [diagnostics],
        reflection: MeshDescriptors.fileDescriptorSet, observer: RPCMetrics(registry: metrics))
    } catch let error as RPCError {
      throw ValidationError("--listen (or PIPEMESH_LISTEN) \(settings.listen): \(error.message)")
    }
    try started(server)
    let metricsServer: MetricsServer?
    do {
      metricsServer = try settings.metricsAddress.map { try MetricsServer(address: $0, registry: metrics) }
    } catch {
      throw ValidationError("--metrics-listen (or PIPEMESH_METRICS_LISTEN) \(settings.metricsAddress ?? ""): \(error)")
    }
    try await waitUntilAnswering(server)
    // Scripts read where it listens from stdout; the log says it is ready (and where metrics are).
    announceListening(server, role: role)
    log.info(
      "ready on \(server.endpoint)\(metricsServer.map { ", metrics on http://\($0.endpoint)/metrics" } ?? "")",
      metadata: ["endpoint": "\(server.endpoint)"])
    notifier.ready(status: "serving on \(server.endpoint); \(status())")
    let notifier = self.notifier
    let watchdog = Task { await notifier.keepWatchdogFed() }
    let statusLines = Task {
      while !Task.isCancelled {
        try? await Task.sleep(for: .seconds(10))
        notifier.status(status())
      }
    }
    await waitForTermination(signals)
    notifier.stopping(status: "leaving")
    await leaving()
    log.info("shutting down: draining calls for up to \(settings.graceSeconds) s")
    notifier.stopping(status: "draining calls")
    statusLines.cancel()
    await server.shutdown(gracePeriod: .seconds(settings.graceSeconds))
    try await stopping()
    watchdog.cancel()
    metricsServer?.stop()
    log.info("stopped")
  }

  /// Returns on SIGTERM or SIGINT, or, when PIPEMESH_EXIT_WITH_PARENT=1 (set
  /// by `pipemesh up` and the tests for their children), once the process
  /// that started this one is gone, so that no service outlives a crashed
  /// parent.
  private func waitForTermination(_ signals: UnixSignalsSequence) async {
    guard environment("EXIT_WITH_PARENT") == "1" else { return await signals.first() }
    let parent = getppid()
    await withTaskGroup(of: Void.self) { group in
      group.addTask { await signals.first() }
      group.addTask {
        while getppid() == parent, !Task.isCancelled { try? await Task.sleep(for: .milliseconds(250)) }
      }
      await group.next()
      group.cancelAll()
    }
    if getppid() != parent { log.info("the parent process is gone: stopping") }
  }

  /// Waits until the server answers: a gRPC health check over plaintext, a
  /// TCP connection when TLS is on (the certificate may not name 127.0.0.1).
  private func waitUntilAnswering(_ server: RPCServer) async throws {
    let wildcard = ["", "0.0.0.0", "[::]", "::"].contains(server.host)
    let host = wildcard ? "127.0.0.1" : server.host
    let local = "\(host):\(server.port)"
    let deadline = ContinuousClock.now + .seconds(30)
    let client = try RPCClient(target: local)
    while ContinuousClock.now < deadline {
      if settings.server.tls != nil {
        if Self.acceptsConnections(host: host, port: server.port) { return }
      } else if (try? await client.call(HealthMethods.check, .init(), options: .init(timeout: .seconds(2))))?.status
        == .serving
      {
        return
      }
      try await Task.sleep(for: .milliseconds(50))
    }
    throw ValidationError("the \(role) service did not answer on \(local) within 30 s")
  }

  private static func acceptsConnections(host: String, port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = UInt16(port).bigEndian
    address.sin_addr.s_addr = inet_addr(host)
    return withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
        connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
      }
    } == 0
  }
}
