import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Testing

/// Tensors of every rank the wire carries, with scalars whose bits must survive it: signed zero, extremes,
/// subnormals, infinity and NaN.
private let wireExamples: [Tensor] = [
  Tensor(shape: [], scalars: [2.5]),
  Tensor(shape: [0], scalars: []),
  Tensor(shape: [3], scalars: [1, -0.0, 0.1]),
  Tensor(
    shape: [2, 3],
    scalars: [.greatestFiniteMagnitude, -.greatestFiniteMagnitude, .leastNonzeroMagnitude, .infinity, .nan, 1e-30]),
]

/// A tensor's wire form keeps its shape and every scalar bit for bit; a wire tensor that cannot be one is refused
/// with INVALID_ARGUMENT naming what it is.
@Suite struct TensorWireTests {
  @Test(arguments: wireExamples)
  func tensorsSurviveTheWire(tensor: Tensor) throws {
    let wire = Pipemesh_V1_Tensor(tensor)
    #expect(wire.dtype == .float32)
    #expect(wire.shape == tensor.shape.map { Int64($0) })
    #expect(wire.data.count == tensor.scalarCount * 4)
    let decoded = try Tensor(wire: wire)
    #expect(decoded.shape == tensor.shape)
    #expect(decoded.scalars.map(\.bitPattern) == tensor.scalars.map(\.bitPattern))
  }

  @Test(arguments: wireExamples)
  func sharedWireFormCarriesTheSameBytes(tensor: Tensor) throws {
    let shared = Pipemesh_V1_Tensor(sharing: tensor)
    #expect(shared == Pipemesh_V1_Tensor(tensor))
    let decoded = try Tensor(wire: shared)
    #expect(decoded.scalars.map(\.bitPattern) == tensor.scalars.map(\.bitPattern))
  }

  @Test func bytesAreLittleEndianFloat32() {
    let wire = Pipemesh_V1_Tensor(Tensor(shape: [2], scalars: [1, -2]))
    #expect([UInt8](wire.data) == [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0])
  }

  private static func wire(_ shape: [Int64], byteCount: Int, dtype: Pipemesh_V1_DType = .float32)
    -> Pipemesh_V1_Tensor
  {
    var wire = Pipemesh_V1_Tensor()
    wire.dtype = dtype
    wire.shape = shape
    wire.data = Data(count: byteCount)
    return wire
  }

  /// The INVALID_ARGUMENT message decoding `wire` as `what` throws, or nil after recording a failure.
  private static func refusal(
    _ wire: Pipemesh_V1_Tensor, what: String, sourceLocation: SourceLocation = #_sourceLocation
  ) -> String? {
    let error = #expect(throws: WireError.self, sourceLocation: sourceLocation) {
      _ = try Tensor(wire: wire, what: what)
    }
    #expect(error?.rpcError.code == .invalidArgument, "\(String(describing: error))", sourceLocation: sourceLocation)
    return error?.message
  }

  @Test func dataThatDoesNotFitTheShapeIsRefused() {
    #expect(
      Self.refusal(Self.wire([2, 3], byteCount: 20), what: "gradient of w")
        == "gradient of w: float32 tensor of shape [2, 3] does not fit the 20 bytes given (4 per scalar)")
    #expect(
      Self.refusal(Self.wire([2, 3], byteCount: 28), what: "gradient of w")
        == "gradient of w: float32 tensor of shape [2, 3] does not fit the 28 bytes given (4 per scalar)")
    #expect(
      Self.refusal(Self.wire([], byteCount: 0), what: "input")
        == "input: float32 tensor of shape [] does not fit the 0 bytes given (4 per scalar)")
    #expect(
      Self.refusal(Self.wire([0], byteCount: 4), what: "input")
        == "input: float32 tensor of shape [0] does not fit the 4 bytes given (4 per scalar)")
  }

  @Test func aShapeWhoseProductOverflowsIsRefused() {
    let extent = Int64(Int32.max)
    let message = Self.refusal(Self.wire([extent, extent, extent], byteCount: 8), what: "activation")
    #expect(message?.hasPrefix("activation: ") == true, "\(message ?? "nil")")
    #expect(message?.contains("does not fit the 8 bytes given") == true, "\(message ?? "nil")")
  }

  @Test func negativeAndOversizedExtentsAreRefused() {
    #expect(Self.refusal(Self.wire([2, -1], byteCount: 0), what: "weights") == "weights has an invalid shape [2, -1]")
    #expect(
      Self.refusal(Self.wire([Int64(Int32.max) + 1], byteCount: 0), what: "weights")
        == "weights has an invalid shape [2147483648]")
  }

  @Test(arguments: [Pipemesh_V1_DType.unspecified, .int32, .int64])
  func otherDtypesAreRefused(dtype: Pipemesh_V1_DType) {
    let message = Self.refusal(Self.wire([1], byteCount: 4, dtype: dtype), what: "gradient of w")
    #expect(message?.hasPrefix("gradient of w has dtype ") == true, "\(message ?? "nil")")
    #expect(message?.hasSuffix("; Pipemesh computes in DTYPE_FLOAT32") == true, "\(message ?? "nil")")
  }

  @Test func refusalsNameATensorByDefault() {
    let error = #expect(throws: WireError.self) { _ = try Tensor(wire: Self.wire([2], byteCount: 4)) }
    #expect(error?.message.hasPrefix("tensor: ") == true, "\(String(describing: error))")
  }
}
