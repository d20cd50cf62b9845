import Foundation
import MeshProto
import MeshRPC
import MeshTestSupport
import MeshWire
import Testing

/// The client commands against a real coordinator, and their error paths and
/// exit codes as scripts see them.
@Suite(.serialized) struct ClientCommandTests {
  static let mesh = Task { () throws -> (LocalMesh, RunningService) in
    let mesh = try await LocalMesh(partitions: 2)
    return (mesh, try await mesh.coordinator([[0], [1]], name: "cli"))
  }

  @Test func trainStatusJobsInferAndPlanWork() async throws {
    let (_, coordinator) = try await Self.mesh.value
    let directory = try TemporaryDirectory(prefix: "pipemesh-cli")
    let examples = Repository.path("examples")
    let train = try await pipemesh(
      [
        "train", "--coordinator", coordinator.endpoint, "--job", "cli-mlp", "--model", "\(examples)/mlp-digits.json",
        "--epochs", "1", "--micro-batches", "2", "--json",
      ], in: directory)
    #expect(train.status == 0, "\(train.output)")
    let lines = train.output.split(separator: "\n").compactMap {
      try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
    #expect(lines.contains { $0["done"] as? Bool == true }, "no final progress in \(train.output)")
    #expect(lines.contains { $0["evaluated"] as? Bool == true })

    let status = try await pipemesh(
      ["status", "--coordinator", coordinator.endpoint, "--job", "cli-mlp", "--json"], in: directory)
    #expect(status.status == 0)
    let job = try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any]
    #expect(job?["state"] as? String == "JOB_STATE_SUCCEEDED", "\(status.output)")
    // Without --json: the job's line, then one line per process it ran on with its memory.
    let memory = try await pipemesh(
      ["status", "--coordinator", coordinator.endpoint, "--job", "cli-mlp"], in: directory)
    let memberLines = memory.output.split(separator: "\n").filter { $0.hasPrefix("  ") }
    #expect(memberLines.contains { $0.contains("stage 0 replica 0") && $0.contains("resident ") }, "\(memory.output)")
    #expect(memberLines.contains { $0.hasPrefix("  ps 0") && $0.contains("this job ") }, "\(memory.output)")

    let jobs = try await pipemesh(["jobs", "--coordinator", coordinator.endpoint], in: directory)
    #expect(jobs.status == 0 && jobs.output.contains("cli-mlp\tsucceeded"), "\(jobs.output)")

    let python = try PythonInterop.findPython()
    let inputs = directory.file("inputs.npy")
    try await run(
      python,
      [
        "-c",
        "import numpy as np; np.save('\(inputs)', np.random.default_rng(0).uniform(0, 16, (3, 64)).astype(np.float32))",
      ])
    let infer = try await pipemesh(
      ["infer", "--coordinator", coordinator.endpoint, "--job", "cli-mlp", "--input", inputs, "--json"], in: directory)
    #expect(infer.status == 0, "\(infer.output)")
    let outputs = try JSONSerialization.jsonObject(with: Data(infer.output.utf8)) as? [String: Any]
    #expect(outputs?["shape"] as? [Int] == [3, 10])
    #expect((outputs?["predictions"] as? [Int])?.count == 3)

    let probabilities = try #require(outputs?["probabilities"] as? [[Double]], "\(infer.output)")
    let logits = try #require(outputs?["outputs"] as? [[Double]])
    for (row, (chances, values)) in zip(probabilities, logits).enumerated() {
      #expect(abs(chances.reduce(0, +) - 1) < 1e-4, "row \(row): \(chances)")
      let predicted = (outputs?["predictions"] as? [Int])?[row]
      #expect(predicted == values.indices.max { values[$0] < values[$1] }, "row \(row)")
    }
    let text = try await pipemesh(
      ["infer", "--coordinator", coordinator.endpoint, "--job", "cli-mlp", "--input", inputs], in: directory)
    #expect(
      text.output.split(separator: "\n").first?.contains(/^0\tclass \d \([01]\.\d{3}\)\t/) == true, "\(text.output)")

    // Another train without --job: the coordinator names each one afresh.
    let named = try await pipemesh(
      [
        "train", "--coordinator", coordinator.endpoint, "--model", "\(examples)/mlp-digits.json", "--epochs", "1",
        "--micro-batches", "2",
      ], in: directory)
    let name = try #require(
      named.output.split(separator: "\n").first { $0.hasPrefix("job job-") }?.dropFirst("job ".count), "\(named.output)"
    )
    let again = try await pipemesh(
      ["jobs", "show", String(name), "--coordinator", coordinator.endpoint], in: directory)
    #expect(again.status == 0 && again.output.contains("\(name)\tsucceeded"), "\(again.output)")

    let plan = try await pipemesh(
      ["plan", "--model", "\(examples)/cnn-digits.json", "--stages", "3", "--json"], in: directory)
    #expect(plan.status == 0)
    let stages =
      (try JSONSerialization.jsonObject(with: Data(plan.output.utf8)) as? [String: Any])?["stages"] as? [[String: Any]]
    #expect(stages?.count == 3)
    // 64-bit integers are JSON numbers, not strings; fields at their defaults are there: stage 0
    // starts at layer 0.
    #expect(stages?.first?["parameters"] is NSNumber, "\(plan.output)")
    #expect(stages?.first?["stage"] as? Int == 0 && stages?.first?["firstLayer"] as? Int == 0, "\(plan.output)")

    // An empty list is a line too: the list, empty.
    let none = try await pipemesh(
      ["jobs", "--coordinator", coordinator.endpoint, "--state", "interrupted", "--json"], in: directory)
    #expect(none.status == 0)
    let empty = try JSONSerialization.jsonObject(with: Data(none.output.utf8)) as? [String: Any]
    #expect((empty?["jobs"] as? [Any])?.isEmpty == true, "\(none.output)")
    let models = try await pipemesh(["models", "--coordinator", coordinator.endpoint, "--json"], in: directory)
    let listed = try JSONSerialization.jsonObject(with: Data(models.output.utf8)) as? [String: Any]
    #expect((listed?["models"] as? [[String: Any]])?.contains { $0["name"] as? String == "cli-mlp" } == true)
  }

  /// Ctrl-C on `pipemesh train` stops following the job, which runs on and
  /// says how to follow or cancel it; `pipemesh jobs follow` picks it up and
  /// follows it to its end.
  /// `infer` takes rows of flattened values (or one example alone) for a
  /// model whose input has more axes; `plan --coordinator` without
  /// `--stages` leaves the stages to the coordinator (its pool's 2 here).
  @Test func inferReshapesFlatRowsAndPlanAsksThePool() async throws {
    let (_, coordinator) = try await Self.mesh.value
    let directory = try TemporaryDirectory(prefix: "pipemesh-cli-cnn")
    let model = Repository.path("examples/cnn-digits.json")
    let train = try await pipemesh(
      ["train", "--coordinator", coordinator.endpoint, "--job", "cli-cnn", "--model", model, "--epochs", "1"],
      in: directory)
    #expect(train.status == 0, "\(train.output)")
    let flat = directory.file("flat.npy")
    let one = directory.file("one.npy")
    try await run(
      try PythonInterop.findPython(),
      [
        "-c",
        "import numpy as np; x = np.random.default_rng(0).uniform(0, 16, (4, 64)).astype(np.float32); "
          + "np.save('\(flat)', x); np.save('\(one)', x[1].reshape(1, 8, 8))",
      ])
    func infer(_ file: String) async throws -> [String: Any] {
      let result = try await pipemesh(
        ["infer", "--coordinator", coordinator.endpoint, "--job", "cli-cnn", "--input", file, "--json"], in: directory)
      #expect(result.status == 0, "\(result.output)")
      return try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
    }
    let rows = try await infer(flat)
    #expect(rows["shape"] as? [Int] == [4, 10], "\(rows)")
    let alone = try await infer(one)
    #expect(alone["shape"] as? [Int] == [1, 10], "\(alone)")
    let batched = try #require((rows["outputs"] as? [[Double]])?[1])
    let single = try #require((alone["outputs"] as? [[Double]])?.first)
    // The same row alone and in a batch goes through products of other widths, whose sums round
    // differently: equal to float32's precision over a few hundred terms, relative to the logits' size.
    #expect(
      zip(batched, single).allSatisfy { abs($0 - $1) <= 1e-5 * max(1, abs($1)) }, "row 1: \(batched) alone: \(single)")

    let plan = try await pipemesh(
      ["plan", "--coordinator", coordinator.endpoint, "--model", model, "--json"], in: directory)
    #expect(plan.status == 0, "\(plan.output)")
    let stages = (try JSONSerialization.jsonObject(with: Data(plan.output.utf8)) as? [String: Any])?["stages"]
    #expect((stages as? [[String: Any]])?.count == 2, "\(plan.output)")
  }

  /// A partition times a Transformer block's attention apart, and its share
  /// of the block reaches the plan with the layer times.
  @Test func aTransformerBlocksTimedAttentionShareReachesThePlan() async throws {
    let (_, coordinator) = try await Self.mesh.value
    let directory = try TemporaryDirectory(prefix: "pipemesh-plan")
    let planned = try await pipemesh(
      [
        "plan", "--coordinator", coordinator.endpoint, "--model", Repository.path("examples/char-lm.json"),
        "--stages", "2", "--micro-batch-rows", "4", "--json",
      ], in: directory)
    #expect(planned.status == 0, "\(planned.output)")
    let plan = try #require(try JSONSerialization.jsonObject(with: Data(planned.output.utf8)) as? [String: Any])
    let shares = (plan["layerTimes"] as? [[String: Any]] ?? []).map { $0["firstPartShare"] as? Double }
    // The embedding, the layer norm and the head have none; each block's attention some of it.
    #expect(shares.count == 5 && [0, 3, 4].allSatisfy { shares[$0] == nil }, "\(planned.output)")
    #expect(shares.count == 5 && [1, 2].allSatisfy { (shares[$0] ?? 0) > 0 && (shares[$0] ?? 0) <= 1 }, "\(shares)")
  }

  /// `pipemesh plan --coordinator` balances each layer's forward and
  /// backward as a partition of the pool timed them (`--estimate`: the FLOP
  /// estimate), and gives each stage's time and a step's; a partition
  /// refuses a timing it should not spend its time or memory on.
  @Test func plansBalanceTimesMeasuredOnAPartition() async throws {
    let (mesh, coordinator) = try await Self.mesh.value
    let directory = try TemporaryDirectory(prefix: "pipemesh-plan")
    func plan(_ extra: [String]) async throws -> [String: Any] {
      let planned = try await pipemesh(
        [
          "plan", "--coordinator", coordinator.endpoint, "--model", Repository.path("examples/cnn-digits.json"),
          "--stages", "2", "--micro-batch-rows", "16", "--json",
        ] + extra, in: directory)
      #expect(planned.status == 0, "\(planned.output)")
      return try #require(try JSONSerialization.jsonObject(with: Data(planned.output.utf8)) as? [String: Any])
    }
    let measured = try await plan([])
    #expect(mesh.partitions.map(\.endpoint).contains(measured["measuredOn"] as? String ?? ""), "\(measured)")
    #expect(measured["measuredRows"] as? Int == 16, "\(measured)")
    let stages = measured["stages"] as? [[String: Any]] ?? []
    let times = stages.map { ($0["forwardSeconds"] as? Double ?? 0) + ($0["backwardSeconds"] as? Double ?? 0) }
    #expect(times.count == 2 && times.allSatisfy { $0 > 0 }, "\(measured)")
    // The stages' times are their layers' (the CNN's six), as the partition timed them, and
    // what splitting a layer adds where a stage ends inside one.
    let layerTimes = measured["layerTimes"] as? [[String: Any]] ?? []
    func seconds(_ layer: [String: Any], _ keys: String...) -> Double {
      keys.map { layer[$0] as? Double ?? 0 }.reduce(0, +)
    }
    let layers = layerTimes.map { seconds($0, "forwardSeconds", "backwardSeconds") }
    let splits = stages.dropLast().filter { $0["endLayerInputs"] as? Int ?? 0 > 0 }.map {
      seconds(layerTimes[$0["endLayer"] as? Int ?? 0], "splitForwardSeconds", "splitBackwardSeconds")
    }
    #expect(
      layers.count == 6 && abs(layers.reduce(0, +) + splits.reduce(0, +) - times.reduce(0, +)) < 1e-9, "\(measured)")
    // Each Dense and Conv2D layer of the CNN was also timed split (not the first convolution, of
    // one input channel, nor the pooling and flattening between). A split's parts may come out
    // no slower than the whole layer on a noisy machine, but not all three.
    let splitTimes = layerTimes.map { seconds($0, "splitForwardSeconds", "splitBackwardSeconds") }
    #expect(splitTimes.count == 6 && [0, 2, 3].allSatisfy { splitTimes[$0] == 0 }, "\(layerTimes)")
    #expect(splitTimes.count == 6 && splitTimes[1] + splitTimes[4] + splitTimes[5] > 0, "\(layerTimes)")
    let imbalance = (times.max() ?? 0) / (times.reduce(0, +) / Double(max(1, times.count)))
    #expect(abs((measured["imbalance"] as? Double ?? 0) - imbalance) < 1e-9, "\(measured)")
    // Four micro-batches by 1F1B (the defaults): no less than the slowest stage's four, no more
    // than three through the slowest stage after one through both (the fill and drain) — unless
    // inferReshapesFlatRowsAndPlanAsksThePool trained the model on this mesh's 2 stages first:
    // then its trace calibrated the prediction (PipelineChoiceTests checks that arithmetic).
    let predicted = measured["predictedStepSeconds"] as? Double ?? 0
    if let calibratedBy = measured["calibratedByJob"] as? String, !calibratedBy.isEmpty {
      #expect(calibratedBy == "cli-cnn" && measured["calibratedRows"] as? Int ?? 0 > 0, "\(measured)")
      #expect(predicted > 0, "\(measured)")
    } else {
      #expect(predicted >= 4 * (times.max() ?? 0) - 1e-9, "\(measured)")
      #expect(predicted <= 3 * (times.max() ?? 0) + times.reduce(0, +) + 1e-9, "\(measured)")
    }

    let estimated = try await plan(["--estimate"])
    #expect(estimated["measuredOn"] == nil || estimated["measuredOn"] as? String == "", "\(estimated)")
    let estimatedStages = estimated["stages"] as? [[String: Any]] ?? []
    #expect(estimatedStages.allSatisfy { $0["forwardSeconds"] as? Double ?? 0 == 0 }, "\(estimated)")

    let partition = try RPCClient(target: mesh.partitions[0].endpoint)
    let wide = Pipemesh_V1_ModelSpec.with {
      $0.inputShape = [4096]
      $0.layers = [.with { $0.dense = .with { $0.units = 4096 } }]
      $0.loss = .with { $0.meanSquaredError = .init() }
    }
    for (request, code, phrase) in [
      (Pipemesh_V1_TimeLayersRequest.with { $0.model = wide }, RPCError.Code.invalidArgument, "rows is 0"),
      (
        .with {
          $0.model = wide
          $0.rows = 8
          $0.repeats = 11
        }, .invalidArgument, "repeats is 11"
      ),
      (
        .with {
          $0.model = wide
          $0.rows = 4096
        }, .resourceExhausted, "or fewer"
      ),
    ] {
      let error = await #expect(throws: RPCError.self) {
        _ = try await partition.call(PartitionMethods.timeLayers, request)
      }
      #expect(error?.code == code && error?.message.contains(phrase) == true, "\(String(describing: error))")
    }
    let timed = try await partition.call(
      PartitionMethods.timeLayers,
      .with {
        $0.model = wide
        $0.rows = 2
        $0.repeats = 1
      })
    #expect(timed.layers.map(\.name) == ["dense0"] && timed.layers[0].backwardSeconds > 0, "\(timed)")
  }

  /// `pipemesh plan --batch-size` weighs every micro-batch count that
  /// divides the batch with each synchronous schedule, on layer times a
  /// partition measured at each count's rows, and plans the fastest;
  /// `pipemesh train --micro-batches auto` trains with what it chose.
  @Test func thePlannerChoosesTheMicroBatchesAndScheduleATrainingUses() async throws {
    let (_, coordinator) = try await Self.mesh.value
    let directory = try TemporaryDirectory(prefix: "pipemesh-choice")
    let model = Repository.path("examples/mlp-digits.json")
    let planned = try await pipemesh(
      [
        "plan", "--coordinator", coordinator.endpoint, "--model", model, "--stages", "2", "--batch-size", "64",
        "--json",
      ],
      in: directory)
    #expect(planned.status == 0, "\(planned.output)")
    let plan = try #require(try JSONSerialization.jsonObject(with: Data(planned.output.utf8)) as? [String: Any])
    let choices = plan["choices"] as? [[String: Any]] ?? []
    // 1, 2, 4, 8, 16 and 32 micro-batches, each by 1F1B, ZB-H1 and GPipe.
    #expect(choices.count == 18, "\(plan)")
    let counts = Set(choices.map { $0["microBatches"] as? Int ?? 0 })
    #expect(counts == [1, 2, 4, 8, 16, 32], "\(choices)")
    #expect(choices.allSatisfy { ($0["microBatches"] as? Int ?? 0) * ($0["microBatchRows"] as? Int ?? 0) == 64 })
    let steps = choices.map { $0["predictedStepSeconds"] as? Double ?? 0 }
    // In order after the chosen one, to the precision the CLI's JSON keeps (its last bit may move).
    let rest = Array(steps.dropFirst())
    #expect(
      steps.allSatisfy { $0 > 0 } && zip(rest, rest.dropFirst()).allSatisfy { $0 <= $1 * (1 + 1e-12) }, "\(steps)")
    #expect(steps.dropFirst().allSatisfy { $0 >= steps[0] * 0.99 }, "\(steps)")
    // The stages and the prediction above the list are the chosen one's, timed at its rows.
    let chosen = try #require(choices.first)
    #expect(plan["predictedStepSeconds"] as? Double == steps[0], "\(plan)")
    #expect(plan["measuredRows"] as? Int == chosen["microBatchRows"] as? Int, "\(plan)")

    let trained = try await pipemesh(
      [
        "train", "--coordinator", coordinator.endpoint, "--job", "cli-chosen", "--model", model, "--epochs", "1",
        "--batch-size", "64", "--micro-batches", "auto", "--stages", "2",
      ], in: directory)
    #expect(trained.status == 0, "\(trained.output)")
    let said = try #require(
      trained.output.split(separator: "\n").first { $0.hasPrefix("pipemesh: --micro-batches auto: ") },
      "\(trained.output)")
    let job = try #require(
      try JSONSerialization.jsonObject(
        with: Data(
          try await pipemesh(
            ["jobs", "show", "cli-chosen", "--coordinator", coordinator.endpoint, "--json"],
            in: directory
          ).output.utf8)) as? [String: Any])
    let options = job["options"] as? [String: Any] ?? [:]
    let microBatches = options["microBatches"] as? Int ?? 0
    #expect(
      microBatches >= 1 && said.contains("auto: \(microBatches) of \(64 / max(1, microBatches)) examples by "),
      "\(said)\n\(options)")
    #expect(job["state"] as? String == "JOB_STATE_SUCCEEDED", "\(job)")
  }

  /// `pipemesh solve` fits the ridge example in closed form on the
  /// coordinator, prints the weights beside the objective and the held-out
  /// figures, and registers the solution as a model.
  @Test func solveFitsRidgeRegressionInClosedFormAndRegistersIt() async throws {
    let (_, coordinator) = try await Self.mesh.value
    let directory = try TemporaryDirectory(prefix: "pipemesh-solve")
    let common = [
      "solve", "--coordinator", coordinator.endpoint, "--model", Repository.path("examples/ridge-regression.json"),
      "--dataset", "synthetic-regression", "--regression",
    ]
    let printed = try await pipemesh(common + ["--name", "cli-ridge"], in: directory)
    #expect(printed.status == 0, "\(printed.output)")
    for line in ["kernel[0]", "bias[0]", "training objective", "validation MSE", "validation R²"] {
      #expect(printed.output.contains(line), "\(line): \(printed.output)")
    }
    #expect(printed.output.contains("registered model cli-ridge version 1"), "\(printed.output)")
    let answer = try await pipemesh(common + ["--json"], in: directory)
    #expect(answer.status == 0, "\(answer.output)")
    let solved = try #require(try JSONSerialization.jsonObject(with: Data(answer.output.utf8)) as? [String: Any])
    // The synthetic targets are a linear function of the features plus a little noise.
    #expect((solved["validationR2"] as? Double ?? 0) > 0.9, "\(solved)")
    #expect(solved["model"] == nil, "registered without --name: \(solved)")
    let models = try await pipemesh(["models", "--coordinator", coordinator.endpoint], in: directory)
    #expect(models.output.contains("cli-ridge"), "\(models.output)")

    let unnamed = try await pipemesh(
      ["solve", "--coordinator", coordinator.endpoint, "--dataset", "synthetic-regression"], in: directory)
    #expect(unnamed.status == 64 && unnamed.output.contains("give the linear model with --model"), "\(unnamed.output)")
  }

  @Test func aJobLeftByCtrlCIsFollowedAgain() async throws {
    let (_, coordinator) = try await Self.mesh.value
    let directory = try TemporaryDirectory(prefix: "pipemesh-follow")
    let train = try ChildProcess(
      PipemeshBinary.path,
      [
        "train", "--coordinator", coordinator.endpoint, "--job", "followed", "--model",
        Repository.path("examples/mlp-digits.json"), "--epochs", "30", "--micro-batches", "2",
      ], logPath: directory.file("train.log"))
    _ = try await train.waitForLine(startingWith: "job followed")
    train.signal(SIGINT)
    #expect(try await train.waitForExit() == 130, "\(train.log)")
    #expect(train.log.contains("it runs on. Follow it again: pipemesh jobs follow followed"), "\(train.log)")
    let shown = try await pipemesh(["jobs", "show", "followed", "--coordinator", coordinator.endpoint], in: directory)
    #expect(shown.output.contains("followed\trunning") || shown.output.contains("followed\tqueued"), "\(shown.output)")

    let follow = try await pipemesh(
      ["jobs", "follow", "followed", "--coordinator", coordinator.endpoint, "--json"], in: directory)
    #expect(follow.status == 0, "\(follow.output)")
    let lines = follow.output.split(separator: "\n").compactMap {
      try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
    #expect(lines.contains { $0["done"] as? Bool == true }, "\(follow.output)")
    #expect(lines.last?["state"] as? String == "JOB_STATE_SUCCEEDED", "\(follow.output)")
    // A job that ended: follow says how at once.
    let ended = try await pipemesh(
      ["jobs", "follow", "followed", "--coordinator", coordinator.endpoint], in: directory)
    #expect(ended.status == 0 && ended.output.contains("followed\tsucceeded"), "\(ended.output)")
  }

  /// On a terminal, Ctrl-C asks whether to cancel the job too: yes cancels
  /// it, no leaves it running. The progress line shows no ETA before a few
  /// steps have run.
  @Test(arguments: ["y", "n"]) func ctrlCOnATerminalAsksWhetherToCancel(answer: String) async throws {
    let (_, coordinator) = try await Self.mesh.value
    let directory = try TemporaryDirectory(prefix: "pipemesh-terminal")
    let job = "asked-\(answer)"
    let terminal = try await run(
      try PythonInterop.findPython(),
      [
        Repository.path("Tests/interop/terminal_ctrl_c.py"), PipemeshBinary.path, answer, "train", "--coordinator",
        coordinator.endpoint, "--job", job, "--model", Repository.path("examples/mlp-digits.json"), "--epochs", "50",
      ], in: directory.path)
    #expect(terminal.contains("EXIT 130"), "\(terminal)")
    #expect(terminal.contains("cancel job \(job) too? [y/N]"), "\(terminal)")
    #expect(terminal.contains("ETA --:--"), "the first steps show no estimate: \(terminal)")
    let shown = try await pipemesh(["jobs", "show", job, "--coordinator", coordinator.endpoint], in: directory)
    if answer == "y" {
      #expect(terminal.contains("cancelled job \(job)"), "\(terminal)")
      #expect(shown.output.contains("\(job)\tcancelled"), "\(shown.output)")
    } else {
      #expect(terminal.contains("it runs on"), "\(terminal)")
      #expect(shown.output.contains("\(job)\trunning") || shown.output.contains("\(job)\tqueued"), "\(shown.output)")
      _ = try await pipemesh(["cancel", "--job", job, "--coordinator", coordinator.endpoint], in: directory)
    }
  }

  @Test func errorsHaveClearMessagesAndExitCodes() async throws {
    let (_, coordinator) = try await Self.mesh.value
    let specs = try TemporaryDirectory(prefix: "pipemesh-spec")
    let misspelt = specs.file("misspelt.json")
    try #"{"inputShape": [4], "layers": [{"dense": {"unitz": 3}}]}"#.write(
      toFile: misspelt, atomically: true, encoding: .utf8)
    let directory = try TemporaryDirectory(prefix: "pipemesh-cli")
    let cases: [(arguments: [String], status: Int32, says: String)] = [
      (["status", "--job", "x"], 64, "give the coordinator"),
      (["status", "--coordinator", coordinator.endpoint, "--job", "no-such-job"], 65, "no job named 'no-such-job'"),
      (["jobs", "--coordinator", "127.0.0.1:1"], 69, "UNAVAILABLE"),
      (["train", "--coordinator", coordinator.endpoint, "--dataset", "nowhere.csv"], 65, "nowhere.csv"),
      (
        ["train", "--coordinator", coordinator.endpoint, "--model", "/nonexistent/spec.json"], 64,
        "cannot read model spec /nonexistent/spec.json: no such file"
      ),
      (["plan", "--model", misspelt], 64, "unknown field 'unitz'; did you mean 'units'?"),
      (
        ["train", "--coordinator", coordinator.endpoint, "--schedule", "zigzag"], 64,
        "--schedule must be gpipe, 1f1b, zb-h1 or 2bw"
      ),
      (["infer", "--coordinator", coordinator.endpoint, "--job", "x", "--input", "/nonexistent/in.npy"], 64, "in.npy"),
      (["up", "--stages", "0"], 64, "stages and replicas must be at least 1"),
      (["up", "--dataset", "nowhere.csv"], 1, "NOT_FOUND: "),
      (
        ["plan", "--model", Repository.path("examples/mlp-digits.json"), "--stages", "9", "--whole-layers"], 65,
        "cannot split 3 layers into 9 stages: whole_layers keeps each layer whole"
      ),
      (["plan", "--model", Repository.path("examples/mlp-digits.json"), "--split", "1:x"], 64, "'1:x' is invalid"),
      (
        ["plan", "--model", Repository.path("examples/mlp-digits.json"), "--batch-size", "64", "--micro-batches", "4"],
        64, "give it without --micro-batch-rows, --micro-batches, --schedule and --estimate"
      ),
      (
        ["train", "--coordinator", coordinator.endpoint, "--micro-batches", "auto", "--schedule", "gpipe"], 64,
        "--micro-batches auto chooses the schedule too"
      ),
      (["train", "--coordinator", coordinator.endpoint, "--micro-batches", "some"], 64, "--micro-batches"),
      (
        ["plan", "--model", Repository.path("examples/mlp-digits.json"), "--stages", "2", "--split", "2:64"], 65,
        "LAYER:INPUTS inside a Dense, Conv2D, LSTM, GRU or Transformer layer with more than INPUTS inputs"
      ),
    ]
    for (arguments, expected, message) in cases {
      let result = try await pipemesh(arguments, in: directory)
      #expect(
        result.status == expected,
        "pipemesh \(arguments.joined(separator: " ")) exited \(result.status): \(result.output)")
      #expect(result.output.contains(message), "pipemesh \(arguments.joined(separator: " ")) said: \(result.output)")
    }
  }
}
