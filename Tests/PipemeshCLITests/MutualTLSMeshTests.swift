import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// A whole mesh on mutual TLS with the certificates `pipemesh certs` makes:
/// options and PIPEMESH_TLS_* variables both work, the services dial each
/// other over mTLS, a user's certificate names the job's owner, and a
/// partition or a ps serves only the mesh's own roles.
@Suite struct MutualTLSMeshTests {
  @Test func aJobTrainsOverMutualTLSAndPartitionsServeOnlyMembers() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-mtls")
    let tls = directory.file("tls")
    let certs = try ChildProcess(
      PipemeshBinary.path, ["certs", "--out", tls, "--users", "bob", "--admins", "alice", "--days", "2"],
      logPath: directory.file("certs.log"))
    #expect(try await certs.waitForExit() == 0, "\(certs.log)")
    func path(_ name: String) -> String { (tls as NSString).appendingPathComponent(name) }
    let keyMode = try FileManager.default.attributesOfItem(atPath: path("ps.key"))[.posixPermissions] as? Int
    #expect(keyMode == 0o600)
    // Run again for a new user: the CA and the services' certificates stay.
    let serviceCertificate = try Data(contentsOf: URL(fileURLWithPath: path("coordinator.crt")))
    let more = try ChildProcess(
      PipemeshBinary.path, ["certs", "--out", tls, "--users", "carol", "--days", "2"],
      logPath: directory.file("certs-more.log"))
    #expect(try await more.waitForExit() == 0, "\(more.log)")
    #expect(try Data(contentsOf: URL(fileURLWithPath: path("coordinator.crt"))) == serviceCertificate)
    #expect(FileManager.default.fileExists(atPath: path("client.carol.crt")))

    /// `role` with TLS from options, or from PIPEMESH_TLS_* when `byEnvironment`.
    func start(_ role: String, _ arguments: [String] = [], byEnvironment: Bool, name: String) async throws
      -> RunningService
    {
      let files = (cert: path("\(role).crt"), key: path("\(role).key"), ca: path("ca.crt"))
      let options = byEnvironment ? [] : ["--tls-cert", files.cert, "--tls-key", files.key, "--tls-ca", files.ca]
      let environment =
        byEnvironment
        ? ["PIPEMESH_TLS_CERT": files.cert, "PIPEMESH_TLS_KEY": files.key, "PIPEMESH_TLS_CA": files.ca] : [:]
      return try await RunningService.start(
        role, options + arguments, log: directory.file("\(name).log"), environment: environment)
    }
    let ps = try await start("ps", byEnvironment: false, name: "ps")
    let first = try await start("partition", byEnvironment: true, name: "partition0")
    let second = try await start("partition", byEnvironment: false, name: "partition1")
    let coordinator = try await start(
      "coordinator", ["--ps", ps.endpoint, "--partitions", "\(first.endpoint);\(second.endpoint)"], byEnvironment: true,
      name: "coordinator")

    func client(_ target: RunningService, as identity: String) throws -> RPCClient {
      try RPCClient(
        target: target.endpoint,
        transport: .init(
          tls: try TLSConfiguration(
            certificateFile: path("\(identity).crt"), keyFile: path("\(identity).key"), caFile: path("ca.crt"))))
    }
    let bob = try client(coordinator, as: "client.bob")
    let inputs = Tensor.randomNormal([32, 4], seed: 2)
    let targets = Tensor(shape: [32], scalars: (0..<32).map { Float($0 % 2) })
    let request = Pipemesh_V1_TrainRequest.inline(
      job: "over-mtls",
      model: .with {
        $0.inputShape = [4]
        $0.layers = [
          .with {
            $0.dense = .with {
              $0.units = 8
              $0.activation = .relu
            }
          }, .with { $0.dense = .with { $0.units = 2 } },
        ]
      }, inputs: inputs, targets: targets, epochs: 2, batchSize: 8, microBatches: 2, schedule: .scheduleOneFOneB,
      learningRate: 0.1)
    var progress: [Pipemesh_V1_TrainProgress] = []
    for try await update in bob.stream(CoordinatorMethods.train, request, options: .init(timeout: .seconds(120))) {
      progress.append(update)
    }
    #expect(progress.last?.done == true)
    let job = try await bob.call(CoordinatorMethods.getJob, .with { $0.job = "over-mtls" })
    #expect(job.owner == "bob" && job.state == .succeeded, "\(job)")
    let alice = try client(coordinator, as: "admin.alice")
    #expect(try await alice.call(CoordinatorMethods.listJobs, .init()).jobs.map(\.job) == ["over-mtls"])

    // A user's certificate is refused by the partitions and the ps; a member's is let in.
    let forward = Pipemesh_V1_ForwardRequest.with {
      $0.key = .with {
        $0.job = "over-mtls"
        $0.step = 1
      }
    }
    let userAtPartition = await #expect(throws: RPCError.self) {
      _ = try await client(first, as: "client.bob").call(PartitionMethods.forward, forward)
    }
    #expect(userAtPartition?.code == .permissionDenied, "\(String(describing: userAtPartition))")
    let userAtPS = await #expect(throws: RPCError.self) {
      _ = try await client(ps, as: "admin.alice").call(ParameterServerMethods.stats, .init())
    }
    #expect(userAtPS?.code == .permissionDenied, "\(String(describing: userAtPS))")
    let member = await #expect(throws: RPCError.self) {
      _ = try await client(first, as: "partition").call(PartitionMethods.forward, forward)
    }
    #expect(member?.code == .failedPrecondition, "admitted, then refused for its job: \(String(describing: member))")
    _ = try await client(ps, as: "coordinator").call(ParameterServerMethods.stats, .init())

    // Plaintext reaches nothing.
    let plaintext = await #expect(throws: RPCError.self) {
      _ = try await RPCClient(target: first.endpoint).call(
        PartitionMethods.forward, forward, options: .init(timeout: .seconds(5)))
    }
    #expect(plaintext?.code == .unavailable, "\(String(describing: plaintext))")
    #expect([ps, first, second, coordinator].allSatisfy { $0.process.isRunning })
  }
}
