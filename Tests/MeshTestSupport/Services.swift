import Foundation

/// The `pipemesh` executable built next to the test bundle.
public enum PipemeshBinary {
  public static let path: String = {
    let testBinary =
      (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
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

/// Runs `pipemesh <arguments>` in `directory` as a user would; returns its
/// exit status and output (stdout and stderr).
public func pipemesh(_ arguments: [String], in directory: TemporaryDirectory) async throws -> (
  status: Int32, output: String
) {
  let log = directory.file("run-\(UUID().uuidString.prefix(6)).log")
  let process = try ChildProcess(PipemeshBinary.path, arguments, logPath: log, currentDirectory: directory.path)
  let status = try await process.waitForExit(timeout: .seconds(180))
  return (status, process.log)
}

/// A `pipemesh serve …` process on a free loopback port.
public struct RunningService: Sendable {
  public let process: ChildProcess
  /// `127.0.0.1:port`, from the service's "listening on" line.
  public let endpoint: String

  /// Starts `pipemesh serve <role> <arguments>` (with more `environment`)
  /// and waits until it listens: on a free port, or on `listen` (a restart
  /// at the address of a service that was killed).
  public static func start(
    _ role: String, _ arguments: [String] = [], log: String, environment: [String: String] = [:],
    listen: String = "127.0.0.1:0"
  ) async throws -> RunningService {
    let process = try ChildProcess(
      PipemeshBinary.path, ["serve", role, "--listen", listen] + arguments, logPath: log,
      environment: environment)
    let endpoint = try await process.waitForLine(startingWith: "\(role) listening on ")
    return RunningService(process: process, endpoint: endpoint)
  }
}

/// A local mesh of real processes: ps tasks and partitions, and coordinators
/// over chosen subsets of the partitions.
public final class LocalMesh: Sendable {
  public let logs: TemporaryDirectory
  public let parameterServers: [RunningService]
  public let partitions: [RunningService]

  public init(parameterServers: Int = 1, partitions: Int) async throws {
    logs = try TemporaryDirectory(prefix: "pipemesh-mesh")
    var ps: [RunningService] = []
    for index in 0..<parameterServers {
      ps.append(try await RunningService.start("ps", log: logs.file("ps\(index).log")))
    }
    var started: [RunningService] = []
    for index in 0..<partitions {
      started.append(try await RunningService.start("partition", log: logs.file("partition\(index).log")))
    }
    self.parameterServers = ps
    self.partitions = started
  }

  /// Starts a coordinator whose stage s has the partitions `layout[s]`
  /// (indices into `partitions`, one per replica), with more `arguments`.
  public func coordinator(_ layout: [[Int]], name: String, arguments: [String] = []) async throws -> RunningService {
    let stages = layout.map { $0.map { partitions[$0].endpoint }.joined(separator: ",") }.joined(separator: ";")
    return try await RunningService.start(
      "coordinator",
      ["--ps", parameterServers.map(\.endpoint).joined(separator: ","), "--partitions", stages] + arguments,
      log: logs.file("coordinator-\(name).log"))
  }

  /// Every process's log, for a failure message.
  public var logText: String {
    (parameterServers + partitions).map { "--- \($0.process.logPath)\n\($0.process.log)" }.joined(separator: "\n")
  }
}
