import Foundation
import MeshTensor

/// What the labels of a loaded dataset mean.
public enum LabelTask: Sendable, Equatable {
  /// Integer class indices; `classCount` nil means one more than the largest label seen.
  case classification(classCount: Int? = nil)
  /// Real-valued targets; a single target column becomes shape `[N, 1]`.
  case regression
}

/// Loaders for dataset files, the bundled datasets, and synthetic datasets for examples.
public enum Datasets {
  /// Builds a dataset from loaded tensors, shaping labels for `task`: class labels become `[N]`
  /// (an `[N, 1]` column is accepted), regression targets `[N, k]` (an `[N]` vector becomes `[N, 1]`).
  public static func make(name: String, inputs: Tensor, labels: Tensor, task: LabelTask) throws -> Dataset {
    guard inputs.rank >= 1, labels.rank >= 1 else {
      throw DatasetError(
        .shapeMismatch,
        "\(name): inputs and labels need a batch axis, got shapes \(inputs.shape) and \(labels.shape)")
    }
    switch task {
    case .classification(let classCount):
      guard labels.rank == 1 || (labels.rank == 2 && labels.shape[1] == 1) else {
        throw DatasetError(
          .shapeMismatch,
          "\(name): class labels must have shape [N] or [N, 1], got \(labels.shape); "
            + "load multi-column targets as .regression")
      }
      let vector = labels.reshaped(to: [labels.shape[0]])
      // Out-of-range and fractional labels are reported by Dataset's checks, so clamping is safe.
      let largest = vector.scalars.filter(\.isFinite).max() ?? 0
      let inferred = classCount ?? Int(Swift.min(Swift.max(largest, 0), 1e9)) + 1
      return try Dataset(name: name, inputs: inputs, labels: vector, classCount: inferred)
    case .regression:
      let matrix = labels.rank == 1 ? labels.reshaped(to: [labels.shape[0], 1]) : labels
      guard matrix.rank == 2 else {
        throw DatasetError(
          .shapeMismatch, "\(name): regression targets must have shape [N] or [N, k], got \(labels.shape)")
      }
      return try Dataset(name: name, inputs: inputs, labels: matrix, classCount: nil)
    }
  }

  /// The name a dataset loaded from `url` gets: the file name without `.gz` and its extension.
  static func datasetName(for url: URL) -> String {
    let file = url.lastPathComponent
    let unzipped = file.hasSuffix(".gz") ? String(file.dropLast(3)) : file
    return URL(fileURLWithPath: unzipped).deletingPathExtension().lastPathComponent
  }

  /// Loads a dataset from two `.npy` files, one holding the inputs `[N, ...]` and one the labels.
  public static func npy(inputs inputsURL: URL, labels labelsURL: URL, task: LabelTask) throws -> Dataset {
    try make(
      name: datasetName(for: inputsURL),
      inputs: try NumPy.readArray(at: inputsURL), labels: try NumPy.readArray(at: labelsURL), task: task)
  }

  /// Loads a dataset from an `.npz` archive whose arrays `inputsKey` and `labelsKey` hold the
  /// inputs and labels (NumPy's `np.savez(path, x=..., y=...)` gives the default keys).
  public static func npz(
    at url: URL, inputsKey: String = "x", labelsKey: String = "y", task: LabelTask
  ) throws -> Dataset {
    let arrays = try NumPy.readArchive(at: url)
    func array(_ key: String) throws -> Tensor {
      guard let array = arrays[key] else {
        throw DatasetError(
          .malformedFile,
          "\(url.lastPathComponent): has no array named '\(key)'; it holds "
            + "\(arrays.keys.sorted().map { "'\($0)'" }.joined(separator: ", ")); name the arrays with inputs_key and labels_key"
        )
      }
      return array
    }
    return try make(
      name: datasetName(for: url), inputs: try array(inputsKey),
      labels: try array(labelsKey), task: task)
  }
}
