import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// Linear and ridge regression in closed form (a Solve request): the
/// minimum of the objective gradient descent minimises for a one-layer
/// linear model, on the split a Train of the same data would use.
enum ClosedForm {
  /// The most input features, and outputs, a Solve takes (its normal
  /// equations hold features² and features × outputs scalars: 64 MiB each at
  /// this bound).
  static let maxFeatures = 4096

  struct Solution {
    let kernel: Tensor
    let bias: Tensor
    let trainingLoss: Double
    let validationLoss: Double
    let validationR2: Double
    let normalization: Pipemesh_V1_InputNormalization
  }

  /// Solves `request` for `model` on `inputs` and `targets`; a model or data
  /// it cannot solve is INVALID_ARGUMENT naming why.
  static func solve(
    _ request: Pipemesh_V1_SolveRequest, model: Sequential, inputs: Tensor, targets: Tensor
  ) throws -> Solution {
    guard model.layers.count == 1, let dense = model.layers[0] as? Dense, dense.activation == .linear,
      model.spec.loss == .meanSquaredError
    else {
      throw CoordinatorError(
        .invalidRequest,
        "model: Solve fits one Dense layer without activation under mean squared error (linear or ridge "
          + "regression); train other models with Train")
    }
    guard model.activationShapes[0].count == 1, dense.inputSize <= maxFeatures,
      dense.outputSize <= maxFeatures
    else {
      throw CoordinatorError(
        .invalidRequest,
        "model input_shape \(model.activationShapes[0]) and units \(dense.outputSize): Solve takes examples of "
          + "one axis of at most \(maxFeatures) features and at most \(maxFeatures) outputs")
    }
    guard request.validationFraction >= 0, request.validationFraction < 1 else {
      throw CoordinatorError(.invalidRequest, "validation_fraction must be in [0, 1)")
    }
    let inputs =
      inputs.rank == 2 ? inputs : inputs.reshaped(to: [inputs.shape[0], inputs.scalarCount / max(1, inputs.shape[0])])
    try model.checkInput(inputs, "the data does not fit the model")
    let targets =
      targets.rank == 1 && dense.outputSize == 1 ? targets.reshaped(to: [targets.shape[0], 1]) : targets
    try model.checkTarget(targets, batchSize: inputs.shape[0], "the targets do not fit the model")
    let split = PortableRandom.heldOutSplit(
      count: inputs.shape[0], validationFraction: Double(request.validationFraction), seed: request.shuffleSeed)
    guard !split.train.isEmpty else {
      throw CoordinatorError(
        .invalidRequest,
        "validation_fraction \(request.validationFraction) leaves no training example")
    }
    let training = inputs.rows(split.train)
    let normalization = try Pipemesh_V1_InputNormalization.fitted(
      request.normalization.method, on: training, model: model, field: "normalization")
    let normalizer = try normalization.normalizer(features: dense.inputSize, field: "normalization")
    func rescaled(_ inputs: Tensor) -> Tensor { normalizer?.apply(to: inputs) ?? inputs }
    let x = rescaled(training)
    let y = targets.rows(split.train)
    // Gradient descent minimises mean((xW + b − y)²) + (λ/2)·Σw² over N·O scalars: the same minimum
    // as Σ(xW + b − y)² + (λ·N·O/2)·Σw², the closed form's objective.
    let l2 = Double(model.spec.l2Penalty)
    let ridge = Float(l2 * Double(y.scalarCount) / 2)
    let fitted: LinearModel
    do {
      fitted = try LinearRegression.closedForm(x: x, y: y, ridge: ridge)
    } catch let error as TensorError {
      throw CoordinatorError(.invalidRequest, "the training split cannot be solved: \(error.message)")
    }
    let squaredKernel = fitted.weights.scalars.reduce(0.0) { $0 + Double($1) * Double($1) }
    let trainingLoss = meanSquaredError(fitted.predict(x), y) + l2 / 2 * squaredKernel
    var (validationLoss, validationR2) = (0.0, 0.0)
    if !split.validation.isEmpty {
      let validationTargets = targets.rows(split.validation)
      let predicted = fitted.predict(rescaled(inputs.rows(split.validation)))
      validationLoss = meanSquaredError(predicted, validationTargets)
      validationR2 = TrainingJob.determination(
        squaredErrors: validationLoss * Double(validationTargets.scalarCount), targets: validationTargets)
    }
    return Solution(
      kernel: fitted.weights, bias: fitted.bias, trainingLoss: trainingLoss, validationLoss: validationLoss,
      validationR2: validationR2, normalization: normalization)
  }

  private static func meanSquaredError(_ predicted: Tensor, _ expected: Tensor) -> Double {
    zip(predicted.scalars, expected.scalars).reduce(0.0) { $0 + Double(($1.0 - $1.1) * ($1.0 - $1.1)) }
      / Double(max(1, expected.scalarCount))
  }
}
