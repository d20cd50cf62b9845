import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// The coordinator's inference batching on a real 2-stage mesh: requests
/// that come while their model's pipeline is full wait, leave together as
/// one batch, and each gets its own rows' outputs; requests that give up
/// leave, and free the pipeline of a stage that hangs.
@Suite struct InferenceBatchingTests {
  /// A 2-stage mesh whose coordinator serves metrics, with a job trained on
  /// digits to infer on.
  struct Served {
    let mesh: LocalMesh
    let coordinator: RunningService
    let metrics: URL
    let client: RPCClient
    let rows = Tensor.randomNormal([24, 64], seed: 3)

    init() async throws {
      mesh = try await LocalMesh(partitions: 2)
      coordinator = try await RunningService.start(
        "coordinator",
        [
          "--ps", mesh.parameterServers[0].endpoint, "--partitions",
          mesh.partitions.map(\.endpoint).joined(separator: ";"), "--metrics-listen", "127.0.0.1:0",
        ], log: mesh.logs.file("coordinator.log"))
      metrics = try await OperationsTests.metricsURL(of: coordinator, "coordinator")
      let trained = try await pipemesh(
        [
          "train", "--coordinator", coordinator.endpoint, "--job", "served", "--model", DurableStateTests.model,
          "--epochs", "1",
        ], in: mesh.logs)
      #expect(trained.status == 0, "\(trained.output)")
      client = try RPCClient(target: coordinator.endpoint)
    }

    /// The outputs for row `row` of `rows`, alone in its request.
    func infer(_ row: Int, timeout: Duration? = nil) async throws -> Tensor {
      let answer = try await client.call(
        CoordinatorMethods.infer,
        .with {
          $0.job = "served"
          $0.inputs = Pipemesh_V1_Tensor(rows.slice(axis: 0, range: row..<(row + 1)))
        }, options: CallOptions(timeout: timeout))
      return try Tensor(wire: answer.outputs, what: "outputs")
    }

    /// Batches sent, rows in them, and requests waiting, from the metrics.
    func figures() async throws -> (batches: Double, rows: Double, waiting: Double) {
      let text = try await OperationsTests.scrape(metrics)
      return (
        OperationsTests.value(in: text, "pipemesh_inference_batch_rows_count") ?? 0,
        OperationsTests.value(in: text, "pipemesh_inference_batch_rows_sum") ?? 0,
        OperationsTests.value(in: text, "pipemesh_inference_waiting_requests") ?? -1
      )
    }

    /// Sends rows 0, 1 and 2 alone and waits until they are in flight as
    /// three batches (`batches` sent before): with the last stage stopped,
    /// they fill the pipeline (one batch per stage, and one more).
    func fillPipeline(after batches: Double) async throws -> [Task<Tensor, any Error>] {
      let filling = (0..<3).map { row in Task { try await infer(row) } }
      try #require(
        try await eventually(timeout: .seconds(60)) { try await figures().batches == batches + 3 },
        "three batches in flight")
      return filling
    }

    /// Runs `body` with the last stage stopped (SIGSTOP), continuing it
    /// after `body` whether it threw or not.
    func withLastStageStopped<R>(_ body: () async throws -> R) async throws -> R {
      let lastStage = mesh.partitions[1].process
      try await lastStage.stop()
      do {
        let result = try await body()
        lastStage.signal(SIGCONT)
        return result
      } catch {
        lastStage.signal(SIGCONT)
        throw error
      }
    }
  }

  /// A traced request's timeline: its span on the coordinator, the batch
  /// it ran in, and each stage's computation of each chunk as the
  /// partitions timed it, every one inside the request's span and each
  /// chunk on stage 1 after stage 0 computed it; untraced requests carry
  /// none. Through `pipemesh infer --trace` too.
  @Test func aTracedInferenceShowsItsPathThroughTheMesh() async throws {
    let served = try await Served()
    func infer(rows: Range<Int>, microBatches: Int32, trace: Bool) async throws -> Pipemesh_V1_InferResponse {
      try await served.client.call(
        CoordinatorMethods.infer,
        .with {
          $0.job = "served"
          $0.inputs = Pipemesh_V1_Tensor(served.rows.slice(axis: 0, range: rows))
          $0.microBatches = microBatches
          $0.trace = trace
        })
    }
    #expect(try await infer(rows: 0..<4, microBatches: 1, trace: false).traceJson.isEmpty)
    for (microBatches, category) in [(Int32(1), "batch"), (4, nil)] {
      let answer = try await infer(rows: 0..<8, microBatches: microBatches, trace: true)
      let events = try traceEvents(answer.traceJson)
      let request = try #require(events.first { $0.category == "request" }, "\(answer.traceJson)")
      #expect(request.name == "Infer of 8 rows")
      #expect(events.contains { $0.category == "batch" } == (category != nil), "\(events)")
      let forwards = events.filter { $0.category == "forward" }
      // A chunk of 8 rows through two stages, or 4 chunks of 2.
      #expect(forwards.count == 2 * Int(microBatches), "\(forwards)")
      for forward in forwards {
        #expect(forward.start >= request.start - 1e-3 && forward.end <= request.end + 1e-3, "\(forward) \(request)")
        // The call's legs and its compute add up to the call as the coordinator saw it, inside the request.
        let legs = ["request_us", "before_compute_us", "after_compute_us", "answer_us"].compactMap { forward.legs[$0] }
        #expect(legs.count == 4 && legs.allSatisfy { $0.isFinite && $0 >= -1e-3 }, "\(forward.legs)")
        let call = legs.reduce(forward.end - forward.start, +)
        #expect(call > 0 && call <= request.end - request.start + 1, "\(forward.legs) in \(request)")
      }
      for chunk in 0..<Int(microBatches) {
        let first = try #require(forwards.first { $0.stage == 0 && $0.name == "F\(chunk)" })
        let second = try #require(forwards.first { $0.stage == 1 && $0.name == "F\(chunk)" })
        #expect(first.end <= second.start + 1e-3, "\(first) \(second)")
      }
    }
    let inputs = served.mesh.logs.file("rows.npy")
    try await run(
      try PythonInterop.findPython(),
      ["-c", "import numpy as np; np.save('\(inputs)', np.ones((3, 64), dtype=np.float32))"],
      in: served.mesh.logs.path)
    let traced = try await pipemesh(
      [
        "infer", "--coordinator", served.coordinator.endpoint, "--job", "served", "--input", inputs, "--trace",
        served.mesh.logs.file("infer-trace.json"),
      ], in: served.mesh.logs)
    #expect(traced.status == 0, "\(traced.output)")
    let written = try String(contentsOfFile: served.mesh.logs.file("infer-trace.json"), encoding: .utf8)
    #expect(try traceEvents(written).contains { $0.name == "Infer of 3 rows" }, "\(written)")
  }

  @Test func requestsThatComeWhileThePipelineIsFullLeaveAsOneBatch() async throws {
    let served = try await Served()
    // One at a time, each request is a batch of its own.
    var alone: [Tensor] = []
    for row in 0..<24 { alone.append(try await served.infer(row)) }
    let before = try await served.figures()
    #expect(before.batches == 24 && before.rows == 24 && before.waiting == 0, "\(before)")

    // The last stage frozen: three batches fill the pipeline (one per stage
    // and one more), and the requests after them wait.
    let (filling, waiting) = try await served.withLastStageStopped {
      let filling = try await served.fillPipeline(after: before.batches)
      let waiting = (3..<24).map { row in Task { try await served.infer(row) } }
      // One more that gives up while it waits: it leaves the queue.
      let abandoned = Task { try await served.infer(0, timeout: .seconds(5)) }
      try #require(
        try await eventually(timeout: .seconds(60)) { try await served.figures().waiting == 22 }, "22 requests waiting")
      let error = await #expect(throws: RPCError.self) { try await abandoned.value }
      #expect(error?.code == .deadlineExceeded, "\(String(describing: error))")
      try #require(
        try await eventually(timeout: .seconds(60)) { try await served.figures().waiting == 21 },
        "the abandoned request gone from the queue")
      return (filling, waiting)
    }
    var answers: [Tensor] = []
    for task in filling + waiting { answers.append(try await task.value) }

    let after = try await served.figures()
    #expect(after.batches == before.batches + 4, "the 21 waiting requests left as one batch: \(after)")
    #expect(after.rows == before.rows + 24 && after.waiting == 0, "\(after)")
    for (row, (batched, single)) in zip(answers, alone).enumerated() {
      #expect(batched.shape == [1, 10], "row \(row)")
      let differences = zip(batched.scalars, single.scalars).map { abs($0 - $1) / (1 + abs($1)) }
      #expect(differences.allSatisfy { $0 < 1e-5 }, "row \(row): \(batched.scalars) alone: \(single.scalars)")
    }
  }

  /// Batches whose callers all gave up are cancelled, so a stage that hangs
  /// does not keep the pipeline full for the requests after them.
  @Test func batchesNobodyWaitsForFreeThePipeline() async throws {
    let served = try await Served()
    let expected = try await served.infer(5)
    let before = try await served.figures()
    let answer = try await served.withLastStageStopped {
      for row in 0..<3 {
        let error = await #expect(throws: RPCError.self) { try await served.infer(row, timeout: .seconds(2)) }
        #expect(error?.code == .deadlineExceeded, "\(String(describing: error))")
      }
      // Their batches were cancelled: a new request starts one at once (not
      // once the connection's keepalive gives up on the stopped stage, 50 s
      // later: 30 s to its ping, 20 s for the answer). Within 25 s: the
      // test command runs suites side by side on two cores.
      let next = Task { try await served.infer(5) }
      try #require(
        try await eventually(timeout: .seconds(25)) { try await served.figures().batches == before.batches + 4 },
        "a fourth batch")
      #expect(try await served.figures().waiting == 0)
      return next
    }
    let output = try await answer.value
    #expect(zip(output.scalars, expected.scalars).allSatisfy { abs($0 - $1) < 1e-5 }, "\(output) \(expected)")
  }

  /// kill -9 of the last stage with batches in flight and requests waiting:
  /// every request gets an answer (an error naming the stage), none hangs,
  /// and nothing is left waiting.
  @Test func aStageKilledUnderBatchesAnswersEveryRequest() async throws {
    let served = try await Served()
    let before = try await served.figures()
    let (tasks, killed) = try await served.withLastStageStopped {
      let filling = try await served.fillPipeline(after: before.batches)
      let waiting = (3..<8).map { row in Task { try await served.infer(row) } }
      try #require(
        try await eventually(timeout: .seconds(60)) { try await served.figures().waiting == 5 }, "5 requests waiting")
      served.mesh.partitions[1].process.signal(SIGKILL)
      return (filling + waiting, try await served.mesh.partitions[1].process.waitForExit())
    }
    #expect(killed != 0)
    for (row, task) in tasks.enumerated() {
      let error = await #expect(throws: RPCError.self, "row \(row)") { try await task.value }
      #expect(error?.code == .unavailable || error?.code == .aborted, "row \(row): \(String(describing: error))")
    }
    #expect(try await served.figures().waiting == 0)
  }
}
