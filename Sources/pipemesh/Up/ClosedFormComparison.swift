import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// For a linear regression (one Dense layer without activation, mean
/// squared error), the closed-form solution beside the one gradient descent
/// reached, on the same split and objective: printed side by side and
/// written to the run folder's closed-form.json.
enum ClosedFormComparison {
  /// Whether `spec` is a model Solve fits.
  static func applies(to spec: Pipemesh_V1_ModelSpec) -> Bool {
    guard spec.layers.count == 1, case .dense(let dense) = spec.layers[0].kind, dense.tiedTo.isEmpty,
      dense.activation == .none, case .meanSquaredError = spec.loss.kind
    else { return false }
    return spec.inputShape.count == 1
  }

  /// Solves the job `request` trained, compares with its checkpoint, prints and writes the result.
  static func compare(
    _ request: Pipemesh_V1_TrainRequest, final: Pipemesh_V1_TrainProgress?, coordinator: any RPCChannel,
    run: RunFolder
  ) async throws {
    let solved = try await coordinator.call(
      CoordinatorMethods.solve,
      .with {
        $0.model = request.model
        $0.data = request.data
        $0.validationFraction = request.validationFraction
        $0.shuffleSeed = request.shuffleSeed
        $0.normalization.method = request.normalization.method
      })
    try run.write(try solved.jsonString(), to: "closed-form.json")
    let trained = try checkpointVariables(at: run.file("checkpoint.safetensors"), of: try makeModel(request.model))
    let closedKernel = try Tensor(wire: solved.kernel, what: "kernel").scalars
    let closedBias = try Tensor(wire: solved.bias, what: "bias").scalars
    let kernel = trained["dense0/kernel"]?.scalars ?? []
    let bias = trained["dense0/bias"]?.scalars ?? []
    say("closed form beside gradient descent (the same split and objective):")
    say("                     gradient descent   closed form")
    let rows =
      zip(kernel, closedKernel).enumerated().map { ("kernel[\($0.offset)]", $0.element.0, $0.element.1) }
      + zip(bias, closedBias).enumerated().map { ("bias[\($0.offset)]", $0.element.0, $0.element.1) }
    for (name, descended, closed) in rows.prefix(12) {
      say(name.padding(toLength: 20, withPad: " ", startingAt: 0) + String(format: "%16.4f %13.4f", descended, closed))
    }
    if rows.count > 12 { say("  … \(rows.count - 12) more in closed-form.json and checkpoint.safetensors") }
    if let final {
      say(
        String(format: "validation MSE      %16.6f %13.6f", final.validationLoss, solved.validationLoss))
      say(String(format: "validation R²       %16.6f %13.6f", final.validationR2, solved.validationR2))
    }
    let largest = zip(kernel + bias, closedKernel + closedBias).map { abs($0 - $1) }.max() ?? 0
    say(String(format: "largest difference of a parameter: %.4g", largest))
  }
}
