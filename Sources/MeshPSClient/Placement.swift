import Foundation
import MeshTensor

/// Where each variable lives in a cluster of ps tasks. The rule is stable
/// (the same on every machine, for any order of registration): a variable's
/// task is FNV-1a of its name modulo the task count. A variable larger than
/// `blockBytes` is partitioned: cut into row blocks named
/// `name#rows:first-end` (or, when even one row is larger, into runs of
/// elements named `name#elements:first-end`), each placed by its own name,
/// so a big layer spreads over the tasks and no part outgrows a message.
public struct Placement: Sendable, Equatable {
  public let tasks: Int
  public let blockBytes: Int

  /// 16 MiB: a part travels in one message well under the default limit, and
  /// a 1 GiB variable spreads over 64 parts.
  public static let defaultBlockBytes = 16 << 20

  public init(tasks: Int, blockBytes: Int = defaultBlockBytes) {
    precondition(tasks > 0, "a cluster needs at least one ps task")
    precondition(blockBytes >= 4, "a block holds at least one scalar")
    self.tasks = tasks
    self.blockBytes = blockBytes
  }

  /// The task that holds a variable (or part) of this name.
  public func task(of name: String) -> Int {
    Int(fnv1a64(name.utf8) % UInt64(tasks))
  }

  /// A variable's parts as the ps holds them: one named like the variable
  /// unless it is larger than `blockBytes`.
  public func parts(of name: String, shape: [Int]) -> [VariablePart] {
    let count = shape.reduce(1, *)
    guard count * 4 > blockBytes else { return [VariablePart(name: name, elements: 0..<count, shape: shape)] }
    let rowElements = shape.dropFirst().reduce(1, *)
    if shape.count >= 2, rowElements * 4 <= blockBytes {
      let rowsPerBlock = blockBytes / (rowElements * 4)
      return stride(from: 0, to: shape[0], by: rowsPerBlock).map { first in
        let end = min(shape[0], first + rowsPerBlock)
        return VariablePart(
          name: "\(name)#rows:\(first)-\(end)", elements: (first * rowElements)..<(end * rowElements),
          shape: [end - first] + shape.dropFirst())
      }
    }
    let perBlock = blockBytes / 4
    return stride(from: 0, to: count, by: perBlock).map { first in
      let end = min(count, first + perBlock)
      return VariablePart(name: "\(name)#elements:\(first)-\(end)", elements: first..<end, shape: [end - first])
    }
  }
}

/// One part of a variable as a ps task holds it: a run of the whole
/// variable's row-major elements, under its own name and shape.
public struct VariablePart: Sendable, Equatable {
  /// Its name on the ps (the variable's own when it is not partitioned).
  public let name: String
  /// Which of the whole variable's elements it holds, in row-major order.
  public let elements: Range<Int>
  /// Its shape on the ps.
  public let shape: [Int]

  public var byteCount: Int { elements.count * 4 }
}
