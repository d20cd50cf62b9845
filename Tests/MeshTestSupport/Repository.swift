import Foundation

/// Paths inside the checkout the tests run from.
public enum Repository {
  /// The package root (the folder holding Package.swift).
  public static let root: URL = {
    var url = URL(fileURLWithPath: #filePath)
    while url.path != "/" {
      url.deleteLastPathComponent()
      if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) {
        return url
      }
    }
    preconditionFailure("no Package.swift above \(#filePath)")
  }()

  public static func path(_ relative: String) -> String {
    root.appendingPathComponent(relative).path
  }
}

/// A directory that exists for the life of the value's scope.
public final class TemporaryDirectory: Sendable {
  public let path: String

  public init(prefix: String = "pipemesh-test") throws {
    let url = FileManager.default.temporaryDirectory
      .appendingPathComponent("\(prefix)-\(UUID().uuidString.prefix(8))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    path = url.path
  }

  public func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

  deinit { try? FileManager.default.removeItem(atPath: path) }
}
