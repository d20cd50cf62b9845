import ArgumentParser
import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// `pipemesh solve`: linear or ridge regression in closed form on a running
/// coordinator, beside the gradient descent `train` runs.
struct Solve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Fit a linear or ridge regression in closed form on a running coordinator.",
    discussion: """
      The model is one Dense layer without activation with a mean squared error loss, whose l2 makes it \
      ridge regression (examples/ridge-regression.json). The coordinator solves the normal equations on the \
      training split a `train` of the same --dataset, --validation and --seed uses, rescaled as --normalize \
      says, minimising the objective gradient descent minimises, and answers the weights with the training \
      objective and the held-out MSE and R². With --name it registers the solution as that model's next \
      version, which `pipemesh infer --model NAME` serves.

      Example: pipemesh solve --coordinator 127.0.0.1:7000 --model examples/ridge-regression.json \
      --dataset synthetic-regression --regression --name ridge
      """)

  @OptionGroup var client: ClientOptions
  @OptionGroup var data: DataOptions

  @Option(help: "Register the solution as the next version of this model.")
  var name: String?

  func run() async throws {
    try await withExitCodes {
      guard let spec = try data.modelSpec() else {
        throw ValidationError(
          "give the linear model with --model: one Dense layer without activation and a mean squared error loss "
            + "(examples/ridge-regression.json)")
      }
      let solved = try await client.client().call(
        CoordinatorMethods.solve,
        .with {
          $0.name = name ?? ""
          $0.model = spec
          $0.data.dataset = data.datasetReference
          $0.validationFraction = data.validation
          $0.shuffleSeed = data.seed
          $0.normalization.method = data.normalization(for: spec)
        })
      if client.json { return try client.printJSON(solved) }
      let kernel = try Tensor(wire: solved.kernel, what: "kernel")
      let bias = try Tensor(wire: solved.bias, what: "bias")
      let outputs = kernel.shape.last ?? 1
      let rows =
        kernel.scalars.enumerated().map { index, value in
          (outputs == 1 ? "kernel[\(index)]" : "kernel[\(index / outputs), \(index % outputs)]", value)
        } + bias.scalars.enumerated().map { ("bias[\($0.offset)]", $0.element) }
      for (label, value) in rows.prefix(Self.shownParameters) {
        say(label.padding(toLength: 20, withPad: " ", startingAt: 0) + String(format: "%13.6f", value))
      }
      if rows.count > Self.shownParameters {
        say("  … \(rows.count - Self.shownParameters) more with --json")
      }
      say(String(format: "training objective  %13.6f (mean squared error + l2/2 · Σ kernel²)", solved.trainingLoss))
      if data.validation > 0 {
        say(String(format: "validation MSE      %13.6f", solved.validationLoss))
        say(String(format: "validation R²       %13.6f", solved.validationR2))
      }
      if solved.hasModel {
        say("registered model \(solved.model.name) version \(solved.model.version)")
      }
    }
  }

  /// Parameters printed one a line; --json gives them all.
  static let shownParameters = 16
}
