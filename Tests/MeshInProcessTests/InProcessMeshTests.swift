import Foundation
import MeshInProcess
import MeshPartition
import MeshProto
import MeshRPC
import MeshWire
import Testing

/// What `InProcessMesh` promises on its own: the services it names answer,
/// each ps task checkpoints into its own folder, and a shut-down mesh answers
/// nothing. (Training on it is checked in MeshCoordinatorTests.)
@Suite struct InProcessMeshContractTests {
  @Test func everyServiceItNamesAnswersItsRole() async throws {
    let mesh = try InProcessMesh(psTasks: 2, stages: 3, replicas: 2)
    let outcome = await capture {
      #expect(mesh.parameterServers.count == 2)
      #expect(mesh.partitions.map(\.count) == [2, 2, 2])
      let endpoints = mesh.parameterServers + mesh.partitions.joined() + [mesh.coordinatorEndpoint]
      #expect(Set(endpoints).count == endpoints.count, "endpoints repeat: \(endpoints)")
      for endpoint in endpoints {
        #expect(DialPolicy.isWellFormed(endpoint), "\(endpoint) is not host:port")
      }
      for ps in mesh.parameterServers {
        let stats = try await mesh.network.channel(to: ps, identity: "coordinator").call(
          ParameterServerMethods.stats, .init())
        #expect(stats.variables == 0)
      }
      let jobs = try await mesh.coordinatorChannel().call(CoordinatorMethods.listJobs, .init())
      #expect(jobs.jobs.isEmpty)
    }
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  @Test func eachPSTaskCheckpointsIntoItsOwnFolder() async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pipemesh-inprocess-\(UUID())").path
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let mesh = try InProcessMesh(psTasks: 2, stages: 1, checkpointDirectory: directory)
    let outcome = await capture {
      var written: [String] = []
      for ps in mesh.parameterServers {
        written.append(
          try await mesh.network.channel(to: ps, identity: "coordinator").call(
            ParameterServerMethods.checkpoint, .init()
          )
          .path)
      }
      #expect(written.count == 2)
      #expect(written[0].hasPrefix("\(directory)/ps-0/"), "\(written)")
      #expect(written[1].hasPrefix("\(directory)/ps-1/"), "\(written)")
      #expect(written.allSatisfy { FileManager.default.fileExists(atPath: $0) })
    }
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  @Test func aShutDownMeshAnswersNothing() async throws {
    let mesh = try InProcessMesh(stages: 1)
    await mesh.shutdown(gracePeriod: .zero)
    let error = await #expect(throws: RPCError.self) {
      _ = try await mesh.coordinatorChannel().call(CoordinatorMethods.listJobs, .init())
    }
    #expect(error?.code == .unavailable, "\(String(describing: error))")
  }
}

/// The outcome of `body`, so that a test can shut its mesh down before it rethrows.
private func capture(_ body: () async throws -> Void) async -> Result<Void, any Error> {
  do {
    try await body()
    return .success(())
  } catch {
    return .failure(error)
  }
}
