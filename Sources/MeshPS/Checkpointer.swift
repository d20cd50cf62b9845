import Foundation
import MeshCheckpoint
import MeshPSClient
import MeshProto
import MeshTensor
import SwiftProtobuf
import Synchronization

/// Writes the store's variables to safetensors files and restores the
/// latest one.
///
/// Each checkpoint is a new file, `checkpoint-<sequence>.safetensors`,
/// written atomically (temporary file, fsync, rename), so a crash at any
/// moment leaves the previous checkpoints intact and never a partial one
/// under that name. A job's own checkpoints, taken at its step boundaries,
/// are `jobs/<job>/step-<step>.safetensors` in the same format, holding that
/// job only. Values are stored as `<job>/<variable>`, optimizer slots
/// as `<job>/<variable>@<slot>`; the metadata entry `pipemesh` holds the
/// definitions, versions, users and retry state as JSON.
public final class Checkpointer: Sendable {
  public let directory: String
  /// How many checkpoint files to keep.
  public let keep: Int
  private let store: ParameterStore
  private struct State {
    var sequence = 0
    var lastWritten: ContinuousClock.Instant?
    var lastVersions: Int64 = -1
  }
  private let state = Mutex(State())
  /// One write at a time, so a later sequence number always holds later state.
  private let writes = AsyncSerialQueue()
  private static let metadataKey = "pipemesh"

  public init(directory: String, store: ParameterStore, keep: Int = 3) throws {
    self.directory = directory
    self.store = store
    self.keep = max(1, keep)
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    removedTemporaries = AtomicFile.removeStaleTemporaries(in: directory, for: "checkpoint-")
  }

  /// Partial checkpoints that a write cut short left behind, removed at start.
  public let removedTemporaries: [String]

  /// Seconds since the last checkpoint was written; nil when none was.
  public var age: Duration? { state.withLock { $0.lastWritten.map { .now - $0 } } }

  /// The checkpoint files present, oldest first.
  public func files() -> [(sequence: Int, path: String)] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
    return names.compactMap { name -> (Int, String)? in
      guard name.hasPrefix("checkpoint-"), name.hasSuffix(".safetensors"),
        let sequence = Int(name.dropFirst("checkpoint-".count).dropLast(".safetensors".count))
      else { return nil }
      return (sequence, (directory as NSString).appendingPathComponent(name))
    }.sorted { $0.0 < $1.0 }
  }

  /// Writes a checkpoint of every job now; returns its path and the number of
  /// updates it holds.
  @discardableResult
  public func write() async throws -> (path: String, updates: Int64) {
    try await writes.run { try await writeNow() }
  }

  private func writeNow() async throws -> (path: String, updates: Int64) {
    let (contents, updates) = try await Self.encode(store.allJobs)
    let sequence = state.withLock { state in
      state.sequence = max(state.sequence, files().last?.sequence ?? 0) + 1
      return state.sequence
    }
    let path = (directory as NSString).appendingPathComponent("checkpoint-\(sequence).safetensors")
    do {
      try SafeTensors.write(contents, to: path)
    } catch {
      throw ParameterServerError(.checkpointNotWritten, "cannot write checkpoint \(path): \(error)")
    }
    state.withLock {
      $0.lastWritten = .now
      $0.lastVersions = max($0.lastVersions, updates)
    }
    for old in files().dropLast(keep) { try? FileManager.default.removeItem(atPath: old.path) }
    return (path, updates)
  }

  /// The folder of a job's own checkpoints.
  private func jobDirectory(_ job: String) -> String { "\(directory)/jobs/\(job)" }

  /// The steps a job's own checkpoints are at, oldest first.
  public func jobSteps(_ job: String) -> [Int64] {
    let names = (try? FileManager.default.contentsOfDirectory(atPath: jobDirectory(job))) ?? []
    return names.compactMap { name in
      guard name.hasPrefix("step-"), name.hasSuffix(".safetensors") else { return nil }
      return Int64(name.dropFirst("step-".count).dropLast(".safetensors".count))
    }.sorted()
  }

  /// Writes a checkpoint of job `name`, taken after its step `step`: of
  /// `job`, or of nothing when this task holds none of it (restoring that
  /// leaves the task holding none). With `exactStep`, of the state after
  /// exactly `step` (see `ParameterJob.checkpointState(atSyncStep:patience:)`),
  /// pruning nothing: another task may refuse its own, and the job then
  /// needs the checkpoint before. Otherwise keeps the job's newest `keep`.
  /// Returns the file's path.
  func write(jobNamed name: String, job: ParameterJob?, step: Int64, exactStep: Bool = false) async throws -> String {
    var states: [(ParameterJob, [String: HeldVariable])] = []
    if let job {
      states.append(
        (
          job,
          exactStep
            ? try await job.checkpointState(atSyncStep: step, patience: Self.exactStepPatience)
            : await job.checkpointState()
        ))
    }
    let held = states
    return try await writes.run {
      let (contents, _) = try Self.encode(held)
      let folder = self.jobDirectory(name)
      let path = "\(folder)/step-\(step).safetensors"
      do {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try SafeTensors.write(contents, to: path)
      } catch {
        throw ParameterServerError(.checkpointNotWritten, "cannot write checkpoint \(path): \(error)")
      }
      if !exactStep {
        for old in self.jobSteps(name).dropLast(self.keep) {
          try? FileManager.default.removeItem(atPath: "\(folder)/step-\(old).safetensors")
        }
      }
      return path
    }
  }

  /// The job as its own checkpoint at `step` holds it (nil: this task held
  /// none of it), named `name`; NOT_FOUND, naming the steps there are, when
  /// there is none.
  func readJob(_ job: String, step: Int64, as name: String, replicas: Int32? = nil) throws -> ParameterJob? {
    let path = "\(jobDirectory(job))/step-\(step).safetensors"
    guard FileManager.default.fileExists(atPath: path) else {
      let steps = jobSteps(job)
      throw ParameterServerError(
        .notHeld,
        "this ps holds no checkpoint of job \(job) at step \(step)"
          + (steps.isEmpty ? "" : "; it holds steps \(steps.map(String.init).joined(separator: ", "))"))
    }
    do {
      let contents = try SafeTensors.decode(
        try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped))
      let jobs = try decode(contents, renaming: [job: name], replicas: replicas)
      guard jobs.allSatisfy({ $0.name == name }), jobs.count <= 1 else {
        throw SafeTensors.FormatError("it holds jobs \(jobs.map(\.name).sorted()), not \(job) alone")
      }
      return jobs.first
    } catch {
      throw ParameterServerError(.damaged, "the checkpoint \(path) cannot be read: \(error)")
    }
  }

  /// Removes a job's own checkpoints (it was dropped).
  public func removeCheckpoints(of job: String) {
    try? FileManager.default.removeItem(atPath: jobDirectory(job))
  }

  /// Every job's variables as a checkpoint's tensors and metadata, and the
  /// updates they hold.
  private static func encode(_ jobs: [ParameterJob]) async throws -> (SafeTensors.Contents, Int64) {
    var states: [(ParameterJob, [String: HeldVariable])] = []
    for job in jobs { states.append((job, await job.checkpointState())) }
    return try encode(states)
  }

  /// How long a checkpoint of an exact step waits for pushes of it still on their way.
  static let exactStepPatience: Duration = .seconds(2)

  /// Jobs' variables, as each job's `checkpointState` gave them, as a
  /// checkpoint's tensors and metadata, and the updates they hold.
  private static func encode(_ jobs: [(ParameterJob, [String: HeldVariable])]) throws -> (SafeTensors.Contents, Int64) {
    var contents = SafeTensors.Contents()
    var jobsMetadata: [String: Any] = [:]
    var updates: Int64 = 0
    for (job, variables) in jobs {
      var variablesMetadata: [String: Any] = [:]
      for (name, variable) in variables {
        contents.tensors["\(job.name)/\(name)"] = variable.value
        for (slot, tensor) in variable.slots { contents.tensors["\(job.name)/\(name)@\(slot)"] = tensor }
        variablesMetadata[name] = [
          "definition": try variable.definition.jsonString(),
          "initial_value_hash": String(variable.initialValueHash),
          "version": variable.version,
          "sync_step": variable.syncStep,
          "pushers": Self.pushersMetadata(variable.lastSteps),
          "kept_by_writer": variable.value == nil,
          "users": variable.users.sorted(),
          "slots": variable.slots.keys.sorted(),
        ]
        updates += variable.version
      }
      jobsMetadata[job.name] = [
        "consistency": try job.consistency.proto.jsonString(),
        "variables": variablesMetadata,
      ]
    }
    let metadata = try JSONSerialization.data(
      withJSONObject: ["format": 2, "jobs": jobsMetadata], options: [.sortedKeys])
    contents.metadata[metadataKey] = String(decoding: metadata, as: UTF8.self)
    return (contents, updates)
  }

  /// Writes a checkpoint every `interval` while variables changed since the
  /// last one, until the task is cancelled.
  public func runPeriodically(every interval: Duration) async {
    while !Task.isCancelled {
      try? await Task.sleep(for: interval)
      let versions = store.totalVersions
      if versions != state.withLock({ $0.lastVersions }) { _ = try? await write() }
    }
  }

  /// Restores the newest checkpoint that reads back whole; returns its path,
  /// or nil when there is none. Unreadable files are reported in `skipped`.
  /// Call before serving: restored jobs replace jobs of the same name.
  public func restoreLatest() async throws -> (path: String?, skipped: [String]) {
    var skipped: [String] = []
    for file in files().reversed() {
      do {
        // Mapped, not read: the file is not held twice while its tensors are copied out.
        let contents = try SafeTensors.decode(
          try Data(contentsOf: URL(fileURLWithPath: file.path), options: .alwaysMapped))
        try await restore(contents)
        state.withLock {
          $0.sequence = file.sequence
          $0.lastVersions = store.totalVersions
        }
        return (file.path, skipped)
      } catch {
        skipped.append("\(file.path): \(error)")
      }
    }
    return (nil, skipped)
  }

  /// Adds every job of a checkpoint to the store, or none when one does not read back.
  private func restore(_ contents: SafeTensors.Contents) async throws {
    await store.adopt(try decode(contents, recoveredAtStart: true))
  }

  /// The jobs a checkpoint holds (with `replicas` in place of their own, when given).
  private func decode(
    _ contents: SafeTensors.Contents, renaming names: [String: String] = [:], replicas: Int32? = nil,
    recoveredAtStart: Bool = false
  ) throws -> [ParameterJob] {
    guard let text = contents.metadata[Self.metadataKey],
      let root = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any],
      let jobs = root["jobs"] as? [String: [String: Any]]
    else { throw SafeTensors.FormatError("no pipemesh metadata") }
    var restoredJobs: [ParameterJob] = []
    for (jobName, job) in jobs {
      guard let consistencyJSON = job["consistency"] as? String,
        let variables = job["variables"] as? [String: [String: Any]]
      else { throw SafeTensors.FormatError("job \(jobName) lacks consistency or variables") }
      // Format 1 kept each pusher's last step per job; it holds for each variable.
      let jobLastSteps = try Self.lastSteps(job["pushers"], of: jobName)
      var stored = try Pipemesh_V1_Consistency(jsonString: consistencyJSON)
      if let replicas { stored.replicas = replicas }
      let consistency = try JobConsistency(stored)
      var held: [String: HeldVariable] = [:]
      for (name, entry) in variables {
        guard let definitionJSON = entry["definition"] as? String,
          let version = (entry["version"] as? NSNumber)?.int64Value,
          let users = entry["users"] as? [String], let slotNames = entry["slots"] as? [String],
          let hashText = entry["initial_value_hash"] as? String, let hash = UInt64(hashText)
        else { throw SafeTensors.FormatError("variable \(jobName)/\(name) is incomplete") }
        // A variable its writer kept has no value here, only its definition.
        let value = contents.tensors["\(jobName)/\(name)"]
        guard value != nil || (entry["kept_by_writer"] as? Bool) == true else {
          throw SafeTensors.FormatError("variable \(jobName)/\(name) has no value")
        }
        var slots: [String: Tensor] = [:]
        for slot in slotNames {
          guard let tensor = contents.tensors["\(jobName)/\(name)@\(slot)"] else {
            throw SafeTensors.FormatError("slot \(slot) of \(jobName)/\(name) is missing")
          }
          slots[slot] = tensor
        }
        held[name] = try HeldVariable(
          definition: try Pipemesh_V1_VariableDefinition(jsonString: definitionJSON), initialValueHash: hash,
          value: value, slots: slots, version: version,
          syncStep: (entry["sync_step"] as? NSNumber)?.int64Value ?? 0,
          lastSteps: entry["pushers"] == nil ? jobLastSteps : try Self.lastSteps(entry["pushers"], of: jobName),
          users: Set(users))
      }
      restoredJobs.append(
        ParameterJob(
          restoring: held, name: names[jobName] ?? jobName, consistency: consistency, budget: store.budget,
          recoveredAtStart: recoveredAtStart))
    }
    return restoredJobs
  }

  private static func pushersMetadata(_ lastSteps: [Pusher: Int64]) -> [[String: Any]] {
    lastSteps.sorted { ($0.key.user, $0.key.replica) < ($1.key.user, $1.key.replica) }.map {
      ["user": $0.key.user, "replica": $0.key.replica, "step": $0.value]
    }
  }

  /// Pushers' last steps as `pushersMetadata` wrote them (none when absent).
  private static func lastSteps(_ entry: Any?, of job: String) throws -> [Pusher: Int64] {
    guard let entry else { return [:] }
    guard let pushers = entry as? [[String: Any]] else {
      throw SafeTensors.FormatError("job \(job) has a malformed pushers list")
    }
    var lastSteps: [Pusher: Int64] = [:]
    for pusher in pushers {
      guard let user = pusher["user"] as? String, let replica = (pusher["replica"] as? NSNumber)?.int32Value,
        let step = (pusher["step"] as? NSNumber)?.int64Value
      else { throw SafeTensors.FormatError("job \(job) has a malformed pusher entry") }
      lastSteps[Pusher(user: user, replica: replica)] = step
    }
    return lastSteps
  }
}
