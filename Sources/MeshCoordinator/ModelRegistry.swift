import Foundation
import MeshCheckpoint
import MeshPSClient
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// Trained models by name and version: a job that succeeds registers its
/// weights (pulled from the ps) as the next version of its name, in a
/// safetensors file beside the coordinator's database. Inference of a
/// version runs on the stages of the job that trained it while they are
/// loaded; otherwise the registry loads the version onto partitions of the
/// pool on first use (its values assigned on the ps under a run id of its
/// own; inference holds no partition, training goes on beside it) and keeps
/// it there until it is deleted.
final class ModelRegistry: Sendable {
  let store: CoordinatorStore
  private let cluster: Cluster
  private let pool: PartitionPool
  private let state = Mutex(State())

  private struct State {
    /// Versions served from the stages of the job that trained them, while
    /// that job's stages are loaded.
    var borrowed: [ModelReference: LoadedModel] = [:]
    /// Versions the registry loads, or has loaded, onto the partitions.
    var owned: [ModelReference: Task<LoadedModel, any Error>] = [:]
    /// Versions deleted while this process runs: never loaded again (their
    /// numbers are never reused).
    var deleted: Set<ModelReference> = []
  }

  /// A version whose stages are on the partitions `stages`, under `runID`.
  struct LoadedModel: Sendable {
    let runID: String
    let model: Sequential
    let stages: [any RPCChannel]
  }

  /// Decides whether a version may be added to a name, given its owner (nil
  /// for a new name); throws to refuse.
  typealias Admission = @Sendable (_ owner: String?) throws -> Void

  /// The user the registry assigns stored values as on the ps.
  private static let writer = "model-registry"

  init(store: CoordinatorStore, cluster: Cluster, pool: PartitionPool) {
    self.store = store
    self.cluster = cluster
    self.pool = pool
  }

  /// Registers the weights of a job that succeeded as the next version of
  /// its name, and serves that version from the job's stages for now.
  /// The weights go from the ps to the model's file part by part, never
  /// whole in the coordinator's memory.
  func register(_ job: TrainingJob, admit: @escaping Admission) async throws -> CoordinatorStore.StoredModel {
    // A coordinator stopped after registering this job's model, before saving its success: the
    // job ran on from its checkpoint and ends here again. Its version stays the one registered
    // (whose weights its stages may no longer hold, so the version is served from its file).
    if let registered = try await store.model(registeredBy: job.name) { return registered }
    let declarations = job.model.variableDeclarations()
    // As the ps holds them: a layer split between stages in pieces, put back together here.
    let held = try job.model.variableDeclarations(cutAt: job.plan.bounds)
    let pieces = Dictionary(uniqueKeysWithValues: held.compactMap { held in held.piece.map { (held.name, $0) } })
    let ps = try cluster.parameterServerClient()
    ps.expect(variables: held.map { ($0.name, $0.shape) })
    let snapshot = job.snapshot
    let model = try await add(
      .with {
        $0.name = job.name
        $0.owner = job.owner
        $0.job = job.name
        $0.spec = job.request.model
        $0.splitPoints = job.request.splitPoints
        $0.splitPointInputs = job.request.splitPointInputs
        $0.normalization = job.request.normalization
        $0.loss = snapshot.loss
        if let last = snapshot.epochs.last {
          $0.validationLoss = last.validationLoss
          $0.validationAccuracy = last.validationAccuracy
        }
      }, shapes: Dictionary(uniqueKeysWithValues: declarations.map { ($0.name, $0.shape) }), admit: admit
    ) { put in
      // From the tasks the run began with: one that restarted since may hold older values (ABORTED).
      try await job.withinFinalPullDeadline {
        try await ps.pull(job: job.runID, names: held.map(\.name), incarnations: job.psIncarnationsAtStart) {
          name, element, bytes in
          try bytes.withUnsafeBytes { bytes in
            guard let piece = pieces[name] else { return try put(name, element, bytes) }
            let elements = element..<(element + bytes.count / 4)
            for run in piece.wholeRuns(ofPieceElements: elements) {
              try put(
                piece.whole, run.whole,
                UnsafeRawBufferPointer(rebasing: bytes[(run.offset * 4)..<((run.offset + run.count) * 4)]))
            }
          }
        }
      }
    }
    if let placement = job.placement {
      let loaded = LoadedModel(runID: job.runID, model: job.model, stages: placement.firstReplica)
      state.withLock { $0.borrowed[model.reference] = loaded }
    }
    return model
  }

  /// Registers weights trained elsewhere (a safetensors file holding exactly
  /// the spec's variables, each of its shape and finite) as the next
  /// version of `name`; `source` names the file in refusals. The file is
  /// read where it lies (a mapped spool: `ModelUpload.mapped`) and copied into the
  /// model's file tensor by tensor, never decoded whole.
  func importWeights(
    _ file: Data, from source: String, as name: String, spec: Pipemesh_V1_ModelSpec, splitPoints: [LayerPosition],
    normalization: Pipemesh_V1_InputNormalization, owner: String, admit: @escaping Admission
  ) async throws -> CoordinatorStore.StoredModel {
    let model = try checkedImport(spec: spec, splitPoints: splitPoints, normalization: normalization)
    let index: SafeTensors.Index
    do {
      index = try SafeTensors.Index(file)
    } catch {
      throw CoordinatorError(.invalidRequest, "\(source) is not a safetensors file Pipemesh reads: \(error)")
    }
    let declarations = model.variableDeclarations()
    var ranges: [String: Range<Int>] = [:]
    for declaration in declarations {
      guard let entry = index.tensors[declaration.name] else {
        throw CoordinatorError(
          .invalidRequest,
          "\(source) has no tensor \(declaration.name), which the spec declares with shape \(declaration.shape)"
        )
      }
      guard entry.shape == declaration.shape,
        file[entry.bytes].withUnsafeBytes({ Tensor.allFinite(littleEndianFloat32: $0) })
      else {
        throw CoordinatorError(
          .invalidRequest,
          "tensor \(declaration.name) in \(source) must be finite and of shape \(declaration.shape); "
            + "it is of shape \(entry.shape)")
      }
      ranges[declaration.name] = entry.bytes
    }
    let unknown = Set(index.tensors.keys).subtracting(ranges.keys).sorted()
    guard unknown.isEmpty else {
      throw CoordinatorError(
        .invalidRequest,
        "\(source) holds tensors the spec does not declare: \(unknown.prefix(5).joined(separator: ", "))"
      )
    }
    return try await add(
      .with {
        $0.name = name
        $0.owner = owner
        $0.spec = spec
        $0.splitPoints = splitPoints.wireLayers
        $0.splitPointInputs = splitPoints.wireInputs
        $0.normalization = normalization
      }, shapes: Dictionary(uniqueKeysWithValues: declarations.map { ($0.name, $0.shape) }), admit: admit
    ) { put in
      for (name, bytes) in ranges { try file[bytes].withUnsafeBytes { try put(name, 0, $0) } }
    }
  }

  /// The model an import describes, once its spec, split and rescaling
  /// are found valid; throws INVALID_ARGUMENT naming what is not.
  func checkedImport(
    spec: Pipemesh_V1_ModelSpec, splitPoints: [LayerPosition], normalization: Pipemesh_V1_InputNormalization
  ) throws -> Sequential {
    let model = try makeModel(spec)
    _ = try normalization.checked(for: model, field: "normalization")
    _ = try Planner.plan(model, stages: stages(splitPoints, layers: model.layers.count), splitPoints: splitPoints)
    return model
  }

  /// Registers weights fitted here (a closed-form solution) as the next
  /// version of `name`.
  func registerFitted(
    _ tensors: [String: Tensor], as name: String, spec: Pipemesh_V1_ModelSpec,
    normalization: Pipemesh_V1_InputNormalization, owner: String, admit: @escaping Admission
  ) async throws -> CoordinatorStore.StoredModel {
    try await add(
      .with {
        $0.name = name
        $0.owner = owner
        $0.spec = spec
        $0.normalization = normalization
      }, tensors: tensors, admit: admit)
  }

  /// Records `record` as the next version of its name, its weights `tensors`.
  private func add(_ record: Pipemesh_V1_Model, tensors: [String: Tensor], admit: @escaping Admission) async throws
    -> CoordinatorStore.StoredModel
  {
    try await add(record, shapes: tensors.mapValues(\.shape), admit: admit) { put in
      for (name, tensor) in tensors { try tensor.sharedLittleEndianData.withUnsafeBytes { try put(name, 0, $0) } }
    }
  }

  /// Records `record` as the next version of its name, its weights the
  /// tensors of `shapes` whose bytes `fill` puts (see `SafeTensors.write`).
  private func add(
    _ record: Pipemesh_V1_Model, shapes: [String: [Int]], admit: @escaping Admission,
    fill: (_ put: @escaping @Sendable (String, Int, UnsafeRawBufferPointer) throws -> Void) async throws -> Void
  ) async throws -> CoordinatorStore.StoredModel {
    var record = record
    record.createdUnixSeconds = Date().timeIntervalSince1970
    record.parameters = Int64(shapes.values.reduce(0) { $0 + $1.reduce(1, *) })
    // Written before the version is numbered, outside the database's transaction.
    let incoming = store.incomingWeightsPath()
    let metadata = ["format": "pt", "pipemesh.model": record.name, "pipemesh.spec": try record.spec.jsonString()]
    try await SafeTensors.write(shapes: shapes, metadata: metadata, to: incoming, fill)
    return try await store.addModel(record, weights: incoming, admit: admit)
  }

  /// Stops serving any version from a job's stages (they are being unloaded).
  func forgetStages(of runID: String) {
    state.withLock { $0.borrowed = $0.borrowed.filter { $0.value.runID != runID } }
  }

  /// A version's stages: ready on a job's partitions, or the registry's load.
  private enum Lookup {
    case ready(LoadedModel)
    case loading(Task<LoadedModel, any Error>)
  }

  /// The version's stages on the partitions, loading them on first use.
  func load(_ model: CoordinatorStore.StoredModel) async throws -> LoadedModel {
    let reference = model.reference
    // One look under the lock: a version deleted meanwhile is never loaded again.
    let found = try state.withLock { state -> Lookup in
      if let borrowed = state.borrowed[reference] { return .ready(borrowed) }
      guard !state.deleted.contains(reference) else {
        throw CoordinatorError(.notKnown, "model \(reference) was deleted")
      }
      if let task = state.owned[reference] { return .loading(task) }
      let task = Task { try await self.loadStages(of: model) }
      state.owned[reference] = task
      return .loading(task)
    }
    let task: Task<LoadedModel, any Error>
    switch found {
    case .ready(let model): return model
    case .loading(let loading): task = loading
    }
    do {
      return try await task.value
    } catch {
      // A load that failed is tried again by the next call.
      state.withLock { state in
        if state.owned[reference] == task { state.owned[reference] = nil }
      }
      throw error
    }
  }

  /// Assigns the stored weights on the ps under a fresh run id and loads
  /// the stages on the first replica's partitions.
  private func loadStages(of stored: CoordinatorStore.StoredModel) async throws -> LoadedModel {
    let record = stored.record
    let model = try makeModel(record.spec)
    let weights: SafeTensors.Contents
    do {
      weights = try SafeTensors.decode(
        try Data(contentsOf: URL(fileURLWithPath: store.weightsPath(stored)), options: .alwaysMapped))
    } catch {
      throw CoordinatorError(.storedDataDamaged, "the weights of model \(stored.reference) cannot be read: \(error)")
    }
    let runID = "\(record.name).\(String(UInt32.random(in: 0x1000_0000...UInt32.max), radix: 16))"
    let consistency = Pipemesh_V1_Consistency.with {
      $0.sync = .init()
      $0.replicas = 1
    }
    let optimizer = Pipemesh_V1_OptimizerSpec()
    // The split the job trained with, when the pool has as many partitions.
    let split = try LayerPosition.splitPoints(layers: record.splitPoints, inputs: record.splitPointInputs)
    let trained = stages(split, layers: model.layers.count)
    let plan =
      trained <= pool.members.count
      ? try Planner.plan(model, stages: trained, splitPoints: split)
      : try Planner.plan(model, stages: stages([], layers: model.layers.count))
    // As the stages hold them: a layer split between stages in pieces, cut from the whole.
    let declarations = try model.variableDeclarations(cutAt: plan.bounds)
    var states: [String: (value: Tensor, slots: [String: Tensor], version: Int64)] = [:]
    for declaration in declarations {
      let (name, shape) = declaration.piece.map { ($0.whole, $0.wholeShape) } ?? (declaration.name, declaration.shape)
      guard let value = weights.tensors[name], value.shape == shape else {
        throw CoordinatorError(
          .storedDataDamaged,
          "the weights of model \(stored.reference) have no \(name) of shape \(shape)")
      }
      states[declaration.name] = (declaration.piece?.cut(from: value) ?? value, [:], 0)
    }
    let placement = try pool.sharedPlacement(stages: plan.bounds.count - 1)
    let ps = try cluster.parameterServerClient()
    do {
      try await ps.register(
        job: runID, variables: declarations.map { $0.definition(seed: record.spec.seed, optimizer: optimizer) },
        consistency: consistency, user: Self.writer, writerKeepsValues: true)
      try await ps.assign(job: runID, user: Self.writer, states: states)
      _ = try await StageLoading(
        runID: runID, model: record.spec, bounds: plan.bounds, parameterServers: cluster.parameterServers,
        placement: placement, consistency: consistency, optimizer: optimizer
      ).load(replicas: 0..<1)
    } catch {
      _ = try? await StageLoading.discard(runID: runID, cluster: cluster, clients: placement.clients)
      throw error
    }
    return LoadedModel(runID: runID, model: model, stages: placement.firstReplica)
  }

  /// The stages a model of `layers` layers is served on: its split's, or the
  /// cluster's, but no more than it has layers.
  private func stages(_ splitPoints: [LayerPosition], layers: Int) -> Int {
    splitPoints.isEmpty ? min(max(1, cluster.stages), max(1, layers)) : splitPoints.count + 1
  }

  /// Forgets deleted versions: unloads those the registry loaded (once a
  /// load under way ends) and frees their values on the ps.
  func unload(_ models: [CoordinatorStore.StoredModel]) async {
    let tasks = state.withLock { state in
      models.compactMap { model in
        state.deleted.insert(model.reference)
        state.borrowed[model.reference] = nil
        return state.owned.removeValue(forKey: model.reference)
      }
    }
    for task in tasks {
      guard let model = try? await task.value else { continue }
      _ = try? await StageLoading.discard(runID: model.runID, cluster: cluster, clients: [model.stages])
    }
  }
}
