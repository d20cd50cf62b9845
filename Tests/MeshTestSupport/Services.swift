import Foundation
import Synchronization

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
  /// and waits until it listens: on a free port below the kernel's ephemeral
  /// range, or on `listen` (a restart at the address of a service that was
  /// killed). A port from the ephemeral range could be taken, while its
  /// service is down, as the local port of some client's connection, and
  /// the restart would find its address in use.
  public static func start(
    _ role: String, _ arguments: [String] = [], log: String, environment: [String: String] = [:],
    listen: String? = nil
  ) async throws -> RunningService {
    for attempt in 1...5 {
      let address = listen ?? Self.unclaimedLoopbackAddress()
      let process = try ChildProcess(
        PipemeshBinary.path, ["serve", role, "--listen", address] + arguments, logPath: log,
        environment: environment)
      do {
        let endpoint = try await process.waitForLine(startingWith: "\(role) listening on ")
        return RunningService(process: process, endpoint: endpoint)
      } catch  where listen == nil && attempt < 5 && !process.isRunning && process.log.contains("cannot listen on") {
        continue  // another test's service took the port drawn: draw again
      }
    }
    preconditionFailure("the last attempt returns or throws")
  }

  /// `127.0.0.1:PORT` for a port drawn below the ephemeral range, never one
  /// this test process drew before (its service may be down, waiting for a
  /// restart at it); port 0, the kernel's choice, where that range leaves no
  /// room below it.
  private static func unclaimedLoopbackAddress() -> String {
    let range = (try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8))?
      .split(whereSeparator: \.isWhitespace).compactMap { Int($0) }
    guard let firstEphemeral = range?.first, firstEphemeral > 12_000 else { return "127.0.0.1:0" }
    let port = drawnPorts.withLock { drawn in
      var port = Int.random(in: 10_000..<firstEphemeral)
      while drawn.contains(port) { port = Int.random(in: 10_000..<firstEphemeral) }
      drawn.insert(port)
      return port
    }
    return "127.0.0.1:\(port)"
  }

  private static let drawnPorts = Mutex<Set<Int>>([])
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
