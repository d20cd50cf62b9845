import ArgumentParser
import Foundation
import MeshCoordinator
import MeshProto
import MeshRPC
import SwiftProtobuf

struct Up: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Start a local mesh, train a model on a dataset, evaluate it, and write a run folder.",
    discussion: """
      Starts a ps, the partitions (stages × replicas) and a coordinator as child processes on free
      loopback ports, trains (by default an MLP on the bundled UCI handwritten digits), evaluates on a
      held-out split after every epoch, and writes runs/<time>/: metrics.csv and metrics.json, loss.svg
      and accuracy.svg, trace.json (the last step's pipeline timeline, for Perfetto), model.json (the
      spec used), checkpoint.safetensors (the trained variables) and logs/. Ctrl-C cancels the job and
      stops the mesh cleanly.
      """)

  @Option(help: "Model spec, protobuf JSON (see examples/); default: an MLP that fits the dataset.")
  var model: String?

  @Option(help: "Bundled dataset name or a file (.csv, .npy/.npz, IDX).")
  var dataset: String = "digits"

  @Option(help: "Label column of a CSV dataset.")
  var labelColumn: String = "label"

  @Option(help: "Pipeline stages (one partition process each, per replica).")
  var stages: Int = 2

  @Option(help: "Data-parallel replicas of the pipeline.")
  var replicas: Int = 1

  @Option(help: "Micro-batches per mini-batch.")
  var microBatches: Int = 4

  @Option(help: "Pipeline schedule: gpipe or 1f1b.")
  var schedule: String = "1f1b"

  @Option(help: "Passes over the training split.")
  var epochs: Int = 10

  @Option(help: "Examples per step and replica.")
  var batchSize: Int = 64

  @Option(help: "Optimizer: sgd, momentum or adam.")
  var optimizer: String = "adam"

  @Option(help: "Learning rate.")
  var learningRate: Float = 0.01

  @Option(help: "Fraction of the data held out for evaluation.")
  var validation: Float = 0.2

  @Option(help: "Where run folders go.")
  var runsDir: String = "runs"

  func validate() throws {
    guard stages >= 1, replicas >= 1, microBatches >= 1, epochs >= 1, batchSize >= microBatches else {
      throw ValidationError("stages, replicas, micro-batches and epochs must be at least 1, and batch-size at least micro-batches")
    }
    guard ["gpipe", "1f1b"].contains(schedule) else { throw ValidationError("--schedule must be gpipe or 1f1b") }
    guard ["sgd", "momentum", "adam"].contains(optimizer) else { throw ValidationError("--optimizer must be sgd, momentum or adam") }
    guard validation >= 0, validation < 1 else { throw ValidationError("--validation must be in [0, 1)") }
  }

  func run() async throws {
    let run = try RunFolder.create(under: runsDir)
    let data = try loadDataset(.with {
      $0.uri = dataset
      $0.labelColumn = labelColumn
    })
    let spec = try model.map(readModelSpec) ?? defaultModel(inputShape: Array(data.inputs.shape.dropFirst()), classes: max(data.classes, 1))
    try run.write(try spec.jsonString(), to: "model.json")
    say("run folder \(run.path)")

    let services = try ChildServices(logDirectory: run.file("logs"))
    let outcome: Result<Void, any Error>
    do {
      outcome = .success(try await train(spec, services: services, run: run))
    } catch {
      outcome = .failure(error)
    }
    say("stopping the mesh")
    await services.stopAll()
    try outcome.get()
  }

  private func train(_ spec: Pipemesh_V1_ModelSpec, services: ChildServices, run: RunFolder) async throws {
    let ps = try await services.start("ps", name: "ps", ["--checkpoint-dir", run.file("ps-checkpoints"), "--checkpoint-seconds", "0"])
    var layout: [[String]] = []
    for stage in 0..<stages {
      var replicaEndpoints: [String] = []
      for replica in 0..<replicas {
        replicaEndpoints.append(try await services.start("partition", name: "partition-\(stage)-\(replica)", ["--blas-threads", "1"]))
      }
      layout.append(replicaEndpoints)
    }
    let coordinatorEndpoint = try await services.start(
      "coordinator", name: "coordinator",
      ["--ps", ps, "--partitions", layout.map { $0.joined(separator: ",") }.joined(separator: ";")])
    say("mesh up: ps \(ps), \(stages) stage(s) × \(replicas) replica(s), coordinator \(coordinatorEndpoint)")

    let coordinator = try RPCClient(target: coordinatorEndpoint)
    let job = "up-\(Int(Date().timeIntervalSince1970))"
    let training = Task { try await stream(job: job, spec: spec, coordinator: coordinator, run: run) }
    let interrupted = Task {
      await waitForTerminationSignal()
      say("\ninterrupted: cancelling \(job)")
      _ = try? await coordinator.call(CoordinatorMethods.cancelJob, .with { $0.job = job }, options: .init(timeout: .seconds(30)))
      training.cancel()
    }
    defer { interrupted.cancel() }
    do {
      try await training.value
    } catch {
      if training.isCancelled { throw ExitCode(130) }
      throw error
    }
  }

  private func stream(job: String, spec: Pipemesh_V1_ModelSpec, coordinator: RPCClient, run: RunFolder) async throws {
    var request = Pipemesh_V1_TrainRequest()
    request.job = job
    request.model = spec
    request.data.dataset = .with {
      $0.uri = dataset
      $0.labelColumn = labelColumn
    }
    request.epochs = Int32(epochs)
    request.batchSize = Int32(batchSize)
    request.microBatches = Int32(microBatches)
    request.schedule = schedule == "gpipe" ? .scheduleGpipe : .scheduleOneFOneB
    request.optimizer = .with {
      switch optimizer {
      case "sgd": $0.sgd = .init()
      case "momentum": $0.momentum = .with { $0.momentum = 0.9 }
      default: $0.adam = .init()
      }
      $0.learningRate = .with { $0.base = learningRate }
    }
    request.consistency = .with { $0.sync = .init() }
    request.checkpoint = .with { $0.atEnd = true }
    request.validationFraction = validation
    request.shuffleSeed = 1

    var display = ProgressDisplay()
    var steps: [Pipemesh_V1_TrainProgress] = []
    var evaluations: [Pipemesh_V1_TrainProgress] = []
    var last: Pipemesh_V1_TrainProgress?
    for try await progress in coordinator.stream(CoordinatorMethods.train, request) {
      display.show(progress)
      if progress.done { last = progress } else if progress.evaluated { evaluations.append(progress) } else { steps.append(progress) }
    }
    guard let last else { throw UpError("the coordinator ended the job without a final report") }
    try run.writeMetrics(steps: steps, evaluations: evaluations)
    try run.write(last.traceJson, to: "trace.json")
    if let checkpoint = last.checkpoints.first {
      try FileManager.default.copyItem(atPath: checkpoint, toPath: run.file("checkpoint.safetensors"))
    }
    if let final = evaluations.last {
      say(String(format: "done: validation accuracy %.1f%%, loss %.4f; run folder %@", final.validationAccuracy * 100, final.validationLoss, run.path as NSString))
    } else {
      say("done: run folder \(run.path)")
    }
  }

  private func readModelSpec(_ path: String) throws -> Pipemesh_V1_ModelSpec {
    do {
      return try Pipemesh_V1_ModelSpec(jsonString: String(contentsOfFile: path, encoding: .utf8))
    } catch {
      throw ValidationError("cannot read model spec \(path): \(error)")
    }
  }

  /// An MLP sized for the dataset: flatten, two hidden ReLU layers, logits.
  private func defaultModel(inputShape: [Int], classes: Int) -> Pipemesh_V1_ModelSpec {
    .with {
      $0.name = "mlp"
      $0.inputShape = inputShape.map { Int64($0) }
      $0.seed = 7
      $0.layers = (inputShape.count > 1 ? [.with { $0.flatten = .init() }] : []) + [
        .with { $0.dense = .with { $0.units = 128; $0.activation = .relu } },
        .with { $0.dense = .with { $0.units = 64; $0.activation = .relu } },
        .with { $0.dense = .with { $0.units = Int64(classes) } },
      ]
      $0.loss = .with { $0.softmaxCrossEntropy = .init() }
    }
  }
}
