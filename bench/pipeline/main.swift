// bench/pipeline: training throughput through a real local mesh (a ps, K
// partitions with one BLAS thread each, a coordinator) for a compute-balanced
// MLP, K ∈ {1, 2} and M ∈ {1, 2, 4, 8} micro-batches under GPipe and 1F1B
// (both have the same bubble), next to the
// GPipe ideal K·S₁·M/(M+K−1) where S₁ is single-process training measured
// in each round right before the mesh runs, and next to the same arithmetic's ideal on this machine,
// S_K(M)·M/(M+K−1), where S_K(M) is the samples/s of K single-process
// trainings running at once, each splitting its steps into M micro-batches
// (what K concurrent computations of that size get from this host's cores,
// caches and memory), measured just before each configuration's mesh run.
// Also per-stage busy fraction, the bubble, the coordinator's CPU use, the
// Chrome trace of one step, and the step the schedule simulator predicts from
// the stage, transfer and commit times of the measured steps' traces.
//
// The batch (2,048 by default) is large enough that a micro-batch of an
// eighth of it multiplies at the whole batch's sgemm speed, which the ideal
// assumes (on this project's reference machine 128 rows ran about 5% slower
// than 1,024, 256 rows as fast as 2,048); `--batch N` measures another.
// `--schedule gpipe`, `1f1b` or `zb-h1` runs only that schedule; a comma-separated list runs
// those (`--schedule 1f1b,zb-h1`), taking turns.
//
//   pipeline-bench OUTPUT_DIR [--quick] [--batch N] [--schedule gpipe|1f1b|zb-h1[,...]]
//                  [--stages K] [--micro-batches M[,M...]] [--rounds N]
//                  (only K stages, only those micro-batch counts, in order; N rounds of each
//                  configuration, each its reference then its mesh run)
//   pipeline-bench --single-process [--quick] [--batch N] [--micro-batches M]
//                  (one single-process training; prints its samples/s)
//   pipeline-bench --simulate
//                  (the simulator's table for K = 4…64 stages; see Simulation.swift)
//   pipeline-bench --stage-times SPEC --split P,… [--rows N] [--repeats R]
//                  (each stage of a split timed as a partition runs it; see StageTimes.swift)
import Foundation
import MeshOps
import MeshPipeline
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

BLAS.takeTheCPUsKernels()
// As a partition does (see `Subnormals`): what this process times in itself is timed as a
// partition would run it.
Subnormals.flushToZero()
let arguments = CommandLine.arguments
if arguments.contains("--simulate") {
  try printSimulationTable()
  exit(0)
}
if let index = arguments.firstIndex(of: "--stage-times"), arguments.indices.contains(index + 1) {
  func value(_ flag: String) -> String? {
    arguments.firstIndex(of: flag).flatMap { arguments.indices.contains($0 + 1) ? arguments[$0 + 1] : nil }
  }
  try printStageTimes(
    spec: arguments[index + 1], split: value("--split") ?? "", rows: value("--rows").flatMap { Int($0) } ?? 32,
    repeats: value("--repeats").flatMap { Int($0) } ?? 5)
  exit(0)
}
let onlySingleProcess = arguments.contains("--single-process")
// The output directory comes first (a flag there is a mistake, or --help); --single-process needs none.
guard arguments.count >= 2, onlySingleProcess || !arguments[1].hasPrefix("-") else {
  FileHandle.standardError.write(
    Data(
      ("usage: pipeline-bench OUTPUT_DIR [--quick] [--batch N] [--schedule gpipe|1f1b|zb-h1[,...]] [--stages K] [--micro-batches M[,M...]] [--rounds N]"
        + " | --single-process [--quick] [--batch N] [--micro-batches M]\n").utf8))
  exit(2)
}
let output = arguments[1]
let quick = arguments.contains("--quick")
let steps = quick ? 3 : 8
/// The value after `flag`, "" when the flag has none, nil when it is absent.
func option(_ flag: String) -> String? {
  arguments.firstIndex(of: flag).map { arguments.indices.contains($0 + 1) ? arguments[$0 + 1] : "" }
}
let batch = option("--batch").map { Int($0) ?? 0 } ?? 2048
let scheduleKinds: [String: Pipemesh_V1_ScheduleKind] = [
  "gpipe": .scheduleGpipe, "1f1b": .scheduleOneFOneB, "zb-h1": .scheduleZeroBubbleH1,
]
/// The schedules measured, by name: both unless `--schedule` picks one.
let schedules = option("--schedule").map { $0.split(separator: ",").map(String.init) } ?? ["gpipe", "1f1b"]
guard batch > 0, schedules.allSatisfy({ scheduleKinds[$0] != nil }) else {
  FileHandle.standardError.write(
    Data("--batch needs a positive number of examples, --schedule gpipe, 1f1b or zb-h1 (or a list)\n".utf8))
  exit(2)
}
let width = 1024
let inputSize = 16

/// Five hidden Dense layers 1,024 wide on 16 inputs and a 10-class output:
/// the planner splits them 3 | 3, and the stages are balanced in each phase,
/// not only over a step (forward 2.114 against 2.107 million multiply-adds
/// per example, backward 4.211 against 4.215), which is what GPipe's ideal assumes:
/// it runs all forwards, then all backwards, so each phase goes at its
/// slower stage's pace. (The first layer computes no input gradient, so a
/// model whose first layer is not negligible cannot balance both phases.)
let spec = Pipemesh_V1_ModelSpec.with {
  $0.inputShape = [Int64(inputSize)]
  $0.seed = 1
  $0.layers = (0..<6).map { index in
    .with {
      $0.dense = .with {
        $0.units = Int64(index == 5 ? 10 : width)
        $0.activation = index == 5 ? .none : .relu
      }
    }
  }
  $0.loss = .with { $0.softmaxCrossEntropy = .init() }
}
let inputs = Tensor.randomNormal([batch * (steps + 1), inputSize], seed: 2)
let labels = Tensor(shape: [batch * (steps + 1)], scalars: (0..<(batch * (steps + 1))).map { Float($0 % 10) })

/// Single-process training, one BLAS thread: samples per second. With
/// `microBatches` > 1 each step runs as that many micro-batches whose
/// gradients are summed, as a stage sums them: the same arithmetic as the
/// pipeline's, without the pipeline.
func singleProcess(microBatches: Int) throws -> Double {
  BLAS.setThreadCount(1)
  let model = try makeModel(spec)
  var variables = model.initialVariables()
  let optimizer = SGD(learningRate: .constant(0.01))
  var elapsed = Duration.zero
  for step in 0...steps {
    let started = ContinuousClock.now
    var gradients: [String: Tensor] = [:]
    for part in evenRanges(batch, parts: microBatches) {
      let rows = (step * batch + part.lowerBound)..<(step * batch + part.upperBound)
      let x = inputs.slice(axis: 0, range: rows)
      let y = labels.slice(axis: 0, range: rows)
      let forward = model.forwardStage(
        x, variables: variables, layers: 0..<model.layers.count, context: ForwardContext(training: true),
        inputGradient: false)
      let (_, lossGradient) = Autodiff.valueWithGradient(at: [forward.output]) { model.loss(output: $0[0], target: y) }
      _ = forward.backward(
        lossGradient[0] * (Float(part.count) / Float(batch)), addingPenalty: part.lowerBound == 0,
        addingInto: &gradients)
    }
    for (name, gradient) in gradients {
      variables[name] =
        optimizer.update(variable: variables[name]!, gradient: gradient, slots: [:], step: step + 1).variable
    }
    if step > 0 { elapsed += ContinuousClock.now - started }  // step 0 warms up
  }
  return Double(batch * steps) / elapsed.seconds
}

/// CPU seconds a process has used, from /proc.
func cpuSeconds(_ pid: Int32) -> Double {
  guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
    let close = stat.lastIndex(of: ")")
  else { return 0 }
  let fields = stat[stat.index(after: close)...].split(separator: " ")
  let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)  // utime, stime
  return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
}

/// One configuration's figures: medians over its rounds for samples/s and
/// S_K(M); busy and CPU from the last round.
struct Result: Codable {
  let schedule: String
  let stages: Int
  let microBatches: Int
  let rounds: Int
  let samplesPerSecond: Double
  /// S₁, single-process training with whole batches, measured in each round.
  let singleProcess: Double
  /// The GPipe ideal K·S₁·M/(M+K−1).
  let ideal: Double
  /// S_K(M), measured just before this configuration.
  let sameArithmetic: Double
  /// The ideal for the same arithmetic on this machine: S_K(M)·M/(M+K−1).
  let sameArithmeticIdeal: Double
  let busyFraction: [Double]
  /// What the schedule simulator predicts from the traces of the last round's steps (nil without one).
  let simulated: Double?
  /// What `pipemesh plan` predicts, from layer times alone (nil when it predicts nothing).
  let planned: Double?
  let coordinatorCPU: Double
  /// Each service's CPU use over the measured steps, in cores, by name.
  let cpu: [String: Double]
}

if onlySingleProcess {
  print(try singleProcess(microBatches: option("--micro-batches").flatMap { Int($0) } ?? 1))
  exit(0)
}
let stageCounts = option("--stages").flatMap { Int($0) }.map { [$0] } ?? [1, 2]
let microBatchCounts = option("--micro-batches").map { $0.split(separator: ",").map { Int($0) ?? 0 } } ?? [1, 2, 4, 8]
guard !microBatchCounts.isEmpty, microBatchCounts.allSatisfy({ (1...batch).contains($0) }) else {
  FileHandle.standardError.write(
    Data("--micro-batches needs counts from 1 to the batch (\(batch)), separated by commas\n".utf8))
  exit(2)
}
let roundCount = max(1, option("--rounds").flatMap { Int($0) } ?? 1)

/// Samples/s of `copies` single-process trainings with `microBatches`
/// micro-batches run at once, each in a process of its own (this program
/// with --single-process), added up.
func concurrentSingleProcesses(_ copies: Int, microBatches: Int) throws -> Double {
  let runs = try (0..<copies).map { _ in
    let process = Process()
    process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0])
    process.arguments =
      ["--single-process", "--batch", "\(batch)", "--micro-batches", "\(microBatches)"] + (quick ? ["--quick"] : [])
    let standardOutput = Pipe()
    process.standardOutput = standardOutput
    try process.run()
    return (process, standardOutput)
  }
  return try runs.reduce(0) { total, run in
    let text = String(decoding: run.1.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    run.0.waitUntilExit()
    guard run.0.terminationStatus == 0, let samples = Double(text.trimmingCharacters(in: .whitespacesAndNewlines))
    else {
      throw RPCError(.internal, "a single-process run failed (status \(run.0.terminationStatus)): \(text)")
    }
    return total + samples
  }
}

try FileManager.default.createDirectory(atPath: output, withIntermediateDirectories: true)
print("{\"batch\":\(batch)}")
let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(
  "pipemesh"
).path
/// One training job of one configuration on a running mesh.
struct Round {
  var samplesPerSecond: Double
  var busyFraction: [Double]
  var cpu: [String: Double]
  var trace: String
  /// The traces of the measured steps, as GetJob gave them while the job ran.
  var stepTraces: [String]
}

func trainOnce(
  _ client: RPCClient, services: LocalServices, job: String, schedule: Pipemesh_V1_ScheduleKind, stages: Int,
  microBatches: Int
) async throws -> Round {
  let request = Pipemesh_V1_TrainRequest.inline(
    job: job, model: spec, inputs: inputs, targets: labels, epochs: 1, batchSize: batch, microBatches: microBatches,
    schedule: schedule, learningRate: 0.01)
  var measured: [Pipemesh_V1_TrainProgress] = []
  var trace = ""
  var stepTraces: [String] = []
  // The services' CPU over the measured steps: from the end of the warm-up
  // step to the end of the last one (job setup excluded).
  var cpuWindow: (start: [String: Double], startedAt: ContinuousClock.Instant)?
  var cpu: [String: Double] = [:]
  func cpuByService() -> [String: Double] { services.processIDs.mapValues(cpuSeconds) }
  for try await progress in client.stream(CoordinatorMethods.train, request) {
    if progress.done {
      trace = progress.traceJson
    } else if progress.step == 1 {
      cpuWindow = (cpuByService(), .now)
    } else {
      measured.append(progress)
      // The newest steady step's trace, while the job runs.
      let live = try await client.call(
        CoordinatorMethods.getJob,
        .with {
          $0.job = job
          $0.history = true
        })
      if !live.traceJson.isEmpty, live.traceJson != stepTraces.last { stepTraces.append(live.traceJson) }
      if let window = cpuWindow, progress.step == progress.totalSteps {
        let elapsed = (ContinuousClock.now - window.startedAt).seconds
        cpu = cpuByService().mapValues { $0 / elapsed }.merging(
          window.start.mapValues { -$0 / elapsed }, uniquingKeysWith: +)
      }
    }
  }
  // Wall time of the measured steps, from their samples/s.
  let wall = measured.reduce(0) { $0 + Double(batch) / $1.samplesPerSecond }
  let busy = (0..<stages).map { stage in
    measured.reduce(0) { $0 + ($1.stages.first { $0.stage == Int32(stage) }?.busySeconds ?? 0) } / wall
  }
  return Round(
    samplesPerSecond: Double(batch * measured.count) / wall, busyFraction: busy, cpu: cpu, trace: trace,
    stepTraces: stepTraces)
}

/// The step the schedule simulator predicts from the traces of a run's
/// steps: each stage's mean forward, backward (and weights) and commit as
/// they were timed, and the mean transfer as the link's latency; samples/s
/// of `batch`. Nil without a trace.
func simulatedSamplesPerSecond(traces: [String], schedule: Pipemesh_V1_ScheduleKind, stages: Int, microBatches: Int)
  throws -> Double?
{
  let events = traces.flatMap { trace in
    ((try? JSONSerialization.jsonObject(with: Data(trace.utf8)) as? [String: Any])?["traceEvents"] as? [[String: Any]])
      ?? []
  }
  guard !events.isEmpty else { return nil }
  var durations: [String: [Double]] = [:]
  for event in events where event["ph"] as? String == "X" {
    guard let category = event["cat"] as? String, let seconds = (event["dur"] as? Double).map({ $0 / 1e6 }),
      let stage = (event["args"] as? [String: Any])?["stage"] as? Int
    else { continue }
    durations[category == "transfer" ? "transfer" : "\(category)\(stage)", default: []].append(seconds)
  }
  func mean(_ key: String) -> Double {
    let values = durations[key] ?? []
    return values.isEmpty ? 0 : values.reduce(0, +) / Double(values.count)
  }
  let kind: ScheduleKind =
    switch schedule {
    case .scheduleGpipe: .gpipe
    case .scheduleZeroBubbleH1: .zeroBubbleH1
    default: .oneFOneB
    }
  let costs = (0..<stages).map { stage in
    durations["weights\(stage)"] == nil
      ? StageCosts(forward: mean("forward\(stage)"), backward: mean("backward\(stage)"), commit: mean("commit\(stage)"))
      : StageCosts(
        forward: mean("forward\(stage)"), inputGradient: mean("backward\(stage)"),
        weightGradient: mean("weights\(stage)"), commit: mean("commit\(stage)"))
  }
  let step = try PipelineSchedule(kind: kind, stages: stages, microBatches: microBatches).simulate(
    costs: costs, link: LinkModel(latency: mean("transfer"), bytesPerSecond: .infinity),
    activationBytes: Array(repeating: 0, count: stages))
  return step.seconds > 0 ? Double(batch) / step.seconds : nil
}

func median(_ values: [Double]) -> Double {
  let sorted = values.sorted()
  return sorted.count % 2 == 1
    ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

/// What the planner chooses for a step of `batch` (`pipemesh plan
/// --batch-size`), and what that configuration trains at: as `measuredAt`
/// has it (samples/s by "SCHEDULE M"), or measured here over as many rounds.
struct Choice: Codable {
  let chosen: String
  let stages: Int
  let predicted: Double
  let measured: Double
  /// Every pipeline the planner weighed, samples/s by "SCHEDULE M".
  let predictions: [String: Double]
  /// The job whose trace calibrated the predictions, and its micro-batches' rows.
  let calibratedBy: String
  let calibratedRows: Int
}

func choice(_ client: RPCClient, services: LocalServices, stages: Int, measuredAt: [String: Double]) async throws
  -> Choice
{
  let plan = try await client.call(
    CoordinatorMethods.plan,
    .with {
      $0.model = spec
      $0.stages = Int32(stages)
      $0.batchSize = Int32(batch)
    })
  guard let chosen = plan.choices.first, let name = scheduleKinds.first(where: { $0.value == chosen.schedule })?.key
  else { throw RPCError(.internal, "the planner chose nothing: \(plan)") }
  let key = "\(name) \(chosen.microBatches)"
  var measured = measuredAt[key]
  if measured == nil {
    var rounds: [Double] = []
    for round in 1...roundCount {
      rounds.append(
        try await trainOnce(
          client, services: services, job: "chosen-k\(stages)-r\(round)", schedule: chosen.schedule, stages: stages,
          microBatches: Int(chosen.microBatches)
        ).samplesPerSecond)
    }
    measured = median(rounds)
  }
  var predictions: [String: Double] = [:]
  for choice in plan.choices {
    guard let name = scheduleKinds.first(where: { $0.value == choice.schedule })?.key else { continue }
    predictions["\(name) \(choice.microBatches)"] = choice.predictedExamplesPerSecond
  }
  return Choice(
    chosen: key, stages: stages, predicted: chosen.predictedExamplesPerSecond, measured: measured!,
    predictions: predictions, calibratedBy: plan.calibratedByJob, calibratedRows: Int(plan.calibratedRows))
}

for stages in stageCounts {
  let services = try LocalServices(logDirectory: "\(output)/logs-k\(stages)", executable: binary)
  let ps = try await services.start("ps", name: "ps", [])
  var partitions: [String] = []
  for stage in 0..<stages {
    partitions.append(try await services.start("partition", name: "partition\(stage)", ["--blas-threads", "1"]))
  }
  let coordinator = try await services.start(
    "coordinator", name: "coordinator", ["--ps", ps, "--partitions", partitions.joined(separator: ";")])
  let client = try RPCClient(target: coordinator, transport: .init(maxMessageBytes: 1 << 30))
  var measuredAt: [String: Double] = [:]
  for microBatches in microBatchCounts {
    // Each round measures both references right before the mesh runs each
    // schedule, so that all see the machine in the same state (its speed
    // drifts); the schedules take turns going first.
    var singles: [Double] = []
    var references: [Double] = []
    var rounds: [String: [Round]] = [:]
    // What `pipemesh plan` predicts for each configuration before its jobs ran: layer times a
    // partition measures (for fewer rows when a micro-batch is too big to time), calibrated by the
    // jobs at the micro-batch counts before this one (none before the first: no transfers, no
    // commits), so each prediction is out of sample.
    var planned: [String: Double] = [:]
    for name in schedules {
      let plan = try await client.call(
        CoordinatorMethods.plan,
        .with {
          $0.model = spec
          $0.stages = Int32(stages)
          $0.microBatchRows = Int32(min(4096, batch / microBatches))
          $0.microBatches = Int32(microBatches)
          $0.schedule = scheduleKinds[name]!
        })
      if plan.predictedStepSeconds > 0 {
        planned[name] = Double(Int(plan.measuredRows) * microBatches) / plan.predictedStepSeconds
      }
    }
    for round in 1...roundCount {
      singles.append(try concurrentSingleProcesses(1, microBatches: 1))
      references.append(try concurrentSingleProcesses(stages, microBatches: microBatches))
      for name in round % 2 == 1 ? schedules : schedules.reversed() {
        rounds[name, default: []].append(
          try await trainOnce(
            client, services: services, job: "\(name)-k\(stages)-m\(microBatches)-r\(round)",
            schedule: scheduleKinds[name]!,
            stages: stages, microBatches: microBatches))
      }
    }
    let single = median(singles)
    let sameArithmetic = median(references)
    for name in schedules {
      let last = rounds[name]!.last!
      let result = Result(
        schedule: name, stages: stages, microBatches: microBatches, rounds: roundCount,
        samplesPerSecond: median(rounds[name]!.map(\.samplesPerSecond)), singleProcess: single,
        ideal: Double(stages) * single * Double(microBatches) / Double(microBatches + stages - 1),
        sameArithmetic: sameArithmetic,
        sameArithmeticIdeal: sameArithmetic * Double(microBatches) / Double(microBatches + stages - 1),
        busyFraction: last.busyFraction,
        simulated: try simulatedSamplesPerSecond(
          traces: last.stepTraces.isEmpty ? [last.trace] : last.stepTraces, schedule: scheduleKinds[name]!,
          stages: stages, microBatches: microBatches),
        planned: planned[name], coordinatorCPU: last.cpu["coordinator"] ?? 0, cpu: last.cpu)
      print(String(decoding: try JSONEncoder().encode(result), as: UTF8.self))
      try last.trace.write(
        toFile: "\(output)/trace-\(name)-k\(stages)-m\(microBatches).json", atomically: true, encoding: .utf8)
    }
    for name in schedules {
      measuredAt["\(name) \(microBatches)"] = median(rounds[name]!.map(\.samplesPerSecond))
    }
  }
  if stages > 1 {
    let chosen = try await choice(client, services: services, stages: stages, measuredAt: measuredAt)
    print(String(decoding: try JSONEncoder().encode(chosen), as: UTF8.self))
  }
  await services.stopAll()
}
