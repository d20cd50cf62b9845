import Foundation
import MeshCheckpoint
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Synchronization
import Testing

@testable import MeshCoordinator

/// UploadModel on a real coordinator process without a data directory: the
/// weights come from the caller, in pieces; anything but a whole, declared
/// file of the spec's variables registers nothing.
@Suite struct ModelUploadTests {
  /// Dense 4 → 3, no activation: its logits are x·W + b.
  static let spec = Pipemesh_V1_ModelSpec.with {
    $0.inputShape = [4]
    $0.seed = 5
    $0.layers = [.with { $0.dense = .with { $0.units = 3 } }]
    $0.loss = .with { $0.softmaxCrossEntropy = .init() }
  }

  static func weights() throws -> (kernel: Tensor, bias: Tensor, file: Data) {
    let declarations = try makeModel(spec).variableDeclarations()
    #expect(declarations.count == 2)
    let kernel = Tensor(shape: [4, 3], scalars: (0..<12).map { Float($0) * 0.25 - 1 })
    let bias = Tensor(shape: [3], scalars: [0.5, -0.5, 2])
    let names = declarations.map(\.name)
    let file = try SafeTensors.encode(
      .init(
        tensors: [names.first { $0.hasSuffix("kernel") }!: kernel, names.first { $0.hasSuffix("bias") }!: bias],
        metadata: ["format": "pt"]))
    return (kernel, bias, file)
  }

  /// Sends `messages` as one upload and returns its answer.
  static func upload(_ messages: [Pipemesh_V1_UploadModelRequest], to coordinator: RPCClient) async throws
    -> Pipemesh_V1_Model
  {
    try await coordinator.clientStream(CoordinatorMethods.uploadModel, options: .init(timeout: .seconds(120))) {
      writer in
      for message in messages { try await writer.write(message) }
    }
  }

  /// The header message of an upload of `name`, declaring `size` bytes.
  static func header(_ name: String, size: Int, uri: String = "") -> Pipemesh_V1_UploadModelRequest {
    .with {
      $0.model = .with {
        $0.name = name
        $0.spec = spec
        $0.uri = uri
      }
      $0.sizeBytes = Int64(size)
    }
  }

  static func data(_ bytes: Data) -> Pipemesh_V1_UploadModelRequest { .with { $0.data = bytes } }

  @Test func weightsSentInPiecesAnswerInferenceAndBadUploadsRegisterNothing() async throws {
    let mesh = try await LocalMesh(partitions: 1)
    let server = try await mesh.coordinator([[0]], name: "upload")
    let coordinator = try RPCClient(target: server.endpoint)
    let (kernel, bias, file) = try Self.weights()
    let pieces = stride(from: 0, to: file.count, by: 100).map { file[$0..<min($0 + 100, file.count)] }

    // Without a data directory the coordinator reads no files, and says how to send them instead.
    let noFiles = await #expect(throws: RPCError.self) {
      _ = try await coordinator.call(
        CoordinatorMethods.importModel,
        .with {
          $0.name = "linear"
          $0.spec = Self.spec
          $0.uri = "w.safetensors"
        })
    }
    #expect(
      noFiles?.code == .failedPrecondition && noFiles?.message.contains("UploadModel") == true,
      "\(String(describing: noFiles))")

    let model = try await Self.upload(
      [Self.header("linear", size: file.count)] + pieces.map { Self.data(Data($0)) }, to: coordinator)
    #expect(model.name == "linear" && model.version == 1 && model.parameters == 15, "\(model)")
    let inputs = Tensor(shape: [2, 4], scalars: [1, 2, 3, 4, -1, 0, 0.5, 2])
    let inferred = try await coordinator.call(
      CoordinatorMethods.infer,
      .with {
        $0.model = "linear"
        $0.inputs = Pipemesh_V1_Tensor(inputs)
      })
    let logits = try Tensor(wire: inferred.outputs, what: "logits")
    for row in 0..<2 {
      for column in 0..<3 {
        let want = (0..<4).reduce(bias.scalars[column]) {
          $0 + inputs.scalars[row * 4 + $1] * kernel.scalars[$1 * 3 + column]
        }
        #expect(abs(logits.scalars[row * 3 + column] - want) <= 1e-5, "row \(row) column \(column)")
      }
    }

    // Each refusal names what is wrong.
    let half = Data(file.prefix(file.count / 2))
    let refusals: [(String, [Pipemesh_V1_UploadModelRequest], String)] = [
      ("no header", [Self.data(file)], "the first message of an upload must carry model"),
      ("a uri", [Self.header("linear", size: file.count, uri: "w.safetensors")], "model.uri must be empty"),
      ("no size", [Self.header("linear", size: 0)], "size_bytes 0 cannot be a safetensors file"),
      ("an impossible size", [Self.header("linear", size: 1 << 30)], "size_bytes 1073741824 cannot be"),
      ("a stream cut short", [Self.header("linear", size: file.count), Self.data(half)], "ended after"),
      (
        "more than declared", [Self.header("linear", size: file.count), Self.data(file), Self.data(Data([1]))],
        "more than the \(file.count) bytes"
      ),
      (
        "a second header", [Self.header("linear", size: file.count), Self.data(half), Self.header("linear", size: 9)],
        "belong in the first message"
      ),
      (
        "a huge message", [Self.header("linear", size: file.count), Self.data(Data(count: 5 << 20))],
        "at most 4194304 a message"
      ),
      (
        "an empty message", [Self.header("linear", size: file.count), Self.data(half), Self.data(Data())],
        "carries no data"
      ),
      (
        "a name with a version", [Self.header("linear:v1", size: file.count), Self.data(file)],
        "model.name 'linear:v1' names a version"
      ),
      (
        "bytes that are no safetensors file",
        [Self.header("linear", size: 64), Self.data(Data(repeating: 7, count: 64))],
        "the uploaded file is not a safetensors file"
      ),
    ]
    for (what, messages, expected) in refusals {
      let error = await #expect(throws: RPCError.self, "\(what)") {
        _ = try await Self.upload(messages, to: coordinator)
      }
      #expect(error?.code == .invalidArgument, "\(what): \(String(describing: error))")
      #expect(error?.message.contains(expected) == true, "\(what): \(String(describing: error))")
    }

    // A client that goes away mid-upload leaves nothing behind either, and its bytes are given back.
    let abandoned = Task {
      try await coordinator.clientStream(CoordinatorMethods.uploadModel, options: .init()) { writer in
        try await writer.write(Self.header("linear", size: file.count))
        try await writer.write(Self.data(half))
        try await Task.sleep(for: .seconds(600))
      }
    }
    try await Task.sleep(for: .milliseconds(300))
    abandoned.cancel()
    _ = await abandoned.result
    let versions = try await coordinator.call(CoordinatorMethods.listModels, .with { $0.name = "linear" })
    #expect(versions.models.map(\.version) == [1], "\(versions.models)")
    let again = try await Self.upload([Self.header("linear", size: file.count), Self.data(file)], to: coordinator)
    #expect(again.version == 2)
  }

  /// A process's anonymous resident bytes (RssAnon): its heap, not the pages of files it maps.
  private static func anonymousBytes(of pid: Int32) -> Int {
    let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("RssAnon:") } ?? ""
    return (Int(line.split(separator: " ").dropFirst().first ?? "") ?? 0) << 10
  }

  /// The bytes of an upload go to a file as they come, and from there into the model's file
  /// tensor by tensor: the coordinator's heap grows by a part of a big upload (about 38 MiB of
  /// 128 MiB, the messages in flight and what the allocator keeps of them; it used to hold the
  /// file and its tensors, twice its size and more), and no spooled file stays behind.
  @Test func aBigUploadIsNeverWholeInTheCoordinatorsMemory() async throws {
    let state = try TemporaryDirectory(prefix: "pipemesh-upload-state")
    let mesh = try await LocalMesh(partitions: 1)
    let server = try await mesh.coordinator([[0]], name: "big-upload", arguments: ["--state-dir", state.path])
    let coordinator = try RPCClient(target: server.endpoint)
    // Dense 4096 → 8192: 33.6 M parameters, a file of 134 MB.
    let spec = Pipemesh_V1_ModelSpec.with {
      $0.inputShape = [4096]
      $0.seed = 5
      $0.layers = [.with { $0.dense = .with { $0.units = 8192 } }]
      $0.loss = .with { $0.softmaxCrossEntropy = .init() }
    }
    let declarations = try makeModel(spec).variableDeclarations()
    let file = try SafeTensors.encode(
      .init(tensors: Dictionary(uniqueKeysWithValues: declarations.map { ($0.name, Tensor.zeros($0.shape)) })))
    let header = Pipemesh_V1_UploadModelRequest.with {
      $0.model = .with {
        $0.name = "wide"
        $0.spec = spec
      }
      $0.sizeBytes = Int64(file.count)
    }
    let pieces = stride(from: 0, to: file.count, by: ModelUpload.maxChunkBytes).map {
      Self.data(file[$0..<min($0 + ModelUpload.maxChunkBytes, file.count)])
    }
    let pid = server.process.pid
    let before = Self.anonymousBytes(of: pid)
    let peak = Mutex(before)
    let sampler = Task {
      while !Task.isCancelled {
        let now = Self.anonymousBytes(of: pid)
        peak.withLock { $0 = max($0, now) }
        try? await Task.sleep(for: .milliseconds(10))
      }
    }
    let model = try await Self.upload([header] + pieces, to: coordinator)
    sampler.cancel()
    _ = await sampler.value
    #expect(model.version == 1 && model.parameters == 4096 * 8192 + 8192)
    let growth = peak.withLock { $0 } - before
    #expect(
      before > 0 && growth < file.count,
      "the coordinator's heap grew by \(growth >> 20) MiB for an upload of \(file.count >> 20) MiB")
    let spooled = try FileManager.default.contentsOfDirectory(atPath: "\(state.path)/incoming")
    #expect(spooled.isEmpty, "\(spooled)")
  }

  /// A coordinator killed (kill -9) in the middle of an upload registers nothing, and the part
  /// it had spooled is gone once it starts again on the same state; uploads go on working.
  @Test func aCoordinatorKilledMidUploadLeavesNothingBehind() async throws {
    let state = try TemporaryDirectory(prefix: "pipemesh-upload-killed")
    let mesh = try await LocalMesh(partitions: 1)
    let arguments = ["--state-dir", state.path]
    let first = try await mesh.coordinator([[0]], name: "upload-killed", arguments: arguments)
    let (_, _, file) = try Self.weights()
    let half = file.count / 2
    let cut = Task {
      try await RPCClient(target: first.endpoint).clientStream(
        CoordinatorMethods.uploadModel, options: .init(timeout: .seconds(60))
      ) { writer in
        try await writer.write(Self.header("linear", size: file.count))
        try await writer.write(Self.data(file.prefix(half)))
        try await Task.sleep(for: .seconds(60))
      }
    }
    // The spool holds the half sent: the coordinator is in the middle of the upload.
    let incoming = "\(state.path)/incoming"
    let deadline = ContinuousClock.now + .seconds(30)
    func spooledBytes() -> Int {
      ((try? FileManager.default.contentsOfDirectory(atPath: incoming)) ?? []).reduce(0) { total, name in
        total + ((try? FileManager.default.attributesOfItem(atPath: "\(incoming)/\(name)")[.size] as? Int) ?? 0)
      }
    }
    while spooledBytes() < half && ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
    #expect(spooledBytes() == half, "the upload's first half reached the spool")
    first.process.signal(SIGKILL)
    _ = try await first.process.waitForExit()
    _ = await cut.result

    let second = try await mesh.coordinator([[0]], name: "upload-restarted", arguments: arguments)
    let coordinator = try RPCClient(target: second.endpoint)
    #expect(
      spooledBytes() == 0, "\(String(describing: try? FileManager.default.contentsOfDirectory(atPath: incoming)))")
    let versions = try await coordinator.call(CoordinatorMethods.listModels, .with { $0.name = "linear" })
    #expect(versions.models.isEmpty, "\(versions.models)")
    let whole = try await Self.upload([Self.header("linear", size: file.count), Self.data(file)], to: coordinator)
    #expect(whole.version == 1)
  }

  @Test func theBudgetBoundsUploadsInFlight() throws {
    let budget = UploadBudget(limit: 1000)
    try budget.reserve(600)
    let over = #expect(throws: CoordinatorError.self) { try budget.reserve(500) }
    #expect(over?.rpcError.code == .resourceExhausted && over?.message.contains("try again when they end") == true)
    let alone = #expect(throws: CoordinatorError.self) { try budget.reserve(1001) }
    #expect(alone?.message.contains("call ImportModel") == true)
    budget.release(600)
    try budget.reserve(1000)
  }

  @Test func theLargestFileOfASpecHoldsItsValuesAndHeader() throws {
    let model = try makeModel(Self.spec)
    let (_, _, file) = try Self.weights()
    let largest = ModelUpload.largestFile(of: model)
    #expect(Int64(file.count) <= largest)
    #expect(largest >= 4 * 15 && largest < 4 * 15 + 70_000)
  }
}
