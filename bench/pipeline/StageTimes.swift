// `pipeline-bench --stage-times SPEC --split P,… [--rows N] [--repeats R]`: each stage of a
// model split at the given places (LAYER, or LAYER:INPUTS inside a Dense or Conv2D layer),
// timed here as a partition runs it: the stage's layers cut where it begins and ends, one
// training forward and backward of a micro-batch of N examples (32 by default), the median
// of R runs (5) after one untimed. Prints one JSON line: {"stages": [{"forward": s,
// "backward": s}, …]}. bench/planner judges the planner's splits by these times.
import Foundation
import MeshProto
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
    let variables = cut.initialVariables(layers: layers)
    let input = Tensor.zeros([rows] + cut.activationShapes[layers.lowerBound])
    let upstream = Tensor.filled([rows] + cut.activationShapes[layers.upperBound], with: 1)
    let context = ForwardContext(training: true, seed: 1)
    var forwards: [Duration] = []
    var backwards: [Duration] = []
    let clock = ContinuousClock()
    for run in 0...repeats {
      var forward: StageForward?
      let forwardTime = clock.measure {
        forward = cut.forwardStage(
          input, variables: variables, layers: layers, context: context, inputGradient: index > 0)
      }
      let backwardTime = clock.measure { _ = forward!.backward(upstream) }
      // The first run warms the caches and the buffer pool.
      if run > 0 {
        forwards.append(forwardTime)
        backwards.append(backwardTime)
      }
    }
    func median(_ times: [Duration]) -> Double {
      let sorted = times.sorted()
      let middle = sorted[sorted.count / 2]
      return Double(middle.components.seconds) + Double(middle.components.attoseconds) * 1e-18
    }
    stages.append(["forward": median(forwards), "backward": median(backwards)])
  }
  let json = try JSONSerialization.data(withJSONObject: ["stages": stages], options: [.sortedKeys])
  print(String(decoding: json, as: UTF8.self))
}

struct StageTimesError: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
