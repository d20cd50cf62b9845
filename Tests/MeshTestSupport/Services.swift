import Foundation

/// The `pipemesh` executable built next to the test bundle.
public enum PipemeshBinary {
  public static let path: String = {
    let testBinary = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
    var directory = URL(fileURLWithPath: testBinary).deletingLastPathComponent()
    // The bundle may be a directory (pipemeshPackageTests.xctest/...) or a file beside the products.
    while !FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent("pipemesh").path),
      directory.path != "/"
    {
      directory.deleteLastPathComponent()
    }
    return directory.appendingPathComponent("pipemesh").path
  }()
}

/// A `pipemesh serve …` process on a free loopback port.
public struct RunningService: Sendable {
  public let process: ChildProcess
  /// `127.0.0.1:port`, from the service's "listening on" line.
  public let endpoint: String

  /// Starts `pipemesh serve <role> <arguments>` and waits until it listens.
  public static func start(_ role: String, _ arguments: [String] = [], log: String) async throws -> RunningService {
    let process = try ChildProcess(
      PipemeshBinary.path, ["serve", role, "--listen", "127.0.0.1:0"] + arguments, logPath: log)
    let endpoint = try await process.waitForLine(startingWith: "\(role) listening on ")
    return RunningService(process: process, endpoint: endpoint)
  }
}
