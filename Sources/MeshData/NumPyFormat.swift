import Foundation
import MeshTensor

/// Reader for NumPy's `.npy` arrays and `.npz` archives of them, converting every supported
/// dtype to Float32.
public enum NumPy {
  /// The dtypes `.npy` files may hold, by NumPy's `descr` string.
  static let supportedTypes: [String: ElementType] = [
    "<f4": .float32, "<f8": .float64, "<i8": .int64, "<i4": .int32, "|u1": .uint8, "<u1": .uint8,
  ]

  /// Reads the array in the `.npy` file at `url` as a Float32 tensor of the same shape.
  public static func readArray(at url: URL) throws -> Tensor {
    try parseArray(try readFileBytes(url), source: url.lastPathComponent)
  }

  /// Reads every array in the `.npz` file at `url`, keyed by name without the `.npy` suffix.
  /// Both `np.savez` (stored) and `np.savez_compressed` (deflate) archives are read.
  public static func readArchive(at url: URL) throws -> [String: Tensor] {
    let source = url.lastPathComponent
    let archive = try ZipArchive(try readFileBytes(url), source: source)
    var arrays: [String: Tensor] = [:]
    for entry in archive.entries where entry.name.hasSuffix(".npy") {
      let key = String(entry.name.dropLast(4))
      arrays[key] = try parseArray(try archive.contents(of: entry), source: "\(source):\(entry.name)")
    }
    return arrays
  }

  /// Decodes `.npy` bytes: magic, version, a header dictionary, then the raw C-order data.
  static func parseArray(_ bytes: [UInt8], source: String) throws -> Tensor {
    var reader = ByteReader(bytes, source: source)
    let magic = try reader.take(6, "magic string")
    guard magic.elementsEqual([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]) else {
      throw DatasetError(.malformedFile, "\(source): not a .npy file (missing the \\x93NUMPY magic string)")
    }
    let major = try reader.uint8("major version")
    _ = try reader.uint8("minor version")
    let headerLength: Int
    switch major {
    case 1: headerLength = try reader.uint16LE("header length")
    case 2, 3: headerLength = try reader.uint32LE("header length")
    default:
      throw DatasetError(
        .unsupportedFormat, "\(source): .npy format version \(major) is not supported (1, 2 and 3 are)")
    }
    let headerBytes = try reader.take(headerLength, "header")
    // Versions 1 and 2 use Latin-1 headers, version 3 UTF-8; the keys and values read here are ASCII.
    let header = String(decoding: headerBytes, as: UTF8.self)
    let fields = try NumPyHeader(header, source: source)
    guard !fields.fortranOrder else {
      throw DatasetError(
        .unsupportedFormat,
        "\(source): array is stored in Fortran (column-major) order; save it in C order, "
          + "e.g. np.save(path, np.ascontiguousarray(a))")
    }
    guard let type = supportedTypes[fields.descr] else {
      throw DatasetError(
        .unsupportedFormat,
        "\(source): dtype '\(fields.descr)' is not supported; use one of <f4, <f8, <i8, <i4, |u1 "
          + "(little-endian), e.g. a.astype(np.float32)")
    }
    let count = try elementCount(of: fields.shape, elementSize: type.size, source: source)
    let data = try reader.take(count * type.size, "data of shape \(fields.shape) and dtype \(fields.descr)")
    return Tensor(shape: fields.shape, scalars: type.decode(data, count: count, bigEndian: false))
  }
}

/// The three keys of a `.npy` header, a Python dict literal such as
/// `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
struct NumPyHeader {
  var descr = ""
  var fortranOrder = false
  var shape: [Int] = []

  init(_ text: String, source: String) throws {
    func malformed(_ detail: String) -> DatasetError {
      DatasetError(.malformedFile, "\(source): bad .npy header (\(detail))")
    }
    guard let descr = NumPyHeader.value(of: "descr", in: text),
      let order = NumPyHeader.value(of: "fortran_order", in: text),
      let shape = NumPyHeader.value(of: "shape", in: text)
    else { throw malformed("needs the keys 'descr', 'fortran_order' and 'shape'") }
    guard descr.count >= 2, descr.first == descr.last, descr.first == "'" || descr.first == "\"" else {
      throw malformed("'descr' must be a plain dtype string; structured dtypes are not supported")
    }
    self.descr = String(descr.dropFirst().dropLast())
    switch order {
    case "True": fortranOrder = true
    case "False": fortranOrder = false
    default: throw malformed("'fortran_order' must be True or False")
    }
    guard shape.first == "(", shape.last == ")" else { throw malformed("'shape' must be a tuple") }
    let parts = shape.dropFirst().dropLast().split(separator: ",")
      .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    self.shape = try parts.map { part in
      guard let extent = Int(part), extent >= 0 else { throw malformed("shape entry '\(part)' is not a size") }
      return extent
    }
  }

  /// The literal text after `'key':` up to the next top-level comma or closing brace.
  static func value(of key: String, in text: String) -> String? {
    guard let keyRange = text.range(of: "'\(key)'") ?? text.range(of: "\"\(key)\"") else { return nil }
    var rest = text[keyRange.upperBound...].drop { $0 == " " }
    guard rest.first == ":" else { return nil }
    rest = rest.dropFirst().drop { $0 == " " }
    var depth = 0
    var quote: Character?
    var end = rest.startIndex
    while end < rest.endIndex {
      let character = rest[end]
      if let open = quote {
        if character == open { quote = nil }
      } else if character == "'" || character == "\"" {
        quote = character
      } else if character == "(" || character == "[" {
        depth += 1
      } else if character == ")" || character == "]" {
        depth -= 1
      } else if depth == 0, character == "," || character == "}" {
        break
      }
      end = rest.index(after: end)
    }
    return rest[..<end].trimmingCharacters(in: .whitespaces)
  }
}
