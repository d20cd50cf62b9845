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
/// entry and never logged; the file must not be readable by other users.
public final class TokenFile: Sendable {
  public let path: String
  private struct Entry: Sendable {
    let caller: Caller
    let token: [UInt8]
  }
  private struct Loaded: Sendable {
    var modified: Date
    var entries: [Entry]
  }
  private let loaded: Mutex<Loaded>

  /// The shortest token accepted.
  public static let minimumTokenLength = 32

  /// Reads the file; throws `TokenFileError` naming the line at fault.
  public init(path: String) throws {
    self.path = path
    let (modified, entries) = try Self.read(path)
    loaded = Mutex(Loaded(modified: modified, entries: entries))
  }

  /// The caller a call's headers name, or UNAUTHENTICATED.
  public func caller(_ metadata: Metadata) throws -> Caller {
    guard let header = metadata["authorization"], header.hasPrefix("Bearer ") else {
      throw RPCError(
        .unauthenticated,
        "this coordinator needs a token: send the header 'authorization: Bearer <token>' (the CLI reads PIPEMESH_TOKEN or --token-file)")
    }
    let token = Array(header.utf8.dropFirst("Bearer ".utf8.count))
    // Every entry is compared whole, so the time taken says nothing of which
    // token, or how much of one, matched.
    var match: Caller?
    for entry in currentEntries() where Self.constantTimeEqual(entry.token, token) { match = entry.caller }
    guard let match else { throw RPCError(.unauthenticated, "the token is not in this coordinator's tokens file") }
    return match
  }

  /// The entries, read again when the file changed since; a file that no
  /// longer reads keeps the last good entries (and the next call tries again).
  private func currentEntries() -> [Entry] {
    let modified = (try? FileManager.default.attributesOfItem(atPath: path)[.modificationDate] as? Date) ?? nil
    return loaded.withLock { loaded in
      if let modified, modified != loaded.modified, let (when, entries) = try? Self.read(path) {
        loaded = Loaded(modified: when, entries: entries)
      }
      return loaded.entries
    }
  }

  private static func read(_ path: String) throws -> (Date, [Entry]) {
    let attributes: [FileAttributeKey: Any]
    let text: String
    do {
      attributes = try FileManager.default.attributesOfItem(atPath: path)
      text = try String(contentsOfFile: path, encoding: .utf8)
    } catch {
      throw TokenFileError("tokens file \(path) cannot be read: \(error.localizedDescription)")
    }
    if let permissions = attributes[.posixPermissions] as? Int, permissions & 0o007 != 0 {
      throw TokenFileError("tokens file \(path) is readable or writable by other users (mode \(String(permissions, radix: 8))): chmod o-rwx it")
    }
    var entries: [Entry] = []
    var names: Set<String> = []
    var tokens: Set<[UInt8]> = []
    for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
      let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
      guard let first = fields.first, !first.hasPrefix("#") else { continue }
      let place = "tokens file \(path), line \(index + 1)"
      guard fields.count == 3 else { throw TokenFileError("\(place): expected 'NAME ROLE TOKEN', got \(fields.count) fields") }
      let (name, role, token) = (String(fields[0]), fields[1], Array(fields[2].utf8))
      guard ["admin", "user"].contains(role) else { throw TokenFileError("\(place): the role must be admin or user") }
      guard token.count >= minimumTokenLength else {
        throw TokenFileError("\(place): the token has \(token.count) characters; give at least \(minimumTokenLength)")
      }
      guard names.insert(name).inserted else { throw TokenFileError("\(place): user \(name) is listed twice") }
      guard tokens.insert(token).inserted else { throw TokenFileError("\(place): the token is already another user's") }
      entries.append(Entry(caller: Caller(name: name, isAdmin: role == "admin"), token: token))
    }
    return ((attributes[.modificationDate] as? Date) ?? .distantPast, entries)
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
  init(_ description: String) { self.description = description }
}
