import Dispatch
import Foundation
import Synchronization

/// Ctrl-C while a command follows a job it started: the job is the
/// coordinator's and runs on. The command says how to follow or cancel it
/// and exits 130; on a terminal it first asks whether to cancel the job.
final class ControlC: Sendable {
  private let job = Mutex("")
  /// Set once Ctrl-C was pressed: the handler asks and answers from here on.
  private let pressed = Mutex(false)
  private let cancel: @Sendable (String) async throws -> Void
  private nonisolated(unsafe) let source: any DispatchSourceSignal

  private init(cancel: @escaping @Sendable (String) async throws -> Void) {
    self.cancel = cancel
    signal(SIGINT, SIG_IGN)
    source = DispatchSource.makeSignalSource(signal: SIGINT, queue: .global())
  }

  /// Handles Ctrl-C from now on; `cancel` cancels the job when the user says so.
  static func detaches(cancel: @escaping @Sendable (String) async throws -> Void) -> ControlC {
    let handler = ControlC(cancel: cancel)
    handler.source.setEventHandler { handler.interrupted() }
    handler.source.resume()
    return handler
  }

  /// The job being followed, once the coordinator has named it.
  func follows(_ name: String) {
    guard !name.isEmpty else { return }
    job.withLock { $0 = name }
  }

  /// Whether Ctrl-C was pressed: progress is not shown while the question
  /// waits for its answer.
  var wasPressed: Bool { pressed.withLock { $0 } }

  /// Runs `body`, which follows the job. An end it comes to after Ctrl-C
  /// (the job cancelled on the user's word) is the handler's to report: it
  /// says so and exits 130.
  func following(_ body: () async throws -> Void) async throws {
    do {
      try await body()
    } catch  where wasPressed {
      while true { try? await Task.sleep(for: .seconds(60)) }
    }
  }

  private func interrupted() {
    pressed.withLock { $0 = true }
    let name = job.withLock { $0 }
    guard !name.isEmpty else {
      Self.write("\nstopped; if the job was created, `pipemesh jobs list` shows it\n")
      exit(130)
    }
    if isatty(STDIN_FILENO) == 1 {
      Self.write("\ncancel job \(name) too? [y/N] ")
      if readLine()?.lowercased().hasPrefix("y") == true {
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<String>("")
        Task {
          do {
            try await cancel(name)
            outcome.withLock { $0 = "cancelled job \(name)\n" }
          } catch {
            outcome.withLock { $0 = "could not cancel job \(name): \(error)\n" }
          }
          done.signal()
        }
        done.wait()
        Self.write(outcome.withLock { $0 })
        exit(130)
      }
    }
    Self.write(
      "\nstopped following job \(name); it runs on. Follow it again: pipemesh jobs follow \(name); "
        + "stop it: pipemesh cancel --job \(name)\n")
    exit(130)
  }

  private static func write(_ text: String) {
    FileHandle.standardError.write(Data(text.utf8))
  }
}
