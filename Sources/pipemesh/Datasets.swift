import Foundation
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

/// Loads what a `DatasetReference` names: a bundled dataset, a CSV, an .npz
/// archive, or an IDX image/label pair. Bad references and files are
/// INVALID_ARGUMENT or NOT_FOUND with the loader's message.
func loadDataset(_ reference: Pipemesh_V1_DatasetReference) throws -> LoadedData {
  let task: LabelTask = reference.regression ? .regression : .classification()
  let uri = reference.uri
  let dataset: Dataset
  do {
    if Datasets.bundledNames.contains(uri) {
      dataset = try Datasets.bundled(named: uri)
    } else if let synthetic = try synthetic(uri) {
      dataset = synthetic
    } else if uri.hasPrefix("idx:") {
      let files = uri.dropFirst(4).split(separator: ",").map { URL(fileURLWithPath: String($0)) }
      guard files.count == 2 else { throw RPCError(.invalidArgument, "an IDX dataset is idx:IMAGES,LABELS, got \(uri)") }
      dataset = try Datasets.idx(images: files[0], labels: files[1])
    } else if uri.hasSuffix(".npz") {
      dataset = try Datasets.npz(at: URL(fileURLWithPath: uri), task: task)
    } else if uri.hasSuffix(".csv") || uri.hasSuffix(".csv.gz") {
      dataset = try Datasets.csv(
        at: URL(fileURLWithPath: uri), labelColumn: .named(reference.labelColumn.isEmpty ? "label" : reference.labelColumn),
        task: task)
    } else {
      throw RPCError(
        .invalidArgument,
        "dataset '\(uri)' is neither a bundled dataset (\((Datasets.bundledNames + syntheticNames).joined(separator: ", "))) "
          + "nor a .csv, .csv.gz, .npz or idx:IMAGES,LABELS file")
    }
  } catch let error as DatasetError {
    throw RPCError(error.code == .fileNotFound ? .notFound : .invalidArgument, error.message)
  }
  return LoadedData(inputs: dataset.inputs, targets: dataset.labels, classes: dataset.classCount ?? 0)
}

/// Generated datasets for examples, the same on every machine.
let syntheticNames = ["synthetic-parity", "synthetic-reversal", "synthetic-regression"]

private func synthetic(_ name: String) throws -> Dataset? {
  switch name {
  case "synthetic-parity": return try Datasets.syntheticSequences(count: 4000, length: 8, task: .parity, seed: 1)
  case "synthetic-reversal": return try Datasets.syntheticSequences(count: 4000, length: 8, task: .reversal, seed: 1)
  case "synthetic-regression": return try Datasets.syntheticRegression(count: 2000, features: 8, outputs: 1, seed: 1).dataset
  default: return nil
  }
}

/// The coordinator's loader for Train requests that name a dataset.
@Sendable func loadTrainingData(_ reference: Pipemesh_V1_DatasetReference) throws -> (inputs: Tensor, targets: Tensor) {
  let data = try loadDataset(reference)
  return (data.inputs, data.targets)
}
