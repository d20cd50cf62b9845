import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// Forward-only pipelining: chunks of the input run through the stages
/// concurrently, each chunk's activations going partition to partition (or,
/// when small, through the coordinator in the answers).
enum Inference {
  /// A fresh negative step number per inference, so that concurrent
  /// inferences of one job never share data-plane keys with each other or
  /// with training steps.
  private static let nextStep = Mutex<Int64>(-1)

  /// Runs `inputs` through `stages` in chunks of `chunk` rows; `trace`
  /// notes every call (and shows this run).
  static func run(
    _ inputs: Tensor, job: String, stages: [any RPCChannel], chunk: Int, trace: TraceRecorder? = nil
  ) async throws -> Tensor {
    let step = nextStep.withLock { value in
      defer { value -= 1 }
      return value
    }
    trace?.show(step: step)
    let count = inputs.shape[0]
    let ranges = stride(from: 0, to: count, by: max(1, chunk)).map { $0..<min(count, $0 + max(1, chunk)) }
    // One chunk per stage in flight (plus one) keeps every stage busy
    // without flooding the partitions.
    let window = stages.count + 1
    let outputs = try await withThrowingTaskGroup(of: (Int, Tensor).self) { group in
      func start(_ index: Int) {
        group.addTask {
          var request = Pipemesh_V1_ForwardRequest()
          request.key = .with {
            $0.job = job
            $0.step = step
            $0.microBatch = Int32(index)
          }
          // One chunk of every row is the inputs themselves, not a gathered copy.
          let chunk = ranges.count == 1 ? inputs : inputs.rows(Array(ranges[index]))
          request.input.inline = Pipemesh_V1_Tensor(sharing: chunk)
          for (stage, client) in stages.enumerated() {
            let call = { [request] in try await client.call(PartitionMethods.infer, request) }
            let response =
              if let trace {
                try await trace.record(
                  .forward(stage, index), stage: stage, replica: 0, step: step, partition: client.target, call)
              } else {
                try await call()
              }
            if stage == stages.count - 1 {
              do {
                return (index, try Tensor(wire: response.outputValue, what: "inference output"))
              } catch let error as WireError {
                throw error.answered(by: "stage \(stage) at \(client.target)")
              }
            }
            // Small activations come back inline and go on inline; large
            // ones go partition to partition.
            if response.hasOutputValue {
              request.input.inline = response.outputValue
            } else {
              request.input.reference = response.output
            }
          }
          preconditionFailure("a pipeline has at least one stage")
        }
      }
      var next = 0
      while next < min(window, ranges.count) {
        start(next)
        next += 1
      }
      var outputs = [Tensor?](repeating: nil, count: ranges.count)
      for try await (index, output) in group {
        outputs[index] = output
        if next < ranges.count {
          start(next)
          next += 1
        }
      }
      return outputs.map { $0! }
    }
    return outputs.count == 1 ? outputs[0] : Tensor.concatenate(outputs)
  }
}
