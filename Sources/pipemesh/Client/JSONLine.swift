import Foundation
import MeshProto
import SwiftProtobuf

/// `message` as one line of JSON for scripts: protobuf's JSON mapping, with
/// 64-bit integers as numbers (not strings), enums by name, and every field
/// present: where the mapping leaves out a field at its default, the line
/// has its zero, empty string, false or empty list (a script reads the
/// `stage` of stage 0 as 0, not as missing). An unset message field stays
/// out, as do the members of a oneof not set.
func jsonLine(_ message: some SwiftProtobuf.Message) throws -> String {
  var options = JSONEncodingOptions()
  options.alwaysPrintInt64sAsNumbers = true
  let mapped = try JSONSerialization.jsonObject(with: Data(try message.jsonString(options: options).utf8))
  let whole = APIFields.shared.filling(mapped, as: type(of: message).protoMessageName)
  return String(
    decoding: try JSONSerialization.data(withJSONObject: whole, options: [.sortedKeys, .withoutEscapingSlashes]),
    as: UTF8.self)
}

/// The fields of every message of the API, from the descriptor set built
/// into MeshProto.
private struct APIFields: Sendable {
  static let shared = APIFields()

  /// Messages by full name (`pipemesh.v1.Job`).
  private var messages: [String: Google_Protobuf_DescriptorProto] = [:]
  /// Each enum's value 0, by the enum's full name.
  private var zeroValues: [String: String] = [:]

  private init() {
    guard let set = try? Google_Protobuf_FileDescriptorSet(serializedBytes: MeshDescriptors.fileDescriptorSet) else {
      return
    }
    for file in set.file { add(file.messageType, file.enumType, scope: file.package) }
  }

  private mutating func add(
    _ messages: [Google_Protobuf_DescriptorProto], _ enums: [Google_Protobuf_EnumDescriptorProto], scope: String
  ) {
    for value in enums {
      zeroValues["\(scope).\(value.name)"] = value.value.first { $0.number == 0 }?.name
    }
    for message in messages {
      let name = "\(scope).\(message.name)"
      self.messages[name] = message
      add(message.nestedType, message.enumType, scope: name)
    }
  }

  /// `value`, a message of type `type` in protobuf's JSON mapping, with the
  /// fields the mapping left out added at their defaults, at every depth.
  func filling(_ value: Any, as type: String) -> Any {
    guard var object = value as? [String: Any], let message = messages[type] else { return value }
    for field in message.field {
      let key = field.jsonName.isEmpty ? field.name : field.jsonName
      let fieldType = String(field.typeName.drop { $0 == "." })
      let isMap = messages[fieldType]?.options.mapEntry == true
      if let present = object[key] {
        guard field.type == .message, !isMap else { continue }
        object[key] =
          field.label == .repeated
          ? (present as? [Any])?.map { filling($0, as: fieldType) } ?? present : filling(present, as: fieldType)
        continue
      }
      // A oneof's member (or a proto3 optional) that is absent is unset.
      if field.hasOneofIndex { continue }
      if field.label == .repeated {
        object[key] = isMap ? [String: Any]() : [Any]()
        continue
      }
      switch field.type {
      case .message, .group: continue
      case .string, .bytes: object[key] = ""
      case .bool: object[key] = false
      case .enum: object[key] = zeroValues[fieldType] ?? 0
      default: object[key] = 0
      }
    }
    return object
  }
}
