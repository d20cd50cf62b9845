// `pipeline-bench --simulate`: what the schedule simulator predicts past this
// machine. Stage costs are this bench's MLP stage (three 1,024-wide hidden
// layers, as its 2-stage split gives each stage) timed here, one BLAS thread,
// at each micro-batch size of a 2,048-example batch; K such stages joined by
// links of 1, 10 and 100 Gbit/s (and instant ones) with a fixed latency per
// transfer, each micro-batch's activations (rows × 1,024 float32) forward and
// their gradient back. Prints a markdown table of efficiency (the stages'
// compute over K × the step) per schedule, K and M, next to the GPipe bubble
// formula M/(M+K−1). Interleaved 1F1B runs the same K stages' layers cut
// into K × v chunks, v on each of K devices, each chunk costing 1/v of a
// stage. PipeDream-2BW has no flush between steps: its row is the steady
// state, what one more step of its lists adds to a stream of them.
import Foundation
import MeshPipeline
import MeshTensor
import MeshWire

/// The latency each transfer pays besides its bytes.
let simulatedLatency = 100e-6

func printSimulationTable() throws {
  let stageModel = try makeModel(
    .with {
      $0.inputShape = [1024]
      $0.seed = 1
      $0.layers = (0..<3).map { _ in
        .with {
          $0.dense = .with {
            $0.units = 1024
            $0.activation = .relu
          }
        }
      }
      $0.loss = .with { $0.meanSquaredError = .init() }
    })
  let microBatchCounts = [4, 8, 16, 32, 64, 128]
  let stageCounts = [4, 8, 16, 32, 64]
  let links: [(String, LinkModel)] = [
    ("instant", .instant), ("100 Gbit/s", .gigabits(100, latency: simulatedLatency)),
    ("10 Gbit/s", .gigabits(10, latency: simulatedLatency)), ("1 Gbit/s", .gigabits(1, latency: simulatedLatency)),
  ]
  BLAS.setThreadCount(1)
  var costs: [Int: StageCosts] = [:]
  for microBatches in microBatchCounts {
    let rows = 2048 / microBatches
    let times = try stageModel.timeLayers(rows: rows, repeats: 3)
    costs[microBatches] = StageCosts(
      forward: times.map(\.forward.seconds).reduce(0, +), backward: times.map(\.backward.seconds).reduce(0, +))
    FileHandle.standardError.write(
      Data(
        String(
          format: "stage of %d rows: forward %.3f ms, backward %.3f ms\n", rows, costs[microBatches]!.forward * 1e3,
          (costs[microBatches]!.inputGradient + costs[microBatches]!.weightGradient) * 1e3
        ).utf8))
  }
  print(
    "| schedule | stages K | micro-batches M | GPipe formula M/(M+K−1) | "
      + links.map { "efficiency, \($0.0)" }.joined(separator: " | ") + " |")
  print("| --- | --- | --- | --- | " + links.map { _ in "---" }.joined(separator: " | ") + " |")
  let flushed = [(ScheduleKind.gpipe, "gpipe"), (.oneFOneB, "1f1b"), (.zeroBubbleH1, "zb-h1")].map { kind, name in
    TableSchedule(name: name, chunks: 1, overlapsSteps: false) {
      PipelineSchedule(kind: kind, stages: $0, microBatches: $1)
    }
  }
  let interleaved = [2, 4].map { chunks in
    TableSchedule(name: "interleaved-\(chunks)", chunks: chunks, overlapsSteps: false) { devices, microBatches in
      microBatches % devices == 0
        ? PipelineSchedule(interleavedOn: devices, chunks: chunks, microBatches: microBatches) : nil
    }
  }
  let twoBW = TableSchedule(name: "2bw", chunks: 1, overlapsSteps: true) {
    PipelineSchedule(kind: .pipeDream2BW, stages: $0, microBatches: $1)
  }
  for schedule in flushed + interleaved + [twoBW] {
    for devices in stageCounts {
      for microBatches in microBatchCounts where microBatches >= devices / 2 {
        let rows = 2048 / microBatches
        let stage = costs[microBatches]!
        let chunks = Double(schedule.chunks)
        let chunk = StageCosts(
          forward: stage.forward / chunks, inputGradient: stage.inputGradient / chunks,
          weightGradient: stage.weightGradient / chunks)
        let efficiencies = try links.compactMap { _, link in
          try schedule.efficiency(
            devices: devices, microBatches: microBatches, chunk: chunk, link: link, bytes: rows * 1024 * 4)
        }
        guard efficiencies.count == links.count else { continue }
        let formula = Double(microBatches) / Double(microBatches + devices - 1)
        print(
          "| \(schedule.name) | \(devices) | \(microBatches) | \(String(format: "%.2f", formula)) | "
            + efficiencies.map { String(format: "%.2f", $0) }.joined(separator: " | ") + " |")
      }
    }
  }
}

/// A row of the table: a schedule by name, the chunks each of its devices
/// runs, and its lists for K devices and M micro-batches (nil where it
/// cannot take them).
struct TableSchedule {
  let name: String
  let chunks: Int
  /// PipeDream-2BW: no flush between steps, so its efficiency is its
  /// steady state's: what one more step adds to a stream of steps long
  /// enough to be past its warm-up (at least 2K micro-batches).
  let overlapsSteps: Bool
  let lists: (_ devices: Int, _ microBatches: Int) -> PipelineSchedule?

  /// The devices' compute over their time, each chunk costing `chunk` and
  /// sending `bytes` over `link` to the next.
  func efficiency(devices: Int, microBatches: Int, chunk: StageCosts, link: LinkModel, bytes: Int) throws -> Double? {
    func run(steps: Int) throws -> SimulatedStep? {
      guard let schedule = lists(devices, steps * microBatches) else { return nil }
      return try schedule.simulate(
        costs: Array(repeating: chunk, count: schedule.stages), link: link,
        activationBytes: Array(repeating: bytes, count: schedule.stages))
    }
    guard overlapsSteps else { return try run(steps: 1)?.efficiency }
    let steps = max(2, (2 * devices + microBatches - 1) / microBatches)
    guard let stream = try run(steps: steps), let longer = try run(steps: steps + 1) else { return nil }
    let busy = longer.busy.reduce(0, +) - stream.busy.reduce(0, +)
    return busy / ((longer.seconds - stream.seconds) * Double(devices))
  }
}
