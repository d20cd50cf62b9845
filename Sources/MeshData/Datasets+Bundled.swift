import Foundation

extension Datasets {
  /// A dataset shipped in the repository's `datasets/` folder.
  enum BundledDataset {
    /// A CSV of features and a "label" column.
    case table(file: String, classCount: Int)
    /// A text, read in windows of bytes (`text(_:name:sequenceLength:)`).
    case text(file: String)
  }

  /// The bundled datasets by name.
  static let bundledDatasets: [String: BundledDataset] = [
    "digits": .table(file: "digits.csv", classCount: 10),
    "shakespeare": .text(file: "tragedies.txt"),
  ]

  /// The names `bundled(named:sequenceLength:)` accepts.
  public static var bundledNames: [String] { bundledDatasets.keys.sorted() }

  /// Whether the bundled dataset `name` is a text (it needs a sequence length).
  public static func isBundledText(_ name: String) -> Bool {
    if case .text = bundledDatasets[name] { return true }
    return false
  }

  /// Loads a dataset shipped with Pipemesh: "digits" (the UCI 8×8 handwritten digits: 1,797
  /// examples, 64 features with values 0–16, 10 classes) or "shakespeare" (six tragedies, 841,791
  /// bytes of text, read in windows of `sequenceLength` bytes, which a text needs).
  ///
  /// The `datasets/` folder is found as described in `locateBundledFolder`: the
  /// `PIPEMESH_DATASETS` environment variable first, else the nearest ancestor of the running
  /// executable, else of this source file, that holds `datasets/<name>/`.
  public static func bundled(named name: String, sequenceLength: Int? = nil) throws -> Dataset {
    guard let entry = bundledDatasets[name] else {
      throw DatasetError(
        .unknownDataset,
        "no bundled dataset named '\(name)'; available: \(bundledNames.joined(separator: ", "))")
    }
    let folder = try locateBundledFolder(
      named: name, environment: ProcessInfo.processInfo.environment,
      executable: Bundle.main.executableURL, sourceFile: #filePath)
    var dataset: Dataset
    switch entry {
    case .table(let file, let classCount):
      dataset = try csv(
        at: folder.appendingPathComponent(file), labelColumn: .named("label"),
        task: .classification(classCount: classCount))
    case .text(let file):
      guard let sequenceLength else {
        throw DatasetError(
          .invalidArgument, "\(name) is a text, read in windows of bytes: give a sequence length")
      }
      dataset = try text(at: folder.appendingPathComponent(file), sequenceLength: sequenceLength)
    }
    dataset.name = name
    return dataset
  }

  /// The folder `datasets/<name>` to load from, searched in this order:
  /// 1. `$PIPEMESH_DATASETS/<name>` when the variable is set (an error if that folder is missing,
  ///    so a deployment's setting is never silently ignored);
  /// 2. `<ancestor>/datasets/<name>` for the nearest ancestor folder of `executable` (covers
  ///    `swift run` and `swift test`, whose binaries live in the repository's `.build/`);
  /// 3. the same from `sourceFile` (covers binaries built in a checkout and then moved).
  static func locateBundledFolder(
    named name: String, environment: [String: String], executable: URL?, sourceFile: String
  ) throws -> URL {
    let fileManager = FileManager.default
    func isFolder(_ url: URL) -> Bool {
      var isDirectory: ObjCBool = false
      return fileManager.fileExists(atPath: url.path, isDirectory: &isDirectory) && isDirectory.boolValue
    }
    if let configured = environment["PIPEMESH_DATASETS"], !configured.isEmpty {
      let folder = URL(fileURLWithPath: configured).appendingPathComponent(name)
      guard isFolder(folder) else {
        throw DatasetError(
          .unknownDataset,
          "PIPEMESH_DATASETS is \(configured) but \(folder.path) is not a folder; point it at the "
            + "repository's datasets/ folder or unset it")
      }
      return folder
    }
    let starts = [executable?.resolvingSymlinksInPath(), URL(fileURLWithPath: sourceFile)]
    for start in starts.compactMap({ $0 }) {
      var folder = start.deletingLastPathComponent()
      while true {
        let candidate = folder.appendingPathComponent("datasets").appendingPathComponent(name)
        if isFolder(candidate) { return candidate }
        let parent = folder.deletingLastPathComponent()
        if parent.path == folder.path { break }
        folder = parent
      }
    }
    throw DatasetError(
      .unknownDataset,
      "cannot find datasets/\(name) above \(executable?.path ?? "the executable") or \(sourceFile); "
        + "set PIPEMESH_DATASETS to the repository's datasets/ folder")
  }
}
