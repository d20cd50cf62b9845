import MeshPSClient
import Testing

/// The placement rule: which ps task holds a variable, and how a large one is cut into row blocks.
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

  @Test func rowBlocksCoverEveryRowOnce() {
    let placement = Placement(tasks: 4, rowBlockBytes: 1000)
    // 400 bytes a row: 2 rows a block, the last block holding the odd row.
    let uneven = placement.parts(of: "t", shape: [7, 100])
    #expect(uneven.map(\.name) == ["t#rows:0-2", "t#rows:2-4", "t#rows:4-6", "t#rows:6-7"])
    #expect(uneven.map(\.rows) == [0..<2, 2..<4, 4..<6, 6..<7])
    // A row larger than a block still makes a block of its own.
    let wide = placement.parts(of: "wide", shape: [3, 1000])
    #expect(wide.map(\.rows) == [0..<1, 1..<2, 2..<3])
    // A single row is never cut, however large.
    #expect(placement.parts(of: "row", shape: [1, 1_000_000]).map(\.rows) == [0..<1])
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
