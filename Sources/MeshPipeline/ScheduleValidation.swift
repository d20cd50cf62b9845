/// A schedule that cannot run, with the stage × time grid up to where it stops.
public struct ScheduleError: Error, Sendable, CustomStringConvertible {
  public let message: String
  public let grid: String
  public var description: String { "\(message)\n\(grid)" }
}

extension PipelineSchedule {
  /// Runs the schedule on a clock where an action takes `ticks(of:)` ticks
  /// and starts once its dependencies finished and its stage is free;
  /// returns the stage × time grid (the action in each tick it runs, nil
  /// where a stage idles). Throws when the lists are incomplete or would
  /// deadlock, showing the grid with the stuck actions marked.
  public func timeline() throws(ScheduleError) -> [[PipelineAction?]] {
    try checkCompleteness()
    var next = [Int](repeating: 0, count: stages)
    /// The tick each started action ends in (its last tick).
    var finishedAt: [PipelineAction: Int] = [:]
    var busyUntil = [Int](repeating: -1, count: stages)
    var grid: [[PipelineAction?]] = Array(repeating: [], count: stages)
    var tick = 0
    while next.enumerated().contains(where: { $0.element < actions[$0.offset].count })
      || busyUntil.contains(where: { $0 >= tick })
    {
      var progressed = false
      for stage in 0..<stages {
        if busyUntil[stage] >= tick {
          grid[stage].append(grid[stage].last ?? nil)
          progressed = true
          continue
        }
        guard next[stage] < actions[stage].count else {
          grid[stage].append(nil)
          continue
        }
        let action = actions[stage][next[stage]]
        let ready = action.dependencies(stages: stages).allSatisfy { finishedAt[$0].map { $0 < tick } ?? false }
        if ready {
          grid[stage].append(action)
          finishedAt[action] = tick + ticks(of: action) - 1
          busyUntil[stage] = tick + ticks(of: action) - 1
          next[stage] += 1
          progressed = true
        } else {
          grid[stage].append(nil)
        }
      }
      if !progressed {
        let stuck = (0..<stages).compactMap { next[$0] < actions[$0].count ? actions[$0][next[$0]] : nil }
        for action in stuck { grid[action.stage][tick] = action }  // shown marked where it stalls
        throw ScheduleError(
          message:
            "deadlock at tick \(tick): \(stuck.map(\.description).joined(separator: ", ")) wait on actions that never run",
          grid: Self.render(grid, marking: Set(stuck), stages: stages))
      }
      tick += 1
    }
    return grid
  }

  /// Every stage runs exactly one forward and one backward per micro-batch, its own, and at
  /// most one weights action per micro-batch.
  private func checkCompleteness() throws(ScheduleError) {
    guard actions.count == stages else {
      throw ScheduleError(message: "\(actions.count) action lists for \(stages) stages", grid: "")
    }
    for (stage, list) in actions.enumerated() {
      let required = Set((0..<microBatches).flatMap { [PipelineAction.forward(stage, $0), .backward(stage, $0)] })
      let allowed = required.union((0..<microBatches).map { PipelineAction.weights(stage, $0) })
      let present = Set(list)
      guard required.isSubset(of: present), present.isSubset(of: allowed), list.count == present.count else {
        let missing = required.subtracting(present).map(\.description).sorted()
        let extra = present.subtracting(allowed).map(\.description).sorted()
        throw ScheduleError(
          message:
            "stage \(stage) must run each of its forwards and backwards once (and weights at most once); "
            + "missing \(missing), foreign \(extra)" + (list.count == present.count ? "" : ", some repeated"),
          grid: "")
      }
    }
  }

  /// The grid as text, one row per stage, `[..]` around marked actions.
  public static func render(_ grid: [[PipelineAction?]], marking marked: Set<PipelineAction> = [], stages: Int)
    -> String
  {
    let width = grid.map(\.count).max() ?? 0
    return (0..<stages).map { stage in
      "stage \(stage) |"
        + (0..<width).map { tick in
          guard tick < grid[stage].count, let action = grid[stage][tick] else { return "  .  " }
          let text = marked.contains(action) ? "[\(action)]" : " \(action) "
          return text + String(repeating: " ", count: max(0, 5 - text.count))
        }.joined()
    }.joined(separator: "\n")
  }

  /// Ticks from the first action to the last, and the fraction of stage
  /// ticks spent idle (the bubble), on the unit clock (`ticks(of:)`).
  public func bubble() throws(ScheduleError) -> (ticks: Int, idleFraction: Double) {
    let grid = try timeline()
    let ticks = grid.map(\.count).max() ?? 0
    let busy = grid.reduce(0) { $0 + $1.compactMap { $0 }.count }
    return (ticks, 1 - Double(busy) / Double(ticks * stages))
  }
}
