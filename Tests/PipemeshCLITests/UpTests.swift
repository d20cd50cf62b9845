import Foundation
import MeshCheckpoint
import MeshTestSupport
import Testing

#if canImport(FoundationXML)
  import FoundationXML
#endif

/// `pipemesh up` end to end, as a user runs it: real child processes (or, with
/// --in-process, the whole mesh in the one process), the bundled dataset, a
/// run folder.
@Suite struct UpTests {
  /// `--seed` picks the held-out split and the order of the examples: the
  /// same seed trains the same steps, another seed other ones (on stages
  /// that meet at whole layers, whose sums add in one order however the
  /// planner places them).
  @Test func theSeedChoosesTheRun() async throws {
    func losses(seed: Int) async throws -> [Substring] {
      let directory = try TemporaryDirectory(prefix: "pipemesh-seed")
      let up = try ChildProcess(
        PipemeshBinary.path,
        [
          "up", "--in-process", "--epochs", "1", "--micro-batches", "2", "--seed", "\(seed)", "--whole-layers",
          "--runs-dir", directory.file("runs"),
        ],
        logPath: directory.file("up.log"), currentDirectory: directory.path)
      let status = try await up.waitForExit(timeout: .seconds(240))
      #expect(status == 0, "pipemesh up --seed \(seed) failed:\n\(up.log)")
      let runs = try FileManager.default.contentsOfDirectory(atPath: directory.file("runs"))
      let csv = try String(
        contentsOfFile: ((directory.file("runs") as NSString).appendingPathComponent(try #require(runs.first))
          as NSString)
          .appendingPathComponent("metrics.csv"), encoding: .utf8)
      // The loss column of each step.
      return csv.split(separator: "\n").dropFirst().map {
        $0.split(separator: ",", omittingEmptySubsequences: false)[2]
      }
    }
    let first = try await losses(seed: 5)
    #expect(!first.isEmpty)
    #expect(try await losses(seed: 5) == first)
    #expect(try await losses(seed: 6) != first)
  }

  /// A run folder records every setting and prints the command that runs it
  /// again (with the folder's model.json): that command trains the same
  /// steps. A run that cannot start leaves no folder.
  @Test func aRunFolderSaysHowToRunItAgain() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-again")
    let runs = directory.file("runs")
    func up(_ command: String) async throws -> ChildProcess {
      let up = try ChildProcess(
        "/bin/sh", ["-c", command], logPath: directory.file("up-\(UUID().uuidString.prefix(4)).log"),
        currentDirectory: directory.path)
      #expect(try await up.waitForExit(timeout: .seconds(240)) == 0, "\(command):\n\(up.log)")
      return up
    }
    func lossColumn(_ run: String) throws -> [Substring] {
      let csv = try String(contentsOfFile: (run as NSString).appendingPathComponent("metrics.csv"), encoding: .utf8)
      return csv.split(separator: "\n").dropFirst().map {
        $0.split(separator: ",", omittingEmptySubsequences: false)[2]
      }
    }
    let first = try await up(
      "'\(PipemeshBinary.path)' up --in-process --epochs 1 --micro-batches 2 --seed 9 --runs-dir '\(runs)'")
    let reproduce = try #require(
      first.log.split(separator: "\n").first { $0.hasPrefix("reproduce with: pipemesh ") }?
        .dropFirst("reproduce with: pipemesh ".count), "\(first.log)")
    let firstRun = (runs as NSString).appendingPathComponent(
      try #require(try FileManager.default.contentsOfDirectory(atPath: runs).first))
    let options = try #require(
      try JSONSerialization.jsonObject(
        with: Data(contentsOf: URL(fileURLWithPath: (firstRun as NSString).appendingPathComponent("options.json"))))
        as? [String: Any])
    #expect(options["stages"] as? Int == 2 && options["in_process"] as? Bool == true, "\(options)")
    let request = try #require(options["train_request"] as? [String: Any])
    #expect(request["epochs"] as? Int == 1 && request["shuffleSeed"] as? Int == 9, "\(request)")
    // Every option, those left at their defaults too.
    #expect(request["recomputeActivations"] as? Bool == false && request["replace"] as? Bool == false, "\(request)")
    #expect(options["reproduce"] as? String == "pipemesh \(reproduce)")
    // The split the planner chose from layer times measured now, which vary from run to run, is named.
    #expect(reproduce.contains(" --split "), "\(reproduce)")

    _ = try await up("'\(PipemeshBinary.path)' \(reproduce)")
    let folders = try FileManager.default.contentsOfDirectory(atPath: runs).sorted()
    #expect(folders.count == 2, "\(folders)")
    let again = try #require(folders.map { (runs as NSString).appendingPathComponent($0) }.first { $0 != firstRun })
    let losses = try lossColumn(firstRun)
    let lossesAgain = try lossColumn(again)
    #expect(!losses.isEmpty && lossesAgain == losses)

    // A dataset that is not there: no run, no folder.
    let failed = try ChildProcess(
      PipemeshBinary.path, ["up", "--dataset", directory.file("missing.csv"), "--runs-dir", directory.file("none")],
      logPath: directory.file("failed.log"), currentDirectory: directory.path)
    #expect(try await failed.waitForExit(timeout: .seconds(60)) != 0)
    #expect(!FileManager.default.fileExists(atPath: directory.file("none")), "\(failed.log)")
  }

  /// A regression's run folder plots its loss and no accuracy (it has none).
  @Test func aRegressionRunPlotsItsLossAndR2() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-regression")
    let up = try ChildProcess(
      PipemeshBinary.path,
      [
        "up", "--in-process", "--dataset", "synthetic-regression", "--regression", "--epochs", "1", "--runs-dir",
        directory.file("runs"),
      ], logPath: directory.file("up.log"), currentDirectory: directory.path)
    #expect(try await up.waitForExit(timeout: .seconds(240)) == 0, "\(up.log)")
    let run = (directory.file("runs") as NSString).appendingPathComponent(
      try #require(try FileManager.default.contentsOfDirectory(atPath: directory.file("runs")).first))
    let files = try FileManager.default.contentsOfDirectory(atPath: run)
    #expect(files.contains("loss.svg") && files.contains("r2.svg") && !files.contains("accuracy.svg"), "\(files)")
    // Its loss is the metric that fits: the mean squared error; and the variance it explains.
    let loss = try String(contentsOfFile: (run as NSString).appendingPathComponent("loss.svg"), encoding: .utf8)
    #expect(loss.contains(">mean squared error</text>"), "\(loss)")
    let r2 = try String(contentsOfFile: (run as NSString).appendingPathComponent("r2.svg"), encoding: .utf8)
    #expect(r2.contains(">variance explained (1 is a perfect fit)</text>"), "\(r2)")
    // The synthetic targets are a linear map plus noise of deviation 0.1 (their variance about 9):
    // one epoch explains most of it.
    #expect(up.log.contains("R² 0.9"), "\(up.log)")
    let metrics = try #require(
      try JSONSerialization.jsonObject(
        with: Data(contentsOf: URL(fileURLWithPath: (run as NSString).appendingPathComponent("metrics.json"))))
        as? [String: Any])
    let evaluation = try #require((metrics["evaluations"] as? [[String: Any]])?.last)
    let determination = try #require(evaluation["validation_r2"] as? Double)
    #expect(determination > 0.9 && determination <= 1, "\(evaluation)")
  }

  /// A linear regression's run puts the closed-form solution beside the one gradient descent
  /// reached, on the same split and objective. Its one layer is split between 2 stages, so
  /// the run's checkpoint holds the kernel in two pieces, read back as one.
  @Test func aLinearRegressionRunShowsTheClosedFormBesideGradientDescent() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-ridge")
    let up = try ChildProcess(
      PipemeshBinary.path,
      [
        "up", "--in-process", "--model", Repository.path("examples/ridge-regression.json"), "--dataset",
        "synthetic-regression", "--regression", "--stages", "2", "--optimizer", "sgd", "--learning-rate", "0.05",
        "--runs-dir", directory.file("runs"),
      ], logPath: directory.file("up.log"), currentDirectory: directory.path)
    #expect(try await up.waitForExit(timeout: .seconds(240)) == 0, "\(up.log)")
    #expect(up.log.contains("closed form beside gradient descent"), "\(up.log)")
    #expect(up.log.contains("kernel[0]") && up.log.contains("bias[0]"), "\(up.log)")
    // Ten epochs of SGD end within a few thousandths of the closed form on every parameter.
    let largest = try #require(
      up.log.firstMatch(of: /largest difference of a parameter: ([0-9.e-]+)/).flatMap { Double($0.1) }, "\(up.log)")
    #expect(largest < 0.02, "\(up.log)")
    let run = (directory.file("runs") as NSString).appendingPathComponent(
      try #require(try FileManager.default.contentsOfDirectory(atPath: directory.file("runs")).first))
    let solved = try #require(
      try JSONSerialization.jsonObject(
        with: Data(contentsOf: URL(fileURLWithPath: (run as NSString).appendingPathComponent("closed-form.json"))))
        as? [String: Any])
    #expect((solved["validationR2"] as? Double ?? 0) > 0.99, "\(solved)")
  }

  @Test(arguments: [false, true])
  func shortRunTrainsAndWritesACompleteRunFolder(inProcess: Bool) async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-up")
    let up = try ChildProcess(
      PipemeshBinary.path,
      ["up", "--epochs", "2", "--stages", "2", "--micro-batches", "2", "--runs-dir", directory.file("runs")]
        + (inProcess ? ["--in-process"] : []),
      logPath: directory.file("up.log"), currentDirectory: directory.path)
    let status = try await up.waitForExit(timeout: .seconds(240))
    #expect(status == 0, "pipemesh up failed:\n\(up.log)")

    let runs = try FileManager.default.contentsOfDirectory(atPath: directory.file("runs"))
    let run = (directory.file("runs") as NSString).appendingPathComponent(try #require(runs.first))
    func file(_ name: String) -> String { (run as NSString).appendingPathComponent(name) }
    // Child processes log to logs/; a mesh in one process starts none.
    #expect(FileManager.default.fileExists(atPath: file("logs")) == !inProcess)
    for name in [
      "options.json", "metrics.csv", "metrics.json", "loss.svg", "accuracy.svg", "trace.json", "model.json",
      "job.json", "checkpoint.safetensors",
    ] {
      #expect(FileManager.default.fileExists(atPath: file(name)), "\(name) is missing from the run folder")
    }
    // The job's record holds the inputs' rescaling that `up` asked for by default, as fitted.
    let job = try #require(
      try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file("job.json")))) as? [String: Any]
    )
    let scaling = try #require((job["options"] as? [String: Any])?["normalization"] as? [String: Any], "\(job)")
    #expect(scaling["method"] as? String == "NORMALIZATION_METHOD_STANDARDIZE")
    #expect((scaling["scale"] as? [Double])?.count == 64, "\(scaling)")

    // Ten classes: an untrained model is right about 10% of the time.
    let metrics = try #require(
      try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file("metrics.json"))))
        as? [String: Any])
    let evaluations = try #require(metrics["evaluations"] as? [[String: Any]])
    #expect(evaluations.count == 2)
    let accuracy = try #require((evaluations.last?["validation_accuracy"] as? NSNumber)?.doubleValue)
    #expect(accuracy > 0.6, "validation accuracy \(accuracy)")
    let steps = try #require(metrics["steps"] as? [[String: Any]])
    #expect(!steps.isEmpty)

    let csv = try String(contentsOfFile: file("metrics.csv"), encoding: .utf8).split(separator: "\n")
    #expect(
      csv.first == "step,epoch,loss,accuracy,samples_per_second,validation_loss,validation_accuracy,validation_r2")
    #expect(csv.count == steps.count + 1)
    #expect(csv.dropFirst().allSatisfy { $0.split(separator: ",", omittingEmptySubsequences: false).count == 8 })

    for chart in ["loss.svg", "accuracy.svg"] {
      let parser = XMLParser(data: try Data(contentsOf: URL(fileURLWithPath: file(chart))))
      #expect(parser.parse(), "\(chart) is not well-formed XML")
      let svg = try String(contentsOfFile: file(chart), encoding: .utf8)
      #expect(svg.contains("<polyline"))
      // Both axes carry round ticks, three or more each, and say what they measure.
      let xTicks = svg.matches(of: /text-anchor="middle" font-family="sans-serif" font-size="11">([-0-9.e+]+)</)
      let yTicks = svg.matches(of: /text-anchor="end" font-family="sans-serif" font-size="11">([-0-9.e+]+)</)
      #expect(xTicks.count >= 3 && yTicks.count >= 3, "\(chart): \(xTicks.count) x ticks, \(yTicks.count) y ticks")
      #expect(svg.contains(">step</text>"), "\(chart)")
      let yLabel = chart == "loss.svg" ? "cross-entropy" : "fraction predicted right"
      #expect(svg.contains("class=\"y-label\"") && svg.contains(">\(yLabel)</text>"), "\(chart)")
    }
    let accuracyTicks = try String(contentsOfFile: file("accuracy.svg"), encoding: .utf8)
      .matches(of: /text-anchor="end" font-family="sans-serif" font-size="11">([-0-9.e+]+)</).compactMap {
        Double($0.1)
      }
    // From 0 to at least the validation accuracy (over 0.6), evenly spaced.
    #expect(accuracyTicks.first == 0 && (accuracyTicks.last ?? 0) >= accuracy, "\(accuracyTicks)")
    let gaps = zip(accuracyTicks.dropFirst(), accuracyTicks).map { $0 - $1 }
    #expect(gaps.allSatisfy { abs($0 - gaps[0]) < 1e-9 }, "evenly spaced: \(accuracyTicks)")

    let trace = try #require(
      try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: file("trace.json"))))
        as? [String: Any])
    let events = try #require(trace["traceEvents"] as? [[String: Any]]).filter { $0["ph"] as? String == "X" }
    // One step of 2 micro-batches through 2 stages: 4 forwards, 4 backwards, 2 commits, and the
    // transfers between the stages: 2 activations, 2 gradients.
    #expect(events.filter { $0["cat"] as? String != "transfer" }.count == 10)
    #expect(events.filter { $0["cat"] as? String == "transfer" }.count == 4)
    #expect(events.filter { $0["name"] as? String == "commit" }.count == 2)

    let checkpoint = try SafeTensors.decode(try Data(contentsOf: URL(fileURLWithPath: file("checkpoint.safetensors"))))
    // Whole, or as the pieces of the stages a split inside it gave (the planner may split there).
    #expect(checkpoint.tensors.keys.contains { $0.hasSuffix("/dense0/kernel") || $0.contains("/dense0/kernel#") })
    #expect(up.log.contains("done: validation accuracy"))
  }

  @Test func ctrlCCancelsTheJobAndStopsTheMesh() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-up")
    let up = try ChildProcess(
      PipemeshBinary.path, ["up", "--epochs", "50", "--runs-dir", directory.file("runs")],
      logPath: directory.file("up.log"), currentDirectory: directory.path)
    _ = try await up.waitForLine(startingWith: "epoch 1")
    up.signal(SIGINT)
    #expect(try await up.waitForExit(timeout: .seconds(60)) == 130, "\(up.log)")
    #expect(up.log.contains("interrupted: cancelling"))
    // Every service of the mesh was told to stop and did.
    let run = (directory.file("runs") as NSString).appendingPathComponent(
      try #require(try FileManager.default.contentsOfDirectory(atPath: directory.file("runs")).first))
    // The steps it reported before the interruption are in metrics.csv.
    let csv = try String(contentsOfFile: (run as NSString).appendingPathComponent("metrics.csv"), encoding: .utf8)
    #expect(csv.split(separator: "\n").count >= 2, "\(csv)")
    let logs = (run as NSString).appendingPathComponent("logs")
    let names = try FileManager.default.contentsOfDirectory(atPath: logs)
    #expect(names.count == 4)  // ps, two partitions, coordinator
    for name in names {
      let log = try String(contentsOfFile: (logs as NSString).appendingPathComponent(name), encoding: .utf8)
      #expect(log.contains("stopped"), "\(name) did not stop cleanly:\n\(log)")
    }
  }

  @Test func ctrlCCancelsTheJobOfAMeshInOneProcess() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-up")
    let up = try ChildProcess(
      PipemeshBinary.path, ["up", "--in-process", "--epochs", "500", "--runs-dir", directory.file("runs")],
      logPath: directory.file("up.log"), currentDirectory: directory.path)
    _ = try await up.waitForLine(startingWith: "epoch 1")
    up.signal(SIGINT)
    do {
      #expect(try await up.waitForExit(timeout: .seconds(60)) == 130, "\(up.log)")
    } catch {
      // A process that does not stop: where each of its threads is, for whoever looks into it.
      Issue.record("\(error)\n\(Self.threadDump(of: up.pid))")
    }
    #expect(up.log.contains("interrupted: cancelling"))
    #expect(up.log.contains("stopping the mesh"))
  }

  /// Every thread's stack of a running process, when gdb is installed.
  static func threadDump(of pid: Int32) -> String {
    guard FileManager.default.isExecutableFile(atPath: "/usr/bin/gdb") else { return "(no gdb for a thread dump)" }
    return (try? runBlocking("/usr/bin/gdb", ["-p", "\(pid)", "-batch", "-ex", "thread apply all bt 20"]))
      ?? "(gdb failed)"
  }
}
