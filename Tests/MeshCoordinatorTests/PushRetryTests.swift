import Foundation
import MeshInProcess
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// A stage's push to the ps that a dropped connection loses, request or
/// answer, is sent again: the job goes on without a fault, and the ps
/// applies the step once, so the job ends with the weights of a run whose
/// pushes all arrived. With one replica each stage pushes in the background
/// while it updates its own copy (its ps tasks checkpoint); with two, its
/// commit pushes and pulls the replicas' update. Each push goes to two ps
/// tasks, one of which loses it: the other sees it twice, and applies it once.
@Suite struct PushRetryTests {
  @Test(arguments: [1, 2])
  func aLostPushIsSentAgainAndAppliedOnce(replicas: Int) async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-push-retry")
    // Two ps tasks: a push goes to both, and is sent again to both when one of them loses it.
    let mesh = try InProcessMesh(psTasks: 2, stages: 2, replicas: replicas, checkpointDirectory: directory.path)
    let outcome = await Result(catching: {
      func train(_ job: String) async throws -> Pipemesh_V1_Job {
        try await JobCheckpointTests.trainToEnd(job, epochs: 2, on: mesh) {
          $0.consistency = .with { $0.sync = .init() }
          // Split where each stage holds variables of both ps tasks (by their names' hashes).
          $0.splitPoints = [2]
        }
      }
      let straight = try await train("straight")
      // Step 2's first push loses its request; step 3's first push is applied, and its answer lost.
      for (step, loss) in [(Int64(2), InProcessNetwork.Loss.request), (3, .answer)] {
        mesh.network.failNextCall(
          ParameterServerMethods.push.path, to: mesh.parameterServers[0], losing: loss,
          with: RPCError(.unavailable, "the test dropped this push's connection")
        ) { bytes in
          guard let push = try? Pipemesh_V1_PushRequest(serializedBytes: bytes) else { return false }
          return push.job.hasPrefix("lossy.") && push.step == step
        }
      }
      let lossy = try await train("lossy")
      #expect(mesh.network.unfiredFaults == 0)
      #expect(lossy.state == .succeeded && lossy.faults.isEmpty, "\(lossy)")
      #expect(lossy.step == straight.step && lossy.step > 3)
      // Task 0 applied the push whose answer it lost, then saw its repeat; task 1 saw the repeat
      // of the push task 0 lost, which it had applied.
      for task in 0..<2 {
        let stats = try await mesh.network.channel(to: mesh.parameterServers[task], identity: "coordinator").call(
          ParameterServerMethods.stats, .init())
        #expect(stats.pushesDuplicate >= 1, "ps task \(task): \(stats)")
      }
      try await Self.expectSameWeightsBitForBit("lossy", as: "straight", on: mesh)
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// A stage that keeps its variables' master copy (its ps tasks keep no
  /// checkpoints) hands them to the ps in an Assign as the job ends: one
  /// whose request is lost and one whose answer is lost are sent again, the
  /// same values assigned once more change nothing, and the job ends without
  /// a fault and with the weights of a run whose Assigns all arrived.
  @Test func aLostAssignIsSentAgainAndChangesNothing() async throws {
    let mesh = try InProcessMesh(psTasks: 2, stages: 2)
    let outcome = await Result(catching: {
      func train(_ job: String) async throws -> Pipemesh_V1_Job {
        try await JobCheckpointTests.trainToEnd(job, epochs: 2, on: mesh) {
          $0.consistency = .with { $0.sync = .init() }
        }
      }
      _ = try await train("straight")
      for (task, loss) in [(0, InProcessNetwork.Loss.request), (1, .answer)] {
        mesh.network.failNextCall(
          ParameterServerMethods.assign.path, to: mesh.parameterServers[task], losing: loss,
          with: RPCError(.unavailable, "the test dropped this assignment's connection")
        ) { bytes in
          (try? Pipemesh_V1_AssignRequest(serializedBytes: bytes))?.job.hasPrefix("lossy.") ?? false
        }
      }
      let lossy = try await train("lossy")
      #expect(mesh.network.unfiredFaults == 0)
      #expect(lossy.state == .succeeded && lossy.faults.isEmpty, "\(lossy)")
      try await Self.expectSameWeightsBitForBit("lossy", as: "straight", on: mesh)
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// Expects the model `job` registered to hold the 8 tensors of
  /// `reference`'s, bit for bit.
  static func expectSameWeightsBitForBit(_ job: String, as reference: String, on mesh: InProcessMesh) async throws {
    let expected = try await JobCheckpointTests.weights(reference, on: mesh)
    let got = try await JobCheckpointTests.weights(job, on: mesh)
    #expect(expected.count == 8 && Set(got.keys) == Set(expected.keys))
    for (name, tensor) in expected {
      #expect(got[name]?.scalars == tensor.scalars, "\(name)")
    }
  }
}
