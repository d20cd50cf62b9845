import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

@testable import MeshPartition

/// The data plane's FetchTensor: a tensor of any size travels in bounded chunks.
@Suite struct DataPlaneTests {
  /// 9 MiB of activations: three chunks of at most 4 MiB each, put back
  /// together bit for bit; the tensor is released once fetched.
  @Test(arguments: TestTransport.allCases)
  func aTensorLargerThanAChunkArrivesWhole(transport: TestTransport) async throws {
    let dataPlane = DataPlane(dialer: GRPCDialer())
    let partition = PartitionService(dataPlane: dataPlane, dialer: GRPCDialer())
    let key = DataPlaneKey(
      .with {
        $0.job = "wide"
        $0.step = 1
        $0.microBatch = 0
      }, .activation)
    let activations = Tensor.randomNormal([64, 36_864], seed: 5)
    _ = dataPlane.offer(activations, key: key)
    try await withChannel(transport, [partition]) { channel in
      let request = Pipemesh_V1_FetchTensorRequest.with {
        $0.key = key.wire
        $0.release = false
      }
      var chunks: [Int] = []
      for try await chunk in channel.stream(PartitionMethods.fetchTensor, request) { chunks.append(chunk.data.count) }
      #expect(chunks == [4 << 20, 4 << 20, 1 << 20])

      let fetched = try await DataPlane.fetch(
        from: channel,
        .with {
          $0.key = key.wire
          $0.release = true
        })
      #expect(fetched == activations)
      let gone = await #expect(throws: RPCError.self) {
        _ = try await DataPlane.fetch(from: channel, .with { $0.key = key.wire })
      }
      #expect(gone?.code == .notFound)
    }
  }
}
