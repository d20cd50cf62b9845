import MeshProto
import MeshRPC
import MeshTensor

/// Loads the datasets a Train request may name; none yet besides inline data.
@Sendable func loadDataset(_ reference: Pipemesh_V1_DatasetReference) throws -> (inputs: Tensor, targets: Tensor) {
  throw RPCError(.unimplemented, "dataset \(reference.uri) cannot be loaded by this build; send the data inline")
}
