import ArgumentParser
import Foundation
import Logging
import MeshOps
import MeshProto
import MeshRPC
import MeshWire
import ServiceLifecycle
import Synchronization

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
  fileprivate let notifier = SystemdNotifier()

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
  ///
  /// The pieces run as a ServiceGroup (swift-service-lifecycle), which traps
  /// SIGTERM and SIGINT before any of them starts, so a signal at any time
  /// drains: the server, and beside it the systemd keepalive (WATCHDOG=1 and
  /// STATUS=), which the group stops only after the server has drained.
  func run(
    _ services: [any RPCService], status: @escaping @Sendable () -> String,
    started: @escaping @Sendable (RPCServer) throws -> Void = { _ in },
    leaving: @escaping @Sendable () async -> Void = {},
    stopping: @escaping @Sendable () async throws -> Void = {}
  ) async throws {
    metrics.gauge("pipemesh_process_resident_bytes", help: "Resident memory of this process, now and at its peak.") {
      let resident = HostMemory.resident()
      return [(["at": "now"], Double(resident.now)), (["at": "peak"], Double(resident.peak))]
    }
    let diagnostics = DiagnosticsService(
      role: role, services: services.map(\.serviceName), memoryBudgetBytes: memoryBudget)
    let (ready, markReady) = AsyncStream<Void>.makeStream()
    let phase = ServingPhase()
    let serving = ServingLifecycle(
      host: self, services: services + [diagnostics], status: status, started: started, leaving: leaving,
      stopping: stopping, ready: markReady, phase: phase)
    var lifecycle: [ServiceGroupConfiguration.ServiceConfiguration] = [
      // Stopped by the group after the server drained; should it end sooner, the server goes on.
      .init(
        service: SystemdKeepalive(notifier: notifier, status: status, ready: ready, phase: phase),
        successTerminationBehavior: .ignore),
      .init(service: serving, successTerminationBehavior: .gracefullyShutdownGroup),
    ]
    // Set by `pipemesh up` and the tests for their children, so that no
    // service outlives a crashed parent.
    if environment("EXIT_WITH_PARENT") == "1" {
      lifecycle.append(.init(service: ParentWatch(log: log), successTerminationBehavior: .gracefullyShutdownGroup))
    }
    try await ServiceGroup(
      configuration: .init(services: lifecycle, gracefulShutdownSignals: [.sigterm, .sigint], logger: log)
    ).run()
  }

  /// Serves until the group shuts down, then leaves, drains and stops.
  private struct ServingLifecycle: Service {
    let host: ServiceHost
    let services: [any RPCService]
    let status: @Sendable () -> String
    let started: @Sendable (RPCServer) throws -> Void
    let leaving: @Sendable () async -> Void
    let stopping: @Sendable () async throws -> Void
    /// Told once systemd has heard READY=1.
    let ready: AsyncStream<Void>.Continuation
    let phase: ServingPhase

    func run() async throws {
      let (settings, log, notifier) = (host.settings, host.log, host.notifier)
      // Failing to listen is a configuration error (a taken port, an address not
      // on this host, an unusable key): exit 64, so that systemd does not
      // restart the service in a loop.
      let server: RPCServer
      do {
        server = try RPCServer(
          address: settings.listen, transport: settings.server, services: services,
          reflection: MeshDescriptors.fileDescriptorSet, observer: RPCMetrics(registry: host.metrics))
      } catch let error as RPCError {
        throw ValidationError("--listen (or PIPEMESH_LISTEN) \(settings.listen): \(error.message)")
      }
      try started(server)
      let metricsServer: MetricsServer?
      do {
        metricsServer = try settings.metricsAddress.map { try MetricsServer(address: $0, registry: host.metrics) }
      } catch {
        throw ValidationError(
          "--metrics-listen (or PIPEMESH_METRICS_LISTEN) \(settings.metricsAddress ?? ""): \(error)")
      }
      try await host.waitUntilAnswering(server)
      // Scripts read where it listens from stdout; the log says it is ready (and where metrics are).
      announceListening(server, role: host.role)
      log.info(
        "ready on \(server.endpoint)\(metricsServer.map { ", metrics on http://\($0.endpoint)/metrics" } ?? "")",
        metadata: ["endpoint": "\(server.endpoint)"])
      notifier.ready(status: "serving on \(server.endpoint); \(status())")
      ready.yield()
      // Cancelled (another piece failed) rather than shut down: drain all the same.
      try? await gracefulShutdown()
      phase.leave(notifier)
      await leaving()
      log.info("shutting down: draining calls for up to \(settings.graceSeconds) s")
      notifier.stopping(status: "draining calls")
      await server.shutdown(gracePeriod: .seconds(settings.graceSeconds))
      try await stopping()
      metricsServer?.stop()
      log.info("stopped")
    }
  }

  /// From READY=1, pings systemd's watchdog and refreshes STATUS= every
  /// 10 s until the group stops it, after the server drained.
  private struct SystemdKeepalive: Service {
    let notifier: SystemdNotifier
    let status: @Sendable () -> String
    let ready: AsyncStream<Void>
    let phase: ServingPhase

    func run() async throws {
      await cancelWhenGracefulShutdown {
        var serving = ready.makeAsyncIterator()
        guard await serving.next() != nil, !Task.isCancelled else { return }
        await withDiscardingTaskGroup { group in
          group.addTask { await notifier.keepWatchdogFed() }
          group.addTask {
            while !Task.isCancelled {
              try? await Task.sleep(for: .seconds(10))
              // Once leaving, STATUS= says so ("leaving", "draining calls") until the end; the
              // loop goes on until the group stops it (a piece that ends would end the group).
              phase.report(status, to: notifier)
            }
          }
        }
      }
    }
  }

  /// Whether the server has begun to leave; what systemd hears of it is
  /// told under the same lock, so a status line cannot follow "leaving".
  private final class ServingPhase: Sendable {
    private let leaving = Mutex(false)

    /// Tells systemd `status()` while serving, nothing once leaving.
    func report(_ status: () -> String, to notifier: SystemdNotifier) {
      leaving.withLock { leaving in
        if !leaving { notifier.status(status()) }
      }
    }

    func leave(_ notifier: SystemdNotifier) {
      leaving.withLock { leaving in
        leaving = true
        notifier.stopping(status: "leaving")
      }
    }
  }

  /// Returns once the process that started this one is gone, which shuts the
  /// group down.
  private struct ParentWatch: Service {
    let log: Logger

    func run() async throws {
      let parent = getppid()
      await cancelWhenGracefulShutdown {
        while getppid() == parent, !Task.isCancelled { try? await Task.sleep(for: .milliseconds(250)) }
      }
      if getppid() != parent { log.info("the parent process is gone: stopping") }
    }
  }

  /// Waits until the server answers: a gRPC health check over plaintext, a
  /// TCP connection when TLS is on (the certificate may not name 127.0.0.1).
  fileprivate func waitUntilAnswering(_ server: RPCServer) async throws {
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
