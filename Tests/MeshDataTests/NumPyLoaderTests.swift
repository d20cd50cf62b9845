import Foundation
import MeshData
import MeshTensor
import Testing

@Suite struct NumPyLoaderTests {
  /// The values every dtype test writes; each is exact in all supported dtypes.
  static let values: [Float] = [0, 1, 2, 3, 4, 5, 250, 7, 8, 9, 10, 11]

  @Test(arguments: ["<f4", "<f8", "<i8", "<i4", "|u1"])
  func readsEachSupportedDType(dtype: String) async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        """
        import numpy as np
        a = np.array(\(NumPyLoaderTests.values.map { Int($0) }), dtype='\(dtype)').reshape(2, 3, 2)
        np.save('a.npy', a)
        """, in: folder)
      let tensor = try NumPy.readArray(at: folder.appendingPathComponent("a.npy"))
      #expect(tensor.shape == [2, 3, 2])
      #expect(tensor.scalars == NumPyLoaderTests.values)
    }
  }

  @Test(arguments: [1, 2, 3])
  func readsEveryHeaderVersion(major: Int) async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        """
        import numpy as np
        a = np.arange(6, dtype=np.float32).reshape(3, 2) / 4
        with open('v.npy', 'wb') as f:
            np.lib.format.write_array(f, a, version=(\(major), 0))
        assert open('v.npy', 'rb').read(7)[6] == \(major)
        """, in: folder)
      let tensor = try NumPy.readArray(at: folder.appendingPathComponent("v.npy"))
      #expect(tensor.shape == [3, 2])
      #expect(tensor.scalars == [0, 0.25, 0.5, 0.75, 1, 1.25])
    }
  }

  @Test func readsScalarsAndEmptyArrays() async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        """
        import numpy as np
        np.save('s.npy', np.float32(2.5))
        np.save('e.npy', np.zeros((0, 4), dtype=np.float32))
        """, in: folder)
      let scalar = try NumPy.readArray(at: folder.appendingPathComponent("s.npy"))
      #expect(scalar.shape == [])
      #expect(scalar.scalars == [2.5])
      #expect(try NumPy.readArray(at: folder.appendingPathComponent("e.npy")).shape == [0, 4])
    }
  }

  @Test(arguments: ["savez", "savez_compressed"])
  func loadsADatasetFromAnArchive(writer: String) async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        """
        import numpy as np
        x = np.arange(40, dtype=np.float64).reshape(10, 4) / 8
        y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2], dtype=np.int64)
        np.\(writer)('d.npz', x=x, y=y, extra=np.ones(3))
        """, in: folder)
      let dataset = try Datasets.npz(at: folder.appendingPathComponent("d.npz"), task: .classification())
      #expect(dataset.name == "d")
      #expect(dataset.inputs.shape == [10, 4])
      #expect(dataset.inputs.scalars == (0..<40).map { Float($0) / 8 })
      #expect(dataset.labels.scalars == [0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
      #expect(dataset.classCount == 3)
    }
  }

  @Test func usesConfigurableKeysForRegressionTargets() async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        """
        import numpy as np
        inputs = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
        targets = np.array([[1.5, -1], [2.5, -2], [3.5, -3]], dtype=np.float32)
        np.savez_compressed('r.npz', inputs=inputs, targets=targets)
        np.save('x.npy', inputs)
        np.save('y.npy', targets[:, 0])
        """, in: folder)
      let dataset = try Datasets.npz(
        at: folder.appendingPathComponent("r.npz"), inputsKey: "inputs", labelsKey: "targets",
        task: .regression)
      #expect(dataset.featureShape == [2, 2])
      #expect(dataset.labels.shape == [3, 2])
      #expect(dataset.labels.scalars == [1.5, -1, 2.5, -2, 3.5, -3])
      let pair = try Datasets.npy(
        inputs: folder.appendingPathComponent("x.npy"), labels: folder.appendingPathComponent("y.npy"),
        task: .regression)
      #expect(pair.inputs == dataset.inputs)
      #expect(pair.labels.shape == [3, 1])
      #expect(pair.labels.scalars == [1.5, 2.5, 3.5])
    }
  }

  @Test func aMissingKeyListsTheArraysPresent() async throws {
    try await withTemporaryDirectory { folder in
      try await runPython("import numpy as np; np.savez('k.npz', a=np.ones(2), b=np.ones(2))", in: folder)
      let error = try #require(throws: DatasetError.self) {
        try Datasets.npz(at: folder.appendingPathComponent("k.npz"), task: .regression)
      }
      #expect(
        error.message
          == "k.npz: has no array named 'x'; it holds 'a', 'b'; name the arrays with inputs_key and labels_key")
    }
  }

  @Test func refusesFortranOrder() async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        "import numpy as np; np.save('f.npy', np.asfortranarray(np.ones((2, 3), dtype=np.float32)))",
        in: folder)
      let error = try #require(throws: DatasetError.self) {
        try NumPy.readArray(at: folder.appendingPathComponent("f.npy"))
      }
      #expect(error.code == .unsupportedFormat)
      #expect(error.message.contains("Fortran (column-major) order"))
      #expect(error.message.contains("np.ascontiguousarray"))
    }
  }

  @Test(arguments: [">f4", "<f2", "<u2"])
  func refusesOtherDTypesByName(dtype: String) async throws {
    try await withTemporaryDirectory { folder in
      try await runPython("import numpy as np; np.save('t.npy', np.ones(3, dtype='\(dtype)'))", in: folder)
      let error = try #require(throws: DatasetError.self) {
        try NumPy.readArray(at: folder.appendingPathComponent("t.npy"))
      }
      #expect(error.code == .unsupportedFormat)
      #expect(error.message.contains("dtype '\(dtype)' is not supported"))
    }
  }

  @Test func reportsTruncatedAndForeignFiles() async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        """
        import numpy as np
        np.save('full.npy', np.ones((4, 4), dtype=np.float32))
        data = open('full.npy', 'rb').read()
        open('short.npy', 'wb').write(data[:-5])
        open('text.npy', 'w').write('not numpy at all')
        open('bad.npz', 'wb').write(b'PK but not really a zip archive')
        """, in: folder)
      let short = try #require(throws: DatasetError.self) {
        try NumPy.readArray(at: folder.appendingPathComponent("short.npy"))
      }
      #expect(short.code == .malformedFile)
      #expect(short.message.contains("short.npy: truncated: data of shape [4, 4]"))
      let text = try #require(throws: DatasetError.self) {
        try NumPy.readArray(at: folder.appendingPathComponent("text.npy"))
      }
      #expect(text.message.contains("not a .npy file"))
      let zip = try #require(throws: DatasetError.self) {
        try NumPy.readArchive(at: folder.appendingPathComponent("bad.npz"))
      }
      #expect(zip.message.contains("not a zip archive"))
    }
  }

  @Test func readsAHandWrittenHeaderWithAnExplicitByteOrderForBytes() async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        """
        import struct
        header = "{'descr': '<u1', 'fortran_order': False, 'shape': (3,), }"
        header += ' ' * (63 - 10 - len(header)) + '\\n'
        open('h.npy', 'wb').write(b'\\x93NUMPY\\x01\\x00' + struct.pack('<H', len(header))
                                  + header.encode() + bytes([3, 200, 9]))
        """, in: folder)
      #expect(try NumPy.readArray(at: folder.appendingPathComponent("h.npy")).scalars == [3, 200, 9])
    }
  }

  @Test func detectsACorruptedStoredEntryByItsChecksum() async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        """
        import numpy as np, zipfile
        np.savez('s.npz', x=np.zeros(16, dtype=np.float32))
        info = zipfile.ZipFile('s.npz').getinfo('x.npy')
        data = bytearray(open('s.npz', 'rb').read())
        data[info.header_offset + info.compress_size] ^= 0xFF  # a byte in the entry's last part
        open('s.npz', 'wb').write(bytes(data))
        """, in: folder)
      let error = try #require(throws: DatasetError.self) {
        try NumPy.readArchive(at: folder.appendingPathComponent("s.npz"))
      }
      #expect(error.message == "s.npz: entry x.npy fails its CRC-32 check (corrupt archive)")
    }
  }

  @Test func detectsACorruptedCompressedEntry() async throws {
    try await withTemporaryDirectory { folder in
      try await runPython(
        """
        import numpy as np, zipfile
        np.savez_compressed('c.npz', x=np.arange(1000, dtype=np.float32))
        data = bytearray(open('c.npz', 'rb').read())
        info = zipfile.ZipFile('c.npz').getinfo('x.npy')
        start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 60
        data[start:start + 8] = bytes(8)
        open('c.npz', 'wb').write(bytes(data))
        """, in: folder)
      let error = try #require(throws: DatasetError.self) {
        try NumPy.readArchive(at: folder.appendingPathComponent("c.npz"))
      }
      #expect(error.code == .malformedFile)
      #expect(error.message.hasPrefix("c.npz"))
      #expect(error.message.contains("corrupt"))
    }
  }
}
