import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

@testable import MeshPartition

/// The data plane's FetchTensor: a tensor of any size travels in bounded chunks.
@Suite struct DataPlaneTests {
  /// A partition's data plane holding random activations of step 1 of `job`,
  /// offered for a neighbour to fetch.
  static func offered(_ job: String, _ shape: [Int], seed: UInt64) -> (
    DataPlane, PartitionService, DataPlaneKey, Tensor
  ) {
    let dataPlane = DataPlane(dialer: GRPCDialer())
    let key = DataPlaneKey(
      .with {
        $0.job = job
        $0.step = 1
        $0.microBatch = 0
      }, .activation)
    let activations = Tensor.randomNormal(shape, seed: seed)
    _ = dataPlane.offer(activations, key: key)
    return (dataPlane, PartitionService(dataPlane: dataPlane, dialer: GRPCDialer()), key, activations)
  }

  /// An inference's tensor that no fetch takes (its request was given up
  /// between the stages) is dropped once `unfetchedKept` passed; one
  /// fetched in time is handed out, and a training step's stays until its
  /// step is dropped.
  @Test func anInferencesTensorThatNoFetchTakesIsDropped() async throws {
    let dataPlane = DataPlane(dialer: GRPCDialer(), unfetchedKept: .seconds(2))
    func key(step: Int64, _ kind: DataPlaneKey.Kind) -> DataPlaneKey {
      DataPlaneKey(
        .with {
          $0.job = "served"
          $0.step = step
        }, kind)
    }
    let tensor = Tensor.randomNormal([4, 256], seed: 1)
    _ = dataPlane.offer(tensor, key: key(step: 1, .activation))
    _ = dataPlane.offer(tensor, key: key(step: -1, .inference))
    try await Task.sleep(for: .milliseconds(2500))
    _ = dataPlane.offer(tensor, key: key(step: -2, .inference))
    #expect(dataPlane.heldBytes == 2 * 4096, "the inference tensor offered first is still held")
    let error = await #expect(throws: StageError.self) {
      try await dataPlane.take(key(step: -1, .inference), release: true)
    }
    #expect(error?.rpcError.code == .notFound)
    #expect(try await dataPlane.take(key(step: -2, .inference), release: true) == tensor)
    #expect(try await dataPlane.take(key(step: 1, .activation), release: false) == tensor)
    #expect(dataPlane.heldBytes == 4096)
  }

  /// 9 MiB of activations: three chunks of at most 4 MiB each, put back
  /// together bit for bit.
  @Test(arguments: TestTransport.allCases)
  func aTensorLargerThanAChunkArrivesWhole(transport: TestTransport) async throws {
    let (_, partition, key, activations) = Self.offered("wide", [64, 36_864], seed: 5)
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
    }
  }

  /// A fetch that asks for bfloat16 or float16 gets every element rounded
  /// to that format in half the bytes (9 MiB of activations in chunks of
  /// 4 and 0.5 MiB); the partition still holds the float32 tensor. A dtype
  /// that is not a float is refused, naming the field.
  @Test(arguments: TestTransport.allCases)
  func aFetchInATwoByteFormatCarriesEachElementRounded(transport: TestTransport) async throws {
    let (dataPlane, partition, key, activations) = Self.offered("half", [64, 36_864], seed: 8)
    try await withChannel(transport, [partition]) { channel in
      for format in HalfPrecision.allCases {
        let request = Pipemesh_V1_FetchTensorRequest.with {
          $0.key = key.wire
          $0.encoding = format.wire
        }
        // float16's scale: the power of two that brings the largest magnitude into [2^14, 2^15).
        let largest = try #require(activations.scalars.map(abs).max())
        let scaleExponent = format == .float16 ? 14 - Int(floor(log2(Double(largest)))) : 0
        var chunks: [Int] = []
        for try await chunk in channel.stream(PartitionMethods.fetchTensor, request) {
          if chunks.isEmpty {
            #expect(chunk.dtype == format.wire && chunk.scaleExponent == scaleExponent, "\(format)")
          } else {
            #expect(chunk.shape.isEmpty && chunk.scaleExponent == 0)
          }
          chunks.append(chunk.data.count)
        }
        #expect(chunks == [4 << 20, 512 << 10], "\(format)")

        let fetched = try await DataPlane.fetch(from: channel, request)
        #expect(fetched.shape == activations.shape)
        let rounded: [Float] =
          switch format {
          case .bfloat16:
            // The nearest bfloat16 (ties to even) is float32's top 16 bits after this rounding.
            activations.scalars.map { scalar in
              let bits = scalar.bitPattern
              return Float(bitPattern: (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF_0000)
            }
          case .float16:
            activations.scalars.map {
              Float(Double(Float(Float16(Double($0) * pow(2, Double(scaleExponent))))) / pow(2, Double(scaleExponent)))
            }
          }
        #expect(fetched.scalars == rounded, "\(format)")
        let largestError = try #require(
          zip(fetched.scalars, activations.scalars).map { abs($0 - $1) / max(abs($1), 1e-4) }.max())
        #expect(largestError > 0 && largestError <= (format == .bfloat16 ? 1 / 256 : 1 / 2048), "\(format)")
      }
      #expect(dataPlane.heldBytes == activations.scalarCount * 4)

      for dtype in [Pipemesh_V1_DType.int32, .int64, .UNRECOGNIZED(9)] {
        let request = Pipemesh_V1_FetchTensorRequest.with {
          $0.key = key.wire
          $0.encoding = dtype
        }
        let refused = await #expect(throws: RPCError.self) {
          for try await _ in channel.stream(PartitionMethods.fetchTensor, request) {}
        }
        #expect(
          refused?.code == .invalidArgument && refused?.message.contains("encoding") == true,
          "\(String(describing: refused))")
      }
    }
  }

  /// A peer that answers FetchTensor with the chunks it was made with, whatever was asked.
  struct ScriptedPeer: RPCService {
    let chunks: [Pipemesh_V1_TensorChunk]
    /// Whether the stream stays open after the chunks, until the client leaves.
    var staysOpen = false
    var serviceName: String { "pipemesh.v1.Partition" }
    func register(with router: inout RPCRouter) {
      router.serverStreaming(PartitionMethods.fetchTensor) { [chunks, staysOpen] _, writer, _ in
        for chunk in chunks { try await writer.write(chunk) }
        if staysOpen { try await Task.sleep(for: .seconds(3600)) }
      }
    }
  }

  /// A fetch ends once it holds the whole tensor its first chunk announced,
  /// without waiting for the stream's end: here a peer that never sends it.
  @Test(arguments: TestTransport.allCases)
  func aFetchEndsWithTheTensorsLastByte(transport: TestTransport) async throws {
    let tensor = Tensor.randomUniform([3, 5], seed: 4)
    let whole = Pipemesh_V1_Tensor(tensor)
    let chunks: [Pipemesh_V1_TensorChunk] = [
      .with {
        $0.dtype = .float32
        $0.shape = [3, 5]
        $0.data = whole.data.prefix(24)
      },
      .with { $0.data = whole.data.dropFirst(24) },
    ]
    try await withChannel(transport, [ScriptedPeer(chunks: chunks, staysOpen: true)]) { channel in
      // A bound that only a fetch waiting for the stream's end reaches, however loaded the host
      // (the whole suite's start once kept a 30 s call from being served in time).
      let fetched = try await DataPlane.fetch(
        from: channel, .with { $0.key = "any" }, options: CallOptions(timeout: .seconds(600)))
      #expect(fetched.shape == [3, 5] && fetched.scalars == tensor.scalars)
    }
  }

  /// A peer whose two-byte answer does not make up the tensor asked for
  /// (another dtype, a scale out of float16's range or on a later chunk, a
  /// byte count off the shape) is DATA_LOSS, naming what it announced.
  @Test func aTwoByteAnswerThatIsNotTheTensorAskedForIsDataLoss() async throws {
    func chunk(_ dtype: Pipemesh_V1_DType, shape: [Int64] = [], bytes: Int, scale: Int32 = 0) -> Pipemesh_V1_TensorChunk
    {
      .with {
        $0.dtype = dtype
        $0.shape = shape
        $0.data = Data(count: bytes)
        $0.scaleExponent = scale
      }
    }
    let cases: [(String, HalfPrecision, [Pipemesh_V1_TensorChunk], String)] = [
      (
        "float32 where bfloat16 was asked", .bfloat16, [chunk(.float32, shape: [2], bytes: 8)],
        "where bfloat16 was asked"
      ),
      ("float16 where bfloat16 was asked", .bfloat16, [chunk(.float16, shape: [2], bytes: 4)], "announced float16"),
      ("a scale past float16's range", .float16, [chunk(.float16, shape: [2], bytes: 4, scale: 164)], "2^164"),
      ("a scale on bfloat16", .bfloat16, [chunk(.bfloat16, shape: [2], bytes: 4, scale: 3)], "2^3"),
      (
        "a scale on a later chunk", .float16,
        [chunk(.float16, shape: [4], bytes: 4, scale: 2), chunk(.unspecified, bytes: 4, scale: 2)],
        "second shape or scale"
      ),
      ("bytes past the shape", .float16, [chunk(.float16, shape: [2], bytes: 6)], "more than the tensor"),
      ("bytes short of the shape", .bfloat16, [chunk(.bfloat16, shape: [3], bytes: 4)], "after 4 of 6 bytes"),
    ]
    for (what, format, chunks, message) in cases {
      try await Self.expectDataLoss(
        what, answering: chunks,
        .with {
          $0.key = "any"
          $0.encoding = format.wire
        }, saying: message)
    }
  }

  /// Expects a fetch of `request` (offering `sharedBuffer`) from a peer that
  /// answers `chunks` to fail with DATA_LOSS and a message containing `message`.
  static func expectDataLoss(
    _ what: String, answering chunks: [Pipemesh_V1_TensorChunk], _ request: Pipemesh_V1_FetchTensorRequest,
    sharedBuffer: SharedBuffer? = nil, saying message: String
  ) async throws {
    try await withChannel(.inProcess, [ScriptedPeer(chunks: chunks)]) { channel in
      let refused = await #expect(throws: StageError.self, "\(what)") {
        _ = try await DataPlane.fetch(from: channel, request, sharedBuffer: sharedBuffer)
      }
      #expect(
        refused?.rpcError.code == .dataLoss && refused?.message.contains(message) == true,
        "\(what): \(String(describing: refused))")
    }
  }

  /// An answer that claims to be in the fetch's shared buffer is believed
  /// only when the fetch offered one, the answer is its only chunk, and the
  /// buffer holds the tensor announced, marked answered: anything else is
  /// DATA_LOSS naming the field, with nothing allocated for the shape.
  @Test func aSharedBufferAnswerThatIsNotTheTensorAskedForIsDataLoss() async throws {
    func chunk(shape: [Int64] = [], data: Int = 0, inSharedBuffer: Bool = true) -> Pipemesh_V1_TensorChunk {
      .with {
        $0.dtype = shape.isEmpty ? .unspecified : .float32
        $0.shape = shape
        $0.data = Data(count: data)
        $0.inSharedBuffer = inSharedBuffer
      }
    }
    // Whether the buffer is offered, and marked answered over 8 bytes of data (as a partition
    // that wrote two floats leaves it), before the scripted answer comes.
    let cases: [(String, offered: Bool, marked: Bool, [Pipemesh_V1_TensorChunk], String)] = [
      ("no buffer offered", false, true, [chunk(shape: [2])], "offered no FetchTensorRequest.shared_buffer"),
      ("nothing written", true, false, [chunk(shape: [2])], "does not hold the [2] tensor"),
      ("a shape of 2^40 floats over 8 bytes", true, true, [chunk(shape: [1 << 20, 1 << 20])], "does not hold"),
      ("data beside it", true, true, [chunk(shape: [2], data: 8)], "sent data beside it"),
      (
        "on a later chunk", true, true, [chunk(shape: [4], data: 8, inSharedBuffer: false), chunk()],
        "in_shared_buffer on a later chunk"
      ),
    ]
    for (what, offered, marked, chunks, message) in cases {
      let buffer = try #require(SharedBuffer())
      let wire = try #require(buffer.offer())
      if marked {
        let answer = Array(SharedBuffer.answered(wire.token)) + [UInt8](repeating: 0, count: 8)
        #expect(pwrite(buffer.descriptor, answer, answer.count, 0) == answer.count)
      }
      try await Self.expectDataLoss(
        what, answering: chunks,
        .with {
          $0.key = "any"
          if offered { $0.sharedBuffer = wire }
        }, sharedBuffer: buffer, saying: message)
    }
    // The same buffer, marked over the two floats announced, is read.
    let buffer = try #require(SharedBuffer())
    let wire = try #require(buffer.offer())
    let answer =
      Array(SharedBuffer.answered(wire.token)) + Array(Pipemesh_V1_Tensor(Tensor(shape: [2], scalars: [3, -1])).data)
    #expect(pwrite(buffer.descriptor, answer, answer.count, 0) == answer.count)
    try await withChannel(.inProcess, [ScriptedPeer(chunks: [chunk(shape: [2])])]) { channel in
      let fetched = try await DataPlane.fetch(
        from: channel,
        .with {
          $0.key = "any"
          $0.sharedBuffer = wire
        }, sharedBuffer: buffer)
      #expect(fetched == Tensor(shape: [2], scalars: [3, -1]))
    }
  }

  /// A training step's tensor stays held after the fetch that releases it,
  /// until the step after it commits: a fetch whose chunks were lost on the
  /// way (all sent, then the connection broke) gets it whole when the
  /// fetcher's call is sent again. An inference's tensor goes with the
  /// fetch that releases it (its call is not sent again, and no commit
  /// would drop it).
  @Test(arguments: TestTransport.allCases)
  func aReleasedTensorOfAStepStaysUntilTheNextStepCommits(transport: TestTransport) async throws {
    let (dataPlane, partition, key, activations) = Self.offered("again", [4, 8], seed: 7)
    // Of any step: an Infer may name one.
    let inference = DataPlaneKey(
      .with {
        $0.job = "again"
        $0.step = 2
        $0.microBatch = 0
      }, .inference)
    _ = dataPlane.offer(activations, key: inference)
    try await withChannel(transport, [partition]) { channel in
      func fetch(_ key: DataPlaneKey) async throws -> Tensor {
        try await DataPlane.fetch(
          from: channel,
          .with {
            $0.key = key.wire
            $0.release = true
          })
      }
      let first = try await fetch(key)
      let again = try await fetch(key)
      #expect(first == activations && again == activations)
      // Step 1's commit keeps its tensors (a neighbour that has not committed may fetch them).
      dataPlane.drop(job: "again", throughStep: 1)
      let afterItsCommit = try await fetch(key)
      #expect(afterItsCommit == activations)
      dataPlane.drop(job: "again", throughStep: 2)
      let dropped = await #expect(throws: RPCError.self) { _ = try await fetch(key) }
      #expect(dropped?.code == .notFound, "\(String(describing: dropped))")

      let inferred = try await fetch(inference)
      #expect(inferred == activations)
      let taken = await #expect(throws: RPCError.self) { _ = try await fetch(inference) }
      #expect(taken?.code == .notFound, "\(String(describing: taken))")
      #expect(dataPlane.heldBytes == 0)
    }
  }

  /// A fetch that releases its tensor and breaks off part way (its caller
  /// gone: a dropped connection) leaves the tensor held, so the call sent
  /// again gets it whole; it stays held until its step is dropped.
  @Test(arguments: TestTransport.allCases)
  func aReleasedTensorWhoseFetchBreaksOffIsHeldAgain(transport: TestTransport) async throws {
    // 64 MiB: far more than a connection buffers, so the sender waits on the reader.
    let (dataPlane, partition, key, activations) = Self.offered("broken", [64, 262_144], seed: 6)
    try await withChannel(transport, [partition]) { channel in
      let request = Pipemesh_V1_FetchTensorRequest.with {
        $0.key = key.wire
        $0.release = true
      }
      let firstChunk = AsyncStream<Void>.makeStream()
      let reader = Task {
        for try await _ in channel.stream(PartitionMethods.fetchTensor, request) {
          firstChunk.continuation.yield()
          try await Task.sleep(for: .seconds(60))
        }
      }
      for await _ in firstChunk.stream { break }
      reader.cancel()
      let fetched = try await DataPlane.fetch(from: channel, request)
      #expect(fetched == activations)
      #expect(dataPlane.heldBytes == activations.scalarCount * 4)
      dataPlane.drop(job: "broken", throughStep: 2)
      #expect(dataPlane.heldBytes == 0)
    }
  }
}
