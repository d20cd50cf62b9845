import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// The coordinator's inference batching on a real 2-stage mesh: requests
/// that come while their model's pipeline is full wait, leave together as
/// one batch, and each gets its own rows' outputs.
@Suite struct InferenceBatchingTests {
  @Test func requestsThatComeWhileThePipelineIsFullLeaveAsOneBatch() async throws {
    let mesh = try await LocalMesh(partitions: 2)
    let coordinator = try await RunningService.start(
      "coordinator",
      [
        "--ps", mesh.parameterServers[0].endpoint, "--partitions",
        mesh.partitions.map(\.endpoint).joined(separator: ";"), "--metrics-listen", "127.0.0.1:0",
      ], log: mesh.logs.file("coordinator.log"))
    let metrics = try await OperationsTests.metricsURL(of: coordinator, "coordinator")
    let trained = try await pipemesh(
      [
        "train", "--coordinator", coordinator.endpoint, "--job", "served", "--model", DurableStateTests.model,
        "--epochs", "1",
      ], in: mesh.logs)
    #expect(trained.status == 0, "\(trained.output)")

    let client = try RPCClient(target: coordinator.endpoint)
    let rows = Tensor.randomNormal([24, 64], seed: 3)
    @Sendable func infer(_ row: Int, timeout: Duration? = nil) async throws -> Tensor {
      let answer = try await client.call(
        CoordinatorMethods.infer,
        .with {
          $0.job = "served"
          $0.inputs = Pipemesh_V1_Tensor(rows.slice(axis: 0, range: row..<(row + 1)))
        }, options: CallOptions(timeout: timeout))
      return try Tensor(wire: answer.outputs, what: "outputs")
    }
    func figures() async throws -> (batches: Double, rows: Double, waiting: Double) {
      let text = try await OperationsTests.scrape(metrics)
      return (
        OperationsTests.value(in: text, "pipemesh_inference_batch_rows_count") ?? 0,
        OperationsTests.value(in: text, "pipemesh_inference_batch_rows_sum") ?? 0,
        OperationsTests.value(in: text, "pipemesh_inference_waiting_requests") ?? -1
      )
    }
    func waitUntil(_ what: String, _ condition: () async throws -> Bool) async throws {
      let deadline = ContinuousClock.now + .seconds(60)
      while try await !condition() {
        guard ContinuousClock.now < deadline else { throw RPCError(.deadlineExceeded, "\(what) within 60 s") }
        try await Task.sleep(for: .milliseconds(20))
      }
    }

    // One at a time, each request is a batch of its own.
    var alone: [Tensor] = []
    for row in 0..<24 { alone.append(try await infer(row)) }
    let before = try await figures()
    #expect(before.batches == 24 && before.rows == 24 && before.waiting == 0, "\(before)")

    // The last stage frozen: three batches fill the pipeline (one per stage
    // and one more), and the requests after them wait.
    let lastStage = mesh.partitions[1].process
    lastStage.signal(SIGSTOP)
    let answers: [Tensor]
    do {
      let filling = (0..<3).map { row in Task { try await infer(row) } }
      try await waitUntil("three batches in flight") { try await figures().batches == before.batches + 3 }
      let waiting = (3..<24).map { row in Task { try await infer(row) } }
      // One more that gives up while it waits: it leaves the queue.
      let abandoned = Task { try await infer(0, timeout: .seconds(5)) }
      try await waitUntil("22 requests waiting") { try await figures().waiting == 22 }
      let error = await #expect(throws: RPCError.self) { try await abandoned.value }
      #expect(error?.code == .deadlineExceeded, "\(String(describing: error))")
      try await waitUntil("the abandoned request gone from the queue") { try await figures().waiting == 21 }
      lastStage.signal(SIGCONT)
      var collected: [Tensor] = []
      for task in filling + waiting { collected.append(try await task.value) }
      answers = collected
    } catch {
      lastStage.signal(SIGCONT)
      throw error
    }

    let after = try await figures()
    #expect(after.batches == before.batches + 4, "the 21 waiting requests left as one batch: \(after)")
    #expect(after.rows == before.rows + 24 && after.waiting == 0, "\(after)")
    for (row, (batched, single)) in zip(answers, alone).enumerated() {
      #expect(batched.shape == [1, 10], "row \(row)")
      let differences = zip(batched.scalars, single.scalars).map { abs($0 - $1) / (1 + abs($1)) }
      #expect(differences.allSatisfy { $0 < 1e-5 }, "row \(row): \(batched.scalars) alone: \(single.scalars)")
    }
  }
}
