import Foundation
import MeshProto
import MeshRPC
import Synchronization

/// Every job's variables on one ps task.
public final class ParameterStore: Sendable {
  private let jobs = Mutex<[String: ParameterJob]>([:])
  /// What the variables of every job may take, and take now.
  public let budget: MemoryBudget

  public init(budget: MemoryBudget = MemoryBudget(limit: MemoryBudget.hostDefault(), variableLimit: 4 << 30)) {
    self.budget = budget
  }

  func job(_ name: String) throws -> ParameterJob {
    guard let job = jobs.withLock({ $0[name] }) else {
      throw RPCError(.notFound, "this ps holds no job named '\(name.echoed)'; register its variables first")
    }
    return job
  }

  var allJobs: [ParameterJob] { jobs.withLock { Array($0.values) } }

  /// Creates a job on its first registration; later ones must name the same
  /// consistency.
  func register(_ request: Pipemesh_V1_RegisterRequest) async throws -> Pipemesh_V1_RegisterResponse {
    try Names.checkJob(request.job)
    let consistency = try JobConsistency(request.consistency)
    let (job, created) = try jobs.withLock { jobs in
      if let existing = jobs[request.job] {
        guard existing.consistency == consistency else {
          throw RPCError(
            .failedPrecondition,
            "job \(request.job) was registered with consistency \(existing.consistency.proto.textFormatString()) "
              + "and cannot change to \(consistency.proto.textFormatString())")
        }
        return (existing, false)
      }
      let job = ParameterJob(name: request.job, consistency: consistency, budget: budget)
      jobs[request.job] = job
      return (job, true)
    }
    var response = Pipemesh_V1_RegisterResponse()
    do {
      response.variables = try await job.register(request.variables, user: request.user)
    } catch {
      // A job whose first registration failed does not keep its consistency.
      if created { jobs.withLock { if $0[request.job] === job, job.variableCount == 0 { $0[request.job] = nil } } }
      throw error
    }
    return response
  }

  /// Adds a job restored from a checkpoint.
  func adopt(_ job: ParameterJob) {
    jobs.withLock { $0[job.name] = job }
  }

  /// Counters over one job, or all jobs when `name` is empty; NOT_FOUND for an unknown job.
  public func stats(job name: String) throws -> Pipemesh_V1_StatsResponse {
    let selected = name.isEmpty ? allJobs : [try job(name)]
    var response = Pipemesh_V1_StatsResponse()
    var (stalenessSum, stalenessCount): (Int64, Int64) = (0, 0)
    for job in selected {
      let counters = job.counters.withLock { $0 }
      response.variables += Int64(job.variableCount)
      response.bytes += job.heldBytes
      response.pushesApplied += counters.pushesApplied
      response.pushesRefusedStale += counters.refusedStale
      response.pushesRefusedNonFinite += counters.refusedNonFinite
      response.pushesDuplicate += counters.duplicates
      response.pulls += counters.pulls
      response.maxVersion = max(response.maxVersion, job.maxVersion)
      response.maxStaleness = max(response.maxStaleness, counters.stalenessMax)
      stalenessSum += counters.stalenessSum
      stalenessCount += counters.stalenessCount
    }
    response.meanStaleness = stalenessCount == 0 ? 0 : Double(stalenessSum) / Double(stalenessCount)
    return response
  }

  /// Updates applied so far over all variables: a checkpoint is due when it moved.
  var totalVersions: Int64 { allJobs.reduce(0) { $0 + $1.totalVersions } }
}
