import MeshPipeline
import MeshTensor

/// How a job that ran corrects the planner's predictions for its model: a
/// stage's calls cost more than the sum of its layers timed one by one
/// (the activations kept and handed on, the calls' own work, the other
/// stage on the same host), and the layers' times know nothing of the
/// transfers between stages or of the commit. From the trace of one of
/// the job's steps: per stage, its forward and backward over what the
/// layers' times predicted at the job's rows, and its commit; and the
/// transfers' time per row of a micro-batch.
public struct StepCalibration: Sendable, Equatable {
  /// The job whose step this is, and its micro-batches' rows.
  public let job: String
  public let rows: Int
  public let forward: [Double]
  public let backward: [Double]
  public let commit: [Double]
  public let transferPerRow: Double

  public init(
    job: String, rows: Int, forward: [Double], backward: [Double], commit: [Double], transferPerRow: Double
  ) {
    self.job = job
    self.rows = rows
    self.forward = forward
    self.backward = backward
    self.commit = commit
    self.transferPerRow = transferPerRow
  }

  /// From `observed`, a step of `job` in micro-batches of `rows` rows, on
  /// stages whose layers' times predicted `predicted` at those rows; nil
  /// when the stages differ in number or a prediction is not a positive time.
  public init?(job: String, rows: Int, observed: ObservedStep, predicted: [LayerTiming]) {
    guard rows > 0, observed.stages.count == predicted.count,
      predicted.allSatisfy({ $0.forward > .zero && $0.backward > .zero })
    else { return nil }
    let pairs = zip(observed.stages, predicted)
    self.init(
      job: job, rows: rows, forward: pairs.map { $0.forward / $1.forward.seconds },
      backward: pairs.map { ($0.inputGradient + $0.weightGradient) / $1.backward.seconds },
      commit: observed.stages.map(\.commit), transferPerRow: observed.transfer / Double(rows))
  }

  /// The stages of `times` (the layers' times of each stage, at micro-batches
  /// of some rows) as the job ran its stages; nil for another number of stages.
  func costs(of times: [LayerTiming]) -> [StageCosts]? {
    guard times.count == forward.count else { return nil }
    return times.indices.map { stage in
      StageCosts(
        forward: times[stage].forward.seconds * forward[stage],
        backward: times[stage].backward.seconds * backward[stage],
        commit: commit[stage])
    }
  }

  /// The link between stages for micro-batches of `rows` rows: the job's
  /// transfers, in proportion to the rows.
  func link(rows: Int) -> LinkModel {
    LinkModel(latency: transferPerRow * Double(rows), bytesPerSecond: .infinity)
  }
}
