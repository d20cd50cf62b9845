import Foundation
import Synchronization

/// A Unix datagram socket standing in for systemd's notification socket:
/// give its path to a service as NOTIFY_SOCKET and read what it sends.
///
/// A thread of its own drains the socket as datagrams arrive and stamps each
/// with its arrival time, as systemd's event loop does. Linux queues only
/// `net.unix.max_dgram_qlen` datagrams (10 by default) on a socket nobody
/// reads, so a reader that waited for a busy test to come back would count
/// the queue's length rather than what the service sent.
public final class NotifySocket: Sendable {
  /// One datagram and when it arrived.
  public struct Notification: Sendable {
    public let message: String
    public let at: ContinuousClock.Instant
  }

  public let path: String
  private let inbox = Inbox()

  public init(directory: String) throws {
    path = (directory as NSString).appendingPathComponent("notify.sock")
    let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { throw ChildProcessError("cannot create a datagram socket") }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8CString)
    withUnsafeMutableBytes(of: &address.sun_path) { buffer in
      for (index, byte) in bytes.prefix(buffer.count - 1).enumerated() { buffer[index] = UInt8(bitPattern: byte) }
    }
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard bound == 0 else {
      close(fd)
      throw ChildProcessError("cannot bind \(path): \(String(cString: strerror(errno)))")
    }
    let reader = Thread { [inbox, path] in
      Self.drain(fd, into: inbox)
      close(fd)
      unlink(path)
    }
    reader.name = "notify-socket"
    reader.start()
  }

  /// Everything received so far, in the order it arrived.
  public var received: [Notification] { inbox.notifications.withLock { $0 } }

  /// Waits until `count` notifications containing `text` have arrived and
  /// returns the last of them.
  @discardableResult
  public func waitFor(_ text: String, count: Int = 1, timeout: Duration = .seconds(90)) async throws -> Notification {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      let matching = received.filter { $0.message.contains(text) }
      if matching.count >= count { return matching[count - 1] }
      try await Task.sleep(for: .milliseconds(10))
    }
    throw ChildProcessError(
      "not \(count) notifications with '\(text)' within \(timeout); got \(received.map(\.message))")
  }

  deinit { inbox.stopped.withLock { $0 = true } }

  /// Reads datagrams until the socket's owner is gone, waking every 50 ms to
  /// see whether it is.
  private static func drain(_ fd: Int32, into inbox: Inbox) {
    var buffer = [UInt8](repeating: 0, count: 4096)
    var waiting = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    while !inbox.stopped.withLock({ $0 }) {
      guard Glibc.poll(&waiting, 1, 50) > 0 else { continue }
      let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
      guard count > 0 else { continue }
      let notification = Notification(message: String(decoding: buffer[..<count], as: UTF8.self), at: .now)
      inbox.notifications.withLock { $0.append(notification) }
    }
  }

  private final class Inbox: Sendable {
    let notifications = Mutex<[Notification]>([])
    let stopped = Mutex(false)
  }
}
