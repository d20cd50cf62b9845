import MeshPipeline
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// Splits a model's layers into K contiguous stages.
public enum Planner {
  /// Stage boundaries: `bounds[s]..<bounds[s+1]` are stage s's layers.
  public struct Plan: Sendable, Equatable {
    public let bounds: [Int]
    /// What the split balanced, per stage: measured seconds of a
    /// micro-batch's forward and backward when `times` are known, else
    /// estimated training FLOPs per example.
    public let costs: [Double]
    /// Estimated training FLOPs (forward and backward) per example of each stage.
    public let flops: [Double]
    /// Measured on a partition, per stage: a micro-batch's forward and backward.
    public let times: [LayerTiming]?
    /// Each stage's parameters.
    public let parameters: [Int]
    /// The memory budget of the partitions each stage would run on, when known.
    public let budgets: [Int?]
    /// The rule the stages' memory was planned with.
    public let memory: StageMemory

    public var stages: Int { bounds.count - 1 }
    public func layers(of stage: Int) -> Range<Int> { bounds[stage]..<bounds[stage + 1] }
    /// The plan as the Plan RPC answers it.
    public var response: Pipemesh_V1_PlanResponse {
      .with { response in
        response.imbalance = imbalance
        response.stages = (0..<stages).map { stage in
          let layers = layers(of: stage)
          return .with {
            $0.stage = Int32(stage)
            $0.firstLayer = Int32(layers.lowerBound)
            $0.endLayer = Int32(layers.upperBound)
            $0.parameters = Int64(parameters[stage])
            $0.estimatedFlops = flops[stage]
            $0.parameterBytes = Int64(parameters[stage] * memory.bytesPerParameter)
            $0.memoryBudgetBytes = Int64(budgets[stage] ?? 0)
            $0.forwardSeconds = times?[stage].forward.seconds ?? 0
            $0.backwardSeconds = times?[stage].backward.seconds ?? 0
          }
        }
      }
    }

    /// With measured times, a step of `microBatches` micro-batches run by
    /// `schedule`, simulated on the stages' times (each backward split
    /// evenly into input and weight gradients), without transfers.
    public func predictedStepSeconds(microBatches: Int, schedule: ScheduleKind) -> Double? {
      guard let times, microBatches > 0 else { return nil }
      let costs = times.map { StageCosts(forward: $0.forward.seconds, backward: $0.backward.seconds) }
      return try? PipelineSchedule(kind: schedule, stages: stages, microBatches: microBatches)
        .simulate(costs: costs, link: .instant, activationBytes: Array(repeating: 0, count: stages)).seconds
    }

    /// With measured times, the step a PlanRequest asks about (its
    /// micro-batches, 4 when unset, and schedule, 1F1B when unset).
    public func predictedStepSeconds(for request: Pipemesh_V1_PlanRequest) -> Double? {
      if case .UNRECOGNIZED = request.schedule { return nil }
      return predictedStepSeconds(
        microBatches: request.microBatches == 0 ? 4 : Int(request.microBatches),
        schedule: TrainingJob.scheduleKind(request.schedule))
    }

    /// Largest stage cost over the mean: 1 is a perfect balance.
    public var imbalance: Double {
      let mean = costs.reduce(0, +) / Double(costs.count)
      return mean == 0 ? 1 : (costs.max() ?? 0) / mean
    }
  }

  /// The split that minimises the most expensive stage (by the estimated
  /// FLOPs of a training step's forward and backward, so that the first
  /// layer, which needs no input gradient, weighs less; layers without
  /// compute count a little, so that each stage gets one), or the given split
  /// points (first layer of stages 1…K-1).
  ///
  /// With `budgets` (bytes, one per stage, nil where unknown), a stage may
  /// hold only the parameters its partitions admit by `memory`: the plan is
  /// the fastest split that fits, and RESOURCE_EXHAUSTED says what would fit
  /// when none does. With `measured` (one per layer, as a partition timed
  /// them), the split balances those times instead of the FLOP estimate.
  public static func plan(
    _ model: Sequential, stages: Int, splitPoints: [Int] = [], budgets: [Int?] = [],
    memory: StageMemory = .mostSlots, measured: [LayerTiming]? = nil
  ) throws -> Plan {
    precondition(measured == nil || measured?.count == model.layers.count, "one time per layer")
    let flops = model.trainingFlopsPerLayer.map { Double(max($0, 1)) }
    // A layer that takes no measurable time still counts a little, so that each stage gets one.
    let costs = measured.map { $0.map { max($0.total.seconds, 1e-9) } } ?? flops
    let parameters = model.layerCosts.map(\.parameterCount)
    let count = costs.count
    guard stages >= 1, stages <= count else {
      throw RPCError(.invalidArgument, "cannot split \(count) layers into \(stages) stages")
    }
    let budgets = budgets.isEmpty ? [Int?](repeating: nil, count: stages) : budgets
    precondition(budgets.count == stages, "one budget (or nil) per stage")
    let room = budgets.map { $0.map(memory.room(within:)) }
    let bounds: [Int]
    if !splitPoints.isEmpty {
      bounds = [0] + splitPoints + [count]
      guard splitPoints.count == stages - 1, zip(bounds, bounds.dropFirst()).allSatisfy({ $0 < $1 }) else {
        throw RPCError(
          .invalidArgument,
          "split points \(splitPoints) must be \(stages - 1) increasing layer indices inside 1..<\(count)")
      }
      for stage in 0..<stages {
        let held = parameters[bounds[stage]..<bounds[stage + 1]].reduce(0, +)
        if let room = room[stage], held > room {
          throw RPCError(
            .resourceExhausted,
            "stage \(stage) of split points \(splitPoints) has \(held) parameters; its partitions have room for "
              + "\(room) (--memory-budget-mib, \(memory.bytesPerParameter) bytes a parameter): "
              + memory.advice(layers: parameters, room: room))
        }
      }
    } else {
      guard let fitting = balanced(costs, stages: stages, parameters: parameters, room: room) else {
        throw refusal(parameters: parameters, room: room, memory: memory)
      }
      bounds = fitting
    }
    let ranges = zip(bounds, bounds.dropFirst()).map { $0..<$1 }
    return Plan(
      bounds: bounds, costs: ranges.map { costs[$0].reduce(0, +) }, flops: ranges.map { flops[$0].reduce(0, +) },
      times: measured.map { times in
        ranges.map { range in
          LayerTiming(
            forward: times[range].reduce(.zero) { $0 + $1.forward },
            backward: times[range].reduce(.zero) { $0 + $1.backward })
        }
      },
      parameters: ranges.map { parameters[$0].reduce(0, +) }, budgets: budgets, memory: memory)
  }

  /// Why no split fits the partitions' memory, and what would.
  private static func refusal(parameters: [Int], room: [Int?], memory: StageMemory) -> RPCError {
    RPCError(
      .resourceExhausted,
      "the model's \(parameters.reduce(0, +)) parameters do not fit \(room.count) stages: their partitions have room "
        + "for \(room.map { $0.map(String.init) ?? "any number of" }.joined(separator: ", ")) parameters "
        + "(--memory-budget-mib, \(memory.bytesPerParameter) bytes a parameter): "
        + memory.advice(layers: parameters, room: room.compactMap { $0 }.min() ?? 0))
  }

  /// Dynamic programming over prefix sums: best[k][i] is the smallest
  /// possible largest stage when the first i layers form k stages, each
  /// within its room; nil when no split fits.
  static func balanced(_ costs: [Double], stages: Int, parameters: [Int] = [], room: [Int?] = []) -> [Int]? {
    let count = costs.count
    var prefix = [0.0]
    for cost in costs { prefix.append(prefix.last! + cost) }
    var held = [0]
    for index in 0..<count { held.append(held.last! + (parameters.isEmpty ? 0 : parameters[index])) }
    func fits(_ stage: Int, _ layers: Range<Int>) -> Bool {
      guard stage < room.count, let room = room[stage] else { return true }
      return held[layers.upperBound] - held[layers.lowerBound] <= room
    }
    var best = Array(repeating: Array(repeating: Double.infinity, count: count + 1), count: stages + 1)
    var cut = Array(repeating: Array(repeating: 0, count: count + 1), count: stages + 1)
    best[0][0] = 0
    for k in 1...stages {
      for i in k...count {
        for j in (k - 1)..<i where best[k - 1][j] < .infinity && fits(k - 1, j..<i) {
          let worst = max(best[k - 1][j], prefix[i] - prefix[j])
          if worst < best[k][i] {
            best[k][i] = worst
            cut[k][i] = j
          }
        }
      }
    }
    guard best[stages][count] < .infinity else { return nil }
    var bounds = [count]
    var i = count
    for k in stride(from: stages, to: 0, by: -1) {
      i = cut[k][i]
      bounds.insert(i, at: 0)
    }
    return bounds
  }
}
