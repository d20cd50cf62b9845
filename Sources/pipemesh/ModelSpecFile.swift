import ArgumentParser
import Foundation
import MeshProto
import SwiftProtobuf

/// A model spec file (`pipemesh.v1.ModelSpec` in protobuf's JSON form, as
/// in examples/), read with errors that say which file and what to fix.
enum ModelSpecFile {
  static func read(_ path: String) throws -> Pipemesh_V1_ModelSpec {
    let text: String
    do {
      text = try String(contentsOfFile: path, encoding: .utf8)
    } catch {
      let reason =
        !FileManager.default.fileExists(atPath: path)
        ? "no such file"
        : FileManager.default.isReadableFile(atPath: path) ? "it is not UTF-8 text" : "it is not readable"
      throw ValidationError("cannot read model spec \(path): \(reason)")
    }
    do {
      return try Pipemesh_V1_ModelSpec(jsonString: text)
    } catch JSONDecodingError.unknownField(let name) {
      let suggestion = closest(to: name, among: fieldNames).map { "; did you mean '\($0)'?" } ?? ""
      throw ValidationError("model spec \(path): unknown field '\(name)'\(suggestion) \(Self.guide)")
    } catch JSONDecodingError.unrecognizedEnumValue {
      throw ValidationError(
        "model spec \(path): an enum value is not one of its names (activations are ACTIVATION_RELU, "
          + "ACTIVATION_TANH, ACTIVATION_SIGMOID, ACTIVATION_GELU) \(Self.guide)")
    } catch let error as JSONDecodingError {
      throw ValidationError("model spec \(path) is not valid JSON for a model spec (\(error)) \(Self.guide)")
    } catch {
      throw ValidationError("model spec \(path): \(error) \(Self.guide)")
    }
  }

  private static let guide = "(see examples/*.json, and ModelSpec in docs/api.md)"

  /// The field names a model spec may hold, at any depth, in their JSON and proto forms.
  static let fieldNames: Set<String> = {
    guard let set = try? Google_Protobuf_FileDescriptorSet(serializedBytes: MeshDescriptors.fileDescriptorSet) else {
      return []
    }
    func names(_ message: Google_Protobuf_DescriptorProto) -> [String] {
      message.field.flatMap { [$0.name, $0.jsonName] } + message.nestedType.flatMap(names)
    }
    return Set(set.file.filter { $0.name == "pipemesh/v1/model.proto" }.flatMap { $0.messageType.flatMap(names) })
  }()

  /// The name among `candidates` fewest edits from `name`, if a plausible misspelling of it.
  static func closest(to name: String, among candidates: Set<String>) -> String? {
    let scored = candidates.map { ($0, editDistance(name.lowercased(), $0.lowercased())) }
    guard let best = scored.min(by: { ($0.1, $0.0) < ($1.1, $1.0) }) else { return nil }
    return best.1 <= max(1, name.count / 3) ? best.0 : nil
  }

  /// Levenshtein distance: insertions, deletions and substitutions.
  static func editDistance(_ a: String, _ b: String) -> Int {
    let (a, b) = (Array(a), Array(b))
    var previous = Array(0...b.count)
    for (i, x) in a.enumerated() {
      var current = [i + 1] + Array(repeating: 0, count: b.count)
      for (j, y) in b.enumerated() {
        current[j + 1] = min(previous[j + 1] + 1, current[j] + 1, previous[j] + (x == y ? 0 : 1))
      }
      previous = current
    }
    return previous[b.count]
  }
}
