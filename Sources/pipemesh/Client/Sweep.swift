import ArgumentParser
import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// `pipemesh sweep`: a search over training settings and k-fold
/// cross-validation, each trial and fold a job of its own on the pool.
struct Sweep: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Search training settings, each trial (and fold) a job of its own on the pool, and keep the best.",
    discussion: """
      The trials are every combination of --learning-rates, --batch-sizes, --optimizers and --models (a grid), \
      or --random N of them drawn with --seed. Each trial is a job per fold with --folds N (N-fold \
      cross-validation: every example is held out once), else one job holding out --validation. All jobs are \
      sent at once: the coordinator runs as many side by side as its pool has partitions for (--stages each) \
      and queues the rest; trials register no models. A table gives each trial's validation loss and accuracy, the mean ± standard \
      deviation over folds, best first. With --name, the best trial's settings train once more on the data \
      holding out --validation, as job NAME, which registers model NAME.

      Example: pipemesh sweep --coordinator 127.0.0.1:7000 --learning-rates 0.01,0.001 --batch-sizes 32,64 \
      --folds 5 --stages 1 --name digits-best
      """)

  @OptionGroup var client: ClientOptions
  @OptionGroup var training: TrainingOptions

  @Option(help: "Learning rates to try, comma-separated; default: --learning-rate.")
  var learningRates: String?

  @Option(help: "Batch sizes to try, comma-separated; default: --batch-size.")
  var batchSizes: String?

  @Option(help: "Optimizers to try (sgd, momentum, adam), comma-separated; default: --optimizer.")
  var optimizers: String?

  @Option(help: "Model specs to try (architectures, sizes), comma-separated files; default: --model.")
  var models: String?

  @Option(help: "Trials drawn at random (with --seed) from the grid instead of all of it; 0: the whole grid.")
  var random: Int = 0

  @Option(help: "Folds of cross-validation for each trial (2 or more); 0: hold out --validation instead.")
  var folds: Int = 0

  @Option(help: "Pipeline stages of each job (default: 1, or one more than --split gives).")
  var stages: Int?

  @Option(help: "Prefix of the jobs' names (PREFIX-tI-fK); default: sweep-TIME.")
  var prefix: String?

  @Option(help: "Train the best trial once more as job NAME (which registers model NAME).")
  var name: String?

  func validate() throws {
    guard random >= 0 else { throw ValidationError("--random must be 0 (the grid) or a number of trials") }
    guard folds == 0 || (2...1000).contains(folds) else { throw ValidationError("--folds must be 0 or 2 to 1000") }
    guard stages ?? 1 >= 1 else { throw ValidationError("--stages must be 1 or more") }
    guard folds > 0 || training.data.validation > 0 else {
      throw ValidationError("a sweep compares held-out figures: give --validation above 0 or --folds")
    }
    _ = try grid()
  }

  /// One trial's settings.
  struct Trial {
    var learningRate: Float
    var batchSize: Int
    var optimizer: String
    /// The spec file, or nil for the default model.
    var model: String?

    var summary: String {
      "lr \(learningRate)  batch \(batchSize)  \(optimizer)"
        + (model.map { "  \(URL(fileURLWithPath: $0).deletingPathExtension().lastPathComponent)" } ?? "")
    }
  }

  /// Every combination of the lists given.
  func grid() throws -> [Trial] {
    guard case .count(let microBatchCount) = training.microBatches else {
      throw ValidationError("--micro-batches auto chooses for one job: give a sweep a count")
    }
    func list<T>(_ text: String?, _ fallback: T, _ parse: (String) -> T?, _ option: String) throws -> [T] {
      guard let text else { return [fallback] }
      let values = text.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
      let parsed = values.compactMap(parse)
      guard !values.isEmpty, parsed.count == values.count else {
        throw ValidationError("\(option) must be a comma-separated list, got '\(text)'")
      }
      return parsed
    }
    let rates = try list(
      learningRates, training.learningRate, { Float($0).flatMap { $0 > 0 ? $0 : nil } }, "--learning-rates")
    let batches = try list(
      batchSizes, training.batchSize, { Int($0).flatMap { $0 >= microBatchCount ? $0 : nil } }, "--batch-sizes")
    let kinds = try list(
      optimizers, training.optimizer, { ["sgd", "momentum", "adam"].contains($0) ? $0 : nil }, "--optimizers")
    let specs: [String?] = try list(models, training.data.model, { Optional($0) }, "--models")
    return specs.flatMap { model in
      kinds.flatMap { optimizer in
        batches.flatMap { batch in
          rates.map { Trial(learningRate: $0, batchSize: batch, optimizer: optimizer, model: model) }
        }
      }
    }
  }

  /// A finished job's held-out figures.
  struct Outcome {
    let trial: Int
    let fold: Int
    let job: String
    let loss: Double
    let accuracy: Double
    /// Why the job did not end well, if it did not.
    var failure: String? = nil
  }

  func run() async throws {
    var trials = try grid()
    if random > 0, random < trials.count {
      let order = PortableRandom.permutation(trials.count, seed: training.data.seed)
      trials = order.prefix(random).sorted().map { trials[$0] }
    }
    let prefix = prefix ?? "sweep-\(Int(Date().timeIntervalSince1970))"
    let foldCount = max(folds, 1)
    if !client.json {
      say("\(trials.count) trial(s) × \(foldCount) fold(s): \(trials.count * foldCount) jobs named \(prefix)-tI-fK")
    }
    try await withExitCodes {
      // The default model follows from the data's shapes: read once, here.
      let defaultSpec =
        trials.contains { $0.model == nil }
        ? try defaultModel(for: loadDataset(training.data.datasetReference), regression: training.data.regression)
        : nil
      let coordinator = try client.client()
      var requests: [(trial: Int, fold: Int, request: Pipemesh_V1_TrainRequest)] = []
      for (index, trial) in trials.enumerated() {
        for fold in 0..<foldCount {
          var request = try self.request(for: trial, job: "\(prefix)-t\(index)-f\(fold)", defaultSpec: defaultSpec)
          // A trial's weights are not kept: only the best settings are, trained once more with --name.
          request.discardModel = true
          if folds > 0 {
            request.validationFraction = 0
            request.fold = .with {
              $0.folds = Int32(folds)
              $0.fold = Int32(fold)
            }
          }
          requests.append((index, fold, request))
        }
      }
      let outcomes = try await withThrowingTaskGroup(of: Outcome.self) { group in
        for (trial, fold, request) in requests {
          group.addTask {
            var last: Pipemesh_V1_TrainProgress?
            do {
              for try await progress in try coordinator.stream(CoordinatorMethods.train, request)
              where progress.evaluated {
                last = progress
              }
            } catch let error as RPCError {
              // A trial that fails is a row of the table, not the end of the sweep.
              return Outcome(
                trial: trial, fold: fold, job: request.job, loss: .nan, accuracy: .nan, failure: "\(error)")
            }
            return Outcome(
              trial: trial, fold: fold, job: request.job, loss: last?.validationLoss ?? .nan,
              accuracy: last?.validationAccuracy ?? .nan)
          }
        }
        var outcomes: [Outcome] = []
        for try await outcome in group {
          outcomes.append(outcome)
          guard !client.json else { continue }
          let ended = "\(outcome.job)  trial \(outcome.trial) fold \(outcome.fold): "
          if let failure = outcome.failure {
            say(ended + "failed: \(failure)")
          } else {
            say(
              ended + String(format: "validation loss %.4f", outcome.loss)
                + (training.data.regression ? "" : String(format: "  accuracy %.1f%%", outcome.accuracy * 100)))
          }
        }
        return outcomes
      }
      let rows = trials.indices.map { index in
        (index, outcomes.filter { $0.trial == index })
      }.sorted { rank($0.1) < rank($1.1) }
      if client.json {
        let object: [String: Any] = [
          "trials": rows.map { index, results in
            [
              "trial": index, "learning_rate": trials[index].learningRate, "batch_size": trials[index].batchSize,
              "optimizer": trials[index].optimizer, "model": trials[index].model ?? "",
              "validation_loss_mean": mean(results.map(\.loss)), "validation_loss_std": deviation(results.map(\.loss)),
              "validation_accuracy_mean": mean(results.map(\.accuracy)),
              "validation_accuracy_std": deviation(results.map(\.accuracy)),
              "jobs": results.sorted { $0.fold < $1.fold }.map(\.job),
              "failures": results.compactMap(\.failure),
            ] as [String: Any]
          }
        ]
        say(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
      } else {
        say("")
        say("trial  settings" + String(repeating: " ", count: 28) + "validation loss      accuracy")
        for (index, results) in rows {
          let settings = trials[index].summary.padding(toLength: 36, withPad: " ", startingAt: 0)
          let losses = results.map(\.loss)
          let accuracies = results.map { $0.accuracy * 100 }
          say(
            String(format: "%5d  ", index) + settings
              + String(format: "%.4f ± %.4f", mean(losses), deviation(losses))
              + (training.data.regression
                ? "" : String(format: "   %.1f%% ± %.1f", mean(accuracies), deviation(accuracies))))
        }
      }
      guard let best = rows.first, rank(best.1).isFinite else {
        FileHandle.standardError.write(Data("pipemesh: no trial ended with a validation loss\n".utf8))
        throw ClientExit.jobFailed
      }
      guard let name else { return }
      say("best: trial \(best.0) (\(trials[best.0].summary)); training it as job \(name)")
      var request = try self.request(for: trials[best.0], job: name, defaultSpec: defaultSpec)
      request.replace = true
      var display = ProgressDisplay(showsAccuracy: !training.data.regression, showsBits: training.data.isText)
      for try await progress in try coordinator.stream(CoordinatorMethods.train, request) {
        if client.json { try client.printJSON(progress) } else { display.show(progress) }
      }
    }
  }

  /// The Train request of `trial` as job `job`: the shared options, with the trial's settings.
  private func request(
    for trial: Trial, job: String, defaultSpec: Pipemesh_V1_ModelSpec?
  ) throws -> Pipemesh_V1_TrainRequest {
    var options = training
    options.data.model = trial.model
    options.learningRate = trial.learningRate
    options.batchSize = trial.batchSize
    options.optimizer = trial.optimizer
    guard let spec = try options.data.modelSpec() ?? defaultSpec else { preconditionFailure("a trial without a model") }
    var request = try options.request(job: job, spec: spec, dataset: options.data.datasetReference)
    request.stages = Int32(stages ?? options.split.count + 1)
    request.replicas = 1
    return request
  }
}

/// A trial's place in the table: its mean validation loss; failed trials last.
private func rank(_ outcomes: [Sweep.Outcome]) -> Double {
  let loss = mean(outcomes.map(\.loss))
  return loss.isNaN ? .infinity : loss
}

private func mean(_ values: [Double]) -> Double { values.isEmpty ? .nan : values.reduce(0, +) / Double(values.count) }

/// The sample standard deviation (0 for one value).
private func deviation(_ values: [Double]) -> Double {
  guard values.count > 1 else { return 0 }
  let center = mean(values)
  return (values.map { ($0 - center) * ($0 - center) }.reduce(0, +) / Double(values.count - 1)).squareRoot()
}
