import Foundation
import Synchronization

/// A process a test started: its output goes to a log file; it is killed when
/// the value is dropped, so a failing test leaves nothing running. On Foundation's `Process`
/// rather than swift-subprocess 1.0.2, whose children live only inside one closure: a test holds
/// these across awaits, signals them (kill -9, SIGSTOP) and drops them in `deinit`.
public final class ChildProcess: Sendable {
  public let logPath: String
  private let process: ProcessBox

  /// Starts `executable` with `arguments`; stdout and stderr go to `logPath`.
  public init(
    _ executable: String, _ arguments: [String], logPath: String,
    environment: [String: String] = [:], currentDirectory: String? = nil
  ) throws {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    // Services exit when the test process does, even if it crashes.
    process.environment = ProcessInfo.processInfo.environment
      .merging(["PIPEMESH_EXIT_WITH_PARENT": "1"]) { $1 }.merging(environment) { $1 }
    if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
    _ = FileManager.default.createFile(atPath: logPath, contents: nil)
    let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
    process.standardOutput = log
    process.standardError = log
    process.standardInput = FileHandle.nullDevice
    try process.run()
    try log.close()
    self.logPath = logPath
    self.process = ProcessBox(process)
  }

  public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

  public var isRunning: Bool { process.value.isRunning }

  /// The process id (while running, or the last one it had).
  public var pid: Int32 { process.value.processIdentifier }

  /// Waits until the log has a line starting with `prefix` and returns the
  /// rest of that line. Throws if the process exits or `timeout` passes first.
  public func waitForLine(startingWith prefix: String, timeout: Duration = .seconds(60)) async throws -> String {
    try await waitForLog(timeout: timeout, what: "a line '\(prefix)'") { line in
      line.hasPrefix(prefix) ? String(line.dropFirst(prefix.count)).trimmingCharacters(in: .whitespaces) : nil
    }
  }

  /// Waits until the log has a line of JSON (as `--json` prints) whose
  /// object satisfies `matches`, and returns that object. Throws if the
  /// process exits or `timeout` passes first.
  public func waitForJSONLine(
    timeout: Duration = .seconds(60), where matches: ([String: Any]) -> Bool
  ) async throws -> [String: Any] {
    try await waitForLog(timeout: timeout, what: "the JSON line looked for") { line in
      guard line.hasPrefix("{"),
        let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], matches(object)
      else { return nil }
      return object
    }
  }

  /// What `find` makes of the log's first line it makes something of, once
  /// there is one.
  private func waitForLog<T>(timeout: Duration, what: String, _ find: (Substring) -> T?) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while true {
      if let found = log.split(separator: "\n").lazy.compactMap(find).first { return found }
      guard isRunning else {
        throw ChildProcessError(
          "process exited (status \(process.value.terminationStatus)) before printing \(what); log:\n\(log)")
      }
      guard ContinuousClock.now < deadline else {
        throw ChildProcessError("no \(what) within \(timeout); log:\n\(log)")
      }
      try await Task.sleep(for: .milliseconds(20))
    }
  }

  /// Waits for the process to exit and returns its status.
  public func waitForExit(timeout: Duration = .seconds(120)) async throws -> Int32 {
    let deadline = ContinuousClock.now + timeout
    while isRunning {
      guard ContinuousClock.now < deadline else {
        throw ChildProcessError("still running after \(timeout); log:\n\(log)")
      }
      try await Task.sleep(for: .milliseconds(20))
    }
    return process.value.terminationStatus
  }

  /// Sends a signal (SIGTERM by default).
  public func signal(_ signal: Int32 = SIGTERM) {
    if isRunning { kill(process.value.processIdentifier, signal) }
  }

  /// Stops the process (SIGSTOP) and waits until the kernel shows every
  /// thread of it stopped: a thread still running on a loaded host could
  /// answer one more call after `kill` returns.
  public func stop(timeout: Duration = .seconds(10)) async throws {
    signal(SIGSTOP)
    let tasks = "/proc/\(process.value.processIdentifier)/task"
    func allStopped() -> Bool {
      guard let threads = try? FileManager.default.contentsOfDirectory(atPath: tasks), !threads.isEmpty else {
        return false
      }
      return threads.allSatisfy { thread in
        // "pid (name) S …": the state follows the name's closing parenthesis.
        guard let stat = try? String(contentsOfFile: "\(tasks)/\(thread)/stat", encoding: .utf8),
          let end = stat.lastIndex(of: ")")
        else { return true }  // A thread that ended meanwhile.
        return stat[stat.index(after: end)...].trimmingCharacters(in: .whitespaces).hasPrefix("T")
      }
    }
    let deadline = ContinuousClock.now + timeout
    while !allStopped() {
      guard ContinuousClock.now < deadline else { throw ChildProcessError("not stopped within \(timeout)") }
      try await Task.sleep(for: .milliseconds(5))
    }
  }

  /// Slows the process down: stops it (SIGSTOP) for `stopped` of every
  /// `stopped + running` until the returned throttle ends, when it is left
  /// running. The duty cycle runs on a thread of its own, not on the test's
  /// concurrency pool: when that pool is busy with other tests, a task there
  /// may wake seconds late and leave the process stopped that long.
  public func throttled(stopped: Duration, running: Duration) -> Throttle {
    Throttle(pid: process.value.processIdentifier, stopped: stopped, running: running)
  }

  deinit {
    if process.value.isRunning {
      kill(process.value.processIdentifier, SIGKILL)
      process.value.waitUntilExit()
    }
  }
}

public struct ChildProcessError: Error, CustomStringConvertible {
  public let description: String
  public init(_ description: String) { self.description = description }
}

/// A process being stopped and continued in turn; see `ChildProcess.throttled`.
public final class Throttle: Sendable {
  private let cycle: Cycle

  fileprivate init(pid: Int32, stopped: Duration, running: Duration) {
    func microseconds(_ duration: Duration) -> useconds_t {
      useconds_t(duration.components.seconds * 1_000_000 + duration.components.attoseconds / 1_000_000_000_000)
    }
    let (stopped, running) = (microseconds(stopped), microseconds(running))
    let cycle = Cycle()
    Thread {
      while !cycle.ended.load(ordering: .acquiring) {
        kill(pid, SIGSTOP)
        usleep(stopped)
        kill(pid, SIGCONT)
        usleep(running)
      }
      cycle.left.signal()
    }.start()
    self.cycle = cycle
  }

  /// Ends the throttling and waits (a cycle at most) until the process is left running.
  public func end() {
    guard !cycle.ended.exchange(true, ordering: .acquiringAndReleasing) else { return }
    cycle.left.wait()
  }

  deinit { end() }

  /// What the throttling thread shares with its owner.
  private final class Cycle: Sendable {
    let ended = Atomic<Bool>(false)
    let left = DispatchSemaphore(value: 0)
  }
}

private final class ProcessBox: @unchecked Sendable {
  let value: Process
  init(_ value: Process) { self.value = value }
}

/// Runs a command to completion and returns its combined output; throws with
/// the output when it fails. The wait happens on a thread of its own: a test
/// must not hold one of Swift's few executor threads while openssl or protoc
/// runs, or other tests' tasks starve.
@discardableResult
public func run(_ executable: String, _ arguments: [String], in directory: String? = nil) async throws -> String {
  try await withCheckedThrowingContinuation { continuation in
    Thread.detachNewThread {
      continuation.resume(with: Result { try runBlocking(executable, arguments, in: directory) })
    }
  }
}

/// `run`, blocking the calling thread: for quick commands in synchronous code.
@discardableResult
public func runBlocking(_ executable: String, _ arguments: [String], in directory: String? = nil) throws -> String {
  let process = Process()
  process.executableURL = URL(fileURLWithPath: executable)
  process.arguments = arguments
  if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
  let pipe = Pipe()
  process.standardOutput = pipe
  process.standardError = pipe
  process.standardInput = FileHandle.nullDevice
  try process.run()
  let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
  process.waitUntilExit()
  guard process.terminationStatus == 0 else {
    throw ChildProcessError(
      "\(executable) \(arguments.joined(separator: " ")) failed (\(process.terminationStatus)):\n\(output)")
  }
  return output
}
