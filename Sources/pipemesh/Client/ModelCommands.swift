import ArgumentParser
import Foundation
import MeshProto
import MeshRPC
import MeshWire

struct Models: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "List, show, export and delete the coordinator's registered models.",
    discussion: """
      A job that succeeds registers its weights as the next version of a model named after it \
      (NAME:v1, NAME:v2, …). Name a model as NAME (its newest version) or NAME:vN.

      Example: pipemesh models export digits:v2 --coordinator 127.0.0.1:7000 --out exported/
      """,
    subcommands: [List.self, Show.self, Export.self, Import.self, Delete.self],
    defaultSubcommand: List.self)

  struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List registered models, newest version first.")

    @OptionGroup var client: ClientOptions

    @Argument(help: "Only versions of this model.")
    var name: String?

    func run() async throws {
      try await withExitCodes {
        let list = try await client.client().call(CoordinatorMethods.listModels, .with { $0.name = name ?? "" })
        // With --json, the whole list as one line (`{"models": []}` when there are none).
        if client.json { return try client.printJSON(list) }
        for model in list.models { try client.show(model) }
      }
    }
  }

  struct Show: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Show one model version and its spec.")

    @OptionGroup var client: ClientOptions

    @Argument(help: "NAME or NAME:vN.")
    var model: String

    func run() async throws {
      try await withExitCodes {
        let record = try await client.client().call(CoordinatorMethods.getModel, .with { $0.model = model })
        if client.json { return try client.printJSON(record) }
        try client.show(record)
        say(try record.spec.jsonString())
      }
    }
  }

  struct Export: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Write a model version's weights (safetensors) and its record (JSON) to a folder.",
      discussion: """
        Writes NAME-vN.safetensors (float32 tensors named by variable, readable by the safetensors \
        package and NumPy) and NAME-vN.json (the model's record: spec, split, metrics).
        """)

    @OptionGroup var client: ClientOptions

    @Argument(help: "NAME or NAME:vN.")
    var model: String

    @Option(help: "Folder to write to (created if missing).")
    var out: String = "."

    func run() async throws {
      try await withExitCodes {
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        var record: Pipemesh_V1_Model?
        var file: FileHandle?
        var weightsPath = ""
        defer { try? file?.close() }
        for try await chunk in try client.client().stream(CoordinatorMethods.exportModel, .with { $0.model = model }) {
          if chunk.hasModel {
            record = chunk.model
            weightsPath = "\(out)/\(chunk.model.name)-v\(chunk.model.version).safetensors"
            guard FileManager.default.createFile(atPath: weightsPath + ".part", contents: nil) else {
              throw ValidationError("\(weightsPath).part cannot be created")
            }
            file = try FileHandle(forWritingTo: URL(fileURLWithPath: weightsPath + ".part"))
          }
          guard let file else { throw ValidationError("the coordinator sent weights before the model's record") }
          try file.write(contentsOf: chunk.data)
        }
        guard let record, let file else { throw ValidationError("the coordinator sent no model") }
        try file.close()
        _ = try? FileManager.default.removeItem(atPath: weightsPath)
        try FileManager.default.moveItem(atPath: weightsPath + ".part", toPath: weightsPath)
        let recordPath = "\(out)/\(record.name)-v\(record.version).json"
        try Data(try record.jsonString().utf8).write(to: URL(fileURLWithPath: recordPath))
        if client.json {
          try client.printJSON(record)
        } else {
          say("wrote \(weightsPath) and \(recordPath)")
        }
      }
    }
  }

  struct Import: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Register weights trained elsewhere as the next version of a model.",
      discussion: """
        The weights are a safetensors file with exactly the spec's variables, float32 (as `models \
        export` writes them): a file here, sent to the coordinator (--weights), or one already in \
        the coordinator's data directory, read there (--data-dir-weights, a path relative to it). \
        The model is a spec (--spec), or the record `models export` wrote (--record: its spec, split \
        and the rescaling of its inputs).

        Example: pipemesh models import digits-ft --record digits-v1.json --weights digits-v1.safetensors
        """)

    @OptionGroup var client: ClientOptions

    @Argument(help: "The model to add a version to.")
    var name: String

    @Option(help: "Model spec, protobuf JSON (read here).")
    var spec: String?

    @Option(help: "A model's record as `models export` writes it, NAME-vN.json (read here).")
    var record: String?

    @Option(help: "The safetensors file, read here and sent to the coordinator.")
    var weights: String?

    @Option(help: "The safetensors file, in the coordinator's data directory (read there).")
    var dataDirWeights: String?

    func validate() throws {
      guard (spec == nil) != (record == nil) else { throw ValidationError("give exactly one of --spec and --record") }
      guard (weights == nil) != (dataDirWeights == nil) else {
        throw ValidationError("give exactly one of --weights and --data-dir-weights")
      }
    }

    func run() async throws {
      var request = Pipemesh_V1_ImportModelRequest()
      request.name = name
      if let spec { request.spec = try ModelSpecFile.read(spec) }
      if let record {
        let exported: Pipemesh_V1_Model
        do {
          exported = try Pipemesh_V1_Model(jsonString: try String(contentsOfFile: record, encoding: .utf8))
        } catch {
          throw ValidationError("--record \(record) is not a model's record as `models export` writes it: \(error)")
        }
        request.spec = exported.spec
        request.splitPoints = exported.splitPoints
        request.splitPointInputs = exported.splitPointInputs
        request.normalization = exported.normalization
      }
      if let dataDirWeights {
        request.uri = dataDirWeights
        return try await withExitCodes {
          try client.show(try await client.client().call(CoordinatorMethods.importModel, request))
        }
      }
      let file = try WeightsFile(path: weights!)
      try await withExitCodes {
        try client.show(try await file.upload(as: request, to: try client.client()))
      }
    }
  }

  struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
      abstract: "Delete a model version (NAME:vN) or every version of a model (NAME), with their weights.")

    @OptionGroup var client: ClientOptions

    @Argument(help: "NAME or NAME:vN.")
    var model: String

    func run() async throws {
      try await withExitCodes {
        let deleted = try await client.client().call(CoordinatorMethods.deleteModel, .with { $0.model = model })
        if client.json { return try client.printJSON(deleted) }
        for record in deleted.models { try client.show(record) }
      }
    }
  }
}

extension ClientOptions {
  /// Prints a model version as JSON, or as one tab-separated line.
  func show(_ model: Pipemesh_V1_Model) throws {
    guard !json else { return try printJSON(model) }
    let created = Date(timeIntervalSince1970: model.createdUnixSeconds).formatted(.iso8601)
    say(
      "\(model.name):v\(model.version)\tjob \(model.job)\t\(model.parameters) parameters\t"
        + String(format: "loss %.4f", model.loss)
        + (model.validationLoss > 0 ? String(format: "\tvalidation loss %.4f", model.validationLoss) : "")
        + "\t\(created)")
  }
}
