// `pipeline-bench --stage-times SPEC --split P,… [--rows N] [--repeats R]`: each stage of a
// model split at the given places (LAYER, or LAYER:INPUTS inside a Dense, Conv2D, LSTM, GRU or Transformer layer),
// timed here as a partition runs it: the stage's layers cut where it begins and ends, one
// training forward and backward of a micro-batch of N examples (32 by default), the median
// of R runs (5) after one untimed. Prints one JSON line: {"stages": [{"forward": s,
// "backward": s}, …]}. bench/planner judges the planner's splits by these times.
import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

func printStageTimes(spec path: String, split: String, rows: Int, repeats: Int) throws {
  let model = try makeModel(Pipemesh_V1_ModelSpec(jsonString: String(contentsOfFile: path, encoding: .utf8)))
  let places = try split.split(separator: ",").map { place -> LayerPosition in
    let parts = place.split(separator: ":", omittingEmptySubsequences: false).map { Int($0) }
    guard (1...2).contains(parts.count), let layer = parts[0], let inputs = parts.count == 2 ? parts[1] : 0 else {
      throw StageTimesError("--split \(split): \(place) is no place (LAYER or LAYER:INPUTS)")
    }
    return LayerPosition(layer: layer, inputs: inputs)
  }
  let bounds = [LayerPosition(layer: 0)] + places + [LayerPosition(layer: model.layers.count)]
  var stages: [[String: Double]] = []
  for (index, (start, end)) in zip(bounds, bounds.dropFirst()).enumerated() {
    let (cut, layers) = try model.stage(from: start, to: end)
    let timing = cut.timeStage(layers, inputGradient: index > 0, rows: rows, repeats: repeats)
    stages.append(["forward": timing.forward.seconds, "backward": timing.backward.seconds])
  }
  let json = try JSONSerialization.data(withJSONObject: ["stages": stages], options: [.sortedKeys])
  print(String(decoding: json, as: UTF8.self))
}

struct StageTimesError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
