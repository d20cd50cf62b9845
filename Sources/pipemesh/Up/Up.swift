import ArgumentParser
import Foundation
import Logging
import MeshCoordinator
import MeshDashboard
import MeshInProcess
import MeshOps
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import SwiftProtobuf
import Synchronization
import UnixSignals

struct Up: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Start a local mesh, train a model on a dataset, evaluate it, and write a run folder.",
    discussion: """
      Starts a ps, the partitions (stages × replicas) and a coordinator as child processes on free \
      loopback ports (or, with --in-process, all in this process without sockets), trains (by default an MLP \
      on the bundled UCI handwritten digits), evaluates on a held-out split after every epoch, and writes \
      runs/<time>/: options.json (every setting, and the command that runs it again), metrics.csv (a row per \
      step, written as the run goes) and metrics.json, loss.svg and accuracy.svg (a classifier's) or r2.svg \
      (a regression's R²), trace.json (a steady step's pipeline timeline as the partitions timed it, for \
      Perfetto), model.json (the spec used), job.json (the job's record: every option and the inputs' fitted \
      rescaling), checkpoint.safetensors (the trained variables), ps-checkpoints/ (the ps task's own \
      checkpoints) and logs/. Ctrl-C cancels the job and stops the mesh cleanly; the folder keeps what the \
      run reported until then.
      """)

  @OptionGroup var training: TrainingOptions

  @Option(
    help: "Pipeline stages (one partition process each, per replica; default: 2, or one more than --split gives).")
  var stages: Int?

  /// The stages the mesh runs: --stages, else one more than --split gives, else 2.
  var stageCount: Int { stages ?? (training.split.isEmpty ? 2 : training.split.count + 1) }

  @Option(help: "Data-parallel replicas of the pipeline.")
  var replicas: Int = 1

  @Flag(
    help: """
      Run the ps, partitions and coordinator in this process over the in-process transport: the same \
      services and arithmetic, no child processes or sockets.
      """)
  var inProcess = false

  @Option(help: "Where run folders go.")
  var runsDir: String = "runs"

  @Option(
    help: """
      Serve the web dashboard at http://127.0.0.1:PORT/ while the run goes (0 picks a free port): the job's \
      curves and pipeline timeline, the mesh's members.
      """)
  var dashboard: Int?

  func validate() throws {
    guard stageCount >= 1, replicas >= 1 else { throw ValidationError("stages and replicas must be at least 1") }
    if let dashboard, !(0...65535).contains(dashboard) {
      throw ValidationError("--dashboard is \(dashboard); give a port from 1 to 65535, or 0 to pick a free one")
    }
  }

  func run() async throws {
    // Everything the run needs is read before its folder exists: a run that cannot start leaves none.
    let data: LoadedData
    do {
      data = try loadDataset(training.data.datasetReference)
    } catch let error as any RPCErrorConvertible {
      throw error.rpcError  // said as the coordinator would say it (NOT_FOUND: …)
    }
    let spec = try training.data.modelSpec() ?? defaultModel(for: data, regression: training.data.regression)
    let job = "up-\(Int(Date().timeIntervalSince1970))"
    var request = try training.request(job: job, spec: spec, dataset: training.data.localDataset.reference)
    request.checkpoint.atEnd = true  // the run folder keeps the final checkpoint
    let run = try RunFolder.create(under: runsDir)
    try run.write(try spec.jsonString(), to: "model.json")
    say("run folder \(run.path)")

    let outcome: Result<Void, any Error>
    if inProcess {
      // Every stage computes on one OpenBLAS thread, as each partition process of `up` does: the
      // stages call sgemm concurrently, and OpenBLAS's own thread pool is not theirs to share.
      BLAS.setThreadCount(1)
      let mesh = try InProcessMesh(
        stages: stageCount, replicas: replicas, checkpointDirectory: run.file("ps-checkpoints"),
        loadDataset: trainingDataLoader(files: .anywhere))
      say("mesh up in this process: \(stageCount) stage(s) × \(replicas) replica(s)")
      do {
        outcome = .success(try await train(request, coordinator: mesh.coordinatorChannel(), run: run))
      } catch {
        outcome = .failure(error)
      }
      say("stopping the mesh")
      await mesh.shutdown()
    } else {
      let services = try LocalServices(logDirectory: run.file("logs"))
      do {
        outcome = .success(try await train(request, coordinator: startProcesses(services, run: run), run: run))
      } catch {
        outcome = .failure(error)
      }
      say("stopping the mesh")
      await services.stopAll()
    }
    try outcome.get()
  }

  /// Starts the mesh as child processes; returns a channel to its coordinator.
  private func startProcesses(_ services: LocalServices, run: RunFolder) async throws -> any RPCChannel {
    let ps = try await services.start(
      "ps", name: "ps", ["--checkpoint-dir", run.file("ps-checkpoints"), "--checkpoint-seconds", "0"])
    var layout: [[String]] = []
    for stage in 0..<stageCount {
      var replicaEndpoints: [String] = []
      for replica in 0..<replicas {
        replicaEndpoints.append(
          try await services.start("partition", name: "partition-\(stage)-\(replica)", ["--blas-threads", "1"]))
      }
      layout.append(replicaEndpoints)
    }
    let coordinatorEndpoint = try await services.start(
      "coordinator", name: "coordinator",
      ["--ps", ps, "--partitions", layout.map { $0.joined(separator: ",") }.joined(separator: ";")]
        + ["--state-dir", run.file("coordinator-state")]
        + (training.data.localDataset.folder.map { ["--data-dir", $0] } ?? []))
    say("mesh up: ps \(ps), \(stageCount) stage(s) × \(replicas) replica(s), coordinator \(coordinatorEndpoint)")

    return try RPCClient(target: coordinatorEndpoint)
  }

  /// `request` with the split the planner chooses for it on this mesh given as its split
  /// points, when it gives none: the planner balances layer times measured now, which vary
  /// from run to run, so a run that is to be reproduced names its split.
  private func pinningSplit(_ request: Pipemesh_V1_TrainRequest, coordinator: any RPCChannel) async throws
    -> Pipemesh_V1_TrainRequest
  {
    guard request.splitPoints.isEmpty, stageCount > 1 else { return request }
    var asked = TrainingOptions.planRequest(for: request, stages: stageCount)
    asked.microBatchRows = request.batchSize / max(1, request.microBatches)
    asked.microBatches = request.microBatches
    asked.schedule = request.schedule
    let plan = try await coordinator.call(CoordinatorMethods.plan, asked)
    var pinned = request
    pinned.splitPoints = plan.stages.dropFirst().map(\.firstLayer)
    pinned.splitPointInputs = plan.stages.dropFirst().map(\.firstLayerInputs)
    return pinned
  }

  /// This command again, with the run's model.json for the model, `split` (the split the
  /// run trained on, when the command gave none) and `chosen` (the micro-batches and schedule
  /// `--micro-batches auto` chose): the same run.
  static func command(
    reproducing run: RunFolder, split: [LayerPosition] = [], chosen: (microBatches: Int32, schedule: String)? = nil
  ) -> String {
    var arguments = Array(CommandLine.arguments.dropFirst())
    if !split.isEmpty { arguments += ["--split"] + split.map(\.description) }
    if let chosen {
      arguments = arguments.filter { $0 != "--micro-batches=auto" }
      if let index = arguments.firstIndex(of: "--micro-batches"), arguments.indices.contains(index + 1) {
        arguments.removeSubrange(index...(index + 1))
      }
      arguments += ["--micro-batches", "\(chosen.microBatches)", "--schedule", chosen.schedule]
    }
    if let index = arguments.firstIndex(of: "--model"), arguments.indices.contains(index + 1) {
      arguments[index + 1] = run.file("model.json")
    } else if let index = arguments.firstIndex(where: { $0.hasPrefix("--model=") }) {
      arguments[index] = "--model=\(run.file("model.json"))"
    } else {
      arguments += ["--model", run.file("model.json")]
    }
    let safe = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./=:,@%+")
    let quoted = arguments.map { argument in
      argument.allSatisfy(safe.contains) && !argument.isEmpty
        ? argument : "'" + argument.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }
    return (["pipemesh"] + quoted).joined(separator: " ")
  }

  /// Trains on the mesh behind `coordinator`; Ctrl-C cancels the job.
  private func train(_ request: Pipemesh_V1_TrainRequest, coordinator: any RPCChannel, run: RunFolder) async throws {
    let request = try await pinningSplit(
      try await training.choosingPipeline(request, stages: stageCount, coordinator: coordinator),
      coordinator: coordinator)
    let split = try LayerPosition.splitPoints(layers: request.splitPoints, inputs: request.splitPointInputs)
    let reproduce = Self.command(
      reproducing: run, split: training.split.isEmpty ? split : [],
      chosen: training.microBatches == .auto
        ? (request.microBatches, TrainingOptions.scheduleName(request.schedule)) : nil)
    try run.writeOptions([
      "command": Array(CommandLine.arguments.dropFirst()), "reproduce": reproduce, "stages": stageCount,
      "replicas": replicas, "in_process": inProcess,
      // Every field, defaults too: what the run was asked for, in full.
      "train_request": try JSONSerialization.jsonObject(with: Data(try jsonLine(request).utf8)),
    ])
    say("reproduce with: \(reproduce)")
    let job = request.job
    var logger = Logger(label: "pipemesh.up.dashboard")
    logger.logLevel = .warning
    var dashboard: Dashboard?
    if let port = self.dashboard {
      dashboard = try await Dashboard.start(address: "127.0.0.1:\(port)", coordinator: coordinator, logger: logger)
      say("dashboard on http://\(dashboard!.endpoint)/")
    }
    let training = Task { try await stream(request, coordinator: coordinator, run: run) }
    defer { if let dashboard { Task { await dashboard.stop() } } }
    let wasInterrupted = Mutex(false)
    let signals = await terminationSignals()
    let interrupted = Task {
      await signals.first()
      guard !Task.isCancelled else { return }  // the job ended first
      wasInterrupted.withLock { $0 = true }
      say("\ninterrupted: cancelling \(job)")
      _ = try? await coordinator.call(
        CoordinatorMethods.cancelJob, .with { $0.job = job }, options: .init(timeout: .seconds(30)))
      training.cancel()
    }
    defer { interrupted.cancel() }
    do {
      try await training.value
    } catch {
      // The stream may end with CANCELLED before the task notices.
      if wasInterrupted.withLock({ $0 }) { throw ExitCode(130) }
      throw error
    }
  }

  private func stream(_ request: Pipemesh_V1_TrainRequest, coordinator: any RPCChannel, run: RunFolder) async throws {
    var display = ProgressDisplay(showsAccuracy: !training.data.regression, showsBits: training.data.isText)
    var csv = try MetricsCSV(path: run.file("metrics.csv"))
    var steps: [Pipemesh_V1_TrainProgress] = []
    var evaluations: [Pipemesh_V1_TrainProgress] = []
    var last: Pipemesh_V1_TrainProgress?
    do {
      for try await progress in coordinator.stream(CoordinatorMethods.train, request) {
        display.show(progress)
        if progress.done {
          last = progress
        } else {
          try csv.record(progress)
          if progress.evaluated { evaluations.append(progress) } else { steps.append(progress) }
        }
      }
    } catch {
      // An interrupted or failed run keeps what it trained so far.
      try? csv.flush()
      try? run.writeMetrics(steps: steps, evaluations: evaluations, classifies: !training.data.regression)
      throw error
    }
    try csv.flush()
    guard let last else { throw ValidationError("the coordinator ended the job without a final report") }
    try run.writeMetrics(steps: steps, evaluations: evaluations, classifies: !training.data.regression)
    try run.write(last.traceJson, to: "trace.json")
    // The job as the coordinator recorded it: its effective options, the inputs' rescaling
    // (which inference of checkpoint.safetensors needs), its epochs.
    let job = try await coordinator.call(CoordinatorMethods.getJob, .with { $0.job = request.job })
    try run.write(try job.jsonString(), to: "job.json")
    if let checkpoint = last.checkpoints.first {
      try FileManager.default.copyItem(atPath: checkpoint, toPath: run.file("checkpoint.safetensors"))
      if ClosedFormComparison.applies(to: request.model) {
        try await ClosedFormComparison.compare(request, final: evaluations.last, coordinator: coordinator, run: run)
      }
    }
    if let final = evaluations.last {
      let accuracy =
        training.data.regression
        ? String(format: "validation R² %.4f, ", final.validationR2)
        : String(format: "validation accuracy %.1f%%, ", final.validationAccuracy * 100)
      let bits = training.data.isText ? ProgressDisplay.bits(final.validationLoss) : ""
      say(
        "done: " + accuracy + String(format: "validation loss %.4f", final.validationLoss) + bits + "; run folder "
          + run.path)
    } else {
      say("done: run folder \(run.path)")
    }
  }
}
