import Foundation
import MeshOps
import MeshPSClient
import MeshProto
import MeshWire
import Synchronization

/// Every job's variables on one ps task.
public final class ParameterStore: Sendable {
  private let jobs = Mutex<[String: ParameterJob]>([:])
  /// What the variables of every job may take, and take now.
  public let budget: MemoryBudget

  public init(budget: MemoryBudget = MemoryBudget(limit: HostMemory.defaultBudget(), variableLimit: 4 << 30)) {
    self.budget = budget
  }

  func job(_ name: String) throws -> ParameterJob {
    guard let job = jobs.withLock({ $0[name] }) else {
      throw ParameterServerError(.notHeld, "this ps holds no job named '\(name.echoed)'; register its variables first")
    }
    return job
  }

  var allJobs: [ParameterJob] { jobs.withLock { Array($0.values) } }

  /// Bytes of values and optimizer slots each job holds, by job name.
  public var bytesByJob: [String: Int64] {
    Dictionary(allJobs.map { ($0.name, $0.heldBytes) }) { $0 + $1 }
  }

  /// Creates a job on its first registration; later ones must name the same
  /// consistency.
  func register(_ request: Pipemesh_V1_RegisterRequest) async throws -> Pipemesh_V1_RegisterResponse {
    try MeshNames.checkJob(request.job)
    let consistency = try JobConsistency(request.consistency)
    // Counted under the store's lock, as the removal below is: a failed
    // first registration never drops a job that another one is joining.
    let job = try jobs.withLock { jobs in
      let job: ParameterJob
      if let existing = jobs[request.job] {
        guard existing.consistency == consistency else {
          throw ParameterServerError(
            .conflict,
            "job \(request.job) was registered with consistency \(existing.consistency.proto.textFormatString()) "
              + "and cannot change to \(consistency.proto.textFormatString())")
        }
        job = existing
      } else {
        job = ParameterJob(name: request.job, consistency: consistency, budget: budget)
        jobs[request.job] = job
      }
      job.registrationsUnderWay.withLock { $0 += 1 }
      return job
    }
    var response = Pipemesh_V1_RegisterResponse()
    do {
      response.variables = try await job.register(
        request.variables, user: request.user, writerKeepsValues: request.writerKeepsValues)
      job.registrationsUnderWay.withLock { $0 -= 1 }
    } catch {
      // A job whose registrations all failed does not keep its consistency.
      jobs.withLock { jobs in
        let others = job.registrationsUnderWay.withLock { count in
          count -= 1
          return count
        }
        if jobs[request.job] === job, others == 0, job.variableCount == 0 { jobs[request.job] = nil }
      }
      throw error
    }
    return response
  }

  /// Adds jobs restored from a checkpoint, counting their bytes in the
  /// budget (even over it: later registrations are refused until there is
  /// room).
  func adopt(_ restored: [ParameterJob]) async {
    for job in restored { budget.account(await job.reservedBytes) }
    jobs.withLock { jobs in
      for job in restored { jobs[job.name] = job }
    }
  }

  /// Forgets a job and gives its bytes back to the budget; NOT_FOUND for an
  /// unknown job.
  public func drop(job name: String) async throws -> Pipemesh_V1_DropJobResponse {
    let job = try jobs.withLock { jobs in
      guard let job = jobs.removeValue(forKey: name) else {
        throw ParameterServerError(.notHeld, "this ps holds no job named '\(name.echoed)'")
      }
      return job
    }
    let freed = await job.drop()
    budget.release(freed.bytes)
    return .with {
      $0.variables = Int64(freed.variables)
      $0.bytes = Int64(freed.bytes)
    }
  }

  /// Puts `restored` in place of job `name` (dropped first, if held; nil
  /// leaves none); returns the parts and bytes restored.
  func replace(_ name: String, with restored: ParameterJob?) async -> (variables: Int, bytes: Int) {
    let existing = jobs.withLock { $0.removeValue(forKey: name) }
    if let existing { budget.release(await existing.drop().bytes) }
    guard let restored else { return (0, 0) }
    await adopt([restored])
    return (restored.variableCount, await restored.reservedBytes)
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
      response.pushesWaiting += counters.waiting
      response.pushesWaited += counters.waited
      response.maxReplicaLead = max(response.maxReplicaLead, counters.replicaLeadMax)
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
