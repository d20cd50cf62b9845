import Foundation
import Hummingbird
import Logging
import MeshProto
import MeshRPC
import MeshWire
import SwiftProtobuf
import Synchronization

/// The coordinator's web page: the mesh's jobs with live loss and accuracy
/// curves and each job's pipeline timeline, the pool's members and their
/// health, and the models; and the JSON it draws them from (`/api/…`).
///
/// Every read is a call to the coordinator's own API, carrying the
/// browser's `Authorization` header: a user sees on the page exactly what
/// the API would show them, no more.
public final class Dashboard: Sendable {
  /// The bound `host:port`.
  public let endpoint: String
  private let server: Task<Void, any Error>

  private init(endpoint: String, server: Task<Void, any Error>) {
    self.endpoint = endpoint
    self.server = server
  }

  /// Serves on `address` (`host:port`, port 0 picks one) what `coordinator`
  /// answers; returns once it listens, or throws why it cannot.
  public static func start(address: String, coordinator: any RPCChannel, logger: Logger) async throws -> Dashboard {
    guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
      (0...65535).contains(port)
    else { throw DashboardError("dashboard address \(address) is not HOST:PORT") }
    let host = String(address[..<colon])
    let listening = Listening()
    let application = Application(
      router: router(coordinator, loopbackOnly: isLoopback(address)),
      configuration: .init(
        address: .hostname(host.trimmingCharacters(in: CharacterSet(charactersIn: "[]")), port: port), serverName: nil),
      onServerRunning: { channel in listening.resume(with: .success(channel.localAddress?.port ?? port)) },
      logger: logger)
    let server = Task { try await application.run() }
    // A server that fails to bind ends before it runs.
    Task {
      let outcome = await server.result
      listening.resume(with: .failure(DashboardError(outcome.failureDescription ?? "the dashboard stopped at once")))
    }
    do {
      let bound = try await listening.port()
      return Dashboard(endpoint: "\(host):\(bound)", server: server)
    } catch {
      server.cancel()
      throw DashboardError("cannot serve the dashboard on \(address): \(error)")
    }
  }

  /// Whether `address` (`host:port`) is on the loopback interface only.
  public static func isLoopback(_ address: String) -> Bool {
    guard let colon = address.lastIndex(of: ":") else { return false }
    let host = address[..<colon]
    if host == "localhost" || host == "[::1]" { return true }
    let parts = host.split(separator: ".", omittingEmptySubsequences: false)
    return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
  }

  /// Stops serving.
  public func stop() async {
    server.cancel()
    _ = await server.result
  }

  /// The routes; a dashboard on loopback answers only requests that name
  /// a loopback host, so that a web page elsewhere cannot reach it through a
  /// name it rebinds to 127.0.0.1 (DNS rebinding).
  private static func router(_ coordinator: any RPCChannel, loopbackOnly: Bool) -> Router<BasicRequestContext> {
    let router = Router()
    router.middlewares.add(HostCheck(loopbackOnly: loopbackOnly))
    router.get("/") { _, _ in page(DashboardPage.html, type: "text/html; charset=utf-8") }
    router.get("/dashboard.js") { _, _ in page(DashboardPage.script, type: "text/javascript; charset=utf-8") }
    let api = CoordinatorReads(coordinator: coordinator)
    router.get("/api/jobs") { request, _ in
      await api.answer(request) {
        try await $0.call(CoordinatorMethods.listJobs, .with { $0.pageSize = 100 }, options: $1)
      }
    }
    router.get("/api/jobs/:job") { request, context in
      let job = context.parameters.get("job") ?? ""
      return await api.answer(request) {
        try await $0.call(
          CoordinatorMethods.getJob,
          .with {
            $0.job = job
            $0.history = true
          }, options: $1)
      }
    }
    router.get("/api/pool") { request, _ in
      await api.answer(request) { try await $0.call(CoordinatorMethods.getPool, .init(), options: $1) }
    }
    router.get("/api/models") { request, _ in
      await api.answer(request) { try await $0.call(CoordinatorMethods.listModels, .init(), options: $1) }
    }
    return router
  }

  private static func page(_ text: String, type: String) -> Response {
    var headers = securityHeaders
    headers[.contentType] = type
    return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
  }

  /// Nothing from elsewhere: the page's own script, its inline styles, and
  /// calls back to this server.
  static let securityHeaders: HTTPFields = [
    .contentSecurityPolicy:
      "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
      + "frame-ancestors 'none'",
    .xContentTypeOptions: "nosniff",
    .init("Referrer-Policy")!: "no-referrer",
    .cacheControl: "no-store",
  ]
}

/// Refuses a request whose Host is not a loopback name, when the dashboard
/// listens on loopback.
private struct HostCheck: RouterMiddleware {
  typealias Context = BasicRequestContext
  let loopbackOnly: Bool

  func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
    -> Response
  {
    guard loopbackOnly, let authority = request.head.authority else { return try await next(request, context) }
    // HOST, HOST:PORT, [::1] or [::1]:PORT.
    let withPort = authority.hasSuffix("]") || !authority.contains(":") ? authority + ":0" : authority
    if Dashboard.isLoopback(withPort) { return try await next(request, context) }
    return Response(
      status: .forbidden, headers: Dashboard.securityHeaders,
      body: .init(byteBuffer: ByteBuffer(string: "this dashboard answers requests for 127.0.0.1 or localhost only\n")))
  }
}

/// Calls to the coordinator on behalf of a browser, answered as JSON.
private struct CoordinatorReads: Sendable {
  let coordinator: any RPCChannel

  private static let json: JSONEncodingOptions = {
    var options = JSONEncodingOptions()
    options.alwaysPrintInt64sAsNumbers = true
    options.preserveProtoFieldNames = true
    return options
  }()

  /// The message `call` returns, or the call's error with the HTTP status
  /// that fits its gRPC code.
  func answer(
    _ request: Request, _ call: (any RPCChannel, CallOptions) async throws -> some SwiftProtobuf.Message
  ) async -> Response {
    var metadata = Metadata()
    if let authorization = request.headers[.authorization] { metadata.append(authorization, forKey: "authorization") }
    var headers = Dashboard.securityHeaders
    headers[.contentType] = "application/json"
    do {
      let message = try await call(coordinator, CallOptions(timeout: .seconds(10), metadata: metadata))
      return Response(
        status: .ok, headers: headers,
        body: .init(byteBuffer: ByteBuffer(string: try message.jsonString(options: Self.json))))
    } catch {
      let failure = RPCError(answering: error)
      let body =
        (try? JSONSerialization.data(withJSONObject: ["code": "\(failure.code)", "message": failure.message]))
        ?? Data()
      return Response(
        status: Self.status(failure.code), headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
  }

  private static func status(_ code: RPCError.Code) -> HTTPResponse.Status {
    switch code {
    case .unauthenticated: .unauthorized
    case .permissionDenied: .forbidden
    case .notFound: .notFound
    case .invalidArgument, .failedPrecondition, .outOfRange: .badRequest
    case .unavailable: .serviceUnavailable
    case .deadlineExceeded: .gatewayTimeout
    default: .internalServerError
    }
  }
}

/// The port a starting server bound, told once.
private final class Listening: Sendable {
  private let state = Mutex<(outcome: Result<Int, any Error>?, waiter: CheckedContinuation<Int, any Error>?)>(
    (nil, nil))

  func resume(with outcome: Result<Int, any Error>) {
    let waiter = state.withLock { state -> CheckedContinuation<Int, any Error>? in
      guard state.outcome == nil else { return nil }
      state.outcome = outcome
      defer { state.waiter = nil }
      return state.waiter
    }
    waiter?.resume(with: outcome)
  }

  func port() async throws -> Int {
    try await withCheckedThrowingContinuation { continuation in
      let outcome = state.withLock { state -> Result<Int, any Error>? in
        if state.outcome == nil { state.waiter = continuation }
        return state.outcome
      }
      if let outcome { continuation.resume(with: outcome) }
    }
  }
}

extension Result {
  fileprivate var failureDescription: String? {
    if case .failure(let error) = self { return "\(error)" }
    return nil
  }
}

/// A dashboard that cannot start.
public struct DashboardError: Error, CustomStringConvertible {
  public let description: String
  init(_ description: String) { self.description = description }
}
