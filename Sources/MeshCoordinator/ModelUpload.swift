import Foundation
import MeshProto
import MeshRPC
import MeshTensor
import MeshWire
import Synchronization

/// Receives the safetensors file of an UploadModel call: the first message
/// says what the weights are and how many bytes follow; the bytes are taken
/// only up to that size, which must fit the spec's variables, and only while
/// the coordinator's budget for uploads has room. They go to a file of their
/// own as they come, never gathered in memory. A stream that ends short (a
/// client that went away), runs long, stalls or crawls registers nothing.
enum ModelUpload {
  /// The largest piece of the file one message may carry.
  static let maxChunkBytes = 4 << 20
  /// How long the coordinator waits for the next message of an upload.
  static let idleLimit = Duration.seconds(60)
  /// The slowest an upload may come, past its first minute.
  static let slowestBytesPerSecond = 1 << 20

  /// Reads an upload whole into the file `spool` and registers it with
  /// `register`, which gets the file mapped into memory, holding
  /// `size_bytes` of `budget` until that returns; `spool` is removed then.
  /// `admit` sees the first message's request before any byte of the file
  /// is taken, and throws to refuse it (a bad name, spec or owner): the
  /// client learns at once instead of after sending the file.
  static func receive<Registered>(
    _ requests: RequestStream<Pipemesh_V1_UploadModelRequest>, budget: UploadBudget, spool: String,
    admit: (Pipemesh_V1_ImportModelRequest) async throws -> Sequential,
    register: (Pipemesh_V1_ImportModelRequest, Data) async throws -> Registered
  ) async throws -> Registered {
    var messages = requests.makeAsyncIterator()
    guard let first = try await messages.next(), first.hasModel else {
      throw CoordinatorError(
        .invalidRequest,
        "the first message of an upload must carry model (the name and spec of the weights)")
    }
    let request = first.model
    guard request.uri.isEmpty else {
      throw CoordinatorError(
        .invalidRequest,
        "model.uri must be empty in an upload: the weights are the bytes sent (ImportModel reads a file in the data directory)"
      )
    }
    let model = try await admit(request)
    let largest = largestFile(of: model)
    guard (9...largest).contains(first.sizeBytes) else {
      throw CoordinatorError(
        .invalidRequest,
        "size_bytes \(first.sizeBytes) cannot be a safetensors file of this spec's variables: it is between 9 and "
          + "\(largest) bytes")
    }
    let size = Int(first.sizeBytes)
    try budget.reserve(size)
    defer { budget.release(size) }
    let deadline = ContinuousClock.now + idleLimit + .seconds(Double(size) / Double(slowestBytesPerSecond))
    defer { try? FileManager.default.removeItem(atPath: spool) }
    guard FileManager.default.createFile(atPath: spool, contents: nil), let file = FileHandle(forWritingAtPath: spool)
    else {
      throw CoordinatorError(
        .overCapacity, "the coordinator cannot create a file for the upload in its state directory")
    }
    defer { try? file.close() }
    var received = 0
    var message = first
    while true {
      guard message.data.count <= maxChunkBytes else {
        throw CoordinatorError(
          .invalidRequest,
          "a message carries \(message.data.count) bytes of data; at most \(maxChunkBytes) a message")
      }
      guard received + message.data.count <= size else {
        throw CoordinatorError(.invalidRequest, "the messages carry more than the \(size) bytes size_bytes declared")
      }
      do {
        try file.write(contentsOf: message.data)
      } catch {
        throw CoordinatorError(
          .overCapacity,
          "the coordinator could not keep the upload on its disk (\(received) of \(size) bytes written): \(error)")
      }
      received += message.data.count
      let left = deadline - ContinuousClock.now
      guard received == size || left > .zero else {
        throw CoordinatorError(
          .deadlinePassed,
          "the upload came slower than \(slowestBytesPerSecond >> 20) MiB/s after its first minute "
            + "(\(received) of \(size) bytes); nothing was registered")
      }
      // Once the bytes are all here, only the stream's end is awaited.
      guard let next = try await messages.next(within: received == size ? idleLimit : min(idleLimit, left)) else {
        break
      }
      guard !next.hasModel, next.sizeBytes == 0 else {
        throw CoordinatorError(.invalidRequest, "model and size_bytes belong in the first message of an upload only")
      }
      guard !next.data.isEmpty else {
        throw CoordinatorError(.invalidRequest, "a message after the first carries no data; each must carry some")
      }
      message = next
    }
    guard received == size else {
      throw CoordinatorError(
        .invalidRequest,
        "the upload ended after \(received) of the \(size) bytes size_bytes declared; nothing was registered")
    }
    return try await register(request, try mapped(spool))
  }

  /// The file at `path` mapped into memory: read where it lies, page by
  /// page. Only for files no one else writes (a spool of the coordinator's
  /// own): a file cut short under a mapping kills the process that reads it.
  static func mapped(_ path: String) throws -> Data {
    do {
      return try Data(contentsOf: URL(fileURLWithPath: path), options: .alwaysMapped)
    } catch {
      throw CoordinatorError(.stateStoreFailed, "the coordinator cannot read back its copy of the weights: \(error)")
    }
  }

  /// The largest safetensors file of `model`'s variables in float32: its
  /// 8-byte length, a header with room for each variable's entry and some
  /// metadata, and the values.
  static func largestFile(of model: Sequential) -> Int64 {
    model.variableDeclarations().reduce(8 + 65_536) { total, declaration in
      total + 256 + Int64(declaration.name.utf8.count) + 4 * Int64(declaration.shape.reduce(1, *))
    }
  }
}

/// The bytes of uploads a coordinator holds at once on its disk: each upload
/// reserves its declared size before it is read and keeps it until it is
/// registered, so the files of concurrent uploads never add up to more than
/// this (an upload being registered is on the disk twice for a moment: as
/// sent, and as the model's file).
final class UploadBudget: Sendable {
  /// Bytes at most in flight across every upload.
  let limit: Int
  private let inFlight = Mutex(0)

  init(limit: Int = 4 << 30) { self.limit = limit }

  func reserve(_ bytes: Int) throws {
    try inFlight.withLock { inFlight in
      guard bytes <= limit else {
        throw CoordinatorError(
          .overCapacity,
          "an upload of \(bytes) bytes is over the \(limit) bytes this coordinator takes at once; put the file in its "
            + "data directory and call ImportModel")
      }
      guard inFlight + bytes <= limit else {
        throw CoordinatorError(
          .overCapacity,
          "uploads of \(inFlight) bytes are in flight; this one's \(bytes) would pass the coordinator's \(limit); "
            + "try again when they end")
      }
      inFlight += bytes
    }
  }

  func release(_ bytes: Int) {
    inFlight.withLock { $0 -= bytes }
  }
}
