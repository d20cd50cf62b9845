import Foundation
import MeshData
import MeshTensor
import Testing

@Suite struct IDXLoaderTests {
  /// Python that defines `write_idx(path, code, fmt, shape, values, compress)`: the IDX layout
  /// written independently of the Swift reader, with struct and gzip.
  static let writer = """
    import gzip, struct
    def write_idx(path, code, fmt, shape, values, compress=False):
        data = bytes([0, 0, code, len(shape)]) + struct.pack('>%dI' % len(shape), *shape)
        data += struct.pack('>%d%s' % (len(values), fmt), *values)
        if compress:
            data = gzip.compress(data)
        open(path, 'wb').write(data)

    """

  @Test(arguments: [false, true])
  func loadsImagesAndLabelsAsADataset(compressed: Bool) async throws {
    try await withTemporaryDirectory { folder in
      let suffix = compressed ? ".gz" : ""
      let gzip = compressed ? "True" : "False"
      try await runPython(
        IDXLoaderTests.writer + """
          write_idx('images-idx3-ubyte\(suffix)', 0x08, 'B', [3, 2, 2], list(range(0, 240, 20)), \(gzip))
          write_idx('labels-idx1-ubyte\(suffix)', 0x08, 'B', [3], [7, 0, 9], \(gzip))
          """, in: folder)
      let dataset = try Datasets.idx(
        images: folder.appendingPathComponent("images-idx3-ubyte\(suffix)"),
        labels: folder.appendingPathComponent("labels-idx1-ubyte\(suffix)"), classCount: 10)
      #expect(dataset.name == "images-idx3-ubyte")
      #expect(dataset.featureShape == [2, 2])
      #expect(dataset.inputs.scalars == (0..<12).map { Float($0 * 20) })
      #expect(dataset.labels.scalars == [7, 0, 9])
      #expect(dataset.classCount == 10)
    }
  }

  @Test(arguments: [
    (0x08, "B", "[0, 1, 255, 128]", [Float(0), 1, 255, 128]),
    (0x09, "b", "[-128, -1, 0, 127]", [-128, -1, 0, 127]),
    (0x0B, "h", "[-32768, -2, 3, 32767]", [-32768, -2, 3, 32767]),
    (0x0C, "i", "[-70000, 0, 1, 16777216]", [-70000, 0, 1, 16_777_216]),
    (0x0D, "f", "[0.5, -1.25, 3e10, 0]", [0.5, -1.25, 3e10, 0]),
    (0x0E, "d", "[0.5, -1.25, 1e-3, 7]", [0.5, -1.25, 1e-3, 7]),
  ])
  func readsEveryTypeCodeBigEndian(code: Int, format: String, values: String, expected: [Float]) async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        IDXLoaderTests.writer + "write_idx('t.idx', \(code), '\(format)', [2, 2], \(values))", in: folder)
      let tensor = try IDX.readArray(at: folder.appendingPathComponent("t.idx"))
      #expect(tensor.shape == [2, 2])
      #expect(tensor.scalars == expected)
    }
  }

  @Test func readsAGzipFileOfSeveralMembers() async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        IDXLoaderTests.writer + """
          write_idx('plain.idx', 0x08, 'B', [6], [1, 2, 3, 4, 5, 6])
          data = open('plain.idx', 'rb').read()
          open('two.idx.gz', 'wb').write(gzip.compress(data[:7]) + gzip.compress(data[7:]))
          """, in: folder)
      let tensor = try IDX.readArray(at: folder.appendingPathComponent("two.idx.gz"))
      #expect(tensor.scalars == [1, 2, 3, 4, 5, 6])
    }
  }

  /// The error from reading the IDX file that `script` (after `writer`) writes to `f.idx`.
  private func readError(_ script: String) async throws -> DatasetError {
    try await withTemporaryDirectory { folder in
      try await runPython(IDXLoaderTests.writer + script, in: folder)
      return try #require(throws: DatasetError.self) {
        try IDX.readArray(at: folder.appendingPathComponent("f.idx"))
      }
    }
  }

  @Test func reportsBadMagicUnknownTypesTruncationAndTrailingBytes() async throws {
    let magic = try await readError("open('f.idx', 'wb').write(bytes([1, 0, 8, 1, 0, 0, 0, 1, 5]))")
    #expect(magic.message.contains("not an IDX file"))
    let type = try await readError("open('f.idx', 'wb').write(bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 5]))")
    #expect(type.code == .unsupportedFormat)
    #expect(type.message.contains("unknown IDX type code 0xa"))
    let short = try await readError("write_idx('f.idx', 0x0C, 'i', [3], [1, 2])")
    #expect(short.message == "f.idx: truncated: data of shape [3] needs 12 bytes at offset 8, but only 8 remain")
    let long = try await readError("write_idx('f.idx', 0x08, 'B', [2], [1, 2, 3])")
    #expect(long.message == "f.idx: 1 unexpected bytes after the data of shape [2]")
  }

  @Test func reportsACorruptGzipStream() async throws {
    let error = try await readError(
      """
      write_idx('plain.idx', 0x08, 'B', [64], list(range(64)), True)
      data = open('plain.idx', 'rb').read()
      open('f.idx', 'wb').write(data[:len(data) // 2])
      """)
    #expect(error.code == .malformedFile)
    #expect(error.message == "f.idx: compressed data ends before its end marker")
  }

  @Test func imageAndLabelCountsMustAgree() async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        IDXLoaderTests.writer + """
          write_idx('img', 0x08, 'B', [3, 2], [0] * 6)
          write_idx('lab', 0x08, 'B', [2], [0, 1])
          """, in: folder)
      let error = try #require(throws: DatasetError.self) {
        try Datasets.idx(images: folder.appendingPathComponent("img"), labels: folder.appendingPathComponent("lab"))
      }
      #expect(error.code == .shapeMismatch)
      #expect(error.message.contains("img has shape [3, 2] and lab has shape [2]"))
    }
  }
}
