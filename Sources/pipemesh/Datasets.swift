import Foundation
import MeshCoordinator
import MeshData
import MeshProto
import MeshRPC
import MeshTensor

/// Training data loaded from a dataset reference.
struct LoadedData {
  let inputs: Tensor
  let targets: Tensor
  /// Classes of a classification dataset; 0 for regression.
  let classes: Int
}

/// Which files a dataset reference may name.
enum DatasetFiles: Sendable {
  /// Any file this process can read: the CLI's own, for the user who runs it.
  case anywhere
  /// Files inside a data directory only: a service's, for its callers.
  case inside(DataDirectory)
  /// None: a service without a data directory serves bundled datasets only.
  case none

  func url(_ path: String) throws -> URL {
    switch self {
    case .anywhere: return URL(fileURLWithPath: path)
    case .inside(let directory): return try directory.resolve(path)
    case .none:
      throw RPCError(
        .permissionDenied,
        "this coordinator reads no dataset files (it has no --data-dir); name a bundled dataset "
          + "(\((Datasets.bundledNames + syntheticNames).joined(separator: ", "))) or send the data inline")
    }
  }
}

/// Loads what a `DatasetReference` names: a bundled dataset, a CSV, an .npz
/// archive, or an IDX image/label pair, from the files `files` allows. Bad
/// references and files are INVALID_ARGUMENT or NOT_FOUND with the loader's
/// message; a file outside what `files` allows is PERMISSION_DENIED.
func loadDataset(_ reference: Pipemesh_V1_DatasetReference, files: DatasetFiles = .anywhere) throws -> LoadedData {
  let task: LabelTask = reference.regression ? .regression : .classification()
  let uri = reference.uri
  let dataset: Dataset
  if Datasets.bundledNames.contains(uri) {
    dataset = try Datasets.bundled(
      named: uri, sequenceLength: Datasets.isBundledText(uri) ? try sequenceLength(of: reference) : nil)
  } else if let synthetic = try synthetic(uri) {
    dataset = synthetic
  } else if uri.hasPrefix("idx:") {
    let paths = uri.dropFirst(4).split(separator: ",").map(String.init)
    guard paths.count == 2 else {
      throw RPCError(.invalidArgument, "an IDX dataset is idx:IMAGES,LABELS, got \(uri.echoed)")
    }
    dataset = try Datasets.idx(images: try files.url(paths[0]), labels: try files.url(paths[1]))
  } else if uri.hasSuffix(".npz") {
    dataset = try Datasets.npz(
      at: try files.url(uri), inputsKey: try arrayName(reference.inputsKey, default: "x", field: "inputs_key"),
      labelsKey: try arrayName(reference.labelsKey, default: "y", field: "labels_key"), task: task)
  } else if let pair = npyPair(uri) {
    dataset = try Datasets.npy(inputs: try files.url(pair.inputs), labels: try files.url(pair.labels), task: task)
  } else if Datasets.isTextFile(uri) {
    dataset = try Datasets.text(at: try files.url(uri), sequenceLength: try sequenceLength(of: reference))
  } else if uri.hasSuffix(".csv") || uri.hasSuffix(".csv.gz") {
    dataset = try Datasets.csv(
      at: try files.url(uri), labelColumn: .named(reference.labelColumn.isEmpty ? "label" : reference.labelColumn),
      task: task)
  } else {
    throw RPCError(
      .invalidArgument,
      "dataset '\(uri.echoed)' is neither a bundled dataset (\((Datasets.bundledNames + syntheticNames).joined(separator: ", "))) "
        + "nor a .csv, .csv.gz, .npz, INPUTS.npy,LABELS.npy, idx:IMAGES,LABELS, .txt or .txt.gz file")
  }
  return LoadedData(inputs: dataset.inputs, targets: dataset.labels, classes: dataset.classCount ?? 0)
}

/// The window a text dataset is read in: the reference's sequence_length,
/// which a text needs.
private func sequenceLength(of reference: Pipemesh_V1_DatasetReference) throws -> Int {
  let length = reference.sequenceLength
  guard length >= 1, length <= Datasets.maxSequenceLength else {
    throw RPCError(
      .invalidArgument,
      "dataset '\(reference.uri.echoed)' is a text, read in windows of bytes: sequence_length must be 1 to "
        + "\(Datasets.maxSequenceLength) (the model's input length), got \(length)")
  }
  return Int(length)
}

/// The array of an .npz archive a reference names (`fallback` when empty):
/// at most 255 characters, none of them control characters.
private func arrayName(_ name: String, default fallback: String, field: String) throws -> String {
  guard !name.isEmpty else { return fallback }
  guard name.count <= 255, !name.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) else {
    throw RPCError(
      .invalidArgument,
      "\(field) '\(name.echoed)' is not an array name: give up to 255 characters, no control characters")
  }
  return name
}

/// The two files of an "INPUTS.npy,LABELS.npy" reference.
private func npyPair(_ uri: String) -> (inputs: String, labels: String)? {
  let paths = uri.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
  guard paths.count == 2, paths.allSatisfy({ $0.hasSuffix(".npy") }) else { return nil }
  return (paths[0], paths[1])
}

/// The files a coordinator's requests may name besides datasets (model
/// weights to import), by the same rule; nil when it may name none.
func dataFileResolver(files: DatasetFiles) -> DataFileResolver? {
  if case .none = files { return nil }
  return { try files.url($0) }
}

/// Generated datasets for examples, the same on every machine.
let syntheticNames = ["synthetic-parity", "synthetic-reversal", "synthetic-regression"]

private func synthetic(_ name: String) throws -> Dataset? {
  switch name {
  case "synthetic-parity": return try Datasets.syntheticSequences(count: 4000, length: 8, task: .parity, seed: 1)
  case "synthetic-reversal": return try Datasets.syntheticSequences(count: 4000, length: 8, task: .reversal, seed: 1)
  case "synthetic-regression":
    return try Datasets.syntheticRegression(count: 2000, features: 8, outputs: 1, seed: 1).dataset
  default: return nil
  }
}

/// The coordinator's loader for Train requests that name a dataset: files
/// from `files` only.
func trainingDataLoader(files: DatasetFiles) -> DatasetLoader {
  { reference in
    let data = try loadDataset(reference, files: files)
    return (data.inputs, data.targets)
  }
}
