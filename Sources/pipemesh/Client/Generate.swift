import ArgumentParser
import Foundation
import MeshCheckpoint
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire

/// `pipemesh generate`: text from a byte-level language model, one byte per
/// Infer call.
struct Generate: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Write text with a language model trained on a text dataset.",
    discussion: """
      Runs the prompt through a job's (or registered model's) pipeline, samples the next byte from the \
      model's output at the prompt's last position, appends it and goes on, a window of the model's input \
      length at a time. The model reads [steps] byte ids and gives 256 logits at each position, as \
      examples/char-lm.json does; its layers must be causal (a position sees only those before it), as \
      Transformer blocks and LSTMs are, since a prompt shorter than the window is padded after its end. \
      With --run, the model of a `pipemesh up` run folder computes here, in this process.

      Example: pipemesh generate --coordinator 127.0.0.1:7000 --model char-lm --prompt "ROMEO." --length 300

      From a run folder: pipemesh generate --run runs/20261204-121317 --prompt "ROMEO."
      """)

  @OptionGroup var client: ClientOptions

  @Option(help: "A trained job.")
  var job: String?

  @Option(help: "A registered model instead of a job: NAME (its newest version) or NAME:vN.")
  var model: String?

  @Option(help: "A run folder of `pipemesh up`: its model.json and checkpoint.safetensors, computed here.")
  var run: String?

  @Option(help: "The text to go on from (its UTF-8 bytes).")
  var prompt: String = "\n"

  @Option(help: "Bytes to write after the prompt.")
  var length: Int = 200

  @Option(
    help: "Softmax temperature of the sampling: lower is surer, higher more varied; 0 always takes the likeliest byte.")
  var temperature: Float = 0.8

  @Option(help: "Seed of the sampling: the same seed and model write the same text.")
  var seed: UInt64 = 1

  func validate() throws {
    guard [job, model, run].compactMap({ $0 }).count == 1 else {
      throw ValidationError("give exactly one of --job, --model and --run")
    }
    guard !prompt.isEmpty else { throw ValidationError("--prompt needs at least one character") }
    guard (1...1_000_000).contains(length) else { throw ValidationError("--length must be 1 to 1000000") }
    guard temperature >= 0, temperature.isFinite else { throw ValidationError("--temperature must be 0 or more") }
  }

  func run() async throws {
    try await withExitCodes {
      let model: any LanguageModel = if let run { try RunFolderModel(folder: run) } else { try await meshModel() }
      let window = model.window
      var text = Array(prompt.utf8)
      if !client.json { write(text) }
      var sampler = Sampler(temperature: temperature, seed: seed)
      for _ in 0..<length {
        let context = Array(text.suffix(window))
        let padded = context + [UInt8](repeating: UInt8(ascii: " "), count: window - context.count)
        let outputs = try await model.logits(Tensor(shape: [1, window], scalars: padded.map(Float.init)))
        guard outputs.shape == [1, window, 256] else {
          throw ValidationError(
            "the model gives outputs of shape \(Array(outputs.shape.dropFirst())) per example; generate needs "
              + "256 logits at each of its \(window) positions, [\(window), 256]")
        }
        let last = (context.count - 1) * 256
        let byte = UInt8(sampler.draw(logits: Array(outputs.scalars[last..<(last + 256)])))
        text.append(byte)
        if !client.json { write([byte]) }
      }
      if client.json {
        let generated = String(decoding: text.dropFirst(prompt.utf8.count), as: UTF8.self)
        let object: [String: Any] = ["prompt": prompt, "text": generated]
        say(String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self))
      } else {
        write(Array("\n".utf8))
      }
    }
  }

  /// The job or registered model, computed by the mesh.
  private func meshModel() async throws -> MeshModel {
    let coordinator = try client.client()
    let spec = try await Infer.spec(job: job, model: model, coordinator: coordinator)
    return try MeshModel(coordinator: coordinator, job: job ?? "", model: model ?? "", window: Self.window(of: spec))
  }

  /// The number of bytes a model reads: its input shape, which must be [steps].
  static func window(of spec: Pipemesh_V1_ModelSpec) throws -> Int {
    guard spec.inputShape.count == 1, let window = Int(exactly: spec.inputShape[0]), window >= 1 else {
      throw ValidationError(
        "the model reads inputs of shape \(spec.inputShape); generate needs a model of byte sequences, [steps]")
    }
    return window
  }

  /// Writes bytes to standard output as they come (the text is not buffered by line).
  private func write(_ bytes: [UInt8]) {
    FileHandle.standardOutput.write(Data(bytes))
  }
}

/// Logits of a model that reads windows of bytes.
protocol LanguageModel {
  /// The bytes the model reads at once.
  var window: Int { get }
  /// The outputs for a batch of windows `[1, window]`.
  func logits(_ windows: Tensor) async throws -> Tensor
}

/// A job or registered model on a coordinator: each window is an Infer call.
struct MeshModel: LanguageModel {
  let coordinator: RPCClient
  let job: String
  let model: String
  let window: Int

  func logits(_ windows: Tensor) async throws -> Tensor {
    let response = try await coordinator.call(
      CoordinatorMethods.infer,
      .with {
        $0.job = job
        $0.model = model
        $0.inputs = Pipemesh_V1_Tensor(windows)
      })
    return try Tensor(wire: response.outputs, what: "outputs")
  }
}

/// The model a `pipemesh up` run trained, from its folder: model.json and
/// the ps task's final checkpoint, computed in this process.
struct RunFolderModel: LanguageModel {
  let network: Sequential
  let variables: [String: Tensor]
  let window: Int
  /// The rescaling of the inputs the job trained with (its job.json), if any.
  let normalizer: Normalizer?

  init(folder: String) throws {
    let spec = try ModelSpecFile.read((folder as NSString).appendingPathComponent("model.json"))
    window = try Generate.window(of: spec)
    network = try makeModel(spec)
    let path = (folder as NSString).appendingPathComponent("checkpoint.safetensors")
    let byName: [String: Tensor]
    do {
      byName = try checkpointVariables(at: path, of: network)
    } catch {
      throw ValidationError("--run: cannot read \(path): \(error)")
    }
    var variables: [String: Tensor] = [:]
    for declaration in network.variableDeclarations() {
      guard let value = byName[declaration.name], value.shape == declaration.shape else {
        throw ValidationError(
          "--run: \(path) holds no variable \(declaration.name) of shape \(declaration.shape) "
            + "(a model of parts, over 16 MiB a variable, is read through a coordinator: models import)")
      }
      variables[declaration.name] = value
    }
    self.variables = variables
    let record = (folder as NSString).appendingPathComponent("job.json")
    if let text = try? String(contentsOfFile: record, encoding: .utf8) {
      do {
        normalizer = try Pipemesh_V1_Job(jsonString: text).options.normalization.checked(
          for: network, field: "\(record): normalization")
      } catch {
        throw ValidationError("--run: cannot read \(record): \(error)")
      }
    } else {
      normalizer = nil
    }
  }

  func logits(_ windows: Tensor) async throws -> Tensor {
    do {
      try network.validate(input: windows)
    } catch {
      throw ValidationError("--run: the model cannot read this text: \(error.message)")
    }
    return network(normalizer?.apply(to: windows) ?? windows, variables: variables)
  }
}

/// Draws class indices from logits: softmax at a temperature, from a
/// seeded stream (the same seed draws the same indices on every machine).
struct Sampler {
  let temperature: Float
  let seed: UInt64
  private var counter: UInt64 = 0

  init(temperature: Float, seed: UInt64) {
    self.temperature = temperature
    self.seed = seed
  }

  /// The next index: the largest logit at temperature 0, else one drawn with
  /// probability softmax(logits / temperature).
  mutating func draw(logits: [Float]) -> Int {
    let largest = logits.indices.max { logits[$0] < logits[$1] } ?? 0
    guard temperature > 0 else { return largest }
    let weights = logits.map { Double(($0 - logits[largest]) / temperature) }.map(exp)
    var remaining = Double(PortableRandom.unitFloat(seed: seed, counter: counter)) * weights.reduce(0, +)
    counter += 1
    for (index, weight) in weights.enumerated() {
      remaining -= weight
      if remaining < 0 { return index }
    }
    return largest
  }
}
