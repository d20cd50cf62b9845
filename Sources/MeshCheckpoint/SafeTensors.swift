import Foundation
import MeshTensor
import Synchronization

/// The safetensors format (the ML field's common checkpoint format, readable
/// by NumPy and PyTorch): an 8-byte little-endian header length, a JSON header
/// naming each tensor's dtype, shape and byte range, then the raw
/// little-endian data. Pipemesh writes and reads float32 tensors.
public enum SafeTensors {
  /// A file's contents: named tensors and string metadata.
  public struct Contents: Sendable {
    public var tensors: [String: Tensor]
    public var metadata: [String: String]

    public init(tensors: [String: Tensor] = [:], metadata: [String: String] = [:]) {
      self.tensors = tensors
      self.metadata = metadata
    }
  }

  public struct FormatError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
  }

  /// Encodes tensors (in name order) and metadata.
  public static func encode(_ contents: Contents) throws -> Data {
    var data = Data()
    try write(contents) { data.append(contentsOf: $0) }
    return data
  }

  /// Writes `contents` to `path` atomically (see `AtomicFile`), each tensor
  /// straight from its storage: no copy of the file is gathered in memory.
  public static func write(_ contents: Contents, to path: String) throws {
    try AtomicFile.write(to: path) { write in try Self.write(contents, write) }
  }

  /// Passes the file's bytes to `write`: the header's length, the header,
  /// then each tensor's bytes in name order.
  private static func write(_ contents: Contents, _ write: (UnsafeRawBufferPointer) throws -> Void) throws {
    let layout = try Layout(shapes: contents.tensors.mapValues(\.shape), metadata: contents.metadata)
    try layout.header.withUnsafeBytes(write)
    for name in layout.names { try contents.tensors[name]!.sharedLittleEndianData.withUnsafeBytes(write) }
  }

  /// Writes a file of float32 tensors of `shapes` whose bytes `fill` puts in
  /// pieces, in any order and from any task: `put(name, element, bytes)`
  /// writes little-endian scalars from row-major element `element` of
  /// tensor `name`. Nothing is gathered in memory; the file appears at
  /// `path` whole once `fill` returns, or not at all. Every byte of every
  /// tensor must be put exactly once: a file whose pieces add up to less or
  /// more is refused, and `put` must not be called once `fill` returned.
  public static func write(
    shapes: [String: [Int]], metadata: [String: String] = [:], to path: String,
    _ fill: (
      _ put: @escaping @Sendable (_ name: String, _ element: Int, _ bytes: UnsafeRawBufferPointer) throws -> Void
    )
      async throws -> Void
  ) async throws {
    let layout = try Layout(shapes: shapes, metadata: metadata)
    let file = try AtomicFile.Pending(replacing: path)
    let bytesPut = Mutex(0)
    do {
      try file.resize(to: layout.header.count + layout.dataBytes)
      try layout.header.withUnsafeBytes { try file.write($0, at: 0) }
      try await fill { name, element, bytes in
        guard let range = layout.ranges[name], element >= 0, element <= range.count / 4,
          bytes.count <= range.count - element * 4
        else {
          throw FormatError("\(bytes.count) bytes from element \(element) do not fit tensor \(name)")
        }
        try file.write(bytes, at: range.lowerBound + element * 4)
        bytesPut.withLock { $0 += bytes.count }
      }
      let total = bytesPut.withLock { $0 }
      guard total == layout.dataBytes else {
        throw FormatError("\(total) bytes of tensors were put, where the file holds \(layout.dataBytes)")
      }
    } catch {
      file.discard()
      throw error
    }
    try file.commit()
  }

  /// Where a file's parts go: its header (length and JSON, padded), and
  /// each tensor's bytes in the file, in name order after the header.
  private struct Layout {
    let header: Data
    let names: [String]
    let ranges: [String: Range<Int>]
    /// The bytes of all tensors.
    let dataBytes: Int

    init(shapes: [String: [Int]], metadata: [String: String]) throws {
      names = shapes.keys.sorted()
      var header: [String: Any] = [:]
      if !metadata.isEmpty { header["__metadata__"] = metadata }
      var offset = 0
      var ranges: [String: Range<Int>] = [:]
      for name in names {
        guard let count = shapes[name].flatMap(Tensor.checkedCount(of:)) else {
          throw FormatError("tensor \(name) has shape \(shapes[name] ?? []), which holds no number of scalars")
        }
        let size = count * 4
        header[name] = ["dtype": "F32", "shape": shapes[name]!, "data_offsets": [offset, offset + size]]
        ranges[name] = offset..<(offset + size)
        offset += size
      }
      var json = try JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
      // Pad with spaces so the data starts 8-byte aligned, as the format suggests.
      json.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - json.count % 8) % 8))
      var bytes = withUnsafeBytes(of: UInt64(json.count).littleEndian) { Data($0) }
      bytes.append(json)
      self.header = bytes
      dataBytes = offset
      let start = bytes.count
      self.ranges = ranges.mapValues { ($0.lowerBound + start)..<($0.upperBound + start) }
    }
  }

  /// A file's header read and checked, its tensors' bytes not copied: where
  /// each float32 tensor lies in the file, its shape, and the metadata.
  /// Read a file mapped into memory (`Data(contentsOf:options: .alwaysMapped)`)
  /// to take its tensors part by part without holding them whole.
  public struct Index: Sendable {
    /// Each tensor's shape and byte range in the file.
    public var tensors: [String: (shape: [Int], bytes: Range<Int>)]
    public var metadata: [String: String]

    /// Reads the header of `data`, checking that every tensor is float32 of
    /// a shape that holds its bytes, and that their byte ranges lie inside
    /// the data and cover it exactly.
    public init(_ data: Data) throws {
      guard data.count >= 8 else {
        throw FormatError("file is \(data.count) bytes, shorter than the 8-byte header length")
      }
      let headerLength = data.prefix(8).withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
      guard headerLength <= UInt64(data.count - 8) else {
        throw FormatError("header length \(headerLength) runs past the end of the file (\(data.count) bytes)")
      }
      let headerStart = data.startIndex + 8
      let dataStart = headerStart + Int(headerLength)
      guard let header = try? JSONSerialization.jsonObject(with: data[headerStart..<dataStart]) as? [String: Any]
      else {
        throw FormatError("header is not a JSON object")
      }
      metadata = [:]
      if let entry = header["__metadata__"] {
        guard let entry = entry as? [String: String] else { throw FormatError("__metadata__ is not a string map") }
        metadata = entry
      }
      tensors = [:]
      var covered = 0
      var ranges: [(Int, Int)] = []
      for (name, entry) in header where name != "__metadata__" {
        guard let entry = entry as? [String: Any], let dtype = entry["dtype"] as? String,
          let shape = entry["shape"] as? [Int], let offsets = entry["data_offsets"] as? [Int], offsets.count == 2
        else { throw FormatError("entry \(name) lacks dtype, shape or data_offsets") }
        guard dtype == "F32" else { throw FormatError("tensor \(name) is \(dtype); only F32 is supported") }
        let (begin, end) = (offsets[0], offsets[1])
        guard begin >= 0, begin <= end, end <= data.endIndex - dataStart else {
          throw FormatError("tensor \(name) has byte range \(begin)..<\(end) outside the data")
        }
        guard let count = Tensor.checkedCount(of: shape), count <= Int.max / 4, count * 4 == end - begin else {
          throw FormatError(
            "tensor \(name): float32 tensor of shape \(shape) does not fit the \(end - begin) bytes given (4 per scalar)"
          )
        }
        tensors[name] = (shape, (dataStart + begin)..<(dataStart + end))
        ranges.append((begin, end))
        covered += end - begin
      }
      // By start, then end: an empty tensor may start where the next one does.
      ranges.sort { ($0.0, $0.1) < ($1.0, $1.1) }
      let contiguous = zip(ranges, ranges.dropFirst()).allSatisfy { $0.1 == $1.0 }
      guard contiguous, covered == data.endIndex - dataStart, ranges.first.map({ $0.0 == 0 }) ?? true else {
        throw FormatError("tensor byte ranges do not cover the data exactly")
      }
    }
  }

  /// Decodes a file, checking it as `Index` does.
  public static func decode(_ data: Data) throws -> Contents {
    let index = try Index(data)
    var contents = Contents(metadata: index.metadata)
    for (name, entry) in index.tensors {
      do {
        contents.tensors[name] = try Tensor(dtype: .float32, shape: entry.shape, littleEndianBytes: data[entry.bytes])
      } catch {
        throw FormatError("tensor \(name): \(error)")
      }
    }
    return contents
  }
}
