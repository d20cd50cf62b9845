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
    var available = physicalMemory()
    if let text = try? String(contentsOfFile: "/sys/fs/cgroup/memory.max", encoding: .utf8),
      let cgroupLimit = Int(text.trimmingCharacters(in: .whitespacesAndNewlines))
    {
      available = min(available, cgroupLimit)
    }
    return available / 2
  }

  private static func physicalMemory() -> Int {
    Int(clamping: ProcessInfo.processInfo.physicalMemory)
  }
}
