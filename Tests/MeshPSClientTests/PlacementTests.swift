import MeshPSClient
import Testing

/// The placement rule: which ps task holds a variable, and how a large one is cut into parts.
@Suite struct PlacementTests {
  @Test func placementIsStableAcrossMachines() {
    let placement = Placement(tasks: 3)
    // Pinned values: a change here moves variables between existing ps tasks.
    #expect(["dense0/kernel", "dense0/bias", "embedding/table"].map(placement.task(of:)) == [2, 0, 2])
  }

  @Test func largeVariablesAreCutIntoRowBlocks() {
    let placement = Placement(tasks: 2, blockBytes: 1000)
    let parts = placement.parts(of: "table", shape: [10, 50])  // 200 bytes a row: 5 rows a block
    #expect(parts.map(\.name) == ["table#rows:0-5", "table#rows:5-10"])
    #expect(parts.map(\.elements) == [0..<250, 250..<500])
    #expect(parts.map(\.shape) == [[5, 50], [5, 50]])
    #expect(placement.parts(of: "small", shape: [2, 50]).map(\.name) == ["small"])
    #expect(placement.parts(of: "vector", shape: [250]).map(\.name) == ["vector"])
  }

  @Test func partsCoverEveryElementOnceWithinABlock() {
    let placement = Placement(tasks: 4, blockBytes: 1000)
    // 400 bytes a row: 2 rows a block, the last block holding the odd row.
    let uneven = placement.parts(of: "t", shape: [7, 100])
    #expect(uneven.map(\.name) == ["t#rows:0-2", "t#rows:2-4", "t#rows:4-6", "t#rows:6-7"])
    #expect(uneven.last?.shape == [1, 100])
    // Rows larger than a block, a long vector and one huge row are cut into runs of elements.
    let wide = placement.parts(of: "wide", shape: [3, 1000])
    #expect(wide.first?.name == "wide#elements:0-250")
    let vector = placement.parts(of: "vector", shape: [600])
    #expect(vector.map(\.name) == ["vector#elements:0-250", "vector#elements:250-500", "vector#elements:500-600"])
    #expect(vector.map(\.shape) == [[250], [250], [100]])
    for (shape, parts) in [([7, 100], uneven), ([3, 1000], wide), ([600], vector)] {
      #expect(parts.allSatisfy { $0.byteCount <= placement.blockBytes && $0.shape.reduce(1, *) == $0.elements.count })
      #expect(parts.map(\.elements.lowerBound) == [0] + parts.dropLast().map(\.elements.upperBound))
      #expect(parts.last?.elements.upperBound == shape.reduce(1, *))
    }
    let row = placement.parts(of: "row", shape: [1, 1_000_000])
    #expect(row.count == 4000 && row.allSatisfy { $0.byteCount == 1000 })
  }

  @Test func everyNameLandsOnATaskOfTheCluster() {
    for tasks in 1...5 {
      let placement = Placement(tasks: tasks)
      for name in ["", "w", "dense0/kernel", "emb#rows:0-10", String(repeating: "x", count: 512)] {
        #expect((0..<tasks).contains(placement.task(of: name)), "\(name) with \(tasks) tasks")
      }
    }
    #expect(Placement(tasks: 1).task(of: "anything") == 0)
  }
}
