import Foundation
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import Testing

/// A coordinator reads dataset files from its data directory only: paths
/// that lead out of it (absolute, `..`, links) and files that are not
/// regular are PERMISSION_DENIED alike, whether they exist or not, and no
/// message quotes a file's contents.
@Suite(.serialized) struct DataDirectoryTests {
  static let mesh = Task { try await LocalMesh(partitions: 1) }

  /// A CSV of 40 rows: two features and a label in 0..<2.
  static func csv(secret: String = "") -> String {
    "a,b,label\n" + (0..<40).map { "\($0 % 7).5,\($0 % 3).25,\($0 % 2)" }.joined(separator: "\n") + "\n" + secret
  }

  func train(_ coordinator: RunningService, uri: String, keys: (inputs: String, labels: String)? = nil) async throws {
    let client = try RPCClient(target: coordinator.endpoint)
    let request = Pipemesh_V1_TrainRequest.with {
      $0.job = "data-\(UUID().uuidString.prefix(6))"
      $0.model = .with {
        $0.inputShape = [2]
        $0.layers = [.with { $0.dense = .with { $0.units = 2 } }]
      }
      $0.data.dataset = .with {
        $0.uri = uri
        $0.inputsKey = keys?.inputs ?? ""
        $0.labelsKey = keys?.labels ?? ""
      }
      $0.epochs = 1
      $0.batchSize = 8
    }
    for try await _ in client.stream(CoordinatorMethods.train, request, options: .init(timeout: .seconds(120))) {}
  }

  @Test func pathsOutsideTheDataDirectoryAreRefused() async throws {
    let mesh = try await Self.mesh.value
    let data = try TemporaryDirectory(prefix: "pipemesh-data")
    let outside = try TemporaryDirectory(prefix: "pipemesh-outside")
    try Self.csv().write(toFile: data.file("train.csv"), atomically: true, encoding: .utf8)
    try Self.csv(secret: "TOP-SECRET,x,y\n").write(
      toFile: outside.file("secret.csv"), atomically: true, encoding: .utf8)
    try FileManager.default.createSymbolicLink(
      atPath: data.file("escape.csv"), withDestinationPath: outside.file("secret.csv"))
    try FileManager.default.createDirectory(atPath: data.file("folder.csv"), withIntermediateDirectories: false)
    let coordinator = try await mesh.coordinator([[0]], name: "data-dir", arguments: ["--data-dir", data.path])

    try await train(coordinator, uri: "train.csv")
    try await train(coordinator, uri: data.file("train.csv"))

    let outsideName = (outside.path as NSString).lastPathComponent
    let refused = [
      outside.file("secret.csv"), "../\(outsideName)/secret.csv", "escape.csv", "/etc/no-such-file.csv",
      "../../../../../../etc/passwd.csv", "idx:/dev/zero,/dev/zero", "folder.csv",
    ]
    for uri in refused {
      let error = await #expect(throws: RPCError.self, "\(uri)") { try await train(coordinator, uri: uri) }
      #expect(error?.code == .permissionDenied, "\(uri): \(String(describing: error))")
      #expect(error?.message.contains("TOP-SECRET") == false)
    }
    let missing = await #expect(throws: RPCError.self) { try await train(coordinator, uri: "missing.csv") }
    #expect(missing?.code == .notFound, "\(String(describing: missing))")
    #expect(coordinator.process.isRunning)
  }

  @Test func numPyPairsAndNamedArchiveArraysAreRead() async throws {
    let mesh = try await Self.mesh.value
    let data = try TemporaryDirectory(prefix: "pipemesh-data")
    _ = try await run(
      try PythonInterop.findPython(),
      [
        "-c",
        """
        import numpy as np
        x = np.random.default_rng(0).normal(size=(40, 2)).astype(np.float32)
        y = (np.arange(40) % 2).astype(np.int64)
        np.save('x.npy', x); np.save('y.npy', y)
        np.savez('named.npz', features=x, classes=y)
        """,
      ], in: data.path)
    let coordinator = try await mesh.coordinator([[0]], name: "numpy-files", arguments: ["--data-dir", data.path])
    try await train(coordinator, uri: "x.npy,y.npy")
    try await train(coordinator, uri: "named.npz", keys: ("features", "classes"))
    let unnamed = await #expect(throws: RPCError.self) { try await train(coordinator, uri: "named.npz") }
    #expect(unnamed?.code == .invalidArgument)
    #expect(
      unnamed?.message.contains("it holds 'classes', 'features'; name the arrays with inputs_key and labels_key")
        == true,
      "\(String(describing: unnamed))")
    let control = await #expect(throws: RPCError.self) {
      try await train(coordinator, uri: "named.npz", keys: ("features\u{7}", "classes"))
    }
    #expect(control?.code == .invalidArgument && control?.message.hasPrefix("inputs_key") == true)
    let escaping = await #expect(throws: RPCError.self) { try await train(coordinator, uri: "x.npy,../y.npy") }
    #expect(escaping?.code == .permissionDenied, "\(String(describing: escaping))")
  }

  @Test func withoutADataDirectoryOnlyBundledDataIsRead() async throws {
    let mesh = try await Self.mesh.value
    let data = try TemporaryDirectory(prefix: "pipemesh-data")
    try Self.csv().write(toFile: data.file("train.csv"), atomically: true, encoding: .utf8)
    let coordinator = try await mesh.coordinator([[0]], name: "no-data-dir")
    let error = await #expect(throws: RPCError.self) { try await train(coordinator, uri: data.file("train.csv")) }
    #expect(error?.code == .permissionDenied, "\(String(describing: error))")
    #expect(error?.message.contains("it has no --data-dir") == true)
  }

  @Test func parseErrorsGiveThePositionNotTheText() async throws {
    let mesh = try await Self.mesh.value
    let data = try TemporaryDirectory(prefix: "pipemesh-data")
    try "a,b,label\n1,2,0\n3,password123,1\n".write(toFile: data.file("bad.csv"), atomically: true, encoding: .utf8)
    let coordinator = try await mesh.coordinator([[0]], name: "parse-errors", arguments: ["--data-dir", data.path])
    let error = await #expect(throws: RPCError.self) { try await train(coordinator, uri: "bad.csv") }
    #expect(error?.code == .invalidArgument)
    #expect(error?.message.contains("line 3, column 2") == true, "\(String(describing: error))")
    #expect(error?.message.contains("password123") == false, "\(String(describing: error))")
  }
}
