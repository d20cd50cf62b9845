import Foundation
import GRDB
import MeshCheckpoint
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// The coordinator's durable state: every job's record and the model
/// registry, in one SQLite database (`coordinator.sqlite`, write-ahead
/// logged) beside the models' weight files (`models/NAME/vN.safetensors`)
/// and the examples of jobs sent inline that may resume
/// (`job-data/RUN.safetensors`).
///
/// Rows keep the fields they are looked up by in columns and the rest as a
/// protobuf message (`record`), which later versions read with the fields
/// they add left unset. Schema changes are migrations, applied in order
/// when the store opens. Calls from requests use GRDB's asynchronous
/// access, so no request thread waits on the disk.
public final class CoordinatorStore: Sendable {
  /// Where the database and weights live; nil for a store in memory.
  public let directory: String?
  /// Where files are written: `directory`, or a temporary folder removed
  /// with the store when it lives in memory.
  private let files: String
  /// Where model weights are written.
  let modelsDirectory: String
  /// Where files on their way to `modelsDirectory` are written (uploads,
  /// imports, registrations), emptied at start: what a crash left there was
  /// never recorded, so it is no one's. Beside it, so that taking a file is
  /// a rename.
  private let incomingDirectory: String
  /// Where the examples of resumable jobs sent inline are kept.
  private let dataDirectory: String
  private let database: any DatabaseWriter

  /// Opens (creating and migrating) the state under `directory`, or a store
  /// in memory whose jobs and models end with the process when nil.
  public init(directory: String?) throws {
    self.directory = directory
    do {
      if let directory {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        database = try DatabasePool(path: "\(directory)/coordinator.sqlite")
        files = directory
      } else {
        database = try DatabaseQueue()
        files = NSTemporaryDirectory() + "pipemesh-coordinator-\(UUID().uuidString)"
      }
      modelsDirectory = "\(files)/models"
      dataDirectory = "\(files)/job-data"
      incomingDirectory = "\(files)/incoming"
      for folder in [modelsDirectory, dataDirectory, incomingDirectory] {
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
      }
      try Self.migrator.migrate(database)
      // Uploads, imports and registrations a crash cut short (and their files' temporaries).
      for file in (try? FileManager.default.contentsOfDirectory(atPath: incomingDirectory)) ?? [] {
        try? FileManager.default.removeItem(atPath: "\(incomingDirectory)/\(file)")
      }
      // What an earlier version left in the models directory: files, where models are folders.
      for file in (try? FileManager.default.contentsOfDirectory(atPath: modelsDirectory)) ?? []
      where file.hasPrefix("incoming-") || file.hasPrefix(AtomicFile.temporaryPrefix + "incoming-") {
        let path = "\(modelsDirectory)/\(file)"
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
          try? FileManager.default.removeItem(atPath: path)
        }
      }
    } catch let error as DatabaseError {
      throw CoordinatorError(
        .stateStoreFailed,
        "the coordinator's state in \(directory ?? "memory") cannot be opened: \(error)")
    }
  }

  deinit {
    if directory == nil { try? FileManager.default.removeItem(atPath: files) }
  }

  private static var migrator: DatabaseMigrator {
    var migrator = DatabaseMigrator()
    migrator.registerMigration("1: jobs and models") { db in
      try db.create(table: "job") { table in
        table.primaryKey("name", .text)
        table.column("owner", .text).notNull()
        table.column("state", .text).notNull().indexed()
        table.column("run_id", .text).notNull()
        table.column("created_at", .double).notNull()
        table.column("record", .blob).notNull()
      }
      try db.create(table: "model") { table in
        table.column("name", .text).notNull()
        table.column("version", .integer).notNull()
        table.column("owner", .text).notNull()
        table.column("job", .text).notNull()
        table.column("created_at", .double).notNull()
        table.column("weights_file", .text).notNull()
        table.column("record", .blob).notNull()
        table.primaryKey(["name", "version"])
      }
    }
    // A name's owner and the next version it gives: versions are never
    // reused, so "NAME:vN" always means the same weights.
    migrator.registerMigration("2: model names") { db in
      try db.create(table: "model_name") { table in
        table.primaryKey("name", .text)
        table.column("owner", .text).notNull()
        table.column("next_version", .integer).notNull()
      }
      try db.execute(
        sql: "INSERT INTO model_name SELECT name, owner, MAX(version) + 1 FROM model GROUP BY name")
    }
    // The run whose checkpoints hold a job's newest one (a resumed job runs
    // under a run id of its own until it writes a checkpoint).
    migrator.registerMigration("3: checkpoint runs") { db in
      try db.alter(table: "job") { table in table.add(column: "checkpoint_run", .text).notNull().defaults(to: "") }
    }
    // Partitions that joined the pool: a coordinator that restarts takes
    // them back (each with a fresh lease to renew).
    migrator.registerMigration("4: pool members") { db in
      try db.create(table: "pool_member") { table in
        table.primaryKey("endpoint", .text)
        table.column("joined_at", .double).notNull()
      }
    }
    // Whether a job trained with discard_model had its stages and variables
    // freed after it succeeded: a coordinator stopped in between frees them
    // when it starts again. Jobs stored before count as freed (new rows
    // always set the column).
    migrator.registerMigration("5: released discard jobs") { db in
      try db.alter(table: "job") { table in table.add(column: "released", .boolean).notNull().defaults(to: true) }
    }
    // What jobs that ran taught the planner (`StepCalibration`, as JSON),
    // by model and stages (`key`) and micro-batch rows.
    migrator.registerMigration("6: step calibrations") { db in
      try db.create(table: "step_calibration") { table in
        table.column("key", .blob).notNull()
        table.column("rows", .integer).notNull()
        table.column("recorded_at", .double).notNull()
        table.column("record", .blob).notNull()
        table.primaryKey(["key", "rows"])
      }
    }
    return migrator
  }

  // MARK: - Step calibrations

  /// The calibrations kept, oldest first, under their keys; one this
  /// version cannot read (another version's, or damaged) is left out, until
  /// newer ones push it past the capacity.
  func calibrations() throws -> [(key: Data, calibration: StepCalibration)] {
    try readNow { db in
      // In the order they were saved: a replaced row takes a rowid past every other.
      try Row.fetchAll(db, sql: "SELECT key, record FROM step_calibration ORDER BY rowid").compactMap { row in
        let record: Data = row["record"]
        let calibration = try? JSONDecoder().decode(StepCalibration.self, from: record)
        return calibration.flatMap { $0.isWellFormed ? (row["key"], $0) : nil }
      }
    }
  }

  /// Keeps `calibration` under `key`, in place of the one at its rows, and
  /// the newest `capacity` calibrations in all.
  func saveCalibration(_ calibration: StepCalibration, key: Data, at time: Double, capacity: Int) async throws {
    let record = try JSONEncoder().encode(calibration)
    try await write { db in
      try db.execute(
        sql: "INSERT OR REPLACE INTO step_calibration (key, rows, recorded_at, record) VALUES (?, ?, ?, ?)",
        arguments: [key, calibration.rows, time, record])
      try db.execute(
        sql: """
          DELETE FROM step_calibration WHERE rowid NOT IN
            (SELECT rowid FROM step_calibration ORDER BY rowid DESC LIMIT ?)
          """, arguments: [capacity])
    }
  }

  // MARK: - Pool members

  /// The partitions that joined the pool and have not left it, oldest first.
  func poolMembers() throws -> [String] {
    try readNow { db in
      try String.fetchAll(db, sql: "SELECT endpoint FROM pool_member ORDER BY joined_at, endpoint")
    }
  }

  /// Records that `endpoint` joined the pool (again: no change).
  func addPoolMember(_ endpoint: String, at time: Double) async throws {
    try await write { db in
      try db.execute(
        sql: "INSERT INTO pool_member (endpoint, joined_at) VALUES (?, ?) ON CONFLICT(endpoint) DO NOTHING",
        arguments: [endpoint, time])
    }
  }

  /// Records that `endpoint` left the pool (its lease lapsed).
  func removePoolMember(_ endpoint: String) async throws {
    try await write { db in try db.execute(sql: "DELETE FROM pool_member WHERE endpoint = ?", arguments: [endpoint]) }
  }

  // MARK: - Jobs

  /// A job as stored: `record` holds everything but its live memory figures.
  struct StoredJob: Sendable {
    var record: Pipemesh_V1_Job
    /// The job's name on the partitions and the ps.
    var runID: String
    /// The run whose checkpoints on the ps hold the newest one
    /// (`record.checkpointStep`); empty before the first.
    var checkpointRunID = ""
    /// For a job trained with discard_model: its stages and variables were
    /// freed once it succeeded.
    var released = false
  }

  private struct JobRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "job"
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase
    var name: String
    var owner: String
    var state: String
    var runId: String
    var createdAt: Double
    var record: Data
    var checkpointRun: String
    var released: Bool

    init(_ job: StoredJob) throws {
      var record = job.record
      record.memory = []
      name = record.job
      owner = record.owner
      state = "\(record.state)"
      runId = job.runID
      createdAt = record.createdUnixSeconds
      self.record = try record.serializedData()
      checkpointRun = job.checkpointRunID
      released = job.released
    }

    func stored() throws -> StoredJob {
      StoredJob(
        record: try Pipemesh_V1_Job(serializedBytes: record), runID: runId, checkpointRunID: checkpointRun,
        released: released)
    }
  }

  /// Decides whether a job may take a name: given the job stored under it
  /// and the owner of the model of that name (nil when none), it throws to
  /// refuse.
  typealias JobAdmission = @Sendable (_ existing: StoredJob?, _ modelOwner: String?) throws -> Void

  /// Asks `admit` about the name now (a cheap check before a job is built).
  func checkJobName(_ name: String, admit: @escaping JobAdmission) async throws {
    try await read { db in try admit(try JobRow.fetchOne(db, key: name)?.stored(), try Self.owner(ofModel: name, db)) }
  }

  /// Records a new job under its name when `admit` allows it, in one
  /// transaction (two Trains of a name cannot both pass); returns the job
  /// it replaced.
  func insertJob(_ job: StoredJob, admit: @escaping JobAdmission) async throws -> StoredJob? {
    try await write { db in
      let existing = try JobRow.fetchOne(db, key: job.record.job)?.stored()
      try admit(existing, try Self.owner(ofModel: job.record.job, db))
      try JobRow(job).save(db)
      return existing
    }
  }

  /// Writes a job's record, as long as the name still holds that job (a
  /// job that was replaced or deleted writes nothing).
  func update(_ job: StoredJob) async throws {
    let row = try JobRow(job)
    try await write { db in
      try db.execute(
        sql: "UPDATE job SET state = ?, record = ?, checkpoint_run = ? WHERE name = ? AND run_id = ?",
        arguments: [row.state, row.record, row.checkpointRun, row.name, row.runId])
    }
  }

  /// Records that a job trained with discard_model had its stages and
  /// variables freed.
  func markReleased(_ name: String, runID: String) async throws {
    try await write { db in
      try db.execute(sql: "UPDATE job SET released = 1 WHERE name = ? AND run_id = ?", arguments: [name, runID])
    }
  }

  /// The jobs trained with discard_model that succeeded but were not
  /// recorded as freed: the coordinator stopped in between.
  func unreleasedDiscardJobs() async throws -> [StoredJob] {
    try await read { db in
      try JobRow.filter(Column("state") == "\(Pipemesh_V1_JobState.succeeded)" && Column("released") == false)
        .fetchAll(db).map { try $0.stored() }.filter { $0.record.options.discardModel }
    }
  }

  /// The job of that name.
  func job(_ name: String) async throws -> StoredJob? {
    try await read { db in try JobRow.fetchOne(db, key: name)?.stored() }
  }

  /// Jobs in name order after `after`, at most `limit`, optionally in one state.
  func jobs(state: Pipemesh_V1_JobState?, after: String, limit: Int) async throws -> [StoredJob] {
    try await read { db in
      var request = JobRow.filter(Column("name") > after)
      if let state { request = request.filter(Column("state") == "\(state)") }
      return try request.order(Column("name")).limit(limit).fetchAll(db).map { try $0.stored() }
    }
  }

  /// How many jobs are in each state ("running", "succeeded", …): for
  /// metrics and status lines, outside requests.
  func jobCounts() throws -> [String: Int] {
    try readNow { db in
      let rows = try Row.fetchAll(db, sql: "SELECT state, COUNT(*) AS count FROM job GROUP BY state")
      return Dictionary(uniqueKeysWithValues: rows.map { ($0["state"] as String, $0["count"] as Int) })
    }
  }

  // MARK: - Examples of resumable jobs

  private func dataPath(_ runID: String) -> String { "\(dataDirectory)/\(runID).safetensors" }

  /// Keeps the examples a job was sent inline, so that it can resume.
  func saveData(of runID: String, inputs: Tensor, targets: Tensor) throws {
    do {
      try SafeTensors.write(.init(tensors: ["inputs": inputs, "targets": targets]), to: dataPath(runID))
    } catch {
      throw CoordinatorError(.stateStoreFailed, "the examples of \(runID) cannot be kept in \(dataDirectory): \(error)")
    }
  }

  /// The examples kept for a job; nil when none were.
  func data(of runID: String) throws -> (inputs: Tensor, targets: Tensor)? {
    guard let bytes = try? Data(contentsOf: URL(fileURLWithPath: dataPath(runID)), options: .alwaysMapped) else {
      return nil
    }
    let contents = try SafeTensors.decode(bytes)
    guard let inputs = contents.tensors["inputs"], let targets = contents.tensors["targets"] else {
      throw CoordinatorError(.storedDataDamaged, "the examples kept for \(runID) are incomplete")
    }
    return (inputs, targets)
  }

  /// Removes the examples kept for a job.
  func removeData(of runID: String) {
    try? FileManager.default.removeItem(atPath: dataPath(runID))
  }

  /// Forgets a job's record, unless a job of that name with another run id
  /// replaced it meanwhile.
  func deleteJob(_ name: String, runID: String) async throws {
    _ = try await write { db in
      try JobRow.filter(Column("name") == name && Column("run_id") == runID).deleteAll(db)
    }
  }

  /// Marks the jobs stored as running or queued interrupted (the
  /// coordinator that ran them stopped) and returns them, oldest first;
  /// called once, when the store opens.
  func interruptRunningJobs(at time: Double) throws -> [StoredJob] {
    try writeNow { db in
      let states = [Pipemesh_V1_JobState.running, .queued, .restarting].map { "\($0)" }
      let running = try JobRow.filter(states.contains(Column("state"))).fetchAll(db)
      return try running.map { row in
        var job = try row.stored()
        switch job.record.state {
        case .queued: job.record.error = "the coordinator stopped while the job was queued"
        case .restarting:
          job.record.error = "the coordinator stopped while the job restarted after: \(job.record.error)"
        default: job.record.error = "the coordinator stopped while the job ran, at step \(job.record.step)"
        }
        job.record.state = .interrupted
        job.record.endedUnixSeconds = time
        try JobRow(job).update(db)
        return job
      }
      // In the order they came: queued jobs keep their places.
      .sorted { $0.record.createdUnixSeconds < $1.record.createdUnixSeconds }
    }
  }

  // MARK: - Models

  private struct ModelRow: Codable, FetchableRecord, PersistableRecord {
    static let databaseTableName = "model"
    static let databaseColumnDecodingStrategy = DatabaseColumnDecodingStrategy.convertFromSnakeCase
    static let databaseColumnEncodingStrategy = DatabaseColumnEncodingStrategy.convertToSnakeCase
    var name: String
    var version: Int
    var owner: String
    var job: String
    var createdAt: Double
    var weightsFile: String
    var record: Data

    func model() throws -> StoredModel {
      StoredModel(record: try Pipemesh_V1_Model(serializedBytes: record), weightsFile: weightsFile)
    }
  }

  /// A registered model version and where its weights are.
  struct StoredModel: Sendable {
    var record: Pipemesh_V1_Model
    /// The safetensors file, relative to the models directory.
    var weightsFile: String

    var reference: ModelReference { ModelReference(name: record.name, version: Int(record.version)) }
  }

  /// The path of a model's weights file.
  func weightsPath(_ model: StoredModel) -> String { "\(modelsDirectory)/\(model.weightsFile)" }

  /// Where a new version's weights (or an upload, or an import's copy) are
  /// written before `addModel` takes them: a file of its own, on the models'
  /// filesystem, so that taking it is a rename.
  func incomingWeightsPath() -> String { "\(incomingDirectory)/\(UUID().uuidString).safetensors" }

  /// Registers the weights written at `incoming` as a new version of
  /// `record.name` when `admit` allows it (given the name's owner, nil for
  /// a new name): numbers it one past the name's last version ever (v1
  /// first; numbers are never reused), moves the file into place and
  /// records it, in one transaction.
  ///
  /// A job registers one version. The version is written into the row of
  /// `record.job` (the job stored under that name now) in the same
  /// transaction; when that row names one already, it is returned and
  /// `incoming` removed. A coordinator stopped after registering a job's
  /// model but before saving its success resumes the job, which registers
  /// again when it ends.
  func addModel(
    _ record: Pipemesh_V1_Model, weights incoming: String, admit: @escaping @Sendable (_ owner: String?) throws -> Void
  ) async throws -> StoredModel {
    let modelsDirectory = modelsDirectory
    let size = (try? FileManager.default.attributesOfItem(atPath: incoming)[.size] as? NSNumber)?.int64Value ?? 0
    let moved = Mutex<String?>(nil)
    do {
      return try await write { db in
        let owner = try Self.owner(ofModel: record.name, db)
        try admit(owner)
        if let registered = try Self.model(registeredBy: record.job, db) {
          try? FileManager.default.removeItem(atPath: incoming)
          return registered
        }
        let next =
          try Int.fetchOne(db, sql: "SELECT next_version FROM model_name WHERE name = ?", arguments: [record.name]) ?? 1
        var model = StoredModel(record: record, weightsFile: "\(record.name)/v\(next).safetensors")
        model.record.version = Int32(next)
        model.record.weightsBytes = size
        try db.execute(
          sql: """
            INSERT INTO model_name (name, owner, next_version) VALUES (?, ?, ?)
            ON CONFLICT (name) DO UPDATE SET next_version = excluded.next_version
            """, arguments: [record.name, owner ?? record.owner, next + 1])
        try ModelRow(
          name: record.name, version: next, owner: record.owner, job: record.job, createdAt: record.createdUnixSeconds,
          weightsFile: model.weightsFile, record: try model.record.serializedData()
        ).insert(db)
        try FileManager.default.createDirectory(
          atPath: "\(modelsDirectory)/\(record.name)", withIntermediateDirectories: true)
        if !record.job.isEmpty, var job = try JobRow.fetchOne(db, key: record.job)?.stored() {
          job.record.model = "\(model.reference)"
          try db.execute(
            sql: "UPDATE job SET record = ? WHERE name = ?", arguments: [try JobRow(job).record, record.job])
        }
        // rename(2) replaces what a registration whose transaction did not commit left there.
        let destination = "\(modelsDirectory)/\(model.weightsFile)"
        guard rename(incoming, destination) == 0 else {
          throw CoordinatorError(
            .stateStoreFailed,
            "the coordinator could not move the weights into place: \(String(cString: strerror(errno)))")
        }
        moved.withLock { $0 = destination }
        return model
      }
    } catch {
      try? FileManager.default.removeItem(atPath: incoming)
      // Moved into place, but the transaction did not commit (cancelled): no version's file.
      if let destination = moved.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: destination) }
      throw error
    }
  }

  /// The version the job stored under the name `job` registered, if it has
  /// (a new job of that name starts without one).
  func model(registeredBy job: String) async throws -> StoredModel? {
    try await read { db in try Self.model(registeredBy: job, db) }
  }

  private static func model(registeredBy job: String, _ db: Database) throws -> StoredModel? {
    guard !job.isEmpty, let stored = try JobRow.fetchOne(db, key: job)?.stored(), !stored.record.model.isEmpty,
      let reference = try? ModelReference(parsing: stored.record.model, field: "model"), let version = reference.version
    else { return nil }
    return try ModelRow.filter(Column("name") == reference.name && Column("version") == version).fetchOne(db)?.model()
  }

  /// The owner of the model `name`, nil when it has never had a version.
  private static func owner(ofModel name: String, _ db: Database) throws -> String? {
    try String.fetchOne(db, sql: "SELECT owner FROM model_name WHERE name = ?", arguments: [name])
  }

  /// The version a reference names (the newest without a version).
  func model(_ reference: ModelReference) async throws -> StoredModel? {
    try await read { db in
      var request = ModelRow.filter(Column("name") == reference.name)
      if let version = reference.version { request = request.filter(Column("version") == version) }
      return try request.order(Column("version").desc).fetchOne(db)?.model()
    }
  }

  /// Every version of `name` (of every model when empty), by name, newest first.
  func models(named name: String) async throws -> [StoredModel] {
    try await read { db in
      let request = name.isEmpty ? ModelRow.all() : ModelRow.filter(Column("name") == name)
      return try request.order(Column("name"), Column("version").desc).fetchAll(db).map { try $0.model() }
    }
  }

  /// Forgets model versions and removes their weight files.
  func deleteModels(_ models: [StoredModel]) async throws {
    try await write { db in
      for model in models {
        _ = try ModelRow.deleteOne(db, key: ["name": model.record.name, "version": Int(model.record.version)])
      }
    }
    for model in models { try? FileManager.default.removeItem(atPath: weightsPath(model)) }
  }

  // MARK: - Access

  private func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
    do { return try await database.read(body) } catch let error as DatabaseError { throw storeError(error) }
  }

  private func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
    do { return try await database.write(body) } catch let error as DatabaseError { throw storeError(error) }
  }

  /// Blocking access, for the few calls outside requests.
  private func readNow<T>(_ body: (Database) throws -> T) throws -> T {
    do { return try database.read(body) } catch let error as DatabaseError { throw storeError(error) }
  }

  private func writeNow<T>(_ body: (Database) throws -> T) throws -> T {
    do { return try database.write(body) } catch let error as DatabaseError { throw storeError(error) }
  }

  private func storeError(_ error: DatabaseError) -> CoordinatorError {
    CoordinatorError(.stateStoreFailed, "the coordinator's state in \(directory ?? "memory") failed: \(error)")
  }
}

/// "NAME" (the newest version) or "NAME:vN".
struct ModelReference: Sendable, Hashable, CustomStringConvertible {
  let name: String
  let version: Int?

  init(name: String, version: Int?) {
    self.name = name
    self.version = version
  }

  /// Parses a reference, checking the name as a job name.
  init(parsing text: String, field: String) throws {
    let parts = text.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
    name = String(parts[0])
    do {
      try MeshNames.checkJob(name, maxLength: CoordinatorService.maxJobName)
    } catch let error as WireError {
      throw WireError("\(field) '\(text.echoed)': \(error.message); give NAME or NAME:vN")
    }
    if parts.count == 2 {
      guard parts[1].hasPrefix("v"), let version = Int(parts[1].dropFirst()), version >= 1, version <= Int(Int32.max)
      else {
        throw CoordinatorError(
          .invalidRequest,
          "\(field) '\(text.echoed)' has no version after ':'; give NAME or NAME:vN")
      }
      self.version = version
    } else {
      version = nil
    }
  }

  var description: String { version.map { "\(name):v\($0)" } ?? name }
}
