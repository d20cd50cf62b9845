import Foundation
import MeshRPC
import Synchronization

/// Who a call comes from.
public struct Caller: Sendable, Equatable {
  /// The user's name in the tokens file; empty for the anonymous caller.
  public let name: String
  /// Admins may read, cancel and infer with every user's jobs.
  public let isAdmin: Bool

  /// Everyone, when the coordinator authenticates no one: an admin.
  public static let anonymous = Caller(name: "", isAdmin: true)

  public init(name: String, isAdmin: Bool) {
    self.name = name
    self.isAdmin = isAdmin
  }

  /// Whether this caller may read, cancel or infer with a job `owner` started.
  public func mayUse(jobOf owner: String) -> Bool { isAdmin || owner == name }
}

/// Users and their bearer tokens, from a file an operator keeps:
///
/// ```
/// # name   role    token (at least 32 characters; `openssl rand -hex 32`)
/// alice    admin   0f6c…
/// bob      user    9a41…
/// ```
///
/// A call names its token in the `authorization: Bearer <token>` header. The
/// file is read again when it changes (edit it to add, remove or rotate a
/// token; no restart). Tokens are compared in constant time against every
/// entry and never logged; the file must not be open to other users (its
/// group may read it: the units' pipemesh group).
public final class TokenFile: Sendable {
  public let path: String
  private struct Entry: Sendable {
    let caller: Caller
    let token: [UInt8]
  }
  private struct Loaded: Sendable {
    /// What the file's last read saw: its inode, size and modification time.
    var stamp: Stamp?
    /// Nil while the file cannot be used (missing, unreadable, open to
    /// others): every call is refused then.
    var entries: [Entry]?
  }
  private struct Stamp: Equatable, Sendable {
    let inode: UInt64
    let size: Int64
    let seconds: Int
    let nanoseconds: Int
  }
  private let loaded: Mutex<Loaded>
  private let report: @Sendable (String) -> Void

  /// The shortest token accepted.
  public static let minimumTokenLength = 32

  /// Reads the file; throws `TokenFileError` naming the line at fault.
  /// `report` hears of a changed file that cannot be used.
  public init(path: String, report: @escaping @Sendable (String) -> Void = { _ in }) throws {
    self.path = path
    self.report = report
    let stamp = try Self.stamp(path)
    loaded = Mutex(Loaded(stamp: stamp, entries: try Self.read(path)))
  }

  /// The caller a call's headers name, or UNAUTHENTICATED.
  public func caller(_ metadata: Metadata) throws -> Caller {
    guard let header = metadata["authorization"], header.hasPrefix("Bearer ") else {
      throw CoordinatorError(
        .unauthenticated,
        "this coordinator needs a token: send the header 'authorization: Bearer <token>' (the CLI reads PIPEMESH_TOKEN or --token-file)"
      )
    }
    guard let entries = currentEntries() else {
      throw CoordinatorError(
        .unauthenticated,
        "this coordinator's tokens file cannot be used now; its operator has been told")
    }
    let token = Array(header.utf8.dropFirst("Bearer ".utf8.count))
    // Every entry is compared whole, so the time taken says nothing of which
    // token, or how much of one, matched.
    var match: Caller?
    for entry in entries where Self.constantTimeEqual(entry.token, token) { match = entry.caller }
    guard let match else {
      throw CoordinatorError(.unauthenticated, "the token is not in this coordinator's tokens file")
    }
    return match
  }

  /// The entries, read again when the file changed. A file that is gone,
  /// unreadable or open to other users refuses every call until it is
  /// fixed (a removed token must not keep working); one that no longer
  /// parses keeps the last good entries. Both are reported.
  private func currentEntries() -> [Entry]? {
    let stamp = try? Self.stamp(path)
    return loaded.withLock { loaded in
      guard stamp != loaded.stamp else { return loaded.entries }
      loaded.stamp = stamp
      do {
        guard stamp != nil else { throw TokenFileError("tokens file \(path) is gone") }
        loaded.entries = try Self.read(path)
      } catch let error as TokenFileError where error.isAboutContents && loaded.entries != nil {
        report("\(error); keeping the tokens read before")
      } catch {
        loaded.entries = nil
        report("\(error); refusing every call until it is fixed")
      }
      return loaded.entries
    }
  }

  /// The file's identity and modification time, following links (a
  /// Kubernetes Secret is a link to the current version).
  private static func stamp(_ path: String) throws -> Stamp {
    var status = stat()
    guard stat(path, &status) == 0 else {
      throw TokenFileError("tokens file \(path) cannot be read: \(String(cString: strerror(errno)))")
    }
    return Stamp(
      inode: UInt64(status.st_ino), size: Int64(status.st_size), seconds: status.st_mtim.tv_sec,
      nanoseconds: status.st_mtim.tv_nsec)
  }

  private static func read(_ path: String) throws -> [Entry] {
    var status = stat()
    guard stat(path, &status) == 0, let text = try? String(contentsOfFile: path, encoding: .utf8) else {
      throw TokenFileError("tokens file \(path) cannot be read")
    }
    let permissions = Int(status.st_mode) & 0o777
    guard permissions & 0o007 == 0 else {
      throw TokenFileError(
        "tokens file \(path) is readable or writable by other users (mode \(String(permissions, radix: 8))): chmod o-rwx it"
      )
    }
    var entries: [Entry] = []
    var names: Set<String> = []
    var tokens: Set<[UInt8]> = []
    for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
      guard let first = fields.first, !first.hasPrefix("#") else { continue }
      let place = "tokens file \(path), line \(index + 1)"
      guard fields.count == 3 else {
        throw TokenFileError(contents: "\(place): expected 'NAME ROLE TOKEN', got \(fields.count) fields")
      }
      let (name, role, token) = (String(fields[0]), fields[1], Array(fields[2].utf8))
      guard ["admin", "user"].contains(role) else {
        throw TokenFileError(contents: "\(place): the role must be admin or user")
      }
      guard token.count >= minimumTokenLength else {
        throw TokenFileError(
          contents: "\(place): the token has \(token.count) characters; give at least \(minimumTokenLength)")
      }
      guard names.insert(name).inserted else {
        throw TokenFileError(contents: "\(place): user \(name) is listed twice")
      }
      guard tokens.insert(token).inserted else {
        throw TokenFileError(contents: "\(place): the token is already another user's")
      }
      entries.append(Entry(caller: Caller(name: name, isAdmin: role == "admin"), token: token))
    }
    return entries
  }

  private static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    var difference = a.count ^ b.count
    for index in 0..<max(a.count, b.count) {
      difference |= Int((index < a.count ? a[index] : 0) ^ (index < b.count ? b[index] : 0))
    }
    return difference == 0
  }
}

/// A tokens file that cannot be used.
public struct TokenFileError: Error, CustomStringConvertible {
  public let description: String
  /// The file reads but a line is wrong (not: it is gone, unreadable or
  /// open to others).
  let isAboutContents: Bool
  init(_ description: String) {
    self.description = description
    isAboutContents = false
  }
  init(contents description: String) {
    self.description = description
    isAboutContents = true
  }
}
