import CLinux
import Foundation
import MeshProto
import Synchronization

/// A fetcher's anonymous memory file, into which a partition on the same
/// host writes the tensor it fetches: two copies (the partition's into the
/// file, the fetcher's out of it) instead of the network stack's.
///
/// The fetcher makes the file and names it in its FetchTensor request by
/// process and descriptor; the partition opens it through
/// `/proc/<pid>/fd/<fd>`, which the kernel allows only to a process that may
/// read the fetcher's memory anyway (the same user). What the partition
/// opened is written only when it is a fetcher's memory file (its name and
/// its support for seals say so), so a request cannot point a partition at
/// any other file. The file is freed when the fetcher closes it, whatever
/// happens to either process.
final class SharedBuffer: Sendable {
  /// The name every fetcher's file has, which a partition checks before writing.
  static let fileName = "pipemesh-fetch"

  /// The file's descriptor in this process.
  let descriptor: Int32

  /// A new empty memory file, or nil when this system makes none.
  init?() {
    let descriptor = pipemesh_memfd_create(Self.fileName)
    guard descriptor >= 0 else { return nil }
    self.descriptor = descriptor
  }

  deinit { close(descriptor) }

  /// The buffer as a FetchTensor request names it.
  var wire: Pipemesh_V1_SharedBuffer {
    .with {
      $0.host = SameHost.identity
      $0.pid = getpid()
      $0.fd = descriptor
    }
  }

  /// Reads the first `destination.count` bytes of the file into
  /// `destination`; false when the file holds fewer (a partition that did
  /// not write them all). Only bytes the file holds are asked for, so a
  /// partition that announces more than it wrote makes nothing larger.
  func read(into destination: UnsafeMutableRawBufferPointer) -> Bool {
    var status = stat()
    guard fstat(descriptor, &status) == 0, Int(status.st_size) >= destination.count,
      Int(status.st_blocks) * 512 >= destination.count
    else { return false }
    return Self.whole(destination.count) { done in
      pread(descriptor, destination.baseAddress! + done, destination.count - done, off_t(done))
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

  /// Bytes the file holds now.
  var size: Int {
    var status = stat()
    return fstat(descriptor, &status) == 0 ? Int(status.st_size) : 0
  }

  /// Frees what the file holds, keeping the file.
  func empty() { _ = ftruncate(descriptor, 0) }

  /// Writes `bytes` at the start of the fetcher's buffer `wire` names, when
  /// it is a fetcher's memory file of another process on this host that
  /// this process may open; false, with nothing written, otherwise (then the
  /// tensor goes in chunks).
  static func write(_ bytes: Data, into wire: Pipemesh_V1_SharedBuffer) -> Bool {
    guard !SameHost.identity.isEmpty, wire.host == SameHost.identity, wire.pid > 0, wire.pid != getpid(),
      wire.fd >= 0
    else { return false }
    let file = open("/proc/\(wire.pid)/fd/\(wire.fd)", O_RDWR | O_CLOEXEC)
    guard file >= 0 else { return false }
    defer { close(file) }
    // What was opened, not what the path named a moment before, must be a fetcher's buffer.
    guard SameHost.link("/proc/self/fd/\(file)") == "/memfd:\(fileName) (deleted)", pipemesh_supports_seals(file)
    else { return false }
    var status = stat()
    guard fstat(file, &status) == 0, status.st_mode & S_IFMT == S_IFREG else { return false }
    if Int(status.st_size) < bytes.count, ftruncate(file, off_t(bytes.count)) != 0 { return false }
    return bytes.withUnsafeBytes { source in
      whole(source.count) { done in pwrite(file, source.baseAddress! + done, source.count - done, off_t(done)) }
    }
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
    idle.withLock { if $0.count < Self.kept { $0.append(buffer) } }
  }
}
