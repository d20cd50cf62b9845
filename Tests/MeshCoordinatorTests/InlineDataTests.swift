import Foundation
import MeshInProcess
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Testing

/// Data as users have it, sent inline: integer class labels and one
/// regression target per example as `[N]` train exactly as float32 labels
/// and `[N, 1]` targets do.
@Suite struct InlineDataTests {
  /// The per-step losses of a Train request on an in-process mesh.
  static func losses(_ request: Pipemesh_V1_TrainRequest, on mesh: InProcessMesh) async throws -> [Double] {
    var losses: [Double] = []
    for try await progress in mesh.coordinatorChannel().stream(CoordinatorMethods.train, request)
    where !progress.done && !progress.evaluated {
      losses.append(progress.loss)
    }
    return losses
  }

  static func request(_ job: String, model: Pipemesh_V1_ModelSpec, inputs: Tensor, targets: Tensor)
    -> Pipemesh_V1_TrainRequest
  {
    .inline(
      job: job, model: model, inputs: inputs, targets: targets, epochs: 1, batchSize: 16, microBatches: 2,
      schedule: .scheduleOneFOneB, learningRate: 0.1)
  }

  /// Little-endian integers of `width` bytes as a wire tensor.
  static func integers(_ values: [Float], dtype: Pipemesh_V1_DType) -> Pipemesh_V1_Tensor {
    var data = Data()
    for value in values {
      if dtype == .int32 {
        withUnsafeBytes(of: Int32(value).littleEndian) { data.append(contentsOf: $0) }
      } else {
        withUnsafeBytes(of: Int64(value).littleEndian) { data.append(contentsOf: $0) }
      }
    }
    return .with {
      $0.dtype = dtype
      $0.shape = [Int64(values.count)]
      $0.data = data
    }
  }

  @Test func integerLabelsTrainAsFloatLabelsDo() async throws {
    let mesh = try InProcessMesh(stages: 2)
    let outcome = await Result(catching: {
      let (inputs, labels) = PipelineTrainingTests.classification()
      let floats = try await Self.losses(
        Self.request("float-labels", model: PipelineTrainingTests.mlp, inputs: inputs, targets: labels), on: mesh)
      #expect(floats.count == 4)
      for dtype in [Pipemesh_V1_DType.int32, .int64] {
        var request = Self.request(
          "labels-\(dtype.rawValue)", model: PipelineTrainingTests.mlp, inputs: inputs, targets: labels)
        request.data.inline.targets = Self.integers(labels.scalars, dtype: dtype)
        #expect(try await Self.losses(request, on: mesh) == floats, "\(dtype)")
      }
      // Beyond what float32 holds exactly: refused, naming the element.
      var huge = Self.request("huge-labels", model: PipelineTrainingTests.mlp, inputs: inputs, targets: labels)
      huge.data.inline.targets = Self.integers(
        labels.scalars.enumerated().map { $0 == 5 ? 33_554_432 : $1 }, dtype: .int64)
      let refused = await #expect(throws: RPCError.self) { _ = try await Self.losses(huge, on: mesh) }
      #expect(refused?.code == .invalidArgument)
      #expect(
        refused?.message.contains("inline targets holds 33554432 at element 5") == true,
        "\(String(describing: refused))")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  @Test func oneRegressionTargetPerExampleMayComeAsAVector() async throws {
    let mesh = try InProcessMesh(stages: 2)
    let outcome = await Result(catching: {
      var model = PipelineTrainingTests.mlp
      model.layers[model.layers.count - 1].dense.units = 1
      model.loss = .with { $0.meanSquaredError = .init() }
      let (inputs, labels) = PipelineTrainingTests.classification()
      let column = try await Self.losses(
        Self.request("targets-column", model: model, inputs: inputs, targets: labels.reshaped(to: [64, 1])), on: mesh)
      let vector = try await Self.losses(
        Self.request("targets-vector", model: model, inputs: inputs, targets: labels), on: mesh)
      #expect(column.count == 4 && vector == column, "\(vector) vs \(column)")
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }
}
