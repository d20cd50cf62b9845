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
  /// Checked before each call of the methods registered while it is set.
  private var admission: (@Sendable (String, ServerContext) throws -> Void)?

  public init() {}

  /// Registers, in `body`, methods whose calls `check` sees first (with the
  /// method's path): a thrown error is the call's status, and the request is
  /// not even decoded. For rules a whole service shares, such as who may
  /// call it.
  public mutating func admitting(
    _ check: @escaping @Sendable (_ path: String, ServerContext) throws -> Void, _ body: (inout RPCRouter) -> Void
  ) {
    let outer = admission
    admission = check
    body(&self)
    admission = outer
  }

  /// Handles a unary method. The handler runs as a Swift task, never on a gRPC
  /// thread; it is cancelled when the call is. A thrown error becomes the
  /// call's status through `RPCError(answering:)`.
  public mutating func unary<Request, Response>(
    _ method: UnaryMethod<Request, Response>,
    _ handler: @escaping @Sendable (Request, ServerContext) async throws -> Response
  ) {
    methods.append(
      RegisteredMethod(path: method.path, kind: PM_METHOD_UNARY) { [admission] call in
        do {
          try admission?(method.path, call.context)
          let request = try Request(wireBytes: call.request)
          call.finish(with: try await handler(request, call.context))
        } catch {
          call.finish(with: RPCError(answering: error))
        }
      })
  }

  /// Handles a unary method whose answer is often immediate and cheap
  /// (control-plane calls, diagnostics): `handler` runs on the gRPC thread
  /// that received the call and returns `.now(response)`, or `.later { … }`
  /// to do anything slow or blocking as a Swift task. Never compute a model
  /// step or block in the inline part.
  public mutating func unary<Request, Response>(
    _ method: UnaryMethod<Request, Response>,
    inline handler: @escaping @Sendable (Request, ServerContext) throws -> InlineAnswer<Response>
  ) {
    methods.append(
      RegisteredMethod(
        path: method.path, kind: PM_METHOD_UNARY,
        inline: { [admission] call in
          do {
            try admission?(method.path, call.context)
            switch try handler(try Request(wireBytes: call.request), call.context) {
            case .now(let response):
              call.finish(with: response)
              return nil
            case .later(let work):
              return { @Sendable in
                do { call.finish(with: try await work()) } catch { call.finish(with: RPCError(answering: error)) }
              }
            }
          } catch {
            call.finish(with: RPCError(answering: error))
            return nil
          }
        }))
  }

  /// Handles a server-streaming method; the handler writes responses through
  /// the writer and returns to end the stream with OK (or ends it with its
  /// last response, `ResponseWriter.writeLast`).
  public mutating func serverStreaming<Request, Response>(
    _ method: ServerStreamingMethod<Request, Response>,
    _ handler: @escaping @Sendable (Request, ResponseWriter<Response>, ServerContext) async throws -> Void
  ) {
    methods.append(
      RegisteredMethod(path: method.path, kind: PM_METHOD_SERVER_STREAMING) { [admission] call in
        do {
          try admission?(method.path, call.context)
          let request = try Request(wireBytes: call.request)
          try await handler(request, ResponseWriter<Response>(call: call), call.context)
          call.finishStream()
        } catch {
          call.finish(with: RPCError(answering: error))
        }
      })
  }
}

extension RPCRouter {
  /// Handles a client-streaming method: the handler reads the requests (the
  /// first is there when it starts) and returns the response.
  public mutating func clientStreaming<Request, Response>(
    _ method: ClientStreamingMethod<Request, Response>,
    _ handler: @escaping @Sendable (RequestStream<Request>, ServerContext) async throws -> Response
  ) {
    methods.append(
      RegisteredMethod(path: method.path, kind: PM_METHOD_CLIENT_STREAMING) { [admission] call in
        do {
          try admission?(method.path, call.context)
          call.finish(with: try await handler(RequestStream(call: call), call.context))
        } catch {
          call.finish(with: RPCError(answering: error))
        }
      })
  }
}

extension RPCRouter {
  /// Handles a bidirectional-streaming method: the handler reads the requests
  /// (the first is there when it starts) and writes responses as it goes;
  /// returning ends the call with OK.
  public mutating func bidiStreaming<Request, Response>(
    _ method: BidiStreamingMethod<Request, Response>,
    _ handler:
      @escaping @Sendable (RequestStream<Request>, ResponseWriter<Response>, ServerContext) async throws -> Void
  ) {
    methods.append(
      RegisteredMethod(path: method.path, kind: PM_METHOD_BIDI_STREAMING) { [admission] call in
        do {
          try admission?(method.path, call.context)
          try await handler(RequestStream(call: call), ResponseWriter(call: call), call.context)
          call.finishStream()
        } catch {
          call.finish(with: RPCError(answering: error))
        }
      })
  }
}

/// What an inline handler answers: the response now, or work to run as a task.
public enum InlineAnswer<Response: Sendable>: Sendable {
  case now(Response)
  case later(@Sendable () async throws -> Response)
}

/// A handler as a transport calls it: it decodes, calls the typed handler
/// and finishes the call, as a task (`run`) or first on the thread that took
/// the call (`inline`, which returns the rest, if any, to run as a task).
final class RegisteredMethod: Sendable {
  let path: String
  let kind: pm_method_kind
  let run: (@Sendable (any ServerCall) async -> Void)?
  let inline: (@Sendable (any ServerCall) -> (@Sendable () async -> Void)?)?

  init(path: String, kind: pm_method_kind, run: @escaping @Sendable (any ServerCall) async -> Void) {
    self.path = path
    self.kind = kind
    self.run = run
    inline = nil
  }

  init(
    path: String, kind: pm_method_kind, inline: @escaping @Sendable (any ServerCall) -> (@Sendable () async -> Void)?
  ) {
    self.path = path
    self.kind = kind
    run = nil
    self.inline = inline
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
    if let inline = served.method.inline {
      guard let rest = inline(incoming) else { return }
      incoming.cancelOnCallCancellation(Task { await rest() })
    } else if let run = served.method.run {
      incoming.cancelOnCallCancellation(Task { await run(incoming) })
    }
  }
}
