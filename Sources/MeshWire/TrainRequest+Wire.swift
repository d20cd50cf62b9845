import MeshProto
import MeshTensor

extension Pipemesh_V1_TrainRequest {
  /// A Train request for `model` on examples sent inline (no dataset on the
  /// coordinator's side), with plain SGD at `learningRate`; other fields keep
  /// their defaults for the caller to set.
  public static func inline(
    job: String, model: Pipemesh_V1_ModelSpec, inputs: Tensor, targets: Tensor, epochs: Int, batchSize: Int,
    microBatches: Int, schedule: Pipemesh_V1_ScheduleKind, learningRate: Float
  ) -> Self {
    .with {
      $0.job = job
      $0.model = model
      $0.data.inline = .with {
        $0.inputs = Pipemesh_V1_Tensor(inputs)
        $0.targets = Pipemesh_V1_Tensor(targets)
      }
      $0.epochs = Int32(epochs)
      $0.batchSize = Int32(batchSize)
      $0.microBatches = Int32(microBatches)
      $0.schedule = schedule
      $0.optimizer = .with {
        $0.sgd = .init()
        $0.learningRate = .with { $0.base = learningRate }
      }
    }
  }
}
