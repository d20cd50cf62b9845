import ArgumentParser
import Foundation
import MeshProto
import MeshRPC
import MeshWire

/// A safetensors file on the client's side, sent to the coordinator in
/// pieces by UploadModel without being read into memory whole.
struct WeightsFile {
  /// Bytes of the file per message.
  static let chunkBytes = 1 << 20

  let path: String
  let size: Int64

  init(path: String) throws {
    guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
      attributes[.type] as? FileAttributeType == .typeRegular,
      let size = (attributes[.size] as? NSNumber)?.int64Value
    else {
      throw ValidationError("--weights \(path) is not a file here")
    }
    self.path = path
    self.size = size
  }

  /// Registers the file as the next version of `request.name`.
  func upload(as request: Pipemesh_V1_ImportModelRequest, to coordinator: some RPCChannel) async throws
    -> Pipemesh_V1_Model
  {
    guard let handle = FileHandle(forReadingAtPath: path) else {
      throw ValidationError("--weights \(path) cannot be read")
    }
    defer { try? handle.close() }
    let header = Pipemesh_V1_UploadModelRequest.with {
      $0.model = request
      $0.sizeBytes = size
    }
    let chunk = Self.chunkBytes
    return try await coordinator.clientStream(CoordinatorMethods.uploadModel, options: .init()) { writer in
      try await writer.write(header)
      var sent: Int64 = 0
      while sent < size, let data = try handle.read(upToCount: Int(min(Int64(chunk), size - sent))), !data.isEmpty {
        try await writer.write(.with { $0.data = data })
        sent += Int64(data.count)
      }
      // A file that shrank while it was read: the coordinator refuses the short upload (one that
      // grew is sent as it was when it was measured).
    }
  }
}
