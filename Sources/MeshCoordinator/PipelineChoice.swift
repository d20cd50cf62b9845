import MeshPipeline
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// A pipeline for a step of `batchSize` examples: how many micro-batches
/// the step is cut into and the schedule that runs them, with the stages
/// balanced on the layers' times at those micro-batches' rows and the step
/// it predicts (`Planner.Plan.predictedStepSeconds`).
public struct PipelineChoice: Sendable, Equatable {
  public let batchSize: Int
  public let microBatches: Int
  public let schedule: ScheduleKind
  public let plan: Planner.Plan
  public let stepSeconds: Double

  public var microBatchRows: Int { batchSize / microBatches }
  public var examplesPerSecond: Double { Double(batchSize) / stepSeconds }

  public var wire: Pipemesh_V1_PipelineChoice {
    .with {
      $0.microBatches = Int32(microBatches)
      $0.microBatchRows = Int32(microBatchRows)
      $0.schedule = schedule.wire
      $0.predictedStepSeconds = stepSeconds
      $0.predictedExamplesPerSecond = examplesPerSecond
    }
  }
}

extension ScheduleKind {
  /// The schedule as the API names it.
  public var wire: Pipemesh_V1_ScheduleKind {
    switch self {
    case .gpipe: .scheduleGpipe
    case .oneFOneB: .scheduleOneFOneB
    case .zeroBubbleH1: .scheduleZeroBubbleH1
    case .pipeDream2BW: .schedulePipedream2Bw
    }
  }
}

extension Planner {
  /// The most micro-batches the planner weighs for a step.
  public static let mostChosenMicroBatches = 32

  /// The schedules the planner chooses among: the synchronous ones (2BW
  /// trains on weights a step old, which is the user's call), in the order
  /// it prefers on a tie — the fewest activations held first.
  public static let chosenSchedules: [ScheduleKind] = [.oneFOneB, .zeroBubbleH1, .gpipe]

  /// Predictions within this fraction of the fastest count as equal: the
  /// simulation knows no transfers and no per-call costs, which favour fewer
  /// micro-batches.
  static let choiceTolerance = 0.01

  /// The micro-batch counts weighed for a step of `batchSize` examples: the
  /// powers of two that divide it, up to `mostChosenMicroBatches` (six
  /// timings at most).
  public static func microBatchCounts(batchSize: Int) -> [Int] {
    sequence(first: 1) { $0 * 2 }.prefix { $0 <= mostChosenMicroBatches && $0 <= batchSize }
      .filter { batchSize % $0 == 0 }
  }

  /// How long choosing may spend timing layers in all: counts not timed by
  /// then are not weighed.
  public static let choiceTimingBudget = Duration.seconds(60)

  /// Each of `chosenSchedules` on each plan of `plans` (a micro-batch count
  /// and the stages planned on the layers' times at its rows), ranked: the
  /// chosen one first — among those predicted within `choiceTolerance` of
  /// the fastest, the fewest micro-batches, then the earliest schedule —
  /// then the rest, fastest first. Plans without measured times predict
  /// nothing and are left out.
  public static func ranked(
    _ plans: [(microBatches: Int, plan: Plan)], batchSize: Int, calibration: StepCalibration? = nil
  ) -> [PipelineChoice] {
    var choices: [PipelineChoice] = []
    for (microBatches, plan) in plans {
      for schedule in chosenSchedules {
        guard
          let seconds = plan.predictedStepSeconds(
            microBatches: microBatches, schedule: schedule,
            calibrated: calibration.map { ($0, batchSize / microBatches) }),
          seconds > 0
        else { continue }
        choices.append(
          PipelineChoice(
            batchSize: batchSize, microBatches: microBatches, schedule: schedule, plan: plan, stepSeconds: seconds))
      }
    }
    guard let fastest = choices.map(\.stepSeconds).min() else { return [] }
    func preference(_ choice: PipelineChoice) -> (Int, Int) {
      (choice.microBatches, chosenSchedules.firstIndex(of: choice.schedule) ?? chosenSchedules.count)
    }
    choices.sort {
      ($0.stepSeconds, preference($0).0, preference($0).1) < ($1.stepSeconds, preference($1).0, preference($1).1)
    }
    let chosen = choices.indices.filter { choices[$0].stepSeconds <= fastest * (1 + choiceTolerance) }
      .min { preference(choices[$0]) < preference(choices[$1]) }!
    return [choices[chosen]] + choices.enumerated().filter { $0.offset != chosen }.map(\.element)
  }

  /// Layer times measured on micro-batches of `rows` examples, and where.
  public struct MeasuredTimes: Sendable {
    public let layers: [LayerTiming]
    public let rows: Int
    public let on: String

    public init(layers: [LayerTiming], rows: Int, on: String) {
      self.layers = layers
      self.rows = rows
      self.on = on
    }

    /// The times of micro-batches of `wanted` rows: as measured, or, where
    /// fewer rows were timed (a micro-batch too large to time whole), in
    /// proportion to the rows — a product of that many rows already runs at
    /// its full speed per row.
    func scaled(toRows wanted: Int) -> MeasuredTimes {
      guard wanted != rows, rows > 0 else { return self }
      let factor = Double(wanted) / Double(rows)
      return MeasuredTimes(
        layers: layers.map {
          LayerTiming(
            forward: $0.forward * factor, backward: $0.backward * factor, splitForward: $0.splitForward * factor,
            splitBackward: $0.splitBackward * factor, firstPartShare: $0.firstPartShare)
        }, rows: wanted, on: on)
    }
  }

  /// The answer to `request` for `model` over `stages` stages: the stages
  /// planned on the layers' times that `measure` gives for a micro-batch of
  /// the rows it is asked, taking at most the time it is given (nil when it
  /// measures nothing: the plan balances the FLOP estimate), or with
  /// `batch_size`, of the pipeline chosen among every micro-batch count and
  /// synchronous schedule (`ranked`), all timed within `timingBudget`. The
  /// request's split points, the partitions' `budgets` and `memory` hold as
  /// in `plan`; checked before anything is timed. With `calibration` (a
  /// job's trace, for as many stages), every prediction is calibrated.
  public static func answer(
    _ request: Pipemesh_V1_PlanRequest, model: Sequential, stages: Int, budgets: [Int?], memory: StageMemory,
    calibration: StepCalibration? = nil, timingBudget: Duration = choiceTimingBudget,
    measure: (_ rows: Int, _ within: Duration) async -> MeasuredTimes?
  ) async throws -> Pipemesh_V1_PlanResponse {
    try checkChoice(request)
    let splitPoints = try LayerPosition.splitPoints(layers: request.splitPoints, inputs: request.splitPointInputs)
    func planned(on measured: MeasuredTimes?) throws -> Plan {
      try plan(
        model, stages: stages, splitPoints: splitPoints, budgets: budgets, memory: memory, measured: measured?.layers,
        wholeLayers: request.wholeLayers,
        splitsSharingWeights: splitsSharingWeights(optimizer: request.optimizer, consistency: request.consistency))
    }
    _ = try planned(on: nil)
    func response(_ plan: Plan, _ measured: MeasuredTimes?, stepSeconds: Double?) -> Pipemesh_V1_PlanResponse {
      var response = plan.response
      if let measured {
        response.layerTimes = measured.layers.wire(of: model)
        response.measuredOn = measured.on
        response.measuredRows = Int32(measured.rows)
        response.predictedStepSeconds = stepSeconds ?? 0
        if let calibration, calibration.forward.count == plan.stages {
          response.calibratedByJob = calibration.job
          response.calibratedRows = Int32(calibration.rows)
        }
      }
      return response
    }
    guard request.batchSize > 0 else {
      let measured =
        request.estimate
        ? nil
        : await measure(
          request.microBatchRows == 0 ? LayerTimings.defaultRows : Int(request.microBatchRows), timingBudget)
      let plan = try planned(on: measured)
      return response(
        plan, measured,
        stepSeconds: plan.predictedStepSeconds(
          for: request, calibrated: calibration.flatMap { calibration in measured.map { (calibration, $0.rows) } }))
    }
    let batchSize = Int(request.batchSize)
    var plans: [(microBatches: Int, plan: Plan)] = []
    var measuredAt: [Int: MeasuredTimes] = [:]
    let end = ContinuousClock.now + timingBudget
    for microBatches in microBatchCounts(batchSize: batchSize).reversed() {
      let left = end - ContinuousClock.now
      guard left > .zero else { break }
      guard let measured = await measure(batchSize / microBatches, left) else { continue }
      measuredAt[microBatches] = measured
      plans.append((microBatches, try planned(on: measured.scaled(toRows: batchSize / microBatches))))
    }
    let choices = ranked(plans, batchSize: batchSize, calibration: calibration)
    guard let chosen = choices.first else {
      throw CoordinatorError(
        .unsuitableMesh,
        "batch_size \(batchSize): no micro-batch count of it could be timed (no partition answered, or its rows take "
          + "too long to time), and choosing needs measured times; give micro_batches and a schedule instead")
    }
    // The layers' times of the chosen micro-batch's rows, which its stages and step add up.
    var answer = response(
      chosen.plan, measuredAt[chosen.microBatches]?.scaled(toRows: chosen.microBatchRows),
      stepSeconds: chosen.stepSeconds)
    answer.choices = choices.map(\.wire)
    return answer
  }

  /// The most examples of a step the planner chooses a pipeline for.
  public static let mostChosenBatchSize: Int32 = 65_536

  /// Refuses a batch_size out of range, or beside what it chooses.
  private static func checkChoice(_ request: Pipemesh_V1_PlanRequest) throws {
    guard (0...mostChosenBatchSize).contains(request.batchSize) else {
      throw CoordinatorError(
        .invalidRequest,
        "batch_size is \(request.batchSize); give 1 to \(mostChosenBatchSize), or 0 not to choose")
    }
    guard request.batchSize > 0 else { return }
    let given = [
      ("micro_batch_rows", request.microBatchRows != 0), ("micro_batches", request.microBatches != 0),
      ("schedule", request.schedule != .scheduleUnspecified), ("estimate", request.estimate),
    ].filter(\.1).map(\.0)
    guard given.isEmpty else {
      throw CoordinatorError(
        .invalidRequest,
        "batch_size asks the planner to choose the micro-batches and the schedule on measured times; "
          + "\(given.joined(separator: " and ")) cannot be given with it")
    }
  }
}
