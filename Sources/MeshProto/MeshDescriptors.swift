import Foundation

/// The schema of every message and service in `protos/`.
public enum MeshDescriptors {
  /// A serialized `google.protobuf.FileDescriptorSet` of `protos/` (imports
  /// first, with comments), as `scripts/descriptor-set` prints it. Servers
  /// answer reflection from it.
  public static let fileDescriptorSet: Data = {
    guard let data = Data(base64Encoded: meshDescriptorSetBase64, options: .ignoreUnknownCharacters)
    else { preconditionFailure("Generated/DescriptorSet.swift is not base64: run scripts/generate-protos") }
    return data
  }()
}
