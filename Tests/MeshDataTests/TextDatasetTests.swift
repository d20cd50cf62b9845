import Foundation
import MeshTensor
import Testing

@testable import MeshData

@Suite("Text datasets")
struct TextDatasetTests {
  @Test func windowsAreLabelledWithTheBytesThatFollow() throws {
    let dataset = try Datasets.text(Array("abcdefghij".utf8), name: "letters", sequenceLength: 3)
    // 10 bytes: windows need 3 bytes and the next one, so (10 − 1) / 3 = 3 of them.
    #expect(dataset.inputs.shape == [3, 3])
    #expect(dataset.labels.shape == [3, 3])
    #expect(dataset.classCount == 256)
    #expect(dataset.inputs.scalars == Array("abcdefghi".utf8).map(Float.init))
    #expect(dataset.labels.scalars == Array("bcdefghij".utf8).map(Float.init))
  }

  @Test func aTextTooShortOrAWindowOutOfRangeIsRefused() {
    let short = #expect(throws: DatasetError.self) {
      try Datasets.text(Array("abc".utf8), name: "short", sequenceLength: 3)
    }
    #expect(short?.code == .emptyFile)
    #expect(short?.message.contains("3 bytes of text hold no window of 3 bytes") == true)
    for length in [0, -1, Datasets.maxSequenceLength + 1] {
      let error = #expect(throws: DatasetError.self) {
        try Datasets.text(Array("abcdef".utf8), name: "t", sequenceLength: length)
      }
      #expect(error?.code == .invalidArgument)
    }
  }

  @Test func aTextFileIsReadGzippedOrNot() async throws {
    try await withTemporaryDirectory { folder in
      let plain = folder.appendingPathComponent("notes.txt")
      try Data("to be, or not to be\n".utf8).write(to: plain)
      let dataset = try Datasets.text(at: plain, sequenceLength: 4)
      #expect(dataset.name == "notes")
      #expect(dataset.count == 4)
      let zipped = try await runProgram(URL(fileURLWithPath: "/usr/bin/gzip"), ["-k", "-n", plain.path], in: folder)
      #expect(zipped.status == 0, "\(zipped.errors)")
      let inflated = try Datasets.text(at: folder.appendingPathComponent("notes.txt.gz"), sequenceLength: 4)
      #expect(inflated.inputs.scalars == dataset.inputs.scalars)
      #expect(inflated.labels.scalars == dataset.labels.scalars)
      #expect(Datasets.isTextFile("a/notes.txt.gz") && !Datasets.isTextFile("notes.csv"))
    }
  }

  @Test func shakespeareIsBundledAsAText() throws {
    let refused = #expect(throws: DatasetError.self) { try Datasets.bundled(named: "shakespeare") }
    #expect(refused?.message.contains("give a sequence length") == true)
    let dataset = try Datasets.bundled(named: "shakespeare", sequenceLength: 64)
    #expect(dataset.name == "shakespeare")
    #expect(dataset.inputs.shape == [(841_791 - 1) / 64, 64])
    let opening = String(decoding: dataset.inputs.scalars.prefix(10).map { UInt8($0) }, as: UTF8.self)
    #expect(opening == "HAMLET, PR")
    #expect(Datasets.isBundledText("shakespeare") && !Datasets.isBundledText("digits"))
  }
}
