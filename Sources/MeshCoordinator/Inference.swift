import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// Forward-only pipelining: chunks of the input run through the stages
/// concurrently, each chunk's activations going partition to partition.
enum Inference {
  /// A fresh negative step number per inference, so that concurrent
  /// inferences of one job never share data-plane keys with each other or
  /// with training steps.
  private static let nextStep = Mutex<Int64>(-1)

  static func run(_ inputs: Tensor, job: String, stages: [RPCClient], chunk: Int) async throws -> Tensor {
    let step = nextStep.withLock { value in
      defer { value -= 1 }
      return value
    }
    let count = inputs.shape[0]
    let ranges = stride(from: 0, to: count, by: max(1, chunk)).map { $0..<min(count, $0 + max(1, chunk)) }
    let outputs = try await withThrowingTaskGroup(of: (Int, Tensor).self) { group in
      for (index, range) in ranges.enumerated() {
        group.addTask {
          var request = Pipemesh_V1_ForwardRequest()
          request.key = .with {
            $0.job = job
            $0.step = step
            $0.microBatch = Int32(index)
          }
          request.input.inline = Pipemesh_V1_Tensor(inputs.rows(Array(range)))
          for (stage, client) in stages.enumerated() {
            let response = try await client.call(PartitionMethods.infer, request)
            if stage == stages.count - 1 {
              return (index, try Tensor(wire: response.outputValue, what: "inference output"))
            }
            request.input.reference = response.output
          }
          preconditionFailure("a pipeline has at least one stage")
        }
      }
      var outputs = [Tensor?](repeating: nil, count: ranges.count)
      for try await (index, output) in group { outputs[index] = output }
      return outputs.map { $0! }
    }
    return outputs.count == 1 ? outputs[0] : Tensor.concatenate(outputs)
  }
}
