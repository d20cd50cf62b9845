import Foundation
import Testing

@testable import MeshTensor

@Suite("Tensor storage, wire bytes and batching")
struct TensorTests {
  @Test func constructorsFillShapes() {
    #expect(Tensor.zeros([2, 3]).scalars == [Float](repeating: 0, count: 6))
    #expect(Tensor.ones([4]).scalars == [1, 1, 1, 1])
    #expect(Tensor.filled([2], with: 7).scalars == [7, 7])
    #expect(Tensor(3).shape == [] && Tensor(3).scalar == 3)
    #expect(Tensor(shape: [2, 2], scalars: [1, 2, 3, 4]).rank == 2)
  }

  @Test func copyOnWriteKeepsValueSemantics() {
    let original = Tensor(shape: [3], scalars: [1, 2, 3])
    var copy = original
    #expect(copy.buffer === original.buffer)
    copy.withUnsafeMutableBufferPointer { $0[0] = 10 }
    #expect(original.scalars == [1, 2, 3])
    #expect(copy.scalars == [10, 2, 3])
    let storage = ObjectIdentifier(copy.buffer)
    copy.withUnsafeMutableBufferPointer { $0[1] = 20 }
    #expect(ObjectIdentifier(copy.buffer) == storage, "a uniquely referenced buffer is written in place")
  }

  @Test func littleEndianBytesRoundTrip() throws {
    let tensor = Tensor(shape: [2, 2], scalars: [1, -2.5, 0, 3e-3])
    #expect(Array(tensor.littleEndianBytes.prefix(4)) == [0x00, 0x00, 0x80, 0x3F])
    let fromBytes = try Tensor(dtype: .float32, shape: [2, 2], littleEndianBytes: tensor.littleEndianBytes)
    let fromData = try Tensor(dtype: .float32, shape: [4], littleEndianBytes: tensor.littleEndianData)
    #expect(fromBytes == tensor)
    #expect(fromData.scalars == tensor.scalars)
    let empty = try Tensor(dtype: .float32, shape: [0, 3], littleEndianBytes: [UInt8]())
    #expect(empty.scalarCount == 0)
  }

  @Test func sharedBytesKeepTheirStorageAndDoNotSeeLaterWrites() throws {
    let count = BufferPool.shared.minimumCount + 11  // a size no other test uses
    let values = (0..<count).map(Float.init)
    var shared: Data? = nil
    weak var storage: TensorBuffer?
    do {
      let tensor = Tensor(shape: [count], scalars: values)
      storage = tensor.buffer
      shared = tensor.sharedLittleEndianData
      #expect(shared == tensor.littleEndianData)
      shared?.withUnsafeBytes { #expect($0.baseAddress == UnsafeRawPointer(tensor.buffer.pointer), "no copy") }
    }
    // The tensor is gone but its storage is not back in the pool: a new
    // tensor of its size gets other memory and leaves the bytes alone.
    let next = Tensor.zeros([count])
    #expect(storage != nil)
    shared?.withUnsafeBytes { #expect($0.baseAddress != UnsafeRawPointer(next.buffer.pointer)) }
    #expect(try Tensor(dtype: .float32, shape: [count], littleEndianBytes: #require(shared)).scalars == values)
    // Dropping the bytes frees the storage.
    shared = nil
    #expect(storage == nil)

    // A tensor written while its bytes are shared writes a copy.
    var written = Tensor(shape: [count], scalars: values)
    let before = written.sharedLittleEndianData
    written.withUnsafeMutableBufferPointer { $0[0] = 42 }
    #expect(try Tensor(dtype: .float32, shape: [count], littleEndianBytes: before).scalars == values)
    #expect(written.scalars[0] == 42)
    #expect(Tensor.zeros([0]).sharedLittleEndianData.isEmpty)
  }

  @Test func wrongByteCountThrows() {
    #expect(throws: TensorError.self) {
      try Tensor(dtype: .float32, shape: [2], littleEndianBytes: [UInt8](repeating: 0, count: 7))
    }
    #expect(throws: TensorError.self) {
      try Tensor(dtype: .float32, shape: [-1], littleEndianBytes: [UInt8]())
    }
    #expect(throws: TensorError.self) {
      try Tensor(dtype: .float32, shape: [1 << 40, 1 << 40], littleEndianBytes: [UInt8]())
    }
  }

  @Test func largeBuffersAreRecycledBySize() {
    let count = BufferPool.shared.minimumCount + 7  // a size no other test uses
    var address: UnsafeMutablePointer<Float>?
    do {
      let first = Tensor.zeros([count])
      address = first.buffer.pointer
    }
    let second = Tensor.ones([count])
    #expect(second.buffer.pointer == address)
    #expect(second.scalars.allSatisfy { $0 == 1 })
  }

  @Test func splitAndConcatenateBatch() {
    let batch = Tensor(shape: [5, 2], scalars: (0..<10).map(Float.init))
    let parts = batch.splitBatch(intoChunksOf: 2)
    #expect(parts.map(\.shape) == [[2, 2], [2, 2], [1, 2]])
    #expect(parts[2].scalars == [8, 9])
    #expect(Tensor.concatenateBatch(parts) == batch)
  }
}

@Suite("Deterministic initialisers")
struct InitializerTests {
  @Test func splitMixMatchesReferenceOutput() {
    // SplitMix64 seeded with 0 first yields 0xE220A8397B1DCDAF (reference implementation).
    #expect(PortableRandom.bits(seed: 0, counter: 0) == 0xE220_A839_7B1D_CDAF)
  }

  @Test func exactFirstValuesAreStable() {
    #expect(
      Tensor.randomNormal([4], seed: 42).scalars.map(\.bitPattern) == [
        1_054_103_078, 1_059_526_174, 3_211_023_016, 1_068_094_895,
      ])
    #expect(
      Tensor.randomUniform([4], seed: 42).scalars.map(\.bitPattern) == [
        1_061_017_394, 1_042_530_188, 1_049_535_694, 1_051_736_514,
      ])
    #expect(PortableRandom.derivedSeed(7, "dense0/kernel") == 14_853_121_976_387_396_073)
    #expect(PortableRandom.normal(seed: 42, counter: 3) == Tensor.randomNormal([4], seed: 42).scalars[3])
  }

  @Test(arguments: [
    Initializer.normal(standardDeviation: 0.5), .uniform(limit: 2), .glorotUniform(fanIn: 3, fanOut: 5),
    .heNormal(fanIn: 8),
  ])
  func sameSeedGivesIdenticalBits(_ initializer: Initializer) {
    let a = initializer.makeTensor([3, 5], seed: 11)
    let b = initializer.makeTensor([3, 5], seed: 11)
    #expect(a.scalars.map(\.bitPattern) == b.scalars.map(\.bitPattern))
    #expect(a != initializer.makeTensor([3, 5], seed: 12))
  }

  @Test func normalHasUnitMomentsAndUniformStaysInRange() {
    let normal = Tensor.randomNormal([20_000], seed: 3).scalars
    let mean = normal.reduce(0, +) / Float(normal.count)
    let variance = normal.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Float(normal.count)
    #expect(abs(mean) < 0.03 && abs(variance - 1) < 0.05)
    let glorot = Tensor.glorotUniform([1000], fanIn: 4, fanOut: 2, seed: 5).scalars
    #expect(glorot.allSatisfy { abs($0) <= 1 })
  }

  @Test func portableMathMatchesLibm() {
    for x in [1e-300, 1e-9, 0.1, 0.5, 0.9999, 1.0] {
      #expect(abs(PortableRandom.portableLog(x) - Foundation.log(x)) <= 1e-13 * Swift.max(1, abs(Foundation.log(x))))
    }
    for turn in stride(from: 0.0, to: 1.0, by: 0.0625) {
      let (sine, cosine) = PortableRandom.portableSinCosOfTurn(turn)
      #expect(abs(sine - Foundation.sin(2 * Double.pi * turn)) < 1e-14)
      #expect(abs(cosine - Foundation.cos(2 * Double.pi * turn)) < 1e-14)
    }
  }
}
