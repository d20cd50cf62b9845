import Foundation

/// Element types on the wire. MeshTensor computes in Float32 only.
public enum DType: String, Codable, Sendable {
  case float32
}

/// Errors from decoding caller-supplied tensor bytes.
public struct TensorError: Error, Sendable, CustomStringConvertible {
  /// What was wrong with the input, phrased so a person can fix it.
  public let message: String
  public var description: String { message }
}

extension Tensor {
  /// The element type (always `.float32`).
  public var dtype: DType { .float32 }

  /// The scalars as raw little-endian row-major bytes (4 per scalar), copied in one block.
  public var littleEndianBytes: [UInt8] {
    var bytes = [UInt8](repeating: 0, count: scalarCount * 4)
    bytes.withUnsafeMutableBytes { copyLittleEndian(into: $0) }
    return bytes
  }

  /// The scalars as raw little-endian row-major bytes, as `Data`.
  public var littleEndianData: Data {
    var data = Data(count: scalarCount * 4)
    data.withUnsafeMutableBytes { copyLittleEndian(into: $0) }
    return data
  }

  /// The scalars as raw little-endian row-major bytes in a `Data` that shares the tensor's
  /// storage and keeps it alive (on a big-endian host, a swapped copy): for bytes that are sent
  /// and dropped, such as a message field about to be serialized. Never mutate it in place: its
  /// bytes are the tensor's own.
  public var sharedLittleEndianData: Data { sharedLittleEndianData(elements: 0..<scalarCount) }

  /// The bytes of the row-major scalars `elements`, shared like `sharedLittleEndianData`:
  /// a part of a tensor sent without copying it.
  public func sharedLittleEndianData(elements: Range<Int>) -> Data {
    precondition(elements.lowerBound >= 0 && elements.upperBound <= scalarCount, "elements \(elements) of \(shape)")
    #if _endian(big)
      return littleEndianData[(elements.lowerBound * 4)..<(elements.upperBound * 4)]
    #else
      guard !elements.isEmpty else { return Data() }
      let buffer = self.buffer
      return Data(
        bytesNoCopy: buffer.pointer + elements.lowerBound, count: elements.count * 4,
        deallocator: .custom { _, _ in withExtendedLifetime(buffer) {} })
    #endif
  }

  /// Writes little-endian scalars into this tensor's storage from element `offset` on
  /// (copying the storage first if it is shared): how a tensor is assembled from parts that
  /// arrive one at a time. Throws when the bytes are not whole scalars or run past the end.
  public mutating func overwrite(fromElement offset: Int, littleEndianBytes bytes: some ContiguousBytes) throws {
    let byteCount = bytes.withUnsafeBytes { $0.count }
    guard byteCount % 4 == 0, offset >= 0, offset <= scalarCount, byteCount / 4 <= scalarCount - offset else {
      throw TensorError(
        message: "\(byteCount) bytes from element \(offset) do not fit a tensor of \(scalarCount) scalars")
    }
    withUnsafeMutableBufferPointer { scalars in
      bytes.withUnsafeBytes { source in
        guard let base = source.baseAddress, byteCount > 0 else { return }
        UnsafeMutableRawPointer(scalars.baseAddress! + offset).copyMemory(from: base, byteCount: byteCount)
        #if _endian(big)
          for i in offset..<(offset + byteCount / 4) {
            scalars[i] = Float(bitPattern: scalars[i].bitPattern.byteSwapped)
          }
        #endif
      }
    }
  }

  private func copyLittleEndian(into destination: UnsafeMutableRawBufferPointer) {
    guard let base = destination.baseAddress, scalarCount > 0 else { return }
    base.copyMemory(from: buffer.pointer, byteCount: scalarCount * 4)
    #if _endian(big)
      let words = base.assumingMemoryBound(to: UInt32.self)
      for i in 0..<scalarCount { words[i] = words[i].byteSwapped }
    #endif
  }

  /// Whether every float32 in `bytes` (little-endian, at any alignment) is finite: a file's
  /// tensor checked where it lies, before anything of it is copied.
  public static func allFinite(littleEndianFloat32 bytes: UnsafeRawBufferPointer) -> Bool {
    var largestMagnitude: UInt32 = 0
    for offset in Swift.stride(from: 0, to: bytes.count - bytes.count % 4, by: 4) {
      let bits = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
      largestMagnitude = Swift.max(largestMagnitude, bits & 0x7FFF_FFFF)
    }
    return largestMagnitude < Float.infinity.bitPattern
  }

  /// Decodes the wire form: dtype, shape, and raw little-endian row-major bytes.
  /// Throws when the byte count does not match the shape or the shape is invalid.
  public init(dtype: DType, shape: [Int], littleEndianBytes bytes: some ContiguousBytes) throws {
    try self.init(dtype: dtype, shape: shape, littleEndianChunks: [bytes])
  }

  /// Decodes the wire form that `read` writes straight into the tensor's storage: the raw
  /// little-endian row-major bytes of every scalar of `shape` (bytes read from a file, copied
  /// once). `read` must fill the whole buffer or throw.
  public init(
    dtype: DType, shape: [Int], readingLittleEndianBytes read: (UnsafeMutableRawBufferPointer) throws -> Void
  ) throws {
    guard let count = Tensor.checkedCount(of: shape), count <= Int.max / 4 else {
      throw TensorError(message: "\(dtype.rawValue) tensor of shape \(shape) has no valid size")
    }
    let buffer = TensorBuffer(uninitializedCount: count)
    try read(UnsafeMutableRawBufferPointer(start: buffer.pointer, count: count * 4))
    #if _endian(big)
      for i in 0..<count { buffer.pointer[i] = Float(bitPattern: buffer.pointer[i].bitPattern.byteSwapped) }
    #endif
    self.init(shape: shape, buffer: buffer)
  }

  /// Decodes the wire form received in pieces (a tensor sent in chunks), the
  /// bytes laid end to end: each copied once, straight into the tensor.
  public init<Bytes: ContiguousBytes>(dtype: DType, shape: [Int], littleEndianChunks chunks: [Bytes]) throws {
    // Check the size against the bytes before allocating: a small message must not be able
    // to ask for a huge buffer.
    let byteCount = chunks.reduce(0) { total, chunk in total + chunk.withUnsafeBytes { $0.count } }
    guard let count = Tensor.checkedCount(of: shape), count.multipliedReportingOverflow(by: 4) == (byteCount, false)
    else {
      throw TensorError(
        message: "\(dtype.rawValue) tensor of shape \(shape) does not fit the \(byteCount) bytes given (4 per scalar)")
    }
    try self.init(dtype: dtype, shape: shape) { target in
      var offset = 0
      for chunk in chunks {
        chunk.withUnsafeBytes { source in
          guard let base = source.baseAddress, !source.isEmpty else { return }
          (target.baseAddress! + offset).copyMemory(from: base, byteCount: source.count)
          offset += source.count
        }
      }
    }
  }
}
