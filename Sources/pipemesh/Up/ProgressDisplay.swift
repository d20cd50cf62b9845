import Foundation
import MeshProto

/// Shows training progress: a live bar on a terminal, plain lines otherwise
/// (logs, CI, pipes).
struct ProgressDisplay {
  let live: Bool
  private let started = ContinuousClock.now
  private var lastLine = ContinuousClock.now - .seconds(10)

  init(live: Bool = isatty(STDOUT_FILENO) == 1) { self.live = live }

  mutating func show(_ progress: Pipemesh_V1_TrainProgress) {
    if progress.evaluated {
      finishLine()
      say(String(
        format: "epoch %d  validation loss %.4f  accuracy %.1f%%", progress.epoch, progress.validationLoss,
        progress.validationAccuracy * 100))
      return
    }
    guard !progress.done else {
      finishLine()
      return
    }
    let fraction = progress.totalSteps > 0 ? Double(progress.step) / Double(progress.totalSteps) : 0
    let elapsed = ContinuousClock.now - started
    let remaining = fraction > 0 ? seconds(elapsed) * (1 - fraction) / fraction : 0
    let status = String(
      format: "epoch %d  step %lld/%lld  loss %.4f  acc %5.1f%%  %.0f samples/s  ETA %@",
      progress.epoch, progress.step, progress.totalSteps, progress.loss, progress.accuracy * 100,
      progress.samplesPerSecond, Self.clock(remaining) as NSString)
    if live {
      let width = 24
      let filled = Int(fraction * Double(width))
      let bar = String(repeating: "█", count: filled) + String(repeating: "░", count: width - filled)
      FileHandle.standardOutput.write(Data("\r\u{1B}[2K\(bar) \(status)".utf8))
    } else if ContinuousClock.now - lastLine >= .seconds(2) || progress.step == progress.totalSteps {
      say(status)
      lastLine = .now
    }
  }

  private func finishLine() {
    if live { FileHandle.standardOutput.write(Data("\n".utf8)) }
  }

  static func clock(_ seconds: Double) -> String {
    let total = Int(seconds.rounded())
    return String(format: "%d:%02d", total / 60, total % 60)
  }
}

func seconds(_ duration: Duration) -> Double {
  Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
}
