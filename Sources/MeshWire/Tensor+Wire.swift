import Foundation
import MeshProto
import MeshRPC
import MeshTensor

extension Tensor {
  /// Decodes a wire tensor (one copy of the bytes, no per-element work).
  /// Throws INVALID_ARGUMENT naming `what` when the dtype is not float32 or the
  /// byte count does not match the shape.
  public init(wire: Pipemesh_V1_Tensor, what: @autoclosure () -> String = "tensor") throws {
    guard wire.dtype == .float32 else {
      throw RPCError(.invalidArgument, "\(what()) has dtype \(wire.dtype); Pipemesh computes in DTYPE_FLOAT32")
    }
    guard wire.shape.allSatisfy({ $0 >= 0 && $0 <= Int32.max }) else {
      throw RPCError(.invalidArgument, "\(what()) has an invalid shape \(wire.shape)")
    }
    do {
      try self.init(dtype: .float32, shape: wire.shape.map { Int($0) }, littleEndianBytes: wire.data)
    } catch let error as TensorError {
      throw RPCError(.invalidArgument, "\(what()): \(error.message)")
    }
  }
}

extension Pipemesh_V1_Tensor {
  /// The wire form of a tensor: float32, its shape, its bytes in one copy.
  public init(_ tensor: Tensor) {
    self.init(tensor, data: tensor.littleEndianData)
  }

  /// The wire form of a tensor whose `data` shares the tensor's storage (no
  /// copy): for a message that is serialized and dropped, such as an RPC's
  /// request or answer; its `data` must not be mutated in place.
  public init(sharing tensor: Tensor) {
    self.init(tensor, data: tensor.sharedLittleEndianData)
  }

  private init(_ tensor: Tensor, data: Data) {
    self.init()
    dtype = .float32
    shape = tensor.shape.map { Int64($0) }
    self.data = data
  }
}
