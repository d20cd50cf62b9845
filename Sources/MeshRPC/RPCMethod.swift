import SwiftProtobuf

/// A unary RPC: one request, one response.
public struct UnaryMethod<Request: Message, Response: Message>: Sendable {
  /// The full method name, `/pipemesh.v1.Diagnostics/Echo`.
  public let path: String

  /// A method of `service` (its full protobuf name) called `name`.
  public init(service: String, name: String) {
    path = "/\(service)/\(name)"
  }
}

extension UnaryMethod {
  /// The method's name, types and kind, untyped.
  public var methodDescription: RPCMethodDescription {
    RPCMethodDescription(
      path: path, request: Request.protoMessageName, response: Response.protoMessageName, serverStreaming: false)
  }
}

/// A client-streaming RPC: a stream of requests, one response.
public struct ClientStreamingMethod<Request: Message, Response: Message>: Sendable {
  /// The full method name, `/pipemesh.v1.Coordinator/UploadModel`.
  public let path: String

  /// A method of `service` (its full protobuf name) called `name`.
  public init(service: String, name: String) {
    path = "/\(service)/\(name)"
  }
}

extension ClientStreamingMethod {
  /// The method's name, types and kind, untyped.
  public var methodDescription: RPCMethodDescription {
    RPCMethodDescription(
      path: path, request: Request.protoMessageName, response: Response.protoMessageName, serverStreaming: false,
      clientStreaming: true)
  }
}

/// A server-streaming RPC: one request, a stream of responses.
public struct ServerStreamingMethod<Request: Message, Response: Message>: Sendable {
  /// The full method name, `/pipemesh.v1.Coordinator/Train`.
  public let path: String

  /// A method of `service` (its full protobuf name) called `name`.
  public init(service: String, name: String) {
    path = "/\(service)/\(name)"
  }
}

extension ServerStreamingMethod {
  /// The method's name, types and kind, untyped.
  public var methodDescription: RPCMethodDescription {
    RPCMethodDescription(
      path: path, request: Request.protoMessageName, response: Response.protoMessageName, serverStreaming: true)
  }
}

/// A method's name, message types and kind, untyped: to list and check methods.
public struct RPCMethodDescription: Sendable, Hashable {
  /// The full method name, `/package.Service/Method`.
  public let path: String
  /// Full protobuf names of the request and response messages.
  public let request: String
  public let response: String
  /// Whether the server answers with a stream.
  public let serverStreaming: Bool
  /// Whether the client sends a stream.
  public let clientStreaming: Bool

  public init(path: String, request: String, response: String, serverStreaming: Bool, clientStreaming: Bool = false) {
    self.path = path
    self.request = request
    self.response = response
    self.serverStreaming = serverStreaming
    self.clientStreaming = clientStreaming
  }
}
