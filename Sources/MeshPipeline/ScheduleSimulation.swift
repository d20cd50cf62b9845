/// What one stage's work on a micro-batch costs, in seconds.
public struct StageCosts: Sendable, Equatable {
  public var forward: Double
  /// The backward's input-gradient half (B of a split backward).
  public var inputGradient: Double
  /// The backward's weight-gradient half (W).
  public var weightGradient: Double
  /// After the stage's last action of a step: the step's end on that stage
  /// (pushing its gradients to the ps and pulling the new weights).
  public var commit: Double
  /// The fixed part of a backward call: counted in `inputGradient` (before
  /// the input gradient is handed on), and paid once more by a backward
  /// split in two, whose weight gradients are a call of their own (taken to
  /// cost as much, though it fetches and sends no tensor).
  public var callSeconds: Double

  public init(
    forward: Double, inputGradient: Double, weightGradient: Double, commit: Double = 0, callSeconds: Double = 0
  ) {
    self.forward = forward
    self.inputGradient = inputGradient
    self.weightGradient = weightGradient
    self.commit = commit
    self.callSeconds = callSeconds
  }

  /// A stage whose whole backward takes `backward`, split evenly between its
  /// input and weight gradients (a Dense layer's two products are the same
  /// size).
  public init(forward: Double, backward: Double, commit: Double = 0) {
    self.init(forward: forward, inputGradient: backward / 2, weightGradient: backward / 2, commit: commit)
  }
}

/// The link between neighbouring stages: a micro-batch's activations (or
/// their gradient) of `bytes` arrive `latency + bytes / bytesPerSecond`
/// after they were computed; each direction of a link carries one tensor at
/// a time, in the order the receiving stage's list takes them.
public struct LinkModel: Sendable, Equatable {
  public var latency: Double
  public var bytesPerSecond: Double

  public init(latency: Double, bytesPerSecond: Double) {
    self.latency = latency
    self.bytesPerSecond = bytesPerSecond
  }

  /// A link of `gigabits` Gbit/s with `latency` seconds per transfer.
  public static func gigabits(_ gigabits: Double, latency: Double) -> LinkModel {
    LinkModel(latency: latency, bytesPerSecond: gigabits * 1e9 / 8)
  }

  /// Transfers that take no time.
  public static let instant = LinkModel(latency: 0, bytesPerSecond: .infinity)
}

/// One step of a schedule as a simulation ran it.
public struct SimulatedStep: Sendable {
  /// From the first action's start to the last stage's commit.
  public let seconds: Double
  /// Each device's compute (its actions, not its commit or idle time).
  public let busy: [Double]
  /// When each action started and ended.
  public let spans: [PipelineAction: ClosedRange<Double>]

  /// The share of the devices' time spent computing: 1 without a bubble
  /// (and without commits, which count as time not computing).
  public var efficiency: Double {
    seconds == 0 ? 1 : busy.reduce(0, +) / (seconds * Double(busy.count))
  }
}

extension PipelineSchedule {
  /// Runs one step of the schedule on stages of these `costs` joined by
  /// `link`, where `activationBytes[s]` travel from stage s to s + 1 per
  /// micro-batch (and as many bytes of gradient back): each stage runs its
  /// list in order, an action starts once its stage is free and its inputs
  /// have arrived. An unsplit backward costs both halves and, as a stage
  /// runs it, sends its input gradient on before it computes its weight
  /// gradients. Throws when the lists are incomplete or would deadlock.
  public func simulate(costs: [StageCosts], link: LinkModel, activationBytes: [Int]) throws(ScheduleError)
    -> SimulatedStep
  {
    precondition(costs.count == stages, "one cost per stage")
    precondition(
      costs.allSatisfy {
        [$0.forward, $0.inputGradient, $0.weightGradient, $0.commit, $0.callSeconds].allSatisfy {
          $0.isFinite && $0 >= 0
        }
      },
      "costs are finite seconds, none negative")
    precondition(link.bytesPerSecond > 0 && link.latency.isFinite && link.latency >= 0, "a link moves bytes")
    precondition(activationBytes.count >= stages - 1 && activationBytes.allSatisfy { $0 >= 0 }, "bytes for each link")
    _ = try timeline()  // complete and deadlock-free, or the error shows where it stalls
    var next = [Int](repeating: 0, count: devices)
    var free = [Double](repeating: 0, count: devices)
    var busy = [Double](repeating: 0, count: devices)
    var spans: [PipelineAction: ClosedRange<Double>] = [:]
    // When each direction of each link between two devices is next free.
    var linkFree: [DevicePair: Double] = [:]
    var remaining = actions.reduce(0) { $0 + $1.count }
    while remaining > 0 {
      for device in 0..<devices where next[device] < actions[device].count {
        let action = actions[device][next[device]]
        let stage = action.stage
        let dependencies = action.dependencies(stages: stages)
        guard dependencies.allSatisfy({ spans[$0] != nil }) else { continue }
        var ready = free[device]
        for dependency in dependencies {
          let span = spans[dependency]!
          guard self.device(of: dependency.stage) != device else {
            ready = max(ready, span.upperBound)
            continue
          }
          // A backward hands its input gradient on before it computes its weight gradients.
          let done =
            dependency.kind == .backward ? span.lowerBound + costs[dependency.stage].inputGradient : span.upperBound
          // A tensor from a neighbour: over the link between their devices, in its direction.
          let direction = DevicePair(from: self.device(of: dependency.stage), to: device)
          let sendTime = Double(activationBytes[min(stage, dependency.stage)]) / link.bytesPerSecond
          let start = max(done, linkFree[direction, default: 0])
          linkFree[direction] = start + sendTime
          ready = max(ready, start + sendTime + link.latency)
        }
        let duration = seconds(of: action, costs: costs[stage])
        spans[action] = ready...(ready + duration)
        free[device] = ready + duration
        busy[device] += duration
        next[device] += 1
        remaining -= 1
      }
    }
    // Each device commits its stages after its last action.
    var commits = [Double](repeating: 0, count: devices)
    for stage in 0..<stages { commits[self.device(of: stage)] += costs[stage].commit }
    let end = (0..<devices).map { free[$0] + commits[$0] }.max() ?? 0
    return SimulatedStep(seconds: end, busy: busy, spans: spans)
  }

  /// What `action` costs on a stage of `costs`: a backward without a `W`
  /// of its own computes both gradients; a `W` is a call of its own.
  private func seconds(of action: PipelineAction, costs: StageCosts) -> Double {
    switch action.kind {
    case .forward: costs.forward
    case .weights: costs.weightGradient + costs.callSeconds
    case .backward:
      splitsBackward(stage: action.stage, microBatch: action.microBatch)
        ? costs.inputGradient : costs.inputGradient + costs.weightGradient
    }
  }
}

/// One direction of the link between two devices.
private struct DevicePair: Hashable {
  let from: Int
  let to: Int
}
