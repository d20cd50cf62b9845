import MeshPS
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Testing

/// DropJob forgets a job on a ps task: its bytes go back to the budget, a
/// push waiting in it fails, and the job is gone.
@Suite struct DropJobTests {
  @Test func droppingAJobFreesItsBytesAndFailsItsWaitingPushes() async throws {
    let (client, channel) = try Fixtures.inProcessPS()
    let consistency = Fixtures.consistency(.sync(.init()))
    let shared = Fixtures.variable("w", shape: [256])
    for user in ["stage0", "stage1"] {
      try await client.register(job: "drop-me", variables: [shared], consistency: consistency, user: user)
    }
    let before = try await channel.call(ParameterServerMethods.stats, .init())
    #expect(before.memoryInUseBytes == 1024)

    // Sync: stage0's push waits for stage1's, which never comes.
    let waiting = Task {
      try await client.push(
        job: "drop-me", step: 1, user: "stage0", clientID: "a", gradients: ["w": (Fixtures.filled([256], 1), 0)])
    }
    // Ready when the ps says the push waits (no sleep).
    let deadline = ContinuousClock.now + .seconds(30)
    while try await channel.call(ParameterServerMethods.stats, .with { $0.job = "drop-me" }).pushesWaiting == 0 {
      try #require(ContinuousClock.now < deadline, "the push never waited")
      await Task.yield()
    }
    let dropped = try await channel.call(ParameterServerMethods.dropJob, .with { $0.job = "drop-me" })
    #expect(dropped.variables == 1 && dropped.bytes == 1024)
    let failed = await #expect(throws: RPCError.self) { _ = try await waiting.value }
    #expect(failed?.code == .aborted, "\(String(describing: failed))")

    let after = try await channel.call(ParameterServerMethods.stats, .init())
    #expect(after.memoryInUseBytes == 0 && after.variables == 0)
    let gone = await #expect(throws: RPCError.self) {
      _ = try await channel.call(ParameterServerMethods.dropJob, .with { $0.job = "drop-me" })
    }
    #expect(gone?.code == .notFound)
  }
}
