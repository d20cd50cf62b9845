import MeshCoordinator
import MeshProto
import MeshRPC
import MeshWire
import Testing

@Suite struct PlannerTests {
  /// An MLP of `hidden` Dense layers from `inputSize` features to `width`,
  /// then an output layer of `classes` units.
  func mlp(inputSize: Int, width: Int = 64, hidden: Int, classes: Int = 10) throws -> Pipemesh_V1_ModelSpec {
    .with {
      $0.inputShape = [Int64(inputSize)]
      $0.layers =
        (0..<hidden).map { _ in
          .with {
            $0.dense = .with {
              $0.units = Int64(width)
              $0.activation = .relu
            }
          }
        }
        + [.with { $0.dense = .with { $0.units = Int64(classes) } }]
      $0.loss = .with { $0.softmaxCrossEntropy = .init() }
    }
  }

  @Test func stagesBalanceTrainingComputeNotForwardOnly() throws {
    // Five equal layers: forward cost alone would split them 2|3, but a training
    // step's first layer needs no input gradient, so 3|2 is the balanced one.
    let model = try makeModel(try mlp(inputSize: 64, hidden: 4, classes: 64))
    let layer = model.layerCosts
    let plan = try Planner.plan(model, stages: 2)
    #expect(plan.bounds == [0, 3, 5])
    #expect(plan.costs[0] == Double(2 * layer[0].flops + 3 * layer[1].flops + 3 * layer[2].flops))
    #expect(plan.costs[1] == Double(3 * layer[3].flops + 3 * layer[4].flops))
  }

  @Test func aWiderFirstLayerBalancesTwoPerStage() throws {
    // Input 1.5× the width makes the first layer's forward and weight gradient
    // cost what a hidden layer's three products do.
    let model = try makeModel(try mlp(inputSize: 96, hidden: 4))
    let plan = try Planner.plan(model, stages: 2)
    #expect(plan.bounds == [0, 2, 5])
    #expect(plan.imbalance < 1.05)
  }

  @Test func explicitSplitPointsAreKeptAndChecked() throws {
    let model = try makeModel(try mlp(inputSize: 64, hidden: 4))
    #expect(try Planner.plan(model, stages: 3, splitPoints: [1, 4]).bounds == [0, 1, 4, 5])
    #expect(throws: RPCError.self) { try Planner.plan(model, stages: 3, splitPoints: [4, 1]) }
    #expect(throws: RPCError.self) { try Planner.plan(model, stages: 6) }
  }
}
