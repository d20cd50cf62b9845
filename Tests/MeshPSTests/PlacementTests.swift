import Foundation
import MeshCheckpoint
import MeshPS
import MeshPSClient
import MeshTensor
import Testing

/// Pure pieces: the placement rule and the safetensors format.
@Suite struct PlacementTests {
  @Test func placementIsStableAcrossMachines() {
    let placement = Placement(tasks: 3)
    // Pinned values: a change here moves variables between existing ps tasks.
    #expect(["dense0/kernel", "dense0/bias", "embedding/table"].map(placement.task(of:)) == [2, 0, 2])
  }

  @Test func largeVariablesAreCutIntoRowBlocks() {
    let placement = Placement(tasks: 2, rowBlockBytes: 1000)
    let parts = placement.parts(of: "table", shape: [10, 50])  // 200 bytes a row: 5 rows a block
    #expect(parts.map(\.name) == ["table#rows:0-5", "table#rows:5-10"])
    #expect(parts.map(\.rows) == [0..<5, 5..<10])
    #expect(placement.parts(of: "small", shape: [2, 50]).map(\.name) == ["small"])
    #expect(placement.parts(of: "vector", shape: [100_000]).map(\.name) == ["vector"])
  }

  @Test func safetensorsRoundTripAndRejectsDamage() throws {
    let contents = SafeTensors.Contents(
      tensors: ["a": Tensor(shape: [2, 2], scalars: [1, 2, 3, 4]), "b/c": .filled([3], with: -1)],
      metadata: ["note": "hello"])
    let data = try SafeTensors.encode(contents)
    let decoded = try SafeTensors.decode(data)
    #expect(decoded.tensors == contents.tensors)
    #expect(decoded.metadata == contents.metadata)
    #expect(throws: SafeTensors.FormatError.self) { try SafeTensors.decode(data.prefix(data.count - 4)) }
    #expect(throws: SafeTensors.FormatError.self) { try SafeTensors.decode(data.prefix(20)) }
  }
}
