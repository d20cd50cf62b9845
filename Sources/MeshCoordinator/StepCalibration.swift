import MeshPipeline
import MeshTensor

/// How a job that ran corrects the planner's predictions for its model: a
/// stage's calls cost more than the sum of its layers timed one by one
/// (the activations kept and handed on, the calls' own work, the other
/// stage on the same host), and the layers' times know nothing of the
/// transfers between stages or of the commit. From the trace of the job's
/// last steps (`ObservedStep`): per stage, its forward and backward against
/// what the layers' times predicted at the job's rows, and its commit; and
/// the transfers' time. From one job, a call takes its job's ratio of the
/// prediction and a transfer its time in proportion to the rows; with jobs
/// split the same way at other rows (`fitting`), each follows a line with a
/// fixed part, which a backward pays per call, and below the jobs' fewest
/// rows the ratio the line has there (`LinearCost.leastUnits`). Kept in the
/// coordinator's state (as JSON), so a restart forgets none; one saved
/// before calibrations counted their backward's calls, or before layers were
/// timed on the inputs they are now (`Sequential.timingInputs`), cannot be
/// read and is not used.
public struct StepCalibration: Sendable, Equatable, Codable {
  /// The job whose steps these are, and its micro-batches' rows.
  public let job: String
  public let rows: Int
  /// Where the job's stages began and ended.
  public let bounds: [LayerPosition]
  /// The calls a micro-batch's backward took on a stage in the job's
  /// schedule (`ScheduleKind.callsPerBackward`).
  public let backwardCalls: Int
  /// What the layers' times it corrects were measured on
  /// (`Sequential.timingInputs`).
  public let layerTimeInputs: Int
  /// Per stage, the seconds of a forward and of a backward by the seconds
  /// the layers' times predict for it; a backward's fixed part is per call.
  public private(set) var forward: [LinearCost]
  public private(set) var backward: [LinearCost]
  public let commitSeconds: [Double]
  /// The seconds of a transfer between stages by a micro-batch's rows.
  public private(set) var transfer: LinearCost
  /// What the job's steps took and the layers' times predicted at its rows,
  /// per stage: the points the lines of later fits go through.
  let observedForward: [Double]
  let predictedForward: [Double]
  let observedBackward: [Double]
  let predictedBackward: [Double]
  let observedTransfer: Double

  /// The calls a backward may take in a schedule Pipemesh runs.
  static let believedBackwardCalls = Set(ScheduleKind.allCases.map(\.callsPerBackward))

  /// The longest time a call or transfer of a step is believed to take: a
  /// partition's clock that jumped, or a time it did not report, says more.
  static let longestCall = 3600.0

  /// From `observed`, steps of `job` in micro-batches of `rows` rows on
  /// stages between `bounds`, each backward in `backwardCalls` calls, whose
  /// layers' times predicted `predicted` at those rows; nil when the stages
  /// differ in number, or a time is not a positive number (a forward or
  /// backward; a commit or transfer may take none) of at most `longestCall`.
  public init?(
    job: String, rows: Int, bounds: [LayerPosition], backwardCalls: Int, observed: ObservedStep,
    predicted: [LayerTiming]
  ) {
    func believed(_ seconds: Double, positive: Bool = true) -> Bool {
      seconds.isFinite && seconds <= Self.longestCall && (positive ? seconds > 0 : seconds >= 0)
    }
    let pairs = Array(zip(observed.stages, predicted))
    guard rows > 0, Self.believedBackwardCalls.contains(backwardCalls), observed.stages.count == predicted.count,
      bounds.count == predicted.count + 1,
      believed(observed.transfer, positive: false),
      pairs.allSatisfy({ observed, predicted in
        believed(observed.forward) && believed(observed.inputGradient + observed.weightGradient)
          && believed(observed.commit, positive: false) && believed(predicted.forward.seconds)
          && believed(predicted.backward.seconds)
      })
    else { return nil }
    self.job = job
    self.rows = rows
    self.bounds = bounds
    self.backwardCalls = backwardCalls
    layerTimeInputs = Sequential.timingInputs
    observedForward = observed.stages.map(\.forward)
    predictedForward = predicted.map(\.forward.seconds)
    observedBackward = observed.stages.map { $0.inputGradient + $0.weightGradient }
    predictedBackward = predicted.map(\.backward.seconds)
    observedTransfer = observed.transfer
    forward = zip(observedForward, predictedForward).map { LinearCost(fixed: 0, perUnit: $0 / $1) }
    backward = zip(observedBackward, predictedBackward).map { LinearCost(fixed: 0, perUnit: $0 / $1) }
    commitSeconds = observed.stages.map(\.commit)
    transfer = LinearCost(fixed: 0, perUnit: observed.transfer / Double(rows))
  }

  /// The stages of a plan (`times`, the layers' times of each stage at
  /// micro-batches of some rows, between `bounds`) as the job ran its
  /// stages: stage by stage where the plan splits the model as the job did,
  /// else every stage by the mean of the job's lines over all its stages and
  /// its mean commit; nil for another number of stages. A backward's fixed
  /// part is its calls' (`StageCosts.callSeconds`): a schedule that splits
  /// it pays it twice.
  public func costs(of times: [LayerTiming], bounds: [LayerPosition]) -> [StageCosts]? {
    guard times.count == forward.count else { return nil }
    let sameSplit = bounds == self.bounds
    func mean(_ values: [Double]) -> Double { values.reduce(0, +) / Double(values.count) }
    /// Stage `stage`'s line at `units`: its own, or the mean of the job's stages' lines as each holds there.
    func line(_ lines: [LinearCost], _ stage: Int, at units: Double) -> LinearCost {
      guard !sameSplit else { return lines[stage].holding(at: units) }
      let held = lines.map { $0.holding(at: units) }
      return LinearCost(fixed: mean(held.map(\.fixed)), perUnit: mean(held.map(\.perUnit)))
    }
    return times.indices.map { stage in
      let backward = line(self.backward, stage, at: times[stage].backward.seconds)
      let gradients = backward.perUnit * times[stage].backward.seconds
      return StageCosts(
        forward: line(forward, stage, at: times[stage].forward.seconds).at(times[stage].forward.seconds),
        inputGradient: backward.fixed + gradients / 2, weightGradient: gradients / 2,
        commit: sameSplit ? commitSeconds[stage] : mean(commitSeconds), callSeconds: backward.fixed)
    }
  }

  /// The link between stages for micro-batches of `rows` rows.
  public func link(rows: Int) -> LinkModel {
    LinkModel(latency: transfer.at(Double(rows)), bytesPerSecond: .infinity)
  }

  /// This calibration with each stage's calls and the transfers on the
  /// least-squares lines (`LinearCost.fit`) through its own times and those
  /// of `others` that split the model where it does (calibrations of the
  /// same model at other rows, by any schedule: a backward's fixed part
  /// counts once per call; the first at each row counts). As it is while
  /// all are at one row.
  public func fitting(_ others: [StepCalibration]) -> StepCalibration {
    var seen: Set<Int> = []
    let points = ([self] + others.filter { $0.bounds == bounds }).filter { seen.insert($0.rows).inserted }
    guard points.count > 1 else { return self }
    var fitted = self
    // A call's time grows with its layers': noise that says otherwise gives a ratio, not a constant.
    fitted.forward = forward.indices.map { stage in
      LinearCost.fit(points.map { ($0.predictedForward[stage], $0.observedForward[stage]) }, growing: true)
    }
    fitted.backward = backward.indices.map { stage in
      LinearCost.fit(
        points.map { ($0.predictedBackward[stage], $0.observedBackward[stage], Double($0.backwardCalls)) },
        growing: true)
    }
    fitted.transfer = LinearCost.fit(points.map { (Double($0.rows), $0.observedTransfer) })
    return fitted
  }

  /// Whether a calibration read back from the coordinator's state holds
  /// what `init?` checks: a time of each kind for every stage between its
  /// bounds, each a number it believes. One that does not is not used.
  var isWellFormed: Bool {
    let stages = bounds.count - 1
    let perStage = [observedForward, predictedForward, observedBackward, predictedBackward, commitSeconds]
    let lines = forward + backward + [transfer]
    return rows > 0 && stages > 0 && Self.believedBackwardCalls.contains(backwardCalls)
      && layerTimeInputs == Sequential.timingInputs
      && perStage.allSatisfy { $0.count == stages }
      && forward.count == stages && backward.count == stages
      && (perStage.joined() + [observedTransfer]).allSatisfy { $0.isFinite && $0 >= 0 && $0 <= Self.longestCall }
      && (predictedForward + predictedBackward).allSatisfy { $0 > 0 }
      && lines.allSatisfy {
        [$0.fixed, $0.perUnit, $0.leastUnits].allSatisfy { $0.isFinite && $0 >= 0 }
      }
  }
}

/// Seconds as a line of some measure (a call's predicted seconds, a
/// micro-batch's rows): a fixed part and a part per unit, neither negative.
public struct LinearCost: Sendable, Equatable, Codable {
  public var fixed: Double
  public var perUnit: Double
  /// The least measure of the points a fixed part was fitted through (0:
  /// the line holds at any measure). Below it the fixed part shrinks in
  /// proportion, so the line keeps the ratio it has there: extrapolated to
  /// fewer units, fixed parts fitted on larger ones charged small
  /// micro-batches far too much (docs/benchmarks.md).
  public var leastUnits: Double

  public init(fixed: Double, perUnit: Double, leastUnits: Double = 0) {
    self.fixed = fixed
    self.perUnit = perUnit
    self.leastUnits = leastUnits
  }

  private enum CodingKeys: String, CodingKey { case fixed, perUnit, leastUnits }

  /// Reads a line saved with or without `leastUnits` (the coordinator saves
  /// its jobs' own lines, which have none).
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    self.init(
      fixed: try container.decode(Double.self, forKey: .fixed),
      perUnit: try container.decode(Double.self, forKey: .perUnit),
      leastUnits: try container.decodeIfPresent(Double.self, forKey: .leastUnits) ?? 0)
  }

  /// The line as it holds at `units`: below `leastUnits`, with its fixed
  /// part in proportion to the units.
  public func holding(at units: Double) -> LinearCost {
    guard units < leastUnits else { return self }
    return LinearCost(fixed: fixed * max(0, units) / leastUnits, perUnit: perUnit)
  }

  /// The seconds at `units`.
  public func at(_ units: Double) -> Double {
    let line = holding(at: units)
    return line.fixed + line.perUnit * units
  }

  /// The least-squares line through `points` with no negative part: where
  /// more units took less time, their mean at any measure (with `growing`,
  /// for times that must grow with the units, the best line through zero);
  /// where the line would start below zero, or the points are all at one
  /// measure, the best line through zero.
  static func fit(_ points: [(units: Double, seconds: Double)], growing: Bool = false) -> LinearCost {
    fit(points.map { ($0.units, $0.seconds, 1) }, growing: growing)
  }

  /// How far apart the points' measures must be, as the variance of their
  /// measures over their mean squared, to fit a fixed part: a 1F1B job at
  /// some rows and a ZB-H1 job at twice as many are at one measure per
  /// call.
  static let leastRelativeSpread = 1e-3

  /// As `fit(_:growing:)`, where a point's time holds the fixed part
  /// `times` times (a backward made of that many calls): the least squares
  /// of `seconds = fixed · times + perUnit · units`, which is the line
  /// through each point's seconds and units per time weighted by its times
  /// squared, computed about the weighted means.
  static func fit(_ points: [(units: Double, seconds: Double, times: Double)], growing: Bool = false) -> LinearCost {
    let weights = points.map { $0.times * $0.times }
    let (perTimeUnits, perTimeSeconds) = (points.map { $0.units / $0.times }, points.map { $0.seconds / $0.times })
    func weightedSum(_ values: [Double]) -> Double { zip(weights, values).map { $0 * $1 }.reduce(0, +) }
    let totalWeight = weights.reduce(0, +)
    let (meanUnits, meanSeconds) = (weightedSum(perTimeUnits) / totalWeight, weightedSum(perTimeSeconds) / totalWeight)
    let unitsOffsets = perTimeUnits.map { $0 - meanUnits }
    let spread = weightedSum(unitsOffsets.map { $0 * $0 })
    func throughZero() -> LinearCost {
      let squares = points.map { $0.units * $0.units }.reduce(0, +)
      guard squares > 0 else { return LinearCost(fixed: meanSeconds, perUnit: 0) }
      return LinearCost(fixed: 0, perUnit: points.map { $0.units * $0.seconds }.reduce(0, +) / squares)
    }
    // Points (nearly) at one measure per time tell no fixed part: noise would set it.
    guard spread > Self.leastRelativeSpread * totalWeight * meanUnits * meanUnits else { return throughZero() }
    let slope = weightedSum(zip(unitsOffsets, perTimeSeconds).map { $0 * ($1 - meanSeconds) }) / spread
    if slope <= 0 { return growing ? throughZero() : LinearCost(fixed: meanSeconds, perUnit: 0) }
    if meanSeconds - slope * meanUnits < 0 { return throughZero() }
    return LinearCost(
      fixed: meanSeconds - slope * meanUnits, perUnit: slope, leastUnits: points.map(\.units).min() ?? 0)
  }
}
