import MeshPipeline
import Testing

@Suite struct MicroBatchTests {
  @Test(arguments: [(10, 1), (10, 3), (1024, 8), (7, 7), (5, 8)])
  func evenRangesCoverTheExamplesInOrder(count: Int, parts: Int) throws {
    let ranges = evenRanges(count, parts: parts)
    #expect(ranges.count == parts)
    #expect(ranges.first?.lowerBound == 0)
    #expect(ranges.last?.upperBound == count)
    #expect(zip(ranges, ranges.dropFirst()).allSatisfy { $0.upperBound == $1.lowerBound })
    let sizes = ranges.map(\.count)
    #expect(try #require(sizes.max()) - #require(sizes.min()) <= 1)
    #expect(sizes == sizes.sorted(by: >), "larger micro-batches come first")
  }
}
