import Foundation
import Synchronization

/// Pipemesh services run as child processes (`pipemesh serve …`) on free
/// loopback ports, as `pipemesh up` and the benchmarks start a local mesh.
/// Each one's output goes to `<logDirectory>/<name>.log`. On Foundation's `Process` rather than
/// swift-subprocess 1.0.2, whose children live only inside one closure: these outlive the call that
/// starts them.
public final class LocalServices: Sendable {
  private struct Child {
    let name: String
    let process: Process
    let log: String
  }
  private let children = Mutex<[Child]>([])
  private let logDirectory: String
  private let executable: String

  /// `executable` is the `pipemesh` binary (this process's own by default).
  public init(logDirectory: String, executable: String? = nil) throws {
    self.logDirectory = logDirectory
    self.executable = try executable ?? Self.ownExecutable()
    try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
  }

  /// Starts `pipemesh serve <role> …` and returns the endpoint it announces.
  public func start(_ role: String, name: String, _ arguments: [String]) async throws -> String {
    let log = (logDirectory as NSString).appendingPathComponent("\(name).log")
    _ = FileManager.default.createFile(atPath: log, contents: nil)
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = ["serve", role, "--listen", "127.0.0.1:0"] + arguments
    process.standardOutput = handle
    process.standardError = handle
    process.standardInput = FileHandle.nullDevice
    process.environment = ProcessInfo.processInfo.environment.merging(["PIPEMESH_EXIT_WITH_PARENT": "1"]) { $1 }
    try process.run()
    try handle.close()
    children.withLock { $0.append(Child(name: name, process: process, log: log)) }
    let prefix = "\(role) listening on "
    let deadline = ContinuousClock.now + .seconds(60)
    while ContinuousClock.now < deadline {
      let text = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
      if let line = text.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) {
        return String(line.dropFirst(prefix.count))
      }
      guard process.isRunning else {
        throw LocalServicesError(
          "\(name) exited before it listened (status \(process.terminationStatus)); its log, \(log):\n\(text)")
      }
      try await Task.sleep(for: .milliseconds(20))
    }
    throw LocalServicesError("\(name) did not listen within 60 s; see \(log)")
  }

  /// The process ids of the children by name (for CPU accounting).
  public var processIDs: [String: Int32] {
    children.withLock { Dictionary(uniqueKeysWithValues: $0.map { ($0.name, $0.process.processIdentifier) }) }
  }

  /// Stops every child with SIGTERM (the ps writes its last checkpoint),
  /// then SIGKILL for any still running after `grace`.
  public func stopAll(grace: Duration = .seconds(15)) async {
    let all = children.withLock { $0 }
    for child in all.reversed() where child.process.isRunning { child.process.terminate() }
    let deadline = ContinuousClock.now + grace
    while all.contains(where: { $0.process.isRunning }), ContinuousClock.now < deadline {
      try? await Task.sleep(for: .milliseconds(20))
    }
    for child in all where child.process.isRunning { kill(child.process.processIdentifier, SIGKILL) }
  }

  private static func ownExecutable() throws -> String {
    guard let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
      throw LocalServicesError("cannot find this executable to start the services with")
    }
    return path
  }
}

/// A service that would not start, with its log.
public struct LocalServicesError: Error, CustomStringConvertible {
  public let description: String
  public init(_ description: String) { self.description = description }
}
