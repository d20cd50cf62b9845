import Foundation
import MeshTensor

extension Datasets {
  /// Classes of a text dataset: every byte value, so any text (UTF-8 included) reads without a
  /// vocabulary to keep beside the model, and a model's outputs map back to bytes as they are.
  public static let textClasses = 256

  /// The longest window a text dataset is read in (a Transformer block's attention bound).
  public static let maxSequenceLength = 8192

  /// A text read for a character-level language model: consecutive, non-overlapping windows of
  /// `sequenceLength` bytes are the inputs `[N, sequenceLength]`, and each window shifted on by
  /// one byte is its labels (the byte that follows each position), 256 classes. A text of n bytes
  /// gives (n − 1) / sequenceLength windows; the bytes past the last whole window are left out.
  public static func text(_ bytes: [UInt8], name: String, sequenceLength: Int) throws -> Dataset {
    guard (1...maxSequenceLength).contains(sequenceLength) else {
      throw DatasetError(
        .invalidArgument,
        "\(name): sequence length \(sequenceLength) is outside 1...\(maxSequenceLength); "
          + "give the model's input length")
    }
    let count = bytes.isEmpty ? 0 : (bytes.count - 1) / sequenceLength
    guard count >= 1 else {
      throw DatasetError(
        .emptyFile,
        "\(name): \(bytes.count) bytes of text hold no window of \(sequenceLength) bytes and the byte after it")
    }
    let scalars = count * sequenceLength
    let inputs = Tensor(shape: [count, sequenceLength], scalars: bytes[..<scalars].map(Float.init))
    let labels = Tensor(shape: [count, sequenceLength], scalars: bytes[1...scalars].map(Float.init))
    return Dataset(unchecked: name, inputs: inputs, labels: labels, classCount: textClasses)
  }

  /// A text file read as `text(_:name:sequenceLength:)` does (gzip-compressed files are inflated).
  public static func text(at url: URL, sequenceLength: Int) throws -> Dataset {
    try text(readPossiblyGzippedFile(url), name: datasetName(for: url), sequenceLength: sequenceLength)
  }

  /// Whether a dataset file name is read as text: `.txt`, or `.txt.gz`.
  public static func isTextFile(_ path: String) -> Bool {
    path.hasSuffix(".txt") || path.hasSuffix(".txt.gz")
  }
}
