import Foundation
import MeshOps
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
      throw ParameterServerError(
        .overBudget,
        "\(what()) needs \(HostMemory.describe(bytes)); this ps holds \(HostMemory.describe(taken)) of its budget of "
          + "\(HostMemory.describe(limit)) (--memory-budget-mib): add ps tasks or raise the budget (the variables of ended jobs "
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
}
