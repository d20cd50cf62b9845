/// The pipeline schedules Pipemesh runs.
public enum ScheduleKind: String, Sendable, CaseIterable {
  /// All forwards, then all backwards (GPipe): simple, keeps every
  /// micro-batch's activations until its backward.
  case gpipe
  /// One forward, one backward in the steady state (PipeDream-flush 1F1B):
  /// the same bubble, stage s keeps at most K − s micro-batches in flight.
  case oneFOneB
  /// 1F1B with each backward split in two (zero bubble, ZB-H1): stage s
  /// computes a micro-batch's weight gradients s micro-batches after its
  /// input gradient, so the last stages fill the time they would wait at the
  /// end of the step with weight gradients. At most K micro-batches in flight
  /// on any stage (1F1B's most, on stage 0), a third of 1F1B's bubble when
  /// forward, input and weight gradients take equal time.
  case zeroBubbleH1
  /// PipeDream-2BW: 1F1B's lists, with no flush between steps. A step
  /// begins while the one before still runs, on the weights from before
  /// that one's update (weight double-buffering, staleness 1), so a stage's
  /// idle time at a step's end is filled with the next step's forwards. The
  /// pipeline still drains where every stage must hold the same step (an
  /// epoch's end, a checkpoint).
  case pipeDream2BW

  /// Whether a step may begin before the one before it ends (its
  /// micro-batches then use the weights from before that one's update).
  public var overlapsSteps: Bool { self == .pipeDream2BW }

  /// How many calls a micro-batch's backward takes on a stage: two where
  /// the schedule splits every backward into its input gradient and a `W`.
  public var callsPerBackward: Int { self == .zeroBubbleH1 ? 2 : 1 }
}

/// A schedule as data: the ordered actions of every stage for one step of
/// `microBatches` micro-batches over `stages` stages. The runtime executes
/// these lists; the tests check them without any network.
///
/// The stages run on `devices` processes, stage s on device s mod
/// `devices`: one stage each, except in an interleaved schedule (virtual
/// stages), which the simulator runs but the mesh does not yet.
public struct PipelineSchedule: Sendable, Equatable, CustomStringConvertible {
  public let kind: ScheduleKind
  public let stages: Int
  public let microBatches: Int
  /// The processes the stages run on.
  public let devices: Int
  /// `actions[d]` is device d's list, in the order it runs them (stage d's
  /// list where each device runs one stage).
  public let actions: [[PipelineAction]]
  /// The weights actions of every stage: each marks its backward as split.
  private let weightsActions: Set<PipelineAction>

  public init(kind: ScheduleKind, stages: Int, microBatches: Int) {
    precondition(stages > 0 && microBatches > 0, "a schedule needs stages and micro-batches")
    self.kind = kind
    self.stages = stages
    self.microBatches = microBatches
    devices = stages
    let actions: [[PipelineAction]] = (0..<stages).map { stage in
      switch kind {
      case .gpipe:
        return (0..<microBatches).map { .forward(stage, $0) } + (0..<microBatches).map { .backward(stage, $0) }
      case .oneFOneB, .pipeDream2BW:
        let warmUp = min(stages - 1 - stage, microBatches)
        var list = (0..<warmUp).map { PipelineAction.forward(stage, $0) }
        for index in 0..<(microBatches - warmUp) {
          list += [.forward(stage, warmUp + index), .backward(stage, index)]
        }
        list += ((microBatches - warmUp)..<microBatches).map { .backward(stage, $0) }
        return list
      case .zeroBubbleH1:
        return Self.zeroBubbleH1(stage: stage, stages: stages, microBatches: microBatches)
      }
    }
    self.actions = actions
    weightsActions = Self.weightsActions(of: actions)
  }

  private static func weightsActions(of actions: [[PipelineAction]]) -> Set<PipelineAction> {
    Set(actions.joined().filter { $0.kind == .weights })
  }

  /// Stage `stage`'s ZB-H1 list: 1F1B's forwards and backwards, each
  /// backward followed by the weights of the micro-batch `stage` backwards
  /// earlier, and the weights still held at the end.
  private static func zeroBubbleH1(stage: Int, stages: Int, microBatches: Int) -> [PipelineAction] {
    let warmUp = min(stages - 1 - stage, microBatches)
    var list = (0..<warmUp).map { PipelineAction.forward(stage, $0) }
    var nextForward = warmUp
    var held: [Int] = []
    for microBatch in 0..<microBatches {
      if nextForward < microBatches {
        list.append(.forward(stage, nextForward))
        nextForward += 1
      }
      list.append(.backward(stage, microBatch))
      held.append(microBatch)
      if held.count > stage { list.append(.weights(stage, held.removeFirst())) }
    }
    return list + held.map { .weights(stage, $0) }
  }

  /// Whether micro-batch `microBatch`'s backward on `stage` is split (the
  /// stage's list has a `W` for it): it then computes the input gradient
  /// only, and the `W` the weight gradients.
  public func splitsBackward(stage: Int, microBatch: Int) -> Bool {
    weightsActions.contains(.weights(stage, microBatch))
  }

  /// How many ticks an action takes on the unit clock: a forward, a split
  /// backward and a weights action one each, an unsplit backward two (input
  /// and weight gradients).
  public func ticks(of action: PipelineAction) -> Int {
    action.kind == .backward && !splitsBackward(stage: action.stage, microBatch: action.microBatch) ? 2 : 1
  }

  /// Builds a schedule from explicit lists (for checking hand-written ones):
  /// one per device, stage s on device s mod `devices`.
  public init(kind: ScheduleKind, stages: Int, microBatches: Int, devices: Int? = nil, actions: [[PipelineAction]]) {
    self.kind = kind
    self.stages = stages
    self.microBatches = microBatches
    self.devices = devices ?? stages
    self.actions = actions
    weightsActions = Self.weightsActions(of: actions)
  }

  /// Interleaved 1F1B (Megatron-LM's virtual stages): the model cut into
  /// `devices` × `chunks` stages, device d running stages d, d + devices, …
  /// Each device runs 1F1B over its chunks, `devices` micro-batches of one
  /// chunk before it moves to the next, so the pipeline fills and drains
  /// through stages `chunks` times shorter: the bubble shrinks by that
  /// factor, for `chunks` times the transfers. `microBatches` must be a
  /// multiple of `devices`.
  public init(interleavedOn devices: Int, chunks: Int, microBatches: Int) {
    precondition(devices > 0 && chunks > 0 && microBatches > 0, "a schedule needs devices, chunks and micro-batches")
    precondition(microBatches % devices == 0, "interleaving takes micro-batches in groups of the devices")
    kind = .oneFOneB
    stages = devices * chunks
    self.microBatches = microBatches
    self.devices = devices
    let total = microBatches * chunks
    actions = (0..<devices).map { device in
      // The k-th forward (backward) of a device: group k / (devices × chunks) of micro-batches,
      // chunk (k / devices) mod chunks (counted from the last for backwards).
      func action(_ k: Int, _ kind: PipelineAction.Kind) -> PipelineAction {
        let chunk = (k / devices) % chunks
        let microBatch = k / (devices * chunks) * devices + k % devices
        let stage = (kind == .forward ? chunk : chunks - 1 - chunk) * devices + device
        return PipelineAction(stage: stage, kind: kind, microBatch: microBatch)
      }
      let warmUp = min((devices - device - 1) * 2 + (chunks - 1) * devices, total)
      var list = (0..<warmUp).map { action($0, .forward) }
      for index in 0..<(total - warmUp) {
        list += [action(warmUp + index, .forward), action(index, .backward)]
      }
      return list + ((total - warmUp)..<total).map { action($0, .backward) }
    }
    weightsActions = []
  }

  /// The device stage `stage` runs on.
  public func device(of stage: Int) -> Int { stage % devices }

  /// The most micro-batches each device holds at once (forwards done whose
  /// weight gradients are not, over all its stages): the activation memory
  /// it needs.
  public var peakInFlight: [Int] {
    actions.map { list in
      var held = 0
      var peak = 0
      for action in list {
        switch action.kind {
        case .forward: held += 1
        case .backward: if !splitsBackward(stage: action.stage, microBatch: action.microBatch) { held -= 1 }
        case .weights: held -= 1
        }
        peak = max(peak, held)
      }
      return peak
    }
  }

  public var description: String {
    actions.enumerated().map { "\(rowName) \($0): " + $1.map(\.description).joined(separator: " ") }.joined(
      separator: "\n")
  }

  /// What a row of `actions` is called: a stage, or a device running several.
  var rowName: String {
    devices == stages ? "stage" : "device"
  }
}
