import Foundation
import Synchronization

/// Services `pipemesh up` runs as child processes of its own binary, on free
/// loopback ports. Each one's output goes to `<run>/logs/<name>.log`.
final class ChildServices: Sendable {
  private struct Child {
    let name: String
    let process: Process
    let log: String
  }
  private let children = Mutex<[Child]>([])
  private let logDirectory: String

  init(logDirectory: String) throws {
    self.logDirectory = logDirectory
    try FileManager.default.createDirectory(atPath: logDirectory, withIntermediateDirectories: true)
  }

  /// Starts `pipemesh serve <role> …` and returns the endpoint it announces.
  func start(_ role: String, name: String, _ arguments: [String]) async throws -> String {
    let log = (logDirectory as NSString).appendingPathComponent("\(name).log")
    _ = FileManager.default.createFile(atPath: log, contents: nil)
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
    let process = Process()
    process.executableURL = URL(fileURLWithPath: try Self.executable())
    process.arguments = ["serve", role, "--listen", "127.0.0.1:0"] + arguments
    process.standardOutput = handle
    process.standardError = handle
    process.standardInput = FileHandle.nullDevice
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
        throw UpError("\(name) exited before it listened (status \(process.terminationStatus)); its log, \(log):\n\(text)")
      }
      try await Task.sleep(for: .milliseconds(20))
    }
    throw UpError("\(name) did not listen within 60 s; see \(log)")
  }

  /// Stops every child with SIGTERM (the ps writes its last checkpoint),
  /// then SIGKILL for any still running after `grace`.
  func stopAll(grace: Duration = .seconds(15)) async {
    let all = children.withLock { $0 }
    for child in all.reversed() where child.process.isRunning { child.process.terminate() }
    let deadline = ContinuousClock.now + grace
    while all.contains(where: { $0.process.isRunning }), ContinuousClock.now < deadline {
      try? await Task.sleep(for: .milliseconds(20))
    }
    for child in all where child.process.isRunning { kill(child.process.processIdentifier, SIGKILL) }
  }

  private static func executable() throws -> String {
    guard let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") else {
      throw UpError("cannot find this executable to start the services with")
    }
    return path
  }
}

/// An error `pipemesh up` reports and exits with.
struct UpError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
