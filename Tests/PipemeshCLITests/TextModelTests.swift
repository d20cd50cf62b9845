import Foundation
import MeshTestSupport
import Testing

/// A language model on text as a user trains one: a .txt file in the
/// coordinator's data directory, read in windows of bytes, a Transformer with
/// learned positions split over two partitions, then `pipemesh generate`.
@Suite(.serialized) struct TextModelTests {
  /// A small character model: the spec of examples/char-lm.json at a size a
  /// debug build trains in seconds.
  static let spec = """
    {
      "inputShape": ["32"], "seed": "3",
      "layers": [
        {"embedding": {"vocabularySize": "256", "dimension": "32", "positions": "POSITION_ENCODING_LEARNED"}},
        {"transformerBlock": {"heads": "2", "mlpHidden": "64"}},
        {"layerNorm": {}},
        {"dense": {"units": "256"}}
      ],
      "loss": {"softmaxCrossEntropy": {}}
    }
    """

  @Test func aCharacterModelTrainsOnATextFileAndWritesText() async throws {
    let directory = try TemporaryDirectory(prefix: "pipemesh-text")
    let data = try TemporaryDirectory(prefix: "pipemesh-text-data")
    // The first 16 KB of the bundled plays: 511 windows of 32 bytes.
    let plays = try Data(contentsOf: URL(fileURLWithPath: Repository.path("datasets/shakespeare/tragedies.txt")))
    try plays.prefix(16_384).write(to: URL(fileURLWithPath: data.file("excerpt.txt")))
    try Self.spec.write(toFile: directory.file("char.json"), atomically: true, encoding: .utf8)
    let mesh = try await LocalMesh(partitions: 2)
    let coordinator = try await mesh.coordinator([[0], [1]], name: "text", arguments: ["--data-dir", data.path])
    let endpoint = coordinator.endpoint

    let train = try await pipemesh(
      [
        "train", "--coordinator", endpoint, "--job", "chars", "--model", directory.file("char.json"), "--dataset",
        "excerpt.txt", "--epochs", "3", "--batch-size", "32", "--micro-batches", "2", "--learning-rate", "0.01",
        "--json",
      ], in: directory)
    #expect(train.status == 0, "\(train.output)\n\(coordinator.process.log)")
    let lines = train.output.split(separator: "\n").compactMap {
      try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
    let losses = lines.filter { $0["done"] as? Bool != true && $0["evaluated"] as? Bool != true }
      .compactMap { $0["loss"] as? Double }
    // From uniform over 256 bytes (ln 256 = 5.55) to well under it: the model learned the text's bytes.
    #expect(losses.count >= 30, "\(train.output)")
    #expect((losses.first ?? 0) > 5, "\(losses)")
    #expect((losses.suffix(5).reduce(0, +) / 5) < 3.6, "\(losses)")
    let validation = lines.filter { $0["evaluated"] as? Bool == true }.compactMap { $0["validationLoss"] as? Double }
    #expect(validation.count == 3 && (validation.last ?? 9) < 3.6, "\(validation)")

    // The job recorded the window it was read in.
    let status = try await pipemesh(["status", "--coordinator", endpoint, "--job", "chars", "--json"], in: directory)
    #expect(status.output.contains("\"sequenceLength\":32"), "\(status.output)")

    // Sampling is seeded: the same seed writes the same text, another seed other text.
    func generate(_ extra: [String]) async throws -> String {
      let run = try await pipemesh(
        ["generate", "--coordinator", endpoint, "--job", "chars", "--prompt", "HAMLET", "--length", "40", "--json"]
          + extra, in: directory)
      #expect(run.status == 0, "\(run.output)")
      let object = try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any]
      #expect(object?["prompt"] as? String == "HAMLET")
      return try #require(object?["text"] as? String, "\(run.output)")
    }
    let first = try await generate(["--seed", "5"])
    #expect(first.utf8.count == 40 || first.unicodeScalars.contains("\u{FFFD}"), "\(first)")
    #expect(try await generate(["--seed", "5"]) == first)
    #expect(try await generate(["--seed", "6"]) != first)
    let likeliest = try await generate(["--temperature", "0"])
    #expect(try await generate(["--temperature", "0", "--seed", "9"]) == likeliest)
    // What a model of this text writes most: letters, spaces and line ends.
    let common = likeliest.unicodeScalars.filter { $0.properties.isAlphabetic || $0 == " " || $0 == "\n" }
    #expect(common.count >= 30, "\(likeliest)")
    // Without --json: the prompt, then the text as it is written.
    let plain = try await pipemesh(
      ["generate", "--coordinator", endpoint, "--job", "chars", "--prompt", "HAMLET", "--length", "10"], in: directory)
    #expect(plain.status == 0 && plain.output.hasPrefix("HAMLET"), "\(plain.output)")

    // A window other than the model's input is refused at Train, naming both shapes.
    let mismatch = try await pipemesh(
      [
        "train", "--coordinator", endpoint, "--job", "chars-16", "--model", directory.file("char.json"), "--dataset",
        "excerpt.txt", "--sequence-length", "16",
      ], in: directory)
    #expect(mismatch.status == 65, "\(mismatch.output)")
    #expect(mismatch.output.contains("16") && mismatch.output.contains("32"), "\(mismatch.output)")
    // A text needs a sequence model: the default MLP is not one.
    let noModel = try await pipemesh(
      ["train", "--coordinator", endpoint, "--dataset", "shakespeare"], in: directory)
    #expect(noModel.status == 64 && noModel.output.contains("examples/char-lm.json"), "\(noModel.output)")
    // A run folder of `up` generates here, without a mesh.
    let up = try await pipemesh(
      [
        "up", "--in-process", "--model", directory.file("char.json"), "--dataset", data.file("excerpt.txt"),
        "--epochs", "3", "--batch-size", "32", "--micro-batches", "2", "--learning-rate", "0.01",
      ], in: directory)
    #expect(up.status == 0, "\(up.output)")
    #expect(up.output.contains("bits/byte)"), "\(up.output)")
    let folders = try FileManager.default.contentsOfDirectory(atPath: directory.file("runs"))
    let folder = directory.file("runs/\(try #require(folders.first))")
    func generateHere() async throws -> String {
      let run = try await pipemesh(
        ["generate", "--run", folder, "--prompt", "HAMLET", "--length", "40", "--temperature", "0", "--json"],
        in: directory)
      #expect(run.status == 0, "\(run.output)")
      let object = try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any]
      return try #require(object?["text"] as? String, "\(run.output)")
    }
    let local = try await generateHere()
    #expect(try await generateHere() == local)
    #expect(
      local.unicodeScalars.filter { $0.properties.isAlphabetic || $0 == " " || $0 == "\n" }.count >= 30, "\(local)")
    let noFolder = try await pipemesh(["generate", "--run", directory.file("nowhere")], in: directory)
    #expect(noFolder.status != 0 && noFolder.output.contains("nowhere"), "\(noFolder.output)")

    // The processes are killed as `mesh` and `coordinator` go, whether the test passed or not.
    withExtendedLifetime(mesh) {}
  }
}
