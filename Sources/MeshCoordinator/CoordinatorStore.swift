import Foundation
import GRDB
import MeshProto
import MeshRPC
import MeshWire

/// The coordinator's durable state: every job's record and the model
/// registry, in one SQLite database (`coordinator.sqlite`, write-ahead
/// logged) beside the models' weight files (`models/NAME/vN.safetensors`).
///
/// Rows keep the fields they are looked up by in columns and the rest as a
/// protobuf message (`record`), which later versions read with the fields
/// they add left unset. Schema changes are migrations, applied in order
/// when the store opens.
public final class CoordinatorStore: Sendable {
  /// Where the database and weights live; nil for a store in memory.
  public let directory: String?
  /// Where model weights are written: under `directory`, or a temporary
  /// folder removed with the store when it lives in memory.
  let modelsDirectory: String
  private let database: any DatabaseWriter

  /// Opens (creating and migrating) the state under `directory`, or a store
  /// in memory whose jobs and models end with the process when nil.
  public init(directory: String?) throws {
    self.directory = directory
    do {
      if let directory {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        database = try DatabasePool(path: "\(directory)/coordinator.sqlite")
        modelsDirectory = "\(directory)/models"
      } else {
        database = try DatabaseQueue()
        modelsDirectory = NSTemporaryDirectory() + "pipemesh-models-\(UUID().uuidString)"
      }
      try FileManager.default.createDirectory(atPath: modelsDirectory, withIntermediateDirectories: true)
      try Self.migrator.migrate(database)
    } catch let error as DatabaseError {
      throw RPCError(.internal, "the coordinator's state in \(directory ?? "memory") cannot be opened: \(error)")
    }
  }

  deinit {
    if directory == nil { try? FileManager.default.removeItem(atPath: modelsDirectory) }
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
    return migrator
  }

  // MARK: - Jobs

  /// A job as stored: `record` holds everything but its live memory figures.
  struct StoredJob: Sendable {
    var record: Pipemesh_V1_Job
    /// The job's name on the partitions and the ps.
    var runID: String
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

    init(_ job: StoredJob) throws {
      var record = job.record
      record.memory = []
      name = record.job
      owner = record.owner
      state = "\(record.state)"
      runId = job.runID
      createdAt = record.createdUnixSeconds
      self.record = try record.serializedData()
    }

    func stored() throws -> StoredJob {
      StoredJob(record: try Pipemesh_V1_Job(serializedBytes: record), runID: runId)
    }
  }

  /// Adds a job's record, replacing the one of that name.
  func save(_ job: StoredJob) throws {
    try write { db in try JobRow(job).save(db) }
  }

  /// The job of that name.
  func job(_ name: String) throws -> StoredJob? {
    try read { db in try JobRow.fetchOne(db, key: name)?.stored() }
  }

  /// Jobs in name order after `after`, at most `limit`, optionally in one state.
  func jobs(state: Pipemesh_V1_JobState?, after: String, limit: Int) throws -> [StoredJob] {
    try read { db in
      var request = JobRow.filter(Column("name") > after)
      if let state { request = request.filter(Column("state") == "\(state)") }
      return try request.order(Column("name")).limit(limit).fetchAll(db).map { try $0.stored() }
    }
  }

  /// How many jobs are in each state ("running", "succeeded", …).
  func jobCounts() throws -> [String: Int] {
    try read { db in
      let rows = try Row.fetchAll(db, sql: "SELECT state, COUNT(*) AS count FROM job GROUP BY state")
      return Dictionary(uniqueKeysWithValues: rows.map { ($0["state"] as String, $0["count"] as Int) })
    }
  }

  /// Forgets a job's record, unless a job of that name with another run id
  /// replaced it meanwhile.
  func deleteJob(_ name: String, runID: String) throws {
    _ = try write { db in
      try JobRow.filter(Column("name") == name && Column("run_id") == runID).deleteAll(db)
    }
  }

  /// Marks the jobs stored as running interrupted (the coordinator that ran
  /// them stopped) and returns them.
  func interruptRunningJobs(at time: Double) throws -> [StoredJob] {
    try write { db in
      let running = try JobRow.filter(Column("state") == "\(Pipemesh_V1_JobState.running)").fetchAll(db)
      return try running.map { row in
        var job = try row.stored()
        job.record.state = .interrupted
        job.record.endedUnixSeconds = time
        job.record.error = "the coordinator stopped while the job ran, at step \(job.record.step)"
        try JobRow(job).update(db)
        return job
      }
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

  /// Registers a new version of `record.name`: numbers it (one past the
  /// newest, v1 first), lets `writeWeights` write its weights to the path
  /// given (for that version; it returns their size), and records it only
  /// once they are written.
  func addModel(
    _ record: Pipemesh_V1_Model, writeWeights: (_ path: String, _ version: Int32) throws -> Int64
  ) throws -> StoredModel {
    // One registration at a time: the version is counted and taken together.
    try write { db in
      let newest = try Int.fetchOne(db, sql: "SELECT MAX(version) FROM model WHERE name = ?", arguments: [record.name])
      var model = StoredModel(record: record, weightsFile: "")
      model.record.version = Int32((newest ?? 0) + 1)
      model.weightsFile = "\(record.name)/v\(model.record.version).safetensors"
      try FileManager.default.createDirectory(
        atPath: "\(modelsDirectory)/\(record.name)", withIntermediateDirectories: true)
      model.record.weightsBytes = try writeWeights(weightsPath(model), model.record.version)
      try ModelRow(
        name: record.name, version: Int(model.record.version), owner: record.owner, job: record.job,
        createdAt: record.createdUnixSeconds, weightsFile: model.weightsFile, record: try model.record.serializedData()
      ).insert(db)
      return model
    }
  }

  /// The version a reference names (the newest without a version).
  func model(_ reference: ModelReference) throws -> StoredModel? {
    try read { db in
      var request = ModelRow.filter(Column("name") == reference.name)
      if let version = reference.version { request = request.filter(Column("version") == version) }
      return try request.order(Column("version").desc).fetchOne(db)?.model()
    }
  }

  /// Every version of `name` (of every model when empty), by name, newest first.
  func models(named name: String) throws -> [StoredModel] {
    try read { db in
      let request = name.isEmpty ? ModelRow.all() : ModelRow.filter(Column("name") == name)
      return try request.order(Column("name"), Column("version").desc).fetchAll(db).map { try $0.model() }
    }
  }

  /// Forgets model versions and removes their weight files.
  func deleteModels(_ models: [StoredModel]) throws {
    try write { db in
      for model in models {
        _ = try ModelRow.deleteOne(db, key: ["name": model.record.name, "version": Int(model.record.version)])
      }
    }
    for model in models { try? FileManager.default.removeItem(atPath: weightsPath(model)) }
  }

  // MARK: - Access

  private func read<T>(_ body: (Database) throws -> T) throws -> T {
    do { return try database.read(body) } catch let error as DatabaseError { throw storeError(error) }
  }

  private func write<T>(_ body: (Database) throws -> T) throws -> T {
    do { return try database.write(body) } catch let error as DatabaseError { throw storeError(error) }
  }

  private func storeError(_ error: DatabaseError) -> RPCError {
    RPCError(.internal, "the coordinator's state in \(directory ?? "memory") failed: \(error)")
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
    } catch let error as RPCError {
      throw RPCError(.invalidArgument, "\(field) '\(text.echoed)': \(error.message); give NAME or NAME:vN")
    }
    if parts.count == 2 {
      guard parts[1].hasPrefix("v"), let version = Int(parts[1].dropFirst()), version >= 1, version <= Int(Int32.max)
      else {
        throw RPCError(.invalidArgument, "\(field) '\(text.echoed)' has no version after ':'; give NAME or NAME:vN")
      }
      self.version = version
    } else {
      version = nil
    }
  }

  var description: String { version.map { "\(name):v\($0)" } ?? name }
}
