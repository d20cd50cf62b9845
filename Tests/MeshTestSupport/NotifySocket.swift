import Foundation

/// A Unix datagram socket standing in for systemd's notification socket:
/// give its path to a service as NOTIFY_SOCKET and read what it sends.
public final class NotifySocket: Sendable {
  public let path: String
  private let fd: Int32

  public init(directory: String) throws {
    path = (directory as NSString).appendingPathComponent("notify.sock")
    fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
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
    guard bound == 0 else { throw ChildProcessError("cannot bind \(path): \(String(cString: strerror(errno)))") }
  }

  /// The next notification if one is queued, at once (nil otherwise).
  public func poll() -> String? {
    var buffer = [UInt8](repeating: 0, count: 4096)
    let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
    return count > 0 ? String(decoding: buffer[..<count], as: UTF8.self) : nil
  }

  /// Waits for a notification that contains `text`, collecting everything
  /// received on the way (with arrival times) into `seen`. Polls, so that
  /// the wait holds none of the test process's few executor threads.
  public func waitFor(
    _ text: String, timeout: Duration = .seconds(90), seen: inout [(message: String, at: ContinuousClock.Instant)]
  ) async throws -> String {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
      if let message = poll() {
        seen.append((message, .now))
        if message.contains(text) { return message }
      } else {
        try await Task.sleep(for: .milliseconds(10))
      }
    }
    throw ChildProcessError("no notification with '\(text)' within \(timeout); got \(seen.map(\.message))")
  }

  deinit {
    close(fd)
    unlink(path)
  }
}
