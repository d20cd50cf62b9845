import MeshData
import MeshRPC
import MeshTensor

// The one place where the errors of the modules below the services meet
// gRPC statuses: a handler or an in-process call that throws one answers
// with the status given here (`RPCError(answering:)`). The services' own
// errors are mapped beside their definitions.

extension WireError: RPCErrorConvertible {
  public var rpcError: RPCError { RPCError(.invalidArgument, message, cause: self) }

  /// The status for a peer's answer that does not decode: DATA_LOSS, since
  /// the bytes were lost or corrupted on their way, not asked for wrongly.
  public func answered(by peer: String) -> RPCError {
    RPCError(.dataLoss, "\(peer) answered: \(message)", cause: self)
  }
}

extension ModelSpecError: RPCErrorConvertible {
  public var rpcError: RPCError { RPCError(.invalidArgument, "invalid model: \(message)", cause: self) }
}

extension TensorError: RPCErrorConvertible {
  public var rpcError: RPCError { RPCError(.invalidArgument, message, cause: self) }
}

extension DatasetError: RPCErrorConvertible {
  /// NOT_FOUND for a missing file, PERMISSION_DENIED for one outside the
  /// data directory, INVALID_ARGUMENT otherwise.
  public var rpcError: RPCError {
    switch code {
    case .fileNotFound: RPCError(.notFound, message, cause: self)
    case .outsideDataDirectory: RPCError(.permissionDenied, message, cause: self)
    default: RPCError(.invalidArgument, message, cause: self)
    }
  }
}
