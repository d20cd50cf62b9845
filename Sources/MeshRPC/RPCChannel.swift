import SwiftProtobuf

/// A connection to one server that typed calls go over: the seam between a
/// service's logic and the transport. `RPCClient` carries calls over gRPC,
/// `InProcessChannel` to a server in the same process.
public protocol RPCChannel: Sendable {
  /// The endpoint dialled, `127.0.0.1:7000`.
  var target: String { get }

  /// Calls a unary method. Throws `RPCError` with the call's status;
  /// cancelling the task cancels the call.
  func call<Request, Response>(
    _ method: UnaryMethod<Request, Response>, _ request: Request, options: CallOptions
  ) async throws -> Response

  /// Calls a server-streaming method. The call starts when iteration does;
  /// dropping the iterator early cancels it.
  func stream<Request, Response>(
    _ method: ServerStreamingMethod<Request, Response>, _ request: Request, options: CallOptions
  ) -> ResponseStream<Response>

  /// Calls a client-streaming method: `requests` writes the requests, the
  /// stream ends when it returns, and the call answers the response. A
  /// server that answers early (an error) ends the call: the writes throw
  /// and the call throws the server's status.
  func clientStream<Request, Response>(
    _ method: ClientStreamingMethod<Request, Response>, options: CallOptions,
    requests: @Sendable (RequestWriter<Request>) async throws -> Void
  ) async throws -> Response

  /// Connects again at once if the channel is waiting to retry a failed
  /// connection, and waits until it is connected (false when `timeout`
  /// passed first): calls to a peer known to be back then reach it instead
  /// of failing fast until the wait would have ended.
  func reconnect(timeout: Duration) async -> Bool
}

extension RPCChannel {
  /// Calls a unary method with default options.
  public func call<Request, Response>(
    _ method: UnaryMethod<Request, Response>, _ request: Request
  ) async throws -> Response {
    try await call(method, request, options: CallOptions())
  }

  /// Calls a server-streaming method with default options.
  public func stream<Request, Response>(
    _ method: ServerStreamingMethod<Request, Response>, _ request: Request
  ) -> ResponseStream<Response> {
    stream(method, request, options: CallOptions())
  }
}

/// Opens channels by endpoint: how a service reaches its peers (a partition
/// its ps tasks and neighbours, the coordinator its partitions).
public protocol RPCDialer: Sendable {
  func channel(to target: String) throws -> any RPCChannel
}

/// Dials over gRPC with one transport configuration (TLS, message limits).
public struct GRPCDialer: RPCDialer {
  public let transport: TransportConfiguration

  public init(transport: TransportConfiguration = .init()) {
    self.transport = transport
  }

  public func channel(to target: String) throws -> any RPCChannel {
    try RPCClient(target: target, transport: transport)
  }
}
