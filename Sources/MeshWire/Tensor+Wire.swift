import Foundation
import MeshProto
import MeshTensor

extension Tensor {
  /// Decodes a wire tensor (one copy of the bytes, no per-element work).
  /// Throws a `WireError` naming `what` when the dtype is not float32 or the
  /// byte count does not match the shape.
  public init(wire: Pipemesh_V1_Tensor, what: @autoclosure () -> String = "tensor") throws {
    guard wire.dtype == .float32 else {
      throw WireError("\(what()) has dtype \(wire.dtype); Pipemesh computes in DTYPE_FLOAT32")
    }
    guard wire.shape.allSatisfy({ $0 >= 0 && $0 <= Int32.max }) else {
      throw WireError("\(what()) has an invalid shape \(wire.shape)")
    }
    do {
      try self.init(dtype: .float32, shape: wire.shape.map { Int($0) }, littleEndianBytes: wire.data)
    } catch let error as TensorError {
      throw WireError("\(what()): \(error.message)")
    }
  }
}

extension Tensor {
  /// Decodes training targets: float32 as they are, or DTYPE_INT32 and
  /// DTYPE_INT64 integers (class labels, integer targets) as float32, which
  /// holds each exactly up to ±2^24; a `WireError` naming `what` beyond.
  public init(targets wire: Pipemesh_V1_Tensor, what: @autoclosure () -> String) throws {
    let width: Int
    switch wire.dtype {
    case .int32: width = 4
    case .int64: width = 8
    default:
      try self.init(wire: wire, what: what())
      return
    }
    guard wire.shape.allSatisfy({ $0 >= 0 && $0 <= Int32.max }),
      let count = Tensor.checkedCount(of: wire.shape.map { Int($0) }),
      count.multipliedReportingOverflow(by: width)
        == (wire.data.count, false)
    else {
      throw WireError(
        "\(what()) of dtype \(wire.dtype) and shape \(wire.shape) needs \(width) bytes an element; it has \(wire.data.count) bytes"
      )
    }
    let exact: Int64 = 1 << 24
    var scalars = [Float](repeating: 0, count: count)
    try wire.data.withUnsafeBytes { bytes in
      for index in 0..<count {
        let value =
          width == 4
          ? Int64(Int32(littleEndian: bytes.loadUnaligned(fromByteOffset: index * 4, as: Int32.self)))
          : Int64(littleEndian: bytes.loadUnaligned(fromByteOffset: index * 8, as: Int64.self))
        guard value >= -exact, value <= exact else {
          throw WireError(
            "\(what()) holds \(value) at element \(index); integer targets are exact in float32 only within ±2^24")
        }
        scalars[index] = Float(value)
      }
    }
    self.init(shape: wire.shape.map { Int($0) }, scalars: scalars)
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

extension HalfPrecision {
  /// The two-byte format `dtype` asks a tensor to travel in, or nil for
  /// float32 (and unset): exact. A `WireError` naming `field` for a dtype
  /// that is not a float.
  public init?(transfer dtype: Pipemesh_V1_DType, field: @autoclosure () -> String) throws {
    switch dtype {
    case .unspecified, .float32: return nil
    case .bfloat16: self = .bfloat16
    case .float16: self = .float16
    case .int32, .int64, .UNRECOGNIZED:
      let given =
        switch dtype {
        case .int32: "DTYPE_INT32"
        case .int64: "DTYPE_INT64"
        default: "\(dtype.rawValue)"
        }
      throw WireError(
        "\(field()) is \(given); activations and gradients travel as DTYPE_FLOAT32 (exact), DTYPE_BFLOAT16 or DTYPE_FLOAT16"
      )
    }
  }

  /// The dtype that names this format on the wire.
  public var wire: Pipemesh_V1_DType {
    switch self {
    case .bfloat16: .bfloat16
    case .float16: .float16
    }
  }
}
