/// The pipeline schedules Pipemesh runs.
public enum ScheduleKind: String, Sendable, CaseIterable {
  /// All forwards, then all backwards (GPipe): simple, keeps every
  /// micro-batch's activations until its backward.
  case gpipe
  /// One forward, one backward in the steady state (PipeDream-flush 1F1B):
  /// the same bubble, stage s keeps at most K − s micro-batches in flight.
  case oneFOneB
}

/// A schedule as data: the ordered actions of every stage for one step of
/// `microBatches` micro-batches over `stages` stages. The runtime executes
/// these lists; the tests check them without any network.
public struct PipelineSchedule: Sendable, Equatable, CustomStringConvertible {
  public let kind: ScheduleKind
  public let stages: Int
  public let microBatches: Int
  /// `actions[s]` is stage s's list, in the order it runs them.
  public let actions: [[PipelineAction]]

  public init(kind: ScheduleKind, stages: Int, microBatches: Int) {
    precondition(stages > 0 && microBatches > 0, "a schedule needs stages and micro-batches")
    self.kind = kind
    self.stages = stages
    self.microBatches = microBatches
    actions = (0..<stages).map { stage in
      switch kind {
      case .gpipe:
        return (0..<microBatches).map { .forward(stage, $0) } + (0..<microBatches).map { .backward(stage, $0) }
      case .oneFOneB:
        let warmUp = min(stages - 1 - stage, microBatches)
        var list = (0..<warmUp).map { PipelineAction.forward(stage, $0) }
        for index in 0..<(microBatches - warmUp) {
          list += [.forward(stage, warmUp + index), .backward(stage, index)]
        }
        list += ((microBatches - warmUp)..<microBatches).map { .backward(stage, $0) }
        return list
      }
    }
  }

  /// Builds a schedule from explicit lists (for checking hand-written ones).
  public init(kind: ScheduleKind, stages: Int, microBatches: Int, actions: [[PipelineAction]]) {
    self.kind = kind
    self.stages = stages
    self.microBatches = microBatches
    self.actions = actions
  }

  /// The most micro-batches each stage holds at once (forwards done whose
  /// backward is not): the activation memory it needs.
  public var peakInFlight: [Int] {
    actions.map { list in
      var held = 0
      var peak = 0
      for action in list {
        held += action.kind == .forward ? 1 : -1
        peak = max(peak, held)
      }
      return peak
    }
  }

  public var description: String {
    actions.enumerated().map { "stage \($0): " + $1.map(\.description).joined(separator: " ") }.joined(separator: "\n")
  }
}
