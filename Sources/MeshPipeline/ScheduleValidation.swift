/// A schedule that cannot run, with the device × time grid up to where it stops.
public struct ScheduleError: Error, Sendable, CustomStringConvertible {
  public let message: String
  public let grid: String
  public var description: String { "\(message)\n\(grid)" }
}

extension PipelineSchedule {
  /// Runs the schedule on a clock where an action takes `ticks(of:)` ticks
  /// and starts once its dependencies finished and its device is free;
  /// returns the device × time grid (one row per stage where each device
  /// runs one: the action in each tick it runs, nil where a device idles). Throws when the lists are incomplete or would
  /// deadlock, showing the grid with the stuck actions marked.
  public func timeline() throws(ScheduleError) -> [[PipelineAction?]] {
    try checkCompleteness()
    var next = [Int](repeating: 0, count: devices)
    /// The tick each started action ends in (its last tick).
    var finishedAt: [PipelineAction: Int] = [:]
    var busyUntil = [Int](repeating: -1, count: devices)
    var grid: [[PipelineAction?]] = Array(repeating: [], count: devices)
    var tick = 0
    while next.enumerated().contains(where: { $0.element < actions[$0.offset].count })
      || busyUntil.contains(where: { $0 >= tick })
    {
      var progressed = false
      for device in 0..<devices {
        if busyUntil[device] >= tick {
          grid[device].append(grid[device].last ?? nil)
          progressed = true
          continue
        }
        guard next[device] < actions[device].count else {
          grid[device].append(nil)
          continue
        }
        let action = actions[device][next[device]]
        let ready = action.dependencies(stages: stages).allSatisfy { finishedAt[$0].map { $0 < tick } ?? false }
        if ready {
          grid[device].append(action)
          finishedAt[action] = tick + ticks(of: action) - 1
          busyUntil[device] = tick + ticks(of: action) - 1
          next[device] += 1
          progressed = true
        } else {
          grid[device].append(nil)
        }
      }
      if !progressed {
        let stuck = (0..<devices).compactMap { next[$0] < actions[$0].count ? actions[$0][next[$0]] : nil }
        for action in stuck { grid[device(of: action.stage)][tick] = action }  // shown marked where it stalls
        throw ScheduleError(
          message:
            "deadlock at tick \(tick): \(stuck.map(\.description).joined(separator: ", ")) wait on actions that never run",
          grid: render(grid, marking: Set(stuck)))
      }
      tick += 1
    }
    return grid
  }

  /// Every device runs exactly one forward and one backward per micro-batch of each of its
  /// stages, and at most one weights action per micro-batch.
  private func checkCompleteness() throws(ScheduleError) {
    guard actions.count == devices, stages % devices == 0 else {
      throw ScheduleError(
        message: "\(actions.count) action lists for \(devices) devices running \(stages) stages", grid: "")
    }
    for (device, list) in actions.enumerated() {
      let own = stride(from: device, to: stages, by: devices)
      let required = Set(
        own.flatMap { stage in (0..<microBatches).flatMap { [PipelineAction.forward(stage, $0), .backward(stage, $0)] }
        })
      let allowed = required.union(
        own.flatMap { stage in (0..<microBatches).map { PipelineAction.weights(stage, $0) } })
      let present = Set(list)
      guard required.isSubset(of: present), present.isSubset(of: allowed), list.count == present.count else {
        let missing = required.subtracting(present).map(\.description).sorted()
        let extra = present.subtracting(allowed).map(\.description).sorted()
        throw ScheduleError(
          message:
            "\(rowName) \(device) must run each of its forwards and backwards once (and weights at most once); "
            + "missing \(missing), foreign \(extra)" + (list.count == present.count ? "" : ", some repeated"),
          grid: "")
      }
    }
  }

  /// The grid as text, one row per device, `[..]` around marked actions.
  public func render(_ grid: [[PipelineAction?]], marking marked: Set<PipelineAction> = []) -> String {
    let width = grid.map(\.count).max() ?? 0
    return grid.indices.map { row in
      "\(rowName) \(row) |"
        + (0..<width).map { tick in
          guard tick < grid[row].count, let action = grid[row][tick] else { return "  .  " }
          let text = marked.contains(action) ? "[\(action)]" : " \(action) "
          return text + String(repeating: " ", count: max(0, 5 - text.count))
        }.joined()
    }.joined(separator: "\n")
  }

  /// Ticks from the first action to the last, and the fraction of device
  /// ticks spent idle (the bubble), on the unit clock (`ticks(of:)`).
  public func bubble() throws(ScheduleError) -> (ticks: Int, idleFraction: Double) {
    let grid = try timeline()
    let ticks = grid.map(\.count).max() ?? 0
    let busy = grid.reduce(0) { $0 + $1.compactMap { $0 }.count }
    return (ticks, 1 - Double(busy) / Double(ticks * devices))
  }
}
