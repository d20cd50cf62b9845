import Foundation
import MeshCheckpoint
import MeshTensor
import Testing

/// The safetensors format: tensors and metadata survive it, and a damaged file is refused with a message naming
/// the damage.
@Suite struct SafeTensorsTests {
  private static let contents = SafeTensors.Contents(
    tensors: ["a": Tensor(shape: [2, 2], scalars: [1, 2, 3, 4]), "b/c": .filled([3], with: -1)],
    metadata: ["note": "hello"])

  /// A file of `header` (JSON, unpadded) followed by `data`.
  private static func file(header: String, data: [UInt8]) -> Data {
    let json = Data(header.utf8)
    var file = Data()
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
    file.append(json)
    file.append(contentsOf: data)
    return file
  }

  /// The description of the format error decoding `data` throws, or nil after recording a failure.
  private static func refusal(_ data: Data, sourceLocation: SourceLocation = #_sourceLocation) -> String? {
    let error = #expect(throws: SafeTensors.FormatError.self, sourceLocation: sourceLocation) {
      _ = try SafeTensors.decode(data)
    }
    return error?.description
  }

  @Test func contentsSurviveEncoding() throws {
    let decoded = try SafeTensors.decode(SafeTensors.encode(Self.contents))
    #expect(decoded.tensors == Self.contents.tensors)
    #expect(decoded.metadata == Self.contents.metadata)
  }

  @Test func encodingIsTheDocumentedLayout() throws {
    let data = try SafeTensors.encode(SafeTensors.Contents(tensors: ["w": Tensor(shape: [2], scalars: [1, -2])]))
    let headerLength = data.prefix(8).reversed().reduce(0) { $0 << 8 | Int($1) }
    #expect(headerLength % 8 == 0, "the data starts 8-byte aligned")
    let header = String(decoding: data.dropFirst(8).prefix(headerLength), as: UTF8.self)
    #expect(
      header.trimmingCharacters(in: .whitespaces) == #"{"w":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}}"#)
    #expect([UInt8](data.suffix(8)) == [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0])
    #expect(data.count == 8 + headerLength + 8)
  }

  @Test func writtenFilesReadBack() throws {
    let directory = (NSTemporaryDirectory() as NSString).appendingPathComponent("pipemesh-safetensors-\(UUID())")
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = (directory as NSString).appendingPathComponent("model.safetensors")
    try SafeTensors.write(Self.contents, to: path)
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    let encoded = try SafeTensors.encode(Self.contents)
    #expect(data == encoded)
    #expect(try SafeTensors.decode(data).tensors == Self.contents.tensors)
  }

  /// A file written in pieces, out of order and from several tasks, is the
  /// file written whole; a piece that does not fit fails the write and
  /// leaves no file.
  @Test func aFileWrittenInPiecesIsTheFileWrittenWhole() async throws {
    let directory = (NSTemporaryDirectory() as NSString).appendingPathComponent("pipemesh-safetensors-\(UUID())")
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let path = (directory as NSString).appendingPathComponent("model.safetensors")
    let tensors = Self.contents.tensors
    try await SafeTensors.write(shapes: tensors.mapValues(\.shape), metadata: Self.contents.metadata, to: path) {
      put in
      // One scalar at a time, the last first, each from a task of its own.
      try await withThrowingTaskGroup(of: Void.self) { group in
        for (name, tensor) in tensors {
          for element in (0..<tensor.scalarCount).reversed() {
            group.addTask {
              try tensor.sharedLittleEndianData(elements: element..<(element + 1)).withUnsafeBytes {
                try put(name, element, $0)
              }
            }
          }
        }
        try await group.waitForAll()
      }
    }
    let data = try Data(contentsOf: URL(fileURLWithPath: path))
    #expect(data == (try SafeTensors.encode(Self.contents)))

    let other = (directory as NSString).appendingPathComponent("other.safetensors")
    let error = await #expect(throws: SafeTensors.FormatError.self) {
      try await SafeTensors.write(shapes: ["a": [2]], to: other) { put in
        try Data(count: 12).withUnsafeBytes { try put("a", 0, $0) }
      }
    }
    #expect(error?.description.contains("do not fit tensor a") == true)
    #expect(!FileManager.default.fileExists(atPath: other))
    #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["model.safetensors"])
  }

  @Test func truncatedFilesAreRefused() throws {
    let data = try SafeTensors.encode(Self.contents)
    // "a" holds bytes 0..<16 and "b/c" 16..<28 of the data; the cut removes the last scalar of "b/c".
    #expect(Self.refusal(data.prefix(data.count - 4)) == "tensor b/c has byte range 16..<28 outside the data")
    #expect(
      Self.refusal(data.prefix(20))?.hasSuffix("runs past the end of the file (20 bytes)") == true,
      "the header length is read but the header is cut")
    #expect(Self.refusal(data.prefix(4)) == "file is 4 bytes, shorter than the 8-byte header length")
    #expect(Self.refusal(Data()) == "file is 0 bytes, shorter than the 8-byte header length")
  }

  @Test func bytesNoTensorClaimsAreRefused() throws {
    var data = try SafeTensors.encode(Self.contents)
    data.append(contentsOf: [0, 0, 0, 0])
    #expect(Self.refusal(data) == "tensor byte ranges do not cover the data exactly")
    let gapFirst = #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
    #expect(
      Self.refusal(Self.file(header: gapFirst, data: [UInt8](repeating: 0, count: 8)))
        == "tensor byte ranges do not cover the data exactly")
  }

  /// An empty tensor starts where the next one does; whichever order the header lists them in, the file reads
  /// (sorting the byte ranges by start alone refused one order).
  @Test(arguments: [
    #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
    #"{"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}"#,
  ])
  func anEmptyTensorBesideAnotherReads(header: String) throws {
    let contents = try SafeTensors.decode(Self.file(header: header, data: [UInt8](repeating: 0, count: 8)))
    #expect(contents.tensors["a"]?.shape == [0])
    #expect(contents.tensors["b"]?.scalars == [0, 0])
  }

  @Test func encodedEmptyTensorsReadBack() throws {
    let contents = SafeTensors.Contents(
      tensors: ["a": Tensor(shape: [0], scalars: []), "b": Tensor(shape: [2], scalars: [1, 2])], metadata: [:])
    for _ in 0..<20 {
      let decoded = try SafeTensors.decode(SafeTensors.encode(contents))
      #expect(decoded.tensors["a"]?.shape == [0])
      #expect(decoded.tensors["b"]?.scalars == [1, 2])
    }
  }

  @Test func overlappingTensorsAreRefused() {
    let header =
      #"{"v":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
      + #""w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#
    #expect(
      Self.refusal(Self.file(header: header, data: [UInt8](repeating: 0, count: 8)))
        == "tensor byte ranges do not cover the data exactly")
  }

  @Test func damagedHeadersAreRefused() {
    let eightBytes = [UInt8](repeating: 0, count: 8)
    #expect(
      Self.refusal(Self.file(header: "not json", data: [])) == "header is not a JSON object")
    #expect(Self.refusal(Self.file(header: "[1, 2]", data: [])) == "header is not a JSON object")
    #expect(
      Self.refusal(Self.file(header: #"{"__metadata__":{"step":3}}"#, data: []))
        == "__metadata__ is not a string map")
    #expect(
      Self.refusal(Self.file(header: #"{"w":{"dtype":"F32","shape":[2]}}"#, data: eightBytes))
        == "entry w lacks dtype, shape or data_offsets")
    #expect(
      Self.refusal(Self.file(header: #"{"w":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}"#, data: eightBytes))
        == "tensor w is F64; only F32 is supported")
    #expect(
      Self.refusal(Self.file(header: #"{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: eightBytes))
        == "tensor w: float32 tensor of shape [3] does not fit the 8 bytes given (4 per scalar)")
    #expect(
      Self.refusal(Self.file(header: #"{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#, data: eightBytes))
        == "tensor w has byte range 8..<0 outside the data")
  }

  @Test func aHeaderLengthPastTheFileIsRefused() {
    var data = Data()
    withUnsafeBytes(of: UInt64(100).littleEndian) { data.append(contentsOf: $0) }
    data.append(contentsOf: Array("{}        ".utf8))
    #expect(Self.refusal(data) == "header length 100 runs past the end of the file (18 bytes)")
    var huge = Data()
    withUnsafeBytes(of: UInt64.max.littleEndian) { huge.append(contentsOf: $0) }
    #expect(Self.refusal(huge) == "header length \(UInt64.max) runs past the end of the file (8 bytes)")
  }
}
