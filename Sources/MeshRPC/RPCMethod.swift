import SwiftProtobuf

/// Which sides of a method send a stream of messages rather than one.
public protocol RPCMethodKind: Sendable {
  static var clientStreams: Bool { get }
  static var serverStreams: Bool { get }
}

/// One request, one response.
public enum Unary: RPCMethodKind {
  public static let clientStreams = false
  public static let serverStreams = false
}

/// One request, a stream of responses.
public enum ServerStreaming: RPCMethodKind {
  public static let clientStreams = false
  public static let serverStreams = true
}

/// A stream of requests, one response.
public enum ClientStreaming: RPCMethodKind {
  public static let clientStreams = true
  public static let serverStreams = false
}

/// A stream of requests, a stream of responses.
public enum BidiStreaming: RPCMethodKind {
  public static let clientStreams = true
  public static let serverStreams = true
}

/// A typed RPC method: its full name, message types and kind.
public struct RPCMethod<Request: Message, Response: Message, Kind: RPCMethodKind>: Sendable {
  /// The full method name, `/pipemesh.v1.Diagnostics/Echo`.
  public let path: String

  /// A method of `service` (its full protobuf name) called `name`.
  public init(service: String, name: String) {
    path = "/\(service)/\(name)"
  }

  /// The method's name, types and kind, untyped.
  public var methodDescription: RPCMethodDescription {
    RPCMethodDescription(
      path: path, request: Request.protoMessageName, response: Response.protoMessageName,
      serverStreaming: Kind.serverStreams, clientStreaming: Kind.clientStreams)
  }
}

public typealias UnaryMethod<Request: Message, Response: Message> = RPCMethod<Request, Response, Unary>
public typealias ServerStreamingMethod<Request: Message, Response: Message> = RPCMethod<
  Request, Response, ServerStreaming
>
public typealias ClientStreamingMethod<Request: Message, Response: Message> = RPCMethod<
  Request, Response, ClientStreaming
>
public typealias BidiStreamingMethod<Request: Message, Response: Message> = RPCMethod<Request, Response, BidiStreaming>

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
