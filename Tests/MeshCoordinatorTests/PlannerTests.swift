import MeshCoordinator
import MeshProto
import MeshRPC
import MeshTensor
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
    let plan = try Planner.plan(model, stages: 2, wholeLayers: true)
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

  /// Measured layer times take the estimate's place: five layers the FLOPs
  /// split 3|2 split 1|4 when the first takes as long as the rest together,
  /// and the plan predicts a step from the stages' times.
  @Test func measuredTimesDecideTheSplit() throws {
    let model = try makeModel(try mlp(inputSize: 64, hidden: 4, classes: 64))
    let milliseconds = [8, 2, 2, 2, 2].map {
      LayerTiming(forward: .milliseconds($0 / 2), backward: .milliseconds($0 / 2))
    }
    let plan = try Planner.plan(model, stages: 2, measured: milliseconds, wholeLayers: true)
    #expect(plan.bounds == [0, 1, 5])
    #expect(plan.costs == [0.008, 0.008] && plan.imbalance == 1)
    #expect(
      plan.times == Array(repeating: LayerTiming(forward: .milliseconds(4), backward: .milliseconds(4)), count: 2))
    // Four micro-batches by 1F1B: stage 1's four forwards and backwards (32 ms) after stage 0's
    // first forward (4), and stage 0's last backward after stage 1's hands on its input
    // gradient, half its backward (2): 38 ms, 2 less than one backward block would take. ZB-H1
    // fills some of the wait with weight gradients, but no stage computes less than its 32.
    let oneFOneB = try #require(plan.predictedStepSeconds(microBatches: 4, schedule: .oneFOneB))
    #expect(abs(oneFOneB - 0.038) < 1e-12, "\(oneFOneB)")
    let zeroBubble = try #require(plan.predictedStepSeconds(microBatches: 4, schedule: .zeroBubbleH1))
    #expect(zeroBubble <= oneFOneB && zeroBubble >= 0.032, "\(zeroBubble)")
    // PipeDream-2BW's steady step: the next step's forwards fill the wait, so a step takes its
    // busiest stage's 32 ms.
    let twoBW = try #require(plan.predictedStepSeconds(microBatches: 4, schedule: .pipeDream2BW))
    #expect(abs(twoBW - 0.032) < 1e-12, "\(twoBW)")
    #expect(abs((plan.predictedStepSeconds(for: .with { $0.schedule = .scheduleOneFOneB }) ?? 0) - 0.038) < 1e-12)
    let response = plan.response
    #expect(response.stages.map(\.forwardSeconds) == [0.004, 0.004])
    #expect(response.stages.map(\.estimatedFlops) == plan.flops)
    // Without times the plan balances FLOPs and predicts nothing.
    let estimated = try Planner.plan(model, stages: 2, wholeLayers: true)
    #expect(estimated.bounds == [0, 3, 5] && estimated.times == nil)
    #expect(estimated.predictedStepSeconds(microBatches: 4, schedule: .oneFOneB) == nil)
  }

  @Test func explicitSplitPointsAreKeptAndChecked() throws {
    let model = try makeModel(try mlp(inputSize: 64, hidden: 4))
    #expect(try Planner.plan(model, stages: 3, splitPoints: [1, 4]).bounds == [0, 1, 4, 5])
    #expect(throws: CoordinatorError.self) { try Planner.plan(model, stages: 3, splitPoints: [4, 1]) }
    #expect(throws: CoordinatorError.self) { try Planner.plan(model, stages: 6, wholeLayers: true) }
    // Inside a layer: after some of its inputs, fewer than it has.
    let inside = try Planner.plan(model, stages: 3, splitPoints: [LayerPosition(layer: 0, inputs: 10), 4])
    #expect(inside.bounds == [0, LayerPosition(layer: 0, inputs: 10), 4, 5])
    #expect(inside.response.stages.map(\.firstLayerInputs) == [0, 10, 0])
    #expect(inside.response.stages.map(\.endLayerInputs) == [10, 0, 0])
    #expect(throws: CoordinatorError.self) {
      try Planner.plan(model, stages: 2, splitPoints: [LayerPosition(layer: 0, inputs: 64)])
    }
    #expect(throws: CoordinatorError.self) {
      try Planner.plan(model, stages: 2, splitPoints: [LayerPosition(layer: 0, inputs: -1)])
    }
  }

  /// The partitions' memory budgets bound what a stage may hold: the plan is
  /// the fastest split that fits, and none fitting says what would.
  @Test func stagesFitTheirPartitionsMemory() throws {
    // Five equal layers of 4,160 parameters (66,560 bytes at 16 a parameter); time alone splits 3|2.
    let model = try makeModel(try mlp(inputSize: 64, hidden: 4, classes: 64))
    let layer = 64 * 64 + 64
    let bytes = StageMemory.mostSlots.bytesPerParameter * layer
    #expect(
      try Planner.plan(model, stages: 2, budgets: [3 * bytes, 3 * bytes], wholeLayers: true).bounds == [0, 3, 5])
    // Room for two layers on the first partition: the time-balanced 3|2 does not fit, 2|3 does.
    let fitting = try Planner.plan(model, stages: 2, budgets: [2 * bytes, nil], wholeLayers: true)
    #expect(fitting.bounds == [0, 2, 5])
    #expect(fitting.response.stages.map(\.parameterBytes) == [Int64(2 * bytes), Int64(3 * bytes)])
    #expect(fitting.response.stages.map(\.memoryBudgetBytes) == [Int64(2 * bytes), 0])
    // Room for two layers on each: five layers need three stages.
    let refused = #expect(throws: CoordinatorError.self) {
      try Planner.plan(model, stages: 2, budgets: [2 * bytes, 2 * bytes])
    }
    #expect(refused?.rpcError.code == .resourceExhausted)
    #expect(refused?.message.contains("over at least 3 stages") == true, "\(String(describing: refused))")
    // With SGD a stage keeps no slots: 8 bytes a parameter, so the same partitions hold four layers each.
    let sgd = try StageMemory(optimizer: .with { $0.sgd = .init() })
    #expect(sgd.bytesPerParameter == 8)
    #expect(
      try Planner.plan(model, stages: 2, budgets: [2 * bytes, 2 * bytes], memory: sgd, wholeLayers: true).bounds
        == [0, 3, 5])
    // Under PipeDream-2BW a stage holds two versions of its weights and two steps' gradients.
    let overlapping = try StageMemory(
      train: .with {
        $0.optimizer.sgd = .init()
        $0.schedule = .schedulePipedream2Bw
      })
    #expect(overlapping.bytesPerParameter == 16)
    #expect(try StageMemory(plan: .with { $0.schedule = .schedulePipedream2Bw }).bytesPerParameter == 24)
    // A layer larger than any partition's room is named.
    let tooBig = #expect(throws: CoordinatorError.self) {
      try Planner.plan(model, stages: 2, budgets: [bytes / 2, bytes / 2])
    }
    #expect(tooBig?.message.contains("alone has \(layer)") == true, "\(String(describing: tooBig))")
    // Explicit split points are checked too.
    let split = #expect(throws: CoordinatorError.self) {
      try Planner.plan(model, stages: 2, splitPoints: [4], budgets: [3 * bytes, nil])
    }
    #expect(split?.rpcError.code == .resourceExhausted && split?.message.contains("stage 0") == true)
  }

  /// Where whole layers cannot balance the stages, a Dense layer is split
  /// after some of its inputs; where they nearly do, it is not.
  @Test func aLayerIsSplitWhereWholeLayersCannotBalance() throws {
    // Five equal layers in 2 stages: whole layers give 8 : 6 units of work, a
    // third of the way into layer 2 gives 7 : 7, the slowest 12.5 % faster.
    let five = try makeModel(try mlp(inputSize: 64, hidden: 4, classes: 64))
    let units = [2, 3, 3, 3, 3].map { LayerTiming(forward: .milliseconds($0), backward: .zero) }
    let halves = try Planner.plan(five, stages: 2, measured: units)
    #expect(halves.bounds.count == 3 && halves.bounds[1].layer == 2, "\(halves.bounds)")
    #expect((42...43).contains(halves.bounds[1].inputs), "\(halves.bounds)")
    #expect(halves.imbalance < 1.01)
    // Without measured times what a split adds is unknown, and the layers stay whole.
    #expect(try Planner.plan(five, stages: 2).bounds == [0, 3, 5])
    // Each stage holds the split layer's kernel rows of its inputs; the second its bias.
    let (layer, cut) = (64 * 64 + 64, halves.bounds[1].inputs)
    #expect(halves.parameters == [2 * layer + cut * 64, (64 - cut) * 64 + 64 + 2 * layer])
    // A model of one layer splits into as many stages as it has inputs (ridge regression).
    let ridge = try makeModel(
      .with {
        $0.inputShape = [8]
        $0.layers = [.with { $0.dense = .with { $0.units = 1 } }]
        $0.loss = .with { $0.meanSquaredError = .init() }
      })
    #expect(try Planner.plan(ridge, stages: 2).bounds == [0, LayerPosition(layer: 0, inputs: 4), 1])
    #expect(try Planner.plan(ridge, stages: 8).stages == 8)
    #expect(throws: CoordinatorError.self) { try Planner.plan(ridge, stages: 9) }
    #expect(throws: CoordinatorError.self) { try Planner.plan(ridge, stages: 2, wholeLayers: true) }
    // Within 10 % whole layers stay whole: four equal hidden layers after a
    // wider first one split 2 | 3 at an imbalance under 1.05.
    let wider = try makeModel(try mlp(inputSize: 96, hidden: 4))
    #expect(try Planner.plan(wider, stages: 2).bounds == [0, 2, 5])
    // A layer of over 4 Mi parameters stays whole unless a split point says otherwise (what
    // its split adds is not timed).
    let big = try makeModel(try mlp(inputSize: 16, width: 2100, hidden: 2, classes: 4))
    #expect(try Planner.plan(big, stages: 2).bounds == [0, 1, 3])
    let asked = try Planner.plan(big, stages: 2, splitPoints: [LayerPosition(layer: 1, inputs: 1050)])
    #expect(asked.parameters == [16 * 2100 + 2100 + 1050 * 2100, 1050 * 2100 + 2100 + 2100 * 4 + 4])
  }

  /// Measured times of a layer split between stages count by its share of
  /// the inputs, and the split goes where the times balance.
  @Test func measuredTimesSplitALayerByItsInputs() throws {
    let model = try makeModel(try mlp(inputSize: 64, hidden: 1, classes: 64))
    let milliseconds = [8, 4].map { LayerTiming(forward: .milliseconds($0 / 2), backward: .milliseconds($0 / 2)) }
    let plan = try Planner.plan(model, stages: 2, measured: milliseconds)
    #expect(plan.bounds == [0, LayerPosition(layer: 0, inputs: 48), 2], "\(plan.bounds)")
    #expect(plan.costs.map { ($0 * 1e6).rounded() } == [6000, 6000])
    #expect(plan.times?.map(\.forward) == [.milliseconds(3), .milliseconds(3)])
    // What a split adds, as measured, counts half on each side of it: 1 ms more keeps the place
    // where it balances (6.5 ms a stage), 3 ms more makes the split under 10 % faster than
    // whole layers (7.5 against 8), so the layers stay whole.
    func timings(splitAdding milliseconds: Int) -> [LayerTiming] {
      [8, 4].map {
        LayerTiming(
          forward: .milliseconds($0 / 2), backward: .milliseconds($0 / 2), splitForward: .milliseconds(milliseconds),
          splitBackward: .zero)
      }
    }
    let cheap = try Planner.plan(model, stages: 2, measured: timings(splitAdding: 1))
    #expect(cheap.bounds == [0, LayerPosition(layer: 0, inputs: 48), 2], "\(cheap.bounds)")
    #expect(cheap.costs.map { ($0 * 1e6).rounded() } == [6500, 6500])
    #expect(cheap.times?.map(\.forward) == [.microseconds(3500), .microseconds(3500)])
    #expect(try Planner.plan(model, stages: 2, measured: timings(splitAdding: 3)).bounds == [0, 1, 2])
  }

  /// An LSTM that takes nearly all of a model's time is split between stages
  /// at its time steps, each stage holding its weights whole; the stages
  /// share them, so clipping by the global norm is refused for such a plan.
  @Test func aRecurrentLayerIsSplitAtItsTimeSteps() throws {
    let model = try makeModel(
      .with {
        $0.inputShape = [8]
        $0.layers = [
          .with {
            $0.embedding = .with {
              $0.vocabularySize = 2
              $0.dimension = 8
            }
          },
          .with { $0.lstm = .with { $0.units = 32 } },
          .with { $0.dense = .with { $0.units = 2 } },
        ]
        $0.loss = .with { $0.softmaxCrossEntropy = .init() }
      })
    let times = [100, 8000, 100].map { LayerTiming(forward: .microseconds($0), backward: .zero) }
    let lstm = model.layers[1].parameterCount
    let halves = try Planner.plan(model, stages: 2, measured: times)
    #expect(halves.bounds == [0, LayerPosition(layer: 1, inputs: 4), 3], "\(halves.bounds)")
    #expect(halves.imbalance < 1.01)
    #expect(halves.parameters == [16 + lstm, lstm + 66])
    let shared = try #require(halves.variableSharedAcrossStages(of: model))
    #expect(shared.name.hasPrefix("lstm0/") && shared.stages == [0, 1])
    let thirds = try Planner.plan(model, stages: 3, measured: times)
    #expect(thirds.splitPoints.allSatisfy { $0.layer == 1 && $0.inputs > 0 }, "\(thirds.bounds)")
    #expect(thirds.imbalance <= 1.15, "\(thirds.costs)")
    // Where the stages could not add their gradients up before one update (async consistency,
    // a norm each stage clips), the LSTM stays whole.
    let apart = try Planner.plan(model, stages: 2, measured: times, splitsSharingWeights: false)
    #expect(apart.splitPoints.allSatisfy { $0.inputs == 0 }, "\(apart.bounds)")
    #expect(Planner.splitsSharingWeights(optimizer: .init(), consistency: .init()))
    #expect(!Planner.splitsSharingWeights(optimizer: .with { $0.clipGlobalNorm = 1 }, consistency: .init()))
    #expect(!Planner.splitsSharingWeights(optimizer: .init(), consistency: .with { $0.async = .init() }))
    // Given by hand, such a split is refused there.
    let refused = #expect(throws: CoordinatorError.self) {
      try Planner.plan(model, stages: 2, splitPoints: [LayerPosition(layer: 1, inputs: 4)], splitsSharingWeights: false)
    }
    #expect(
      refused?.message.contains("split point 1:4 splits lstm0 at a time step") == true, "\(String(describing: refused))"
    )
    // Kept to whole layers, the LSTM is one stage's work.
    #expect(try Planner.plan(model, stages: 2, measured: times, wholeLayers: true).imbalance > 1.9)
    #expect(
      try Planner.plan(model, stages: 2, measured: times, wholeLayers: true).variableSharedAcrossStages(of: model)
        == nil)
  }

  /// A Transformer block that takes nearly all of a model's time is split
  /// between its attention and its MLP, each stage holding its part's own
  /// variables (none shared, so a job may clip or run async).
  @Test func aTransformerBlockIsSplitBetweenItsAttentionAndItsMLP() throws {
    let model = try makeModel(PipelineTrainingTests.transformerLanguageModel(vocabulary: 10, seed: 17))
    let times = [100, 8000, 100].map { LayerTiming(forward: .microseconds($0), backward: .zero) }
    let plan = try Planner.plan(model, stages: 2, measured: times, splitsSharingWeights: false)
    #expect(plan.bounds == [0, LayerPosition(layer: 1, inputs: 1), 3], "\(plan.bounds)")
    // Each half costs its share of the block's FLOPs (6 positions of 8 features, an MLP of 16):
    // the attention 6·(2·8·24 + 2·8·8) + 4·36·8 = 4224, the MLP 6·4·8·16 = 3072.
    let attention = 4224.0 / (4224 + 3072)
    let expected = [100 + 8000 * attention, 8000 * (1 - attention) + 100].map { $0 * 1e-6 }
    #expect(zip(plan.costs, expected).allSatisfy { abs($0 - $1) < 1e-9 }, "\(plan.costs) against \(expected)")
    #expect(plan.variableSharedAcrossStages(of: model) == nil)
    #expect(plan.parameters.reduce(0, +) == model.layers.map(\.parameterCount).reduce(0, +))
  }

  /// Three stages of two Transformer blocks balance only inside a block's
  /// MLP: at whole layers or at the place between a block's attention and
  /// its MLP, some stage runs a whole block or more (8000 µs here).
  @Test func threeStagesOfTwoTransformerBlocksSplitInsideAnMLP() throws {
    var spec = PipelineTrainingTests.transformerLanguageModel(vocabulary: 10, seed: 17)
    spec.layers.insert(spec.layers[1], at: 2)
    let model = try makeModel(spec)
    let times = [100, 8000, 8000, 100].map { LayerTiming(forward: .microseconds($0), backward: .zero) }
    let plan = try Planner.plan(model, stages: 3, measured: times, splitsSharingWeights: false)
    // A block's attention costs 4224 / 7296 of it (see above), 4632 µs, its MLP 3368 µs over
    // 16 hidden units. The last stage can take at most block 2's MLP and the head (3468 µs);
    // the first two share the rest best after 8 of block 1's hidden units: 6416 / 6316 µs.
    #expect(
      plan.bounds == [0, LayerPosition(layer: 1, inputs: 9), LayerPosition(layer: 2, inputs: 1), 4], "\(plan.bounds)")
    let attention = 8000 * 4224.0 / 7296
    let expected = [
      100 + attention + (8000 - attention) / 2, (8000 - attention) / 2 + attention, 8000 - attention + 100,
    ]
    #expect(zip(plan.costs, expected).allSatisfy { abs($0 - $1 * 1e-6) < 1e-9 }, "\(plan.costs) against \(expected)")
    #expect(plan.parameters.reduce(0, +) == model.layers.map(\.parameterCount).reduce(0, +))
    #expect(plan.variableSharedAcrossStages(of: model) == nil)

    // Timed, the attention takes a quarter of each block (2000 µs; the MLP 375 µs a hidden
    // unit): the best split moves to 1:10 and 2:3, stages of 5475 / 5375 / 5350 µs.
    let timed = times.enumerated().map { layer, time in
      LayerTiming(forward: time.forward, backward: .zero, firstPartShare: [1, 2].contains(layer) ? 0.25 : nil)
    }
    let measured = try Planner.plan(model, stages: 3, measured: timed, splitsSharingWeights: false)
    #expect(
      measured.bounds == [0, LayerPosition(layer: 1, inputs: 10), LayerPosition(layer: 2, inputs: 3), 4],
      "\(measured.bounds)")
    #expect(zip(measured.costs, [5475.0, 5375, 5350]).allSatisfy { abs($0 - $1 * 1e-6) < 1e-9 }, "\(measured.costs)")
    // The FLOPs of each stage stay the FLOP shares, whatever the times weigh.
    #expect(
      try Planner.plan(model, stages: 3, splitPoints: Array(measured.bounds.dropFirst().dropLast())).flops
        == measured.flops)

    // What a split adds (200 µs here, half to each stage it ends) counts inside the MLP but not
    // between the attention and the MLP, which hand the residual stream on as it is.
    let splitting = times.enumerated().map { layer, time in
      LayerTiming(
        forward: time.forward, backward: .zero, splitForward: .microseconds([1, 2].contains(layer) ? 200 : 0))
    }
    let split = try Planner.plan(model, stages: 3, measured: splitting, splitsSharingWeights: false)
    #expect(split.bounds == plan.bounds, "\(split.bounds)")
    #expect(zip(split.costs, plan.costs).map { ($0 - $1) * 1e6 }.map { ($0 * 1e3).rounded() / 1e3 } == [100, 100, 0])
  }

  /// A stage that runs a tied layer holds the table it reads, as its
  /// partition counts it, unless it runs the table's owner too.
  @Test func aStageReadingATiedTableHoldsIt() throws {
    let model = try makeModel(GradientClippingTests.tiedModel)
    for plan in [try Planner.plan(model, stages: 2, splitPoints: [2]), try Planner.plan(model, stages: 1)] {
      for stage in 0..<plan.stages {
        let cut = try model.stage(from: plan.bounds[stage], to: plan.bounds[stage + 1])
        #expect(plan.parameters[stage] == cut.model.heldParameters(layers: cut.layers), "\(plan.bounds) stage \(stage)")
      }
    }
    // The table (80) and the head's bias (10) on the second stage; on one stage, the table once.
    #expect(try Planner.plan(model, stages: 2, splitPoints: [2]).parameters == [80 + 72, 80 + 10])
    #expect(try Planner.plan(model, stages: 1).parameters == [80 + 72 + 10])
  }

  /// A place inside a layer stays only where it makes the plan faster: for
  /// layers of seeded random measured times, and what splitting each adds,
  /// moving any of a plan's places inside a layer to the layer's edge would
  /// make its slowest stage slower.
  @Test func noPlaceInsideALayerIsNeedless() throws {
    let model = try makeModel(try mlp(inputSize: 64, hidden: 5, classes: 64))
    var cut = 0
    for trial in 0..<200 {
      func microseconds(_ counter: Int, _ range: ClosedRange<Int>) -> Duration {
        .microseconds(
          range.lowerBound
            + Int(PortableRandom.bits(seed: UInt64(trial), counter: UInt64(counter)) % UInt64(range.count)))
      }
      let times = (0..<6).map {
        LayerTiming(forward: microseconds($0, 100...1000), backward: .zero, splitForward: microseconds(6 + $0, 0...50))
      }
      let plan = try Planner.plan(model, stages: 3, measured: times)
      let slowest = try #require(plan.costs.max())
      for (index, place) in plan.bounds.enumerated() where place.inputs > 0 {
        cut += 1
        for edge in [LayerPosition(layer: place.layer), LayerPosition(layer: place.layer + 1)]
        where plan.bounds[index - 1] < edge && edge < plan.bounds[index + 1] {
          var moved = Array(plan.splitPoints)
          moved[index - 1] = edge
          let slower = try Planner.plan(model, stages: 3, splitPoints: moved, measured: times).costs.max() ?? 0
          #expect(
            slower > slowest,
            "trial \(trial) \(times): \(plan.bounds): \(place) could be \(edge) (\(slower) against \(slowest))"
          )
        }
      }
    }
    #expect(cut > 0, "no plan split a layer")
  }

  /// A stage count below 1, or far past what the model can be split into,
  /// is refused before anything is allocated for it.
  @Test func impossibleStageCountsAreRefused() throws {
    let model = try makeModel(try mlp(inputSize: 64, hidden: 1))
    for stages in [0, -1, Int(Int32.max)] {
      let refused = #expect(throws: CoordinatorError.self) { try Planner.plan(model, stages: stages) }
      #expect(refused?.rpcError.code == .invalidArgument, "\(stages)")
    }
    #expect(throws: CoordinatorError.self) { try Planner.plan(model, stages: 3, splitPoints: [1]) }
  }
}
