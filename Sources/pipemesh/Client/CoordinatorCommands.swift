import ArgumentParser
import Foundation
import MeshCoordinator
import MeshData
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

struct Train: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Train a model on a running coordinator and follow its progress.",
    discussion: """
      The coordinator loads the dataset (a bundled name or a file on its host), plans the stages, places \
      the job on partitions of its pool (it waits, queued, while too few are free) and streams progress \
      until the job ends. Exit codes: 0 done, 1 the job failed or \
      was cancelled, 64 bad usage, 65 the coordinator refused the request, 69 unreachable.

      Example: pipemesh train --coordinator 10.0.0.5:7000 --model examples/mlp-digits.json --epochs 5
      """)

  @OptionGroup var client: ClientOptions
  @OptionGroup var training: TrainingOptions

  @Option(help: "Job name; default: a fresh one.")
  var job: String?

  @Flag(help: "Train again under the name of a job that has ended, replacing it (its model keeps its versions).")
  var replace = false

  @Option(help: "Pipeline stages; default: the coordinator's layout.")
  var stages: Int = 0

  @Option(help: "Data-parallel replicas of the pipeline; default: the coordinator's layout.")
  var replicas: Int = 0

  @Option(
    help: """
      The most replicas the job grows to onto free partitions of the pool (at step boundaries, through \
      a checkpoint); a step's examples stay batch-size × replicas. Sync jobs only. Default: --replicas.
      """)
  var maxReplicas: Int = 0

  func validate() throws {
    guard stages >= 0, replicas >= 0, maxReplicas >= 0 else {
      throw ValidationError("--stages, --replicas and --max-replicas must be 1 or more")
    }
  }

  func run() async throws {
    try await withExitCodes {
      let spec = try training.data.modelSpec() ?? defaultModelForDataset()
      // Without --job the coordinator names it ("job-N", a name no job has).
      var request = try training.request(job: job ?? "", spec: spec, dataset: training.data.datasetReference)
      request.replace = replace
      request.stages = Int32(clamping: stages)
      request.replicas = Int32(clamping: replicas)
      request.maxReplicas = Int32(clamping: maxReplicas)
      var display = ProgressDisplay(showsAccuracy: !training.data.regression, showsBits: training.data.isText)
      let coordinator = try client.client()
      request = try await training.choosingPipeline(request, stages: stages, coordinator: coordinator)
      let interruption = ControlC.detaches { name in
        _ = try await coordinator.call(CoordinatorMethods.cancelJob, .with { $0.job = name })
      }
      try await interruption.following {
        for try await progress in try coordinator.stream(CoordinatorMethods.train, request) {
          interruption.follows(progress.job)
          guard !interruption.wasPressed else { continue }
          if client.json { try client.printJSON(progress) } else { display.show(progress) }
        }
      }
    }
  }

  /// The default model needs the data's shapes: read here from the same
  /// dataset the coordinator will load.
  private func defaultModelForDataset() throws -> Pipemesh_V1_ModelSpec {
    try defaultModel(for: loadDataset(training.data.datasetReference), regression: training.data.regression)
  }
}

struct Infer: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Run inputs through a trained job's pipeline.",
    discussion: """
      Reads a NumPy .npy file of inputs, one example a row: [N] + the model's input shape, or rows of \
      as many values flattened ([N, 784] for a [1, 28, 28] input), or one example alone. Prints each \
      row's outputs; for a classifier, also its class and that class's probability (softmax of the \
      logits; --json adds every probability).

      Example: pipemesh infer --coordinator 127.0.0.1:7000 --job digits-1 --input batch.npy --json
      """)

  @OptionGroup var client: ClientOptions

  @Option(help: "A trained job.")
  var job: String?

  @Option(help: "A registered model instead of a job: NAME (its newest version) or NAME:vN.")
  var model: String?

  @Option(help: "A NumPy .npy file of inputs.")
  var input: String

  @Option(help: "Micro-batches to pipeline the inputs in.")
  var microBatches: Int = 1

  @Option(
    help: """
      Write the request's path through the mesh to this file as Chrome trace JSON (open it in Perfetto): \
      the coordinator's spans and each stage's computation, as the partitions timed it.
      """)
  var trace: String?

  func validate() throws {
    guard (job == nil) != (model == nil) else { throw ValidationError("give exactly one of --job and --model") }
  }

  func run() async throws {
    var inputs: Tensor
    do {
      inputs = try NumPy.readArray(at: URL(fileURLWithPath: input))
    } catch let error as DatasetError {
      throw ValidationError(error.message)
    }
    try await withExitCodes {
      let coordinator = try client.client()
      let spec = try await Self.spec(job: job, model: model, coordinator: coordinator)
      inputs = Self.examples(inputs, inputShape: spec.inputShape.map { Int($0) })
      let response = try await coordinator.call(
        CoordinatorMethods.infer,
        .with {
          $0.job = job ?? ""
          $0.model = model ?? ""
          $0.inputs = Pipemesh_V1_Tensor(inputs)
          $0.microBatches = Int32(microBatches)
          $0.trace = trace != nil
        })
      if let trace {
        do {
          try response.traceJson.write(toFile: trace, atomically: true, encoding: .utf8)
        } catch {
          throw ValidationError("--trace \(trace): cannot write the file: \(error.localizedDescription)")
        }
      }
      let outputs = try Tensor(wire: response.outputs, what: "outputs")
      let rows = Self.rows(of: outputs)
      if case .meanSquaredError = spec.loss.kind {
        if client.json {
          say(try Self.json(["shape": outputs.shape, "outputs": rows]))
        } else {
          for (index, row) in rows.enumerated() {
            say("\(index)\t" + row.map { String(format: "%.4f", $0) }.joined(separator: " "))
          }
        }
        return
      }
      // A classifier: softmax over the last axis (a sequence model classifies each position).
      let probabilities = Self.rows(of: outputs.softmax())
      let classes = outputs.shape.last ?? 1
      let predictions = probabilities.map { row in
        stride(from: 0, to: row.count, by: classes).map { start in
          (start..<(start + classes)).max { row[$0] < row[$1] }! - start
        }
      }
      let single = outputs.rank == 2
      if client.json {
        let predicted: Any = single ? predictions.map { $0[0] } : predictions
        say(
          try Self.json([
            "shape": outputs.shape, "outputs": rows, "predictions": predicted, "probabilities": probabilities,
          ]))
      } else {
        for (index, row) in rows.enumerated() {
          let values = row.map { String(format: "%.4f", $0) }.joined(separator: " ")
          if single {
            let predicted = predictions[index][0]
            let probability = String(format: "%.3f", probabilities[index][predicted])
            say("\(index)\tclass \(predicted) (\(probability))\t\(values)")
          } else {
            say("\(index)\tclasses \(predictions[index].map(String.init).joined(separator: " "))\t\(values)")
          }
        }
      }
    }
  }

  /// The model spec of a job or a registered model, whichever is named.
  static func spec(job: String?, model: String?, coordinator: RPCClient) async throws -> Pipemesh_V1_ModelSpec {
    if let job {
      return try await coordinator.call(CoordinatorMethods.getJob, .with { $0.job = job }).options.model
    }
    return try await coordinator.call(CoordinatorMethods.getModel, .with { $0.model = model ?? "" }).spec
  }

  /// `inputs` as a batch of the model's examples: rows of flattened values
  /// (or one example alone) take the input shape; any other shape is sent
  /// as it is, for the coordinator to explain.
  static func examples(_ inputs: Tensor, inputShape: [Int]) -> Tensor {
    let perExample = inputShape.reduce(1, *)
    guard !inputShape.isEmpty, perExample > 0, Array(inputs.shape.dropFirst()) != inputShape else { return inputs }
    if inputs.shape == inputShape { return inputs.reshaped(to: [1] + inputShape) }
    if inputs.rank >= 1, inputs.shape.dropFirst().reduce(1, *) == perExample {
      return inputs.reshaped(to: [inputs.shape[0]] + inputShape)
    }
    return inputs
  }

  /// Each row's values, flattened.
  private static func rows(of tensor: Tensor) -> [[Float]] {
    let width = tensor.shape.dropFirst().reduce(1, *)
    return (0..<tensor.shape[0]).map { Array(tensor.scalars[($0 * width)..<(($0 + 1) * width)]) }
  }

  private static func json(_ object: [String: Any]) throws -> String {
    String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
  }
}

struct Plan: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show how a model splits into pipeline stages, or choose its micro-batches and schedule.",
    discussion: """
      Without --coordinator the plan is computed here (2 stages unless --stages says); with it, the \
      coordinator computes it (over its pool's partitions when --stages is not given). The split balances \
      each layer's training forward and backward as timed on a micro-batch of --micro-batch-rows examples \
      (here, or on a partition of the coordinator's pool, which keeps the times), and the plan gives each \
      stage's time and a step's time through the pipeline for --micro-batches; --estimate balances the \
      FLOP estimate instead, without timing anything.

      With --batch-size the planner chooses: it times the layers at the rows of every micro-batch count \
      of 1, 2, 4, … 32 that divides the batch, simulates a step of 1F1B, ZB-H1 and GPipe on each, prints them \
      all, and plans the stages for the fastest (`pipemesh train --micro-batches auto` trains with it).

      Example: pipemesh plan --model examples/cnn-digits.json --stages 3

      Example: pipemesh plan --model examples/cnn-digits.json --batch-size 64
      """)

  @Option(help: "Model spec, protobuf JSON.")
  var model: String

  @Option(help: "Stages to split into (default: 2 here; the coordinator's pool with --coordinator).")
  var stages: Int?

  @Option(parsing: .upToNextOption, help: LayerPosition.splitHelp)
  var split: [LayerPosition] = []

  @Option(help: "Ask this coordinator (HOST:PORT) instead of planning here.")
  var coordinator: String?

  @Option(help: "Examples in the micro-batch the layers are timed on (default 32).")
  var microBatchRows: Int?

  @Option(help: "Micro-batches of a step, for the predicted step time (default 4).")
  var microBatches: Int?

  @Option(
    help:
      "The schedule of the predicted step: gpipe, 1f1b (default), zb-h1 or 2bw (a steady step, overlapping the next)."
  )
  var schedule: String?

  @Option(help: "Examples of a step: choose the micro-batches and the schedule that train it fastest.")
  var batchSize: Int?

  @Flag(help: "Balance the estimated FLOPs instead of timing the layers.")
  var estimate = false

  @Flag(help: "Balance with splits between whole layers only (split points given with --split are kept).")
  var wholeLayers = false

  @Option(
    help:
      "The consistency the job would train with, as train takes it: an LSTM or GRU is split at a time step only under sync."
  )
  var consistency: String = "sync"

  @Option(help: "How the job's sync replicas would add up their gradients, as train takes it: ps or ring.")
  var reduction: String = "ps"

  func validate() throws {
    _ = try TrainingOptions.consistencySpec(consistency, reduction)
    guard (1...4096).contains(microBatchRows ?? 1), (1...4096).contains(microBatches ?? 1) else {
      throw ValidationError("--micro-batch-rows and --micro-batches must be 1 to 4096")
    }
    guard schedule.map({ TrainingOptions.schedules[$0] != nil }) ?? true else {
      throw ValidationError("--schedule is one of \(TrainingOptions.schedules.keys.sorted().joined(separator: ", "))")
    }
    if let batchSize {
      guard (1...Int(Planner.mostChosenBatchSize)).contains(batchSize) else {
        throw ValidationError("--batch-size must be 1 to \(Planner.mostChosenBatchSize)")
      }
      guard microBatchRows == nil, microBatches == nil, schedule == nil, !estimate else {
        throw ValidationError(
          "--batch-size chooses the micro-batches and the schedule on measured times: give it without "
            + "--micro-batch-rows, --micro-batches, --schedule and --estimate")
      }
    }
  }

  @Flag(help: "Print the plan as JSON.")
  var json = false

  func run() async throws {
    let spec = try ModelSpecFile.read(model)
    var request = Pipemesh_V1_PlanRequest()
    request.model = spec
    request.stages = Int32(stages ?? (coordinator == nil ? 2 : 0))
    request.splitPoints = split.wireLayers
    request.splitPointInputs = split.wireInputs
    request.estimate = estimate
    request.wholeLayers = wholeLayers
    request.consistency = try TrainingOptions.consistencySpec(consistency, reduction)
    if let batchSize {
      request.batchSize = Int32(batchSize)
    } else {
      request.microBatchRows = Int32(microBatchRows ?? LayerTimings.defaultRows)
      request.microBatches = Int32(microBatches ?? 4)
      request.schedule = TrainingOptions.schedules[schedule ?? "1f1b"]!
    }
    try await withExitCodes {
      let response: Pipemesh_V1_PlanResponse
      if let coordinator {
        response = try await RPCClient(target: coordinator).call(CoordinatorMethods.plan, request)
      } else {
        response = try await planLocally(request)
      }
      if json {
        say(try jsonLine(response))
      } else {
        show(response)
      }
    }
  }

  private func show(_ response: Pipemesh_V1_PlanResponse) {
    for stage in response.stages {
      let memory =
        String(format: "%.1f MiB", Double(stage.parameterBytes) / 1_048_576)
        + (stage.memoryBudgetBytes > 0
          ? String(format: " of the partitions' %.0f MiB", Double(stage.memoryBudgetBytes) / 1_048_576) : "")
      let time =
        response.measuredOn.isEmpty
        ? "" : String(format: "  %.3f + %.3f ms", stage.forwardSeconds * 1000, stage.backwardSeconds * 1000)
      let start = LayerPosition(layer: Int(stage.firstLayer), inputs: Int(stage.firstLayerInputs))
      let end = LayerPosition(layer: Int(stage.endLayer), inputs: Int(stage.endLayerInputs))
      say(
        "stage \(stage.stage)  layers \(start)..<\(end)  \(stage.parameters) parameters (\(memory))"
          + String(format: "  %.3g FLOPs/example", stage.estimatedFlops) + time)
    }
    let balanced = response.measuredOn.isEmpty ? "estimated FLOPs" : "measured times"
    say(
      String(format: "imbalance %.3f", response.imbalance)
        + " (largest stage over the mean of the \(balanced); 1 is perfect)")
    guard !response.measuredOn.isEmpty else { return }
    let chosen = response.choices.first
    let (stepMicroBatches, stepSchedule) =
      chosen.map { (Int($0.microBatches), TrainingOptions.scheduleName($0.schedule)) } ?? (
        microBatches ?? 4, schedule ?? "1f1b"
      )
    say(
      "times: forward + backward of a micro-batch of \(response.measuredRows) examples, on \(response.measuredOn); "
        + String(
          format: "a step of %d micro-batches %.3f ms through the pipeline", stepMicroBatches,
          response.predictedStepSeconds * 1000) + " by \(stepSchedule) (simulated, "
        + (response.calibratedByJob.isEmpty
          ? "without transfers)"
          : "calibrated by job \(response.calibratedByJob)'s micro-batches of \(response.calibratedRows) rows)"))
    guard let chosen else { return }
    say(
      "chosen for a step of \(Int(chosen.microBatches * chosen.microBatchRows)) examples: "
        + "--micro-batches \(chosen.microBatches) --schedule \(TrainingOptions.scheduleName(chosen.schedule))"
        + String(format: ", %.0f examples/s predicted", chosen.predictedExamplesPerSecond))
    say("micro-batches  rows  schedule  step ms  examples/s")
    for choice in response.choices {
      say(
        String(
          format: "%13d  %4d  %-8@  %7.3f  %10.0f", choice.microBatches, choice.microBatchRows,
          TrainingOptions.scheduleName(choice.schedule), choice.predictedStepSeconds * 1000,
          choice.predictedExamplesPerSecond))
    }
  }

  private func planLocally(_ request: Pipemesh_V1_PlanRequest) async throws -> Pipemesh_V1_PlanResponse {
    let model = try makeModel(request.model)
    return try await Planner.answer(
      request, model: model, stages: Int(request.stages), budgets: [], memory: try StageMemory(plan: request),
      timingBudget: Self.timingDeadline
    ) { wanted, within in
      let deadline = ContinuousClock.now + within
      do {
        let rows = try model.rowsToTime(wanted: wanted, repeats: LayerTimings.repeats, within: .planning).get()
        let layers = try model.timeLayers(rows: rows, repeats: LayerTimings.repeats) { .now < deadline }
        return Planner.MeasuredTimes(layers: layers, rows: rows, on: "this machine")
      } catch {
        FileHandle.standardError.write(
          Data("pipemesh: the layers are not timed at \(wanted) rows: \(error)\n".utf8))
        return nil
      }
    }
  }

  /// The longest `pipemesh plan` times the layers here.
  static let timingDeadline = Duration.seconds(60)
}

struct Status: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show the coordinator's pool of partitions and its ps tasks, or a job: its state, step, loss and memory.",
    discussion: """
      Without --job: a line per partition of the pool — its address, FREE, BUSY (and the job), SILENT \
      (did not answer when last asked) or LEAVING, whether it joined (and its lease) or was listed, \
      and what it admits a stage's parameters at; then a line per ps task as last asked — SERVING with \
      its variables, memory and newest checkpoint, SILENT (did not answer when last asked, every 5 s) \
      and why, or FAILING and the error it answered with.
      """)

  @OptionGroup var client: ClientOptions

  @Option(help: "The job.")
  var job: String?

  func run() async throws {
    if let job {
      return try await client.showJob(CoordinatorMethods.getJob, .with { $0.job = job }, withMemory: true)
    }
    try await withExitCodes {
      let pool = try await client.client().call(CoordinatorMethods.getPool, .init())
      if client.json { return try client.printJSON(pool) }
      if pool.members.isEmpty { say("the pool has no partitions (start them with --join)") }
      for member in pool.members {
        let state = "\(member.state)".uppercased()
        let origin = member.joined ? String(format: "joined, lease %.0f s", member.leaseSecondsLeft) : "listed"
        let budget =
          member.memoryBudgetBytes > 0 ? String(format: "\tbudget %.2f GB", Double(member.memoryBudgetBytes) / 1e9) : ""
        say("\(member.endpoint)\t\(state)\(member.job.isEmpty ? "" : " \(member.job)")\t\(origin)\(budget)")
      }
      for task in pool.parameterServers {
        let lease = task.joined ? String(format: "\tjoined, lease %.0f s", task.leaseSecondsLeft) : ""
        guard task.error.isEmpty else {
          say("ps \(task.endpoint)\t\(task.silent ? "SILENT" : "FAILING")\t\(task.error)\(lease)")
          continue
        }
        guard task.hasStats else {
          say("ps \(task.endpoint)\tNOT ASKED YET\t(the coordinator has just started)")
          continue
        }
        let stats = task.stats
        let checkpoint =
          !stats.checkpointsEnabled
          ? "no checkpoints"
          : stats.checkpointAgeSeconds < 0
            ? "no checkpoint yet" : String(format: "checkpoint %.0f s ago", stats.checkpointAgeSeconds)
        let memory =
          stats.memoryBudgetBytes > 0
          ? String(
            format: "\tholding %.2f of %.2f GB", Double(stats.memoryInUseBytes) / 1e9,
            Double(stats.memoryBudgetBytes) / 1e9) : ""
        say("ps \(task.endpoint)\tSERVING\t\(stats.variables) variables\(memory)\t\(checkpoint)\(lease)")
      }
    }
  }
}

struct Jobs: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "List, show and delete the coordinator's jobs (running and past).",
    subcommands: [List.self, Show.self, Follow.self, Resume.self, Delete.self], defaultSubcommand: List.self)

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List jobs in name order.")

    @OptionGroup var client: ClientOptions

    @Option(help: "Only jobs in this state: queued, running, succeeded, failed, cancelled, interrupted, restarting.")
    var state: String?

    func run() async throws {
      let states: [String: Pipemesh_V1_JobState] = [
        "queued": .queued, "running": .running, "succeeded": .succeeded, "failed": .failed, "cancelled": .cancelled,
        "interrupted": .interrupted, "restarting": .restarting,
      ]
      guard state == nil || states[state!] != nil else {
        throw ValidationError("--state is '\(state!)'; give one of \(states.keys.sorted().joined(separator: ", "))")
      }
      try await withExitCodes {
        var request = Pipemesh_V1_ListJobsRequest.with { $0.state = state.flatMap { states[$0] } ?? .unspecified }
        // With --json, the whole list as one line (`{"jobs": []}` when there are none).
        var listed = Pipemesh_V1_ListJobsResponse()
        repeat {
          let page = try await client.client().call(CoordinatorMethods.listJobs, request)
          if client.json { listed.jobs += page.jobs } else { for job in page.jobs { try client.show(job) } }
          request.pageToken = page.nextPageToken
        } while !request.pageToken.isEmpty
        if client.json { try client.printJSON(listed) }
      }
    }
  }

  struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Show a job: its state, each epoch's metrics and the options it runs with (every default filled in).")

    @OptionGroup var client: ClientOptions

    @Argument(help: "The job.")
    var job: String

    func run() async throws {
      try await withExitCodes {
        let record = try await client.client().call(CoordinatorMethods.getJob, .with { $0.job = job })
        if client.json { return try client.printJSON(record) }
        try client.show(record, withMemory: true)
        if !record.model.isEmpty { say("model \(record.model)") }
        for fault in record.faults {
          let cost =
            fault.recoverySeconds > 0
            ? String(format: "; went on %.1f s later, %lld steps run again", fault.recoverySeconds, fault.stepsRedone)
            : ""
          say("stopped at step \(fault.step) (\(fault.state)): \(fault.error)\(cost)")
        }
        for epoch in record.epochs {
          say(
            String(format: "epoch %d\tstep %lld\tloss %.4f", epoch.epoch, epoch.step, epoch.loss)
              + (epoch.validationLoss > 0
                ? String(format: "\tvalidation loss %.4f accuracy %.4f", epoch.validationLoss, epoch.validationAccuracy)
                : ""))
        }
        say("options \(try record.options.jsonString())")
      }
    }
  }

  struct Follow: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Follow a queued or running job's progress until it ends (after its train was stopped, say).",
      discussion: """
        Ends at once for a job that is not running. Prints how the job ended; exit codes as for train \
        (1 when it failed or was cancelled).
        """)

    @OptionGroup var client: ClientOptions

    @Argument(help: "The job.")
    var job: String

    func run() async throws {
      try await withExitCodes {
        let coordinator = try client.client()
        var display = ProgressDisplay(showsAccuracy: true)
        do {
          for try await progress in try coordinator.stream(CoordinatorMethods.followJob, .with { $0.job = job }) {
            if client.json { try client.printJSON(progress) } else { display.show(progress) }
          }
        } catch let error as RPCError where error.code == .aborted || error.code == .cancelled {
          // How it ended is shown below.
        }
        let record = try await coordinator.call(CoordinatorMethods.getJob, .with { $0.job = job })
        try client.show(record)
        if record.state == .failed || record.state == .cancelled { throw ClientExit.jobFailed }
      }
    }
  }

  struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Run an interrupted, failed or cancelled job on from its newest checkpoint and follow it.",
      discussion: """
        The job must have written checkpoints (train --checkpoint-every N). A coordinator resumes the \
        jobs it finds interrupted when it starts; this does it by hand. Exit codes as for train.
        """)

    @OptionGroup var client: ClientOptions

    @Argument(help: "The job.")
    var job: String

    func run() async throws {
      try await withExitCodes {
        var display = ProgressDisplay(showsAccuracy: true)
        for try await progress in try client.client().stream(CoordinatorMethods.resumeJob, .with { $0.job = job }) {
          if client.json { try client.printJSON(progress) } else { display.show(progress) }
        }
      }
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Delete a job that is not running: its record, its stages and its variables on the ps.")

    @OptionGroup var client: ClientOptions

    @Argument(help: "The job.")
    var job: String

    func run() async throws {
      try await withExitCodes {
        let response = try await client.client().call(CoordinatorMethods.deleteJob, .with { $0.job = job })
        if client.json { return try client.printJSON(response) }
        say("deleted \(job); the ps freed \(response.parameterServerBytesFreed) bytes")
      }
    }
  }
}

struct Cancel: AsyncParsableCommand {
  static let configuration = CommandConfiguration(abstract: "Cancel a running job; prints its final state.")

  @OptionGroup var client: ClientOptions

  @Option(help: "The job.")
  var job: String

  func run() async throws {
    try await client.showJob(CoordinatorMethods.cancelJob, .with { $0.job = job })
  }
}

extension ClientOptions {
  /// Prints a job as JSON, or as one tab-separated line (and, `withMemory`,
  /// a line for each process it runs on).
  func show(_ job: Pipemesh_V1_Job, withMemory: Bool = false) throws {
    guard !json else { return try printJSON(job) }
    say(
      "\(job.job)\t\(job.state)\tstep \(job.step)/\(job.totalSteps)\tloss \(String(format: "%.4f", job.loss))"
        + (job.error.isEmpty ? "" : "\t\(job.error)"))
    guard withMemory else { return }
    if !job.partitions.isEmpty {
      say(
        "  stages \(job.options.stages) × replicas \(job.runningReplicas) on \(job.partitions.joined(separator: ", "))"
          + (job.runningReplicas != job.options.replicas ? " (it asked for \(job.options.replicas))" : "")
      )
    }
    func gigabytes(_ bytes: Int64) -> String { String(format: "%.2f GB", Double(bytes) / 1e9) }
    for member in job.memory {
      say(
        "  \(member.member)\t\(member.endpoint)\tresident \(gigabytes(member.memory.residentBytes)) "
          + "(peak \(gigabytes(member.memory.peakResidentBytes)))\tthis job \(gigabytes(member.memory.jobBytes))")
    }
  }
}

extension ClientOptions {
  /// Calls a method that answers with one job and shows the job.
  func showJob<Request>(
    _ method: UnaryMethod<Request, Pipemesh_V1_Job>, _ request: Request, withMemory: Bool = false
  ) async throws {
    try await withExitCodes { try show(try await client().call(method, request), withMemory: withMemory) }
  }
}

extension LayerPosition: ExpressibleByArgument {
  /// What a `--split` option takes.
  static let splitHelp = ArgumentHelp(
    """
    Explicit split points, where stages 1…K-1 begin: LAYER (before the whole layer) or LAYER:INPUTS \
    (inside a Dense, Conv2D, LSTM, GRU or Transformer layer, after its first INPUTS features, channels or time steps; \
    in a Transformer block 1 is after its attention, 1+H after its attention and H of its MLP's hidden units).
    """)

  /// LAYER, or LAYER:INPUTS.
  public init?(argument: String) {
    let parts = argument.split(separator: ":", omittingEmptySubsequences: false)
    guard (1...2).contains(parts.count), let layer = Int(parts[0]), let inputs = parts.count == 2 ? Int(parts[1]) : 0
    else { return nil }
    self.init(layer: layer, inputs: inputs)
  }
}
