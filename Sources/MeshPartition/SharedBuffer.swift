import CLinux
import Foundation
import MeshProto
import Synchronization

/// A fetcher's anonymous memory file, into which a partition on the same
/// host writes the tensor it fetches: two copies (the partition's into the
/// file, the fetcher's out of it) instead of the network stack's.
///
/// The fetcher makes the file and names it in its FetchTensor request by
/// process and descriptor, with a random token it has just written at the
/// file's start; the partition opens the file through `/proc/<pid>/fd/<fd>`,
/// which the kernel allows only to a process that may read the fetcher's
/// memory anyway (the same user, or root). The partition writes only into a
/// fetcher's memory file (its name and its support for seals say so) of
/// another process that begins with the request's token, so neither a
/// request naming some other file, nor one naming another fetch's buffer,
/// nor a late answer to a fetch given up, writes anything. It writes the
/// tensor after the token's bytes and then marks the start as answered,
/// which the fetcher checks before it reads. The file is freed when the
/// fetcher closes it, whatever happens to either process.
final class SharedBuffer: Sendable {
  /// The name every fetcher's file has, which a partition checks before writing.
  static let fileName = "pipemesh-fetch"
  /// Bytes at the file's start for the fetch's token (then its answered mark).
  static let headerBytes = 16

  /// The file's descriptor in this process.
  let descriptor: Int32

  /// A new empty memory file, or nil when this system makes none.
  init?() {
    let descriptor = pipemesh_memfd_create(Self.fileName)
    guard descriptor >= 0 else { return nil }
    self.descriptor = descriptor
  }

  deinit { close(descriptor) }

  /// Readies the file for one fetch: writes a new random token at its
  /// start and returns the buffer as the request names it; nil when the
  /// token cannot be written.
  func offer() -> Pipemesh_V1_SharedBuffer? {
    var generator = SystemRandomNumberGenerator()
    var token = Data(count: Self.headerBytes)
    // All zeros is what a retired buffer begins with, which no partition writes.
    while token.allSatisfy({ $0 == 0 }) {
      token = Data((0..<Self.headerBytes).map { _ in UInt8.random(in: .min ... .max, using: &generator) })
    }
    guard Self.writeAll(token, to: descriptor, at: 0) else { return nil }
    return .with {
      $0.host = SameHost.identity
      $0.pid = getpid()
      $0.fd = descriptor
      $0.token = token
    }
  }

  /// Whether a partition answered `offered` with `byteCount` bytes: the
  /// file's start marks the token answered, and the bytes after it are all
  /// there, with no hole among them. Checked before anything of that size
  /// is allocated: a partition that only announces bytes makes nothing
  /// larger. (Holes show at the file's page size, a huge page where
  /// transparent huge pages back it: what a fetcher allocates is still
  /// memory the partition wrote.)
  func holdsAnswer(to offered: Pipemesh_V1_SharedBuffer, byteCount: Int) -> Bool {
    guard byteCount <= Int(Int64.max) - Self.headerBytes,
      Self.header(of: descriptor) == Self.answered(offered.token)
    else { return false }
    let end = Self.headerBytes + byteCount
    var status = stat()
    guard fstat(descriptor, &status) == 0, Int(status.st_size) >= end else { return false }
    return byteCount == 0 || Int(pipemesh_first_hole(descriptor, off_t(Self.headerBytes))) >= end
  }

  /// Reads the answer's first `destination.count` bytes into
  /// `destination`; false when they cannot be read. Call after
  /// `holdsAnswer(to:byteCount:)`.
  func read(into destination: UnsafeMutableRawBufferPointer) -> Bool {
    Self.readAll(into: destination, from: descriptor, at: Self.headerBytes)
  }

  /// The first `headerBytes` of `file`, or nil when it holds fewer.
  private static func header(of file: Int32) -> Data? {
    var header = Data(count: headerBytes)
    return header.withUnsafeMutableBytes { readAll(into: $0, from: file, at: 0) } ? header : nil
  }

  /// Reads `destination.count` bytes of `file` from `offset` on; false when it cannot.
  private static func readAll(into destination: UnsafeMutableRawBufferPointer, from file: Int32, at offset: Int)
    -> Bool
  {
    whole(destination.count) {
      pread(file, destination.baseAddress! + $0, destination.count - $0, off_t(offset + $0))
    }
  }

  /// Bytes the file holds now.
  var size: Int {
    var status = stat()
    return fstat(descriptor, &status) == 0 ? Int(status.st_size) : 0
  }

  /// Frees what the file holds, keeping the file.
  func empty() { _ = ftruncate(descriptor, 0) }

  /// Zeroes the file's start (an empty file has none), so that it names no
  /// fetch until the next `offer`: a token seen before (by a partition that
  /// answered in chunks, or on the way) opens no later write into a buffer
  /// waiting in the pool. False when it cannot be zeroed.
  func retire() -> Bool {
    var status = stat()
    guard fstat(descriptor, &status) == 0 else { return false }
    return status.st_size == 0 || Self.writeAll(Data(count: Self.headerBytes), to: descriptor, at: 0)
  }

  /// The mark of an answered fetch: its token, each byte inverted.
  static func answered(_ token: Data) -> Data { Data(token.map { ~$0 }) }

  /// What became of a fetcher's buffer a partition was asked to write.
  enum Outcome {
    /// The tensor is in it.
    case written
    /// It is on another host, in a process that cannot be one of this
    /// host's fetchers (this one), or named with a token no fetch has: the
    /// answer goes in chunks.
    case elsewhere
    /// It is named for this host and another process, but this process may
    /// not open it, it is not a fetcher's buffer waiting for this request's
    /// answer, or the write failed: the answer goes in chunks.
    case refused
  }

  /// Writes the bytes `bytes` makes into the fetcher's buffer `wire`
  /// names, when it is a fetcher's memory file of another process on this
  /// host that this process may open and that begins with the request's
  /// token (never all zeros); nothing is made or written otherwise (then
  /// the tensor goes in chunks).
  static func write(_ bytes: () -> Data, into wire: Pipemesh_V1_SharedBuffer) -> Outcome {
    guard !SameHost.identity.isEmpty, wire.host == SameHost.identity, wire.pid > 0, wire.fd >= 0,
      wire.token.count == headerBytes, wire.token.contains(where: { $0 != 0 })
    else { return .elsewhere }
    // This process's own pid, or one of its threads' ids (which /proc opens as the process).
    guard wire.pid != getpid(), access("/proc/self/task/\(wire.pid)", F_OK) != 0 else { return .elsewhere }
    // A location first: what the descriptor names is looked at before anything of it is opened.
    let location = pipemesh_open_location("/proc/\(wire.pid)/fd/\(wire.fd)")
    guard location >= 0 else { return .refused }
    defer { close(location) }
    var named = stat()
    guard SameHost.link("/proc/self/fd/\(location)") == "/memfd:\(fileName) (deleted)", fstat(location, &named) == 0,
      named.st_mode & S_IFMT == S_IFREG
    else { return .refused }
    let file = pipemesh_reopen_read_write("/proc/self/fd/\(location)")
    guard file >= 0 else { return .refused }
    defer { close(file) }
    var opened = stat()
    guard pipemesh_supports_seals(file), fstat(file, &opened) == 0, opened.st_dev == named.st_dev,
      opened.st_ino == named.st_ino, header(of: file) == wire.token
    else { return .refused }
    let data = bytes()
    let end = headerBytes + data.count
    if Int(opened.st_size) < end, ftruncate(file, off_t(end)) != 0 { return .refused }
    let done = writeAll(data, to: file, at: headerBytes) && writeAll(answered(wire.token), to: file, at: 0)
    return done ? .written : .refused
  }

  /// Writes all of `data` to `file` from `offset` on; false when it cannot.
  private static func writeAll(_ data: Data, to file: Int32, at offset: Int) -> Bool {
    data.withUnsafeBytes { source in
      whole(source.count) { pwrite(file, source.baseAddress! + $0, source.count - $0, off_t(offset + $0)) }
    }
  }

  /// Calls `move` (a pread or pwrite of the bytes from an offset on) until
  /// `count` bytes are moved; false when a call fails or moves none.
  private static func whole(_ count: Int, _ move: (_ done: Int) -> Int) -> Bool {
    var done = 0
    while done < count {
      let moved = move(done)
      if moved < 0, errno == EINTR { continue }
      guard moved > 0 else { return false }
      done += moved
    }
    return true
  }
}

/// Which processes share this one's host, as same-host fetches see it.
enum SameHost {
  /// The boot id and the PID and network namespaces of this process: two
  /// processes that see the same pids and the same network, since the same
  /// boot. Processes in other network namespaces (containers, or the test
  /// hosts of a bench) count as other hosts, so their tensors go by the
  /// network. Empty when `/proc` does not tell (then no fetch offers a buffer).
  static let identity: String = {
    guard let boot = try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8),
      let pids = link("/proc/self/ns/pid"), let network = link("/proc/self/ns/net")
    else { return "" }
    return "\(boot.trimmingCharacters(in: .whitespacesAndNewlines)) \(pids) \(network)"
  }()

  /// Where the symbolic link at `path` points, or nil.
  static func link(_ path: String) -> String? {
    var target = [UInt8](repeating: 0, count: 512)
    let count = readlink(path, &target, target.count)
    guard count >= 0, count < target.count else { return nil }
    return String(decoding: target[0..<count], as: UTF8.self)
  }
}

/// Memory files kept for the next fetches: writing into a file that already
/// holds pages costs less than growing a new one.
final class SharedBufferPool: Sendable {
  /// Buffers kept, at most; a fetch finding none makes one.
  static let kept = 4
  /// A buffer that held more is emptied before it is kept.
  static let keptBytes = 16 << 20

  private let idle = Mutex<[SharedBuffer]>([])

  /// A buffer for one fetch, or nil when this system makes none.
  func take() -> SharedBuffer? { idle.withLock { $0.popLast() } ?? SharedBuffer() }

  /// Keeps `buffer` for a later fetch. Only a buffer whose fetch ended with
  /// an answer comes back: a partition still writing into it would spoil
  /// another fetch.
  func giveBack(_ buffer: SharedBuffer) {
    if buffer.size > Self.keptBytes { buffer.empty() }
    guard buffer.retire() else { return }
    idle.withLock { if $0.count < Self.kept { $0.append(buffer) } }
  }
}
