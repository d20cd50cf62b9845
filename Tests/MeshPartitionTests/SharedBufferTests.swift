import Foundation
import MeshProto
import MeshTestSupport
import Testing

@testable import MeshPartition

/// Same-host fetches: a partition writes a tensor into a fetcher's memory
/// file, and into no other file, whatever a request names.
@Suite struct SharedBufferTests {
  /// Holds files open in another process and prints their descriptors: a
  /// memory file named as a fetcher's buffer, one named otherwise, a tmpfs
  /// file (which also takes seals), and the regular file `argv[1]`.
  static let holder = """
    import os, sys, time
    fetch = os.memfd_create("pipemesh-fetch")
    other = os.memfd_create("other")
    path = "/dev/shm/pipemesh-test-%d" % os.getpid()
    shm = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.unlink(path)
    plain = os.open(sys.argv[1], os.O_RDWR)
    print("fds", fetch, other, shm, plain, flush=True)
    time.sleep(300)
    """

  static func buffer(pid: Int32, fd: Int32, host: String = SameHost.identity) -> Pipemesh_V1_SharedBuffer {
    .with {
      $0.host = host
      $0.pid = pid
      $0.fd = fd
    }
  }

  /// The bytes another process's descriptor `fd` reads, from the start.
  static func contents(pid: Int32, fd: Int32) throws -> Data {
    try Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/fd/\(fd)"))
  }

  @Test func onlyAnotherProcesssFetchBufferOnThisHostIsWritten() async throws {
    try #require(!SameHost.identity.isEmpty, "/proc tells no boot id or namespaces")
    let directory = try TemporaryDirectory(prefix: "pipemesh-shared-buffer")
    let plainPath = directory.file("plain")
    let untouched = Data("a file no request may reach".utf8)
    try untouched.write(to: URL(fileURLWithPath: plainPath))
    let holder = try ChildProcess(
      try PythonInterop.findPython(), ["-c", Self.holder, plainPath], logPath: directory.file("holder.log"))
    let line = try await holder.waitForLine(startingWith: "fds ")
    let fds = line.split(separator: " ").compactMap { Int32($0) }
    try #require(fds.count == 4, "\(line)")
    let (fetch, other, shm, plain) = (fds[0], fds[1], fds[2], fds[3])
    let bytes = Data((0..<(3 * 4096 + 5)).map { UInt8(truncatingIfNeeded: $0 * 7) })

    for (fd, what) in [(other, "a memory file of another name"), (shm, "a tmpfs file"), (plain, "a regular file")] {
      #expect(!SharedBuffer.write(bytes, into: Self.buffer(pid: holder.pid, fd: fd)), "\(what) was written")
    }
    #expect(try Self.contents(pid: holder.pid, fd: other).isEmpty)
    #expect(try Self.contents(pid: holder.pid, fd: shm).isEmpty)
    #expect(try Data(contentsOf: URL(fileURLWithPath: plainPath)) == untouched)
    // The right file, but named for another host, for no process, or for a descriptor not open.
    #expect(!SharedBuffer.write(bytes, into: Self.buffer(pid: holder.pid, fd: fetch, host: "another host")))
    #expect(!SharedBuffer.write(bytes, into: Self.buffer(pid: 0, fd: fetch)))
    #expect(!SharedBuffer.write(bytes, into: Self.buffer(pid: holder.pid, fd: 999)))
    #expect(try Self.contents(pid: holder.pid, fd: fetch).isEmpty)
    // A buffer of this very process is never written: a partition does not fetch from itself.
    let own = try #require(SharedBuffer())
    #expect(!SharedBuffer.write(bytes, into: own.wire))
    #expect(own.size == 0)

    #expect(SharedBuffer.write(bytes, into: Self.buffer(pid: holder.pid, fd: fetch)))
    #expect(try Self.contents(pid: holder.pid, fd: fetch) == bytes)
    // Fewer bytes later: the file keeps its size, and its start is the new bytes.
    #expect(SharedBuffer.write(bytes.prefix(100), into: Self.buffer(pid: holder.pid, fd: fetch)))
    let after = try Self.contents(pid: holder.pid, fd: fetch)
    #expect(after.count == bytes.count && after.prefix(100) == bytes.prefix(100))
    try await holder.stop()
  }

  /// A fetcher reads only what its buffer holds: short of the bytes asked
  /// for, or holding them only as a hole (a size set without data), the
  /// read fails rather than making up the rest.
  @Test func aBufferShortOfTheAnnouncedBytesIsNotRead() throws {
    let buffer = try #require(SharedBuffer())
    let written: [UInt8] = Array(repeating: 9, count: 1000)
    #expect(pwrite(buffer.descriptor, written, written.count, 0) == written.count)
    var read = [UInt8](repeating: 0, count: 1000)
    #expect(read.withUnsafeMutableBytes { buffer.read(into: $0) })
    #expect(read == written)
    var more = [UInt8](repeating: 0, count: 1001)
    #expect(!more.withUnsafeMutableBytes { buffer.read(into: $0) })
    // A size of 64 MiB set without writing them: nothing is there to read.
    #expect(ftruncate(buffer.descriptor, 64 << 20) == 0)
    var hole = [UInt8](repeating: 0, count: 1 << 20)
    #expect(!hole.withUnsafeMutableBytes { buffer.read(into: $0) })
    buffer.empty()
    #expect(buffer.size == 0)
  }
}
