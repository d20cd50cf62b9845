import Foundation

/// Reads a whole file, turning the two common failures into `DatasetError`s that name the path.
func readFileBytes(_ url: URL) throws -> [UInt8] {
  guard FileManager.default.fileExists(atPath: url.path) else {
    throw DatasetError(.fileNotFound, "\(url.path): no such file")
  }
  do {
    return [UInt8](try Data(contentsOf: url))
  } catch {
    throw DatasetError(.unreadableFile, "\(url.path): cannot be read (\(error.localizedDescription))")
  }
}

/// The bytes of a file, inflated first when they start with the gzip magic number.
func readPossiblyGzippedFile(_ url: URL) throws -> [UInt8] {
  let bytes = try readFileBytes(url)
  return Inflate.isGzip(bytes) ? try Inflate.gzip(bytes, source: url.lastPathComponent) : bytes
}

/// A cursor over bytes whose reads throw a `malformedFile` error naming `source` when the data
/// ends early.
struct ByteReader {
  let bytes: [UInt8]
  let source: String
  private(set) var offset: Int

  init(_ bytes: [UInt8], source: String, offset: Int = 0) {
    self.bytes = bytes
    self.source = source
    self.offset = offset
  }

  /// The next `count` bytes.
  mutating func take(_ count: Int, _ what: String) throws -> ArraySlice<UInt8> {
    guard count >= 0, count <= bytes.count - offset else {
      throw DatasetError(
        .malformedFile,
        "\(source): truncated: \(what) needs \(count) bytes at offset \(offset), "
          + "but only \(bytes.count - offset) remain")
    }
    defer { offset += count }
    return bytes[offset..<(offset + count)]
  }

  /// Moves the cursor to `position`.
  mutating func seek(to position: Int, _ what: String) throws {
    guard position >= 0, position <= bytes.count else {
      throw DatasetError(
        .malformedFile, "\(source): \(what) at offset \(position) lies outside the \(bytes.count)-byte file")
    }
    offset = position
  }

  /// An unsigned integer of `width` bytes in the given byte order.
  mutating func unsigned(_ width: Int, bigEndian: Bool, _ what: String) throws -> UInt64 {
    let field = try take(width, what)
    let ordered = bigEndian ? Array(field) : field.reversed()
    return ordered.reduce(0) { ($0 << 8) | UInt64($1) }
  }

  mutating func uint8(_ what: String) throws -> Int { Int(try take(1, what).first!) }
  mutating func uint16LE(_ what: String) throws -> Int { Int(try unsigned(2, bigEndian: false, what)) }
  mutating func uint32LE(_ what: String) throws -> Int { Int(try unsigned(4, bigEndian: false, what)) }
  mutating func uint32BE(_ what: String) throws -> Int { Int(try unsigned(4, bigEndian: true, what)) }
}

/// Numeric element types found in array files, all converted to Float32 on load.
enum ElementType: Sendable {
  case uint8, int8, int16, int32, int64, float32, float64

  /// Bytes per element.
  var size: Int {
    switch self {
    case .uint8, .int8: 1
    case .int16: 2
    case .int32, .float32: 4
    case .int64, .float64: 8
    }
  }

  /// Converts `count` packed elements starting at the front of `bytes` to Float32.
  func decode(_ bytes: ArraySlice<UInt8>, count: Int, bigEndian: Bool) -> [Float] {
    precondition(bytes.count == count * size, "\(bytes.count) bytes for \(count) \(self) elements")
    return bytes.withUnsafeBytes { raw in
      func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        let stored = raw.loadUnaligned(fromByteOffset: offset, as: T.self)
        return bigEndian ? T(bigEndian: stored) : T(littleEndian: stored)
      }
      return (0..<count).map { index in
        let at = index * size
        switch self {
        case .uint8: return Float(raw[at])
        case .int8: return Float(Int8(bitPattern: raw[at]))
        case .int16: return Float(Int16(bitPattern: load(UInt16.self, at: at)))
        case .int32: return Float(Int32(bitPattern: load(UInt32.self, at: at)))
        case .int64: return Float(Int64(bitPattern: load(UInt64.self, at: at)))
        case .float32: return Float(bitPattern: load(UInt32.self, at: at))
        case .float64: return Float(Double(bitPattern: load(UInt64.self, at: at)))
        }
      }
    }
  }
}

/// The number of elements of `shape` after checking that its data, at `elementSize` bytes each,
/// has a representable size (a corrupt header must not crash the loader).
func elementCount(of shape: [Int], elementSize: Int, source: String) throws -> Int {
  var count = 1
  for extent in shape + [elementSize] {
    let (product, overflow) = count.multipliedReportingOverflow(by: extent)
    guard extent >= 0, !overflow else {
      throw DatasetError(.malformedFile, "\(source): shape \(shape) is too large to load")
    }
    count = product
  }
  return count / elementSize
}
