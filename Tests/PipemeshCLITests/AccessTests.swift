import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// A coordinator with a tokens file serves only callers with a listed
/// token, and a job belongs to the user who started it: another user may
/// not read, cancel or replace it; an admin may.
@Suite(.serialized) struct AccessTests {
  static let tokens = (
    alice: String(repeating: "a1", count: 20), bob: String(repeating: "b2", count: 20),
    carol: String(repeating: "c3", count: 20)
  )

  static func writeTokens(_ directory: TemporaryDirectory, bob: String = tokens.bob) throws -> String {
    let path = directory.file("tokens")
    let text = """
      # name role token
      alice admin \(tokens.alice)
      bob   user  \(bob)
      carol user  \(tokens.carol)

      """
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: path)
    return path
  }

  func client(_ coordinator: RunningService, token: String?) throws -> RPCClient {
    var metadata = Metadata()
    if let token { metadata.append("Bearer \(token)", forKey: "authorization") }
    return try RPCClient(target: coordinator.endpoint, metadata: metadata)
  }

  func train(_ client: RPCClient, job: String) async throws {
    let inputs = Tensor.randomNormal([32, 4], seed: 1)
    let targets = Tensor(shape: [32], scalars: (0..<32).map { Float($0 % 2) })
    let request = Pipemesh_V1_TrainRequest.inline(
      job: job,
      model: .with {
        $0.inputShape = [4]
        $0.layers = [.with { $0.dense = .with { $0.units = 2 } }]
      }, inputs: inputs, targets: targets, epochs: 1, batchSize: 8, microBatches: 1, schedule: .scheduleGpipe,
      learningRate: 0.1)
    for try await _ in client.stream(CoordinatorMethods.train, request, options: .init(timeout: .seconds(120))) {}
  }

  @Test func tokensAndOwnershipDecideWhoMayDoWhat() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-access")
    let mesh = try await LocalMesh(partitions: 1)
    let tokensFile = try Self.writeTokens(directory)
    let coordinator = try await mesh.coordinator([[0]], name: "access", arguments: ["--tokens-file", tokensFile])

    for token in [nil, "wrong-token-wrong-token-wrong-token", Self.tokens.bob + "x"] {
      let refused = await #expect(throws: RPCError.self) {
        _ = try await client(coordinator, token: token).call(CoordinatorMethods.listJobs, .init())
      }
      #expect(refused?.code == .unauthenticated, "\(String(describing: refused))")
    }

    let (bob, carol, alice) = (
      try client(coordinator, token: Self.tokens.bob), try client(coordinator, token: Self.tokens.carol),
      try client(coordinator, token: Self.tokens.alice)
    )
    try await train(bob, job: "bobs")
    #expect(try await bob.call(CoordinatorMethods.getJob, .with { $0.job = "bobs" }).owner == "bob")
    #expect(try await carol.call(CoordinatorMethods.listJobs, .init()).jobs.isEmpty, "carol sees only her own jobs")
    #expect(
      try await alice.call(CoordinatorMethods.listJobs, .init()).jobs.map(\.job) == ["bobs"], "an admin sees every job")
    let denied: [(String, () async throws -> Void)] = [
      ("cancel", { _ = try await carol.call(CoordinatorMethods.cancelJob, .with { $0.job = "bobs" }) }),
      ("get", { _ = try await carol.call(CoordinatorMethods.getJob, .with { $0.job = "bobs" }) }),
      (
        "infer",
        {
          _ = try await carol.call(
            CoordinatorMethods.infer,
            .with {
              $0.job = "bobs"
              $0.inputs = Pipemesh_V1_Tensor(Tensor.zeros([1, 4]))
            })
        }
      ),
      ("replace", { try await train(carol, job: "bobs") }),
      // Refused before the coordinator reads any data for it.
      (
        "replace with data never read",
        {
          let request = Pipemesh_V1_TrainRequest.with {
            $0.job = "bobs"
            $0.data.dataset = .with { $0.uri = "/nonexistent/huge.csv" }
          }
          for try await _ in carol.stream(CoordinatorMethods.train, request, options: .init(timeout: .seconds(30))) {}
        }
      ),
    ]
    for (what, call) in denied {
      let error = await #expect(throws: RPCError.self, "\(what)") { try await call() }
      #expect(error?.code == .permissionDenied, "\(what): \(String(describing: error))")
      #expect(error?.message.contains("belongs to bob") == true)
    }
    _ = try await alice.call(CoordinatorMethods.cancelJob, .with { $0.job = "bobs" })
    #expect(try await bob.call(CoordinatorMethods.getJob, .with { $0.job = "bobs" }).owner == "bob")

    // The CLI sends PIPEMESH_TOKEN or --token-file; another user's job is exit 77.
    try Self.tokens.carol.write(toFile: directory.file("carol.token"), atomically: true, encoding: .utf8)
    let cancel = try ChildProcess(
      PipemeshBinary.path,
      [
        "cancel", "--coordinator", coordinator.endpoint, "--job", "bobs", "--token-file", directory.file("carol.token"),
      ],
      logPath: directory.file("cancel.log"))
    #expect(try await cancel.waitForExit() == 77, "\(cancel.log)")
    #expect(cancel.log.contains("PERMISSION_DENIED"), "\(cancel.log)")
    let jobs = try ChildProcess(
      PipemeshBinary.path, ["jobs", "--coordinator", coordinator.endpoint], logPath: directory.file("jobs.log"),
      environment: ["PIPEMESH_TOKEN": Self.tokens.bob])
    #expect(try await jobs.waitForExit() == 0, "\(jobs.log)")
    #expect(jobs.log.contains("bobs"), "\(jobs.log)")
    #expect(!coordinator.process.log.contains(Self.tokens.bob), "a token reached the log")

    // The model bob's job registered is his too, and stays his once the job is deleted:
    // another user may neither read it nor add a version to it by training under its name.
    #expect(try await alice.call(CoordinatorMethods.listModels, .init()).models.map(\.name) == ["bobs"])
    #expect(try await carol.call(CoordinatorMethods.listModels, .init()).models.isEmpty)
    _ = try await bob.call(CoordinatorMethods.deleteJob, .with { $0.job = "bobs" })
    let modelDenied: [(String, () async throws -> Void)] = [
      ("get model", { _ = try await carol.call(CoordinatorMethods.getModel, .with { $0.model = "bobs:v1" }) }),
      ("delete model", { _ = try await carol.call(CoordinatorMethods.deleteModel, .with { $0.model = "bobs" }) }),
      ("train under the model's name", { try await train(carol, job: "bobs") }),
    ]
    for (what, call) in modelDenied {
      let error = await #expect(throws: RPCError.self, "\(what)") { try await call() }
      #expect(error?.code == .permissionDenied, "\(what): \(String(describing: error))")
      #expect(error?.message.contains("model bobs") == true, "\(what): \(String(describing: error))")
    }
    try await train(bob, job: "bobs")
    #expect(
      try await bob.call(CoordinatorMethods.listModels, .with { $0.name = "bobs" }).models.map(\.version) == [2, 1])
  }

  @Test func aRotatedTokenTakesEffectWithoutARestart() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-access")
    let mesh = try await LocalMesh(partitions: 1)
    let tokensFile = try Self.writeTokens(directory)
    let coordinator = try await mesh.coordinator([[0]], name: "rotation", arguments: ["--tokens-file", tokensFile])
    _ = try await client(coordinator, token: Self.tokens.bob).call(CoordinatorMethods.listJobs, .init())
    let rotated = String(repeating: "d4", count: 20)
    _ = try Self.writeTokens(directory, bob: rotated)
    // A later modification time than the first file's, whatever the clock's grain.
    try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(5)], ofItemAtPath: tokensFile)
    let old = await #expect(throws: RPCError.self) {
      _ = try await client(coordinator, token: Self.tokens.bob).call(CoordinatorMethods.listJobs, .init())
    }
    #expect(old?.code == .unauthenticated)
    _ = try await client(coordinator, token: rotated).call(CoordinatorMethods.listJobs, .init())

    // A file that is gone revokes every token, until it is back.
    try FileManager.default.removeItem(atPath: tokensFile)
    let gone = await #expect(throws: RPCError.self) {
      _ = try await client(coordinator, token: rotated).call(CoordinatorMethods.listJobs, .init())
    }
    #expect(gone?.code == .unauthenticated)
    #expect(
      await eventually { coordinator.process.log.contains("is gone; refusing every call") },
      "\(coordinator.process.log)")
    _ = try Self.writeTokens(directory, bob: rotated)
    _ = try await client(coordinator, token: rotated).call(CoordinatorMethods.listJobs, .init())
  }

  @Test func anUnsafeTokensFileIsAConfigurationError() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-access")
    let tokensFile = try Self.writeTokens(directory)
    try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: tokensFile)
    let short = directory.file("short")
    try "dave user tooshort\n".write(toFile: short, atomically: true, encoding: .utf8)
    try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: short)
    for (file, expected) in [
      (tokensFile, "readable or writable by other users"), (short, "line 1: the token has 8 characters"),
    ] {
      let process = try ChildProcess(
        PipemeshBinary.path,
        [
          "serve", "coordinator", "--listen", "127.0.0.1:0", "--ps", "127.0.0.1:1", "--partitions", "127.0.0.1:2",
          "--tokens-file", file,
        ],
        logPath: directory.file("serve.log"))
      #expect(try await process.waitForExit(timeout: .seconds(60)) == 64, "\(process.log)")
      #expect(process.log.contains(expected), "\(process.log)")
    }
  }
}
