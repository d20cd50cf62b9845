import MeshPSClient
import MeshProto
import MeshRPC
import MeshWire

/// `pipemesh.v1.ParameterServer` over a store, with on-demand checkpoints.
public struct ParameterServerService: RPCService {
  public let store: ParameterStore
  public let checkpointer: Checkpointer?
  /// Drawn when the service starts: a job's checkpoint and the pull of its
  /// final weights name the one its run began with, so a task that
  /// restarted since writes and answers nothing.
  public let incarnation = UInt64.random(in: 1...UInt64.max)

  public init(store: ParameterStore, checkpointer: Checkpointer?) {
    self.store = store
    self.checkpointer = checkpointer
  }

  public var serviceName: String { ParameterServerMethods.service }

  /// Only the mesh's own services may call a ps (when mutual TLS names
  /// them).
  public func register(with router: inout RPCRouter) {
    router.admitting({ path, context in try MeshRole.requireMember(context, for: path) }) { registerMethods(with: &$0) }
  }

  private func registerMethods(with router: inout RPCRouter) {
    let store = self.store
    let checkpointer = self.checkpointer
    let incarnation = self.incarnation
    router.unary(ParameterServerMethods.register) { request, _ in
      try await store.register(request)
    }
    router.unary(ParameterServerMethods.pull) { request, _ in
      if request.incarnation != 0 {
        try MeshNames.checkJob(request.job)
        try Self.check(request.incarnation, is: incarnation, job: request.job, doing: "answers no pull of its values")
      }
      var response = Pipemesh_V1_PullResponse()
      response.variables = try store.job(request.job).pull(request.variables, includeSlots: request.includeSlots)
      return response
    }
    router.unary(ParameterServerMethods.push) { request, _ in
      var response = Pipemesh_V1_PushResponse()
      response.variables = try await store.job(request.job).push(request)
      return response
    }
    router.unary(ParameterServerMethods.assign) { request, _ in
      var response = Pipemesh_V1_AssignResponse()
      response.variables = try await store.job(request.job).assign(request)
      return response
    }
    router.unary(ParameterServerMethods.dropJob) { request, _ in
      try MeshNames.checkJob(request.job)
      do {
        let dropped = try await store.drop(job: request.job)
        checkpointer?.removeCheckpoints(of: request.job)
        return dropped
      } catch let error as ParameterServerError where error.kind == .notHeld {
        // A drop sent again (its first answer timed out once the job had left memory) still
        // takes the checkpoints.
        checkpointer?.removeCheckpoints(of: request.job)
        throw error
      }
    }
    router.unary(ParameterServerMethods.restoreJob) { request, _ in
      try MeshNames.checkJob(request.job)
      let source = request.fromJob.isEmpty ? request.job : request.fromJob
      try MeshNames.checkJob(source)
      guard let checkpointer else {
        throw RPCError(.failedPrecondition, "this ps was started without a checkpoint directory")
      }
      guard request.replicas >= 0, request.replicas <= JobConsistency.maxReplicas else {
        throw RPCError(
          .invalidArgument,
          "replicas is \(request.replicas); give 0 (the checkpoint's) to \(JobConsistency.maxReplicas)")
      }
      let restored = await store.replace(
        request.job,
        with: try checkpointer.readJob(
          source, step: request.step, as: request.job, replicas: request.replicas == 0 ? nil : request.replicas))
      return .with {
        $0.variables = Int64(restored.variables)
        $0.bytes = Int64(restored.bytes)
      }
    }
    router.unary(ParameterServerMethods.stats) { request, _ in
      var response = try store.stats(job: request.job)
      response.checkpointAgeSeconds = checkpointer?.age.map { Double($0.components.seconds) } ?? -1
      response.checkpointsEnabled = checkpointer != nil
      response.memoryBudgetBytes = Int64(store.budget.limit)
      response.memoryInUseBytes = Int64(store.budget.inUse)
      response.memory = .current(jobBytes: Int(response.bytes))
      response.incarnation = incarnation
      return response
    }
    router.unary(ParameterServerMethods.checkpoint) { request, _ in
      guard let checkpointer else {
        throw RPCError(.failedPrecondition, "this ps was started without a checkpoint directory")
      }
      guard !request.job.isEmpty else {
        guard request.step == 0 else {
          throw RPCError(.invalidArgument, "step is \(request.step) without a job; name the job or give 0")
        }
        let (path, updates) = try await checkpointer.write()
        return .with {
          $0.path = path
          $0.updates = updates
        }
      }
      guard request.step >= 0, request.step <= HeldVariable.maxVersion else {
        throw RPCError(.invalidArgument, "step is \(request.step); give 0 to 2^53")
      }
      try MeshNames.checkJob(request.job)
      try Self.check(
        request.incarnation, is: incarnation, job: request.job, doing: "writes no checkpoint of step \(request.step)")
      // A task that holds none of the job records that, too.
      let job = try? store.job(request.job)
      let path = try await checkpointer.write(
        jobNamed: request.job, job: job, step: request.step, exactStep: request.exactStep)
      return .with {
        $0.path = path
        $0.updates = job?.totalVersions ?? 0
      }
    }
  }

  /// Refuses a call that names the incarnation `given` (0: any) of a run of
  /// `job` when this task is another: it restarted since the run began and
  /// may hold none of the job or older values, so it `doing`.
  private static func check(_ given: UInt64, is incarnation: UInt64, job: String, doing what: String) throws {
    guard given == 0 || given == incarnation else {
      throw ParameterServerError(
        .jobLost,
        "this ps task restarted since job \(job)'s run began (incarnation \(incarnation), not \(given)): it may "
          + "hold none of the job or older values, so it \(what); restore the job from its checkpoint before")
    }
  }
}
