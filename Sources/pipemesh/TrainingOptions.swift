import ArgumentParser
import Foundation
import MeshCoordinator
import MeshData
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import SwiftProtobuf

/// What to train and how: shared by `pipemesh up`, `pipemesh train` and `pipemesh sweep`.
struct TrainingOptions: ParsableArguments {
  @OptionGroup var data: DataOptions

  @Option(
    help: """
      Micro-batches per mini-batch, or auto: the count and the schedule the coordinator's planner \
      predicts to train --batch-size fastest on the job's stages (pipemesh plan --batch-size shows them all).
      """)
  var microBatches: MicroBatchCount = .count(4)

  @Option(
    help:
      "Pipeline schedule: gpipe, 1f1b (default), zb-h1 (1F1B with split backwards, zero bubble), or 2bw (PipeDream-2BW: steps overlap without a flush, each a step behind on the weights; sync only)."
  )
  var schedule: String?

  /// `--micro-batches`: a count, or the planner's choice.
  enum MicroBatchCount: ExpressibleByArgument, Equatable {
    case count(Int)
    case auto

    init?(argument: String) {
      if argument == "auto" {
        self = .auto
      } else if let count = Int(argument) {
        self = .count(count)
      } else {
        return nil
      }
    }

    var defaultValueDescription: String {
      switch self {
      case .count(let count): "\(count)"
      case .auto: "auto"
      }
    }
  }

  /// The schedules `--schedule` names.
  static let schedules: [String: Pipemesh_V1_ScheduleKind] = [
    "gpipe": .scheduleGpipe, "1f1b": .scheduleOneFOneB, "zb-h1": .scheduleZeroBubbleH1,
    "2bw": .schedulePipedream2Bw,
  ]

  /// What `--schedule` calls `kind`.
  static func scheduleName(_ kind: Pipemesh_V1_ScheduleKind) -> String {
    schedules.first { $0.value == kind }?.key ?? "\(kind)"
  }

  @Option(help: "Passes over the training split.")
  var epochs: Int = 10

  @Option(help: "Examples per step and replica.")
  var batchSize: Int = 64

  @Option(help: "Optimizer: sgd, momentum or adam.")
  var optimizer: String = "adam"

  @Option(help: "Learning rate.")
  var learningRate: Float = 0.01

  @Option(
    help:
      "Raise the learning rate linearly from near 0 over this many first updates (steps; with async or bounded replicas, each replica's step)."
  )
  var warmupSteps: Int = 0

  @Option(help: "Learning-rate decay after the warm-up: none, or cosine (to 0 at the job's last update).")
  var decay: String = "none"

  @Option(
    help: "Clip each step's gradients to this L2 norm over the whole model (every stage); 0: no clipping.")
  var clipNorm: Float = 0

  @Option(
    help:
      "Consistency of the variables: sync, async, or bounded:K (replicas run apart, each within K steps of the slowest: stale-synchronous parallel)."
  )
  var consistency: String = "sync"

  @Option(
    help: """
      How sync replicas add up their gradients: ps (each pushes to the ps, which applies their mean) or \
      ring (the replicas of each stage all-reduce among themselves and each applies the mean).
      """)
  var reduction: String = "ps"

  @Option(
    help: """
      Stop early once the validation loss has not fallen below its best (by more than --min-delta) for this \
      many epochs in a row; 0 runs every epoch.
      """)
  var patience: Int = 0

  @Option(help: "The least fall of the validation loss that --patience counts as an improvement.")
  var minDelta: Float = 0

  @Flag(help: "Have the ps tasks write a checkpoint when the job ends (they need --checkpoint-dir).")
  var checkpointAtEnd = false

  @Option(
    help: "Checkpoint the job every N steps (the ps tasks need --checkpoint-dir): it can resume from the newest.")
  var checkpointEvery: Int = 0

  @Option(
    help: """
      Times the coordinator may run the job on from its newest checkpoint after a partition or ps task \
      fails under it (it waits for the member to come back).
      """)
  var maxRestarts: Int = 0

  @Flag(help: "Keep only each stage's input and recompute its activations in backward (less memory).")
  var recomputeActivations = false

  @Flag(
    help: """
      Split the model between stages at whole layers only (by default a Dense, Conv2D, LSTM, GRU or Transformer layer may be split \
      between two stages when that balances them markedly better).
      """)
  var wholeLayers = false

  @Option(
    help: """
      How activations and gradients travel between the stages: float32 (exact, the default), or bfloat16 or \
      float16, half the bytes, each element rounded on the way (for links slower than the stages' compute).
      """)
  var transferDtype = "float32"

  /// The dtypes `--transfer-dtype` names.
  static let transferDtypes: [String: Pipemesh_V1_DType] = [
    "float32": .float32, "bfloat16": .bfloat16, "float16": .float16,
  ]

  @Option(parsing: .upToNextOption, help: LayerPosition.splitHelp)
  var split: [LayerPosition] = []

  func validate() throws {
    switch microBatches {
    case .count(let count):
      guard count >= 1, epochs >= 1, batchSize >= count else {
        throw ValidationError("micro-batches and epochs must be at least 1, and batch-size at least micro-batches")
      }
    case .auto:
      guard epochs >= 1, (1...Int(Planner.mostChosenBatchSize)).contains(batchSize) else {
        throw ValidationError(
          "epochs must be at least 1, and batch-size 1 to \(Planner.mostChosenBatchSize) with micro-batches auto")
      }
      guard schedule == nil else {
        throw ValidationError("--micro-batches auto chooses the schedule too: give no --schedule, or a count")
      }
    }
    guard checkpointEvery >= 0 else { throw ValidationError("--checkpoint-every must be 0 (none) or a step count") }
    guard (0...100).contains(maxRestarts) else { throw ValidationError("--max-restarts must be 0 to 100") }
    guard (0...10_000).contains(patience), minDelta >= 0, minDelta.isFinite else {
      throw ValidationError("--patience must be 0 to 10000 epochs and --min-delta 0 or more")
    }
    guard patience == 0 || data.validation > 0 else {
      throw ValidationError("--patience watches the validation loss: give --validation above 0")
    }
    guard schedule.map({ Self.schedules[$0] != nil }) ?? true else {
      throw ValidationError("--schedule must be gpipe, 1f1b, zb-h1 or 2bw")
    }
    guard Self.transferDtypes[transferDtype] != nil else {
      throw ValidationError("--transfer-dtype must be float32, bfloat16 or float16")
    }
    guard ["sgd", "momentum", "adam"].contains(optimizer) else {
      throw ValidationError("--optimizer must be sgd, momentum or adam")
    }
    guard warmupSteps >= 0, warmupSteps <= Int32.max else {
      throw ValidationError("--warmup-steps must be 0 (none) or a step count")
    }
    guard ["none", "cosine"].contains(decay) else { throw ValidationError("--decay must be none or cosine") }
    guard clipNorm.isFinite, clipNorm >= 0 else {
      throw ValidationError("--clip-norm must be a finite number >= 0 (0: no clipping)")
    }
    _ = try consistencySpec()
  }

  func consistencySpec() throws -> Pipemesh_V1_Consistency { try Self.consistencySpec(consistency, reduction) }

  /// What `--consistency` (sync, async or bounded:K) and `--reduction` (ps
  /// or ring, sync only) say, as the API takes them.
  static func consistencySpec(_ consistency: String, _ reduction: String = "ps") throws -> Pipemesh_V1_Consistency {
    guard reduction == "ps" || (reduction == "ring" && consistency == "sync") else {
      throw ValidationError(
        reduction == "ring" ? "--reduction ring needs --consistency sync" : "--reduction must be ps or ring")
    }
    switch consistency {
    case "sync": return .with { $0.sync = .with { $0.reduction = reduction == "ring" ? .ring : .unspecified } }
    case "async": return .with { $0.async = .init() }
    case let text where text.hasPrefix("bounded:"):
      guard let bound = Int64(text.dropFirst("bounded:".count)), bound >= 0 else {
        throw ValidationError("--consistency bounded:K needs a whole number K >= 0")
      }
      return .with {
        $0.bounded = .with {
          $0.maxStaleness = bound
          $0.wait = true
        }
      }
    default:
      throw ValidationError("--consistency must be sync, async or bounded:K")
    }
  }

  /// `request` with, under `--micro-batches auto`, the micro-batches and the
  /// schedule the planner of the coordinator behind `coordinator` predicts
  /// to train its batch fastest on `stages` stages (0: as the coordinator
  /// plans), said on standard error; as it is otherwise.
  func choosingPipeline(
    _ request: Pipemesh_V1_TrainRequest, stages: Int, coordinator: any RPCChannel
  ) async throws -> Pipemesh_V1_TrainRequest {
    guard microBatches == .auto else { return request }
    var asked = Self.planRequest(for: request, stages: stages)
    asked.batchSize = request.batchSize
    var request = request
    let plan: Pipemesh_V1_PlanResponse
    do {
      plan = try await coordinator.call(CoordinatorMethods.plan, asked)
    } catch let error as RPCError where error.code == .failedPrecondition {
      // Nothing timed the model (every partition busy, say): train as without auto.
      request.microBatches = Int32(min(4, request.batchSize))
      request.schedule = .scheduleOneFOneB
      FileHandle.standardError.write(
        Data(
          "pipemesh: --micro-batches auto: \(error.message); training with \(request.microBatches) by 1f1b\n".utf8))
      return request
    }
    guard let chosen = plan.choices.first else {
      throw RPCError(.internal, "the coordinator answered a plan for batch_size \(request.batchSize) with no choice")
    }
    request.microBatches = chosen.microBatches
    request.schedule = chosen.schedule
    FileHandle.standardError.write(
      Data(
        ("pipemesh: --micro-batches auto: \(chosen.microBatches) of \(chosen.microBatchRows) examples by "
          + "\(Self.scheduleName(chosen.schedule)), "
          + String(format: "%.0f examples/s predicted on ", chosen.predictedExamplesPerSecond) + plan.measuredOn + "\n")
          .utf8))
    return request
  }

  /// A Plan request for the stages of `request` over `stages` stages (0: as
  /// the coordinator plans): its model, split, optimizer, consistency and whole layers.
  static func planRequest(for request: Pipemesh_V1_TrainRequest, stages: Int) -> Pipemesh_V1_PlanRequest {
    .with {
      $0.model = request.model
      $0.stages = Int32(stages)
      $0.splitPoints = request.splitPoints
      $0.splitPointInputs = request.splitPointInputs
      $0.optimizer = request.optimizer
      $0.consistency = request.consistency
      $0.wholeLayers = request.wholeLayers
    }
  }

  /// A Train request for `spec` under the name `job`, on `dataset`.
  func request(
    job: String, spec: Pipemesh_V1_ModelSpec, dataset: Pipemesh_V1_DatasetReference
  ) throws -> Pipemesh_V1_TrainRequest {
    var request = Pipemesh_V1_TrainRequest()
    request.job = job
    request.model = spec
    request.data.dataset = dataset
    request.epochs = Int32(epochs)
    request.batchSize = Int32(batchSize)
    // With auto, chosen before it is sent (`choosingPipeline`).
    if case .count(let count) = microBatches { request.microBatches = Int32(count) }
    request.schedule = Self.schedules[schedule ?? "1f1b"] ?? .scheduleOneFOneB
    request.optimizer = .with {
      switch optimizer {
      case "sgd": $0.sgd = .init()
      case "momentum": $0.momentum = .with { $0.momentum = 0.9 }
      default: $0.adam = .init()
      }
      $0.learningRate = .with {
        $0.base = learningRate
        $0.warmupSteps = Int64(warmupSteps)
        // Its length, 0, is the job's: the coordinator knows it once it has the data.
        if decay == "cosine" { $0.cosine = .init() }
      }
      $0.clipGlobalNorm = clipNorm
    }
    request.consistency = try consistencySpec()
    request.checkpoint = .with {
      $0.atEnd = checkpointAtEnd
      $0.everySteps = Int64(checkpointEvery)
    }
    request.maxRestarts = Int32(clamping: maxRestarts)
    request.validationFraction = data.validation
    request.shuffleSeed = data.seed
    request.recomputeActivations = recomputeActivations
    request.wholeLayers = wholeLayers
    request.transferDtype = Self.transferDtypes[transferDtype] ?? .float32
    request.splitPoints = split.wireLayers
    request.splitPointInputs = split.wireInputs
    request.earlyStopping = .with {
      $0.patience = Int32(patience)
      $0.minDelta = minDelta
    }
    request.normalization.method = data.normalization(for: spec)
    return request
  }
}

/// The model `up` and `train` train when no --model is given: an MLP sized
/// for `data` (`defaultModel(inputShape:outputs:regression:)`). Data with a
/// class per position (a text) needs a sequence model, which the user names.
func defaultModel(for data: LoadedData, regression: Bool) throws -> Pipemesh_V1_ModelSpec {
  guard regression || data.targets.rank == 1 else {
    throw ValidationError(
      "the dataset has a class per position (labels \(Array(data.targets.shape.dropFirst())) per example): "
        + "give a sequence model with --model, such as examples/char-lm.json for a text")
  }
  return defaultModel(
    inputShape: Array(data.inputs.shape.dropFirst()),
    outputs: regression ? data.targets.shape.last ?? 1 : max(data.classes, 1), regression: regression)
}

/// An MLP sized for a dataset: flatten, two hidden ReLU layers, then logits
/// (or one output per target for regression).
func defaultModel(inputShape: [Int], outputs: Int, regression: Bool) -> Pipemesh_V1_ModelSpec {
  .with {
    $0.name = "mlp"
    $0.inputShape = inputShape.map { Int64($0) }
    $0.seed = 7
    $0.layers =
      (inputShape.count > 1 ? [.with { $0.flatten = .init() }] : []) + [
        .with {
          $0.dense = .with {
            $0.units = 128
            $0.activation = .relu
          }
        },
        .with {
          $0.dense = .with {
            $0.units = 64
            $0.activation = .relu
          }
        },
        .with { $0.dense = .with { $0.units = Int64(outputs) } },
      ]
    $0.loss = regression ? .with { $0.meanSquaredError = .init() } : .with { $0.softmaxCrossEntropy = .init() }
  }
}
