import MeshTensor

/// Examples for supervised learning: `inputs` of shape `[N] + featureShape` and `labels` that are
/// either class indices (shape `[N]`, or `[N, steps]` for a class per position of a sequence;
/// `classCount` set) or regression targets (shape `[N, k]`, `classCount` nil). All values are
/// Float32.
public struct Dataset: Sendable {
  /// A short name used in messages, such as "digits" or the file name it was loaded from.
  public var name: String
  /// The examples, batch axis first.
  public let inputs: Tensor
  /// Class indices `[N]` for classification, targets `[N, k]` for regression.
  public let labels: Tensor
  /// The number of classes for classification; nil for regression.
  public let classCount: Int?

  /// Creates a dataset after checking that the parts agree: a batch axis on both tensors with
  /// the same length, and for classification integral labels in `0..<classCount`.
  public init(name: String, inputs: Tensor, labels: Tensor, classCount: Int?) throws {
    guard inputs.rank >= 1 else {
      throw DatasetError(.shapeMismatch, "\(name): inputs need a batch axis, got shape \(inputs.shape)")
    }
    if let classCount {
      guard classCount >= 1 else {
        throw DatasetError(.invalidArgument, "\(name): classCount must be at least 1, got \(classCount)")
      }
      guard labels.rank >= 1 else {
        throw DatasetError(
          .shapeMismatch, "\(name): class labels must have shape [N] (or [N, steps]), got \(labels.shape)")
      }
      for (row, label) in labels.scalars.enumerated() {
        if let problem = Dataset.classLabelProblem(label, classCount: classCount) {
          throw DatasetError(.badLabel, "\(name): example \(row): label \(problem)")
        }
      }
    } else {
      guard labels.rank == 2 else {
        throw DatasetError(
          .shapeMismatch, "\(name): regression targets must have shape [N, k], got \(labels.shape)")
      }
    }
    guard labels.shape[0] == inputs.shape[0] else {
      throw DatasetError(
        .shapeMismatch,
        "\(name): \(inputs.shape[0]) input rows but \(labels.shape[0]) label rows")
    }
    self.init(unchecked: name, inputs: inputs, labels: labels, classCount: classCount)
  }

  /// Assembles a dataset from parts already known to agree (derived from a checked dataset).
  init(unchecked name: String, inputs: Tensor, labels: Tensor, classCount: Int?) {
    self.name = name
    self.inputs = inputs
    self.labels = labels
    self.classCount = classCount
  }

  /// The number of examples.
  public var count: Int { inputs.shape[0] }

  /// The shape of one example (the inputs' shape without the batch axis).
  public var featureShape: [Int] { Array(inputs.shape.dropFirst()) }

  /// The number of scalars in one example.
  public var featureCount: Int { featureShape.reduce(1, *) }

  /// Why `label` is not a class index (below `classCount` when that is known), or nil when it is.
  static func classLabelProblem(_ label: Float, classCount: Int?) -> String? {
    guard label.isFinite, label == label.rounded(), label >= 0 else {
      return "\(label) is not a class index (a non-negative integer)"
    }
    if let classCount, label >= Float(classCount) {
      return "\(Int(label)) is outside the \(classCount) classes 0...\(classCount - 1)"
    }
    return nil
  }

  /// The examples at `indices`, in that order, as a new dataset named `name`.
  func subset(_ indices: [Int], name: String) -> Dataset {
    Dataset(
      unchecked: name, inputs: inputs.rows(indices), labels: labels.rows(indices), classCount: classCount)
  }
}

/// An error from loading, checking or transforming a dataset, with a message a person can act on.
public struct DatasetError: Error, Sendable, Equatable, CustomStringConvertible {
  /// What kind of problem this is; switch on it to react in code, read `message` to fix it.
  public struct Code: Sendable, Hashable, CustomStringConvertible {
    private enum Value: String, Sendable, Hashable {
      case fileNotFound, unreadableFile, emptyFile, malformedFile, unsupportedFormat
      case badLabel, shapeMismatch, invalidArgument, unknownDataset, outsideDataDirectory
    }
    private let value: Value
    private init(_ value: Value) { self.value = value }

    /// The file does not exist.
    public static let fileNotFound = Code(.fileNotFound)
    /// The file exists but could not be read.
    public static let unreadableFile = Code(.unreadableFile)
    /// The file holds no data rows or no bytes.
    public static let emptyFile = Code(.emptyFile)
    /// The bytes do not follow the format (ragged row, bad header, truncated data, bad checksum…).
    public static let malformedFile = Code(.malformedFile)
    /// The file is well formed but uses a feature this loader does not read (dtype, order, method).
    public static let unsupportedFormat = Code(.unsupportedFormat)
    /// A class label is not an integer or lies outside `0..<classCount`.
    public static let badLabel = Code(.badLabel)
    /// Two shapes or counts that must agree do not.
    public static let shapeMismatch = Code(.shapeMismatch)
    /// An argument is out of its allowed range.
    public static let invalidArgument = Code(.invalidArgument)
    /// No bundled dataset has the requested name, or the bundled files cannot be found.
    public static let unknownDataset = Code(.unknownDataset)
    /// The path resolves outside the data directory a service reads from, or is not a regular file.
    public static let outsideDataDirectory = Code(.outsideDataDirectory)

    public var description: String { value.rawValue }
  }

  /// The kind of problem.
  public let code: Code
  /// What went wrong and where (file, line, column, key), phrased so a person can fix it.
  public let message: String

  /// Creates an error of `code` explained by `message`.
  public init(_ code: Code, _ message: String) {
    self.code = code
    self.message = message
  }

  public var description: String { "\(code): \(message)" }
}
