import Foundation

/// Writes files so that a crash at any moment leaves either the old file or
/// the complete new one: write a temporary file beside it, fsync it, rename it
/// over the target, fsync the directory.
public enum AtomicFile {
  /// The prefix of temporary files; readers skip names that start with it.
  public static let temporaryPrefix = ".tmp-"

  public struct WriteError: Error, CustomStringConvertible {
    public let description: String
  }

  public static func write(_ data: Data, to path: String) throws {
    try write(to: path) { write in try data.withUnsafeBytes(write) }
  }

  /// Writes the file from the byte spans `body` passes to its `write`
  /// function, in order, without gathering them in memory first. Writes of
  /// one path must not overlap in a process (its temporary is named by path
  /// and pid): callers serialize them.
  public static func write(to path: String, _ body: (_ write: (UnsafeRawBufferPointer) throws -> Void) throws -> Void)
    throws
  {
    let directory = (path as NSString).deletingLastPathComponent
    let temporary = (directory as NSString).appendingPathComponent(
      "\(temporaryPrefix)\((path as NSString).lastPathComponent)-\(getpid())")
    // Readable by the owner and its group (checkpoints hold a model's weights).
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
    guard fd >= 0 else { throw failure("cannot create \(temporary)") }
    do {
      try body { bytes in
        var written = 0
        while written < bytes.count {
          let result = Foundation.write(fd, bytes.baseAddress! + written, bytes.count - written)
          if result < 0 {
            if errno == EINTR { continue }
            throw failure("cannot write \(temporary)")
          }
          written += result
        }
      }
      guard fsync(fd) == 0 else { throw failure("cannot write \(temporary)") }
    } catch {
      close(fd)
      unlink(temporary)
      throw error
    }
    close(fd)
    guard rename(temporary, path) == 0 else {
      unlink(temporary)
      throw failure("cannot rename \(temporary) to \(path)")
    }
    let directoryFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
    if directoryFD >= 0 {
      fsync(directoryFD)
      close(directoryFD)
    }
  }

  /// Removes temporary files that writes of `name`-prefixed files in
  /// `directory` left behind when their process died mid-write (`kill -9`,
  /// a stop past the grace period): those of processes no longer running,
  /// and those of this process's pid, which a restarted container reuses and
  /// which has written nothing yet. Call at start, before writing. Returns
  /// the paths removed.
  @discardableResult
  public static func removeStaleTemporaries(in directory: String, for name: String) -> [String] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    var removed: [String] = []
    for entry in names where entry.hasPrefix(temporaryPrefix + name) {
      guard let dash = entry.lastIndex(of: "-"), let pid = pid_t(entry[entry.index(after: dash)...]) else { continue }
      let running = pid != getpid() && (kill(pid, 0) == 0 || errno == EPERM)
      guard !running else { continue }
      let path = (directory as NSString).appendingPathComponent(entry)
      if unlink(path) == 0 { removed.append(path) }
    }
    return removed
  }

  private static func failure(_ what: String) -> WriteError {
    WriteError(description: "\(what): \(String(cString: strerror(errno)))")
  }
}
