import Foundation
import MeshCheckpoint
import MeshCoordinator
import MeshInProcess
import MeshPS
import MeshPSClient
import MeshPartition
import MeshProto
import MeshRPC
import MeshTensor
import MeshTestSupport
import MeshWire
import Testing

/// Pipelined training over real processes (a ps, four partitions,
/// coordinators) against single-process training of the same model.
@Suite(.serialized) struct PipelineTrainingTests {
  static let mesh = Task { try await LocalMesh(partitions: 4) }

  /// An MLP of four Dense layers (one per stage at K = 4) with an L2 penalty.
  static let mlp = Pipemesh_V1_ModelSpec.with {
    $0.inputShape = [8]
    $0.seed = 11
    $0.layers = [16, 16, 16, 3].enumerated().map { index, units in
      .with {
        $0.dense = .with {
          $0.units = Int64(units)
          $0.activation = index < 3 ? .tanh : .none
        }
      }
    }
    $0.loss = .with {
      $0.softmaxCrossEntropy = .init()
      $0.l2 = 0.001
    }
  }

  /// 64 examples of 8 features in 3 classes, drawn from a seed.
  static func classification(count: Int = 64) -> (Tensor, Tensor) {
    let inputs = Tensor.randomNormal([count, 8], seed: 5)
    let labels = (0..<count).map { row -> Float in
      let x = inputs.scalars[(row * 8)..<(row * 8 + 8)]
      return Float((x.prefix(4).reduce(0, +) > 0 ? 1 : 0) + (x.suffix(4).reduce(0, +) > 0.5 ? 1 : 0))
    }
    return (inputs, Tensor(shape: [count], scalars: labels))
  }

  /// Random token sequences and, as targets, each token's successor (modulo
  /// the vocabulary): a language-modelling task any sequence model learns.
  static func successorTokens(rows: Int, length: Int, vocabulary: Int, seed: UInt64) -> (Tensor, Tensor) {
    let tokens = Tensor.randomUniform([rows, length], lowerBound: 0, upperBound: Float(vocabulary), seed: seed)
    let inputs = Tensor(shape: [rows, length], scalars: tokens.scalars.map { Float(Int($0)) })
    let targets = Tensor(shape: [rows, length], scalars: inputs.scalars.map { Float((Int($0) + 1) % vocabulary) })
    return (inputs, targets)
  }

  /// Trains on a coordinator and returns the per-step losses it reported.
  static func train(
    _ coordinator: RunningService, job: String, model: Pipemesh_V1_ModelSpec, inputs: Tensor, targets: Tensor,
    microBatches: Int, schedule: Pipemesh_V1_ScheduleKind, consistency: Pipemesh_V1_Consistency = .init(),
    epochs: Int = 2, batchSize: Int = 16, learningRate: Float = 0.1, validation: Float = 0,
    recompute: Bool = false, maxKeptBytes: Int64 = 0, replace: Bool = false, splitPoints: [LayerPosition] = [],
    transferDType: Pipemesh_V1_DType = .float32
  ) async throws -> [Pipemesh_V1_TrainProgress] {
    try await train(
      RPCClient(target: coordinator.endpoint), job: job, model: model, inputs: inputs, targets: targets,
      microBatches: microBatches, schedule: schedule, consistency: consistency, epochs: epochs, batchSize: batchSize,
      learningRate: learningRate, validation: validation, recompute: recompute, maxKeptBytes: maxKeptBytes,
      replace: replace, splitPoints: splitPoints, transferDType: transferDType)
  }

  /// Trains through `client`, a channel to a coordinator on any transport.
  static func train(
    _ client: any RPCChannel, job: String, model: Pipemesh_V1_ModelSpec, inputs: Tensor, targets: Tensor,
    microBatches: Int, schedule: Pipemesh_V1_ScheduleKind, consistency: Pipemesh_V1_Consistency = .init(),
    epochs: Int = 2, batchSize: Int = 16, learningRate: Float = 0.1, validation: Float = 0,
    recompute: Bool = false, maxKeptBytes: Int64 = 0, replace: Bool = false, splitPoints: [LayerPosition] = [],
    transferDType: Pipemesh_V1_DType = .float32, clipGlobalNorm: Float = 0
  ) async throws -> [Pipemesh_V1_TrainProgress] {
    var request = Pipemesh_V1_TrainRequest.inline(
      job: job, model: model, inputs: inputs, targets: targets, epochs: epochs, batchSize: batchSize,
      microBatches: microBatches, schedule: schedule, learningRate: learningRate)
    request.consistency = consistency
    request.shuffleSeed = 3
    request.validationFraction = validation
    request.recomputeActivations = recompute
    request.maxKeptBytes = maxKeptBytes
    request.replace = replace
    request.splitPoints = splitPoints.wireLayers
    request.splitPointInputs = splitPoints.wireInputs
    request.transferDtype = transferDType
    request.optimizer.clipGlobalNorm = clipGlobalNorm
    var progress: [Pipemesh_V1_TrainProgress] = []
    for try await update in client.stream(CoordinatorMethods.train, request, options: .init(timeout: .seconds(300))) {
      progress.append(update)
    }
    return progress
  }

  static let configurations: [(stages: Int, microBatches: Int, schedule: Pipemesh_V1_ScheduleKind, recompute: Bool)] =
    [1, 2, 4].flatMap { stages in
      [1, 4].flatMap { microBatches in
        [Pipemesh_V1_ScheduleKind.scheduleGpipe, .scheduleOneFOneB].map { (stages, microBatches, $0, false) }
      }
    } + [(2, 4, .scheduleOneFOneB, true), (4, 4, .scheduleGpipe, true)]
    + [(2, 4, .scheduleZeroBubbleH1, false), (4, 4, .scheduleZeroBubbleH1, false), (4, 4, .scheduleZeroBubbleH1, true)]

  /// A schedule's name in job names.
  static func name(_ schedule: Pipemesh_V1_ScheduleKind) -> String {
    switch schedule {
    case .scheduleGpipe: "gpipe"
    case .scheduleZeroBubbleH1: "zb-h1"
    default: "1f1b"
    }
  }

  /// Checks that a job reported one loss per step of `reference`, each
  /// within `relative` of the reference's.
  static func expectLosses(
    of progress: [Pipemesh_V1_TrainProgress], near reference: NumPyReference.Output, within relative: Double,
    job: String
  ) {
    let losses = progress.filter { !$0.done && !$0.evaluated }.map(\.loss)
    #expect(losses.count == reference.losses.count, "\(job): \(losses.count) steps")
    for (step, (got, want)) in zip(losses, reference.losses).enumerated() {
      #expect(abs(got - want) <= relative * abs(want), "\(job) step \(step + 1): \(got) vs NumPy's \(want)")
    }
  }

  /// Every configuration trains the MLP as a NumPy reference (float64,
  /// written apart from Pipemesh's code) does: the same loss at every step,
  /// and the same weights at the end, seen through the logits the job infers.
  /// The losses alone would not see the last step's update, nor an update
  /// off by a little (a learning rate 0.1% off moves no loss by 1e-4).
  @Test func syncPipelinedTrainingMatchesANumPyReference() async throws {
    let mesh = try await Self.mesh.value
    let (inputs, targets) = Self.classification()
    let reference = try await Self.numPyReference(
      Self.mlp, inputs: inputs, targets: targets, epochs: 2, batchSize: 16, learningRate: 0.1, seed: 3)
    #expect(reference.losses.count == 8)
    var coordinators: [Int: RunningService] = [:]
    for stages in [1, 2, 4] {
      coordinators[stages] = try await mesh.coordinator((0..<stages).map { [$0] }, name: "k\(stages)")
    }
    for (stages, microBatches, schedule, recompute) in Self.configurations {
      let job =
        "mlp-k\(stages)-m\(microBatches)-\(Self.name(schedule))\(recompute ? "-recompute" : "")"
      let coordinator = try #require(coordinators[stages])
      let progress = try await Self.train(
        coordinator, job: job, model: Self.mlp, inputs: inputs, targets: targets,
        microBatches: microBatches, schedule: schedule, recompute: recompute)
      Self.expectLosses(of: progress, near: reference, within: 1e-4, job: job)
      #expect(progress.last?.done == true)

      try await Self.expectFinalWeights(
        of: job, on: RPCClient(target: coordinator.endpoint), inputs: inputs, reference: reference)

      // The trace shows the last step that did not flush to the ps (the
      // last step flushes): every action of every stage, and its commit.
      let events = try traceEvents(progress.last?.traceJson ?? "")
      #expect(Set(events.map(\.step)) == [Int64(reference.losses.count - 1)], "\(job)")
      // A forward and a backward per micro-batch (and a weights action under ZB-H1), and a commit.
      let actions = schedule == .scheduleZeroBubbleH1 ? 3 : 2
      let computations = events.filter { $0.category != "transfer" }
      #expect(computations.count == stages * (actions * microBatches + 1), "\(job): \(events.map(\.name))")
      Self.expectCausalTimeline(events, stages: stages, microBatches: microBatches, job: job)
    }
  }

  /// Activations and gradients that travel between the stages as bfloat16
  /// or float16 train the MLP near the exact NumPy reference but not on it:
  /// the rounding on the way is real, and bfloat16's (8 bits of precision)
  /// moves the weights further than float16's (11 bits).
  @Test func activationsAndGradientsTravelRoundedWhenTheJobAsks() async throws {
    let mesh = try await Self.mesh.value
    let (inputs, targets) = Self.classification()
    let reference = try await Self.numPyReference(
      Self.mlp, inputs: inputs, targets: targets, epochs: 2, batchSize: 16, learningRate: 0.1, seed: 3)
    let coordinator = try await mesh.coordinator([[0], [1], [2], [3]], name: "transfer")
    let client = try RPCClient(target: coordinator.endpoint)
    var largestLogitDifference: [Pipemesh_V1_DType: Double] = [:]
    for dtype in [Pipemesh_V1_DType.bfloat16, .float16] {
      let job = "mlp-transfer-\(dtype)"
      let progress = try await Self.train(
        coordinator, job: job, model: Self.mlp, inputs: inputs, targets: targets, microBatches: 4,
        schedule: .scheduleOneFOneB, transferDType: dtype)
      Self.expectLosses(of: progress, near: reference, within: 1e-2, job: job)
      largestLogitDifference[dtype] = try await Self.logitDifferences(
        of: job, on: client, inputs: inputs, reference: reference
      ).max()
    }
    // An exact run ends within 3.6e-7 of NumPy's logits (see expectFinalWeights); these ended
    // 7.7e-4 (bfloat16) and 7.7e-5 (float16) away, of logits up to 1.43.
    let bfloat16 = try #require(largestLogitDifference[.bfloat16])
    let float16 = try #require(largestLogitDifference[.float16])
    #expect(bfloat16 < 0.01 && float16 < 0.01, "\(largestLogitDifference)")
    #expect(float16 > 1e-5 && bfloat16 > 4 * float16, "\(largestLogitDifference)")
  }

  /// Stages that begin inside layers train as the NumPy reference does, under
  /// each schedule and with recomputation: the first layer split after 3 of
  /// its 8 inputs, a hidden one after 8 of 16, the output layer after 5 of 16.
  /// Each stage adds its part of a layer's sums and passes on the inputs it
  /// did not take, and holds only the rows of the layer's weight it uses.
  @Test func stagesBeginningInsideLayersMatchTheNumPyReference() async throws {
    let mesh = try await Self.mesh.value
    let (inputs, targets) = Self.classification()
    let reference = try await Self.numPyReference(
      Self.mlp, inputs: inputs, targets: targets, epochs: 2, batchSize: 16, learningRate: 0.1, seed: 3)
    let coordinator = try await mesh.coordinator((0..<4).map { [$0] }, name: "inside-layers")
    let client = try RPCClient(target: coordinator.endpoint)
    let split = [
      LayerPosition(layer: 0, inputs: 3), LayerPosition(layer: 1, inputs: 8), LayerPosition(layer: 3, inputs: 5),
    ]
    let runs: [(Pipemesh_V1_ScheduleKind, Bool)] = [
      (.scheduleOneFOneB, false), (.scheduleZeroBubbleH1, false), (.scheduleGpipe, true),
    ]
    for (schedule, recompute) in runs {
      let job = "inside-\(Self.name(schedule))\(recompute ? "-recompute" : "")"
      let progress = try await Self.train(
        coordinator, job: job, model: Self.mlp, inputs: inputs, targets: targets, microBatches: 4, schedule: schedule,
        recompute: recompute, splitPoints: split)
      Self.expectLosses(of: progress, near: reference, within: 1e-4, job: job)
      #expect(progress.last?.done == true)
      try await Self.expectFinalWeights(of: job, on: client, inputs: inputs, reference: reference)
      // Each stage held only its rows of a split layer's weight; the model the job registered
      // holds the whole weights, put back together, and computes the reference's logits.
      var file = Data()
      for try await chunk in client.stream(CoordinatorMethods.exportModel, .with { $0.model = job }) {
        file.append(chunk.data)
      }
      let exported = try SafeTensors.decode(file).tensors
      let whole = try makeModel(Self.mlp)
      #expect(Set(exported.keys) == Set(whole.variableDeclarations().map(\.name)), "\(job)")
      let logits = whole(inputs, variables: exported)
      let outside = zip(logits.scalars, reference.logits.values).filter { abs(Double($0) - $1) > 1e-5 + 1e-5 * abs($1) }
      #expect(outside.count == 0, "\(job): logits of the registered weights differ from NumPy's")
      // The job keeps its split, so that a resumed run splits the same way.
      let options = try await client.call(CoordinatorMethods.getJob, .with { $0.job = job }).options
      #expect(options.splitPoints == [0, 1, 3] && options.splitPointInputs == [3, 8, 5], "\(job)")
    }
    // Keeping layers whole, the 4-layer model has no fifth stage; split inside them, it has.
    let five = Pipemesh_V1_PlanRequest.with {
      $0.model = Self.mlp
      $0.stages = 5
      $0.estimate = true
    }
    #expect(try await client.call(CoordinatorMethods.plan, five).stages.count == 5)
    let refused = await #expect(throws: RPCError.self) {
      try await client.call(
        CoordinatorMethods.plan,
        .with {
          $0 = five
          $0.wholeLayers = true
        })
    }
    #expect(refused?.code == .invalidArgument && refused?.message.contains("whole_layers") == true)
    let mismatched = await #expect(throws: RPCError.self) {
      try await client.call(
        CoordinatorMethods.plan,
        .with {
          $0 = five
          $0.stages = 2
          $0.splitPoints = [1]
          $0.splitPointInputs = [2, 2]
        })
    }
    #expect(mismatched?.code == .invalidArgument && mismatched?.message.contains("split_point_inputs") == true)
  }

  /// PipeDream-2BW trains as the NumPy reference does when each step's loss
  /// and gradient are taken at the weights from before the step before's
  /// update, and applied to the newest: one step behind, on 2 and 4 stages,
  /// keeping activations or recomputing them from the stashed weights. The
  /// pipeline drains at each epoch's end (4 steps), so the step after runs on
  /// the newest weights. Plain SGD's reference differs, so the check sees a
  /// stage that ran a step on the wrong version.
  @Test func pipeDream2BWTrainsOneStepBehindAsTheNumPyReference() async throws {
    let mesh = try await Self.mesh.value
    let (inputs, targets) = Self.classification()
    let stepsPerEpoch = 64 / 16
    // Steps from 1: the first of an epoch begins alone (after a drain), on the newest weights;
    // each other one beside the step before it, on the weights before that one's update.
    let weightsAfter = (1...8).map { step in (step - 1) % stepsPerEpoch == 0 ? step - 1 : step - 2 }
    #expect(weightsAfter == [0, 0, 1, 2, 4, 4, 5, 6])
    let reference = try await Self.numPyReference(
      Self.mlp, inputs: inputs, targets: targets, epochs: 2, batchSize: 16, learningRate: 0.1, seed: 3,
      weightsAfter: weightsAfter)
    let plain = try await Self.numPyReference(
      Self.mlp, inputs: inputs, targets: targets, epochs: 2, batchSize: 16, learningRate: 0.1, seed: 3)
    let stale = zip(reference.losses, plain.losses).filter { (twoBW: Double, sgd: Double) in
      abs(twoBW - sgd) > 1e-3 * abs(sgd)
    }
    #expect(stale.count >= 4, "\(reference.losses) against plain SGD's \(plain.losses)")
    for (stages, recompute) in [(2, false), (4, false), (4, true)] {
      let coordinator = try await mesh.coordinator((0..<stages).map { [$0] }, name: "2bw-k\(stages)\(recompute)")
      let job = "mlp-k\(stages)-2bw\(recompute ? "-recompute" : "")"
      let progress = try await Self.train(
        coordinator, job: job, model: Self.mlp, inputs: inputs, targets: targets, microBatches: 4,
        schedule: .schedulePipedream2Bw, recompute: recompute)
      Self.expectLosses(of: progress, near: reference, within: 1e-4, job: job)
      let steps: [Int64] = progress.filter { !$0.done && !$0.evaluated }.map(\.step)
      #expect(steps == Array(1...8), "\(job): steps reported in order")
      #expect(progress.last?.done == true)
      try await Self.expectFinalWeights(
        of: job, on: RPCClient(target: coordinator.endpoint), inputs: inputs, reference: reference)
    }

    // Two sync replicas of 2 stages (16 examples each, a step of 32): their stages push to the
    // ps and pull the new values instead of updating themselves, and keep the version before.
    let replicated = try await Self.numPyReference(
      Self.mlp, inputs: inputs, targets: targets, epochs: 2, batchSize: 32, learningRate: 0.1, seed: 3,
      weightsAfter: [0, 0, 2, 2])
    let coordinator = try await mesh.coordinator([[0, 1], [2, 3]], name: "2bw-replicas")
    let progress = try await Self.train(
      coordinator, job: "mlp-k2-r2-2bw", model: Self.mlp, inputs: inputs, targets: targets, microBatches: 2,
      schedule: .schedulePipedream2Bw)
    let losses = progress.filter { !$0.done && !$0.evaluated }.map(\.loss)
    #expect(losses.count == replicated.losses.count, "\(losses.count) steps of 2 replicas")
    for (step, (got, want)) in zip(losses, replicated.losses).enumerated() {
      #expect(abs(got - want) <= 1e-4 * abs(want), "2 replicas, step \(step + 1): \(got) vs NumPy's \(want)")
    }
    try await Self.expectFinalWeights(
      of: "mlp-k2-r2-2bw", on: RPCClient(target: coordinator.endpoint), inputs: inputs, reference: replicated)
  }

  /// The merged timeline of a step is one that could have happened: no two
  /// slices overlap on a track; a micro-batch's forward on stage k+1 starts
  /// after it ended on stage k, with the activation's transfer in between;
  /// a backward starts after its gradient came from stage k+1.
  static func expectCausalTimeline(_ events: [TraceEvent], stages: Int, microBatches: Int, job: String) {
    for track in Dictionary(grouping: events, by: { [$0.replica, $0.thread] }).values {
      let slices = track.sorted { $0.start < $1.start }
      for (earlier, later) in zip(slices, slices.dropFirst()) {
        // Microseconds from nanoseconds: equal ends and starts may differ by rounding.
        #expect(earlier.end <= later.start + 1e-3, "\(job): \(earlier) overlaps \(later)")
      }
    }
    func slice(_ name: String, stage: Int, _ category: String) -> TraceEvent? {
      let found = events.filter { $0.name == name && $0.stage == stage && $0.category == category }
      #expect(found.count == 1, "\(job): \(found.count) slices \(name) (\(category)) on stage \(stage)")
      return found.first
    }
    for microBatch in 0..<microBatches {
      for stage in 1..<max(stages, 1) {
        guard let before = slice("F\(microBatch)", stage: stage - 1, "forward"),
          let after = slice("F\(microBatch)", stage: stage, "forward"),
          let transfer = slice("F\(microBatch) input", stage: stage, "transfer")
        else { continue }
        #expect(
          before.end <= transfer.start + 1e-3 && transfer.end <= after.start + 1e-3,
          "\(job): \(before) \(transfer) \(after)")
        guard let upstream = slice("B\(microBatch)", stage: stage, "backward"),
          let gradient = slice("B\(microBatch) gradient", stage: stage - 1, "transfer"),
          let backward = slice("B\(microBatch)", stage: stage - 1, "backward")
        else { continue }
        #expect(
          upstream.start <= gradient.start + 1e-3 && gradient.end <= backward.start + 1e-3,
          "\(job): \(upstream) \(gradient) \(backward)")
      }
    }
  }

  /// What Tests/reference/mlp_sgd.py reads and writes (its docstring
  /// describes the fields).
  enum NumPyReference {
    struct Values: Codable {
      var shape: [Int]
      var values: [Double]

      init(shape: [Int], values: [Double]) {
        self.shape = shape
        self.values = values
      }

      init(_ tensor: Tensor) { self.init(shape: tensor.shape, values: tensor.scalars.map(Double.init)) }
    }

    struct Layer: Codable {
      var kernel: String
      var bias: String
      var activation: String
    }

    struct Input: Codable {
      var inputs: Values
      var labels: [Int]
      var layers: [Layer]
      var variables: [String: Values]
      var learningRate: Double
      var l2: Double
      var steps: [[Int]]
      /// For each step, after how many steps' updates the weights it runs on are (nil: the newest).
      var weightsAfter: [Int]?

      enum CodingKeys: String, CodingKey {
        case inputs, labels, layers, variables, l2, steps
        case learningRate = "learning_rate"
        case weightsAfter = "weights_after"
      }
    }

    struct Output: Codable {
      var losses: [Double]
      var variables: [String: Values]
      var logits: Values
    }
  }

  /// Trains `spec` (Dense layers, softmax cross-entropy) with plain SGD in
  /// NumPy, by Tests/reference/mlp_sgd.py: from the initial values the mesh
  /// starts from, on the examples in the coordinator's order.
  /// With `weightsAfter`, each step runs on the weights after that many
  /// steps' updates (PipeDream-2BW's stale weights).
  static func numPyReference(
    _ spec: Pipemesh_V1_ModelSpec, inputs: Tensor, targets: Tensor, epochs: Int, batchSize: Int,
    learningRate: Float, seed: UInt64, weightsAfter: [Int]? = nil
  ) async throws -> NumPyReference.Output {
    let model = try makeModel(spec)
    let layers = try model.layers.map { layer in
      let dense = try #require(layer as? Dense, "\(layer.name) is not a Dense layer")
      let activation = try #require(
        [Activation.tanh: "tanh", .linear: "none"][dense.activation], "\(dense.name) has \(dense.activation)")
      return NumPyReference.Layer(kernel: "\(dense.name)/kernel", bias: "\(dense.name)/bias", activation: activation)
    }
    // A stage registers its variables with the ps with the initial values
    // `VariableDeclaration.definition(seed:optimizer:)` draws: the
    // declaration's initializer with the seed derived from the model's seed
    // and the name, as `initialVariables()` draws them.
    let variables = model.initialVariables()
    for layer in layers {
      #expect(variables[layer.kernel] != nil && variables[layer.bias] != nil, "\(layer)")
    }
    // The order of `TrainingJob` with one replica: the training split, then
    // per epoch (1-based there) a permutation of it cut into batches.
    let train = PortableRandom.heldOutSplit(count: inputs.shape[0], validationFraction: 0, seed: seed).train
    var steps: [[Int]] = []
    for epoch in 1...epochs {
      let order = PortableRandom.permutation(train.count, seed: PortableRandom.epochSeed(seed, epoch: epoch - 1))
      for step in 0..<(train.count / batchSize) {
        steps.append(order[(step * batchSize)..<((step + 1) * batchSize)].map { train[$0] })
      }
    }
    let input = NumPyReference.Input(
      inputs: .init(inputs), labels: targets.scalars.map { Int($0) }, layers: layers,
      variables: variables.mapValues { NumPyReference.Values($0) }, learningRate: Double(learningRate),
      l2: Double(spec.loss.l2), steps: steps, weightsAfter: weightsAfter)

    let directory = try TemporaryDirectory(prefix: "pipemesh-numpy")
    try JSONEncoder().encode(input).write(to: URL(fileURLWithPath: directory.file("in.json")))
    try await run(
      try PythonInterop.findPython(),
      [Repository.path("Tests/reference/mlp_sgd.py"), directory.file("in.json"), directory.file("out.json")])
    return try JSONDecoder().decode(
      NumPyReference.Output.self, from: Data(contentsOf: URL(fileURLWithPath: directory.file("out.json"))))
  }

  /// Checks `job`'s final weights against the NumPy reference's, through the
  /// logits the job infers for `inputs`.
  static func expectFinalWeights(
    of job: String, on coordinator: any RPCChannel, inputs: Tensor, reference: NumPyReference.Output
  ) async throws {
    // The final weights, through the job's logits for all 64 inputs. In
    // float32 against float64 they differ by a few float32 ulps: a float32
    // copy of the reference (full batch, or 2, 4 or 16 micro-batches)
    // ends at most 3.6e-7 from NumPy's logits (which reach 1.43), a fiftieth
    // of this bound. A learning rate 0.1% off ends 6.3e-4 away, no L2
    // 2.5e-3, and one example of the last step left out 3.8e-2.
    let differences = try await logitDifferences(of: job, on: coordinator, inputs: inputs, reference: reference)
    let outside = zip(differences, reference.logits.values).enumerated().filter { _, pair in
      pair.0 > 1e-5 + 1e-5 * abs(pair.1)
    }
    let largest = differences.max() ?? 0
    #expect(
      outside.isEmpty,
      """
      \(job): \(outside.count) logits differ from NumPy's by more than 1e-5 + 1e-5·|logit|, at most by \
      \(largest); first (index, (difference, NumPy)): \(outside.prefix(3))
      """)
  }

  /// How far each logit `job` infers for `inputs` is from the reference's.
  static func logitDifferences(
    of job: String, on coordinator: any RPCChannel, inputs: Tensor, reference: NumPyReference.Output
  ) async throws -> [Double] {
    let inferred = try await coordinator.call(
      CoordinatorMethods.infer,
      .with {
        $0.job = job
        $0.inputs = Pipemesh_V1_Tensor(inputs)
      })
    let logits = try Tensor(wire: inferred.outputs, what: "\(job)'s logits")
    #expect(logits.shape == reference.logits.shape, "\(job)")
    return zip(logits.scalars, reference.logits.values).map { abs(Double($0) - $1) }
  }

  /// The first and last layers share one variable across two stages.
  @Test func tiedWeightsAcrossStagesMatchInProcessTraining() async throws {
    let mesh = try await Self.mesh.value
    let model = Pipemesh_V1_ModelSpec.with {
      $0.inputShape = [4]
      $0.seed = 21
      $0.layers = [
        .with {
          $0.name = "embed"
          $0.embedding = .with {
            $0.vocabularySize = 10
            $0.dimension = 8
          }
        },
        .with {
          $0.dense = .with {
            $0.units = 8
            $0.activation = .tanh
          }
        },
        .with {
          $0.dense = .with {
            $0.units = 8
            $0.activation = .tanh
          }
        },
        .with { $0.dense = .with { $0.tiedTo = "embedding0" } },
      ]
      $0.loss = .with { $0.softmaxCrossEntropy = .init() }
    }
    let (inputs, targets) = Self.successorTokens(rows: 48, length: 4, vocabulary: 10, seed: 9)
    let built = try makeModel(model)
    let expected = try await onOwnThread {
      var reference = InProcessReference(model: built, learningRate: 0.5)
      return reference.train(inputs: inputs, targets: targets, epochs: 2, batchSize: 12, seed: 3)
    }
    let coordinator = try await mesh.coordinator([[0], [1]], name: "tied")
    let progress = try await Self.train(
      coordinator, job: "tied", model: model, inputs: inputs, targets: targets, microBatches: 3,
      schedule: .scheduleOneFOneB, epochs: 2, batchSize: 12, learningRate: 0.5)
    let losses = progress.filter { !$0.done && !$0.evaluated }.map(\.loss)
    #expect(losses.count == expected.count)
    for (step, (got, want)) in zip(losses, expected).enumerated() {
      #expect(abs(got - Double(want)) <= 1e-4 * abs(Double(want)), "step \(step + 1): \(got) vs \(want)")
    }
    #expect(try #require(losses.last) < #require(losses.first))
  }

  /// An LSTM split between three stages at its time steps (the middle stage
  /// runs steps 2–4 from the states it receives) trains as in-process
  /// training does: the stages' shares of its weights' gradients add up on
  /// the ps to what backpropagation through time gives in one process.
  @Test func anLSTMSplitAtItsTimeStepsMatchesInProcessTraining() async throws {
    let mesh = try await Self.mesh.value
    let model = Pipemesh_V1_ModelSpec.with {
      $0.inputShape = [6]
      $0.seed = 13
      $0.layers = [
        .with {
          $0.embedding = .with {
            $0.vocabularySize = 10
            $0.dimension = 6
          }
        },
        .with {
          $0.lstm = .with {
            $0.units = 8
            $0.returnSequences = true
          }
        },
        .with { $0.dense = .with { $0.units = 10 } },
      ]
      $0.loss = .with { $0.softmaxCrossEntropy = .init() }
    }
    try await Self.expectSplitTrainsAsInProcess(
      model, job: "lstm-steps", at: [LayerPosition(layer: 1, inputs: 2), LayerPosition(layer: 1, inputs: 5)], on: mesh)
  }

  /// A Transformer language model split between its block's attention and
  /// its MLP, inside its MLP (after 5 of its 16 hidden units), or at both
  /// (three stages) trains as in-process training does.
  @Test(arguments: [
    [LayerPosition(layer: 1, inputs: 1)], [LayerPosition(layer: 1, inputs: 6)],
    [LayerPosition(layer: 1, inputs: 1), LayerPosition(layer: 1, inputs: 9)],
  ])
  func aTransformerSplitAtItsUnitsMatchesInProcessTraining(_ places: [LayerPosition]) async throws {
    let mesh = try await Self.mesh.value
    let model = Self.transformerLanguageModel(vocabulary: 10, seed: 17)
    try await Self.expectSplitTrainsAsInProcess(
      model, job: "transformer-at-" + places.map { "\($0.inputs)" }.joined(separator: "-"), at: places, on: mesh)
  }

  /// A language model over 6 positions: an embedding of `vocabulary` tokens
  /// in 8 features with learned positions, a Transformer block of 2 heads,
  /// a layer norm when asked, and a dense head over the tokens.
  static func transformerLanguageModel(vocabulary: Int64, seed: UInt64, layerNorm: Bool = false)
    -> Pipemesh_V1_ModelSpec
  {
    .with {
      $0.inputShape = [6]
      $0.seed = seed
      $0.layers = [
        .with {
          $0.embedding = .with {
            $0.vocabularySize = vocabulary
            $0.dimension = 8
            $0.positions = .learned
          }
        },
        .with {
          $0.transformerBlock = .with {
            $0.heads = 2
            $0.mlpHidden = 16
          }
        },
      ]
      if layerNorm { $0.layers.append(.with { $0.layerNorm = .init() }) }
      $0.layers.append(.with { $0.dense = .with { $0.units = vocabulary } })
      $0.loss = .with { $0.softmaxCrossEntropy = .init() }
    }
  }

  /// Trains `model`, a language model of 10 tokens over 6 positions, on
  /// stages split at `places` (a partition each), and expects each step's
  /// loss to be in-process training's within 1e-4, and to fall, and the
  /// model the job registers to hold in-process training's final weights.
  static func expectSplitTrainsAsInProcess(
    _ model: Pipemesh_V1_ModelSpec, job: String, at places: [LayerPosition], on mesh: LocalMesh,
    sourceLocation: SourceLocation = #_sourceLocation
  ) async throws {
    let (inputs, targets) = successorTokens(rows: 48, length: 6, vocabulary: 10, seed: 4)
    let built = try makeModel(model)
    let (expected, trained) = try await onOwnThread {
      var reference = InProcessReference(model: built, learningRate: 0.5)
      let losses = reference.train(inputs: inputs, targets: targets, epochs: 2, batchSize: 12, seed: 3)
      return (losses, reference.variables)
    }
    let coordinator = try await mesh.coordinator((0...places.count).map { [$0] }, name: job)
    let progress = try await train(
      coordinator, job: job, model: model, inputs: inputs, targets: targets, microBatches: 3,
      schedule: .scheduleOneFOneB, epochs: 2, batchSize: 12, learningRate: 0.5, splitPoints: places)
    let losses = progress.filter { !$0.done && !$0.evaluated }.map(\.loss)
    try #require(
      losses.count == expected.count && !losses.isEmpty, "\(progress.last.map { "\($0)" } ?? "")",
      sourceLocation: sourceLocation)
    for (step, (got, want)) in zip(losses, expected).enumerated() {
      #expect(
        abs(got - Double(want)) <= 1e-4 * abs(Double(want)), "step \(step + 1): \(got) vs \(want)",
        sourceLocation: sourceLocation)
    }
    #expect(try #require(losses.last) < #require(losses.first), sourceLocation: sourceLocation)
    // The registered model holds the whole weights, put back together from what each stage held
    // (the pieces of a split layer among them).
    var file = Data()
    let client = try RPCClient(target: coordinator.endpoint)
    for try await chunk in client.stream(CoordinatorMethods.exportModel, .with { $0.model = job }) {
      file.append(chunk.data)
    }
    let exported = try SafeTensors.decode(file).tensors
    #expect(Set(exported.keys) == Set(trained.keys), sourceLocation: sourceLocation)
    for (name, want) in trained {
      let got = try #require(exported[name], sourceLocation: sourceLocation)
      let largest = zip(got.scalars, want.scalars).map { abs($0 - $1) / max(1, abs($1)) }.max() ?? .infinity
      #expect(
        got.shape == want.shape && largest <= 1e-4, "\(name) differs by \(largest)", sourceLocation: sourceLocation)
    }
  }

  /// A small Transformer language model (embedding with learned positions,
  /// a Transformer block, layer norm, a dense head) trains under PipeDream-2BW
  /// on 2 stages as in-process training does with each step one step behind
  /// on the weights: the layers beyond Dense stash their weights too.
  @Test func pipeDream2BWTrainsATransformerAsInProcessTrainingOneStepBehind() async throws {
    let mesh = try await Self.mesh.value
    let model = Self.transformerLanguageModel(vocabulary: 12, seed: 5, layerNorm: true)
    let (inputs, targets) = Self.successorTokens(rows: 48, length: 6, vocabulary: 12, seed: 4)
    let built = try makeModel(model)
    // 4 steps an epoch; the first of each begins after a drain, on the newest weights.
    let expected = try await onOwnThread {
      var reference = InProcessReference(model: built, learningRate: 0.3)
      return reference.train(
        inputs: inputs, targets: targets, epochs: 3, batchSize: 12, seed: 3,
        weightsAfter: { step in step % 4 == 0 ? step : step - 1 })
    }
    let plain = try await onOwnThread {
      var reference = InProcessReference(model: built, learningRate: 0.3)
      return reference.train(inputs: inputs, targets: targets, epochs: 3, batchSize: 12, seed: 3)
    }
    // Stale weights change the losses: the check sees a stage that ran a step on the newest.
    #expect(zip(expected, plain).filter { abs($0 - $1) > 1e-3 * abs($1) }.count >= 6, "\(expected) vs \(plain)")
    let coordinator = try await mesh.coordinator([[0], [1]], name: "2bw-transformer")
    let progress = try await Self.train(
      coordinator, job: "transformer-2bw", model: model, inputs: inputs, targets: targets, microBatches: 3,
      schedule: .schedulePipedream2Bw, epochs: 3, batchSize: 12, learningRate: 0.3)
    let losses = progress.filter { !$0.done && !$0.evaluated }.map(\.loss)
    #expect(losses.count == expected.count)
    for (step, (got, want)) in zip(losses, expected).enumerated() {
      #expect(abs(got - Double(want)) <= 1e-4 * abs(Double(want)), "step \(step + 1): \(got) vs \(want)")
    }
  }

  /// Inference activations of up to 256 KiB come back to the coordinator and
  /// go on inline; larger ones go partition to partition. Both give the same
  /// outputs: 4,200 rows at once (16 floats a row at the split, 268,800
  /// bytes) against the same rows 100 at a time.
  @Test func largeAndSmallInferencesTakeTheirOwnPathsToTheSameOutputs() async throws {
    let mesh = try await Self.mesh.value
    let (inputs, targets) = Self.classification()
    let coordinator = try await mesh.coordinator([[0], [1]], name: "paths")
    _ = try await Self.train(
      coordinator, job: "paths", model: Self.mlp, inputs: inputs, targets: targets, microBatches: 2,
      schedule: .scheduleOneFOneB, epochs: 1)
    let client = try RPCClient(target: coordinator.endpoint)
    let many = Tensor.randomNormal([4200, 8], seed: 9)
    func infer(_ rows: Tensor) async throws -> Tensor {
      let answer = try await client.call(
        CoordinatorMethods.infer,
        .with {
          $0.job = "paths"
          $0.inputs = Pipemesh_V1_Tensor(rows)
        })
      return try Tensor(wire: answer.outputs, what: "outputs")
    }
    let whole = try await infer(many)
    var pieces: [Tensor] = []
    for first in stride(from: 0, to: 4200, by: 100) {
      pieces.append(try await infer(many.slice(axis: 0, range: first..<(first + 100))))
    }
    let inPieces = Tensor.concatenate(pieces)
    #expect(whole.shape == [4200, 3] && inPieces.shape == [4200, 3])
    let largest = zip(whole.scalars, inPieces.scalars).map { abs($0 - $1) }.max() ?? .infinity
    #expect(largest < 1e-5, "largest difference \(largest)")
  }

  /// Two pipeline replicas on disjoint shards share variables through the
  /// async ps, and the model still learns.
  @Test func asyncReplicasConverge() async throws {
    let mesh = try await Self.mesh.value
    let (inputs, targets) = Self.classification(count: 256)
    let coordinator = try await mesh.coordinator([[0, 1], [2, 3]], name: "async")
    let progress = try await Self.train(
      coordinator, job: "async-replicas", model: Self.mlp, inputs: inputs, targets: targets, microBatches: 2,
      schedule: .scheduleOneFOneB, consistency: .with { $0.async = .init() }, epochs: 6, batchSize: 16,
      learningRate: 0.1, validation: 0.25)
    let steps = progress.filter { !$0.done && !$0.evaluated }
    let evaluations = progress.filter(\.evaluated)
    #expect(steps.count == 6 * (192 / 32))
    let early = steps.prefix(3).map(\.loss).reduce(0, +) / 3
    let late = steps.suffix(3).map(\.loss).reduce(0, +) / 3
    #expect(late < early * 0.7, "loss went from \(early) to \(late)")
    // Async updates interleave differently every run: judge the last epochs, not one.
    #expect(evaluations.count == 6)
    let best = evaluations.suffix(3).map(\.validationAccuracy).max() ?? 0
    #expect(best > 0.7, "\(evaluations.map(\.validationAccuracy))")
  }
}

/// Requests that once crashed a partition or the coordinator, and job names
/// used twice.
@Suite(.serialized) struct CoordinatorRobustnessTests {
  @Test func aJobNameIsTakenUntilReplaced() async throws {
    let mesh = try await PipelineTrainingTests.mesh.value
    let (inputs, targets) = PipelineTrainingTests.classification()
    let coordinator = try await mesh.coordinator([[0], [1]], name: "rerun")
    func train(replace: Bool) async throws -> [Double] {
      try await PipelineTrainingTests.train(
        coordinator, job: "same-name", model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets,
        microBatches: 2, schedule: .scheduleGpipe, replace: replace
      ).filter { !$0.done && !$0.evaluated }.map(\.loss)
    }
    let first = try await train(replace: false)
    let taken = await #expect(throws: RPCError.self) { _ = try await train(replace: false) }
    #expect(taken?.code == .alreadyExists)
    #expect(taken?.message.contains("replace") == true, "\(String(describing: taken))")
    // Replaced, it trains again from the initial weights: the same losses.
    let second = try await train(replace: true)
    #expect(first.count == 8)
    #expect(zip(first, second).allSatisfy { abs($0 - $1) <= 1e-6 * abs($0) }, "\(first) \(second)")
  }

  @Test func malformedStageAndInferenceRequestsAreRefused() async throws {
    let mesh = try await PipelineTrainingTests.mesh.value
    let partition = try RPCClient(target: mesh.partitions[0].endpoint)
    let reversed = await #expect(throws: RPCError.self) {
      _ = try await partition.call(
        PartitionMethods.loadStage,
        .with {
          $0.job = "reversed"
          $0.model = PipelineTrainingTests.mlp
          $0.firstLayer = 3
          $0.endLayer = 1
          $0.parameterServers = mesh.parameterServers.map(\.endpoint)
        })
    }
    #expect(reversed?.code == .invalidArgument)
    let huge = await #expect(throws: RPCError.self) {
      _ = try await partition.call(
        PartitionMethods.loadStage,
        .with {
          $0.job = "huge"
          $0.model = .with {
            $0.inputShape = [Int64(Int32.max)]
            $0.layers = [.with { $0.dense = .with { $0.units = Int64(Int32.max) } }]
          }
          $0.endLayer = 1
          $0.parameterServers = mesh.parameterServers.map(\.endpoint)
        })
    }
    #expect(huge?.code == .invalidArgument)

    let coordinator = try await mesh.coordinator([[0]], name: "robust")
    let (inputs, targets) = PipelineTrainingTests.classification()
    _ = try await PipelineTrainingTests.train(
      coordinator, job: "to-infer", model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets,
      microBatches: 1, schedule: .scheduleGpipe, epochs: 1)
    let client = try RPCClient(target: coordinator.endpoint)
    let empty = await #expect(throws: RPCError.self) {
      _ = try await client.call(
        CoordinatorMethods.infer,
        .with {
          $0.job = "to-infer"
          $0.inputs = Pipemesh_V1_Tensor(Tensor.zeros([0, 8]))
        })
    }
    #expect(empty?.code == .invalidArgument)
    let outputs = try await client.call(
      CoordinatorMethods.infer,
      .with {
        $0.job = "to-infer"
        $0.inputs = Pipemesh_V1_Tensor(inputs)
        $0.microBatches = 7
      })
    #expect(outputs.outputs.shape == [64, 3])
    let allRunning = mesh.partitions.allSatisfy { $0.process.isRunning }
    #expect(allRunning)
  }

  /// Keys and settings no coordinator sends are refused with the field's
  /// name, and the partition lives on: a negative micro-batch once trapped
  /// in the seed's conversion, and a request's blas_threads changed the
  /// process's BLAS threads.
  @Test func hostileKeysAndSettingsAreRefusedAndThePartitionLives() async throws {
    let mesh = try await PipelineTrainingTests.mesh.value
    let partition = try await Self.loadWholeModel(job: "hostile", mesh: mesh)
    let (inputs, targets) = PipelineTrainingTests.classification(count: 4)
    func forward(
      _ method: UnaryMethod<Pipemesh_V1_ForwardRequest, Pipemesh_V1_ForwardResponse>, step: Int64, microBatch: Int32,
      position: Int32 = 0, input: Pipemesh_V1_TensorSource? = nil
    ) async throws {
      _ = try await partition.call(
        method,
        .with {
          $0.key = .with {
            $0.job = "hostile"
            $0.step = step
            $0.microBatch = microBatch
          }
          $0.input = input ?? .with { $0.inline = Pipemesh_V1_Tensor(inputs) }
          $0.targets = Pipemesh_V1_Tensor(targets)
          $0.batchSize = 4
          $0.schedulePosition = position
        })
    }
    /// A Forward of step 1 whose input is the tensor `key` at `endpoint`.
    func forward(inputAt endpoint: String, key: String) async throws {
      let reference = Pipemesh_V1_TensorReference.with {
        $0.endpoint = endpoint
        $0.key = key
      }
      try await forward(PartitionMethods.forward, step: 1, microBatch: 0, input: .with { $0.reference = reference })
    }
    func load(_ change: @Sendable (inout Pipemesh_V1_LoadStageRequest) -> Void) async throws {
      var request = Pipemesh_V1_LoadStageRequest.with {
        $0.job = "hostile-load"
        $0.model = PipelineTrainingTests.mlp
        $0.endLayer = 4
        $0.parameterServers = mesh.parameterServers.map(\.endpoint)
      }
      change(&request)
      _ = try await partition.call(PartitionMethods.loadStage, request)
    }
    let cases: [(String, () async throws -> Void, String)] = [
      (
        "Forward, micro_batch -1", { try await forward(PartitionMethods.forward, step: 1, microBatch: -1) },
        "key.micro_batch"
      ),
      (
        "Forward, micro_batch Int32.min",
        { try await forward(PartitionMethods.forward, step: 1, microBatch: Int32.min) }, "key.micro_batch"
      ),
      (
        "Infer, micro_batch -1", { try await forward(PartitionMethods.infer, step: -5, microBatch: -1) },
        "key.micro_batch"
      ),
      ("Forward, step 0", { try await forward(PartitionMethods.forward, step: 0, microBatch: 0) }, "key.step"),
      (
        "Forward, step Int64.min", { try await forward(PartitionMethods.forward, step: Int64.min, microBatch: 0) },
        "key.step"
      ),
      (
        "Forward, schedule_position -1",
        { try await forward(PartitionMethods.forward, step: 1, microBatch: 0, position: -1) },
        "schedule_position"
      ),
      (
        "Commit, step -1",
        {
          _ = try await partition.call(
            PartitionMethods.commit,
            .with {
              $0.job = "hostile"
              $0.step = -1
            })
        }, "step"
      ),
      (
        "Commit, gradient_scale 1.5",
        {
          _ = try await partition.call(
            PartitionMethods.commit,
            .with {
              $0.job = "hostile"
              $0.step = 1
              $0.gradientScale = 1.5
            })
        }, "gradient_scale is 1.5"
      ),
      (
        "GradientNorm, step 0",
        {
          _ = try await partition.call(
            PartitionMethods.gradientNorm,
            .with {
              $0.job = "hostile"
              $0.step = 0
            })
        }, "step is 0"
      ),
      (
        "LoadStage, blas_threads 2^31-1", { try await load { $0.blasThreads = .max } },
        "blas_threads is 2147483647; this partition was started with 1"
      ),
      ("LoadStage, replica -1", { try await load { $0.replica = -1 } }, "replica is -1"),
      ("LoadStage, transfer_dtype int64", { try await load { $0.transferDtype = .int64 } }, "transfer_dtype is"),
      (
        "LoadStage, first_layer_inputs -1", { try await load { $0.firstLayerInputs = -1 } },
        "first_layer 0, first_layer_inputs -1, end_layer 4 and end_layer_inputs 0 are no stage of the model"
      ),
      (
        "LoadStage, end_layer_inputs into the model's end",
        {
          try await load {
            $0.endLayerInputs = 3
          }
        }, "end_layer_inputs 3 are no stage"
      ),
      (
        "LoadStage, first_layer_inputs past the layer's inputs",
        {
          try await load {
            $0.firstLayer = 1
            $0.firstLayerInputs = .max
          }
        }, "cannot be split after input 2147483647"
      ),
      (
        "LoadStage, a stage that ends where it begins",
        {
          try await load {
            $0.firstLayer = 1
            $0.firstLayerInputs = 4
            $0.endLayer = 1
            $0.endLayerInputs = 4
          }
        }, "not a non-empty part of the model"
      ),
      (
        "Forward, input at an endpoint outside the job",
        { try await forward(inputAt: "127.0.0.1:1", key: "hostile/1/0/activation") },
        "not one of the job's partitions"
      ),
      (
        "Forward, input by a key that is not a data-plane key",
        { try await forward(inputAt: mesh.partitions[3].endpoint, key: "hostile/01/0/activation") },
        "input.reference.key: key 'hostile/01/0/activation' is not in canonical form"
      ),
      (
        "Forward, no input", { try await forward(PartitionMethods.forward, step: 1, microBatch: 0, input: .init()) },
        "input is missing"
      ),
    ]
    for (what, call, field) in cases {
      let error = await #expect(throws: RPCError.self, "\(what)") { try await call() }
      let expected: RPCError.Code = what.contains("outside the job") ? .permissionDenied : .invalidArgument
      #expect(error?.code == expected, "\(what): \(String(describing: error))")
      #expect(error?.message.contains(field) == true, "\(what): \(String(describing: error))")
    }
    #expect(mesh.partitions[3].process.isRunning, "\(mesh.partitions[3].process.log)")
    // The stage still trains: a whole step goes through.
    try await forward(PartitionMethods.forward, step: 1, microBatch: 0)
    _ = try await partition.call(
      PartitionMethods.backward,
      .with {
        $0.key = .with {
          $0.job = "hostile"
          $0.step = 1
        }
      })
    let committed = try await partition.call(
      PartitionMethods.commit,
      .with {
        $0.job = "hostile"
        $0.step = 1
        $0.flush = true
      })
    #expect(committed.version == 1)
    _ = try await partition.call(PartitionMethods.unloadStage, .with { $0.job = "hostile" })
  }

  /// Non-finite values stop at the stage, on either update path, and an
  /// inference over the stage's activation bound is refused before it runs.
  @Test func nonFiniteGradientsAndOversizedInferencesAreRefused() async throws {
    let mesh = try await PipelineTrainingTests.mesh.value
    let (inputs, _) = PipelineTrainingTests.classification(count: 4)
    let key = Pipemesh_V1_MicroBatchKey.with {
      $0.job = "non-finite"
      $0.step = 1
    }

    // A middle stage: NaN in the output gradient it is sent.
    let (first, _) = try await Self.loadFirstStage(job: "non-finite")
    _ = try await first.call(
      PartitionMethods.forward,
      .with {
        $0.key = key
        $0.input.inline = Pipemesh_V1_Tensor(inputs)
      })
    var gradient = [Float](repeating: 0.5, count: 4 * 16)
    gradient[17] = .nan
    let nanGradient = await #expect(throws: RPCError.self) {
      _ = try await first.call(
        PartitionMethods.backward,
        .with {
          $0.key = key
          $0.outputGradient.inline = Pipemesh_V1_Tensor(Tensor(shape: [4, 16], scalars: gradient))
        })
    }
    #expect(nanGradient?.code == .invalidArgument)
    #expect(
      nanGradient?.message.contains("output gradient holds NaN or infinity") == true,
      "\(String(describing: nanGradient))")
    _ = try await first.call(PartitionMethods.unloadStage, .with { $0.job = "non-finite" })

    // A sole writer that applies its own updates: a linear regression whose
    // outputs, loss and gradients overflow on inputs at the edge of Float.
    let linear = try RPCClient(target: mesh.partitions[3].endpoint)
    _ = try await linear.call(
      PartitionMethods.loadStage,
      .with {
        $0.job = "overflowing"
        $0.model = .with {
          $0.inputShape = [8]
          $0.layers = [.with { $0.dense = .with { $0.units = 1 } }]
          $0.loss = .with { $0.meanSquaredError = .init() }
        }
        $0.endLayer = 1
        $0.parameterServers = mesh.parameterServers.map(\.endpoint)
        $0.consistency = .with { $0.sync = .init() }
      })
    _ = try await linear.call(
      PartitionMethods.forward,
      .with {
        $0.key = .with {
          $0.job = "overflowing"
          $0.step = 1
        }
        $0.input.inline = Pipemesh_V1_Tensor(Tensor.filled([4, 8], with: 3e38))
        $0.targets = Pipemesh_V1_Tensor(Tensor.zeros([4, 1]))
        $0.batchSize = 4
      })
    _ = try await linear.call(
      PartitionMethods.backward,
      .with {
        $0.key = .with {
          $0.job = "overflowing"
          $0.step = 1
        }
      })
    let overflowed = await #expect(throws: RPCError.self) {
      _ = try await linear.call(
        PartitionMethods.commit,
        .with {
          $0.job = "overflowing"
          $0.step = 1
          $0.flush = true
        })
    }
    #expect(overflowed?.code == .invalidArgument)
    #expect(
      overflowed?.message.contains("holds NaN or infinity; nothing was applied") == true,
      "\(String(describing: overflowed))")
    let stats = try await RPCClient(target: mesh.parameterServers[0].endpoint).call(
      ParameterServerMethods.stats, .init())
    #expect(stats.pushesRefusedNonFinite == 0, "the stage refused it before pushing")
    _ = try await linear.call(PartitionMethods.unloadStage, .with { $0.job = "overflowing" })

    // 128 bytes per example at most in flight (a hidden layer's 16 inputs
    // and 16 outputs): 7 examples fit a 944-byte bound, 8 do not.
    let whole = try await Self.loadWholeModel(job: "bounded", mesh: mesh, maxKeptBytes: 59 * 4 * 4)
    let (many, _) = PipelineTrainingTests.classification(count: 8)
    let oversized = await #expect(throws: RPCError.self) {
      _ = try await whole.call(
        PartitionMethods.infer,
        .with {
          $0.key = .with {
            $0.job = "bounded"
            $0.step = -1
          }
          $0.input.inline = Pipemesh_V1_Tensor(many)
        })
    }
    #expect(oversized?.code == .resourceExhausted, "\(String(describing: oversized))")
    let fits = try await whole.call(
      PartitionMethods.infer,
      .with {
        $0.key = .with {
          $0.job = "bounded"
          $0.step = -2
        }
        $0.input.inline = Pipemesh_V1_Tensor(many.slice(axis: 0, range: 0..<7))
      })
    #expect(fits.outputValue.shape == [7, 3])
    _ = try await whole.call(PartitionMethods.unloadStage, .with { $0.job = "bounded" })
  }

  /// A Train request with an option the partitions or the ps would refuse
  /// is refused before anything exists: no job record, no variables on the
  /// ps, no stage on a partition.
  @Test func badTrainOptionsAreRefusedBeforeAnythingIsCreated() async throws {
    // A mesh of its own: other suites' jobs would change the ps's counts.
    let mesh = try await LocalMesh(partitions: 2)
    let coordinator = try await mesh.coordinator([[0], [1]], name: "up-front")
    let client = try RPCClient(target: coordinator.endpoint)
    let ps = try RPCClient(target: mesh.parameterServers[0].endpoint)
    let (inputs, targets) = PipelineTrainingTests.classification()
    let cases: [(String, (inout Pipemesh_V1_TrainRequest) -> Void, RPCError.Code, String)] = [
      (
        "a negative learning rate", { $0.optimizer.learningRate.base = -1 }, .invalidArgument,
        "optimizer: learning_rate.base must be a finite rate above 0, got -1"
      ),
      (
        "a zero learning rate", { $0.optimizer.learningRate.base = 0 }, .invalidArgument,
        "a zero rate trains nothing; leave it unset for 0.01"
      ),
      ("a zero adam epsilon", { $0.optimizer.adam = .with { $0.epsilon = 0 } }, .invalidArgument, "adam.epsilon"),
      ("a NaN clip norm", { $0.optimizer.clipGlobalNorm = .nan }, .invalidArgument, "clip_global_norm"),
      ("adam beta1 of 1", { $0.optimizer.adam = .with { $0.beta1 = 1 } }, .invalidArgument, "beta1"),
      (
        "a cosine minimum above the base",
        {
          $0.optimizer.learningRate.cosine = .with {
            $0.totalSteps = 10
            $0.minimum = 5
          }
        }, .invalidArgument, "minimum"
      ),
      ("an unknown schedule", { $0.schedule = .UNRECOGNIZED(7) }, .invalidArgument, "schedule is 7"),
      (
        "PipeDream-2BW with async consistency",
        {
          $0.schedule = .schedulePipedream2Bw
          $0.consistency.async = .init()
        }, .invalidArgument, "SCHEDULE_PIPEDREAM_2BW needs sync consistency"
      ),
      ("negative micro-batches", { $0.microBatches = -3 }, .invalidArgument, "micro_batches is -3"),
      ("too many micro-batches", { $0.microBatches = .max }, .invalidArgument, "micro_batches is 2147483647"),
      (
        "a negative staleness", { $0.consistency.bounded = .with { $0.maxStaleness = -1 } }, .invalidArgument,
        "consistency: bounded consistency"
      ),
      ("negative checkpoint steps", { $0.checkpoint.everySteps = -1 }, .invalidArgument, "checkpoint.every_steps"),
      ("negative kept bytes", { $0.maxKeptBytes = -1 }, .invalidArgument, "max_kept_bytes"),
      (
        "integer transfers", { $0.transferDtype = .int32 }, .invalidArgument,
        "transfer_dtype is DTYPE_INT32; activations and gradients travel as DTYPE_FLOAT32 (exact)"
      ),
      ("negative restarts", { $0.maxRestarts = -1 }, .invalidArgument, "max_restarts is -1; give 0 to 100"),
      ("too many restarts", { $0.maxRestarts = 101 }, .invalidArgument, "max_restarts is 101"),
      ("negative max replicas", { $0.maxReplicas = -1 }, .invalidArgument, "max_replicas is -1; give 0 (replicas)"),
      ("too many max replicas", { $0.maxReplicas = 4097 }, .invalidArgument, "max_replicas is 4097"),
      (
        "bounded replicas that would not wait",
        {
          ($0.stages, $0.replicas) = (1, 2)
          $0.consistency.bounded = .with { $0.maxStaleness = 1 }
        }, .invalidArgument, "consistency.bounded.wait is false with 2 replicas"
      ),
      (
        "a bounded wait of over a day",
        {
          $0.consistency.bounded = .with {
            $0.wait = true
            $0.waitTimeoutSeconds = 86_401
          }
        }, .invalidArgument, "wait_timeout_seconds is 86401"
      ),
      (
        "max replicas of an async job",
        {
          $0.maxReplicas = 2
          $0.consistency.async = .init()
        }, .invalidArgument, "max_replicas 2 needs sync consistency"
      ),
      (
        "a name over 119 characters", { $0.job = String(repeating: "n", count: 120) }, .invalidArgument,
        "1-119 characters"
      ),
      (
        "an embedding after another layer",
        {
          $0.model.layers.insert(
            .with {
              $0.embedding = .with {
                $0.vocabularySize = 4
                $0.dimension = 2
              }
            }, at: 1)
        }, .invalidArgument, "must be the model's first layer"
      ),
      (
        "attention over 16,384 steps",
        {
          $0.model = .with {
            $0.inputShape = [16384, 4]
            $0.layers = [
              .with {
                $0.transformerBlock = .with {
                  $0.heads = 1
                  $0.mlpHidden = 4
                }
              }
            ]
          }
        }, .invalidArgument, "attention over 16384 steps"
      ),
      (
        "over 2^32 parameters",
        {
          $0.model = .with {
            $0.inputShape = [1 << 15]
            $0.layers = Array(repeating: .with { $0.dense = .with { $0.units = 1 << 15 } }, count: 5)
          }
        }, .invalidArgument, "parameters by layer 3"
      ),
      (
        "checkpoints from a ps without a directory", { $0.checkpoint.atEnd = true }, .failedPrecondition,
        "was started without --checkpoint-dir"
      ),
    ]
    for (what, change, code, phrase) in cases {
      var request = Pipemesh_V1_TrainRequest.inline(
        job: "refused", model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets, epochs: 1, batchSize: 16,
        microBatches: 2, schedule: .scheduleGpipe, learningRate: 0.1)
      change(&request)
      let error = await #expect(throws: RPCError.self, "\(what)") {
        for try await _ in client.stream(CoordinatorMethods.train, request, options: .init(timeout: .seconds(60))) {}
      }
      #expect(error?.code == code, "\(what): \(String(describing: error))")
      #expect(error?.message.contains(phrase) == true, "\(what): \(String(describing: error))")
    }
    let jobs = try await client.call(CoordinatorMethods.listJobs, .init())
    #expect(jobs.jobs.isEmpty, "\(jobs.jobs.map(\.job))")
    // Loading a stage registers its variables: none were.
    #expect(try await ps.call(ParameterServerMethods.stats, .init()).variables == 0)
  }

  /// One micro-batch of 16 keeps 3,776 bytes of activations through the
  /// whole MLP, or only its 512-byte input with recomputation.
  @Test func keptActivationBoundRefusesAndRecomputationFitsUnderIt() async throws {
    let mesh = try await PipelineTrainingTests.mesh.value
    let (inputs, targets) = PipelineTrainingTests.classification()
    let coordinator = try await mesh.coordinator([[0]], name: "bound")
    let error = await #expect(throws: RPCError.self) {
      _ = try await PipelineTrainingTests.train(
        coordinator, job: "over-bound", model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets,
        microBatches: 1, schedule: .scheduleGpipe, epochs: 1, maxKeptBytes: 2000)
    }
    #expect(error?.message.contains("RESOURCE_EXHAUSTED") == true, "\(String(describing: error))")
    #expect(error?.message.contains("recomputation") == true)
    let progress = try await PipelineTrainingTests.train(
      coordinator, job: "recomputed", model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets,
      microBatches: 1, schedule: .scheduleGpipe, epochs: 1, recompute: true, maxKeptBytes: 2000)
    #expect(progress.last?.done == true)
  }

  /// With calls sent ahead, a stage still keeps what its schedule says: under
  /// a bound of two micro-batches per stage, 1F1B on two stages (stage s
  /// keeps at most 2 − s) trains, and GPipe (all four kept) is refused.
  @Test func sentAheadCallsKeepOneFOneBsActivationBound() async throws {
    let mesh = try await PipelineTrainingTests.mesh.value
    let (inputs, targets) = PipelineTrainingTests.classification()
    let coordinator = try await mesh.coordinator([[0], [1]], name: "1f1b-bound")
    let model = try makeModel(PipelineTrainingTests.mlp)
    let plan = try Planner.plan(model, stages: 2)
    // Bytes one micro-batch of 4 examples keeps: the activations at each of the
    // stage's layer boundaries.
    let perMicroBatch = try (0..<2).map { stage -> Int in
      let (cut, layers) = try model.stage(from: plan.bounds[stage], to: plan.bounds[stage + 1])
      let scalars = (layers.lowerBound...layers.upperBound).map { cut.activationShapes[$0].reduce(1, *) }
      return scalars.reduce(0, +) * 4 * 4
    }
    let bound = try Int64(2 * #require(perMicroBatch.max()))
    // The jobs split where the bound was sized, not where the layers' measured times would.
    let split = Array(plan.bounds[1..<2])
    let progress = try await PipelineTrainingTests.train(
      coordinator, job: "1f1b-bounded", model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets,
      microBatches: 4, schedule: .scheduleOneFOneB, epochs: 1, maxKeptBytes: bound, splitPoints: split)
    #expect(progress.last?.done == true)
    let refused = await #expect(throws: RPCError.self) {
      _ = try await PipelineTrainingTests.train(
        coordinator, job: "gpipe-bounded", model: PipelineTrainingTests.mlp, inputs: inputs, targets: targets,
        microBatches: 4, schedule: .scheduleGpipe, epochs: 1, maxKeptBytes: bound, splitPoints: split)
    }
    #expect(refused?.message.contains("RESOURCE_EXHAUSTED") == true, "\(String(describing: refused))")
    // The failed job unloaded its stages (ending its calls still waiting there).
    let afterFailure = await #expect(throws: RPCError.self) {
      _ = try await RPCClient(target: coordinator.endpoint).call(
        CoordinatorMethods.infer,
        .with {
          $0.job = "gpipe-bounded"
          $0.inputs = Pipemesh_V1_Tensor(inputs.slice(axis: 0, range: 0..<2))
        })
    }
    #expect(afterFailure?.code == .failedPrecondition && afterFailure?.message.contains("unloaded") == true)
  }

  /// A stage refuses a forward that names weights it does not hold, or other
  /// weights than the step's other forwards, and goes on with right ones.
  @Test func forwardsNamingWeightsTheStageDoesNotHoldAreRefused() async throws {
    // Partition logic: one process, no sockets.
    let mesh = try InProcessMesh(stages: 1)
    let job = "stash-refusals"
    let partition = try await Self.loadWholeModel(job: job, mesh: mesh)
    let (inputs, targets, first) = Self.firstMicroBatch(of: job)
    func forward(step: Int64, _ microBatch: Int32, weightsAfter: Int64) async throws {
      var request = Self.forwardRequest(first, inputs, targets)
      request.key.step = step
      request.key.microBatch = microBatch
      request.batchSize = Int32(inputs.shape[0] * 2)
      request.weightsAfterStep = weightsAfter
      _ = try await partition.call(PartitionMethods.forward, request)
    }
    // The first names the weights the stage was loaded with (those after step 0 here).
    try await forward(step: 1, 0, weightsAfter: 0)
    let unheld = await #expect(throws: RPCError.self) { try await forward(step: 1, 1, weightsAfter: 3) }
    #expect(unheld?.code == .failedPrecondition, "\(String(describing: unheld))")
    #expect(unheld?.message.contains("weights_after_step is 3 for step 1") == true, "\(String(describing: unheld))")
    #expect(unheld?.message.contains("after steps [0] only") == true, "\(String(describing: unheld))")
    // Step 1 commits: the stage holds the weights after steps 0 and 1.
    var backward = Pipemesh_V1_BackwardRequest()
    backward.key = first
    _ = try await partition.call(PartitionMethods.backward, backward)
    _ = try await partition.call(
      PartitionMethods.commit,
      .with {
        $0.job = job
        $0.step = 1
      })
    try await forward(step: 2, 0, weightsAfter: 0)
    let mixed = await #expect(throws: RPCError.self) { try await forward(step: 2, 1, weightsAfter: 1) }
    #expect(mixed?.code == .invalidArgument, "\(String(describing: mixed))")
    #expect(mixed?.message.contains("another forward of step 2 named 0") == true, "\(String(describing: mixed))")
    try await forward(step: 2, 1, weightsAfter: 0)
    _ = try await partition.call(PartitionMethods.unloadStage, .with { $0.job = job })
  }

  /// Forward, Backward and Commit sent twice each, as after retries, change
  /// the variables once: they end up equal to one step of SGD in-process.
  @Test func retriedRequestsAreAppliedOnce() async throws {
    // Partition logic: one process, no sockets.
    let mesh = try InProcessMesh(stages: 1)
    let partition = try await Self.loadWholeModel(job: "retried", mesh: mesh)
    let (inputs, targets, key) = Self.firstMicroBatch(of: "retried")
    var losses: [Double] = []
    for _ in 0..<2 {
      losses.append(
        try await partition.call(
          PartitionMethods.forward,
          Self.forwardRequest(key, inputs, targets)
        ).loss)
    }
    #expect(losses[0] == losses[1])
    for _ in 0..<2 { _ = try await partition.call(PartitionMethods.backward, .with { $0.key = key }) }
    for _ in 0..<2 {
      _ = try await partition.call(
        PartitionMethods.commit,
        .with {
          $0.job = "retried"
          $0.step = 1
          $0.flush = true
        })
    }
    // After the commit, the step is closed: a late Forward is refused rather
    // than computed again, and a wait for one of its tensors ends at once.
    let late = await #expect(throws: RPCError.self) {
      _ = try await partition.call(
        PartitionMethods.forward,
        Self.forwardRequest(key, inputs, targets))
    }
    #expect(
      late?.code == .failedPrecondition && late?.message.contains("already committed") == true,
      "\(String(describing: late))")
    let dropped = await #expect(throws: RPCError.self) {
      _ = try await DataPlane.fetch(
        from: partition,
        .with {
          $0.key = DataPlaneKey(key, .activation).wire
          $0.release = true
          $0.wait = true
        },
        options: .init(timeout: .seconds(30)))
    }
    #expect(dropped?.code == .aborted, "\(String(describing: dropped))")

    try await Self.expectOneSGDStep(job: "retried", inputs: inputs, targets: targets, mesh: mesh)
  }

  /// A backward with weights_later holds the weight gradients until its
  /// BackwardWeights call: a Commit before it is refused, a BackwardWeights
  /// with nothing held is refused, a retried one is applied once, and the
  /// step is then exactly one SGD step.
  @Test func heldWeightGradientsWaitForTheirCallAndAreAppliedOnce() async throws {
    // Partition logic: one process, no sockets.
    let mesh = try InProcessMesh(stages: 1)
    let partition = try await Self.loadWholeModel(job: "split", mesh: mesh)
    let (inputs, targets, key) = Self.firstMicroBatch(of: "split")
    _ = try await partition.call(
      PartitionMethods.forward,
      Self.forwardRequest(key, inputs, targets))
    let nothingHeld = await #expect(throws: RPCError.self) {
      _ = try await partition.call(PartitionMethods.backwardWeights, .with { $0.key = key })
    }
    #expect(nothingHeld?.code == .failedPrecondition, "\(String(describing: nothingHeld))")
    _ = try await partition.call(
      PartitionMethods.backward,
      .with {
        $0.key = key
        $0.weightsLater = true
      })
    let commit = Pipemesh_V1_CommitRequest.with {
      $0.job = "split"
      $0.step = 1
      $0.flush = true
    }
    let early = await #expect(throws: RPCError.self) { _ = try await partition.call(PartitionMethods.commit, commit) }
    #expect(
      early?.code == .failedPrecondition && early?.message.contains("BackwardWeights") == true,
      "\(String(describing: early))")
    let norm = Pipemesh_V1_GradientNormRequest.with {
      $0.job = "split"
      $0.step = 1
    }
    let unmeasured = await #expect(throws: RPCError.self) {
      _ = try await partition.call(PartitionMethods.gradientNorm, norm)
    }
    #expect(
      unmeasured?.code == .failedPrecondition && unmeasured?.message.contains("BackwardWeights") == true,
      "\(String(describing: unmeasured))")
    for _ in 0..<2 { _ = try await partition.call(PartitionMethods.backwardWeights, .with { $0.key = key }) }
    let squares = try await partition.call(PartitionMethods.gradientNorm, norm).sumOfSquares
    #expect(squares.isFinite && squares > 0, "\(squares)")
    _ = try await partition.call(PartitionMethods.commit, commit)
    try await Self.expectOneSGDStep(job: "split", inputs: inputs, targets: targets, mesh: mesh)
  }

  /// A Commit sent again (its first answer lost) is answered from the first
  /// one's result while the partition keeps it, for the step before the
  /// newest too (under overlapping steps its repeat may come after the next
  /// step's commit), and refused once older than that: nothing is applied
  /// twice and the weights never step back.
  @Test func aRepeatedCommitIsAnsweredOnceAndNeverStepsTheWeightsBack() async throws {
    // Partition logic: one process, no sockets.
    let mesh = try InProcessMesh(stages: 1)
    let partition = try await Self.loadWholeModel(job: "again", mesh: mesh)
    let (inputs, targets, first) = Self.firstMicroBatch(of: "again")
    func commit(_ step: Int64) async throws -> Pipemesh_V1_CommitResponse {
      try await partition.call(
        PartitionMethods.commit,
        .with {
          $0.job = "again"
          $0.step = step
          $0.flush = true
        })
    }
    var answers: [Int64: Pipemesh_V1_CommitResponse] = [:]
    for step in Int64(1)...3 {
      var key = first
      key.step = step
      _ = try await partition.call(PartitionMethods.forward, Self.forwardRequest(key, inputs, targets))
      _ = try await partition.call(PartitionMethods.backward, .with { $0.key = key })
      answers[step] = try await commit(step)
    }
    let ps = try ParameterServerClient(endpoints: mesh.parameterServerEndpoints, dialer: mesh.psDialer)
    let names = try makeModel(PipelineTrainingTests.mlp).initialVariables().keys.sorted()
    let afterThree = try await ps.pull(job: "again", names: names)
    #expect(afterThree.values.allSatisfy { $0.version == 3 }, "\(afterThree.mapValues(\.version))")

    for step in Int64(2)...3 {
      let repeated = try await commit(step)
      #expect(repeated.version == answers[step]?.version && repeated.penalty == answers[step]?.penalty)
    }
    let stale = await #expect(throws: RPCError.self) { _ = try await commit(1) }
    #expect(
      stale?.code == .failedPrecondition && stale?.message.contains("already committed") == true,
      "\(String(describing: stale))")
    let after = try await ps.pull(job: "again", names: names)
    for name in names {
      let (value, expected) = (try #require(after[name]?.value), try #require(afterThree[name]?.value))
      #expect(after[name]?.version == 3 && value.scalars == expected.scalars, "\(name)")
    }
  }

  /// Calls that arrive before their schedule position waits for the earlier
  /// ones: a Backward sent first waits for its Forward (instead of failing),
  /// and with room for one kept micro-batch, 1F1B's order F0 B0 F1 B1 fits
  /// whatever order the calls arrive in.
  @Test func callsSentAheadComputeInScheduleOrder() async throws {
    // Partition logic: one process, no sockets.
    let mesh = try InProcessMesh(stages: 1)
    // Room for the activations at the stage's five layer boundaries
    // (8+16+16+16+3 scalars) of one micro-batch of 4 examples.
    let partition = try await Self.loadWholeModel(job: "ordered", mesh: mesh, maxKeptBytes: 59 * 4 * 4)
    let (allInputs, allTargets) = PipelineTrainingTests.classification()
    let inputs = allInputs.slice(axis: 0, range: 0..<8)
    let targets = allTargets.slice(axis: 0, range: 0..<8)
    func key(_ microBatch: Int32) -> Pipemesh_V1_MicroBatchKey {
      .with {
        $0.job = "ordered"
        $0.step = 1
        $0.microBatch = microBatch
      }
    }
    func forward(_ microBatch: Int32, position: Int32) async throws -> Pipemesh_V1_ForwardResponse {
      let rows = Int(microBatch) * 4..<Int(microBatch + 1) * 4
      return try await partition.call(
        PartitionMethods.forward,
        .with {
          $0.key = key(microBatch)
          $0.input.inline = Pipemesh_V1_Tensor(inputs.slice(axis: 0, range: rows))
          $0.targets = Pipemesh_V1_Tensor(targets.slice(axis: 0, range: rows))
          $0.batchSize = 8
          $0.schedulePosition = position
        })
    }
    func backward(_ microBatch: Int32, position: Int32, timeout: Duration? = nil) async throws
      -> Pipemesh_V1_BackwardResponse
    {
      try await partition.call(
        PartitionMethods.backward,
        .with {
          $0.key = key(microBatch)
          $0.schedulePosition = position
        }, options: .init(timeout: timeout))
    }

    // Computed at once, B0 would fail: its forward has not run. It waits.
    let early = await #expect(throws: RPCError.self) {
      _ = try await backward(0, position: 2, timeout: .milliseconds(300))
    }
    #expect(early?.code == .deadlineExceeded, "\(String(describing: early))")
    // F1 and B1 sent before F0; F1 would not fit before B0 frees F0's bytes.
    async let second = forward(1, position: 3)
    async let secondBackward = backward(1, position: 4)
    let first = try await forward(0, position: 1)
    let firstBackward = try await backward(0, position: 2)  // the retry of the early call
    let (secondForward, secondBackwardAnswer) = try await (second, secondBackward)
    // Computed in schedule order, each before it was answered, as the partition's own timings
    // tell; after its call came, but for the repeated B0, which may report the first call's work.
    let timings = [first.timing, firstBackward.timing, secondForward.timing, secondBackwardAnswer.timing]
    for (index, timing) in timings.enumerated() {
      #expect(timing.computeSeconds > 0)
      #expect(index == 1 || timing.receivedUnixNanos <= timing.computeStartedUnixNanos)
      #expect(timing.computeEndedUnixNanos <= timing.answeredUnixNanos)
    }
    for (earlier, later) in zip(timings, timings.dropFirst()) {
      #expect(earlier.computeEndedUnixNanos <= later.computeStartedUnixNanos, "\(timings)")
    }
    try await Self.commitFirstStep(of: "ordered", on: partition)
    try await Self.expectOneSGDStep(job: "ordered", inputs: inputs, targets: targets, mesh: mesh)
  }

  /// A call waiting for its turn stops waiting once its caller gives up on
  /// it (it would otherwise stay parked, holding its input, until its turn
  /// came or the job was unloaded), and a repeat computes it once, afresh.
  @Test func aCallWhoseCallerGaveUpStopsWaitingForItsTurn() async throws {
    let mesh = try InProcessMesh(stages: 1)
    let partition = try await Self.loadWholeModel(job: "repeated", mesh: mesh)
    let activity = try #require(mesh.partitionActivity[mesh.partitions[0][0]])
    let (allInputs, allTargets) = PipelineTrainingTests.classification()
    let inputs = allInputs.slice(axis: 0, range: 0..<4)
    let targets = allTargets.slice(axis: 0, range: 0..<4)
    let key = Pipemesh_V1_MicroBatchKey.with {
      $0.job = "repeated"
      $0.step = 1
      $0.microBatch = 0
    }
    func backward(timeout: Duration? = nil) async throws -> Pipemesh_V1_BackwardResponse {
      try await partition.call(
        PartitionMethods.backward,
        .with {
          $0.key = key
          $0.schedulePosition = 2
        }, options: .init(timeout: timeout))
    }
    func waitingCalls(toBe wanted: Int) async throws {
      let deadline = ContinuousClock.now + .seconds(10)
      while activity.snapshot.callsWaitingForTurn != wanted, ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(10))
      }
      #expect(activity.snapshot.callsWaitingForTurn == wanted)
    }
    // B0 waits for F0, which has not come, until its caller gives up: then it waits no more.
    let early = await #expect(throws: RPCError.self) { _ = try await backward(timeout: .milliseconds(300)) }
    #expect(early?.code == .deadlineExceeded, "\(String(describing: early))")
    try await waitingCalls(toBe: 0)
    // A repeat waits again, and runs once F0 has.
    async let repeated = backward()
    try await waitingCalls(toBe: 1)
    _ = try await partition.call(
      PartitionMethods.forward,
      .with {
        $0.key = key
        $0.input.inline = Pipemesh_V1_Tensor(inputs)
        $0.targets = Pipemesh_V1_Tensor(targets)
        $0.batchSize = 4
        $0.schedulePosition = 1
      })
    let answered = try await repeated
    #expect(answered.timing.computeSeconds > 0)
    try await waitingCalls(toBe: 0)
    try await Self.commitFirstStep(of: "repeated", on: partition)
    // One backward's gradients, applied once.
    try await Self.expectOneSGDStep(job: "repeated", inputs: inputs, targets: targets, mesh: mesh)
  }

  /// A fetch may name a tensor before the stage produced it: with `wait` it
  /// is answered once the Forward offers it, without it NOT_FOUND comes at
  /// once, and a wait ends when the job is unloaded instead of hanging.
  @Test func aFetchWaitsForTheTensorItNames() async throws {
    let (partition, dataPlane) = try await Self.loadFirstStage(job: "waited")
    func key(_ microBatch: Int32) -> Pipemesh_V1_MicroBatchKey {
      .with {
        $0.job = "waited"
        $0.step = 1
        $0.microBatch = microBatch
      }
    }
    func fetch(_ microBatch: Int32, wait: Bool) async throws -> Tensor {
      try await DataPlane.fetch(
        from: dataPlane,
        .with {
          $0.key = DataPlaneKey(key(microBatch), .activation).wire
          $0.release = true
          $0.wait = wait
        },
        options: .init(timeout: .seconds(30)))
    }

    let notYet = await #expect(throws: RPCError.self) { _ = try await fetch(0, wait: false) }
    #expect(notYet?.code == .notFound)
    async let waited = fetch(0, wait: true)
    let (inputs, _) = PipelineTrainingTests.classification()
    let forward = try await partition.call(
      PartitionMethods.forward,
      .with {
        $0.key = key(0)
        $0.input.inline = Pipemesh_V1_Tensor(inputs.slice(axis: 0, range: 0..<4))
        $0.schedulePosition = 1
      })
    #expect(forward.output.key == DataPlaneKey(key(0), .activation).wire)
    #expect(try await waited.shape == [4, 16])

    let abandoned = Task { try await fetch(1, wait: true) }
    _ = try await partition.call(PartitionMethods.unloadStage, .with { $0.job = "waited" })
    // Ended by the unload (ABORTED), or refused after it (FAILED_PRECONDITION).
    let ended = await #expect(throws: RPCError.self) { _ = try await abandoned.value }
    #expect(ended?.code == .aborted || ended?.code == .failedPrecondition, "\(String(describing: ended))")
  }

  /// A stage commits as soon as its own calls are answered, while its
  /// neighbour may still be fetching the step's last tensor: what it
  /// produced in a committed step stays fetchable until its next commit,
  /// and a wait for a tensor the step never produced ends at once.
  @Test func aCommittedStepsTensorsStayUntilTheNextCommit() async throws {
    let (partition, dataPlane) = try await Self.loadFirstStage(job: "kept")
    let (inputs, _) = PipelineTrainingTests.classification()
    func key(step: Int64, _ microBatch: Int32 = 0) -> Pipemesh_V1_MicroBatchKey {
      .with {
        $0.job = "kept"
        $0.step = step
        $0.microBatch = microBatch
      }
    }
    func fetch(_ key: Pipemesh_V1_MicroBatchKey, release: Bool) async throws -> Tensor {
      try await DataPlane.fetch(
        from: dataPlane,
        .with {
          $0.key = DataPlaneKey(key, .activation).wire
          $0.release = release
          $0.wait = true
        },
        options: .init(timeout: .seconds(30)))
    }
    func runStep(_ step: Int64) async throws {
      _ = try await partition.call(
        PartitionMethods.forward,
        .with {
          $0.key = key(step: step)
          $0.input.inline = Pipemesh_V1_Tensor(inputs.slice(axis: 0, range: 0..<4))
          $0.schedulePosition = 1
        })
      _ = try await partition.call(
        PartitionMethods.backward,
        .with {
          $0.key = key(step: step)
          $0.outputGradient.inline = Pipemesh_V1_Tensor(Tensor(shape: [4, 16], repeating: 0.5))
          $0.schedulePosition = 2
        })
      _ = try await partition.call(
        PartitionMethods.commit,
        .with {
          $0.job = "kept"
          $0.step = step
        })
    }

    try await runStep(1)
    #expect(try await fetch(key(step: 1), release: false).shape == [4, 16])
    let never = await #expect(throws: RPCError.self) { _ = try await fetch(key(step: 1, 1), release: true) }
    #expect(never?.code == .aborted, "\(String(describing: never))")
    try await runStep(2)
    let gone = await #expect(throws: RPCError.self) { _ = try await fetch(key(step: 1), release: true) }
    #expect(gone?.code == .aborted, "\(String(describing: gone))")
    #expect(try await fetch(key(step: 2), release: true).shape == [4, 16])
    _ = try await partition.call(PartitionMethods.unloadStage, .with { $0.job = "kept" })
  }

  /// Loads the MLP's first two layers as the first stage of `job` on the
  /// mesh's third partition; returns clients of the partition and of its
  /// data plane.
  static func loadFirstStage(job: String) async throws -> (partition: RPCClient, dataPlane: RPCClient) {
    let mesh = try await PipelineTrainingTests.mesh.value
    let partition = try RPCClient(target: mesh.partitions[2].endpoint)
    let loaded = try await partition.call(
      PartitionMethods.loadStage,
      .with {
        $0.job = job
        $0.model = PipelineTrainingTests.mlp
        $0.endLayer = 2
        $0.parameterServers = mesh.parameterServers.map(\.endpoint)
        $0.optimizer = .with { $0.sgd = .init() }
      })
    #expect(!loaded.dataPlaneEndpoint.isEmpty)
    return (partition, try RPCClient(target: loaded.dataPlaneEndpoint))
  }

  /// Loads all of the MLP as one stage of `job` (sync, SGD at rate 0.1) on
  /// the mesh's last partition, and returns a client of that partition.
  static func loadWholeModel(job: String, mesh: some StageTestMesh, maxKeptBytes: Int64 = 0) async throws
    -> any RPCChannel
  {
    let partition = try mesh.wholeModelPartition()
    _ = try await partition.call(
      PartitionMethods.loadStage,
      .with {
        $0.job = job
        $0.model = PipelineTrainingTests.mlp
        $0.endLayer = 4
        $0.parameterServers = mesh.parameterServerEndpoints
        $0.consistency = .with { $0.sync = .init() }
        $0.optimizer = .with {
          $0.sgd = .init()
          $0.learningRate = .with { $0.base = 0.1 }
        }
        $0.maxKeptBytes = maxKeptBytes
      })
    return partition
  }

  /// A training Forward of the whole model for `key` on `inputs`.
  static func forwardRequest(_ key: Pipemesh_V1_MicroBatchKey, _ inputs: Tensor, _ targets: Tensor)
    -> Pipemesh_V1_ForwardRequest
  {
    .with {
      $0.key = key
      $0.input.inline = Pipemesh_V1_Tensor(inputs)
      $0.targets = Pipemesh_V1_Tensor(targets)
      $0.batchSize = Int32(inputs.shape[0])
    }
  }

  /// Four examples as micro-batch 0 of step 1 of `job`: its inputs, targets and key.
  static func firstMicroBatch(of job: String) -> (inputs: Tensor, targets: Tensor, key: Pipemesh_V1_MicroBatchKey) {
    let (allInputs, allTargets) = PipelineTrainingTests.classification()
    let key = Pipemesh_V1_MicroBatchKey.with {
      $0.job = job
      $0.step = 1
      $0.microBatch = 0
    }
    return (allInputs.slice(axis: 0, range: 0..<4), allTargets.slice(axis: 0, range: 0..<4), key)
  }

  /// The ps holds, for `job`, the variables after one SGD step (rate 0.1) of
  /// the MLP on `inputs` from its initial values, each updated once.
  /// Commits step 1 of `job` on `partition`, flushing its variables to the ps.
  static func commitFirstStep(of job: String, on partition: any RPCChannel) async throws {
    _ = try await partition.call(
      PartitionMethods.commit,
      .with {
        $0.job = job
        $0.step = 1
        $0.flush = true
      })
  }

  static func expectOneSGDStep(job: String, inputs: Tensor, targets: Tensor, mesh: some StageTestMesh) async throws {
    let model = try makeModel(PipelineTrainingTests.mlp)
    var variables = model.initialVariables()
    let (_, gradients) = model.lossAndGradients(
      input: inputs, target: targets, variables: variables, context: ForwardContext(training: true))
    for (name, gradient) in gradients {
      let variable = try #require(variables[name])
      variables[name] =
        SGD(learningRate: .constant(0.1)).update(variable: variable, gradient: gradient, slots: [:], step: 1).variable
    }
    let ps = try ParameterServerClient(endpoints: mesh.parameterServerEndpoints, dialer: mesh.psDialer)
    let pulled = try await ps.pull(job: job, names: variables.keys.sorted())
    for (name, expected) in variables {
      let value = try #require(pulled[name]?.value)
      #expect(pulled[name]?.version == 1, "\(name) was updated \(pulled[name]?.version ?? -1) times")
      let difference = zip(value.scalars, expected.scalars).map { abs($0 - $1) }.max() ?? 0
      #expect(difference <= 1e-6, "\(name) differs by \(difference)")
    }
  }
}

/// What the partition tests need of a mesh: a partition to load the whole
/// model on, the ps tasks, and a way to reach them. Logic tests run on an
/// `InProcessMesh`; the others on real processes.
protocol StageTestMesh: Sendable {
  func wholeModelPartition() throws -> any RPCChannel
  var parameterServerEndpoints: [String] { get }
  var psDialer: any RPCDialer { get }
}

extension LocalMesh: StageTestMesh {
  func wholeModelPartition() throws -> any RPCChannel { try RPCClient(target: partitions[3].endpoint) }
  var parameterServerEndpoints: [String] { parameterServers.map(\.endpoint) }
  var psDialer: any RPCDialer { GRPCDialer() }
}

extension InProcessMesh: StageTestMesh {
  func wholeModelPartition() throws -> any RPCChannel {
    network.channel(to: partitions[0][0], identity: "coordinator")
  }
  var parameterServerEndpoints: [String] { parameterServers }
  var psDialer: any RPCDialer { network.dialer(identity: "partition") }
}
