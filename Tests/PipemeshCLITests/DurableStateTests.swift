import Foundation
import MeshCheckpoint
import MeshTensor
import MeshTestSupport
import Testing

/// Jobs and models that outlive the processes: a coordinator with a state
/// directory, killed with `kill -9` and started again as systemd would, and
/// every service of the mesh restarted, driven through the `pipemesh`
/// commands as a user would.
@Suite(.serialized) struct DurableStateTests {
  /// ps tasks (one unless told), partitions (two unless told) and a
  /// coordinator keeping its state in `state`, its layout one stage per
  /// partition.
  final class Mesh: CommandMesh {
    let directory: TemporaryDirectory
    let state: String
    /// Each ps task's options: a checkpoint directory of its own, when asked for.
    let psArguments: [[String]]
    let parameterServers: [RunningService]
    let partitions: [RunningService]
    let coordinator: RunningService

    /// With `psCheckpoints`, each ps task writes the jobs' checkpoints to a
    /// directory of its own, and every `periodicSeconds` (0: never) a
    /// checkpoint of all it holds, which it reads back when it restarts.
    init(
      psCheckpoints: Bool = false, periodicSeconds: Int = 0, parameterServers psCount: Int = 1,
      partitions count: Int = 2
    ) async throws {
      let directory = try TemporaryDirectory(prefix: "pipemesh-state")
      self.directory = directory
      state = directory.file("coordinator-state")
      psArguments = (0..<psCount).map { task in
        psCheckpoints
          ? ["--checkpoint-dir", directory.file("ps\(task)-checkpoints"), "--checkpoint-seconds", "\(periodicSeconds)"]
          : []
      }
      var parameterServers: [RunningService] = []
      for (task, arguments) in psArguments.enumerated() {
        parameterServers.append(try await RunningService.start("ps", arguments, log: directory.file("ps\(task).log")))
      }
      self.parameterServers = parameterServers
      var partitions: [RunningService] = []
      for index in 0..<count {
        partitions.append(try await RunningService.start("partition", log: directory.file("partition\(index).log")))
      }
      self.partitions = partitions
      coordinator = try await Self.startCoordinator(
        ps: parameterServers.map(\.endpoint), partitions: partitions.map(\.endpoint), state: state,
        log: directory.file("coordinator.log"))
    }

    private init(
      directory: TemporaryDirectory, state: String, psArguments: [[String]], parameterServers: [RunningService],
      partitions: [RunningService], coordinator: RunningService
    ) {
      self.directory = directory
      self.state = state
      self.psArguments = psArguments
      self.parameterServers = parameterServers
      self.partitions = partitions
      self.coordinator = coordinator
    }

    static func startCoordinator(
      ps: [String], partitions: [String], state: String, log: String, listen: String? = nil
    ) async throws -> RunningService {
      // Its data directory, where weights to import are put: beside the state.
      let data = (state as NSString).deletingLastPathComponent + "/data"
      try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
      return try await RunningService.start(
        "coordinator",
        [
          "--ps", ps.joined(separator: ","), "--partitions", partitions.joined(separator: ";"), "--state-dir", state,
          "--data-dir", data,
        ],
        log: log, listen: listen)
    }

    /// Kills services with SIGKILL — the coordinator (it starts again on the
    /// same state directory), every ps task (`ps`) or ps tasks by index,
    /// partitions by index — and starts them again at their addresses, as
    /// systemd would, `after` a pause.
    func restarted(
      coordinator restartsCoordinator: Bool = true, ps restartsPS: Bool = false, psTasks: [Int] = [],
      partitions indices: [Int] = [], after pause: Duration = .zero
    )
      async throws -> Mesh
    {
      let tasks = restartsPS ? Array(parameterServers.indices) : psTasks
      var services = indices.map { self.partitions[$0] } + tasks.map { self.parameterServers[$0] }
      if restartsCoordinator { services.append(self.coordinator) }
      for service in services { service.process.signal(SIGKILL) }
      for service in services { _ = try await service.process.waitForExit() }
      if pause > .zero { try await Task.sleep(for: pause) }
      let suffix = UUID().uuidString.prefix(4)
      func again(_ service: RunningService, _ role: String, _ arguments: [String] = []) async throws -> RunningService {
        try await RunningService.start(
          role, arguments, log: directory.file("\(role)-\(suffix).log"), listen: service.endpoint)
      }
      var parameterServers = self.parameterServers
      for task in tasks { parameterServers[task] = try await again(parameterServers[task], "ps", psArguments[task]) }
      var partitions = self.partitions
      for index in indices { partitions[index] = try await again(partitions[index], "partition") }
      let coordinator =
        restartsCoordinator
        ? try await Self.startCoordinator(
          ps: parameterServers.map(\.endpoint), partitions: partitions.map(\.endpoint), state: state,
          log: directory.file("coordinator-\(suffix).log"), listen: self.coordinator.endpoint) : self.coordinator
      return Mesh(
        directory: directory, state: state, psArguments: psArguments, parameterServers: parameterServers,
        partitions: partitions, coordinator: coordinator)
    }
  }

  static let model = Repository.path("examples/mlp-digits.json")

  /// Random inputs for the digits MLP, as a .npy file.
  static func inputs(in directory: TemporaryDirectory) async throws -> String {
    let path = directory.file("inputs.npy")
    _ = try await run(
      try PythonInterop.findPython(),
      [
        "-c",
        "import numpy as np; np.save('\(path)', np.random.default_rng(1).uniform(0, 16, (5, 64)).astype(np.float32))",
      ])
    return path
  }

  @Test func jobsAndModelsOutliveEveryServiceAndExportToSafetensors() async throws {
    var mesh = try await Mesh()
    let trained = try await mesh.json(
      [
        "train", "--job", "digits", "--model", Self.model, "--epochs", "2", "--micro-batches", "2", "--validation",
        "0.2", "--warmup-steps", "3", "--decay", "cosine",
      ])
    #expect(trained.contains { $0["done"] as? Bool == true }, "\(trained)")
    // The job's trace calibrated the planner's predictions of the model on two stages.
    func plan(on mesh: Mesh) async throws -> [String: Any] {
      let planned = try await mesh.run([
        "plan", "--model", Self.model, "--stages", "2", "--micro-batch-rows", "32", "--micro-batches", "2", "--json",
      ])
      #expect(planned.status == 0, "\(planned.output)")
      return try #require(try JSONSerialization.jsonObject(with: Data(planned.output.utf8)) as? [String: Any])
    }
    let calibrated = try await plan(on: mesh)
    #expect(calibrated["calibratedByJob"] as? String == "digits", "\(calibrated)")
    // The decay runs to the job's last step: its record writes the count out.
    let record = try await Self.record("digits", on: mesh)
    let rate =
      ((record["options"] as? [String: Any])?["optimizer"] as? [String: Any])?["learningRate"] as? [String: Any]
    let cosineSteps = (rate?["cosine"] as? [String: Any])?["totalSteps"].map { "\($0)" }
    #expect(
      rate?["warmupSteps"].map { "\($0)" } == "3" && cosineSteps == "\((record["totalSteps"] as? Int ?? 0) - 3 - 1)",
      "\(String(describing: rate)) in \(record)")
    let inputs = try await Self.inputs(in: mesh.directory)
    let before = try await mesh.json(["infer", "--model", "digits", "--input", inputs])
    let byJob = try await mesh.json(["infer", "--job", "digits", "--input", inputs])
    let outputs = try #require(before.first?["outputs"] as? [[Double]], "\(before)")
    #expect(byJob.first?["outputs"] as? [[Double]] == outputs)

    // The coordinator dies mid-life and comes back on its state directory.
    mesh = try await mesh.restarted()
    let listed = try await mesh.run(["jobs"])
    #expect(listed.status == 0 && listed.output.contains("digits\tsucceeded"), "\(listed.output)")
    let shown = try #require(try await mesh.json(["jobs", "show", "digits"]).first)
    #expect(shown["model"] as? String == "digits:v1", "\(shown)")
    let epochs = try #require(shown["epochs"] as? [[String: Any]])
    #expect(epochs.count == 2 && epochs.allSatisfy { ($0["validationLoss"] as? Double ?? 0) > 0 }, "\(epochs)")
    // What the job taught the planner outlives the coordinator too.
    let replanned = try await plan(on: mesh)
    #expect(
      replanned["calibratedByJob"] as? String == "digits"
        && replanned["calibratedRows"] as? Int == calibrated["calibratedRows"] as? Int, "\(replanned)")
    // Every default is written out: the learning rate the job used, its schedule, its split.
    let options = try #require(shown["options"] as? [String: Any])
    let optimizer = try #require(options["optimizer"] as? [String: Any])
    #expect((optimizer["learningRate"] as? [String: Any])?["base"] as? Double != nil, "\(options)")
    #expect(options["microBatches"] as? Int == 2 && (options["splitPoints"] as? [Int])?.count == 1, "\(options)")

    // Every service restarted: the model loads from its stored weights and answers exactly as before.
    mesh = try await mesh.restarted(ps: true, partitions: [0, 1])
    let after = try await mesh.json(["infer", "--model", "digits:v1", "--input", inputs])
    #expect(after.first?["outputs"] as? [[Double]] == outputs, "before \(outputs), after \(after)")
    let afterByJob = try await mesh.json(["infer", "--job", "digits", "--input", inputs])
    #expect(afterByJob.first?["outputs"] as? [[Double]] == outputs)

    // Exported, the weights are a safetensors file NumPy computes the same logits from.
    let exportDirectory = mesh.directory.file("data")
    let exported = try await mesh.run(["models", "export", "digits", "--out", exportDirectory])
    #expect(exported.status == 0, "\(exported.output)")
    let check = """
      import json, re, sys, numpy as np
      from safetensors.numpy import load_file
      w = load_file(sys.argv[1])
      record = json.load(open(sys.argv[2]))
      x = np.load(sys.argv[3]).astype(np.float64)
      # The CLI standardised the inputs; the record holds how.
      scaling = record["normalization"]
      x = (x - np.array(scaling["offset"])) / np.array(scaling["scale"])
      names = sorted(w)
      layers = sorted({n.split('/')[0] for n in names}, key=lambda n: int(re.search(r'(\\d+)$', n).group(1)))
      for i, layer in enumerate(layers):
          x = x @ w[layer + '/kernel'].astype(np.float64) + w[layer + '/bias'].astype(np.float64)
          if i < len(layers) - 1:
              x = np.maximum(x, 0)
      print(json.dumps({"names": names, "model": record["name"] + ":v" + str(record["version"]), "logits": x.tolist()}))
      """
    let script = mesh.directory.file("check.py")
    try check.write(toFile: script, atomically: true, encoding: .utf8)
    let answer = try await run(
      try PythonInterop.findPython(),
      [script, "\(exportDirectory)/digits-v1.safetensors", "\(exportDirectory)/digits-v1.json", inputs])
    let read = try #require(
      try JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any], "python said: \(answer)")
    #expect(read["model"] as? String == "digits:v1")
    #expect((read["names"] as? [String])?.count == 6, "\(read)")
    let logits = try #require(read["logits"] as? [[Double]])
    for (row, expected) in zip(logits, outputs) {
      for (value, want) in zip(row, expected) {
        #expect(abs(value - want) <= 1e-4 * max(1, abs(want)), "\(row) \(expected)")
      }
    }

    // Uploaded from a file of the client's own, outside the coordinator's data directory, under
    // another name with its record (spec, split, the inputs' rescaling), the weights answer alike;
    // imported from the data directory with the spec alone, they are given the inputs as they
    // are, which the model was not trained on.
    let elsewhere = mesh.directory.file("client-side.safetensors")
    try FileManager.default.copyItem(atPath: "\(exportDirectory)/digits-v1.safetensors", toPath: elsewhere)
    let imported = try #require(
      try await mesh.json([
        "models", "import", "digits-copy", "--record", "\(exportDirectory)/digits-v1.json", "--weights", elsewhere,
      ])
      .first)
    #expect(imported["name"] as? String == "digits-copy" && imported["version"] as? Int == 1, "\(imported)")
    let scaling = try #require(imported["normalization"] as? [String: Any], "\(imported)")
    #expect(scaling["method"] as? String == "NORMALIZATION_METHOD_STANDARDIZE")
    #expect((scaling["offset"] as? [Double])?.count == 64 && (scaling["scale"] as? [Double])?.count == 64)
    let copy = try await mesh.json(["infer", "--model", "digits-copy", "--input", inputs])
    #expect(copy.first?["outputs"] as? [[Double]] == outputs)
    _ = try await mesh.json([
      "models", "import", "digits-unscaled", "--spec", Self.model, "--data-dir-weights", "digits-v1.safetensors",
    ])
    let unscaled = try await mesh.json(["infer", "--model", "digits-unscaled", "--input", inputs])
    #expect(unscaled.first?["outputs"] as? [[Double]] != outputs)
    // Weights that do not fit the spec are refused, naming the tensor.
    let wider = mesh.directory.file("wider.json")
    try String(contentsOfFile: Self.model, encoding: .utf8).replacingOccurrences(of: "\"128\"", with: "\"129\"")
      .write(toFile: wider, atomically: true, encoding: .utf8)
    let misfit = try await mesh.run(
      ["models", "import", "digits-wide", "--spec", wider, "--data-dir-weights", "digits-v1.safetensors"])
    #expect(
      misfit.status == 65
        && misfit.output.contains("tensor dense0/kernel in digits-v1.safetensors must be finite and of shape [64, 129]"),
      "\(misfit.output)")
    let uploadedMisfit = try await mesh.run(
      ["models", "import", "digits-wide", "--spec", wider, "--weights", elsewhere])
    #expect(
      uploadedMisfit.status == 65
        && uploadedMisfit.output.contains(
          "tensor dense0/kernel in the uploaded file must be finite and of shape [64, 129]"),
      "\(uploadedMisfit.output)")
    let outside = try await mesh.run(
      ["models", "import", "digits-etc", "--spec", Self.model, "--data-dir-weights", "/etc/passwd"])
    #expect(outside.status == 77 && outside.output.contains("PERMISSION_DENIED"), "\(outside.output)")
    let notWeights = try await mesh.run(["models", "import", "digits-etc", "--spec", Self.model, "--weights", inputs])
    #expect(
      notWeights.status == 65 && notWeights.output.contains("the uploaded file is not a safetensors file"),
      "\(notWeights.output)")
    #expect((try await mesh.json(["models", "list", "digits-etc"]).first?["models"] as? [[String: Any]] ?? []).isEmpty)
    #expect(
      (try await mesh.json(["models", "list", "digits-wide"]).first?["models"] as? [[String: Any]] ?? []).isEmpty)

    // The name is taken until the job is replaced; the new run is the model's next version.
    let again = try await mesh.run(["train", "--job", "digits", "--model", Self.model, "--epochs", "1"])
    #expect(again.status == 65 && again.output.contains("ALREADY_EXISTS"), "\(again.output)")
    let replaced = try await mesh.run(["train", "--job", "digits", "--model", Self.model, "--epochs", "1", "--replace"])
    #expect(replaced.status == 0, "\(replaced.output)")
    let versions = try await mesh.json(["models", "list", "digits"]).first?["models"] as? [[String: Any]] ?? []
    #expect(versions.map { $0["version"] as? Int } == [2, 1], "\(versions)")

    // Deleting the job frees its variables on the ps; its model versions stay.
    let psBefore = try await mesh.json(["jobs", "show", "digits"])
    #expect(psBefore.first?["state"] as? String == "JOB_STATE_SUCCEEDED")
    let deleted = try #require(try await mesh.json(["jobs", "delete", "digits"]).first)
    #expect(deleted["parameterServerBytesFreed"] as? Int ?? 0 >= 4 * 13_002, "\(deleted)")
    let gone = try await mesh.run(["jobs", "show", "digits"])
    #expect(gone.status == 65 && gone.output.contains("no job named 'digits'"), "\(gone.output)")
    let stillServed = try await mesh.json(["infer", "--model", "digits:v1", "--input", inputs])
    #expect(stillServed.first?["outputs"] as? [[Double]] == outputs)
    let removed = try await mesh.json(["models", "delete", "digits:v1"]).first?["models"] as? [[String: Any]] ?? []
    #expect(removed.map { $0["version"] as? Int } == [1])
    #expect(!FileManager.default.fileExists(atPath: "\(mesh.state)/models/digits/v1.safetensors"))
    let missing = try await mesh.run(["infer", "--model", "digits:v1", "--input", inputs])
    #expect(missing.status == 65 && missing.output.contains("NOT_FOUND"), "\(missing.output)")
    // Version numbers are never reused: with every version deleted, the next one is v3.
    _ = try await mesh.json(["models", "delete", "digits"])
    let reimported = try #require(
      try await mesh.json([
        "models", "import", "digits", "--spec", Self.model, "--data-dir-weights", "digits-v1.safetensors",
      ])
      .first)
    #expect(reimported["version"] as? Int == 3, "\(reimported)")
  }

  /// The job's record as `pipemesh jobs show --json` prints it.
  static func record(_ job: String, on mesh: some CommandMesh) async throws -> [String: Any] {
    try #require(try await mesh.json(["jobs", "show", job]).first)
  }

  /// Waits until a job's record satisfies `condition` (polling the CLI, no sleep).
  static func waitFor(
    _ job: String, on mesh: some CommandMesh, timeout: Duration = .seconds(180), _ condition: ([String: Any]) -> Bool
  ) async throws -> [String: Any] {
    let deadline = ContinuousClock.now + timeout
    while true {
      // NOT_FOUND until the job is created.
      let shown = try await mesh.run(["jobs", "show", job, "--json"])
      let record = (try? JSONSerialization.jsonObject(with: Data(shown.output.utf8))) as? [String: Any] ?? [:]
      if shown.status == 0, condition(record) { return record }
      try #require(ContinuousClock.now < deadline, "job \(job) never got there: \(shown.output)")
      // Each look starts a CLI process: leave the cores to the job between looks.
      try await Task.sleep(for: .milliseconds(50))
    }
  }

  /// A model's weights, exported through the CLI.
  static func weights(_ model: String, on mesh: some CommandMesh) async throws -> [String: Tensor] {
    let folder = mesh.directory.file("export-\(UUID().uuidString.prefix(6))")
    let exported = try await mesh.run(["models", "export", model, "--out", folder])
    try #require(exported.status == 0, "\(exported.output)")
    let file = try #require(
      try FileManager.default.contentsOfDirectory(atPath: folder).first { $0.hasSuffix(".safetensors") })
    return try SafeTensors.decode(try Data(contentsOf: URL(fileURLWithPath: "\(folder)/\(file)"))).tensors
  }

  /// Prints how long after `back` (when the member it lost was back: started
  /// again, or continued) the job stepped again after `fault`, against the
  /// goal of 5 s. Printed, not asserted: the host is shared with other work.
  static func printRecovery(_ fault: [String: Any], after back: Date, _ what: String) {
    let steppedAgain = (fault["unixSeconds"] as? Double ?? 0) + (fault["recoverySeconds"] as? Double ?? 0)
    let seconds = String(format: "%.2f", steppedAgain - back.timeIntervalSince1970)
    print("\(what): stepping again \(seconds) s after the member was back (goal: under 5 s)")
  }

  /// Trains job "straight" with `options` to its end, then starts `job` with
  /// them in a `pipemesh train` of its own and returns once it has written
  /// its step-10 checkpoint and still runs.
  static func trainStraightThenStart(
    _ job: String, options: [String], on mesh: some CommandMesh,
    until ready: @escaping (_ straight: [String: Any], _ job: [String: Any]) -> Bool = {
      $1["checkpointStep"] as? Int ?? 0 >= 10
    }
  ) async throws -> ChildProcess {
    let straight = try await mesh.run(["train", "--job", "straight"] + options.filter { $0 != "--json" })
    try #require(straight.status == 0, "\(straight.output)")
    let reference = try await record("straight", on: mesh)
    let training = try ChildProcess(
      PipemeshBinary.path, ["train", "--coordinator", mesh.coordinator.endpoint, "--job", job] + options,
      logPath: mesh.directory.file("\(job).log"))
    let checkpointed = try await waitFor(job, on: mesh) { ready(reference, $0) }
    try #require(checkpointed["state"] as? String == "JOB_STATE_RUNNING", "it ended before the kill: \(checkpointed)")
    return training
  }

  /// Expects job `name`'s per-epoch mean training losses to equal
  /// `reference`'s (a resumed epoch counts the steps before its checkpoint),
  /// within `tolerance` of each.
  static func expectSameEpochLosses(
    _ name: String, as reference: String, on mesh: some CommandMesh, within tolerance: Double = 1e-6
  ) async throws {
    func losses(_ job: String) async throws -> [Double] {
      (try await record(job, on: mesh)["epochs"] as? [[String: Any]] ?? []).map { $0["loss"] as? Double ?? 0 }
    }
    let (got, expected) = (try await losses(name), try await losses(reference))
    #expect(got.count == expected.count && !got.isEmpty, "\(got) against \(expected)")
    for (epoch, (loss, wanted)) in zip(got, expected).enumerated() {
      #expect(abs(loss - wanted) <= tolerance * abs(wanted), "epoch \(epoch + 1) of \(name): \(loss), not \(wanted)")
    }
  }

  /// Expects model `name`'s weights to equal `reference`'s within
  /// `tolerance`: the same tensors (six for the digits MLP and for
  /// lstm-parity), each within it.
  static func expectSameWeights(
    _ name: String, as reference: String, on mesh: some CommandMesh, within tolerance: Float = 1e-6
  ) async throws {
    let expected = try await weights(reference, on: mesh)
    let got = try await weights(name, on: mesh)
    #expect(expected.count == 6 && Set(got.keys) == Set(expected.keys))
    for (variable, tensor) in expected {
      let other = try #require(got[variable])
      let difference = zip(tensor.scalars, other.scalars).map { abs($0 - $1) }.max() ?? 0
      #expect(difference <= tolerance, "\(variable) of \(name) differs by \(difference)")
    }
  }

  /// `kill -9` of the coordinator and the ps in the middle of a sync job that
  /// checkpoints: the restarted coordinator resumes it from its newest
  /// checkpoint, and it ends with the weights of a run never interrupted.
  @Test func aJobKilledMidRunResumesAndEndsWithTheSameWeights() async throws {
    var mesh = try await Mesh(psCheckpoints: true)
    let options = [
      "--model", Self.model, "--epochs", "20", "--micro-batches", "2", "--validation", "0.2", "--checkpoint-every", "5",
    ]
    let ended = try await Self.killedAndResumed("resumed", options: options, mesh: &mesh)
    #expect((ended["epochs"] as? [[String: Any]])?.count == 20, "\(ended)")
    try await Self.expectSameWeights("resumed", as: "straight", on: mesh)
  }

  /// Trains "straight" with `options`, then starts `job` with them and kills
  /// the coordinator and the ps (kill -9) once it checkpointed; restarts them
  /// and expects the new coordinator to resume the job to success from its
  /// newest checkpoint. Returns the job's record.
  static func killedAndResumed(
    _ job: String, options: [String], mesh: inout Mesh,
    until ready: @escaping (_ straight: [String: Any], _ job: [String: Any]) -> Bool = {
      $1["checkpointStep"] as? Int ?? 0 >= 10
    }
  ) async throws -> [String: Any] {
    let training = try await trainStraightThenStart(job, options: options, on: mesh, until: ready)
    mesh = try await mesh.restarted(ps: true)
    #expect(try await training.waitForExit() != 0)
    // The restarted coordinator says what became of the job it found interrupted.
    let coordinator = mesh.coordinator.process
    #expect(
      await eventually(timeout: .seconds(60)) {
        coordinator.log.contains("job \(job) resumed") || coordinator.log.contains("job \(job) stays interrupted")
      })
    try #require(coordinator.log.contains("job \(job) resumed from its newest checkpoint"), "\(coordinator.log)")
    let ended = try await waitFor(job, on: mesh) { $0["state"] as? String != "JOB_STATE_RUNNING" }
    #expect(ended["state"] as? String == "JOB_STATE_SUCCEEDED", "\(ended)\n\(coordinator.log)")
    #expect(ended["resumes"] as? Int == 1, "\(ended)")
    return ended
  }

  /// The same with a job that rescales its inputs (min-max, fitted on its
  /// training split) and stops early: the resumed run keeps the rescaling
  /// and the count of epochs without improvement, so it stops at the same
  /// epoch with the same weights and epoch losses as a run never interrupted.
  @Test func aJobThatRescalesAndStopsEarlyResumesToTheSameEnd() async throws {
    var mesh = try await Mesh(psCheckpoints: true)
    let options = [
      "--model", Self.model, "--epochs", "60", "--batch-size", "16", "--micro-batches", "2", "--validation", "0.2",
      "--checkpoint-every", "5", "--normalize", "min-max", "--patience", "4", "--min-delta", "0.02",
    ]
    // Killed once it is on a plateau: after the first epoch whose validation loss the
    // reference did not count as an improvement, and a checkpoint after that epoch's end
    // (a condition that stays true once met: a late look still kills, or finds the job ended).
    let ended = try await Self.killedAndResumed("patient", options: options, mesh: &mesh) { straight, job in
      let epochs = straight["epochs"] as? [[String: Any]] ?? []
      let losses = epochs.map { $0["validationLoss"] as? Double ?? 0 }
      guard
        let plateau = losses.indices.dropFirst().first(where: { losses[$0] > (losses[..<$0].min() ?? .infinity) - 0.02 }
        ),
        let plateauEnd = epochs[plateau]["step"] as? Int
      else { return true }
      return job["checkpointStep"] as? Int ?? 0 > plateauEnd
    }
    let straight = try await Self.record("straight", on: mesh)
    let stopped = straight["stoppedEarlyEpoch"] as? Int ?? 0
    #expect(stopped > 2 && stopped < 60, "the reference did not stop early: \(straight)")
    #expect(ended["stoppedEarlyEpoch"] as? Int == stopped, "\(ended)")
    #expect((ended["epochs"] as? [[String: Any]])?.count == stopped, "\(ended)")
    try await Self.expectSameWeights("patient", as: "straight", on: mesh)
    try await Self.expectSameEpochLosses("patient", as: "straight", on: mesh)
    // The rescaling travels with the model: raw inputs give the same outputs.
    let inputs = try await Self.inputs(in: mesh.directory)
    let resumed = try await mesh.json(["infer", "--model", "patient", "--input", inputs])
    let reference = try await mesh.json(["infer", "--model", "straight", "--input", inputs])
    let got = try #require(resumed.first?["outputs"] as? [[Double]], "\(resumed)")
    let wanted = try #require(reference.first?["outputs"] as? [[Double]], "\(reference)")
    #expect(got.count == wanted.count && !got.isEmpty)
    for (row, expected) in zip(got, wanted) {
      #expect(zip(row, expected).allSatisfy { abs($0 - $1) <= 1e-4 }, "\(row) against \(expected)")
    }
  }

  /// A job whose stage `aJobWhosePartitionDiesRestartsAndEndsWithTheSameWeights`
  /// kills: its model and training options, where its stages meet, its
  /// schedule and the dtype its activations and gradients travel in.
  struct RestartedJob: Sendable, CustomTestStringConvertible {
    var model = DurableStateTests.model
    var trainingOptions = ["--epochs", "20"]
    /// The layer the second stage starts in, after that many of its inputs.
    var split = (layer: 1, inputs: 64)
    var schedule = "1f1b"
    var transferDtype = "float32"

    var testDescription: String {
      "\(URL(fileURLWithPath: model).lastPathComponent) split at \(split.layer):\(split.inputs), \(schedule), "
        + transferDtype
    }
  }

  /// `kill -9` of a partition in the middle of a sync job allowed restarts,
  /// the partition started again as systemd would: the coordinator waits for
  /// it, runs the job on from its newest checkpoint, and it ends with the
  /// weights of a run never interrupted; the fault is in its record. The
  /// stages meet inside a layer, so each holds its rows of that layer's
  /// kernel: the restarted stage takes its rows back from the checkpoint.
  /// Under PipeDream-2BW too: its pipeline drains at each checkpoint, so the
  /// steps run again from one run on the weights they ran on before. That
  /// run's activations and gradients travel as bfloat16, rounded the same
  /// way after the restart (the restarted stage loads the job's stored
  /// transfer dtype), so it ends on the uninterrupted run's weights too.
  /// And an LSTM split between its time steps: the restarted second stage
  /// runs the later steps on the layer's weights, which it reads from the ps
  /// as a shared variable of the first stage's.
  @Test(arguments: [
    RestartedJob(schedule: "1f1b", transferDtype: "float32"),
    RestartedJob(schedule: "2bw", transferDtype: "bfloat16"),
    RestartedJob(
      model: Repository.path("examples/lstm-parity.json"),
      trainingOptions: ["--dataset", "synthetic-parity", "--batch-size", "64", "--epochs", "8"], split: (1, 4)),
  ])
  func aJobWhosePartitionDiesRestartsAndEndsWithTheSameWeights(_ job: RestartedJob) async throws {
    var mesh = try await Mesh(psCheckpoints: true)
    let options =
      [
        "--model", job.model, "--micro-batches", "2", "--checkpoint-every", "5", "--max-restarts", "2",
        "--split", "\(job.split.layer):\(job.split.inputs)", "--schedule", job.schedule,
        "--transfer-dtype", job.transferDtype,
      ] + job.trainingOptions
    let training = try await Self.trainStraightThenStart("survivor", options: options + ["--json"], on: mesh)
    mesh = try await mesh.restarted(coordinator: false, partitions: [1])
    let back = Date()
    // The user's train command follows the job through the restart to its end.
    #expect(try await training.waitForExit() == 0, "\(training.log)")
    #expect(training.log.contains("\"done\":true"), "\(training.log)")

    let ended = try await Self.record("survivor", on: mesh)
    #expect(ended["state"] as? String == "JOB_STATE_SUCCEEDED", "\(ended)")
    #expect(ended["resumes"] as? Int == 1, "\(ended)")
    let fault = try #require((ended["faults"] as? [[String: Any]])?.first, "\(ended)")
    #expect(fault["state"] as? String == "JOB_STATE_RESTARTING", "\(fault)")
    Self.printRecovery(fault, after: back, "kill -9 of a partition (\(job.schedule), \(job.transferDtype))")
    let split = ended["options"] as? [String: Any]
    #expect(
      split?["splitPoints"] as? [Int] == [job.split.layer]
        && split?["splitPointInputs"] as? [Int] == [job.split.inputs],
      "\(ended)")
    #expect(split?["transferDtype"] as? String == "DTYPE_\(job.transferDtype.uppercased())", "\(ended)")

    try await Self.expectSameWeights("survivor", as: "straight", on: mesh)
    try await Self.expectSameEpochLosses("survivor", as: "straight", on: mesh)
  }

  /// A job allowed one restart that loses a partition twice: the first stop
  /// is restarted once the partition is back; the second fails the job,
  /// whose error says its restarts are spent and whose faults keep the
  /// first stop.
  @Test func aJobThatSpendsItsRestartsFailsWithItsFaults() async throws {
    var mesh = try await Mesh(psCheckpoints: true)
    let training = try ChildProcess(
      PipemeshBinary.path,
      [
        "train", "--coordinator", mesh.coordinator.endpoint, "--job", "fragile", "--model", Self.model, "--epochs",
        "200", "--micro-batches", "2", "--checkpoint-every", "5", "--max-restarts", "1", "--json",
      ], logPath: mesh.directory.file("fragile.log"))
    _ = try await Self.waitFor("fragile", on: mesh) { $0["checkpointStep"] as? Int ?? 0 >= 5 }
    mesh = try await mesh.restarted(coordinator: false, partitions: [1])
    let resumed = try await Self.waitFor("fragile", on: mesh) {
      $0["resumes"] as? Int == 1 && $0["state"] as? String == "JOB_STATE_RUNNING"
        && $0["step"] as? Int ?? 0 > $0["checkpointStep"] as? Int ?? 0
    }
    #expect((resumed["faults"] as? [[String: Any]])?.count == 1, "\(resumed)")

    mesh.partitions[1].process.signal(SIGKILL)
    #expect(try await training.waitForExit() != 0, "\(training.log)")
    let ended = try await Self.waitFor("fragile", on: mesh) { ($0["error"] as? String)?.contains("spent") == true }
    #expect(ended["state"] as? String == "JOB_STATE_FAILED", "\(ended)")
    #expect(
      (ended["error"] as? String)?.contains("it was not restarted: it had spent its max_restarts (1) on the failures")
        == true,
      "\(ended)")
    let faults = ended["faults"] as? [[String: Any]] ?? []
    #expect(faults.count == 1 && faults.first?["state"] as? String == "JOB_STATE_RESTARTING", "\(ended)")
    #expect(ended["resumes"] as? Int == 1, "\(ended)")
  }

  /// SIGSTOP of a partition (a host that froze) in the middle of a job that
  /// allows restarts: the step's own deadline ends it (not a connection's
  /// keepalive), the coordinator waits for the member, and once it is
  /// continued the job runs on from its checkpoint to the uninterrupted weights.
  @Test func aJobWhosePartitionHangsStopsAtTheStepDeadlineAndRunsOn() async throws {
    let mesh = try await Mesh(psCheckpoints: true)
    let options = [
      "--model", Self.model, "--epochs", "20", "--micro-batches", "2", "--checkpoint-every", "5", "--max-restarts", "2",
    ]
    let training = try await Self.trainStraightThenStart("frozen", options: options, on: mesh)
    let partition = mesh.partitions[0].process
    partition.signal(SIGSTOP)
    // Continued whatever the wait finds, so the mesh is never left stopped.
    let stopped: [String: Any]
    do {
      stopped = try await Self.waitFor("frozen", on: mesh) { $0["state"] as? String == "JOB_STATE_RESTARTING" }
      partition.signal(SIGCONT)
    } catch {
      partition.signal(SIGCONT)
      throw error
    }
    let continued = Date()
    #expect((stopped["error"] as? String)?.contains("ran past") == true, "\(stopped)")

    #expect(try await training.waitForExit() == 0, "\(training.log)")
    let ended = try await Self.record("frozen", on: mesh)
    #expect(ended["state"] as? String == "JOB_STATE_SUCCEEDED" && ended["resumes"] as? Int == 1, "\(ended)")
    let fault = try #require((ended["faults"] as? [[String: Any]])?.first, "\(ended)")
    #expect((fault["error"] as? String)?.contains("DEADLINE_EXCEEDED") == true, "\(fault)")
    Self.printRecovery(fault, after: continued, "SIGSTOP of a partition")
    try await Self.expectSameWeights("frozen", as: "straight", on: mesh)
  }

  /// `kill -9` of the ps while a job hands it its weights at the end. The ps
  /// keeps no checkpoints, so the stages keep their variables' master
  /// copies and the ps holds none of their values until the job's last step
  /// assigns them. The ps is stopped (SIGSTOP) from the job's first steps on,
  /// so that Assign waits on it; it is killed with the Assign in flight and
  /// started again, empty, as systemd would. The job, allowed restarts, runs
  /// again from its start (nothing could be checkpointed) and ends with the
  /// weights of a run never interrupted.
  @Test func aPsKilledDuringTheJobsFinalAssignEndsWithTheSameWeights() async throws {
    var mesh = try await Mesh()
    let options = ["--model", Self.model, "--epochs", "20", "--micro-batches", "2", "--max-restarts", "2"]
    let straight = try await mesh.run(["train", "--job", "straight"] + options)
    try #require(straight.status == 0, "\(straight.output)")
    let training = try ChildProcess(
      PipemeshBinary.path,
      ["train", "--coordinator", mesh.coordinator.endpoint, "--job", "assigned", "--json"] + options,
      logPath: mesh.directory.file("assigned.log"))
    // Each step's progress as the job reports it (the stored record follows a few seconds behind).
    func progressed(to step: @escaping (_ total: Int) -> Int) async throws -> [String: Any] {
      try await training.waitForJSONLine { $0["step"] as? Int ?? 0 >= step($0["totalSteps"] as? Int ?? .max) }
    }
    _ = try await progressed { _ in 1 }
    let ps = mesh.parameterServers[0].process
    try await ps.stop()
    // The last step's Assign waits on the stopped ps, within the step's 10 s deadline.
    let last = try await progressed { $0 - 1 }
    try await Task.sleep(for: .seconds(1))
    #expect(!training.log.contains("\"step\":\(last["totalSteps"] as? Int ?? 0)"), "\(training.log)")
    mesh = try await mesh.restarted(coordinator: false, psTasks: [0])

    #expect(try await training.waitForExit() == 0, "\(training.log)")
    let ended = try await Self.record("assigned", on: mesh)
    #expect(ended["state"] as? String == "JOB_STATE_SUCCEEDED" && ended["resumes"] as? Int == 1, "\(ended)")
    let fault = try #require((ended["faults"] as? [[String: Any]])?.first, "\(ended)")
    print("ps killed during the final Assign: \(fault)")
    // The kill ended the Assign (its connection reset), not the step's deadline.
    #expect((fault["error"] as? String)?.hasPrefix("UNAVAILABLE") == true, "\(fault)")
    try await Self.expectSameWeights("assigned", as: "straight", on: mesh)
  }

  /// `kill -9` of the coordinator while a job waits to restart (its
  /// partition died and has not come back): the restarted coordinator finds
  /// it RESTARTING, resumes it once the partition is back, and it ends with
  /// the weights of a run never interrupted.
  @Test func aJobRestartingWhenTheCoordinatorIsKilledGoesOnWithTheNextCoordinator() async throws {
    var mesh = try await Mesh(psCheckpoints: true)
    let options = [
      "--model", Self.model, "--epochs", "20", "--micro-batches", "2", "--checkpoint-every", "5", "--max-restarts", "2",
    ]
    let training = try await Self.trainStraightThenStart("orphan", options: options, on: mesh)
    mesh.partitions[1].process.signal(SIGKILL)
    _ = try await mesh.partitions[1].process.waitForExit()
    // No spare: the job waits for the partition, restarting.
    let restarting = try await Self.waitFor("orphan", on: mesh) { $0["state"] as? String == "JOB_STATE_RESTARTING" }
    #expect((restarting["error"] as? String)?.contains("UNAVAILABLE") == true, "\(restarting)")
    mesh = try await mesh.restarted(partitions: [1])
    _ = try await training.waitForExit()  // its coordinator died

    let ended = try await Self.waitFor("orphan", on: mesh) { $0["state"] as? String == "JOB_STATE_SUCCEEDED" }
    let faults = (ended["faults"] as? [[String: Any]] ?? []).map { $0["state"] as? String ?? "" }
    #expect(faults == ["JOB_STATE_INTERRUPTED"], "\(ended)")
    let first = (ended["faults"] as? [[String: Any]])?.first?["error"] as? String ?? ""
    #expect(first.contains("the coordinator stopped while the job restarted after"), "\(ended)")
    try await Self.expectSameWeights("orphan", as: "straight", on: mesh)
  }

  @Test func aJobRunningWhenTheCoordinatorIsKilledIsInterrupted() async throws {
    var mesh = try await Mesh()
    let training = try ChildProcess(
      PipemeshBinary.path,
      [
        "train", "--coordinator", mesh.coordinator.endpoint, "--job", "long", "--model", Self.model, "--epochs",
        "1000", "--json",
      ], logPath: mesh.directory.file("long.log"))
    _ = try await training.waitForJSONLine { $0["job"] as? String == "long" }
    mesh = try await mesh.restarted()
    #expect(try await training.waitForExit() != 0)
    let jobs = try await mesh.json(["jobs", "--state", "interrupted"]).first?["jobs"] as? [[String: Any]] ?? []
    #expect(jobs.map { $0["job"] as? String } == ["long"], "\(jobs)")
    #expect((jobs.first?["error"] as? String)?.contains("coordinator stopped") == true)
    let inputs = try await Self.inputs(in: mesh.directory)
    let refused = try await mesh.run(["infer", "--job", "long", "--input", inputs])
    #expect(refused.status == 65 && refused.output.contains("interrupted"), "\(refused.output)")
    // The name is free again only with --replace.
    let renamed = try await mesh.run(["train", "--job", "long", "--model", Self.model, "--epochs", "1", "--replace"])
    #expect(renamed.status == 0, "\(renamed.output)")
  }
}

/// A mesh the `pipemesh` commands drive: its coordinator, and a folder for
/// what they read and write.
protocol CommandMesh: Sendable {
  var directory: TemporaryDirectory { get }
  var coordinator: RunningService { get }
}

extension CommandMesh {
  func run(_ arguments: [String]) async throws -> (status: Int32, output: String) {
    try await pipemesh(arguments + ["--coordinator", coordinator.endpoint], in: directory)
  }

  /// `pipemesh … --json`, each output line as a JSON object.
  func json(_ arguments: [String]) async throws -> [[String: Any]] {
    let result = try await run(arguments + ["--json"])
    #expect(result.status == 0, "pipemesh \(arguments.joined(separator: " ")): \(result.output)")
    return result.output.split(separator: "\n").compactMap {
      try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
  }
}
