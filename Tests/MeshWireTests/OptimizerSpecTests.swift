import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Testing

/// Every optimizer default written out, and zero honoured where it means
/// something (proto3 `optional` tells unset from 0).
@Suite struct OptimizerSpecTests {
  @Test func anEmptySpecResolvesToConstantSGDAtTheDefaultRate() throws {
    let resolved = try Pipemesh_V1_OptimizerSpec().resolved()
    #expect(resolved.sgd == .init())
    #expect(resolved.learningRate.hasBase && resolved.learningRate.base == 0.01)
    #expect(resolved.learningRate.constant == .init())
  }

  @Test func unsetHyperParametersTakeTheirDefaultsAndZeroIsKept() throws {
    let momentum = try Pipemesh_V1_OptimizerSpec.with { $0.momentum = .init() }.resolved().momentum
    #expect(momentum.hasMomentum && momentum.momentum == 0.9)
    let zeroMomentum = try Pipemesh_V1_OptimizerSpec.with { $0.momentum = .with { $0.momentum = 0 } }.resolved()
    #expect(zeroMomentum.momentum.momentum == 0)

    let adamw = try Pipemesh_V1_OptimizerSpec.with { $0.adamw = .with { $0.beta1 = 0 } }.resolved().adamw
    #expect(adamw.beta1 == 0 && adamw.beta2 == 0.999 && adamw.epsilon == 1e-8 && adamw.weightDecay == 0.01)
    let rmsprop = try Pipemesh_V1_OptimizerSpec.with { $0.rmsprop = .with { $0.decay = 0 } }.resolved().rmsprop
    #expect(rmsprop.hasDecay && rmsprop.decay == 0 && rmsprop.epsilon == 1e-8)
    let step = try Pipemesh_V1_LearningRateSchedule.with { $0.step = .with { $0.stepSize = 5 } }.resolved().step
    #expect(step.gamma == 0.1)
  }

  @Test func zeroWhereItCannotWorkIsRefusedNamingTheField() throws {
    let cases: [(Pipemesh_V1_OptimizerSpec, String)] = [
      (.with { $0.learningRate.base = 0 }, "learning_rate.base"),
      (.with { $0.adam = .with { $0.epsilon = 0 } }, "adam.epsilon"),
      (.with { $0.adagrad = .with { $0.epsilon = 0 } }, "adagrad.epsilon"),
      (
        .with {
          $0.learningRate.step = .with {
            $0.stepSize = 1
            $0.gamma = 0
          }
        }, "learning_rate.step.gamma"
      ),
    ]
    for (spec, field) in cases {
      let error = #expect(throws: WireError.self) { _ = try spec.resolved() }
      #expect(error?.rpcError.code == .invalidArgument)
      #expect(error?.message.hasPrefix(field) == true, "\(String(describing: error))")
      #expect(throws: WireError.self) { _ = try makeOptimizer(spec) }
    }
  }

  /// A resolved spec updates a variable exactly as the spec it came from.
  @Test func resolvingChangesNothingTheOptimizerDoes() throws {
    for spec in [
      Pipemesh_V1_OptimizerSpec(), .with { $0.adam = .with { $0.beta2 = 0.9 } },
      .with { $0.momentum = .with { $0.nesterov = true } }, .with { $0.rmsprop = .init() },
    ] {
      var variables = [Tensor(shape: [3], scalars: [1, 2, 3]), Tensor(shape: [3], scalars: [1, 2, 3])]
      var slots: [[String: Tensor]] = [[:], [:]]
      for (index, optimizer) in [try makeOptimizer(spec), try makeOptimizer(spec.resolved())].enumerated() {
        for step in 1...3 {
          optimizer.update(
            variable: &variables[index], gradient: Tensor(shape: [3], scalars: [0.5, -1, 2]), slots: &slots[index],
            step: step)
        }
      }
      #expect(variables[0].scalars == variables[1].scalars, "\(spec)")
      #expect(variables[0].scalars != [1, 2, 3])
      #expect(try spec.resolved().resolved() == spec.resolved())
    }
  }
}
