import Foundation
import MeshRPC
import Synchronization

/// The bytes a ps task may hold in variables and their optimizer slots, and
/// what it holds now. A registration reserves a variable's bytes (its value
/// and every slot its optimizer will keep) before anything is allocated, and
/// is refused with RESOURCE_EXHAUSTED when they do not fit.
public final class MemoryBudget: Sendable {
  /// The most the task holds, in bytes.
  public let limit: Int
  /// The largest single variable (its value alone), in bytes.
  public let variableLimit: Int
  private let used = Mutex(0)

  public init(limit: Int, variableLimit: Int) {
    self.limit = limit
    self.variableLimit = variableLimit
  }

  /// Bytes held now.
  public var inUse: Int { used.withLock { $0 } }

  /// Takes `bytes` from the budget for `what`, or throws RESOURCE_EXHAUSTED
  /// with the figures when they do not fit.
  func reserve(_ bytes: Int, for what: @autoclosure () -> String) throws {
    let taken = used.withLock { used -> Int? in
      guard bytes <= limit - used else { return used }
      used += bytes
      return nil
    }
    if let taken {
      throw RPCError(
        .resourceExhausted,
        "\(what()) needs \(Self.describe(bytes)); this ps holds \(Self.describe(taken)) of its budget of "
          + "\(Self.describe(limit)) (--memory-budget-mib): add ps tasks or raise the budget (the variables of ended jobs "
          + "stay until the ps restarts without their checkpoint)")
    }
  }

  /// Gives back bytes taken by `reserve` or `account`.
  func release(_ bytes: Int) {
    used.withLock { $0 -= bytes }
  }

  /// Counts bytes that are held already (variables restored from a
  /// checkpoint), even over the limit: later registrations are refused
  /// until enough is released.
  func account(_ bytes: Int) {
    used.withLock { $0 += bytes }
  }

  /// Bytes in MiB with one decimal, and exactly.
  public static func describe(_ bytes: Int) -> String {
    String(format: "%.1f MiB", Double(bytes) / 1_048_576) + " (\(bytes) bytes)"
  }

  /// Half the memory this process may use: the host's physical memory, or
  /// the cgroup's limit when one is set (a container, a systemd unit's
  /// MemoryMax=), whichever is smaller. The other half leaves room for the
  /// gradients in flight, checkpoint encoding and the runtime.
  public static func hostDefault() -> Int {
    min(physicalMemory(), cgroupLimit() ?? .max) / 2
  }

  /// The smallest memory limit on the path from this process's cgroup up to
  /// the root: cgroup v2's `memory.max`, or v1's `memory.limit_in_bytes`
  /// (a systemd unit's or slice's MemoryMax=, a container's limit). Nil when
  /// none is set.
  static func cgroupLimit() -> Int? {
    guard let membership = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
    var limits: [Int] = []
    for line in membership.split(separator: "\n") {
      let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
      guard fields.count == 3 else { continue }
      if fields[0] == "0", fields[1].isEmpty {
        limits += limitsUp(from: String(fields[2]), root: "/sys/fs/cgroup", file: "memory.max")
      } else if fields[1].split(separator: ",").contains("memory") {
        limits += limitsUp(from: String(fields[2]), root: "/sys/fs/cgroup/memory", file: "memory.limit_in_bytes")
      }
    }
    return limits.min()
  }

  /// The limits in `file` of the cgroup at `path` under `root` and of its
  /// parents ("max" and unreadable files count as none).
  private static func limitsUp(from path: String, root: String, file: String) -> [Int] {
    var path = path.isEmpty ? "/" : path
    var limits: [Int] = []
    while true {
      let location = root + (path == "/" ? "" : path) + "/" + file
      if let text = try? String(contentsOfFile: location, encoding: .utf8),
        let limit = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
      {
        limits.append(limit)
      }
      guard path != "/" else { return limits }
      path = (path as NSString).deletingLastPathComponent
    }
  }

  private static func physicalMemory() -> Int {
    Int(clamping: ProcessInfo.processInfo.physicalMemory)
  }
}
