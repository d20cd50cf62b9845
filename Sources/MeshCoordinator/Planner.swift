import MeshPSClient
import MeshPipeline
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// Splits a model into K contiguous stages: at whole layers where they
/// balance, and inside a Dense, Conv2D, LSTM, GRU or Transformer layer (after some of its
/// inputs: features, channels, time steps) where they do not.
public enum Planner {
  /// Stage boundaries: stage s runs from `bounds[s]` to `bounds[s+1]`.
  public struct Plan: Sendable, Equatable {
    public let bounds: [LayerPosition]
    /// What the split balanced, per stage: measured seconds of a
    /// micro-batch's forward and backward when `times` are known, else
    /// estimated training FLOPs per example.
    public let costs: [Double]
    /// Estimated training FLOPs (forward and backward) per example of each stage.
    public let flops: [Double]
    /// Measured on a partition, per stage: a micro-batch's forward and backward.
    public let times: [LayerTiming]?
    /// The parameters each stage holds: of a layer split between stages,
    /// the rows of its weight the stage's inputs meet (and the bias, in the
    /// last part).
    public let parameters: [Int]
    /// The memory budget of the partitions each stage would run on, when known.
    public let budgets: [Int?]
    /// The rule the stages' memory was planned with.
    public let memory: StageMemory

    public var stages: Int { bounds.count - 1 }
    /// The split points: where stages 1…K-1 begin.
    public var splitPoints: ArraySlice<LayerPosition> { bounds.dropFirst().dropLast() }
    /// The plan as the Plan RPC answers it.
    public var response: Pipemesh_V1_PlanResponse {
      .with { response in
        response.imbalance = imbalance
        response.stages = (0..<stages).map { stage in
          .with {
            $0.stage = Int32(stage)
            $0.firstLayer = Int32(bounds[stage].layer)
            $0.firstLayerInputs = Int32(bounds[stage].inputs)
            $0.endLayer = Int32(bounds[stage + 1].layer)
            $0.endLayerInputs = Int32(bounds[stage + 1].inputs)
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

    /// A variable that layers on two stages or more use (a tied layer's table
    /// held on another stage, a recurrent layer split at a time step), and
    /// those stages; nil when there is none.
    public func variableSharedAcrossStages(of model: Sequential) -> (name: String, stages: [Int])? {
      var users: [String: Set<Int>] = [:]
      for stage in 0..<stages {
        // The stage's layers as it runs them: a piece of a split layer holds its own part of a
        // summing layer's weight, but all of a recurrent layer's weights.
        guard let cut = try? model.stage(from: bounds[stage], to: bounds[stage + 1]) else { continue }
        for declaration in cut.model.variableDeclarations(layers: cut.layers) {
          users[declaration.name, default: []].insert(stage)
        }
      }
      return users.filter { $0.value.count > 1 }.min { $0.key < $1.key }.map { ($0.key, $0.value.sorted()) }
    }

    /// With measured times, a step of `microBatches` micro-batches run by
    /// `schedule`, simulated on the stages' times (each backward split
    /// evenly into input and weight gradients): without transfers or
    /// commits, or as `calibrated` (a job's trace) says the stages ran, for
    /// micro-batches of its `rows` rows (a backward's fixed part before its
    /// input gradient, and again in a split backward's W). A schedule whose steps overlap runs a
    /// steady step in its busiest stage's compute: the next step's work
    /// fills the idle time, and its commit overlaps the next step's.
    public func predictedStepSeconds(
      microBatches: Int, schedule: ScheduleKind, calibrated: (calibration: StepCalibration, rows: Int)? = nil
    ) -> Double? {
      guard let times, microBatches > 0 else { return nil }
      var costs = times.map { StageCosts(forward: $0.forward.seconds, backward: $0.backward.seconds) }
      var link = LinkModel.instant
      if let calibrated, let calibratedCosts = calibrated.calibration.costs(of: times, bounds: bounds) {
        costs = calibratedCosts
        link = calibrated.calibration.link(rows: calibrated.rows)
      }
      guard
        let step = try? PipelineSchedule(kind: schedule, stages: stages, microBatches: microBatches)
          .simulate(costs: costs, link: link, activationBytes: Array(repeating: 0, count: stages))
      else { return nil }
      return schedule.overlapsSteps ? step.busy.max() : step.seconds
    }

    /// With measured times, the step a PlanRequest asks about (its
    /// micro-batches, 4 when unset, and schedule, 1F1B when unset).
    public func predictedStepSeconds(
      for request: Pipemesh_V1_PlanRequest, calibrated: (calibration: StepCalibration, rows: Int)? = nil
    ) -> Double? {
      if case .UNRECOGNIZED = request.schedule { return nil }
      return predictedStepSeconds(
        microBatches: request.microBatches == 0 ? 4 : Int(request.microBatches),
        schedule: TrainingJob.scheduleKind(request.schedule), calibrated: calibrated)
    }

    /// Largest stage cost over the mean: 1 is a perfect balance.
    public var imbalance: Double {
      let mean = costs.reduce(0, +) / Double(costs.count)
      return mean == 0 ? 1 : (costs.max() ?? 0) / mean
    }
  }

  /// A split inside a layer must make the slowest stage at least this much
  /// faster than the best split at whole layers: the next stage also
  /// receives the layer's inputs not yet taken beside the sums, and the
  /// sums add in another order.
  static let cutGain = 0.10

  /// The most places inside layers the planner weighs, over all layers, so
  /// that planning a deep model stays quick (the balancing is quadratic in
  /// the places and linear in the stages).
  static let cutCandidates = 256

  /// The split that minimises the most expensive stage (by the estimated
  /// FLOPs of a training step's forward and backward, so that the first
  /// layer, which needs no input gradient, weighs less; layers without
  /// compute count a little, so that each stage gets one), or the given split
  /// points (where stages 1…K-1 begin). Unless `wholeLayers`, a stage
  /// boundary falls inside a Dense, Conv2D, LSTM, GRU or Transformer layer, after some of its
  /// inputs, where whole layers are too few, and, with measured times, where
  /// that balances the stages markedly better (`cutGain`): a part of a layer
  /// costs its share of the layer's time and half of what splitting it adds
  /// (`LayerTiming.splitTotal`), which the FLOP estimate does not know.
  /// Unless `splitsSharingWeights`, it falls inside no layer whose pieces
  /// share its weights (a recurrent layer): their stages' gradients add up
  /// only under sync consistency, and not in a norm each stage clips.
  ///
  /// With `budgets` (bytes, one per stage, nil where unknown), a stage may
  /// hold only the parameters its partitions admit by `memory`: the plan is
  /// the fastest split that fits, and RESOURCE_EXHAUSTED says what would fit
  /// when none does. With `measured` (one per layer, as a partition timed
  /// them), the split balances those times instead of the FLOP estimate.
  public static func plan(
    _ model: Sequential, stages: Int, splitPoints: [LayerPosition] = [], budgets: [Int?] = [],
    memory: StageMemory = .mostSlots, measured: [LayerTiming]? = nil, wholeLayers: Bool = false,
    splitsSharingWeights: Bool = true
  ) throws -> Plan {
    precondition(measured == nil || measured?.count == model.layers.count, "one time per layer")
    let flops = model.trainingFlopsPerLayer.map { Double(max($0, 1)) }
    // A layer that takes no measurable time still counts a little, so that each stage gets one.
    let costs = measured.map { $0.map { max($0.total.seconds, 1e-9) } } ?? flops
    // What a split adds to a layer's work, where it was measured.
    let splitCosts = measured.map { $0.map(\.splitTotal.seconds) } ?? []
    let parameters = model.layerCosts.map(\.parameterCount)
    let layers = Layers(
      model: model, costs: costs, splitCosts: splitCosts, firstPartShares: measured?.map(\.firstPartShare) ?? [],
      parameters: parameters, splitsSharingWeights: splitsSharingWeights)
    // Without measured times what a split adds is unknown: layers are split only when too few.
    let cutPlaces =
      wholeLayers || !splitPoints.isEmpty || (measured == nil && stages <= model.layers.count) ? [] : layers.cutPlaces
    guard stages >= 1, splitPoints.isEmpty ? stages <= model.layers.count + cutPlaces.count : true else {
      throw CoordinatorError(
        .invalidRequest,
        stages < 1
          ? "stages is \(stages); a plan has 1 or more"
          : "cannot split \(model.layers.count) layers into \(stages) stages: "
            + (wholeLayers
              ? "whole_layers keeps each layer whole"
              : "too few layers, and too few inputs in its Dense, Conv2D, LSTM, GRU and Transformer layers"
                + (splitsSharingWeights || !model.layers.indices.contains(where: model.piecesShareWeights(ofLayer:))
                  ? "" : " (an LSTM or GRU is split at a time step only for a sync job without clip_global_norm)"))
      )
    }
    guard splitPoints.isEmpty || splitPoints.count == stages - 1 else {
      throw CoordinatorError(
        .invalidRequest,
        "split_points lists \(splitPoints.count) places for \(stages) stages; give \(stages - 1)")
    }
    let budgets = budgets.isEmpty ? [Int?](repeating: nil, count: stages) : budgets
    precondition(budgets.count == stages, "one budget (or nil) per stage")
    let room = budgets.map { $0.map(memory.room(within:)) }
    let bounds: [LayerPosition]
    if !splitPoints.isEmpty {
      bounds = [layers.start] + splitPoints + [layers.end]
      guard zip(bounds, bounds.dropFirst()).allSatisfy({ $0 < $1 }), splitPoints.allSatisfy({ layers.isPlace($0) })
      else {
        throw CoordinatorError(
          .invalidRequest,
          "split_points and split_point_inputs \(splitPoints) must be increasing places inside the model: a layer "
            + "index in 1..<\(model.layers.count), or LAYER:INPUTS inside a Dense, Conv2D, LSTM, GRU or Transformer layer with more than INPUTS "
            + "inputs")
      }
      if !splitsSharingWeights,
        let place = splitPoints.first(where: { $0.inputs > 0 && model.piecesShareWeights(ofLayer: $0.layer) })
      {
        throw CoordinatorError(
          .invalidRequest,
          "split point \(place) splits \(model.layers[place.layer].name) at a time step, so its stages share its "
            + "weights and their gradients add up only on the ps, before one update: that takes sync consistency "
            + "reduced by the ps and no optimizer.clip_global_norm. Give both, or split points outside the layer")
      }
      for stage in 0..<stages {
        let held = layers.held(from: bounds[stage], to: bounds[stage + 1])
        if let room = room[stage], held > room {
          throw CoordinatorError(
            .overCapacity,
            "stage \(stage) of split points \(splitPoints) has \(held) parameters; its partitions have room for "
              + "\(room) (--memory-budget-mib, \(memory.bytesPerParameter) bytes a parameter): "
              + memory.advice(layers: parameters, room: room))
        }
      }
    } else {
      let whole = balanced(layers, over: layers.wholeLayerPlaces, stages: stages, room: room)
      let cut =
        cutPlaces.isEmpty
        ? nil : balanced(layers, over: (layers.wholeLayerPlaces + cutPlaces).sorted(), stages: stages, room: room)
      switch (whole, cut) {
      case (let whole?, let cut?):
        bounds =
          cut.slowest < whole.slowest * (1 - cutGain)
          ? layers.withoutNeedlessCuts(cut.bounds, room: room) : whole.bounds
      case (let fitting?, nil), (nil, let fitting?): bounds = layers.withoutNeedlessCuts(fitting.bounds, room: room)
      case (nil, nil): throw refusal(parameters: parameters, room: room, memory: memory)
      }
    }
    let spans = zip(bounds, bounds.dropFirst()).map { (from: $0, to: $1) }
    return Plan(
      bounds: bounds, costs: spans.map { layers.cost(from: $0.from, to: $0.to) },
      flops: spans.map { layers.sum(flops, from: $0.from, to: $0.to, weighingByTime: false) },
      times: measured.map { times in
        spans.map { span in
          LayerTiming(
            forward: .seconds(
              layers.sum(
                times.map(\.forward.seconds), splitAdding: times.map(\.splitForward.seconds), from: span.from,
                to: span.to)),
            backward: .seconds(
              layers.sum(
                times.map(\.backward.seconds), splitAdding: times.map(\.splitBackward.seconds), from: span.from,
                to: span.to)))
        }
      },
      parameters: spans.map { layers.held(from: $0.from, to: $0.to) }, budgets: budgets, memory: memory)
  }

  /// A model's layers as the planner sees them: a cost and parameters each,
  /// what splitting each between two stages adds to its cost, and the
  /// places a stage may begin.
  struct Layers {
    let costs: [Double]
    /// Per layer, what its two parts cost beyond the whole when it is split
    /// between two stages; empty when not measured (the FLOP estimate).
    let splitCosts: [Double]
    /// Per layer, the measured share of its part before its measured place
    /// (`LayerTiming.firstPartShare`); empty when not measured.
    let firstPartShares: [Double?]
    let parameters: [Int]
    /// Each layer's input count where a stage may begin inside it, else nil.
    let splittable: [Int?]
    /// The model, for what a piece of a layer holds (`Sequential.heldParameters(byPieceOf:taking:)`).
    private let model: Sequential
    /// `heldBefore[i]`: the parameters of the layers before layer i.
    private let heldBefore: [Int]
    /// Per layer, the variables it reads that another layer owns (a tied
    /// layer's table): a stage holds them too unless it runs their owner.
    private let borrowed: [[(name: String, scalars: Int, owner: Int)]]
    private let anyBorrowed: Bool
    /// Whether a place may fall inside a layer whose pieces share its weights.
    private let splitsSharingWeights: Bool

    init(
      model: Sequential, costs: [Double], splitCosts: [Double], firstPartShares: [Double?], parameters: [Int],
      splitsSharingWeights: Bool
    ) {
      self.costs = costs
      self.splitCosts = splitCosts
      self.firstPartShares = firstPartShares
      self.parameters = parameters
      splittable = model.layers.indices.map(model.splittableInputs(ofLayer:))
      self.model = model
      heldBefore = parameters.reduce(into: [0]) { $0.append($0.last! + $1) }
      var owners: [String: Int] = [:]
      for (index, layer) in model.layers.enumerated() {
        for declaration in layer.variableDeclarations where owners[declaration.name] == nil {
          owners[declaration.name] = index
        }
      }
      borrowed = model.layers.map { layer in
        layer.sharedVariables.compactMap { shared in owners[shared.name].map { (shared.name, shared.scalarCount, $0) } }
      }
      anyBorrowed = borrowed.contains { !$0.isEmpty }
      self.splitsSharingWeights = splitsSharingWeights
    }

    var start: LayerPosition { LayerPosition(layer: 0) }
    var end: LayerPosition { LayerPosition(layer: costs.count) }
    var wholeLayerPlaces: [LayerPosition] { (0...costs.count).map { LayerPosition(layer: $0) } }

    /// Places inside layers, spread over the inputs of the splittable layers
    /// of at most `Sequential.largestSplitParameters`
    /// (`Sequential.places(inLayer:pieces:)`), about `cutCandidates` in all:
    /// the costliest layers first when there are more such layers than that.
    var cutPlaces: [LayerPosition] {
      let candidates = splittable.indices.filter {
        splittable[$0] != nil && parameters[$0] <= Sequential.largestSplitParameters
          && (splitsSharingWeights || !model.piecesShareWeights(ofLayer: $0))
      }
      .sorted { costs[$0] > costs[$1] }.prefix(Planner.cutCandidates)
      guard !candidates.isEmpty else { return [] }
      let perLayer = max(2, Planner.cutCandidates / candidates.count)
      return candidates.flatMap { layer in
        model.places(inLayer: layer, pieces: perLayer).map { LayerPosition(layer: layer, inputs: $0) }
      }.sorted()
    }

    /// `bounds` with each place inside a layer moved to a whole layer's
    /// edge where that leaves the slowest stage no slower and every stage
    /// within its room: a split inside a layer that does not make the
    /// plan faster only costs.
    func withoutNeedlessCuts(_ bounds: [LayerPosition], room: [Int?]) -> [LayerPosition] {
      var bounds = bounds
      func slowest(_ bounds: [LayerPosition]) -> Double {
        zip(bounds, bounds.dropFirst()).map { cost(from: $0, to: $1) }.max() ?? 0
      }
      func fits(_ bounds: [LayerPosition]) -> Bool {
        zip(bounds, bounds.dropFirst()).enumerated().allSatisfy { stage, span in
          stage >= room.count || room[stage].map { held(from: span.0, to: span.1) <= $0 } ?? true
        }
      }
      for index in bounds.indices.dropFirst().dropLast() where bounds[index].inputs > 0 {
        let limit = slowest(bounds)
        for edge in [LayerPosition(layer: bounds[index].layer), LayerPosition(layer: bounds[index].layer + 1)] {
          var moved = bounds
          moved[index] = edge
          if bounds[index - 1] < edge, edge < bounds[index + 1], slowest(moved) <= limit, fits(moved) {
            bounds = moved
            break
          }
        }
      }
      return bounds
    }

    /// Whether a stage may begin at `position`, strictly inside the model.
    func isPlace(_ position: LayerPosition) -> Bool {
      guard position.inputs != 0 else { return position.layer > 0 && position.layer < costs.count }
      guard position.layer >= 0, position.layer < costs.count, let inputs = splittable[position.layer] else {
        return false
      }
      return position.inputs > 0 && position.inputs < inputs
    }

    /// `values` (one per layer) summed from one place to another, a part of
    /// a layer counting its share of the layer's work (`Sequential.workShare`: by the timed
    /// share of a Transformer block's attention where `weighingByTime` and it was timed, by
    /// FLOPs otherwise) and, for each end inside a layer, half of what splitting it adds
    /// (`splitAdding`, one per layer, or none).
    func sum(
      _ values: [Double], splitAdding split: [Double] = [], from start: LayerPosition, to end: LayerPosition,
      weighingByTime: Bool = true
    ) -> Double {
      func before(_ position: LayerPosition) -> Double {
        let whole = values[..<position.layer].reduce(0, +)
        guard position.inputs > 0, splittable[position.layer] != nil else { return whole }
        let measured =
          weighingByTime && position.layer < firstPartShares.count ? firstPartShares[position.layer] : nil
        return whole
          + values[position.layer]
          * model.workShare(ofLayer: position.layer, firstInputs: position.inputs, measuredShare: measured)
      }
      return before(end) - before(start) + halfOfSplit(split, at: start) + halfOfSplit(split, at: end)
    }

    /// What a stage from `start` to `end` costs: its share of the layers'
    /// costs, and half a split's cost for each end inside a layer.
    func cost(from start: LayerPosition, to end: LayerPosition) -> Double {
      sum(costs, splitAdding: splitCosts, from: start, to: end)
    }

    /// Half of what splitting the layer `position` falls inside adds; 0 at a
    /// layer's edge, at a place that adds nothing (between a Transformer
    /// block's attention and MLP) or where nothing was measured.
    func halfOfSplit(_ split: [Double], at position: LayerPosition) -> Double {
      position.inputs > 0 && position.layer < split.count
        && model.splitAddsWork(ofLayer: position.layer, at: position.inputs) ? split[position.layer] / 2 : 0
    }

    /// Parameters a stage from `start` to `end` holds, as its partition
    /// counts them (`Sequential.heldParameters(layers:)`): its whole layers,
    /// its part of a layer it runs a piece of, and the variables it reads
    /// that a layer on another stage owns.
    func held(from start: LayerPosition, to end: LayerPosition) -> Int {
      var total: Int
      if start.layer == end.layer {
        total = part(of: start.layer, inputs: start.inputs..<end.inputs)
      } else {
        total = heldBefore[end.layer] - heldBefore[start.inputs > 0 ? start.layer + 1 : start.layer]
        if start.inputs > 0 { total += part(of: start.layer, inputs: start.inputs..<splittable[start.layer]!) }
        if end.inputs > 0 { total += part(of: end.layer, inputs: 0..<end.inputs) }
      }
      guard anyBorrowed else { return total }
      let run = start.layer...(end.inputs > 0 ? end.layer : end.layer - 1)
      var counted = Set<String>()
      for layer in run {
        for variable in borrowed[layer] where !run.contains(variable.owner) && counted.insert(variable.name).inserted {
          total += variable.scalars
        }
      }
      return total
    }

    /// The parameters a piece of `layer` taking `inputs` holds.
    private func part(of layer: Int, inputs: Range<Int>) -> Int {
      model.heldParameters(byPieceOf: layer, taking: inputs)
    }
  }
  /// Why no split fits the partitions' memory, and what would.
  private static func refusal(parameters: [Int], room: [Int?], memory: StageMemory) -> CoordinatorError {
    CoordinatorError(
      .overCapacity,
      "the model's \(parameters.reduce(0, +)) parameters do not fit \(room.count) stages: their partitions have room "
        + "for \(room.map { $0.map(String.init) ?? "any number of" }.joined(separator: ", ")) parameters "
        + "(--memory-budget-mib, \(memory.bytesPerParameter) bytes a parameter): "
        + memory.advice(layers: parameters, room: room.compactMap { $0 }.min() ?? 0))
  }

  /// Whether a job of `optimizer` and `consistency` may be split inside a
  /// layer whose stages would share its weights: only under sync
  /// consistency, whose ps adds the stages' gradients up before one update
  /// (async would apply each stage's share as an update of its own), not
  /// reduced by ring (whose replicas each apply their own stage's share),
  /// and without clipping by the global norm, which each stage takes of its
  /// own gradients.
  public static func splitsSharingWeights(optimizer: Pipemesh_V1_OptimizerSpec, consistency: Pipemesh_V1_Consistency)
    -> Bool
  {
    guard let rule = try? JobConsistency(consistency) else { return false }
    return optimizer.clipGlobalNorm == 0 && rule.mode == .sync && rule.reduction == .parameterServer
  }

  /// Dynamic programming over `places` (sorted, from the model's start to
  /// its end): best[k][i] is the smallest possible largest stage when the
  /// model up to places[i] forms k stages, each within its room; nil when no
  /// split fits.
  static func balanced(_ layers: Layers, over places: [LayerPosition], stages: Int, room: [Int?] = [])
    -> (bounds: [LayerPosition], slowest: Double)?
  {
    let count = places.count - 1
    guard stages <= count else { return nil }
    let before = places.map { layers.sum(layers.costs, from: layers.start, to: $0) }
    let half = places.map { layers.halfOfSplit(layers.splitCosts, at: $0) }
    func fits(_ stage: Int, _ from: Int, _ to: Int) -> Bool {
      guard stage < room.count, let room = room[stage] else { return true }
      return layers.held(from: places[from], to: places[to]) <= room
    }
    var best = Array(repeating: Array(repeating: Double.infinity, count: count + 1), count: stages + 1)
    var cut = Array(repeating: Array(repeating: 0, count: count + 1), count: stages + 1)
    best[0][0] = 0
    for k in 1...stages {
      for i in k...count {
        for j in (k - 1)..<i where best[k - 1][j] < .infinity && fits(k - 1, j, i) {
          let worst = max(best[k - 1][j], before[i] - before[j] + half[i] + half[j])
          if worst < best[k][i] {
            best[k][i] = worst
            cut[k][i] = j
          }
        }
      }
    }
    guard best[stages][count] < .infinity else { return nil }
    var bounds = [places[count]]
    var i = count
    for k in stride(from: stages, to: 0, by: -1) {
      i = cut[k][i]
      bounds.insert(places[i], at: 0)
    }
    return (bounds, best[stages][count])
  }
}
