import Foundation
import Testing

/// A fresh, empty folder under the system temporary directory; the caller removes it.
func makeTemporaryDirectory() throws -> URL {
  let url = FileManager.default.temporaryDirectory
    .appendingPathComponent("meshdata-tests-\(UUID().uuidString)")
  try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  return url
}

/// Runs `body` with a fresh temporary folder and removes the folder afterwards, even on failure.
func withTemporaryDirectory<R>(_ body: (URL) async throws -> R) async throws -> R {
  let folder = try makeTemporaryDirectory()
  defer { try? FileManager.default.removeItem(at: folder) }
  return try await body(folder)
}

struct PythonFailure: Error, CustomStringConvertible {
  let description: String
}

/// The first `python3` on PATH.
func pythonExecutable() throws -> URL {
  let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
  for folder in path.split(separator: ":") {
    let candidate = URL(fileURLWithPath: String(folder)).appendingPathComponent("python3")
    if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
  }
  throw PythonFailure(description: "python3 not found on PATH (\(path))")
}

/// Runs `executable` with `arguments` in `folder` to its end; returns its exit status and what it
/// wrote to stderr. It is waited for on a thread of its own: a test must not hold one of Swift's
/// few executor threads while a program runs, or other tests' tasks starve.
func runProgram(_ executable: URL, _ arguments: [String], in folder: URL) async throws -> (
  status: Int32, errors: String
) {
  try await withCheckedThrowingContinuation { continuation in
    Thread.detachNewThread {
      continuation.resume(
        with: Result {
          let process = Process()
          process.executableURL = executable
          process.arguments = arguments
          process.currentDirectoryURL = folder
          let errors = Pipe()
          process.standardError = errors
          try process.run()
          let message = errors.fileHandleForReading.readDataToEndOfFile()
          process.waitUntilExit()
          return (process.terminationStatus, String(decoding: message, as: UTF8.self))
        })
    }
  }
}

/// Runs a Python script (with numpy, struct, gzip available) in `folder`, which becomes its
/// working directory, and fails with Python's stderr if the script does not exit with status 0.
func runPython(_ script: String, in folder: URL) async throws {
  let (status, errors) = try await runProgram(try pythonExecutable(), ["-c", script], in: folder)
  guard status == 0 else { throw PythonFailure(description: "python3 exited with \(status): \(errors)") }
}

/// Writes `text` to `name` in `folder` and returns its URL.
@discardableResult
func writeFile(_ text: String, named name: String, in folder: URL) throws -> URL {
  let url = folder.appendingPathComponent(name)
  try text.write(to: url, atomically: true, encoding: .utf8)
  return url
}
