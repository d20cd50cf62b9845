import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// Loads training data a `DatasetReference` names.
public typealias DatasetLoader = @Sendable (Pipemesh_V1_DatasetReference) throws -> (inputs: Tensor, targets: Tensor)

/// `pipemesh.v1.Coordinator`: plans splits, runs training jobs over the
/// cluster's partitions and answers inference.
public final class CoordinatorService: RPCService, Sendable {
  public let cluster: Cluster
  private let loadDataset: DatasetLoader?
  private let clients: [[RPCClient]]
  private let jobs = Mutex<[String: (job: TrainingJob, task: Task<Void, Never>)]>([:])
  private let jobCounter = Mutex(0)

  public init(cluster: Cluster, loadDataset: DatasetLoader? = nil) throws {
    self.cluster = cluster
    self.loadDataset = loadDataset
    clients = try cluster.partitions.map { stage in try stage.map { try RPCClient(target: $0, transport: cluster.transport) } }
  }

  public var serviceName: String { CoordinatorMethods.service }

  /// How many jobs are in each state ("running", "succeeded", …).
  public var jobStates: [String: Int] {
    let states = jobs.withLock { $0.values.map(\.job.snapshot.state) }
    return Dictionary(states.map { (String(describing: $0), 1) }, uniquingKeysWith: +)
  }

  /// Training steps completed over all jobs.
  public var stepsCompleted: Int64 { jobs.withLock { $0.values.reduce(0) { $0 + $1.job.snapshot.step } } }

  public func register(with router: inout RPCRouter) {
    router.unary(CoordinatorMethods.plan) { [self] request, _ in
      let model = try makeModel(request.model)
      let stages = request.stages == 0 ? cluster.stages : Int(request.stages)
      return try Planner.plan(model, stages: stages, splitPoints: request.splitPoints.map { Int($0) })
        .response(costs: model.layerCosts)
    }
    router.serverStreaming(CoordinatorMethods.train) { [self] request, writer, _ in
      let (job, updates) = try start(request)
      for await progress in updates { try await writer.write(progress) }
      if job.snapshot.state == .failed { throw RPCError(.aborted, "job \(job.name) failed: \(job.snapshot.error)") }
      if job.snapshot.state == .cancelled { throw RPCError(.cancelled, "job \(job.name) was cancelled") }
    }
    router.unary(CoordinatorMethods.infer) { [self] request, _ in
      let job = try job(request.job)
      let state = job.snapshot.state
      guard state != .failed, state != .cancelled else {
        throw RPCError(
          .failedPrecondition,
          "job \(request.job) \(state == .failed ? "failed" : "was cancelled") and its stages were unloaded: train it again to infer")
      }
      let inputs = try Tensor(wire: request.inputs, what: "inputs")
      try job.model.checkInput(inputs, "inputs do not fit job \(request.job)'s model")
      let microBatches = max(1, Int(request.microBatches))
      let chunk = (inputs.shape[0] + microBatches - 1) / microBatches
      let outputs = try await Inference.run(inputs, job: job.runID, stages: clients.map { $0[0] }, chunk: chunk)
      return .with { $0.outputs = Pipemesh_V1_Tensor(sharing: outputs) }
    }
    router.unary(CoordinatorMethods.getJob) { [self] request, _ in try job(request.job).snapshot }
    router.unary(CoordinatorMethods.listJobs) { [self] _, _ in
      .with { $0.jobs = jobs.withLock { $0.values.map(\.job.snapshot) }.sorted { $0.job < $1.job } }
    }
    router.unary(CoordinatorMethods.cancelJob) { [self] request, _ in
      let entry = jobs.withLock { $0[request.job] }
      guard let entry else { throw RPCError(.notFound, "no job named \(request.job)") }
      entry.task.cancel()
      await entry.task.value
      return entry.job.snapshot
    }
  }

  private func job(_ name: String) throws -> TrainingJob {
    guard let job = jobs.withLock({ $0[name]?.job }) else {
      throw RPCError(.notFound, "no job named \(name) on this coordinator")
    }
    return job
  }

  /// Checks a Train request, starts its job and returns its progress stream.
  /// The job runs on if the caller goes away; CancelJob stops it.
  private func start(_ request: Pipemesh_V1_TrainRequest) throws -> (TrainingJob, AsyncStream<Pipemesh_V1_TrainProgress>) {
    let name = request.job.isEmpty ? "job-\(jobCounter.withLock { $0 += 1; return $0 })" : request.job
    guard !name.contains("/"), name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "_.-".contains($0)) }) else {
      throw RPCError(.invalidArgument, "job name '\(name)' must use only A-Z a-z 0-9 _ . -")
    }
    let (inputs, targets) = try data(request.data)
    let job = try TrainingJob(name: name, request: request, inputs: inputs, targets: targets, cluster: cluster, clients: clients)
    let (updates, continuation) = AsyncStream.makeStream(of: Pipemesh_V1_TrainProgress.self, bufferingPolicy: .bufferingNewest(64))
    let replaced = try jobs.withLock { jobs in
      let existing = jobs[name]
      if let existing, existing.job.snapshot.state == .running {
        throw RPCError(.alreadyExists, "job \(name) is running; pick another name or cancel it")
      }
      let task = Task {
        await job.run { continuation.yield($0) }
        continuation.finish()
      }
      jobs[name] = (job, task)
      return existing?.job
    }
    if let replaced { Task { await replaced.unload() } }
    return (job, updates)
  }

  private func data(_ source: Pipemesh_V1_DataSource) throws -> (Tensor, Tensor) {
    switch source.source {
    case .inline(let data):
      let inputs = try Tensor(wire: data.inputs, what: "inline inputs")
      let targets = try Tensor(wire: data.targets, what: "inline targets")
      guard inputs.rank >= 1, targets.rank >= 1, inputs.shape[0] == targets.shape[0] else {
        throw RPCError(.invalidArgument, "inline inputs \(inputs.shape) and targets \(targets.shape) must have the same number of rows")
      }
      return (inputs, targets)
    case .dataset(let reference):
      guard let loadDataset else { throw RPCError(.unimplemented, "this coordinator cannot load datasets by reference") }
      return try loadDataset(reference)
    case nil:
      throw RPCError(.invalidArgument, "the request names no training data")
    }
  }
}
