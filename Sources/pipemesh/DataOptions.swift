import ArgumentParser
import Foundation
import MeshData
import MeshProto

/// What a model learns from: the spec, the dataset, its held-out split and
/// the rescaling of its inputs. Shared by the commands that train and
/// `pipemesh solve`.
struct DataOptions: ParsableArguments {
  @Option(help: "Model spec, protobuf JSON (see examples/); default: an MLP that fits the dataset.")
  var model: String?

  @Option(
    help: """
      Bundled dataset (digits, shakespeare, synthetic-parity, synthetic-reversal, synthetic-regression) or a \
      file: .csv, .csv.gz, .npz (x, y), idx:IMAGES,LABELS, or a text (.txt, .txt.gz) read in windows of bytes \
      for a language model. `up` reads a file relative to the working directory (its coordinator's --data-dir \
      is the file's folder); `train` names it relative to the coordinator's --data-dir.
      """)
  var dataset: String = "digits"

  @Option(
    help: """
      Bytes per window of a text dataset (shakespeare, .txt): default the model's input length, or 64 \
      without --model.
      """)
  var sequenceLength: Int?

  @Option(help: "Label column of a CSV dataset.")
  var labelColumn: String = "label"

  @Flag(help: "The labels are real-valued targets (regression), not class indices.")
  var regression = false

  @Option(help: "Fraction of the data held out for evaluation.")
  var validation: Float = 0.2

  @Option(
    help: "Seed of the held-out split and of each epoch's order: the same seed on the same split gives the same run.")
  var seed: UInt64 = 1

  @Option(
    help: """
      Rescaling of the input features, fitted on the training split and kept with the model for inference: \
      standardize (mean 0, deviation 1), min-max (0 to 1) or none. Default: standardize, or none for a \
      model that reads token ids (an embedding first).
      """)
  var normalize: String?

  /// The methods `--normalize` names.
  static let normalizations: [String: Pipemesh_V1_NormalizationMethod] = [
    "standardize": .standardize, "min-max": .minMax, "none": .none,
  ]

  /// The dataset as a Train or Solve request names it.
  var datasetReference: Pipemesh_V1_DatasetReference {
    .with {
      $0.uri = dataset
      $0.labelColumn = labelColumn
      $0.regression = regression
      if isText { $0.sequenceLength = Int64(textWindow) }
    }
  }

  /// Whether --dataset names a text, which is read in windows of bytes.
  var isText: Bool { Datasets.isBundledText(dataset) || Datasets.isTextFile(dataset) }

  /// A text's window: --sequence-length, else the input length of a --model
  /// that reads sequences, else 64.
  private var textWindow: Int {
    if let sequenceLength { return sequenceLength }
    if let spec = try? modelSpec(), spec.inputShape.count == 1 { return Int(clamping: spec.inputShape[0]) }
    return 64
  }

  /// For a mesh this command starts itself (`up`): the reference with its
  /// files made absolute against the working directory, and the folder that
  /// holds them all, the coordinator's data directory (nil for a bundled or
  /// generated dataset).
  var localDataset: (reference: Pipemesh_V1_DatasetReference, folder: String?) {
    var reference = datasetReference
    let idx = dataset.hasPrefix("idx:")
    let names = idx ? dataset.dropFirst(4).split(separator: ",").map(String.init) : [dataset]
    guard idx || [".csv", ".csv.gz", ".npz", ".txt", ".txt.gz"].contains(where: dataset.hasSuffix) else {
      return (reference, nil)
    }
    let paths = names.map { URL(fileURLWithPath: $0).standardized.path }
    reference.uri = idx ? "idx:" + paths.joined(separator: ",") : paths[0]
    var folder =
      paths.map { ($0 as NSString).deletingLastPathComponent }.reduce(nil as [String]?) { common, folder in
        let parts = (folder as NSString).pathComponents
        guard let common else { return parts }
        return Array(zip(common, parts).prefix { $0 == $1 }.map(\.0))
      } ?? ["/"]
    if folder.isEmpty { folder = ["/"] }
    return (reference, NSString.path(withComponents: folder))
  }

  /// The model from --model, or nil for the default.
  func modelSpec() throws -> Pipemesh_V1_ModelSpec? {
    try model.map(ModelSpecFile.read)
  }

  /// The rescaling of `spec`'s inputs: --normalize, else standardize, or
  /// none for a model that reads token ids (an embedding first).
  func normalization(for spec: Pipemesh_V1_ModelSpec) -> Pipemesh_V1_NormalizationMethod {
    let readsTokens = spec.layers.first.map { if case .embedding = $0.kind { true } else { false } } ?? false
    return normalize.flatMap { Self.normalizations[$0] } ?? (readsTokens ? .none : .standardize)
  }

  func validate() throws {
    if let normalize, Self.normalizations[normalize] == nil {
      throw ValidationError("--normalize must be standardize, min-max or none")
    }
    guard validation >= 0, validation < 1 else { throw ValidationError("--validation must be in [0, 1)") }
    if let sequenceLength, !(1...Datasets.maxSequenceLength).contains(sequenceLength) {
      throw ValidationError("--sequence-length must be 1 to \(Datasets.maxSequenceLength)")
    }
  }
}
