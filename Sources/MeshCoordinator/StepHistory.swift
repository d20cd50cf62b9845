import Foundation
import MeshProto

/// A job's steps as this coordinator saw them run, for GetJob's history (a
/// dashboard's curves): at most `capacity`, evenly spaced. When it fills,
/// every other step goes and only every `stride`-th is kept from then on;
/// the newest step is always kept.
struct StepHistory {
  static let capacity = 1024

  private(set) var steps: [Pipemesh_V1_StepMetrics] = []
  /// The timeline of the job's last run's steady step, from its last message.
  private(set) var traceJson = ""
  private var stride: Int64 = 1

  /// Adds a step's progress (and takes the trace of a last message); other
  /// messages change nothing. A step at or before one recorded (a run
  /// started again, or went on from a checkpoint) replaces those from it on.
  mutating func record(_ progress: Pipemesh_V1_TrainProgress) {
    if progress.done {
      traceJson = progress.traceJson
      return
    }
    guard !progress.evaluated, progress.step > 0 else { return }
    if let index = steps.firstIndex(where: { $0.step >= progress.step }) { steps.removeSubrange(index...) }
    if steps.isEmpty { stride = 1 }
    // The newest step was kept for being the newest only: the next one takes its place.
    if let last = steps.last, last.step % stride != 0 { steps.removeLast() }
    steps.append(
      .with {
        $0.step = progress.step
        $0.epoch = progress.epoch
        $0.loss = progress.loss
        $0.accuracy = progress.accuracy
        $0.samplesPerSecond = progress.samplesPerSecond
        $0.unixSeconds = Date().timeIntervalSince1970
      })
    while steps.count > Self.capacity {
      stride *= 2
      let newest = steps.removeLast()
      steps.removeAll { $0.step % stride != 0 }
      steps.append(newest)
    }
  }
}
