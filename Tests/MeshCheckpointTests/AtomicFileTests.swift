import Foundation
import MeshCheckpoint
import Testing

/// A fresh folder under the system temporary directory; the caller removes it.
private func makeDirectory() throws -> String {
  let path = (NSTemporaryDirectory() as NSString).appendingPathComponent("pipemesh-atomic-\(UUID().uuidString)")
  try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  return path
}

private func contents(of path: String) throws -> String {
  try String(contentsOfFile: path, encoding: .utf8)
}

private func temporaries(in directory: String) throws -> [String] {
  try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasPrefix(AtomicFile.temporaryPrefix) }
}

private struct WriterCrashed: Error {}

/// Files are replaced whole or not at all, and the temporaries of writers that died are cleaned up.
@Suite struct AtomicFileTests {
  @Test func writeReplacesTheWholeFile() throws {
    let directory = try makeDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = (directory as NSString).appendingPathComponent("checkpoint")

    try AtomicFile.write(Data("a first version that is rather long".utf8), to: path)
    #expect(try contents(of: path) == "a first version that is rather long")
    try AtomicFile.write(Data("short".utf8), to: path)
    #expect(try contents(of: path) == "short")
    #expect(try temporaries(in: directory).isEmpty)
    #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["checkpoint"])
  }

  @Test func spansArriveInOrder() throws {
    let directory = try makeDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = (directory as NSString).appendingPathComponent("spans")

    try AtomicFile.write(to: path) { write in
      for piece in ["one ", "", "two ", "three"] { try Data(piece.utf8).withUnsafeBytes(write) }
    }
    #expect(try contents(of: path) == "one two three")
  }

  @Test func aWriteThatFailsLeavesThePreviousFileAndNoTemporary() throws {
    let directory = try makeDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = (directory as NSString).appendingPathComponent("checkpoint")
    try AtomicFile.write(Data("previous".utf8), to: path)

    #expect(throws: WriterCrashed.self) {
      try AtomicFile.write(to: path) { write in
        try Data("half of the new ".utf8).withUnsafeBytes(write)
        throw WriterCrashed()
      }
    }
    #expect(try contents(of: path) == "previous")
    #expect(try temporaries(in: directory).isEmpty)
  }

  @Test func aFailedFirstWriteCreatesNothing() throws {
    let directory = try makeDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = (directory as NSString).appendingPathComponent("checkpoint")

    #expect(throws: WriterCrashed.self) {
      try AtomicFile.write(to: path) { _ in throw WriterCrashed() }
    }
    #expect(try FileManager.default.contentsOfDirectory(atPath: directory).isEmpty)
  }

  @Test func aMissingFolderIsReported() throws {
    let directory = try makeDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = (directory as NSString).appendingPathComponent("missing/checkpoint")

    let error = #expect(throws: AtomicFile.WriteError.self) { try AtomicFile.write(Data("x".utf8), to: path) }
    #expect(error?.description.hasPrefix("cannot create \(directory)/missing/\(AtomicFile.temporaryPrefix)") == true)
  }

  @Test func staleTemporariesOfTheNameAreRemoved() throws {
    let directory = try makeDirectory()
    defer { try? FileManager.default.removeItem(atPath: directory) }
    // pid_t.max is above any kernel's pid_max, so no process has it.
    let exitedPID = pid_t.max
    let probe = kill(exitedPID, 0)
    let probeError = errno
    try #require(probe == -1 && probeError == ESRCH, "pid \(exitedPID) must belong to no process")

    let prefix = AtomicFile.temporaryPrefix
    let stale = ["\(prefix)checkpoint-\(exitedPID)", "\(prefix)checkpoint-\(getpid())"]
    let kept = [
      "checkpoint",  // the file itself
      "checkpoint-\(exitedPID)",  // not a temporary
      "\(prefix)checkpoint-1",  // pid 1 is always running
      "\(prefix)checkpoint-unknown",  // no pid to check
      "\(prefix)model-\(exitedPID)",  // another file's temporary
    ]
    for name in stale + kept {
      try Data(name.utf8).write(to: URL(fileURLWithPath: (directory as NSString).appendingPathComponent(name)))
    }

    let removed = AtomicFile.removeStaleTemporaries(in: directory, for: "checkpoint")
    #expect(removed.sorted() == stale.map { (directory as NSString).appendingPathComponent($0) }.sorted())
    #expect(try FileManager.default.contentsOfDirectory(atPath: directory).sorted() == kept.sorted())
    #expect(AtomicFile.removeStaleTemporaries(in: directory, for: "checkpoint").isEmpty)
  }

  @Test func aMissingFolderHasNoTemporaries() {
    let missing = (NSTemporaryDirectory() as NSString).appendingPathComponent("pipemesh-missing-\(UUID().uuidString)")
    #expect(AtomicFile.removeStaleTemporaries(in: missing, for: "checkpoint").isEmpty)
  }
}
