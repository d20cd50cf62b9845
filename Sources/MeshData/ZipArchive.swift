/// The entries of a zip archive (as `.npz` files are), read through the central directory.
/// Stored and deflate entries are supported, including the zip64 size fields NumPy writes.
/// Hand-written rather than ZIPFoundation 0.9.20: that package's `CZlib` module clashes with
/// ours, its Linux CRC-32 is byte-at-a-time Swift, and it spins forever on a truncated deflate
/// stream (a user's `.npz` must fail with a message instead).
struct ZipArchive {
  /// One file inside the archive.
  struct Entry {
    let name: String
    let method: Int
    let crc32: UInt32
    let compressedSize: Int
    let uncompressedSize: Int
    let localHeaderOffset: Int
  }

  let bytes: [UInt8]
  let source: String
  /// The entries in central-directory order.
  let entries: [Entry]

  init(_ bytes: [UInt8], source: String) throws {
    self.bytes = bytes
    self.source = source
    let end = try ZipArchive.endOfCentralDirectory(bytes, source: source)
    var reader = ByteReader(bytes, source: source)
    try reader.seek(to: end + 10, "end of central directory")
    let count = try reader.uint16LE("entry count")
    _ = try reader.uint32LE("central directory size")
    let directoryOffset = try reader.uint32LE("central directory offset")
    guard count != 0xFFFF, directoryOffset != 0xFFFF_FFFF else {
      throw DatasetError(.unsupportedFormat, "\(source): zip64 archives over 4 GiB are not supported")
    }
    try reader.seek(to: directoryOffset, "central directory")
    var entries: [Entry] = []
    for _ in 0..<count {
      entries.append(try ZipArchive.directoryEntry(&reader))
    }
    self.entries = entries
  }

  /// The position of the end-of-central-directory record (signature 50 4b 05 06), searched for
  /// backwards past a trailing comment of up to 65,535 bytes.
  private static func endOfCentralDirectory(_ bytes: [UInt8], source: String) throws -> Int {
    let earliest = Swift.max(0, bytes.count - 22 - 0xFFFF)
    var position = bytes.count - 22
    while position >= earliest {
      if bytes[position] == 0x50, bytes[position + 1] == 0x4B, bytes[position + 2] == 0x05,
        bytes[position + 3] == 0x06
      {
        return position
      }
      position -= 1
    }
    throw DatasetError(.malformedFile, "\(source): not a zip archive (no end-of-central-directory record)")
  }

  /// Reads one central-directory header, taking 64-bit sizes from its zip64 extra field.
  private static func directoryEntry(_ reader: inout ByteReader) throws -> Entry {
    let start = reader.offset
    guard try reader.uint32LE("central directory header") == 0x0201_4B50 else {
      throw DatasetError(
        .malformedFile, "\(reader.source): bad central directory header signature at offset \(start)")
    }
    try reader.seek(to: start + 10, "central directory header")
    let method = try reader.uint16LE("compression method")
    try reader.seek(to: start + 16, "central directory header")
    let checksum = UInt32(try reader.uint32LE("CRC-32"))
    var compressed = try reader.uint32LE("compressed size")
    var uncompressed = try reader.uint32LE("uncompressed size")
    let nameLength = try reader.uint16LE("file name length")
    let extraLength = try reader.uint16LE("extra field length")
    let commentLength = try reader.uint16LE("comment length")
    try reader.seek(to: start + 42, "central directory header")
    var localOffset = try reader.uint32LE("local header offset")
    let name = String(decoding: try reader.take(nameLength, "file name"), as: UTF8.self)
    var extra = ByteReader(Array(try reader.take(extraLength, "extra field")), source: reader.source)
    _ = try reader.take(commentLength, "file comment")
    while extra.offset + 4 <= extra.bytes.count {
      let tag = try extra.uint16LE("extra field tag")
      let size = try extra.uint16LE("extra field size")
      var field = ByteReader(Array(try extra.take(size, "extra field")), source: reader.source)
      guard tag == 0x0001 else { continue }
      // Zip64: only the fields whose 32-bit slot holds 0xFFFFFFFF are present, in this order.
      if uncompressed == 0xFFFF_FFFF { uncompressed = Int(try field.unsigned(8, bigEndian: false, "zip64 size")) }
      if compressed == 0xFFFF_FFFF { compressed = Int(try field.unsigned(8, bigEndian: false, "zip64 size")) }
      if localOffset == 0xFFFF_FFFF { localOffset = Int(try field.unsigned(8, bigEndian: false, "zip64 offset")) }
    }
    return Entry(
      name: name, method: method, crc32: checksum, compressedSize: compressed, uncompressedSize: uncompressed,
      localHeaderOffset: localOffset)
  }

  /// The uncompressed contents of `entry`.
  func contents(of entry: Entry) throws -> [UInt8] {
    var reader = ByteReader(bytes, source: source)
    try reader.seek(to: entry.localHeaderOffset, "local header of \(entry.name)")
    guard try reader.uint32LE("local header of \(entry.name)") == 0x0403_4B50 else {
      throw DatasetError(.malformedFile, "\(source): bad local header signature for entry \(entry.name)")
    }
    try reader.seek(to: entry.localHeaderOffset + 26, "local header of \(entry.name)")
    let nameLength = try reader.uint16LE("local file name length")
    let extraLength = try reader.uint16LE("local extra field length")
    _ = try reader.take(nameLength + extraLength, "local name and extra field")
    let data = try reader.take(entry.compressedSize, "data of entry \(entry.name)")
    let contents: [UInt8]
    switch entry.method {
    case 0:
      contents = Array(data)
    case 8:
      contents = try Inflate.raw(data, expectedCount: entry.uncompressedSize, source: "\(source):\(entry.name)")
    default:
      throw DatasetError(
        .unsupportedFormat,
        "\(source): entry \(entry.name) uses compression method \(entry.method); only stored (0) "
          + "and deflate (8) are supported")
    }
    guard Inflate.crc32(contents) == entry.crc32 else {
      throw DatasetError(.malformedFile, "\(source): entry \(entry.name) fails its CRC-32 check (corrupt archive)")
    }
    return contents
  }
}
