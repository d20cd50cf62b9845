import Synchronization

/// `grpc.health.v1.Health`, answered by every server.
public enum HealthMethods {
  public static let service = "grpc.health.v1.Health"
  public static let check = UnaryMethod<Grpc_Health_V1_HealthCheckRequest, Grpc_Health_V1_HealthCheckResponse>(
    service: service, name: "Check")
  public static let watch = ServerStreamingMethod<
    Grpc_Health_V1_HealthCheckRequest, Grpc_Health_V1_HealthCheckResponse
  >(service: service, name: "Watch")
}

extension RPCChannel {
  /// Whether the server answers a health check within `timeout` (waiting
  /// for a connection meanwhile), with any status: a stopped process, a host
  /// that froze or one that cannot be reached does not (DEADLINE_EXCEEDED,
  /// UNAVAILABLE).
  public func answers(within timeout: Duration) async -> Bool {
    do {
      _ = try await call(HealthMethods.check, .init(), options: CallOptions(timeout: timeout, waitForReady: true))
      return true
    } catch let error as RPCError {
      return error.code != .deadlineExceeded && error.code != .unavailable
    } catch {
      return true
    }
  }
}

/// The standard gRPC health service of one server: what `Check` and `Watch`
/// report for "" (the whole server) and for each service it serves, all
/// SERVING from the start. `Check` is answered on the thread that took the
/// call, so health checks keep answering while every task is busy.
public final class HealthService: RPCService {
  public typealias Status = Grpc_Health_V1_HealthCheckResponse.ServingStatus

  private struct State {
    var statuses: [String: Status]
    /// Open watches by id: the service each follows and where its changes go.
    var watches: [Int: (service: String, changes: AsyncStream<Status>.Continuation)] = [:]
    var nextWatch = 0
    var shutDown = false
  }

  private let state: Mutex<State>

  /// A registry where "" and each of `services` are SERVING.
  public init(serving services: [String]) {
    state = Mutex(
      State(statuses: Dictionary(([""] + services).map { ($0, .serving) }, uniquingKeysWith: { a, _ in a })))
  }

  public var serviceName: String { HealthMethods.service }

  /// Sets what health checks report for `service` ("" is the whole server);
  /// ignored once the server shuts down.
  public func setServing(_ serving: Bool, service: String = "") {
    state.withLock { state in
      guard !state.shutDown else { return }
      let status: Status = serving ? .serving : .notServing
      state.statuses[service] = status
      for watch in state.watches.values where watch.service == service { watch.changes.yield(status) }
    }
  }

  /// Reports every service NOT_SERVING and ends every watch, so that an open
  /// `Watch` does not hold up the server's graceful shutdown.
  public func shutdown() {
    state.withLock { state in
      state.shutDown = true
      for service in state.statuses.keys { state.statuses[service] = .notServing }
      for watch in state.watches.values {
        watch.changes.yield(state.statuses[watch.service] ?? .serviceUnknown)
        watch.changes.finish()
      }
    }
  }

  /// What `Check` answers for `service`; nil for a service the server does not know.
  public func status(of service: String) -> Status? {
    state.withLock { $0.statuses[service] }
  }

  public func register(with router: inout RPCRouter) {
    router.unary(
      HealthMethods.check,
      inline: { [self] request, _ in
        guard let status = status(of: request.service) else {
          throw RPCError(.notFound, "no service named \"\(request.service)\" on this server")
        }
        return .now(.with { $0.status = status })
      })
    router.serverStreaming(HealthMethods.watch) { [self] request, responses, _ in
      let (changes, id) = watch(request.service)
      defer { unwatch(id) }
      for await status in changes {
        try await responses.write(.with { $0.status = status })
      }
      try Task.checkCancellation()
      throw RPCError(.unavailable, "the server is shutting down")
    }
  }

  /// A stream of `service`'s status: the current one, then each change (only
  /// the newest waits while the client reads); it ends when the server shuts down.
  private func watch(_ service: String) -> (AsyncStream<Status>, Int) {
    let (changes, continuation) = AsyncStream<Status>.makeStream(bufferingPolicy: .bufferingNewest(1))
    let id = state.withLock { state in
      continuation.yield(state.statuses[service] ?? .serviceUnknown)
      if state.shutDown { continuation.finish() }
      state.nextWatch += 1
      state.watches[state.nextWatch] = (service, continuation)
      return state.nextWatch
    }
    return (changes, id)
  }

  private func unwatch(_ id: Int) {
    _ = state.withLock { $0.watches.removeValue(forKey: id) }
  }
}
