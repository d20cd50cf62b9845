import MeshProto
import MeshRPC
import MeshTensor

/// Splits a model's layers into K contiguous stages.
public enum Planner {
  /// Stage boundaries: `bounds[s]..<bounds[s+1]` are stage s's layers.
  public struct Plan: Sendable, Equatable {
    public let bounds: [Int]
    /// Estimated training FLOPs (forward and backward) per example of each stage.
    public let costs: [Double]

    public var stages: Int { bounds.count - 1 }
    public func layers(of stage: Int) -> Range<Int> { bounds[stage]..<bounds[stage + 1] }
    /// The plan as the Plan RPC answers it.
    public func response(costs layerCosts: [LayerCost]) -> Pipemesh_V1_PlanResponse {
      .with { response in
        response.imbalance = imbalance
        response.stages = (0..<stages).map { stage in
          let layers = layers(of: stage)
          return .with {
            $0.stage = Int32(stage)
            $0.firstLayer = Int32(layers.lowerBound)
            $0.endLayer = Int32(layers.upperBound)
            $0.parameters = Int64(layerCosts[layers].reduce(0) { $0 + $1.parameterCount })
            $0.estimatedFlops = costs[stage]
          }
        }
      }
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
  public static func plan(_ model: Sequential, stages: Int, splitPoints: [Int] = []) throws -> Plan {
    let costs = model.layerCosts.enumerated().map { index, cost in
      Double(max(cost.trainingFlops(computesInputGradient: index > 0), 1))
    }
    let count = costs.count
    guard stages >= 1, stages <= count else {
      throw RPCError(.invalidArgument, "cannot split \(count) layers into \(stages) stages")
    }
    let bounds: [Int]
    if !splitPoints.isEmpty {
      bounds = [0] + splitPoints + [count]
      guard splitPoints.count == stages - 1, zip(bounds, bounds.dropFirst()).allSatisfy({ $0 < $1 }) else {
        throw RPCError(
          .invalidArgument,
          "split points \(splitPoints) must be \(stages - 1) increasing layer indices inside 1..<\(count)")
      }
    } else {
      bounds = balanced(costs, stages: stages)
    }
    let stageCosts = zip(bounds, bounds.dropFirst()).map { costs[$0..<$1].reduce(0, +) }
    return Plan(bounds: bounds, costs: stageCosts)
  }

  /// Dynamic programming over prefix sums: best[k][i] is the smallest
  /// possible largest stage when the first i layers form k stages.
  static func balanced(_ costs: [Double], stages: Int) -> [Int] {
    let count = costs.count
    var prefix = [0.0]
    for cost in costs { prefix.append(prefix.last! + cost) }
    var best = Array(repeating: Array(repeating: Double.infinity, count: count + 1), count: stages + 1)
    var cut = Array(repeating: Array(repeating: 0, count: count + 1), count: stages + 1)
    best[0][0] = 0
    for k in 1...stages {
      for i in k...count {
        for j in (k - 1)..<i where best[k - 1][j] < .infinity {
          let worst = max(best[k - 1][j], prefix[i] - prefix[j])
          if worst < best[k][i] {
            best[k][i] = worst
            cut[k][i] = j
          }
        }
      }
    }
    var bounds = [count]
    var i = count
    for k in stride(from: stages, to: 0, by: -1) {
      i = cut[k][i]
      bounds.insert(i, at: 0)
    }
    return bounds
  }
}
