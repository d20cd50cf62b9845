import Foundation
import MeshTestSupport
import Testing

/// `pipemesh sweep` on a pool of four partitions: trials and folds as jobs
/// side by side, a table of held-out figures, the best trained again.
@Suite(.serialized) struct SweepTests {
  typealias Mesh = DurableStateTests.Mesh

  /// The [start, end] wall times of the jobs named `prefix…`.
  static func runTimes(_ prefix: String, on mesh: Mesh) async throws -> [(Double, Double)] {
    let listed = try #require(try await mesh.json(["jobs"]).first?["jobs"] as? [[String: Any]])
    return listed.filter { ($0["job"] as? String ?? "").hasPrefix(prefix) }.map {
      ($0["startedUnixSeconds"] as? Double ?? 0, $0["endedUnixSeconds"] as? Double ?? 0)
    }
  }

  /// Whether two of the intervals overlap: jobs that ran side by side.
  static func overlap(_ times: [(Double, Double)]) -> Bool {
    times.indices.contains { i in
      times.indices.contains { j in i < j && times[i].0 < times[j].1 && times[j].0 < times[i].1 }
    }
  }

  @Test func aGridOfFourTrialsRunsSideBySideAndTheBestIsTrainedAgain() async throws {
    let mesh = try await Mesh(partitions: 4)
    let sweep = try await mesh.run([
      "sweep", "--model", DurableStateTests.model, "--learning-rates", "0.01,0.0001", "--batch-sizes", "32,64",
      "--epochs", "2", "--stages", "1", "--prefix", "grid", "--name", "grid-best",
    ])
    #expect(sweep.status == 0, "\(sweep.output)")
    let lines = sweep.output.split(separator: "\n").map(String.init)
    let header = try #require(lines.firstIndex { $0.hasPrefix("trial  settings") }, "\(sweep.output)")
    let rows = lines[(header + 1)...].prefix { $0.first?.isNumber == true || $0.first == " " }.filter {
      $0.contains("±")
    }
    #expect(rows.count == 4, "\(sweep.output)")
    // Best first: a learning rate of 1e-4 for two epochs learns far less than 0.01.
    #expect(rows.first?.contains("lr 0.01 ") == true, "\(rows)")
    #expect(rows.suffix(2).allSatisfy { $0.contains("lr 0.0001") }, "\(rows)")
    #expect(sweep.output.contains("best: trial") && sweep.output.contains("training it as job grid-best"))
    #expect(Self.overlap(try await Self.runTimes("grid-t", on: mesh)), "the trials ran one after another")
    let best = try await DurableStateTests.record("grid-best", on: mesh)
    #expect(best["state"] as? String == "JOB_STATE_SUCCEEDED" && best["model"] as? String == "grid-best:v1", "\(best)")
    let options = try #require(best["options"] as? [String: Any])
    #expect(
      (options["optimizer"] as? [String: Any]).flatMap { ($0["learningRate"] as? [String: Any])?["base"] as? Double }
        == 0.01)
    // The trials registered no models: only the best, trained again, is one.
    let models = try #require(try await mesh.json(["models", "list"]).first?["models"] as? [[String: Any]])
    #expect(models.compactMap { $0["name"] as? String } == ["grid-best"], "\(models)")
    let trial = try await DurableStateTests.record("grid-t0-f0", on: mesh)
    #expect(trial["state"] as? String == "JOB_STATE_SUCCEEDED" && (trial["model"] as? String ?? "").isEmpty, "\(trial)")
    #expect((trial["options"] as? [String: Any])?["discardModel"] as? Bool == true, "\(trial)")
    // The ps holds nothing of the trial any more; it holds the registered job's variables.
    func psMemory(_ record: [String: Any]) -> [[String: Any]] {
      (record["memory"] as? [[String: Any]] ?? []).filter { ($0["member"] as? String ?? "").hasPrefix("ps") }
    }
    #expect(psMemory(trial).isEmpty, "\(trial)")
    #expect(!psMemory(best).isEmpty, "\(best)")
    let inputs = try await DurableStateTests.inputs(in: mesh.directory)
    let refused = try await mesh.run(["infer", "--job", "grid-t0-f0", "--input", inputs])
    #expect(
      refused.status != 0 && refused.output.contains("FAILED_PRECONDITION")
        && refused.output.contains("trained with discard_model"), "\(refused.output)")
  }

  @Test func aTrialThatFailsIsARowOfTheTableNotTheEndOfTheSweep() async throws {
    let mesh = try await Mesh(partitions: 2)
    let sweep = try await mesh.run([
      "sweep", "--model", DurableStateTests.model, "--batch-sizes", "32,5000", "--epochs", "1", "--prefix", "mixed",
    ])
    #expect(sweep.status == 0, "\(sweep.output)")
    // Each job's line as it ends; the one with a batch larger than the data is refused.
    #expect(sweep.output.contains("mixed-t0-f0  trial 0 fold 0: validation loss "), "\(sweep.output)")
    #expect(
      sweep.output.contains("mixed-t1-f0  trial 1 fold 0: failed: INVALID_ARGUMENT")
        && sweep.output.contains("fewer than one step needs"), "\(sweep.output)")
    let rows = sweep.output.split(separator: "\n").filter { $0.contains("±") }
    #expect(
      rows.count == 2 && rows.first?.contains("batch 32 ") == true && rows.last?.contains("nan") == true, "\(rows)")
    let failed = try await mesh.run([
      "sweep", "--model", DurableStateTests.model, "--batch-sizes", "5000", "--prefix", "none",
    ])
    #expect(failed.status == 1 && failed.output.contains("no trial ended with a validation loss"), "\(failed.output)")
  }

  @Test func fiveFoldCrossValidationHoldsOutEachExampleOnce() async throws {
    let mesh = try await Mesh(partitions: 4)
    let sweep = try await mesh.json([
      "sweep", "--model", DurableStateTests.model, "--folds", "5", "--epochs", "2", "--stages", "1", "--prefix", "cv",
    ])
    let trials = try #require(sweep.last?["trials"] as? [[String: Any]], "\(sweep)")
    #expect(trials.count == 1)
    let trial = try #require(trials.first)
    #expect((trial["jobs"] as? [String]) == (0..<5).map { "cv-t0-f\($0)" }, "\(trial)")
    #expect((trial["validation_accuracy_mean"] as? Double ?? 0) > 0.85, "\(trial)")
    #expect((trial["validation_accuracy_std"] as? Double ?? 1) < 0.1, "\(trial)")
    #expect(Self.overlap(try await Self.runTimes("cv-t0", on: mesh)), "the folds ran one after another")
    // Each fold's job records its fold and holds out nothing else.
    for fold in 0..<5 {
      let record = try await DurableStateTests.record("cv-t0-f\(fold)", on: mesh)
      let options = try #require(record["options"] as? [String: Any])
      let recorded = try #require(options["fold"] as? [String: Any], "\(options)")
      #expect(recorded["folds"] as? Int == 5 && (recorded["fold"] as? Int ?? 0) == fold)
      #expect(options["validationFraction"] as? Double == 0)
    }
  }
}
