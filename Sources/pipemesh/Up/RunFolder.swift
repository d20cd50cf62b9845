import Foundation
import MeshCheckpoint
import MeshProto
import MeshTensor

/// What a run leaves behind: metrics as CSV and JSON, loss and accuracy
/// curves as SVG, the pipeline trace, the model spec and the checkpoint.
struct RunFolder {
  let path: String

  /// A new folder `<parent>/<UTC time>` (with a suffix if taken).
  static func create(under parent: String) throws -> RunFolder {
    let formatter = DateFormatter()
    formatter.dateFormat = "yyyyMMdd-HHmmss"
    formatter.timeZone = TimeZone(identifier: "UTC")
    let stamp = formatter.string(from: Date())
    var path = (parent as NSString).appendingPathComponent(stamp)
    var suffix = 2
    while FileManager.default.fileExists(atPath: path) {
      path = (parent as NSString).appendingPathComponent("\(stamp)-\(suffix)")
      suffix += 1
    }
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return RunFolder(path: path)
  }

  func file(_ name: String) -> String { (path as NSString).appendingPathComponent(name) }

  func write(_ text: String, to name: String) throws {
    try text.write(toFile: file(name), atomically: true, encoding: .utf8)
  }

  /// Writes `options` as options.json: every effective setting of the run,
  /// and the command that runs it again.
  func writeOptions(_ options: [String: Any]) throws {
    try JSONSerialization.data(withJSONObject: options, options: [.prettyPrinted, .sortedKeys]).write(
      to: URL(fileURLWithPath: file("options.json")))
  }

  /// Writes metrics.json, loss.svg and accuracy.svg (a classifier's) or r2.svg (a regression's)
  /// (metrics.csv grows as the run goes: `MetricsCSV`).
  func writeMetrics(
    steps: [Pipemesh_V1_TrainProgress], evaluations: [Pipemesh_V1_TrainProgress], classifies: Bool
  ) throws {
    let json: [String: Any] = [
      "steps": steps.map {
        [
          "step": $0.step, "epoch": $0.epoch, "loss": $0.loss, "accuracy": $0.accuracy,
          "samples_per_second": $0.samplesPerSecond,
        ]
      },
      "evaluations": evaluations.map {
        [
          "step": $0.step, "epoch": $0.epoch, "validation_loss": $0.validationLoss,
          "validation_accuracy": $0.validationAccuracy, "validation_r2": $0.validationR2,
        ]
      },
    ]
    try JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys]).write(
      to: URL(fileURLWithPath: file("metrics.json")))
    try write(
      LineChart(
        title: "Loss", yLabel: classifies ? "cross-entropy" : "mean squared error",
        series: [
          ("training", steps.map { (Double($0.step), $0.loss) }),
          ("validation", evaluations.map { (Double($0.step), $0.validationLoss) }),
        ]
      ).svg, to: "loss.svg")
    // A regression has no accuracy: how much of the targets' variance it explains instead.
    guard classifies else {
      return try write(
        LineChart(
          title: "R²", yLabel: "variance explained (1 is a perfect fit)",
          series: [("validation", evaluations.map { (Double($0.step), $0.validationR2) })]
        ).svg, to: "r2.svg")
    }
    try write(
      LineChart(
        title: "Accuracy", yLabel: "fraction predicted right",
        series: [
          ("training", steps.map { (Double($0.step), $0.accuracy) }),
          ("validation", evaluations.map { (Double($0.step), $0.validationAccuracy) }),
        ]
      ).svg, to: "accuracy.svg")
  }
}

/// metrics.csv of a run, a row per step written as the run goes (a step's
/// row waits for its evaluation, which comes right after it, if any), so an
/// interrupted run keeps every step it reported.
struct MetricsCSV {
  private let handle: FileHandle
  private var pending: Pipemesh_V1_TrainProgress?

  init(path: String) throws {
    FileManager.default.createFile(
      atPath: path,
      contents: Data(
        "step,epoch,loss,accuracy,samples_per_second,validation_loss,validation_accuracy,validation_r2\n".utf8))
    handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
    try handle.seekToEnd()
  }

  /// Records a step's progress, or the evaluation after it.
  mutating func record(_ progress: Pipemesh_V1_TrainProgress) throws {
    if progress.evaluated {
      guard let step = pending, step.step == progress.step else { return }
      pending = nil
      try write(step, evaluation: progress)
    } else {
      try flush()
      pending = progress
    }
  }

  /// Writes the step still waiting for an evaluation.
  mutating func flush() throws {
    if let step = pending { try write(step, evaluation: nil) }
    pending = nil
  }

  private func write(_ step: Pipemesh_V1_TrainProgress, evaluation: Pipemesh_V1_TrainProgress?) throws {
    let validation = evaluation.map { "\($0.validationLoss),\($0.validationAccuracy),\($0.validationR2)" } ?? ",,"
    try handle.write(
      contentsOf: Data(
        "\(step.step),\(step.epoch),\(step.loss),\(step.accuracy),\(step.samplesPerSecond),\(validation)\n".utf8))
  }
}

/// A small line chart over steps, as a standalone SVG document.
struct LineChart {
  let title: String
  /// What the y axis measures.
  let yLabel: String
  let series: [(name: String, points: [(x: Double, y: Double)])]

  var svg: String {
    let (width, height, margin) = (640.0, 360.0, 56.0)
    // A diverged run's infinite or NaN losses have no place on the axes.
    let series = series.map { line in (name: line.name, points: line.points.filter { $0.x.isFinite && $0.y.isFinite }) }
    let points = series.flatMap(\.points)
    let xs = points.map(\.x)
    let ys = points.map(\.y)
    let xTicks = Self.ticks(from: xs.min() ?? 0, to: max(xs.max() ?? 1, (xs.min() ?? 0) + 1))
    let yTicks = Self.ticks(from: min(ys.min() ?? 0, 0), to: max(ys.max() ?? 1, 1e-9))
    // The axes run from tick to tick, so that every tick labels a line.
    let (minX, maxX) = (xTicks.first!, xTicks.last!)
    let (minY, maxY) = (yTicks.first!, yTicks.last!)
    func px(_ x: Double) -> Double { margin + (x - minX) / (maxX - minX) * (width - 2 * margin) }
    func py(_ y: Double) -> Double { height - margin - (y - minY) / (maxY - minY) * (height - 2 * margin) }
    let colors = ["#1f77b4", "#d62728"]
    let font = "font-family=\"sans-serif\" font-size=\"11\""
    var body = """
      <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))">
      <rect width="100%" height="100%" fill="white"/>
      <text x="\(Int(width / 2))" y="24" text-anchor="middle" font-family="sans-serif" font-size="16">\(title)</text>

      """
    for x in xTicks {
      let at = String(format: "%.1f", px(x))
      body += "<line x1=\"\(at)\" y1=\"\(margin)\" x2=\"\(at)\" y2=\"\(height - margin + 4)\" stroke=\"#e0e0e0\"/>\n"
      body += "<text x=\"\(at)\" y=\"\(height - margin + 16)\" text-anchor=\"middle\" \(font)>\(Self.label(x))</text>\n"
    }
    for y in yTicks {
      let at = String(format: "%.1f", py(y))
      body += "<line x1=\"\(margin - 4)\" y1=\"\(at)\" x2=\"\(width - margin)\" y2=\"\(at)\" stroke=\"#e0e0e0\"/>\n"
      body += "<text x=\"\(margin - 8)\" y=\"\(py(y) + 4)\" text-anchor=\"end\" \(font)>\(Self.label(y))</text>\n"
    }
    body += """
      <line x1="\(margin)" y1="\(height - margin)" x2="\(width - margin)" y2="\(height - margin)" stroke="black"/>
      <line x1="\(margin)" y1="\(margin)" x2="\(margin)" y2="\(height - margin)" stroke="black"/>
      <text x="\(Int(width / 2))" y="\(Int(height - 12))" text-anchor="middle" font-family="sans-serif" font-size="12">step</text>
      <text class="y-label" transform="rotate(-90)" x="\(-Int(height / 2))" y="16" text-anchor="middle" font-family="sans-serif" font-size="12">\(yLabel)</text>

      """
    for (index, line) in series.enumerated() where !line.points.isEmpty {
      let color = colors[index % colors.count]
      let path = line.points.map { String(format: "%.1f,%.1f", px($0.x), py($0.y)) }.joined(separator: " ")
      body += "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" points=\"\(path)\"/>\n"
      if line.points.count == 1 {
        body += "<circle cx=\"\(px(line.points[0].x))\" cy=\"\(py(line.points[0].y))\" r=\"3\" fill=\"\(color)\"/>\n"
      }
      body +=
        "<text x=\"\(Int(width - margin))\" y=\"\(Int(margin) + 16 * index)\" text-anchor=\"end\" font-family=\"sans-serif\" font-size=\"12\" fill=\"\(color)\">\(line.name)</text>\n"
    }
    return body + "</svg>\n"
  }

  /// Round values from at most `low` to at least `high`, 1, 2 or 5 times a
  /// power of ten apart, about five of them.
  static func ticks(from low: Double, to high: Double) -> [Double] {
    let span = max(high - low, 1e-12)
    let magnitude = pow(10, floor(log10(span / 5)))
    let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { span / $0 <= 6 } ?? 10 * magnitude
    let first = floor(low / step)
    let last = ceil(high / step)
    return stride(from: first, through: last, by: 1).map { $0 * step }
  }

  /// A tick's label: short, without float noise (0.30000000000000004 is 0.3).
  static func label(_ value: Double) -> String {
    String(format: "%g", (value * 1e9).rounded() / 1e9)
  }
}

/// The variables of `model` in a run folder's checkpoint.safetensors by
/// name: the ps task's checkpoint names each "RUN-ID/NAME" (and its
/// optimizer slots "NAME@m"), one job's; a layer split between stages is
/// held there in pieces, put back together here.
func checkpointVariables(at path: String, of model: Sequential) throws -> [String: Tensor] {
  let checkpoint = try SafeTensors.decode(try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped))
  var variables: [String: Tensor] = [:]
  for (key, tensor) in checkpoint.tensors {
    guard let slash = key.firstIndex(of: "/") else { continue }
    variables[String(key[key.index(after: slash)...])] = tensor
  }
  return model.joiningPieces(variables)
}
