import CGRPCShim
import Foundation
import SwiftProtobuf

/// Serialized message bytes in memory that gRPC takes over without a copy:
/// swift-protobuf serializes straight into a `malloc` block that the shim
/// hands to a gRPC slice, which frees it once sent.
///
/// Not a value type: copies share the block. It exists only between
/// serialization and `handOver()`.
struct OutgoingBytes: SwiftProtobufContiguousBytes {
  // Never nil, even for no bytes: the encoder needs an address to write at.
  private(set) var base: UnsafeMutableRawPointer
  private(set) var count: Int

  init(repeating value: UInt8, count: Int) {
    self.count = count
    guard let base = malloc(Swift.max(count, 1)) else { fatalError("out of memory for \(count) bytes") }
    self.base = base
    memset(base, Int32(value), count)
  }

  init(_ sequence: some Sequence<UInt8>) {
    let copied = sequence.withContiguousStorageIfAvailable { OutgoingBytes(copying: UnsafeRawBufferPointer($0)) }
    self = copied ?? Array(sequence).withUnsafeBytes { OutgoingBytes(copying: $0) }
  }

  private init(copying bytes: UnsafeRawBufferPointer) {
    self.init(repeating: 0, count: bytes.count)
    if let source = bytes.baseAddress { base.copyMemory(from: source, byteCount: bytes.count) }
  }

  func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    try body(UnsafeRawBufferPointer(start: base, count: count))
  }

  mutating func withUnsafeMutableBytes<R>(
    _ body: (UnsafeMutableRawBufferPointer) throws -> R
  ) rethrows -> R {
    try body(UnsafeMutableRawBufferPointer(start: base, count: count))
  }

  /// Gives the block to the shim, which frees it.
  func handOver() -> pm_outgoing_bytes {
    pm_outgoing_bytes(
      data: base.assumingMemoryBound(to: UInt8.self), length: count,
      release: { free($0) }, release_context: base)
  }

  /// Serializes a message for the wire.
  static func serializing(_ message: some Message) throws -> OutgoingBytes {
    do {
      return try message.serializedBytes()
    } catch {
      throw RPCError(.internal, "cannot serialize \(type(of: message).protoMessageName): \(error)")
    }
  }
}

extension pm_received_bytes {
  /// The bytes as `Data` that frees the gRPC slice when dropped (no copy).
  func takeData() -> Data {
    guard let data, length > 0 else {
      pm_received_bytes_release(owner)
      return Data()
    }
    let owner = self.owner
    return Data(
      bytesNoCopy: UnsafeMutableRawPointer(mutating: data), count: length,
      deallocator: .custom { _, _ in pm_received_bytes_release(owner) })
  }
}

extension Message {
  /// Decodes wire bytes, or throws INVALID_ARGUMENT naming the message type.
  init(wireBytes: Data) throws {
    do {
      try self.init(serializedBytes: wireBytes)
    } catch {
      throw RPCError(
        .invalidArgument,
        "the bytes received are not a valid \(Self.protoMessageName) message (\(error))",
        cause: error)
    }
  }
}
