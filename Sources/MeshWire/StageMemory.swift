import MeshProto
import MeshTensor

/// What a stage's parameters take on a partition: the rule a partition admits
/// a stage by, and the planner plans with (see docs/big-models.md).
public struct StageMemory: Sendable, Equatable {
  /// Optimizer slots per parameter that the stage may keep.
  public let slots: Int
  /// Whether two steps run on the stage at once (PipeDream-2BW): it then
  /// holds two versions of each variable and two gradient sums.
  public let overlappingSteps: Bool

  /// For a job's optimizer (nil: one not known yet, taken to keep the most
  /// slots any does, two): its slots (0 for SGD, 1 for momentum, Adagrad and
  /// RMSProp, 2 for Adam and AdamW).
  public init(optimizer: Pipemesh_V1_OptimizerSpec?, overlappingSteps: Bool = false) throws {
    // Slots do not depend on the schedule's length (a decay to a job's end has none before its data).
    slots = try optimizer.map { try makeOptimizer($0.resolved(jobSteps: 1)).slotNames.count } ?? 2
    self.overlappingSteps = overlappingSteps
  }

  /// For an optimizer not known yet: the most any keeps (two).
  public static let mostSlots = StageMemory(slots: 2)

  init(slots: Int) {
    self.slots = slots
    overlappingSteps = false
  }

  /// Bytes a stage holds per parameter at most: the variable, its gradient
  /// sum (both twice when steps overlap) and, applying its own updates, its
  /// optimizer's slots (float32 each; the ps draws initial values, and
  /// updates are in place).
  public var bytesPerParameter: Int { 4 * ((overlappingSteps ? 4 : 2) + slots) }

  /// The most parameters one stage may have on a partition of `budget` bytes.
  public func room(within budget: Int) -> Int { max(0, budget) / bytesPerParameter }

  /// What would fit instead, for a model whose layers have `layers`
  /// parameters: the least number of stages of `room` parameters each that
  /// hold its layers (whole, in order), or the budget its largest layer needs.
  public func advice(layers: [Int], room: Int) -> String {
    let total = layers.reduce(0, +)
    if let largest = layers.indices.max(by: { layers[$0] < layers[$1] }), layers[largest] > room {
      let mebibytes = (layers[largest] * bytesPerParameter + (1 << 20) - 1) >> 20
      return "layer \(largest) alone has \(layers[largest]) parameters, more than a partition of room \(room) holds: "
        + "give the partitions a --memory-budget-mib of at least \(mebibytes) (see docs/big-models.md)"
    }
    var stages = 1
    var filled = 0
    for layer in layers {
      if filled + layer > room {
        stages += 1
        filled = 0
      }
      filled += layer
    }
    return "split the model's \(total) parameters over at least \(stages) stages of partitions this size "
      + "(see docs/big-models.md), or give the partitions a larger --memory-budget-mib"
  }
}

extension StageMemory {
  /// What a Plan asks about: its optimizer's slots (the most any keeps when
  /// it names none), and two weight versions under PipeDream-2BW.
  public init(plan request: Pipemesh_V1_PlanRequest) throws {
    try self.init(
      optimizer: request.hasOptimizer ? request.optimizer : nil,
      overlappingSteps: request.schedule == .schedulePipedream2Bw)
  }

  /// What a training job's stages hold.
  public init(train request: Pipemesh_V1_TrainRequest) throws {
    try self.init(optimizer: request.optimizer, overlappingSteps: request.schedule == .schedulePipedream2Bw)
  }
}
