import Foundation
import MeshProto
import MeshTestSupport
import Testing

@testable import MeshCoordinator

/// The planner's calibrations as the coordinator keeps them: in memory by
/// model, stages and micro-batch rows, newest last; in its state in the order
/// they were saved, the newest `LayerTimings.capacity`.
@Suite struct CalibrationStateTests {
  /// PipelineChoiceTests.model's spec, named: names do not change a model's key.
  static func spec(named name: String) -> Pipemesh_V1_ModelSpec {
    .with {
      $0.name = name
      $0.inputShape = [64]
      $0.layers = (0..<4).map { _ in .with { $0.dense = .with { $0.units = 64 } } }
    }
  }

  @Test func theNewestJobCalibratesAndTheOthersAtOtherRowsFitItsTransfers() throws {
    let timings = LayerTimings()
    #expect(timings.calibration(of: Self.spec(named: "a"), stages: 2) == nil)
    // 9 ms at 16 rows, replaced by 2 ms; 5 ms at 64 rows in between.
    for (job, rows, transfer) in [("first", 16, 0.009), ("wide", 64, 0.005), ("newest", 16, 0.002)] {
      let calibration = try PipelineChoiceTests.calibration(job: job, rows: rows, transfer: transfer)
      #expect(timings.record(calibration, of: Self.spec(named: job), stages: 2) != nil)
    }
    let calibrated = try #require(timings.calibration(of: Self.spec(named: "another name"), stages: 2))
    #expect(calibrated.job == "newest" && calibrated.rows == 16)
    #expect(
      abs(calibrated.transfer.fixed - 0.001) < 1e-12 && abs(calibrated.transfer.perUnit - 6.25e-5) < 1e-12)
    #expect(timings.calibration(of: Self.spec(named: "a"), stages: 3) == nil)
  }

  @Test func theStateKeepsTheNewestCalibrationsInTheOrderTheyWereSaved() async throws {
    let state = try TemporaryDirectory(prefix: "pipemesh-calibrations")
    let spec = Self.spec(named: "saved")
    let modelKey = try #require(
      LayerTimings().record(try PipelineChoiceTests.calibration(rows: 8, transfer: 0), of: spec, stages: 2))
    let keys = [modelKey, Data([2]), Data([3])]
    do {
      let store = try CoordinatorStore(directory: state.path)
      // The clock runs backwards between saves: the order saved is what counts.
      for (index, (key, rows)) in [(keys[0], 16), (keys[1], 16), (keys[2], 16), (keys[0], 64), (keys[1], 16)]
        .enumerated()
      {
        let calibration = try PipelineChoiceTests.calibration(job: "job\(index)", rows: rows, transfer: 0.001)
        try await store.saveCalibration(calibration, key: key, at: Double(100 - index), capacity: 3)
      }
    }
    let kept = try CoordinatorStore(directory: state.path).calibrations()
    // key 1's first (replaced by job4) and key 0's at 16 rows (the oldest past 3) are gone.
    #expect(kept.map(\.key) == [keys[2], keys[0], keys[1]] && kept.map(\.calibration.job) == ["job2", "job3", "job4"])

    // A calibration comes back as it was saved; one damaged in the state (a stage's commit
    // missing, a backward of three calls, layer times measured on other inputs) is left out, not used.
    #expect(kept.last?.calibration == (try PipelineChoiceTests.calibration(job: "job4", rows: 16, transfer: 0.001)))
    let sound = try JSONEncoder().encode(try PipelineChoiceTests.calibration(job: "damaged", rows: 4, transfer: 0))
    for (field, value) in [("commitSeconds", [0.01] as Any), ("backwardCalls", 3), ("layerTimeInputs", 1)] {
      var fields = try #require(try JSONSerialization.jsonObject(with: sound) as? [String: Any])
      #expect(fields[field] != nil, "\(field) is saved")
      fields[field] = value
      let damaged = try JSONDecoder().decode(
        StepCalibration.self, from: try JSONSerialization.data(withJSONObject: fields))
      try await CoordinatorStore(directory: state.path).saveCalibration(damaged, key: keys[2], at: 0, capacity: 3)
      #expect(try CoordinatorStore(directory: state.path).calibrations().map(\.calibration.job) == ["job3", "job4"])
    }
    // Lines saved without their least units (by the builds before lines had them) read as lines
    // that hold at any measure: nothing is lost.
    var withoutLeast = try #require(try JSONSerialization.jsonObject(with: sound) as? [String: Any])
    for field in ["forward", "backward"] {
      let lines = try #require(withoutLeast[field] as? [[String: Any]])
      #expect(lines.allSatisfy { $0["leastUnits"] != nil })
      withoutLeast[field] = lines.map { $0.filter { $0.key != "leastUnits" } }
    }
    withoutLeast["transfer"] = (withoutLeast["transfer"] as? [String: Any])?.filter { $0.key != "leastUnits" }
    let read = try JSONDecoder().decode(
      StepCalibration.self, from: try JSONSerialization.data(withJSONObject: withoutLeast))
    #expect(read == (try PipelineChoiceTests.calibration(job: "damaged", rows: 4, transfer: 0)))
    // One saved before calibrations counted a backward's calls, or before layers were timed on the
    // inputs they are now, cannot be read (the state skips it).
    for field in ["backwardCalls", "layerTimeInputs"] {
      var older = try #require(try JSONSerialization.jsonObject(with: sound) as? [String: Any])
      #expect(older.removeValue(forKey: field) != nil)
      #expect(throws: DecodingError.self) {
        try JSONDecoder().decode(StepCalibration.self, from: try JSONSerialization.data(withJSONObject: older))
      }
    }

    // A coordinator that starts on this state plans the model by its newest calibration.
    let timings = LayerTimings()
    timings.restore(kept)
    #expect(timings.calibration(of: spec, stages: 2)?.job == "job3")
  }
}
