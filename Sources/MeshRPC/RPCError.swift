/// The error of every RPC: a gRPC status code and a message a person can act on.
public struct RPCError: Error, Sendable, CustomStringConvertible {
  /// A gRPC status code other than OK.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    /// The code's number on the wire.
    public let rawValue: Int

    /// Wraps a wire status code; any value is kept, known or not.
    public init(rawValue: Int) { self.rawValue = rawValue }

    public static let cancelled = Code(rawValue: 1)
    public static let unknown = Code(rawValue: 2)
    public static let invalidArgument = Code(rawValue: 3)
    public static let deadlineExceeded = Code(rawValue: 4)
    public static let notFound = Code(rawValue: 5)
    public static let alreadyExists = Code(rawValue: 6)
    public static let permissionDenied = Code(rawValue: 7)
    public static let resourceExhausted = Code(rawValue: 8)
    public static let failedPrecondition = Code(rawValue: 9)
    public static let aborted = Code(rawValue: 10)
    public static let outOfRange = Code(rawValue: 11)
    public static let unimplemented = Code(rawValue: 12)
    public static let `internal` = Code(rawValue: 13)
    public static let unavailable = Code(rawValue: 14)
    public static let dataLoss = Code(rawValue: 15)
    public static let unauthenticated = Code(rawValue: 16)

    private static let names = [
      "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
      "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
      "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
      "UNAUTHENTICATED",
    ]

    /// The canonical name, `INVALID_ARGUMENT`.
    public var description: String {
      (1...16).contains(rawValue) ? Self.names[rawValue - 1] : "CODE_\(rawValue)"
    }
  }

  public var code: Code
  public var message: String
  /// What went wrong underneath, when known.
  public var cause: (any Error)?

  public init(_ code: Code, _ message: String, cause: (any Error)? = nil) {
    self.code = code
    self.message = message
    self.cause = cause
  }

  public var description: String { "\(code): \(message)" }

  /// The longest status message a server sends, in UTF-8 bytes; a longer
  /// one is cut and marked. gRPC carries the message percent-encoded in a
  /// trailer, and a trailer over the peer's metadata limit (8 KiB by
  /// default) would replace the real status with RESOURCE_EXHAUSTED.
  public static let maxMessageBytes = 2048

  /// The status a handler's error is answered with: RPC errors as they are,
  /// a domain error by its own mapping, cancellation as CANCELLED, anything
  /// else as INTERNAL naming the error.
  public init(answering error: any Error) {
    switch error {
    case let error as RPCError: self = error
    case let error as any RPCErrorConvertible: self = error.rpcError
    case is CancellationError: self.init(.cancelled, "the call was cancelled")
    default: self.init(.internal, "the server failed: \(error)", cause: error)
    }
  }
}

/// A domain error that says which status answers it. Modules throw their own
/// errors, free of gRPC; each module's conformances map them in one place:
/// MeshWire's `ErrorStatus.swift` for the modules below the services, and
/// `ParameterServerError`, `StageError` and `CoordinatorError` beside their
/// definitions (`ModuleError`). Every server and in-process call answers
/// through them.
public protocol RPCErrorConvertible: Error {
  /// The status and message a caller gets for this error.
  var rpcError: RPCError { get }
}

extension RPCError {
  /// How a record or a log names `error`: by the status it is answered with
  /// where it has one (`NOT_FOUND: …`), otherwise as it describes itself.
  public static func describing(_ error: any Error) -> String {
    switch error {
    case let error as RPCError: "\(error)"
    case let error as any RPCErrorConvertible: "\(error.rpcError)"
    default: "\(error)"
    }
  }
}

/// The kinds of a module's own errors. `status` is the one place where the
/// module's errors meet gRPC statuses.
public protocol ErrorKind: Sendable, Equatable {
  /// The status a caller gets for an error of this kind.
  var status: RPCError.Code { get }
}

/// A module's own error: a kind in the module's terms and a message a person
/// can act on (`StageError` is `ModuleError<StageErrorKind>`).
public struct ModuleError<Kind: ErrorKind>: RPCErrorConvertible, Equatable, CustomStringConvertible {
  public let kind: Kind
  public let message: String

  public init(_ kind: Kind, _ message: String) { (self.kind, self.message) = (kind, message) }

  public var rpcError: RPCError { RPCError(kind.status, message, cause: self) }
  public var description: String { message }
}
