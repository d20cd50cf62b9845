import Foundation
import MeshProto
import MeshRPC

/// Shows training progress: a live bar on a terminal, plain lines otherwise
/// (logs, CI, pipes).
struct ProgressDisplay {
  let live: Bool
  /// Classification shows accuracy; regression only the loss.
  let showsAccuracy: Bool
  private let started = ContinuousClock.now
  private var lastLine = ContinuousClock.now - .seconds(10)
  /// A language model on text also shows its validation loss in bits per byte.
  let showsBits: Bool
  /// Whether the job's name was printed.
  private var named = false

  init(showsAccuracy: Bool, showsBits: Bool = false, live: Bool = isatty(STDOUT_FILENO) == 1) {
    self.showsAccuracy = showsAccuracy
    self.showsBits = showsBits
    self.live = live
  }

  /// A cross-entropy in nats, in bits per byte (a character, for ASCII text).
  static func bits(_ nats: Double) -> String { String(format: " (%.3f bits/byte)", nats / M_LN2) }

  /// Steps before an ETA is shown.
  static let stepsBeforeETA: Int64 = 5

  mutating func show(_ progress: Pipemesh_V1_TrainProgress) {
    if !named, !progress.job.isEmpty {
      named = true
      say("job \(progress.job)")
    }
    if progress.queuePosition > 0 {
      finishLine()
      let ahead = progress.queuePosition - 1
      say(
        "queued for partitions: "
          + (ahead == 0 ? "next to run" : "\(ahead) job\(ahead == 1 ? "" : "s") ahead"))
      return
    }
    if progress.evaluated {
      finishLine()
      say(
        String(format: "epoch %d  validation loss %.4f", progress.epoch, progress.validationLoss)
          + (showsBits ? Self.bits(progress.validationLoss) : "")
          + (showsAccuracy
            ? String(format: "  accuracy %.1f%%", progress.validationAccuracy * 100)
            : String(format: "  R² %.4f", progress.validationR2)))
      return
    }
    guard !progress.done else {
      finishLine()
      if progress.stoppedEarlyEpoch > 0 {
        say("stopped early after epoch \(progress.stoppedEarlyEpoch): the validation loss stopped falling")
      }
      return
    }
    let fraction = progress.totalSteps > 0 ? Double(progress.step) / Double(progress.totalSteps) : 0
    let elapsed = ContinuousClock.now - started
    // An estimate from the first steps says little (they load stages and warm up).
    let remaining = progress.step >= Self.stepsBeforeETA ? elapsed.seconds * (1 - fraction) / fraction : nil
    let accuracy = showsAccuracy ? String(format: "  acc %5.1f%%", progress.accuracy * 100) : ""
    let status =
      String(
        format: "epoch %d  step %lld/%lld  loss %.4f", progress.epoch, progress.step, progress.totalSteps, progress.loss
      )
      + accuracy + String(format: "  %.0f samples/s  ETA ", progress.samplesPerSecond)
      + (remaining.map(Self.clock) ?? "--:--")
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
