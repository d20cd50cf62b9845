import Foundation
import MeshTensor

/// Where each variable lives in a cluster of ps tasks. The rule is stable
/// (the same on every machine, for any order of registration): a variable's
/// task is FNV-1a of its name modulo the task count. A variable larger than
/// `rowBlockBytes` (a big embedding table) is cut into row blocks named
/// `name#rows:first-end`, each placed by its own name.
public struct Placement: Sendable, Equatable {
  public let tasks: Int
  public let rowBlockBytes: Int

  public static let defaultRowBlockBytes = 32 << 20

  public init(tasks: Int, rowBlockBytes: Int = defaultRowBlockBytes) {
    precondition(tasks > 0, "a cluster needs at least one ps task")
    self.tasks = tasks
    self.rowBlockBytes = rowBlockBytes
  }

  /// The task that holds a variable (or row block) of this name.
  public func task(of name: String) -> Int {
    Int(fnv1a64(name.utf8) % UInt64(tasks))
  }

  /// A variable's parts: the rows each holds and its name on the ps. One part
  /// named like the variable unless it is too large and has several rows.
  public func parts(of name: String, shape: [Int]) -> [(name: String, rows: Range<Int>)] {
    let rows = shape.first ?? 1
    let rowBytes = shape.dropFirst().reduce(4, *)
    guard shape.count >= 2, rows > 1, rows * rowBytes > rowBlockBytes else { return [(name, 0..<rows)] }
    let rowsPerBlock = max(1, rowBlockBytes / rowBytes)
    return stride(from: 0, to: rows, by: rowsPerBlock).map { first in
      let end = min(rows, first + rowsPerBlock)
      return ("\(name)#rows:\(first)-\(end)", first..<end)
    }
  }
}
