import Foundation
import Synchronization

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
    let file = try Pending(replacing: path)
    var offset = 0
    do {
      try body { bytes in
        try file.write(bytes, at: offset)
        offset += bytes.count
      }
    } catch {
      file.discard()
      throw error
    }
    try file.commit()
  }

  /// A file being written under a temporary name beside `path`, at any
  /// offsets and from any thread, then moved into place whole by `commit`
  /// (or removed by `discard`, or when dropped uncommitted): readers see the
  /// old file or the new one, never a part.
  public final class Pending: Sendable {
    /// The open temporary; nil once committed or discarded.
    private let fd: Mutex<Int32?>
    private let temporary: String
    private let path: String

    public init(replacing path: String) throws {
      self.path = path
      let directory = (path as NSString).deletingLastPathComponent
      temporary = (directory as NSString).appendingPathComponent(
        "\(temporaryPrefix)\((path as NSString).lastPathComponent)-\(getpid())")
      // Readable by the owner and its group (checkpoints hold a model's weights).
      let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o640)
      guard fd >= 0 else { throw AtomicFile.failure("cannot create \(temporary)") }
      self.fd = Mutex(fd)
    }

    deinit { discard() }

    /// The open descriptor, or a failure once the file is committed or discarded.
    private func descriptor() throws -> Int32 {
      guard let fd = fd.withLock({ $0 }) else { throw WriteError(description: "\(temporary) is closed") }
      return fd
    }

    /// Sets the file's length to `bytes` (what is not written reads as zeros).
    public func resize(to bytes: Int) throws {
      guard ftruncate(try descriptor(), off_t(bytes)) == 0 else { throw AtomicFile.failure("cannot size \(temporary)") }
    }

    /// Writes `bytes` at byte `offset` of the file.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
      let fd = try descriptor()
      var written = 0
      while written < bytes.count {
        let result = pwrite(fd, bytes.baseAddress! + written, bytes.count - written, off_t(offset + written))
        if result < 0 {
          if errno == EINTR { continue }
          throw AtomicFile.failure("cannot write \(temporary)")
        }
        written += result
      }
    }

    /// Syncs the file and renames it to its path (removing it when that fails).
    public func commit() throws {
      guard let fd = fd.withLock({ $0.take() }) else { throw WriteError(description: "\(temporary) is closed") }
      guard fsync(fd) == 0 else {
        let error = AtomicFile.failure("cannot write \(temporary)")
        close(fd)
        unlink(temporary)
        throw error
      }
      close(fd)
      guard rename(temporary, path) == 0 else {
        let error = AtomicFile.failure("cannot rename \(temporary) to \(path)")
        unlink(temporary)
        throw error
      }
      let directory = (path as NSString).deletingLastPathComponent
      let directoryFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
      if directoryFD >= 0 {
        fsync(directoryFD)
        close(directoryFD)
      }
    }

    /// Closes and removes the temporary file; nothing once committed.
    public func discard() {
      guard let fd = fd.withLock({ $0.take() }) else { return }
      close(fd)
      unlink(temporary)
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
