import Foundation
import MeshCoordinator
import MeshInProcess
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Testing

/// Solve: linear and ridge regression in closed form through the coordinator's API.
@Suite struct ClosedFormTests {
  /// 200 examples of 5 features, targets x · w + 0.5 plus noise of deviation 0.01.
  static let truth: [Float] = [1.5, -2, 0.25, 0, 3]
  static func data() -> (Tensor, Tensor) {
    let x = Tensor.randomNormal([200, 5], seed: 21)
    let noise = Tensor.randomNormal([200], standardDeviation: 0.01, seed: 22)
    let y = (0..<200).map { row in
      (0..<5).reduce(Float(0.5)) { $0 + x.scalars[row * 5 + $1] * truth[$1] } + noise.scalars[row]
    }
    return (x, Tensor(shape: [200], scalars: y))
  }

  static func model(l2: Float, layers: [Pipemesh_V1_LayerSpec]? = nil) -> Pipemesh_V1_ModelSpec {
    .with {
      $0.inputShape = [5]
      $0.layers = layers ?? [.with { $0.dense = .with { $0.units = 1 } }]
      $0.loss.meanSquaredError = .init()
      $0.loss.l2 = l2
    }
  }

  static func request(l2: Float, name: String = "") -> Pipemesh_V1_SolveRequest {
    let (x, y) = data()
    return .with {
      $0.name = name
      $0.model = model(l2: l2)
      $0.data.inline = .with {
        $0.inputs = Pipemesh_V1_Tensor(x)
        $0.targets = Pipemesh_V1_Tensor(y)
      }
      $0.validationFraction = 0.25
      $0.shuffleSeed = 8
    }
  }

  @Test func leastSquaresFindsTheWeightsThatMadeTheData() async throws {
    let mesh = try InProcessMesh(stages: 1)
    let outcome = await Result(catching: {
      let solved = try await mesh.coordinatorChannel().call(CoordinatorMethods.solve, Self.request(l2: 0))
      let kernel = try Tensor(wire: solved.kernel, what: "kernel")
      #expect(kernel.shape == [5, 1])
      for (found, true_) in zip(kernel.scalars, Self.truth) { #expect(abs(found - true_) < 0.01, "\(kernel.scalars)") }
      #expect(abs(try Tensor(wire: solved.bias, what: "bias").scalars[0] - 0.5) < 0.01)
      // The noise's variance (1e-4) is all that is left, on both splits.
      #expect(solved.trainingLoss < 2e-4 && solved.validationLoss < 2e-4, "\(solved)")
      #expect(solved.validationR2 > 0.9999, "\(solved.validationR2)")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// The ridge solution is where the gradient of the objective gradient descent minimises —
  /// mean squared error over the training split plus (λ/2)·Σw² — is zero, computed here in
  /// float64 from the definition, not by the solver's normal equations.
  @Test func ridgeSolvesTheObjectiveGradientDescentMinimises() async throws {
    let mesh = try InProcessMesh(stages: 1)
    let outcome = await Result(catching: {
      let l2: Float = 0.5
      let solved = try await mesh.coordinatorChannel().call(
        CoordinatorMethods.solve, Self.request(l2: l2, name: "ridge"))
      let w = try Tensor(wire: solved.kernel, what: "kernel").scalars.map(Double.init)
      let b = Double(try Tensor(wire: solved.bias, what: "bias").scalars[0])
      let (x, y) = Self.data()
      let train = PortableRandom.heldOutSplit(count: 200, validationFraction: 0.25, seed: 8).train
      var gradient = [Double](repeating: 0, count: 6)
      for row in train {
        let features = (0..<5).map { Double(x.scalars[row * 5 + $0]) }
        let residual = zip(features, w).reduce(b) { $0 + $1.0 * $1.1 } - Double(y.scalars[row])
        for j in 0..<5 { gradient[j] += 2 * residual * features[j] / Double(train.count) }
        gradient[5] += 2 * residual / Double(train.count)
      }
      for j in 0..<5 { gradient[j] += Double(l2) * w[j] }
      #expect(gradient.allSatisfy { abs($0) < 1e-4 }, "gradient at the solution: \(gradient)")
      // The penalty pulls the weights in from the truth.
      #expect(zip(w, Self.truth).contains { abs($0 - Double($1)) > 0.05 }, "\(w)")

      // Registered, the model infers x · w + b.
      #expect(solved.model.name == "ridge" && solved.model.version == 1, "\(solved.model)")
      let rows = x.rows([0, 1, 2])
      let answered = try Tensor(
        wire: try await mesh.coordinatorChannel().call(
          CoordinatorMethods.infer,
          .with {
            $0.model = "ridge"
            $0.inputs = Pipemesh_V1_Tensor(rows)
          }
        ).outputs, what: "outputs")
      for row in 0..<3 {
        let expected = (0..<5).reduce(b) { $0 + Double(rows.scalars[row * 5 + $1]) * w[$1] }
        #expect(abs(Double(answered.scalars[row]) - expected) < 1e-4)
      }
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  @Test func onlyALinearModelWithSolvableDataIsSolved() async throws {
    let mesh = try InProcessMesh(stages: 1)
    let outcome = await Result(catching: {
      func refusal(_ change: (inout Pipemesh_V1_SolveRequest) -> Void) async -> RPCError? {
        var request = Self.request(l2: 0)
        change(&request)
        return await #expect(throws: RPCError.self) {
          _ = try await mesh.coordinatorChannel().call(CoordinatorMethods.solve, request)
        }
      }
      let relu = await refusal { $0.model.layers[0].dense.activation = .relu }
      #expect(relu?.code == .invalidArgument && relu?.message.contains("without activation") == true)
      let deep = await refusal {
        $0.model.layers = [
          .with { $0.dense = .with { $0.units = 4 } }, .with { $0.dense = .with { $0.units = 1 } },
        ]
      }
      #expect(deep?.code == .invalidArgument)
      let classifier = await refusal { $0.model.loss.softmaxCrossEntropy = .init() }
      #expect(classifier?.code == .invalidArgument)
      // Fewer training examples than features and no penalty: no single solution.
      let underdetermined = await refusal {
        $0.data.inline.inputs = Pipemesh_V1_Tensor(Tensor.randomNormal([4, 5], seed: 1))
        $0.data.inline.targets = Pipemesh_V1_Tensor(Tensor.randomNormal([4], seed: 2))
      }
      #expect(
        underdetermined?.code == .invalidArgument && underdetermined?.message.contains("cannot be solved") == true,
        "\(String(describing: underdetermined))")
      let wide = await refusal {
        $0.model.inputShape = [5000]
        $0.data.inline.inputs = Pipemesh_V1_Tensor(Tensor(shape: [2, 5000], repeating: 1))
        $0.data.inline.targets = Pipemesh_V1_Tensor(Tensor(shape: [2], repeating: 1))
      }
      #expect(wide?.code == .invalidArgument && wide?.message.contains("4096") == true)
      // A million outputs would ask the coordinator for a 16 GiB right-hand side.
      let manyOutputs = await refusal {
        $0.model.layers[0].dense.units = 1 << 20
        $0.data.inline.targets = Pipemesh_V1_Tensor(Tensor(shape: [1, 1 << 20], repeating: 1))
        $0.data.inline.inputs = Pipemesh_V1_Tensor(Tensor(shape: [1, 5], repeating: 1))
      }
      #expect(manyOutputs?.code == .invalidArgument && manyOutputs?.message.contains("4096 outputs") == true)
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }
}
