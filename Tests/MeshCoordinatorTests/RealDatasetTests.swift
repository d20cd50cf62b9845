import Foundation
import MeshData
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// An MLP and a small CNN on the bundled UCI handwritten digits, trained
/// through the mesh, reach the accuracy of the same models trained in-process.
@Suite(.serialized) struct RealDatasetTests {
  static func spec(_ name: String) throws -> Pipemesh_V1_ModelSpec {
    try Pipemesh_V1_ModelSpec(
      jsonString: String(contentsOfFile: Repository.path("examples/\(name).json"), encoding: .utf8))
  }

  @Test(arguments: ["mlp-digits", "cnn-digits"])
  func pipelinedModelReachesInProcessAccuracy(example: String) async throws {
    let mesh = try await PipelineTrainingTests.mesh.value
    let coordinator = try await mesh.coordinator([[0], [1]], name: "digits-\(example)")
    let model = try Self.spec(example)
    let digits = try Datasets.bundled(named: "digits")
    let inputs = digits.inputs.reshaped(to: [digits.count] + model.inputShape.map { Int($0) })
    let held = Int((Double(Float(0.2)) * Double(digits.count)).rounded())

    var request = Pipemesh_V1_TrainRequest()
    request.job = example
    request.model = model
    request.data.dataset = .with { $0.uri = "digits" }
    request.epochs = 2
    request.batchSize = 64
    request.microBatches = 4
    request.schedule = .scheduleOneFOneB
    request.optimizer = .with {
      $0.sgd = .init()
      $0.learningRate = .with { $0.base = 0.02 }
    }
    request.validationFraction = 0.2
    request.shuffleSeed = 3
    var evaluations: [Pipemesh_V1_TrainProgress] = []
    for try await progress in try RPCClient(target: coordinator.endpoint).stream(CoordinatorMethods.train, request)
    where progress.evaluated {
      evaluations.append(progress)
    }
    let pipelined = try #require(evaluations.last).validationAccuracy

    let built = try makeModel(model)
    let labels = digits.labels
    let inProcess = try await onOwnThread {
      var reference = InProcessReference(model: built, learningRate: 0.02)
      _ = reference.train(
        inputs: inputs, targets: labels, epochs: 2, batchSize: 64, seed: 3, validationFraction: Double(Float(0.2)))
      return reference.validationAccuracy(
        inputs: inputs, targets: labels, seed: 3, validationFraction: Double(Float(0.2)))
    }

    #expect(pipelined > 0.8, "\(example) reached only \(pipelined)")
    // The same arithmetic up to summation order: at most a couple of examples apart.
    #expect(
      abs(pipelined - inProcess) <= 2.0 / Double(held), "\(example): pipelined \(pipelined), in-process \(inProcess)")
  }
}
