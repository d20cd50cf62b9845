import CZlib

/// zlib's inflate over whole buffers: raw deflate (zip entries) and gzip files.
enum Inflate {
  /// Whether `bytes` begin with the gzip magic number 1f 8b.
  static func isGzip(_ bytes: [UInt8]) -> Bool {
    bytes.count >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B
  }

  /// The CRC-32 of `bytes`, as zip archives record it.
  static func crc32(_ bytes: [UInt8]) -> UInt32 {
    bytes.withUnsafeBufferPointer { buffer in
      var crc: uLong = 0
      var rest = buffer[...]
      while !rest.isEmpty {
        let chunk = UnsafeBufferPointer(rebasing: rest.prefix(Int(UInt32.max)))
        crc = CZlib.crc32(crc, chunk.baseAddress, uInt(chunk.count))
        rest = rest.dropFirst(chunk.count)
      }
      return UInt32(crc)
    }
  }

  /// Inflates raw deflate data that must expand to exactly `expectedCount` bytes.
  static func raw(_ input: ArraySlice<UInt8>, expectedCount: Int, source: String) throws -> [UInt8] {
    let output = try run(Array(input), capacity: expectedCount, gzip: false, source: source)
    guard output.count == expectedCount else {
      throw DatasetError(
        .malformedFile, "\(source): deflate data expands to \(output.count) bytes, expected \(expectedCount)")
    }
    return output
  }

  /// Inflates a gzip file, every member in turn (concatenated gzip files are one valid file).
  static func gzip(_ input: [UInt8], source: String) throws -> [UInt8] {
    // The trailer's ISIZE (size mod 2^32 of the last member) is a good first guess at capacity.
    let hint = input.count >= 4 ? input.suffix(4).reversed().reduce(0) { ($0 << 8) | Int($1) } : 0
    return try run(input, capacity: Swift.max(hint, input.count * 2), gzip: true, source: source)
  }

  private static func run(
    _ input: [UInt8], capacity: Int, gzip: Bool, source sourceName: String
  ) throws -> [UInt8] {
    guard input.count <= Int(UInt32.max) else {
      throw DatasetError(.unsupportedFormat, "\(sourceName): compressed data over 4 GiB is not supported")
    }
    var stream = z_stream()
    let started = gzip ? czlib_inflate_init_gzip(&stream) : czlib_inflate_init_raw(&stream)
    guard started == Z_OK else {
      throw DatasetError(.unreadableFile, "\(sourceName): zlib could not start inflating (status \(started))")
    }
    defer { inflateEnd(&stream) }
    // Deflate expands at most about 1032:1, so a lying size field cannot force a huge allocation.
    let firstCapacity = Swift.min(capacity, input.count * 1032)
    var output = [UInt8](repeating: 0, count: Swift.max(firstCapacity, 64))
    var produced = 0
    return try input.withUnsafeBufferPointer { pending in
      stream.next_in = UnsafeMutablePointer(mutating: pending.baseAddress)
      stream.avail_in = UInt32(pending.count)
      while true {
        if produced == output.count {
          output.append(contentsOf: repeatElement(0, count: output.count))
        }
        let status = output.withUnsafeMutableBufferPointer { destination in
          let room = UInt32(Swift.min(destination.count - produced, Int(UInt32.max)))
          stream.next_out = destination.baseAddress! + produced
          stream.avail_out = room
          let status = inflate(&stream, Z_NO_FLUSH)
          produced += Int(room - stream.avail_out)
          return status
        }
        switch status {
        case Z_STREAM_END where gzip && stream.avail_in > 0:
          inflateReset(&stream)
        case Z_STREAM_END:
          return Array(output[..<produced])
        case Z_OK:
          continue
        case Z_BUF_ERROR where stream.avail_in > 0:
          continue  // the output buffer was full; the loop grows it
        case Z_BUF_ERROR:
          throw DatasetError(.malformedFile, "\(sourceName): compressed data ends before its end marker")
        default:
          let reason = stream.msg.map { String(cString: $0) } ?? "zlib status \(status)"
          throw DatasetError(.malformedFile, "\(sourceName): compressed data is corrupt (\(reason))")
        }
      }
    }
  }
}
