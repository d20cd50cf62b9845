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
// stage. PipeDream-2BW is left out: without a flush between steps its
// steady state has no bubble at all (the planner predicts its step by the
// busiest stage).
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
  // Each schedule by its name and what it makes of K devices and M micro-batches (nil where it
  // cannot take them), with the chunks each device runs.
  let flushed = [(ScheduleKind.gpipe, "gpipe"), (.oneFOneB, "1f1b"), (.zeroBubbleH1, "zb-h1")].map { kind, name in
    (
      name, 1,
      { (devices: Int, microBatches: Int) -> PipelineSchedule? in
        PipelineSchedule(kind: kind, stages: devices, microBatches: microBatches)
      }
    )
  }
  let interleaved = [2, 4].map { chunks in
    (
      "interleaved-\(chunks)", chunks,
      { (devices: Int, microBatches: Int) -> PipelineSchedule? in
        microBatches % devices == 0
          ? PipelineSchedule(interleavedOn: devices, chunks: chunks, microBatches: microBatches) : nil
      }
    )
  }
  for (name, chunks, schedule) in flushed + interleaved {
    for devices in stageCounts {
      for microBatches in microBatchCounts where microBatches >= devices / 2 {
        guard let schedule = schedule(devices, microBatches) else { continue }
        let rows = 2048 / microBatches
        let stage = costs[microBatches]!
        let chunk = StageCosts(
          forward: stage.forward / Double(chunks), inputGradient: stage.inputGradient / Double(chunks),
          weightGradient: stage.weightGradient / Double(chunks))
        let efficiencies = try links.map { _, link in
          try schedule.simulate(
            costs: Array(repeating: chunk, count: schedule.stages), link: link,
            activationBytes: Array(repeating: rows * 1024 * 4, count: schedule.stages)
          ).efficiency
        }
        let formula = Double(microBatches) / Double(microBatches + devices - 1)
        print(
          "| \(name) | \(devices) | \(microBatches) | \(String(format: "%.2f", formula)) | "
            + efficiencies.map { String(format: "%.2f", $0) }.joined(separator: " | ") + " |")
      }
    }
  }
}
