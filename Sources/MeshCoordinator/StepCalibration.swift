import MeshPipeline
import MeshTensor

/// How a job that ran corrects the planner's predictions for its model: a
/// stage's calls cost more than the sum of its layers timed one by one
/// (the activations kept and handed on, the calls' own work, the other
/// stage on the same host), and the layers' times know nothing of the
/// transfers between stages or of the commit. From the trace of the job's
/// last steps (`ObservedStep`): per stage, its forward and backward over
/// what the layers' times predicted at the job's rows, and its commit; and
/// the transfers' time per row of a micro-batch. Kept in the coordinator's
/// state (as JSON), so a restart forgets none.
public struct StepCalibration: Sendable, Equatable, Codable {
  /// The job whose steps these are, and its micro-batches' rows.
  public let job: String
  public let rows: Int
  /// Where the job's stages began and ended.
  public let bounds: [LayerPosition]
  public let forwardRatio: [Double]
  public let backwardRatio: [Double]
  public let commitSeconds: [Double]
  /// A transfer between stages of a micro-batch of r rows takes
  /// `transferFixedSeconds + r · transferSecondsPerRow`: in proportion to the
  /// rows from one job, a line through the transfers of jobs at other rows
  /// once there are some (`fittingTransfers`).
  public private(set) var transferFixedSeconds = 0.0
  public private(set) var transferSecondsPerRow: Double

  /// The longest time a call or transfer of a step is believed to take: a
  /// partition's clock that jumped, or a time it did not report, says more.
  static let longestCall = 3600.0

  /// From `observed`, steps of `job` in micro-batches of `rows` rows on
  /// stages between `bounds`, whose layers' times predicted `predicted` at
  /// those rows; nil when the stages differ in number, or a time is not a
  /// positive number (a forward or backward; a commit or transfer may take
  /// none) of at most `longestCall`.
  public init?(
    job: String, rows: Int, bounds: [LayerPosition], observed: ObservedStep, predicted: [LayerTiming]
  ) {
    func believed(_ seconds: Double, positive: Bool = true) -> Bool {
      seconds.isFinite && seconds <= Self.longestCall && (positive ? seconds > 0 : seconds >= 0)
    }
    let pairs = Array(zip(observed.stages, predicted))
    guard rows > 0, observed.stages.count == predicted.count, bounds.count == predicted.count + 1,
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
    forwardRatio = pairs.map { $0.forward / $1.forward.seconds }
    backwardRatio = pairs.map { ($0.inputGradient + $0.weightGradient) / $1.backward.seconds }
    commitSeconds = observed.stages.map(\.commit)
    transferSecondsPerRow = observed.transfer / Double(rows)
  }

  /// The stages of a plan (`times`, the layers' times of each stage at
  /// micro-batches of some rows, between `bounds`) as the job ran its
  /// stages: stage by stage where the plan splits the model as the job did,
  /// else every stage by the job's ratios over all its stages and its mean
  /// commit; nil for another number of stages.
  public func costs(of times: [LayerTiming], bounds: [LayerPosition]) -> [StageCosts]? {
    guard times.count == forwardRatio.count else { return nil }
    let sameSplit = bounds == self.bounds
    func overall(_ ratios: [Double]) -> Double { ratios.reduce(0, +) / Double(ratios.count) }
    let meanCommit = commitSeconds.reduce(0, +) / Double(commitSeconds.count)
    return times.indices.map { stage in
      StageCosts(
        forward: times[stage].forward.seconds * (sameSplit ? forwardRatio[stage] : overall(forwardRatio)),
        backward: times[stage].backward.seconds * (sameSplit ? backwardRatio[stage] : overall(backwardRatio)),
        commit: sameSplit ? commitSeconds[stage] : meanCommit)
    }
  }

  /// The link between stages for micro-batches of `rows` rows.
  public func link(rows: Int) -> LinkModel {
    LinkModel(latency: transferFixedSeconds + transferSecondsPerRow * Double(rows), bytesPerSecond: .infinity)
  }

  /// This calibration with its transfers' time as the least-squares line
  /// through its own transfer and those of `others` that split the model
  /// where it does (calibrations of the same model at other rows; the first
  /// at each row counts): a fixed part and a part per row, neither negative.
  /// As it is while all are at one row.
  public func fittingTransfers(to others: [StepCalibration]) -> StepCalibration {
    var seen: Set<Int> = []
    let points = ([self] + others.filter { $0.bounds == bounds }).filter { seen.insert($0.rows).inserted }.map {
      (rows: Double($0.rows), seconds: $0.transferFixedSeconds + $0.transferSecondsPerRow * Double($0.rows))
    }
    guard points.count > 1 else { return self }
    let count = Double(points.count)
    let meanRows = points.map(\.rows).reduce(0, +) / count
    let meanSeconds = points.map(\.seconds).reduce(0, +) / count
    let spread = points.map { ($0.rows - meanRows) * ($0.rows - meanRows) }.reduce(0, +)
    let slope = points.map { ($0.rows - meanRows) * ($0.seconds - meanSeconds) }.reduce(0, +) / spread
    var fitted = self
    if slope < 0 {
      // More rows never take less time: the transfers' mean, whatever the rows.
      (fitted.transferFixedSeconds, fitted.transferSecondsPerRow) = (meanSeconds, 0)
    } else if meanSeconds - slope * meanRows < 0 {
      // No negative fixed part: the best line through the origin.
      let perRow =
        points.map { $0.rows * $0.seconds }.reduce(0, +) / points.map { $0.rows * $0.rows }.reduce(0, +)
      (fitted.transferFixedSeconds, fitted.transferSecondsPerRow) = (0, perRow)
    } else {
      (fitted.transferFixedSeconds, fitted.transferSecondsPerRow) = (meanSeconds - slope * meanRows, slope)
    }
    return fitted
  }
}
