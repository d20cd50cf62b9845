import CGRPCShim
import SwiftProtobuf

/// A service a server exposes: it registers a handler for each of its methods.
public protocol RPCService: Sendable {
  /// The full protobuf name, `pipemesh.v1.Diagnostics`: its health status key.
  var serviceName: String { get }
  /// Adds a handler for each of the service's methods.
  func register(with router: inout RPCRouter)
}

/// Collects typed handlers by full method name.
public struct RPCRouter: Sendable {
  var methods: [RegisteredMethod] = []

  public init() {}

  /// Handles a unary method. The handler runs as a Swift task, never on a gRPC
  /// thread; it is cancelled when the call is. Thrown `RPCError`s become the
  /// call's status; other errors become INTERNAL.
  public mutating func unary<Request, Response>(
    _ method: UnaryMethod<Request, Response>,
    _ handler: @escaping @Sendable (Request, ServerContext) async throws -> Response
  ) {
    methods.append(
      RegisteredMethod(path: method.path, kind: PM_METHOD_UNARY) { call in
        do {
          let request = try Request(wireBytes: call.request)
          call.finish(with: try await handler(request, call.context))
        } catch {
          call.finish(with: RPCError(answering: error))
        }
      })
  }

  /// Handles a server-streaming method; the handler writes responses through
  /// the writer and returns to end the stream with OK.
  public mutating func serverStreaming<Request, Response>(
    _ method: ServerStreamingMethod<Request, Response>,
    _ handler: @escaping @Sendable (Request, ResponseWriter<Response>, ServerContext) async throws -> Void
  ) {
    methods.append(
      RegisteredMethod(path: method.path, kind: PM_METHOD_SERVER_STREAMING) { call in
        do {
          let request = try Request(wireBytes: call.request)
          try await handler(request, call.writer(for: Response.self), call.context)
          call.finishStream()
        } catch {
          call.finish(with: RPCError(answering: error))
        }
      })
  }
}

/// A handler as the shim calls it: `run` decodes, calls the typed handler and
/// finishes the call.
final class RegisteredMethod: Sendable {
  let path: String
  let kind: pm_method_kind
  let run: @Sendable (IncomingCall) async -> Void

  init(path: String, kind: pm_method_kind, run: @escaping @Sendable (IncomingCall) async -> Void) {
    self.path = path
    self.kind = kind
    self.run = run
  }

}

/// A registered method as a server serves it: the handler and who observes
/// its calls. The shim calls `entryPoint` with one of these as context.
final class ServedMethod: Sendable {
  let method: RegisteredMethod
  let observer: (any RPCObserver)?

  init(_ method: RegisteredMethod, observer: (any RPCObserver)?) {
    self.method = method
    self.observer = observer
  }

  /// The C entry point: starts a task for the call and returns at once, so
  /// no handler work runs on the gRPC thread.
  static let entryPoint: pm_server_handler = { context, call, request in
    let served = Unmanaged<ServedMethod>.fromOpaque(context!).takeUnretainedValue()
    let incoming = IncomingCall(pointer: call!, request: request, path: served.method.path, observer: served.observer)
    let task = Task { await served.method.run(incoming) }
    incoming.cancelOnCallCancellation(task)
  }
}
