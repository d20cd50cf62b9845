import Foundation
import Logging
import MeshProto
import MeshRPC
import MeshWire

/// Keeps a partition in a coordinator's pool: joins it, renews the lease
/// every third of it, and when the partition stops, leaves the pool and
/// waits until no job runs on it. A ps task keeps a lease the same way.
struct PoolMembership: Sendable {
  let coordinator: RPCClient
  /// The address the coordinator and other services dial this one at.
  let endpoint: String
  /// A ps task's incarnation; nil for a partition.
  let parameterServer: UInt64?
  let log: Logger

  /// `coordinator` (HOST:PORT), reached with `transport` and, when the
  /// environment has one, PIPEMESH_TOKEN; `parameterServer` is a ps task's
  /// incarnation (nil for a partition).
  init(
    coordinator: String, transport: TransportConfiguration, endpoint: String, parameterServer: UInt64? = nil,
    log: Logger
  ) throws {
    var metadata = Metadata()
    if let token = ProcessInfo.processInfo.environment["PIPEMESH_TOKEN"], !token.isEmpty {
      metadata.append("Bearer \(token)", forKey: "authorization")
    }
    self.coordinator = try RPCClient(target: coordinator, transport: transport, metadata: metadata)
    self.endpoint = endpoint
    self.parameterServer = parameterServer
    self.log = log
  }

  /// Joins and renews until cancelled; a refusal or an unreachable
  /// coordinator is logged (once until it changes) and tried again every
  /// 2 s, a ps task's refusal (not listed, not permitted) every 30 s.
  func keepJoined() async {
    var lastProblem: String?
    let request = Pipemesh_V1_JoinPoolRequest.with {
      $0.endpoint = endpoint
      if let parameterServer {
        $0.parameterServer = true
        $0.incarnation = parameterServer
      }
    }
    let what = parameterServer == nil ? "in the pool of" : "keeping a lease with"
    while !Task.isCancelled {
      do {
        let lease = try await coordinator.call(
          CoordinatorMethods.joinPool, request, options: CallOptions(timeout: .seconds(5)))
        if lastProblem != "" { log.info("\(what) the coordinator at \(coordinator.target) as \(endpoint)") }
        lastProblem = ""
        try? await Task.sleep(for: .seconds(max(1, lease.leaseSeconds / 3)))
      } catch {
        let problem = "\(error)"
        if problem != lastProblem {
          log.warning("cannot renew a lease with the coordinator at \(coordinator.target): \(problem)")
        }
        lastProblem = problem
        let refused =
          parameterServer != nil
          && (error as? RPCError).map { [.invalidArgument, .permissionDenied, .failedPrecondition].contains($0.code) }
            ?? false
        try? await Task.sleep(for: .seconds(refused ? 30 : 2))
      }
    }
  }

  /// Leaves the pool, then asks every second until no job runs here, for at
  /// most `wait`.
  func leave(within wait: Duration) async {
    let deadline = ContinuousClock.now + wait
    var told = false
    while ContinuousClock.now < deadline {
      do {
        let answer = try await coordinator.call(
          CoordinatorMethods.leavePool, .with { $0.endpoint = endpoint }, options: CallOptions(timeout: .seconds(5)))
        if answer.job.isEmpty {
          log.info("left the pool of the coordinator at \(coordinator.target)")
          return
        }
        if !told { log.info("leaving the pool: waiting for job \(answer.job) to move off this partition or end") }
        told = true
      } catch {
        log.warning("cannot leave the pool of the coordinator at \(coordinator.target): \(error)")
        return
      }
      try? await Task.sleep(for: .seconds(1))
    }
    log.warning("job still runs here after \(wait); stopping anyway")
  }
}
