import Foundation
import MeshTensor

/// Reader for the IDX format of MNIST and its relatives: two zero bytes, a type code, the rank,
/// big-endian 32-bit extents, then big-endian data. Files may be gzip-compressed (`.gz`).
public enum IDX {
  /// IDX type codes and the element types they denote.
  static let types: [Int: ElementType] = [
    0x08: .uint8, 0x09: .int8, 0x0B: .int16, 0x0C: .int32, 0x0D: .float32, 0x0E: .float64,
  ]

  /// Reads the IDX file at `url` (inflating it first if it is gzip) as a Float32 tensor.
  public static func readArray(at url: URL) throws -> Tensor {
    try parseArray(try readPossiblyGzippedFile(url), source: url.lastPathComponent)
  }

  static func parseArray(_ bytes: [UInt8], source: String) throws -> Tensor {
    var reader = ByteReader(bytes, source: source)
    let zeros = try reader.take(2, "magic number")
    let code = try reader.uint8("type code")
    let rank = try reader.uint8("rank")
    guard zeros.allSatisfy({ $0 == 0 }) else {
      throw DatasetError(
        .malformedFile, "\(source): not an IDX file (the magic number must start with two zero bytes)")
    }
    guard let type = types[code] else {
      throw DatasetError(
        .unsupportedFormat,
        "\(source): unknown IDX type code 0x\(String(code, radix: 16)); expected 0x08 (ubyte), "
          + "0x09 (byte), 0x0B (short), 0x0C (int), 0x0D (float) or 0x0E (double)")
    }
    var shape: [Int] = []
    for axis in 0..<rank {
      shape.append(try reader.uint32BE("extent of axis \(axis)"))
    }
    let count = try elementCount(of: shape, elementSize: type.size, source: source)
    let data = try reader.take(count * type.size, "data of shape \(shape)")
    guard reader.offset == bytes.count else {
      throw DatasetError(
        .malformedFile,
        "\(source): \(bytes.count - reader.offset) unexpected bytes after the data of shape \(shape)")
    }
    return Tensor(shape: shape, scalars: type.decode(data, count: count, bigEndian: true))
  }
}

extension Datasets {
  /// Loads an image file `[N, rows, cols]` and a label file `[N]` in IDX format (as MNIST ships
  /// them, gzip or not) as a classification dataset with features `[rows, cols]`.
  public static func idx(images imagesURL: URL, labels labelsURL: URL, classCount: Int? = nil) throws -> Dataset {
    let images = try IDX.readArray(at: imagesURL)
    let labels = try IDX.readArray(at: labelsURL)
    guard images.rank >= 1, labels.rank == 1, images.shape[0] == labels.shape[0] else {
      throw DatasetError(
        .shapeMismatch,
        "\(imagesURL.lastPathComponent) has shape \(images.shape) and \(labelsURL.lastPathComponent) "
          + "has shape \(labels.shape); expected [N, ...] images and [N] labels with the same N")
    }
    return try make(
      name: datasetName(for: imagesURL), inputs: images, labels: labels,
      task: .classification(classCount: classCount))
  }
}
