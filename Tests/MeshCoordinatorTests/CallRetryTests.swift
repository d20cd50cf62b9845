import Foundation
import MeshCoordinator
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import SwiftProtobuf
import Synchronization
import Testing

/// A coordinator whose every pipeline call loses its first answer — the
/// request reaches the partition, the coordinator sees UNAVAILABLE, as when
/// a connection drops — sends each again, and the partitions (real
/// processes) answer the repeats from what they computed: the job trains
/// exactly as one whose answers all arrived.
@Suite struct CallRetryTests {
  /// Dials real gRPC channels whose Forward, Backward, BackwardWeights,
  /// GradientNorm and Commit calls each lose their first answer.
  final class AnswerLosingDialer: RPCDialer {
    static let lossy: Set<String> = [
      PartitionMethods.forward.path, PartitionMethods.backward.path, PartitionMethods.backwardWeights.path,
      PartitionMethods.gradientNorm.path, PartitionMethods.commit.path,
    ]
    /// The calls whose answer was lost once: target, method and request bytes.
    let lost = Mutex<Set<Data>>([])
    /// Pipeline calls sent, first ones and repeats.
    let sent = Mutex(0)

    func channel(to target: String) throws -> any RPCChannel {
      Channel(inner: try RPCClient(target: target), dialer: self)
    }

    struct Channel: RPCChannel {
      let inner: any RPCChannel
      let dialer: AnswerLosingDialer
      var target: String { inner.target }

      func call<Request, Response>(
        _ method: UnaryMethod<Request, Response>, _ request: Request, options: CallOptions
      ) async throws -> Response {
        let response = try await inner.call(method, request, options: options)
        guard AnswerLosingDialer.lossy.contains(method.path) else { return response }
        dialer.sent.withLock { $0 += 1 }
        let call = Data("\(target)\(method.path)".utf8) + (try request.serializedData())
        if dialer.lost.withLock({ $0.insert(call).inserted }) {
          throw RPCError(.unavailable, "the answer to \(method.path) was lost (the test drops every first answer)")
        }
        return response
      }

      func stream<Request, Response>(
        _ method: ServerStreamingMethod<Request, Response>, _ request: Request, options: CallOptions
      ) -> ResponseStream<Response> {
        inner.stream(method, request, options: options)
      }

      func clientStream<Request, Response>(
        _ method: ClientStreamingMethod<Request, Response>, options: CallOptions,
        requests: @Sendable (RequestWriter<Request>) async throws -> Void
      ) async throws -> Response {
        try await inner.clientStream(method, options: options, requests: requests)
      }

      func reconnect(timeout: Duration) async -> Bool { await inner.reconnect(timeout: timeout) }
    }
  }

  /// Under ZB-H1 (split backwards: BackwardWeights calls), and under
  /// PipeDream-2BW with clipping (GradientNorm calls, and commits of two
  /// overlapping steps, whose repeats may come after the next step's commit).
  @Test(arguments: [(Pipemesh_V1_ScheduleKind.scheduleZeroBubbleH1, Float(0)), (.schedulePipedream2Bw, 1)])
  func everyPipelineCallAnsweredTwiceTrainsTheSameWeights(schedule: Pipemesh_V1_ScheduleKind, clip: Float)
    async throws
  {
    let mesh = try await LocalMesh(partitions: 2)
    let (inputs, targets) = PipelineTrainingTests.classification()
    func train(_ coordinator: any RPCChannel, _ job: String) async throws -> [Pipemesh_V1_TrainProgress] {
      try await PipelineTrainingTests.train(
        coordinator, job: job, model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets, microBatches: 4,
        schedule: schedule, epochs: 2, splitPoints: [2], clipGlobalNorm: clip)
    }
    func infer(_ coordinator: any RPCChannel, _ job: String) async throws -> Tensor {
      let response = try await coordinator.call(
        CoordinatorMethods.infer,
        .with {
          $0.job = job
          $0.inputs = Pipemesh_V1_Tensor(sharing: inputs)
        })
      return try Tensor(wire: response.outputs, what: "outputs")
    }
    let reference = try await mesh.coordinator([[0], [1]], name: "reference")
    let referenceClient = try RPCClient(target: reference.endpoint)
    let expected = try await train(referenceClient, "answered")
    let expectedOutputs = try await infer(referenceClient, "answered")

    let dialer = AnswerLosingDialer()
    let coordinator = try CoordinatorService(
      cluster: Cluster(
        parameterServers: mesh.parameterServers.map(\.endpoint), partitions: mesh.partitions.map { [$0.endpoint] },
        dialer: dialer))
    try await withServer([coordinator]) { _, client in
      let progress = try await train(client, "repeated")
      #expect(progress.last?.done == true, "\(mesh.logText)")
      let losses = progress.filter { $0.step > 0 && !$0.evaluated && !$0.done }.map(\.loss)
      // How each job ran, for a failure to tell. The split is given: two coordinators planning
      // on layer times each measured may cut a layer at different inputs (the same sums in
      // another order, so other last bits).
      let options = [
        try await referenceClient.call(CoordinatorMethods.getJob, .with { $0.job = "answered" }).options,
        try await client.call(CoordinatorMethods.getJob, .with { $0.job = "repeated" }).options,
      ]
      #expect(
        losses == expected.filter { $0.step > 0 && !$0.evaluated && !$0.done }.map(\.loss),
        "split points \(options.map(\.splitPoints)), stages \(options.map(\.stages))")
      #expect(try await infer(client, "repeated").scalars == expectedOutputs.scalars)
    }
    // Every call was sent twice: its first answer lost, the repeat answered.
    let lost = dialer.lost.withLock { $0.count }
    #expect(lost >= 8 * 2 * 4 * 2 && dialer.sent.withLock { $0 } == 2 * lost, "\(lost) lost")
  }
}
