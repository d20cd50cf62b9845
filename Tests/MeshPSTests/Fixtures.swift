import Foundation
import MeshPS
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire

/// Builders for the messages the tests send.
enum Fixtures {
  static func variable(
    _ name: String, shape: [Int], constant: Float = 0, learningRate: Float = 0.5,
    optimizer: Pipemesh_V1_OptimizerSpec.OneOf_Kind = .sgd(.init())
  ) -> Pipemesh_V1_VariableDefinition {
    .with {
      $0.name = name
      $0.shape = shape.map { Int64($0) }
      $0.dtype = .float32
      $0.initializer = .with { $0.constant = constant }
      $0.optimizer = .with {
        $0.kind = optimizer
        $0.learningRate = .with { $0.base = learningRate }
      }
    }
  }

  static func consistency(_ mode: Pipemesh_V1_Consistency.OneOf_Mode, replicas: Int32 = 1) -> Pipemesh_V1_Consistency {
    .with {
      $0.mode = mode
      $0.replicas = replicas
    }
  }

  static func filled(_ shape: [Int], _ value: Float) -> Tensor { .filled(shape, with: value) }

  /// A ps service in this process over the in-process transport, a client of
  /// it as a partition holds one, and a channel to call it directly.
  static func inProcessPS() throws -> (client: ParameterServerClient, channel: any RPCChannel) {
    let network = InProcessNetwork()
    let endpoint = "ps.in-process:1"
    try network.serve([ParameterServerService(store: ParameterStore(), checkpointer: nil)], at: endpoint)
    let dialer = network.dialer(identity: "partition")
    return (try ParameterServerClient(endpoints: [endpoint], dialer: dialer), try dialer.channel(to: endpoint))
  }

  /// Starts one ps process, optionally with a checkpoint directory (and
  /// then periodic checkpoints every `seconds`, 0 for none, keeping `keep`).
  static func startPS(
    _ logs: TemporaryDirectory, name: String = "ps", checkpoints: String? = nil, seconds: Int = 0, keep: Int = 3,
    listen: String? = nil
  ) async throws -> RunningService {
    let arguments =
      checkpoints.map {
        ["--checkpoint-dir", $0, "--checkpoint-seconds", "\(seconds)", "--checkpoint-keep", "\(keep)"]
      }
      ?? []
    return try await RunningService.start("ps", arguments, log: logs.file("\(name).log"), listen: listen)
  }
}
