import Testing

@testable import MeshTensor

/// k-fold cross-validation's split of a job's examples.
@Suite struct FoldSplitTests {
  @Test(arguments: [(10, 3), (1797, 5), (7, 7), (2, 2)])
  func everyExampleIsHeldOutByExactlyOneFold(_ count: Int, _ folds: Int) {
    var heldOut: [Int] = []
    for fold in 0..<folds {
      let split = PortableRandom.foldSplit(count: count, folds: folds, fold: fold, seed: 9)
      #expect(Set(split.train).isDisjoint(with: split.validation))
      #expect((split.train + split.validation).sorted() == Array(0..<count))
      // Near-equal folds: the first count % folds one longer.
      #expect(split.validation.count == count / folds + (fold < count % folds ? 1 : 0))
      heldOut += split.validation
    }
    #expect(heldOut.sorted() == Array(0..<count))
  }

  @Test func theFoldsFollowTheSeedsPermutation() {
    let order = PortableRandom.permutation(10, seed: 4)
    #expect(PortableRandom.foldSplit(count: 10, folds: 3, fold: 0, seed: 4).validation == Array(order[0..<4]))
    #expect(PortableRandom.foldSplit(count: 10, folds: 3, fold: 2, seed: 4).validation == Array(order[7..<10]))
    #expect(
      PortableRandom.foldSplit(count: 10, folds: 3, fold: 1, seed: 4).train == Array(order[0..<4] + order[7..<10]))
  }
}
