import Foundation

/// Test hosts in network namespaces this process creates: each host gets its
/// own namespace and address on 10.213.0.0/24, joined by a bridge in a
/// switch namespace of its own; everything is removed when the value is
/// dropped. Traffic stays inside these namespaces.
public final class TestNetwork: Sendable {
  public let hosts: [String: String]
  private let switchNamespace: String
  private let namespaces: [String: String]
  private static let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip"].first {
    FileManager.default.isExecutableFile(atPath: $0)
  }

  /// Why namespaces cannot be made here, or nil when they can.
  public static var unavailableReason: String? {
    guard let ip else { return "the ip command (iproute2) is not installed" }
    let probe = "pm-probe-\(getpid())"
    do {
      try runBlocking(ip, ["netns", "add", probe])
      defer { _ = try? runBlocking(ip, ["netns", "del", probe]) }
      try runBlocking(ip, ["-n", probe, "link", "add", "br0", "type", "bridge"])
      return nil
    } catch {
      return "the kernel refused a network namespace with a bridge: \(error)"
    }
  }

  /// Creates one namespace per host name, addresses 10.213.0.2, .3, …
  public init(hosts names: [String]) throws {
    guard let ip = Self.ip else { throw ChildProcessError("no ip command") }
    let tag = String(getpid(), radix: 36)
    switchNamespace = "pm-sw-\(tag)"
    var namespaces: [String: String] = [:]
    var hosts: [String: String] = [:]
    try runBlocking(ip, ["netns", "add", switchNamespace])
    try runBlocking(ip, ["-n", switchNamespace, "link", "add", "br0", "type", "bridge"])
    try runBlocking(ip, ["-n", switchNamespace, "link", "set", "br0", "up"])
    for (index, name) in names.enumerated() {
      let namespace = "pm-\(name)-\(tag)"
      let address = "10.213.0.\(index + 2)"
      try runBlocking(ip, ["netns", "add", namespace])
      namespaces[name] = namespace
      hosts[name] = address
      let port = "v\(index)-\(tag)"
      try runBlocking(
        ip, ["-n", switchNamespace, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace])
      try runBlocking(ip, ["-n", switchNamespace, "link", "set", port, "master", "br0", "up"])
      try runBlocking(ip, ["-n", namespace, "addr", "add", "\(address)/24", "dev", "eth0"])
      try runBlocking(ip, ["-n", namespace, "link", "set", "eth0", "up"])
      try runBlocking(ip, ["-n", namespace, "link", "set", "lo", "up"])
    }
    self.namespaces = namespaces
    self.hosts = hosts
  }

  /// Runs `executable` inside a host's namespace, as a child process.
  public func start(on host: String, _ executable: String, _ arguments: [String], logPath: String) throws
    -> ChildProcess
  {
    guard let ip = Self.ip, let namespace = namespaces[host] else {
      throw ChildProcessError("no namespace for host \(host), or no ip command")
    }
    return try ChildProcess(ip, ["netns", "exec", namespace, executable] + arguments, logPath: logPath)
  }

  deinit {
    guard let ip = Self.ip else { return }
    for namespace in namespaces.values { _ = try? runBlocking(ip, ["netns", "del", namespace]) }
    _ = try? runBlocking(ip, ["netns", "del", switchNamespace])
  }
}
