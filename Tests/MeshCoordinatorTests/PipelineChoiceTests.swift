import MeshCoordinator
import MeshInProcess
import MeshPipeline
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization
import Testing

/// The planner choosing a step's micro-batches and schedule from layer
/// times measured at each micro-batch's rows: more micro-batches shrink the
/// pipeline's bubble, but where each call costs a fixed time beside its
/// rows (a small product runs slower per row), fewer win.
@Suite struct PipelineChoiceTests {
  /// Four Dense layers of 64 units, which two stages split evenly at whole layers.
  static let model: Sequential = {
    let spec = Pipemesh_V1_ModelSpec.with {
      $0.inputShape = [64]
      $0.layers = (0..<4).map { _ in .with { $0.dense = .with { $0.units = 64 } } }
      $0.loss = .with { $0.softmaxCrossEntropy = .init() }
    }
    return try! makeModel(spec)
  }()

  /// The stages planned for each micro-batch count of a 64-example step on
  /// layer times of `fixed` plus `perRow` per row (forward; backward twice that).
  static func plans(fixed: Duration, perRow: Duration) throws -> [(microBatches: Int, plan: Planner.Plan)] {
    try Planner.microBatchCounts(batchSize: 64).map { microBatches in
      let forward = fixed + perRow * (64 / microBatches)
      let times = Array(repeating: LayerTiming(forward: forward, backward: forward * 2), count: 4)
      return (microBatches, try Planner.plan(model, stages: 2, measured: times, wholeLayers: true))
    }
  }

  @Test func theCountsWeighedArePowersOfTwoThatDivideTheBatch() {
    #expect(Planner.microBatchCounts(batchSize: 64) == [1, 2, 4, 8, 16, 32])
    #expect(Planner.microBatchCounts(batchSize: 100) == [1, 2, 4])
    #expect(Planner.microBatchCounts(batchSize: 24) == [1, 2, 4, 8])
    #expect(Planner.microBatchCounts(batchSize: 7) == [1])
    #expect(Planner.microBatchCounts(batchSize: 1) == [1])
  }

  /// Times that grow with the rows alone: the most micro-batches win (or
  /// half as many, predicted within 1 % of them), and every choice weighed is
  /// listed, the rest fastest first.
  @Test func timesProportionalToTheRowsChooseTheMostMicroBatches() throws {
    let choices = Planner.ranked(try Self.plans(fixed: .zero, perRow: .microseconds(10)), batchSize: 64)
    #expect(choices.count == 6 * 3)
    #expect(Set(choices.map { "\($0.microBatches) \($0.schedule)" }).count == choices.count)
    let chosen = try #require(choices.first)
    #expect(chosen.microBatches >= 16, "\(choices.map { ($0.microBatches, $0.schedule, $0.stepSeconds) })")
    #expect(chosen.microBatchRows * chosen.microBatches == 64 && chosen.examplesPerSecond == 64 / chosen.stepSeconds)
    let rest = choices.dropFirst().map(\.stepSeconds)
    #expect(rest == rest.sorted())
    // Nothing is predicted markedly faster than the chosen one.
    #expect(rest.allSatisfy { $0 >= chosen.stepSeconds * 0.99 })
    // One micro-batch of 64 rows through two stages of two layers (a layer's forward 640 µs, its
    // backward twice that): both forwards, stage 1's backward until it hands on its input
    // gradient (half of it), then stage 0's backward: 10 layer forwards.
    let one = try #require(choices.first { $0.microBatches == 1 && $0.schedule == .oneFOneB })
    #expect(abs(one.stepSeconds - 10 * 640e-6) < 1e-9, "\(one.stepSeconds)")
  }

  /// A fixed time per call that dwarfs the rows' (tiny products): one
  /// micro-batch wins, and among the schedules that tie there, 1F1B (the
  /// fewest activations held).
  @Test func aFixedCostPerCallChoosesOneMicroBatchBy1F1B() throws {
    let choices = Planner.ranked(try Self.plans(fixed: .milliseconds(5), perRow: .nanoseconds(10)), batchSize: 64)
    let chosen = try #require(choices.first)
    #expect(chosen.microBatches == 1 && chosen.schedule == .oneFOneB, "\(chosen)")
    #expect(choices.filter { $0.microBatches == 1 }.count == 3)
  }

  /// A micro-batch too large to time whole is timed on fewer rows and its
  /// times scaled to its own: the same choices as times measured whole,
  /// where they grow with the rows, and the answer's layer times the chosen
  /// micro-batch's.
  @Test func rowsTooManyToTimeAreTimedFewerAndScaled() async throws {
    let spec = Pipemesh_V1_ModelSpec.with {
      $0.inputShape = [64]
      $0.layers = (0..<4).map { _ in .with { $0.dense = .with { $0.units = 64 } } }
      $0.loss = .with { $0.softmaxCrossEntropy = .init() }
    }
    func times(_ rows: Int) -> Planner.MeasuredTimes {
      let forward = Duration.microseconds(10) * rows
      return .init(
        layers: Array(repeating: LayerTiming(forward: forward, backward: forward * 2), count: 4), rows: rows, on: "here"
      )
    }
    func plan(timingAtMost most: Int) async throws -> Pipemesh_V1_PlanResponse {
      try await Planner.answer(
        .with {
          $0.model = spec
          $0.stages = 2
          $0.batchSize = 64
        }, model: Self.model, stages: 2, budgets: [], memory: .mostSlots
      ) { rows, _ in times(min(rows, most)) }
    }
    // Every micro-batch of more than one row timed on one.
    let (wholePlan, cappedPlan) = (try await plan(timingAtMost: 64), try await plan(timingAtMost: 1))
    let (whole, capped) = (wholePlan.choices, cappedPlan.choices)
    #expect(whole.count == 18 && capped.count == 18)
    // The answer's layer times are the chosen micro-batch's, as its stages add them up.
    #expect(cappedPlan.measuredRows == capped.first?.microBatchRows && cappedPlan.measuredRows > 1)
    let layerSeconds = zip(cappedPlan.layerTimes, wholePlan.layerTimes).map {
      abs($0.forwardSeconds - $1.forwardSeconds)
    }
    #expect(layerSeconds.count == 4 && layerSeconds.allSatisfy { $0 < 1e-12 }, "\(cappedPlan.layerTimes)")
    for (got, wanted) in zip(capped, whole) {
      #expect(
        got.microBatches == wanted.microBatches && got.schedule == wanted.schedule
          && abs(got.predictedStepSeconds - wanted.predictedStepSeconds) < 1e-12, "\(got) against \(wanted)")
    }
  }

  /// Each timing is given what is left of the budget, and none starts once
  /// it is spent: a slow timing cannot carry the choice past it.
  @Test func timingsShareTheBudgetAndStopWhenItIsSpent() async throws {
    let spec = Pipemesh_V1_ModelSpec.with {
      $0.inputShape = [64]
      $0.layers = (0..<4).map { _ in .with { $0.dense = .with { $0.units = 64 } } }
      $0.loss = .with { $0.softmaxCrossEntropy = .init() }
    }
    let given = Mutex<[(rows: Int, within: Duration)]>([])
    let answer = try await Planner.answer(
      .with {
        $0.model = spec
        $0.stages = 2
        $0.batchSize = 64
      }, model: Self.model, stages: 2, budgets: [], memory: .mostSlots, timingBudget: .milliseconds(500)
    ) { rows, within in
      given.withLock { $0.append((rows, within)) }
      // A timing as slow as it may be: it ends when its time is up.
      try? await Task.sleep(for: min(within, .milliseconds(300)))
      let forward = Duration.microseconds(10) * rows
      return .init(
        layers: Array(repeating: LayerTiming(forward: forward, backward: forward * 2), count: 4), rows: rows, on: "here"
      )
    }
    let asked = given.withLock { $0 }
    // 32 micro-batches of 2 rows, then 16 of 4 given what the first left (a loaded machine may
    // spend it all on the first); the first's 300 ms and the second's rest spend the budget, so no
    // third starts.
    #expect((1...2).contains(asked.count) && asked.map(\.rows) == Array([2, 4].prefix(asked.count)), "\(asked)")
    #expect(asked.first.map { $0.within <= .milliseconds(500) } == true, "\(asked)")
    if asked.count == 2 { #expect(asked[1].within <= .milliseconds(200), "\(asked)") }
    #expect(Set(answer.choices.map(\.microBatches)) == Set(asked.map { Int32(64 / $0.rows) }))
  }

  /// The Plan RPC with batch_size: every count and schedule weighed on
  /// times a partition of the pool measured, the chosen one's stages and
  /// prediction above the list; batch_size out of range, or beside what it
  /// chooses, refused naming the field.
  @Test func thePlanRPCChoosesAndRefusesWhatItCannotChooseWith() async throws {
    try await Self.onTwoStages { mesh, client in
      let request = Pipemesh_V1_PlanRequest.with {
        $0.model = PipelineTrainingTests.mlp
        $0.stages = 2
        $0.batchSize = 8
      }
      let plan = try await client.call(CoordinatorMethods.plan, request)
      #expect(plan.choices.count == 4 * 3, "\(plan.choices)")
      #expect(Set(plan.choices.map(\.microBatches)) == [1, 2, 4, 8])
      let chosen = try #require(plan.choices.first)
      #expect(mesh.partitions.joined().contains(plan.measuredOn), "\(plan.measuredOn)")
      #expect(plan.measuredRows == chosen.microBatchRows && plan.predictedStepSeconds == chosen.predictedStepSeconds)
      #expect(plan.stages.count == 2 && plan.layerTimes.count == PipelineTrainingTests.mlp.layers.count)
      for (field, change) in [
        ("micro_batches", { (request: inout Pipemesh_V1_PlanRequest) in request.microBatches = 2 }),
        ("micro_batch_rows", { $0.microBatchRows = 4 }), ("schedule", { $0.schedule = .scheduleGpipe }),
        ("estimate", { $0.estimate = true }), ("batch_size is 70000", { $0.batchSize = 70_000 }),
        ("batch_size is -1", { $0.batchSize = -1 }),
      ] {
        var refused = request
        change(&refused)
        let error = await #expect(throws: RPCError.self) { try await client.call(CoordinatorMethods.plan, refused) }
        #expect(
          error?.code == .invalidArgument && error?.message.contains(field) == true, "\(String(describing: error))")
      }
    }
  }

  /// Runs `body` with an in-process mesh of 2 stages and a client of its
  /// coordinator, and shuts the mesh down however it ends.
  static func onTwoStages(_ body: (InProcessMesh, InProcessChannel) async throws -> Void) async throws {
    let mesh = try InProcessMesh(stages: 2)
    let outcome = await Result { try await body(mesh, mesh.coordinatorChannel()) }
    await mesh.shutdown(gracePeriod: .zero)
    try outcome.get()
  }

  /// A job's trace calibrates the prediction: each stage's forward and
  /// backward by how much longer the job's took than its layers' times
  /// said, its commit after its last call, and its transfers in proportion
  /// to the rows.
  @Test func aCalibratedStepCountsTheJobsCallsTransfersAndCommits() throws {
    // Per stage at 64 rows: forward 1.28 ms, backward 2.56 ms (two layers of 0.64 and 1.28 ms).
    let times = Array(
      repeating: LayerTiming(forward: .microseconds(640), backward: .microseconds(1280)), count: 4)
    let plan = try Planner.plan(Self.model, stages: 2, measured: times, wholeLayers: true)
    let observed = ObservedStep(
      stages: Array(
        repeating: StageCosts(forward: 0.00256, inputGradient: 0.00128, weightGradient: 0.00128, commit: 0.01),
        count: 2), transfer: 0.00064)
    let predicted = try #require(plan.times)
    let calibration = try #require(
      StepCalibration(
        job: "traced", rows: 64, bounds: plan.bounds, backwardCalls: 1, observed: observed, predicted: predicted))
    #expect(
      calibration.forward.map(\.perUnit) == [2, 2] && calibration.backward.map(\.perUnit) == [1, 1]
        && calibration.transfer == LinearCost(fixed: 0, perUnit: 1e-5))
    // Times a partition could not have taken calibrate nothing.
    for (forward, commit, transfer) in [
      (-0.001, 0.0, 0.0), (0.00256, 0, Double.nan), (1e9, 0, 0), (0.00256, 0, -0.001), (0.00256, -1, 0),
    ] {
      let unbelievable = ObservedStep(
        stages: Array(repeating: StageCosts(forward: forward, backward: 0.00256, commit: commit), count: 2),
        transfer: transfer)
      #expect(
        StepCalibration(
          job: "odd", rows: 64, bounds: plan.bounds, backwardCalls: 1, observed: unbelievable, predicted: predicted)
          == nil)
    }
    // One micro-batch by 1F1B: F on stage 0, a transfer, F on stage 1 and the input-gradient half
    // of its B (the gradient leaves before the weights' half), a transfer, B on stage 0, then its
    // commit: 2.56 + 0.64 + 2.56 + 1.28 + 0.64 + 2.56 + 10 ms.
    let step = try #require(
      plan.predictedStepSeconds(microBatches: 1, schedule: .oneFOneB, calibrated: (calibration, 64)))
    #expect(abs(step - 0.02024) < 1e-9, "\(step)")
    // At 32 rows the transfers take half as long; without calibration, neither they nor the commit count.
    let half = try #require(
      plan.predictedStepSeconds(microBatches: 1, schedule: .oneFOneB, calibrated: (calibration, 32)))
    #expect(abs(half - (step - 0.00064)) < 1e-9, "\(half)")
    let uncalibrated = try #require(plan.predictedStepSeconds(microBatches: 1, schedule: .oneFOneB))
    #expect(abs(uncalibrated - 0.0064) < 1e-9, "\(uncalibrated)")
    // Stages that ran differently: the same split takes each stage's ratios and commit, another
    // split their means over the stages.
    let uneven = try #require(
      StepCalibration(
        job: "uneven", rows: 64, bounds: plan.bounds, backwardCalls: 1,
        observed: ObservedStep(
          stages: [
            StageCosts(forward: 0.00128, backward: 0.00256, commit: 0),
            StageCosts(forward: 0.00384, backward: 0.00256, commit: 0.02),
          ], transfer: 0), predicted: predicted))
    #expect(uneven.forward.map(\.perUnit) == [1, 3] && uneven.commitSeconds == [0, 0.02])
    let sameSplit = try #require(uneven.costs(of: predicted, bounds: plan.bounds))
    #expect(
      zip(sameSplit, [(0.00128, 0.0), (0.00384, 0.02)]).allSatisfy {
        abs($0.forward - $1.0) < 1e-12 && abs($0.commit - $1.1) < 1e-12
      }, "\(sameSplit)")
    let otherSplit = try #require(
      uneven.costs(of: predicted, bounds: [plan.bounds[0], .init(layer: 1), plan.bounds[2]]))
    #expect(
      otherSplit.allSatisfy { abs($0.forward - 0.00256) < 1e-12 && abs($0.commit - 0.01) < 1e-12 }, "\(otherSplit)")
    // A calibration of another number of stages is not applied.
    let threeStages = try Planner.plan(Self.model, stages: 3, measured: times, wholeLayers: true)
    #expect(
      threeStages.predictedStepSeconds(microBatches: 1, schedule: .oneFOneB, calibrated: (calibration, 64))
        == threeStages.predictedStepSeconds(microBatches: 1, schedule: .oneFOneB))
  }

  /// `model` on 2 stages at whole layers, planned on layers of 0.64 ms forward and 1.28 ms backward
  /// at 64 rows, in proportion to `rows`.
  static func measuredPlan(rows: Int = 64) throws -> Planner.Plan {
    let scale = Double(rows) / 64
    let times = Array(
      repeating: LayerTiming(forward: .seconds(0.00064 * scale), backward: .seconds(0.00128 * scale)), count: 4)
    return try Planner.plan(model, stages: 2, measured: times, wholeLayers: true)
  }

  /// The calibration of a job `job` at `rows` rows a micro-batch on `measuredPlan(rows:)`'s stages
  /// (or split at `bounds`) whose transfers took `transfer` seconds, each stage's forward `forward`
  /// and its backward `backward` in `backwardCalls` calls.
  static func calibration(
    job: String? = nil, rows: Int, transfer: Double, forward: Double = 0.00256, backward: Double = 0.00256,
    backwardCalls: Int = 1, bounds: [LayerPosition]? = nil
  ) throws -> StepCalibration {
    let plan = try measuredPlan(rows: rows)
    let predicted = try #require(plan.times)
    let observed = ObservedStep(
      stages: Array(repeating: StageCosts(forward: forward, backward: backward, commit: 0.01), count: 2),
      transfer: transfer)
    return try #require(
      StepCalibration(
        job: job ?? "at\(rows)", rows: rows, bounds: bounds ?? plan.bounds, backwardCalls: backwardCalls,
        observed: observed, predicted: predicted))
  }

  /// Below the fewest rows of the jobs a line was fitted through, its fixed
  /// part shrinks in proportion: the line keeps the ratio it has there
  /// instead of extrapolating a fixed part no job measured. Within and
  /// above them it holds.
  @Test func belowTheJobsFewestRowsALineKeepsItsRatio() throws {
    // Transfers of 3 ms at 32 rows and 5 ms at 64: 1 ms fixed and 62.5 µs a row, fitted from 32 rows.
    let fitted = try Self.calibration(rows: 64, transfer: 0.005).fitting([
      try Self.calibration(rows: 32, transfer: 0.003)
    ])
    #expect(abs(fitted.transfer.fixed - 0.001) < 1e-12 && fitted.transfer.leastUnits == 32)
    for (rows, seconds) in [(16, 0.0015), (8, 0.00075), (32, 0.003), (48, 0.004), (128, 0.009)] {
      let latency = fitted.link(rows: rows).latency
      #expect(abs(latency - seconds) < 1e-12, "\(rows) rows: \(latency)")
    }
    // Each stage's backward: 1 ms a call plus its layers' prediction, from jobs at 32 and 64 rows. At
    // 16 rows (0.64 ms predicted, half of the fewest measured) a call's fixed part is 0.5 ms.
    func job(rows: Int) throws -> StepCalibration {
      try Self.calibration(rows: rows, transfer: 0, backward: 0.001 + 0.00256 * Double(rows) / 64, backwardCalls: 1)
    }
    let calls = try job(rows: 64).fitting([try job(rows: 32)])
    let plan = try Self.measuredPlan(rows: 16)
    let times = try #require(plan.times)
    let costs = try #require(calls.costs(of: times, bounds: plan.bounds))
    #expect(
      costs.allSatisfy {
        abs($0.callSeconds - 0.0005) < 1e-12 && abs($0.inputGradient + $0.weightGradient - 0.00114) < 1e-12
      }, "\(costs)")
  }

  /// A backward's fixed part is a call's: ZB-H1 splits each backward into
  /// two calls and pays it twice. Jobs by either schedule fit one line per
  /// stage, and a plan by the other schedule counts the part per call.
  @Test func aBackwardSplitInTwoPaysItsCallsFixedPartTwice() throws {
    // Each stage's backward is 1 ms a call plus what its layers predict: 2.56 ms at 64 rows, 0.64 at 16,
    // 1.28 at 32.
    func job(rows: Int, calls: Int) throws -> StepCalibration {
      try Self.calibration(
        rows: rows, transfer: 0, backward: 0.001 * Double(calls) + 0.00256 * Double(rows) / 64, backwardCalls: calls)
    }
    for fitted in [
      try job(rows: 64, calls: 1).fitting([try job(rows: 16, calls: 1)]),
      try job(rows: 64, calls: 2).fitting([try job(rows: 16, calls: 2)]),
      try job(rows: 64, calls: 1).fitting([try job(rows: 16, calls: 2), try job(rows: 32, calls: 1)]),
    ] {
      #expect(
        fitted.backward.allSatisfy { abs($0.fixed - 0.001) < 1e-12 && abs($0.perUnit - 1) < 1e-9 },
        "\(fitted.backward)")
    }
    // A split job and an unsplit one meet on that line only when each counts its calls.
    #expect(
      try job(rows: 64, calls: 2).fitting([try job(rows: 16, calls: 1)]).backward.allSatisfy {
        abs($0.fixed - 0.001) < 1e-12
      })
    // A ZB-H1 job at 63 rows and a 1F1B job at 32 are within 2 % of one measure a call: what sets
    // them apart is noise, which fits no fixed part.
    let noisy = try Self.calibration(rows: 63, transfer: 0, backward: 0.0044, backwardCalls: 2).fitting([
      try Self.calibration(rows: 32, transfer: 0, backward: 0.00221, backwardCalls: 1)
    ])
    #expect(noisy.backward.allSatisfy { $0.fixed == 0 }, "\(noisy.backward)")
    // At 32 rows the input gradient carries the fixed part and half the rest; the W pays it again.
    let fitted = try job(rows: 64, calls: 1).fitting([try job(rows: 16, calls: 1)])
    let plan = try Self.measuredPlan(rows: 32)
    let times = try #require(plan.times)
    let costs = try #require(fitted.costs(of: times, bounds: plan.bounds))
    #expect(
      costs.allSatisfy {
        abs($0.inputGradient - 0.00164) < 1e-12 && abs($0.weightGradient - 0.00064) < 1e-12
          && abs($0.callSeconds - 0.001) < 1e-12
      }, "\(costs)")
    // One micro-batch: ZB-H1 runs 1F1B's path with stage 0's weight gradients a call of their own.
    let oneFOneB = try #require(
      plan.predictedStepSeconds(microBatches: 1, schedule: .oneFOneB, calibrated: (fitted, 32)))
    let zeroBubble = try #require(
      plan.predictedStepSeconds(microBatches: 1, schedule: .zeroBubbleH1, calibrated: (fitted, 32)))
    #expect(abs(zeroBubble - oneFOneB - 0.001) < 1e-12, "\(zeroBubble) against \(oneFOneB)")
  }

  /// Jobs at other micro-batch sizes tell the fixed part of the transfers
  /// and of each stage's calls from the part that grows with the rows: the
  /// calibration fits lines through them, with no negative part, from jobs
  /// that split the model where it does.
  @Test func jobsAtOtherRowsFitTheFixedPartsOfCallsAndTransfers() throws {
    let plan = try Self.measuredPlan()
    func calibration(rows: Int, transfer: Double, bounds: [LayerPosition]? = nil) throws -> StepCalibration {
      try Self.calibration(rows: rows, transfer: transfer, bounds: bounds)
    }
    func latency(_ calibration: StepCalibration, rows: Int) -> Double { calibration.link(rows: rows).latency }
    // 2 ms at 16 rows and 5 ms at 64: 1 ms fixed and 62.5 µs a row.
    let newest = try calibration(rows: 64, transfer: 0.005)
    let fitted = newest.fitting([try Self.calibration(rows: 16, transfer: 0.002, forward: 0.00128)])
    #expect(abs(fitted.transfer.fixed - 0.001) < 1e-12 && abs(fitted.transfer.perUnit - 6.25e-5) < 1e-12)
    #expect(abs(latency(fitted, rows: 32) - 0.003) < 1e-12 && abs(latency(newest, rows: 32) - 0.0025) < 1e-12)
    // A stage's forward took 2.56 ms where its layers predicted 1.28 (64 rows), 1.28 ms where they
    // predicted 0.32 (16 rows): 0.853 ms fixed and 4/3 of the prediction, so at 32 rows (0.64 ms
    // predicted) 1.707 ms, where the newest job's ratio alone says 1.28.
    #expect(fitted.forward.allSatisfy { abs($0.fixed - 0.00256 / 3) < 1e-12 && abs($0.perUnit - 4.0 / 3) < 1e-12 })
    // Its backward took 2.56 ms at both, predicted 0.64 and 2.56 ms: no constant (a call's time grows
    // with its layers'), but the best line through zero.
    #expect(
      fitted.backward.allSatisfy { $0.fixed == 0 && abs($0.perUnit - 8.192 / 6.9632) < 1e-9 }, "\(fitted.backward)")
    let at32 = try #require(try Self.measuredPlan(rows: 32).times)
    let bounds = try Self.measuredPlan().bounds
    #expect(try #require(fitted.costs(of: at32, bounds: bounds)).allSatisfy { abs($0.forward - 0.00512 / 3) < 1e-12 })
    #expect(try #require(newest.costs(of: at32, bounds: bounds)).allSatisfy { abs($0.forward - 0.00128) < 1e-12 })
    // The first at each row counts, and a job split elsewhere moved other tensors: neither changes the fit.
    let again = newest.fitting([
      try Self.calibration(rows: 16, transfer: 0.002, forward: 0.00128), try calibration(rows: 16, transfer: 0.009),
      try calibration(rows: 8, transfer: 0.1, bounds: [plan.bounds[0], .init(layer: 1), plan.bounds[2]]),
    ])
    #expect(again == fitted)
    // Fewer rows that took longer: the mean, at any rows. A line that would start below zero: through zero.
    let flat = try calibration(rows: 64, transfer: 0.002).fitting([
      try calibration(rows: 16, transfer: 0.004)
    ])
    #expect(flat.transfer.perUnit == 0 && abs(flat.transfer.fixed - 0.003) < 1e-12)
    let steep = try calibration(rows: 64, transfer: 0.008).fitting([
      try calibration(rows: 16, transfer: 0.001)
    ])
    #expect(steep.transfer.fixed == 0 && abs(steep.transfer.perUnit - 0.528 / 4352) < 1e-12)
    // Alone, a calibration keeps its calls' ratios and its transfers in proportion to the rows.
    #expect(newest.fitting([]) == newest)
  }

  /// A pipeline job that succeeds calibrates the coordinator's next plans
  /// of its model on as many stages, and the Plan RPC names it.
  @Test func aJobThatRanCalibratesThePlansOfItsModel() async throws {
    try await Self.onTwoStages { mesh, client in
      let request = Pipemesh_V1_PlanRequest.with {
        $0.model = PipelineTrainingTests.mlp
        $0.stages = 2
        $0.microBatchRows = 8
        $0.microBatches = 2
      }
      let before = try await client.call(CoordinatorMethods.plan, request)
      #expect(before.calibratedByJob.isEmpty && before.calibratedRows == 0 && before.predictedStepSeconds > 0)
      let job = try await JobCheckpointTests.trainToEnd("traced", epochs: 1, on: mesh) {
        $0.batchSize = 16
        $0.microBatches = 2
      }
      #expect(job.state == .succeeded, "\(job)")
      let after = try await client.call(CoordinatorMethods.plan, request)
      #expect(after.calibratedByJob == "traced" && after.calibratedRows == 8, "\(after)")
      #expect(after.predictedStepSeconds > 0 && after.predictedStepSeconds != before.predictedStepSeconds)
      // Another number of stages has no job to learn from.
      var oneStage = request
      oneStage.stages = 1
      #expect(try await client.call(CoordinatorMethods.plan, oneStage).calibratedByJob.isEmpty)
    }
  }

  /// Plans balanced on the FLOP estimate (no measured times) predict nothing:
  /// there is nothing to choose among.
  @Test func estimatesPredictNothingToChooseFrom() throws {
    let estimated = try Planner.microBatchCounts(batchSize: 8).map {
      (microBatches: $0, plan: try Planner.plan(Self.model, stages: 2))
    }
    #expect(Planner.ranked(estimated, batchSize: 8).isEmpty)
  }
}
