import Foundation
import MeshTensor
import MeshTestSupport
import Testing

/// Faults of every role at random times under one running job, through the
/// `pipemesh` commands on real processes: `kill -9` of a partition, of a ps
/// task and of the coordinator (each started again at its address, as
/// systemd would, after a random pause) and `SIGSTOP` of a partition for a
/// random time, in a random order with random gaps. A sync job that may
/// restart ends with the weights and epoch losses of a run never
/// interrupted. The faults come from a seed printed at the start;
/// `PIPEMESH_CHAOS_SEED` runs the same ones again.
@Suite(.serialized) struct ChaosTests {
  /// Draws from `PortableRandom` under one seed.
  struct SeededDraws: RandomNumberGenerator {
    let seed: UInt64
    var counter: UInt64 = 0

    mutating func next() -> UInt64 {
      counter += 1
      return PortableRandom.bits(seed: seed, counter: counter)
    }
  }

  enum Fault: String, CaseIterable {
    case killPartition = "kill -9 of a partition"
    case stopPartition = "SIGSTOP of a partition"
    case killParameterServer = "kill -9 of a ps task"
    case killCoordinator = "kill -9 of the coordinator"
  }

  @Test func aSyncJobUnderRandomFaultsOfEveryRoleEndsWithTheWeightsOfAnUninterruptedRun() async throws {
    let seed =
      ProcessInfo.processInfo.environment["PIPEMESH_CHAOS_SEED"].flatMap { UInt64($0) }
      ?? UInt64(Date().timeIntervalSince1970)
    print("chaos seed \(seed): PIPEMESH_CHAOS_SEED=\(seed) swift test --filter ChaosTests runs the same faults")
    var draws = SeededDraws(seed: seed)
    // Two stages, a spare partition, two ps shards that checkpoint.
    var mesh = try await DurableStateTests.Mesh(psCheckpoints: true, parameterServers: 2, partitions: 3)
    let options = [
      "--model", DurableStateTests.model, "--stages", "2", "--epochs", "30", "--micro-batches", "2",
      "--checkpoint-every", "5", "--max-restarts", "20",
    ]
    let training = try await DurableStateTests.trainStraightThenStart("chaos", options: options, on: mesh)

    let endStates: Set<String> = ["JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED"]
    var injected: [String] = []
    var stepAtLastFault = 0
    /// The step the job had reached when each fault came (it stepped on a little before it did).
    var stepOfFault: [Fault: Int] = [:]
    for fault in Fault.allCases.shuffled(using: &draws) {
      // Each fault finds the job stepping past where the one before found it.
      let before = try await DurableStateTests.waitFor("chaos", on: mesh) { record in
        endStates.contains(record["state"] as? String ?? "")
          || (record["state"] as? String == "JOB_STATE_RUNNING" && record["step"] as? Int ?? 0 > stepAtLastFault)
      }
      guard before["state"] as? String == "JOB_STATE_RUNNING" else { break }
      stepAtLastFault = before["step"] as? Int ?? 0
      stepOfFault[fault] = stepAtLastFault
      try await Task.sleep(for: .milliseconds(Int.random(in: 200...1000, using: &draws)))
      let pause = Duration.milliseconds(Int.random(in: 0...1000, using: &draws))
      // One of the partitions the job runs on.
      let running = before["partitions"] as? [String] ?? []
      let candidates = mesh.partitions.indices.filter { running.contains(mesh.partitions[$0].endpoint) }
      let partition = try #require(candidates.randomElement(using: &draws), "\(before)")
      switch fault {
      case .killPartition:
        mesh = try await mesh.restarted(coordinator: false, partitions: [partition], after: pause)
        injected.append("\(fault.rawValue) (\(partition)), back after \(pause)")
      case .stopPartition:
        // Past the step deadline's 10 s floor and the 5 s its health check waits, or within them.
        let stopped = Duration.milliseconds(Int.random(in: 1000...18000, using: &draws))
        let process = mesh.partitions[partition].process
        process.signal(SIGSTOP)
        try? await Task.sleep(for: stopped)
        process.signal(SIGCONT)
        injected.append("\(fault.rawValue) (\(partition)) for \(stopped)")
      case .killParameterServer:
        let task = Int.random(in: 0..<mesh.parameterServers.count, using: &draws)
        mesh = try await mesh.restarted(coordinator: false, psTasks: [task], after: pause)
        injected.append("\(fault.rawValue) (\(task)), back after \(pause)")
      case .killCoordinator:
        mesh = try await mesh.restarted(after: pause)
        injected.append("\(fault.rawValue), back after \(pause)")
      }
    }
    print("chaos faults: \(injected.joined(separator: "; "))")
    _ = try await training.waitForExit()  // its coordinator may have died: the record says how the job ended

    let ended = try await DurableStateTests.waitFor("chaos", on: mesh, timeout: .seconds(300)) {
      endStates.contains($0["state"] as? String ?? "")
    }
    let faults = ended["faults"] as? [[String: Any]] ?? []
    for fault in faults {
      print(
        "chaos stop at step \(fault["step"] ?? 0): \(fault["state"] ?? ""), \(fault["stepsRedone"] ?? 0) steps redone, "
          + "stepping again \(fault["recoverySeconds"] ?? 0) s after it")
    }
    #expect(ended["state"] as? String == "JOB_STATE_SUCCEEDED", "seed \(seed), \(injected): \(ended)")
    #expect(injected.count == Fault.allCases.count, "seed \(seed): the job ended before every fault: \(injected)")
    // Every kill stops the job; a short stop may be waited out. A ps task's restart is noticed at
    // the job's next checkpoint, its incarnation changed, unless a kill of a partition or of the
    // coordinator stops the job first: the job's next run reads every task's incarnation again and
    // goes on from the checkpoint the task came back with, one stop for both kills (a window of
    // two checkpoints: a fault comes up to a second after the step it is counted at).
    let psKill = stepOfFault[.killParameterServer] ?? 0
    let folded = [Fault.killPartition, .killCoordinator].contains { kill in
      stepOfFault[kill].map { $0 >= psKill && $0 - psKill <= 10 } ?? false
    }
    #expect(faults.count >= (folded ? 2 : 3), "seed \(seed), \(injected), steps \(stepOfFault): \(faults)")
    try await DurableStateTests.expectSameWeights("chaos", as: "straight", on: mesh)
    try await DurableStateTests.expectSameEpochLosses("chaos", as: "straight", on: mesh)
  }
}
