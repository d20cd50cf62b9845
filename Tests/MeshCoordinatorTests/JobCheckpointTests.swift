import Foundation
import MeshCheckpoint
import MeshCoordinator
import MeshInProcess
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// A job's own checkpoints: every N steps and at its end, each written at a
/// step boundary, the ps keeping the job's newest few; the last one holds
/// exactly the weights the job registered as its model.
@Suite struct JobCheckpointTests {
  @Test func checkpointsEveryNStepsHoldTheRegisteredWeightsAtTheEnd() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-job-checkpoints")
    let mesh = try InProcessMesh(stages: 2, checkpointDirectory: directory.path)
    let outcome = await Result(catching: {
      let (inputs, targets) = PipelineTrainingTests.classification(count: 128)
      var request = Pipemesh_V1_TrainRequest.inline(
        job: "every-2", model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets, epochs: 1, batchSize: 16,
        microBatches: 2, schedule: .scheduleOneFOneB, learningRate: 0.1)
      // At whole layers, so that the checkpoint holds each kernel whole under its name.
      request.splitPoints = [2]
      request.checkpoint = .with {
        $0.everySteps = 2
        $0.atEnd = true
      }
      var last = Pipemesh_V1_TrainProgress()
      for try await progress in mesh.coordinatorChannel().stream(CoordinatorMethods.train, request) { last = progress }
      #expect(last.done && last.step == 8)
      #expect(last.checkpoints.count == 1, "\(last.checkpoints)")

      // The job's own checkpoints, at steps 2, 4, 6 and 8 (the end's is step 8's again); the
      // ps keeps the job's newest three.
      let runs = try FileManager.default.contentsOfDirectory(atPath: directory.file("ps-0/jobs"))
      #expect(runs.count == 1 && runs[0].hasPrefix("every-2."), "\(runs)")
      let files = try FileManager.default.contentsOfDirectory(atPath: directory.file("ps-0/jobs/\(runs[0])")).sorted()
      #expect(files == ["step-4.safetensors", "step-6.safetensors", "step-8.safetensors"], "\(files)")
      let record = try await mesh.coordinatorChannel().call(CoordinatorMethods.getJob, .with { $0.job = "every-2" })
      #expect(record.checkpointStep == 8)
      let newest = try #require(last.checkpoints.first)
      let checkpoint = try SafeTensors.decode(try Data(contentsOf: URL(fileURLWithPath: newest)))

      var weights = Data()
      for try await chunk in mesh.coordinatorChannel().stream(
        CoordinatorMethods.exportModel, .with { $0.model = "every-2" })
      {
        weights.append(chunk.data)
      }
      let model = try SafeTensors.decode(weights)
      #expect(model.tensors.count == 8)
      for (name, tensor) in model.tensors {
        let stored = checkpoint.tensors.first { key, _ in key.hasPrefix("every-2.") && key.hasSuffix("/\(name)") }
        #expect(stored?.value == tensor, "\(name) in \(newest)")
      }
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// A checkpoint that fails (its ps task unavailable) after the steps it
  /// follows ran restarts the job from the checkpoint before, with that
  /// one's share of the epoch's losses, not the failed one's: the job ends
  /// with the weights and the epoch losses of a run never stopped.
  @Test func aJobWhoseCheckpointFailsRestartsWithTheEpochLossesOfAnUninterruptedRun() async throws {
    let faults = try await Self.faultyRunEqualsStraightOne(checkpointEvery: 2) { mesh in
      // Step 14's checkpoint, six steps into the second epoch of eight.
      mesh.network.failNextCall(
        ParameterServerMethods.checkpoint.path, to: mesh.parameterServers[0], losing: .request,
        with: RPCError(.unavailable, "the test failed this checkpoint")
      ) { bytes in
        guard let request = try? Pipemesh_V1_CheckpointRequest(serializedBytes: bytes) else { return false }
        return request.job.hasPrefix("faulty.") && request.step == 14
      }
    }
    #expect(faults.map(\.step) == [14] && faults.first?.stepsRedone == 2, "\(faults)")
  }

  /// The call a test makes fail in step `step` of job "faulty", and what the
  /// job's record must say of it: the step it stopped at (the last one
  /// completed) and the steps run again (checkpoints every 5 steps).
  struct FailedStep: Sendable, CustomTestStringConvertible {
    enum Call: String, Sendable {
      /// Stage 1's Forward of micro-batch 0, refused before it ran.
      case forward
      /// Stage 1's Commit, run and its answer replaced by ABORTED (an answer
      /// lost with UNAVAILABLE is asked for again): at a checkpoint's step,
      /// which flushes, so its push was applied before it answered.
      case commitAnswer
    }
    let call: Call
    let step: Int64
    let stoppedAt: Int64
    let stepsRedone: Int64
    var testDescription: String { "\(call.rawValue) of step \(step)" }
  }

  /// A step that fails leaves the ps tasks at the step before, exactly, when
  /// no stage committed it: the coordinator writes the job's checkpoint
  /// there before it restarts, so the restart runs no completed step again
  /// (3 since the checkpoint of step 10 otherwise; at an epoch's first step,
  /// the epoch before is recorded once). A stage that committed the failed
  /// step moved the ps past it: the checkpoint is refused, and the one of
  /// step 10 stands. Either way the job ends with the weights and epoch
  /// losses of a run never stopped.
  @Test(arguments: [
    // No stage ran step 14 through: the ps holds step 13.
    FailedStep(call: .forward, step: 14, stoppedAt: 13, stepsRedone: 0),
    // The first step of the third epoch (8 steps each): the checkpoint is the second's last step.
    FailedStep(call: .forward, step: 17, stoppedAt: 16, stepsRedone: 0),
    // Stage 1 pushed step 15 in its Commit, whose answer failed.
    FailedStep(call: .commitAnswer, step: 15, stoppedAt: 14, stepsRedone: 4),
  ])
  func aFailedStepIsCheckpointedAtTheStepBeforeWhenThePSHoldsIt(_ failed: FailedStep) async throws {
    let faults = try await Self.faultyRunEqualsStraightOne(checkpointEvery: 5) { mesh in
      switch failed.call {
      case .forward:
        mesh.network.failNextCall(
          PartitionMethods.forward.path, to: mesh.partitions[1][0], losing: .request,
          with: RPCError(.aborted, "the test failed this forward")
        ) { bytes in
          guard let request = try? Pipemesh_V1_ForwardRequest(serializedBytes: bytes) else { return false }
          return request.key.job.hasPrefix("faulty.") && request.key.step == failed.step
        }
      case .commitAnswer:
        mesh.network.failNextCall(
          PartitionMethods.commit.path, to: mesh.partitions[1][0], losing: .answer,
          with: RPCError(.aborted, "the test failed this commit's answer")
        ) { bytes in
          guard let request = try? Pipemesh_V1_CommitRequest(serializedBytes: bytes) else { return false }
          return request.job.hasPrefix("faulty.") && request.step == failed.step
        }
      }
    }
    #expect(
      faults.map(\.step) == [failed.stoppedAt] && faults.first?.stepsRedone == failed.stepsRedone, "\(faults)")
  }

  /// A fetch of a tensor between the stages whose chunks were all sent, then
  /// lost (the connection broke with them on the way): the fetching stage's
  /// call fails with UNAVAILABLE and is sent again, and its fetch finds the
  /// tensor still held, so the step goes on without a restart and the job
  /// ends as a run without the fault.
  @Test(arguments: [DataPlaneKey.Kind.activation, .gradient])
  func aFetchWhoseChunksAreLostIsAnsweredAgain(kind: DataPlaneKey.Kind) async throws {
    let faults = try await Self.faultyRunEqualsStraightOne(checkpointEvery: 5) { mesh in
      // A stage fetches activations from the stage before it, gradients from the one after.
      let holder = kind == .activation ? mesh.partitions[0][0] : mesh.partitions[1][0]
      mesh.network.failNextCall(
        PartitionMethods.fetchTensor.path, to: holder, losing: .answer,
        with: RPCError(.unavailable, "the test lost this fetch's chunks")
      ) { bytes in
        guard let request = try? Pipemesh_V1_FetchTensorRequest(serializedBytes: bytes),
          let key = try? DataPlaneKey(wire: request.key)
        else { return false }
        return key.job.hasPrefix("faulty.") && key.step == 7 && key.microBatch == 1 && key.kind == kind
      }
    }
    #expect(faults.isEmpty, "\(faults)")
  }

  /// The pull of a job's final weights refused, as a ps task that restarted
  /// since the run began refuses it (ABORTED): the job restarts from its
  /// newest checkpoint (the last step's, or four steps before it) and
  /// registers the weights of a run never stopped.
  @Test(arguments: [Int64(4), 5])
  func aRefusedPullOfTheFinalWeightsRestartsTheJob(checkpointEvery: Int64) async throws {
    let faults = try await Self.faultyRunEqualsStraightOne(checkpointEvery: checkpointEvery) {
      Self.refuseTheFinalPull(of: "faulty", on: $0)
    }
    #expect(faults.count == 1, "\(faults)")
    #expect(
      faults.first?.error.contains("its model could not be registered: the test refused this pull") == true,
      "\(faults)")
    #expect(faults.first?.step == 24 && faults.first?.stepsRedone == 24 % checkpointEvery, "\(faults)")
  }

  /// A run resumed from a checkpoint trains as fast as a fresh one: each
  /// stage pulls its variables with their Adam slots once, as it loads,
  /// then applies its own updates and only pushes them to the ps (no pull
  /// each step); the job ends with the weights of a run never stopped.
  @Test func aResumedRunsStagesApplyTheirOwnAdamUpdates() async throws {
    var network: InProcessNetwork?
    let faults = try await Self.faultyRunEqualsStraightOne(
      checkpointEvery: 5, configure: { $0.optimizer.adam = .init() }
    ) { mesh in
      network = mesh.network
      mesh.network.failNextCall(
        PartitionMethods.forward.path, to: mesh.partitions[1][0], losing: .request,
        with: RPCError(.aborted, "the test failed this forward")
      ) { bytes in
        guard let request = try? Pipemesh_V1_ForwardRequest(serializedBytes: bytes) else { return false }
        return request.key.job.hasPrefix("faulty.") && request.key.step == 14
      }
      mesh.network.logCalls()
    }
    #expect(faults.map(\.step) == [13], "\(faults)")
    // The stages' pulls (the coordinator's name the ps's incarnation): one each as the job
    // starts and one each as it resumes, with the slots.
    let stagePulls = try (network?.loggedCalls ?? []).filter {
      $0.kind == .sent && $0.path == ParameterServerMethods.pull.path
    }
    .map { try Pipemesh_V1_PullRequest(serializedBytes: $0.request) }
    .filter { $0.job.hasPrefix("faulty.") && $0.incarnation == 0 }
    #expect(stagePulls.count == 4 && stagePulls.allSatisfy(\.includeSlots), "\(stagePulls)")
  }

  /// Refuses the coordinator's next pull of `job`'s final weights with
  /// ABORTED, as a ps task that restarted since the run began does.
  static func refuseTheFinalPull(of job: String, on mesh: InProcessMesh) {
    mesh.network.failNextCall(
      ParameterServerMethods.pull.path, to: mesh.parameterServers[0], losing: .request,
      with: RPCError(.aborted, "the test refused this pull of the final weights")
    ) { bytes in
      // The coordinator's pull names the task's incarnation; the partitions' pulls do not.
      guard let request = try? Pipemesh_V1_PullRequest(serializedBytes: bytes) else { return false }
      return request.job.hasPrefix("\(job).") && request.incarnation != 0
    }
  }

  /// On an in-process mesh of 2 stages whose ps writes checkpoints (and
  /// whose coordinator holds steps to `stepDeadline`), trains job
  /// "straight" (3 epochs, a checkpoint every `every` steps, one restart
  /// allowed, and `configure`'s options), places a fault with `fault`, and
  /// trains "faulty" the same way; expects the fault to have fired and
  /// "faulty" to have succeeded as "straight" did (`expectSameRun`).
  /// Returns its faults.
  static func faultyRunEqualsStraightOne(
    checkpointEvery every: Int64, stepDeadline: StepDeadline = StepDeadline(),
    configure: (inout Pipemesh_V1_TrainRequest) -> Void = { _ in }, _ fault: (InProcessMesh) -> Void
  ) async throws -> [Pipemesh_V1_JobFault] {
    let directory = try TemporaryDirectory(prefix: "pipemesh-faulty-run")
    let mesh = try InProcessMesh(stages: 2, checkpointDirectory: directory.path, stepDeadline: stepDeadline)
    let outcome = await Result(catching: {
      func train(_ job: String) async throws -> Pipemesh_V1_Job {
        try await Self.trainToEnd(job, epochs: 3, on: mesh) {
          $0.checkpoint.everySteps = every
          $0.maxRestarts = 1
          configure(&$0)
        }
      }
      let straight = try await train("straight")
      fault(mesh)
      let faulty = try await train("faulty")
      #expect(mesh.network.unfiredFaults == 0)
      #expect(faulty.state == .succeeded, "\(faulty)")
      try await Self.expectSameRun(faulty, as: straight, on: mesh)
      return faulty.faults
    })
    await mesh.shutdown(gracePeriod: .zero)
    return try outcome.get()
  }

  /// Expects `job` to have ended with the epoch losses (within 1e-6 of
  /// each) and the weights (within 1e-6) of `reference`, a run never stopped.
  static func expectSameRun(_ job: Pipemesh_V1_Job, as reference: Pipemesh_V1_Job, on mesh: InProcessMesh)
    async throws
  {
    #expect(job.epochs.count == reference.epochs.count && !job.epochs.isEmpty)
    for (got, expected) in zip(job.epochs, reference.epochs) {
      #expect(
        abs(got.loss - expected.loss) <= 1e-6 * abs(expected.loss), "epoch \(got.epoch): \(got) against \(expected)")
    }
    let expected = try await weights(reference.job, on: mesh)
    let got = try await weights(job.job, on: mesh)
    #expect(!expected.isEmpty && Set(got.keys) == Set(expected.keys))
    for (name, tensor) in expected {
      let difference = zip(tensor.scalars, got[name]?.scalars ?? []).map { abs($0 - $1) }.max() ?? .infinity
      #expect(difference <= 1e-6, "\(name) differs by \(difference)")
    }
  }

  /// Trains job `job` of the small MLP on 128 examples (8 steps an epoch
  /// of one replica) with 1F1B and `configure`'s options, to its end;
  /// returns its record.
  static func trainToEnd(
    _ job: String, epochs: Int, on mesh: InProcessMesh, _ configure: (inout Pipemesh_V1_TrainRequest) -> Void
  ) async throws -> Pipemesh_V1_Job {
    let (inputs, targets) = PipelineTrainingTests.classification(count: 128)
    var request = Pipemesh_V1_TrainRequest.inline(
      job: job, model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets, epochs: epochs, batchSize: 16,
      microBatches: 2, schedule: .scheduleOneFOneB, learningRate: 0.1)
    configure(&request)
    let channel = mesh.coordinatorChannel()
    for try await _ in channel.stream(CoordinatorMethods.train, request) {}
    return try await channel.call(CoordinatorMethods.getJob, .with { $0.job = job })
  }

  /// The weights a job registered, read back through ExportModel.
  static func weights(_ model: String, on mesh: InProcessMesh) async throws -> [String: Tensor] {
    var bytes = Data()
    for try await chunk in mesh.coordinatorChannel().stream(CoordinatorMethods.exportModel, .with { $0.model = model })
    {
      bytes.append(chunk.data)
    }
    return try SafeTensors.decode(bytes).tensors
  }

  /// A job cancelled after a checkpoint, its examples sent inline, resumes by
  /// hand (ResumeJob) and ends with the weights of a run never stopped; jobs
  /// that cannot resume are refused, saying why. Under PipeDream-2BW too,
  /// checkpointing every 3 steps: the pipeline drains at each checkpoint, so
  /// the resumed run's steps run on the same weights as the straight run's.
  @Test(arguments: [(Pipemesh_V1_ScheduleKind.scheduleOneFOneB, Int64(2)), (.schedulePipedream2Bw, 3)])
  func aCancelledJobResumesByHandFromItsKeptExamples(schedule: Pipemesh_V1_ScheduleKind, every: Int64) async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-resume")
    let mesh = try InProcessMesh(stages: 2, checkpointDirectory: directory.path)
    let outcome = await Result(catching: {
      let channel = mesh.coordinatorChannel()
      let (inputs, targets) = PipelineTrainingTests.classification(count: 128)
      func request(_ job: String, everySteps: Int64? = nil) -> Pipemesh_V1_TrainRequest {
        var request = Pipemesh_V1_TrainRequest.inline(
          job: job, model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets, epochs: 200, batchSize: 16,
          microBatches: 2, schedule: schedule, learningRate: 0.1)
        request.checkpoint.everySteps = everySteps ?? every
        return request
      }
      for try await _ in channel.stream(CoordinatorMethods.train, request("straight")) {}

      let stopped = Task { for try await _ in channel.stream(CoordinatorMethods.train, request("stopped")) {} }
      let deadline = ContinuousClock.now + .seconds(60)
      while (try? await channel.call(CoordinatorMethods.getJob, .with { $0.job = "stopped" }))?.checkpointStep ?? 0 < 10
      {
        try #require(ContinuousClock.now < deadline, "no checkpoint in a minute")
        await Task.yield()
      }
      let cancelled = try await channel.call(CoordinatorMethods.cancelJob, .with { $0.job = "stopped" })
      _ = await stopped.result
      try #require(cancelled.state == .cancelled && cancelled.step < 1600, "\(cancelled)")

      var last = Pipemesh_V1_TrainProgress()
      for try await progress in channel.stream(CoordinatorMethods.resumeJob, .with { $0.job = "stopped" }) {
        last = progress
      }
      #expect(last.done && last.step == 1600)
      let resumed = try await channel.call(CoordinatorMethods.getJob, .with { $0.job = "stopped" })
      #expect(resumed.state == .succeeded && resumed.resumes == 1, "\(resumed)")
      let expected = try await Self.weights("straight", on: mesh)
      let got = try await Self.weights("stopped", on: mesh)
      for (name, tensor) in expected {
        let difference = zip(tensor.scalars, got[name]?.scalars ?? []).map { abs($0 - $1) }.max() ?? .infinity
        #expect(difference <= 1e-6, "\(name) differs by \(difference)")
      }

      // Refused: a job that ended, one that never checkpointed, one that does not exist.
      let unsaved = Task {
        for try await _ in channel.stream(CoordinatorMethods.train, request("unsaved", everySteps: 0)) {}
      }
      while (try? await channel.call(CoordinatorMethods.getJob, .with { $0.job = "unsaved" }))?.step ?? 0 < 2 {
        try #require(ContinuousClock.now < deadline + .seconds(60), "the job never started")
        await Task.yield()
      }
      _ = try await channel.call(CoordinatorMethods.cancelJob, .with { $0.job = "unsaved" })
      _ = await unsaved.result
      let refusals: [(String, RPCError.Code, String)] = [
        ("straight", .failedPrecondition, "only a job that stopped part way resumes"),
        ("unsaved", .failedPrecondition, "wrote no checkpoint to resume from"),
        ("no-such-job", .notFound, "no job named"),
      ]
      for (job, code, says) in refusals {
        let refused = await #expect(throws: RPCError.self) {
          for try await _ in channel.stream(CoordinatorMethods.resumeJob, .with { $0.job = job }) {}
        }
        #expect(refused?.code == code && refused?.message.contains(says) == true, "\(String(describing: refused))")
      }
    })
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }
}
