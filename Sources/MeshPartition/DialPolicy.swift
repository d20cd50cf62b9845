/// The hosts a partition may open connections to (the ps tasks and the
/// partitions a LoadStage names), so that a caller cannot point it at any
/// host:port on its network.
public struct DialPolicy: Sendable, Equatable {
  private enum Rule: Sendable, Equatable {
    case anywhere
    case loopback
    case listed(Set<String>)
  }
  private let rule: Rule

  /// Any host: for a partition whose callers are authenticated (mutual TLS
  /// admits only the mesh's services, and the peers it dials must present
  /// the mesh CA's certificates).
  public static let anywhere = DialPolicy(rule: .anywhere)
  /// Loopback addresses only: the default of a partition without mutual TLS.
  public static let loopback = DialPolicy(rule: .loopback)

  private init(rule: Rule) { self.rule = rule }

  /// The hosts (`node-a`) or endpoints (`node-a:7200`) listed; `*` alone
  /// allows any host.
  public init(listing entries: [String]) {
    rule = entries == ["*"] ? .anywhere : .listed(Set(entries.map { $0.lowercased() }))
  }

  /// Whether `endpoint` is `host:port` with a port from 1 to 65535 and at
  /// most 255 characters: what can be dialled at all.
  public static func isWellFormed(_ endpoint: String) -> Bool {
    guard endpoint.utf8.count <= 255, let colon = endpoint.lastIndex(of: ":"), colon != endpoint.startIndex,
      let port = Int(endpoint[endpoint.index(after: colon)...])
    else { return false }
    return (1...65535).contains(port)
  }

  /// Whether `endpoint` (`host:port`) may be dialled.
  public func allows(_ endpoint: String) -> Bool {
    guard let colon = endpoint.lastIndex(of: ":"), endpoint.count <= 255 else { return false }
    let host = endpoint[..<colon].lowercased()
    switch rule {
    case .anywhere: return true
    case .loopback: return host == "localhost" || host == "[::1]" || Self.isLoopbackIPv4(String(host))
    case .listed(let entries): return entries.contains(host) || entries.contains(endpoint.lowercased())
    }
  }

  /// Whether `host` is an IPv4 address literal in 127.0.0.0/8 (a name that
  /// merely starts with "127." may resolve anywhere).
  private static func isLoopbackIPv4(_ host: String) -> Bool {
    let parts = host.split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count == 4, parts[0] == "127" else { return false }
    return parts.allSatisfy { part in
      part.count <= 3 && !part.isEmpty && part.allSatisfy(\.isASCII) && UInt8(part) != nil
    }
  }

  /// What the policy allows, for a refusal's message.
  public var description: String {
    switch rule {
    case .anywhere: return "any host"
    case .loopback: return "loopback addresses only (no --peers and no mutual TLS)"
    case .listed(let entries):
      return "the hosts given by --peers (\(entries.sorted().prefix(8).joined(separator: ", ")))"
    }
  }
}
