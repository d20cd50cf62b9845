import Foundation
import MeshProto
import MeshTestSupport
import Testing

@testable import MeshPartition

/// Same-host fetches: a partition writes a tensor into a fetcher's memory
/// file waiting for that answer, and into no other file, whatever a request
/// names.
@Suite struct SharedBufferTests {
  /// Holds files open in another process, each beginning with the token
  /// `argv[2]` (hex), and prints their descriptors: a memory file named as
  /// a fetcher's buffer, one named otherwise, a tmpfs file (which also takes
  /// seals), the regular file `argv[1]`, and a FIFO beside it.
  static let holder = """
    import os, sys, time
    token = bytes.fromhex(sys.argv[2])
    fetch = os.memfd_create("pipemesh-fetch")
    other = os.memfd_create("other")
    path = "/dev/shm/pipemesh-test-%d" % os.getpid()
    shm = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.unlink(path)
    for fd in (fetch, other, shm):
        os.pwrite(fd, token, 0)
    plain = os.open(sys.argv[1], os.O_RDWR)
    os.mkfifo(sys.argv[1] + ".fifo")
    fifo = os.open(sys.argv[1] + ".fifo", os.O_RDWR)
    print("fds", fetch, other, shm, plain, fifo, flush=True)
    time.sleep(300)
    """

  static func buffer(pid: Int32, fd: Int32, token: Data, host: String = SameHost.identity) -> Pipemesh_V1_SharedBuffer {
    .with {
      $0.host = host
      $0.pid = pid
      $0.fd = fd
      $0.token = token
    }
  }

  /// The bytes another process's descriptor `fd` reads, from the start.
  static func contents(pid: Int32, fd: Int32) throws -> Data {
    try Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/fd/\(fd)"))
  }

  @Test func onlyAFetchBufferWaitingForTheAnswerIsWritten() async throws {
    try #require(!SameHost.identity.isEmpty, "/proc tells no boot id or namespaces")
    let directory = try TemporaryDirectory(prefix: "pipemesh-shared-buffer")
    let token = Data((1...16).map { UInt8($0 * 13) })
    let plainPath = directory.file("plain")
    // Even a regular file that begins with the token is not a fetcher's buffer.
    let untouched = token + Data("a file no request may reach".utf8)
    try untouched.write(to: URL(fileURLWithPath: plainPath))
    let holder = try ChildProcess(
      try PythonInterop.findPython(),
      ["-c", Self.holder, plainPath, token.map { String(format: "%02x", $0) }.joined()],
      logPath: directory.file("holder.log"))
    let line = try await holder.waitForLine(startingWith: "fds ")
    let fds = line.split(separator: " ").compactMap { Int32($0) }
    try #require(fds.count == 5, "\(line)")
    let (fetch, other, shm, plain, fifo) = (fds[0], fds[1], fds[2], fds[3], fds[4])
    let bytes = Data((0..<(3 * 4096 + 5)).map { UInt8(truncatingIfNeeded: $0 * 7) })
    func write(_ bytes: Data, pid: Int32 = holder.pid, fd: Int32, token: Data = token, host: String = SameHost.identity)
      -> SharedBuffer.Outcome
    {
      SharedBuffer.write({ bytes }, into: Self.buffer(pid: pid, fd: fd, token: token, host: host))
    }

    for (fd, what) in [
      (other, "a memory file of another name"), (shm, "a tmpfs file"), (plain, "a regular file"), (fifo, "a FIFO"),
    ] {
      #expect(write(bytes, fd: fd) == .refused, "\(what)")
    }
    #expect(try Self.contents(pid: holder.pid, fd: other) == token)
    #expect(try Self.contents(pid: holder.pid, fd: shm) == token)
    #expect(try Data(contentsOf: URL(fileURLWithPath: plainPath)) == untouched)
    // The right file, but with another token, for another host, or a descriptor not open.
    #expect(write(bytes, fd: fetch, token: Data(repeating: 1, count: 16)) == .refused)
    #expect(write(bytes, fd: fetch, token: token.prefix(8)) == .elsewhere)
    #expect(write(bytes, fd: fetch, token: Data(count: 16)) == .elsewhere, "the token of a retired buffer")
    #expect(write(bytes, fd: fetch, host: "another host") == .elsewhere)
    #expect(write(bytes, fd: 999) == .refused)
    #expect(try Self.contents(pid: holder.pid, fd: fetch) == token)
    // A buffer of this very process is never written, named by its pid or by one of its threads' ids.
    let own = try #require(SharedBuffer())
    let offered = try #require(own.offer())
    let threads = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").compactMap { Int32($0) }
    try #require(threads.count > 1, "one thread: no thread id to try")
    for id in [getpid()] + threads.filter({ $0 != getpid() }).prefix(1) {
      #expect(write(bytes, pid: id, fd: own.descriptor, token: offered.token) == .elsewhere, "id \(id)")
    }
    #expect(own.size == SharedBuffer.headerBytes)

    #expect(write(bytes, fd: fetch) == .written)
    #expect(try Self.contents(pid: holder.pid, fd: fetch) == SharedBuffer.answered(token) + bytes)
    // Answered once: the same request again finds the mark, not its token.
    #expect(write(bytes.prefix(100), fd: fetch) == .refused)
    // Nothing is made for a buffer that is not written.
    var made = false
    #expect(
      SharedBuffer.write(
        {
          made = true
          return bytes
        }, into: Self.buffer(pid: holder.pid, fd: other, token: token)) == .refused)
    #expect(!made)
    try await holder.stop()
  }

  /// A fetcher believes a buffer only once it is marked answered for the
  /// token it offered, and holds every byte announced: not before the
  /// answer, not past what was written, not over a hole (a size set without
  /// data), not after the next offer.
  @Test func aBufferIsReadOnlyWhenItHoldsTheAnswer() throws {
    let buffer = try #require(SharedBuffer())
    let offered = try #require(buffer.offer())
    #expect(offered.token.count == SharedBuffer.headerBytes && offered.pid == getpid())
    #expect(!buffer.holdsAnswer(to: offered, byteCount: 0), "a buffer nobody answered")
    let written: [UInt8] = Array(repeating: 9, count: 1000)
    let header = Array(SharedBuffer.answered(offered.token))
    #expect(pwrite(buffer.descriptor, written, written.count, off_t(SharedBuffer.headerBytes)) == written.count)
    #expect(!buffer.holdsAnswer(to: offered, byteCount: 1000), "bytes without the answered mark")
    #expect(pwrite(buffer.descriptor, header, header.count, 0) == header.count)
    #expect(buffer.holdsAnswer(to: offered, byteCount: 1000))
    var read = [UInt8](repeating: 0, count: 1000)
    #expect(read.withUnsafeMutableBytes { buffer.read(into: $0) })
    #expect(read == written)
    #expect(!buffer.holdsAnswer(to: offered, byteCount: 1001))
    // A size of 64 MiB set without writing it: a hole where the bytes should be.
    #expect(ftruncate(buffer.descriptor, 64 << 20) == 0)
    #expect(!buffer.holdsAnswer(to: offered, byteCount: 32 << 20))
    let again = try #require(buffer.offer())
    #expect(again.token != offered.token)
    #expect(!buffer.holdsAnswer(to: again, byteCount: 1000) && !buffer.holdsAnswer(to: offered, byteCount: 1000))
    // Retired (back in the pool): its start is zeros, which names no fetch.
    #expect(buffer.retire())
    var start = [UInt8](repeating: 1, count: SharedBuffer.headerBytes)
    #expect(pread(buffer.descriptor, &start, start.count, 0) == start.count && start.allSatisfy { $0 == 0 })
    buffer.empty()
    #expect(buffer.size == 0)
  }

  /// The pool keeps a buffer whose fetch is done, its start zeroed (its
  /// pages kept up to `keptBytes`, the file emptied past that), at most
  /// `kept` of them, and hands them out again.
  @Test func thePoolKeepsBuffersThatNameNoFetch() throws {
    let pool = SharedBufferPool()
    let small = try #require(pool.take())
    _ = try #require(small.offer())
    let data = [UInt8](repeating: 5, count: 4096)
    #expect(pwrite(small.descriptor, data, data.count, off_t(SharedBuffer.headerBytes)) == data.count)
    pool.giveBack(small)
    var start = [UInt8](repeating: 1, count: SharedBuffer.headerBytes)
    #expect(pread(small.descriptor, &start, start.count, 0) == start.count && start.allSatisfy { $0 == 0 })
    #expect(small.size == SharedBuffer.headerBytes + data.count)

    let large = try #require(SharedBuffer())
    #expect(ftruncate(large.descriptor, off_t(SharedBufferPool.keptBytes + 1)) == 0)
    pool.giveBack(large)
    #expect(large.size == 0)
    #expect(pool.take() === large && pool.take() === small)

    let given = (0..<(SharedBufferPool.kept + 1)).compactMap { _ in SharedBuffer() }
    for buffer in given { pool.giveBack(buffer) }
    let taken = (0..<(SharedBufferPool.kept + 1)).compactMap { _ in pool.take() }
    #expect(taken.filter { buffer in given.contains { $0 === buffer } }.count == SharedBufferPool.kept)
  }
}
