import Foundation

/// What this process may hold in memory: the host's memory and the cgroup's
/// limit. Services size their default budgets by it.
public enum HostMemory {
  /// Bytes in MiB with one decimal, and exactly.
  public static func describe(_ bytes: Int) -> String {
    String(format: "%.1f MiB", Double(bytes) / 1_048_576) + " (\(bytes) bytes)"
  }

  /// Half the memory this process may use: the host's physical memory, or
  /// the cgroup's limit when one is set (a container, a systemd unit's
  /// MemoryMax=), whichever is smaller. The other half leaves room for the
  /// gradients in flight, checkpoint encoding and the runtime.
  public static func defaultBudget() -> Int {
    min(physicalMemory(), cgroupLimit() ?? .max) / 2
  }

  /// The smallest memory limit on the path from this process's cgroup up to
  /// the root: cgroup v2's `memory.max`, or v1's `memory.limit_in_bytes`
  /// (a systemd unit's or slice's MemoryMax=, a container's limit). Nil when
  /// none is set.
  static func cgroupLimit() -> Int? {
    guard let membership = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
    return cgroupLimit(membership: membership, mountedAt: "/sys/fs/cgroup")
  }

  /// The smallest limit for a process whose `/proc/self/cgroup` reads
  /// `membership`, with the cgroup file systems mounted at `root` (v2 at
  /// `root`, v1's memory controller at `root/memory`).
  static func cgroupLimit(membership: String, mountedAt root: String) -> Int? {
    var limits: [Int] = []
    for line in membership.split(separator: "\n") {
      let fields = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
      guard fields.count == 3 else { continue }
      if fields[0] == "0", fields[1].isEmpty {
        limits += limitsUp(from: String(fields[2]), root: root, file: "memory.max")
      } else if fields[1].split(separator: ",").contains("memory") {
        limits += limitsUp(from: String(fields[2]), root: root + "/memory", file: "memory.limit_in_bytes")
      }
    }
    return limits.min()
  }

  /// The limits in `file` of the cgroup at `path` under `root` and of its
  /// parents ("max" and unreadable files count as none).
  private static func limitsUp(from path: String, root: String, file: String) -> [Int] {
    var path = path.isEmpty ? "/" : path
    guard path.hasPrefix("/") else { return [] }  // the kernel writes absolute paths
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

  /// This process's resident memory now and at its peak (VmRSS and VmHWM
  /// from /proc/self/status; zeros where that file is missing).
  public static func resident() -> (now: Int, peak: Int) {
    guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
    return (field("VmRSS:", of: status), field("VmHWM:", of: status))
  }

  /// A "Name:  123 kB" line of /proc/self/status, in bytes.
  static func field(_ name: String, of status: String) -> Int {
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(name) }),
      let kibibytes = line.dropFirst(name.count).split(whereSeparator: \.isWhitespace).first.flatMap({ Int($0) })
    else { return 0 }
    return kibibytes * 1024
  }
}
