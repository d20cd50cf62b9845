import Foundation

/// Serves `GET /metrics` over HTTP/1.1 from a registry, on its own thread
/// (scrapes are rare and small). Hand-written: no package in reach serves HTTP without
/// SwiftNIO, minutes of build for one GET.
public final class MetricsServer: Sendable {
  /// The bound `host:port`.
  public let endpoint: String
  private let socket: Int32

  /// Listens on `address` (`host:port`, port 0 picks one).
  public init(address: String, registry: MetricsRegistry) throws {
    guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
      throw MetricsServerError("metrics address \(address) is not HOST:PORT")
    }
    let host = String(address[..<colon])
    let fd = Foundation.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw MetricsServerError("cannot open a socket: \(String(cString: strerror(errno)))") }
    var yes: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
    var socketAddress = sockaddr_in()
    socketAddress.sin_family = sa_family_t(AF_INET)
    socketAddress.sin_port = port.bigEndian
    guard inet_pton(AF_INET, host.isEmpty ? "0.0.0.0" : host, &socketAddress.sin_addr) == 1 else {
      close(fd)
      throw MetricsServerError("metrics host \(host) is not an IPv4 address")
    }
    let bound = withUnsafePointer(to: &socketAddress) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0, listen(fd, 16) == 0 else {
      let reason = String(cString: strerror(errno))
      close(fd)
      throw MetricsServerError("cannot listen for metrics on \(address): \(reason)")
    }
    var actual = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &actual) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    socket = fd
    endpoint = "\(host.isEmpty ? "0.0.0.0" : host):\(UInt16(bigEndian: actual.sin_port))"
    // The thread ends when `stop` closes the socket and accept fails.
    Thread.detachNewThread {
      while true {
        let connection = accept(fd, nil, nil)
        guard connection >= 0 else {
          if errno == EINTR { continue }
          return
        }
        Self.answer(connection, registry: registry)
      }
    }
  }

  private static func answer(_ connection: Int32, registry: MetricsRegistry) {
    defer { close(connection) }
    // A client that connects and says nothing must not hold up other scrapes.
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var request = [UInt8](repeating: 0, count: 4096)
    let count = read(connection, &request, request.count)
    guard count > 0 else { return }
    let line = String(decoding: request[..<count], as: UTF8.self).split(separator: "\r\n").first ?? ""
    let (status, body) =
      line.hasPrefix("GET /metrics ") || line == "GET /metrics"
      ? ("200 OK", registry.exposition()) : ("404 Not Found", "only /metrics is served here\n")
    let response =
      "HTTP/1.1 \(status)\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
    let bytes = Array(response.utf8)
    var sent = 0
    while sent < bytes.count {
      let written = bytes[sent...].withUnsafeBytes { write(connection, $0.baseAddress, $0.count) }
      guard written > 0 else { return }
      sent += written
    }
  }

  /// Stops accepting scrapes.
  public func stop() {
    shutdown(socket, Int32(SHUT_RDWR))
    close(socket)
  }
}

struct MetricsServerError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
