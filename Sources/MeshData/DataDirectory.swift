import Foundation

/// The folder a service reads dataset files from. A path from a request is
/// taken relative to it, symbolic links are followed, and the result must be
/// a regular file inside the folder: absolute paths elsewhere, `..` and links
/// that lead out, devices and pipes are refused, and the refusal does not
/// tell whether such a path exists.
public struct DataDirectory: Sendable {
  /// The folder, with its own links resolved.
  public let root: String
  /// The folder as given, made absolute, `..` resolved by its letters.
  private let givenRoot: String

  /// Throws `.fileNotFound` when `path` is not a folder.
  public init(_ path: String) throws(DatasetError) {
    var isDirectory: ObjCBool = false
    guard let resolved = Self.realPath(path),
      FileManager.default.fileExists(atPath: resolved, isDirectory: &isDirectory),
      isDirectory.boolValue
    else { throw DatasetError(.fileNotFound, "data directory \(path) is not a folder") }
    root = resolved
    givenRoot = URL(fileURLWithPath: path).standardized.path
  }

  /// The file `path` names inside the folder.
  public func resolve(_ path: String) throws(DatasetError) -> URL {
    let joined = path.hasPrefix("/") ? path : (root as NSString).appendingPathComponent(path)
    let refusal = DatasetError(
      .outsideDataDirectory,
      "dataset file '\(Self.shortened(path))' is not a readable file inside this service's data directory "
        + "(--data-dir or PIPEMESH_DATA_DIR); give a path relative to it")
    // Outside by its letters, or by where its links lead: refused alike,
    // whether or not it exists.
    let lexical = URL(fileURLWithPath: joined).standardized.path
    guard Self.isInside(lexical, root) || Self.isInside(lexical, givenRoot) else { throw refusal }
    guard let resolved = Self.realPath(joined) else {
      throw DatasetError(
        .fileNotFound, "dataset file '\(Self.shortened(path))' does not exist in this service's data directory")
    }
    guard Self.isInside(resolved, root) else { throw refusal }
    var status = stat()
    guard stat(resolved, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { throw refusal }
    return URL(fileURLWithPath: resolved)
  }

  private static func isInside(_ path: String, _ root: String) -> Bool {
    root == "/" || path.hasPrefix(root + "/")
  }

  private static func realPath(_ path: String) -> String? {
    guard let resolved = realpath(path, nil) else { return nil }
    defer { free(resolved) }
    return String(cString: resolved)
  }

  private static func shortened(_ path: String) -> String {
    path.count > 200 ? "\(path.prefix(200))… (cut)" : path
  }
}
